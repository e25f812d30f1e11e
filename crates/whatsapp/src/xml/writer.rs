//! Serialising elements, stream headers and stream errors.
//!
//! Guarantees: output re-parses to an equal [`Element`] (see the round-trip
//! property test) as long as names are valid XML names. Text escapes `& < > " '`
//! and `\r`; attribute values additionally escape `\t` and `\n` so the parser's
//! attribute-value normalisation gives back the same string. Characters XML 1.0
//! cannot carry at all (most C0 controls, U+FFFE, U+FFFF) are written as U+FFFD.
//! A default namespace declaration is emitted only where the element's namespace
//! differs from the one in scope; elements in the streams namespace use the
//! `stream:` prefix, declared where it is not already in scope.

use super::element::{Element, Node};
use super::{CLIENT_NS, FRAMING_NS, STREAM_ERRORS_NS, STREAMS_NS, StreamErrorCondition, XML_NS};

/// What is in scope where an element is written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scope<'a> {
    default_ns: &'a str,
    stream_prefix: bool,
}

impl Scope<'static> {
    /// Nothing declared: a standalone document (a WebSocket frame).
    pub(crate) const fn standalone() -> Self {
        Self {
            default_ns: "",
            stream_prefix: false,
        }
    }

    /// Directly inside `<stream:stream xmlns="jabber:client" xmlns:stream=…>`.
    pub(crate) const fn client_stream() -> Self {
        Self {
            default_ns: CLIENT_NS,
            stream_prefix: true,
        }
    }
}

/// Serialises `element` as a top-level child of a `jabber:client` stream opened
/// by [`stream_open`]: `jabber:client` and the `stream:` prefix are in scope.
pub fn write_stanza(element: &Element) -> String {
    let mut out = String::new();
    write_element(element, &mut out, &Scope::client_stream());
    out
}

/// Appends `element` to `out` as a top-level child of a `jabber:client` stream.
pub fn write_stanza_into(element: &Element, out: &mut String) {
    write_element(element, out, &Scope::client_stream());
}

pub(crate) fn write_element(element: &Element, out: &mut String, scope: &Scope<'_>) {
    let mut inner = *scope;
    out.push('<');
    let in_streams_ns = element.ns() == STREAMS_NS;
    if in_streams_ns {
        out.push_str("stream:");
    }
    out.push_str(element.name());
    if in_streams_ns {
        if !scope.stream_prefix {
            out.push_str(" xmlns:stream=\"");
            escape_into(STREAMS_NS, out, true);
            out.push('"');
            inner.stream_prefix = true;
        }
    } else if element.ns() != scope.default_ns {
        out.push_str(" xmlns=\"");
        escape_into(element.ns(), out, true);
        out.push('"');
        inner.default_ns = element.ns();
    }
    // One generated prefix per distinct attribute namespace on this element.
    let mut generated: Vec<&str> = Vec::new();
    for (name, value) in element.attrs() {
        if name == "xmlns" || name.starts_with("xmlns:") {
            continue; // declarations are derived from namespaces, never copied
        }
        out.push(' ');
        if let Some((uri, local)) = clark_split(name) {
            if uri == XML_NS {
                out.push_str("xml:");
            } else {
                // Prefixes generated per element keep declarations local and
                // collision-free; namespaced attributes are rare in XMPP.
                let index = match generated.iter().position(|known| *known == uri) {
                    Some(index) => index,
                    None => {
                        generated.push(uri);
                        let index = generated.len() - 1;
                        out.push_str("xmlns:ns");
                        out.push_str(&index.to_string());
                        out.push_str("=\"");
                        escape_into(uri, out, true);
                        out.push_str("\" ");
                        index
                    }
                };
                out.push_str("ns");
                out.push_str(&index.to_string());
                out.push(':');
            }
            out.push_str(local);
        } else {
            out.push_str(name);
        }
        out.push_str("=\"");
        escape_into(value, out, true);
        out.push('"');
    }
    if element.nodes().is_empty() {
        out.push_str("/>");
        return;
    }
    out.push('>');
    for node in element.nodes() {
        match node {
            Node::Element(child) => write_element(child, out, &inner),
            Node::Text(text) => escape_into(text, out, false),
        }
    }
    out.push_str("</");
    if in_streams_ns {
        out.push_str("stream:");
    }
    out.push_str(element.name());
    out.push('>');
}

/// `{uri}local` → `(uri, local)`. Split at the last `}`: a URI may contain `}`
/// (found by fuzzing), an XML local name never does.
pub(crate) fn clark_split(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix('{')?;
    let close = rest.rfind('}')?;
    Some((&rest[..close], &rest[close + 1..]))
}

fn escape_into(raw: &str, out: &mut String, in_attribute: bool) {
    for c in raw.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#13;"),
            '\t' if in_attribute => out.push_str("&#9;"),
            '\n' if in_attribute => out.push_str("&#10;"),
            c if super::is_xml_char(c) => out.push(c),
            _ => out.push('\u{FFFD}'),
        }
    }
}

/// Escapes text for use as character data or an attribute value.
pub fn escape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    escape_into(raw, &mut out, true);
    out
}

/// The server's stream header: XML declaration plus the unclosed
/// `<stream:stream>` with `jabber:client` as default namespace. `attrs` are
/// written in order (typically `from`, `id`, `version`, `xml:lang`).
pub fn stream_open(attrs: &[(&str, &str)]) -> String {
    let mut out = String::from("<?xml version='1.0'?><stream:stream xmlns=\"");
    out.push_str(CLIENT_NS);
    out.push_str("\" xmlns:stream=\"");
    out.push_str(STREAMS_NS);
    out.push('"');
    push_attrs(&mut out, attrs);
    out.push('>');
    out
}

/// The stream's closing tag.
pub const fn stream_close() -> &'static str {
    "</stream:stream>"
}

/// `<stream:error>` with `condition` and an optional `<text/>`, for a stream
/// opened by [`stream_open`] (the `stream:` prefix is in scope).
pub fn stream_error(condition: StreamErrorCondition, text: Option<&str>) -> String {
    write_stanza(&stream_error_element(condition, text))
}

/// The `<stream:error>` element itself, e.g. to send standalone over WebSocket
/// with [`Element::to_xml`].
pub fn stream_error_element(condition: StreamErrorCondition, text: Option<&str>) -> Element {
    let mut error = Element::new("error", STREAMS_NS)
        .with_child(Element::new(condition.as_condition(), STREAM_ERRORS_NS));
    if let Some(text) = text {
        error.push_child(Element::new("text", STREAM_ERRORS_NS).with_text(text));
    }
    error
}

/// RFC 7395 `<open xmlns="urn:ietf:params:xml:ns:xmpp-framing" …/>`.
pub fn framing_open(attrs: &[(&str, &str)]) -> String {
    framing_element("open", attrs)
}

/// RFC 7395 `<close xmlns="urn:ietf:params:xml:ns:xmpp-framing" …/>`.
pub fn framing_close(attrs: &[(&str, &str)]) -> String {
    framing_element("close", attrs)
}

fn framing_element(name: &str, attrs: &[(&str, &str)]) -> String {
    let mut out = format!("<{name} xmlns=\"{FRAMING_NS}\"");
    push_attrs(&mut out, attrs);
    out.push_str("/>");
    out
}

fn push_attrs(out: &mut String, attrs: &[(&str, &str)]) {
    for (name, value) in attrs {
        out.push(' ');
        out.push_str(name);
        out.push_str("=\"");
        escape_into(value, out, true);
        out.push('"');
    }
}
