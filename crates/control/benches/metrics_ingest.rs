//! Ingest throughput of the dimensional metrics store.
//!
//! `cargo bench -p casebook-control --bench metrics_ingest`
//!
//! 1. **In-process**: `MetricsStore::ingest` on prebuilt batches of 5,000 datapoints
//!    (validation, hashing, sharding and storing all included), over 10k and 100k
//!    series of a name plus 5 tags, with 1 and 2 threads, each thread publishing its
//!    own share of the series as each node publishes its own. The first pass over
//!    the series creates them and is reported apart ("cold"). Datapoints per
//!    CPU-second are printed too: on a shared machine they say what a core does.
//! 2. **JSON parse**: `serde_json` of the same batches alone, for scale.
//! 3. **HTTP**: `POST /api/metrics/publish` over loopback with prebuilt JSON bodies,
//!    2 concurrent clients, server and clients sharing the same 2 cores.
//!
//! Set `METRICS_BENCH_SERIES=10000` (comma-separated) to choose the series counts
//! and `METRICS_BENCH_SHARDS=N` the store's lock shards (default 32). A fourth line,
//! "unshared", runs two threads on two separate stores: the machine's own scaling
//! ceiling, to read the two-thread line against.
//! Prints datapoints per second; no assertions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use casebook_control::metrics_store::query::{Aggregate, Query};
use casebook_control::metrics_store::{MetricsStore, MetricsStoreConfig, api};
use casebook_kit::clock::{Clock, SystemClock};
use casebook_kit::http_client::HttpClient;
use casebook_kit::metrics_push::{Datapoint, MetricKind, PublishBatch};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

const BATCH: usize = 5_000;
const NAMES: [&str; 10] = [
    "http_requests_total",
    "http_errors_total",
    "cpu_utilization",
    "memory_used_bytes",
    "queue_depth",
    "cache_hits_total",
    "cache_misses_total",
    "gc_pause_total",
    "connections_open",
    "bytes_sent_total",
];

/// The tags of series `i`: a realistic fleet of nodes across regions and zones.
fn series_tags(i: usize) -> (String, BTreeMap<String, String>) {
    let name = NAMES[i % NAMES.len()].to_owned();
    let node = i / NAMES.len();
    let region = ["us-east", "eu-west", "ap-south"][node % 3];
    let zone = format!("{region}-{}", ["a", "b", "c"][(node / 3) % 3]);
    let tags = BTreeMap::from([
        ("app".to_owned(), format!("app-{}", node % 40)),
        ("node".to_owned(), format!("i-{node:07x}")),
        ("region".to_owned(), region.to_owned()),
        (
            "status".to_owned(),
            ["2xx", "3xx", "4xx", "5xx"][node % 4].to_owned(),
        ),
        ("zone".to_owned(), zone),
    ]);
    (name, tags)
}

fn kind_of(name: &str) -> MetricKind {
    if name.ends_with("_total") {
        MetricKind::Counter
    } else {
        MetricKind::Gauge
    }
}

/// Batches covering every series once, in a shuffled order, stamped `now_ms`.
fn batches(series: usize, now_ms: u64, seed: u64) -> Vec<PublishBatch> {
    batches_of(0..series, now_ms, seed)
}

/// Batches covering `series` once, in a shuffled order, stamped `now_ms`.
fn batches_of(series: impl Iterator<Item = usize>, now_ms: u64, seed: u64) -> Vec<PublishBatch> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut order: Vec<usize> = series.collect();
    order.shuffle(&mut rng);
    order
        .chunks(BATCH)
        .map(|chunk| PublishBatch {
            tags: BTreeMap::new(),
            metrics: chunk
                .iter()
                .map(|&i| {
                    let (name, tags) = series_tags(i);
                    let kind = kind_of(&name);
                    Datapoint::scalar(name, tags, now_ms, kind, rng.random_range(0.0..100.0))
                })
                .collect(),
        })
        .collect()
}

