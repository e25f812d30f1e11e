//! Goodput under 1x, 2x, 3x and 10x offered load against a service of fixed
//! capacity, with priority load shedding and without, driven by the open-loop
//! load generator (`casebook_kit::loadgen`).
//!
//! Run: `cargo bench -p casebook-kit --bench goodput` (about a minute). Prints the
//! tables and writes `docs/plots/goodput.svg`.
//!
//! The service: `WORKERS` workers, each request holding one for `WORK` (a FIFO
//! semaphore, so excess requests queue). The server keeps working on requests
//! whose client gave up, as most servers do; clients give up after
//! `CLIENT_TIMEOUT`, and send that budget as the request's deadline. Goodput is
//! requests answered successfully within `CLIENT_TIMEOUT`. Mix: 5 % critical,
//! 45 % normal, 50 % low.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use casebook_kit::clock::SystemClock;
use casebook_kit::loadgen::{LoadPlan, LoadReport, Verdict, run};
use casebook_kit::resilience::limit::AimdConfig;
use casebook_kit::resilience::shed::{LoadShedLayer, LoadShedder, ShedConfig};
use casebook_kit::resilience::{
    BoxError, Deadline, FailureKind, Priority, set_deadline, set_priority,
};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt, service_fn};

const WORKERS: usize = 16;
const WORK: Duration = Duration::from_millis(10);
const CLIENT_TIMEOUT: Duration = Duration::from_millis(500);
const CRITICAL_P99_SLO_MS: f64 = 100.0;
const RUN: Duration = Duration::from_secs(4);
const LOADS: [f64; 4] = [1.0, 2.0, 3.0, 10.0];

type Server = BoxCloneSyncService<http::Request<()>, (), BoxError>;

/// The fixed-capacity service; `cancel` ends its leftover work between runs.
fn fixed_capacity(
    cancel: CancellationToken,
) -> impl tower::Service<http::Request<()>, Response = (), Error = BoxError, Future: Send>
+ Clone
+ Send
+ Sync {
    let workers = Arc::new(Semaphore::new(WORKERS));
    service_fn(move |_request: http::Request<()>| {
        let workers = workers.clone();
        let cancel = cancel.clone();
        async move {
            tokio::select! {
                _ = cancel.cancelled() => Err::<(), BoxError>("run over".into()),
                done = async {
                    let _worker = workers.acquire().await?;
                    tokio::time::sleep(WORK).await;
                    Ok::<(), BoxError>(())
                } => done,
            }
        }
    })
}

fn shed_config() -> ShedConfig {
    ShedConfig {
        limit: AimdConfig {
            initial_limit: WORKERS,
            min_limit: 4,
            max_limit: 1000,
            backoff_ratio: 0.9,
            latency_threshold: WORK * 3,
            decrease_interval: WORK * 3,
        },
        low_share: 0.8,
        hard_limit: 1000,
        retry_after: Duration::from_secs(1),
    }
}

fn priority_of(i: u64) -> Priority {
    match i % 20 {
        0 => Priority::Critical,
        1..=9 => Priority::Normal,
        _ => Priority::Low,
    }
}

