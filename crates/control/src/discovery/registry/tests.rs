use std::time::Duration;

use casebook_kit::clock::{Clock, ManualClock};
use casebook_kit::discovery::Registration;
use casebook_kit::topology::{InstanceInfo, InstanceStatus, Topology};
use proptest::prelude::*;

use super::*;

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);

fn registry(config: DiscoveryConfig) -> (Registry, ManualClock) {
    let clock = ManualClock::new();
    let registry = Registry::new(config, Topology::default(), clock.shared()).unwrap();
    (registry, clock)
}

fn no_self_preservation() -> DiscoveryConfig {
    DiscoveryConfig {
        self_preservation: false,
        ..DiscoveryConfig::default()
    }
}

fn info(service: &str, id: &str, zone: &str) -> InstanceInfo {
    let region = Topology::default().region_of(zone).unwrap().to_owned();
    InstanceInfo {
        service: service.into(),
        instance_id: id.into(),
        region,
        zone: zone.into(),
        address: "127.0.0.1:9000".parse().unwrap(),
        version: "0.1.0".into(),
    }
}

fn reg(service: &str, id: &str, zone: &str) -> Registration {
    Registration::up(info(service, id, zone))
}

fn ids(instances: &[InstanceView]) -> Vec<&str> {
    instances
        .iter()
        .map(|v| v.instance.instance_id.as_str())
        .collect()
}

/// Registers `n` instances `svc-0..n` of service `svc`.
fn register_many(registry: &Registry, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let id = format!("svc-{i}");
            registry.register(reg("svc", &id, "us-east-a")).unwrap();
            id
        })
        .collect()
}

/// One renew interval (30 s) of heartbeats from `alive`.
fn heartbeat_round(registry: &Registry, clock: &ManualClock, alive: &[String]) {
    for id in alive {
        registry.renew("svc", id).unwrap();
    }
    clock.advance(Duration::from_secs(30));
}

#[test]
fn a_lease_expires_just_after_its_duration_not_at_it_and_not_at_twice_it() {
    let (registry, clock) = registry(no_self_preservation());
    registry.register(reg("svc", "a", "us-east-a")).unwrap();
    clock.advance(Duration::from_secs(40));
    registry.renew("svc", "a").unwrap();

    clock.advance(Duration::from_secs(90));
    let report = registry.evict();
    assert_eq!(
        report.expired, 0,
        "exactly at the lease duration it still holds"
    );
    assert!(registry.get("svc", "a").is_some());

    clock.advance(Duration::from_nanos(1));
    let report = registry.evict();
    assert_eq!(report.expired, 1);
    assert_eq!(report.evicted, vec![("svc".to_owned(), "a".to_owned())]);
    assert!(registry.get("svc", "a").is_none());
    assert_eq!(registry.status().evictions_total, 1);
    assert_eq!(
        registry.renew("svc", "a"),
        Err(RegistryError::NotFound {
            service: "svc".into(),
            instance_id: "a".into()
        })
    );
}

#[test]
fn a_registration_may_ask_for_its_own_lease() {
    let (registry, clock) = registry(no_self_preservation());
    let mut short = reg("svc", "short", "us-east-a");
    short.lease_duration_secs = Some(10);
    registry.register(short).unwrap();
    registry
        .register(reg("svc", "default", "us-east-a"))
        .unwrap();
    clock.advance(Duration::from_secs(11));
    let report = registry.evict();
    assert_eq!(report.evicted, vec![("svc".to_owned(), "short".to_owned())]);
    assert_eq!(
        registry.get("svc", "default").unwrap().lease_duration_ms,
        90_000
    );
}

