//! The per-SKU linearizability check: each SKU's events, in real-time order, fed
//! to `stateright`'s `LinearizabilityTester` against [`SkuSpec`], the inventory's
//! sequential specification (idempotency keys included: a repeated key must
//! answer what its first execution answered, wherever it is linearized).
//!
//! Operations on different SKUs touch disjoint state, so the history is
//! linearizable if every SKU's is (linearizability is local), and a SKU's history
//! is cut where no operation is in flight (see [`check_one`]) — which keeps each
//! search small. The search itself is stateright's: depth-first over the orders
//! real time allows, without memoising states, so a long stretch of heavily
//! concurrent operations on one SKU takes exponential time; the workloads checked
//! here spread clients over enough SKUs that a few are in flight on one at a time.
//!
//! Expiry is not modelled: runs checked here use TTLs longer than the run.

use std::collections::{BTreeMap, HashMap};

use stateright::semantics::{ConsistencyTester, LinearizabilityTester, SequentialSpec};

use super::history::{Answer, Event, Op};
use crate::inventory::model::ReservationState;

/// The checker thread's stack: stateright's search recurses per operation.
const SEARCH_STACK_BYTES: usize = 256 << 20;

/// One SKU's inventory, sequentially.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SkuSpec {
    available: i64,
    reserved: i64,
    confirmed: i64,
    /// id → (qty, state).
    reservations: BTreeMap<String, (u32, ReservationState)>,
    /// key → its first answer.
    keys: BTreeMap<String, Answer>,
}

impl SkuSpec {
    fn level(&self) -> Answer {
        Answer::Level {
            available: self.available,
            reserved: self.reserved,
            confirmed: self.confirmed,
        }
    }

    /// Moves an active reservation to `to`; anything else answers as is.
    fn end(&mut self, id: &str, to: ReservationState) -> Option<Answer> {
        let (qty, state) = self.reservations.get_mut(id)?;
        let qty = i64::from(*qty);
        Some(match (*state, to) {
            (ReservationState::Active, ReservationState::Confirmed) => {
                *state = to;
                self.reserved -= qty;
                self.confirmed += qty;
                Answer::State(to)
            }
            (ReservationState::Active, _) => {
                *state = to;
                self.reserved -= qty;
                self.available += qty;
                Answer::State(to)
            }
            (ReservationState::Confirmed, ReservationState::Confirmed) => Answer::State(*state),
            (ReservationState::Confirmed, _) => Answer::Conflict(*state),
            (_, ReservationState::Confirmed) => Answer::Conflict(*state),
            (current, _) => Answer::State(current),
        })
    }
}

impl SequentialSpec for SkuSpec {
    type Op = Op;
    type Ret = Answer;

    fn invoke(&mut self, op: &Op) -> Answer {
        match op {
            Op::SetStock { available, .. } => {
                self.available = *available as i64;
                self.level()
            }
            Op::Stock { .. } => self.level(),
            Op::Reserve { key, qty, .. } => {
                if let Some(answer) = self.keys.get(key) {
                    return answer.clone();
                }
                // Only used for operations never answered; their id is unknown.
                let answer = if self.available >= i64::from(*qty) {
                    Answer::Reserved {
                        id: format!("unanswered:{key}"),
                    }
                } else {
                    Answer::Insufficient
                };
                self.is_valid_step(op, &answer);
                answer
            }
            Op::Confirm { id, .. } => self
                .end(id, ReservationState::Confirmed)
                .unwrap_or(Answer::Insufficient),
            Op::Release { id, .. } => self
                .end(id, ReservationState::Released)
                .unwrap_or(Answer::Insufficient),
        }
    }

