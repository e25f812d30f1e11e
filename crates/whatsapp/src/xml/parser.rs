//! Push parsers: [`StreamParser`] for the TCP stream, [`FramedParser`] for
//! RFC 7395 WebSocket frames.
//!
//! How it works: a resumable scanner finds token boundaries (`<…>` respecting
//! quotes, text up to `<`, `<![CDATA[…]]>`, `<?…?>`) and remembers how far it has
//! looked, so bytes split anywhere — mid-tag, mid-UTF-8, mid-entity — are each
//! scanned once. Complete tokens are then decoded with quick-xml's attribute
//! tokenizer (duplicate checks on) and its entity resolver restricted to the five
//! predefined entities and character references. quick-xml's own `Reader` is not
//! used for framing because it cannot resume inside a token on a push stream
//! without rescanning it (quadratic on slow senders).
//!
//! Guarantees:
//! - O(input) work; memory bounded by `max_stanza_bytes` plus whatever the caller
//!   fed since it last drained events (at most `max_buffer_bytes` in total).
//! - Limits are checked as bytes arrive, before the buffer grows past them: a
//!   stanza of exactly `max_stanza_bytes` (from its `<` to its last `>`) is
//!   accepted, one byte more is `policy-violation`, even before it completes.
//! - No DTD, comment, PI (other than a leading XML declaration) or custom entity
//!   is ever processed: each is `restricted-xml` on sight; nothing is expanded.
//! - Errors are sticky: after one, every call returns the same error until
//!   [`StreamParser::reset`].
//!
//! Not done here: rate limiting (the connection's job), SASL/TLS semantics (the
//! caller decides when to [`StreamParser::reset`]), XML 1.1, non-UTF-8 encodings.

use quick_xml::escape::{EscapeError, unescape};
use quick_xml::events::attributes::{AttrError, Attributes};

use super::element::Element;
use super::error::{StreamErrorCondition as Cond, XmlError};
use super::{CLIENT_NS, FRAMING_NS, STREAMS_NS, XML_NS, is_xml_char};

/// Parser limits. Every field bounds memory or work per connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest top-level element (stanza), stream header or WebSocket frame, in
    /// bytes of input. Default 64 KiB.
    pub max_stanza_bytes: usize,
    /// Deepest element nesting inside a stanza; the stanza itself is depth 1.
    /// Default 32.
    pub max_depth: usize,
    /// Most attributes (namespace declarations included) on one element.
    /// Default 64.
    pub max_attrs: usize,
    /// Longest element or attribute name (prefix included), in bytes. Default 256.
    pub max_name_bytes: usize,
    /// Longest single attribute value as written, in bytes. Default 16 KiB.
    pub max_attr_value_bytes: usize,
    /// Most unparsed bytes held at once (an incomplete token plus what was fed
    /// since the caller last drained events). Default 128 KiB.
    pub max_buffer_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_stanza_bytes: 64 * 1024,
            max_depth: 32,
            max_attrs: 64,
            max_name_bytes: 256,
            max_attr_value_bytes: 16 * 1024,
            max_buffer_bytes: 128 * 1024,
        }
    }
}

impl Limits {
    /// The limits actually enforced: zeros become 1 (a zero limit would refuse
    /// everything, which is never what a configuration meant) and the buffer is
    /// at least one stanza. Parsers apply this themselves; it never fails.
    pub fn sanitized(&self) -> Self {
        let max_stanza_bytes = self.max_stanza_bytes.max(1);
        Self {
            max_stanza_bytes,
            max_depth: self.max_depth.max(1),
            max_attrs: self.max_attrs.max(1),
            max_name_bytes: self.max_name_bytes.max(1),
            max_attr_value_bytes: self.max_attr_value_bytes.max(1),
            max_buffer_bytes: self.max_buffer_bytes.max(max_stanza_bytes),
        }
    }
}

/// What the TCP stream parser yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// The `<stream:stream …>` header; its attributes, namespace declarations
    /// excluded (`to`, `from`, `version`, `xml:lang`, `id`).
    StreamOpen {
        /// Attributes of the header in document order.
        attrs: Vec<(String, String)>,
    },
    /// One complete top-level element: a stanza (`message`, `presence`, `iq`) or
    /// a negotiation element (`auth`, `starttls`, `r`, `a`, `enable`, …).
    Stanza(Element),
    /// `</stream:stream>`: the peer closed its stream.
    StreamClose,
}

