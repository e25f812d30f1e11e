//! The embedded [`OrderStore`]: the kit's outbox is the primary store of orders.
//!
//! Each placed order is one outbox entry: the change `{"order": …, "key": …}` and
//! its `OrderPlaced` event (topic [`ORDERS_TOPIC`]) — committed atomically, relayed
//! to the event bus at least once. Memory holds every order, the checkout keys
//! that placed them, and which orders still await their reservations' confirm.
//!
//! # Recovery
//! A snapshot (every [`SNAPSHOT_EVERY`] orders; JSON through the kit's
//! `Checkpoint`) holds the orders, keys and confirm flags with the outbox position
//! to replay from; start-up loads it and replays the entries after it. Orders
//! replayed from the log count as unconfirmed until checkout's reconcile confirms
//! them (a no-op for those already confirmed).
//!
//! The replay position is a low-water mark: the outbox's durable end, or the
//! position registered (before committing) by a `place` whose entry is not yet in
//! memory — whichever is lower. So no committed order is ever skipped; an entry
//! replayed twice is recognised by its order id.
//!
//! # Not guaranteed
//! - Orders are kept forever (no retention); checkout keys are forgotten after
//!   the retention.
//! - Exactly-once publication: a crash between publish and checkpoint re-publishes
//!   (same event id).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use casebook_kit::clock::SharedClock;
use casebook_kit::events::{Checkpoint, Event, EventBus, WalBus};
use casebook_kit::outbox::{OutboundEvent, Outbox};
use casebook_kit::runtime::BoxFuture;
use casebook_kit::wal::WalConfig;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::store::{Order, OrderError, OrderStore};
use crate::inventory::model::Replayable;

/// The topic `OrderPlaced` events go to.
pub const ORDERS_TOPIC: &str = "amazon.orders";
/// The event's type.
pub const ORDER_PLACED: &str = "OrderPlaced";
/// Orders placed between snapshots.
pub const SNAPSHOT_EVERY: u64 = 10_000;
/// Outbox entries read per replay step.
const REPLAY_CHUNK: usize = 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Change {
    order: Order,
    /// The checkout key that placed it.
    key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedKey {
    user: String,
    key: String,
    order: String,
    at_ms: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    replay_from: u64,
    orders: Vec<Order>,
    unconfirmed: Vec<String>,
    keys: Vec<SavedKey>,
}

#[derive(Debug, Default)]
struct Book {
    orders: HashMap<String, Order>,
    /// A user's order ids, oldest first.
    by_user: HashMap<String, Vec<String>>,
    /// (user, key) → (order id, when placed).
    keys: HashMap<(String, String), (String, u64)>,
    unconfirmed: BTreeMap<String, ()>,
    /// Places between commit and insert: token → outbox position before the commit.
    in_flight: HashMap<u64, u64>,
    placed_since_snapshot: u64,
}

impl Book {
    /// Records an order and the key that placed it; `false` if it was known.
    fn insert(&mut self, order: Order, key: &str, at_ms: u64, confirmed: bool) -> bool {
        self.keys
            .entry((order.user.clone(), key.to_owned()))
            .or_insert_with(|| (order.id.clone(), at_ms));
        self.add(order, confirmed)
    }

    /// Records an order; `false` if it was known.
    fn add(&mut self, order: Order, confirmed: bool) -> bool {
        if self.orders.contains_key(&order.id) {
            return false;
        }
        if !confirmed {
            self.unconfirmed.insert(order.id.clone(), ());
        }
        self.by_user
            .entry(order.user.clone())
            .or_default()
            .push(order.id.clone());
        self.orders.insert(order.id.clone(), order);
        true
    }
}

/// The embedded order store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct OutboxOrders {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    clock: SharedClock,
    outbox: Outbox,
    bus: WalBus,
    book: Mutex<Book>,
    snapshot_file: Checkpoint,
    retention_ms: u64,
    next_token: AtomicU64,
}

