//! End to end through the gateway: routing by prefix (stripped or kept, to a
//! discovered service or a fixed URL), zone-aware resolution, 404/400 as static
//! JSON, trace and forwarding headers, hop-by-hop headers removed both ways,
//! configured response headers, bodies passed through.

mod gateway_support;

use std::collections::BTreeMap;

use casebook_edge::gateway::{AuthMode, GatewayConfig, RouteConfig};
use gateway_support::{Harness, assert_error, header, json_body, raw, topology};
use http::{Method, StatusCode};

fn open(name: &str, prefix: &str, service: &str) -> RouteConfig {
    RouteConfig {
        auth: AuthMode::None,
        ..RouteConfig::to_service(name, prefix, service)
    }
}

fn config() -> GatewayConfig {
    GatewayConfig {
        response_headers: BTreeMap::from([("x-content-type-options".into(), "nosniff".into())]),
        routes: vec![
            open("users", "/api/users", "users"),
            RouteConfig {
                strip_prefix: false,
                ..open("catalog", "/api/catalog", "catalog")
            },
            open("root", "/", "catalog"),
        ],
        ..GatewayConfig::default()
    }
}

#[tokio::test]
async fn the_longest_prefix_routes_and_the_prefix_is_cut_unless_kept() {
    let h = Harness::start(config(), &["users", "catalog"]).await;
    let users = json_body(&h.get("/api/users/7/profile?full=1", &[]).await);
    assert_eq!(users["uri"], "/7/profile?full=1");
    assert_eq!(users["method"], "GET");
    assert_eq!(h.hits("users").of("/7/profile"), 1);

    let root = json_body(&h.get("/api/users", &[]).await);
    assert_eq!(root["uri"], "/", "the prefix itself is the upstream's root");

    let kept = json_body(&h.get("/api/catalog/titles", &[]).await);
    assert_eq!(kept["uri"], "/api/catalog/titles");
    assert_eq!(h.hits("catalog").of("/api/catalog/titles"), 1);

    // Not a segment boundary: `/api/usersx` falls to the catch-all route.
    let other = json_body(&h.get("/api/usersx", &[]).await);
    assert_eq!(other["uri"], "/api/usersx");
    assert_eq!(h.hits("catalog").of("/api/usersx"), 1);
    assert_eq!(
        h.hits("users").of("/api/usersx") + h.hits("users").of("x"),
        0
    );

    let post = h
        .call(
            Method::POST,
            "/api/users/",
            &[("content-type", "text/plain")],
            "hello",
        )
        .await;
    let echoed = json_body(&post);
    assert_eq!(
        (echoed["method"].as_str(), echoed["body"].as_str()),
        (Some("POST"), Some("hello"))
    );
    assert_eq!(echoed["headers"]["content-length"], "5");
}

#[tokio::test]
async fn unknown_routes_and_dot_segments_get_static_json_errors() {
    let h = Harness::start(
        GatewayConfig {
            routes: vec![open("users", "/api/users", "users")],
            ..GatewayConfig::default()
        },
        &["users"],
    )
    .await;
    let missing = h.get("/api/orders/1", &[]).await;
    assert_error(&missing, StatusCode::NOT_FOUND, "no_route");
    let (status, _, body) = raw(
        h.gateway,
        b"GET /api/users/../../admin HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400);
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["code"], "bad_request");
    let encoded = h.get("/api/users/%2e%2e/admin", &[]).await;
    assert_error(&encoded, StatusCode::BAD_REQUEST, "bad_request");
    assert_eq!(
        h.hits("users").of("/admin") + h.hits("users").of("/../admin"),
        0
    );
    let admin = h.admin().await;
    // The 404 and both 400s: no route took them.
    assert_eq!(admin["unrouted"]["requests"], 3, "{admin}");
    assert_eq!(admin["unrouted"]["status_4xx"], 3, "{admin}");
    assert_eq!(admin["routes"][0]["requests"], 0, "{admin}");
}

#[tokio::test]
async fn a_url_route_joins_its_base_path() {
    let h = Harness::start_with(&["legacy"], |addresses| GatewayConfig {
        routes: vec![RouteConfig {
            auth: AuthMode::None,
            ..RouteConfig::to_url(
                "legacy",
                "/old",
                &format!("http://{}/v1", addresses["legacy"]),
            )
        }],
        ..GatewayConfig::default()
    })
    .await;
    let echoed = json_body(&h.get("/old/items?page=2", &[]).await);
    assert_eq!(echoed["uri"], "/v1/items?page=2");
    assert_eq!(h.hits("legacy").of("/v1/items"), 1);
}

#[tokio::test]
async fn the_instances_of_the_gateways_own_zone_are_called() {
    let h = Harness::start(config(), &["users"]).await;
    let (_, same_zone) = h.start_instance("users", 0).await;
    let (_, other_zone) = h.start_instance("users", 1).await;
    h.discovery.set(
        "users",
        vec![
            (other_zone, topology().spread(1)),
            (same_zone, topology().spread(0)),
        ],
    );
    h.clock.advance(casebook_kit::resolve::DEFAULT_TTL);
    let mut instances = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let echoed = json_body(&h.get("/api/users/who", &[]).await);
        instances.insert(echoed["instance"].as_str().unwrap().to_owned());
    }
    assert_eq!(instances.len(), 1, "only the gateway's zone: {instances:?}");
    assert!(
        instances.iter().next().unwrap().contains("r1-a"),
        "{instances:?}"
    );
}

