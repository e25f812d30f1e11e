//! The `uber` service over real HTTP on loopback, started by the kit's platform
//! like `casebook up` starts it: ingest, bad input, a ride end to end, no double
//! assignment under concurrent requests, shedding order, and a restart that keeps
//! trips. Time is a `ManualClock` (nothing goes stale, no offer times out unless a
//! test advances it); the stores run with `Durability::NoSync` (tests only: a
//! process crash is survived, a power loss is not — kill -9 is out of scope here).
//! Waits are bounded by [`DEADLINE`]; nothing asserts on timing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use casebook_kit::clock::ManualClock;
use casebook_kit::events::EventBus;
use casebook_kit::http_client::HttpClient;
use casebook_kit::resilience::Priority;
use casebook_kit::resilience::limit::AimdConfig;
use casebook_kit::resilience::shed::{Admission, ShedConfig};
use casebook_kit::runtime::{InstanceSpec, Platform};
use casebook_kit::topology::Topology;
use casebook_kit::wal::Durability;
use casebook_uber::api::{ApiConfig, Engine, LOCATIONS_TOPIC};
use casebook_uber::index::{DriverId, DriverStatus};
use casebook_uber::locations::LocationColumns;
use casebook_uber::service::UberService;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(20);
const INSTANCE: &str = "uber-test";

struct Api {
    platform: Platform,
    service: Arc<UberService>,
    clock: ManualClock,
    addr: SocketAddr,
    client: HttpClient,
    _dir: tempfile::TempDir,
}

fn config() -> ApiConfig {
    ApiConfig {
        max_batch: 8,
        durability: Durability::NoSync,
        tick_every: Duration::from_millis(20),
        ..ApiConfig::default()
    }
}

async fn start_instance(platform: &Platform) -> SocketAddr {
    platform
        .start(InstanceSpec {
            service: "uber".into(),
            instance_id: Some(INSTANCE.into()),
            placement: Topology::uniform(&["r1"], 1).spread(0),
            listen: "127.0.0.1:0".parse().unwrap(),
            version: "test".into(),
            port_hint: None,
        })
        .await
        .unwrap()
        .address
}

impl Api {
    async fn start(config: ApiConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new();
        let platform = Platform::new(Topology::uniform(&["r1"], 1), dir.path(), clock.shared());
        let service = Arc::new(UberService::new(config));
        platform.register_service(service.clone());
        let addr = start_instance(&platform).await;
        Self {
            platform,
            service,
            clock,
            addr,
            client: HttpClient::new(DEADLINE),
            _dir: dir,
        }
    }

    fn engine(&self) -> Arc<Engine> {
        self.service.engine().expect("the instance runs")
    }

    /// Stops the instance gracefully and starts it again on the same data dir.
    async fn restart(&mut self) {
        self.platform
            .stop(INSTANCE, Duration::from_secs(5))
            .await
            .expect("stopped");
        self.addr = start_instance(&self.platform).await;
    }

