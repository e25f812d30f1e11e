//! Acting on a decision through the platform's instance start and stop.
//!
//! - **Out**: each new instance goes to the zone with the fewest live instances of
//!   the service *among the zones its placement rule allows* (ties round the
//!   regions, as the admin API's rule does), on a free port of
//!   the control plane's host, with the version of the newest instance (live or not:
//!   a replacement runs what died). It is found through discovery like any other
//!   instance.
//! - **In**: the newest live instances (by start order) stop gracefully:
//!   deregistered first, then drained for at most the configured drain.
//!
//! Only the instances of the control plane's own platform are counted and acted on:
//! instances another process runs (`casebook serve`) are not.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use casebook_kit::runtime::{InstanceSpec, InstanceView, Platform};
use casebook_kit::topology::{Placement, Topology};

use super::config::PlacementRule;
use crate::admin::instance_host;

/// The live (starting or running) instances of `service`, oldest first.
pub fn live(platform: &Platform, service: &str) -> Vec<InstanceView> {
    let mut live: Vec<InstanceView> = platform
        .list()
        .into_iter()
        .filter(|v| v.info.service == service && v.state.is_live())
        .collect();
    live.sort_by_key(|v| v.start_seq);
    live
}

/// The live instances of every service, by service.
pub fn live_counts(platform: &Platform) -> BTreeMap<String, u32> {
    let mut counts = BTreeMap::new();
    for view in platform.list().into_iter().filter(|v| v.state.is_live()) {
        *counts.entry(view.info.service).or_default() += 1;
    }
    counts
}

/// Whether this platform has run an instance of `service`, in any state (the
/// autoscaler scales and replaces what runs; it does not start a case).
pub fn ever_started(platform: &Platform, service: &str) -> bool {
    platform.list().iter().any(|v| v.info.service == service)
}

/// What an action did: the instances it started or stopped, and the first error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acted {
    pub instances: Vec<String>,
    pub error: Option<String>,
}

/// The rule `service` is placed by: `configured` when it names anything, else
/// `declared` (its case's spread), else the regions its instances (live or not)
/// run in, else anywhere.
pub fn placement_rule(
    platform: &Platform,
    service: &str,
    configured: &PlacementRule,
    declared: Option<&PlacementRule>,
) -> PlacementRule {
    if !configured.is_empty() {
        return configured.clone();
    }
    if let Some(declared) = declared.filter(|d| !d.is_empty()) {
        return declared.clone();
    }
    let mut regions: Vec<String> = platform
        .list()
        .into_iter()
        .filter(|v| v.info.service == service)
        .map(|v| v.info.region)
        .collect();
    regions.sort();
    regions.dedup();
    PlacementRule {
        regions,
        zones: Vec::new(),
    }
}

/// The allowed zone with the fewest live instances of `service`; ties go round the
/// regions before reusing one (see `Topology::spread`). An empty rule allows every
/// zone; `None` when the rule allows no zone of the topology.
pub fn least_loaded_allowed_zone(
    live: &[InstanceView],
    topology: &Topology,
    service: &str,
    rule: &PlacementRule,
) -> Option<Placement> {
    topology
        .placements()
        .enumerate()
        .filter(|(_, p)| rule.is_empty() || rule.allows(p))
        .min_by_key(|(n, p)| {
            let count = live
                .iter()
                .filter(|v| v.info.service == service && v.info.zone == p.zone && v.state.is_live())
                .count();
            (count, topology.spread(*n) != *p, *n)
        })
        .map(|(_, p)| p)
}

/// Starts `count` instances of `service` in the zones `rule` allows, one after the
/// other (each placement sees the ones before), stopping at the first failure.
pub async fn start(platform: &Platform, service: &str, count: u32, rule: &PlacementRule) -> Acted {
    let mut acted = Acted::default();
    for _ in 0..count {
        let Some(placement) =
            least_loaded_allowed_zone(&platform.list(), platform.topology(), service, rule)
        else {
            acted.error = Some(format!(
                "the placement (regions {:?}, zones {:?}) allows no zone of the topology",
                rule.regions, rule.zones
            ));
            break;
        };
        // The newest instance's version, live or not: a replacement runs what died.
        let version = platform
            .list()
            .into_iter()
            .filter(|v| v.info.service == service)
            .max_by_key(|v| v.start_seq)
            .map(|v| v.info.version)
            .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned());
        let spec = InstanceSpec {
            service: service.to_owned(),
            instance_id: None,
            placement,
            listen: SocketAddr::new(instance_host(platform), 0),
            version,
            port_hint: None,
        };
        match platform.start(spec).await {
            Ok(info) => acted.instances.push(info.instance_id),
            Err(error) => {
                acted.error = Some(error.to_string());
                break;
            }
        }
    }
    acted
}

/// Stops the `count` newest live instances of `service` gracefully, together.
pub async fn stop_newest(platform: &Platform, service: &str, count: u32, drain: Duration) -> Acted {
    let newest: Vec<String> = live(platform, service)
        .into_iter()
        .rev()
        .take(count as usize)
        .map(|v| v.info.instance_id)
        .collect();
    let stops = newest.iter().map(|id| platform.stop(id, drain));
    let reports = futures::future::join_all(stops).await;
    let mut acted = Acted::default();
    for (id, report) in newest.into_iter().zip(reports) {
        match report {
            Some(report) if !report.drained => {
                tracing::warn!(instance = %id, ?drain, "stopped by the autoscaler without draining in time");
                acted.instances.push(id);
            }
            Some(_) => acted.instances.push(id),
            None => {
                acted
                    .error
                    .get_or_insert(format!("instance `{id}` vanished before it was stopped"));
            }
        }
    }
    acted
}
