//! The runner: pings, open-loop ride requests and their trips against a live API.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use casebook_kit::clock::SharedClock;
use casebook_kit::http_client::{HttpClient, HttpError};
use casebook_kit::loadgen::{self, ClassReport, LoadPlan, Verdict};
use http::{Method, StatusCode};
use parking_lot::Mutex;
use serde_json::{Value, json};

use super::config::WorkloadConfig;
use super::generators::{Fleet, RideGen, RideSpec};
use super::report::{PingReport, RideReport, TripReport, WorkloadProgress, WorkloadReport};
use super::{PING_CONCURRENCY, WorkloadError};
use crate::matching::Mode;

#[derive(Debug, Default)]
struct Counters {
    pings_sent: AtomicU64,
    pings_accepted: AtomicU64,
    pings_stale: AtomicU64,
    pings_shed: AtomicU64,
    pings_refused: AtomicU64,
    pings_failed: AtomicU64,
    requested: AtomicU64,
    matched: AtomicU64,
    unmatched: AtomicU64,
    rides_shed: AtomicU64,
    rides_refused: AtomicU64,
    rides_failed: AtomicU64,
    accepted: AtomicU64,
    completed: AtomicU64,
    paid: AtomicU64,
    trips_failed: AtomicU64,
    trips_running: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Counters {
    fn error(&self, kind: String) {
        *self.errors.lock().entry(kind).or_insert(0) += 1;
    }
}

/// A regional refusal (the replica's region is evacuated), not a shed request.
fn is_regional_refusal(e: &HttpError) -> bool {
    matches!(e, HttpError::Status { status, body, .. }
        if *status == StatusCode::SERVICE_UNAVAILABLE
            && crate::region::evacuated::is_refusal(body))
}

fn error_kind(what: &str, e: &HttpError) -> String {
    if is_regional_refusal(e) {
        return format!("{what}:503-region-evacuated");
    }
    match e.status() {
        Some(status) => format!("{what}:{}", status.as_u16()),
        None if e.is_timeout() => format!("{what}:timeout"),
        None => format!("{what}:transport"),
    }
}

struct Shared {
    config: WorkloadConfig,
    client: HttpClient,
    counters: Counters,
    clock: SharedClock,
}

/// Runs the workload against `config.target`: warms the fleet up (one ping per
/// driver), then pings and rides until `duration` is over, then waits (bounded) for
/// the trips in progress.
pub async fn run(
    config: WorkloadConfig,
    clock: SharedClock,
    progress: Arc<WorkloadProgress>,
) -> Result<WorkloadReport, WorkloadError> {
    config.validate()?;
    let shared = Arc::new(Shared {
        client: HttpClient::new(config.http_timeout),
        counters: Counters::default(),
        clock,
        config,
    });
    let cfg = &shared.config;
    let fleet = Fleet::new(cfg.grid.city, cfg.drivers, cfg.speed_mps, cfg.seed)?;
    let fleet = Arc::new(Mutex::new(fleet));
    let start = tokio::time::Instant::now();

    // Warm-up: every driver is in the index before the first ride.
    let all: Vec<usize> = (0..cfg.drivers).collect();
    for chunk in all.chunks(cfg.ping_batch) {
        let body = ping_body(&shared, &fleet, chunk, Duration::ZERO);
        let sent = chunk.len() as u64;
        match send_pings(&shared, &body, sent, &progress).await {
            Ok(()) => {}
            Err(e) => return Err(WorkloadError::WarmUp(e.to_string())),
        }
    }

    let stop = tokio_util::sync::CancellationToken::new();
    let pinger = tokio::spawn(ping_loop(
        shared.clone(),
        fleet.clone(),
        start,
        stop.clone(),
        progress.clone(),
    ));

    let rides = Arc::new(Mutex::new(RideGen::new(cfg, cfg.seed ^ 0xA5A5)?));
    let plan = LoadPlan {
        max_in_flight: cfg.max_in_flight,
        ..LoadPlan::new(cfg.rides_per_sec, cfg.duration)
    };
    let base = {
        let shared = shared.clone();
        let rides = rides.clone();
        let progress = progress.clone();
        async move {
            loadgen::run_with_progress(&plan, &progress.rides.clone(), |_| {
                let spec = rides.lock().ride();
                ("ride", ride(shared.clone(), spec, progress.clone()))
            })
            .await
        }
    };
    let burst = {
        let shared = shared.clone();
        let rides = rides.clone();
        let progress = progress.clone();
        let burst = cfg.burst;
        async move {
            let Some(b) = burst else { return Ok(None) };
            let (_, plan) = b.plan()?;
            let plan = LoadPlan {
                max_in_flight: shared.config.max_in_flight,
                ..plan
            };
            tokio::time::sleep(b.at).await;
            let report = loadgen::run(&plan, |_| {
                let spec = rides.lock().stadium_ride();
                ("burst", ride(shared.clone(), spec, progress.clone()))
            })
            .await?;
            Ok::<_, WorkloadError>(Some(report))
        }
    };
    let (base, burst) = tokio::join!(base, burst);
    let base = base?;
    let burst = burst?;
    stop.cancel();
    let _ = pinger.await;

    // Trips still running: bounded wait.
    let deadline = tokio::time::Instant::now() + shared.config.drain_timeout;
    while shared.counters.trips_running.load(Ordering::Acquire) > 0
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let c = &shared.counters;
    let n = |a: &AtomicU64| a.load(Ordering::Acquire);
    let latency = base
        .class("ride")
        .cloned()
        .unwrap_or_else(|| ClassReport::empty("ride"));
    let burst_class = burst.as_ref().and_then(|r| r.class("burst").cloned());
    let dropped = latency.dropped + burst_class.as_ref().map_or(0, |b| b.dropped);
    Ok(WorkloadReport {
        elapsed: start.elapsed(),
        pings: PingReport {
            sent: n(&c.pings_sent),
            accepted: n(&c.pings_accepted),
            stale: n(&c.pings_stale),
            shed: n(&c.pings_shed),
            refused: n(&c.pings_refused),
            failed: n(&c.pings_failed),
        },
        rides: RideReport {
            requested: n(&c.requested),
            matched: n(&c.matched),
            unmatched: n(&c.unmatched),
            shed: n(&c.rides_shed),
            refused: n(&c.rides_refused),
            failed: n(&c.rides_failed),
            dropped,
            latency,
            burst: burst_class,
        },
        trips: TripReport {
            accepted: n(&c.accepted),
            completed: n(&c.completed),
            paid: n(&c.paid),
            failed: n(&c.trips_failed),
            abandoned: n(&c.trips_running),
        },
        errors: c.errors.lock().clone(),
        config: shared.config.clone(),
    })
}

fn ping_body(shared: &Shared, fleet: &Mutex<Fleet>, drivers: &[usize], elapsed: Duration) -> Value {
    let ts = shared.clock.wall_millis();
    let mut fleet = fleet.lock();
    let updates: Vec<Value> = drivers
        .iter()
        .map(|&i| {
            let p = fleet.position(i, elapsed);
            json!({"driver": i as u64 + 1, "lat": p.lat(), "lon": p.lon(), "ts": ts, "status": "available"})
        })
        .collect();
    json!({ "updates": updates })
}

async fn send_pings(
    shared: &Shared,
    body: &Value,
    sent: u64,
    progress: &WorkloadProgress,
) -> Result<(), HttpError> {
    let c = &shared.counters;
    c.pings_sent.fetch_add(sent, Ordering::Relaxed);
    progress.pings_sent.fetch_add(sent, Ordering::Relaxed);
    let url = format!("{}/v1/locations", shared.config.target);
    match shared.client.call(Method::POST, &url, Some(body)).await {
        Ok(response) => {
            let report: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
            let get = |k: &str| report[k].as_u64().unwrap_or(0);
            c.pings_accepted
                .fetch_add(get("accepted"), Ordering::Relaxed);
            c.pings_stale
                .fetch_add(get("stale") + get("duplicate"), Ordering::Relaxed);
            Ok(())
        }
        Err(e) => {
            if is_regional_refusal(&e) {
                c.pings_refused.fetch_add(sent, Ordering::Relaxed);
            } else if e.status() == Some(StatusCode::SERVICE_UNAVAILABLE) {
                c.pings_shed.fetch_add(sent, Ordering::Relaxed);
            } else {
                c.pings_failed.fetch_add(sent, Ordering::Relaxed);
            }
            c.error(error_kind("ping", &e));
            Err(e)
        }
    }
}

/// Ticks every 100 ms; each tick pings the drivers whose slot it is, so every
/// driver pings once per `ping_every` and the load is even over the period.
async fn ping_loop(
    shared: Arc<Shared>,
    fleet: Arc<Mutex<Fleet>>,
    start: tokio::time::Instant,
    stop: tokio_util::sync::CancellationToken,
    progress: Arc<WorkloadProgress>,
) {
    let tick = Duration::from_millis(100);
    let slots = (shared.config.ping_every.as_millis() / tick.as_millis()).max(1) as usize;
    let drivers = shared.config.drivers;
    let gate = Arc::new(tokio::sync::Semaphore::new(PING_CONCURRENCY));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut n: usize = 0;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = interval.tick() => {}
        }
        let slot = n % slots;
        n += 1;
        let due: Vec<usize> = (slot..drivers).step_by(slots).collect();
        for chunk in due.chunks(shared.config.ping_batch) {
            let body = ping_body(&shared, &fleet, chunk, start.elapsed());
            let sent = chunk.len() as u64;
            let Ok(permit) = gate.clone().try_acquire_owned() else {
                // Every slot busy: this ping is skipped (the next one supersedes it).
                shared.counters.error("ping:skipped".to_owned());
                continue;
            };
            let shared = shared.clone();
            let progress = progress.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let _ = send_pings(&shared, &body, sent, &progress).await;
            });
        }
    }
    // The in-flight batches finish before the report is read.
    let _ = gate.acquire_many(PING_CONCURRENCY as u32).await;
}