/// CPU seconds this process has used (user + system), from `/proc/self/stat`
/// (clock ticks of 1/100 s); `None` off Linux.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Datapoints per CPU-second: what one core does, however busy the machine is.
fn per_cpu(datapoints: usize, cpu: Option<f64>) -> String {
    match cpu {
        Some(cpu) if cpu > 0.0 => format!("{:>10.0} datapoints/cpu-s", datapoints as f64 / cpu),
        _ => "n/a".to_owned(),
    }
}

fn rate(datapoints: usize, elapsed: Duration) -> String {
    format!(
        "{:>10.0} datapoints/s",
        datapoints as f64 / elapsed.as_secs_f64()
    )
}

fn store_for(series: usize) -> Arc<MetricsStore> {
    Arc::new(MetricsStore::with_config(
        SystemClock::shared(),
        MetricsStoreConfig {
            max_series: series * 2,
            shards: std::env::var("METRICS_BENCH_SHARDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(MetricsStoreConfig::default().shards),
            ..MetricsStoreConfig::default()
        },
    ))
}

/// Datapoints in `batches`.
fn datapoints(batches: &[Vec<PublishBatch>]) -> usize {
    batches.iter().flatten().map(|b| b.metrics.len()).sum()
}

/// Each thread publishes its own share of the series (as each node publishes its
/// own), `rounds` times. The steady passes visit the series in another shuffled
/// order than the one they were created in: the same order would let the hardware
/// prefetcher stream the store's memory, which real traffic does not.
fn ingest_in_process(series: usize, threads: usize, rounds: usize) {
    let store = store_for(series);
    let now = SystemClock.wall_millis();
    let share = |t: usize, seed: u64| batches_of((t..series).step_by(threads), now, seed);
    let per_thread: Vec<Vec<PublishBatch>> = (0..threads).map(|t| share(t, t as u64)).collect();
    let per_thread_steady: Vec<Vec<PublishBatch>> =
        (0..threads).map(|t| share(t, 100 + t as u64)).collect();

    // Cold: the first pass creates the series.
    let started = Instant::now();
    std::thread::scope(|scope| {
        for batches in &per_thread {
            let store = &store;
            scope.spawn(move || {
                for batch in batches {
                    store.ingest(batch).expect("valid batch");
                }
            });
        }
    });
    let cold = started.elapsed();

    let cpu_before = cpu_seconds();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for batches in &per_thread_steady {
            let store = &store;
            scope.spawn(move || {
                for _ in 0..rounds {
                    for batch in batches {
                        store.ingest(batch).expect("valid batch");
                    }
                }
            });
        }
    });
    let warm = started.elapsed();
    let cpu = cpu_seconds()
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    let stats = store.stats();
    assert_eq!(stats.dropped.total(), 0, "the bench's datapoints all fit");
    assert_eq!(stats.series, series);
    let steady = datapoints(&per_thread_steady) * rounds;
    assert_eq!(stats.datapoints_ingested as usize, series + steady);
    println!(
        "in-process  series={series:>6} threads={threads}  cold {}   steady {}  ({}, {:.2} cores busy)",
        rate(datapoints(&per_thread), cold),
        rate(steady, warm),
        per_cpu(steady, cpu),
        cpu.unwrap_or(0.0) / warm.as_secs_f64()
    );

    if threads == 1 {
        let q = Query {
            group_by: vec!["zone".into()],
            aggregate: Aggregate::Sum,
            ..Query::new("http_requests_total")
        };
        let started = Instant::now();
        let result = store.query(&q).expect("query");
        println!(
            "query       series={series:>6} sum by zone over 5 min of 1 s steps ({} of them): {:?} -> {} groups",
            series / NAMES.len(),
            started.elapsed(),
            result.series.len()
        );
    }
}

