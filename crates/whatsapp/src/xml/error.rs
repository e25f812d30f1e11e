//! Stream errors raised by the XML layer, named by their RFC 6120 §4.9.3 condition.
//!
//! Every refusal of the parser is one of these conditions plus a human-readable
//! detail and the byte offset (within the current stream) where it was detected.
//! The connection turns it into `<stream:error>` (see [`super::stream_error`]) and
//! closes; the parser itself stays failed until [`super::StreamParser::reset`].

use std::fmt;

/// The RFC 6120 stream error conditions the XML layer can raise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamErrorCondition {
    /// Syntax error, bad UTF-8, mismatched tags, undeclared prefix, invalid
    /// character (RFC 6120 §4.9.3.13).
    NotWellFormed,
    /// A configured limit was exceeded: stanza size, nesting depth, attribute
    /// count or length (§4.9.3.14).
    PolicyViolation,
    /// Comments, processing instructions, DTDs or entity references other than
    /// the five predefined ones (§4.9.3.18, §11.1).
    RestrictedXml,
    /// Wrong stream namespace or unsupported content namespace (§4.9.3.10).
    InvalidNamespace,
    /// XML the server cannot process in this position, such as text directly
    /// under the stream root (§4.9.3.1).
    BadFormat,
    /// An XML declaration naming an encoding other than UTF-8 (§4.9.3.22).
    UnsupportedEncoding,
}

impl StreamErrorCondition {
    /// The element name of the condition inside `<stream:error>`.
    pub const fn as_condition(self) -> &'static str {
        match self {
            Self::NotWellFormed => "not-well-formed",
            Self::PolicyViolation => "policy-violation",
            Self::RestrictedXml => "restricted-xml",
            Self::InvalidNamespace => "invalid-namespace",
            Self::BadFormat => "bad-format",
            Self::UnsupportedEncoding => "unsupported-encoding",
        }
    }
}

impl fmt::Display for StreamErrorCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_condition())
    }
}

/// Why the parser refused its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlError {
    /// The stream error condition to send to the peer.
    pub condition: StreamErrorCondition,
    /// What exactly was wrong (for logs and the optional `<text/>`).
    pub detail: String,
    /// Byte offset within the current stream (since the last reset) where the
    /// offending token starts.
    pub offset: u64,
}

impl XmlError {
    pub(crate) fn new(
        condition: StreamErrorCondition,
        offset: u64,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            condition,
            detail: detail.into(),
            offset,
        }
    }
}

impl fmt::Display for XmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at byte {}: {}",
            self.condition, self.offset, self.detail
        )
    }
}

impl std::error::Error for XmlError {}
