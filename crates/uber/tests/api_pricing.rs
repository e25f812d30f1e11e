//! The `uber` API calling a real `pricing` instance on the same platform, as
//! `casebook up` wires them (pricing started first, its address handed to uber):
//! ride requests raise the quote in their cell, a ride is charged the multiplier
//! it was quoted at request time, pricing killed → quotes and completion go on at
//! 1.0 with `fallback: true`, pricing restarted → real multipliers again.
//!
//! Time (surge buckets, the breaker, the matcher's waits) is one `ManualClock`
//! shared by both services; waits for the background signal sender are bounded
//! polls ([`DEADLINE`]); nothing asserts on timing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use casebook_kit::clock::ManualClock;
use casebook_kit::http_client::HttpClient;
use casebook_kit::runtime::{InstanceSpec, Platform};
use casebook_kit::topology::Topology;
use casebook_kit::wal::Durability;
use casebook_uber::api::{ApiConfig, Engine};
use casebook_uber::pricing::{PRICING_SERVICE, PricingConfig, PricingService};
use casebook_uber::service::{UBER_SERVICE, UberService};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(20);
const BUCKET: Duration = Duration::from_secs(30);

/// Near Union Square (the hot cell) and the Presidio (another level-12 cell).
const HOT: (f64, f64) = (37.7880, -122.4075);
const COLD: (f64, f64) = (37.7989, -122.4662);

struct Wired {
    platform: Platform,
    clock: ManualClock,
    service: Arc<UberService>,
    uber: SocketAddr,
    pricing: SocketAddr,
    pricing_id: String,
    client: HttpClient,
    _dir: tempfile::TempDir,
}

async fn start(platform: &Platform, service: &str, listen: SocketAddr) -> (String, SocketAddr) {
    // One uber instance id, so a restart reopens its stores.
    let instance_id = (service == UBER_SERVICE).then(|| "uber-test".to_owned());
    let info = platform
        .start(InstanceSpec {
            service: service.into(),
            instance_id,
            placement: Topology::uniform(&["r1"], 1).spread(0),
            listen,
            version: "test".into(),
            port_hint: None,
        })
        .await
        .unwrap();
    (info.instance_id, info.address)
}

