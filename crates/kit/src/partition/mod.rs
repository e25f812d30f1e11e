//! Partitioning (P1): where a key lives.
//!
//! Two different questions, two tools:
//! - **Which node?** [`jump_consistent_hash`] and [`Rendezvous`] map a key's
//!   [`stable_hash`] to one of `n` nodes so that membership changes move as few
//!   keys as possible (about `1/n` of them). See [`hashing`].
//! - **Which shard, and is it too hot?** [`ShardMap`] partitions the `u64` key
//!   space (a hash, or an S2 leaf cell id) into hierarchical ranges that split into
//!   four quarters when hot and merge back when cold, tracking load per shard on
//!   the injected clock; [`ShardedIndex`] stores values per shard and keeps serving
//!   while shards split. See [`shard_map`] and [`index`].
//!
//! [`range`] holds the range arithmetic and shows why a shard's quarters are
//! exactly the four children of an S2 cell.
//!
//! Not here: moving shards between nodes (a shard map is one process's view; a
//! cluster would assign shards to nodes with the hashing above), replication, and
//! persistence of the layout.

pub mod hashing;
pub mod index;
pub mod load;
pub mod range;
pub mod shard_map;

pub use hashing::{
    Rendezvous, StableHasher, fast_range, jump_consistent_hash, stable_hash, stable_hash_bytes,
};
pub use index::ShardedIndex;
pub use load::DecayingRate;
pub use range::{KeyRange, s2_cell_range, s2_face_ranges, s2_level};
pub use shard_map::{Rebalance, ShardId, ShardInfo, ShardMap, ShardMapConfig, ShardPayload};

/// What can go wrong partitioning; every variant names the value at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PartitionError {
    /// A range with `first > last`.
    #[error("empty key range: first {first:#x} > last {last:#x}")]
    EmptyRange {
        /// The first key asked for.
        first: u64,
        /// The last key asked for.
        last: u64,
    },
    /// Not a valid S2 cell id.
    #[error("{cell_id:#x} is not a valid S2 cell id")]
    InvalidS2Cell {
        /// The id given.
        cell_id: u64,
    },
    /// A node weight that is not finite and positive.
    #[error("node weight must be finite and positive, got {weight}")]
    InvalidWeight {
        /// The weight given.
        weight: f64,
    },
    /// A rendezvous set is full.
    #[error("at most {max} nodes")]
    TooManyNodes {
        /// The limit.
        max: usize,
    },
    /// A key outside every root range of the map.
    #[error("key {key:#x} is outside every shard")]
    KeyOutsideShards {
        /// The key.
        key: u64,
    },
    /// A shard id that is not a current shard.
    #[error("{shard} is not a current shard")]
    UnknownShard {
        /// The shard named.
        shard: ShardId,
    },
    /// A split the map refuses.
    #[error("cannot split {shard}: {reason}")]
    NotSplittable {
        /// The shard named.
        shard: ShardId,
        /// Why.
        reason: String,
    },
    /// A merge the map refuses.
    #[error("cannot merge into {parent}: {reason}")]
    NotMergeable {
        /// The parent named.
        parent: ShardId,
        /// Why.
        reason: String,
    },
    /// A split would pass `max_shards`.
    #[error("at most {max} shards")]
    TooManyShards {
        /// The limit.
        max: usize,
    },
    /// A configuration field out of bounds.
    #[error("invalid shard map config `{field}`: {reason}")]
    InvalidConfig {
        /// The field at fault.
        field: &'static str,
        /// Why.
        reason: String,
    },
}
