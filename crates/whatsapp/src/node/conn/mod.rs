//! One client connection: RFC 6120 stream negotiation (STARTTLS, SASL, resource
//! binding), then stanza handling, all in the connection's single task, over any
//! [`transport`] (TCP, TLS, RFC 7395 WebSocket).
//!
//! Guarantees: every byte the peer sends goes through the bounded parser of its
//! transport (a parse error is a stream error and a close); the `from` of every
//! routed stanza is the sender's real full JID; an offline message is stored durably
//! before the sender's stanza is considered handled, and removed only after its
//! write to this socket returned — or, with XEP-0198 (`sm.rs`), only once the
//! client's `<a/>` covers it. Writes race the connection's kick token, so a slow
//! reader that the router kicked is dropped even mid-write. A connection not bound
//! within `handshake_timeout`, or silent for `idle_timeout` (both on the injected
//! clock), gets `<connection-timeout/>`; one sending faster than its rate limit is simply not
//! read until its token buckets refill. SASL computations run off the runtime
//! threads.
//!
//! Cost per session: an idle connection holds no read buffer (the transport
//! reads into a stack buffer only once the socket is readable, and the parser
//! frees its buffer once everything fed was parsed) and its task is small (the
//! handlers are boxed where they are awaited). Stanzas routed to a session while
//! it is busy are drained from its queue and written together (up to 64 KiB per
//! write); XEP-0198 still counts each one.
//!
//! Not here (yet): s2s, SCRAM-*-PLUS. Without XEP-0198, removal after the socket
//! write means a message is lost if the connection dies with it still in the
//! kernel's buffers.

mod carbons;
mod iq;
mod mam;
mod message;
mod negotiate;
mod offline;
mod presence;
mod register;
mod roster;
pub(crate) mod transport;

pub use register::{RegistrationLimiter, RegistrationLimits};
pub(crate) mod sm;

pub use sm::SM_NS;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::router::{Delivery, Outbound, StoredOutbound};
use super::stanza::{Jid, error_reply, stream_error_text, xep0082_stamp};
use super::{DELAY_NS, Shared};
use crate::auth::{SaslPolicy, SaslServer, SaslStep, decode_payload, encode_payload};
use crate::offline::{Ack, NewMessage};
use crate::xml::{
    CLIENT_NS, Element, Frame, FramedParser, Limits, STREAMS_NS, StreamEvent, stream_error,
    write_stanza,
};
use transport::{READ_CHUNK, Throttle, Transport};

pub use crate::xmpp::{BIND_NS, DISCO_INFO_NS, PING_NS, SASL_NS, SESSION_NS, TLS_NS};

/// Failed SASL attempts one connection may make before it is closed.
const MAX_SASL_FAILURES: u32 = 3;
/// Offline messages read per batch when flushing a backlog.
const OFFLINE_BATCH: usize = 128;
/// What one coalesced write of queued outbound stanzas may gather before it is
/// written (one stanza may exceed it: it is written whole).
const WRITE_BUDGET: usize = 64 * 1024;

/// Why the connection ended (for the log and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The peer closed its socket without closing its stream.
    PeerClosed,
    /// The peer closed its stream (`</stream>`): the session is over.
    StreamClosed,
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
    presence: presence::PresenceState,
}

impl Bound {
    fn full(&self) -> String {
        format!("{}/{}", self.bare, self.resource)
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        presence::session_ended(self);
        self.shared
            .router
            .unbind(&self.bare, &self.resource, self.conn_id);
    }
}

#[derive(Debug)]
struct Conn {
    shared: Arc<Shared>,
    peer: SocketAddr,
    transport: Transport,
    throttle: Throttle,
    /// When the connection was accepted, on the injected clock (the handshake
    /// deadline counts from here).
    accepted: Instant,
    /// When input last arrived, on the injected clock.
    last_input: Instant,
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
    /// XEP-0198 state, once the client enabled stream management (boxed: most
    /// connections never enable it, and every byte of `Conn` is per session).
    sm: Option<Box<sm::Sm>>,
    /// Stored messages written to this (non-SM) session, to remove from the
    /// offline store in one batch.
    removals: Vec<crate::offline::MessageKey>,
    /// While queued outbound stanzas are being drained: what they wrote, sent in
    /// one write at the end of the drain (see [`Conn::outbound_batch`]).
    corked: Option<Corked>,
    /// XEP-0198 durable stores in flight, completing in order.
    stores: sm::Stores,
    /// The stanza being handled is a message whose store is in flight: `h`
    /// counts it when the store completes.
    sm_defer_current: bool,
}

