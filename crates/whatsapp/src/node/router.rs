//! The session table of one node: bare JID → its bound resources.
//!
//! Guarantees: routing never waits on a recipient — every session has a bounded
//! output queue and a stanza that does not fit disconnects that (slow) session
//! instead of blocking the sender; a resource is bound at most once per bare JID;
//! a session is removed only by the connection that registered it (the id check
//! makes a late cleanup harmless). A XEP-0198 session whose socket dropped stays
//! bound here (detached) until resumed or its window expires, its queue still
//! bounded. Bare-JID messages go to every available
//! resource with non-negative priority (RFC 6121 §8.5.2.1.1, the "all" option).
//! The instant-messaging state of a session (last presence, roster interest,
//! carbons) lives here too, in its own `impl` block, so "who should get this" has
//! one answer.
//!
//! Across nodes: when a [`NodeLink`] is attached, every bind, availability change
//! and unbind is written to the cluster's session registry, and `to_full` /
//! `to_bare` / `has_available` / `nudge_offline` also reach sessions on other
//! nodes through the link (a stanza the link accepts counts as delivered; if the
//! peer later cannot deliver it, the link stores it offline — see
//! [`crate::cluster::link`]). The `local_*` and `deliver_*` methods are this node
//! only: what the link's receiving side uses, so a forwarded stanza is never
//! forwarded again, and what XEP-0198 uses for messages already in the offline
//! store (a remote recipient gets those through `nudge_offline`, from the store).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::xml::Element;

use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cluster::link::NodeLink;

/// Most resources one account may bind at once on this node.
pub const MAX_RESOURCES_PER_ACCOUNT: usize = 64;

/// What routing hands to a session's connection task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// A serialized stanza to write (a `Box<str>`, not a `String`: 16 bytes a
    /// slot, see `Stored`).
    Stanza(Box<str>),
    /// Offline messages were stored for this account after it became available:
    /// deliver them.
    FlushOffline,
    /// A message already durable in the offline store (its sender has XEP-0198
    /// enabled): deliver it, and remove it from the store once the recipient has
    /// it (its `<a/>`, or the socket write without stream management).
    /// Boxed: every connection's queue allocates its first block of 32 slots up
    /// front, each as large as the largest variant.
    Stored(Box<StoredOutbound>),
    /// Close the stream with this `<stream:error>` (a whole element): the node's
    /// region is evacuated and the session is sent elsewhere.
    Leave(Box<str>),
}

/// A message already durable in the offline store, on its way to a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOutbound {
    /// The serialized stanza.
    pub xml: String,
    /// Its key in the offline store.
    pub key: crate::offline::MessageKey,
}

/// One bound resource as the router sees it.
#[derive(Debug, Clone)]
struct Session {
    conn_id: u64,
    tx: mpsc::Sender<Outbound>,
    kick: CancellationToken,
    available: bool,
    priority: i8,
    /// Told to leave ([`Router::move_off`]): not picked again.
    leaving: bool,
    /// Instant-messaging state of the session (see the `impl Router` block at the end).
    im: SessionIm,
}

/// Whether routing reached anyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Queued to this many sessions.
    Delivered(usize),
    /// No session could take it (none bound/available, or the target was slow
    /// and got disconnected).
    NoSession,
}

/// Why a bind was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindRefused {
    /// The account already has [`MAX_RESOURCES_PER_ACCOUNT`] resources.
    TooManyResources,
}

/// The node's session table.
#[derive(Debug, Default)]
pub struct Router {
    sessions: Mutex<HashMap<String, HashMap<String, Session>>>,
    next_conn: AtomicU64,
    /// The node's cluster link; unset for a router used alone.
    cluster: OnceLock<Arc<NodeLink>>,
}

impl Router {
    /// Routes through `link` to other nodes from now on (set once, at start).
    pub(crate) fn attach(&self, link: Arc<NodeLink>) {
        let _ = self.cluster.set(link);
    }

    /// This node's identity in the cluster, once attached.
    pub(crate) fn node(&self) -> Option<&crate::cluster::NodeRef> {
        self.cluster.get().map(|link| &link.me)
    }

