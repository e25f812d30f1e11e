use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::routing::get;

use super::*;
use crate::clock::{Clock, ManualClock, SystemClock};
use crate::resilience::breaker::BreakerState;
use crate::resilience::{FailureKind, ManualSleeper, Priority, set_priority};

/// A loopback server: `/flaky` answers 503 + Retry-After: 1 on odd calls and 200
/// on even ones; `/missing` answers 404; `/echo` returns the priority and deadline headers.
async fn server() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let app = Router::new()
        .route(
            "/flaky",
            get(move || {
                let n = h.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n.is_multiple_of(2) {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            [(header::RETRY_AFTER, "1")],
                            "busy",
                        )
                            .into_response_parts()
                    } else {
                        (
                            StatusCode::OK,
                            [(header::RETRY_AFTER, "0")],
                            "{\"ok\":true}",
                        )
                            .into_response_parts()
                    }
                }
            }),
        )
        .route("/missing", get(|| async { (StatusCode::NOT_FOUND, "no") }))
        .route(
            "/echo",
            get(|headers: http::HeaderMap| async move {
                let p = headers
                    .get(PRIORITY_HEADER)
                    .map(|v| v.to_str().unwrap().to_owned());
                let d = headers
                    .get(DEADLINE_HEADER)
                    .map(|v| v.to_str().unwrap().to_owned());
                axum::Json(serde_json::json!({ "priority": p, "deadline": d }))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), hits)
}

trait IntoParts {
    fn into_response_parts(self) -> axum::response::Response;
}
impl<T: axum::response::IntoResponse> IntoParts for T {
    fn into_response_parts(self) -> axum::response::Response {
        self.into_response()
    }
}

#[tokio::test]
async fn a_503_is_retried_after_its_retry_after_and_a_404_is_a_breaker_success() {
    let (base, hits) = server().await;
    let http = HttpService::new(HttpClient::default(), SystemClock::shared()).with_base_url(&base);
    // The stack's layers by hand, so the retry can sleep on a manual sleeper while
    // the timeout keeps real time (loopback answers long before it).
    let sleeper = ManualSleeper::new(ManualClock::new());
    let breaker =
        CircuitBreaker::new("flaky", BreakerConfig::default(), SystemClock::shared()).unwrap();
    let budget = Arc::new(RetryBudget::new(RetryConfig::default()).unwrap());
    let svc = tower::ServiceBuilder::new()
        .layer(RetryLayer::new(budget).with_sleeper(sleeper.clone()))
        .layer(CircuitBreakerLayer::new(breaker.clone()))
        .layer(TimeoutLayer::new(Duration::from_secs(5)))
        .layer(BulkheadLayer::new(10, 0).unwrap())
        .service(http);
    let mut request = http::Request::get("/flaky").body(Bytes::new()).unwrap();
    mark_idempotent(&mut request);
    let response = svc.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(hits.load(Ordering::SeqCst), 2, "one 503, then one retry");
    assert_eq!(
        sleeper.slept(),
        [Duration::from_secs(1)],
        "the 503's Retry-After"
    );

    let request = http::Request::get("/missing").body(Bytes::new()).unwrap();
    let response = svc.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let stats = breaker.stats();
    assert_eq!(
        (stats.successes, stats.failures),
        (2, 1),
        "the 503 failed; the 200 and the 404 succeeded"
    );
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test]
async fn priority_and_remaining_deadline_travel_and_a_passed_deadline_is_not_sent() {
    let (base, _) = server().await;
    let clock = ManualClock::new();
    let http = HttpService::new(HttpClient::default(), clock.shared()).with_base_url(&base);
    let mut request = http::Request::get("/echo").body(Bytes::new()).unwrap();
    set_priority(&mut request, Priority::Critical);
    crate::resilience::set_deadline(
        &mut request,
        crate::resilience::Deadline(clock.now() + Duration::from_millis(750)),
    );
    let response = http.clone().oneshot(request).await.unwrap();
    let echo: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
    assert_eq!(echo["priority"], "critical");
    assert_eq!(echo["deadline"], "750");

    // Through the whole stack, a request without a deadline still tells the callee
    // its attempt's budget: the default 1 s timeout.
    let client = ResilientClient::with_builder(
        StackBuilder::new("echo", ResilienceConfig::default())
            .registry(BreakerRegistry::new(clock.shared())),
        Some(&base),
    )
    .unwrap();
    let echo: serde_json::Value = client.get_json("/echo").await.unwrap();
    assert_eq!(echo["deadline"], "1000");
    assert_eq!(echo["priority"], "normal");

    let mut late = http::Request::get("/echo").body(Bytes::new()).unwrap();
    crate::resilience::set_deadline(&mut late, crate::resilience::Deadline(clock.now()));
    let err = http.oneshot(late).await.unwrap_err();
    assert_eq!(FailureKind::of(&err), FailureKind::DeadlineExceeded);
}

