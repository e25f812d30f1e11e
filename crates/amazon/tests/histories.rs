//! Recorded histories through a real listener, checked by both checkers: 32
//! clients, 5 % duplicate keys, the server stopped mid-run (its stores dropped
//! with requests in flight) and reopened on the same directory and port, every
//! unanswered request retried. The binary's `kill -9` version is
//! `crates/casebook/tests/crash_amazon.rs`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use casebook_amazon::check::clients::{Workload, final_state, run_client, stock_all};
use casebook_amazon::check::linearizable::check_linearizable;
use casebook_amazon::check::{Recorder, check_conservation};
use casebook_kit::clock::ManualClock;
use casebook_kit::http_client::HttpClient;
use support::{MemoryCart, Stack};

/// The server in a runtime of its own, so that dropping the runtime kills every
/// task it ran — connections included — as a crash would.
fn serve(
    dir: &std::path::Path,
    clock: &ManualClock,
    at: std::net::SocketAddr,
) -> (tokio::runtime::Runtime, std::net::SocketAddr) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let stack = Stack::open(dir, clock, Arc::new(MemoryCart::default()));
    let listener = runtime.block_on(tokio::net::TcpListener::bind(at)).unwrap();
    let address = listener.local_addr().unwrap();
    runtime.spawn(async move {
        axum::serve(listener, stack.router).await.unwrap();
    });
    (runtime, address)
}

fn crash(runtime: tokio::runtime::Runtime) {
    runtime.shutdown_timeout(Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_with_a_restart_conserve_stock_and_are_linearizable() {
    let seed = casebook_testkit::seed("amazon histories");
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let (server, address) = {
        let (dir, clock) = (dir.path().to_owned(), clock.clone());
        tokio::task::spawn_blocking(move || serve(&dir, &clock, "127.0.0.1:0".parse().unwrap()))
            .await
            .unwrap()
    };
    let base = format!("http://{address}");
    let workload = Arc::new(Workload {
        clients: 32,
        ops_per_client: 40,
        // Contention stays moderate: the linearizability search (stateright's,
        // unmemoised) is exponential in a stretch of overlapping operations on
        // one SKU, and a crash makes every in-flight operation overlap.
        skus: (0..128).map(|i| format!("sku-{i}")).collect(),
        zipf: 0.5,
        duplicate_percent: 5,
        max_qty: 3,
        ttl_seconds: 86_400,
        seed,
        give_up_after: Duration::from_secs(60),
    });
    let recorder = Arc::new(Recorder::new());
    let http = HttpClient::new(Duration::from_secs(5));
    let url = base.clone();
    stock_all(&http, &url, &workload, 15, &recorder).await;
    let done = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..workload.clients)
        .map(|c| {
            tokio::spawn(run_client(
                c,
                http.clone(),
                base.clone(),
                workload.clone(),
                recorder.clone(),
                done.clone(),
            ))
        })
        .collect();
    casebook_testkit::eventually(
        "a third of the operations",
        casebook_testkit::DEADLINE,
        || {
            let done = done.clone();
            async move { done.load(Ordering::Relaxed) >= 400 }
        },
    )
    .await;
    // "Crash": the server goes, requests in flight die with it.
    let server = {
        let (dir, clock) = (dir.path().to_owned(), clock.clone());
        tokio::task::spawn_blocking(move || {
            crash(server);
            serve(&dir, &clock, address).0
        })
        .await
        .unwrap()
    };
    for client in clients {
        client.await.unwrap();
    }
    let events = recorder.events();
    let end = final_state(&http, &url, &workload, &events).await;
    tokio::task::spawn_blocking(move || crash(server))
        .await
        .unwrap();
    let report = check_conservation(&events, &end, false)
        .unwrap_or_else(|v| panic!("conservation violated:\n{}", v.join("\n")));
    let (skus, checked) = check_linearizable(&events)
        .unwrap_or_else(|v| panic!("not linearizable:\n{}", v.join("\n")));
    println!(
        "{} events, {} keys, {} reservations; {skus} SKUs / {checked} events linearizable",
        report.events, report.keys, report.reservations
    );
    assert!(report.reservations > 0);
}