#[test]
fn one_run_evicts_at_most_size_minus_floor_of_85_percent_longest_expired_first() {
    let (registry, clock) = registry(no_self_preservation());
    // Registered a second apart, so svc-0 expires first and svc-19 last.
    for i in 0..20 {
        registry
            .register(reg("svc", &format!("svc-{i:02}"), "us-east-a"))
            .unwrap();
        clock.advance(SECOND);
    }
    clock.advance(Duration::from_secs(200));
    let report = registry.evict();
    assert_eq!(report.expired, 20);
    assert_eq!(report.limit, 3);
    let evicted: Vec<_> = report.evicted.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(evicted, ["svc-00", "svc-01", "svc-02"]);
    assert_eq!(registry.len(), 17);

    // 17 → 17 − floor(14.45) = 3, 14 → 3, 11 → 2, 9 → 2, 7 → 2, 5 → 1, …
    let mut per_run = vec![];
    while !registry.is_empty() {
        per_run.push(registry.evict().evicted.len());
    }
    assert_eq!(per_run, [3, 3, 2, 2, 2, 1, 1, 1, 1, 1]);
    assert_eq!(registry.status().evictions_total, 20);
}

#[test]
fn self_preservation_keeps_a_mass_expiry_and_lets_a_single_loss_go() {
    let (registry, clock) = registry(DiscoveryConfig::default());
    let mut alive = register_many(&registry, 20);
    let status = registry.status();
    assert_eq!(status.expected_clients, 20);
    assert_eq!(status.expected_renews_per_min, 40.0);
    assert_eq!(status.renewal_threshold, 34);
    // Nothing counted yet: the first minute is always under the threshold.
    assert!(status.self_preservation_active);

    // A healthy minute: 40 renewals > 34.
    heartbeat_round(&registry, &clock, &alive);
    heartbeat_round(&registry, &clock, &alive);
    assert_eq!(registry.status().renews_last_minute, 40);
    assert!(!registry.self_preservation_active());

    // One instance dies: 38 renewals a minute are still above 34, so it is evicted.
    let dead = alive.pop().unwrap();
    for _ in 0..4 {
        heartbeat_round(&registry, &clock, &alive);
    }
    assert_eq!(registry.status().renews_last_minute, 38);
    let report = registry.evict();
    assert!(!report.self_preservation);
    assert_eq!(report.evicted, vec![("svc".to_owned(), dead)]);
    // Eviction does not lower the expectation; only cancels and the recompute do.
    assert_eq!(registry.status().expected_clients, 20);

    // A zone's worth dies at once: renewals fall to 30 ≤ 34 and nothing is evicted.
    alive.truncate(15);
    for _ in 0..6 {
        heartbeat_round(&registry, &clock, &alive);
    }
    let status = registry.status();
    assert_eq!(status.renews_last_minute, 30);
    assert!(status.self_preservation_active);
    let report = registry.evict();
    assert!(report.self_preservation);
    assert_eq!(report.expired, 4);
    assert!(report.evicted.is_empty());
    assert_eq!(registry.len(), 19);
}

#[test]
fn renewals_exactly_at_the_threshold_still_preserve() {
    // Eureka expires leases only when renewals are strictly above the threshold.
    let (registry, clock) = registry(DiscoveryConfig {
        renewal_threshold: 0.5,
        ..DiscoveryConfig::default()
    });
    let mut alive = register_many(&registry, 10);
    assert_eq!(registry.status().renewal_threshold, 10);
    alive.truncate(5);
    for _ in 0..6 {
        heartbeat_round(&registry, &clock, &alive);
    }
    assert_eq!(registry.status().renews_last_minute, 10);
    let report = registry.evict();
    assert!(report.self_preservation);
    assert!(report.evicted.is_empty());
    assert_eq!(report.expired, 5);
}

#[test]
fn without_self_preservation_a_mass_expiry_is_evicted() {
    let (registry, clock) = registry(no_self_preservation());
    let alive = register_many(&registry, 20);
    heartbeat_round(&registry, &clock, &alive);
    heartbeat_round(&registry, &clock, &alive);
    clock.advance(Duration::from_secs(91));
    let status = registry.status();
    assert!(!status.self_preservation_enabled);
    assert!(!status.self_preservation_active);
    let report = registry.evict();
    assert!(!report.self_preservation);
    assert_eq!(report.evicted.len(), 3);
}

