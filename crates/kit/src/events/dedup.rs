//! Consumer-side de-duplication by event id, over a bounded window.
//!
//! Remembers the last `capacity` ids seen (first in, first out). A duplicate that
//! arrives after more than `capacity` other events is not recognised: size the
//! window to cover the redeliveries you expect (a batch not committed before a
//! crash, a relay re-publishing after a crash), or make effects idempotent.

use std::collections::{HashSet, VecDeque};

/// Remembers recently seen event ids.
#[derive(Debug, Clone)]
pub struct Deduplicator {
    capacity: usize,
    seen: HashSet<String>,
    order: VecDeque<String>,
}

impl Deduplicator {
    /// A window of `capacity` ids (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            capacity,
            seen: HashSet::with_capacity(capacity),
            order: VecDeque::with_capacity(capacity),
        }
    }

    /// True the first time `id` is seen within the window; false for a duplicate.
    pub fn first_time(&mut self, id: &str) -> bool {
        if self.seen.contains(id) {
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        self.seen.insert(id.to_string());
        self.order.push_back(id.to_string());
        debug_assert_eq!(self.seen.len(), self.order.len());
        debug_assert!(self.order.len() <= self.capacity);
        true
    }

    /// Ids remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_within_the_window_are_dropped_and_the_window_is_bounded() {
        let mut dedup = Deduplicator::new(2);
        assert!(dedup.first_time("a"));
        assert!(!dedup.first_time("a"));
        assert!(dedup.first_time("b"));
        assert!(dedup.first_time("c")); // evicts "a"
        assert_eq!(dedup.len(), 2);
        assert!(!dedup.first_time("b"));
        assert!(dedup.first_time("a"));
    }
}
