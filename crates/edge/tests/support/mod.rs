//! The CDN tests' helpers: a tiny axum upstream that counts what it is asked, a
//! tier started on a real platform (loopback, a data dir, an injected clock), and a
//! client for signed requests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use casebook_edge::cdn::stats::StatsView;
use casebook_edge::cdn::{TierConfig, TierService, Upstream};
use casebook_edge::signing::SigningKey;
use casebook_kit::clock::{Clock, ManualClock};
use casebook_kit::http_client::{HttpClient, HttpResponse};
use casebook_kit::resolve::Resolver;
use casebook_kit::runtime::{InstanceSpec, Platform};
use casebook_kit::topology::Topology;
use casebook_testkit::DEADLINE;
use http::{HeaderValue, Method};
use parking_lot::Mutex;
use tokio::sync::watch;

/// The key every test signs with.
pub fn signing_key() -> SigningKey {
    SigningKey::from_bytes(vec![42; 32]).unwrap()
}

/// A small origin: objects by key, counted requests, switchable failures and a
/// gate that holds every object request until opened.
#[derive(Default)]
pub struct Origin {
    objects: Mutex<HashMap<String, Bytes>>,
    hits: Mutex<HashMap<String, u64>>,
    queries: Mutex<Vec<Option<String>>>,
    requests: AtomicU64,
    bytes: AtomicU64,
    waiting: AtomicU64,
    failing: AtomicBool,
    gate: Mutex<Option<watch::Receiver<bool>>>,
    catalog: Mutex<String>,
    delay: Mutex<Option<Duration>>,
}

impl Origin {
    pub fn put(&self, key: &str, body: impl Into<Bytes>) {
        self.objects.lock().insert(key.to_owned(), body.into());
    }
    /// Requests for `key` so far.
    pub fn hits(&self, key: &str) -> u64 {
        self.hits.lock().get(key).copied().unwrap_or(0)
    }
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::SeqCst)
    }
    /// Object requests held at the gate now.
    pub fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::SeqCst)
    }
    pub fn queries(&self) -> Vec<Option<String>> {
        self.queries.lock().clone()
    }
    /// Answer 503 to everything while set.
    pub fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
    /// Hold object requests until the returned sender sends `true`.
    pub fn close_gate(&self) -> watch::Sender<bool> {
        let (tx, rx) = watch::channel(false);
        *self.gate.lock() = Some(rx);
        tx
    }
    pub fn set_catalog(&self, json: &str) {
        *self.catalog.lock() = json.to_owned();
    }
    /// Answer every object request after `delay`.
    pub fn delay(&self, delay: Option<Duration>) {
        *self.delay.lock() = delay;
    }
}

async fn origin_object(State(origin): State<Arc<Origin>>, uri: Uri) -> Response {
    let key = uri.path().trim_start_matches("/o/").to_owned();
    origin.requests.fetch_add(1, Ordering::SeqCst);
    *origin.hits.lock().entry(key.clone()).or_default() += 1;
    origin.queries.lock().push(uri.query().map(str::to_owned));
    let gate = origin.gate.lock().clone();
    if let Some(mut gate) = gate {
        origin.waiting.fetch_add(1, Ordering::SeqCst);
        let _ = gate.wait_for(|open| *open).await;
        origin.waiting.fetch_sub(1, Ordering::SeqCst);
    }
    let delay = *origin.delay.lock();
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    if origin.failing.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
    }
    let body = origin.objects.lock().get(&key).cloned();
    match body {
        Some(body) => {
            origin.bytes.fetch_add(body.len() as u64, Ordering::SeqCst);
            (StatusCode::OK, body).into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such object").into_response(),
    }
}

async fn origin_catalog(State(origin): State<Arc<Origin>>) -> Response {
    let body = origin.catalog.lock().clone();
    ([(http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Serves `origin` on `listen` (port 0: a free one) until the returned handle drops.
pub async fn serve_origin(
    origin: Arc<Origin>,
    listen: SocketAddr,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let app = Router::new()
        .route("/o/{*key}", axum::routing::get(origin_object))
        .route("/v1/titles", axum::routing::get(origin_catalog))
        .with_state(origin);
    let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
    let address = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (address, task)
}

/// A tier on a platform of its own.
pub struct TierUnderTest {
    pub platform: Platform,
    pub clock: ManualClock,
    pub address: SocketAddr,
    pub instance: String,
    pub client: HttpClient,
    pub key: SigningKey,
    pub dir: Arc<tempfile::TempDir>,
}

/// A tier config pulling from `upstream`, signed with [`signing_key`].
pub fn config(upstream: SocketAddr) -> TierConfig {
    let mut config = TierConfig::new(
        "cdn-test",
        Upstream::Url(format!("http://{upstream}")),
        signing_key(),
    );
    config.memory_bytes = 8 << 20;
    config
}

impl TierUnderTest {
    pub async fn start(config: TierConfig) -> Self {
        Self::start_in(
            config,
            Arc::new(tempfile::tempdir().unwrap()),
            ManualClock::new(),
        )
        .await
    }

    /// Starts in `dir` (a restart reuses it) on `clock`.
    pub async fn start_in(
        config: TierConfig,
        dir: Arc<tempfile::TempDir>,
        clock: ManualClock,
    ) -> Self {
        let topology = Topology::uniform(&["r1"], 1);
        let platform = Platform::new(topology.clone(), dir.path(), clock.shared());
        let service = config.service.clone();
        platform.register_service(Arc::new(TierService {
            config,
            resolver: Arc::new(Resolver::detached(clock.shared())),
        }));
        let info = platform
            .start(InstanceSpec {
                service,
                instance_id: Some("cdn-test-1".into()),
                placement: topology.spread(0),
                listen: "127.0.0.1:0".parse().unwrap(),
                version: "test".into(),
                port_hint: None,
            })
            .await
            .unwrap();
        Self {
            platform,
            clock,
            address: info.address,
            instance: info.instance_id,
            client: HttpClient::new(DEADLINE),
            key: signing_key(),
            dir,
        }
    }

    /// Now on the tier's clock, in Unix seconds.
    pub fn now_secs(&self) -> u64 {
        self.clock.wall_millis() / 1000
    }

    /// `/o/{key}?exp=…&sig=…`, valid for an hour.
    pub fn signed(&self, key: &str) -> String {
        let path = format!("/o/{key}");
        format!("{path}?{}", self.key.sign(&path, self.now_secs() + 3600))
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.address)
    }

    /// Sends `method` to `path_and_query` with `headers`.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> HttpResponse {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        self.client
            .send(method, &self.url(path_and_query), map, Bytes::new())
            .await
            .unwrap()
    }

    /// A signed GET of `key`.
    pub async fn get(&self, key: &str, headers: &[(&str, &str)]) -> HttpResponse {
        self.send(Method::GET, &self.signed(key), headers).await
    }

    pub async fn stats(&self) -> StatsView {
        self.client.get_json(&self.url("/stats")).await.unwrap()
    }

    pub async fn stop(&self) {
        self.platform
            .stop(&self.instance, Duration::from_secs(5))
            .await;
    }
}

/// A header's value as text.
pub fn header<'a>(response: &'a HttpResponse, name: &str) -> Option<&'a str> {
    response.headers.get(name).and_then(|v| v.to_str().ok())
}

/// The JSON error body of a response.
pub fn error_of(response: &HttpResponse) -> serde_json::Value {
    serde_json::from_slice(&response.body).unwrap_or_else(|_| {
        panic!(
            "not a JSON error: {:?}",
            String::from_utf8_lossy(&response.body)
        )
    })
}
