//! One client connection: RFC 6120 stream negotiation (plaintext), SASL, resource
//! binding, then stanza handling, all in the connection's single task.
//!
//! Guarantees: every byte the peer sends goes through the bounded [`StreamParser`]
//! (a parse error is a stream error and a close); the `from` of every routed stanza
//! is the sender's real full JID; an offline message is stored durably before the
//! sender's stanza is considered handled, and removed only after its write to this
//! socket returned. Writes race the connection's kick token, so a slow reader that
//! the router kicked is dropped even mid-write.
//!
//! Not here (yet): STARTTLS/TLS (the stream is plaintext: SCRAM is offered, PLAIN only
//! when configured), XEP-0198 acks (removal after the socket write means a message is
//! lost if the connection dies with it still in the kernel's buffers), rosters and
//! presence broadcast (presence only sets availability), idle timeouts, s2s.

mod iq;
mod message;
mod negotiate;
mod offline;
mod presence;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::router::{Delivery, Outbound};
use super::stanza::{Jid, error_reply, stream_error_text, xep0082_stamp};
use super::{DELAY_NS, Shared};
use crate::auth::{SaslPolicy, SaslServer, SaslStep, decode_payload, encode_payload};
use crate::offline::{Ack, NewMessage};
use crate::xml::{
    CLIENT_NS, Element, Frame, FramedParser, Limits, STREAMS_NS, StreamEvent, StreamParser,
    stream_close, stream_error, stream_open, write_stanza,
};

/// SASL mechanisms, `<auth/>`, `<success/>`, ….
pub const SASL_NS: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
/// Resource binding (RFC 6120 §7).
pub const BIND_NS: &str = "urn:ietf:params:xml:ns:xmpp-bind";
/// The legacy session establishment (RFC 3921), still sent by clients.
pub const SESSION_NS: &str = "urn:ietf:params:xml:ns:xmpp-session";
/// XEP-0199.
pub const PING_NS: &str = "urn:xmpp:ping";
/// XEP-0030 disco#info.
pub const DISCO_INFO_NS: &str = "http://jabber.org/protocol/disco#info";

/// Failed SASL attempts one connection may make before it is closed.
const MAX_SASL_FAILURES: u32 = 3;
/// Offline messages read per batch when flushing a backlog.
const OFFLINE_BATCH: usize = 128;
/// Read buffer size.
const READ_CHUNK: usize = 8 * 1024;

/// Why the connection ended (for the log and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The peer closed its stream or the socket.
    PeerClosed,
    /// We sent a stream error.
    StreamError,
    /// Kicked as a slow reader, or the socket failed.
    Dropped,
    /// The instance is stopping.
    Shutdown,
}

/// Where the negotiation is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stage {
    /// Waiting for the (first or restarted) stream header.
    Header,
    /// Header answered, not authenticated: only SASL elements are accepted.
    Sasl,
    /// Authenticated as `localpart`; only resource binding is accepted.
    Bind,
    /// Bound: stanzas flow.
    Session,
}

/// The bound session, unbound from the router when the connection ends.
#[derive(Debug)]
struct Bound {
    shared: Arc<Shared>,
    bare: String,
    resource: String,
    conn_id: u64,
}

impl Bound {
    fn full(&self) -> String {
        format!("{}/{}", self.bare, self.resource)
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        self.shared
            .router
            .unbind(&self.bare, &self.resource, self.conn_id);
    }
}

#[derive(Debug)]
struct Conn {
    shared: Arc<Shared>,
    peer: SocketAddr,
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    parser: StreamParser,
    conn_id: u64,
    kick: CancellationToken,
    tx: mpsc::Sender<Outbound>,
    rx: mpsc::Receiver<Outbound>,
    stage: Stage,
    authenticated: Option<String>,
    sasl: Option<SaslServer>,
    sasl_failures: u32,
    bound: Option<Bound>,
    available: bool,
}

/// A closed or kicked connection: stop.
#[derive(Debug)]
struct Gone(End);

/// Serves one accepted connection until it ends.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let (reader, writer) = stream.into_split();
    let (tx, rx) = mpsc::channel(shared.config.outbound_queue);
    let limits = Limits {
        max_stanza_bytes: shared.config.max_stanza_bytes,
        ..Limits::default()
    };
    let mut conn = Conn {
        conn_id: shared.router.next_conn_id(),
        shared,
        peer,
        reader,
        writer,
        parser: StreamParser::new(limits),
        kick: CancellationToken::new(),
        tx,
        rx,
        stage: Stage::Header,
        authenticated: None,
        sasl: None,
        sasl_failures: 0,
        bound: None,
        available: false,
    };
    let end = conn.run(shutdown).await;
    metrics::counter!("whatsapp_connections_closed_total", "end" => format!("{end:?}"))
        .increment(1);
    tracing::debug!(peer = %conn.peer, ?end, "connection closed");
}

