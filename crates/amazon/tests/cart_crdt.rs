//! The cart CRDT's properties, with the `crdts` crate's `Orswot` (a port of
//! Riak's `riak_dt_orswot`) as the oracle for which items are in the cart:
//!
//! - for any history of adds, sets, observed removes, removes with another
//!   replica's (possibly newer) context, and merges between three replicas, every
//!   replica holds the same items and the same clock as the oracle's replica after
//!   every step, and all converge to one state once they have merged;
//! - merge is commutative, associative and idempotent on states such histories make;
//! - no add is forgotten: at the end, a line's quantity is at least the sum of the
//!   adds to it that no remove or set observed;
//! - on one replica the quantity follows the plain sequential rule (add adds, set
//!   sets, remove clears);
//! - every state a history makes passes the wire checks and survives the wire form.

use std::collections::{BTreeMap, BTreeSet};

use casebook_amazon::cart::crdt::{ActorId, Cart, Dot, Limits, VClock};
use crdts::ctx::RmCtx;
use crdts::{CmRDT, CvRDT, Orswot};
use proptest::prelude::*;

const REPLICAS: usize = 3;
const SKUS: [&str; 4] = ["s0", "s1", "s2", "s3"];
const NO_CAP: u32 = u32::MAX;

#[derive(Debug, Clone)]
enum Step {
    Add {
        at: usize,
        sku: usize,
        qty: u32,
    },
    Set {
        at: usize,
        sku: usize,
        qty: u32,
    },
    /// Remove what the replica itself has seen.
    Remove {
        at: usize,
        sku: usize,
    },
    /// Remove with the context another replica has seen (a client that read
    /// there and writes here): may name writes this replica has not seen.
    RemoveSeenAt {
        at: usize,
        sku: usize,
        seen_at: usize,
    },
    Merge {
        from: usize,
        to: usize,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let r = 0..REPLICAS;
    let s = 0..SKUS.len();
    prop_oneof![
        4 => (r.clone(), s.clone(), 1u32..4).prop_map(|(at, sku, qty)| Step::Add { at, sku, qty }),
        1 => (r.clone(), s.clone(), 1u32..4).prop_map(|(at, sku, qty)| Step::Set { at, sku, qty }),
        2 => (r.clone(), s.clone()).prop_map(|(at, sku)| Step::Remove { at, sku }),
        1 => (r.clone(), s.clone(), r.clone())
            .prop_map(|(at, sku, seen_at)| Step::RemoveSeenAt { at, sku, seen_at }),
        3 => (r.clone(), r).prop_map(|(from, to)| Step::Merge { from, to }),
    ]
}

fn actor(replica: usize) -> ActorId {
    ActorId(replica as u64 + 1)
}

type Oracle = Orswot<String, u64>;

fn oracle_clock(clock: &VClock) -> crdts::VClock<u64> {
    clock.iter().map(|(a, n)| crdts::Dot::new(a.0, n)).collect()
}

fn clock_of_oracle(oracle: &Oracle) -> BTreeMap<u64, u64> {
    oracle
        .clock()
        .iter()
        .map(|dot| (*dot.actor, dot.counter))
        .collect()
}

fn clock_of(cart: &Cart) -> BTreeMap<u64, u64> {
    cart.clock().iter().map(|(a, n)| (a.0, n)).collect()
}

fn items(cart: &Cart) -> BTreeSet<String> {
    cart.lines().map(|(sku, _)| sku.to_owned()).collect()
}

fn oracle_items(oracle: &Oracle) -> BTreeSet<String> {
    oracle.read().val.into_iter().collect()
}

/// Three replicas of the cart and of the oracle, driven by the same steps; also
/// every add's dot and every remove's (or set's) context, for the "never
/// forgotten" check.
struct World {
    carts: Vec<Cart>,
    oracles: Vec<Oracle>,
    adds: Vec<(String, Dot, u32)>,
    observed: Vec<(String, VClock)>,
}

impl World {
    fn new() -> Self {
        Self {
            carts: vec![Cart::default(); REPLICAS],
            oracles: vec![Oracle::new(); REPLICAS],
            adds: Vec::new(),
            observed: Vec::new(),
        }
    }

    fn oracle_add(&mut self, at: usize, sku: &str) {
        let oracle = &mut self.oracles[at];
        let ctx = oracle.read_ctx().derive_add_ctx(actor(at).0);
        let op = oracle.add(sku.to_owned(), ctx);
        oracle.apply(op);
    }

    fn oracle_remove(&mut self, at: usize, sku: &str, context: &VClock) {
        let oracle = &mut self.oracles[at];
        let op = oracle.rm(
            sku.to_owned(),
            RmCtx {
                clock: oracle_clock(context),
            },
        );
        oracle.apply(op);
    }

    fn apply(&mut self, step: &Step) {
        match *step {
            Step::Add { at, sku, qty } => {
                let sku = SKUS[sku];
                let added = self.carts[at].add(actor(at), sku, qty, NO_CAP);
                assert_eq!(added, qty, "no cap: the whole add");
                let dot = Dot {
                    actor: actor(at),
                    counter: self.carts[at].clock().get(actor(at)),
                };
                self.adds.push((sku.to_owned(), dot, qty));
                self.oracle_add(at, sku);
            }
            Step::Set { at, sku, qty } => {
                let sku = SKUS[sku];
                let seen = self.carts[at].clock().clone();
                self.observed.push((sku.to_owned(), seen.clone()));
                self.carts[at].set(actor(at), sku, qty);
                // A set is a remove of what was seen and an add.
                self.oracle_remove(at, sku, &seen);
                self.oracle_add(at, sku);
            }
            Step::Remove { at, sku } => {
                let sku = SKUS[sku];
                let seen = self.carts[at].clock().clone();
                self.observed.push((sku.to_owned(), seen.clone()));
                self.carts[at].remove(sku, &seen);
                self.oracle_remove(at, sku, &seen);
            }
            Step::RemoveSeenAt { at, sku, seen_at } => {
                let sku = SKUS[sku];
                let seen = self.carts[seen_at].clock().clone();
                self.observed.push((sku.to_owned(), seen.clone()));
                self.carts[at].remove(sku, &seen);
                self.oracle_remove(at, sku, &seen);
            }
            Step::Merge { from, to } => {
                let other = self.carts[from].clone();
                self.carts[to].merge(&other);
                let other = self.oracles[from].clone();
                self.oracles[to].merge(other);
            }
        }
    }