/// One RFC 7395 WebSocket text message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `<open xmlns="urn:ietf:params:xml:ns:xmpp-framing" …/>` and its attributes.
    Open {
        /// Attributes in document order.
        attrs: Vec<(String, String)>,
    },
    /// `<close xmlns="urn:ietf:params:xml:ns:xmpp-framing" …/>` and its attributes.
    Close {
        /// Attributes in document order.
        attrs: Vec<(String, String)>,
    },
    /// Any other top-level element, carrying its own namespace declaration.
    Stanza(Element),
}

/// The token the scanner is in the middle of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Tag,
    CData,
    Pi,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the root element: XML declaration and whitespace allowed.
    Prolog,
    /// Inside the root (stream mode) or inside the single element (frame mode).
    Body,
    /// The root closed: only whitespace may follow.
    Done,
}

/// Namespace declarations made by one open element.
#[derive(Debug, Default)]
struct NsFrame {
    default_ns: Option<String>,
    prefixes: Vec<(String, String)>,
}

/// An element still open: the tree under construction plus its name as written.
#[derive(Debug)]
struct Open {
    element: Element,
    qname: String,
}

/// The scanner and tree builder shared by both parsers.
#[derive(Debug)]
struct Core {
    limits: Limits,
    /// Stream mode: the root is the `<stream:stream>` container and its children
    /// are emitted. Frame mode: the root itself is the element emitted.
    container_root: bool,
    buf: Vec<u8>,
    /// Start of the first unconsumed byte in `buf`.
    pos: usize,
    kind: Option<Kind>,
    /// How far the current token has been scanned (absolute index in `buf`).
    scan: usize,
    quote: u8,
    /// Bytes consumed since the stream (re)started; offsets in errors.
    consumed: u64,
    phase: Phase,
    /// Open elements of the current top-level element (root excluded in stream mode).
    open: Vec<Open>,
    /// Namespace scopes: the base scope, then one per open element (root included).
    ns: Vec<NsFrame>,
    root_qname: String,
    /// The default namespace the container root declared (the content namespace).
    root_default_ns: Option<String>,
    /// Bytes of the current top-level element consumed so far (0 between elements).
    element_bytes: usize,
    failed: Option<XmlError>,
}

/// What a complete token produced.
#[derive(Debug)]
enum Produced {
    Nothing,
    RootOpen(Element),
    RootClose,
    Element(Element),
}

impl Core {
    fn new(limits: Limits, container_root: bool) -> Self {
        let limits = limits.sanitized();
        Self {
            limits,
            container_root,
            buf: Vec::new(),
            pos: 0,
            kind: None,
            scan: 0,
            quote: 0,
            consumed: 0,
            phase: Phase::Prolog,
            open: Vec::new(),
            ns: vec![NsFrame::default()],
            root_qname: String::new(),
            root_default_ns: None,
            element_bytes: 0,
            failed: None,
        }
    }

    fn restart(&mut self) {
        self.kind = None;
        self.scan = self.pos;
        self.quote = 0;
        self.consumed = 0;
        self.phase = Phase::Prolog;
        self.open.clear();
        self.ns.truncate(1);
        self.root_qname.clear();
        self.root_default_ns = None;
        self.element_bytes = 0;
        self.failed = None;
    }

    fn err(&self, condition: Cond, at: usize, detail: impl Into<String>) -> XmlError {
        let offset = self.consumed + (at.saturating_sub(self.pos)) as u64;
        XmlError::new(condition, offset, detail)
    }