#[test]
fn the_renewal_rate_is_the_last_complete_minute() {
    let (registry, clock) = registry(DiscoveryConfig::default());
    registry.register(reg("svc", "a", "us-east-a")).unwrap();
    for _ in 0..3 {
        registry.renew("svc", "a").unwrap();
    }
    assert_eq!(
        registry.status().renews_last_minute,
        0,
        "minute 0 is not over"
    );
    clock.advance(Duration::from_secs(59));
    assert_eq!(registry.status().renews_last_minute, 0);
    clock.advance(SECOND);
    assert_eq!(registry.status().renews_last_minute, 3);
    for _ in 0..5 {
        registry.renew("svc", "a").unwrap();
    }
    clock.advance(Duration::from_secs(30));
    assert_eq!(registry.status().renews_last_minute, 3, "still minute 1");
    clock.advance(Duration::from_secs(30));
    assert_eq!(registry.status().renews_last_minute, 5);
    // A silent minute counts as zero, and so does the one after.
    clock.advance(MINUTE);
    assert_eq!(registry.status().renews_last_minute, 0);
    registry.renew("svc", "a").unwrap();
    clock.advance(2 * MINUTE);
    assert_eq!(registry.status().renews_last_minute, 0);
    // Failed renewals do not count.
    registry.renew("svc", "ghost").unwrap_err();
    clock.advance(MINUTE);
    assert_eq!(registry.status().renews_last_minute, 0);
}

#[test]
fn the_threshold_is_recomputed_every_15_minutes_from_the_instance_count() {
    let (registry, clock) = registry(DiscoveryConfig::default());
    let mut alive = register_many(&registry, 10);
    assert_eq!(registry.status().renewal_threshold, 17);
    heartbeat_round(&registry, &clock, &alive);
    heartbeat_round(&registry, &clock, &alive);
    // One dies and is evicted (18 > 17); the expectation stays at 10 for now.
    let dead = alive.pop().unwrap();
    for _ in 0..4 {
        heartbeat_round(&registry, &clock, &alive);
    }
    let report = registry
        .run_due_maintenance()
        .expect("eviction is due each minute");
    assert_eq!(report.evicted, vec![("svc".to_owned(), dead)]);
    assert_eq!(registry.status().expected_clients, 10);

    // Keep the survivors alive until just before the 15-minute mark.
    while clock.elapsed() < Duration::from_secs(15 * 60 - 30) {
        heartbeat_round(&registry, &clock, &alive);
    }
    clock.advance(Duration::from_secs(29));
    registry.run_due_maintenance();
    assert_eq!(
        registry.status().expected_clients,
        10,
        "not due before 15 min"
    );
    clock.advance(SECOND);
    registry.run_due_maintenance();
    let status = registry.status();
    assert_eq!(
        status.expected_clients, 9,
        "9 > 0.85 × 10, so it follows the count"
    );
    assert_eq!(status.renewal_threshold, 15);
}

#[test]
fn a_mass_loss_does_not_lower_the_expectation_unless_self_preservation_is_off() {
    for (self_preservation, expected_after) in [(true, 10), (false, 4)] {
        let (registry, clock) = registry(DiscoveryConfig {
            self_preservation,
            // Evict everything expired at once, so the count can fall far.
            eviction_limit_fraction: 0.0,
            renewal_threshold: 0.4,
            ..DiscoveryConfig::default()
        });
        let mut alive = register_many(&registry, 10);
        assert_eq!(registry.status().renewal_threshold, 8);
        // Six die; the four left renew every 15 s, so 16 renewals a minute > 8 and
        // eviction goes ahead even with self-preservation on.
        alive.truncate(4);
        for _ in 0..16 {
            for id in &alive {
                registry.renew("svc", id).unwrap();
            }
            clock.advance(Duration::from_secs(15));
        }
        assert_eq!(registry.evict().evicted.len(), 6);
        assert_eq!(registry.status().expected_clients, 10);
        registry.update_renewal_threshold();
        // 4 is not above 0.4 × 10: with self-preservation the bar stays where it was.
        assert_eq!(registry.status().expected_clients, expected_after);
    }
}

