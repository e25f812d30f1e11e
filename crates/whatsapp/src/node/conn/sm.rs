//! XEP-0198 stream management (`urn:xmpp:sm:3`): acknowledgements both ways and
//! session resumption.
//!
//! Role: once a bound client sends `<enable/>`, every stanza the server handles is
//! counted (`h`, reported in `<a/>`), and every stanza it sends is kept in a bounded
//! unacknowledged queue until the client's `<a h/>` covers it. A session whose
//! socket drops (no `</stream>`) stays bound as *detached* for
//! `sm_resume_timeout`; `<resume previd h/>` on a new stream of the same account
//! takes it over and gets exactly the unacknowledged stanzas again, in order, then
//! what queued meanwhile.
//!
//! Guarantees:
//! - **An `<a h/>` covers only handled stanzas**: `h` is counted after the stanza's
//!   handler returned, i.e. after it was routed or durably stored. With stream
//!   management on, a chat/normal `<message>` is first written to the offline store
//!   (durable), then routed live; the copy is removed when the recipient
//!   acknowledges it (its `<a/>`, or its socket write when it has no stream
//!   management). So an acknowledged message survives `kill -9`. Up to 64
//!   consecutive messages of one connection are stored concurrently (one WAL group
//!   commit for many) and routed and counted in order as they complete; any other
//!   stanza and `<r/>` wait for them, so the sender's order holds and the `<a/>`
//!   answering an `<r/>` covers everything sent before it.
//! - **Nothing acknowledged is dropped on the way out**: what a session was sent
//!   and never acknowledged — when it closes (`</stream>`, a stream error, a
//!   shutdown) or its resumption window expires — goes to the offline store (each
//!   chat/normal `<message>`; later delivery carries a XEP-0203 stamp). Offline
//!   messages flushed to a stream-managed session leave the store only when the
//!   client's `<a/>` covers them.
//! - **Bounded**: at most `sm_max_unacked` stanzas unacknowledged per session (live
//!   traffic beyond it closes the stream with `<resource-constraint/>`; an offline
//!   flush pauses instead, and resumes as acks arrive); a detached session's queue
//!   is the router's bounded session queue (overflow → slow-reader kick, and the
//!   router's caller stores the message offline); at most `max_connections`
//!   detached sessions per node (beyond: finished at once, to the offline store).
//! - A client's `<a h/>` above what was sent is a `<undefined-condition/>` stream
//!   error with `<handled-count-too-high/>`.
//! - A second connection resuming a session that is still attached replaces the
//!   first (which is cut off).
//!
//! Deliberately absent: resumption across nodes (the registry is per node: a
//! resume elsewhere fails with `<item-not-found/>` and the client binds anew);
//! duplicate suppression beyond one session (a message delivered to two resources
//! of an account and acknowledged by only one may be stored again when the other
//! expires: at-least-once, clients de-duplicate by id); non-message stanzas
//! (presence, iq) that were never acknowledged are not stored, only resent on
//! resume.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::super::stanza::STANZAS_NS;
use super::*;
use crate::offline::MessageKey;
use crate::xml::STREAM_ERRORS_NS;
use crate::xml::{StreamParser, stream_open};

pub use crate::xmpp::SM_NS;
/// The server asks for an `<a/>` after this many unrequested stanzas (or sooner,
/// when its outbound queue is empty).
const REQUEST_EVERY: u32 = 16;
/// Stored messages written to a session without stream management are removed
/// from the offline store in batches of at most this many.
const REMOVAL_BATCH: usize = 64;
/// Durable stores one connection may have in flight (its next message waits).
const STORES_IN_FLIGHT: usize = 64;
/// How long a resume waits for the still-attached connection to let go.
const TAKEOVER_WAIT: Duration = Duration::from_secs(10);
/// Cadence of the expiry sweep (what expires is judged on the injected clock).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// A message of a stream-managed sender whose durable store is in flight.
#[derive(Debug)]
pub(super) struct PendingStore {
    element: Element,
    to: Jid,
    key: MessageKey,
    stored: Result<crate::offline::OfflineSeq, crate::offline::OfflineError>,
}

