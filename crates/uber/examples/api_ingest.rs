//! Location updates per second through the HTTP batch API (`POST /v1/locations`),
//! end to end: JSON parse, validation, the outbox commit (the primary store, a
//! WAL record per 1,000 updates), then the index. Two client tasks post
//! batches serialised before the clock starts over loopback to the router served in-process.
//!
//! Quick in-process measurement, not the benchmark: `nice -n 19 cargo run
//! --release -p casebook-uber --example api_ingest [sync|nosync] [batch]
//! [seconds]`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use casebook_kit::clock::SystemClock;
use casebook_kit::http_client::HttpClient;
use casebook_kit::wal::Durability;
use casebook_uber::api::{ApiConfig, Engine, router};
use http::{HeaderMap, HeaderValue, Method, header};

const CLIENTS: u64 = 2;
const DRIVERS_PER_CLIENT: u64 = 50_000;
/// Batches serialised up front per client (the run stops early if it runs out).
const BATCHES_PER_CLIENT: u64 = 60;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let durability = match args.first().map(String::as_str) {
        Some("nosync") => Durability::NoSync,
        _ => Durability::Sync,
    };
    let batch: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let seconds: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(4);

    let dir = tempfile::tempdir()?;
    let engine = Engine::open(
        dir.path(),
        ApiConfig {
            max_batch: batch,
            durability,
            ..ApiConfig::default()
        },
        SystemClock::shared(),
    )?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(axum::serve(listener, router(engine.clone())).into_future());
    let relay_stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(engine.clone().relay(relay_stop.clone()));

    // Every batch is serialised before the clock starts: the number is server work.
    let bodies: Vec<Vec<Bytes>> = (0..CLIENTS)
        .map(|c| {
            (1..=BATCHES_PER_CLIENT)
                .map(|ts| {
                    let mut body = String::with_capacity(batch * 90);
                    body.push_str("{\"updates\":[");
                    for i in 0..batch as u64 {
                        let d = c * DRIVERS_PER_CLIENT + (ts * batch as u64 + i) % DRIVERS_PER_CLIENT;
                        let lat = 40.70 + (d % 1000) as f64 * 1e-4 + (ts % 7) as f64 * 1e-5;
                        let lon = -74.00 + (d / 1000) as f64 * 1e-3;
                        if i > 0 {
                            body.push(',');
                        }
                        body.push_str(&format!(
                            "{{\"driver\":{d},\"lat\":{lat:.6},\"lon\":{lon:.6},\"ts\":{ts},\"status\":\"available\"}}"
                        ));
                    }
                    body.push_str("]}");
                    Bytes::from(body)
                })
                .collect()
        })
        .collect();

    let accepted = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mine in bodies {
        let accepted = accepted.clone();
        let url = format!("http://{addr}/v1/locations");
        tasks.push(tokio::spawn(async move {
            let client = HttpClient::new(Duration::from_secs(30));
            for body in mine {
                if Instant::now() >= deadline {
                    break;
                }
                let mut headers = HeaderMap::new();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                let response = client
                    .send(Method::POST, &url, headers, body)
                    .await
                    .expect("answered");
                assert!(response.status.is_success(), "{:?}", response.body);
                let report: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
                accepted.fetch_add(report["accepted"].as_u64().unwrap(), Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let n = accepted.load(Ordering::Relaxed);
    relay_stop.cancel();
    println!(
        "{durability:?}, batch {batch}: {n} updates accepted in {elapsed:.2} s = {:.0} updates/s over HTTP (2 clients and the server on 2 worker threads)",
        n as f64 / elapsed
    );
    Ok(())
}
