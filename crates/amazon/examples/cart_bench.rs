//! Cart add latency at a constant rate while one replica is killed mid-run, and
//! whether any acknowledged add was rejected or lost — against a running
//! `casebook up`.
//!
//! ```text
//! casebook up --case amazon --data-dir DIR &
//! cargo run --release -p casebook-amazon --example cart_bench -- \
//!     --api http://127.0.0.1:8100 --control http://127.0.0.1:7700 \
//!     --token-file DIR/control.token --rate 5000 --duration 60s \
//!     --kill-at 20s --restart-at 40s --users 50000
//! ```
//! (`benches/amazon/cart.sh` does all of it.)
//!
//! - Open loop (the kit's `loadgen`): add *i* is due at `i / rate`; its latency
//!   counts from then, so a stall of the server is not hidden by the generator
//!   waiting for it. Each add is a new line `(user i mod users, sku i)`.
//! - At `--kill-at`, the replica in the API's own zone — the one every write
//!   prefers — is killed through the control plane (`POST
//!   /api/instances/{id}/kill`); at `--restart-at` a replica is started in its zone
//!   again (on its slot's data). Latencies are also reported per phase.
//! - **Rejected**: an add answered anything but 200 (or not answered). **Lost**:
//!   after the run (and once every replica's hints are handed off), each user's
//!   cart is read back through the API and every acknowledged add must be there.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use casebook_kit::http_client::HttpClient;
use casebook_kit::loadgen::{LoadPlan, Verdict, run};
use hdrhistogram::Histogram;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use parking_lot::Mutex;
use serde_json::{Value, json};

#[derive(Debug, Clone)]
struct Args {
    api: String,
    control: String,
    token_file: String,
    rate: f64,
    duration: Duration,
    kill_at: Option<Duration>,
    restart_at: Option<Duration>,
    users: u64,
    max_in_flight: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        api: "http://127.0.0.1:8100".into(),
        control: "http://127.0.0.1:7700".into(),
        token_file: "casebook-data/control.token".into(),
        rate: 5_000.0,
        duration: Duration::from_secs(60),
        kill_at: Some(Duration::from_secs(20)),
        restart_at: Some(Duration::from_secs(40)),
        users: 50_000,
        max_in_flight: 10_000,
    };
    let mut it = std::env::args().skip(1);
    let duration = |v: String| humantime::parse_duration(&v).expect("a duration like 20s");
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--api" => args.api = value(),
            "--control" => args.control = value(),
            "--token-file" => args.token_file = value(),
            "--rate" => args.rate = value().parse().expect("--rate: a number"),
            "--duration" => args.duration = duration(value()),
            "--kill-at" => args.kill_at = Some(duration(value())),
            "--restart-at" => args.restart_at = Some(duration(value())),
            "--no-kill" => {
                args.kill_at = None;
                args.restart_at = None;
            }
            "--users" => args.users = value().parse().expect("--users: a number"),
            "--max-in-flight" => args.max_in_flight = value().parse().expect("a number"),
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

/// The control plane's admin API.
struct Control {
    http: HttpClient,
    base: String,
    token: String,
}

impl Control {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {}", self.token)).unwrap(),
        );
        if body.is_some() {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let response = self
            .http
            .send(method, &format!("{}{path}", self.base), headers, body)
            .await
            .expect("the control plane answers");
        let value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        (response.status, value)
    }

    async fn instances(&self) -> Vec<Value> {
        let (status, list) = self.call(Method::GET, "/api/instances", None).await;
        assert_eq!(status, StatusCode::OK, "{list}");
        list.as_array().cloned().unwrap_or_default()
    }
}

fn running(instances: &[Value], service: &str) -> Vec<Value> {
    instances
        .iter()
        .filter(|v| v["service"] == service && v["state"] == "running")
        .cloned()
        .collect()
}

/// Latencies per phase, from the intended send time.
struct Phases {
    names: Vec<&'static str>,
    bounds: Vec<Duration>,
    histograms: Vec<Mutex<Histogram<u64>>>,
}

