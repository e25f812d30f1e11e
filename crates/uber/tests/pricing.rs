//! The `pricing` service on a real platform, called over HTTP by
//! [`PricingClient`] through the kit's resilience stack.
//!
//! Time (surge buckets, the breaker's window and sleep window) is a
//! `ManualClock` shared by the platform and the client's breaker registry, so
//! nothing here waits for time to pass or asserts on how long anything took.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use casebook_kit::clock::ManualClock;
use casebook_kit::http_client::HttpClient;
use casebook_kit::resilience::breaker::{BreakerRegistry, BreakerState};
use casebook_kit::runtime::{InstanceSpec, Platform};
use casebook_kit::topology::Topology;
use casebook_uber::index::{DriverId, LatLng};
use casebook_uber::pricing::{
    PRICING_SERVICE, PricingClient, PricingClientConfig, PricingClientStats, PricingConfig,
    PricingError, PricingService, Signal,
};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};

const BUCKET: Duration = Duration::from_secs(30);

fn at(lat: f64, lon: f64) -> LatLng {
    LatLng::new(lat, lon).unwrap()
}

/// Times Square and the Financial District: different level-12 cells.
fn hot() -> LatLng {
    at(40.7580, -73.9855)
}
fn cold() -> LatLng {
    at(40.7061, -74.0087)
}