    async fn raw(&self, method: Method, path: &str, body: &str) -> (StatusCode, Value, HeaderMap) {
        let mut headers = HeaderMap::new();
        if !body.is_empty() {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        let url = format!("http://{}{path}", self.addr);
        let response = self
            .client
            .send(method, &url, headers, Bytes::from(body.to_owned()))
            .await
            .unwrap();
        let value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        (response.status, value, response.headers)
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let (status, value, _) = self.raw(Method::POST, path, &body.to_string()).await;
        (status, value)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let (status, value, _) = self.raw(Method::GET, path, "").await;
        (status, value)
    }

    async fn ping(&self, driver: u64, lat: f64, lon: f64, ts: u64) -> Value {
        let (status, body) = self
            .post(
                &format!("/v1/drivers/{driver}/location"),
                json!({"lat": lat, "lon": lon, "ts": ts, "status": "available"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    async fn ride(&self, rider: u64, mode: &str) -> Value {
        let (status, body) = self
            .post(
                "/v1/rides",
                json!({
                    "rider": rider,
                    "pickup": {"lat": 37.7750, "lng": -122.4190},
                    "dropoff": {"lat": 37.8000, "lng": -122.4000},
                    "mode": mode,
                }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    /// Polls a path until `done` holds for its body.
    async fn wait_for(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        let last = std::cell::RefCell::new(Value::Null);
        casebook_testkit::eventually(&format!("{path} to get there"), DEADLINE, || async {
            let (_, body) = self.get(path).await;
            let reached = done(&body);
            *last.borrow_mut() = body;
            reached
        })
        .await;
        last.into_inner()
    }
}

fn status_of(engine: &Engine, driver: u64) -> DriverStatus {
    engine.index().get(DriverId(driver)).unwrap().status
}

#[tokio::test]
async fn single_and_batch_ingest_latest_wins_and_reach_the_bus_through_the_outbox() {
    let api = Api::start(config()).await;
    let first = api.ping(1, 37.7749, -122.4194, 10).await;
    assert_eq!(first["accepted"], 1);
    // An older ping never overwrites a newer one; the same one is a duplicate.
    let older = api.ping(1, 10.0, 10.0, 5).await;
    assert_eq!(
        (older["accepted"].clone(), older["stale"].clone()),
        (json!(0), json!(1))
    );
    let again = api.ping(1, 37.7749, -122.4194, 10).await;
    assert_eq!(again["duplicate"], 1);
    let engine = api.engine();
    let view = engine.index().get(DriverId(1)).unwrap();
    assert_eq!((view.ts, view.position.lat()), (10, 37.7749));

    let (status, report) = api
        .post(
            "/v1/locations",
            json!({"updates": [
                {"driver": 2, "lat": 37.70, "lon": -122.40, "ts": 1, "status": "available"},
                {"driver": 2, "lat": 37.71, "lon": -122.41, "ts": 3, "status": "available"},
                {"driver": 2, "lat": 37.72, "lon": -122.42, "ts": 2, "status": "available"},
                {"driver": 3, "lat": 95.0, "lon": -122.40, "ts": 1, "status": "available"},
                {"driver": 4, "lat": 37.70, "lon": -122.40, "ts": 1, "status": "on_trip"},
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["accepted"], 2);
    assert_eq!(report["stale"], 1);
    let invalid = report["invalid"].as_array().unwrap();
    assert_eq!(invalid.len(), 2, "{report}");
    assert_eq!(invalid[0]["index"], 3);
    assert_eq!(invalid[0]["field"], "updates[3].lat");
    assert_eq!(invalid[1]["field"], "updates[4].status");
    assert_eq!(engine.index().get(DriverId(2)).unwrap().ts, 3);
    assert!(engine.index().get(DriverId(3)).is_none());

    // The outbox holds the logged updates (1's ts 10, 2's ts 1 and 3); the relay
    // publishes them to the bus.
    let give_up = tokio::time::Instant::now() + DEADLINE;
    loop {
        let events = engine.bus().read(LOCATIONS_TOPIC, 0, 100).await.unwrap();
        let logged: Vec<(u64, u64)> = events
            .iter()
            .flat_map(|d| LocationColumns::updates(&d.event.payload).unwrap())
            .map(|u| (u.driver.0, u.ts))
            .collect();
        if logged.len() >= 3 {
            assert_eq!(logged, vec![(1, 10), (2, 1), (2, 3)]);
            break;
        }
        assert!(tokio::time::Instant::now() < give_up, "relayed: {logged:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn bad_input_is_answered_precisely() {
    let api = Api::start(config()).await;
    let ping = |lat: &str, lon: &str, status: &str| {
        format!(r#"{{"lat": {lat}, "lon": {lon}, "ts": 1, "status": "{status}"}}"#)
    };
    for (body, field) in [
        (ping("91", "0", "available"), "lat"),
        (ping("0", "-180.5", "available"), "lon"),
        (ping("NaN", "0", "available"), "lat"),
        (ping("0", "0", "dispatched"), "status"),
        (ping("0", "0", "flying"), "status"),
        (
            r#"{"lat": 0, "lon": 0, "status": "available"}"#.to_owned(),
            "ts",
        ),
    ] {
        let (status, error, _) = api.raw(Method::POST, "/v1/drivers/7/location", &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {error}");
        assert_eq!(error["field"], field, "{body}: {error}");
    }
    let (status, error, _) = api
        .raw(
            Method::POST,
            "/v1/drivers/x/location",
            &ping("0", "0", "available"),
        )
        .await;
    assert_eq!(
        (status, error["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("id"))
    );

    // Over the batch limit (8 here): 413, nothing applied.
    let updates: Vec<Value> = (0..9)
        .map(|d| json!({"driver": d, "lat": 1.0, "lon": 1.0, "ts": 1, "status": "available"}))
        .collect();
    let (status, error) = api
        .post("/v1/locations", json!({ "updates": updates }))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{error}");
    assert!(error["error"].as_str().unwrap().contains("maximum of 8"));
    assert_eq!(api.engine().index().driver_count(), 0);

    let (status, error) = api
        .post(
            "/v1/rides",
            json!({"rider": 1, "pickup": {"lat": 0, "lng": 200}, "dropoff": {"lat": 0, "lng": 0}}),
        )
        .await;
    assert_eq!(
        (status, error["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("pickup.lng"))
    );

    for path in [
        "/v1/rides/999",
        "/v1/trips/1-999",
        "/v1/riders/5/trips",
        "/v1/drivers/5/earnings",
    ] {
        let (status, error) = api.get(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {error}");
        assert!(error["error"].is_string());
    }
    let (status, _) = api.post("/v1/rides/999/accept", json!({"driver": 1})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api.post("/v1/trips/1-999/start", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_ride_end_to_end_offer_decline_accept_trip_and_earnings() {
    let api = Api::start(config()).await;
    api.ping(1, 37.7751, -122.4191, 1).await; // next to the pickup
    api.ping(2, 37.7800, -122.4200, 1).await; // ~560 m away
    let engine = api.engine();

    let ride = api.ride(100, "greedy").await;
    let id = ride["id"].as_u64().unwrap();
    assert_eq!(ride["status"]["state"], "offered");
    assert_eq!(ride["status"]["driver"], 1);
    assert_eq!(
        status_of(&engine, 1),
        DriverStatus::Dispatched,
        "an offer's claim takes the driver out of every other search"
    );
    // Only the offered driver may answer.
    let (status, _) = api
        .post(&format!("/v1/rides/{id}/accept"), json!({"driver": 2}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    // Driver 1 declines: re-offered to driver 2.
    let (status, declined) = api
        .post(&format!("/v1/rides/{id}/decline"), json!({"driver": 1}))
        .await;
    assert_eq!(status, StatusCode::OK, "{declined}");
    assert_eq!(declined["status"]["driver"], 2);
    assert_eq!(status_of(&engine, 1), DriverStatus::Available, "released");
    let (status, accepted) = api
        .post(&format!("/v1/rides/{id}/accept"), json!({"driver": 2}))
        .await;
    assert_eq!(status, StatusCode::OK, "{accepted}");
    assert_eq!(accepted["status"]["state"], "accepted");
    let trip = accepted["trip"].as_str().unwrap().to_owned();
    assert_eq!(status_of(&engine, 2), DriverStatus::Dispatched);

    // A dispatched driver is not offered again: the next rider gets driver 1.
    let other = api.ride(101, "greedy").await;
    assert_eq!(other["status"]["driver"], 1);

    let (_, state) = api.get(&format!("/v1/trips/{trip}")).await;
    assert_eq!(
        (state["status"].clone(), state["driver"].clone()),
        (json!("matched"), json!(2))
    );
    let step = |action: &'static str, body: Value| {
        let api = &api;
        let trip = trip.clone();
        async move { api.post(&format!("/v1/trips/{trip}/{action}"), body).await }
    };
    let (status, _) = step("pay", json!({})).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "pay before complete is illegal"
    );
    assert_eq!(step("arrived", json!({})).await.0, StatusCode::OK);
    assert_eq!(step("start", json!({})).await.0, StatusCode::OK);
    assert_eq!(status_of(&engine, 2), DriverStatus::OnTrip);
    let (status, error) = step("cancel", json!({})).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "no cancel once started: {error}"
    );
    let (status, error) = step("complete", json!({})).await;
    assert_eq!(
        (status, error["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("distance_m"))
    );
    api.clock.advance(Duration::from_secs(600));
    let (status, done) = step("complete", json!({"distance_m": 5000.0})).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    // 250 + 120 × 5 km + 30 × 10 min = 1150 cents.
    assert_eq!(done["fare_cents"], 1150);
    assert_eq!(status_of(&engine, 2), DriverStatus::Available);
    assert_eq!(step("pay", json!({})).await.0, StatusCode::OK);

    let (_, state) = api.get(&format!("/v1/trips/{trip}")).await;
    assert_eq!(state["status"], "paid");
    assert_eq!(state["paid_cents"], 1150);
    let (_, rides) = api.get("/v1/riders/100/trips").await;
    assert_eq!(rides["trips"][0]["id"], trip.as_str());
    let (_, earnings) = api.get("/v1/drivers/2/earnings").await;
    assert_eq!(
        (earnings["trips"].clone(), earnings["fare_cents"].clone()),
        (json!(1), json!(1150))
    );
    let (_, ride_now) = api.get(&format!("/v1/rides/{id}")).await;
    assert_eq!(ride_now["status"]["state"], "finished");
    let (_, city) = api.get("/v1/city").await;
    assert_eq!(city["trips"]["paid"], 1, "{city}");

    // The finished driver is available again: the next rider may get them (after
    // a fresh ping: ten minutes of the trip left every earlier ping stale, and
    // rider 101's offer to driver 1 timed out meanwhile). The tick must have
    // withdrawn that offer first, or it could re-offer ride 101 to the freshly
    // pinged driver 2 and leave rider 102 without one.
    let other_id = other["id"].as_u64().unwrap();
    api.wait_for(&format!("/v1/rides/{other_id}"), |b| {
        b["status"]["state"] == "no_drivers"
    })
    .await;
    api.ping(2, 37.7800, -122.4200, 2).await;
    let next = api.ride(102, "greedy").await;
    assert_eq!(next["status"]["driver"], 2, "{next}");
}

#[tokio::test]
async fn a_batched_ride_waits_for_the_window_on_the_injected_clock() {
    let api = Api::start(config()).await;
    api.ping(1, 37.7751, -122.4191, 1).await;
    let ride = api.ride(7, "batched").await;
    assert_eq!(ride["status"]["state"], "queued");
    api.clock.advance(Duration::from_secs(2));
    let id = ride["id"].as_u64().unwrap();
    let offered = api
        .wait_for(&format!("/v1/rides/{id}"), |b| {
            b["status"]["state"] == "offered"
        })
        .await;
    assert_eq!(offered["status"]["driver"], 1);
    // Unanswered past the offer timeout: withdrawn by the tick, no one else left.
    api.clock.advance(Duration::from_secs(16));
    api.wait_for(&format!("/v1/rides/{id}"), |b| {
        b["status"]["state"] != "offered"
    })
    .await;
}

#[tokio::test]
async fn concurrent_ride_requests_never_share_a_driver() {
    let api = Arc::new(Api::start(config()).await);
    for d in 1..=5u64 {
        api.ping(d, 37.7750 + d as f64 * 0.0005, -122.4190, 1).await;
    }
    let mut tasks = Vec::new();
    for rider in 0..16u64 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move { api.ride(rider, "greedy").await }));
    }
    let mut offered = Vec::new();
    for task in tasks {
        let ride = task.await.unwrap();
        if ride["status"]["state"] == "offered" {
            offered.push(ride["status"]["driver"].as_u64().unwrap());
        } else {
            assert_eq!(ride["status"]["state"], "no_drivers", "{ride}");
        }
    }
    offered.sort_unstable();
    assert_eq!(
        offered,
        vec![1, 2, 3, 4, 5],
        "each driver offered exactly once"
    );
}

#[tokio::test]
async fn under_overload_pings_are_shed_while_ride_requests_go_through() {
    let api = Api::start(ApiConfig {
        shed: ShedConfig {
            limit: AimdConfig {
                initial_limit: 1,
                min_limit: 1,
                max_limit: 1,
                ..AimdConfig::default()
            },
            hard_limit: 64,
            ..ShedConfig::default()
        },
        ..config()
    })
    .await;
    api.ping(1, 37.7751, -122.4191, 1).await;
    // One request in flight fills the limit of 1 (a blocked handler, held here).
    let Admission::Admitted(in_flight) = api.engine().shedder().admit(Priority::Normal, None)
    else {
        panic!("the first call is admitted");
    };
    let body = r#"{"lat": 37.7751, "lon": -122.4191, "ts": 2, "status": "available"}"#;
    let (status, error, headers) = api.raw(Method::POST, "/v1/drivers/1/location", body).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{error}");
    assert!(headers.get(header::RETRY_AFTER).is_some());
    // Even a ping claiming to be critical stays low.
    let url = format!("http://{}/v1/drivers/1/location", api.addr);
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert("x-priority", HeaderValue::from_static("critical"));
    let response = api
        .client
        .send(Method::POST, &url, h, Bytes::from(body))
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
    // A normal read is shed too; the critical ride request goes through.
    assert_eq!(api.get("/v1/city").await.0, StatusCode::SERVICE_UNAVAILABLE);
    let ride = api.ride(1, "greedy").await;
    assert_eq!(ride["status"]["driver"], 1);
    assert_eq!(
        api.engine().index().get(DriverId(1)).unwrap().ts,
        1,
        "the shed ping did nothing"
    );
    drop(in_flight);
    assert_eq!(api.ping(1, 37.7751, -122.4191, 2).await["accepted"], 1);

    // A deadline already passed (a 0 ms budget) is refused without running: 504,
    // and no ride was created.
    let url = format!("http://{}/v1/rides", api.addr);
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert("x-deadline-ms", HeaderValue::from_static("0"));
    let ride_body = json!({
        "rider": 2,
        "pickup": {"lat": 37.7750, "lng": -122.4190},
        "dropoff": {"lat": 37.8000, "lng": -122.4000},
    });
    let response = api
        .client
        .send(Method::POST, &url, h, Bytes::from(ride_body.to_string()))
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(api.get("/v1/rides/2").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_restart_on_the_same_data_dir_keeps_trips_and_read_models() {
    let mut api = Api::start(config()).await;
    api.ping(1, 37.7751, -122.4191, 1).await;
    let ride = api.ride(42, "greedy").await;
    let id = ride["id"].as_u64().unwrap();
    let (_, accepted) = api
        .post(&format!("/v1/rides/{id}/accept"), json!({"driver": 1}))
        .await;
    let trip = accepted["trip"].as_str().unwrap().to_owned();
    for (action, body) in [
        ("arrived", json!({})),
        ("start", json!({})),
        ("complete", json!({"distance_m": 1000.0})),
    ] {
        let (status, body) = api.post(&format!("/v1/trips/{trip}/{action}"), body).await;
        assert_eq!(status, StatusCode::OK, "{action}: {body}");
    }
    let (_, before) = api.get(&format!("/v1/trips/{trip}")).await;
    assert_eq!(before["status"], "completed");

    api.restart().await;
    assert!(api.service.engine().is_some());
    let (status, after) = api.get(&format!("/v1/trips/{trip}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(after, before, "replayed and resumed read models agree");
    let (_, earnings) = api.get("/v1/drivers/1/earnings").await;
    assert_eq!(earnings["trips"], 1);
    // The trip goes on from where it was; the ride itself lived in memory only.
    let (status, paid) = api.post(&format!("/v1/trips/{trip}/pay"), json!({})).await;
    assert_eq!(
        (status, paid["status"].clone()),
        (StatusCode::OK, json!("paid"))
    );
    assert_eq!(
        api.get(&format!("/v1/rides/{id}")).await.0,
        StatusCode::NOT_FOUND
    );
    // New trips after the restart never reuse an id.
    api.ping(1, 37.7751, -122.4191, 2).await;
    let ride = api.ride(42, "greedy").await;
    let (_, accepted) = api
        .post(
            &format!("/v1/rides/{}/accept", ride["id"]),
            json!({"driver": 1}),
        )
        .await;
    assert_ne!(accepted["trip"].as_str().unwrap(), trip);
    let (_, rides) = api.get("/v1/riders/42/trips").await;
    assert_eq!(rides["trips"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_restart_rebuilds_the_index_from_snapshot_and_outbox_and_trips() {
    let mut api = Api::start(config()).await;
    api.ping(1, 37.7751, -122.4191, 1).await;
    api.ping(2, 37.7800, -122.4200, 1).await;
    let accept = |ride: &Value, driver: u64| {
        let api = &api;
        let id = ride["id"].as_u64().unwrap();
        async move {
            let (status, body) = api
                .post(&format!("/v1/rides/{id}/accept"), json!({"driver": driver}))
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body["trip"].as_str().unwrap().to_owned()
        }
    };
    let trip_step = |trip: String, action: &'static str, body: Value| {
        let api = &api;
        async move {
            let (status, out) = api.post(&format!("/v1/trips/{trip}/{action}"), body).await;
            assert_eq!(status, StatusCode::OK, "{action}: {out}");
        }
    };
    // Driver 1 is dispatched when the snapshot is taken...
    let first = api.ride(50, "greedy").await;
    assert_eq!(first["status"]["driver"], 1);
    let t1 = accept(&first, 1).await;
    let saved = api.engine().snapshot_locations().unwrap();
    assert_eq!(saved, 2);
    // ...and free again after it: its trip completes.
    trip_step(t1.clone(), "arrived", json!({})).await;
    trip_step(t1.clone(), "start", json!({})).await;
    trip_step(t1, "complete", json!({"distance_m": 900.0})).await;
    // Driver 2 was available in the snapshot, and is on a trip after it.
    let second = api.ride(51, "greedy").await;
    let id = second["id"].as_u64().unwrap();
    let (status, _) = api
        .post(&format!("/v1/rides/{id}/decline"), json!({"driver": 1}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let t2 = accept(&second, 2).await;
    trip_step(t2.clone(), "arrived", json!({})).await;
    trip_step(t2, "start", json!({})).await;
    // Only in the outbox: driver 4's first ping, driver 1's move.
    api.ping(4, 37.7760, -122.4180, 1).await;
    api.ping(1, 37.7752, -122.4192, 2).await;

    api.restart().await;
    let engine = api.engine();
    let recovery = engine.recovery();
    assert_eq!(recovery.snapshot_drivers, 2);
    assert!(recovery.replayed_updates >= 2, "{recovery:?}");
    let driver = |id: u64| {
        let api = &api;
        async move {
            let (status, body) = api.get(&format!("/v1/drivers/{id}")).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body
        }
    };
    let one = driver(1).await;
    assert_eq!(
        (one["status"].clone(), one["ts"].clone(), one["lat"].clone()),
        (json!("available"), json!(2), json!(37.7752)),
        "the snapshot's dispatched status is reconciled with the completed trip"
    );
    assert_eq!(
        driver(2).await["status"],
        "on_trip",
        "its open trip was started"
    );
    assert_eq!(
        driver(4).await["status"],
        "available",
        "replayed from the outbox"
    );
    assert_eq!(
        engine.index().audit().unwrap(),
        2,
        "drivers 1 and 4 indexed"
    );
    assert_eq!(api.get("/v1/drivers/3").await.0, StatusCode::NOT_FOUND);
    // Riders are matched at once, without waiting for the next pings; the driver
    // on a trip is never offered.
    let next = api.ride(52, "greedy").await;
    assert_eq!(next["status"]["driver"], 1, "{next}");
    let id = next["id"].as_u64().unwrap();
    let (_, declined) = api
        .post(&format!("/v1/rides/{id}/decline"), json!({"driver": 1}))
        .await;
    assert_eq!(declined["status"]["driver"], 4, "{declined}");
    let (_, declined) = api
        .post(&format!("/v1/rides/{id}/decline"), json!({"driver": 4}))
        .await;
    assert_eq!(declined["status"]["state"], "no_drivers", "{declined}");
}

/// Now on the test's wall clock, in milliseconds (what a driver's app would send).
fn wall_ms(clock: &ManualClock) -> u64 {
    use casebook_kit::clock::Clock;
    clock.wall_millis()
}

#[tokio::test]
async fn a_far_future_timestamp_is_refused_and_cannot_freeze_a_driver() {
    let api = Api::start(config()).await;
    let skew = ApiConfig::default().index.max_clock_skew;
    let now = wall_ms(&api.clock);
    let logged_before = api.engine().outbox().next_seq();
    for ts in [u64::MAX, now + skew.as_millis() as u64 + 1] {
        let (status, error) = api
            .post(
                "/v1/drivers/1/location",
                json!({"lat": 37.7, "lon": -122.4, "ts": ts, "status": "available"}),
            )
            .await;
        assert_eq!(
            (status, error["field"].clone()),
            (StatusCode::BAD_REQUEST, json!("ts")),
            "{error}"
        );
    }
    // A batch names the record; nothing of it is applied or logged.
    let (status, error) = api
        .post(
            "/v1/locations",
            json!({"updates": [
                {"driver": 2, "lat": 37.7, "lon": -122.4, "ts": 1, "status": "available"},
                {"driver": 3, "lat": 37.7, "lon": -122.4, "ts": u64::MAX, "status": "available"},
            ]}),
        )
        .await;
    assert_eq!(
        (status, error["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("updates[1].ts")),
        "{error}"
    );
    assert_eq!(api.engine().index().driver_count(), 0);
    assert_eq!(
        api.engine().outbox().next_seq(),
        logged_before,
        "nothing logged"
    );
    // Up to the skew ahead is a clock that is merely fast: accepted, and the
    // next ping wins once the server's clock passed it.
    let fast = now + skew.as_millis() as u64;
    api.ping(1, 37.7, -122.4, fast).await;
    api.clock.advance(skew + Duration::from_secs(1));
    let later = wall_ms(&api.clock);
    assert_eq!(api.ping(1, 37.71, -122.41, later).await["accepted"], 1);
}

#[tokio::test]
async fn a_far_future_state_already_stored_does_not_freeze_the_driver_after_a_restart() {
    use casebook_kit::events::Event;
    use casebook_kit::outbox::OutboundEvent;
    use casebook_uber::index::LocationUpdate;

    let mut api = Api::start(config()).await;
    // Written as a build without the rule would have: straight into the
    // primary store.
    let frozen = LocationUpdate {
        driver: DriverId(9),
        lat: 37.7,
        lon: -122.4,
        ts: u64::MAX,
        status: DriverStatus::Available,
    };
    let event = Event::new(
        "driver.locations",
        "9",
        LocationColumns::to_value(std::iter::once(&frozen)),
        &api.clock,
    );
    api.engine()
        .outbox()
        .commit(
            json!({"driver_locations": 1}),
            vec![OutboundEvent {
                topic: LOCATIONS_TOPIC.to_owned(),
                event,
            }],
        )
        .await
        .unwrap();
    api.restart().await;
    let engine = api.engine();
    assert_eq!(
        engine.recovery().index.clamped,
        1,
        "{:?}",
        engine.recovery()
    );
    let restored = engine
        .index()
        .get(DriverId(9))
        .expect("kept, position and all");
    assert!(restored.ts <= wall_ms(&api.clock), "{}", restored.ts);
    api.clock.advance(Duration::from_secs(1));
    let report = api.ping(9, 37.71, -122.41, wall_ms(&api.clock)).await;
    assert_eq!(report["accepted"], 1, "{report}");
    assert_eq!(
        engine.index().get(DriverId(9)).unwrap().position.lat(),
        37.71
    );
}

#[tokio::test]
async fn an_unknown_field_in_a_batch_record_is_refused_by_name() {
    let api = Api::start(config()).await;
    let (status, error) = api
        .post(
            "/v1/locations",
            json!({"updates": [
                {"driver": 2, "lat": 37.7, "lon": -122.4, "ts": 1, "status": "available"},
                {"driver": 3, "lat": 37.7, "lon": -122.4, "ts": 1, "status": "available", "speed": 9},
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert!(
        error["field"].as_str().unwrap().starts_with("updates[1]"),
        "{error}"
    );
    assert!(
        error["error"].as_str().unwrap().contains("speed"),
        "{error}"
    );
    assert_eq!(api.engine().index().driver_count(), 0);
}

#[tokio::test]
async fn an_oversized_trip_command_body_gets_the_json_error_format() {
    let api = Api::start(config()).await;
    let huge = format!(r#"{{"reason": "{}"}}"#, "x".repeat(3 * 1024 * 1024));
    let (status, error, headers) = api.raw(Method::POST, "/v1/trips/1-1/cancel", &huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(error["error"].is_string(), "not JSON: {error}");
    assert_eq!(
        headers.get(header::CONTENT_TYPE).unwrap(),
        "application/json"
    );
}

#[tokio::test]
async fn ride_durations_are_milliseconds_named_so() {
    let api = Api::start(config()).await;
    api.ping(1, 37.7751, -122.4191, 1).await;
    let ride = api.ride(7, "greedy").await;
    let status = &ride["status"];
    assert_eq!(status["state"], "offered", "{ride}");
    assert!(status["eta_ms"].is_u64(), "{ride}");
    assert!(status.get("eta").is_none(), "{ride}");
    assert!(ride["time_to_offer_ms"].is_u64(), "{ride}");
}

#[tokio::test]
async fn a_riders_trip_list_is_paged_with_a_bounded_limit() {
    let api = Api::start(config()).await;
    let mut trips = Vec::new();
    for ts in 1..=3 {
        api.ping(1, 37.7751, -122.4191, ts).await;
        let ride = api.ride(77, "greedy").await;
        let (status, accepted) = api
            .post(
                &format!("/v1/rides/{}/accept", ride["id"]),
                json!({"driver": 1}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{accepted}");
        let trip = accepted["trip"].as_str().unwrap().to_owned();
        // The other client-sized inputs of a trip command are bounded too.
        for (action, body, field) in [
            ("cancel", json!({"reason": "x".repeat(257)}), "reason"),
            ("complete", json!({"distance_m": 2_000_001.0}), "distance_m"),
        ] {
            let (status, error) = api.post(&format!("/v1/trips/{trip}/{action}"), body).await;
            assert_eq!(
                (status, error["field"].clone()),
                (StatusCode::BAD_REQUEST, json!(field)),
                "{error}"
            );
        }
        let (status, _) = api
            .post(&format!("/v1/trips/{trip}/cancel"), json!({}))
            .await;
        assert_eq!(status, StatusCode::OK);
        trips.push(trip);
    }
    let (status, page) = api.get("/v1/riders/77/trips?limit=2").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["total"], 3);
    let ids: Vec<&str> = page["trips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [trips[1].as_str(), trips[2].as_str()],
        "the latest two"
    );
    for bad in ["0", "1001", "x", "-1"] {
        let (status, error) = api.get(&format!("/v1/riders/77/trips?limit={bad}")).await;
        assert_eq!(
            (status, error["field"].clone()),
            (StatusCode::BAD_REQUEST, json!("limit")),
            "{bad}: {error}"
        );
    }
}