#[test]
fn reregistering_replaces_the_registration_but_keeps_its_first_time() {
    let (registry, clock) = registry(no_self_preservation());
    assert_eq!(
        registry.register(reg("svc", "a", "us-east-a")),
        Ok(Registered::New)
    );
    let first = registry.get("svc", "a").unwrap();
    clock.advance(Duration::from_secs(80));
    let mut again = reg("svc", "a", "us-east-a");
    again.instance.version = "0.2.0".into();
    again.metadata.insert("canary".into(), "true".into());
    assert_eq!(registry.register(again), Ok(Registered::Replaced));
    let second = registry.get("svc", "a").unwrap();
    assert_eq!(second.registered_at_ms, first.registered_at_ms);
    assert_eq!(second.last_renewed_at_ms, first.registered_at_ms + 80_000);
    assert_eq!(second.instance.version, "0.2.0");
    assert_eq!(
        second.metadata.get("canary").map(String::as_str),
        Some("true")
    );
    assert_eq!(registry.len(), 1);
    assert_eq!(registry.status().expected_clients, 1, "one client, not two");
    // Re-registration refreshed the lease.
    clock.advance(Duration::from_secs(80));
    assert!(registry.evict().evicted.is_empty());
}

#[test]
fn cancel_removes_and_lowers_the_expectation() {
    let (registry, _clock) = registry(DiscoveryConfig::default());
    register_many(&registry, 3);
    assert_eq!(registry.status().renewal_threshold, 5);
    registry.cancel("svc", "svc-1").unwrap();
    let status = registry.status();
    assert_eq!((status.instances, status.expected_clients), (2, 2));
    assert_eq!(status.renewal_threshold, 3);
    assert!(matches!(
        registry.cancel("svc", "svc-1"),
        Err(RegistryError::NotFound { .. })
    ));
    assert!(matches!(
        registry.cancel("nope", "svc-0"),
        Err(RegistryError::NotFound { .. })
    ));
}

#[test]
fn queries_put_the_same_zone_first_then_the_same_region() {
    let (registry, _clock) = registry(DiscoveryConfig::default());
    for (id, zone) in [
        ("e", "eu-west-a"),
        ("b2", "us-east-b"),
        ("a2", "us-east-a"),
        ("p", "ap-south-c"),
        ("a1", "us-east-a"),
        ("b1", "us-east-b"),
    ] {
        registry.register(reg("svc", id, zone)).unwrap();
    }
    registry.register(reg("other", "o", "us-east-a")).unwrap();
    let mut down = reg("svc", "a0", "us-east-a");
    down.status = InstanceStatus::Down;
    registry.register(down).unwrap();

    let near_a = registry
        .instances("svc", Some("us-east"), Some("us-east-a"), false)
        .unwrap();
    assert_eq!(ids(&near_a.instances), ["a1", "a2", "b1", "b2", "e", "p"]);
    // The zone alone implies its region.
    let zone_only = registry
        .instances("svc", None, Some("us-east-a"), false)
        .unwrap();
    assert_eq!(zone_only, near_a);
    let near_eu = registry
        .instances("svc", Some("eu-west"), None, false)
        .unwrap();
    assert_eq!(ids(&near_eu.instances), ["e", "a1", "a2", "b1", "b2", "p"]);
    let anywhere = registry.instances("svc", None, None, false).unwrap();
    assert_eq!(ids(&anywhere.instances), ["a1", "a2", "b1", "b2", "e", "p"]);
    let with_down = registry
        .instances("svc", None, Some("us-east-a"), true)
        .unwrap();
    assert_eq!(
        ids(&with_down.instances),
        ["a0", "a1", "a2", "b1", "b2", "e", "p"]
    );
    assert!(
        registry
            .instances("nobody", None, None, false)
            .unwrap()
            .instances
            .is_empty()
    );

    let field = |r: Result<ServiceInstances, RegistryError>| match r {
        Err(RegistryError::Invalid { field, .. }) => field,
        other => panic!("expected an invalid field, got {other:?}"),
    };
    assert_eq!(
        field(registry.instances("svc", None, Some("mars-a"), false)),
        "zone"
    );
    assert_eq!(
        field(registry.instances("svc", Some("mars"), None, false)),
        "region"
    );
    assert_eq!(
        field(registry.instances("svc", Some("eu-west"), Some("us-east-a"), false)),
        "zone"
    );

    let all = registry.all();
    assert_eq!(all.services.len(), 2);
    assert_eq!(all.services["svc"].len(), 7, "all() shows every status");
}

