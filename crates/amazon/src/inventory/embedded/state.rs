//! The in-memory state one lock shard guards, and the one function that changes
//! it: [`Shard::apply`]. Live decisions and recovery both go through `apply`, so
//! the state after a replay is the state that answered before the crash.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use casebook_kit::wal::{AppendAck, WalError};
use futures::FutureExt;
use futures::future::Shared;

use super::record::Effect;
use crate::inventory::model::{Reservation, ReservationId, ReservationState, Sku};

/// The durability of one queued record, awaited by its decider and by every later
/// reader of the state it changed.
#[derive(Clone)]
pub(crate) struct Ack(Shared<AppendAck>);

impl Ack {
    pub(crate) fn new(ack: AppendAck) -> Self {
        Self(ack.shared())
    }

    pub(crate) async fn durable(self) -> Result<u64, WalError> {
        self.0.await
    }

    /// `None` while the record is not yet durable.
    pub(crate) fn peek(&self) -> Option<&Result<u64, WalError>> {
        self.0.peek()
    }
}

impl fmt::Debug for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.peek() {
            None => f.write_str("Ack(pending)"),
            Some(Ok(seq)) => write!(f, "Ack(durable at {seq})"),
            Some(Err(e)) => write!(f, "Ack(failed: {e})"),
        }
    }
}

/// A SKU's counters and the last record that changed them.
#[derive(Debug, Clone, Default)]
pub(crate) struct SkuState {
    pub available: u64,
    pub reserved: u64,
    pub confirmed: u64,
    /// Readers wait for it before answering, so nothing they report can be lost.
    pub last_ack: Option<Ack>,
}

/// A reservation as held in memory.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    pub sku: Sku,
    pub qty: u32,
    pub created_ms: u64,
    pub expires_ms: u64,
    pub state: ReservationState,
    pub order: Option<Arc<str>>,
    /// When it left `Active` (retention of terminal reservations counts from here).
    pub ended_ms: u64,
}

/// What one lock shard guards: some SKUs, their reservations, and the active ones
/// ordered by expiry.
#[derive(Debug, Default)]
pub(crate) struct Shard {
    pub skus: HashMap<Sku, SkuState>,
    pub held: HashMap<u64, Held>,
    /// `(expires_ms, id)` of every active reservation.
    pub due: BTreeSet<(u64, u64)>,
}

impl Shard {
    /// The reservation as the API shows it.
    pub fn view(&self, id: ReservationId) -> Option<Reservation> {
        self.held.get(&id.0).map(|held| Reservation {
            id,
            sku: held.sku.clone(),
            qty: held.qty,
            state: held.state,
            created_at_ms: held.created_ms,
            expires_at_ms: held.expires_ms,
            order_id: held.order.as_deref().map(str::to_owned),
        })
    }

    /// Applies one effect decided at `at_ms`. An effect that does not fit the state
    /// (a reservation beyond the available units, a confirm of a reservation that
    /// is not active) is refused unchanged: live decisions never produce one, so on
    /// replay it means a damaged log.
    pub fn apply(&mut self, effect: &Effect, at_ms: u64) -> Result<(), String> {
        match effect {
            Effect::SetStock { sku, available } => {
                self.skus.entry(sku.clone()).or_default().available = *available;
            }
            Effect::Reserve {
                id,
                sku,
                qty,
                expires_ms,
            } => {
                if self.held.contains_key(&id.0) {
                    return Err(format!("{id} reserved twice"));
                }
                let state = self
                    .skus
                    .get_mut(sku)
                    .ok_or_else(|| format!("{id}: unknown sku {sku}"))?;
                let qty64 = u64::from(*qty);
                if state.available < qty64 {
                    return Err(format!(
                        "{id}: {qty} of {sku} reserved with {} available",
                        state.available
                    ));
                }
                state.available -= qty64;
                state.reserved += qty64;
                self.held.insert(
                    id.0,
                    Held {
                        sku: sku.clone(),
                        qty: *qty,
                        created_ms: at_ms,
                        expires_ms: *expires_ms,
                        state: ReservationState::Active,
                        order: None,
                        ended_ms: 0,
                    },
                );
                self.due.insert((*expires_ms, id.0));
            }
            Effect::Confirm { id, order } => {
                let (sku, qty) = self.end(*id, ReservationState::Confirmed, at_ms)?;
                if let Some(held) = self.held.get_mut(&id.0) {
                    held.order = order.as_deref().map(Arc::from);
                }
                let state = self.skus.get_mut(&sku).expect("checked by end");
                state.reserved -= qty;
                state.confirmed += qty;
            }
            Effect::Release { id } | Effect::Expire { id } => {
                let to = if matches!(effect, Effect::Release { .. }) {
                    ReservationState::Released
                } else {
                    ReservationState::Expired
                };
                let (sku, qty) = self.end(*id, to, at_ms)?;
                let state = self.skus.get_mut(&sku).expect("checked by end");
                state.reserved -= qty;
                state.available += qty;
            }
        }
        Ok(())
    }