    fn feed(&mut self, input: &[u8]) -> Result<(), XmlError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        if self.pos > 0 {
            // Compact: only the unconsumed tail moves.
            self.buf.copy_within(self.pos.., 0);
            self.buf.truncate(self.buf.len() - self.pos);
            self.scan -= self.pos;
            self.pos = 0;
        }
        if self.buf.len() + input.len() > self.limits.max_buffer_bytes {
            let error = self.err(
                Cond::PolicyViolation,
                self.buf.len(),
                format!(
                    "more than {} unparsed bytes buffered",
                    self.limits.max_buffer_bytes
                ),
            );
            self.failed = Some(error.clone());
            return Err(error);
        }
        self.buf.extend_from_slice(input);
        Ok(())
    }

    /// Processes tokens until one produces something or input runs out.
    fn next(&mut self) -> Result<Option<Produced>, XmlError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        match self.step() {
            Ok(None) if self.pos == self.buf.len() => {
                // Everything fed was parsed: hold no buffer until the next read (an
                // idle connection costs nothing here, and one large stanza does not
                // pin its capacity for the connection's life). `scan` is between
                // `pos` and the end, so it is at the end too.
                self.buf = Vec::new();
                self.pos = 0;
                self.scan = 0;
                // Between stanzas, the element stack and the namespace frames of
                // the last one's children are not needed either.
                if self.open.is_empty() {
                    self.open = Vec::new();
                }
                self.ns.shrink_to_fit();
                Ok(None)
            }
            Ok(produced) => Ok(produced),
            Err(error) => {
                self.failed = Some(error.clone());
                Err(error)
            }
        }
    }

    fn step(&mut self) -> Result<Option<Produced>, XmlError> {
        loop {
            let Some((kind, end)) = self.scan_token()? else {
                return Ok(None);
            };
            let start = self.pos;
            let produced = self.process(kind, start, end)?;
            self.consumed += (end - start) as u64;
            self.pos = end;
            self.kind = None;
            self.scan = end;
            self.quote = 0;
            if !matches!(produced, Produced::Nothing) {
                return Ok(Some(produced));
            }
        }
    }

    /// Whether text here is outside any element being built (so only whitespace
    /// is allowed and nothing needs buffering).
    fn at_top(&self) -> bool {
        self.open.is_empty()
    }

    /// Finds the next complete token, resuming where the last call stopped.
    fn scan_token(&mut self) -> Result<Option<(Kind, usize)>, XmlError> {
        loop {
            let start = self.pos;
            if start >= self.buf.len() {
                return Ok(None);
            }
            if self.kind.is_none() {
                if self.buf[start] != b'<' {
                    if self.at_top() {
                        // Whitespace between elements (keepalives) is consumed in
                        // place, never buffered.
                        let run = self.buf[start..]
                            .iter()
                            .take_while(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
                            .count();
                        if run == 0 {
                            let (condition, detail) = match self.phase {
                                Phase::Body => {
                                    (Cond::BadFormat, "text directly under the stream root")
                                }
                                _ => (Cond::NotWellFormed, "text outside the root element"),
                            };
                            return Err(self.err(condition, start, detail));
                        }
                        self.pos += run;
                        self.scan = self.pos;
                        self.consumed += run as u64;
                        continue;
                    }
                    self.kind = Some(Kind::Text);
                    self.scan = start;
                } else {
                    let available = &self.buf[start..];
                    if available.len() < 2 {
                        return self.incomplete(start);
                    }
                    match available[1] {
                        b'!' => {
                            const CDATA: &[u8] = b"<![CDATA[";
                            let head = &available[..available.len().min(CDATA.len())];
                            if !CDATA.starts_with(head) {
                                let what = match available.get(2) {
                                    Some(b'-') => "comments are not allowed",
                                    _ => "DTDs and markup declarations are not allowed",
                                };
                                return Err(self.err(Cond::RestrictedXml, start, what));
                            }
                            if head.len() < CDATA.len() {
                                return self.incomplete(start);
                            }
                            self.kind = Some(Kind::CData);
                            self.scan = start + CDATA.len();
                        }
                        b'?' => {
                            self.kind = Some(Kind::Pi);
                            self.scan = start + 2;
                        }
                        _ => {
                            self.kind = Some(Kind::Tag);
                            self.scan = start + 1;
                            self.quote = 0;
                        }
                    }
                }
            }
            let kind = self.kind.expect("set above");
            let found = match kind {
                Kind::Text => self.buf[self.scan..]
                    .iter()
                    .position(|&b| b == b'<')
                    .map(|i| self.scan + i),
                Kind::Tag => {
                    let mut found = None;
                    let mut i = self.scan;
                    while i < self.buf.len() {
                        let b = self.buf[i];
                        if self.quote != 0 {
                            if b == self.quote {
                                self.quote = 0;
                            } else if b == b'<' {
                                return Err(self.err(
                                    Cond::NotWellFormed,
                                    i,
                                    "'<' in attribute value",
                                ));
                            }
                        } else if b == b'"' || b == b'\'' {
                            self.quote = b;
                        } else if b == b'>' {
                            found = Some(i + 1);
                            break;
                        } else if b == b'<' {
                            return Err(self.err(Cond::NotWellFormed, i, "'<' inside a tag"));
                        }
                        i += 1;
                    }
                    if found.is_none() {
                        self.scan = self.buf.len();
                    }
                    found
                }
                Kind::CData => self.find_terminator(b"]]>", start + 9),
                Kind::Pi => self.find_terminator(b"?>", start + 2),
            };
            match found {
                Some(end) => {
                    self.check_size(start, end)?;
                    return Ok(Some((kind, end)));
                }
                None => {
                    if kind == Kind::Text {
                        self.scan = self.buf.len();
                    }
                    return self.incomplete(start);
                }
            }
        }
    }

    /// Finds `terminator` from `self.scan`, remembering where to resume (a
    /// terminator may be split across feeds, so back off by its length - 1).
    fn find_terminator(&mut self, terminator: &[u8], floor: usize) -> Option<usize> {
        let from = self.scan;
        let found = self.buf[from..]
            .windows(terminator.len())
            .position(|window| window == terminator)
            .map(|i| from + i + terminator.len());
        if found.is_none() {
            self.scan = self
                .buf
                .len()
                .saturating_sub(terminator.len() - 1)
                .max(floor)
                .max(from);
        }
        found
    }

    /// The token starting at `start` is incomplete: refuse it now if it already
    /// exceeds the size limit, else wait for more input.
    fn incomplete(&mut self, start: usize) -> Result<Option<(Kind, usize)>, XmlError> {
        self.check_size(start, self.buf.len())?;
        Ok(None)
    }

    fn check_size(&self, start: usize, end: usize) -> Result<(), XmlError> {
        let total = self.element_bytes + (end - start);
        if total > self.limits.max_stanza_bytes {
            return Err(self.err(
                Cond::PolicyViolation,
                start,
                format!("element exceeds {} bytes", self.limits.max_stanza_bytes),
            ));
        }
        Ok(())
    }

    fn process(&mut self, kind: Kind, start: usize, end: usize) -> Result<Produced, XmlError> {
        let bytes = &self.buf[start..end];
        let token = match std::str::from_utf8(bytes) {
            Ok(token) => token.to_owned(),
            Err(error) => {
                return Err(self.err(
                    Cond::NotWellFormed,
                    start + error.valid_up_to(),
                    "invalid UTF-8",
                ));
            }
        };
        if self.phase == Phase::Done && kind != Kind::Text {
            return Err(self.err(Cond::NotWellFormed, start, "content after the root element"));
        }
        match kind {
            Kind::Pi => self.process_pi(&token, start),
            Kind::CData => {
                if self.at_top() {
                    return Err(self.err(Cond::BadFormat, start, "CDATA outside an element"));
                }
                self.element_bytes += token.len();
                let content = &token[9..token.len() - 3];
                let text = normalize_eol(content);
                self.check_chars(&text, start)?;
                self.current().push_text(text);
                Ok(Produced::Nothing)
            }
            Kind::Text => {
                debug_assert!(
                    !self.at_top(),
                    "top-level whitespace is consumed by the scanner"
                );
                self.element_bytes += token.len();
                if token.contains("]]>") {
                    return Err(self.err(Cond::NotWellFormed, start, "']]>' in text"));
                }
                let text = self.unescape(&normalize_eol(&token), start)?;
                self.check_chars(&text, start)?;
                self.current().push_text(text);
                Ok(Produced::Nothing)
            }
            Kind::Tag => {
                if token.starts_with("</") {
                    self.process_end(&token, start)
                } else {
                    self.process_start(&token, start)
                }
            }
        }
    }

    fn current(&mut self) -> &mut Element {
        &mut self
            .open
            .last_mut()
            .expect("text only inside an element")
            .element
    }

    fn process_pi(&mut self, token: &str, start: usize) -> Result<Produced, XmlError> {
        let body = &token[2..token.len() - 2];
        let target_len = body
            .find(|c: char| c.is_ascii_whitespace())
            .unwrap_or(body.len());
        let target = &body[..target_len];
        if !target.eq_ignore_ascii_case("xml") {
            return Err(self.err(
                Cond::RestrictedXml,
                start,
                "processing instructions are not allowed",
            ));
        }
        if target != "xml" || self.phase != Phase::Prolog || self.consumed != 0 {
            return Err(self.err(
                Cond::NotWellFormed,
                start,
                "the XML declaration must come first",
            ));
        }
        let mut version = None;
        let mut attrs = Attributes::new(body, target_len);
        for attr in attrs.with_checks(true) {
            let attr = attr.map_err(|error| self.attr_error(error, start))?;
            let value = String::from_utf8_lossy(&attr.value);
            match attr.key.as_ref() {
                b"version" => version = Some(value.into_owned()),
                b"encoding" => {
                    if !value.eq_ignore_ascii_case("utf-8") {
                        return Err(self.err(
                            Cond::UnsupportedEncoding,
                            start,
                            format!("encoding {value:?}: only UTF-8 is supported"),
                        ));
                    }
                }
                b"standalone" => {}
                other => {
                    return Err(self.err(
                        Cond::NotWellFormed,
                        start,
                        format!(
                            "unknown XML declaration field {:?}",
                            String::from_utf8_lossy(other)
                        ),
                    ));
                }
            }
        }
        if version.as_deref() != Some("1.0") {
            return Err(self.err(
                Cond::NotWellFormed,
                start,
                "XML declaration must say version 1.0",
            ));
        }
        Ok(Produced::Nothing)
    }

    fn attr_error(&self, error: AttrError, start: usize) -> XmlError {
        self.err(
            Cond::NotWellFormed,
            start,
            format!("bad attribute: {error}"),
        )
    }

    fn unescape(&self, raw: &str, start: usize) -> Result<String, XmlError> {
        match unescape(raw) {
            Ok(text) => Ok(text.into_owned()),
            Err(EscapeError::UnrecognizedEntity(_, name)) => Err(self.err(
                Cond::RestrictedXml,
                start,
                format!("entity &{name}; is not one of the five predefined entities"),
            )),
            Err(error) => Err(self.err(
                Cond::NotWellFormed,
                start,
                format!("bad reference: {error}"),
            )),
        }
    }

    fn check_chars(&self, text: &str, start: usize) -> Result<(), XmlError> {
        match text.chars().find(|c| !is_xml_char(*c)) {
            None => Ok(()),
            Some(c) => Err(self.err(
                Cond::NotWellFormed,
                start,
                format!("character U+{:04X} is not allowed in XML", c as u32),
            )),
        }
    }

    fn check_name(&self, name: &str, start: usize) -> Result<(), XmlError> {
        if name.len() > self.limits.max_name_bytes {
            return Err(self.err(
                Cond::PolicyViolation,
                start,
                format!("name longer than {} bytes", self.limits.max_name_bytes),
            ));
        }
        let valid = match name.split_once(':') {
            Some((prefix, local)) => is_ncname(prefix) && is_ncname(local),
            None => is_ncname(name),
        };
        if !valid {
            return Err(self.err(Cond::NotWellFormed, start, format!("invalid name {name:?}")));
        }
        Ok(())
    }

    fn resolve_prefix(&self, prefix: &str) -> Option<&str> {
        if prefix == "xml" {
            return Some(XML_NS);
        }
        self.ns.iter().rev().find_map(|frame| {
            frame
                .prefixes
                .iter()
                .find(|(p, _)| p == prefix)
                .map(|(_, uri)| uri.as_str())
        })
    }

    fn default_ns(&self) -> &str {
        self.ns
            .iter()
            .rev()
            .find_map(|frame| frame.default_ns.as_deref())
            .unwrap_or("")
    }

    fn process_start(&mut self, token: &str, start: usize) -> Result<Produced, XmlError> {
        let self_closing = token.ends_with("/>");
        let content = &token[1..token.len() - if self_closing { 2 } else { 1 }];
        let name_len = content
            .find([' ', '\t', '\r', '\n'])
            .unwrap_or(content.len());
        let qname = &content[..name_len];
        self.check_name(qname, start)?;

        let starts_top_level = self.phase == Phase::Body && self.open.is_empty();
        let is_root = self.phase == Phase::Prolog;
        if starts_top_level || (is_root && !self.container_root) {
            self.element_bytes = 0;
        }
        if !is_root || !self.container_root {
            self.element_bytes += token.len();
            let depth = self.open.len() + 1;
            if depth > self.limits.max_depth {
                return Err(self.err(
                    Cond::PolicyViolation,
                    start,
                    format!("nesting deeper than {}", self.limits.max_depth),
                ));
            }
        }

        // Attributes: namespace declarations first, then the rest resolved.
        let mut frame = NsFrame::default();
        let mut raw_attrs: Vec<(String, String)> = Vec::new();
        let mut count = 0usize;
        let mut attributes = Attributes::new(content, name_len);
        for attr in attributes.with_checks(true) {
            let attr = attr.map_err(|error| self.attr_error(error, start))?;
            count += 1;
            if count > self.limits.max_attrs {
                return Err(self.err(
                    Cond::PolicyViolation,
                    start,
                    format!("more than {} attributes", self.limits.max_attrs),
                ));
            }
            // Slices of a UTF-8 token cut at ASCII delimiters: always UTF-8.
            let key = std::str::from_utf8(attr.key.as_ref())
                .map_err(|_| self.err(Cond::NotWellFormed, start, "invalid UTF-8"))?;
            self.check_name(key, start)?;
            if attr.value.len() > self.limits.max_attr_value_bytes {
                return Err(self.err(
                    Cond::PolicyViolation,
                    start,
                    format!(
                        "attribute value longer than {} bytes",
                        self.limits.max_attr_value_bytes
                    ),
                ));
            }
            let raw = std::str::from_utf8(&attr.value)
                .map_err(|_| self.err(Cond::NotWellFormed, start, "invalid UTF-8"))?;
            let value = self.unescape(&normalize_attr_whitespace(raw), start)?;
            self.check_chars(&value, start)?;
            if key == "xmlns" {
                if value == XML_NS || value == XMLNS_NS {
                    return Err(self.err(
                        Cond::NotWellFormed,
                        start,
                        "reserved namespace as default",
                    ));
                }
                frame.default_ns = Some(value);
            } else if let Some(prefix) = key.strip_prefix("xmlns:") {
                if prefix == "xmlns" || (prefix == "xml") != (value == XML_NS) || value == XMLNS_NS
                {
                    return Err(self.err(
                        Cond::NotWellFormed,
                        start,
                        format!("illegal declaration of prefix {prefix:?}"),
                    ));
                }
                if value.is_empty() {
                    return Err(self.err(
                        Cond::NotWellFormed,
                        start,
                        format!("prefix {prefix:?} bound to the empty namespace"),
                    ));
                }
                if prefix != "xml" {
                    frame.prefixes.push((prefix.to_owned(), value));
                }
            } else {
                raw_attrs.push((key.to_owned(), value));
            }
        }
        self.ns.push(frame);

        let (local, ns) = match qname.split_once(':') {
            Some(("xml", _)) => {
                return Err(self.err(
                    Cond::NotWellFormed,
                    start,
                    "element names may not use the reserved xml prefix",
                ));
            }
            Some((prefix, local)) => match self.resolve_prefix(prefix) {
                Some(uri) => (local, uri.to_owned()),
                None => {
                    return Err(self.err(
                        Cond::NotWellFormed,
                        start,
                        format!("undeclared prefix {prefix:?}"),
                    ));
                }
            },
            None => (qname, self.default_ns().to_owned()),
        };
        let mut element = Element::new(local, ns);
        for (key, value) in raw_attrs {
            let resolved = match key.split_once(':') {
                None => key,
                Some(("xml", local)) => format!("xml:{local}"),
                Some((prefix, local)) => match self.resolve_prefix(prefix) {
                    Some(uri) => format!("{{{uri}}}{local}"),
                    None => {
                        return Err(self.err(
                            Cond::NotWellFormed,
                            start,
                            format!("undeclared prefix {prefix:?}"),
                        ));
                    }
                },
            };
            if element.attr(&resolved).is_some() {
                return Err(self.err(
                    Cond::NotWellFormed,
                    start,
                    format!("duplicate attribute {resolved:?}"),
                ));
            }
            element.set_attr(resolved, value);
        }

        if is_root {
            self.phase = Phase::Body;
            if self.container_root {
                self.root_qname = qname.to_owned();
                self.root_default_ns = self.ns.last().and_then(|f| f.default_ns.clone());
                if self_closing {
                    self.ns.pop();
                    self.phase = Phase::Done;
                }
                return Ok(Produced::RootOpen(element));
            }
        }
        if self_closing {
            self.ns.pop();
            return Ok(self.close_element(element));
        }
        self.open.push(Open {
            element,
            qname: qname.to_owned(),
        });
        Ok(Produced::Nothing)
    }

    /// Attaches a finished element to its parent, or emits it if top-level.
    fn close_element(&mut self, element: Element) -> Produced {
        match self.open.last_mut() {
            Some(parent) => {
                parent.element.push_child(element);
                Produced::Nothing
            }
            None => {
                self.element_bytes = 0;
                if !self.container_root {
                    self.phase = Phase::Done;
                }
                Produced::Element(element)
            }
        }
    }

    fn process_end(&mut self, token: &str, start: usize) -> Result<Produced, XmlError> {
        let name = token[2..token.len() - 1].trim_end_matches([' ', '\t', '\r', '\n']);
        match self.open.pop() {
            Some(open) => {
                self.element_bytes += token.len();
                if open.qname != name {
                    return Err(self.err(
                        Cond::NotWellFormed,
                        start,
                        format!("</{name}> closes <{}>", open.qname),
                    ));
                }
                self.ns.pop();
                Ok(self.close_element(open.element))
            }
            None if self.container_root && self.phase == Phase::Body => {
                if self.root_qname != name {
                    return Err(self.err(
                        Cond::NotWellFormed,
                        start,
                        format!("</{name}> closes <{}>", self.root_qname),
                    ));
                }
                self.ns.pop();
                self.phase = Phase::Done;
                Ok(Produced::RootClose)
            }
            None => Err(self.err(
                Cond::NotWellFormed,
                start,
                format!("</{name}> closes nothing"),
            )),
        }
    }
}