#[test]
fn status_overrides_win_over_up_but_not_over_down_and_die_with_the_registration() {
    let (registry, _clock) = registry(DiscoveryConfig::default());
    registry.register(reg("svc", "a", "us-east-a")).unwrap();
    let view = registry
        .override_status("svc", "a", Some(InstanceStatus::OutOfService))
        .unwrap();
    assert_eq!(view.status, InstanceStatus::OutOfService);
    let up_only =
        |r: &Registry| ids(&r.instances("svc", None, None, false).unwrap().instances).len();
    assert_eq!(up_only(&registry), 0);

    // The instance re-registers UP: the operator's override still wins.
    registry.register(reg("svc", "a", "us-east-a")).unwrap();
    assert_eq!(
        registry.get("svc", "a").unwrap().status,
        InstanceStatus::OutOfService
    );
    // It reports DOWN: it knows best.
    let mut down = reg("svc", "a", "us-east-a");
    down.status = InstanceStatus::Down;
    registry.register(down).unwrap();
    let view = registry.get("svc", "a").unwrap();
    assert_eq!(view.status, InstanceStatus::Down);
    assert_eq!(view.overridden_status, Some(InstanceStatus::OutOfService));

    registry.register(reg("svc", "a", "us-east-a")).unwrap();
    let view = registry.override_status("svc", "a", None).unwrap();
    assert_eq!(view.status, InstanceStatus::Up);
    assert_eq!(up_only(&registry), 1);

    registry
        .override_status("svc", "a", Some(InstanceStatus::Down))
        .unwrap();
    registry.cancel("svc", "a").unwrap();
    registry.register(reg("svc", "a", "us-east-a")).unwrap();
    assert_eq!(registry.get("svc", "a").unwrap().status, InstanceStatus::Up);

    assert!(matches!(
        registry.override_status("svc", "ghost", Some(InstanceStatus::Up)),
        Err(RegistryError::NotFound { .. })
    ));
}

#[test]
fn bad_registrations_name_the_field() {
    let (registry, _clock) = registry(DiscoveryConfig::default());
    let field = |r: Registration| match registry.register(r) {
        Err(RegistryError::Invalid { field, .. }) => field,
        other => panic!("expected an invalid field, got {other:?}"),
    };
    let mut r = reg("svc", "a", "us-east-a");
    r.instance.zone = "eu-west-a".into();
    assert_eq!(field(r), "instance.zone");
    let mut r = reg("svc", "a", "us-east-a");
    r.instance.region = "mars".into();
    assert_eq!(field(r), "instance.region");
    assert_eq!(
        field(reg("Bad Service", "a", "us-east-a")),
        "instance.service"
    );
    assert_eq!(
        field(reg("svc", "a/b", "us-east-a")),
        "instance.instance_id"
    );
    assert_eq!(field(reg("svc", "", "us-east-a")), "instance.instance_id");
    let mut r = reg("svc", "a", "us-east-a");
    r.instance.version = String::new();
    assert_eq!(field(r), "instance.version");
    let mut r = reg("svc", "a", "us-east-a");
    r.instance.address = "127.0.0.1:0".parse().unwrap();
    assert_eq!(field(r), "instance.address");
    let mut r = reg("svc", "a", "us-east-a");
    r.lease_duration_secs = Some(0);
    assert_eq!(field(r), "lease_duration_secs");
    let mut r = reg("svc", "a", "us-east-a");
    r.metadata
        .insert("k".into(), "v".repeat(MAX_METADATA_VALUE + 1));
    assert_eq!(field(r), "metadata.k");
    let mut r = reg("svc", "a", "us-east-a");
    for i in 0..=MAX_METADATA_ENTRIES {
        r.metadata.insert(format!("k{i}"), String::new());
    }
    assert_eq!(field(r), "metadata");
    assert!(registry.is_empty());
}

