//! Region evacuation: how an instance learns that its region is out (Chaos Kong,
//! or an operator's region override in discovery).
//!
//! [`Evacuations`] holds one flag per region of the topology, each a
//! [`tokio::sync::watch`] channel, so an instance can both read the flag now
//! ([`Evacuations::is_evacuated`]) and wait for it to change
//! ([`InstanceContext::region_evacuated`](super::InstanceContext::region_evacuated)).
//! The platform owns one; discovery sets it where it keeps the region status
//! override (the control plane attaches it to its registry), so the flag follows
//! the override whoever sets it — a Kong experiment or `PUT
//! /api/discovery/regions/{region}/status` — and a control plane that starts (with
//! an empty registry) clears every flag.
//!
//! **Guaranteed**: a flag reads what the last [`Evacuations::set`] of its region
//! said; every receiver sees the latest value (intermediate flips may be
//! skipped, as watch channels do). Regions outside the topology are never
//! evacuated and setting them does nothing. **Not guaranteed**: that the services
//! act on it at once — each decides its own pace (the chat node moves its
//! sessions in bounded batches). **Fleet mode** (one process per instance, `casebook
//! serve`) does not have this flag: there an instance would learn its region's
//! status from its lease renewal's answer (discovery already answers the
//! effective status); that is not built.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;

use crate::topology::Topology;

/// The per-region evacuation flags of one platform. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct Evacuations {
    flags: Arc<BTreeMap<String, watch::Sender<bool>>>,
}

impl Evacuations {
    /// One flag per region of `topology`, all clear.
    pub fn new(topology: &Topology) -> Self {
        let flags = topology
            .regions
            .iter()
            .map(|r| (r.name.clone(), watch::Sender::new(false)))
            .collect();
        Self {
            flags: Arc::new(flags),
        }
    }

    /// Marks `region` evacuated (`true`) or serving (`false`); returns whether
    /// the flag changed. An unknown region is ignored (`false`).
    pub fn set(&self, region: &str, evacuated: bool) -> bool {
        match self.flags.get(region) {
            Some(flag) => flag.send_if_modified(|now| {
                let changed = *now != evacuated;
                *now = evacuated;
                changed
            }),
            None => false,
        }
    }

    /// Clears every flag (a fresh registry has no region override).
    pub fn clear_all(&self) {
        for region in self.flags.keys() {
            self.set(region, false);
        }
    }

    /// Whether `region` is evacuated now.
    pub fn is_evacuated(&self, region: &str) -> bool {
        self.flags.get(region).is_some_and(|flag| *flag.borrow())
    }

    /// The evacuated regions, by name.
    pub fn evacuated(&self) -> Vec<String> {
        self.flags
            .iter()
            .filter(|(_, flag)| *flag.borrow())
            .map(|(region, _)| region.clone())
            .collect()
    }

    /// A receiver of `region`'s flag; for a region outside the topology, one
    /// that stays `false` forever.
    pub fn watch(&self, region: &str) -> watch::Receiver<bool> {
        match self.flags.get(region) {
            Some(flag) => flag.subscribe(),
            // The sender is dropped: the receiver keeps `false` and `changed()`
            // returns an error at once, which callers treat as "never changes".
            None => watch::channel(false).1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_flag_follows_its_last_set_and_wakes_its_watchers() {
        let evacuations = Evacuations::new(&Topology::default());
        let mut eu = evacuations.watch("eu-west");
        assert!(!*eu.borrow());
        assert!(evacuations.set("eu-west", true));
        assert!(!evacuations.set("eu-west", true), "no change, no wake-up");
        eu.changed().await.unwrap();
        assert!(*eu.borrow_and_update());
        assert!(evacuations.is_evacuated("eu-west"));
        assert!(!evacuations.is_evacuated("us-east"));
        assert_eq!(evacuations.evacuated(), vec!["eu-west".to_owned()]);

        evacuations.clear_all();
        eu.changed().await.unwrap();
        assert!(!*eu.borrow());
        assert!(evacuations.evacuated().is_empty());
    }

    #[test]
    fn regions_outside_the_topology_are_never_evacuated() {
        let evacuations = Evacuations::new(&Topology::default());
        assert!(!evacuations.set("mars", true));
        assert!(!evacuations.is_evacuated("mars"));
        assert!(!*evacuations.watch("mars").borrow());
    }
}
