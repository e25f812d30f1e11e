//! The registry: leases, eviction and self-preservation, with Eureka's semantics.
//!
//! Everything here is synchronous and reads time only from the injected
//! [`SharedClock`], so tests drive it on a `ManualClock` and call the periodic work
//! ([`Registry::evict`], [`Registry::update_renewal_threshold`],
//! [`Registry::run_due_maintenance`]) directly.
//!
//! ## Semantics
//!
//! - **Leases.** A lease is expired when `now > last_renewal + lease_duration`:
//!   at exactly the lease duration it still holds, a moment later it is expired.
//!   Eureka's `Lease.renew()` sets `lastUpdateTimestamp = now + duration` and
//!   `isExpired()` then adds the duration again, so Eureka instances actually expire
//!   after *twice* the lease (a bug its maintainers documented and kept for
//!   compatibility); that is deliberately not copied.
//! - **Registration** replaces an existing registration of the same
//!   `(service, instance_id)`, refreshes its lease and keeps its first-registration
//!   time and any status override. A new instance adds one to the expected clients.
//! - **Status.** The effective status is the operator's override if one is set, except
//!   that an instance reporting `DOWN` or `STARTING` is believed over an override
//!   (Eureka's `DownOrStartingRule`). Cancelling drops the override.
//! - **Region overrides.** An operator (Chaos Kong) may override the status of a
//!   whole region: every instance placed there, registered now or later, reads the
//!   region's status (over its own override; `DOWN`/`STARTING` still believed),
//!   except the services the override exempts (the control plane). Dropping the
//!   region override restores each instance's own status. At most one per region.
//!   With the platform's flags attached ([`Registry::attach_evacuations`]) an
//!   override of any status but `UP` also marks the region evacuated, and
//!   dropping it clears the flag: the one place the flag is set.
//! - **Eviction.** One run evicts at most `size − floor(size × eviction_limit_fraction)`
//!   expired instances, so a mass expiry drains over several runs. Eureka picks the
//!   victims at random; here the longest-expired go first (ties by service, then
//!   instance id), so runs are reproducible. Eviction does not lower the expected
//!   clients (as in Eureka: only cancels do, and the periodic recompute).
//! - **Self-preservation.** Expected renewals per minute are
//!   `expected_clients × 60 / renew_interval`, the threshold is
//!   `floor(that × renewal_threshold)`. Renewals are counted per minute of the
//!   registry's clock like Eureka's `MeasuredRate`: the rate is the count of the last
//!   *complete* minute. Eviction of expired leases stops while
//!   `renews_last_minute <= threshold` or the threshold is 0 — Eureka's
//!   `isLeaseExpirationEnabled` allows expiry only when renewals are strictly above a
//!   positive threshold, and this keeps that. Consequences worth knowing: for the
//!   first minute after start nothing is evicted, and a registry of one or two
//!   instances stays in self-preservation once they die. Switch it off with
//!   `self_preservation = false`.
//! - **Threshold recompute** (every `threshold_update_interval`, as Eureka's
//!   `updateRenewalThreshold`): the expected clients become the current instance
//!   count only if that count is above `renewal_threshold ×` the current expectation,
//!   or self-preservation is off — so a mass loss does not quietly lower the bar.
//!
//! Not guaranteed: persistence (a restarted registry is empty; clients re-register on
//! their next renewal's 404), and fairness of eviction between services.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use casebook_kit::clock::SharedClock;
use casebook_kit::discovery::{
    Applications, DiscoveryStatus, InstanceView, Registration, ServiceInstances,
};
use casebook_kit::resolve::TRAFFIC_SHARE_KEY;
use casebook_kit::runtime::Evacuations;
use casebook_kit::topology::{InstanceInfo, InstanceStatus, Topology};
use parking_lot::Mutex;

use super::rewrites::AddressRewrites;
use super::{ConfigError, DiscoveryConfig};

/// The longest lease a registration may ask for.
pub const MAX_LEASE_SECS: u64 = 24 * 3600;
/// The most metadata entries one instance may carry.
pub const MAX_METADATA_ENTRIES: usize = 32;
/// The longest metadata key.
pub const MAX_METADATA_KEY: usize = 64;
/// The longest metadata value.
pub const MAX_METADATA_VALUE: usize = 512;
/// The most instances with a traffic share set by the control plane.
pub const MAX_TRAFFIC_SHARES: usize = 64;
/// The longest instance id.
pub const MAX_INSTANCE_ID: usize = 128;
/// The longest service name.
pub const MAX_SERVICE_NAME: usize = 63;
/// The longest version string.
pub const MAX_VERSION: usize = 64;