#[test]
fn a_full_registry_refuses_new_instances_but_not_reregistrations() {
    let (registry, _clock) = registry(DiscoveryConfig {
        max_instances: 2,
        ..DiscoveryConfig::default()
    });
    register_many(&registry, 2);
    assert_eq!(
        registry.register(reg("svc", "third", "us-east-a")),
        Err(RegistryError::Full { limit: 2 })
    );
    assert_eq!(
        registry.register(reg("svc", "svc-0", "us-east-a")),
        Ok(Registered::Replaced)
    );
}

#[test]
fn maintenance_runs_only_what_is_due() {
    let (registry, clock) = registry(no_self_preservation());
    registry.register(reg("svc", "a", "us-east-a")).unwrap();
    clock.advance(Duration::from_secs(59));
    assert_eq!(registry.run_due_maintenance(), None);
    clock.advance(SECOND);
    assert_eq!(registry.run_due_maintenance().map(|r| r.expired), Some(0));
    clock.advance(Duration::from_secs(31));
    // Expired (91 s) but the last run was 31 s ago.
    assert_eq!(registry.run_due_maintenance(), None);
    clock.advance(Duration::from_secs(29));
    assert_eq!(
        registry.run_due_maintenance().map(|r| r.evicted.len()),
        Some(1)
    );
}

#[test]
fn eviction_limit_matches_eurekas_arithmetic() {
    assert_eq!(eviction_limit(20, 0.85), 3);
    assert_eq!(eviction_limit(1, 0.85), 1);
    assert_eq!(eviction_limit(0, 0.85), 0);
    assert_eq!(eviction_limit(100, 0.85), 15);
    assert_eq!(eviction_limit(7, 0.0), 7);
}

#[derive(Debug, Clone)]
enum Op {
    Register { id: u8, lease_secs: u16 },
    Renew { id: u8 },
    Cancel { id: u8 },
    Advance { secs: u16 },
    Evict,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..24, 1u16..200).prop_map(|(id, lease_secs)| Op::Register { id, lease_secs }),
        (0u8..24).prop_map(|id| Op::Renew { id }),
        (0u8..24).prop_map(|id| Op::Cancel { id }),
        (0u16..120).prop_map(|secs| Op::Advance { secs }),
        Just(Op::Evict),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever happens, eviction never removes a live lease, never exceeds the
    /// per-run limit, and never evicts while self-preservation holds.
    #[test]
    fn eviction_never_removes_a_live_lease_nor_more_than_the_limit(
        ops in proptest::collection::vec(op(), 1..120),
        self_preservation in any::<bool>(),
        fraction in prop_oneof![Just(0.0), Just(0.5), Just(0.85), Just(0.99)],
    ) {
        let (registry, clock) = registry(DiscoveryConfig {
            self_preservation,
            eviction_limit_fraction: fraction,
            ..DiscoveryConfig::default()
        });
        // The model: id → (last renewal, lease).
        let mut model = std::collections::BTreeMap::new();
        for op in ops {
            match op {
                Op::Register { id, lease_secs } => {
                    let mut r = reg("svc", &format!("i{id}"), "us-east-a");
                    r.lease_duration_secs = Some(u64::from(lease_secs));
                    registry.register(r).unwrap();
                    model.insert(id, (clock.now(), Duration::from_secs(lease_secs.into())));
                }
                Op::Renew { id } => {
                    let renewed = registry.renew("svc", &format!("i{id}"));
                    prop_assert_eq!(renewed.is_ok(), model.contains_key(&id));
                    if let Some(entry) = model.get_mut(&id) {
                        entry.0 = clock.now();
                    }
                }
                Op::Cancel { id } => {
                    let cancelled = registry.cancel("svc", &format!("i{id}"));
                    prop_assert_eq!(cancelled.is_ok(), model.remove(&id).is_some());
                }
                Op::Advance { secs } => clock.advance(Duration::from_secs(secs.into())),
                Op::Evict => {
                    let size = model.len();
                    let preserving = registry.self_preservation_active();
                    let report = registry.evict();
                    prop_assert!(report.evicted.len() <= eviction_limit(size, fraction));
                    prop_assert!(report.evicted.len() <= report.limit);
                    if preserving {
                        prop_assert!(report.evicted.is_empty());
                    }
                    let now = clock.now();
                    for (_, id) in &report.evicted {
                        let key: u8 = id[1..].parse().unwrap();
                        let (last, lease) = model.remove(&key).expect("evicted a known instance");
                        prop_assert!(now > last + lease, "evicted a live lease {}", id);
                    }
                    // Not preserving, and the limit allows it: every expired lease goes.
                    let expired_left = model.values().filter(|(last, lease)| now > *last + *lease).count();
                    if !preserving && report.evicted.len() < report.limit {
                        prop_assert_eq!(expired_left, 0);
                    }
                }
            }
            prop_assert_eq!(registry.len(), model.len());
        }
    }
}