type StoreFuture = std::pin::Pin<Box<dyn std::future::Future<Output = PendingStore> + Send>>;

/// In-flight durable stores of one connection, completing in order, each with the
/// number of stanzas handled after it (and before the next store): they count in
/// `h` only once the store before them completed. Allocates only while stores are
/// in flight (every connection has one of these, most never store anything).
#[derive(Default)]
pub(super) struct Stores {
    futures: Option<futures::stream::FuturesOrdered<StoreFuture>>,
    trailing: VecDeque<u32>,
    /// The recipient of each in-flight store, oldest first: two stores to one
    /// recipient never run at once, or the second could reach the offline store's
    /// log first and be delivered before the first (RFC 6120 §10.1: sender order).
    recipients: VecDeque<String>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores")
            .field("in_flight", &self.len())
            .finish()
    }
}

impl Stores {
    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn len(&self) -> usize {
        self.futures.as_ref().map_or(0, |f| f.len())
    }

    fn push(&mut self, recipient: String, store: StoreFuture) {
        self.futures.get_or_insert_default().push_back(store);
        self.trailing.push_back(0);
        self.recipients.push_back(recipient);
    }

    /// Whether a store to `recipient` is in flight.
    fn holds(&self, recipient: &str) -> bool {
        self.recipients.iter().any(|r| r == recipient)
    }

    /// The oldest store, once complete, and the stanzas counted behind it.
    pub(super) async fn next(&mut self) -> Option<(PendingStore, u32)> {
        let done = self.futures.as_mut()?.next().await?;
        let trailing = self.trailing.pop_front().unwrap_or(0);
        self.recipients.pop_front();
        if self.is_empty() {
            self.futures = None;
            self.trailing = VecDeque::new();
            self.recipients = VecDeque::new();
        }
        Some((done, trailing))
    }
}

/// A stanza sent and not yet acknowledged.
#[derive(Debug)]
struct Sent {
    xml: String,
    /// The offline store's key when the stanza is a stored message (removed from
    /// the store once acknowledged).
    stored: Option<MessageKey>,
}

/// What the offline flush does with one stored message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FlushTurn {
    /// Send it.
    Send,
    /// Already sent and not acknowledged: not again.
    InFlight,
    /// Half the unacked bound is in flight: stop until acks make room.
    Paused,
}

/// One session's stream management state.
#[derive(Debug)]
pub(crate) struct Sm {
    resume_id: Option<String>,
    /// Inbound stanzas handled since `<enable/>` (mod 2^32).
    handled_in: u32,
    /// The client's last `h`: stanzas of ours it acknowledged (mod 2^32).
    acked_out: u32,
    unacked: VecDeque<Sent>,
    /// Keys of stored messages in `unacked`: a message is not sent twice to one
    /// session (live routing and an offline flush may both offer it).
    in_flight: HashSet<MessageKey>,
    /// Stanzas sent since the last `<r/>`.
    unrequested: u32,
    /// An offline flush stopped at the unacked bound; continue it on acks.
    flush_paused: bool,
    max_unacked: usize,
}

impl Sm {
    fn sent_count(&self) -> u32 {
        self.acked_out.wrapping_add(self.unacked.len() as u32)
    }

    /// Room left before an offline flush pauses (half the bound: live traffic
    /// keeps the other half).
    fn flush_room(&self) -> bool {
        self.unacked.len() < self.max_unacked / 2
    }

    /// Whether the offline flush may send the stored message `key` now; a full
    /// window pauses the flush until acks make room.
    pub(super) fn flush_turn(&mut self, key: &MessageKey) -> FlushTurn {
        if self.in_flight.contains(key) {
            FlushTurn::InFlight
        } else if self.flush_room() {
            FlushTurn::Send
        } else {
            self.flush_paused = true;
            FlushTurn::Paused
        }
    }
}

