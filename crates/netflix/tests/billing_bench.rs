//! How fast subscribe is end to end (HTTP → idempotency store → SQL intent →
//! provider → SQL outcome → recorded answer) on the embedded SQLite, with the
//! provider answering at once. A measurement, not a test: run it with
//! `cargo test --release -p casebook-netflix --test billing_bench -- --ignored --nocapture`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use casebook_kit::clock::SystemClock;
use casebook_kit::http_client::HttpClient;
use casebook_netflix::billing::provider::{Pause, SimulatedProvider, Simulation};
use casebook_netflix::billing::{Billing, BillingConfig, api};
use hdrhistogram::Histogram;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};

async fn run(
    url: &str,
    workers: usize,
    per_worker: usize,
    tag: &str,
    replay: bool,
) -> Histogram<u64> {
    let client = HttpClient::new(Duration::from_secs(30));
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (client, url, tag) = (client.clone(), url.to_owned(), tag.to_owned());
            tokio::spawn(async move {
                let mut latencies = Histogram::<u64>::new(3).unwrap();
                for i in 0..per_worker {
                    let mut headers = HeaderMap::new();
                    let account = format!("{tag}-{w}");
                    let key = if replay {
                        "same".to_owned()
                    } else {
                        format!("k{i}")
                    };
                    // A new account per call when not replaying: an account
                    // subscribed to a plan would answer 409 to the next.
                    let account = if replay {
                        account
                    } else {
                        format!("{account}-{i}")
                    };
                    headers.insert("x-user-id", HeaderValue::from_str(&account).unwrap());
                    headers.insert("idempotency-key", HeaderValue::from_str(&key).unwrap());
                    headers.insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    let started = Instant::now();
                    let response = client
                        .send(
                            Method::POST,
                            &url,
                            headers,
                            Bytes::from_static(br#"{"plan":"standard"}"#),
                        )
                        .await
                        .unwrap();
                    assert_eq!(response.status, StatusCode::CREATED, "{:?}", response.body);
                    latencies
                        .record(started.elapsed().as_micros() as u64)
                        .unwrap();
                }
                latencies
            })
        })
        .collect();
    let mut all = Histogram::<u64>::new(3).unwrap();
    for task in tasks {
        all.add(task.await.unwrap()).unwrap();
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run with --release --ignored --nocapture"]
async fn subscribe_throughput_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let provider = Arc::new(SimulatedProvider::new(
        Simulation::default(),
        Pause::tokio(),
    ));
    let mut config = BillingConfig::default();
    config.provider.latency = Duration::ZERO;
    let billing = Arc::new(
        Billing::open(
            &config,
            dir.path(),
            provider.clone(),
            SystemClock::shared(),
            Pause::tokio(),
        )
        .await
        .unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, api::router(billing)).await.unwrap();
    });
    let url = format!("http://{address}/api/v1/billing/subscribe");
    let mut charged = 0;
    for (workers, per_worker, replay) in [(1, 500, false), (16, 200, false), (16, 200, true)] {
        let tag = format!("w{workers}-{replay}");
        let started = Instant::now();
        let latencies = run(&url, workers, per_worker, &tag, replay).await;
        let elapsed = started.elapsed();
        let total = workers * per_worker;
        if !replay {
            charged += total;
        } else {
            charged += workers;
        }
        println!(
            "{:>8} concurrency {workers:>2}: {total} subscribes in {:.2}s = {:.0}/s; p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            if replay { "replays" } else { "new" },
            elapsed.as_secs_f64(),
            total as f64 / elapsed.as_secs_f64(),
            latencies.value_at_quantile(0.5) as f64 / 1000.0,
            latencies.value_at_quantile(0.99) as f64 / 1000.0,
            latencies.max() as f64 / 1000.0,
        );
    }
    assert_eq!(provider.ledger().len(), charged);
}
