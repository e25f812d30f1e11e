//! The resilience stack per route, end to end: retries only for idempotent
//! requests (upstream hits counted), an upstream's JSON 5xx passed through, a
//! killed dependency → its breaker opens (seen in `/admin/routes`) and the route's
//! fallback answers GETs while writes get 503 `breaker_open`, then a restarted
//! dependency closes it; timeouts (504), a full bulkhead and no instance (503).
//!
//! Breaker time (the health snapshot, the sleep window) is the platform's
//! `ManualClock`; nothing asserts on how long anything took.

mod gateway_support;

use std::time::Duration;

use casebook_edge::gateway::{AuthMode, FallbackConfig, GatewayConfig, RouteConfig};
use casebook_kit::resilience::breaker::BreakerConfig;
use casebook_testkit::eventually;
use gateway_support::{DEADLINE, Harness, assert_error, json_body, topology};
use http::{Method, StatusCode};
use serde_json::json;

fn route(name: &str, service: &str) -> RouteConfig {
    RouteConfig {
        auth: AuthMode::None,
        ..RouteConfig::to_service(name, &format!("/api/{name}"), service)
    }
}

fn config() -> GatewayConfig {
    GatewayConfig {
        routes: vec![
            RouteConfig {
                retries: 2,
                ..route("orders", "orders")
            },
            RouteConfig {
                retries: 1,
                breaker: BreakerConfig {
                    request_volume_threshold: 4,
                    ..BreakerConfig::default()
                },
                fallback: Some(FallbackConfig {
                    status: 200,
                    body: json!({"titles": [], "degraded": true}),
                }),
                ..route("catalog", "catalog")
            },
            RouteConfig {
                timeout: Duration::from_millis(100),
                ..route("slow", "orders")
            },
            RouteConfig {
                timeout: Duration::from_secs(300),
                max_concurrent: 1,
                ..route("narrow", "orders")
            },
            route("ghost", "ghost"),
        ],
        ..GatewayConfig::default()
    }
}

#[tokio::test]
async fn only_idempotent_requests_are_retried() {
    let h = Harness::start(config(), &["orders", "catalog"]).await;
    let hits = |path: &str| h.hits("orders").of(path);

    let get = h.get("/api/orders/a/fail", &[]).await;
    assert_eq!(get.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        json_body(&get)["error"],
        "boom",
        "the upstream's JSON 5xx passes through"
    );
    assert_eq!(hits("/a/fail"), 3, "GET: the first attempt and 2 retries");

    let post = h.call(Method::POST, "/api/orders/b/fail", &[], "{}").await;
    assert_eq!(post.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(hits("/b/fail"), 1, "POST is never retried");

    let keyed = h
        .call(
            Method::POST,
            "/api/orders/c/fail",
            &[("idempotency-key", "k-1")],
            "{}",
        )
        .await;
    assert_eq!(keyed.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(hits("/c/fail"), 3, "POST with an Idempotency-Key may be");

    h.call(Method::PUT, "/api/orders/d/fail", &[], "{}").await;
    assert_eq!(hits("/d/fail"), 3);
    h.call(Method::PATCH, "/api/orders/e/fail", &[], "{}").await;
    assert_eq!(hits("/e/fail"), 1, "PATCH is not idempotent");

    let text = h.get("/api/orders/f/fail-text", &[]).await;
    assert_error(&text, StatusCode::BAD_GATEWAY, "upstream_error");

    let ok = h.get("/api/orders/g", &[]).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(hits("/g"), 1, "a success is not repeated");
}

#[tokio::test]
async fn a_killed_dependency_opens_its_breaker_and_the_fallback_answers() {
    let h = Harness::start(config(), &["orders", "catalog"]).await;
    let live = h.get("/api/catalog/titles", &[]).await;
    assert_eq!(live.status, StatusCode::OK);
    assert!(!live.headers.contains_key("x-gateway-fallback"));

    assert!(h.platform.kill(&h.upstream_ids["catalog"]).await);
    for _ in 0..4 {
        let degraded = h.get("/api/catalog/titles", &[]).await;
        assert_eq!(degraded.status, StatusCode::OK);
        assert_eq!(degraded.headers["x-gateway-fallback"], "upstream_error");
        assert_eq!(
            json_body(&degraded),
            json!({"titles": [], "degraded": true})
        );
    }
    // The breaker retakes its health snapshot after 500 ms of its clock, and trips.
    h.clock.advance(Duration::from_millis(500));
    let short = h.get("/api/catalog/titles", &[]).await;
    assert_eq!(short.headers["x-gateway-fallback"], "breaker_open");
    let write = h.call(Method::POST, "/api/catalog/titles", &[], "{}").await;
    assert_error(&write, StatusCode::SERVICE_UNAVAILABLE, "breaker_open");
    assert_eq!(write.headers["retry-after"], "1");

    let route = h.admin_route("catalog").await;
    assert_eq!(route["breaker"]["state"], "open", "{route}");
    assert_eq!(route["has_fallback"], true);
    assert_eq!(route["fallbacks"], 5, "{route}");
    assert_eq!(route["errors"], 6, "{route}");
    assert_eq!(route["upstream_calls"], 7, "{route}");
    assert_eq!(route["error_percent"], 85, "{route}");
    assert!(
        route["breaker"]["short_circuited"].as_u64().unwrap() >= 2,
        "{route}"
    );
    assert_eq!(h.admin_route("orders").await["breaker"]["state"], "closed");

    // The dependency comes back; after the sleep window one trial closes the breaker.
    let (_, address) = h.start_instance("catalog", 0).await;
    h.discovery
        .set("catalog", vec![(address, topology().spread(0))]);
    h.clock.advance(Duration::from_secs(5));
    let back = h.get("/api/catalog/titles", &[]).await;
    assert_eq!(back.status, StatusCode::OK);
    assert!(
        !back.headers.contains_key("x-gateway-fallback"),
        "{:?}",
        back.headers
    );
    assert_eq!(h.admin_route("catalog").await["breaker"]["state"], "closed");
}

#[tokio::test]
async fn timeouts_a_full_bulkhead_and_missing_instances_are_static_errors() {
    let h = Harness::start(config(), &["orders", "catalog"]).await;
    let slow = h.get("/api/slow/hang", &[]).await;
    assert_error(&slow, StatusCode::GATEWAY_TIMEOUT, "upstream_timeout");

    let ghost = h.get("/api/ghost/x", &[]).await;
    assert_error(&ghost, StatusCode::SERVICE_UNAVAILABLE, "no_instance");

    // One request holds the narrow route's only slot; the next is refused.
    let gateway = h.gateway;
    let holder = tokio::spawn(async move {
        let client = casebook_kit::http_client::HttpClient::new(Duration::from_secs(3600));
        let _ = client
            .send(
                Method::GET,
                &format!("http://{gateway}/api/narrow/hang"),
                http::HeaderMap::new(),
                bytes::Bytes::new(),
            )
            .await;
    });
    eventually(
        "the held request occupies the bulkhead",
        DEADLINE,
        || async { h.admin_route("narrow").await["bulkhead"]["in_use"] == 1 },
    )
    .await;
    let refused = h.get("/api/narrow/other", &[]).await;
    assert_error(&refused, StatusCode::SERVICE_UNAVAILABLE, "bulkhead_full");
    assert_eq!(h.admin_route("narrow").await["bulkhead"]["max"], 1);
    holder.abort();
}