#[tokio::test]
async fn trace_and_forwarding_headers_travel_and_forged_identities_do_not() {
    let h = Harness::start(config(), &["users"]).await;
    let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let response = h
        .get(
            "/api/users/me",
            &[
                ("traceparent", parent),
                ("x-request-id", "req-42"),
                ("x-user-id", "admin"),
                ("x-client-id", "root"),
                ("x-forwarded-for", "203.0.113.9"),
            ],
        )
        .await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.headers["x-request-id"], "req-42");
    assert_eq!(response.headers["x-content-type-options"], "nosniff");
    let seen = &json_body(&response)["headers"];
    assert_eq!(seen["x-request-id"], "req-42");
    let upstream_parent = seen["traceparent"].as_str().unwrap();
    let (trace, span, _) = casebook_kit::telemetry::parse_traceparent(upstream_parent).unwrap();
    assert_eq!(
        trace,
        casebook_kit::telemetry::parse_traceparent(parent)
            .unwrap()
            .0,
        "same trace"
    );
    assert_ne!(upstream_parent, parent, "a child span of the gateway's hop");
    assert_ne!(span, [0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31]);
    assert_eq!(seen["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-priority"], "normal");
    assert!(seen.get("x-user-id").is_none(), "{seen}");
    assert!(seen.get("x-client-id").is_none(), "{seen}");

    // Without a caller's trace, the gateway starts one and still propagates it.
    let fresh = h.get("/api/users/me", &[]).await;
    let id = fresh.headers["x-request-id"].to_str().unwrap().to_owned();
    let seen = &json_body(&fresh)["headers"];
    assert_eq!(seen["x-request-id"], id.as_str());
    assert!(
        casebook_kit::telemetry::parse_traceparent(seen["traceparent"].as_str().unwrap()).is_some()
    );
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_both_ways() {
    let h = Harness::start(config(), &["users"]).await;
    let (status, headers, body) = raw(
        h.gateway,
        b"GET /api/users/hop HTTP/1.1\r\nhost: gw\r\nconnection: close, x-client-hop\r\n\
          x-client-hop: 1\r\nkeep-alive: timeout=5\r\nte: trailers\r\nproxy-authorization: Basic eA==\r\n\
          upgrade: h2c\r\nx-end-to-end: yes\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    let echoed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let seen = echoed["headers"].as_object().unwrap();
    for gone in [
        "x-client-hop",
        "keep-alive",
        "te",
        "proxy-authorization",
        "upgrade",
    ] {
        assert!(
            !seen.contains_key(gone),
            "{gone} reached the upstream: {seen:?}"
        );
    }
    assert_eq!(seen["x-end-to-end"], "yes");
    assert_eq!(seen["x-forwarded-host"], "gw");
    assert_eq!(header(&headers, "x-upstream-hop"), None, "{headers:?}");
    assert_eq!(header(&headers, "x-kept"), Some("1"));
}

#[tokio::test]
async fn the_route_decides_the_priority_and_the_callers_deadline_travels() {
    let h = Harness::start(
        GatewayConfig {
            routes: vec![
                RouteConfig {
                    priority: casebook_kit::resilience::Priority::Critical,
                    ..open("play", "/api/play", "users")
                },
                RouteConfig {
                    priority: casebook_kit::resilience::Priority::Low,
                    ..open("recs", "/api/recs", "users")
                },
            ],
            ..GatewayConfig::default()
        },
        &["users"],
    )
    .await;
    let play = json_body(&h.get("/api/play/start", &[("x-priority", "low")]).await);
    assert_eq!(play["headers"]["x-priority"], "critical");
    let recs = h
        .get(
            "/api/recs/x",
            &[("x-priority", "critical"), ("x-deadline-ms", "250")],
        )
        .await;
    let seen = &json_body(&recs)["headers"];
    assert_eq!(seen["x-priority"], "low", "a client cannot promote itself");
    let left: u64 = seen["x-deadline-ms"].as_str().unwrap().parse().unwrap();
    assert!((1..=250).contains(&left), "{left}");
    // Without one of its own, the attempt's timeout is the deadline.
    let plain = json_body(&h.get("/api/recs/x", &[]).await);
    let left: u64 = plain["headers"]["x-deadline-ms"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=1000).contains(&left), "{left}");

    let bad = h.get("/api/recs/x", &[("x-deadline-ms", "soon")]).await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "bad_request");
    assert!(
        json_body(&bad)["error"]
            .as_str()
            .unwrap()
            .contains("x-deadline-ms")
    );
    // The upstream's own claim of a fallback is not passed on.
    let hop = h.get("/api/play/hop", &[]).await;
    assert!(!hop.headers.contains_key("x-gateway-fallback"));
}
