//! Chaos experiments: Chaos Monkey, Gorilla, Kong and Latency Monkey, each judged
//! by a steady-state hypothesis over the metrics store and always rolled back.
//!
//! | module | role |
//! |---|---|
//! | [`probe`] | the hypothesis: probes (success ratio, latency percentile, request rate, any metric) with tolerances and abort limits; [`probe::Measure`] and its store implementation |
//! | [`fault`] | the [`Fault`] trait and the kinds: `monkey` (random terminations), `gorilla` (a zone), `kong` (a region out of discovery), `latency` (through [`LatencyInjector`]) |
//! | [`latency`] | [`LatencySpec`] and the [`LatencyInjector`] seam the fault proxy implements |
//! | [`experiment`] | the spec, the run (before → inject → during → rollback → after) and the record |
//! | [`monkey`] | Chaos Monkey in Netflix's model: `[chaos.monkey]`, the per-day schedule on the injected clock |
//! | [`engine`] | [`Chaos`]: experiments with a bounded history, the monkey daemon |
//! | [`api`] | `/api/chaos/…` |
//!
//! **Guaranteed.** An experiment never targets the control plane (refused with
//! 400) and never kills it (Gorilla spares it, Kong exempts it); an unknown
//! service, zone or region is a 404 naming it; a fault is rolled back on every way
//! out of its run — its end, an abort limit, an operator's abort, a failed
//! injection, the control plane's graceful shutdown; at most `chaos.max_running`
//! experiments run at once and at most `chaos.history` finished ones are kept (each
//! with at most 256 timeline entries); the monkey's decisions are bounded too (512).
//!
//! **Not guaranteed.** Rollback after the control plane itself is killed (its
//! discovery overrides die with it; a fault proxy's toxics would stay); that a
//! zone's replacements avoid the dead zone (the autoscaler places by load, and a
//! zone emptied by Gorilla is the least loaded); evacuation for clients that do
//! not resolve through discovery (load generators and XMPP clients dial fixed
//! addresses, so Kong moves service-to-service calls only). Probes read the
//! servers' request metrics: a request refused before reaching a server is not in
//! them.

pub mod api;
pub mod engine;
pub mod experiment;
pub mod fault;
pub mod latency;
pub mod monkey;
pub mod probe;

pub use engine::{Chaos, ChaosConfig, MonkeyView, StartError};
pub use experiment::{ExperimentRecord, ExperimentSpec, ProbeResult, Status};
pub use fault::{Fault, FaultEnv, FaultError, FaultSpec};
pub use latency::{InjectError, LatencyHandle, LatencyInjector, LatencySpec, RecordingInjector};
pub use monkey::MonkeyConfig;
pub use probe::{Measure, Probe, ProbeKind, StoreMeasure};

#[cfg(test)]
mod tests;