    fn is_valid_step(&mut self, op: &Op, ret: &Answer) -> bool {
        match op {
            Op::Reserve { key, qty, .. } => {
                if let Some(answer) = self.keys.get(key) {
                    return answer == ret;
                }
                let qty64 = i64::from(*qty);
                let fits = match ret {
                    Answer::Reserved { id } => {
                        if self.available < qty64 || self.reservations.contains_key(id) {
                            return false;
                        }
                        self.available -= qty64;
                        self.reserved += qty64;
                        self.reservations
                            .insert(id.clone(), (*qty, ReservationState::Active));
                        true
                    }
                    Answer::Insufficient => self.available < qty64,
                    _ => false,
                };
                if fits {
                    self.keys.insert(key.clone(), ret.clone());
                }
                fits
            }
            // A confirm or release of a reservation not yet made cannot go here.
            Op::Confirm { id, .. } | Op::Release { id, .. }
                if !self.reservations.contains_key(id) =>
            {
                false
            }
            _ => &self.invoke(op) == ret,
        }
    }
}

/// Checks every SKU's history; the SKUs that are not linearizable, with their
/// event counts, or how many SKUs and events passed.
pub fn check_linearizable(events: &[Event]) -> Result<(usize, usize), Vec<String>> {
    let mut by_sku: HashMap<&str, Vec<&Event>> = HashMap::new();
    for event in events {
        by_sku.entry(event.op.sku()).or_default().push(event);
    }
    // stateright's search recurses once per operation of a segment: give it room.
    let mut failures = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("linearizability".into())
            .stack_size(SEARCH_STACK_BYTES)
            .spawn_scoped(scope, || {
                let mut failures = Vec::new();
                for (sku, events) in &by_sku {
                    if let Err(why) = check_one(events) {
                        failures.push(format!("{sku} ({} events): {why}", events.len()));
                    }
                }
                failures
            })
            .expect("spawn the checker's thread")
            .join()
            .expect("the checker does not panic")
    });
    if failures.is_empty() {
        Ok((by_sku.len(), events.len()))
    } else {
        failures.sort();
        Err(failures)
    }
}

/// Cuts a SKU's events (sorted by invocation) where none is in flight: every
/// event before the cut returned before any after it was invoked.
fn quiescent_segments<'e>(events: &[&'e Event]) -> Vec<Vec<&'e Event>> {
    let mut segments = Vec::new();
    let mut current: Vec<&Event> = Vec::new();
    let mut open_until = 0;
    for event in events {
        if !current.is_empty() && event.invoked > open_until {
            segments.push(std::mem::take(&mut current));
        }
        open_until = open_until.max(event.returned);
        current.push(event);
    }
    if !current.is_empty() {
        segments.push(current);
    }
    segments
}

/// Checks one SKU segment by segment. At a quiescent cut every operation before
/// it precedes every one after it, and the spec's state there is the same for
/// every valid order of what came before (the answers fix which reservations
/// exist, which keys answered what, and how each reservation ended), so each
/// segment is checked from the state the previous one's order reached — the
/// same verdict as one search over the whole history, in far fewer steps.
fn check_one(events: &[&Event]) -> Result<(), String> {
    let mut sorted = events.to_vec();
    sorted.sort_by_key(|e| e.invoked);
    let mut state = SkuSpec::default();
    for (n, segment) in quiescent_segments(&sorted).iter().enumerate() {
        state = check_segment(state, segment).map_err(|why| {
            format!(
                "segment {n} (events invoked {}..={}): {why}",
                segment[0].invoked,
                segment.last().map_or(0, |e| e.invoked)
            )
        })?;
    }
    Ok(())
}

