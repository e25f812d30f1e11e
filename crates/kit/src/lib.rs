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
//! | [`metrics_push`] | the metrics publish wire types and the pusher feeding the control plane |
//! | [`runtime`] | service instances as task groups: start, graceful stop, kill |

pub mod api;
pub mod clock;
pub mod http_client;
pub mod metrics_push;
pub mod runtime;
pub mod telemetry;
pub mod topology;