#[test]
fn concurrent_writers_keep_the_books_straight() {
    let (registry, clock) = registry(DiscoveryConfig::default());
    std::thread::scope(|scope| {
        for thread in 0..4 {
            let registry = &registry;
            scope.spawn(move || {
                for i in 0..200 {
                    let id = format!("t{thread}-{i}");
                    registry.register(reg("svc", &id, "us-east-a")).unwrap();
                    registry.renew("svc", &id).unwrap();
                    if i % 2 == 0 {
                        registry.cancel("svc", &id).unwrap();
                    }
                }
            });
        }
        // Time moves while they write, across several minute boundaries.
        scope.spawn(|| {
            for _ in 0..50 {
                clock.advance(Duration::from_secs(7));
                std::thread::yield_now();
            }
        });
    });
    let status = registry.status();
    assert_eq!(status.instances, 400);
    assert_eq!(status.expected_clients, 400);
    assert_eq!(registry.all().services["svc"].len(), 400);
}

#[test]
fn each_caller_and_each_service_is_bounded_and_cancels_free_their_share() {
    let (registry, _clock) = registry(DiscoveryConfig {
        max_instances_per_source: 3,
        max_instances_per_service: 4,
        ..DiscoveryConfig::default()
    });
    let flooder: std::net::IpAddr = "10.0.0.7".parse().unwrap();
    let other: std::net::IpAddr = "10.0.0.8".parse().unwrap();
    for i in 0..3 {
        registry
            .register_from(reg("a", &format!("a-{i}"), "us-east-a"), Some(flooder))
            .unwrap();
    }
    let refused = registry
        .register_from(reg("b", "b-0", "us-east-a"), Some(flooder))
        .unwrap_err();
    assert!(
        matches!(
            refused,
            RegistryError::TooMany {
                key: "max_instances_per_source",
                limit: 3,
                ..
            }
        ),
        "{refused:?}"
    );
    // Re-registering what it holds always passes; another caller is unaffected.
    assert_eq!(
        registry.register_from(reg("a", "a-0", "us-east-a"), Some(flooder)),
        Ok(Registered::Replaced)
    );
    registry
        .register_from(reg("a", "a-3", "us-east-a"), Some(other))
        .unwrap();
    // Service `a` is at its bound of 4, whoever asks.
    let refused = registry
        .register_from(reg("a", "a-4", "us-east-a"), Some(other))
        .unwrap_err();
    assert!(
        matches!(
            refused,
            RegistryError::TooMany {
                key: "max_instances_per_service",
                limit: 4,
                ..
            }
        ),
        "{refused:?}"
    );
    // A cancel frees the caller's share.
    registry.cancel("a", "a-1").unwrap();
    registry
        .register_from(reg("b", "b-0", "us-east-a"), Some(flooder))
        .unwrap();
}