/// Writes `error` (a whole `<stream:error>`) to a connection refused before it was
/// served, then closes it: answers the header first so the client can read it.
pub(crate) async fn refuse(mut stream: TcpStream, domain: &str, error: &str) {
    let mut out = stream_open(&[("from", domain), ("version", "1.0")]);
    out.push_str(error);
    out.push_str(stream_close());
    let _ = stream.write_all(out.as_bytes()).await;
    let _ = stream.shutdown().await;
}

impl Conn {
    async fn run(&mut self, shutdown: CancellationToken) -> End {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let result = tokio::select! {
                biased;
                _ = self.kick.cancelled() => return End::Dropped,
                _ = shutdown.cancelled() => {
                    let _ = self.close_with(&stream_error_text("system-shutdown")).await;
                    return End::Shutdown;
                }
                Some(outbound) = self.rx.recv() => match outbound {
                    Outbound::Stanza(stanza) => self.write(&stanza).await,
                    Outbound::FlushOffline => {
                        let bare = self.bare_jid();
                        self.flush_offline(&bare).await
                    }
                },
                read = self.reader.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return End::PeerClosed,
                    Ok(n) => self.input(&buf[..n]).await,
                },
            };
            if let Err(Gone(end)) = result {
                return end;
            }
        }
    }

    /// Writes `data`, giving up when the router kicks this connection.
    async fn write(&mut self, data: &str) -> Result<(), Gone> {
        tokio::select! {
            biased;
            _ = self.kick.cancelled() => Err(Gone(End::Dropped)),
            written = self.writer.write_all(data.as_bytes()) => written.map_err(|_| Gone(End::Dropped)),
        }
    }

    /// Sends `data` then the closing tag, and ends the connection.
    async fn close_with(&mut self, data: &str) -> Result<(), Gone> {
        let mut out = String::with_capacity(data.len() + 20);
        out.push_str(data);
        out.push_str(stream_close());
        let _ = self.write(&out).await;
        let _ = self.writer.shutdown().await;
        Err(Gone(End::StreamError))
    }

    async fn stream_fail(&mut self, condition: &str) -> Result<(), Gone> {
        metrics::counter!("whatsapp_stream_errors_total", "condition" => condition.to_owned())
            .increment(1);
        self.close_with(&stream_error_text(condition)).await
    }

    async fn input(&mut self, bytes: &[u8]) -> Result<(), Gone> {
        if let Err(error) = self.parser.feed(bytes) {
            return self.close_with(&stream_error(error.condition, None)).await;
        }
        loop {
            match self.parser.next_event() {
                Ok(Some(event)) => self.event(event).await?,
                Ok(None) => return Ok(()),
                Err(error) => {
                    tracing::debug!(peer = %self.peer, %error, "stream refused");
                    return self.close_with(&stream_error(error.condition, None)).await;
                }
            }
        }
    }

    async fn event(&mut self, event: StreamEvent) -> Result<(), Gone> {
        match event {
            StreamEvent::StreamOpen { attrs } => self.stream_open(&attrs).await,
            StreamEvent::StreamClose => {
                let _ = self.write(stream_close()).await;
                let _ = self.writer.shutdown().await;
                Err(Gone(End::PeerClosed))
            }
            StreamEvent::Stanza(element) => match self.stage {
                Stage::Header => self.stream_fail("bad-format").await,
                Stage::Sasl => self.sasl(element).await,
                Stage::Bind => self.bind(element).await,
                Stage::Session => self.stanza(element).await,
            },
        }
    }

    fn full_jid(&self) -> String {
        self.bound.as_ref().map(Bound::full).unwrap_or_default()
    }

    fn bare_jid(&self) -> String {
        self.bound
            .as_ref()
            .map(|b| b.bare.clone())
            .unwrap_or_default()
    }

    async fn stanza(&mut self, mut element: Element) -> Result<(), Gone> {
        if element.ns() != CLIENT_NS {
            return self.stream_fail("unsupported-stanza-type").await;
        }
        // The server, not the client, says who sent it (RFC 6120 §8.1.2.1).
        element.set_attr("from", self.full_jid());
        match element.name() {
            "message" => self.message(element).await,
            "presence" => self.presence(element).await,
            "iq" => self.iq(element).await,
            _ => self.stream_fail("unsupported-stanza-type").await,
        }
    }

    /// Replies with a stanza error unless `stanza` is itself an error (no loops).
    async fn bounce(
        &mut self,
        stanza: &Element,
        error_type: &str,
        condition: &str,
    ) -> Result<(), Gone> {
        if stanza.attr("type") == Some("error") {
            return Ok(());
        }
        let reply = error_reply(stanza, error_type, condition);
        self.write(&write_stanza(&reply)).await
    }

    /// The recipient, as a local account's JID; `Err` names the stanza error.
    fn local_recipient(&self, element: &Element) -> Result<Option<Jid>, &'static str> {
        let Some(to) = element.attr("to") else {
            return Ok(None);
        };
        let jid = Jid::parse(to).ok_or("jid-malformed")?;
        if jid.domain != self.shared.config.domain {
            // No server-to-server routing yet.
            return Err("service-unavailable");
        }
        Ok(Some(jid))
    }
}
