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

/// Writes a `<stream:error>` to a connection refused before it was served, then
/// closes it: answers the header first so the client can read the error.
pub(crate) async fn refuse(mut stream: TcpStream, domain: &str, condition: &str) {
    let mut out = stream_open(&[("from", domain), ("version", "1.0")]);
    out.push_str(&stream_error_text(condition));
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

    async fn stream_open(&mut self, attrs: &[(String, String)]) -> Result<(), Gone> {
        let domain = self.shared.config.domain.clone();
        let stream_id = format!("{:032x}", rand::random::<u128>());
        let mut out = stream_open(&[
            ("from", &domain),
            ("id", &stream_id),
            ("version", "1.0"),
            ("xml:lang", "en"),
        ]);
        let to = attrs
            .iter()
            .find(|(k, _)| k == "to")
            .map(|(_, v)| v.as_str());
        if to.is_some_and(|to| !to.eq_ignore_ascii_case(&domain)) {
            out.push_str(&stream_error_text("host-unknown"));
            return self.close_with(&out).await;
        }
        let mut features = Element::new("features", STREAMS_NS);
        if self.authenticated.is_none() {
            let sasl = self.new_sasl();
            let mut mechanisms = Element::new("mechanisms", SASL_NS);
            for mechanism in sasl.mechanisms() {
                mechanisms
                    .push_child(Element::new("mechanism", SASL_NS).with_text(mechanism.name()));
            }
            features.push_child(mechanisms);
            self.stage = Stage::Sasl;
        } else {
            features.push_child(Element::new("bind", BIND_NS));
            features.push_child(
                Element::new("session", SESSION_NS)
                    .with_child(Element::new("optional", SESSION_NS)),
            );
            self.stage = Stage::Bind;
        }
        out.push_str(&write_stanza(&features));
        self.write(&out).await
    }

    fn new_sasl(&self) -> SaslServer {
        SaslServer::new(
            self.shared.accounts.clone(),
            self.shared.limiter.clone(),
            SaslPolicy {
                encrypted: false,
                allow_insecure_plain: self.shared.config.allow_insecure_plain,
            },
            self.peer.ip(),
        )
    }

    async fn sasl(&mut self, element: Element) -> Result<(), Gone> {
        if element.ns() != SASL_NS {
            return self.stream_fail("not-authorized").await;
        }
        let step = match element.name() {
            "auth" => {
                let mut server = self.new_sasl();
                let mechanism = element.attr("mechanism").unwrap_or_default().to_owned();
                let text = element.text();
                let step = if text.trim().is_empty() {
                    server.start(&mechanism, None)
                } else {
                    match decode_payload(&text) {
                        Ok(initial) => server.start(&mechanism, Some(&initial)),
                        Err(failure) => SaslStep::Failure(failure),
                    }
                };
                self.sasl = Some(server);
                step
            }
            "response" => match (self.sasl.as_mut(), decode_payload(&element.text())) {
                (Some(server), Ok(response)) => server.step(&response),
                (None, _) => {
                    SaslStep::Failure(crate::auth::SaslFailure::Malformed("response before auth"))
                }
                (Some(_), Err(failure)) => SaslStep::Failure(failure),
            },
            "abort" => match self.sasl.as_mut() {
                Some(server) => server.abort(),
                None => SaslStep::Failure(crate::auth::SaslFailure::Aborted),
            },
            _ => return self.stream_fail("unsupported-stanza-type").await,
        };
        match step {
            SaslStep::Challenge(payload) => {
                let challenge =
                    Element::new("challenge", SASL_NS).with_text(encode_payload(&payload));
                self.write(&write_stanza(&challenge)).await
            }
            SaslStep::Success {
                additional_data,
                localpart,
            } => {
                let mut success = Element::new("success", SASL_NS);
                if let Some(data) = additional_data {
                    success.push_text(encode_payload(&data));
                }
                self.sasl = None;
                self.authenticated = Some(localpart);
                // RFC 6120 §6.4.6: the client restarts the stream; bytes it
                // pipelined after <success/> belong to the new stream.
                self.parser.reset();
                self.stage = Stage::Header;
                self.write(&write_stanza(&success)).await
            }
            SaslStep::Failure(failure) => {
                self.sasl = None;
                self.sasl_failures += 1;
                let mut element = Element::new("failure", SASL_NS)
                    .with_child(Element::new(failure.as_condition(), SASL_NS));
                if let Some(text) = failure.text() {
                    element.push_child(Element::new("text", SASL_NS).with_text(text));
                }
                self.write(&write_stanza(&element)).await?;
                if self.sasl_failures >= MAX_SASL_FAILURES {
                    return self.stream_fail("policy-violation").await;
                }
                Ok(())
            }
        }
    }

    async fn bind(&mut self, element: Element) -> Result<(), Gone> {
        let Some(request) = element
            .is("iq", CLIENT_NS)
            .then(|| element.child("bind", BIND_NS))
            .flatten()
            .filter(|_| element.attr("type") == Some("set"))
        else {
            return self.stream_fail("not-authorized").await;
        };
        let local = self
            .authenticated
            .clone()
            .expect("bind stage is authenticated");
        let bare = format!("{local}@{}", self.shared.config.domain);
        let wanted = request
            .child("resource", BIND_NS)
            .map(|r| r.text().trim().to_owned())
            .filter(|r| !r.is_empty() && r.len() <= 1023 && !r.contains('/'));
        let bound = self.shared.router.bind(
            &bare,
            wanted.as_deref(),
            self.conn_id,
            self.tx.clone(),
            self.kick.clone(),
        );
        let resource = match bound {
            Ok(resource) => resource,
            Err(_) => {
                let reply = error_reply(&element, "wait", "resource-constraint");
                return self.write(&write_stanza(&reply)).await;
            }
        };
        let bound = Bound {
            shared: self.shared.clone(),
            bare,
            resource,
            conn_id: self.conn_id,
        };
        let mut result = Element::new("iq", CLIENT_NS).with_attr("type", "result");
        if let Some(id) = element.attr("id") {
            result.set_attr("id", id);
        }
        result.push_child(
            Element::new("bind", BIND_NS)
                .with_child(Element::new("jid", BIND_NS).with_text(bound.full())),
        );
        self.bound = Some(bound);
        self.stage = Stage::Session;
        self.write(&write_stanza(&result)).await
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

    async fn message(&mut self, mut element: Element) -> Result<(), Gone> {
        let to = match self.local_recipient(&element) {
            Ok(Some(to)) => to,
            // No `to`: addressed to the sender's own bare JID (RFC 6120 §10.3.1 for messages, §8.1.1.1).
            Ok(None) => {
                element.set_attr("to", self.bare_jid());
                Jid::parse(&self.bare_jid()).expect("a bound JID parses")
            }
            Err(condition) => return self.bounce(&element, "cancel", condition).await,
        };
        let Some(local) = to.local.clone() else {
            // Messages to the server itself: nothing here handles them.
            return self.bounce(&element, "cancel", "service-unavailable").await;
        };
        if !self.shared.accounts.contains(&local) {
            return self.bounce(&element, "cancel", "service-unavailable").await;
        }
        let bare = to.bare();
        let bare_recipient = bare.clone();
        let xml = write_stanza(&element);
        if let Some(resource) = &to.resource
            && let Delivery::Delivered(_) = self.shared.router.to_full(&bare, resource, &xml)
        {
            return Ok(());
        }
        if let Delivery::Delivered(_) = self.shared.router.to_bare(&bare, &xml) {
            return Ok(());
        }
        match element.attr("type") {
            // Only normal and chat messages are stored (RFC 6121 §8.5.2.2 leaves
            // headline/groupchat/error undelivered).
            None | Some("normal") | Some("chat") => {}
            _ => return Ok(()),
        }
        let id = element
            .attr("id")
            .map(str::to_owned)
            .unwrap_or_else(|| format!("cb-{:016x}", rand::random::<u64>()));
        let stored = self
            .shared
            .offline
            .store(NewMessage {
                id,
                recipient: bare_recipient.clone(),
                sender: self.full_jid(),
                payload: Bytes::from(element.to_xml()),
            })
            .await;
        match stored {
            Ok(_) => {
                // The recipient may have come online (and flushed) while the store
                // was in flight: have it pick this message up now.
                self.shared.router.nudge_offline(&bare_recipient);
                Ok(())
            }
            Err(error) => {
                tracing::warn!(%error, "offline store refused a message");
                self.bounce(&element, "wait", "resource-constraint").await
            }
        }
    }

    async fn presence(&mut self, element: Element) -> Result<(), Gone> {
        if element.attr("to").is_some() {
            // Directed presence and subscriptions need rosters: not yet.
            return Ok(());
        }
        let bound = self.bound.as_ref().expect("session stage is bound");
        let (bare, resource, conn_id) = (bound.bare.clone(), bound.resource.clone(), bound.conn_id);
        match element.attr("type") {
            None => {
                let priority = element
                    .child("priority", CLIENT_NS)
                    .and_then(|p| p.text().trim().parse::<i8>().ok())
                    .unwrap_or(0);
                let first = !self.available;
                if first {
                    // Drain what was stored while unavailable before live messages flow,
                    // then once more for what was stored in between.
                    self.flush_offline(&bare).await?;
                }
                self.shared
                    .router
                    .set_presence(&bare, &resource, conn_id, true, priority);
                self.available = true;
                if first {
                    self.flush_offline(&bare).await?;
                }
                Ok(())
            }
            Some("unavailable") => {
                self.shared
                    .router
                    .set_presence(&bare, &resource, conn_id, false, 0);
                self.available = false;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Writes every pending offline message with a XEP-0203 delay, in order, and
    /// removes each batch once written.
    async fn flush_offline(&mut self, bare: &str) -> Result<(), Gone> {
        let limits = Limits {
            // The stored stanza carries the stamped `from`: allow for it.
            max_stanza_bytes: self.shared.config.max_stanza_bytes + 4096,
            ..Limits::default()
        };
        let parser = FramedParser::new(limits);
        loop {
            let batch = self.shared.offline.pending(bare, OFFLINE_BATCH);
            let Some(last) = batch.last().map(|m| m.seq) else {
                return Ok(());
            };
            for message in &batch {
                let Ok(Frame::Stanza(mut stanza)) = parser.parse(&message.payload) else {
                    tracing::warn!(seq = message.seq.0, "unreadable offline payload dropped");
                    continue;
                };
                stanza.push_child(
                    Element::new("delay", DELAY_NS)
                        .with_attr("from", self.shared.config.domain.clone())
                        .with_attr("stamp", xep0082_stamp(message.stamp_ms)),
                );
                self.write(&write_stanza(&stanza)).await?;
            }
            metrics::counter!("whatsapp_offline_delivered_total").increment(batch.len() as u64);
            if let Err(error) = self.shared.offline.ack(bare, Ack::UpTo(last)).await {
                tracing::warn!(%error, "offline ack failed: the batch will be delivered again");
                return Ok(());
            }
        }
    }

    async fn iq(&mut self, element: Element) -> Result<(), Gone> {
        let kind = element.attr("type").unwrap_or_default().to_owned();
        if !matches!(kind.as_str(), "get" | "set" | "result" | "error")
            || element.attr("id").is_none()
        {
            return self.bounce(&element, "modify", "bad-request").await;
        }
        let to = match self.local_recipient(&element) {
            Ok(to) => to,
            Err(condition) => return self.bounce(&element, "cancel", condition).await,
        };
        let own_bare = self.bare_jid();
        let for_server = match &to {
            None => true,
            Some(jid) => jid.local.is_none() || (jid.bare() == own_bare && jid.resource.is_none()),
        };
        if !for_server {
            let to = to.expect("not for the server means addressed");
            if let Some(resource) = &to.resource {
                let xml = write_stanza(&element);
                if let Delivery::Delivered(_) =
                    self.shared.router.to_full(&to.bare(), resource, &xml)
                {
                    return Ok(());
                }
            }
            return if kind == "get" || kind == "set" {
                self.bounce(&element, "cancel", "service-unavailable").await
            } else {
                Ok(())
            };
        }
        if kind == "result" || kind == "error" {
            return Ok(());
        }
        let payload = element.children().next().cloned();
        let mut result = Element::new("iq", CLIENT_NS)
            .with_attr("type", "result")
            .with_attr("id", element.attr("id").unwrap_or_default())
            .with_attr("to", self.full_jid())
            .with_attr(
                "from",
                element
                    .attr("to")
                    .unwrap_or(&self.shared.config.domain)
                    .to_owned(),
            );
        match payload {
            Some(p) if kind == "get" && p.is("ping", PING_NS) => {}
            Some(p) if kind == "set" && p.is("session", SESSION_NS) => {}
            Some(p)
                if kind == "get" && p.is("query", DISCO_INFO_NS) && p.attr("node").is_none() =>
            {
                result.push_child(disco_info());
            }
            Some(p) if p.is("bind", BIND_NS) => {
                return self.bounce(&element, "cancel", "not-allowed").await;
            }
            _ => return self.bounce(&element, "cancel", "service-unavailable").await,
        }
        self.write(&write_stanza(&result)).await
    }
}

/// The features this node really implements.
fn disco_info() -> Element {
    let mut query = Element::new("query", DISCO_INFO_NS).with_child(
        Element::new("identity", DISCO_INFO_NS)
            .with_attr("category", "server")
            .with_attr("type", "im")
            .with_attr("name", "casebook"),
    );
    for feature in [DISCO_INFO_NS, PING_NS, DELAY_NS] {
        query.push_child(Element::new("feature", DISCO_INFO_NS).with_attr("var", feature));
    }
    query
}