/// Output gathered while draining the outbound queue.
#[derive(Debug, Default)]
struct Corked {
    out: String,
    /// Stored messages in `out` (no SM): they join `removals` only once `out` was
    /// written, so a failed write leaves them in the offline store.
    removals: Vec<crate::offline::MessageKey>,
}

/// A closed or kicked connection: stop.
#[derive(Debug)]
struct Gone(End);

/// Serves one accepted plaintext TCP connection until it ends.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let transport = Transport::tcp(stream, limits(&shared));
    let accepted = shared.clock.now();
    serve_transport(shared, transport, peer, shutdown, accepted).await;
}

/// The parser limits of this node's connections.
pub(crate) fn limits(shared: &Shared) -> Limits {
    Limits {
        max_stanza_bytes: shared.config.max_stanza_bytes,
        ..Limits::default()
    }
}

/// Serves one connection, over any transport, until it ends; `accepted` (on the
/// injected clock) starts the handshake deadline.
pub(crate) async fn serve_transport(
    shared: Arc<Shared>,
    transport: Transport,
    peer: SocketAddr,
    shutdown: CancellationToken,
    accepted: Instant,
) {
    let (tx, rx) = mpsc::channel(shared.config.outbound_queue);
    let config = &shared.config;
    let throttle = Throttle::new(
        shared.domain.clock.clone(),
        config.max_stanzas_per_second,
        config.stanza_burst,
        config.max_bytes_per_second,
        // One full read always fits, so a big stanza is never starved.
        (config.max_stanza_bytes + READ_CHUNK) as u32,
    );
    let mut conn = Conn {
        conn_id: shared.router.next_conn_id(),
        shared,
        peer,
        transport,
        throttle,
        accepted,
        last_input: accepted,
        kick: CancellationToken::new(),
        tx,
        rx,
        stage: Stage::Header,
        authenticated: None,
        sasl: None,
        sasl_failures: 0,
        bound: None,
        available: false,
        sm: None,
        removals: Vec::new(),
        corked: None,
        stores: sm::Stores::default(),
        sm_defer_current: false,
    };
    let end = conn.run(shutdown).await;
    // XEP-0198: a dropped session is kept for resumption; otherwise what it was
    // sent and never acknowledged goes to the offline store.
    Box::pin(conn.end_session(end)).await;
    metrics::counter!("whatsapp_connections_closed_total", "end" => format!("{end:?}"))
        .increment(1);
    tracing::debug!(peer = %conn.peer, ?end, "connection closed");
}

/// Writes `error` (a whole `<stream:error>`) to a connection refused before it was
/// served, then closes it: answers the header first so the client can read it.
pub(crate) async fn refuse(stream: TcpStream, domain: &str, error: &str) {
    refuse_transport(Transport::tcp(stream, Limits::default()), domain, error).await;
}

/// [`refuse`] over any transport.
pub(crate) async fn refuse_transport(mut transport: Transport, domain: &str, error: &str) {
    let mut out = transport.header(&[("from", domain), ("version", "1.0")]);
    out.push_str(error);
    out.push_str(&transport.footer());
    let _ = transport.send(&out).await;
    transport.shutdown().await;
}

