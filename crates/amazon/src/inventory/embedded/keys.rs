//! The idempotency keys of reservation requests, in memory; their durable form is
//! the decision record each key was written in (see [`super::record`]).
//!
//! The kit's `IdempotencyStore` keeps the same rules (Stripe's: one execution per
//! key, a different request under the key is refused, a key in flight is refused,
//! retention on the clock) but writes each completed response as a record of *its
//! own* log — a second write, not atomic with the reservation. Here the key rides
//! in the reservation's record, so this table is only the index over those records:
//! the rules are the kit's, restated for a key whose durability is its decision's.
//!
//! A key's life: `begin` claims it (in flight) → the decision is queued and the
//! claim becomes `Decided` with the record's [`Ack`] (still answered
//! `KeyInUse` until that record is durable) → replayed until `retention` after
//! the decision. A claim dropped before deciding frees the key.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use casebook_kit::idempotency::{Fingerprint, IdempotencyKey};
use casebook_kit::locks::ShardedLocks;

use super::state::Ack;
use crate::inventory::model::{InventoryError, KeyScope, Keyed, ReserveOutcome};

type KeyId = (KeyScope, IdempotencyKey);

#[derive(Debug)]
enum Entry {
    InFlight {
        fingerprint: Fingerprint,
        token: u64,
    },
    Decided {
        fingerprint: Fingerprint,
        outcome: Arc<ReserveOutcome>,
        at_ms: u64,
        /// `None` once known durable (restored from disk).
        ack: Option<Ack>,
    },
}

/// A decided key as snapshots store it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecidedKey {
    pub scope: KeyScope,
    pub key: IdempotencyKey,
    pub fingerprint: Fingerprint,
    pub at_ms: u64,
    pub outcome: Arc<ReserveOutcome>,
}

/// The key table.
#[derive(Debug)]
pub(crate) struct Keys {
    table: ShardedLocks<HashMap<KeyId, Entry>>,
    count: AtomicUsize,
    max: usize,
    retention_ms: u64,
    next_token: AtomicU64,
}

/// What [`Keys::begin`] decided.
#[derive(Debug)]
pub(crate) enum Begin {
    Execute(KeyClaim),
    Replay(Arc<ReserveOutcome>),
}

impl Keys {
    pub fn new(shards: usize, max: usize, retention_ms: u64) -> Self {
        Self {
            table: ShardedLocks::new(shards).expect("shard count validated by the config"),
            count: AtomicUsize::new(0),
            max,
            retention_ms,
            next_token: AtomicU64::new(1),
        }
    }

    fn expired(&self, at_ms: u64, now_ms: u64) -> bool {
        now_ms >= at_ms.saturating_add(self.retention_ms)
    }

    /// Claims `keyed` for execution, or says why not.
    pub fn begin(self: &Arc<Self>, keyed: &Keyed, now_ms: u64) -> Result<Begin, InventoryError> {
        let id = (keyed.scope, keyed.key.clone());
        let mut table = self.table.lock(&id);
        match table.get(&id) {
            Some(Entry::InFlight { fingerprint, .. }) => {
                return Err(if *fingerprint == keyed.fingerprint {
                    InventoryError::KeyInUse
                } else {
                    InventoryError::KeyReused
                });
            }
            Some(Entry::Decided {
                fingerprint,
                outcome,
                at_ms,
                ack,
            }) if !self.expired(*at_ms, now_ms) => {
                if *fingerprint != keyed.fingerprint {
                    return Err(InventoryError::KeyReused);
                }
                return match ack.as_ref().map(Ack::peek) {
                    None | Some(Some(Ok(_))) => Ok(Begin::Replay(outcome.clone())),
                    Some(None) => Err(InventoryError::KeyInUse),
                    Some(Some(Err(e))) => Err(InventoryError::Unavailable(e.to_string())),
                };
            }
            Some(Entry::Decided { .. }) => {}
            None => {
                if self.count.load(Ordering::Relaxed) >= self.max {
                    return Err(InventoryError::Full("idempotency key"));
                }
                self.count.fetch_add(1, Ordering::Relaxed);
            }
        }
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        table.insert(
            id.clone(),
            Entry::InFlight {
                fingerprint: keyed.fingerprint,
                token,
            },
        );
        Ok(Begin::Execute(KeyClaim {
            keys: self.clone(),
            id,
            fingerprint: keyed.fingerprint,
            token,
            settled: false,
        }))
    }

