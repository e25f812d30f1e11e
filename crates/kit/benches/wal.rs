//! WAL and event-bus benchmark: one run, one table.
//!
//! `cargo bench -p casebook-kit --bench wal` — options by environment:
//! `CASEBOOK_BENCH_DIR` (default: the system temp dir; must be on the disk under
//! test), `CASEBOOK_BENCH_SECS` (seconds per scenario, default 3).
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
        "| {:<58} | {:>10} | {:>9} | {:>9} | {:>9} | {:>7} |",
        "scenario", "ops/s", "p50 µs", "p99 µs", "max µs", "x base"
    );
    println!(
        "|{:-<60}|{:-<12}|{:-<11}|{:-<11}|{:-<11}|{:-<9}|",
        "", "", "", "", "", ""
    );
    for row in rows {
        let ratio = baseline.map_or("-".to_string(), |b| format!("{:.1}", row.per_sec() / b));
        println!(
            "| {:<58} | {:>10.0} | {:>9} | {:>9} | {:>9} | {:>7} |",
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
    let secs: u64 = std::env::var("CASEBOOK_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let run_for = Duration::from_secs(secs);
    let base_dir = std::env::var("CASEBOOK_BENCH_DIR")
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
    print_table(
        "Durable appends (latency = append call to acknowledgement)",
        &rows,
        Some(base_rate),
    );
}
