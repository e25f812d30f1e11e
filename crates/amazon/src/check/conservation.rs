//! The conservation checker: one pass over a history and the final state, O(n)
//! in events plus reservations.
//!
//! Checked, per SKU (stock set once, before its first reservation):
//! - **Conservation**: every level a client saw, and the final one, has
//!   `available + reserved + confirmed` equal to the stock set.
//! - **Never below zero**: no count a client saw is negative.
//! - **One effect per key**: every answer to one idempotency key is the same, and
//!   one key never names two requests.
//! - **Nothing acknowledged lost**: every reservation a client was given exists in
//!   the final state with its SKU and quantity, in the state its acknowledged
//!   transitions put it in (confirmed, released; else active — or expired when the
//!   run allows expiry).
//! - **No unknown effect**: the final `reserved` and `confirmed` of each SKU are
//!   exactly the sums over the reservations clients know in those states — so a
//!   second reservation made for a retried key, invisible to clients, is caught.
//!   (It needs every request answered in the end: clients retry until they are.)

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::history::{Answer, Event, Op};
use crate::inventory::model::ReservationState;

/// A reservation as fetched after the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalReservation {
    pub sku: String,
    pub qty: u32,
    pub state: ReservationState,
}

/// The state after the run (after any restart), fetched once quiet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalState {
    /// SKU → (available, reserved, confirmed).
    pub levels: HashMap<String, (i64, i64, i64)>,
    /// Reservation id → the reservation (`None`: the server does not know it).
    pub reservations: HashMap<String, Option<FinalReservation>>,
}

/// What the checker went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Report {
    pub events: usize,
    pub skus: usize,
    pub keys: usize,
    pub reservations: usize,
}

/// One level against the stock set and zero.
fn check_level(
    violations: &mut Vec<String>,
    total: &HashMap<&str, i64>,
    what: &str,
    sku: &str,
    (a, r, c): (i64, i64, i64),
) {
    if a < 0 || r < 0 || c < 0 {
        violations.push(format!(
            "{what}: {sku} has a negative count ({a}, {r}, {c})"
        ));
    }
    match total.get(sku) {
        Some(&t) if a + r + c != t => violations.push(format!(
            "{what}: {sku} has {a} available + {r} reserved + {c} confirmed != {t} stocked"
        )),
        Some(_) => {}
        None => violations.push(format!("{what}: {sku} was never stocked")),
    }
}