/// Why the registry refused an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// No such instance (never registered, cancelled or evicted).
    #[error("no instance `{instance_id}` of service `{service}` is registered")]
    NotFound {
        service: String,
        instance_id: String,
    },
    /// A request value is unusable; `field` is its dotted path in the request.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// The registry holds `max_instances` already.
    #[error("the registry is full ({limit} instances)")]
    Full { limit: usize },
    /// One service, or one caller, holds its share already.
    #[error(
        "{scope} holds {limit} registered instances already (discovery.{key}); cancel some first"
    )]
    TooMany {
        /// What is at its bound, e.g. ``service `chat` `` or `caller 10.0.0.7`.
        scope: String,
        /// The configuration key of the bound.
        key: &'static str,
        limit: usize,
    },
}

impl RegistryError {
    fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Whether a registration created an instance or replaced one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    New,
    Replaced,
}

/// What one eviction run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EvictionReport {
    /// Expired leases found.
    pub expired: usize,
    /// The most this run was allowed to evict.
    pub limit: usize,
    /// `(service, instance_id)` of those evicted, in eviction order.
    pub evicted: Vec<(String, String)>,
    /// Self-preservation held, so nothing was evicted.
    pub self_preservation: bool,
}

/// One registration's lease.
#[derive(Debug, Clone)]
struct Lease {
    info: InstanceInfo,
    /// The address that registered it, counted against `max_instances_per_source`.
    source: Option<IpAddr>,
    reported_status: InstanceStatus,
    overridden_status: Option<InstanceStatus>,
    metadata: BTreeMap<String, String>,
    duration: Duration,
    registered_at_ms: u64,
    last_renewal: Instant,
    last_renewal_ms: u64,
}

/// A status set for every instance of a region (Chaos Kong's evacuation).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RegionOverride {
    pub region: String,
    pub status: InstanceStatus,
    /// Services left alone (the control plane).
    pub exempt: Vec<String>,
    /// Wall milliseconds when it was set.
    pub since_ms: u64,
}

impl RegionOverride {
    fn applies_to(&self, info: &InstanceInfo) -> Option<InstanceStatus> {
        (info.region == self.region && !self.exempt.contains(&info.service)).then_some(self.status)
    }
}

impl Lease {
    fn status(&self, region: Option<&RegionOverride>) -> InstanceStatus {
        let region = region.and_then(|r| r.applies_to(&self.info));
        match (self.reported_status, region, self.overridden_status) {
            // An instance saying it is down or starting knows best.
            (reported @ (InstanceStatus::Down | InstanceStatus::Starting), _, _) => reported,
            (_, Some(region), _) => region,
            (_, None, Some(overridden)) => overridden,
            (reported, None, None) => reported,
        }
    }

    /// How long past its expiry the lease is at `now`, if it is expired.
    fn overdue(&self, now: Instant) -> Option<Duration> {
        // A lease too long to represent never expires (durations are bounded anyway).
        let expires = self.last_renewal.checked_add(self.duration)?;
        (now > expires).then(|| now - expires)
    }

    fn view(&self, region: Option<&RegionOverride>) -> InstanceView {
        InstanceView {
            instance: self.info.clone(),
            status: self.status(region),
            overridden_status: self.overridden_status,
            metadata: self.metadata.clone(),
            lease_duration_ms: u64::try_from(self.duration.as_millis()).unwrap_or(u64::MAX),
            registered_at_ms: self.registered_at_ms,
            last_renewed_at_ms: self.last_renewal_ms,
        }
    }
}

/// Renewals counted per minute of the clock, keeping the last complete minute
/// (Eureka's `MeasuredRate` with a one-minute bucket).
#[derive(Debug, Clone)]
struct MinuteRate {
    origin: Instant,
    current_minute: u64,
    current: u64,
    last: u64,
}

impl MinuteRate {
    fn new(origin: Instant) -> Self {
        Self {
            origin,
            current_minute: 0,
            current: 0,
            last: 0,
        }
    }