/// One ride: request, then (batched) poll until offered. Resolves at the offer —
/// that is the latency — and leaves the accept and the trip to a spawned task.
async fn ride(shared: Arc<Shared>, spec: RideSpec, progress: Arc<WorkloadProgress>) -> Verdict {
    let c = &shared.counters;
    let rider = c.requested.fetch_add(1, Ordering::Relaxed) + 1;
    let target = &shared.config.target;
    let mode = match shared.config.mode {
        Mode::Greedy => "greedy",
        Mode::Batched => "batched",
    };
    let body = json!({
        "rider": rider,
        "pickup": {"lat": spec.pickup.lat(), "lng": spec.pickup.lon()},
        "dropoff": {"lat": spec.dropoff.lat(), "lng": spec.dropoff.lon()},
        "mode": mode,
    });
    let mut view = match shared
        .client
        .call(Method::POST, &format!("{target}/v1/rides"), Some(&body))
        .await
    {
        Ok(r) => serde_json::from_slice::<Value>(&r.body).unwrap_or(Value::Null),
        Err(e) => {
            c.error(error_kind("ride", &e));
            // Refused by region, the ride is not sent elsewhere: another region's
            // replica refuses a pickup it does not own (421).
            if is_regional_refusal(&e) {
                c.rides_refused.fetch_add(1, Ordering::Relaxed);
                return Verdict::Shed;
            }
            if e.status() == Some(StatusCode::SERVICE_UNAVAILABLE) {
                c.rides_shed.fetch_add(1, Ordering::Relaxed);
                return Verdict::Shed;
            }
            c.rides_failed.fetch_add(1, Ordering::Relaxed);
            return Verdict::Error;
        }
    };
    let Some(id) = view["id"].as_u64() else {
        c.error("ride:no-id".to_owned());
        c.rides_failed.fetch_add(1, Ordering::Relaxed);
        return Verdict::Error;
    };
    let url = format!("{target}/v1/rides/{id}");
    let deadline = tokio::time::Instant::now() + shared.config.match_timeout;
    loop {
        match view["status"]["state"].as_str() {
            Some("offered") => break,
            Some("queued") if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(shared.config.poll_every).await;
                view = match shared.client.get_json::<Value>(&url).await {
                    Ok(v) => v,
                    Err(e) => {
                        c.error(error_kind("poll", &e));
                        c.rides_failed.fetch_add(1, Ordering::Relaxed);
                        return Verdict::Error;
                    }
                };
            }
            other => {
                let kind = other.map_or("timeout", |s| if s == "queued" { "timeout" } else { s });
                c.error(format!("unmatched:{kind}"));
                c.unmatched.fetch_add(1, Ordering::Relaxed);
                return Verdict::Error;
            }
        }
    }
    c.matched.fetch_add(1, Ordering::Relaxed);
    progress.matched.fetch_add(1, Ordering::Relaxed);
    let Some(driver) = view["status"]["driver"].as_u64() else {
        c.error("ride:offer-without-driver".to_owned());
        return Verdict::Ok;
    };
    c.trips_running.fetch_add(1, Ordering::AcqRel);
    tokio::spawn(async move {
        trip(&shared, id, driver, spec, &progress).await;
        shared.counters.trips_running.fetch_sub(1, Ordering::AcqRel);
    });
    Verdict::Ok
}

