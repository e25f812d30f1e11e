//! Checkout: a cart becomes an order, all or none, once per idempotency key.
//!
//! A saga over two stores with one pivot:
//! 1. **Reserve** every cart line in one inventory decision (all or none — a short
//!    line leaves every other line unreserved), under the inventory key
//!    `<user>:<key>` (scope `Checkout`), held for `reservation_ttl`. A retry
//!    replays the same reservations, whatever the cart holds by then.
//! 2. **Place** the order with its `OrderPlaced` event in the order store, keyed
//!    by the same key — the pivot: from here the checkout has happened.
//! 3. **Confirm** the reservations for the order (TTL honoured as committed).
//!    Forward recovery: orders not yet known confirmed are confirmed again at
//!    start and by the maintenance loop; confirming twice is a no-op.
//! 4. **Remove** the bought lines from the cart (an observed remove: an add made
//!    meanwhile survives).
//!
//! # Guarantees
//! - One order per key: a retry — concurrent ones are refused 409
//!   `idempotency_key_in_use` — gets the order the first placed (same id, same
//!   lines), even across a crash at any step.
//! - No stock sold without an order: reservations whose order was never placed
//!   expire with their TTL.
//!
//! # Not guaranteed
//! - If the process stops between steps 1 and 2 and the client never retries, the
//!   stock stays held until the TTL.
//! - Step 4 is best effort: a cart replica that cannot be reached leaves the lines
//!   in the cart (logged); a retry that replays the order does not remove them.
//! - An order placed but confirmed only after its reservations expired (a stall
//!   longer than the TTL between steps 2 and 3) cannot take its stock back; it is
//!   logged as unfulfilled (`amazon_orders_unfulfilled_total`).

use std::collections::HashSet;
use std::sync::Arc;

use casebook_kit::idempotency::{Fingerprint, IdempotencyKey, MAX_KEY_LEN};
use parking_lot::Mutex;

use super::store::{Order, OrderError, OrderLine, OrderStore};
use crate::cart::{CartLine, CartLines};
use crate::inventory::model::{
    InventoryError, KeyScope, Keyed, Line, Replayable, ReserveOutcome, ReserveRequest, Sku, TtlRule,
};
use crate::inventory::store::InventoryStore;

/// What a checkout accepts.
#[derive(Debug, Clone, Copy)]
pub struct CheckoutLimits {
    pub max_lines: usize,
    pub max_line_qty: u32,
    /// How long reserved stock waits for its order.
    pub hold: std::time::Duration,
}

/// Why a checkout did not place an order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckoutError {
    #[error("a checkout with this Idempotency-Key is still being processed")]
    KeyInUse,
    #[error("the Idempotency-Key is too long for this user: at most {0} characters")]
    KeyTooLong(usize),
    #[error("the cart is empty")]
    CartEmpty,
    #[error("the cart holds {lines} lines; a checkout takes at most {max}")]
    TooManyLines { lines: usize, max: usize },
    #[error("cart line `{sku}` has qty {qty}; at most {max} per line")]
    LineTooLarge { sku: String, qty: u32, max: u32 },
    #[error("cart line `{sku}` names no valid sku: {reason}")]
    BadLine { sku: String, reason: String },
    #[error("{0}")]
    CartUnavailable(String),
    #[error("{requested} of `{sku}` requested, {available} available")]
    Insufficient {
        sku: String,
        requested: u64,
        available: u64,
    },
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error(transparent)]
    Orders(#[from] OrderError),
}

/// The checkout coordinator.
#[derive(Debug)]
pub struct Checkout {
    inventory: Arc<dyn InventoryStore>,
    orders: Arc<dyn OrderStore>,
    cart: Arc<dyn CartLines>,
    limits: CheckoutLimits,
    in_flight: Mutex<HashSet<(String, String)>>,
}

/// Frees a checkout key when its attempt ends, however it ends.
struct InFlight<'a> {
    set: &'a Mutex<HashSet<(String, String)>>,
    id: (String, String),
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.set.lock().remove(&self.id);
    }
}

impl Checkout {
    pub fn new(
        inventory: Arc<dyn InventoryStore>,
        orders: Arc<dyn OrderStore>,
        cart: Arc<dyn CartLines>,
        limits: CheckoutLimits,
    ) -> Self {
        Self {
            inventory,
            orders,
            cart,
            limits,
            in_flight: Mutex::new(HashSet::new()),
        }
    }

