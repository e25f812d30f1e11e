//! # casebook-uber
//!
//! The Uber case study (issue 6). Under construction, engines first: the
//! Redis-compatible GEO port (Redis's geo semantics and a RESP2/RESP3 server), the
//! live-driver S2 index, matching (greedy and batched, served by the index through
//! [`matching::NearbyDrivers`]), event-sourced trips, surge [`pricing`] as its own
//! service (the API quotes through [`pricewire`] with a 1.0 fallback), and the HTTP
//! API on :8090 ([`api`], [`service`]), driven by the [`workload`] generator behind
//! `casebook load uber`, [`region`]s: one replica per region, driver state
//! gossiped over foca, regional autonomy during partitions; the RESP port's
//! `drivers` key is a live view of the driver index ([`resp::live`]).
//!
//! | module | role |
//! |---|---|
//! | [`api`] | the HTTP API engine and router: location ingest through the outbox, rides, offers, trip commands, read models, priority shedding |
//! | [`config`] | the `[uber]` table: ports (RESP :6380, API :8090, pricing :8091) and limits |
//! | [`geo`] | Redis's geohash scores, distances, search cells, and the [`geo::store::GeoStore`] trait with its sorted-set implementation |
//! | [`index`] | the live-driver index: latest-wins driver state, available drivers on S2 leaf cells in sharded ordered maps, k-nearest search, hot-shard splits and cold merges, batch ingest |
//! | [`matching`] | ride requests → drivers: greedy by ETA or batched Kuhn–Munkres, the atomic driver claim, offers with timeout and re-match |
//! | [`region`] | cities → regions ([`region::RegionMap`]) and the regional replica's gossip ([`region::Replica`]: last-writer-wins driver registers over foca, reachability, the isolation switch) |
//! | [`pricing`] | surge pricing as its own service: demand and supply per S2 cell (level 12) over a sliding window, smoothed and capped; quotes; the `pricing` HTTP service and [`pricing::PricingClient`] (resilience stack, fallback multiplier 1.0) |
//! | [`pricewire`] | the API's wire to pricing: quotes through [`pricing::PricingClient`], demand/supply signals on a bounded queue sent in batches by a background task |
//! | [`service`] | the `uber` service: the API on :8090 with its timers (matcher tick, index sweep and rebalance, relays) |
//! | [`trips`] | trips event-sourced on the kit's event store: transition table, replay, read models (trip, rider, earnings, city) |
//! | [`workload`] | the `casebook load uber` engine: seeded generators (drivers on routes, Zipf hotspots, airport, stadium burst) and the open-loop runner against the API, request → match latency |
//! | [`resp`] | RESP2/RESP3: incremental request parser with Redis's limits and error wording, replies, the commands, the `geo-resp` server |

pub mod api;
pub mod config;
pub mod geo;
pub mod index;
pub mod locations;
pub mod matching;
pub mod pricewire;
pub mod pricing;
pub mod region;
pub mod resp;
pub mod service;
pub mod trips;
pub mod workload;