    fn check_against_oracle(&self, after: &Step) {
        for r in 0..REPLICAS {
            assert_eq!(
                items(&self.carts[r]),
                oracle_items(&self.oracles[r]),
                "replica {r} items after {after:?}"
            );
            assert_eq!(
                clock_of(&self.carts[r]),
                clock_of_oracle(&self.oracles[r]),
                "replica {r} clock after {after:?}"
            );
            self.carts[r]
                .check(&Limits::default())
                .unwrap_or_else(|e| panic!("replica {r} after {after:?}: {e}"));
        }
    }

    fn merge_all(&mut self) {
        for _ in 0..2 {
            for to in 0..REPLICAS {
                for from in 0..REPLICAS {
                    self.apply(&Step::Merge { from, to });
                }
            }
        }
    }
}

fn run(steps: &[Step]) -> World {
    let mut world = World::new();
    for step in steps {
        world.apply(step);
        world.check_against_oracle(step);
    }
    world
}

fn merged(a: &Cart, b: &Cart) -> Cart {
    let mut out = a.clone();
    out.merge(b);
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn same_items_and_clock_as_the_oracle_and_convergence(steps in prop::collection::vec(step(), 0..60)) {
        let mut world = run(&steps);
        world.merge_all();
        let settle = Step::Merge { from: 0, to: 0 };
        world.check_against_oracle(&settle);
        for r in 1..REPLICAS {
            prop_assert_eq!(&world.carts[r], &world.carts[0]);
            prop_assert_eq!(oracle_items(&world.oracles[r]), oracle_items(&world.oracles[0]));
        }
        prop_assert_eq!(world.carts[0].deferred_count(), 0, "every remove's writes arrived");
    }

    #[test]
    fn merge_is_commutative_associative_and_idempotent(steps in prop::collection::vec(step(), 0..60)) {
        let world = run(&steps);
        let (a, b, c) = (&world.carts[0], &world.carts[1], &world.carts[2]);
        prop_assert_eq!(merged(a, b), merged(b, a));
        prop_assert_eq!(merged(&merged(a, b), c), merged(a, &merged(b, c)));
        prop_assert_eq!(&merged(a, a), a);
        let ab = merged(a, b);
        prop_assert_eq!(merged(&ab, b), ab.clone());
        prop_assert_eq!(merged(&ab, a), ab);
    }

    #[test]
    fn no_add_is_forgotten(steps in prop::collection::vec(step(), 0..60)) {
        let mut world = run(&steps);
        world.merge_all();
        let cart = &world.carts[0];
        for sku in SKUS {
            let unobserved: u64 = world
                .adds
                .iter()
                .filter(|(s, dot, _)| {
                    s == sku && !world.observed.iter().any(|(o, seen)| o == sku && seen.covers(dot))
                })
                .map(|(_, _, qty)| u64::from(*qty))
                .sum();
            prop_assert!(
                u64::from(cart.quantity(sku)) >= unobserved,
                "{sku}: quantity {} but {unobserved} was added unobserved",
                cart.quantity(sku)
            );
            if unobserved > 0 {
                prop_assert!(cart.contains(sku));
            }
        }
    }

    #[test]
    fn the_wire_form_round_trips(steps in prop::collection::vec(step(), 0..40)) {
        let world = run(&steps);
        for cart in &world.carts {
            let json = serde_json::to_vec(cart).unwrap();
            let back: Cart = serde_json::from_slice(&json).unwrap();
            prop_assert_eq!(&back, cart);
        }
    }

    #[test]
    fn one_replica_follows_the_sequential_rule(
        steps in prop::collection::vec((0usize..3, 0..SKUS.len(), 1u32..5), 0..40)
    ) {
        let mut cart = Cart::default();
        let mut model: BTreeMap<&str, u32> = BTreeMap::new();
        for (kind, sku, qty) in steps {
            let sku = SKUS[sku];
            match kind {
                0 => {
                    cart.add(actor(0), sku, qty, NO_CAP);
                    *model.entry(sku).or_default() += qty;
                }
                1 => {
                    cart.set(actor(0), sku, qty);
                    model.insert(sku, qty);
                }
                _ => {
                    let seen = cart.clock().clone();
                    cart.remove(sku, &seen);
                    model.remove(sku);
                }
            }
            for sku in SKUS {
                prop_assert_eq!(cart.quantity(sku), model.get(sku).copied().unwrap_or(0));
            }
        }
    }
}

#[test]
fn a_capped_add_never_passes_the_cap_on_its_replica() {
    let mut cart = Cart::default();
    let mut total = 0;
    for qty in [3, 4, 5, 6] {
        total += cart.add(actor(0), "s", qty, 10);
        assert!(cart.quantity("s") <= 10);
    }
    assert_eq!(total, 10);
    assert_eq!(cart.quantity("s"), 10);
}
