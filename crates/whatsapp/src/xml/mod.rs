//! The XMPP XML layer: a streaming stanza parser and writer.
//!
//! - [`StreamParser`]: push parser for the TCP stream (RFC 6120 §4): feed bytes
//!   split anywhere, get [`StreamEvent`]s (`StreamOpen`, `Stanza`, `StreamClose`);
//!   [`StreamParser::reset`] restarts the stream after STARTTLS / SASL.
//! - [`FramedParser`]: one RFC 7395 WebSocket message → one [`Frame`].
//! - [`Element`]: the resolved tree (namespaces, not prefixes) with the helpers a
//!   server needs; the writer ([`write_stanza`], [`Element::to_xml`],
//!   [`stream_open`], [`stream_error`]) turns it back into bytes.
//! - [`Limits`] bound every stanza (64 KiB), nesting depth, attribute count and
//!   name/value length; violations, malformed or restricted XML become an
//!   [`XmlError`] carrying the RFC 6120 [`StreamErrorCondition`].
//!
//! Guarantees: O(input) work, memory bounded by [`Limits`], no DTD / comment /
//! PI / custom entity ever processed (RFC 6120 §11.1), write-then-parse gives back
//! an equal element. Not provided: rate limiting (the connection does it), TLS,
//! SASL, XML 1.1, non-UTF-8 input.

mod element;
mod error;
pub mod fuzzing;
mod parser;
mod writer;

pub use element::{Element, Node};
pub use error::{StreamErrorCondition, XmlError};
pub use parser::{Frame, FramedParser, Limits, StreamEvent, StreamParser};
pub use writer::{
    escape, framing_close, framing_open, stream_close, stream_error, stream_error_element,
    stream_open, write_stanza, write_stanza_into,
};

pub use crate::xmpp::{CLIENT_NS, FRAMING_NS, SERVER_NS, STREAM_ERRORS_NS, STREAMS_NS, XML_NS};

/// Whether `c` may appear in an XML 1.0 document (the `Char` production).
pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

#[cfg(test)]
mod tests;
