//! Arbitrary bytes, split into arbitrary chunks, fed to the stream parser: it must
//! never panic, and every stanza it yields must re-serialise and re-parse to
//! itself. The first byte chooses the chunk sizes so splits vary with the input.
#![no_main]

use casebook_whatsapp::xml::{Limits, StreamEvent, StreamParser, stream_open, write_stanza};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&seed, input)) = data.split_first() else {
        return;
    };
    let mut parser = StreamParser::default();
    let mut events = Vec::new();
    let mut rest = input;
    let mut step = usize::from(seed % 17) + 1;
    while !rest.is_empty() {
        let take = step.min(rest.len());
        let (chunk, tail) = rest.split_at(take);
        rest = tail;
        step = (step * 7 + 3) % 29 + 1;
        if parser.feed_events(chunk, &mut events).is_err() {
            break;
        }
    }
    for event in events {
        if let StreamEvent::Stanza(stanza) = event {
            let wire = format!("{}{}", stream_open(&[]), write_stanza(&stanza));
            // Escaping may grow the text (`'` → `&apos;`): re-parse with room.
            let mut again = StreamParser::new(roomy_limits());
            let mut reparsed = Vec::new();
            again
                .feed_events(wire.as_bytes(), &mut reparsed)
                .expect("a written stanza re-parses");
            assert_eq!(reparsed.len(), 2, "{wire}");
            assert_eq!(reparsed[1], StreamEvent::Stanza(stanza), "{wire}");
        }
    }
});

fn roomy_limits() -> Limits {
    let limits = Limits::default();
    Limits {
        max_stanza_bytes: limits.max_stanza_bytes * 8,
        max_attr_value_bytes: limits.max_attr_value_bytes * 8,
        max_buffer_bytes: limits.max_stanza_bytes * 16,
        ..limits
    }
}
