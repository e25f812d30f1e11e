//! The Toxiproxy-compatible fault proxy over loopback sockets: each toxic's effect
//! observed by a client (bytes delayed, cut, limited, dropped, reset), live changes,
//! enable/disable, the API's answers and errors, and discovery steering callers
//! through a proxy while it has toxics.
//!
//! Timeouts around reads only keep a broken build from hanging the suite; the only
//! timing checks are lower bounds of delays a toxic must add.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use casebook_control::access::{AccessPolicy, Token};
use casebook_control::discovery::rewrites::{PROXIED_BY, PROXIED_FROM};
use casebook_control::discovery::{DiscoveryConfig, Registry};
use casebook_control::toxiproxy::model::{self, ProxyUpdate};
use casebook_control::toxiproxy::{Limits, ProxySpec, Toxiproxy, api};
use casebook_kit::clock::ManualClock;
use casebook_kit::discovery::Registration;
use casebook_kit::topology::{InstanceInfo, Topology};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

/// Only against hangs: far above anything a passing run needs.
const GUARD: Duration = Duration::from_secs(20);

/// An echo server: every connection's bytes back, then a half-close at its end.
async fn echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut read, mut write) = stream.into_split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
                let _ = write.shutdown().await;
            });
        }
    });
    address
}

fn setup() -> (Toxiproxy, Arc<Registry>) {
    let registry = Arc::new(
        Registry::new(
            DiscoveryConfig::default(),
            Topology::default(),
            ManualClock::new().shared(),
        )
        .unwrap(),
    );
    let toxiproxy = Toxiproxy::new(Limits::default(), registry.rewrites().clone());
    (toxiproxy, registry)
}

fn proxy(toxiproxy: &Toxiproxy, name: &str, upstream: SocketAddr) -> SocketAddr {
    let json = toxiproxy
        .create(&ProxySpec {
            name: name.into(),
            listen: "127.0.0.1:0".into(),
            upstream: upstream.to_string(),
            enabled: true,
        })
        .unwrap();
    json.listen.parse().unwrap()
}

fn toxic(toxiproxy: &Toxiproxy, proxy: &str, body: Value) {
    let spec = model::parse_toxic(body.to_string().as_bytes()).unwrap();
    toxiproxy.add_toxic(proxy, &spec).unwrap();
}

