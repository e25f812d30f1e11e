//! `kill -9` the real `casebook up --case amazon` (inventory only) while 32
//! clients reserve, confirm, release and read over Zipf-skewed SKUs, 5 % of
//! reservations repeated with the same key; restart it on the same data dir and
//! port; the clients retry every request whose answer they never got, with the
//! same key, until answered. Then the recorded history and the final state must
//! pass both checkers of `casebook_amazon::check`: conservation (nothing
//! oversold, nothing acknowledged lost, one effect per key) and per-SKU
//! linearizability (stateright). The kill lands after at least one inventory
//! snapshot, so the restart recovers from a snapshot plus the log after it.
//! Waits are bounded by deadlines; nothing asserts on timing.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use casebook_amazon::check::clients::{Workload, final_state, run_client, stock_all};
use casebook_amazon::check::linearizable::check_linearizable;
use casebook_amazon::check::{Recorder, check_conservation};
use casebook_kit::http_client::HttpClient;
use http::Method;
use support::Up;

const CLIENTS: u32 = 32;
const OPS_PER_CLIENT: u32 = 100;
const STOCK: u64 = 20;
const DEADLINE: Duration = Duration::from_secs(120);

fn amazon(dir: &std::path::Path, port: u16) -> Up {
    Up::builder(dir)
        .up_arg("--case")
        .up_arg("amazon")
        .env("CASEBOOK_AMAZON__INVENTORY_ONLY", "true")
        .env("CASEBOOK_AMAZON__HTTP_PORT", &port.to_string())
        // The smallest allowed: a snapshot lands well before the kill.
        .env("CASEBOOK_AMAZON__SNAPSHOT_AFTER_RECORDS", "1000")
        .env("CASEBOOK_AMAZON__SWEEP_EVERY", "100ms")
        .start()
}

async fn snapshots(http: &HttpClient, base: &str) -> f64 {
    let Ok(response) = http
        .send(
            Method::GET,
            &format!("{base}/metrics"),
            Default::default(),
            Default::default(),
        )
        .await
    else {
        return 0.0;
    };
    String::from_utf8_lossy(&response.body)
        .lines()
        .filter(|line| line.starts_with("amazon_inventory_snapshots_total"))
        .filter_map(|line| line.rsplit(' ').next()?.trim().parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_survive_kill_9_conserved_and_linearizable() {
    let seed = casebook_testkit::seed("crash_amazon");
    let dir = tempfile::tempdir().unwrap();
    let port = casebook_testkit::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut up = amazon(dir.path(), port);
    let workload = Arc::new(Workload {
        clients: CLIENTS,
        ops_per_client: OPS_PER_CLIENT,
        // Contention stays moderate: the linearizability search (stateright's,
        // unmemoised) is exponential in a stretch of overlapping operations on
        // one SKU, and a crash makes every in-flight operation overlap.
        skus: (0..128).map(|i| format!("sku-{i}")).collect(),
        zipf: 0.5,
        duplicate_percent: 5,
        max_qty: 3,
        ttl_seconds: 86_400,
        seed,
        give_up_after: DEADLINE,
    });
    let recorder = Arc::new(Recorder::new());
    let http = HttpClient::new(Duration::from_secs(5));
    stock_all(&http, &base, &workload, STOCK, &recorder).await;
    let answered = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            tokio::spawn(run_client(
                c,
                http.clone(),
                base.clone(),
                workload.clone(),
                recorder.clone(),
                answered.clone(),
            ))
        })
        .collect();
    let total = u64::from(CLIENTS * OPS_PER_CLIENT);
    let give_up = tokio::time::Instant::now() + DEADLINE;
    while snapshots(&http, &base).await < 1.0 || answered.load(Ordering::Relaxed) < total / 3 {
        assert!(
            tokio::time::Instant::now() < give_up,
            "no snapshot after {} of {total} operations",
            answered.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let at_kill = answered.load(Ordering::Relaxed);
    assert!(at_kill < total, "the kill lands mid-run");
    up.kill();
    let up = amazon(dir.path(), port);
    for client in clients {
        client.await.unwrap();
    }
    let events = recorder.events();
    let end = final_state(&http, &base, &workload, &events).await;
    drop(up);
    let report = check_conservation(&events, &end, false)
        .unwrap_or_else(|v| panic!("conservation violated:\n{}", v.join("\n")));
    let (skus, checked) = tokio::task::spawn_blocking(move || check_linearizable(&events))
        .await
        .unwrap()
        .unwrap_or_else(|v| panic!("not linearizable:\n{}", v.join("\n")));
    println!(
        "killed after {at_kill} of {total} operations; {} events, {} keys, {} reservations conserved; \
         {skus} SKUs / {checked} events linearizable",
        report.events, report.keys, report.reservations
    );
}