    /// Puts back a key read from disk (snapshot or log): durable already.
    pub fn restore(&self, decided: DecidedKey) {
        let id = (decided.scope, decided.key);
        let entry = Entry::Decided {
            fingerprint: decided.fingerprint,
            outcome: decided.outcome,
            at_ms: decided.at_ms,
            ack: None,
        };
        if self.table.lock(&id).insert(id.clone(), entry).is_none() {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Forgets keys decided `retention` ago or earlier; returns how many.
    pub fn purge(&self, now_ms: u64) -> usize {
        let mut purged = 0;
        for index in 0..self.table.shard_count() {
            let mut table = self.table.lock_shard(index).expect("index in range");
            let before = table.len();
            table.retain(|_, entry| match entry {
                Entry::InFlight { .. } => true,
                Entry::Decided { at_ms, .. } => !self.expired(*at_ms, now_ms),
            });
            purged += before - table.len();
        }
        self.count.fetch_sub(purged, Ordering::Relaxed);
        purged
    }

    /// Every decided key, for a snapshot (the caller holds decisions still).
    pub fn decided(&self) -> Vec<DecidedKey> {
        let mut out = Vec::new();
        for index in 0..self.table.shard_count() {
            let table = self.table.lock_shard(index).expect("index in range");
            for ((scope, key), entry) in table.iter() {
                if let Entry::Decided {
                    fingerprint,
                    outcome,
                    at_ms,
                    ..
                } = entry
                {
                    out.push(DecidedKey {
                        scope: *scope,
                        key: key.clone(),
                        fingerprint: *fingerprint,
                        at_ms: *at_ms,
                        outcome: outcome.clone(),
                    });
                }
            }
        }
        out
    }

    /// Keys held (in flight or decided, expired ones not yet purged).
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
}

/// The right to decide a key. Dropping it undecided frees the key.
#[derive(Debug)]
pub(crate) struct KeyClaim {
    keys: Arc<Keys>,
    id: KeyId,
    fingerprint: Fingerprint,
    token: u64,
    settled: bool,
}

impl KeyClaim {
    /// Binds the key to its decision, whose record `ack` reports on. Called while
    /// decisions are held back for a snapshot, so a snapshot never holds a
    /// reservation without its key.
    pub fn decide(mut self, outcome: Arc<ReserveOutcome>, at_ms: u64, ack: Ack) {
        let mut table = self.keys.table.lock(&self.id);
        if matches!(table.get(&self.id), Some(Entry::InFlight { token, .. }) if *token == self.token)
        {
            table.insert(
                self.id.clone(),
                Entry::Decided {
                    fingerprint: self.fingerprint,
                    outcome,
                    at_ms,
                    ack: Some(ack),
                },
            );
        }
        self.settled = true;
    }
}

impl Drop for KeyClaim {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let mut table = self.keys.table.lock(&self.id);
        if matches!(table.get(&self.id), Some(Entry::InFlight { token, .. }) if *token == self.token)
        {
            table.remove(&self.id);
            self.keys.count.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyed(key: &str, fingerprint: u128) -> Keyed {
        Keyed {
            scope: KeyScope::Reservation,
            key: IdempotencyKey::parse(key).unwrap(),
            fingerprint: Fingerprint(fingerprint),
        }
    }

    #[test]
    fn a_key_in_flight_is_refused_and_a_dropped_claim_frees_it() {
        let keys = Arc::new(Keys::new(4, 10, 1_000));
        let Begin::Execute(claim) = keys.begin(&keyed("k", 1), 0).unwrap() else {
            panic!("first use executes")
        };
        assert_eq!(
            keys.begin(&keyed("k", 1), 0).unwrap_err(),
            InventoryError::KeyInUse
        );
        assert_eq!(
            keys.begin(&keyed("k", 2), 0).unwrap_err(),
            InventoryError::KeyReused
        );
        drop(claim);
        assert_eq!(keys.len(), 0);
        assert!(matches!(
            keys.begin(&keyed("k", 2), 0).unwrap(),
            Begin::Execute(_)
        ));
    }

    #[test]
    fn a_restored_key_replays_until_the_retention_ends() {
        let keys = Arc::new(Keys::new(4, 10, 1_000));
        let outcome = Arc::new(ReserveOutcome::Insufficient {
            sku: crate::inventory::model::Sku::parse("tea").unwrap(),
            requested: 2,
            available: 1,
        });
        keys.restore(DecidedKey {
            scope: KeyScope::Reservation,
            key: IdempotencyKey::parse("k").unwrap(),
            fingerprint: Fingerprint(1),
            at_ms: 100,
            outcome: outcome.clone(),
        });
        match keys.begin(&keyed("k", 1), 1_099).unwrap() {
            Begin::Replay(replayed) => assert_eq!(replayed, outcome),
            Begin::Execute(_) => panic!("within the retention: replayed"),
        }
        assert_eq!(
            keys.begin(&keyed("k", 9), 1_099).unwrap_err(),
            InventoryError::KeyReused
        );
        assert!(matches!(
            keys.begin(&keyed("k", 9), 1_100).unwrap(),
            Begin::Execute(_)
        ));
        assert_eq!(keys.purge(5_000), 0, "the new claim is in flight, kept");
    }
}