    /// A fresh connection id.
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Binds `bare/resource` (unavailable until [`Router::set_presence`]); when
    /// `resource` is taken or absent a server-generated one is used. Returns the
    /// bound resource.
    pub fn bind(
        &self,
        bare: &str,
        resource: Option<&str>,
        conn_id: u64,
        tx: mpsc::Sender<Outbound>,
        kick: CancellationToken,
    ) -> Result<String, BindRefused> {
        let mut sessions = self.sessions.lock();
        let resources = sessions.entry(bare.to_owned()).or_default();
        if resources.len() >= MAX_RESOURCES_PER_ACCOUNT {
            return Err(BindRefused::TooManyResources);
        }
        let resource = match resource {
            Some(wanted) if !wanted.is_empty() && !resources.contains_key(wanted) => {
                wanted.to_owned()
            }
            _ => loop {
                let generated = format!("cb-{:016x}", rand::random::<u64>());
                if !resources.contains_key(&generated) {
                    break generated;
                }
            },
        };
        resources.insert(
            resource.clone(),
            Session {
                conn_id,
                tx,
                kick,
                available: false,
                priority: 0,
                leaving: false,
                im: SessionIm::default(),
            },
        );
        if let Some(link) = self.cluster.get() {
            link.register(bare, &resource, false);
        }
        Ok(resource)
    }

    /// Marks a bound session available (with `priority`) or unavailable.
    pub fn set_presence(
        &self,
        bare: &str,
        resource: &str,
        conn_id: u64,
        available: bool,
        priority: i8,
    ) {
        let mut sessions = self.sessions.lock();
        if let Some(session) = sessions
            .get_mut(bare)
            .and_then(|r| r.get_mut(resource))
            .filter(|s| s.conn_id == conn_id)
        {
            session.available = available;
            session.priority = priority;
            if let Some(link) = self.cluster.get() {
                link.register(bare, resource, available && priority >= 0);
            }
        }
    }

    /// Removes the session, if it is still this connection's.
    pub fn unbind(&self, bare: &str, resource: &str, conn_id: u64) {
        let mut sessions = self.sessions.lock();
        if let Some(resources) = sessions.get_mut(bare) {
            if resources
                .get(resource)
                .is_some_and(|s| s.conn_id == conn_id)
            {
                resources.remove(resource);
                if let Some(link) = self.cluster.get() {
                    link.unregister(bare, resource);
                }
            }
            if resources.is_empty() {
                sessions.remove(bare);
            }
        }
    }

    /// Queues `stanza` to exactly `bare/resource` (bound, available or not), on
    /// this node or, through the link, on the node that holds it.
    pub fn to_full(&self, bare: &str, resource: &str, stanza: &str) -> Delivery {
        match self.local_to_full(bare, resource, stanza) {
            Delivery::NoSession => match self.cluster.get() {
                Some(link) => link.forward_full(bare, resource, stanza),
                None => Delivery::NoSession,
            },
            delivered => delivered,
        }
    }

    /// Queues `stanza` to every available resource of `bare` with priority ≥ 0,
    /// here and on every other node that has one (each node counts once).
    pub fn to_bare(&self, bare: &str, stanza: &str) -> Delivery {
        let here = match self.local_to_bare(bare, stanza) {
            Delivery::Delivered(n) => n,
            Delivery::NoSession => 0,
        };
        let elsewhere = self
            .cluster
            .get()
            .map_or(0, |link| link.forward_bare(bare, stanza, here > 0));
        match here + elsewhere {
            0 => Delivery::NoSession,
            n => Delivery::Delivered(n),
        }
    }

    /// [`Router::to_full`] on this node only.
    pub fn local_to_full(&self, bare: &str, resource: &str, stanza: &str) -> Delivery {
        self.deliver_full(bare, resource, &|| Outbound::Stanza(stanza.into()))
    }