const XMLNS_NS: &str = "http://www.w3.org/2000/xmlns/";

/// XML end-of-line handling: `\r\n` and lone `\r` become `\n`.
fn normalize_eol(raw: &str) -> String {
    if !raw.contains('\r') {
        return raw.to_owned();
    }
    raw.replace("\r\n", "\n").replace('\r', "\n")
}

/// XML attribute-value normalisation for literal whitespace (references such as
/// `&#10;` are resolved afterwards and so survive).
fn normalize_attr_whitespace(raw: &str) -> String {
    if !raw.contains(['\r', '\n', '\t']) {
        return raw.to_owned();
    }
    raw.replace("\r\n", " ").replace(['\r', '\n', '\t'], " ")
}

fn is_name_start(c: char) -> bool {
    matches!(c,
        'A'..='Z' | '_' | 'a'..='z' | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}'
        | '\u{F8}'..='\u{2FF}' | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}'
        | '\u{200C}'..='\u{200D}' | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}'
        | '\u{3001}'..='\u{D7FF}' | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}'
        | '\u{10000}'..='\u{EFFFF}')
}

/// An XML name without colons (Namespaces in XML 1.0 `NCName`).
pub(crate) fn is_ncname(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) if is_name_start(first) => chars.all(|c| {
            is_name_start(c)
                || matches!(c, '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
        }),
        _ => false,
    }
}