impl Conn {
    /// The connection's loop. What handles input and output is boxed where it is
    /// awaited: the task's own state is then only what waiting needs (a few
    /// hundred bytes plus `Conn`), not the largest handler's (kilobytes), and an
    /// idle session holds only that.
    async fn run(&mut self, shutdown: CancellationToken) -> End {
        // Deadlines are on the injected clock; the timer only wakes the loop when
        // the clock's deadline is due if the clock runs in real time. It is
        // re-armed only when it fires early (input moved the idle deadline), so a
        // busy connection does not touch the timer wheel per read. Every turn
        // checks the deadline too, so on a manual clock any event after the
        // deadline (input included) ends the connection.
        let timer = tokio::time::sleep(self.until_deadline());
        tokio::pin!(timer);
        loop {
            if self.timed_out() {
                return match Box::pin(self.time_out()).await {
                    Err(Gone(end)) => end,
                    Ok(()) => End::StreamError,
                };
            }
            let pause = self.throttle.pause();
            let result = tokio::select! {
                biased;
                _ = self.kick.cancelled() => return End::Dropped,
                _ = shutdown.cancelled() => {
                    let _ = Box::pin(self.close_with(&stream_error_text("system-shutdown"))).await;
                    return End::Shutdown;
                }
                () = &mut timer => {
                    if !self.timed_out() {
                        timer
                            .as_mut()
                            .reset(tokio::time::Instant::now() + self.until_deadline());
                    }
                    Ok(())
                }
                Some(done) = self.stores.next(), if !self.stores.is_empty() => {
                    Box::pin(self.store_done(done)).await
                }
                Some(outbound) = self.rx.recv() => Box::pin(self.outbound_batch(outbound)).await,
                // Over the rate limit: stop reading until the buckets refill, so the
                // client's TCP window fills and it slows down.
                () = tokio::time::sleep(pause.unwrap_or_default()), if pause.is_some() => Ok(()),
                // No read buffer is held while waiting (`Transport::read`).
                read = self.transport.read(), if pause.is_none() => match read {
                    Ok(0) | Err(_) => return End::PeerClosed,
                    // Input after the deadline is too late: the loop's check
                    // ends the connection before it is read.
                    Ok(_) if self.timed_out() => Ok(()),
                    Ok(n) => {
                        self.last_input = self.shared.clock.now();
                        self.throttle.bytes(n);
                        Box::pin(self.input()).await
                    }
                },
            };
            let result = match result {
                Ok(()) => Box::pin(self.sm_after_turn()).await,
                gone => gone,
            };
            if let Err(Gone(end)) = result {
                return end;
            }
        }
    }

    /// When the connection times out, on the injected clock: the handshake
    /// deadline until a session is bound, the idle deadline always.
    fn deadline(&self) -> Instant {
        let idle = self.last_input + self.shared.config.idle_timeout;
        if self.bound.is_some() {
            idle
        } else {
            idle.min(self.accepted + self.shared.config.handshake_timeout)
        }
    }

    fn timed_out(&self) -> bool {
        self.shared.clock.now() >= self.deadline()
    }

    /// Clock time left until the deadline.
    fn until_deadline(&self) -> Duration {
        self.deadline()
            .saturating_duration_since(self.shared.clock.now())
    }

    /// Ends the connection with `<connection-timeout/>`.
    async fn time_out(&mut self) -> Result<(), Gone> {
        metrics::counter!("whatsapp_connection_timeouts_total").increment(1);
        self.stream_fail("connection-timeout").await
    }

    /// Handles what routing queued for this session.
    async fn outbound(&mut self, outbound: Outbound) -> Result<(), Gone> {
        match outbound {
            Outbound::Stanza(stanza) => self.deliver(stanza.into(), None).await,
            Outbound::Stored(stored) => {
                let StoredOutbound { xml, key } = *stored;
                self.deliver(xml, Some(key)).await
            }
            Outbound::FlushOffline => {
                // Its removals follow its writes: nothing may wait in a cork. The
                // batch (if any) ends here.
                self.uncork().await?;
                let bare = self.bare_jid();
                self.flush_offline(&bare).await
            }
            // The region is evacuated (`node::evacuate`): what was queued before
            // is written first (`close_with` uncorks), then the stream error.
            Outbound::Leave(error) => self.close_with(&error).await,
        }
    }

    /// Handles `first` and whatever else is already queued (up to
    /// [`WRITE_BUDGET`] bytes of output) with one write to the socket: under load
    /// a woken connection writes many stanzas per system call instead of one. Each
    /// stanza still goes through [`Conn::write`] on its own, so XEP-0198 counts
    /// every one; the WebSocket transport splits the joined output back into one
    /// message per element.
    async fn outbound_batch(&mut self, first: Outbound) -> Result<(), Gone> {
        if self.rx.is_empty() {
            // Alone: written as it is, no copy.
            return self.outbound(first).await;
        }
        self.corked = Some(Corked::default());
        let mut result = self.outbound(first).await;
        while result.is_ok()
            && self
                .corked
                .as_ref()
                .is_some_and(|c| c.out.len() < WRITE_BUDGET)
        {
            match self.rx.try_recv() {
                Ok(next) => result = self.outbound(next).await,
                Err(_) => break,
            }
        }
        let written = self.uncork().await;
        result.and(written)
    }