/// Completions per second of the bare service under a closed loop that keeps it busy.
async fn measure_capacity() -> f64 {
    let cancel = CancellationToken::new();
    let svc = fixed_capacity(cancel.clone());
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(2);
    let mut tasks = Vec::new();
    for _ in 0..WORKERS * 2 {
        let (svc, done) = (svc.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                if svc.clone().oneshot(http::Request::new(())).await.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("calibration task");
    }
    cancel.cancel();
    done.load(Ordering::Relaxed) as f64 / 2.0
}

struct Row {
    load: f64,
    shedding: bool,
    report: LoadReport,
    final_limit: Option<usize>,
}

async fn one_run(capacity: f64, load: f64, shedding: bool) -> Row {
    let cancel = CancellationToken::new();
    let clock = SystemClock::shared();
    let bare = fixed_capacity(cancel.clone());
    let (server, shedder): (Server, Option<LoadShedder>) = if shedding {
        let shedder =
            LoadShedder::new("bench", shed_config(), clock.clone()).expect("valid config");
        let svc = LoadShedLayer::shared(shedder.clone()).layer(bare);
        (BoxCloneSyncService::new(svc), Some(shedder))
    } else {
        (BoxCloneSyncService::new(bare), None)
    };
    let plan = LoadPlan {
        slo: Some(CLIENT_TIMEOUT),
        max_in_flight: 20_000,
        ..LoadPlan::new(capacity * load, RUN)
    };
    let report = run(&plan, |i| {
        let priority = priority_of(i);
        let mut request = http::Request::new(());
        set_priority(&mut request, priority);
        set_deadline(&mut request, Deadline(clock.now() + CLIENT_TIMEOUT));
        let server = server.clone();
        (priority.as_str(), async move {
            // The server runs on its own task: a client giving up does not stop it.
            let handle = tokio::spawn(server.oneshot(request));
            match tokio::time::timeout(CLIENT_TIMEOUT, handle).await {
                Ok(Ok(Ok(()))) => Verdict::Ok,
                Ok(Ok(Err(e))) => match FailureKind::of(&e) {
                    FailureKind::Overloaded | FailureKind::DeadlineExceeded => Verdict::Shed,
                    _ => Verdict::Error,
                },
                _ => Verdict::Error,
            }
        })
    })
    .await
    .expect("valid plan");
    cancel.cancel();
    Row {
        load,
        shedding,
        report,
        final_limit: shedder.map(|s| s.limiter().limit()),
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let capacity = measure_capacity().await;
        println!(
            "capacity: {capacity:.0} req/s measured ({WORKERS} workers x {WORK:?}; nominal {:.0})",
            WORKERS as f64 / WORK.as_secs_f64()
        );
        let mut rows = Vec::new();
        for &load in &LOADS {
            for shedding in [false, true] {
                let row = one_run(capacity, load, shedding).await;
                println!(
                    "\n== {load}x offered ({:.0}/s), shedding {} ==\n{}",
                    capacity * load,
                    if shedding { "on" } else { "off" },
                    row.report.table()
                );
                rows.push(row);
                // Let the previous run's leftovers die before the next one.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        let table = summary(capacity, &rows);
        println!("\n{table}");
        let svg = plot(&rows, capacity);
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/plots/goodput.svg");
        std::fs::create_dir_all(std::path::Path::new(path).parent().expect("has a parent"))
            .expect("create docs/plots");
        std::fs::write(path, svg).expect("write the plot");
        println!("plot written to docs/plots/goodput.svg");
    });
}

fn goodput_pct(row: &Row, capacity: f64) -> f64 {
    row.report.goodput_per_sec() / capacity * 100.0
}

fn summary(capacity: f64, rows: &[Row]) -> String {
    let mut out = String::from(
        "| offered | shedding | goodput/s | goodput % of capacity | critical ok % | critical p99 ms | normal ok % | low ok % | final limit |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let ok_pct = |class: &str| {
            row.report.class(class).map_or(0.0, |c| {
                let total = c.sent + c.dropped;
                if total == 0 {
                    0.0
                } else {
                    c.ok_within_slo as f64 / total as f64 * 100.0
                }
            })
        };
        let critical_p99 = row.report.class("critical").map_or(0.0, |c| c.p99_ms);
        let _ = writeln!(
            out,
            "| {}x | {} | {:.0} | {:.1} % | {:.1} % | {:.1}{} | {:.1} % | {:.1} % | {} |",
            row.load,
            if row.shedding { "on" } else { "off" },
            row.report.goodput_per_sec(),
            goodput_pct(row, capacity),
            ok_pct("critical"),
            critical_p99,
            if critical_p99 <= CRITICAL_P99_SLO_MS {
                ""
            } else {
                " (over SLO)"
            },
            ok_pct("normal"),
            ok_pct("low"),
            row.final_limit.map_or("-".to_owned(), |l| l.to_string()),
        );
    }
    let _ = writeln!(
        out,
        "\ncapacity {capacity:.0}/s; critical p99 SLO {CRITICAL_P99_SLO_MS} ms; client timeout {CLIENT_TIMEOUT:?}"
    );
    out
}

/// A small hand-written SVG line chart: goodput (% of capacity) by offered load.
fn plot(rows: &[Row], capacity: f64) -> String {
    let (w, h, left, right, top, bottom) = (640.0, 400.0, 70.0, 30.0, 40.0, 60.0);
    let x = |i: usize| left + (w - left - right) * i as f64 / (LOADS.len() - 1) as f64;
    let y = |pct: f64| top + (h - top - bottom) * (1.0 - pct.clamp(0.0, 120.0) / 120.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">Goodput vs offered load (fixed capacity {capacity:.0} req/s)</text>\n",
        w / 2.0
    );
    for pct in [0.0, 20.0, 40.0, 60.0, 80.0, 90.0, 100.0, 120.0] {
        let _ = writeln!(
            svg,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"{}\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{pct}%</text>",
            w - right,
            if pct == 90.0 { "#f5b041" } else { "#e5e5e5" },
            left - 6.0,
            y(pct) + 4.0,
            y = y(pct)
        );
    }
    for (i, load) in LOADS.iter().enumerate() {
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{load}x</text>",
            x(i),
            h - bottom + 18.0
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">offered load (multiple of capacity)</text>",
        w / 2.0,
        h - 15.0
    );
    let _ = writeln!(
        svg,
        "<text x=\"16\" y=\"{}\" transform=\"rotate(-90 16 {})\" text-anchor=\"middle\">goodput, % of capacity</text>",
        h / 2.0,
        h / 2.0
    );
    for (shedding, colour, label) in [
        (true, "#1f77b4", "with priority shedding"),
        (false, "#d62728", "without shedding"),
    ] {
        let points: Vec<(f64, f64)> = LOADS
            .iter()
            .enumerate()
            .filter_map(|(i, load)| {
                rows.iter()
                    .find(|r| r.shedding == shedding && r.load == *load)
                    .map(|r| (x(i), y(goodput_pct(r, capacity))))
            })
            .collect();
        let line: Vec<String> = points
            .iter()
            .map(|(px, py)| format!("{px:.1},{py:.1}"))
            .collect();
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2.5\" points=\"{}\"/>",
            line.join(" ")
        );
        for (px, py) in &points {
            let _ = writeln!(
                svg,
                "<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"4\" fill=\"{colour}\"/>"
            );
        }
        let ly = if shedding { top + 16.0 } else { top + 34.0 };
        let _ = writeln!(
            svg,
            "<line x1=\"{}\" x2=\"{}\" y1=\"{ly}\" y2=\"{ly}\" stroke=\"{colour}\" stroke-width=\"2.5\"/><text x=\"{}\" y=\"{}\">{label}</text>",
            w - 230.0,
            w - 200.0,
            w - 194.0,
            ly + 4.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}
