//! Property tests of the XML layer: write-then-parse is the identity, and how the
//! bytes of a stream are split across reads never changes what is parsed.

use casebook_whatsapp::xml::{
    CLIENT_NS, Element, Frame, FramedParser, STREAMS_NS, StreamEvent, StreamParser, is_xml_char,
    stream_close, stream_open, write_stanza,
};
use proptest::prelude::*;

/// Awkward text: markup characters, whitespace that XML normalises, `]]>`,
/// multi-byte UTF-8, and any other character XML allows.
fn awkward_text() -> impl Strategy<Value = String> {
    let special = prop_oneof![
        Just('&'),
        Just('<'),
        Just('>'),
        Just('"'),
        Just('\''),
        Just('\r'),
        Just('\n'),
        Just('\t'),
        Just(']'),
        Just(';'),
        Just('#'),
        Just('é'),
        Just('\u{1F600}'),
        Just('\u{FFFD}'),
    ];
    let any_allowed = any::<char>().prop_filter("XML 1.0 character", |c| is_xml_char(*c));
    prop::collection::vec(
        prop_oneof![3 => special, 2 => any_allowed, 2 => Just('a')],
        0..24,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

fn namespace() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        CLIENT_NS,
        CLIENT_NS,
        "urn:xmpp:receipts",
        "http://jabber.org/protocol/chatstates",
        "",
        STREAMS_NS,
    ])
}

fn name() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "message", "body", "x", "query", "item", "é-ü.9", "a_b",
    ])
}

fn attr_name() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "to",
        "from",
        "id",
        "type",
        "xml:lang",
        "{urn:x:attrs}k",
        "{urn:y}k",
    ])
}

#[derive(Debug, Clone)]
enum Child {
    Element(Element),
    Text(String),
}

fn element() -> impl Strategy<Value = Element> {
    let leaf = (
        name(),
        namespace(),
        prop::collection::vec((attr_name(), awkward_text()), 0..4),
    )
        .prop_map(|(name, ns, attrs)| {
            let mut element = Element::new(name, ns);
            for (key, value) in attrs {
                element.set_attr(key, value);
            }
            element
        });
    leaf.prop_recursive(4, 48, 6, |inner| {
        (
            name(),
            namespace(),
            prop::collection::vec((attr_name(), awkward_text()), 0..4),
            prop::collection::vec(
                prop_oneof![
                    inner.prop_map(Child::Element),
                    awkward_text().prop_map(Child::Text)
                ],
                0..6,
            ),
        )
            .prop_map(|(name, ns, attrs, children)| {
                let mut element = Element::new(name, ns);
                for (key, value) in attrs {
                    element.set_attr(key, value);
                }
                for child in children {
                    match child {
                        Child::Element(child) => element.push_child(child),
                        Child::Text(text) => element.push_text(text),
                    }
                }
                element
            })
    })
}

fn parse_stream(chunks: &[&[u8]]) -> Vec<StreamEvent> {
    let mut parser = StreamParser::default();
    let mut events = Vec::new();
    for chunk in chunks {
        parser
            .feed_events(chunk, &mut events)
            .expect("valid stream");
    }
    events
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn stanza_round_trips_through_the_stream(stanza in element()) {
        let wire = format!("{}{}{}", stream_open(&[("from", "example.com")]), write_stanza(&stanza), stream_close());
        let events = parse_stream(&[wire.as_bytes()]);
        prop_assert_eq!(events.len(), 3, "{}", wire);
        prop_assert_eq!(&events[1], &StreamEvent::Stanza(stanza));
        prop_assert_eq!(&events[2], &StreamEvent::StreamClose);
    }

    #[test]
    fn stanza_round_trips_as_a_websocket_frame(stanza in element()) {
        let mut stanza = stanza;
        if stanza.ns().is_empty() || matches!(stanza.name(), "message") {
            stanza = Element::new(stanza.name(), CLIENT_NS).with_child(stanza);
        }
        let wire = stanza.to_xml();
        let frame = FramedParser::default().parse(wire.as_bytes()).expect("valid frame");
        prop_assert_eq!(frame, Frame::Stanza(stanza), "{}", wire);
    }

    #[test]
    fn any_split_of_a_stream_yields_the_same_events(
        stanzas in prop::collection::vec(element(), 1..5),
        keepalives in prop::collection::vec(prop::sample::select(vec!["", " ", "\n", "\r\n\t "]), 5),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let mut wire = stream_open(&[("from", "example.com"), ("version", "1.0")]);
        for (i, stanza) in stanzas.iter().enumerate() {
            wire.push_str(keepalives[i % keepalives.len()]);
            wire.push_str(&write_stanza(stanza));
        }
        wire.push_str(stream_close());
        let bytes = wire.as_bytes();
        let whole = parse_stream(&[bytes]);
        prop_assert_eq!(whole.len(), stanzas.len() + 2);

        let mut positions: Vec<usize> = cuts.iter().map(|cut| cut.index(bytes.len() + 1)).collect();
        positions.sort_unstable();
        let mut chunks = Vec::new();
        let mut last = 0;
        for position in positions {
            chunks.push(&bytes[last..position]);
            last = position;
        }
        chunks.push(&bytes[last..]);
        prop_assert_eq!(parse_stream(&chunks), whole.clone());

        // And the extreme split: one byte per read.
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        prop_assert_eq!(parse_stream(&singles), whole);
    }
}
