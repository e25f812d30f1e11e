//! What a connection speaks over: a byte stream (TCP, upgradable in place to TLS by
//! STARTTLS, or TLS from the first byte) parsed by the [`StreamParser`], or an
//! RFC 7395 WebSocket where each text message is one frame parsed by the
//! [`FramedParser`] and every write is one message per top-level element.
//!
//! The stanza code never sees the difference: it writes what [`write_stanza`]
//! produces for a `jabber:client` stream, and the WebSocket side turns each
//! top-level element into a standalone document (adding the `xmlns` that the
//! stream scope implied). Stream headers differ per transport and come from
//! [`Transport::header`] / [`Transport::footer`].
//!
//! Also here: the per-connection [`Throttle`] (token buckets for stanzas and bytes,
//! decided on the injected clock) that pauses reading when a client sends too fast,
//! so the kernel's TCP window pushes back on that client alone.
//!
//! Deliberately absent: WebSocket over TLS (`wss://`: put a TLS terminator in
//! front), WebSocket compression, HTTP/2 WebSockets.
//!
//! [`write_stanza`]: crate::xml::write_stanza

use std::fmt;
use std::io;
use std::time::{Duration, Instant};

use casebook_kit::clock::SharedClock;
use futures::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

use crate::xml::{
    Frame, FramedParser, Limits, STREAMS_NS, StreamErrorCondition, StreamEvent, StreamParser,
    XmlError, framing_close, framing_open, stream_close, stream_open,
};

/// The most a connection reads at once (a stack buffer, see [`Transport::read`]).
pub(crate) const READ_CHUNK: usize = 8 * 1024;

/// Feeds what was read to the parser; a feed error stays in the parser, which
/// returns it from its next event.
fn feed(parser: &mut StreamParser, bytes: &[u8]) -> usize {
    if !bytes.is_empty() {
        let _ = parser.feed(bytes);
    }
    bytes.len()
}

/// One connection's transport.
// The byte stream (the common case) is inline; the larger WebSocket is boxed.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Transport {
    /// An XML stream over a byte stream (RFC 6120 §4).
    Stream(StreamIo),
    /// RFC 7395 framing over a WebSocket (boxed: inline, every plaintext
    /// connection would pay for its size).
    Ws(Box<WsIo>),
}

pub(crate) struct StreamIo {
    io: Io,
    parser: StreamParser,
}

enum Io {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Between taking the TCP stream for a TLS handshake and getting it back.
    Gone,
}

pub(crate) struct WsIo {
    socket: WebSocketStream<TcpStream>,
    parser: FramedParser,
    /// The message read and not yet parsed.
    pending: Option<Pending>,
}

enum Pending {
    Text(Utf8Bytes),
    Binary,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Stream(StreamIo { io: Io::Tcp(_), .. }) => "Transport::Tcp",
            Transport::Stream(StreamIo { io: Io::Tls(_), .. }) => "Transport::Tls",
            Transport::Stream(StreamIo { io: Io::Gone, .. }) => "Transport::Gone",
            Transport::Ws(_) => "Transport::WebSocket",
        })
    }
}

/// Why STARTTLS could not go ahead.
#[derive(Debug)]
pub(crate) enum StartTls {
    /// Refused before `<proceed/>`: answer `<failure/>` and close.
    Refused,
    /// The handshake after `<proceed/>` failed: just drop the connection
    /// (RFC 6120 §5.4.3.2).
    HandshakeFailed,
}

impl Transport {
    pub(crate) fn tcp(stream: TcpStream, limits: Limits) -> Self {
        Transport::Stream(StreamIo {
            io: Io::Tcp(stream),
            parser: StreamParser::new(limits),
        })
    }

    pub(crate) fn tls(stream: TlsStream<TcpStream>, limits: Limits) -> Self {
        Transport::Stream(StreamIo {
            io: Io::Tls(Box::new(stream)),
            parser: StreamParser::new(limits),
        })
    }

    pub(crate) fn websocket(socket: WebSocketStream<TcpStream>, limits: Limits) -> Self {
        Transport::Ws(Box::new(WsIo {
            socket,
            parser: FramedParser::new(limits),
            pending: None,
        }))
    }