    fn roll(&mut self, now: Instant) {
        let minute = now.saturating_duration_since(self.origin).as_secs() / 60;
        // Callers read the clock under the registry's lock, so time only moves
        // forward here; an earlier minute would still count into the current one.
        if minute <= self.current_minute {
            return;
        }
        // The bucket just closed is the last minute only if no minute passed silently.
        self.last = if minute == self.current_minute + 1 {
            self.current
        } else {
            0
        };
        self.current = 0;
        self.current_minute = minute;
    }

    fn record(&mut self, now: Instant) {
        self.roll(now);
        self.current += 1;
    }

    fn last_minute(&mut self, now: Instant) -> u64 {
        self.roll(now);
        self.last
    }
}

#[derive(Debug)]
struct State {
    services: BTreeMap<String, BTreeMap<String, Lease>>,
    size: usize,
    /// Leases per registering address; an address with none has no entry.
    per_source: HashMap<IpAddr, usize>,
    expected_clients: u64,
    renewal_threshold: u64,
    renews: MinuteRate,
    evictions_total: u64,
    last_eviction_run: Instant,
    last_threshold_update: Instant,
    /// Traffic shares the deployer set, by (service, instance id): written into the
    /// instance's metadata now and at every (re-)registration. At most
    /// [`MAX_TRAFFIC_SHARES`].
    shares: BTreeMap<(String, String), f64>,
    /// Region-wide status overrides, by region (at most one per region).
    region_overrides: BTreeMap<String, RegionOverride>,
}

/// Whether a region override with `status` evacuates its region: any status but
/// `UP` sends callers away.
fn evacuates(status: InstanceStatus) -> bool {
    status != InstanceStatus::Up
}

impl State {
    fn region_override(&self, info: &InstanceInfo) -> Option<&RegionOverride> {
        self.region_overrides.get(&info.region)
    }
}

/// The discovery registry. Cheap to share behind an `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct Registry {
    config: DiscoveryConfig,
    topology: Topology,
    clock: SharedClock,
    state: Mutex<State>,
    /// Proxies steering service queries (see [`super::rewrites`]).
    rewrites: AddressRewrites,
    /// The platform's region flags, kept equal to the region overrides: an
    /// override with any status but `UP` marks its region evacuated.
    evacuations: std::sync::OnceLock<Evacuations>,
}

impl Registry {
    /// An empty registry. Fails if the configuration or topology is unusable.
    pub fn new(
        config: DiscoveryConfig,
        topology: Topology,
        clock: SharedClock,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        topology.validate().map_err(|err| ConfigError {
            key: "topology",
            reason: err.to_string(),
        })?;
        let now = clock.now();
        Ok(Self {
            config,
            topology,
            clock,
            rewrites: AddressRewrites::new(),
            evacuations: std::sync::OnceLock::new(),
            state: Mutex::new(State {
                services: BTreeMap::new(),
                size: 0,
                per_source: HashMap::new(),
                expected_clients: 0,
                renewal_threshold: 0,
                renews: MinuteRate::new(now),
                evictions_total: 0,
                last_eviction_run: now,
                last_threshold_update: now,
                region_overrides: BTreeMap::new(),
                shares: BTreeMap::new(),
            }),
        })
    }

    /// Keeps `evacuations` equal to this registry's region overrides from now on
    /// (set once; the control plane hands it the platform's). The flags are set
    /// to the overrides now: a fresh registry has none, so a restarted control
    /// plane clears what its predecessor left.
    pub fn attach_evacuations(&self, evacuations: Evacuations) {
        let now: Vec<(String, bool)> = {
            let state = self.state.lock();
            self.topology
                .regions
                .iter()
                .map(|r| {
                    let out = state
                        .region_overrides
                        .get(&r.name)
                        .is_some_and(|o| evacuates(o.status));
                    (r.name.clone(), out)
                })
                .collect()
        };
        for (region, out) in now {
            evacuations.set(&region, out);
        }
        let _ = self.evacuations.set(evacuations);
    }

    /// The configuration the registry runs with.
    pub fn config(&self) -> &DiscoveryConfig {
        &self.config
    }

    /// The address rewrites applied to [`Registry::instances`]: a fault proxy in
    /// front of an instance feeds it.
    pub fn rewrites(&self) -> &AddressRewrites {
        &self.rewrites
    }

