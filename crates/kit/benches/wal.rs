//! WAL and event-bus benchmark: one run, one table.
//!
//! `cargo bench -p casebook-kit --bench wal` — options by environment:
//! `BENCH_DIR` (default: the system temp dir; must be on the disk under
//! test), `BENCH_SECS` (seconds per scenario, default 3).
//!
//! Durable scenarios use `Durability::Sync`; the one `NoSync` row says so.

use std::path::Path;
use std::time::{Duration, Instant};

use casebook_kit::wal::{Durability, Wal, WalConfig};
use hdrhistogram::Histogram;

const RECORD_BYTES: usize = 128;

struct Row {
    name: String,
    ops: u64,
    elapsed: Duration,
    latency_us: Histogram<u64>,
}

impl Row {
    fn per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds")
}

/// The baseline: one writer, `pwrite` + `fdatasync` per 128-byte record, into a
/// zero-filled file (like a WAL segment) on the same disk.
fn baseline(dir: &Path, run_for: Duration) -> Row {
    use std::os::unix::fs::FileExt;
    let path = dir.join("baseline.dat");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .expect("create baseline file");
    let size = 64 * 1024 * 1024u64;
    let zeros = vec![0u8; 1024 * 1024];
    for chunk in 0..size / zeros.len() as u64 {
        file.write_all_at(&zeros, chunk * zeros.len() as u64)
            .expect("prefill");
    }
    file.sync_all().expect("sync");
    let record = [7u8; RECORD_BYTES];
    let mut latency_us = histogram();
    let mut offset = 0;
    let mut ops = 0;
    let start = Instant::now();
    while start.elapsed() < run_for {
        let t = Instant::now();
        file.write_all_at(&record, offset).expect("write");
        file.sync_data().expect("fdatasync");
        latency_us.saturating_record(t.elapsed().as_micros() as u64);
        offset = (offset + RECORD_BYTES as u64) % size;
        ops += 1;
    }
    Row {
        name: "baseline: 1 writer, write+fdatasync per record".into(),
        ops,
        elapsed: start.elapsed(),
        latency_us,
    }
}

fn wal_writers(dir: &Path, writers: usize, durability: Durability, run_for: Duration) -> Row {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let wal_dir = dir.join(format!("wal-{writers}-{durability:?}"));
    let wal = Wal::open(
        &wal_dir,
        WalConfig {
            durability,
            ..WalConfig::default()
        },
    )
    .expect("open wal");
    let (ops, elapsed, latency_us) = runtime.block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = (0..writers)
            .map(|_| {
                let wal = wal.clone();
                tokio::spawn(async move {
                    let mut latency_us = histogram();
                    let mut ops = 0u64;
                    let record = vec![7u8; RECORD_BYTES];
                    while start.elapsed() < run_for {
                        let t = Instant::now();
                        wal.append(record.clone()).await.expect("append");
                        latency_us.saturating_record(t.elapsed().as_micros() as u64);
                        ops += 1;
                    }
                    (ops, latency_us)
                })
            })
            .collect();
        let mut total = 0;
        let mut merged = histogram();
        for task in tasks {
            let (ops, latency) = task.await.expect("writer task");
            total += ops;
            merged.add(latency).expect("merge histograms");
        }
        (total, start.elapsed(), merged)
    });
    drop(wal);
    let _ = std::fs::remove_dir_all(&wal_dir);
    let mode = match durability {
        Durability::Sync => "",
        Durability::NoSync => " (NoSync: no fdatasync, reference only)",
    };
    Row {
        name: format!("WAL group commit: {writers} writers{mode}"),
        ops,
        elapsed,
        latency_us,
    }
}

fn print_table(title: &str, rows: &[Row], baseline: Option<f64>) {
    println!("\n{title}");
    println!(
        "| {:<72} | {:>10} | {:>9} | {:>9} | {:>9} | {:>7} |",
        "scenario", "ops/s", "p50 µs", "p99 µs", "max µs", "x base"
    );
    println!(
        "|{:-<74}|{:-<12}|{:-<11}|{:-<11}|{:-<11}|{:-<9}|",
        "", "", "", "", "", ""
    );
    for row in rows {
        let ratio = baseline.map_or("-".to_string(), |b| format!("{:.1}", row.per_sec() / b));
        println!(
            "| {:<72} | {:>10.0} | {:>9} | {:>9} | {:>9} | {:>7} |",
            row.name,
            row.per_sec(),
            row.latency_us.value_at_quantile(0.50),
            row.latency_us.value_at_quantile(0.99),
            row.latency_us.max(),
            ratio
        );
    }
}