    /// Whether the stream is encrypted (TLS from the start or after STARTTLS).
    pub(crate) fn encrypted(&self) -> bool {
        matches!(self, Transport::Stream(StreamIo { io: Io::Tls(_), .. }))
    }

    /// Whether STARTTLS may be offered: a plaintext TCP stream.
    pub(crate) fn can_starttls(&self) -> bool {
        matches!(self, Transport::Stream(StreamIo { io: Io::Tcp(_), .. }))
    }

    /// The server's stream header with `attrs`.
    pub(crate) fn header(&self, attrs: &[(&str, &str)]) -> String {
        match self {
            Transport::Stream(_) => stream_open(attrs),
            Transport::Ws(_) => framing_open(attrs),
        }
    }

    /// The server's end of the stream.
    pub(crate) fn footer(&self) -> String {
        match self {
            Transport::Stream(_) => stream_close().to_owned(),
            Transport::Ws(_) => framing_close(&[]),
        }
    }

    /// Waits for input and hands it to the parser; returns how many bytes arrived,
    /// 0 once the peer is gone (a WebSocket ping counts as one byte and yields no
    /// event). A parse error while feeding is kept by the parser and reported by
    /// [`Transport::next_event`]. Cancel-safe (it sits in the connection's
    /// `select!`): nothing read is lost.
    ///
    /// No read buffer outlives the call: the byte stream waits for readiness
    /// owning nothing, then reads into a stack buffer that is fed to the parser
    /// before the next await (so it is not part of the connection task's state). An
    /// idle plaintext session holds no input buffer at all; over TLS, rustls keeps
    /// its own record buffers, and a WebSocket keeps tungstenite's.
    pub(crate) async fn read(&mut self) -> io::Result<usize> {
        match self {
            Transport::Stream(StreamIo { io, parser }) => match io {
                Io::Tcp(tcp) => loop {
                    tcp.readable().await?;
                    let mut chunk = [0u8; READ_CHUNK];
                    match tcp.try_read(&mut chunk) {
                        Ok(n) => return Ok(feed(parser, &chunk[..n])),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(e) => return Err(e),
                    }
                },
                Io::Tls(tls) => loop {
                    // rustls may hold decrypted bytes already (a record larger
                    // than one read): try before waiting for the socket. A
                    // pending read leaves the socket's readiness cleared, so the
                    // `readable()` below cannot miss what arrives after it.
                    let ready = {
                        let mut chunk = [0u8; READ_CHUNK];
                        tls.read(&mut chunk)
                            .now_or_never()
                            .map(|read| read.map(|n| feed(parser, &chunk[..n])))
                    };
                    if let Some(read) = ready {
                        return read;
                    }
                    tls.get_ref().0.readable().await?;
                },
                Io::Gone => Ok(0),
            },
            Transport::Ws(ws) => loop {
                let message = match ws.socket.next().await {
                    None => return Ok(0),
                    Some(Err(WsError::Capacity(too_big))) => {
                        // RFC 6455 §7.4.1: 1009 tells the client why, instead of
                        // a bare reset; the unread rest of the frame is discarded
                        // with the connection.
                        let close = CloseFrame {
                            code: CloseCode::Size,
                            reason: "message larger than the stanza limit".into(),
                        };
                        let _ = ws.socket.send(Message::Close(Some(close))).await;
                        return Err(io::Error::other(too_big));
                    }
                    Some(Err(error)) => return Err(io::Error::other(error)),
                    Some(Ok(message)) => message,
                };
                // An empty text message still counts as input (it is a frame that
                // will fail to parse), hence the `max(1)`. The message is held
                // here until `next_event` parses it.
                return match message {
                    Message::Text(text) => {
                        let len = text.len();
                        ws.pending = Some(Pending::Text(text));
                        Ok(len.max(1))
                    }
                    Message::Binary(bytes) => {
                        ws.pending = Some(Pending::Binary);
                        Ok(bytes.len().max(1))
                    }
                    // Pings are answered by the WebSocket layer itself, but they are
                    // input: a client keeping its connection alive with them is not idle.
                    Message::Ping(_) | Message::Pong(_) => Ok(1),
                    Message::Frame(_) => continue,
                    Message::Close(_) => Ok(0),
                };
            },
        }
    }