    /// The topology registrations and queries are checked against.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Instances registered now.
    pub fn len(&self) -> usize {
        self.state.lock().size
    }

    /// Whether no instance is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Registers an instance, or replaces its registration (keeping its
    /// first-registration time and status override), from no particular caller.
    pub fn register(&self, registration: Registration) -> Result<Registered, RegistryError> {
        self.register_from(registration, None)
    }

    /// [`Registry::register`] on behalf of the caller at `source`: a new instance is
    /// refused when its service holds `max_instances_per_service` or the caller
    /// `max_instances_per_source` already (re-registrations always pass).
    pub fn register_from(
        &self,
        registration: Registration,
        source: Option<IpAddr>,
    ) -> Result<Registered, RegistryError> {
        self.validate(&registration)?;
        let Registration {
            instance,
            status,
            lease_duration_secs,
            metadata,
        } = registration;
        let duration = lease_duration_secs
            .map(Duration::from_secs)
            .unwrap_or(self.config.lease_duration);
        let mut state = self.state.lock();
        // Read under the lock, so time never runs backwards between writers.
        let (now, now_ms) = (self.clock.now(), self.clock.wall_millis());
        let state = &mut *state;
        let existing = state
            .services
            .get(&instance.service)
            .and_then(|leases| leases.get(&instance.instance_id));
        let (registered_at_ms, overridden_status, outcome) = match existing {
            Some(old) => (
                old.registered_at_ms,
                old.overridden_status,
                Registered::Replaced,
            ),
            None => {
                if state.size >= self.config.max_instances {
                    return Err(RegistryError::Full {
                        limit: self.config.max_instances,
                    });
                }
                let of_service = state
                    .services
                    .get(&instance.service)
                    .map_or(0, BTreeMap::len);
                if of_service >= self.config.max_instances_per_service {
                    return Err(RegistryError::TooMany {
                        scope: format!("service `{}`", instance.service),
                        key: "max_instances_per_service",
                        limit: self.config.max_instances_per_service,
                    });
                }
                if let Some(source) = source
                    && state.per_source.get(&source).copied().unwrap_or(0)
                        >= self.config.max_instances_per_source
                {
                    return Err(RegistryError::TooMany {
                        scope: format!("caller {source}"),
                        key: "max_instances_per_source",
                        limit: self.config.max_instances_per_source,
                    });
                }
                (now_ms, None, Registered::New)
            }
        };
        let mut metadata = metadata;
        // Only the deployer gives traffic shares: an instance cannot claim one.
        metadata.remove(TRAFFIC_SHARE_KEY);
        if let Some(share) = state
            .shares
            .get(&(instance.service.clone(), instance.instance_id.clone()))
        {
            metadata.insert(TRAFFIC_SHARE_KEY.to_owned(), share.to_string());
        }
        let lease = Lease {
            source,
            reported_status: status,
            overridden_status,
            metadata,
            duration,
            registered_at_ms,
            last_renewal: now,
            last_renewal_ms: now_ms,
            info: instance,
        };
        if let Some(source) = source {
            *state.per_source.entry(source).or_default() += 1;
        }
        let replaced = state
            .services
            .entry(lease.info.service.clone())
            .or_default()
            .insert(lease.info.instance_id.clone(), lease);
        if let Some(old) = replaced {
            forget_source(state, old.source);
        }
        if outcome == Registered::New {
            state.size += 1;
            state.expected_clients += 1;
            self.recompute_threshold(state);
        }
        check_invariants(state);
        metrics::counter!("discovery_registrations_total").increment(1);
        metrics::gauge!("discovery_instances").set(state.size as f64);
        Ok(outcome)
    }

    /// Renews an instance's lease; [`RegistryError::NotFound`] tells the client to
    /// register again.
    pub fn renew(&self, service: &str, instance_id: &str) -> Result<(), RegistryError> {
        let mut state = self.state.lock();
        // Read under the lock, so time never runs backwards between writers.
        let (now, now_ms) = (self.clock.now(), self.clock.wall_millis());
        let state = &mut *state;
        let Some(lease) = state
            .services
            .get_mut(service)
            .and_then(|leases| leases.get_mut(instance_id))
        else {
            metrics::counter!("discovery_renewals_unknown_total").increment(1);
            return Err(not_found(service, instance_id));
        };
        lease.last_renewal = now;
        lease.last_renewal_ms = now_ms;
        state.renews.record(now);
        metrics::counter!("discovery_renewals_total").increment(1);
        Ok(())
    }