/// The push parser for an XMPP stream over TCP (RFC 6120 §4).
///
/// Feed bytes as they arrive with [`StreamParser::feed`], then drain events with
/// [`StreamParser::next_event`] until it returns `Ok(None)`.
#[derive(Debug)]
pub struct StreamParser {
    core: Core,
    content_ns: String,
    /// A self-closing `<stream:stream/>` opened and closed at once: the close is
    /// reported on the next call.
    close_pending: bool,
}

impl StreamParser {
    /// A parser for a `jabber:client` stream with these limits.
    pub fn new(limits: Limits) -> Self {
        Self::with_content_namespace(limits, CLIENT_NS)
    }

    /// A parser whose stream must declare `content_ns` as its default namespace
    /// (`jabber:server` for server-to-server).
    pub fn with_content_namespace(limits: Limits, content_ns: &str) -> Self {
        Self {
            core: Core::new(limits, true),
            content_ns: content_ns.to_owned(),
            close_pending: false,
        }
    }

    /// Appends bytes read from the connection. Fails with `policy-violation` if
    /// more than `max_buffer_bytes` would be held unparsed (drain events between
    /// feeds and this never happens for reads up to `max_buffer_bytes -
    /// max_stanza_bytes`).
    pub fn feed(&mut self, input: &[u8]) -> Result<(), XmlError> {
        self.core.feed(input)
    }