    /// Checks out `user`'s cart under `key`.
    pub async fn checkout(
        &self,
        user: &str,
        key: &IdempotencyKey,
    ) -> Result<Replayable<Order>, CheckoutError> {
        let scoped = format!("{user}:{}", key.as_str());
        if scoped.len() > MAX_KEY_LEN {
            return Err(CheckoutError::KeyTooLong(MAX_KEY_LEN - user.len() - 1));
        }
        let id = (user.to_owned(), key.as_str().to_owned());
        if !self.in_flight.lock().insert(id.clone()) {
            return Err(CheckoutError::KeyInUse);
        }
        let _in_flight = InFlight {
            set: &self.in_flight,
            id,
        };
        if let Some(order) = self.orders.placed_by(user, key.as_str()).await? {
            return Ok(Replayable {
                value: order,
                replayed: true,
            });
        }
        let cart_lines = self
            .cart
            .lines(user)
            .await
            .map_err(|e| CheckoutError::CartUnavailable(e.to_string()))?;
        let lines = self.check_lines(&cart_lines)?;
        let reserved = self
            .inventory
            .reserve(ReserveRequest {
                key: Keyed {
                    scope: KeyScope::Checkout,
                    key: IdempotencyKey::parse(&scoped)
                        .map_err(|_| CheckoutError::KeyTooLong(MAX_KEY_LEN - user.len() - 1))?,
                    // The key is the user's own; the request has no body to differ.
                    fingerprint: Fingerprint::of(&[b"checkout", user.as_bytes()]),
                },
                lines,
                ttl: self.limits.hold,
            })
            .await?;
        let made = match reserved.value {
            ReserveOutcome::Reserved(made) => made,
            ReserveOutcome::Insufficient {
                sku,
                requested,
                available,
            } => {
                return Err(CheckoutError::Insufficient {
                    sku: sku.to_string(),
                    requested,
                    available,
                });
            }
        };
        let order = Order {
            id: format!("ord_{}", made[0].id.0),
            user: user.to_owned(),
            lines: made
                .iter()
                .map(|r| OrderLine {
                    sku: r.sku.to_string(),
                    qty: r.qty,
                    reservation_id: r.id.to_string(),
                })
                .collect(),
            created_at_ms: made[0].created_at_ms,
        };
        let placed = self.orders.place(order, key.as_str()).await?;
        self.confirm(&placed.value).await;
        if !placed.replayed {
            let bought: Vec<CartLine> = placed
                .value
                .lines
                .iter()
                .map(|l| CartLine {
                    sku: l.sku.clone(),
                    qty: l.qty,
                })
                .collect();
            if let Err(error) = self.cart.remove_bought(user, &bought).await {
                tracing::warn!(%error, user, order = placed.value.id, "bought lines stay in the cart");
            }
        }
        Ok(placed)
    }

    /// The cart's lines as reservation lines: at least one, at most `max_lines`,
    /// each within `max_line_qty`; lines of one SKU merged.
    fn check_lines(&self, cart: &[CartLine]) -> Result<Vec<Line>, CheckoutError> {
        let mut lines: Vec<Line> = Vec::new();
        for line in cart.iter().filter(|l| l.qty > 0) {
            let sku = Sku::parse(&line.sku).map_err(|reason| CheckoutError::BadLine {
                sku: line.sku.clone(),
                reason,
            })?;
            match lines.iter_mut().find(|l| l.sku == sku) {
                Some(existing) => existing.qty = existing.qty.saturating_add(line.qty),
                None => lines.push(Line { sku, qty: line.qty }),
            }
        }
        if lines.is_empty() {
            return Err(CheckoutError::CartEmpty);
        }
        if lines.len() > self.limits.max_lines {
            return Err(CheckoutError::TooManyLines {
                lines: lines.len(),
                max: self.limits.max_lines,
            });
        }
        if let Some(line) = lines.iter().find(|l| l.qty > self.limits.max_line_qty) {
            return Err(CheckoutError::LineTooLarge {
                sku: line.sku.to_string(),
                qty: line.qty,
                max: self.limits.max_line_qty,
            });
        }
        Ok(lines)
    }

    /// Step 3: confirms an order's reservations (a no-op if they are); leaves it
    /// for the next reconcile if the inventory cannot answer now.
    pub async fn confirm(&self, order: &Order) {
        let ids: Vec<_> = order
            .lines
            .iter()
            .filter_map(|l| crate::inventory::model::ReservationId::parse(&l.reservation_id))
            .collect();
        match self
            .inventory
            .confirm(&ids, Some(&order.id), TtlRule::HonourCommitted)
            .await
        {
            Ok(_) => self.orders.mark_confirmed(&order.id),
            Err(InventoryError::Conflict { id, state }) => {
                tracing::error!(
                    order = order.id,
                    reservation = %id,
                    state = state.as_str(),
                    "an order's reservation ended before its confirm: the order is unfulfilled"
                );
                metrics::counter!("amazon_orders_unfulfilled_total").increment(1);
                self.orders.mark_confirmed(&order.id);
            }
            Err(error) => {
                tracing::warn!(%error, order = order.id, "order confirm deferred to the next reconcile");
            }
        }
    }

    /// Forward recovery: confirms every order not yet known confirmed. Returns how
    /// many were looked at.
    pub async fn reconcile(&self) -> usize {
        let pending = self.orders.unconfirmed();
        for order in &pending {
            self.confirm(order).await;
        }
        pending.len()
    }
}