    /// Removes an instance (graceful stop); one fewer client is expected to renew.
    pub fn cancel(&self, service: &str, instance_id: &str) -> Result<(), RegistryError> {
        let mut state = self.state.lock();
        let state = &mut *state;
        remove(state, service, instance_id).ok_or_else(|| not_found(service, instance_id))?;
        state.expected_clients = state.expected_clients.saturating_sub(1);
        self.recompute_threshold(state);
        check_invariants(state);
        metrics::counter!("discovery_cancels_total").increment(1);
        metrics::gauge!("discovery_instances").set(state.size as f64);
        Ok(())
    }

    /// Sets (`Some`) or clears (`None`) an operator's status override.
    pub fn override_status(
        &self,
        service: &str,
        instance_id: &str,
        status: Option<InstanceStatus>,
    ) -> Result<InstanceView, RegistryError> {
        let mut state = self.state.lock();
        let lease = state
            .services
            .get_mut(service)
            .and_then(|leases| leases.get_mut(instance_id))
            .ok_or_else(|| not_found(service, instance_id))?;
        lease.overridden_status = status;
        let view = lease.view(None);
        metrics::counter!("discovery_status_overrides_total").increment(1);
        let region = state.region_override(&view.instance).cloned();
        Ok(InstanceView {
            status: lease_status(&view, region.as_ref()),
            ..view
        })
    }

    /// Sets (`Some`) or clears (`None`) a status for every instance of `region`
    /// but those of the `exempt` services; returns the override it replaced.
    /// An unknown region is [`RegistryError::Invalid`] naming `region`.
    pub fn override_region(
        &self,
        region: &str,
        status: Option<InstanceStatus>,
        exempt: Vec<String>,
    ) -> Result<Option<RegionOverride>, RegistryError> {
        if self.topology.region_index(region).is_none() {
            return Err(RegistryError::invalid(
                "region",
                format!("`{region}` is not a region of the topology"),
            ));
        }
        let since_ms = self.clock.wall_millis();
        let mut state = self.state.lock();
        metrics::counter!("discovery_region_overrides_total").increment(1);
        // Under the registry's lock, so two overrides of one region leave the
        // flag as the later one says (a watch send never blocks).
        if let Some(evacuations) = self.evacuations.get() {
            evacuations.set(region, status.is_some_and(evacuates));
        }
        Ok(match status {
            Some(status) => state.region_overrides.insert(
                region.to_owned(),
                RegionOverride {
                    region: region.to_owned(),
                    status,
                    exempt,
                    since_ms,
                },
            ),
            None => state.region_overrides.remove(region),
        })
    }

    /// Every region override in force, by region.
    pub fn region_overrides(&self) -> Vec<RegionOverride> {
        self.state
            .lock()
            .region_overrides
            .values()
            .cloned()
            .collect()
    }

    /// Gives an instance (registered or yet to register) a fixed share of its
    /// service's traffic (`Some`, `0..=1`), or takes it away (`None`): the deployer's
    /// canary and baseline. Kept across re-registrations until cleared.
    pub fn set_traffic_share(
        &self,
        service: &str,
        instance_id: &str,
        share: Option<f64>,
    ) -> Result<(), RegistryError> {
        let mut state = self.state.lock();
        let key = (service.to_owned(), instance_id.to_owned());
        match share {
            Some(share) => {
                if !(0.0..=1.0).contains(&share) {
                    return Err(RegistryError::invalid("share", "must be between 0 and 1"));
                }
                if state.shares.len() >= MAX_TRAFFIC_SHARES && !state.shares.contains_key(&key) {
                    return Err(RegistryError::TooMany {
                        scope: "traffic shares".into(),
                        key: "traffic_shares",
                        limit: MAX_TRAFFIC_SHARES,
                    });
                }
                state.shares.insert(key, share);
            }
            None => {
                state.shares.remove(&key);
            }
        }
        if let Some(lease) = state
            .services
            .get_mut(service)
            .and_then(|leases| leases.get_mut(instance_id))
        {
            match share {
                Some(share) => lease
                    .metadata
                    .insert(TRAFFIC_SHARE_KEY.to_owned(), share.to_string()),
                None => lease.metadata.remove(TRAFFIC_SHARE_KEY),
            };
        }
        Ok(())
    }