    /// The next event, or `Ok(None)` when more input is needed.
    pub fn next_event(&mut self) -> Result<Option<StreamEvent>, XmlError> {
        if std::mem::take(&mut self.close_pending) {
            return Ok(Some(StreamEvent::StreamClose));
        }
        let produced = match self.core.next()? {
            None => return Ok(None),
            Some(produced) => produced,
        };
        let event = match produced {
            Produced::Nothing => unreachable!("step returns only real events"),
            Produced::RootOpen(header) => {
                let offset = 0;
                let fail = |core: &mut Core, condition, detail: String| {
                    let error = XmlError::new(condition, offset, detail);
                    core.failed = Some(error.clone());
                    Err(error)
                };
                if header.ns() != STREAMS_NS {
                    return fail(
                        &mut self.core,
                        Cond::InvalidNamespace,
                        format!("stream namespace {:?}", header.ns()),
                    );
                }
                if header.name() != "stream" {
                    return fail(
                        &mut self.core,
                        Cond::BadFormat,
                        format!("root element <{}> is not <stream>", header.name()),
                    );
                }
                let declared = self.core.root_default_ns.clone();
                if declared.as_deref() != Some(self.content_ns.as_str()) {
                    return fail(
                        &mut self.core,
                        Cond::InvalidNamespace,
                        format!(
                            "content namespace {:?}, expected {:?}",
                            declared.unwrap_or_default(),
                            self.content_ns
                        ),
                    );
                }
                self.close_pending = self.core.phase == Phase::Done;
                StreamEvent::StreamOpen {
                    attrs: header.attrs().to_vec(),
                }
            }
            Produced::RootClose => StreamEvent::StreamClose,
            Produced::Element(element) => StreamEvent::Stanza(element),
        };
        Ok(Some(event))
    }