    /// Ends a drain: writes what it gathered; its stored messages are then
    /// written, so they may be removed.
    async fn uncork(&mut self) -> Result<(), Gone> {
        let Some(corked) = self.corked.take() else {
            return Ok(());
        };
        if !corked.out.is_empty() {
            self.send(&corked.out).await?;
        }
        self.removals.extend(corked.removals);
        Ok(())
    }

    /// Handles what is already queued, so what a stanza's handling routed to this
    /// very session (a roster push, a presence echo) is written before the reply
    /// to the client's next stanza.
    async fn drain_queued(&mut self) -> Result<(), Gone> {
        while let Ok(outbound) = self.rx.try_recv() {
            self.outbound_batch(outbound).await?;
        }
        Ok(())
    }

    /// Writes `data`, giving up when the router kicks this connection; while the
    /// outbound queue is being drained, gathers it for one write instead.
    async fn write(&mut self, data: &str) -> Result<(), Gone> {
        // XEP-0198: every stanza sent counts and waits for the client's <a/>. The
        // count is per call: write one stanza per call (never several joined).
        self.sm_track(data);
        match self.corked.as_mut() {
            Some(corked) => {
                corked.out.push_str(data);
                Ok(())
            }
            None => self.send(data).await,
        }
    }

    /// A stored message (no SM) was just written with [`Conn::write`]: remove it
    /// from the offline store once it really was.
    fn written_stored(&mut self, key: crate::offline::MessageKey) {
        match self.corked.as_mut() {
            Some(corked) => corked.removals.push(key),
            None => self.removals.push(key),
        }
    }

    /// Writes `data` to the socket now, giving up when the router kicks this
    /// connection.
    async fn send(&mut self, data: &str) -> Result<(), Gone> {
        tokio::select! {
            biased;
            _ = self.kick.cancelled() => Err(Gone(End::Dropped)),
            written = self.transport.send(data) => written.map_err(|_| Gone(End::Dropped)),
        }
    }

    /// Sends `data` then the closing tag, and ends the connection.
    async fn close_with(&mut self, data: &str) -> Result<(), Gone> {
        // What a drain gathered goes first (it was handled before this).
        let _ = self.uncork().await;
        let mut out = String::with_capacity(data.len() + 80);
        out.push_str(data);
        out.push_str(&self.transport.footer());
        let _ = self.write(&out).await;
        self.transport.shutdown().await;
        Err(Gone(End::StreamError))
    }

    async fn stream_fail(&mut self, condition: &str) -> Result<(), Gone> {
        metrics::counter!("whatsapp_stream_errors_total", "condition" => condition.to_owned())
            .increment(1);
        self.close_with(&stream_error_text(condition)).await
    }

    /// Handles every event of what [`Transport::read`] fed to the parser.
    async fn input(&mut self) -> Result<(), Gone> {
        loop {
            match self.transport.next_event() {
                Ok(Some(event)) => {
                    self.throttle.stanza();
                    self.event(event).await?
                }
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
                let footer = self.transport.footer();
                let _ = self.write(&footer).await;
                self.transport.shutdown().await;
                Err(Gone(End::StreamClosed))
            }
            StreamEvent::Stanza(element) if element.ns() == sm::SM_NS => {
                self.sm_element(element).await
            }
            StreamEvent::Stanza(element) if element.is("starttls", TLS_NS) => self.starttls().await,
            StreamEvent::Stanza(element) => match self.stage {
                Stage::Header => self.stream_fail("bad-format").await,
                Stage::Sasl => self.sasl(element).await,
                Stage::Bind => self.bind(element).await,
                Stage::Session => {
                    // Stanzas that are not pipelined wait for the durable
                    // messages before them (the sender's order is kept).
                    if !self.stores.is_empty() && !sm::pipelined(&element) {
                        self.drain_stores().await?;
                    }
                    self.stanza(element).await?;
                    // XEP-0198 h: counted once handled (routed or durably stored).
                    self.sm_handled();
                    Ok(())
                }
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
