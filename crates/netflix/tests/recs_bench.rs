//! Quick measurements, not tests (ignored; they assert nothing about time):
//!
//! ```text
//! cargo test --release -p casebook-netflix --test recs_bench -- --ignored --nocapture --test-threads 1
//! ```
//!
//! - `search_throughput`: queries per second over the default catalog (3000
//!   titles), one thread, half exact queries (two words of a name, an actor's
//!   name), half with a typo (a letter dropped or two swapped in the longest word);
//! - `home_latency`: `GET /api/v1/home` over HTTP at a fixed rate (kit loadgen,
//!   open loop) with a fake users service answering 20 history items per viewer,
//!   viewers drawn from 50,000 (mostly cache misses), on a multi-thread runtime.

mod fakes;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use casebook_kit::clock::SystemClock;
use casebook_kit::http_client::HttpClient;
use casebook_kit::loadgen::{LoadPlan, Verdict, run};
use casebook_kit::resilience::breaker::BreakerRegistry;
use casebook_kit::resolve::Resolver;
use casebook_kit::sampling::Rng;
use casebook_netflix::catalog::generate::generate;
use casebook_netflix::catalog::{CATALOG_SERVICE, CatalogStore};
use casebook_netflix::config::NetflixConfig;
use casebook_netflix::recs::Recs;
use casebook_netflix::recs::search::{SearchIndex, query_terms};
use casebook_netflix::users::USERS_SERVICE;
use fakes::{FakeDiscovery, placement, serve};
use http::{HeaderMap, HeaderValue, Method};
use serde_json::json;

fn typo(word: &str, rng: &mut Rng) -> String {
    let chars: Vec<char> = word.chars().collect();
    let i = 1 + rng.below(chars.len() as u64 - 2) as usize;
    let mut out = chars.clone();
    if rng.chance(0.5) {
        out.remove(i);
    } else {
        out.swap(i, i + 1);
    }
    out.into_iter().collect()
}

