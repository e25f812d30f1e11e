//! Plays that come through the gateway carry a caller (`x-user-id`): playback asks
//! billing whether the account may play (cached, and allowed when billing cannot
//! answer) and turns the session's heartbeats into viewing history at the user
//! service. Fakes stand in for origin, edges, billing and users.

mod fakes;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use casebook_edge::signing::SigningKey;
use casebook_kit::clock::ManualClock;
use casebook_kit::http_client::{HttpClient, HttpResponse};
use casebook_kit::resilience::breaker::BreakerRegistry;
use casebook_kit::resolve::Resolver;
use casebook_kit::topology::Topology;
use casebook_netflix::billing::BILLING_SERVICE;
use casebook_netflix::case::ISP_SERVICE;
use casebook_netflix::config::NetflixConfig;
use casebook_netflix::origin::ORIGIN_SERVICE;
use casebook_netflix::playback::account::{AccountLink, Progress, write_history};
use casebook_netflix::playback::{Playback, api};
use casebook_netflix::users::USERS_SERVICE;
use casebook_testkit::{DEADLINE, eventually};
use fakes::{FakeDiscovery, FakeEdge, FakeOrigin, placement, serve, title};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct FakeBilling {
    active: Mutex<HashSet<String>>,
    asked: Mutex<u32>,
}

fn billing_router(billing: Arc<FakeBilling>) -> Router {
    Router::new()
        .route(
            "/internal/v1/entitlement/{account}",
            get(
                |State(b): State<Arc<FakeBilling>>, Path(account): Path<String>| async move {
                    *b.asked.lock() += 1;
                    let active = b.active.lock().contains(&account);
                    Json(json!({ "account": account, "active": active, "plan": active.then_some("standard") }))
                },
            ),
        )
        .with_state(billing)
}

#[derive(Default)]
struct FakeUsers {
    history: Mutex<Vec<Progress>>,
}

fn users_router(users: Arc<FakeUsers>) -> Router {
    Router::new()
        .route(
            "/internal/v1/history",
            post(
                |State(u): State<Arc<FakeUsers>>, Json(p): Json<Progress>| async move {
                    u.history.lock().push(p);
                    Json(json!({ "ok": true }))
                },
            ),
        )
        .with_state(users)
}

struct Harness {
    clock: ManualClock,
    discovery: Arc<FakeDiscovery>,
    billing: Arc<FakeBilling>,
    users: Arc<FakeUsers>,
    url: String,
    _stop: tokio_util::sync::DropGuard,
}

async fn harness() -> Harness {
    casebook_kit::telemetry::metrics();
    let clock = ManualClock::starting_at(SystemTime::now());
    let discovery = Arc::new(FakeDiscovery::default());
    let origin = FakeOrigin::new(vec![title("demo", 4)]);
    discovery.register(ORIGIN_SERVICE, serve(origin.router()).await, "us-east");
    let key = SigningKey::from_bytes(vec![9; 32]).unwrap();
    let edge = FakeEdge::new(key.clone(), 4);
    discovery.register(ISP_SERVICE, serve(edge.router()).await, "us-east");
    let billing = Arc::new(FakeBilling::default());
    let users = Arc::new(FakeUsers::default());
    discovery.register(
        USERS_SERVICE,
        serve(users_router(users.clone())).await,
        "us-east",
    );
    let resolver = Arc::new(Resolver::detached(clock.shared()));
    resolver.attach(discovery.clone());
    let registry = BreakerRegistry::new(clock.shared());
    let config = NetflixConfig::default();
    let (link, queue) = AccountLink::new(
        resolver.clone(),
        placement("us-east"),
        clock.shared(),
        registry.clone(),
        config.entitlement_ttl,
        config.history_queue,
    )
    .unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(write_history(
        queue,
        resolver.clone(),
        placement("us-east"),
        registry.clone(),
        stop.clone(),
    ));
    let playback = Arc::new(
        Playback::new(
            &config,
            key,
            resolver,
            Topology::default(),
            placement("us-east"),
            clock.shared(),
            registry,
        )
        .unwrap()
        .with_accounts(link),
    );
    let url = format!("http://{}", serve(api::router(playback)).await);
    Harness {
        clock,
        discovery,
        billing,
        users,
        url,
        _stop: stop.drop_guard(),
    }
}

impl Harness {
    async fn post(&self, path: &str, caller: Option<&str>, body: Value) -> HttpResponse {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(caller) = caller {
            headers.insert("x-user-id", HeaderValue::from_str(caller).unwrap());
        }
        HttpClient::default()
            .send(
                Method::POST,
                &format!("{}{path}", self.url),
                headers,
                Bytes::from(body.to_string()),
            )
            .await
            .unwrap()
    }