impl Phases {
    fn new(kill_at: Option<Duration>, restart_at: Option<Duration>) -> Self {
        let mut names = vec!["before the kill"];
        let mut bounds = Vec::new();
        if let Some(kill) = kill_at {
            bounds.push(kill);
            names.push("replica down");
            if let Some(restart) = restart_at {
                bounds.push(restart);
                names.push("after the restart");
            }
        }
        let histograms = names
            .iter()
            .map(|_| Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()))
            .collect();
        Self {
            names,
            bounds,
            histograms,
        }
    }

    fn record(&self, due: Duration, latency: Duration) {
        let phase = self.bounds.iter().filter(|b| due >= **b).count();
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.histograms[phase].lock().saturating_record(micros);
    }
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1_000.0
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args = parse_args();
    let token = std::fs::read_to_string(&args.token_file)
        .unwrap_or_else(|e| panic!("reading {}: {e}", args.token_file))
        .trim()
        .to_owned();
    let control = Arc::new(Control {
        http: HttpClient::new(Duration::from_secs(30)),
        base: args.control.trim_end_matches('/').to_owned(),
        token,
    });

    // The replica every write prefers: the one in the API's own zone.
    let instances = control.instances().await;
    let api_zone = running(&instances, "amazon")
        .first()
        .map(|v| v["zone"].as_str().unwrap().to_owned())
        .expect("an amazon instance runs");
    let victim = running(&instances, "amazon-cart")
        .into_iter()
        .find(|v| v["zone"] == api_zone.as_str())
        .expect("a cart replica in the API's zone");
    let victim_id = victim["instance_id"].as_str().unwrap().to_owned();
    println!(
        "cart bench: {} adds/s for {:?}, {} users; kill {victim_id} ({api_zone}) at {:?}, restart at {:?}",
        args.rate, args.duration, args.users, args.kill_at, args.restart_at
    );

    let chaos = {
        let control = control.clone();
        let (kill_at, restart_at) = (args.kill_at, args.restart_at);
        let zone = api_zone.clone();
        let victim_id = victim_id.clone();
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            let mut log = Vec::new();
            if let Some(kill_at) = kill_at {
                tokio::time::sleep_until(start + kill_at).await;
                let (status, body) = control
                    .call(
                        Method::POST,
                        &format!("/api/instances/{victim_id}/kill"),
                        None,
                    )
                    .await;
                log.push(format!("killed {victim_id}: {status} {body}"));
            }
            if let Some(restart_at) = restart_at {
                tokio::time::sleep_until(start + restart_at).await;
                let (status, body) = control
                    .call(
                        Method::POST,
                        "/api/instances",
                        Some(json!({ "service": "amazon-cart", "zone": zone })),
                    )
                    .await;
                log.push(format!("restarted in {zone}: {status} {body}"));
            }
            log
        })
    };

    let http = HttpClient::new(Duration::from_secs(10));
    let acked: Arc<Mutex<Vec<u64>>> = Arc::default();
    let rejected = Arc::new(AtomicU64::new(0));
    let unanswered = Arc::new(AtomicU64::new(0));
    let statuses: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let hinted = Arc::new(AtomicU64::new(0));
    let phases = Arc::new(Phases::new(args.kill_at, args.restart_at));
    let plan = LoadPlan {
        max_in_flight: args.max_in_flight,
        ..LoadPlan::new(args.rate, args.duration)
    };
    let interval = 1.0 / args.rate;
    let start = tokio::time::Instant::now();
    let report = run(&plan, |i| {
        let http = http.clone();
        let url = format!("{}/v1/carts/bench-u{}/items", args.api, i % args.users);
        let body = Bytes::from(format!(r#"{{"sku":"s{i}","qty":1}}"#));
        let (acked, rejected, unanswered, statuses, hinted, phases) = (
            acked.clone(),
            rejected.clone(),
            unanswered.clone(),
            statuses.clone(),
            hinted.clone(),
            phases.clone(),
        );
        ("add", async move {
            let due = Duration::from_secs_f64(i as f64 * interval);
            let mut headers = HeaderMap::new();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            match http.send(Method::POST, &url, headers, body).await {
                Ok(response) if response.status == StatusCode::OK => {
                    phases.record(due, (start + due).elapsed());
                    acked.lock().push(i);
                    if response.body.windows(10).any(|w| w == b"hinted_for") {
                        hinted.fetch_add(1, Ordering::Relaxed);
                    }
                    Verdict::Ok
                }
                Ok(response) => {
                    rejected.fetch_add(1, Ordering::Relaxed);
                    *statuses
                        .lock()
                        .entry(response.status.to_string())
                        .or_default() += 1;
                    Verdict::Error
                }
                Err(error) => {
                    unanswered.fetch_add(1, Ordering::Relaxed);
                    let kind = if error.is_timeout() {
                        "timeout"
                    } else {
                        "transport error"
                    };
                    *statuses.lock().entry(kind.to_owned()).or_default() += 1;
                    Verdict::Error
                }
            }
        })
    })
    .await
    .expect("a valid plan");
    for line in chaos.await.unwrap() {
        println!("  {line}");
    }
    println!("\n{}", report.table());

    // Let the hints drain: every running replica's status says no hint is pending.
    let drain_start = tokio::time::Instant::now();
    let mut pending = u64::MAX;
    while drain_start.elapsed() < Duration::from_secs(120) {
        let replicas = running(&control.instances().await, "amazon-cart");
        pending = 0;
        for replica in &replicas {
            let address = replica["address"].as_str().unwrap();
            let status: Value = http
                .get_json(&format!("http://{address}/internal/v1/status"))
                .await
                .unwrap_or(Value::Null);
            pending += status["hints"]
                .as_object()
                .map_or(0, |h| h.values().filter_map(Value::as_u64).sum());
        }
        if pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let drained_in = drain_start.elapsed();

    // Read every cart back: every acknowledged add must be in it.
    let acked = std::mem::take(&mut *acked.lock());
    let mut by_user: HashMap<u64, Vec<u64>> = HashMap::new();
    for &i in &acked {
        by_user.entry(i % args.users).or_default().push(i);
    }
    let users: Vec<(u64, Vec<u64>)> = by_user.into_iter().collect();
    let lost = Arc::new(AtomicU64::new(0));
    let unreadable = Arc::new(AtomicU64::new(0));
    let partial_reads = Arc::new(AtomicU64::new(0));
    let reread = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let users = Arc::new(users);
    let readers: Vec<_> = (0..32)
        .map(|_| {
            let (http, users, next, lost, unreadable, partial, reread) = (
                http.clone(),
                users.clone(),
                next.clone(),
                lost.clone(),
                unreadable.clone(),
                partial_reads.clone(),
                reread.clone(),
            );
            let api = args.api.clone();
            tokio::spawn(async move {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some((user, adds)) = users.get(k) else {
                        return;
                    };
                    let url = format!("{api}/v1/carts/bench-u{user}");
                    // A read merges the replicas that answer in time; one still
                    // busy after the run may miss it. So a cart missing an add is
                    // read again (up to 10 times, 1 s apart) before the add counts
                    // as lost.
                    let mut missing = Vec::new();
                    let mut read_ok = false;
                    for attempt in 0..10 {
                        if attempt > 0 {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        let Ok(cart) = http.get_json::<Value>(&url).await else {
                            continue;
                        };
                        read_ok = true;
                        if attempt == 0 && cart["replicas"]["answered"] != cart["replicas"]["asked"]
                        {
                            partial.fetch_add(1, Ordering::Relaxed);
                        }
                        let skus: std::collections::HashSet<&str> = cart["lines"]
                            .as_array()
                            .map(|ls| ls.iter().filter_map(|l| l["sku"].as_str()).collect())
                            .unwrap_or_default();
                        missing = adds
                            .iter()
                            .filter(|i| !skus.contains(format!("s{i}").as_str()))
                            .copied()
                            .collect();
                        if missing.is_empty() {
                            if attempt > 0 {
                                reread.fetch_add(1, Ordering::Relaxed);
                            }
                            break;
                        }
                    }
                    if !read_ok {
                        unreadable.fetch_add(adds.len() as u64, Ordering::Relaxed);
                    }
                    lost.fetch_add(missing.len() as u64, Ordering::Relaxed);
                    for i in missing.iter().take(3) {
                        eprintln!("lost: bench-u{user} s{i}");
                    }
                }
            })
        })
        .collect();
    for reader in readers {
        reader.await.unwrap();
    }

    println!("latency from the intended send time, acknowledged adds, by phase:");
    println!(
        "{:<20} {:>9} {:>9} {:>9} {:>10} {:>9}",
        "phase", "adds", "p50 ms", "p99 ms", "p99.9 ms", "max ms"
    );
    for (name, histogram) in phases.names.iter().zip(&phases.histograms) {
        let h = histogram.lock();
        println!(
            "{:<20} {:>9} {:>9.2} {:>9.2} {:>10.2} {:>9.2}",
            name,
            h.len(),
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.99)),
            ms(h.value_at_quantile(0.999)),
            ms(h.max())
        );
    }
    let class = report.class("add").cloned();
    let summary = json!({
        "rate_per_sec": args.rate,
        "duration_s": args.duration.as_secs_f64(),
        "users": args.users,
        "killed": victim_id,
        "sent": class.as_ref().map(|c| c.sent),
        "acknowledged": acked.len(),
        "rejected": rejected.load(Ordering::Relaxed),
        "unanswered": unanswered.load(Ordering::Relaxed),
        "dropped_by_generator": class.as_ref().map(|c| c.dropped),
        "failures": *statuses.lock(),
        "hinted": hinted.load(Ordering::Relaxed),
        "p50_ms": class.as_ref().map(|c| c.p50_ms),
        "p99_ms": class.as_ref().map(|c| c.p99_ms),
        "p999_ms": class.as_ref().map(|c| c.p999_ms),
        "max_ms": class.as_ref().map(|c| c.max_ms),
        "hints_pending_after_drain": pending,
        "hints_drained_in_ms": drained_in.as_millis() as u64,
        "lost": lost.load(Ordering::Relaxed),
        "unreadable_on_read_back": unreadable.load(Ordering::Relaxed),
        "partial_reads": partial_reads.load(Ordering::Relaxed),
        "carts_complete_only_on_a_later_read": reread.load(Ordering::Relaxed),
    });
    println!("\n{}", serde_json::to_string_pretty(&summary).unwrap());
}