    /// One instance, if registered.
    pub fn get(&self, service: &str, instance_id: &str) -> Option<InstanceView> {
        let state = self.state.lock();
        state
            .services
            .get(service)
            .and_then(|leases| leases.get(instance_id))
            .map(|lease| lease.view(state.region_override(&lease.info)))
    }

    /// Every instance, whatever its status, grouped by service.
    pub fn all(&self) -> Applications {
        let state = self.state.lock();
        Applications {
            services: state
                .services
                .iter()
                .map(|(service, leases)| {
                    let views = leases
                        .values()
                        .map(|lease| lease.view(state.region_override(&lease.info)))
                        .collect();
                    (service.clone(), views)
                })
                .collect(),
        }
    }

    /// The instances of `service` ordered for a caller in `zone` of `region`: same zone
    /// first, then same region, then the rest, by instance id within each group.
    ///
    /// A zone without a region implies its region; a region alone puts that region
    /// first. Only `UP` instances unless `all_statuses`. An unknown service has no
    /// instances (not an error: it may simply not have started yet). An instance
    /// behind a fault proxy is answered with the proxy's address ([`Self::rewrites`]).
    pub fn instances(
        &self,
        service: &str,
        region: Option<&str>,
        zone: Option<&str>,
        all_statuses: bool,
    ) -> Result<ServiceInstances, RegistryError> {
        let region = match (region, zone) {
            (Some(region), _) if !self.topology.regions.iter().any(|r| r.name == region) => {
                return Err(RegistryError::invalid(
                    "region",
                    format!("`{region}` is not a region of the topology"),
                ));
            }
            (region, Some(zone)) => match (self.topology.region_of(zone), region) {
                (None, _) => {
                    return Err(RegistryError::invalid(
                        "zone",
                        format!("`{zone}` is not a zone of the topology"),
                    ));
                }
                (Some(actual), Some(region)) if actual != region => {
                    return Err(RegistryError::invalid(
                        "zone",
                        format!("zone `{zone}` is in region `{actual}`, not `{region}`"),
                    ));
                }
                (Some(actual), _) => Some(actual),
            },
            (region, None) => region,
        };
        let tier = |info: &InstanceInfo| -> u8 {
            if zone.is_some_and(|zone| info.zone == zone) {
                0
            } else if region.is_some_and(|region| info.region == region) {
                1
            } else {
                2
            }
        };
        let state = self.state.lock();
        let mut instances: Vec<InstanceView> = state
            .services
            .get(service)
            .into_iter()
            .flat_map(|leases| leases.values())
            .map(|lease| lease.view(state.region_override(&lease.info)))
            .filter(|view| all_statuses || view.status == InstanceStatus::Up)
            .collect();
        drop(state);
        // Stable: the map already ordered them by instance id.
        instances.sort_by_key(|view| tier(&view.instance));
        self.rewrites.apply(&mut instances);
        Ok(ServiceInstances {
            service: service.to_owned(),
            instances,
        })
    }

    /// The registry's health: counts, threshold, renewals, self-preservation.
    pub fn status(&self) -> DiscoveryStatus {
        let mut state = self.state.lock();
        let now = self.clock.now();
        let renews_last_minute = state.renews.last_minute(now);
        let active = self.self_preservation_holds(&state, renews_last_minute);
        DiscoveryStatus {
            instances: state.size as u64,
            expected_clients: state.expected_clients,
            expected_renews_per_min: self.expected_renews_per_min(state.expected_clients),
            renewal_threshold: state.renewal_threshold,
            renews_last_minute,
            self_preservation_enabled: self.config.self_preservation,
            self_preservation_active: active,
            evictions_total: state.evictions_total,
        }
    }

    /// Whether expiry-based eviction is suspended right now.
    pub fn self_preservation_active(&self) -> bool {
        self.status().self_preservation_active
    }

