//! # casebook-uber
//!
//! The Uber case study: live driver locations in an S2 [`index`] fed
//! through the location outbox (the primary store, with snapshots for restarts:
//! [`locations`]), matching (greedy and batched, served by the index through
//! [`matching::NearbyDrivers`]), event-sourced [`trips`] with read models, surge
//! [`pricing`] as its own service (the API quotes through [`pricewire`] with a 1.0
//! fallback), the HTTP API on :8090 ([`api`], [`service`]) as one replica per
//! [`region`] with driver state gossiped over foca and regional autonomy during
//! partitions, a Redis-compatible GEO port whose `drivers` key is a live view of
//! the index ([`resp`], [`resp::live`]), and the [`load`] generator behind
//! `casebook load uber`.
//!
//! | module | role |
//! |---|---|
//! | [`api`] | the HTTP API: the router (one file per resource), wire types, error mapping, priority shedding |
//! | [`engine`] | one instance's engines: location ingest through the outbox, gossip-learned states, rides, offers, trips, read models, the rebuild at start |
//! | [`config`] | the `[uber]` table: ports (RESP :6380, API :8090, pricing :8091), limits and durations |
//! | [`fuzz_checks`] | the invariants of the gossip-datagram and location-snapshot fuzz targets, replayed on stable |
//! | [`geo`] | Redis's geohash scores, distances, search cells, and the [`geo::store::GeoStore`] trait with its sorted-set implementation |
//! | [`index`] | the live-driver index: latest-wins driver state, available drivers on S2 leaf cells in sharded ordered maps, k-nearest search, hot-shard splits and cold merges, batch ingest |
//! | [`locations`] | the primary store of locations (the outbox) with periodic index snapshots; the index's rebuild at start; the bus topic's retention |
//! | [`matching`] | ride requests → drivers: greedy by ETA or batched Kuhn–Munkres, the atomic driver claim, offers with timeout and re-match |
//! | [`region`] | cities → regions ([`region::RegionMap`]) and the regional replica's gossip ([`region::Replica`]: last-writer-wins driver registers over foca, reachability, the isolation switch) |
//! | [`pricing`] | surge pricing as its own service: demand and supply per S2 cell (level 12) over a sliding window, smoothed and capped; quotes; the `uber-pricing` HTTP service and [`pricing::PricingClient`] (resilience stack, fallback multiplier 1.0) |
//! | [`pricewire`] | the API's wire to pricing: quotes through [`pricing::PricingClient`], demand/supply signals on a bounded queue sent in batches by a background task |
//! | [`service`] | the `uber` service: the API on :8090 with its timers (matcher tick, index sweep and rebalance, relays) |
//! | [`trips`] | trips event-sourced on the kit's event store: transition table, replay, read models (trip, rider, earnings, city) |
//! | [`load`] | the `casebook load uber` engine: seeded generators (drivers on routes, Zipf hotspots, airport, stadium burst) and the open-loop runner against the API, request → match latency |
//! | [`resp`] | RESP2/RESP3: incremental request parser with Redis's limits and error wording, replies, the commands, the `geo-resp` server |

pub mod api;
pub mod case;
pub mod config;
pub mod engine;
#[doc(hidden)]
pub mod fuzz_checks;
pub mod geo;
pub mod index;
pub mod load;
pub mod locations;
pub mod matching;
pub mod pricewire;
pub mod pricing;
pub mod region;
pub mod resp;
pub mod service;
pub mod trips;
