//! A Toxiproxy-compatible fault proxy, served by the control plane on its own port
//! (`[control] toxiproxy_port`, default 8474), plus what Toxiproxy lacks: steering
//! the platform's own service calls through a proxy by way of discovery.
//!
//! | module | role |
//! |---|---|
//! | [`api`] | Toxiproxy 2.x's HTTP API: paths, JSON, status codes, error bodies |
//! | [`model`] | the JSON: requests parsed with errors naming the field, answers |
//! | [`collection`] | [`Toxiproxy`]: proxies and toxics, every operation, the rewrites feed |
//! | [`proxy`] | a listening proxy: accept loop, connection bound, upstream connect |
//! | [`link`] | one connection: two directions, each reader → bounded queue → writer |
//! | [`toxics`] | what each toxic does, as pure functions of data and instants |
//! | [`front`] | [`Toxiproxy::front_service`] / [`Toxiproxy::unfront`], for chaos experiments |
//!
//! Guarantees:
//! - Every toxic of Toxiproxy 2.x (latency, bandwidth, slow_close, timeout,
//!   reset_peer, slicer, limit_data) with its attributes, `stream` and `toxicity`;
//!   adding, changing or removing a toxic applies to live connections at once.
//! - Steering: while a proxy is enabled and has at least one toxic, discovery's
//!   service query answers the proxy's address for any instance registered at the
//!   proxy's `upstream` (metadata `proxied_by`, `proxied_from` say so); without
//!   toxics, or disabled, or deleted, the instance's own address again. Callers'
//!   caches (the kit's resolver: 5 s) delay both by up to their lifetime.
//! - Data is never reordered or duplicated; toxics only delay, cut, truncate or drop.
//! - Proxies listen on loopback only, unless `control.allow_insecure_bind`.
//!
//! Bounds ([`Limits`]): 256 proxies, 1024 connections at once per proxy (a client
//! beyond is closed at accept), 32 toxics per proxy, request bodies of 256 KiB; per
//! connection and direction at most 16 chunks of 32 KiB queued (then TCP
//! back-pressure) plus the chunk being written.
//!
//! Not guaranteed: state across restarts (proxies live in memory, as Toxiproxy's
//! do); the exact timing of delays under load (timers are tokio's, the scheduler
//! may add to them); half-closes pass through as half-closes, where Toxiproxy
//! closes the whole connection. `docs/notes/control/toxiproxy.md` lists every
//! difference from Toxiproxy 2.x.

pub mod api;
pub mod collection;
pub mod error;
pub mod front;
pub mod link;
pub mod model;
pub mod proxy;
pub mod toxics;

pub use collection::{Limits, Toxiproxy};
pub use error::ToxiError;
pub use front::{FrontedInstance, Fronting, ProxyInjector};
pub use model::{ProxyJson, ProxySpec, Stream, ToxicJson, ToxicKind, ToxicSpec};

/// The port the API listens on unless configured otherwise (Toxiproxy's).
pub const DEFAULT_PORT: u16 = 8474;
