//! The hint store: which carts a replica must hand to which other replica.
//!
//! A hint names a cart (its user) and the zone of the replica that should have
//! received a write of it but could not: the coordinator's preferred replica that
//! refused, or a peer a push failed to reach. Hints are durable through the
//! replica's log (a write and its hints are one record; a failed push's hints and a
//! completed handoff are records of their own) and this in-memory index is rebuilt
//! from the snapshot and the log at start.
//!
//! Bounded: at most `capacity` hints in all (one per cart and zone; a cart written
//! many times while its replica is away is one hint). Past the bound a hint is
//! dropped and counted — that cart reaches the returning replica through
//! anti-entropy instead, later but surely.

use std::collections::{BTreeMap, BTreeSet};

/// Pending hints by intended zone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hints {
    by_zone: BTreeMap<String, BTreeSet<String>>,
    total: usize,
    capacity: usize,
    dropped: u64,
}

impl Hints {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            ..Self::default()
        }
    }

    /// Records that `zone` must get `user`'s cart; false if the store was full
    /// (the hint is dropped and counted).
    pub fn add(&mut self, zone: &str, user: &str) -> bool {
        if self
            .by_zone
            .get(zone)
            .is_some_and(|users| users.contains(user))
        {
            return true;
        }
        if self.total >= self.capacity {
            self.dropped += 1;
            return false;
        }
        self.by_zone
            .entry(zone.to_owned())
            .or_default()
            .insert(user.to_owned());
        self.total += 1;
        true
    }

    /// Forgets the hints of `users` for `zone` (handed off).
    pub fn remove(&mut self, zone: &str, users: &[String]) {
        if let Some(pending) = self.by_zone.get_mut(zone) {
            for user in users {
                if pending.remove(user) {
                    self.total -= 1;
                }
            }
            if pending.is_empty() {
                self.by_zone.remove(zone);
            }
        }
    }

    /// Up to `max` users whose carts `zone` must get, by user.
    pub fn pending(&self, zone: &str, max: usize) -> Vec<String> {
        self.by_zone
            .get(zone)
            .map(|users| users.iter().take(max).cloned().collect())
            .unwrap_or_default()
    }

    /// Zones with pending hints, and how many each.
    pub fn zones(&self) -> BTreeMap<String, usize> {
        self.by_zone
            .iter()
            .map(|(zone, users)| (zone.clone(), users.len()))
            .collect()
    }

    /// Every pending hint, for a snapshot.
    pub fn all(&self) -> BTreeMap<String, Vec<String>> {
        self.by_zone
            .iter()
            .map(|(zone, users)| (zone.clone(), users.iter().cloned().collect()))
            .collect()
    }

    /// Hints pending in all.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Hints dropped because the store was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_hint_per_cart_and_zone_and_a_bound_on_all() {
        let mut hints = Hints::new(3);
        assert!(hints.add("a", "u1"));
        assert!(
            hints.add("a", "u1"),
            "a second write of u1 is the same hint"
        );
        assert!(hints.add("a", "u2"));
        assert!(hints.add("b", "u1"));
        assert_eq!(hints.total(), 3);
        assert!(!hints.add("b", "u3"), "full");
        assert_eq!(hints.dropped(), 1);
        assert_eq!(hints.pending("a", 10), ["u1", "u2"]);
        hints.remove("a", &["u1".to_owned(), "u9".to_owned()]);
        assert_eq!(hints.total(), 2);
        hints.remove("a", &["u2".to_owned()]);
        assert_eq!(hints.zones().len(), 1);
        assert!(hints.add("b", "u3"), "room again");
    }
}