/// The driver accepts the offer; the trip runs arrived → start → complete → pay.
async fn trip(
    shared: &Shared,
    ride: u64,
    driver: u64,
    spec: RideSpec,
    progress: &WorkloadProgress,
) {
    let c = &shared.counters;
    let target = &shared.config.target;
    let step = shared.config.trip_step;
    tokio::time::sleep(step).await;
    let accepted = shared
        .client
        .call(
            Method::POST,
            &format!("{target}/v1/rides/{ride}/accept"),
            Some(&json!({ "driver": driver })),
        )
        .await;
    let trip = match accepted {
        Ok(r) => serde_json::from_slice::<Value>(&r.body)
            .ok()
            .and_then(|v| v["trip"].as_str().map(str::to_owned)),
        Err(e) => {
            c.error(error_kind("accept", &e));
            c.trips_failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let Some(trip) = trip else {
        c.error("accept:no-trip".to_owned());
        c.trips_failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    c.accepted.fetch_add(1, Ordering::Relaxed);
    if !shared.config.drive_trips {
        return;
    }
    let distance = (spec.pickup.distance_m(&spec.dropoff) * 1.3).min(1_000_000.0);
    for action in ["arrived", "start", "complete", "pay"] {
        tokio::time::sleep(step).await;
        let body = if action == "complete" {
            json!({ "distance_m": distance })
        } else {
            json!({})
        };
        let url = format!("{target}/v1/trips/{trip}/{action}");
        if let Err(e) = shared.client.call(Method::POST, &url, Some(&body)).await {
            c.error(error_kind(action, &e));
            c.trips_failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match action {
            "complete" => {
                c.completed.fetch_add(1, Ordering::Relaxed);
            }
            "pay" => {
                c.paid.fetch_add(1, Ordering::Relaxed);
                progress.trips_paid.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: StatusCode, body: &str) -> HttpError {
        HttpError::Status {
            method: Method::POST,
            url: "http://127.0.0.1:8190/v1/rides".into(),
            status,
            body: body.into(),
        }
    }

    #[test]
    fn a_regional_refusal_is_told_from_a_shed_request() {
        let body = crate::region::evacuated::refusal_body("eu-west", None).to_string();
        let refused = answered(StatusCode::SERVICE_UNAVAILABLE, &body);
        assert!(is_regional_refusal(&refused));
        assert_eq!(error_kind("ride", &refused), "ride:503-region-evacuated");
        let shed = answered(StatusCode::SERVICE_UNAVAILABLE, r#"{"error": "shed"}"#);
        assert!(!is_regional_refusal(&shed));
        assert_eq!(error_kind("ride", &shed), "ride:503");
        // The code alone does not make a refusal: the status must be 503.
        assert!(!is_regional_refusal(&answered(
            StatusCode::BAD_REQUEST,
            &body
        )));
    }
}