/// A session leaving its connection: handed to a resuming connection, kept
/// detached, or finished.
#[derive(Debug)]
pub(crate) struct Handoff {
    conn_id: u64,
    tx: mpsc::Sender<Outbound>,
    rx: mpsc::Receiver<Outbound>,
    bound: Bound,
    available: bool,
    sm: Box<Sm>,
}

#[derive(Debug)]
enum Held {
    /// Served by connection `conn_id`; cancelling `kick` cuts it off.
    Attached {
        conn_id: u64,
        kick: CancellationToken,
    },
    /// A resume is waiting for the attached connection to let go.
    Replacing { waiter: oneshot::Sender<Handoff> },
    /// No connection: resumable until `since` + the window.
    Detached {
        session: Box<Handoff>,
        since: Instant,
    },
}

#[derive(Debug)]
struct Entry {
    bare: String,
    held: Held,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    detached: usize,
}

/// The node's resumable sessions by resumption id.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    inner: Mutex<Inner>,
}

/// What a `<resume/>` found.
enum Found {
    Nothing,
    Ready(Box<Handoff>),
    Wait(oneshot::Receiver<Handoff>),
}

impl Registry {
    fn register(&self, id: &str, bare: &str, conn_id: u64, kick: CancellationToken) {
        self.inner.lock().entries.insert(
            id.to_owned(),
            Entry {
                bare: bare.to_owned(),
                held: Held::Attached { conn_id, kick },
            },
        );
    }

    /// Takes the session `id` of `bare` for a resume. Another account's id is
    /// treated as unknown (no oracle for ids).
    fn take(&self, id: &str, bare: &str) -> Found {
        let mut inner = self.inner.lock();
        let Some(entry) = inner.entries.get_mut(id).filter(|e| e.bare == bare) else {
            return Found::Nothing;
        };
        let (waiter, rx) = oneshot::channel();
        match std::mem::replace(&mut entry.held, Held::Replacing { waiter }) {
            Held::Attached { kick, .. } => {
                kick.cancel();
                Found::Wait(rx)
            }
            Held::Detached { session, .. } => {
                inner.detached -= 1;
                inner.entries.remove(id);
                Found::Ready(session)
            }
            // Two resumes racing: the newer wins, the older gets nothing.
            Held::Replacing { .. } => Found::Wait(rx),
        }
    }

    /// Connection `conn_id` now serves `id`.
    fn attach(&self, id: &str, bare: &str, conn_id: u64, kick: CancellationToken) {
        self.register(id, bare, conn_id, kick);
    }

    /// The connection serving `id` ended. Hands the session to a waiting resume,
    /// keeps it detached (`keep`, within the cap), or gives it back to be finished.
    fn leave(
        &self,
        id: &str,
        session: Handoff,
        keep: bool,
        now: Instant,
        cap: usize,
    ) -> Option<Handoff> {
        let mut inner = self.inner.lock();
        let Inner { entries, detached } = &mut *inner;
        let Some(entry) = entries.get_mut(id) else {
            return Some(session);
        };
        let session = match std::mem::replace(
            &mut entry.held,
            Held::Attached {
                conn_id: session.conn_id,
                kick: CancellationToken::new(),
            },
        ) {
            Held::Replacing { waiter } => match waiter.send(session) {
                Ok(()) => return None,
                // The resume gave up: keep it for the next one.
                Err(session) => session,
            },
            Held::Attached { conn_id, .. } if conn_id != session.conn_id => {
                // Not ours any more (cannot happen: only the holder leaves).
                return Some(session);
            }
            _ => session,
        };
        if keep && *detached < cap {
            *detached += 1;
            entry.held = Held::Detached {
                session: Box::new(session),
                since: now,
            };
            None
        } else {
            entries.remove(id);
            Some(session)
        }
    }

