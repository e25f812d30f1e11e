//! The replicas' internal HTTP API: compact JSON bodies between the API
//! (coordinator) and the replicas, and between replicas.
//!
//! | route | body → answer | who calls it |
//! |---|---|---|
//! | `POST /internal/v1/carts/{user}/ops` | [`OpRequest`] → [`OpResponse`] | the coordinator: a write, durable before the answer |
//! | `GET /internal/v1/carts/{user}` | → [`CartResponse`] | the coordinator's reads |
//! | `POST /internal/v1/merge` | [`MergeRequest`] → [`MergeResponse`] | push on write, hinted handoff, read repair, anti-entropy |
//! | `POST /internal/v1/digest` | [`DigestRequest`] → [`DigestResponse`] | anti-entropy: which buckets differ |
//! | `POST /internal/v1/bucket` | [`BucketRequest`] → [`BucketResponse`] | anti-entropy: one bucket's carts |
//! | `GET /internal/v1/status` | → [`ReplicaStatus`] | tests and operators |
//!
//! Every body is bounded: [`MAX_BODY_BYTES`], at most [`MAX_BATCH`] carts or
//! [`MAX_OPS`] operations, each cart checked against the wire limits
//! ([`super::model::wire_limits`]). Errors are the kit's JSON errors with a `code`.

use serde::{Deserialize, Serialize};

use super::crdt::{Cart, VClock};

/// The largest body a replica reads.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Most carts in one merge, bucket answer or listing.
pub const MAX_BATCH: usize = 1_024;
/// Most operations in one write.
pub const MAX_OPS: usize = 256;
/// Most `(user, hash)` pairs one bucket listing carries.
pub const MAX_BUCKET_LISTING: usize = 100_000;

pub const OPS_PATH: &str = "/internal/v1/carts/{user}/ops";
pub const CART_PATH: &str = "/internal/v1/carts/{user}";
pub const MERGE_PATH: &str = "/internal/v1/merge";
pub const DIGEST_PATH: &str = "/internal/v1/digest";
pub const BUCKET_PATH: &str = "/internal/v1/bucket";
pub const STATUS_PATH: &str = "/internal/v1/status";

/// One operation of a write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Add `qty` (capped at the line limit as the replica sees the line).
    Add { sku: String, qty: u32 },
    /// Make the line `qty`, replacing what the replica has seen of it.
    Set { sku: String, qty: u32 },
    /// Remove what `context` saw of the line.
    Remove { sku: String, context: VClock },
}

impl Op {
    pub fn sku(&self) -> &str {
        match self {
            Self::Add { sku, .. } | Self::Set { sku, .. } | Self::Remove { sku, .. } => sku,
        }
    }
}

/// A write: its operations, applied in order in one durable record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpRequest {
    pub ops: Vec<Op>,
    /// The state the coordinator read, merged in first, so a set or remove acts
    /// on everything the client saw even if this replica had not seen it yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<Cart>,
    /// Zones of the replicas this write was meant for that could not take it:
    /// the replica keeps a hint for each and hands the cart off when they return.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hints: Vec<String>,
}

/// The cart after a write, as the replica that took it holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpResponse {
    pub cart: Cart,
    /// The zone of the replica that took the write.
    pub zone: String,
}

/// A replica's copy of one cart (empty when it holds none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CartResponse {
    pub cart: Cart,
    pub zone: String,
}

/// One user's cart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserCart {
    pub user: String,
    pub cart: Cart,
}

/// States to merge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeRequest {
    pub carts: Vec<UserCart>,
}

/// How many of the merged states changed something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeResponse {
    pub changed: usize,
}

/// The caller's digest: one XOR of cart hashes per bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestRequest {
    pub buckets: Vec<u64>,
}

/// The buckets whose digests differ, ascending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestResponse {
    pub differ: Vec<u32>,
}

/// The caller's carts of one bucket: `(user, hash)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketRequest {
    pub bucket: u32,
    pub carts: Vec<(String, u64)>,
}

/// The callee's side of one bucket: its carts the caller lacks or holds
/// differently, and the users whose carts it wants from the caller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketResponse {
    pub carts: Vec<UserCart>,
    pub want: Vec<String>,
    /// More differing carts than one answer carries: ask again.
    pub more: bool,
}

/// A replica as it sees itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    pub actor: String,
    pub zone: String,
    pub carts: usize,
    /// Pending hints per intended zone.
    pub hints: std::collections::BTreeMap<String, usize>,
    /// Hints dropped because the store was full.
    pub hints_dropped: u64,
    /// Zones this replica considers down (it hints instead of pushing).
    pub down: Vec<String>,
}