fn check_segment(start: SkuSpec, events: &[&Event]) -> Result<SkuSpec, String> {
    // Invocations and returns in real-time order (one logical clock: all distinct).
    let mut steps: Vec<(u64, bool, usize)> = Vec::with_capacity(events.len() * 2);
    for (i, event) in events.iter().enumerate() {
        steps.push((event.invoked, false, i));
        steps.push((event.returned, true, i));
    }
    steps.sort_unstable();
    let mut tester = LinearizabilityTester::<u32, SkuSpec>::new(start.clone());
    for (_, is_return, i) in steps {
        let event = events[i];
        let step = if is_return {
            tester.on_return(event.client, event.answer.clone())
        } else {
            tester.on_invoke(event.client, event.op.clone())
        };
        step.map_err(|e| format!("malformed history: {e}"))?;
    }
    let order = tester
        .serialized_history()
        .ok_or_else(|| "no sequential order explains the answers".to_owned())?;
    let mut state = start;
    for (op, ret) in &order {
        let valid = state.is_valid_step(op, ret);
        debug_assert!(valid, "stateright's order replays");
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(client: u32, op: Op, answer: Answer, invoked: u64, returned: u64) -> Event {
        Event {
            client,
            op,
            answer,
            invoked,
            returned,
        }
    }

    fn set(n: u64) -> Op {
        Op::SetStock {
            sku: "tea".into(),
            available: n,
        }
    }

    fn level(a: i64, r: i64, c: i64) -> Answer {
        Answer::Level {
            available: a,
            reserved: r,
            confirmed: c,
        }
    }

    fn reserve(key: &str, qty: u32) -> Op {
        Op::Reserve {
            key: key.into(),
            sku: "tea".into(),
            qty,
        }
    }

    fn read() -> Op {
        Op::Stock { sku: "tea".into() }
    }

    fn reserved(id: &str) -> Answer {
        Answer::Reserved { id: id.into() }
    }

    #[test]
    fn concurrent_reservations_in_some_order_pass() {
        // Two overlapping reservations of 2 from 3: exactly one may win.
        let events = vec![
            event(0, set(3), level(3, 0, 0), 0, 1),
            event(1, reserve("a", 2), Answer::Insufficient, 2, 7),
            event(2, reserve("b", 2), reserved("res_1"), 3, 5),
            event(3, read(), level(1, 2, 0), 6, 8),
            event(1, reserve("a", 2), Answer::Insufficient, 9, 10),
        ];
        assert_eq!(check_linearizable(&events), Ok((1, 5)));
    }

    #[test]
    fn two_winners_from_too_little_stock_fail() {
        let events = vec![
            event(0, set(3), level(3, 0, 0), 0, 1),
            event(1, reserve("a", 2), reserved("res_1"), 2, 5),
            event(2, reserve("b", 2), reserved("res_2"), 3, 6),
        ];
        assert!(check_linearizable(&events).is_err());
    }

    #[test]
    fn a_stale_read_after_an_answered_reservation_fails() {
        let events = vec![
            event(0, set(3), level(3, 0, 0), 0, 1),
            event(1, reserve("a", 2), reserved("res_1"), 2, 3),
            event(2, read(), level(3, 0, 0), 4, 5),
        ];
        assert!(check_linearizable(&events).is_err());
        // The same read overlapping the reservation is fine.
        let events = vec![
            event(0, set(3), level(3, 0, 0), 0, 1),
            event(1, reserve("a", 2), reserved("res_1"), 2, 4),
            event(2, read(), level(3, 0, 0), 3, 5),
        ];
        assert!(check_linearizable(&events).is_ok());
    }

    #[test]
    fn a_key_answering_differently_fails_and_confirms_follow_their_reservation() {
        let events = vec![
            event(0, set(3), level(3, 0, 0), 0, 1),
            event(1, reserve("a", 1), reserved("res_1"), 2, 3),
            event(1, reserve("a", 1), reserved("res_2"), 4, 5),
        ];
        assert!(check_linearizable(&events).is_err());
        let events = vec![
            event(0, set(3), level(3, 0, 0), 0, 1),
            event(1, reserve("a", 1), reserved("res_1"), 2, 3),
            event(
                1,
                Op::Confirm {
                    sku: "tea".into(),
                    id: "res_1".into(),
                },
                Answer::State(ReservationState::Confirmed),
                4,
                5,
            ),
            event(
                2,
                Op::Release {
                    sku: "tea".into(),
                    id: "res_1".into(),
                },
                Answer::Conflict(ReservationState::Confirmed),
                6,
                7,
            ),
            event(2, read(), level(2, 0, 1), 8, 9),
        ];
        assert!(check_linearizable(&events).is_ok());
    }
}