    /// Removes the detached sessions whose window has passed.
    fn expired(&self, now: Instant, window: Duration) -> Vec<Handoff> {
        let mut inner = self.inner.lock();
        let ids: Vec<String> = inner
            .entries
            .iter()
            .filter(|(_, e)| {
                matches!(e.held, Held::Detached { since, .. } if now.saturating_duration_since(since) >= window)
            })
            .map(|(id, _)| id.clone())
            .collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(Entry {
                held: Held::Detached { session, .. },
                ..
            }) = inner.entries.remove(&id)
            {
                inner.detached -= 1;
                out.push(*session);
            }
        }
        out
    }

    /// Detached sessions on this node.
    pub(crate) fn detached(&self) -> usize {
        self.inner.lock().detached
    }
}

/// Finishes detached sessions whose resumption window passed (on the injected
/// clock): their unacknowledged messages go to the offline store.
pub(crate) async fn sweep(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        metrics::gauge!("whatsapp_sm_detached_sessions").set(shared.resumable.detached() as f64);
        let expired = shared
            .resumable
            .expired(shared.clock.now(), shared.config.sm_resume_timeout);
        for session in expired {
            metrics::counter!("whatsapp_sm_expired_total").increment(1);
            finish(&shared, session).await;
        }
    }
}

/// Ends a session for good: unbinds it, then stores every chat/normal message it
/// was sent (or had queued) and never acknowledged in the offline store.
async fn finish(shared: &Arc<Shared>, session: Handoff) {
    let Handoff {
        bound, mut rx, sm, ..
    } = session;
    let bare = bound.bare.clone();
    // Unbind first, then close the queue: a sender racing us either queued before
    // the close (drained below) or sees the session gone and stores offline itself.
    drop(bound);
    rx.close();
    let mut items: Vec<(String, bool)> = sm
        .unacked
        .into_iter()
        .map(|s| (s.xml, s.stored.is_some()))
        .collect();
    while let Ok(outbound) = rx.try_recv() {
        match outbound {
            Outbound::Stanza(xml) => items.push((xml.into(), false)),
            Outbound::Stored(stored) => items.push((stored.xml, true)),
            Outbound::FlushOffline | Outbound::Leave(_) => {}
        }
    }
    let max = shared.config.max_stanza_bytes + 8192;
    let mut parser = StreamParser::new(Limits {
        max_stanza_bytes: max,
        max_buffer_bytes: 2 * max,
        ..Limits::default()
    });
    let header = stream_open(&[("version", "1.0")]);
    if parser.feed(header.as_bytes()).is_err() {
        return;
    }
    let _ = parser.next_event();
    let mut stored = 0usize;
    for (xml, already_stored) in items {
        // Already durable in the store and never acknowledged: it is still pending.
        if already_stored {
            continue;
        }
        if parser.feed(xml.as_bytes()).is_err() {
            continue;
        }
        let Ok(Some(StreamEvent::Stanza(element))) = parser.next_event() else {
            continue;
        };
        if !element.is("message", CLIENT_NS)
            || !matches!(element.attr("type"), None | Some("normal") | Some("chat"))
        {
            continue;
        }
        let id = element
            .attr("id")
            .map(str::to_owned)
            .unwrap_or_else(|| format!("cb-{:016x}", rand::random::<u64>()));
        let sender = element
            .attr("from")
            .unwrap_or(&shared.config.domain)
            .to_owned();
        let result = shared
            .domain
            .offline
            .store(NewMessage {
                id,
                recipient: bare.clone(),
                sender,
                // With its namespace: stored payloads are parsed as frames.
                payload: Bytes::from(element.to_xml()),
            })
            .await;
        match result {
            Ok(_) => stored += 1,
            Err(error) => tracing::warn!(%error, "unacknowledged message not stored offline"),
        }
    }
    if stored > 0 {
        metrics::counter!("whatsapp_sm_unacked_stored_total").increment(stored as u64);
        shared.router.nudge_offline(&bare);
    }
}

/// Whether `element` may be stored while earlier durable stores are in flight:
/// chat/normal messages (the only ones stored durably first).
pub(super) fn pipelined(element: &Element) -> bool {
    element.is("message", CLIENT_NS)
        && matches!(element.attr("type"), None | Some("normal") | Some("chat"))
}

