//! The inventory's vocabulary: SKUs, stock levels, reservations and what a
//! reservation request decides. Shared by every store implementation and the HTTP
//! layer; nothing here knows how it is stored.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use casebook_kit::idempotency::{Fingerprint, IdempotencyKey};
use serde::{Deserialize, Serialize};

/// The longest SKU or user id accepted.
pub const MAX_NAME_LEN: usize = 64;

/// Checks an identifier (a SKU, a user): 1..=64 characters of `A-Z a-z 0-9 . _ : -`,
/// so it is safe in a URL path, a log line and a file name.
pub fn check_name(field: &str, raw: &str) -> Result<(), String> {
    if raw.is_empty() || raw.len() > MAX_NAME_LEN {
        return Err(format!(
            "{field} must be 1 to {MAX_NAME_LEN} characters, got {}",
            raw.len()
        ));
    }
    if let Some(bad) = raw
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
    {
        return Err(format!(
            "{field} may hold only letters, digits and . _ : - (found {bad:?})"
        ));
    }
    Ok(())
}

/// A stock-keeping unit's id, validated by [`check_name`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sku(Arc<str>);

impl Sku {
    pub fn parse(raw: &str) -> Result<Self, String> {
        check_name("sku", raw)?;
        Ok(Self(raw.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A reservation's id: a number, shown as `res_<n>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReservationId(pub u64);

impl ReservationId {
    const PREFIX: &'static str = "res_";

    /// Reads `res_<n>`; anything else names no reservation.
    pub fn parse(raw: &str) -> Option<Self> {
        let digits = raw.strip_prefix(Self::PREFIX)?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok().map(Self)
    }
}

impl fmt::Display for ReservationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", Self::PREFIX, self.0)
    }
}

impl Serialize for ReservationId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Where a reservation is in its life. Only `Active` holds stock as reserved;
/// `Confirmed` is sold; `Released` and `Expired` gave their stock back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReservationState {
    Active,
    Confirmed,
    Released,
    Expired,
}

impl ReservationState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Confirmed => "confirmed",
            Self::Released => "released",
            Self::Expired => "expired",
        }
    }

    pub fn is_terminal(self) -> bool {
        self != Self::Active
    }
}

/// A SKU's counters. `available + reserved + confirmed` changes only when the stock
/// is set; every other operation moves units between the three.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StockLevel {
    pub sku: String,
    pub available: u64,
    pub reserved: u64,
    pub confirmed: u64,
}

/// A reservation as a store reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub id: ReservationId,
    pub sku: Sku,
    pub qty: u32,
    pub state: ReservationState,
    /// Wall-clock milliseconds.
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    /// The order it was confirmed for, if checkout confirmed it.
    pub order_id: Option<String>,
}

/// One line of a reservation request: `qty` units of `sku`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub sku: Sku,
    pub qty: u32,
}

/// Which requests an idempotency key belongs to: a key used for a reservation and
/// the same key used for a checkout are different keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyScope {
    /// `POST /v1/reservations`.
    Reservation,
    /// The reservation step of `POST /v1/checkout/{user}`.
    Checkout,
}

/// The idempotency key of a request and the fingerprint of what it asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyed {
    pub scope: KeyScope,
    pub key: IdempotencyKey,
    pub fingerprint: Fingerprint,
}

/// Reserve every line, all or none, under one idempotency key.
#[derive(Debug, Clone)]
pub struct ReserveRequest {
    pub key: Keyed,
    pub lines: Vec<Line>,
    pub ttl: Duration,
}

/// What a reservation request decided: the first answer for its key, replayed to
/// every retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveOutcome {
    /// Every line reserved, in request order (as they were when created).
    Reserved(Vec<Reservation>),
    /// Nothing reserved: this line's SKU had too little available.
    Insufficient {
        sku: Sku,
        requested: u64,
        available: u64,
    },
}

/// An answer and whether it is a replay of an earlier one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayable<T> {
    pub value: T,
    pub replayed: bool,
}

/// What confirming does with a reservation whose TTL has passed but which no sweep
/// has expired yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtlRule {
    /// Expire it (recorded) and refuse the confirm: the API's rule.
    Enforce,
    /// Confirm it while it is still active: checkout's rule for reservations its
    /// order already committed to (forward recovery must not lose the stock).
    HonourCommitted,
}

/// Why a store refused or failed a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InventoryError {
    #[error("unknown sku `{0}`")]
    UnknownSku(Sku),
    #[error("unknown reservation `{0}`")]
    UnknownReservation(ReservationId),
    /// A confirm of a released or expired reservation, or a release of a confirmed one.
    #[error("reservation `{id}` is {}", state.as_str())]
    Conflict {
        id: ReservationId,
        state: ReservationState,
    },
    #[error("this Idempotency-Key was used with a different request")]
    KeyReused,
    #[error("a request with this Idempotency-Key is still being processed")]
    KeyInUse,
    /// A bound was reached; nothing was changed.
    #[error("the {0} table is full")]
    Full(&'static str),
    /// The store cannot record decisions (fail-closed: nothing unrecorded was applied).
    #[error("inventory storage is unavailable: {0}")]
    Unavailable(String),
}