struct Pricing {
    platform: Platform,
    instance_id: String,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Pricing {
    async fn start(config: PricingConfig, clock: &ManualClock) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let platform = Platform::new(Topology::uniform(&["r1"], 1), dir.path(), clock.shared());
        platform.register_service(Arc::new(PricingService::new(config).unwrap()));
        let (instance_id, addr) = start_instance(&platform, "127.0.0.1:0".parse().unwrap()).await;
        Self {
            platform,
            instance_id,
            addr,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn kill(&self) {
        assert!(self.platform.kill(&self.instance_id).await);
    }

    /// A new instance on the same address (a restarted process).
    async fn restart(&mut self) {
        let (id, addr) = start_instance(&self.platform, self.addr).await;
        assert_eq!(addr, self.addr);
        self.instance_id = id;
    }
}

async fn start_instance(platform: &Platform, listen: SocketAddr) -> (String, SocketAddr) {
    let info = platform
        .start(InstanceSpec {
            service: PRICING_SERVICE.into(),
            instance_id: None,
            placement: Topology::uniform(&["r1"], 1).spread(0),
            listen,
            version: "test".into(),
            port_hint: None,
        })
        .await
        .unwrap();
    (info.instance_id, info.address)
}

/// A client whose breaker trips after 4 calls and never retries, so every call
/// is one attempt the breaker counts.
fn client(url: &str, clock: &ManualClock, timeout: Duration) -> PricingClient {
    let mut config = PricingClientConfig::default();
    config.resilience.timeout.default = timeout;
    config.resilience.retry.max_attempts = 1;
    config.resilience.breaker.request_volume_threshold = 4;
    PricingClient::with_registry(url, config, BreakerRegistry::new(clock.shared())).unwrap()
}

/// 40 ride requests and 4 drivers in the hot cell (ratio 10: the cap); 2
/// requests and 10 drivers in the cold one.
fn rush_hour() -> Vec<Signal> {
    let mut signals = vec![Signal::Demand { at: hot() }; 40];
    signals.extend((1..5).map(|d| Signal::Supply {
        driver: DriverId(d),
        at: hot(),
    }));
    signals.extend(vec![Signal::Demand { at: cold() }; 2]);
    signals.extend((100..110).map(|d| Signal::Supply {
        driver: DriverId(d),
        at: cold(),
    }));
    signals
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn surge_then_fallback_while_down_then_real_prices_after_restart() {
    let clock = ManualClock::new();
    let mut pricing = Pricing::start(PricingConfig::default(), &clock).await;
    // Generous: a loaded machine must not turn a healthy answer into a fallback.
    let client = client(&pricing.url(), &clock, Duration::from_secs(5));

    // Signals in; one bucket later the hot cell has moved half-way to the cap.
    let report = client.send_signals(&rush_hour()).await.unwrap();
    assert_eq!((report.applied, report.dropped), (56, 0));
    clock.advance(BUCKET);
    let hot_now = client.multiplier(hot()).await;
    assert_eq!((hot_now.multiplier, hot_now.fallback), (2.0, false));
    let cold_now = client.multiplier(cold()).await;
    assert_eq!((cold_now.multiplier, cold_now.fallback), (1.0, false));
    assert_ne!(hot_now.cell, cold_now.cell);

    let from_hot = client.quote(hot(), cold()).await.unwrap();
    let from_cold = client.quote(cold(), hot()).await.unwrap();
    assert_eq!((from_hot.multiplier, from_hot.fallback), (2.0, false));
    assert_eq!((from_cold.multiplier, from_cold.fallback), (1.0, false));
    assert_eq!(from_hot.cell, hot_now.cell);
    // Same distance both ways: the surge is the whole difference.
    assert_eq!(from_hot.distance_m, from_cold.distance_m);
    assert_eq!(
        from_hot.fare_cents,
        (from_cold.fare_cents as f64 * 2.0).round() as u64
    );
    assert_eq!(client.breaker().state(), BreakerState::Closed);

    // The instance dies: every quote is the fallback, and the breaker opens.
    pricing.kill().await;
    let mut calls = 0;
    while client.breaker().state() != BreakerState::Open {
        calls += 1;
        assert!(
            calls <= 40,
            "the breaker never opened: {:?}",
            client.breaker().stats()
        );
        clock.advance(Duration::from_millis(600)); // past the health-snapshot interval
        let quote = client.quote(hot(), cold()).await.unwrap();
        assert_eq!((quote.multiplier, quote.fallback), (1.0, true));
        assert_eq!(
            quote.fare_cents, from_cold.fare_cents,
            "flat fare, local tariff"
        );
        assert_eq!(quote.cell, hot_now.cell, "the cell is named locally too");
    }
    // The call that found the breaker tripping was itself short-circuited.
    let short = |s: &PricingClientStats| s.fallback_causes.get("short_circuited").copied();
    let open = client.stats();
    assert!(open.fallbacks >= 4, "{open:?}");
    assert_eq!(short(&open), Some(1), "{open:?}");

    // Back on the same address, but the breaker is open: short-circuited, no
    // network, still the fallback.
    pricing.restart().await;
    let quote = client.quote(hot(), cold()).await.unwrap();
    assert_eq!((quote.multiplier, quote.fallback), (1.0, true));
    let multiplier = client.multiplier(hot()).await;
    assert!(multiplier.fallback);
    let stats = client.stats();
    assert_eq!(short(&stats), Some(3), "{stats:?}");
    assert_eq!(stats.fallbacks, open.fallbacks + 2);
    // The fallback is visible to operators too.
    let exposition = casebook_kit::telemetry::metrics().render_prometheus();
    assert!(
        exposition
            .lines()
            .any(|l| l
                .starts_with(r#"casebook_uber_pricing_fallback_total{cause="short_circuited"}"#)),
        "{exposition}"
    );
    // Signals have no fallback: they fail, naming why.
    match client.send_signals(&rush_hour()).await {
        Err(PricingError::Unavailable { cause, .. }) => assert_eq!(cause, "short_circuited"),
        other => panic!("expected Unavailable, got {other:?}"),
    }

    // After the sleep window the next call is the trial; it succeeds and closes
    // the breaker. The new instance starts flat.
    clock.advance(Duration::from_secs(5));
    let trial = client.quote(hot(), cold()).await.unwrap();
    assert_eq!((trial.multiplier, trial.fallback), (1.0, false));
    assert_eq!(client.breaker().state(), BreakerState::Closed);

    // Real multipliers again once signals come in.
    client.send_signals(&rush_hour()).await.unwrap();
    clock.advance(BUCKET);
    let again = client.quote(hot(), cold()).await.unwrap();
    assert_eq!((again.multiplier, again.fallback), (2.0, false));
    assert_eq!(again.fare_cents, from_hot.fare_cents);
    let end = client.stats();
    assert_eq!(
        end.fallbacks, stats.fallbacks,
        "no fallback since the trial"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_request_is_refused_without_a_fallback_or_harm_to_the_breaker() {
    let clock = ManualClock::new();
    let pricing = Pricing::start(PricingConfig::default(), &clock).await;
    let client = client(&pricing.url(), &clock, Duration::from_secs(5));
    for _ in 0..6 {
        clock.advance(Duration::from_millis(600));
        match client.quote(at(40.7, -74.0), at(34.05, -118.24)).await {
            Err(PricingError::Rejected { status, field, .. }) => {
                assert_eq!(status, StatusCode::BAD_REQUEST);
                assert_eq!(field.as_deref(), Some("dropoff"));
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
    }
    assert_eq!(client.breaker().state(), BreakerState::Closed);
    let stats = client.stats();
    assert_eq!((stats.rejected, stats.fallbacks), (6, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_never_answers_times_out_into_the_fallback() {
    // Accepts connections and reads nothing, answers nothing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let clock = ManualClock::new();
    let client = client(
        &format!("http://{addr}"),
        &clock,
        Duration::from_millis(200),
    );
    let quote = client.quote(hot(), cold()).await.unwrap();
    assert_eq!((quote.multiplier, quote.fallback), (1.0, true));
    let stats = client.stats();
    assert_eq!(stats.fallback_causes.get("timeout"), Some(&1), "{stats:?}");
    assert_eq!(client.breaker().stats().timeouts, 1);
    holder.abort();
}

async fn send(
    http: &HttpClient,
    method: Method,
    url: &str,
    body: &str,
) -> (StatusCode, serde_json::Value) {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let response = http
        .send(method, url, headers, body.to_owned().into())
        .await
        .unwrap();
    let json = serde_json::from_slice(&response.body).unwrap_or(serde_json::Value::Null);
    (response.status, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_precise_errors() {
    let clock = ManualClock::new();
    let config = PricingConfig {
        max_batch: 5,
        ..PricingConfig::default()
    };
    let pricing = Pricing::start(config, &clock).await;
    let http = HttpClient::new(Duration::from_secs(10));
    let base = pricing.url();
    let quote = format!("{base}/v1/quote");
    let signals = format!("{base}/v1/signals");

    let cases: Vec<(Method, String, &str, StatusCode, Option<&str>)> = vec![
        (
            Method::POST,
            quote.clone(),
            r#"{"pickup":{"lat":91,"lon":0},"dropoff":{"lat":0,"lon":0}}"#,
            StatusCode::BAD_REQUEST,
            Some("pickup.lat"),
        ),
        (
            Method::POST,
            quote.clone(),
            r#"{"pickup":{"lat":0,"lon":0},"dropoff":{"lat":0,"lon":-180.5}}"#,
            StatusCode::BAD_REQUEST,
            Some("dropoff.lon"),
        ),
        (
            Method::POST,
            quote.clone(),
            r#"{"pickup":{"lat":"north","lon":0},"dropoff":{"lat":0,"lon":0}}"#,
            StatusCode::BAD_REQUEST,
            Some("pickup.lat"),
        ),
        (
            Method::POST,
            quote.clone(),
            r#"{"pickup":{"lat":0,"lon":0}}"#,
            StatusCode::BAD_REQUEST,
            Some("dropoff"),
        ),
        (
            Method::POST,
            quote.clone(),
            r#"{"pickup":{"lat":40,"lon":-74},"dropoff":{"lat":34,"lon":-118}}"#,
            StatusCode::BAD_REQUEST,
            Some("dropoff"),
        ),
        (
            Method::GET,
            format!("{base}/v1/multiplier?lat=40"),
            "",
            StatusCode::BAD_REQUEST,
            Some("lon"),
        ),
        (
            Method::GET,
            format!("{base}/v1/multiplier?lat=abc&lon=1"),
            "",
            StatusCode::BAD_REQUEST,
            Some("lat"),
        ),
        (
            Method::GET,
            format!("{base}/v1/multiplier?lat=NaN&lon=1"),
            "",
            StatusCode::BAD_REQUEST,
            Some("lat"),
        ),
        (
            Method::GET,
            format!("{base}/v1/multiplier?lat=1&lon=inf"),
            "",
            StatusCode::BAD_REQUEST,
            Some("lon"),
        ),
        (
            Method::GET,
            format!("{base}/v1/multiplier?lat=1&lon=2&radius=3"),
            "",
            StatusCode::BAD_REQUEST,
            Some("radius"),
        ),
        (
            Method::POST,
            signals.clone(),
            r#"{"signals":[{"kind":"demand","lat":40.758,"lon":-73.9855},{"kind":"supply","lat":1,"lon":1}]}"#,
            StatusCode::BAD_REQUEST,
            Some("signals[1].driver"),
        ),
        (
            Method::POST,
            signals.clone(),
            r#"{"signals":[{"kind":"surge","lat":1,"lon":1}]}"#,
            StatusCode::BAD_REQUEST,
            Some("signals[0].kind"),
        ),
        (
            Method::POST,
            signals.clone(),
            r#"{"signals":[{"kind":"demand","lat":1,"lon":1,"rider":3}]}"#,
            StatusCode::BAD_REQUEST,
            Some("signals[0].rider"),
        ),
        (
            Method::POST,
            signals.clone(),
            r#"{"signals":[{"kind":"demand","lat":1,"lon":1},{"kind":"demand","lat":1,"lon":1},{"kind":"demand","lat":1,"lon":1},{"kind":"demand","lat":1,"lon":1},{"kind":"demand","lat":1,"lon":1},{"kind":"demand","lat":1,"lon":1}]}"#,
            StatusCode::PAYLOAD_TOO_LARGE,
            Some("signals"),
        ),
    ];
    for (method, url, body, status, field) in cases {
        let (got, json) = send(&http, method, &url, body).await;
        assert_eq!(got, status, "{url} {body}: {json}");
        assert_eq!(json["field"].as_str(), field, "{url} {body}: {json}");
        assert!(
            json["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{json}"
        );
    }

    // A batch with a bad signal applies none of it.
    let (status, json) = send(
        &http,
        Method::GET,
        &format!("{base}/v1/multiplier?lat=40.758&lon=-73.9855"),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json["demand"], 0, "{json}");

    // Not JSON: 415.
    let response = http
        .send(
            Method::POST,
            &quote,
            HeaderMap::new(),
            "pickup=1".to_owned().into(),
        )
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

/// Discovery as a test controls it: the instances registered right now.
struct Registered(parking_lot::Mutex<Vec<(SocketAddr, casebook_kit::topology::Placement)>>);

impl casebook_kit::resolve::InstanceSource for Registered {
    fn nearest(
        &self,
        _service: &str,
        _near: &casebook_kit::topology::Placement,
    ) -> casebook_kit::runtime::BoxFuture<
        '_,
        Result<
            Vec<(SocketAddr, casebook_kit::topology::Placement)>,
            casebook_kit::discovery::DiscoveryError,
        >,
    > {
        let registered = self.0.lock().clone();
        Box::pin(async move { Ok(registered) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_finds_pricing_through_discovery_and_falls_back_while_none_is_registered() {
    use casebook_kit::resolve::Resolver;
    use casebook_uber::pricing::PricingTarget;

    let clock = ManualClock::new();
    let pricing = Pricing::start(PricingConfig::default(), &clock).await;
    let registered = Arc::new(Registered(parking_lot::Mutex::new(Vec::new())));
    let resolver = Arc::new(Resolver::detached(clock.shared()));
    resolver.attach(registered.clone());
    let near = Topology::uniform(&["r1"], 1).spread(0);
    let mut config = PricingClientConfig::default();
    config.resilience.timeout.default = Duration::from_secs(5);
    let client = PricingClient::to_target(
        &PricingTarget::Discovered {
            resolver,
            near: near.clone(),
        },
        config,
        BreakerRegistry::new(clock.shared()),
    )
    .unwrap();

    // Nothing registered yet: the honest fallback, counted as unresolved.
    let before = client.multiplier(cold()).await;
    assert!(before.fallback, "{before:?}");
    assert_eq!(client.stats().fallback_causes.get("unresolved"), Some(&1));

    // Registered: the service itself answers, found through discovery.
    *registered.0.lock() = vec![(pricing.addr, near)];
    let after = client.multiplier(cold()).await;
    assert_eq!((after.multiplier, after.fallback), (1.0, false));
    assert_eq!(client.stats().answered, 1);
}