/// Writes `data`, half-closes, and reads everything until the end of stream.
async fn round_trip(address: SocketAddr, data: &[u8]) -> std::io::Result<Vec<u8>> {
    tokio::time::timeout(GUARD, async {
        let mut stream = TcpStream::connect(address).await?;
        stream.write_all(data).await?;
        stream.shutdown().await?;
        let mut back = Vec::new();
        stream.read_to_end(&mut back).await?;
        Ok(back)
    })
    .await
    .expect("no hang")
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

#[tokio::test]
async fn without_toxics_every_byte_passes_both_ways() {
    let (toxiproxy, _) = setup();
    let address = proxy(&toxiproxy, "echo", echo().await);
    let data = payload(300_000);
    assert_eq!(round_trip(address, &data).await.unwrap(), data);
}

#[tokio::test]
async fn timeout_drops_all_data_and_closes_the_connection() {
    let (toxiproxy, _) = setup();
    let address = proxy(&toxiproxy, "echo", echo().await);
    toxic(
        &toxiproxy,
        "echo",
        json!({"type": "timeout", "attributes": {"timeout": 100}}),
    );
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(b"hello").await.unwrap();
    // The connection stays open (no half-close from us): the toxic closes it.
    let mut back = Vec::new();
    tokio::time::timeout(GUARD, stream.read_to_end(&mut back))
        .await
        .expect("closed by the toxic")
        .unwrap();
    assert!(back.is_empty(), "{back:?}");
}

#[tokio::test]
async fn timeout_zero_holds_data_until_removed_and_removal_closes() {
    let (toxiproxy, _) = setup();
    let address = proxy(&toxiproxy, "echo", echo().await);
    toxic(
        &toxiproxy,
        "echo",
        json!({"type": "timeout", "name": "hold"}),
    );
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(b"hello").await.unwrap();
    // Wait until the connection is running, then remove the toxic.
    while toxiproxy.connections("echo").unwrap() == 0 {
        tokio::task::yield_now().await;
    }
    toxiproxy.remove_toxic("echo", "hold").unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(GUARD, stream.read_to_end(&mut back))
        .await
        .expect("closed on removal")
        .unwrap();
    assert!(
        back.is_empty(),
        "held data is dropped, not delivered: {back:?}"
    );
    // New connections pass again.
    assert_eq!(round_trip(address, b"again").await.unwrap(), b"again");
}

#[tokio::test]
async fn limit_data_passes_exactly_the_limit_then_closes() {
    let (toxiproxy, _) = setup();
    let address = proxy(&toxiproxy, "echo", echo().await);
    toxic(
        &toxiproxy,
        "echo",
        json!({"type": "limit_data", "attributes": {"bytes": 5}}),
    );
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(b"0123456789").await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(GUARD, stream.read_to_end(&mut back))
        .await
        .expect("closed at the limit")
        .unwrap();
    assert_eq!(back, b"01234");
}

#[tokio::test]
async fn reset_peer_resets_the_connection() {
    let (toxiproxy, _) = setup();
    let address = proxy(&toxiproxy, "echo", echo().await);
    toxic(
        &toxiproxy,
        "echo",
        json!({"type": "reset_peer", "stream": "upstream", "attributes": {"timeout": 0}}),
    );
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(b"hello").await.unwrap();
    let mut buffer = [0u8; 16];
    let read = tokio::time::timeout(GUARD, stream.read(&mut buffer))
        .await
        .expect("reset");
    let err = read.expect_err("a reset, not data or a clean end");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
}

#[tokio::test]
async fn latency_delays_the_answer_by_at_least_its_latency() {
    let (toxiproxy, _) = setup();
    let address = proxy(&toxiproxy, "echo", echo().await);
    toxic(
        &toxiproxy,
        "echo",
        json!({"type": "latency", "attributes": {"latency": 300}}),
    );
    let start = Instant::now();
    assert_eq!(round_trip(address, b"ping").await.unwrap(), b"ping");
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn bandwidth_limits_the_rate_and_keeps_the_bytes() {
    let (toxiproxy, _) = setup();
    let address = proxy(&toxiproxy, "echo", echo().await);
    // 20 KB/s: 10 000 bytes take at least 500 ms.
    toxic(
        &toxiproxy,
        "echo",
        json!({"type": "bandwidth", "attributes": {"rate": 20}}),
    );
    let data = payload(10_000);
    let start = Instant::now();
    assert_eq!(round_trip(address, &data).await.unwrap(), data);
    assert!(
        start.elapsed() >= Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn slicer_keeps_every_byte_in_order() {
    let (toxiproxy, _) = setup();
    let address = proxy(&toxiproxy, "echo", echo().await);
    toxic(
        &toxiproxy,
        "echo",
        json!({"type": "slicer", "attributes": {"average_size": 7, "size_variation": 3, "delay": 10}}),
    );
    let data = payload(5_000);
    assert_eq!(round_trip(address, &data).await.unwrap(), data);
}

#[tokio::test]
async fn slow_close_delays_the_end_of_stream() {
    let (toxiproxy, _) = setup();
    let address = proxy(&toxiproxy, "echo", echo().await);
    toxic(
        &toxiproxy,
        "echo",
        json!({"type": "slow_close", "attributes": {"delay": 300}}),
    );
    let start = Instant::now();
    assert_eq!(round_trip(address, b"bye").await.unwrap(), b"bye");
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn toxicity_zero_never_acts() {
    let (toxiproxy, _) = setup();
    let address = proxy(&toxiproxy, "echo", echo().await);
    toxic(
        &toxiproxy,
        "echo",
        json!({"type": "limit_data", "toxicity": 0.0, "attributes": {"bytes": 1}}),
    );
    assert_eq!(round_trip(address, b"whole").await.unwrap(), b"whole");
}

#[tokio::test]
async fn a_toxic_added_to_a_live_connection_applies_to_it() {
    let (toxiproxy, _) = setup();
    let address = proxy(&toxiproxy, "echo", echo().await);
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(b"abc").await.unwrap();
    let mut buffer = [0u8; 3];
    stream.read_exact(&mut buffer).await.unwrap();
    assert_eq!(&buffer, b"abc");
    toxic(
        &toxiproxy,
        "echo",
        json!({"type": "limit_data", "attributes": {"bytes": 4}}),
    );
    stream.write_all(b"0123456789").await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(GUARD, stream.read_to_end(&mut back))
        .await
        .expect("closed at the limit")
        .unwrap();
    assert_eq!(back, b"0123");
}

#[tokio::test]
async fn disabling_closes_listener_and_connections_and_enabling_listens_again() {
    let (toxiproxy, _) = setup();
    let address = proxy(&toxiproxy, "echo", echo().await);
    let mut live = TcpStream::connect(address).await.unwrap();
    live.write_all(b"x").await.unwrap();
    let mut one = [0u8; 1];
    live.read_exact(&mut one).await.unwrap();
    let disabled = toxiproxy
        .update(
            "echo",
            &ProxyUpdate {
                enabled: Some(false),
                ..ProxyUpdate::default()
            },
        )
        .unwrap();
    assert!(!disabled.enabled);
    let mut rest = Vec::new();
    tokio::time::timeout(GUARD, live.read_to_end(&mut rest))
        .await
        .expect("closed by the disable")
        .ok();
    assert!(rest.is_empty());
    assert!(
        TcpStream::connect(address).await.is_err(),
        "nothing listens"
    );
    let enabled = toxiproxy
        .update(
            "echo",
            &ProxyUpdate {
                enabled: Some(true),
                ..ProxyUpdate::default()
            },
        )
        .unwrap();
    assert_eq!(
        enabled.listen,
        address.to_string(),
        "the same address again"
    );
    assert_eq!(round_trip(address, b"back").await.unwrap(), b"back");
}

fn register(registry: &Registry, service: &str, id: &str, address: SocketAddr) {
    registry
        .register(Registration::up(InstanceInfo {
            service: service.into(),
            instance_id: id.into(),
            region: "us-east".into(),
            zone: "us-east-a".into(),
            address,
            version: "0.1.0".into(),
        }))
        .unwrap();
}

fn answered(registry: &Registry, service: &str) -> Vec<(SocketAddr, Option<String>)> {
    registry
        .instances(service, None, None, false)
        .unwrap()
        .instances
        .into_iter()
        .map(|view| {
            (
                view.instance.address,
                view.metadata.get(PROXIED_BY).cloned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn discovery_answers_the_proxy_while_it_has_toxics() {
    let (toxiproxy, registry) = setup();
    let upstream = echo().await;
    register(&registry, "svc", "svc-1", upstream);
    let listen = proxy(&toxiproxy, "svc", upstream);
    assert_eq!(
        answered(&registry, "svc"),
        [(upstream, None)],
        "no toxic: direct"
    );

    toxic(
        &toxiproxy,
        "svc",
        json!({"type": "latency", "attributes": {"latency": 1}}),
    );
    assert_eq!(
        answered(&registry, "svc"),
        [(listen, Some("toxiproxy:svc".to_owned()))]
    );
    let view = &registry
        .instances("svc", None, None, false)
        .unwrap()
        .instances[0];
    assert_eq!(view.metadata[PROXIED_FROM], upstream.to_string());
    // The registered truth is unchanged.
    assert_eq!(
        registry.get("svc", "svc-1").unwrap().instance.address,
        upstream
    );
    // A caller following the answer reaches the instance through the proxy.
    assert_eq!(round_trip(listen, b"via").await.unwrap(), b"via");

    toxiproxy.remove_toxic("svc", "latency_downstream").unwrap();
    assert_eq!(
        answered(&registry, "svc"),
        [(upstream, None)],
        "direct again"
    );

    toxic(&toxiproxy, "svc", json!({"type": "latency"}));
    toxiproxy
        .update(
            "svc",
            &ProxyUpdate {
                enabled: Some(false),
                ..ProxyUpdate::default()
            },
        )
        .unwrap();
    assert_eq!(
        answered(&registry, "svc"),
        [(upstream, None)],
        "disabled: direct"
    );
    toxiproxy.reset().unwrap();
    assert_eq!(
        answered(&registry, "svc"),
        [(upstream, None)],
        "reset: no toxics"
    );
    toxic(&toxiproxy, "svc", json!({"type": "latency"}));
    toxiproxy.delete("svc").unwrap();
    assert_eq!(
        answered(&registry, "svc"),
        [(upstream, None)],
        "deleted: direct"
    );
}

#[tokio::test]
async fn fronting_a_service_proxies_every_up_instance_and_rolls_back() {
    let (toxiproxy, registry) = setup();
    let (a, b) = (echo().await, echo().await);
    register(&registry, "svc", "svc-1", a);
    register(&registry, "svc", "svc-2", b);
    let latency = model::parse_toxic(br#"{"type":"latency","attributes":{"latency":5}}"#).unwrap();
    let fronting = toxiproxy
        .front_service(
            &registry,
            "svc",
            "latency-monkey",
            std::slice::from_ref(&latency),
        )
        .unwrap();
    assert_eq!(fronting.proxies.len(), 2);
    assert_eq!(fronting.proxies[0].proxy, "latency-monkey-svc-1");
    let answer = answered(&registry, "svc");
    for (fronted, (address, by)) in fronting.proxies.iter().zip(&answer) {
        assert_eq!(*address, fronted.listen);
        assert_eq!(
            by.as_deref(),
            Some(format!("toxiproxy:{}", fronted.proxy).as_str())
        );
        assert_eq!(round_trip(*address, b"hi").await.unwrap(), b"hi");
    }
    // All or nothing: a second fronting under the same label conflicts, and
    // leaves the first intact.
    let err = toxiproxy
        .front_service(
            &registry,
            "svc",
            "latency-monkey",
            std::slice::from_ref(&latency),
        )
        .unwrap_err();
    assert_eq!(err.status, 409);
    assert_eq!(toxiproxy.list().len(), 2);

    toxiproxy.unfront(&fronting).unwrap();
    assert!(toxiproxy.list().is_empty());
    assert_eq!(answered(&registry, "svc"), [(a, None), (b, None)]);
    // Unfronting twice is fine; a service with no instance is a 404.
    toxiproxy.unfront(&fronting).unwrap();
    let err = toxiproxy
        .front_service(&registry, "nope", "m", std::slice::from_ref(&latency))
        .unwrap_err();
    assert_eq!(err.status, 404, "{err}");
}

#[tokio::test]
async fn proxies_stay_on_loopback_and_within_their_bounds() {
    let registry = setup().1;
    let toxiproxy = Toxiproxy::new(
        Limits {
            max_proxies: 1,
            max_toxics_per_proxy: 1,
            ..Limits::default()
        },
        registry.rewrites().clone(),
    );
    let spec = |name: &str, listen: &str| ProxySpec {
        name: name.into(),
        listen: listen.into(),
        upstream: "127.0.0.1:1".into(),
        enabled: true,
    };
    let err = toxiproxy.create(&spec("wide", "0.0.0.0:0")).unwrap_err();
    assert_eq!(err.status, 400);
    assert!(err.error.contains("beyond loopback"), "{err}");
    let err = toxiproxy
        .create(&ProxySpec {
            upstream: "no-port".into(),
            ..spec("bad", "127.0.0.1:0")
        })
        .unwrap_err();
    assert!(err.error.contains("HOST:PORT"), "{err}");
    toxiproxy.create(&spec("one", "127.0.0.1:0")).unwrap();
    let err = toxiproxy.create(&spec("two", "127.0.0.1:0")).unwrap_err();
    assert_eq!(err.status, 409);
    assert!(err.error.contains("proxy limit"), "{err}");
    toxic(&toxiproxy, "one", json!({"type": "latency"}));
    let second = model::parse_toxic(br#"{"type":"timeout"}"#).unwrap();
    let err = toxiproxy.add_toxic("one", &second).unwrap_err();
    assert!(err.error.contains("toxic limit"), "{err}");
}

/// One request to the API (no access layer unless wrapped).
async fn call(
    router: &axum::Router,
    method: Method,
    uri: &str,
    body: Option<&str>,
) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, json)
}

#[tokio::test]
async fn the_api_answers_with_toxiproxys_json_and_errors() {
    let (toxiproxy, _) = setup();
    let router = api::router(toxiproxy);
    let upstream = echo().await;
    assert_eq!(
        call(&router, Method::GET, "/proxies", None).await,
        (StatusCode::OK, json!({}))
    );

    let body = json!({"name": "echo", "upstream": upstream.to_string()}).to_string();
    let (status, created) = call(&router, Method::POST, "/proxies", Some(&body)).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(created["name"], "echo");
    assert_eq!(created["enabled"], true);
    assert_eq!(created["toxics"], json!([]));
    assert!(
        created["listen"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );

    let (status, err) = call(&router, Method::POST, "/proxies", Some(&body)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        err,
        json!({"error": "proxy already exists: echo", "status": 409})
    );
    let (status, err) = call(&router, Method::GET, "/proxies/nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        err,
        json!({"error": "proxy not found: nope", "status": 404})
    );
    let (status, err) = call(&router, Method::POST, "/proxies", Some("{")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .starts_with("bad request body"),
        "{err}"
    );
    assert_eq!(err["status"], 400);

    let toxic = r#"{"type":"latency","stream":"upstream","attributes":{"latency":10,"jitter":2}}"#;
    let (status, made) = call(&router, Method::POST, "/proxies/echo/toxics", Some(toxic)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        made,
        json!({"attributes": {"latency": 10, "jitter": 2}, "name": "latency_upstream",
               "type": "latency", "stream": "upstream", "toxicity": 1.0})
    );
    let (status, err) = call(&router, Method::POST, "/proxies/echo/toxics", Some(toxic)).await;
    assert_eq!(
        (status, err["status"].clone()),
        (StatusCode::CONFLICT, json!(409))
    );
    let (status, err) = call(
        &router,
        Method::POST,
        "/proxies/echo/toxics",
        Some(r#"{"type":"lag"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .starts_with("invalid toxic type"),
        "{err}"
    );
    let (status, _) = call(&router, Method::POST, "/proxies/nope/toxics", Some(toxic)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, err) = call(&router, Method::GET, "/proxies/echo/toxics/nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(err["error"], "toxic not found: nope");

    let (status, updated) = call(
        &router,
        Method::PATCH,
        "/proxies/echo/toxics/latency_upstream",
        Some(r#"{"attributes":{"latency":20},"toxicity":0.5}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(updated["attributes"], json!({"latency": 20, "jitter": 2}));
    assert_eq!(updated["toxicity"], 0.5);

    let (status, all) = call(&router, Method::GET, "/proxies", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(all["echo"]["toxics"][0]["name"], "latency_upstream");
    let (_, list) = call(&router, Method::GET, "/proxies/echo/toxics", None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);

    let (status, _) = call(&router, Method::POST, "/reset", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, list) = call(&router, Method::GET, "/proxies/echo/toxics", None).await;
    assert_eq!(list, json!([]));

    let (status, disabled) = call(
        &router,
        Method::POST,
        "/proxies/echo",
        Some(r#"{"enabled":false}"#),
    )
    .await;
    assert_eq!(
        (status, disabled["enabled"].clone()),
        (StatusCode::OK, json!(false))
    );

    let populate = json!([
        {"name": "echo", "upstream": upstream.to_string(), "listen": "127.0.0.1:0"},
        {"name": "second", "upstream": upstream.to_string()},
    ])
    .to_string();
    let (status, populated) = call(&router, Method::POST, "/populate", Some(&populate)).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(populated["proxies"].as_array().unwrap().len(), 2);
    let (status, failed) = call(
        &router,
        Method::POST,
        "/populate",
        Some(r#"[{"name":"third","upstream":"127.0.0.1:1","listen":"10.1.2.3:0"}]"#),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(failed["status"], 400);
    assert_eq!(failed["proxies"], json!([]));

    let (status, _) = call(&router, Method::DELETE, "/proxies/second", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call(&router, Method::DELETE, "/proxies/second", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, version) = call(&router, Method::GET, "/version", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        version["version"].as_str().unwrap().starts_with("2."),
        "{version}"
    );
}

#[tokio::test]
async fn browsers_are_refused_and_tools_need_no_token_on_loopback() {
    let (toxiproxy, _) = setup();
    let bound: SocketAddr = "127.0.0.1:8474".parse().unwrap();
    let router = AccessPolicy::browserless_on_loopback(bound, Token::generate())
        .protect(api::router(toxiproxy));
    let send = |builder: axum::http::request::Builder| {
        let router = router.clone();
        async move {
            router
                .oneshot(
                    builder
                        .header("host", "127.0.0.1:8474")
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(send(Request::get("/proxies")).await, StatusCode::OK);
    assert_eq!(send(Request::post("/reset")).await, StatusCode::NO_CONTENT);
    assert_eq!(
        send(Request::post("/reset").header("origin", "http://127.0.0.1:8474")).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(Request::get("/proxies").header("user-agent", "Mozilla/5.0 (X11)")).await,
        StatusCode::FORBIDDEN
    );
}
