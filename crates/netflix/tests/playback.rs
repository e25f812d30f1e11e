//! The playback API over HTTP with a fake origin, fake CDN instances and a fake
//! discovery: the catalog and its last-good fallback, steering by region, signed
//! manifests the edges accept, failover, events into metrics, and bad input.

mod fakes;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use bytes::Bytes;
use casebook_edge::signing::SigningKey;
use casebook_kit::clock::ManualClock;
use casebook_kit::http_client::{HttpClient, HttpResponse};
use casebook_kit::resilience::breaker::BreakerRegistry;
use casebook_kit::resolve::Resolver;
use casebook_kit::topology::Topology;
use casebook_netflix::case::{EDGE_SERVICE, ISP_SERVICE};
use casebook_netflix::config::NetflixConfig;
use casebook_netflix::origin::ORIGIN_SERVICE;
use casebook_netflix::playback::{CatalogResponse, PlayGrant, Playback, api};
use fakes::{FakeDiscovery, FakeEdge, FakeOrigin, placement, serve, title};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};

struct Harness {
    clock: ManualClock,
    discovery: Arc<FakeDiscovery>,
    origin: Arc<FakeOrigin>,
    key: SigningKey,
    url: String,
    client: HttpClient,
}

fn key() -> SigningKey {
    SigningKey::from_bytes(vec![9; 32]).unwrap()
}

async fn harness(with_origin: bool) -> Harness {
    casebook_kit::telemetry::metrics();
    // Wall time from now: the fake edges judge `exp` on the real clock.
    let clock = ManualClock::starting_at(SystemTime::now());
    let discovery = Arc::new(FakeDiscovery::default());
    let origin = FakeOrigin::new(vec![title("demo", 4)]);
    if with_origin {
        let address = serve(origin.router()).await;
        discovery.register(ORIGIN_SERVICE, address, "us-east");
    }
    let resolver = Arc::new(Resolver::detached(clock.shared()));
    resolver.attach(discovery.clone());
    let playback = Arc::new(
        Playback::new(
            &NetflixConfig::default(),
            key(),
            resolver,
            Topology::default(),
            placement("us-east"),
            clock.shared(),
            BreakerRegistry::new(clock.shared()),
        )
        .unwrap(),
    );
    let address = serve(api::router(playback)).await;
    Harness {
        clock,
        discovery,
        origin,
        key: key(),
        url: format!("http://{address}"),
        client: HttpClient::default(),
    }
}

impl Harness {
    /// A fake edge of `service` in `region`, registered.
    async fn edge(&self, service: &str, region: &str) -> (Arc<FakeEdge>, String) {
        let edge = FakeEdge::new(self.key.clone(), 4);
        let address = serve(edge.router()).await;
        self.discovery.register(service, address, region);
        (edge, address.to_string())
    }

    async fn post(&self, path: &str, body: Value) -> HttpResponse {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        self.client
            .send(
                Method::POST,
                &format!("{}{path}", self.url),
                headers,
                Bytes::from(body.to_string()),
            )
            .await
            .unwrap()
    }

    async fn play(&self, body: Value) -> PlayGrant {
        let response = self.post("/v1/playback", body).await;
        assert_eq!(response.status, StatusCode::OK, "{:?}", response.body);
        serde_json::from_slice(&response.body).unwrap()
    }

    async fn titles(&self) -> CatalogResponse {
        self.client
            .get_json(&format!("{}/v1/titles", self.url))
            .await
            .unwrap()
    }
}

fn json_of(response: &HttpResponse) -> Value {
    serde_json::from_slice(&response.body).unwrap()
}

#[tokio::test]
async fn the_catalog_is_cached_briefly_and_served_stale_while_the_origin_is_down() {
    let h = harness(true).await;
    let first = h.titles().await;
    assert_eq!(first.titles.len(), 1);
    assert!(!first.stale);
    h.titles().await;
    assert_eq!(h.origin.fetches.load(Ordering::Relaxed), 1, "cached");
    h.origin.titles.lock().push(title("second", 4));
    h.clock.advance(NetflixConfig::default().catalog_ttl);
    let second = h.titles().await;
    assert_eq!(second.titles.len(), 2);
    assert!(!second.stale);
    h.origin.up.store(false, Ordering::Relaxed);
    h.clock.advance(NetflixConfig::default().catalog_ttl);
    let stale = h.titles().await;
    assert_eq!(stale.titles.len(), 2, "the last good catalog");
    assert!(stale.stale);
    assert!(
        h.origin.fetches.load(Ordering::Relaxed) >= 3,
        "the origin was asked"
    );
    // Playback keeps working from the stale catalog.
    h.edge(ISP_SERVICE, "us-east").await;
    h.play(json!({"title": "second"})).await;
}