    /// One eviction run: removes expired leases, longest-expired first, at most
    /// `size − floor(size × eviction_limit_fraction)` of them, unless
    /// self-preservation holds.
    pub fn evict(&self) -> EvictionReport {
        let mut state = self.state.lock();
        let now = self.clock.now();
        let state = &mut *state;
        state.last_eviction_run = now;
        let renews_last_minute = state.renews.last_minute(now);
        let preserving = self.self_preservation_holds(state, renews_last_minute);
        metrics::gauge!("discovery_self_preservation_active").set(if preserving {
            1.0
        } else {
            0.0
        });

        let mut expired: Vec<(Duration, &String, &String)> = state
            .services
            .iter()
            .flat_map(|(service, leases)| {
                leases.iter().filter_map(move |(id, lease)| {
                    lease.overdue(now).map(|overdue| (overdue, service, id))
                })
            })
            .collect();
        let limit = eviction_limit(state.size, self.config.eviction_limit_fraction);
        let mut report = EvictionReport {
            expired: expired.len(),
            limit,
            evicted: Vec::new(),
            self_preservation: preserving,
        };
        if preserving || expired.is_empty() {
            return report;
        }
        // Longest-expired first; ties in key order, so a run is reproducible.
        expired.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| (a.1, a.2).cmp(&(b.1, b.2))));
        report.evicted = expired
            .into_iter()
            .take(limit)
            .map(|(_, service, id)| (service.clone(), id.clone()))
            .collect();
        for (service, id) in &report.evicted {
            let removed = remove(state, service, id);
            debug_assert!(removed.is_some(), "an expired lease was found just now");
        }
        assert!(report.evicted.len() <= limit);
        state.evictions_total += report.evicted.len() as u64;
        check_invariants(state);
        metrics::counter!("discovery_evictions_total").increment(report.evicted.len() as u64);
        metrics::gauge!("discovery_instances").set(state.size as f64);
        report
    }

    /// Recomputes the expected clients from the instance count, as Eureka's
    /// `updateRenewalThreshold`: the count is adopted only if it is above
    /// `renewal_threshold ×` the current expectation (so a mass loss does not lower
    /// the bar), or unconditionally when self-preservation is off.
    pub fn update_renewal_threshold(&self) {
        let mut state = self.state.lock();
        let now = self.clock.now();
        let state = &mut *state;
        state.last_threshold_update = now;
        let count = state.size as u64;
        if count as f64 > self.config.renewal_threshold * state.expected_clients as f64
            || !self.config.self_preservation
        {
            state.expected_clients = count;
            self.recompute_threshold(state);
        }
        check_invariants(state);
    }

    /// Runs whatever periodic work is due on the registry's clock: the renewal
    /// threshold update every `threshold_update_interval`, then eviction every
    /// `eviction_interval`. Returns the eviction report if eviction ran.
    pub fn run_due_maintenance(&self) -> Option<EvictionReport> {
        let now = self.clock.now();
        let (threshold_due, eviction_due) = {
            let state = self.state.lock();
            (
                now.saturating_duration_since(state.last_threshold_update)
                    >= self.config.threshold_update_interval,
                now.saturating_duration_since(state.last_eviction_run)
                    >= self.config.eviction_interval,
            )
        };
        if threshold_due {
            self.update_renewal_threshold();
        }
        eviction_due.then(|| self.evict())
    }

    fn expected_renews_per_min(&self, expected_clients: u64) -> f64 {
        // Eureka's order of operations, so the floors agree with it.
        expected_clients as f64 * (60.0 / self.config.renew_interval.as_secs_f64())
    }

    fn recompute_threshold(&self, state: &mut State) {
        let threshold =
            self.expected_renews_per_min(state.expected_clients) * self.config.renewal_threshold;
        debug_assert!(threshold >= 0.0 && threshold.is_finite());
        state.renewal_threshold = threshold.floor() as u64;
    }

    fn self_preservation_holds(&self, state: &State, renews_last_minute: u64) -> bool {
        self.config.self_preservation
            && (state.renewal_threshold == 0 || renews_last_minute <= state.renewal_threshold)
    }

    fn validate(&self, registration: &Registration) -> Result<(), RegistryError> {
        let instance = &registration.instance;
        let service = &instance.service;
        if service.is_empty()
            || service.len() > MAX_SERVICE_NAME
            || !service
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err(RegistryError::invalid(
                "instance.service",
                format!("use 1-{MAX_SERVICE_NAME} of a-z, 0-9, '-' and '_'"),
            ));
        }
        let id = &instance.instance_id;
        if id.is_empty()
            || id.len() > MAX_INSTANCE_ID
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        {
            return Err(RegistryError::invalid(
                "instance.instance_id",
                format!("use 1-{MAX_INSTANCE_ID} of A-Z, a-z, 0-9, '-', '_', '.' and ':'"),
            ));
        }
        if !self
            .topology
            .regions
            .iter()
            .any(|r| r.name == instance.region)
        {
            return Err(RegistryError::invalid(
                "instance.region",
                format!("`{}` is not a region of the topology", instance.region),
            ));
        }
        if !self.topology.contains(&instance.region, &instance.zone) {
            return Err(RegistryError::invalid(
                "instance.zone",
                format!(
                    "`{}` is not a zone of region `{}`",
                    instance.zone, instance.region
                ),
            ));
        }
        if instance.address.port() == 0 {
            return Err(RegistryError::invalid(
                "instance.address",
                "port 0 is not a listening address",
            ));
        }
        let version = &instance.version;
        if version.is_empty()
            || version.len() > MAX_VERSION
            || version.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(RegistryError::invalid(
                "instance.version",
                format!("use 1-{MAX_VERSION} printable characters without spaces"),
            ));
        }
        if let Some(secs) = registration.lease_duration_secs
            && !(1..=MAX_LEASE_SECS).contains(&secs)
        {
            return Err(RegistryError::invalid(
                "lease_duration_secs",
                format!("must be between 1 and {MAX_LEASE_SECS}"),
            ));
        }
        if registration.metadata.len() > MAX_METADATA_ENTRIES {
            return Err(RegistryError::invalid(
                "metadata",
                format!("at most {MAX_METADATA_ENTRIES} entries"),
            ));
        }
        for (key, value) in &registration.metadata {
            if key.is_empty() || key.len() > MAX_METADATA_KEY || value.len() > MAX_METADATA_VALUE {
                return Err(RegistryError::invalid(
                    format!("metadata.{key}"),
                    format!(
                        "keys are 1-{MAX_METADATA_KEY} bytes, values at most {MAX_METADATA_VALUE}"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// A view's status once `region`'s override (if any) applies.
fn lease_status(view: &InstanceView, region: Option<&RegionOverride>) -> InstanceStatus {
    let region = region.and_then(|r| r.applies_to(&view.instance));
    match (view.status, region) {
        (reported @ (InstanceStatus::Down | InstanceStatus::Starting), _) => reported,
        (_, Some(region)) => region,
        (status, None) => status,
    }
}

/// The registry's bookkeeping agrees with itself (debug builds check it after
/// every write).
fn check_invariants(state: &State) {
    debug_assert_eq!(
        state.size,
        state.services.values().map(BTreeMap::len).sum::<usize>(),
        "size counts every lease"
    );
    debug_assert!(
        state.services.values().all(|leases| !leases.is_empty()),
        "no empty service entries"
    );
    // Registrations add to both, cancels take from both, evictions only shrink the
    // size and the recompute never sets the expectation below the size.
    debug_assert!(
        state.expected_clients >= state.size as u64,
        "expected clients {} < size {}",
        state.expected_clients,
        state.size
    );
}

/// At most `size − floor(size × fraction)` evictions per run.
fn eviction_limit(size: usize, fraction: f64) -> usize {
    let kept = (size as f64 * fraction).floor() as usize;
    size.saturating_sub(kept)
}

fn not_found(service: &str, instance_id: &str) -> RegistryError {
    RegistryError::NotFound {
        service: service.to_owned(),
        instance_id: instance_id.to_owned(),
    }
}

fn remove(state: &mut State, service: &str, instance_id: &str) -> Option<Lease> {
    let leases = state.services.get_mut(service)?;
    let lease = leases.remove(instance_id)?;
    if leases.is_empty() {
        state.services.remove(service);
    }
    state.size -= 1;
    forget_source(state, lease.source);
    Some(lease)
}

/// One lease fewer for `source`.
fn forget_source(state: &mut State, source: Option<IpAddr>) {
    let Some(source) = source else { return };
    if let Some(count) = state.per_source.get_mut(&source) {
        *count -= 1;
        if *count == 0 {
            state.per_source.remove(&source);
        }
    }
}

#[cfg(test)]
mod tests;
