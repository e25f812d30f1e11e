//! How the coordinator and the replicas find and call cart replicas.
//!
//! [`ReplicaDirectory`] asks discovery for every `UP` instance of `amazon-cart`
//! ([`Resolver::all`], nearest first: the caller's zone, then the rest of its
//! region) and groups them by zone — a zone's replica may be listed twice for a
//! while (a killed one whose lease has not expired and its replacement). Calls
//! use the last list; a background task asks discovery again once it is
//! `discovery_refresh` old on the injected clock
//! ([`ReplicaDirectory::refresh_if_stale`]), a caller that found every listed
//! replica dead asks at once ([`ReplicaDirectory::refresh`], one question at a
//! time), and the list is kept when discovery cannot be reached (the replicas it
//! names were alive a moment ago). No request waits for discovery once a list is
//! known: found by the cart benchmark, where at 5,000 adds/s every request past the
//! list's age asked discovery itself, discovery's breaker opened, and adds waited
//! seconds.
//!
//! Every call goes through the kit's standard stack, one per replica address:
//! breaker → timeout (`replica_timeout`) → bulkhead, with a single attempt — the
//! caller's own loop over the next replica is this path's one retry layer.
//! Outcomes: an answer (2xx), a refusal (4xx: the request was wrong; the JSON
//! error is passed on), or a failure (transport error, timeout, 5xx, open breaker,
//! full bulkhead: try another replica).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use casebook_kit::api::ApiError;
use casebook_kit::clock::SharedClock;
use casebook_kit::resilience::breaker::BreakerRegistry;
use casebook_kit::resilience::mark_idempotent;
use casebook_kit::resilience::stack::{ResilienceConfig, ResilientClient, StackBuilder};
use casebook_kit::resolve::Resolver;
use casebook_kit::topology::Placement;
use http::{Method, StatusCode, header};
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::CART_SERVICE;

/// Most per-address clients kept (addresses churn as replicas restart on free ports).
const MAX_CLIENTS: usize = 64;

/// The listed replicas of one zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneReplicas {
    pub zone: String,
    pub addresses: Vec<SocketAddr>,
}

/// Why a call gave no answer.
#[derive(Debug)]
pub enum CallError {
    /// The replica could not answer: try another.
    Failed(String),
    /// The replica refused the request (4xx): its error, to pass on.
    Refused(ApiError),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Failed(why) => write!(f, "failed: {why}"),
            Self::Refused(err) => write!(f, "refused: {err}"),
        }
    }
}

#[derive(Debug)]
struct Cached {
    zones: Vec<ZoneReplicas>,
    fetched: Instant,
}

/// The cart replicas as discovery lists them, and a client for each.
#[derive(Debug)]
pub struct ReplicaDirectory {
    resolver: Arc<Resolver>,
    near: Placement,
    /// Left out of the list: a replica's own zone (its peers are the others).
    exclude_zone: Option<String>,
    clock: SharedClock,
    refresh_every: Duration,
    cached: Mutex<Option<Cached>>,
    /// A refresh is out (see [`ReplicaDirectory::refresh`]).
    refreshing: AtomicBool,
    clients: Mutex<HashMap<SocketAddr, ResilientClient>>,
    registry: BreakerRegistry,
    resilience: ResilienceConfig,
}

/// The stack's numbers for calls to replicas: the timeout, one attempt, room for
/// a burst of concurrent calls.
pub fn resilience(timeout: Duration) -> ResilienceConfig {
    let mut config = ResilienceConfig::default();
    config.timeout.default = timeout;
    config.retry.max_attempts = 1;
    config.bulkhead.max_concurrent = 512;
    config
}

impl ReplicaDirectory {
    /// A directory as seen from `near`, reusing a list for `refresh_every`.
    pub fn new(
        resolver: Arc<Resolver>,
        near: Placement,
        exclude_zone: Option<String>,
        clock: SharedClock,
        refresh_every: Duration,
        timeout: Duration,
    ) -> Self {
        Self {
            resolver,
            near,
            exclude_zone,
            registry: BreakerRegistry::new(clock.clone()),
            clock,
            refresh_every,
            cached: Mutex::new(None),
            refreshing: AtomicBool::new(false),
            clients: Mutex::new(HashMap::new()),
            resilience: resilience(timeout),
        }
    }

    /// The listed replicas by zone, nearest first: the last list, however old
    /// (the request path never waits for discovery once a list is known;
    /// [`refresh_if_stale`](Self::refresh_if_stale) keeps it current in the
    /// background). Before the first list, asks discovery.
    pub async fn zones(&self) -> Vec<ZoneReplicas> {
        if let Some(cached) = &*self.cached.lock() {
            return cached.zones.clone();
        }
        self.refresh().await
    }