#[tokio::test]
async fn an_origin_never_reached_is_a_503() {
    let h = harness(false).await;
    let response = h
        .client
        .send(
            Method::GET,
            &format!("{}/v1/titles", h.url),
            HeaderMap::new(),
            Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(json_of(&response)["error"].is_string());
}

#[tokio::test]
async fn steering_picks_the_clients_region_and_the_manifest_is_signed_for_the_edges() {
    let h = harness(true).await;
    let (us_isp, us_isp_addr) = h.edge(ISP_SERVICE, "us-east").await;
    let (_, eu_isp_addr) = h.edge(ISP_SERVICE, "eu-west").await;
    h.edge(EDGE_SERVICE, "us-east").await;

    let eu = h.play(json!({"title": "demo", "region": "eu-west"})).await;
    assert_eq!(eu.edge, eu_isp_addr);
    assert_eq!(eu.region, "eu-west");
    assert_eq!(eu.session.len(), 32);
    let home = h.play(json!({"title": "demo"})).await;
    assert_eq!(home.edge, us_isp_addr, "no region: the playback's own");

    // The URL is signed for exactly the master playlist's path, until expires_at.
    let url = home.manifest_url.strip_prefix("http://").unwrap();
    let (authority, rest) = url.split_once('/').unwrap();
    assert_eq!(authority, us_isp_addr);
    let (path, query) = rest.split_once('?').unwrap();
    let path = format!("/{path}");
    assert_eq!(path, "/o/titles/demo/master.m3u8");
    assert!(query.contains(&format!("exp={}", home.expires_at)));
    let now = home.expires_at - NetflixConfig::default().manifest_ttl.as_secs();
    assert_eq!(h.key.verify(&path, Some(query), now), Ok(()));
    let other = SigningKey::from_bytes(vec![1; 32]).unwrap();
    assert!(other.verify(&path, Some(query), now).is_err());
    assert!(
        h.key
            .verify(&path, Some(query), home.expires_at + 1)
            .is_err()
    );

    // And the edge, sharing the key, serves it.
    let master = h.client.get_json::<Value>(&home.manifest_url).await;
    assert!(master.is_err(), "a playlist, not JSON");
    let response = h
        .client
        .send(
            Method::GET,
            &home.manifest_url,
            HeaderMap::new(),
            Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&response.body).contains("#EXT-X-STREAM-INF"));
    assert_eq!(us_isp.refused.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_re_post_fails_over_keeping_the_session_and_others_avoid_the_edge() {
    let h = harness(true).await;
    let (_, isp) = h.edge(ISP_SERVICE, "us-east").await;
    let (_, regional) = h.edge(EDGE_SERVICE, "us-east").await;
    let (_, eu) = h.edge(ISP_SERVICE, "eu-west").await;

    let first = h.play(json!({"title": "demo", "region": "us-east"})).await;
    assert_eq!(first.edge, isp);
    let moved = h
        .play(json!({"title": "demo", "region": "us-east", "session": first.session}))
        .await;
    assert_eq!(moved.session, first.session, "the session is kept");
    assert_eq!(moved.edge, regional, "the region's regional edge next");
    assert_eq!(moved.failovers, 1);
    // Another session is not sent to the failed ISP cache either.
    let other = h.play(json!({"title": "demo", "region": "us-east"})).await;
    assert_eq!(other.edge, regional);
    // Failing again leaves the region.
    let away = h
        .play(json!({"title": "demo", "region": "us-east", "session": first.session}))
        .await;
    assert_eq!(
        (away.edge.as_str(), away.region.as_str()),
        (eu.as_str(), "eu-west")
    );
    // Once the reports are older than the TTL, the ISP cache is used again.
    h.clock.advance(NetflixConfig::default().failed_edge_ttl);
    let later = h.play(json!({"title": "demo", "region": "us-east"})).await;
    assert_eq!(later.edge, isp);
    // An unknown session starts a new one, still avoiding the edge it names.
    let unknown = h
        .play(json!({
            "title": "demo", "region": "us-east",
            "session": "0123456789abcdef0123456789abcdef", "failed_edge": isp
        }))
        .await;
    assert_ne!(unknown.session, "0123456789abcdef0123456789abcdef");
    assert_eq!(unknown.edge, regional);
}

#[tokio::test]
async fn no_cdn_instance_is_a_503() {
    let h = harness(true).await;
    let response = h.post("/v1/playback", json!({"title": "demo"})).await;
    assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        json_of(&response)["error"]
            .as_str()
            .unwrap()
            .contains("no CDN instance")
    );
}

#[tokio::test]
async fn bad_requests_get_json_errors_naming_the_field() {
    let h = harness(true).await;
    h.edge(ISP_SERVICE, "us-east").await;
    let session = h.play(json!({"title": "demo"})).await.session;
    let cases = [
        (json!({"title": "nope"}), StatusCode::NOT_FOUND, "title"),
        (json!({"title": "Bad/Id"}), StatusCode::BAD_REQUEST, "title"),
        (
            json!({"title": "demo", "region": "mars"}),
            StatusCode::BAD_REQUEST,
            "region",
        ),
        (
            json!({"title": "demo", "session": "xyz"}),
            StatusCode::BAD_REQUEST,
            "session",
        ),
        (
            json!({"title": "demo", "failed_edge": "nowhere"}),
            StatusCode::BAD_REQUEST,
            "failed_edge",
        ),
        (json!({"title": 5}), StatusCode::BAD_REQUEST, "title"),
        (
            json!({"title": "demo", "colour": "red"}),
            StatusCode::BAD_REQUEST,
            "",
        ),
        (json!({}), StatusCode::BAD_REQUEST, "title"),
    ];
    for (body, status, field) in cases {
        let response = h.post("/v1/playback", body.clone()).await;
        assert_eq!(response.status, status, "{body}");
        let error = json_of(&response);
        assert!(error["error"].is_string(), "{body}: {error}");
        if !field.is_empty() {
            assert_eq!(error["field"], field, "{body}: {error}");
        }
    }
    h.origin.titles.lock().push(title("other", 4));
    h.clock.advance(NetflixConfig::default().catalog_ttl);
    let mismatch = h
        .post(
            "/v1/playback",
            json!({"title": "other", "session": session}),
        )
        .await;
    assert_eq!(mismatch.status, StatusCode::BAD_REQUEST);
    assert_eq!(json_of(&mismatch)["field"], "title");

    let wrong_type = h
        .client
        .send(
            Method::POST,
            &format!("{}/v1/playback", h.url),
            HeaderMap::new(),
            Bytes::from_static(b"{\"title\":\"demo\"}"),
        )
        .await
        .unwrap();
    assert_eq!(wrong_type.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let events = |s: &str| format!("/v1/playback/{s}/events");
    let unknown = h
        .post(
            &events("0123456789abcdef0123456789abcdef"),
            json!({"events": []}),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(json_of(&unknown)["field"], "session");
    let many: Vec<Value> = (0..257)
        .map(|_| json!({"type": "stall_begin", "position_ms": 1}))
        .collect();
    let too_many = h.post(&events(&session), json!({ "events": many })).await;
    assert_eq!(too_many.status, StatusCode::PAYLOAD_TOO_LARGE);
    let bad_type = h
        .post(&events(&session), json!({"events": [{"type": "teleport"}]}))
        .await;
    assert_eq!(bad_type.status, StatusCode::BAD_REQUEST);
    assert!(
        json_of(&bad_type)["field"]
            .as_str()
            .unwrap()
            .starts_with("events[0]")
    );
    let bad_kind = h
        .post(
            &events(&session),
            json!({"events": [{"type": "error", "kind": "Not OK"}]}),
        )
        .await;
    assert_eq!(bad_kind.status, StatusCode::BAD_REQUEST);
    assert_eq!(json_of(&bad_kind)["field"], "events[0].kind");
    let nowhere = h.post("/v2/nothing", json!({})).await;
    assert_eq!(nowhere.status, StatusCode::NOT_FOUND);
    assert!(json_of(&nowhere)["error"].is_string());
}

#[tokio::test]
async fn events_land_in_metrics_tagged_with_the_sessions_title_edge_and_region() {
    let h = harness(true).await;
    h.origin.titles.lock().push(title("metrics-title", 4));
    let (_, edge) = h.edge(ISP_SERVICE, "eu-west").await;
    let grant = h
        .play(json!({"title": "metrics-title", "region": "eu-west"}))
        .await;
    let batch = json!({"events": [
        {"type": "start", "start_ms": 40, "bitrate_bps": 200000},
        {"type": "heartbeat", "position_ms": 1000, "buffer_ms": 3000, "bitrate_bps": 400000},
        {"type": "bitrate_switch", "from_bps": 200000, "to_bps": 400000},
        {"type": "stall_begin", "position_ms": 2000},
        {"type": "stall_end", "stall_ms": 500},
        {"type": "error", "kind": "edge_5xx"},
    ]});
    let response = h
        .post(&format!("/v1/playback/{}/events", grant.session), batch)
        .await;
    assert_eq!(response.status, StatusCode::ACCEPTED);
    assert_eq!(json_of(&response)["accepted"], 6);

    let snapshot = casebook_kit::telemetry::metrics().registry().snapshot();
    let count = |name: &str, extra: (&str, &str)| -> u64 {
        snapshot
            .counters
            .iter()
            .filter(|(key, _)| {
                let labels: Vec<(&str, &str)> =
                    key.labels().map(|l| (l.key(), l.value())).collect();
                key.name() == name
                    && labels.contains(&("title", "metrics-title"))
                    && labels.contains(&("edge", edge.as_str()))
                    && labels.contains(&("region", "eu-west"))
                    && labels.contains(&extra)
            })
            .map(|(_, n)| *n)
            .sum()
    };
    assert_eq!(
        count("casebook_netflix_qoe_events_total", ("type", "start")),
        1
    );
    assert_eq!(
        count("casebook_netflix_qoe_events_total", ("type", "stall_end")),
        1
    );
    assert_eq!(
        count("casebook_netflix_qoe_errors_total", ("kind", "edge_5xx")),
        1
    );
    assert_eq!(
        count(
            "casebook_netflix_qoe_switches_total",
            ("title", "metrics-title")
        ),
        1
    );
}

#[tokio::test]
async fn the_service_factory_serves_the_api_as_an_instance_of_the_platform() {
    use casebook_kit::runtime::{InstanceSpec, Platform};
    use casebook_netflix::playback::{PLAYBACK_SERVICE, PlaybackService};

    let h = harness(true).await;
    h.edge(ISP_SERVICE, "us-east").await;
    let dir = tempfile::tempdir().unwrap();
    let topology = Topology::default();
    let platform = Platform::new(topology.clone(), dir.path(), h.clock.shared());
    let resolver = Arc::new(Resolver::detached(h.clock.shared()));
    resolver.attach(h.discovery.clone());
    platform.register_service(Arc::new(PlaybackService::new(
        NetflixConfig::default(),
        key(),
        resolver,
        topology.clone(),
    )));
    let info = platform
        .start(InstanceSpec {
            service: PLAYBACK_SERVICE.into(),
            instance_id: None,
            placement: placement("us-east"),
            listen: "127.0.0.1:0".parse().unwrap(),
            version: "test".into(),
            port_hint: None,
        })
        .await
        .unwrap();
    let url = format!("http://{}", info.address);
    let catalog: CatalogResponse = h
        .client
        .get_json(&format!("{url}/v1/titles"))
        .await
        .unwrap();
    assert_eq!(catalog.titles[0].id, "demo");
    let grant: PlayGrant = h
        .client
        .json(
            Method::POST,
            &format!("{url}/v1/playback"),
            &json!({"title": "demo"}),
        )
        .await
        .unwrap();
    assert!(
        grant
            .manifest_url
            .contains("/o/titles/demo/master.m3u8?exp=")
    );
    assert!(platform.kill(&info.instance_id).await);
    assert!(
        h.client
            .get_json::<Value>(&format!("{url}/v1/titles"))
            .await
            .is_err(),
        "a killed instance answers nothing"
    );
}