    /// [`Router::to_bare`] on this node only.
    pub fn local_to_bare(&self, bare: &str, stanza: &str) -> Delivery {
        self.deliver_bare(bare, &|| Outbound::Stanza(stanza.into()))
    }

    /// Queues `item` to exactly `bare/resource` (bound, available or not), on this
    /// node only.
    pub fn deliver_full(
        &self,
        bare: &str,
        resource: &str,
        item: &dyn Fn() -> Outbound,
    ) -> Delivery {
        // Offered under the lock (`try_send` never waits, `item` only builds the
        // value): cloning the session (its sender and kick token) per stanza cost
        // more than the lock is held.
        let sessions = self.sessions.lock();
        match sessions.get(bare).and_then(|r| r.get(resource)) {
            Some(session) if offer(session, item()) => Delivery::Delivered(1),
            _ => Delivery::NoSession,
        }
    }

    /// Queues `item` to every available resource of `bare` with priority ≥ 0, on
    /// this node only.
    pub fn deliver_bare(&self, bare: &str, item: &dyn Fn() -> Outbound) -> Delivery {
        // Under the lock, as in `deliver_full`.
        let sessions = self.sessions.lock();
        let delivered = sessions.get(bare).map_or(0, |r| {
            r.values()
                .filter(|s| s.available && s.priority >= 0 && offer(s, item()))
                .count()
        });
        if delivered == 0 {
            Delivery::NoSession
        } else {
            Delivery::Delivered(delivered)
        }
    }

    /// Whether `bare` has a session that [`Router::to_bare`] would deliver to, on
    /// this node or another.
    pub fn has_available(&self, bare: &str) -> bool {
        let here = self
            .sessions
            .lock()
            .get(bare)
            .is_some_and(|r| r.values().any(|s| s.available && s.priority >= 0));
        here || self.cluster.get().is_some_and(|link| {
            link.elsewhere(bare)
                .iter()
                .any(crate::cluster::registry::Located::any_available)
        })
    }

    /// Asks every available session of `bare` to flush its offline backlog (a
    /// store that finished after the recipient came online). Returns how many were
    /// asked; a full queue skips a session (its next flush happens at its next
    /// login). Other nodes holding available sessions of `bare` are asked too.
    pub fn nudge_offline(&self, bare: &str) -> usize {
        self.local_nudge(bare)
            + self
                .cluster
                .get()
                .map_or(0, |link| link.nudge_elsewhere(bare))
    }

    /// [`Router::nudge_offline`] on this node only.
    pub fn local_nudge(&self, bare: &str) -> usize {
        let targets: Vec<Session> = self
            .sessions
            .lock()
            .get(bare)
            .map(|r| r.values().filter(|s| s.available).cloned().collect())
            .unwrap_or_default();
        targets
            .iter()
            .filter(|s| s.tx.try_send(Outbound::FlushOffline).is_ok())
            .count()
    }

    /// Gives a resumed session (XEP-0198) its new connection's kick token, so a
    /// slow reader kick reaches the connection that now serves it.
    pub fn set_kick(&self, bare: &str, resource: &str, conn_id: u64, kick: CancellationToken) {
        if let Some(session) = self
            .sessions
            .lock()
            .get_mut(bare)
            .and_then(|r| r.get_mut(resource))
            .filter(|s| s.conn_id == conn_id)
        {
            session.kick = kick;
        }
    }

    /// Tells at most `max` sessions not yet told to close with `error` (see
    /// [`Outbound::Leave`]); returns how many were told. A session whose queue is
    /// full is skipped, not kicked: a later call tries it again.
    pub fn move_off(&self, max: usize, error: &str) -> usize {
        let mut sessions = self.sessions.lock();
        let mut told = 0;
        for session in sessions.values_mut().flat_map(HashMap::values_mut) {
            if told == max {
                break;
            }
            if session.leaving {
                continue;
            }
            if session.tx.try_send(Outbound::Leave(error.into())).is_ok() {
                session.leaving = true;
                told += 1;
            }
        }
        told
    }

    /// Number of bound sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.lock().values().map(HashMap::len).sum()
    }
}

