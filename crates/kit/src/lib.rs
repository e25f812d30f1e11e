//! # casebook-kit
//!
//! The primitives and patterns the four case studies are built from, written once.
//! Every module here is case-agnostic: nothing in `kit` knows about Netflix, Uber,
//! Amazon or WhatsApp, and no case crate is a dependency of `kit`.
//!
//! | module | role |
//! |---|---|
//! | [`clock`] | the injected clock every time-driven rule runs on |
//! | [`topology`] | regions × zones, and the identity of a service instance |
//! | [`ports`] | port plans (`base + stride × region`), checked against 65535 in one place |
//! | [`config`] | the typed configuration error that names the dotted key |
//! | [`http_client`] | a pooled HTTP/1.1 JSON client with timeouts and request-id propagation |
//! | [`api`] | JSON errors and a JSON body extractor that names the field at fault |
//! | [`discovery`] | the discovery client, its lease keeper, and the discovery API's JSON |
//! | [`resolve`] | how instances find each other: discovery, zone-aware, cached |
//! | [`case`] | the face of a case: its services, their port plans and placement, the registry the binary iterates |
//! | [`telemetry`] | logs, request ids and trace context, `/health` and `/metrics` |
//! | [`resilience`] | breaker, bulkhead, fallback, timeout, retry budget, shedding, rate limit: tower layers |
//! | [`loadgen`] | an open-loop constant-rate load generator with HdrHistogram percentiles |
//! | [`metrics_push`] | the metrics publish wire types and the pusher feeding the control plane |
//! | [`runtime`] | service instances as task groups: start, graceful stop, kill |
//! | [`partition`] | stable hashing, jump/rendezvous node assignment, a splitting shard map |
//! | [`locks`] | sharded locks, sync and async, deadlock-free multi-key acquisition |
//! | [`cache`] | moka (TinyLFU) with TTL/TTI on the injected clock and hit/miss metrics |
//! | [`wal`] | write-ahead log: CRC-framed segments, group commit, torn-tail recovery |
//! | [`event_store`] | event-sourced aggregates (optimistic concurrency, snapshots) and projections |
//! | [`events`] | event envelope, the bus trait, an embedded durable bus on the WAL, dedup |
//! | [`outbox`] | a domain change and its events committed atomically, and the relay that publishes them |
//! | [`idempotency`] | idempotency keys (Stripe / IETF semantics), durable on the WAL, as API and tower layer |

pub mod api;
pub mod cache;
pub mod case;
pub mod clock;
pub mod config;
pub mod discovery;
pub mod event_store;
pub mod events;
#[doc(hidden)]
pub mod fuzz_checks;
pub mod http_client;
pub mod idempotency;
pub mod loadgen;
pub mod locks;
pub mod metrics_push;
pub mod outbox;
pub mod partition;
pub mod ports;
pub mod resilience;
pub mod resolve;
pub mod runtime;
pub mod sampling;
pub mod telemetry;
pub mod topology;
pub mod wal;
