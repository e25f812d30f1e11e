//! The invariants the fuzz targets check, shared with the stable corpus replay
//! test (`tests/fuzz_corpus.rs`) so both exercise exactly the same property.
//!
//! Each function panics when an invariant is broken: that is how libFuzzer and
//! the test harness detect a finding. Malformed input is *not* a finding; the
//! parser refusing it with an [`XmlError`](super::XmlError) is the expected outcome.

use super::{Frame, FramedParser, Limits, StreamEvent, StreamParser, stream_open, write_stanza};

/// Limits for re-parsing what the writer produced: escaping can make text longer
/// than it was on input (`'` → `&apos;`), generated `nsN:` prefixes can make
/// names longer and add declarations, so those limits get room.
fn roomy_limits() -> Limits {
    let limits = Limits::default();
    Limits {
        max_stanza_bytes: limits.max_stanza_bytes * 8,
        max_attr_value_bytes: limits.max_attr_value_bytes * 8,
        max_attrs: limits.max_attrs * 2,
        max_name_bytes: limits.max_name_bytes + 24,
        max_buffer_bytes: limits.max_stanza_bytes * 16,
        ..limits
    }
}

/// Feeds `data[1..]` to a [`StreamParser`] in chunks whose sizes derive from
/// `data[0]`, then checks that every stanza it yielded re-serialises and
/// re-parses to itself. Returns how many stanzas were checked.
pub fn check_stream_input(data: &[u8]) -> usize {
    let Some((&seed, input)) = data.split_first() else {
        return 0;
    };
    let mut parser = StreamParser::default();
    let mut events = Vec::new();
    let mut rest = input;
    let mut step = usize::from(seed % 17) + 1;
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(step.min(rest.len()));
        rest = tail;
        step = (step * 7 + 3) % 29 + 1;
        if parser.feed_events(chunk, &mut events).is_err() {
            break;
        }
        assert!(parser.buffered_len() <= Limits::default().max_buffer_bytes);
    }
    let mut checked = 0;
    for event in events {
        if let StreamEvent::Stanza(stanza) = event {
            let wire = format!("{}{}", stream_open(&[]), write_stanza(&stanza));
            let mut again = StreamParser::new(roomy_limits());
            let mut reparsed = Vec::new();
            if let Err(error) = again.feed_events(wire.as_bytes(), &mut reparsed) {
                panic!("written stanza does not re-parse ({error}): {wire}");
            }
            assert_eq!(reparsed.len(), 2, "{wire}");
            assert_eq!(reparsed[1], StreamEvent::Stanza(stanza), "{wire}");
            checked += 1;
        }
    }
    checked
}

/// Parses `data` as one WebSocket frame; a stanza frame must re-serialise
/// standalone and parse back to the same frame. Returns whether it was a stanza.
pub fn check_frame_input(data: &[u8]) -> bool {
    let Ok(Frame::Stanza(stanza)) = FramedParser::default().parse(data) else {
        return false;
    };
    let wire = stanza.to_xml();
    match FramedParser::new(roomy_limits()).parse(wire.as_bytes()) {
        Ok(again) => assert_eq!(again, Frame::Stanza(stanza), "{wire}"),
        Err(error) => panic!("written frame does not re-parse ({error}): {wire}"),
    }
    true
}