    /// Feeds `input` and appends every event it completes to `out`. On error the
    /// events before the error are still in `out`.
    pub fn feed_events(
        &mut self,
        input: &[u8],
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), XmlError> {
        self.feed(input)?;
        while let Some(event) = self.next_event()? {
            out.push(event);
        }
        Ok(())
    }

    /// Starts a fresh stream (RFC 6120 §4.3.3: after STARTTLS and SASL success).
    /// Bytes already fed but not yet parsed are kept: they belong to the new
    /// stream (a pipelining client may have sent its new header already).
    pub fn reset(&mut self) {
        self.close_pending = false;
        self.core.restart();
    }

    /// Removes and returns the bytes fed but not yet parsed, e.g. the first bytes
    /// of a TLS handshake that followed `<starttls/>` in the same read.
    pub fn take_unparsed(&mut self) -> Vec<u8> {
        let rest = self.core.buf.split_off(self.core.pos);
        self.core.buf.clear();
        self.core.pos = 0;
        self.reset();
        rest
    }

    /// Bytes currently held unparsed (always at most `max_buffer_bytes`).
    pub fn buffered_len(&self) -> usize {
        self.core.buf.len() - self.core.pos
    }

    /// Heap bytes the input buffer holds: 0 once every event of what was fed has
    /// been taken.
    pub fn buffer_capacity(&self) -> usize {
        self.core.buf.capacity()
    }

