//! Limits end to end: the per-client rate limit (429 `rate_limited` with
//! `Retry-After`, one budget per JWT subject, API key or address, refilled on the
//! injected clock, counted in `/admin/routes`), and the body limit (413
//! `body_too_large`, by `Content-Length` or counted while a chunked body is read).

mod gateway_support;

use std::time::Duration;

use casebook_edge::gateway::{AuthMode, GatewayConfig, RouteConfig};
use casebook_kit::resilience::rate_limit::RateLimitConfig;
use gateway_support::{Harness, assert_error, json_body, raw};
use http::{Method, StatusCode};

fn config() -> GatewayConfig {
    GatewayConfig {
        body_limit: 1024,
        rate_limit: RateLimitConfig {
            per_second: 2,
            burst: 3,
            prune_every: 1000,
        },
        routes: vec![
            RouteConfig::to_service("users", "/api/users", "users"),
            RouteConfig {
                auth: AuthMode::None,
                ..RouteConfig::to_service("public", "/public", "users")
            },
        ],
        ..GatewayConfig::default()
    }
}

#[tokio::test]
async fn each_client_gets_its_burst_then_429_with_retry_after_until_it_refills() {
    let h = Harness::start(config(), &["users"]).await;
    let alice = h.bearer("alice");
    let bob = h.bearer("bob");
    for _ in 0..3 {
        let ok = h.get("/api/users/x", &[(alice.0, &alice.1)]).await;
        assert_eq!(ok.status, StatusCode::OK);
    }
    let limited = h.get("/api/users/x", &[(alice.0, &alice.1)]).await;
    assert_error(&limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert_eq!(limited.headers["retry-after"], "1");
    assert_eq!(
        h.hits("users").of("/x"),
        3,
        "a refused request never reaches the upstream"
    );

    // Another user has a budget of their own.
    assert_eq!(
        h.get("/api/users/x", &[(bob.0, &bob.1)]).await.status,
        StatusCode::OK
    );

    // At 2/s, one request's worth comes back after 500 ms of the injected clock.
    h.clock.advance(Duration::from_millis(500));
    assert_eq!(
        h.get("/api/users/x", &[(alice.0, &alice.1)]).await.status,
        StatusCode::OK
    );
    let again = h.get("/api/users/x", &[(alice.0, &alice.1)]).await;
    assert_error(&again, StatusCode::TOO_MANY_REQUESTS, "rate_limited");

    let route = h.admin_route("users").await;
    assert_eq!(route["rate_limited"], 2, "{route}");
    assert_eq!(route["upstream_calls"], 5, "{route}");
    assert_eq!(route["status_4xx"], 2, "{route}");
}

#[tokio::test]
async fn anonymous_callers_are_limited_by_address() {
    let h = Harness::start(config(), &["users"]).await;
    for _ in 0..3 {
        assert_eq!(h.get("/public/p", &[]).await.status, StatusCode::OK);
    }
    // A forged x-forwarded-for does not buy a new budget.
    let forged = h
        .get("/public/p", &[("x-forwarded-for", "198.51.100.7")])
        .await;
    assert_error(&forged, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_whether_declared_or_counted() {
    let h = Harness::start(config(), &["users"]).await;
    let (name, value) = h.bearer("alice");
    let fits = "a".repeat(1024);
    let ok = h
        .call(Method::POST, "/api/users/upload", &[(name, &value)], &fits)
        .await;
    assert_eq!(json_body(&ok)["body"].as_str().unwrap().len(), 1024);

    let declared = h
        .call(
            Method::POST,
            "/api/users/upload",
            &[(name, &value)],
            &"a".repeat(1025),
        )
        .await;
    assert_error(&declared, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");

    // Chunked: no length up front, so the gateway counts while it reads.
    let mut request = format!(
        "POST /api/users/upload HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\
         {name}: {value}\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..3 {
        request.extend_from_slice(format!("200\r\n{}\r\n", "b".repeat(0x200)).as_bytes());
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let (status, _, body) = raw(h.gateway, &request).await;
    assert_eq!(status, 413);
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["code"], "body_too_large");
    assert_eq!(
        h.hits("users").of("/upload"),
        1,
        "only the body that fits went upstream"
    );
}
