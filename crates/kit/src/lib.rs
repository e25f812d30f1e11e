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
//! | [`http_client`] | a pooled HTTP/1.1 JSON client with timeouts and request-id propagation |
//! | [`api`] | JSON errors and a JSON body extractor that names the field at fault |
//! | [`telemetry`] | logs, request ids and trace context, `/health` and `/metrics` |
//! | [`resilience`] | breaker, bulkhead, fallback, timeout, retry budget, shedding, rate limit: tower layers |
//! | [`loadgen`] | an open-loop constant-rate load generator with HdrHistogram percentiles |
//! | [`runtime`] | service instances as task groups: start, graceful stop, kill |

pub mod api;
pub mod clock;
pub mod http_client;
pub mod loadgen;
pub mod resilience;
pub mod runtime;
pub mod telemetry;
pub mod topology;
