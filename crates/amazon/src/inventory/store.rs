//! The seam between the inventory's API and its storage.
//!
//! [`InventoryStore`] speaks in domain operations, each atomic on its own: a
//! reservation request with its idempotency key is *one* decision (PostgreSQL: one
//! transaction holding the conditional `UPDATE … WHERE available >= $qty`, the
//! reservation rows and the key's row; embedded: one WAL record). Nothing in the
//! API assumes memory, a log or locks, so a PostgreSQL store implements the same
//! trait (the fleet-mode issue) without changing a route.
//!
//! # Contract every implementation keeps
//! - An `Ok` answer describes a durable state: whatever it reports survives a crash
//!   of the store right after it returned.
//! - A reservation request decides once per key: retries with the same key and
//!   fingerprint get the first decision (`replayed: true`), whether it reserved or
//!   found too little stock; a different fingerprint is [`InventoryError::KeyReused`];
//!   a retry while the first is undecided or not yet durable is
//!   [`InventoryError::KeyInUse`]. Requests refused before deciding (unknown SKU,
//!   a full table, storage down) record nothing: the key stays free.
//! - All or none: a request's lines are reserved together or not at all.
//! - `available` never goes below zero; the three counters of a SKU move only
//!   between each other, except when [`set_stock`](InventoryStore::set_stock)
//!   replaces `available`.
//! - Fail closed: [`InventoryError::Unavailable`] means nothing unrecorded took
//!   effect.

use casebook_kit::runtime::BoxFuture;

use super::model::{
    InventoryError, Replayable, Reservation, ReservationId, ReserveOutcome, ReserveRequest, Sku,
    StockLevel, TtlRule,
};

/// Stock and reservations. See the module notes for the contract.
pub trait InventoryStore: Send + Sync + std::fmt::Debug + 'static {
    /// Sets a SKU's available units (creating the SKU), leaving reserved and
    /// confirmed units as they are.
    fn set_stock<'a>(
        &'a self,
        sku: &'a Sku,
        available: u64,
    ) -> BoxFuture<'a, Result<StockLevel, InventoryError>>;

    /// A SKU's counters.
    fn stock<'a>(&'a self, sku: &'a Sku) -> BoxFuture<'a, Result<StockLevel, InventoryError>>;

    /// Reserves every line for `ttl`, all or none, once per key.
    fn reserve(
        &self,
        request: ReserveRequest,
    ) -> BoxFuture<'_, Result<Replayable<ReserveOutcome>, InventoryError>>;

    /// One reservation (a due one is expired first, and reported expired).
    fn reservation(&self, id: ReservationId) -> BoxFuture<'_, Result<Reservation, InventoryError>>;

    /// Confirms reservations (sold), all or none, optionally for an order.
    /// Confirming a confirmed reservation again answers it as it is (for the same
    /// order); a released or expired one is a [`InventoryError::Conflict`].
    fn confirm<'a>(
        &'a self,
        ids: &'a [ReservationId],
        order_id: Option<&'a str>,
        ttl: TtlRule,
    ) -> BoxFuture<'a, Result<Vec<Reservation>, InventoryError>>;

    /// Releases an active reservation (its stock returns); releasing a released or
    /// expired one answers it as it is; a confirmed one is a conflict.
    fn release(&self, id: ReservationId) -> BoxFuture<'_, Result<Reservation, InventoryError>>;

    /// Expires up to `budget` active reservations whose TTL has passed (on the
    /// store's clock); returns how many. The sweeper calls it.
    fn expire_due(&self, budget: usize) -> BoxFuture<'_, Result<usize, InventoryError>>;
}