    /// Moves an active reservation to `to`, off the expiry index; returns its SKU
    /// and quantity.
    fn end(
        &mut self,
        id: ReservationId,
        to: ReservationState,
        at_ms: u64,
    ) -> Result<(Sku, u64), String> {
        let held = self
            .held
            .get_mut(&id.0)
            .ok_or_else(|| format!("{id}: unknown reservation"))?;
        if held.state != ReservationState::Active {
            return Err(format!(
                "{id}: {} while {}",
                to.as_str(),
                held.state.as_str()
            ));
        }
        let counters = self
            .skus
            .get(&held.sku)
            .ok_or_else(|| format!("{id}: its sku {} is unknown", held.sku))?;
        if counters.reserved < u64::from(held.qty) {
            return Err(format!("{id}: more held than {} has reserved", held.sku));
        }
        self.due.remove(&(held.expires_ms, id.0));
        held.state = to;
        held.ended_ms = at_ms;
        Ok((held.sku.clone(), u64::from(held.qty)))
    }

    /// Active reservations due at `now_ms`, earliest first, at most `limit`.
    pub fn due_at(&self, now_ms: u64, limit: usize) -> Vec<ReservationId> {
        self.due
            .iter()
            .take_while(|(expires, _)| *expires <= now_ms)
            .take(limit)
            .map(|&(_, id)| ReservationId(id))
            .collect()
    }

    /// Forgets terminal reservations that ended at or before `cutoff_ms`; returns
    /// their ids.
    pub fn forget_ended(&mut self, cutoff_ms: u64) -> Vec<u64> {
        let gone: Vec<u64> = self
            .held
            .iter()
            .filter(|(_, h)| h.state.is_terminal() && h.ended_ms <= cutoff_ms)
            .map(|(&id, _)| id)
            .collect();
        for id in &gone {
            self.held.remove(id);
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sku(s: &str) -> Sku {
        Sku::parse(s).unwrap()
    }

    #[test]
    fn every_effect_moves_units_and_the_total_stays() {
        let mut shard = Shard::default();
        let tea = sku("tea");
        let total = |s: &Shard| {
            let st = &s.skus[&tea];
            st.available + st.reserved + st.confirmed
        };
        shard
            .apply(
                &Effect::SetStock {
                    sku: tea.clone(),
                    available: 10,
                },
                0,
            )
            .unwrap();
        for id in 1..=3 {
            shard
                .apply(
                    &Effect::Reserve {
                        id: ReservationId(id),
                        sku: tea.clone(),
                        qty: 3,
                        expires_ms: 100 * id,
                    },
                    5,
                )
                .unwrap();
        }
        assert_eq!(total(&shard), 10);
        assert!(
            shard
                .apply(
                    &Effect::Reserve {
                        id: ReservationId(4),
                        sku: tea.clone(),
                        qty: 2,
                        expires_ms: 1,
                    },
                    5
                )
                .is_err(),
            "1 available, 2 asked: refused"
        );
        shard
            .apply(
                &Effect::Confirm {
                    id: ReservationId(1),
                    order: Some("ord_1".into()),
                },
                6,
            )
            .unwrap();
        shard
            .apply(
                &Effect::Release {
                    id: ReservationId(2),
                },
                7,
            )
            .unwrap();
        assert_eq!(shard.due_at(1_000, 10), vec![ReservationId(3)]);
        shard
            .apply(
                &Effect::Expire {
                    id: ReservationId(3),
                },
                300,
            )
            .unwrap();
        let st = &shard.skus[&tea];
        assert_eq!((st.available, st.reserved, st.confirmed), (7, 0, 3));
        assert!(shard.due.is_empty());
        assert!(
            shard
                .apply(
                    &Effect::Confirm {
                        id: ReservationId(2),
                        order: None
                    },
                    8
                )
                .is_err(),
            "a released reservation is never confirmed"
        );
        assert_eq!(
            shard.view(ReservationId(1)).unwrap().order_id.as_deref(),
            Some("ord_1")
        );
        let mut forgotten = shard.forget_ended(7);
        forgotten.sort_unstable();
        assert_eq!(forgotten, vec![1, 2]);
        assert_eq!(shard.held.len(), 1);
    }
}