fn is_stanza(data: &str) -> bool {
    ["<message", "<presence", "<iq"].iter().any(|name| {
        data.strip_prefix(name)
            .and_then(|rest| rest.chars().next())
            .is_some_and(|c| c == ' ' || c == '>' || c == '/')
    })
}

fn sm_element(name: &str) -> Element {
    Element::new(name, SM_NS)
}

fn failed(condition: &str, h: Option<u32>) -> String {
    let mut failed = sm_element("failed").with_child(Element::new(condition, STANZAS_NS));
    if let Some(h) = h {
        failed.set_attr("h", h.to_string());
    }
    write_stanza(&failed)
}

impl Conn {
    /// Counts `data` as sent if it is a stanza (the write hook).
    pub(super) fn sm_track(&mut self, data: &str) {
        if let Some(sm) = self.sm.as_mut()
            && is_stanza(data)
        {
            sm.unacked.push_back(Sent {
                xml: data.to_owned(),
                stored: None,
            });
            sm.unrequested += 1;
        }
    }

    /// Marks the stanza just written as the stored message `key`.
    pub(super) fn sm_mark_stored(&mut self, key: MessageKey) {
        if let Some(sm) = self.sm.as_mut()
            && let Some(last) = sm.unacked.back_mut()
        {
            sm.in_flight.insert(key.clone());
            last.stored = Some(key);
        }
    }

    /// One inbound stanza handled (a message whose store is in flight counts
    /// when it completes).
    pub(super) fn sm_handled(&mut self) {
        if std::mem::take(&mut self.sm_defer_current) {
            return;
        }
        if let Some(trailing) = self.stores.trailing.back_mut() {
            // Handled, but behind a store still in flight.
            *trailing += 1;
            return;
        }
        if let Some(sm) = self.sm.as_mut() {
            sm.handled_in = sm.handled_in.wrapping_add(1);
        }
    }

    /// After each turn of the run loop: removes written stored messages (no SM)
    /// and sends `<r/>` when enough went unrequested — in both cases at once when
    /// the outbound queue ran dry.
    pub(super) async fn sm_after_turn(&mut self) -> Result<(), Gone> {
        if !self.removals.is_empty() && (self.removals.len() >= REMOVAL_BATCH || self.rx.is_empty())
        {
            self.remove_written().await;
        }
        let Some(sm) = self.sm.as_mut() else {
            return Ok(());
        };
        if sm.unrequested == 0 || (sm.unrequested < REQUEST_EVERY && !self.rx.is_empty()) {
            return Ok(());
        }
        sm.unrequested = 0;
        self.write(&write_stanza(&sm_element("r"))).await
    }

    /// Writes a routed stanza; `key` when it is a stored message.
    pub(super) async fn deliver(
        &mut self,
        xml: String,
        key: Option<MessageKey>,
    ) -> Result<(), Gone> {
        if let Some(sm) = self.sm.as_mut() {
            if key.as_ref().is_some_and(|k| sm.in_flight.contains(k)) {
                return Ok(());
            }
            if sm.unacked.len() >= sm.max_unacked {
                // Kept so the session's end stores it; then the stream closes.
                sm.unacked.push_back(Sent { xml, stored: key });
                metrics::counter!("whatsapp_sm_unacked_overflow_total").increment(1);
                return self.stream_fail("resource-constraint").await;
            }
        }
        self.write(&xml).await?;
        match key {
            Some(key) if self.sm.is_some() => self.sm_mark_stored(key),
            // No stream management: written is as delivered as it gets (the
            // documented loss window of plain XMPP). Batched: one tombstone
            // write per batch, not per message.
            Some(key) => self.written_stored(key),
            None => {}
        }
        Ok(())
    }