    async fn play(&self, caller: Option<&str>) -> HttpResponse {
        self.post("/api/v1/playback", caller, json!({ "title": "demo" }))
            .await
    }

    async fn register_billing(&self) {
        let address = serve(billing_router(self.billing.clone())).await;
        self.discovery.register(BILLING_SERVICE, address, "us-east");
    }
}

fn code_of(response: &HttpResponse) -> String {
    serde_json::from_slice::<Value>(&response.body).unwrap()["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn only_subscribed_callers_play_and_the_answer_is_cached_for_its_ttl() {
    let h = harness().await;
    h.register_billing().await;
    h.billing.active.lock().insert("acct-paid".into());

    let refused = h.play(Some("acct-free")).await;
    assert_eq!(refused.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(code_of(&refused), "subscription_required");
    assert_eq!(h.play(Some("acct-paid")).await.status, StatusCode::OK);
    // No caller (the player fleet calling playback directly): nothing is checked.
    assert_eq!(h.play(None).await.status, StatusCode::OK);
    assert_eq!(*h.billing.asked.lock(), 2);

    // The free account subscribes; playback believes its cached answer until the TTL.
    h.billing.active.lock().insert("acct-free".into());
    assert_eq!(
        h.play(Some("acct-free")).await.status,
        StatusCode::PAYMENT_REQUIRED
    );
    assert_eq!(*h.billing.asked.lock(), 2, "served from the cache");
    h.clock.advance(NetflixConfig::default().entitlement_ttl);
    assert_eq!(h.play(Some("acct-free")).await.status, StatusCode::OK);
    assert_eq!(*h.billing.asked.lock(), 3);
}

#[tokio::test]
async fn plays_go_ahead_when_billing_cannot_answer() {
    let h = harness().await;
    // No billing instance at all: discovery knows none.
    assert_eq!(h.play(Some("acct-any")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_malformed_caller_is_refused() {
    let h = harness().await;
    let refused = h.play(Some("../../etc")).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(code_of(&refused), "invalid_caller");
}

#[tokio::test]
async fn heartbeats_of_a_callers_session_become_viewing_history() {
    let h = harness().await;
    h.register_billing().await;
    h.billing.active.lock().insert("acct-7".into());
    let grant: Value = serde_json::from_slice(&h.play(Some("acct-7")).await.body).unwrap();
    let session = grant["session"].as_str().unwrap();
    let events = json!({ "events": [
        { "type": "heartbeat", "position_ms": 8_000, "buffer_ms": 20_000, "bitrate_bps": 800_000 },
        { "type": "bitrate_switch", "from_bps": 800_000, "to_bps": 3_000_000 },
    ] });
    let accepted = h
        .post(
            &format!("/api/v1/playback/{session}/events"),
            Some("acct-7"),
            events,
        )
        .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED);
    eventually(
        "the heartbeat reaches the user service",
        DEADLINE,
        || async { !h.users.history.lock().is_empty() },
    )
    .await;
    let written = h.users.history.lock().clone();
    assert_eq!(written.len(), 1, "only the heartbeat: {written:?}");
    assert_eq!(written[0].account, "acct-7");
    assert_eq!(written[0].title, "demo");
    assert_eq!(written[0].position_s, 8.0);
    assert!(
        written[0].duration_s > 0.0,
        "the title's length from the catalog"
    );

    // A session without a caller records nothing: its heartbeat is posted first,
    // then another of the caller's; the queue is FIFO, so once the second record
    // is in, the anonymous one would have been too.
    let anonymous: Value = serde_json::from_slice(&h.play(None).await.body).unwrap();
    let anonymous = anonymous["session"].as_str().unwrap();
    let heartbeat = |position_ms: u64| json!({ "events": [{ "type": "heartbeat", "position_ms": position_ms, "buffer_ms": 1_000, "bitrate_bps": 1 }] });
    h.post(
        &format!("/v1/playback/{anonymous}/events"),
        None,
        heartbeat(1_000),
    )
    .await;
    h.post(
        &format!("/api/v1/playback/{session}/events"),
        Some("acct-7"),
        heartbeat(9_000),
    )
    .await;
    eventually("the second heartbeat arrives", DEADLINE, || async {
        h.users.history.lock().len() >= 2
    })
    .await;
    let written = h.users.history.lock().clone();
    assert_eq!(written.len(), 2, "{written:?}");
    assert!(written.iter().all(|p| p.account == "acct-7"));
    assert_eq!(written[1].position_s, 9.0);
}
