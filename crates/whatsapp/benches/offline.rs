//! Offline store benchmark: one run, one table.
//!
//! `cargo bench -p casebook-whatsapp --bench offline` — options by environment:
//! `BENCH_DIR` (default: the system temp dir; must be on the disk under
//! test), `BENCH_SECS` (seconds of the sustained scenario, default 3).
//!
//! Every scenario is durable (`Durability::Sync`, the default config otherwise).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use casebook_kit::clock::SystemClock;
use casebook_whatsapp::offline::{Ack, NewMessage, OfflineConfig, OfflineSeq, OfflineStore};
use hdrhistogram::Histogram;

const BACKLOG: usize = 10_000;
const BACKLOG_SENDERS: usize = 100;
const RECIPIENT: &str = "bob@example.net";

fn payload(i: usize) -> Bytes {
    // About the size of a short chat stanza with a body and a receipt request.
    Bytes::from(format!(
        "<message to='{RECIPIENT}' type='chat' id='m{i}'><body>{}</body><request xmlns='urn:xmpp:receipts'/></message>",
        "hello ".repeat(30)
    ))
}

fn open(dir: &Path) -> OfflineStore {
    let config = OfflineConfig {
        max_per_recipient: BACKLOG,
        ..OfflineConfig::default()
    };
    OfflineStore::open(dir, config, SystemClock::shared()).expect("open store")
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds")
}

/// 10,000 messages for one recipient from 100 concurrent senders.
async fn store_backlog(store: &OfflineStore) -> Duration {
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for sender in 0..BACKLOG_SENDERS {
        let store = store.clone();
        tasks.spawn(async move {
            for i in (sender..BACKLOG).step_by(BACKLOG_SENDERS) {
                store
                    .store(NewMessage {
                        id: format!("m{i}"),
                        recipient: RECIPIENT.into(),
                        sender: format!("sender{sender}@example.com/phone"),
                        payload: payload(i),
                    })
                    .await
                    .expect("store");
            }
        });
    }
    tasks.join_all().await;
    start.elapsed()
}

/// Reconnect: read the backlog in order, page by page, acknowledging each page.
async fn flush(store: &OfflineStore, page: usize) -> (Duration, usize) {
    let start = Instant::now();
    let mut delivered = 0;
    let mut last: Option<OfflineSeq> = None;
    loop {
        let batch = store.pending(RECIPIENT, page);
        let Some(tail) = batch.last() else { break };
        if let Some(prev) = last {
            assert!(batch[0].seq > prev, "delivered in order");
        }
        last = Some(tail.seq);
        delivered += batch.len();
        // The bytes would be written to the socket here; touch them.
        std::hint::black_box(batch.iter().map(|m| m.payload.len()).sum::<usize>());
        let removed = store
            .ack(RECIPIENT, Ack::UpTo(tail.seq))
            .await
            .expect("ack");
        assert_eq!(removed, batch.len());
    }
    (start.elapsed(), delivered)
}

/// `senders` tasks each storing for `run_for` to recipients spread over 10,000.
async fn sustained(
    store: &OfflineStore,
    senders: usize,
    run_for: Duration,
) -> (u64, Duration, Histogram<u64>) {
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for sender in 0..senders {
        let store = store.clone();
        tasks.spawn(async move {
            let mut latency = histogram();
            let mut i = 0usize;
            while start.elapsed() < run_for {
                let t = Instant::now();
                store
                    .store(NewMessage {
                        id: format!("s{i}"),
                        recipient: format!("user{}@example.net", (sender * 7919 + i) % 10_000),
                        sender: format!("sender{sender}@example.com/phone"),
                        payload: payload(i),
                    })
                    .await
                    .expect("store");
                latency.saturating_record(t.elapsed().as_micros() as u64);
                i += 1;
            }
            latency
        });
    }
    let mut latency = histogram();
    for h in tasks.join_all().await {
        latency.add(h).expect("same bounds");
    }
    let elapsed = start.elapsed();
    (latency.len(), elapsed, latency)
}

fn main() {
    let base = std::env::var_os("BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let rows: Arc<parking_lot::Mutex<Vec<String>>> = Arc::default();
    let row = |name: &str, value: String| {
        rows.lock().push(format!("| {name:<66} | {value:>28} |"));
    };
    runtime.block_on(async {
        for page in [100, 1000] {
            let dir = tempfile::tempdir_in(&base).expect("bench dir");
            let store = open(dir.path());
            let stored = store_backlog(&store).await;
            row(
                &format!("store {BACKLOG} msgs for 1 recipient, {BACKLOG_SENDERS} senders (page {page} run)"),
                format!("{:.0} ms ({:.0} msg/s)", stored.as_secs_f64() * 1e3, BACKLOG as f64 / stored.as_secs_f64()),
            );
            drop(store);
            let start = Instant::now();
            let store = open(dir.path());
            let reopened = start.elapsed();
            assert_eq!(store.count(RECIPIENT), BACKLOG);
            row(
                "restart: open + replay 16 shards holding the backlog",
                format!("{:.0} ms", reopened.as_secs_f64() * 1e3),
            );
            let (flushed, delivered) = flush(&store, page).await;
            assert_eq!(delivered, BACKLOG);
            assert_eq!(store.count(RECIPIENT), 0);
            row(
                &format!("flush {BACKLOG} on reconnect: read in order + ack every {page}"),
                format!("{:.0} ms ({:.0} msg/s)", flushed.as_secs_f64() * 1e3, BACKLOG as f64 / flushed.as_secs_f64()),
            );
        }
        for senders in [1, 256] {
            let dir = tempfile::tempdir_in(&base).expect("bench dir");
            let store = open(dir.path());
            let (ops, elapsed, latency) = sustained(&store, senders, Duration::from_secs(secs)).await;
            row(
                &format!("sustained store, {senders} senders -> 10k recipients"),
                format!(
                    "{:.0} msg/s p50 {}us p99 {}us",
                    ops as f64 / elapsed.as_secs_f64(),
                    latency.value_at_quantile(0.5),
                    latency.value_at_quantile(0.99)
                ),
            );
        }
    });
    println!("\nOffline store (durable: fdatasync before store returns)");
    println!("| {:<66} | {:>28} |", "scenario", "result");
    println!("|{}|{}|", "-".repeat(68), "-".repeat(30));
    for line in rows.lock().iter() {
        println!("{line}");
    }
}
