//! Canary deployments in Spinnaker's manner, judged Kayenta's way.
//!
//! `POST /api/deploys {"service", "version"}` (or `casebook deploy SERVICE --version
//! V`) starts a **baseline** (a fresh instance of the version the service runs) and a
//! **canary** (the new version) beside the service's instances, in the zone of its
//! oldest instance, each given a fixed share of the service's traffic through
//! discovery (the metadata `traffic_share`, which every caller's resolver honours —
//! see `casebook_kit::resolve`). After a warm-up, each analysis interval ends with a
//! judgement ([`judge`]) of the canary's request metrics against the baseline's, read
//! per instance from the metrics store ([`source`]) over the data since the analysis
//! began. A score below the marginal threshold rolls back at once; the last
//! interval's score promotes at the pass threshold and rolls back below it.
//! **Promotion** is a rolling update: each old instance in turn is replaced (the new
//! version started in its zone, then the old one stopped and drained), then canary
//! and baseline stop. **Rollback** stops canary and baseline; rolling back a
//! promotion (in progress or done) replaces the new version's instances with the
//! previous version the same way. A version can be declared a **bad build** with the
//! deploy (`bad_build: {latency, error_rate}`): its instances add that latency and
//! error rate to every response (`casebook_kit::runtime::bad_build`).
//!
//! | module | role |
//! |---|---|
//! | [`judge`] | the pure judge: Mann-Whitney U, Hodges-Lehmann, classification, scoring |
//! | [`config`] | the `[deploy]` table, validated naming the dotted key |
//! | [`source`] | per-instance samples from the metrics store ([`CanaryMetrics`]; a fed one for tests) |
//! | [`fleet`] | starting, stopping and weighting instances ([`Fleet`]; the platform's in production) |
//! | [`plan`] | a deploy as data and the pure rules of its next step |
//! | [`engine`] | [`Deployer`]: the deploys, one step per deploy per tick, the records, the loop |
//! | [`api`] | `/api/deploys…` |
//!
//! **Guaranteed.** At most one deploy per service is in progress, and at most
//! [`config::MAX_ACTIVE`] in all. Each tick advances each deploy by at most one step,
//! decided by a pure function of the deploy, the live instances and the injected
//! clock, so the orchestration is tested on a `ManualClock` with a fake fleet and fed
//! metrics. Every step is recorded with its wall time and its reason (at most
//! [`plan::MAX_STEPS`] per deploy); finished deploys are kept newest first, at most
//! `deploy.history`. Counted: `deploys_total{service,outcome}`,
//! `deploy_steps_total{service,step}`, `deploy_canary_score{service}`,
//! `deploys_active`. A rollback request wins over the conclusion of a step running
//! while it arrives.
//!
//! **Not guaranteed.** The deployer is in memory: a restarted control plane forgets
//! its deploys (their instances keep running). Instances other processes run
//! (`casebook serve`) are neither canaried nor replaced. A traffic share holds for
//! callers that resolve through discovery, within their resolver's cache TTL (5 s);
//! callers pinned to an address are not moved. Time spent starting and draining is
//! real time inside a tick.

pub mod api;
pub mod config;
pub mod engine;
pub mod fleet;
pub mod judge;
pub mod plan;
pub mod source;

pub use config::DeployConfig;
pub use engine::{
    ACTIVE_METRIC, DEPLOYS_METRIC, DeployError, DeployRequest, Deployer, DeployerView,
    SCORE_METRIC, STEPS_METRIC,
};
pub use fleet::{Fleet, Member, PlatformFleet};
pub use plan::{Deploy, Outcome, Phase};
pub use source::{CanaryMetrics, FedMetrics, StoreMetrics};
