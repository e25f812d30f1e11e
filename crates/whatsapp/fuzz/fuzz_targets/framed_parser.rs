//! Arbitrary bytes as one WebSocket frame: never a panic, and a stanza frame
//! re-serialised standalone parses back to the same frame.
#![no_main]

use casebook_whatsapp::xml::{Frame, FramedParser, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parser = FramedParser::default();
    if let Ok(Frame::Stanza(stanza)) = parser.parse(data) {
        let wire = stanza.to_xml();
        // Escaping may grow the text (`'` → `&apos;`): re-parse with room.
        let limits = Limits::default();
        let roomy = FramedParser::new(Limits {
            max_stanza_bytes: limits.max_stanza_bytes * 8,
            max_attr_value_bytes: limits.max_attr_value_bytes * 8,
            max_buffer_bytes: limits.max_stanza_bytes * 16,
            ..limits
        });
        let again = roomy.parse(wire.as_bytes()).expect("a written frame re-parses");
        assert_eq!(again, Frame::Stanza(stanza), "{wire}");
    }
});
