//! # casebook-uber
//!
//! The Uber case study (issue 6). Under construction, leaf modules first: this
//! slice holds the Redis-compatible GEO port — Redis's geo semantics and a
//! RESP2/RESP3 server — that the S2 index will later back.
//!
//! | module | role |
//! |---|---|
//! | [`geo`] | Redis's geohash scores, distances, search cells, and the [`geo::store::GeoStore`] trait with its sorted-set implementation |
//! | [`index`] | the live-driver index: latest-wins driver state, available drivers on S2 leaf cells in sharded ordered maps, k-nearest search, hot-shard splits and cold merges, batch ingest |
//! | [`resp`] | RESP2/RESP3: incremental request parser with Redis's limits and error wording, replies, the commands, the `geo-resp` server |

pub mod geo;
pub mod index;
pub mod resp;