    /// A chat/normal message from a stream-managed sender: durable first, then
    /// routed live; the recipient's acknowledgement removes the stored copy.
    ///
    /// Pipelined: up to [`STORES_IN_FLIGHT`] consecutive messages of one connection
    /// are stored concurrently (sharing WAL group commits) and routed in order as
    /// they complete; each counts in `h` only then. Any other stanza, and `<r/>`,
    /// first waits for them, so the sender's order is kept and an `<a/>` answering
    /// an `<r/>` covers everything sent before it.
    pub(super) async fn message_durable(&mut self, element: Element, to: Jid) -> Result<(), Gone> {
        let bare = to.bare();
        // Stores to different recipients overlap; to one recipient they queue, so the
        // offline log holds them in the order the sender sent them.
        while self.stores.len() >= STORES_IN_FLIGHT || self.stores.holds(&bare) {
            self.store_next().await?;
        }
        let id = element
            .attr("id")
            .map(str::to_owned)
            .unwrap_or_else(|| format!("cb-{:016x}", rand::random::<u64>()));
        let sender = self.full_jid();
        let key = MessageKey {
            sender: sender.clone(),
            id: id.clone(),
        };
        let message = NewMessage {
            id,
            recipient: bare.clone(),
            sender,
            payload: Bytes::from(element.to_xml()),
        };
        let offline = self.shared.domain.offline.clone();
        self.stores.push(
            bare,
            Box::pin(async move {
                let stored = offline.store(message).await;
                PendingStore {
                    element,
                    to,
                    key,
                    stored,
                }
            }),
        );
        // Counted in h when it completes, not now.
        self.sm_defer_current = true;
        Ok(())
    }

    /// Waits for the oldest in-flight store and finishes it.
    pub(super) async fn store_next(&mut self) -> Result<(), Gone> {
        match self.stores.next().await {
            Some(done) => self.store_done(done).await,
            None => Ok(()),
        }
    }

    /// Waits for every in-flight store, in order.
    pub(super) async fn drain_stores(&mut self) -> Result<(), Gone> {
        while !self.stores.is_empty() {
            self.store_next().await?;
        }
        Ok(())
    }

    /// A durable store finished: route the message (or bounce it), count it in h.
    pub(super) async fn store_done(
        &mut self,
        (done, trailing): (PendingStore, u32),
    ) -> Result<(), Gone> {
        let PendingStore {
            element,
            to,
            key,
            stored,
        } = done;
        if let Some(sm) = self.sm.as_mut() {
            sm.handled_in = sm.handled_in.wrapping_add(1 + trailing);
        }
        if let Err(error) = stored {
            tracing::warn!(%error, "offline store refused a message");
            return self.bounce(&element, "wait", "resource-constraint").await;
        }
        let bare = to.bare();
        let xml = write_stanza(&element);
        let item = || {
            Outbound::Stored(Box::new(StoredOutbound {
                xml: xml.clone(),
                key: key.clone(),
            }))
        };
        let router = &self.shared.router;
        if let Some(resource) = &to.resource
            && let Delivery::Delivered(_) = router.deliver_full(&bare, resource, &item)
        {
            super::carbons::copy(&self.shared, "received", &bare, Some(resource), &element);
            return Ok(());
        }
        if let Delivery::Delivered(_) = router.deliver_bare(&bare, &item) {
            return Ok(());
        }
        // Nobody took it: it waits in the store; a session that came online while
        // it was being stored picks it up now.
        router.nudge_offline(&bare);
        Ok(())
    }

    /// An element of the `urn:xmpp:sm:3` namespace.
    pub(super) async fn sm_element(&mut self, element: Element) -> Result<(), Gone> {
        match element.name() {
            "enable" => self.sm_enable(&element).await,
            "resume" => self.sm_resume(&element).await,
            "r" if self.sm.is_some() => {
                self.drain_stores().await?;
                let h = self.sm.as_ref().map_or(0, |sm| sm.handled_in);
                let a = sm_element("a").with_attr("h", h.to_string());
                self.write(&write_stanza(&a)).await
            }
            "a" if self.sm.is_some() => match element.attr("h").and_then(|h| h.parse::<u32>().ok())
            {
                Some(h) => self.sm_ack(h).await,
                None => self.stream_fail("bad-format").await,
            },
            // <r/>/<a/> before <enable/>, or an unknown element.
            _ => self.stream_fail("unsupported-stanza-type").await,
        }
    }