impl OutboxOrders {
    /// Opens the store in `dir` (`outbox/`, `bus/`, `snapshot`) and recovers it.
    /// Blocking file I/O: call it off the async workers.
    pub fn open(
        dir: &Path,
        wal: WalConfig,
        clock: SharedClock,
        retention: Duration,
    ) -> anyhow::Result<Self> {
        let outbox = Outbox::open(dir.join("outbox"), wal.clone()).context("orders outbox")?;
        let bus = WalBus::open(dir.join("bus"), wal.clone()).context("orders event bus")?;
        let snapshot_file = Checkpoint::new(dir.join("snapshot"), wal.durability);
        let mut book = Book::default();
        let mut from = 0;
        if let Some(bytes) = snapshot_file.load_bytes().context("orders snapshot")? {
            let saved: Saved =
                serde_json::from_slice(&bytes).context("orders snapshot is not readable")?;
            from = saved.replay_from;
            let unconfirmed: std::collections::HashSet<String> =
                saved.unconfirmed.into_iter().collect();
            for order in saved.orders {
                let confirmed = !unconfirmed.contains(&order.id);
                book.add(order, confirmed);
            }
            for key in saved.keys {
                book.keys
                    .insert((key.user, key.key), (key.order, key.at_ms));
            }
        }
        if from < outbox.first_seq() || from > outbox.next_seq() {
            anyhow::bail!(
                "orders outbox in {} holds entries {}..{} but the snapshot continues at {from}",
                dir.display(),
                outbox.first_seq(),
                outbox.next_seq()
            );
        }
        loop {
            let entries = outbox.entries(from, REPLAY_CHUNK)?;
            let Some(last) = entries.last().map(|e| e.seq) else {
                break;
            };
            for entry in entries {
                let change: Change = serde_json::from_value(entry.change).with_context(|| {
                    format!("orders outbox entry {} is not an order", entry.seq)
                })?;
                let at_ms = change.order.created_at_ms;
                book.insert(change.order, &change.key, at_ms, false);
            }
            from = last + 1;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                clock,
                outbox,
                bus,
                book: Mutex::new(book),
                snapshot_file,
                retention_ms: u64::try_from(retention.as_millis()).unwrap_or(u64::MAX),
                next_token: AtomicU64::new(1),
            }),
        })
    }

    /// The bus the relay publishes to.
    pub fn bus(&self) -> &WalBus {
        &self.inner.bus
    }

    /// The outbox (the relay reads it).
    pub fn outbox(&self) -> &Outbox {
        &self.inner.outbox
    }

    /// Publishes committed `OrderPlaced` events until `stop`; a failed publish is
    /// retried after a pause (the outbox keeps every unsent entry).
    pub async fn relay(self, stop: tokio_util::sync::CancellationToken) {
        let bus: Arc<dyn EventBus> = Arc::new(self.inner.bus.clone());
        loop {
            let relay = self.inner.outbox.relay(bus.clone(), 256);
            match relay.run(stop.clone().cancelled_owned()).await {
                Ok(()) => return,
                Err(error) => tracing::warn!(%error, "order relay failed; retrying"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Whether enough orders were placed since the last snapshot.
    pub fn snapshot_due(&self) -> bool {
        self.inner.book.lock().placed_since_snapshot >= SNAPSHOT_EVERY
    }

    /// Writes a snapshot and drops the outbox entries before it (those relayed).
    /// Blocking file I/O.
    pub fn snapshot(&self) -> anyhow::Result<u64> {
        let saved = {
            let mut book = self.inner.book.lock();
            let replay_from = book
                .in_flight
                .values()
                .copied()
                .min()
                .unwrap_or(u64::MAX)
                .min(self.inner.outbox.next_seq());
            book.placed_since_snapshot = 0;
            let mut orders: Vec<Order> = book.orders.values().cloned().collect();
            orders.sort_by(|a, b| a.id.cmp(&b.id));
            Saved {
                replay_from,
                orders,
                unconfirmed: book.unconfirmed.keys().cloned().collect(),
                keys: book
                    .keys
                    .iter()
                    .map(|((user, key), (order, at_ms))| SavedKey {
                        user: user.clone(),
                        key: key.clone(),
                        order: order.clone(),
                        at_ms: *at_ms,
                    })
                    .collect(),
            }
        };
        let bytes = serde_json::to_vec(&saved).expect("orders serialise");
        self.inner.snapshot_file.store_bytes(&bytes)?;
        self.inner.outbox.truncate_before(saved.replay_from)?;
        Ok(saved.replay_from)
    }

    /// Forgets checkout keys older than the retention; returns how many.
    pub fn purge(&self) -> usize {
        let cutoff = self
            .inner
            .clock
            .wall_millis()
            .saturating_sub(self.inner.retention_ms);
        let mut book = self.inner.book.lock();
        let before = book.keys.len();
        book.keys.retain(|_, (_, at_ms)| *at_ms > cutoff);
        before - book.keys.len()
    }
}

fn unavailable(error: impl std::fmt::Display) -> OrderError {
    OrderError::Unavailable(error.to_string())
}

impl OrderStore for OutboxOrders {
    fn placed_by<'a>(
        &'a self,
        user: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Order>, OrderError>> {
        Box::pin(async move {
            let book = self.inner.book.lock();
            Ok(book
                .keys
                .get(&(user.to_owned(), key.to_owned()))
                .and_then(|(id, _)| book.orders.get(id))
                .cloned())
        })
    }

    fn place<'a>(
        &'a self,
        order: Order,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Replayable<Order>, OrderError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let token = inner.next_token.fetch_add(1, Ordering::Relaxed);
            {
                let mut book = inner.book.lock();
                let known = book
                    .keys
                    .get(&(order.user.clone(), key.to_owned()))
                    .map(|(id, _)| id.clone())
                    .or_else(|| {
                        book.orders
                            .contains_key(&order.id)
                            .then(|| order.id.clone())
                    });
                if let Some(id) = known {
                    return Ok(Replayable {
                        value: book.orders[&id].clone(),
                        replayed: true,
                    });
                }
                book.in_flight.insert(token, inner.outbox.next_seq());
            }
            let event = Event::new(
                ORDER_PLACED,
                order.id.clone(),
                serde_json::to_value(&order).expect("orders serialise"),
                inner.clock.as_ref(),
            );
            let change = serde_json::to_value(Change {
                order: order.clone(),
                key: key.to_owned(),
            })
            .expect("orders serialise");
            let committed = inner
                .outbox
                .commit(
                    change,
                    vec![OutboundEvent {
                        topic: ORDERS_TOPIC.to_owned(),
                        event,
                    }],
                )
                .await;
            let mut book = inner.book.lock();
            book.in_flight.remove(&token);
            committed.map_err(unavailable)?;
            let at_ms = order.created_at_ms;
            book.insert(order.clone(), key, at_ms, false);
            book.placed_since_snapshot += 1;
            metrics::counter!("amazon_orders_placed_total").increment(1);
            Ok(Replayable {
                value: order,
                replayed: false,
            })
        })
    }

    fn order<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Order>, OrderError>> {
        Box::pin(async move { Ok(self.inner.book.lock().orders.get(id).cloned()) })
    }

    fn orders_of<'a>(
        &'a self,
        user: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Order>, OrderError>> {
        Box::pin(async move {
            let book = self.inner.book.lock();
            Ok(book
                .by_user
                .get(user)
                .map(|ids| {
                    ids.iter()
                        .rev()
                        .take(limit)
                        .filter_map(|id| book.orders.get(id).cloned())
                        .collect()
                })
                .unwrap_or_default())
        })
    }

    fn unconfirmed(&self) -> Vec<Order> {
        let book = self.inner.book.lock();
        book.unconfirmed
            .keys()
            .filter_map(|id| book.orders.get(id).cloned())
            .collect()
    }

    fn mark_confirmed(&self, id: &str) {
        self.inner.book.lock().unconfirmed.remove(id);
    }
}