    /// The next event of what was read, `Ok(None)` when more input is needed.
    pub(crate) fn next_event(&mut self) -> Result<Option<StreamEvent>, XmlError> {
        match self {
            Transport::Stream(stream) => stream.parser.next_event(),
            Transport::Ws(ws) => match ws.pending.take() {
                None => Ok(None),
                Some(Pending::Binary) => Err(XmlError::new(
                    StreamErrorCondition::BadFormat,
                    0,
                    "binary WebSocket message: RFC 7395 §3.2 allows text messages only",
                )),
                Some(Pending::Text(text)) => Ok(Some(match ws.parser.parse(text.as_bytes())? {
                    Frame::Open { attrs } => StreamEvent::StreamOpen { attrs },
                    Frame::Close { .. } => StreamEvent::StreamClose,
                    Frame::Stanza(element) => StreamEvent::Stanza(element),
                })),
            },
        }
    }

    /// A new stream begins (after SASL success): parse what follows from scratch.
    pub(crate) fn restart(&mut self) {
        if let Transport::Stream(stream) = self {
            stream.parser.reset();
        }
    }

    /// Writes `data` (output of the writer for a `jabber:client` stream).
    pub(crate) async fn send(&mut self, data: &str) -> io::Result<()> {
        match self {
            Transport::Stream(stream) => match &mut stream.io {
                Io::Tcp(tcp) => tcp.write_all(data.as_bytes()).await,
                Io::Tls(tls) => {
                    tls.write_all(data.as_bytes()).await?;
                    // rustls holds records until flushed.
                    tls.flush().await
                }
                Io::Gone => Err(io::ErrorKind::NotConnected.into()),
            },
            Transport::Ws(ws) => {
                for message in ws_messages(data) {
                    ws.socket
                        .feed(Message::Text(message.into()))
                        .await
                        .map_err(io::Error::other)?;
                }
                ws.socket.flush().await.map_err(io::Error::other)
            }
        }
    }

    /// Ends the transport: TCP FIN, TLS close_notify, WebSocket close frame.
    pub(crate) async fn shutdown(&mut self) {
        match self {
            Transport::Stream(stream) => match &mut stream.io {
                Io::Tcp(tcp) => {
                    let _ = tcp.shutdown().await;
                }
                Io::Tls(tls) => {
                    let _ = tls.shutdown().await;
                }
                Io::Gone => {}
            },
            Transport::Ws(ws) => {
                let _ = ws.socket.send(Message::Close(None)).await;
            }
        }
    }

    /// Upgrades a plaintext TCP stream to TLS after `<proceed/>` was written, the
    /// handshake bounded by `within`. Refused when there is no plaintext stream or
    /// the client sent anything but whitespace after `<starttls/>` (it must wait
    /// for `<proceed/>`, RFC 6120 §5.4.2.3).
    pub(crate) fn check_starttls(&mut self) -> Result<(), StartTls> {
        let Transport::Stream(stream) = self else {
            return Err(StartTls::Refused);
        };
        if !matches!(stream.io, Io::Tcp(_)) {
            return Err(StartTls::Refused);
        }
        let rest = stream.parser.take_unparsed();
        if rest.iter().any(|b| !b.is_ascii_whitespace()) {
            return Err(StartTls::Refused);
        }
        Ok(())
    }

    /// Runs the TLS handshake (after [`Transport::check_starttls`] and `<proceed/>`).
    pub(crate) async fn starttls(
        &mut self,
        acceptor: TlsAcceptor,
        within: Duration,
    ) -> Result<(), StartTls> {
        let Transport::Stream(stream) = self else {
            return Err(StartTls::Refused);
        };
        let Io::Tcp(tcp) = std::mem::replace(&mut stream.io, Io::Gone) else {
            return Err(StartTls::Refused);
        };
        match tokio::time::timeout(within, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => {
                stream.io = Io::Tls(Box::new(tls));
                stream.parser.reset();
                Ok(())
            }
            Ok(Err(_)) | Err(_) => Err(StartTls::HandshakeFailed),
        }
    }
}