fn main() {
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let run_for = Duration::from_secs(secs);
    let base_dir = std::env::var("BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    let dir = tempfile::tempdir_in(&base_dir).expect("bench temp dir");
    println!(
        "WAL benchmark: {RECORD_BYTES}-byte records, {secs} s per scenario, dir {}",
        dir.path().display()
    );

    let base = baseline(dir.path(), run_for);
    let base_rate = base.per_sec();
    let mut rows = vec![base];
    for writers in [1, 16, 256] {
        rows.push(wal_writers(dir.path(), writers, Durability::Sync, run_for));
    }
    rows.push(wal_writers(dir.path(), 256, Durability::NoSync, run_for));
    // The disk's sync latency drifts with other load: measure the baseline again last.
    let mut again = baseline(dir.path(), run_for);
    again.name = "baseline again (run last, to show drift)".into();
    rows.push(again);
    print_table(
        "Durable appends (latency = append call to acknowledgement)",
        &rows,
        Some(base_rate),
    );

    let bus_rows: Vec<Row> = [1, 64]
        .into_iter()
        .map(|publishers| bus(dir.path(), publishers, run_for))
        .collect();
    print_table(
        "Event bus publish -> consume (ops/s = events consumed/s; latency = publish start to consumer)",
        &bus_rows,
        None,
    );
}

/// Publishers → embedded bus (durable) → one consumer group; latency is from the
/// start of `publish` to the consumer holding the event.
fn bus(dir: &Path, publishers: usize, run_for: Duration) -> Row {
    use casebook_kit::clock::SystemClock;
    use casebook_kit::events::{Event, EventBus, WalBus};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let bus = WalBus::open(dir.join(format!("bus-{publishers}")), WalConfig::default())
        .expect("open bus");
    let epoch = Instant::now();
    let published = Arc::new(AtomicU64::new(0));
    let done_publishing = Arc::new(AtomicBool::new(false));
    runtime.block_on(async {
        let consumer = tokio::spawn({
            let bus = bus.clone();
            let published = published.clone();
            let done_publishing = done_publishing.clone();
            async move {
                let mut latency_us = histogram();
                let mut consumed = 0u64;
                loop {
                    if done_publishing.load(Ordering::Acquire)
                        && consumed >= published.load(Ordering::Acquire)
                    {
                        break;
                    }
                    let batch = bus.fetch("bench", "consumer", 1000).await.expect("fetch");
                    let now = epoch.elapsed().as_micros() as u64;
                    for delivery in &batch {
                        let sent: u64 = delivery.event.headers["sent-us"].parse().expect("stamp");
                        latency_us.saturating_record(now.saturating_sub(sent));
                    }
                    consumed += batch.len() as u64;
                    let next = batch.last().expect("fetch returns at least one").offset + 1;
                    bus.commit("bench", "consumer", next).await.expect("commit");
                }
                (consumed, epoch.elapsed(), latency_us)
            }
        });
        let start = Instant::now();
        let tasks: Vec<_> = (0..publishers)
            .map(|p| {
                let bus = bus.clone();
                let published = published.clone();
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while start.elapsed() < run_for {
                        let mut event = Event::new(
                            "bench.tick",
                            format!("p{p}"),
                            serde_json::json!({ "n": n, "pad": "0123456789abcdef0123456789abcdef" }),
                            &SystemClock,
                        );
                        event
                            .headers
                            .insert("sent-us".into(), epoch.elapsed().as_micros().to_string());
                        bus.publish("bench", event).await.expect("publish");
                        published.fetch_add(1, Ordering::AcqRel);
                        n += 1;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("publisher");
        }
        done_publishing.store(true, Ordering::Release);
        // Wake the consumer if it is parked waiting for an event that will not come.
        let mut marker = Event::new("bench.end", "end", serde_json::json!({}), &SystemClock);
        marker
            .headers
            .insert("sent-us".into(), epoch.elapsed().as_micros().to_string());
        bus.publish("bench", marker).await.expect("publish");
        published.fetch_add(1, Ordering::AcqRel);
        let (consumed, finished, latency_us) = consumer.await.expect("consumer");
        let elapsed = finished - start.duration_since(epoch);
        Row {
            name: format!("bus: {publishers} publishers -> 1 group (durable)"),
            ops: consumed,
            elapsed,
            latency_us,
        }
    })
}