/// What RFC 6121 and XEP-0280 need to know about a session beyond routing.
#[derive(Debug, Clone, Default)]
struct SessionIm {
    /// The last broadcast available presence (`from` stamped, no `to`): the answer
    /// to a probe.
    last_presence: Option<Arc<Element>>,
    /// The session fetched the roster, so it gets roster pushes (RFC 6121 §2.1.6).
    roster_interested: bool,
    /// XEP-0280 carbons enabled.
    carbons: bool,
}

/// Instant-messaging state kept per session. Delivery still goes through
/// [`Router::to_full`] / [`Router::to_bare`]; these only answer "who".
impl Router {
    fn with_session(
        &self,
        bare: &str,
        resource: &str,
        conn_id: u64,
        f: impl FnOnce(&mut SessionIm),
    ) {
        if let Some(session) = self
            .sessions
            .lock()
            .get_mut(bare)
            .and_then(|r| r.get_mut(resource))
            .filter(|s| s.conn_id == conn_id)
        {
            f(&mut session.im);
        }
    }

    fn resources_where(&self, bare: &str, keep: impl Fn(&Session) -> bool) -> Vec<String> {
        self.sessions
            .lock()
            .get(bare)
            .map(|r| {
                r.iter()
                    .filter(|(_, s)| keep(s))
                    .map(|(resource, _)| resource.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Records the session's last available presence (`None` once unavailable).
    pub fn set_last_presence(
        &self,
        bare: &str,
        resource: &str,
        conn_id: u64,
        presence: Option<Arc<Element>>,
    ) {
        self.with_session(bare, resource, conn_id, |im| im.last_presence = presence);
    }

    /// The last presence of every available resource of `bare`.
    pub fn last_presences(&self, bare: &str) -> Vec<Arc<Element>> {
        self.sessions
            .lock()
            .get(bare)
            .map(|r| {
                r.values()
                    .filter(|s| s.available)
                    .filter_map(|s| s.im.last_presence.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The available resources of `bare` (presence goes to all of them, whatever
    /// their priority).
    pub fn available_resources(&self, bare: &str) -> Vec<String> {
        self.resources_where(bare, |s| s.available)
    }

    /// Marks the session as one that receives roster pushes.
    pub fn set_roster_interested(&self, bare: &str, resource: &str, conn_id: u64) {
        self.with_session(bare, resource, conn_id, |im| im.roster_interested = true);
    }

    /// The resources of `bare` that fetched the roster.
    pub fn roster_interested(&self, bare: &str) -> Vec<String> {
        self.resources_where(bare, |s| s.im.roster_interested)
    }

    /// Enables or disables XEP-0280 carbons for the session.
    pub fn set_carbons(&self, bare: &str, resource: &str, conn_id: u64, enabled: bool) {
        self.with_session(bare, resource, conn_id, |im| im.carbons = enabled);
    }

    /// The available, carbons-enabled resources of `bare` other than `except`.
    pub fn carbon_resources(&self, bare: &str, except: Option<&str>) -> Vec<String> {
        self.resources_where(bare, |s| s.available && s.im.carbons)
            .into_iter()
            .filter(|r| Some(r.as_str()) != except)
            .collect()
    }

    /// Drops every session of `bare` but connection `keep` (account deletion);
    /// returns how many.
    pub fn kick_all_except(&self, bare: &str, keep: u64) -> usize {
        let sessions = self.sessions.lock();
        sessions.get(bare).map_or(0, |r| {
            r.values()
                .filter(|s| s.conn_id != keep)
                .inspect(|s| s.kick.cancel())
                .count()
        })
    }
}

/// Tries to queue; a full queue means a slow reader: kick it rather than wait.
fn offer(session: &Session, item: Outbound) -> bool {
    match session.tx.try_send(item) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            metrics::counter!("whatsapp_slow_reader_kicks_total").increment(1);
            session.kick.cancel();
            false
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn move_off_tells_a_bounded_batch_once_each_and_skips_full_queues() {
        let router = Router::default();
        let mut receivers = Vec::new();
        for i in 0..5u64 {
            let (tx, rx) = mpsc::channel(1);
            router
                .bind(
                    &format!("u{i}@d"),
                    Some("r"),
                    i,
                    tx,
                    CancellationToken::new(),
                )
                .unwrap();
            receivers.push(rx);
        }
        // u4's queue is full: it is skipped, not kicked.
        router.to_full("u4@d", "r", "<message/>");
        assert_eq!(router.move_off(2, "<bye/>"), 2);
        assert_eq!(
            router.move_off(10, "<bye/>"),
            2,
            "the rest but the full one"
        );
        assert_eq!(router.move_off(10, "<bye/>"), 0, "each told once");
        let left = receivers
            .iter_mut()
            .filter_map(|rx| rx.try_recv().ok())
            .filter(|o| matches!(o, Outbound::Leave(e) if &**e == "<bye/>"))
            .count();
        assert_eq!(left, 4);
        // Its queue drained, the last one is told at a later call.
        assert_eq!(router.move_off(10, "<bye/>"), 1);
        assert!(matches!(receivers[4].try_recv(), Ok(Outbound::Leave(_))));
    }

    fn session(
        router: &Router,
        bare: &str,
        resource: Option<&str>,
        cap: usize,
    ) -> (String, u64, mpsc::Receiver<Outbound>, CancellationToken) {
        let (tx, rx) = mpsc::channel(cap);
        let kick = CancellationToken::new();
        let id = router.next_conn_id();
        let bound = router.bind(bare, resource, id, tx, kick.clone()).unwrap();
        (bound, id, rx, kick)
    }

    #[test]
    fn bare_delivery_goes_to_available_non_negative_resources() {
        let router = Router::default();
        let (a, a_id, mut a_rx, _) = session(&router, "u@d", Some("a"), 4);
        let (b, b_id, mut b_rx, _) = session(&router, "u@d", Some("b"), 4);
        assert_eq!(
            router.to_bare("u@d", "x"),
            Delivery::NoSession,
            "nobody available yet"
        );
        router.set_presence("u@d", &a, a_id, true, 0);
        router.set_presence("u@d", &b, b_id, true, -1);
        assert_eq!(router.to_bare("u@d", "m1"), Delivery::Delivered(1));
        assert_eq!(a_rx.try_recv().unwrap(), Outbound::Stanza("m1".into()));
        assert!(b_rx.try_recv().is_err());
        assert_eq!(router.to_full("u@d", &b, "m2"), Delivery::Delivered(1));
        assert_eq!(b_rx.try_recv().unwrap(), Outbound::Stanza("m2".into()));
        assert_eq!(router.nudge_offline("u@d"), 2, "both are available");
        assert_eq!(a_rx.try_recv().unwrap(), Outbound::FlushOffline);
        assert_eq!(router.nudge_offline("nobody@d"), 0);
    }

    #[test]
    fn taken_resource_gets_a_generated_one_and_unbind_checks_owner() {
        let router = Router::default();
        let (first, first_id, _rx1, _) = session(&router, "u@d", Some("r"), 1);
        let (second, _, _rx2, _) = session(&router, "u@d", Some("r"), 1);
        assert_eq!(first, "r");
        assert_ne!(second, "r");
        router.unbind("u@d", "r", first_id + 100);
        assert_eq!(router.session_count(), 2, "a stranger cannot unbind");
        router.unbind("u@d", "r", first_id);
        assert_eq!(router.session_count(), 1);
    }

    #[test]
    fn full_queue_kicks_the_slow_reader_instead_of_waiting() {
        let router = Router::default();
        let (r, id, _rx, kick) = session(&router, "u@d", None, 1);
        router.set_presence("u@d", &r, id, true, 0);
        assert_eq!(router.to_bare("u@d", "1"), Delivery::Delivered(1));
        assert!(!kick.is_cancelled());
        assert_eq!(router.to_bare("u@d", "2"), Delivery::NoSession);
        assert!(kick.is_cancelled());
    }
}