    /// Whether the peer's `</stream:stream>` has been seen.
    pub fn is_closed(&self) -> bool {
        self.core.phase == Phase::Done
    }
}

impl Default for StreamParser {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

/// The parser for RFC 7395 WebSocket text messages: each is one complete XML
/// document holding one element with its own namespace declaration.
#[derive(Debug, Clone, Default)]
pub struct FramedParser {
    limits: Limits,
}

impl FramedParser {
    /// A frame parser with these limits (`max_stanza_bytes` bounds a frame).
    pub fn new(limits: Limits) -> Self {
        Self {
            limits: limits.sanitized(),
        }
    }

    /// Parses one WebSocket text message.
    pub fn parse(&self, frame: &[u8]) -> Result<Frame, XmlError> {
        if frame.len() > self.limits.max_stanza_bytes {
            return Err(XmlError::new(
                Cond::PolicyViolation,
                0,
                format!("frame exceeds {} bytes", self.limits.max_stanza_bytes),
            ));
        }
        let mut limits = self.limits.clone();
        limits.max_buffer_bytes = limits.max_buffer_bytes.max(frame.len());
        let mut core = Core::new(limits, false);
        core.feed(frame)?;
        let element = match core.next()? {
            Some(Produced::Element(element)) => element,
            _ => {
                return Err(XmlError::new(
                    Cond::NotWellFormed,
                    frame.len() as u64,
                    "frame does not hold one complete element",
                ));
            }
        };
        // Only whitespace may follow the element.
        if let Some(extra) = core.next()? {
            return Err(XmlError::new(
                Cond::NotWellFormed,
                core.consumed,
                format!("frame holds more than one element ({extra:?})"),
            ));
        }
        if core.buffered_nonempty() {
            return Err(XmlError::new(
                Cond::NotWellFormed,
                core.consumed,
                "frame ends inside a token",
            ));
        }
        if element.ns() == FRAMING_NS {
            let attrs = element.attrs().to_vec();
            if element.nodes().iter().next().is_some() {
                return Err(XmlError::new(
                    Cond::BadFormat,
                    0,
                    format!("<{}/> must be empty", element.name()),
                ));
            }
            return match element.name() {
                "open" => Ok(Frame::Open { attrs }),
                "close" => Ok(Frame::Close { attrs }),
                other => Err(XmlError::new(
                    Cond::BadFormat,
                    0,
                    format!("unknown framing element <{other}/>"),
                )),
            };
        }
        if element.ns().is_empty() {
            return Err(XmlError::new(
                Cond::InvalidNamespace,
                0,
                "element declares no namespace (RFC 7395 frames carry their own xmlns)",
            ));
        }
        if matches!(element.name(), "message" | "presence" | "iq") && element.ns() != CLIENT_NS {
            return Err(XmlError::new(
                Cond::InvalidNamespace,
                0,
                format!(
                    "stanza in namespace {:?}, expected {CLIENT_NS:?}",
                    element.ns()
                ),
            ));
        }
        Ok(Frame::Stanza(element))
    }
}

impl Core {
    fn buffered_nonempty(&self) -> bool {
        self.pos < self.buf.len()
    }
}
