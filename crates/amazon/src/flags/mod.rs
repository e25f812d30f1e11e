//! Feature flags: variants assigned by a stable hash of the user id and
//! percentages, changed at run time through the API, every change logged.
//!
//! | module | what it is |
//! |---|---|
//! | [`model`] | a flag, its validation, and the assignment of a user to a variant |
//! | [`store`] | the flags of an instance: durable (one file rewritten atomically) with an append-only change log |
//! | [`api`] | `GET /v1/flags`, `GET/PUT /v1/flags/{name}`, assignments, the change log |
//!
//! Guaranteed: a user's variant depends only on the flag's name, its salt, the
//! user id and the percentages — the same in every process and every run (the kit's
//! `stable_hash_bytes`), so a fleet agrees and an A/B split is sticky; changing the
//! percentages moves only the users whose bucket changes variant (buckets are laid
//! out in variant order). Exposures (each recommendation answer) and conversions
//! (each order, read from the orders' events at least once) are counted per variant
//! (`amazon_flag_exposures_total`, `amazon_flag_conversions_total`, tags `flag`,
//! `variant`), so an A/B comparison shows in the metrics store.
//! Not guaranteed: that a change reaches other processes (each instance owns its
//! flags; fleet mode would put them in a shared store).

pub mod api;
pub mod model;
pub mod store;

pub use model::{Flag, FlagError, Variant};
pub use store::{FlagChange, FlagStore};

/// The flag that picks the recommendation strategy (an A/B test out of the box).
pub const RECS_STRATEGY_FLAG: &str = "recs-strategy";
