//! `kill -9` the real `casebook up` while senders push batches of driver pings to
//! the uber API and the index is snapshotted every second; restart on the same
//! data dir; every ping the server acknowledged must be there — the driver's
//! state at that ping or at a later one of its own, never an older one — and a
//! driver dispatched to an accepted ride before the kill is still dispatched
//! (never offered to anyone else). Nothing is re-pinged after the restart: the
//! index comes back from the snapshot, the location log after it and the trips.
//! Waits are bounded by deadlines; nothing asserts on timing.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use casebook_kit::http_client::HttpClient;
use http::Method;
use serde_json::{Value, json};
use support::Up;

const SENDERS: u64 = 4;
const DRIVERS_PER_SENDER: u64 = 500;
const BATCH: u64 = 250;
/// Snapshots (the metric) to see before the kill, so the kill lands after at
/// least one complete snapshot and with more of the log after it.
const SNAPSHOTS_BEFORE_KILL: f64 = 2.0;
const DEADLINE: Duration = Duration::from_secs(90);
/// The dispatched driver, away from the load (which pings around Chicago).
const DISPATCHED: u64 = 9_000_000;

/// Where driver `id` is at its timestamp `ts` (so a state names its ping).
fn position(id: u64, ts: u64) -> (f64, f64) {
    let lat = 41.80 + (id % 1_000) as f64 * 1e-4 + (ts % 97) as f64 * 1e-6;
    let lon = -87.70 + (id / 1_000) as f64 * 1e-3 + (ts % 89) as f64 * 1e-6;
    (lat, lon)
}

fn env(up: support::UpBuilder) -> support::UpBuilder {
    up.up_arg("--case")
        .up_arg("uber")
        .env("CASEBOOK_UBER__LOCATION_SNAPSHOT", "1s")
        // A slow restart must not make anyone stale: the assertions are about
        // what was stored, not about the clock.
        .env("CASEBOOK_UBER__DRIVER_STALE", "1day")
}

async fn snapshots(client: &HttpClient, api: &str) -> f64 {
    let Ok(response) = client
        .send(
            Method::GET,
            &format!("{api}/metrics"),
            Default::default(),
            Default::default(),
        )
        .await
    else {
        return 0.0;
    };
    String::from_utf8_lossy(&response.body)
        .lines()
        .find_map(|line| line.strip_prefix("uber_location_snapshots_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_pings_and_dispatches_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut up = env(Up::builder(dir.path())).start();
    let api = format!("http://{}", up.address_in("uber", "us-east").await);
    let client = HttpClient::new(Duration::from_secs(20));

    // A ride accepted before the kill: its driver must stay dispatched.
    let ping = json!({"lat": 37.7751, "lon": -122.4191, "ts": 1, "status": "available"});
    let url = format!("{api}/v1/drivers/{DISPATCHED}/location");
    let _: Value = client.json(Method::POST, &url, &ping).await.unwrap();
    let ride = json!({"rider": 7, "pickup": {"lat": 37.7750, "lng": -122.4190},
                      "dropoff": {"lat": 37.80, "lng": -122.40}, "mode": "greedy"});
    let ride: Value = client
        .json(Method::POST, &format!("{api}/v1/rides"), &ride)
        .await
        .unwrap();
    assert_eq!(ride["status"]["driver"], DISPATCHED, "{ride}");
    let accept = format!("{api}/v1/rides/{}/accept", ride["id"]);
    let accepted: Value = client
        .json(Method::POST, &accept, &json!({"driver": DISPATCHED}))
        .await
        .unwrap();
    assert_eq!(accepted["status"]["state"], "accepted", "{accepted}");

    // The load: each sender owns its drivers and raises their timestamps.
    let acked: Arc<Mutex<HashMap<u64, u64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        let (acked, stop, client, api) = (acked.clone(), stop.clone(), client.clone(), api.clone());
        senders.push(tokio::spawn(async move {
            let first = s * DRIVERS_PER_SENDER;
            let mut ts = 0;
            while !stop.load(Ordering::Relaxed) {
                ts += 1;
                for chunk in (first..first + DRIVERS_PER_SENDER).collect::<Vec<_>>().chunks(BATCH as usize) {
                    let updates: Vec<Value> = chunk
                        .iter()
                        .map(|&id| {
                            let (lat, lon) = position(id, ts);
                            json!({"driver": id, "lat": lat, "lon": lon, "ts": ts, "status": "available"})
                        })
                        .collect();
                    let body = json!({ "updates": updates });
                    let url = format!("{api}/v1/locations");
                    // Errors (shed, or the process gone) acknowledge nothing.
                    if let Ok(report) = client.json::<_, Value>(Method::POST, &url, &body).await {
                        assert_eq!(report["accepted"], chunk.len(), "{report}");
                        let mut acked = acked.lock().unwrap();
                        for &id in chunk {
                            acked.insert(id, ts);
                        }
                    }
                }
            }
        }));
    }
    let give_up = tokio::time::Instant::now() + DEADLINE;
    // The kill lands once every driver was acknowledged and at least two
    // snapshots were taken after that began (a slow start acknowledges late).
    while acked.lock().unwrap().len() < (SENDERS * DRIVERS_PER_SENDER) as usize {
        assert!(
            tokio::time::Instant::now() < give_up,
            "not every driver was acknowledged"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = snapshots(&client, &api).await;
    while snapshots(&client, &api).await < before + SNAPSHOTS_BEFORE_KILL {
        assert!(
            tokio::time::Instant::now() < give_up,
            "no snapshots were taken"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    up.kill();
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        sender.await.unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert_eq!(
        acked.len() as u64,
        SENDERS * DRIVERS_PER_SENDER,
        "every driver acked at least once"
    );

    let up = env(Up::builder(dir.path())).start();
    let api = format!("http://{}", up.address_in("uber", "us-east").await);
    let mut later = 0;
    for (&id, &ts) in &acked {
        let state: Value = client
            .get_json(&format!("{api}/v1/drivers/{id}"))
            .await
            .unwrap_or_else(|e| panic!("driver {id} (acked at ts {ts}) is gone: {e}"));
        let got = state["ts"].as_u64().unwrap();
        assert!(got >= ts, "driver {id}: acked ts {ts}, restored {got}");
        later += usize::from(got > ts);
        let (lat, lon) = position(id, got);
        // serde_json's default float parsing may round the last bit.
        let near = |got: &Value, want: f64| (got.as_f64().unwrap() - want).abs() < 1e-9;
        assert!(
            near(&state["lat"], lat) && near(&state["lon"], lon),
            "driver {id} at ts {got}: {state}, expected ({lat}, {lon})"
        );
        assert_eq!(state["status"], "available");
    }
    let dispatched: Value = client
        .get_json(&format!("{api}/v1/drivers/{DISPATCHED}"))
        .await
        .unwrap();
    assert_eq!(dispatched["status"], "dispatched", "{dispatched}");
    let again = json!({"rider": 8, "pickup": {"lat": 37.7750, "lng": -122.4190},
                       "dropoff": {"lat": 37.80, "lng": -122.40}, "mode": "greedy"});
    let again: Value = client
        .json(Method::POST, &format!("{api}/v1/rides"), &again)
        .await
        .unwrap();
    assert_eq!(again["status"]["state"], "no_drivers", "{again}");
    println!(
        "{} drivers acknowledged; all restored, {later} at a later (durable, unacknowledged) ping",
        acked.len()
    );
}
