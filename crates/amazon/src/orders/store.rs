//! Orders and the seam to their storage.
//!
//! An order is committed with its `OrderPlaced` event as one record (the kit's
//! outbox in the embedded store; one transaction with an outbox table in
//! PostgreSQL), keyed by the checkout's idempotency key so a retried checkout finds
//! the order it placed.

use casebook_kit::runtime::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::inventory::model::Replayable;

/// One line of an order: the reservation it was confirmed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub sku: String,
    pub qty: u32,
    pub reservation_id: String,
}

/// An order as placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// `ord_<n>`, from its first reservation's number (so a retried checkout that
    /// replays the same reservations names the same order).
    pub id: String,
    pub user: String,
    pub lines: Vec<OrderLine>,
    /// Wall-clock milliseconds.
    pub created_at_ms: u64,
}

/// Why the order store failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("order storage is unavailable: {0}")]
    Unavailable(String),
}

/// Orders, and the checkout keys that placed them.
pub trait OrderStore: Send + Sync + std::fmt::Debug + 'static {
    /// The order checkout `key` of `user` placed, if any (within the retention).
    fn placed_by<'a>(
        &'a self,
        user: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Order>, OrderError>>;

    /// Commits `order` with its `OrderPlaced` event, once per key: if the key (or
    /// the order id) is known, the order it placed is answered, `replayed`.
    fn place<'a>(
        &'a self,
        order: Order,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Replayable<Order>, OrderError>>;

    fn order<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Order>, OrderError>>;

    /// A user's orders, newest first, at most `limit`.
    fn orders_of<'a>(
        &'a self,
        user: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Order>, OrderError>>;

    /// Orders whose reservations are not yet known to be confirmed (checkout's
    /// forward recovery works through them).
    fn unconfirmed(&self) -> Vec<Order>;

    /// Notes that an order's reservations are confirmed.
    fn mark_confirmed(&self, id: &str);
}