    async fn sm_enable(&mut self, element: &Element) -> Result<(), Gone> {
        if self.stage != Stage::Session || self.sm.is_some() {
            return self.write(&failed("unexpected-request", None)).await;
        }
        let resume = matches!(element.attr("resume"), Some("true") | Some("1"));
        let mut enabled = sm_element("enabled");
        let resume_id = resume.then(|| format!("{:032x}", rand::random::<u128>()));
        if let Some(id) = &resume_id {
            self.shared
                .resumable
                .register(id, &self.bare_jid(), self.conn_id, self.kick.clone());
            enabled.set_attr("id", id.clone());
            enabled.set_attr("resume", "true");
            enabled.set_attr(
                "max",
                self.shared.config.sm_resume_timeout.as_secs().to_string(),
            );
        }
        self.sm = Some(Box::new(Sm {
            resume_id,
            handled_in: 0,
            acked_out: 0,
            unacked: VecDeque::new(),
            in_flight: HashSet::new(),
            unrequested: 0,
            flush_paused: false,
            max_unacked: self.shared.config.sm_max_unacked,
        }));
        metrics::counter!("whatsapp_sm_enabled_total").increment(1);
        self.write(&write_stanza(&enabled)).await
    }

    /// The client acknowledged `h` of our stanzas.
    async fn sm_ack(&mut self, h: u32) -> Result<(), Gone> {
        let Some(sm) = self.sm.as_mut() else {
            return Ok(());
        };
        let newly = h.wrapping_sub(sm.acked_out) as usize;
        if newly > sm.unacked.len() {
            let error = Element::new("error", STREAMS_NS)
                .with_child(Element::new("undefined-condition", STREAM_ERRORS_NS))
                .with_child(
                    sm_element("handled-count-too-high")
                        .with_attr("h", h.to_string())
                        .with_attr("send-count", sm.sent_count().to_string()),
                );
            metrics::counter!("whatsapp_stream_errors_total", "condition" => "handled-count-too-high")
                .increment(1);
            return self.close_with(&write_stanza(&error)).await;
        }
        sm.acked_out = h;
        let mut keys = Vec::new();
        for sent in sm.unacked.drain(..newly) {
            if let Some(key) = sent.stored {
                sm.in_flight.remove(&key);
                keys.push(key);
            }
        }
        let resume_flush = sm.flush_paused && sm.flush_room();
        if resume_flush {
            sm.flush_paused = false;
        }
        let bare = self.bare_jid();
        if !keys.is_empty()
            && let Err(error) = self
                .shared
                .domain
                .offline
                .ack(&bare, Ack::Messages(keys))
                .await
        {
            tracing::warn!(%error, "offline removal failed: those messages will be delivered again");
        }
        if resume_flush {
            self.flush_offline(&bare).await?;
        }
        Ok(())
    }

