//! XML layer throughput: a typical ~300-byte chat message stanza parsed from a
//! TCP stream (whole reads and 64-byte reads), parsed as a WebSocket frame, and
//! written back.
//!
//! Run: `cargo bench -p casebook-whatsapp --bench xml`. Stanzas per second =
//! `BATCH` / the reported time per iteration.

use casebook_whatsapp::xml::{
    CLIENT_NS, Element, FramedParser, StreamEvent, StreamParser, stream_open, write_stanza,
};

/// Stanzas per benchmark iteration.
const BATCH: usize = 1000;

fn main() {
    divan::main();
}

fn message() -> Element {
    Element::new("message", CLIENT_NS)
        .with_attr("from", "juliet@example.com/balcony")
        .with_attr("to", "romeo@example.net")
        .with_attr("type", "chat")
        .with_attr("id", "ktx72v49")
        .with_attr("xml:lang", "en")
        .with_child(Element::new("body", CLIENT_NS).with_text(
            "Art thou not Romeo, and a Montague? Neither, fair saint, if either thee dislike & more.",
        ))
        .with_child(Element::new("active", "http://jabber.org/protocol/chatstates"))
        .with_child(Element::new("request", "urn:xmpp:receipts"))
}

fn stream_bytes() -> Vec<u8> {
    let stanza = write_stanza(&message());
    assert!(
        (280..=340).contains(&stanza.len()),
        "stanza is {} bytes",
        stanza.len()
    );
    let mut wire = stream_open(&[("to", "example.com"), ("version", "1.0")]);
    for _ in 0..BATCH {
        wire.push_str(&stanza);
    }
    wire.into_bytes()
}

fn parse(wire: &[u8], read_size: usize) -> usize {
    let mut parser = StreamParser::default();
    let mut stanzas = 0;
    for read in wire.chunks(read_size) {
        parser.feed(read).expect("fits the buffer");
        while let Some(event) = parser.next_event().expect("valid stream") {
            stanzas += usize::from(matches!(event, StreamEvent::Stanza(_)));
        }
    }
    assert_eq!(stanzas, BATCH);
    stanzas
}

#[divan::bench]
fn stream_1000_stanzas_16k_reads(bencher: divan::Bencher<'_, '_>) {
    let wire = stream_bytes();
    bencher
        .counter(divan::counter::BytesCount::new(wire.len()))
        .bench(|| parse(divan::black_box(&wire), 16 * 1024));
}

#[divan::bench]
fn stream_1000_stanzas_64b_reads(bencher: divan::Bencher<'_, '_>) {
    let wire = stream_bytes();
    bencher
        .counter(divan::counter::BytesCount::new(wire.len()))
        .bench(|| parse(divan::black_box(&wire), 64));
}

#[divan::bench]
fn frame_1000_stanzas(bencher: divan::Bencher<'_, '_>) {
    let frame = message().to_xml();
    let parser = FramedParser::default();
    bencher.bench(|| {
        for _ in 0..BATCH {
            divan::black_box(
                parser
                    .parse(divan::black_box(frame.as_bytes()))
                    .expect("valid"),
            );
        }
    });
}

#[divan::bench]
fn write_1000_stanzas(bencher: divan::Bencher<'_, '_>) {
    let stanza = message();
    bencher.bench(|| {
        let mut out = String::new();
        for _ in 0..BATCH {
            casebook_whatsapp::xml::write_stanza_into(divan::black_box(&stanza), &mut out);
        }
        out.len()
    });
}

/// A 60 KB stanza (one huge attribute value and one huge text run) arriving one
/// byte per read: linear scanning keeps this near the cost of one big read; a
/// parser that rescanned its buffer per read would be ~60 000x slower.
#[divan::bench(args = [1, 65_536])]
fn one_60kb_stanza(bencher: divan::Bencher<'_, '_>, read_size: usize) {
    let mut wire = stream_open(&[]).into_bytes();
    let stanza = format!(
        "<message id='{}'><body>{}</body></message>",
        "i".repeat(12_000),
        "t".repeat(48_000)
    );
    wire.extend_from_slice(stanza.as_bytes());
    bencher
        .counter(divan::counter::BytesCount::new(wire.len()))
        .bench(|| {
            let mut parser = StreamParser::default();
            let mut events = 0;
            for read in divan::black_box(&wire).chunks(read_size) {
                parser.feed(read).expect("fits the buffer");
                while parser.next_event().expect("valid stream").is_some() {
                    events += 1;
                }
            }
            assert_eq!(events, 2);
        });
}