    /// Asks discovery again if the list is `refresh_every` old (injected clock).
    pub async fn refresh_if_stale(&self) {
        let now = self.clock.now();
        let stale = self
            .cached
            .lock()
            .as_ref()
            .is_none_or(|c| now.saturating_duration_since(c.fetched) >= self.refresh_every);
        if stale {
            self.refresh().await;
        }
    }

    /// The last list, without asking discovery (empty before the first).
    pub fn cached_zones(&self) -> Vec<ZoneReplicas> {
        self.cached
            .lock()
            .as_ref()
            .map(|c| c.zones.clone())
            .unwrap_or_default()
    }

    /// Asks discovery now; on failure keeps (and answers) the last list. One
    /// question at a time: a caller arriving while one is out gets the last list
    /// (so a burst of failing requests does not become a burst on discovery).
    pub async fn refresh(&self) -> Vec<ZoneReplicas> {
        let have_list = self.cached.lock().is_some();
        if have_list && self.refreshing.swap(true, Ordering::AcqRel) {
            return self.cached_zones();
        }
        let answer = self.ask_discovery().await;
        if have_list {
            self.refreshing.store(false, Ordering::Release);
        }
        answer
    }

    async fn ask_discovery(&self) -> Vec<ZoneReplicas> {
        let now = self.clock.now();
        match self.resolver.all(CART_SERVICE, &self.near).await {
            Ok(found) => {
                let mut zones: Vec<ZoneReplicas> = Vec::new();
                for (address, placement) in found {
                    if self.exclude_zone.as_deref() == Some(placement.zone.as_str()) {
                        continue;
                    }
                    match zones.iter_mut().find(|z| z.zone == placement.zone) {
                        Some(zone) => {
                            if !zone.addresses.contains(&address) {
                                zone.addresses.push(address);
                            }
                        }
                        None => zones.push(ZoneReplicas {
                            zone: placement.zone,
                            addresses: vec![address],
                        }),
                    }
                }
                self.forget_clients_not_in(&zones);
                *self.cached.lock() = Some(Cached {
                    zones: zones.clone(),
                    fetched: now,
                });
                zones
            }
            Err(error) => {
                tracing::debug!(%error, "discovery unreachable; using the last replica list");
                self.cached_zones()
            }
        }
    }

    fn forget_clients_not_in(&self, zones: &[ZoneReplicas]) {
        let mut clients = self.clients.lock();
        if clients.len() > MAX_CLIENTS {
            clients.retain(|address, _| zones.iter().any(|z| z.addresses.contains(address)));
        }
    }

    fn client(&self, address: SocketAddr) -> Result<ResilientClient, String> {
        let mut clients = self.clients.lock();
        if let Some(client) = clients.get(&address) {
            return Ok(client.clone());
        }
        let builder =
            StackBuilder::new(format!("{CART_SERVICE}@{address}"), self.resilience.clone())
                .registry(self.registry.clone());
        let client = ResilientClient::with_builder(builder, None).map_err(|e| e.to_string())?;
        clients.insert(address, client.clone());
        Ok(client)
    }

    /// Calls `path` on the replica at `address` with an optional JSON body.
    pub async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        address: SocketAddr,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, CallError> {
        let client = self.client(address).map_err(CallError::Failed)?;
        let url = format!("http://{address}{path}");
        let bytes = match body {
            Some(body) => {
                Bytes::from(serde_json::to_vec(body).map_err(|e| CallError::Failed(e.to_string()))?)
            }
            None => Bytes::new(),
        };
        let mut request = http::Request::builder()
            .method(method.clone())
            .uri(&url)
            .header(header::CONTENT_TYPE, "application/json")
            .body(bytes)
            .map_err(|e| CallError::Failed(e.to_string()))?;
        if method == Method::GET {
            mark_idempotent(&mut request);
        }
        let response = client
            .send(request)
            .await
            .map_err(|e| CallError::Failed(format!("{method} {url}: {e}")))?;
        let status = response.status();
        if status.is_success() {
            return serde_json::from_slice(response.body()).map_err(|e| {
                CallError::Failed(format!("{method} {url}: not the expected JSON: {e}"))
            });
        }
        Err(CallError::Refused(refusal(status, response.body())))
    }
}

/// A replica's 4xx as the API error it carries (its `error`, `field`, `code`).
fn refusal(status: StatusCode, body: &[u8]) -> ApiError {
    #[derive(serde::Deserialize)]
    struct Body {
        error: String,
        field: Option<String>,
        code: Option<String>,
    }
    match serde_json::from_slice::<Body>(body) {
        Ok(b) => ApiError {
            status,
            error: b.error,
            field: b.field,
            code: b.code,
        },
        Err(_) => ApiError::new(status, String::from_utf8_lossy(body).into_owned()),
    }
}