#[test]
fn a_region_override_takes_the_region_out_and_back_sparing_the_exempt() {
    let (registry, _clock) = registry(DiscoveryConfig::default());
    registry
        .register(reg("api", "api-east", "us-east-a"))
        .unwrap();
    registry
        .register(reg("api", "api-west", "eu-west-a"))
        .unwrap();
    registry
        .register(reg("control", "control-east", "us-east-a"))
        .unwrap();
    // An instance's own override is kept underneath the region's.
    registry
        .override_status("api", "api-east", Some(InstanceStatus::Up))
        .unwrap();
    registry
        .override_region(
            "us-east",
            Some(InstanceStatus::OutOfService),
            vec!["control".into()],
        )
        .unwrap();
    let up = registry.instances("api", None, None, false).unwrap();
    assert_eq!(ids(&up.instances), ["api-west"]);
    let control = registry.instances("control", None, None, false).unwrap();
    assert_eq!(ids(&control.instances), ["control-east"], "exempt");
    assert_eq!(
        registry.get("api", "api-east").unwrap().status,
        InstanceStatus::OutOfService
    );
    // A registration arriving while the override holds is out too.
    registry
        .register(reg("api", "api-east-2", "us-east-b"))
        .unwrap();
    assert_eq!(
        registry.get("api", "api-east-2").unwrap().status,
        InstanceStatus::OutOfService
    );
    assert_eq!(registry.region_overrides().len(), 1);
    let removed = registry
        .override_region("us-east", None, Vec::new())
        .unwrap();
    assert_eq!(removed.unwrap().status, InstanceStatus::OutOfService);
    let up = registry.instances("api", None, None, false).unwrap();
    assert_eq!(ids(&up.instances), ["api-east", "api-east-2", "api-west"]);
    let err = registry
        .override_region("mars", Some(InstanceStatus::OutOfService), Vec::new())
        .unwrap_err();
    assert!(matches!(err, RegistryError::Invalid { ref field, .. } if field == "region"));
}

#[test]
fn the_platforms_region_flags_follow_the_region_overrides() {
    let (registry, _clock) = registry(no_self_preservation());
    let evacuations = casebook_kit::runtime::Evacuations::new(&Topology::default());
    // A flag left set (by a previous control plane) is cleared on attach.
    evacuations.set("ap-south", true);
    registry.attach_evacuations(evacuations.clone());
    assert!(evacuations.evacuated().is_empty());

    registry
        .override_region("eu-west", Some(InstanceStatus::OutOfService), Vec::new())
        .unwrap();
    assert_eq!(evacuations.evacuated(), ["eu-west"]);
    // An operator's `UP` override of a region sends nobody away.
    registry
        .override_region("us-east", Some(InstanceStatus::Up), Vec::new())
        .unwrap();
    assert_eq!(evacuations.evacuated(), ["eu-west"]);
    registry
        .override_region("eu-west", None, Vec::new())
        .unwrap();
    assert!(evacuations.evacuated().is_empty());
    // A refused override changes no flag.
    assert!(
        registry
            .override_region("mars", Some(InstanceStatus::Down), Vec::new())
            .is_err()
    );
    assert!(evacuations.evacuated().is_empty());
}

#[test]
fn only_the_deployer_gives_traffic_shares() {
    let (registry, _clock) = registry(no_self_preservation());
    let mut claim = reg("svc", "svc-1", "us-east-a");
    claim
        .metadata
        .insert(TRAFFIC_SHARE_KEY.to_owned(), "0.9".into());
    registry.register(claim.clone()).unwrap();
    let share = |r: &Registry| {
        r.get("svc", "svc-1")
            .unwrap()
            .metadata
            .get(TRAFFIC_SHARE_KEY)
            .cloned()
    };
    assert_eq!(share(&registry), None, "an instance's own claim is dropped");
    registry
        .set_traffic_share("svc", "svc-1", Some(0.1))
        .unwrap();
    assert_eq!(share(&registry).as_deref(), Some("0.1"));
    // Re-registering keeps the deployer's share, not the instance's claim.
    registry.register(claim).unwrap();
    assert_eq!(share(&registry).as_deref(), Some("0.1"));
    registry.set_traffic_share("svc", "svc-1", None).unwrap();
    assert_eq!(share(&registry), None);
}