/// Splits writer output into RFC 7395 messages: one per top-level element, each
/// made a standalone document. The stream scope implied `xmlns="jabber:client"` and
/// the `stream:` prefix, so a top-level element declaring neither gets them. The
/// XML declaration is dropped, `</stream:stream>` becomes `<close/>` (a stream
/// header has no place here: [`Transport::header`] writes `<open/>`).
///
/// Relies on what the writer guarantees: no comments, PIs or CDATA, and `<` `>`
/// escaped in text and attribute values, so the first `>` ends a tag.
fn ws_messages(data: &str) -> Vec<String> {
    let bytes = data.as_bytes();
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    let mut i = 0;
    while let Some(offset) = bytes[i..].iter().position(|&b| b == b'<') {
        let open = i + offset;
        let Some(close) = bytes[open..]
            .iter()
            .position(|&b| b == b'>')
            .map(|c| open + c)
        else {
            break;
        };
        let tag = &data[open..=close];
        i = close + 1;
        if tag.starts_with("<?") || tag.starts_with("<stream:stream") {
            continue;
        }
        if tag == "</stream:stream>" {
            out.push(framing_close(&[]));
        } else if tag.starts_with("</") {
            depth = depth.saturating_sub(1);
            if depth == 0 {
                out.push(standalone(&data[start..=close]));
            }
        } else {
            if depth == 0 {
                start = open;
            }
            if tag.ends_with("/>") {
                if depth == 0 {
                    out.push(standalone(tag));
                }
            } else {
                depth += 1;
            }
        }
    }
    out
}

/// Adds the namespace declaration a top-level element relied on from the stream.
fn standalone(element: &str) -> String {
    let tag_end = element.find('>').unwrap_or(element.len());
    let start_tag = &element[..tag_end];
    let name_end = start_tag
        .find(|c: char| c.is_ascii_whitespace() || c == '/')
        .unwrap_or(start_tag.len());
    let name = &start_tag[1..name_end];
    let declared = attribute_names(&start_tag[name_end..]);
    let declaration = if name.starts_with("stream:") {
        (!declared.contains(&"xmlns:stream")).then(|| format!(" xmlns:stream=\"{STREAMS_NS}\""))
    } else {
        (!declared.contains(&"xmlns")).then(|| format!(" xmlns=\"{}\"", crate::xml::CLIENT_NS))
    };
    match declaration {
        None => element.to_owned(),
        Some(declaration) => {
            let mut fixed = String::with_capacity(element.len() + declaration.len());
            fixed.push_str(&element[..name_end]);
            fixed.push_str(&declaration);
            fixed.push_str(&element[name_end..]);
            fixed
        }
    }
}

/// The attribute names of a start tag's attribute list (values skipped by their
/// quotes, so a value can never pass for a declaration).
fn attribute_names(mut rest: &str) -> Vec<&str> {
    let mut names = Vec::new();
    loop {
        rest = rest.trim_start();
        let Some(eq) = rest.find('=') else {
            return names;
        };
        names.push(rest[..eq].trim());
        rest = rest[eq + 1..].trim_start();
        let Some(quote) = rest.chars().next().filter(|q| *q == '"' || *q == '\'') else {
            return names;
        };
        match rest[1..].find(quote) {
            Some(end) => rest = &rest[end + 2..],
            None => return names,
        }
    }
}

/// Per-connection input rate limit: a stanza bucket and a byte bucket. Reading
/// is paused while either is in debt, so a flooding client is slowed by TCP
/// backpressure and never makes the node do more work than its share.
#[derive(Debug)]
pub(crate) struct Throttle {
    clock: SharedClock,
    stanzas: Bucket,
    bytes: Bucket,
}