    async fn sm_resume(&mut self, element: &Element) -> Result<(), Gone> {
        let (Some(previd), Some(h)) = (
            element.attr("previd").map(str::to_owned),
            element.attr("h").and_then(|h| h.parse::<u32>().ok()),
        ) else {
            return self.write(&failed("bad-request", None)).await;
        };
        let Some(local) = self
            .authenticated
            .clone()
            .filter(|_| self.stage == Stage::Bind)
        else {
            return self.write(&failed("unexpected-request", None)).await;
        };
        let bare = format!("{local}@{}", self.shared.config.domain);
        let session = match self.shared.resumable.take(&previd, &bare) {
            Found::Nothing => None,
            Found::Ready(session) => Some(*session),
            Found::Wait(rx) => tokio::time::timeout(TAKEOVER_WAIT, rx)
                .await
                .ok()
                .and_then(Result::ok),
        };
        let Some(session) = session else {
            metrics::counter!("whatsapp_sm_resume_failed_total").increment(1);
            return self.write(&failed("item-not-found", None)).await;
        };
        let newly = h.wrapping_sub(session.sm.acked_out) as usize;
        if newly > session.sm.unacked.len() {
            // The client claims more than it was sent: the old session is over.
            let handled = session.sm.handled_in;
            finish(&self.shared, session).await;
            let failed = sm_element("failed")
                .with_attr("h", handled.to_string())
                .with_child(Element::new("undefined-condition", STANZAS_NS))
                .with_child(sm_element("handled-count-too-high").with_attr("h", h.to_string()));
            return self.write(&write_stanza(&failed)).await;
        }
        let Handoff {
            conn_id,
            tx,
            rx,
            bound,
            available,
            sm,
        } = session;
        self.shared
            .router
            .set_kick(&bound.bare, &bound.resource, conn_id, self.kick.clone());
        self.shared
            .resumable
            .attach(&previd, &bare, conn_id, self.kick.clone());
        self.conn_id = conn_id;
        self.tx = tx;
        self.rx = rx;
        self.bound = Some(bound);
        self.available = available;
        self.stage = Stage::Session;
        let resumed = sm_element("resumed")
            .with_attr("h", sm.handled_in.to_string())
            .with_attr("previd", previd);
        self.sm = Some(sm);
        metrics::counter!("whatsapp_sm_resumed_total").increment(1);
        self.write(&write_stanza(&resumed)).await?;
        self.sm_ack(h).await?;
        // Resend what is still unacknowledged, in order, with the same numbers (the
        // client's count continues from its h).
        let resend: Vec<Sent> = match self.sm.as_mut() {
            Some(sm) => sm.unacked.drain(..).collect(),
            None => Vec::new(),
        };
        for sent in resend {
            self.write(&sent.xml).await?;
            if let Some(key) = sent.stored {
                self.sm_mark_stored(key);
            }
        }
        if self.available {
            // What overflowed to the offline store while detached.
            let bare = self.bare_jid();
            self.flush_offline(&bare).await?;
        }
        Ok(())
    }

    /// Removes the stored messages written to this session without SM.
    async fn remove_written(&mut self) {
        let keys = std::mem::take(&mut self.removals);
        let bare = self.bare_jid();
        if let Err(error) = self
            .shared
            .domain
            .offline
            .ack(&bare, Ack::Messages(keys))
            .await
        {
            tracing::warn!(%error, "offline removal failed: those messages will be delivered again");
        }
    }

    /// After the connection ended: keep the session for resumption, or finish it.
    pub(super) async fn end_session(&mut self, end: End) {
        // Stores in flight finish and are routed (a bounce to a dead socket is
        // harmless): a resumed session's h then covers them.
        while let Some(done) = self.stores.next().await {
            let _ = self.store_done(done).await;
        }
        if !self.removals.is_empty() {
            self.remove_written().await;
        }
        let Some(sm) = self.sm.take() else {
            return;
        };
        let Some(bound) = self.bound.take() else {
            return;
        };
        let (_, closed) = mpsc::channel(1);
        let session = Handoff {
            conn_id: self.conn_id,
            tx: self.tx.clone(),
            rx: std::mem::replace(&mut self.rx, closed),
            bound,
            available: self.available,
            sm,
        };
        let unfinished = match session.sm.resume_id.clone() {
            Some(id) => {
                let keep = matches!(end, End::PeerClosed | End::Dropped);
                self.shared.resumable.leave(
                    &id,
                    session,
                    keep,
                    self.shared.clock.now(),
                    self.shared.config.max_connections,
                )
            }
            None => Some(session),
        };
        if let Some(session) = unfinished {
            finish(&self.shared, session).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_stanzas_count() {
        assert!(is_stanza("<message to='a'/>"));
        assert!(is_stanza("<iq type='result'/>"));
        assert!(is_stanza("<presence/>"));
        assert!(is_stanza("<message>x</message>"));
        assert!(!is_stanza("<iqx/>"));
        assert!(!is_stanza("<r xmlns='urn:xmpp:sm:3'/>"));
        assert!(!is_stanza("<stream:features/>"));
        assert!(!is_stanza("</stream:stream>"));
    }
}