impl Wired {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new();
        let platform = Platform::new(Topology::uniform(&["r1"], 1), dir.path(), clock.shared());
        platform.register_service(Arc::new(
            PricingService::new(PricingConfig::default()).unwrap(),
        ));
        let mut config = ApiConfig {
            durability: Durability::NoSync,
            tick_every: Duration::from_millis(20),
            ..ApiConfig::default()
        };
        config.pricing.flush_every = Duration::from_millis(20);
        let service = Arc::new(UberService::new(config));
        platform.register_service(service.clone());
        // As `casebook up`: pricing first (port 0), its real address to uber.
        let (pricing_id, pricing) =
            start(&platform, PRICING_SERVICE, "127.0.0.1:0".parse().unwrap()).await;
        service.set_pricing_url(format!("http://{pricing}"));
        let (_, uber) = start(&platform, UBER_SERVICE, "127.0.0.1:0".parse().unwrap()).await;
        Self {
            platform,
            clock,
            service,
            uber,
            pricing,
            pricing_id,
            client: HttpClient::new(DEADLINE),
            _dir: dir,
        }
    }

    /// A graceful stop and a start of the uber instance on the same data dir.
    async fn restart_uber(&mut self) {
        self.platform
            .stop("uber-test", Duration::from_secs(5))
            .await
            .expect("stopped");
        self.uber = start(&self.platform, UBER_SERVICE, "127.0.0.1:0".parse().unwrap())
            .await
            .1;
    }

    fn engine(&self) -> Arc<Engine> {
        self.service.engine().expect("uber runs")
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut headers = HeaderMap::new();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        if !body.is_empty() {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        let response = self
            .client
            .send(
                method,
                &format!("http://{}{path}", self.uber),
                headers,
                bytes::Bytes::from(body),
            )
            .await
            .unwrap();
        let value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        (response.status, value)
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    async fn quote(&self, at: (f64, f64)) -> Value {
        let (status, quote) = self
            .post(
                "/v1/quote",
                json!({
                    "pickup": {"lat": at.0, "lng": at.1},
                    "dropoff": {"lat": at.0 + 0.02, "lng": at.1 + 0.01},
                }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{quote}");
        quote
    }

    async fn ride(&self, rider: u64, at: (f64, f64)) -> Value {
        let (status, ride) = self
            .post(
                "/v1/rides",
                json!({
                    "rider": rider,
                    "pickup": {"lat": at.0, "lng": at.1},
                    "dropoff": {"lat": at.0 + 0.02, "lng": at.1 + 0.01},
                }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{ride}");
        ride
    }

    async fn ping(&self, driver: u64, at: (f64, f64), ts: u64) {
        let (status, body) = self
            .post(
                &format!("/v1/drivers/{driver}/location"),
                json!({"lat": at.0, "lon": at.1, "ts": ts, "status": "available"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    /// Waits until the sender has handed every queued signal to pricing (sent or
    /// lost): the signals are asynchronous by design.
    async fn signals_flushed(&self) {
        let wire = self.engine().pricing().clone();
        let give_up = tokio::time::Instant::now() + DEADLINE;
        loop {
            let s = wire.stats();
            if wire.pending() == 0 && s.sent + s.lost + s.dropped >= s.queued {
                return;
            }
            assert!(
                tokio::time::Instant::now() < give_up,
                "signals never sent: {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `n` ride requests in the hot cell with no driver around: demand only. The
    /// rides give up after the matcher's wait, so they take no driver later.
    async fn rush(&self, first_rider: u64, n: u64) {
        let mut rides = Vec::new();
        for rider in first_rider..first_rider + n {
            rides.push(self.ride(rider, HOT).await["id"].as_u64().unwrap());
        }
        self.signals_flushed().await;
        self.clock.advance(BUCKET + Duration::from_secs(1));
        for id in rides {
            let give_up = tokio::time::Instant::now() + DEADLINE;
            loop {
                let (_, ride) = self
                    .call(Method::GET, &format!("/v1/rides/{id}"), None)
                    .await;
                if ride["status"]["state"] == "no_drivers" {
                    break;
                }
                assert!(tokio::time::Instant::now() < give_up, "{ride}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    /// A ride in the hot cell taken by `driver` (pinging next to it) through to
    /// completion; returns (the ride as requested, the completed trip).
    async fn full_ride(&self, rider: u64, driver: u64, ts: u64) -> (Value, Value) {
        self.ping(driver, HOT, ts).await;
        let ride = self.ride(rider, HOT).await;
        assert_eq!(ride["status"]["state"], "offered", "{ride}");
        let offered = ride["status"]["driver"].as_u64().unwrap();
        let id = ride["id"].as_u64().unwrap();
        let (status, accepted) = self
            .post(
                &format!("/v1/rides/{id}/accept"),
                json!({"driver": offered}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{accepted}");
        let trip = accepted["trip"].as_str().unwrap().to_owned();
        let mut done = Value::Null;
        for (action, body) in [
            ("arrived", json!({})),
            ("start", json!({})),
            ("complete", json!({"distance_m": 3000.0})),
        ] {
            let (status, body) = self.post(&format!("/v1/trips/{trip}/{action}"), body).await;
            assert_eq!(status, StatusCode::OK, "{action}: {body}");
            done = body;
        }
        (ride, done)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demand_raises_the_quote_fallback_while_pricing_is_down_real_again_after_restart() {
    let mut w = Wired::start().await;

    // Flat at first, and really asked.
    let flat = w.quote(HOT).await;
    assert_eq!(
        (flat["multiplier"].clone(), flat["fallback"].clone()),
        (json!(1.0), json!(false)),
        "{flat}"
    );

    // Demand with no supply in the hot cell: surge there, not elsewhere.
    w.rush(1, 10).await;
    let hot = w.quote(HOT).await;
    assert_eq!(hot["fallback"], false, "{hot}");
    let surge = hot["multiplier"].as_f64().unwrap();
    assert!(surge > 1.0, "{hot}");
    assert!(
        hot["fare_cents"].as_u64() > flat["fare_cents"].as_u64(),
        "{hot} vs {flat}"
    );
    let cold = w.quote(COLD).await;
    assert_eq!(
        (cold["multiplier"].clone(), cold["fallback"].clone()),
        (json!(1.0), json!(false)),
        "{cold}"
    );
    assert!(w.engine().pricing().stats().sent >= 10);

    // A ride requested now is charged the multiplier it was quoted, whatever
    // pricing says by the time it completes.
    let (ride, trip) = w.full_ride(100, 1, 1).await;
    assert_eq!(ride["quote"]["fallback"], false, "{ride}");
    let quoted = ride["quote"]["multiplier"].as_f64().unwrap();
    assert!(quoted > 1.0, "{ride}");
    assert_eq!(trip["status"], "completed");
    assert_eq!(trip["surge"].as_f64(), Some(quoted), "{trip}");
    assert_eq!(trip["quoted_surge"].as_f64(), Some(quoted), "{trip}");
    // The driver's ping was supply, its dispatch supply gone.
    w.signals_flushed().await;
    // 10 + 1 demand, 1 supply, 1 supply gone.
    assert!(w.engine().pricing().stats().sent >= 13);

    // Pricing killed: quotes and rides go on, flat and flagged.
    assert!(w.platform.kill(&w.pricing_id).await);
    let down = w.quote(HOT).await;
    assert_eq!(
        (down["multiplier"].clone(), down["fallback"].clone()),
        (json!(1.0), json!(true)),
        "{down}"
    );
    assert!(down["fare_cents"].as_u64().unwrap() > 0);
    let (ride, trip) = w.full_ride(101, 2, 1).await;
    assert_eq!(ride["quote"]["fallback"], true, "{ride}");
    assert_eq!(ride["quote"]["multiplier"], 1.0);
    assert_eq!(trip["status"], "completed");
    assert_eq!(trip["surge"].as_f64(), Some(1.0), "{trip}");
    let stats = w.engine().pricing().client().unwrap().stats();
    assert!(stats.fallbacks >= 2, "{stats:?}");

    // Restarted on the same address: real answers again once the breaker lets a
    // trial through (its sleep window is on the shared clock).
    let (id, addr) = start(&w.platform, PRICING_SERVICE, w.pricing).await;
    assert_eq!(addr, w.pricing);
    w.pricing_id = id;
    let mut real = w.quote(HOT).await;
    for _ in 0..20 {
        if real["fallback"] == false {
            break;
        }
        w.clock.advance(Duration::from_secs(10));
        real = w.quote(HOT).await;
    }
    assert_eq!(real["fallback"], false, "{real}");
    // A restarted instance starts flat; new demand surges the cell again.
    w.rush(200, 10).await;
    let again = w.quote(HOT).await;
    assert_eq!(again["fallback"], false, "{again}");
    assert!(again["multiplier"].as_f64().unwrap() > 1.0, "{again}");
}

#[tokio::test]
async fn bad_quote_requests_are_400_naming_the_field() {
    let w = Wired::start().await;
    for (body, field) in [
        (
            json!({"pickup": {"lat": 91.0, "lng": 0.0}, "dropoff": {"lat": 0.0, "lng": 0.0}}),
            "pickup.lat",
        ),
        (
            json!({"pickup": {"lat": 0.0, "lng": 0.0}, "dropoff": {"lat": 0.0, "lng": 181.0}}),
            "dropoff.lng",
        ),
    ] {
        let (status, err) = w.post("/v1/quote", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
        assert_eq!(err["field"], field, "{err}");
    }
    let (status, err) = w
        .post("/v1/quote", json!({"pickup": {"lat": 0.0, "lng": 0.0}}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    // A trip too long for the tariff is the request's fault, not a fallback.
    let (status, err) = w
        .post(
            "/v1/quote",
            json!({"pickup": {"lat": 37.0, "lng": -122.0}, "dropoff": {"lat": -33.0, "lng": 151.0}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["field"], "dropoff", "{err}");
    // The charged multiplier is the quoted one: a `surge` on complete is refused.
    let (status, _) = w
        .post(
            "/v1/trips/1-1/complete",
            json!({"distance_m": 1.0, "surge": 3.0}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quoted_multiplier_is_in_the_trip_and_survives_an_api_restart() {
    let mut w = Wired::start().await;
    w.rush(1, 10).await;
    w.ping(1, HOT, 1).await;
    let ride = w.ride(100, HOT).await;
    let quoted = ride["quote"]["multiplier"].as_f64().unwrap();
    assert!(quoted > 1.0, "{ride}");
    let id = ride["id"].as_u64().unwrap();
    let (status, accepted) = w
        .post(&format!("/v1/rides/{id}/accept"), json!({"driver": 1}))
        .await;
    assert_eq!(status, StatusCode::OK, "{accepted}");
    let trip = accepted["trip"].as_str().unwrap().to_owned();
    for action in ["arrived", "start"] {
        let (status, body) = w
            .post(&format!("/v1/trips/{trip}/{action}"), json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "{action}: {body}");
    }
    // The ride (and its in-memory quote) is gone with the restart; the trip
    // carries the multiplier.
    w.restart_uber().await;
    assert_eq!(
        w.call(Method::GET, &format!("/v1/rides/{id}"), None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let (status, done) = w
        .post(
            &format!("/v1/trips/{trip}/complete"),
            json!({"distance_m": 3000.0}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["surge"].as_f64(), Some(quoted), "{done}");
}
