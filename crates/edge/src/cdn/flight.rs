//! Request coalescing (single flight): however many requests miss on one key at
//! once, one upstream fetch runs, and every one of them gets its outcome.
//!
//! The first miss on a key becomes the flight's leader: it is told to start the
//! fetch ([`Joined::Lead`]) as a task of its own, so a client that hangs up never
//! cancels the fetch for the others. Later misses on the same key, until the
//! flight lands, join it ([`Joined::Follow`]) and wait for the same outcome; each
//! is counted as coalesced.
//!
//! Guaranteed: at most one flight per key at a time; a flight's entry is removed
//! when it lands or when its task is dropped (a kill, a panic: [`Landing`] removes
//! it on drop and waiters get [`FetchError::Abandoned`]), never leaving a key
//! stuck. A request that arrives after the landing finds the object in the cache:
//! the leader stores it before landing, and a new leader looks in memory once more
//! after taking the lead (so a miss that raced the landing does not fetch again).
//! Only an object the cache refused (TinyLFU) is fetched again by a later miss.
//!
//! Bounded by the requests in progress: one entry per key with a fetch in flight.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

use super::key::ObjectKey;
use super::object::Object;
use super::upstream::FetchError;

/// The outcome every waiter of a flight gets: the object, `None` for 404, or why not.
pub type Outcome = Result<Option<Arc<Object>>, FetchError>;

type Slot = watch::Receiver<Option<Outcome>>;

/// The flights in progress of one tier.
#[derive(Debug, Default)]
pub struct Flights {
    inflight: Arc<Mutex<HashMap<ObjectKey, Slot>>>,
}

/// What a miss does.
#[derive(Debug)]
pub enum Joined {
    /// Start the fetch: hand the outcome to [`Landing::land`]; wait on the receiver.
    Lead(Landing, Waiter),
    /// Another request's fetch is in flight: wait for it.
    Follow(Waiter),
}

/// Waits for a flight's outcome.
#[derive(Debug)]
pub struct Waiter(Slot);

impl Waiter {
    /// The flight's outcome; [`FetchError::Abandoned`] if its task ended without one.
    pub async fn outcome(mut self) -> Outcome {
        match self.0.wait_for(Option::is_some).await {
            Ok(value) => value.clone().unwrap_or(Err(FetchError::Abandoned)),
            Err(_) => Err(FetchError::Abandoned),
        }
    }
}

/// The leader's end of a flight: lands it with an outcome, or removes it when dropped.
#[derive(Debug)]
pub struct Landing {
    key: ObjectKey,
    sender: Option<watch::Sender<Option<Outcome>>>,
    inflight: Arc<Mutex<HashMap<ObjectKey, Slot>>>,
}

impl Landing {
    /// Hands every waiter the outcome and ends the flight.
    pub fn land(mut self, outcome: Outcome) {
        if let Some(sender) = self.sender.take() {
            sender.send_replace(Some(outcome));
            self.remove(&sender);
        }
    }

    fn remove(&self, sender: &watch::Sender<Option<Outcome>>) {
        let mut inflight = self.inflight.lock();
        // Only this flight's entry: a later flight on the key is not ours to end.
        if inflight
            .get(&self.key)
            .is_some_and(|slot| slot.same_channel(&sender.subscribe()))
        {
            inflight.remove(&self.key);
        }
    }
}

impl Drop for Landing {
    fn drop(&mut self) {
        if let Some(sender) = self.sender.take() {
            self.remove(&sender);
            // Dropping the sender wakes every waiter with `Abandoned`.
        }
    }
}

impl Flights {
    /// Joins the flight for `key`, or starts one.
    pub fn join(&self, key: &ObjectKey) -> Joined {
        let mut inflight = self.inflight.lock();
        if let Some(slot) = inflight.get(key) {
            return Joined::Follow(Waiter(slot.clone()));
        }
        let (sender, receiver) = watch::channel(None);
        inflight.insert(key.clone(), receiver.clone());
        Joined::Lead(
            Landing {
                key: key.clone(),
                sender: Some(sender),
                inflight: Arc::clone(&self.inflight),
            },
            Waiter(receiver),
        )
    }

    /// Keys with a fetch in flight.
    pub fn in_flight(&self) -> usize {
        self.inflight.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ObjectKey {
        ObjectKey::parse("t/a.ts").unwrap()
    }

    #[tokio::test]
    async fn followers_share_the_leaders_outcome_and_the_flight_ends() {
        let flights = Flights::default();
        let Joined::Lead(landing, leader) = flights.join(&key()) else {
            panic!("the first miss leads");
        };
        let followers: Vec<_> = (0..10)
            .map(|_| match flights.join(&key()) {
                Joined::Follow(w) => w,
                Joined::Lead(..) => panic!("a second leader"),
            })
            .collect();
        assert_eq!(flights.in_flight(), 1);
        landing.land(Ok(None));
        assert_eq!(flights.in_flight(), 0);
        assert!(matches!(leader.outcome().await, Ok(None)));
        for f in followers {
            assert!(matches!(f.outcome().await, Ok(None)));
        }
        assert!(
            matches!(flights.join(&key()), Joined::Lead(..)),
            "a new flight after landing"
        );
    }

    #[tokio::test]
    async fn a_dropped_leader_abandons_its_flight() {
        let flights = Flights::default();
        let Joined::Lead(landing, _) = flights.join(&key()) else {
            panic!("the first miss leads");
        };
        let Joined::Follow(follower) = flights.join(&key()) else {
            panic!("the second miss follows");
        };
        drop(landing);
        assert_eq!(flights.in_flight(), 0);
        assert_eq!(follower.outcome().await.unwrap_err(), FetchError::Abandoned);
    }
}