/// The machine's own scaling ceiling: two threads, each with a store of its own
/// (nothing shared), each ingesting half the series.
fn ingest_unshared(series: usize, rounds: usize) {
    let now = SystemClock.wall_millis();
    let work: Vec<(Arc<MetricsStore>, Vec<PublishBatch>)> = (0..2)
        .map(|t| {
            let store = store_for(series);
            for batch in &batches_of((t..series).step_by(2), now, t as u64) {
                store.ingest(batch).expect("valid batch");
            }
            (
                store,
                batches_of((t..series).step_by(2), now, 100 + t as u64),
            )
        })
        .collect();
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for (store, batches) in &work {
            scope.spawn(move || {
                for _ in 0..rounds {
                    for batch in batches {
                        store.ingest(batch).expect("valid batch");
                    }
                }
            });
        }
    });
    let elapsed = started.elapsed();
    let cpu = cpu_seconds()
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    println!(
        "unshared    series={series:>6} threads=2  (two stores)    steady {}  ({}, {:.2} cores busy)",
        rate(series * rounds, elapsed),
        per_cpu(series * rounds, cpu),
        cpu.unwrap_or(0.0) / elapsed.as_secs_f64()
    );
}

fn json_parse(series: usize) {
    let now = SystemClock.wall_millis();
    let bodies: Vec<Vec<u8>> = batches(series, now, 9)
        .iter()
        .map(|b| serde_json::to_vec(b).unwrap())
        .collect();
    let started = Instant::now();
    let mut parsed = 0;
    for body in &bodies {
        let batch: PublishBatch = serde_json::from_slice(body).unwrap();
        parsed += batch.metrics.len();
    }
    println!(
        "json parse  series={series:>6} threads=1  {}  ({} bytes per datapoint)",
        rate(parsed, started.elapsed()),
        bodies.iter().map(Vec::len).sum::<usize>() / series
    );
}

fn http_publish(series: usize, clients: usize, rounds: usize) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = store_for(series);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/api/metrics/publish",
            listener.local_addr().unwrap()
        );
        let server = tokio::spawn(axum::serve(listener, api::router(store.clone())).into_future());
        let now = SystemClock.wall_millis();
        let bodies: Arc<Vec<Bytes>> = Arc::new(
            batches(series, now, 7)
                .iter()
                .map(|b| Bytes::from(serde_json::to_vec(b).unwrap()))
                .collect(),
        );
        let client = HttpClient::new(Duration::from_secs(30));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        // Create the series first so the timed part is the steady state.
        for body in bodies.iter() {
            let r = client
                .send(Method::POST, &url, headers.clone(), body.clone())
                .await
                .unwrap();
            assert!(r.status.is_success(), "{:?}", r.body);
        }
        let cpu_before = cpu_seconds();
        let started = Instant::now();
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                let (client, url, headers, bodies) =
                    (client.clone(), url.clone(), headers.clone(), bodies.clone());
                tokio::spawn(async move {
                    for round in 0..rounds {
                        for i in 0..bodies.len() {
                            let body = bodies[(i + c + round) % bodies.len()].clone();
                            let r = client
                                .send(Method::POST, &url, headers.clone(), body)
                                .await
                                .unwrap();
                            assert!(r.status.is_success());
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let elapsed = started.elapsed();
        let cpu = cpu_seconds()
            .zip(cpu_before)
            .map(|(after, before)| after - before);
        let sent = series * clients * rounds;
        println!(
            "http        series={series:>6} clients={clients}  {}  ({}, clients included)",
            rate(sent, elapsed),
            per_cpu(sent, cpu)
        );
        server.abort();
    });
}

fn main() {
    let sizes: Vec<usize> = std::env::var("METRICS_BENCH_SERIES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000, 100_000]);
    println!("metrics_ingest: batches of {BATCH} datapoints, name + 5 tags per series");
    for &series in &sizes {
        // About 8M datapoints per measurement.
        let rounds = (8_000_000 / series).max(2);
        ingest_in_process(series, 1, rounds);
        ingest_in_process(series, 2, rounds);
        ingest_unshared(series, rounds);
        json_parse(series);
        http_publish(series, 2, (1_000_000 / series).max(1));
    }
}
