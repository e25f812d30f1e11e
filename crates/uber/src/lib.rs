//! # casebook-uber
//!
//! The Uber case study (issue 6). Under construction, leaf modules first: this
//! slice holds the Redis-compatible GEO port — Redis's geo semantics and a
//! RESP2/RESP3 server — that the S2 index will later back.
//!
//! | module | role |
//! |---|---|
//! | [`geo`] | Redis's geohash scores, distances, search cells, and the [`geo::store::GeoStore`] trait with its sorted-set implementation |
//! | [`matching`] | ride requests → drivers: greedy by ETA or batched Kuhn–Munkres, the atomic driver claim, offers with timeout and re-match |
//! | [`trips`] | trips event-sourced on the kit's event store: transition table, replay, read models (trip, rider, earnings, city) |
//! | [`resp`] | RESP2/RESP3: incremental request parser with Redis's limits and error wording, replies, the commands, the `geo-resp` server |

pub mod geo;
pub mod matching;
pub mod resp;
pub mod trips;
