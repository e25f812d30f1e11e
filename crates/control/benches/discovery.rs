//! Discovery benchmarks: the registry's hot paths in-process, and a renewal over
//! loopback HTTP through the kit's client.
//!
//! Run: `cargo bench -p casebook-control --bench discovery`

use std::sync::Arc;

use casebook_control::discovery::{DiscoveryConfig, Registry, api};
use casebook_kit::clock::SystemClock;
use casebook_kit::discovery::{DiscoveryClient, Registration};
use casebook_kit::topology::{InstanceInfo, Placement, Topology};
use divan::Bencher;

fn main() {
    divan::main();
}

const SIZES: [usize; 2] = [100, 10_000];

/// A registry of `n` instances spread over 10 services and every zone.
fn filled(n: usize) -> (Registry, Vec<(String, String)>) {
    let topology = Topology::default();
    let registry = Registry::new(
        DiscoveryConfig::default(),
        topology.clone(),
        SystemClock::shared(),
    )
    .unwrap();
    let keys = (0..n)
        .map(|i| {
            let placement = topology.spread(i);
            let service = format!("svc-{}", i % 10);
            let id = format!("{service}-{i}");
            registry
                .register(Registration::up(InstanceInfo {
                    service: service.clone(),
                    instance_id: id.clone(),
                    region: placement.region,
                    zone: placement.zone,
                    address: "127.0.0.1:9000".parse().unwrap(),
                    version: "0.1.0".into(),
                }))
                .unwrap();
            (service, id)
        })
        .collect();
    (registry, keys)
}

#[divan::bench(args = SIZES)]
fn renew(bencher: Bencher<'_, '_>, n: usize) {
    let (registry, keys) = filled(n);
    let mut next = 0;
    bencher.bench_local(|| {
        next = (next + 1) % keys.len();
        let (service, id) = &keys[next];
        registry.renew(service, id).unwrap();
    });
}

#[divan::bench(args = SIZES)]
fn reregister(bencher: Bencher<'_, '_>, n: usize) {
    let (registry, keys) = filled(n);
    let registrations: Vec<_> = keys
        .iter()
        .map(|(service, id)| {
            let view = registry.get(service, id).unwrap();
            Registration::up(view.instance)
        })
        .collect();
    let mut next = 0;
    bencher.bench_local(|| {
        next = (next + 1) % registrations.len();
        registry.register(registrations[next].clone()).unwrap();
    });
}

/// One service's instances ordered for a caller: a tenth of the registry.
#[divan::bench(args = SIZES)]
fn zone_aware_query(bencher: Bencher<'_, '_>, n: usize) {
    let (registry, _) = filled(n);
    bencher.bench_local(|| {
        registry
            .instances("svc-3", Some("eu-west"), Some("eu-west-b"), false)
            .unwrap()
    });
}

/// An eviction run that finds nothing expired: the full scan every interval costs.
#[divan::bench(args = SIZES)]
fn eviction_scan(bencher: Bencher<'_, '_>, n: usize) {
    let (registry, _) = filled(n);
    bencher.bench_local(|| registry.evict());
}

/// A renewal through the kit's client over loopback HTTP/1.1 (one pooled connection).
#[divan::bench]
fn http_renew(bencher: Bencher<'_, '_>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (registry, keys) = filled(100);
    let registry = Arc::new(registry);
    let client = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = api::router(registry.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        DiscoveryClient::new(base)
    });
    let (service, id) = keys[0].clone();
    bencher.bench_local(|| runtime.block_on(client.renew(&service, &id)).unwrap());
}

/// A zone-aware lookup through the kit's client over loopback HTTP (10 instances).
#[divan::bench]
fn http_lookup(bencher: Bencher<'_, '_>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (registry, _) = filled(100);
    let registry = Arc::new(registry);
    let client = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = api::router(registry.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        DiscoveryClient::new(base)
    });
    let near = Placement {
        region: "eu-west".into(),
        zone: "eu-west-b".into(),
    };
    bencher.bench_local(|| {
        runtime
            .block_on(client.instances("svc-3", Some(&near)))
            .unwrap()
    });
}