#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u32, burst: u32, now: Instant) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now;
    }

    /// How long until the bucket is out of debt.
    fn debt(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

impl Throttle {
    /// `stanzas_per_second` sustained with `stanza_burst` at once;
    /// `bytes_per_second` sustained with one second's worth (at least
    /// `min_byte_burst`) at once.
    pub(crate) fn new(
        clock: SharedClock,
        stanzas_per_second: u32,
        stanza_burst: u32,
        bytes_per_second: u32,
        min_byte_burst: u32,
    ) -> Self {
        let now = clock.now();
        Self {
            stanzas: Bucket::new(stanzas_per_second, stanza_burst, now),
            bytes: Bucket::new(bytes_per_second, bytes_per_second.max(min_byte_burst), now),
            clock,
        }
    }

    /// Counts `n` bytes read.
    pub(crate) fn bytes(&mut self, n: usize) {
        self.bytes.tokens -= n as f64;
    }

    /// Counts one stanza (any top-level element) received.
    pub(crate) fn stanza(&mut self) {
        self.stanzas.tokens -= 1.0;
    }

    /// How long reading must pause; `None` when it may go on.
    pub(crate) fn pause(&mut self) -> Option<Duration> {
        let now = self.clock.now();
        let wait = self.stanzas.debt(now).max(self.bytes.debt(now));
        (!wait.is_zero()).then_some(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::{Element, write_stanza};
    use casebook_kit::clock::ManualClock;

    #[test]
    fn writer_output_becomes_one_standalone_message_per_element() {
        let features = Element::new("features", STREAMS_NS).with_child(
            Element::new("mechanisms", "urn:ietf:params:xml:ns:xmpp-sasl").with_child(
                Element::new("mechanism", "urn:ietf:params:xml:ns:xmpp-sasl").with_text("PLAIN"),
            ),
        );
        let message = Element::new("message", crate::xml::CLIENT_NS)
            .with_attr("id", " xmlns='x' a>b")
            .with_child(Element::new("body", crate::xml::CLIENT_NS).with_text("1 < 2 > 0 />"));
        let mut data = framing_open(&[("from", "localhost")]);
        data.push_str(&write_stanza(&features));
        data.push_str(&write_stanza(&message));
        data.push_str("<a xmlns='urn:xmpp:sm:3' h='1'/>");
        data.push_str(stream_close());
        let messages = ws_messages(&data);
        assert_eq!(messages.len(), 5, "{messages:?}");
        let parser = FramedParser::new(Limits::default());
        assert!(matches!(
            parser.parse(messages[0].as_bytes()),
            Ok(Frame::Open { .. })
        ));
        assert_eq!(
            parser.parse(messages[1].as_bytes()).unwrap(),
            Frame::Stanza(features)
        );
        assert_eq!(
            parser.parse(messages[2].as_bytes()).unwrap(),
            Frame::Stanza(message)
        );
        assert!(
            matches!(parser.parse(messages[3].as_bytes()), Ok(Frame::Stanza(a)) if a.is("a", "urn:xmpp:sm:3"))
        );
        assert!(matches!(
            parser.parse(messages[4].as_bytes()),
            Ok(Frame::Close { .. })
        ));
    }

    #[test]
    fn throttle_pauses_in_debt_and_refills_on_the_clock() {
        let clock = ManualClock::new();
        let mut throttle = Throttle::new(clock.shared(), 10, 20, 1000, 100);
        for _ in 0..20 {
            throttle.stanza();
        }
        assert_eq!(throttle.pause(), None, "the burst is allowed");
        throttle.stanza();
        throttle.stanza();
        assert_eq!(throttle.pause(), Some(Duration::from_millis(200)));
        clock.advance(Duration::from_millis(100));
        assert_eq!(throttle.pause(), Some(Duration::from_millis(100)));
        clock.advance(Duration::from_millis(100));
        assert_eq!(throttle.pause(), None);
        throttle.bytes(1500);
        assert_eq!(throttle.pause(), Some(Duration::from_millis(500)));
        clock.advance(Duration::from_secs(10));
        assert_eq!(throttle.pause(), None, "refilled, capped at the burst");
        throttle.bytes(1000);
        assert_eq!(throttle.pause(), None);
        throttle.bytes(1);
        assert!(throttle.pause().is_some());
    }
}
