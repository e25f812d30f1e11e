//! # casebook-amazon
//!
//! The Amazon case study's transactional core: a cart that never forgets an add
//! (Dynamo's availability-first design: an add-wins CRDT on one replica per zone,
//! hinted handoff, anti-entropy) and inventory reservations that never oversell
//! (sharded locks per SKU, every decision in the WAL before the reply, idempotency
//! keys written with the decision), with orders and checkout on top.
//!
//! | module | what it is |
//! |---|---|
//! | [`case`] | the case's face: `amazon` (the API, :8100) and `amazon-cart` (one replica per zone) |
//! | [`config`] | the `[amazon]` table |
//! | [`service`] | the `amazon` service: mounts each area's routes on one listener |
//! | [`cart`] | the cart: CRDT, replicas, the coordinator behind `/v1/carts` |
//! | [`catalog`] | the product catalog behind browsing (deterministic, no data file); views go to the recommender |
//! | [`flags`] | feature flags: stable-hash variants, run-time changes, per-variant metrics |
//! | [`load`] | the workload behind `casebook load amazon` (and `--prime-day`) |
//! | [`recs`] | recommendations: speed layer, batch layer, serving with a popular fallback |
//! | [`inventory`] | stock and reservations behind `/v1/inventory`, `/v1/reservations`: sharded locks, the kit's WAL, snapshots |
//! | [`orders`] | checkout and orders behind `/v1/checkout`, `/v1/orders`: the kit's outbox, `OrderPlaced` events |
//! | [`check`] | the conservation checker over recorded histories (and, with the `linearizability` feature, the per-SKU linearizability check) |
//! | [`error`] | JSON errors with a machine-readable `code` |
//! | `fuzz_checks` | the invariants of `crates/amazon/fuzz`'s targets, replayed on stable by `tests/fuzz_corpus.rs` |

pub mod cart;
pub mod case;
pub mod catalog;
pub mod check;
pub mod config;
pub mod error;
pub mod flags;
#[doc(hidden)]
pub mod fuzz_checks;
pub mod inventory;
pub mod load;
pub mod orders;
pub mod recs;
pub mod service;
