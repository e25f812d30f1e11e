//! # casebook-control
//!
//! The control plane: the one service every other registers with. On port 7700 it
//! serves discovery (Eureka semantics), the Atlas-like metrics store and the
//! platform's admin API (topology, instances, start/stop/kill), plus a plain HTML
//! index of what runs where, and the autoscaler.
//!
//! | module | role |
//! |---|---|
//! | [`access`] | the installation's token and the `Host`/`Origin`/token layer every route sits behind |
//! | [`plane`] | the control plane as a service the platform runs |
//! | [`admin`] | `/`, `/api/topology`, `/api/services`, `/api/instances…` |
//! | [`discovery`] | the registry with Eureka's semantics and `/api/discovery/…` |
//! | [`metrics_store`] | the Atlas-like dimensional store and `/api/metrics/…` |
//! | [`autoscaler`] | reactive and scheduled scaling of any service, and `/api/autoscaler` |
//! | [`toxiproxy`] | the Toxiproxy-compatible fault proxy (its own port, 8474) and discovery steering |
//! | [`chaos`] | chaos experiments (Monkey, Gorilla, Kong, Latency) with steady-state hypotheses and rollback, and `/api/chaos` |
//! | [`deploy`] | canary deployments judged Kayenta's way, promotion and rollback, and `/api/deploys` |
//! | [`alerts`] | alert rules on the store's metrics with automated runbooks, and `/api/alerts` |

pub mod access;
pub mod admin;
pub mod alerts;
pub mod autoscaler;
pub mod chaos;
pub mod deploy;
pub mod discovery;
#[doc(hidden)]
pub mod fuzz_checks;
pub mod metrics_store;
pub mod plane;
pub mod toxiproxy;

pub use plane::{CONTROL_SERVICE, ControlConfig, ControlPlane, ControlSettings, PortRange};