/// Checks `events` and `end` (see the module notes); every violation found, or
/// what was checked.
pub fn check_conservation(
    events: &[Event],
    end: &FinalState,
    allow_expiry: bool,
) -> Result<Report, Vec<String>> {
    let mut violations = Vec::new();
    let mut total: HashMap<&str, i64> = HashMap::new();
    for event in events {
        if let (
            Op::SetStock { sku, .. },
            Answer::Level {
                available,
                reserved,
                confirmed,
            },
        ) = (&event.op, &event.answer)
        {
            total.insert(sku, available + reserved + confirmed);
        }
    }
    // Keys: (the request, the first answer).
    let mut keys: HashMap<&str, (&Op, &Answer)> = HashMap::new();
    // Acknowledged reservations: id → (sku, qty), and their acknowledged end.
    let mut given: HashMap<&str, (&str, u32)> = HashMap::new();
    let mut ended: HashMap<&str, ReservationState> = HashMap::new();
    for event in events {
        match (&event.op, &event.answer) {
            (Op::SetStock { .. }, _) => {}
            (
                Op::Stock { sku },
                Answer::Level {
                    available,
                    reserved,
                    confirmed,
                },
            ) => {
                check_level(
                    &mut violations,
                    &total,
                    &format!("read at {}", event.returned),
                    sku,
                    (*available, *reserved, *confirmed),
                );
            }
            (op @ Op::Reserve { key, sku, qty }, answer) => {
                match keys.get(key.as_str()) {
                    Some((first_op, first_answer)) => {
                        if *first_op != op {
                            violations.push(format!(
                                "key {key} named two requests: {first_op:?} and {op:?}"
                            ));
                        }
                        if *first_answer != answer {
                            violations.push(format!(
                                "key {key} answered {first_answer:?}, then {answer:?}"
                            ));
                        }
                    }
                    None => {
                        keys.insert(key, (op, answer));
                    }
                }
                if let Answer::Reserved { id } = answer
                    && let Some((other_sku, other_qty)) = given.insert(id, (sku, *qty))
                    && (other_sku != sku || other_qty != *qty)
                {
                    violations.push(format!(
                        "{id} given for {qty} of {sku} and for {other_qty} of {other_sku}"
                    ));
                }
            }
            (Op::Confirm { id, .. } | Op::Release { id, .. }, Answer::State(state))
                if state.is_terminal() =>
            {
                if let Some(previous) = ended.insert(id, *state)
                    && previous != *state
                {
                    violations.push(format!(
                        "{id} acknowledged {} and {}",
                        previous.as_str(),
                        state.as_str()
                    ));
                }
            }
            (Op::Confirm { .. } | Op::Release { .. }, Answer::Conflict(_)) => {}
            (op, answer) => violations.push(format!("{op:?} answered {answer:?}")),
        }
    }
    let mut reserved: HashMap<&str, i64> = HashMap::new();
    let mut confirmed: HashMap<&str, i64> = HashMap::new();
    for (id, (sku, qty)) in &given {
        let Some(Some(found)) = end.reservations.get(*id) else {
            violations.push(format!(
                "{id} ({qty} of {sku}) was acknowledged and is gone"
            ));
            continue;
        };
        if found.sku != *sku || found.qty != *qty {
            violations.push(format!(
                "{id} was {qty} of {sku}, is {} of {}",
                found.qty, found.sku
            ));
        }
        let expected = ended.get(id).copied();
        let fits = match (expected, found.state) {
            (Some(want), got) => want == got,
            (None, ReservationState::Active) => true,
            (None, ReservationState::Expired) => allow_expiry,
            // Confirmed or released without an acknowledgement: only a request
            // that was never answered could have done that, and every one was.
            (None, _) => false,
        };
        if !fits {
            violations.push(format!(
                "{id} is {} but was acknowledged {:?}",
                found.state.as_str(),
                expected.map(ReservationState::as_str)
            ));
        }
        match found.state {
            ReservationState::Active => *reserved.entry(sku).or_default() += i64::from(*qty),
            ReservationState::Confirmed => *confirmed.entry(sku).or_default() += i64::from(*qty),
            ReservationState::Released | ReservationState::Expired => {}
        }
    }
    for (sku, &(a, r, c)) in &end.levels {
        check_level(&mut violations, &total, "final", sku, (a, r, c));
        let known_r = reserved.get(sku.as_str()).copied().unwrap_or(0);
        let known_c = confirmed.get(sku.as_str()).copied().unwrap_or(0);
        if (r, c) != (known_r, known_c) {
            violations.push(format!(
                "final: {sku} has {r} reserved and {c} confirmed; clients hold {known_r} and {known_c}"
            ));
        }
    }
    for sku in total.keys() {
        if !end.levels.contains_key(*sku) {
            violations.push(format!("final: {sku} was stocked and is gone"));
        }
    }
    if violations.is_empty() {
        Ok(Report {
            events: events.len(),
            skus: end.levels.len(),
            keys: keys.len(),
            reservations: given.len(),
        })
    } else {
        Err(violations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(client: u32, op: Op, answer: Answer, at: u64) -> Event {
        Event {
            client,
            op,
            answer,
            invoked: at,
            returned: at + 1,
        }
    }

    fn reserve(key: &str, qty: u32) -> Op {
        Op::Reserve {
            key: key.into(),
            sku: "tea".into(),
            qty,
        }
    }

    fn history() -> (Vec<Event>, FinalState) {
        let events = vec![
            event(
                0,
                Op::SetStock {
                    sku: "tea".into(),
                    available: 5,
                },
                Answer::Level {
                    available: 5,
                    reserved: 0,
                    confirmed: 0,
                },
                0,
            ),
            event(
                1,
                reserve("a", 2),
                Answer::Reserved { id: "res_1".into() },
                2,
            ),
            event(
                2,
                reserve("b", 2),
                Answer::Reserved { id: "res_2".into() },
                4,
            ),
            event(
                1,
                reserve("a", 2),
                Answer::Reserved { id: "res_1".into() },
                6,
            ),
            event(2, reserve("c", 2), Answer::Insufficient, 8),
            event(
                1,
                Op::Confirm {
                    sku: "tea".into(),
                    id: "res_1".into(),
                },
                Answer::State(ReservationState::Confirmed),
                10,
            ),
            event(
                2,
                Op::Stock { sku: "tea".into() },
                Answer::Level {
                    available: 1,
                    reserved: 2,
                    confirmed: 2,
                },
                12,
            ),
        ];
        let mut end = FinalState::default();
        end.levels.insert("tea".into(), (1, 2, 2));
        end.reservations.insert(
            "res_1".into(),
            Some(FinalReservation {
                sku: "tea".into(),
                qty: 2,
                state: ReservationState::Confirmed,
            }),
        );
        end.reservations.insert(
            "res_2".into(),
            Some(FinalReservation {
                sku: "tea".into(),
                qty: 2,
                state: ReservationState::Active,
            }),
        );
        (events, end)
    }

    #[test]
    fn a_conserving_history_passes() {
        let (events, end) = history();
        let report = check_conservation(&events, &end, false).unwrap();
        assert_eq!(report.reservations, 2);
        assert_eq!(report.keys, 3);
    }

    #[test]
    fn a_lost_reservation_is_caught() {
        let (events, mut end) = history();
        end.reservations.insert("res_2".into(), None);
        end.levels.insert("tea".into(), (3, 0, 2));
        let violations = check_conservation(&events, &end, false).unwrap_err();
        assert!(
            violations
                .iter()
                .any(|v| v.contains("res_2") && v.contains("gone"))
        );
    }

    #[test]
    fn a_second_effect_of_a_key_is_caught_by_the_sums() {
        // The server made a hidden second reservation for a retried key.
        let (events, mut end) = history();
        end.levels.insert("tea".into(), (0, 3, 2));
        let violations = check_conservation(&events, &end, false).unwrap_err();
        assert!(
            violations.iter().any(|v| v.contains("clients hold 2")),
            "{violations:?}"
        );
    }

    #[test]
    fn an_oversold_read_and_a_changed_answer_are_caught() {
        let (mut events, end) = history();
        events.push(event(
            3,
            Op::Stock { sku: "tea".into() },
            Answer::Level {
                available: -1,
                reserved: 4,
                confirmed: 2,
            },
            20,
        ));
        events.push(event(
            3,
            reserve("c", 2),
            Answer::Reserved { id: "res_9".into() },
            22,
        ));
        let violations = check_conservation(&events, &end, false).unwrap_err();
        assert!(violations.iter().any(|v| v.contains("negative")));
        assert!(violations.iter().any(|v| v.contains("key c answered")));
        assert!(violations.iter().any(|v| v.contains("res_9")));
    }

    #[test]
    fn an_expiry_is_allowed_only_when_the_run_allows_it() {
        let (events, mut end) = history();
        end.reservations.insert(
            "res_2".into(),
            Some(FinalReservation {
                sku: "tea".into(),
                qty: 2,
                state: ReservationState::Expired,
            }),
        );
        end.levels.insert("tea".into(), (3, 0, 2));
        assert!(check_conservation(&events, &end, false).is_err());
        // The read at 12 still saw 2 reserved: legal before the expiry.
        check_conservation(&events, &end, true).unwrap();
    }
}