fn query_mix(n: usize) -> Vec<String> {
    let titles = generate(42, 3000);
    let mut rng = Rng::new(9);
    (0..n)
        .map(|i| {
            let t = &titles[rng.below(titles.len() as u64) as usize];
            let source = if rng.chance(0.5) {
                t.name.clone()
            } else {
                t.cast[0].clone()
            };
            let words: Vec<&str> = source
                .split(' ')
                .filter(|w| w.len() > 2 && *w != "The")
                .collect();
            if i % 2 == 0 || words.is_empty() {
                words.join(" ")
            } else {
                let longest = words.iter().max_by_key(|w| w.len()).unwrap();
                words
                    .iter()
                    .map(|w| {
                        if w == longest && w.len() > 3 {
                            typo(w, &mut rng)
                        } else {
                            (*w).to_owned()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        })
        .collect()
}

#[test]
#[ignore]
fn search_throughput() {
    let titles = generate(42, 3000);
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let index = SearchIndex::build(&dir.path().join("i"), &titles).unwrap();
    println!(
        "index of {} titles built in {:?}",
        titles.len(),
        started.elapsed()
    );
    let queries = query_mix(20_000);
    let mut latencies = hdrhistogram::Histogram::<u64>::new(3).unwrap();
    // Warm up: the first queries map the index's pages.
    for q in queries.iter().take(500) {
        index.search(&query_terms(q).unwrap(), 20).unwrap();
    }
    let started = Instant::now();
    let mut found = 0usize;
    for q in &queries {
        let one = Instant::now();
        let hits = index.search(&query_terms(q).unwrap(), 20).unwrap();
        latencies.record(one.elapsed().as_micros() as u64).unwrap();
        found += usize::from(!hits.is_empty());
    }
    let took = started.elapsed();
    println!(
        "search: {} queries in {:?} = {:.0} q/s on one thread; p50 {} µs, p99 {} µs, max {} µs; {} of them found something",
        queries.len(),
        took,
        queries.len() as f64 / took.as_secs_f64(),
        latencies.value_at_quantile(0.5),
        latencies.value_at_quantile(0.99),
        latencies.max(),
        found
    );
    for split in [("exact", 0), ("typo", 1)] {
        let mut h = hdrhistogram::Histogram::<u64>::new(3).unwrap();
        let started = Instant::now();
        let mut n = 0;
        for q in queries.iter().skip(split.1).step_by(2) {
            let one = Instant::now();
            index.search(&query_terms(q).unwrap(), 20).unwrap();
            h.record(one.elapsed().as_micros() as u64).unwrap();
            n += 1;
        }
        println!(
            "  {}: {:.0} q/s, p50 {} µs, p99 {} µs",
            split.0,
            n as f64 / started.elapsed().as_secs_f64(),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99)
        );
    }
}

#[test]
#[ignore]
fn home_latency() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let clock = SystemClock::shared();
        let discovery = Arc::new(FakeDiscovery::default());
        let config = NetflixConfig::default();
        let store = Arc::new(CatalogStore::new(&config.catalog));
        discovery.register(
            CATALOG_SERVICE,
            serve(casebook_netflix::catalog::router(store)).await,
            "r1",
        );
        let users = Router::new()
            .route(
                "/internal/v1/history/{account}",
                get(|Path(account): Path<String>| async move {
                    let n: u64 = account.trim_start_matches('u').parse().unwrap_or(0);
                    let items: Vec<_> = (0..20)
                        .map(|i| {
                            json!({
                                "title": format!("t{:05}", (n * 7 + i * 131) % 3000),
                                "position_s": if i % 3 == 0 { 300.0 } else { 2900.0 },
                                "duration_s": 3000.0,
                                "updated_ms": 0,
                            })
                        })
                        .collect();
                    axum::Json(json!({ "account": account, "items": items }))
                }),
            )
            .route(
                "/internal/v1/trending",
                get(|| async {
                    let titles: Vec<_> = (0..12)
                        .map(|i| json!({ "title": format!("t{:05}", i * 17), "views": 100 - i }))
                        .collect();
                    axum::Json(json!({ "titles": titles }))
                }),
            );
        discovery.register(USERS_SERVICE, serve(users).await, "r1");
        let resolver = Arc::new(Resolver::detached(clock.clone()));
        resolver.attach(discovery);
        let dir = tempfile::tempdir().unwrap();
        let recs = Arc::new(
            Recs::new(
                &config,
                resolver,
                placement("r1"),
                dir.path(),
                clock.clone(),
                BreakerRegistry::new(clock),
            )
            .unwrap(),
        );
        recs.refresh().await.unwrap();
        let url = format!(
            "http://{}/api/v1/home",
            serve(casebook_netflix::recs::router(recs)).await
        );
        let client = HttpClient::new(Duration::from_secs(2));
        for rate in [200.0, 500.0] {
            let plan = LoadPlan::new(rate, Duration::from_secs(10));
            let report = run(&plan, |i| {
                let client = client.clone();
                let url = url.clone();
                ("home", async move {
                    let mut headers = HeaderMap::new();
                    let viewer = format!("u{}", (i * 7919) % 50_000);
                    headers.insert("x-user-id", HeaderValue::from_str(&viewer).unwrap());
                    match client
                        .send(Method::GET, &url, headers, bytes::Bytes::new())
                        .await
                    {
                        Ok(r) if r.status.is_success() => Verdict::Ok,
                        _ => Verdict::Error,
                    }
                })
            })
            .await
            .unwrap();
            println!("home at {rate} req/s:\n{}", report.table());
        }
    });
}

#[test]
#[ignore]
fn home_compose_cost() {
    use casebook_netflix::recs::Ready;
    use casebook_netflix::recs::home::{HistoryItem, compose};
    let store = CatalogStore::new(&NetflixConfig::default().catalog);
    let dir = tempfile::tempdir().unwrap();
    let ready = Ready::build(store.snapshot(), dir.path().join("i")).unwrap();
    let history: Vec<HistoryItem> = (0..20)
        .map(|i| HistoryItem {
            title: format!("t{:05}", (i * 131) % 3000),
            position_s: 300.0,
            duration_s: 3000.0,
            updated_ms: 0,
        })
        .collect();
    let started = Instant::now();
    let n = 2000;
    for _ in 0..n {
        let home = compose(&ready, Some(&history), None, 12);
        assert!(!home.rows.is_empty());
    }
    println!("compose: {:?} per home", started.elapsed() / n);
    let started = Instant::now();
    for _ in 0..n {
        ready.index.more_like(&ready.titles[0], 33).unwrap();
    }
    println!("more_like: {:?} per query", started.elapsed() / n);
}