#[tokio::test]
async fn the_stack_trips_on_transport_errors_and_then_short_circuits_without_calling() {
    // Nothing listens on this port: every call is a transport error.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let clock = ManualClock::new();
    let registry = BreakerRegistry::new(clock.shared());
    let client = ResilientClient::with_builder(
        StackBuilder::new("dead", ResilienceConfig::default()).registry(registry.clone()),
        Some(&dead),
    )
    .unwrap();
    for _ in 0..20 {
        let err = client
            .send(http::Request::get("/x").body(Bytes::new()).unwrap())
            .await
            .unwrap_err();
        assert_eq!(FailureKind::of(&err), FailureKind::Other);
    }
    clock.advance(Duration::from_millis(500));
    let err = client
        .get_json::<serde_json::Value>("/x")
        .await
        .unwrap_err();
    assert_eq!(FailureKind::of(&err), FailureKind::ShortCircuited);
    let snapshot = registry.snapshot();
    assert_eq!(snapshot.len(), 1);
    assert_eq!(snapshot[0].state, BreakerState::Open);
    assert_eq!(snapshot[0].failures, 20);
}

#[test]
fn config_reads_from_json_and_bad_values_name_their_field() {
    let cfg: ResilienceConfig = serde_json::from_str(
        r#"{"timeout": {"default": "2s", "routes": [{"prefix": "/search", "timeout": "300ms"}]},
            "breaker": {"error_threshold_percent": 25}, "bulkhead": {"max_concurrent": 4}}"#,
    )
    .unwrap();
    assert_eq!(
        cfg.timeout.policy().unwrap().for_path("/search/q"),
        Duration::from_millis(300)
    );
    assert_eq!(cfg.timeout.longest(), Duration::from_secs(2));
    assert_eq!(cfg.breaker.error_threshold_percent, 25);
    assert!(serde_json::from_str::<ResilienceConfig>(r#"{"breakr": {}}"#).is_err());
    let bad = ResilienceConfig {
        bulkhead: BulkheadConfig {
            max_concurrent: 0,
            max_queue: 0,
        },
        ..Default::default()
    };
    let err = StackBuilder::new("bad", bad)
        .registry(BreakerRegistry::new(SystemClock::shared()))
        .build(tower::service_fn(|_: http::Request<Bytes>| async {
            Ok::<_, BoxError>(())
        }))
        .unwrap_err();
    assert_eq!(err.field, "bulkhead.max_concurrent");
}

#[tokio::test]
async fn a_bulkhead_given_to_the_builder_guards_the_stack_and_shows_its_use() {
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let callee = tower::service_fn(move |_: http::Request<()>| {
        let mut release = release_rx.clone();
        async move {
            let _ = release.wait_for(|r| *r).await;
            Ok::<_, BoxError>(())
        }
    });
    let bulkhead = Bulkhead::new(BulkheadConfig {
        max_concurrent: 1,
        max_queue: 0,
    })
    .unwrap();
    let builder = StackBuilder::new("guarded", ResilienceConfig::default())
        .registry(BreakerRegistry::new(ManualClock::new().shared()))
        .with_bulkhead(bulkhead.clone());
    let (svc, _) = builder
        .build_with_policy(callee, Duration::from_secs(3600))
        .unwrap();
    let mut first = svc.clone().oneshot(http::Request::new(()));
    assert!(futures::poll!(&mut first).is_pending());
    assert_eq!(
        (bulkhead.in_flight(), bulkhead.config().max_concurrent),
        (1, 1)
    );
    let err = svc
        .clone()
        .oneshot(http::Request::new(()))
        .await
        .unwrap_err();
    assert_eq!(FailureKind::of(&err), FailureKind::BulkheadFull);
    release_tx.send(true).unwrap();
    first.await.unwrap();
    assert_eq!(bulkhead.in_flight(), 0);
}
