//! A recorded history of inventory operations as clients saw them: what each
//! client asked, what it was answered, and when (a logical clock shared by all
//! clients, so "returned before invoked" is real-time order).
//!
//! One [`Event`] is one operation from its first attempt to the answer the
//! client finally got: a request retried because its answer was lost (a crash,
//! a dropped connection) stays one event. A request *repeated* with the same
//! idempotency key after it was answered is a new event.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::inventory::model::ReservationState;

/// What a client asked.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    /// `PUT /v1/inventory/{sku}`.
    SetStock { sku: String, available: u64 },
    /// `GET /v1/inventory/{sku}`.
    Stock { sku: String },
    /// `POST /v1/reservations` with an idempotency key.
    Reserve { key: String, sku: String, qty: u32 },
    /// `POST /v1/reservations/{id}/confirm`.
    Confirm { sku: String, id: String },
    /// `POST /v1/reservations/{id}/release`.
    Release { sku: String, id: String },
}

impl Op {
    /// The SKU the operation concerns.
    pub fn sku(&self) -> &str {
        match self {
            Op::SetStock { sku, .. }
            | Op::Stock { sku }
            | Op::Reserve { sku, .. }
            | Op::Confirm { sku, .. }
            | Op::Release { sku, .. } => sku,
        }
    }
}

/// What the client was answered.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Answer {
    /// A stock level (to `SetStock` and `Stock`). Signed, so a negative count a
    /// broken server might send is seen, not lost in parsing.
    Level {
        available: i64,
        reserved: i64,
        confirmed: i64,
    },
    /// 201: the reservation made (or replayed).
    Reserved { id: String },
    /// 409 `insufficient_stock`.
    Insufficient,
    /// 200 to a confirm or release: the reservation's state after it.
    State(ReservationState),
    /// 409 to a confirm or release: the state that refused it.
    Conflict(ReservationState),
}

/// One operation, invoked and answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub client: u32,
    pub op: Op,
    pub answer: Answer,
    /// Logical time of the first attempt.
    pub invoked: u64,
    /// Logical time the answer arrived (after `invoked`).
    pub returned: u64,
}

/// Collects events from concurrent clients.
#[derive(Debug, Default)]
pub struct Recorder {
    clock: AtomicU64,
    events: Mutex<Vec<Event>>,
}

impl Recorder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Call before the first attempt; pass the result to [`record`](Self::record).
    pub fn invoke(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst)
    }

    /// Records an answered operation.
    pub fn record(&self, client: u32, op: Op, answer: Answer, invoked: u64) {
        let returned = self.clock.fetch_add(1, Ordering::SeqCst);
        self.events.lock().push(Event {
            client,
            op,
            answer,
            invoked,
            returned,
        });
    }

    /// The events recorded so far, by invocation time.
    pub fn events(&self) -> Vec<Event> {
        let mut events = self.events.lock().clone();
        events.sort_by_key(|e| e.invoked);
        events
    }
}
