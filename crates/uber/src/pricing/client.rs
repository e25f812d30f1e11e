//! [`PricingClient`]: how other services (the ride API) ask the `uber-pricing`
//! service, through the kit's standard stack
//! `retry (budget) → circuit breaker → timeout → bulkhead → HTTP`, as the
//! dependency `pricing`.
//!
//! Guarantees:
//! - **fallback**: a quote or a multiplier is always answered unless the request
//!   itself is wrong. When the service cannot answer — connection refused, 5xx,
//!   the timeout (default 250 ms), the bulkhead full, **the breaker open** (calls
//!   short-circuit without touching the network), or an answer that is not the
//!   expected JSON — the answer is the **fallback multiplier 1.0** with the fare
//!   computed locally from the client's tariff, marked `fallback: true`, counted
//!   in `casebook_uber_pricing_fallback_total{cause}` and in [`PricingClientStats`];
//! - **the breaker** (Hystrix semantics, from the kit) opens after enough failed
//!   calls, lets one trial through after its sleep window, and closes when the
//!   trial succeeds — so a restarted service is used again without any action;
//! - **4xx is not a failure**: the service is healthy and the request wrong
//!   ([`PricingError::Rejected`], naming the field), no fallback, breaker unharmed;
//! - quotes and multiplier reads are side-effect free, so they may be retried
//!   (default 2 attempts, within the kit's retry budget); signals are not
//!   retried (a retry after a lost answer would count them twice) and have no
//!   fallback: losing a batch of signals only makes surge lag.
//!
//! - **where**: a fixed base URL ([`PricingTarget::Url`]), or — what the platform
//!   uses — the nearest `UP` instance of `uber-pricing` resolved through discovery
//!   on every call ([`PricingTarget::Discovered`]; the kit's resolver caches the
//!   answer for a few seconds, so a moved or restarted service is found again). An
//!   unresolvable service is a failure like a refused connection: the fallback.
//!
//! Deliberately absent: caching multipliers (a stale multiplier is a wrong price;
//! the fallback is the honest answer).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use casebook_kit::clock::SharedClock;
use casebook_kit::resilience::breaker::{BreakerRegistry, CircuitBreaker};
use casebook_kit::resilience::stack::{ResilienceConfig, ResilientClient, StackBuilder};
use casebook_kit::resilience::{BoxError, FailureKind, mark_idempotent};
use http::{Method, StatusCode, header};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::quote::{Quote, Tariff, expiry_ms};
use super::surge::{CellSurge, Signal, SignalReport, SurgeConfig};
use super::{QuoteRequest, SignalsRequest, WireSignal};
use crate::index::LatLng;
use casebook_kit::resolve::Resolver;
use casebook_kit::topology::Placement;

/// Where the client finds the pricing service.
#[derive(Debug, Clone)]
pub enum PricingTarget {
    /// A fixed base URL, e.g. `http://127.0.0.1:8091`.
    Url(String),
    /// The nearest `UP` instance of `uber-pricing` as seen from `near`.
    Discovered {
        resolver: Arc<Resolver>,
        near: Placement,
    },
}

impl PartialEq for PricingTarget {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Url(a), Self::Url(b)) => a == b,
            (
                Self::Discovered {
                    resolver: a,
                    near: x,
                },
                Self::Discovered {
                    resolver: b,
                    near: y,
                },
            ) => Arc::ptr_eq(a, b) && x == y,
            _ => false,
        }
    }
}

/// The dependency name: the breaker's, the bulkhead's and the metrics' label.
pub const DEPENDENCY: &str = "pricing";

/// The multiplier answered while pricing cannot be asked.
pub const FALLBACK_MULTIPLIER: f64 = 1.0;

/// How the client calls pricing and what it answers when it cannot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PricingClientConfig {
    /// The stack's numbers; by default a 250 ms timeout, 2 attempts, Hystrix's breaker.
    pub resilience: ResilienceConfig,
    /// The tariff fallback fares are computed with (the service's, normally).
    pub tariff: Tariff,
    /// The S2 level fallback answers name their cell at (the service's).
    pub level: u8,
    /// How long a fallback quote is valid: short, so the rider soon gets a real price.
    pub fallback_ttl_secs: u64,
}

impl Default for PricingClientConfig {
    fn default() -> Self {
        let mut resilience = ResilienceConfig::default();
        // Pricing answers in microseconds; a quote waiting longer than this is
        // better served flat than late.
        resilience.timeout.default = Duration::from_millis(250);
        resilience.retry.max_attempts = 2;
        Self {
            resilience,
            tariff: Tariff::default(),
            level: SurgeConfig::default().level,
            fallback_ttl_secs: 30,
        }
    }
}

/// Why a call to pricing gave no answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PricingError {
    /// The request is wrong: the service (or the client's own tariff, for a
    /// fallback) refused it; `field` names the part at fault.
    #[error("pricing refused the request ({status}): {error}{}", field.as_deref().map(|f| format!(" [field `{f}`]")).unwrap_or_default())]
    Rejected {
        status: StatusCode,
        error: String,
        field: Option<String>,
    },
    /// The service could not be reached (signals only: reads fall back instead).
    #[error("pricing is unavailable ({cause}): {error}")]
    Unavailable { cause: &'static str, error: String },
}

/// A multiplier as the client answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Multiplier {
    pub multiplier: f64,
    /// The S2 token of the cell.
    pub cell: String,
    /// True when pricing could not be asked and this is [`FALLBACK_MULTIPLIER`].
    pub fallback: bool,
}

/// What the client has done since it was built.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PricingClientStats {
    /// Reads the service answered.
    pub answered: u64,
    /// Reads answered with the fallback.
    pub fallbacks: u64,
    /// Fallbacks by cause (`short_circuited`, `timeout`, `other`, `upstream`, `bad_answer`, …).
    pub fallback_causes: BTreeMap<String, u64>,
    /// Requests refused as wrong (4xx).
    pub rejected: u64,
}

#[derive(Debug, Default)]
struct Counters {
    answered: AtomicU64,
    fallbacks: AtomicU64,
    rejected: AtomicU64,
    causes: Mutex<BTreeMap<String, u64>>,
}

/// A client of the `pricing` service. Cheap to clone; clones share the stack.
#[derive(Debug, Clone)]
pub struct PricingClient {
    http: ResilientClient,
    /// Set when the service is found through discovery (requests then carry an
    /// absolute URI); `None`: relative paths go to the stack's base URL.
    discovered: Option<(Arc<Resolver>, Placement)>,
    config: Arc<PricingClientConfig>,
    clock: SharedClock,
    counters: Arc<Counters>,
}

/// The service's JSON error body.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: String,
    #[serde(default)]
    field: Option<String>,
}

/// A call's outcome before the fallback decision.
enum Outcome<T> {
    Answer(T),
    Rejected(PricingError),
    Failed(&'static str, String),
}

impl PricingClient {
    /// A client of the service at `base_url` (`http://127.0.0.1:8091`), its
    /// breaker in the process's registry, on the system clock.
    pub fn new(base_url: &str, config: PricingClientConfig) -> Result<Self, String> {
        Self::with_registry(base_url, config, BreakerRegistry::global().clone())
    }

    /// A client of the service wherever `target` says, its breaker in `registry`.
    pub fn to_target(
        target: &PricingTarget,
        config: PricingClientConfig,
        registry: BreakerRegistry,
    ) -> Result<Self, String> {
        match target {
            PricingTarget::Url(url) => Self::with_registry(url, config, registry),
            PricingTarget::Discovered { resolver, near } => {
                let mut client = Self::build(None, config, registry)?;
                client.discovered = Some((resolver.clone(), near.clone()));
                Ok(client)
            }
        }
    }

    /// A client whose breaker lives in `registry` and whose stack runs on the
    /// registry's clock (tests use a `ManualClock` to step the breaker).
    pub fn with_registry(
        base_url: &str,
        config: PricingClientConfig,
        registry: BreakerRegistry,
    ) -> Result<Self, String> {
        Self::build(Some(base_url), config, registry)
    }

    fn build(
        base_url: Option<&str>,
        config: PricingClientConfig,
        registry: BreakerRegistry,
    ) -> Result<Self, String> {
        config
            .tariff
            .validate()
            .map_err(|e| format!("pricing_client.{e}"))?;
        if config.level > 30 {
            return Err(format!(
                "pricing_client.level: must be 0..=30, got {}",
                config.level
            ));
        }
        if !(1..=86_400).contains(&config.fallback_ttl_secs) {
            return Err(format!(
                "pricing_client.fallback_ttl_secs: must be 1..=86400, got {}",
                config.fallback_ttl_secs
            ));
        }
        let builder = StackBuilder::new(DEPENDENCY, config.resilience.clone()).registry(registry);
        let clock = builder.clock();
        let http = ResilientClient::with_builder(builder, base_url)
            .map_err(|e| format!("pricing_client.resilience.{}: {}", e.field, e.reason))?;
        Ok(Self {
            http,
            discovered: None,
            config: Arc::new(config),
            clock,
            counters: Arc::default(),
        })
    }

    /// The dependency's breaker (its state and Hystrix counts).
    pub fn breaker(&self) -> &CircuitBreaker {
        self.http.breaker()
    }

    /// What the client has done so far.
    pub fn stats(&self) -> PricingClientStats {
        PricingClientStats {
            answered: self.counters.answered.load(Ordering::Relaxed),
            fallbacks: self.counters.fallbacks.load(Ordering::Relaxed),
            fallback_causes: self.counters.causes.lock().clone(),
            rejected: self.counters.rejected.load(Ordering::Relaxed),
        }
    }

    /// A quote for a ride from `pickup` to `dropoff`: the service's, or the
    /// fallback (multiplier 1.0, `fallback: true`). An error only for a request
    /// that is itself wrong (e.g. a trip too long).
    pub async fn quote(&self, pickup: LatLng, dropoff: LatLng) -> Result<Quote, PricingError> {
        let body = QuoteRequest {
            pickup: pickup.into(),
            dropoff: dropoff.into(),
        };
        match self
            .call::<Quote, _>(Method::POST, "/v1/quote", Some(&body))
            .await
        {
            Outcome::Answer(quote) => Ok(self.answered(quote)),
            Outcome::Rejected(err) => Err(self.rejected(err)),
            Outcome::Failed(cause, error) => {
                let estimate = self.config.tariff.estimate(pickup, dropoff).map_err(|e| {
                    self.rejected(PricingError::Rejected {
                        status: StatusCode::BAD_REQUEST,
                        error: e.to_string(),
                        field: Some(e.field().into()),
                    })
                })?;
                self.fell_back(cause, &error);
                let ttl = Duration::from_secs(self.config.fallback_ttl_secs);
                Ok(self.config.tariff.quote(
                    estimate,
                    FALLBACK_MULTIPLIER,
                    self.cell_token(pickup),
                    expiry_ms(self.clock.wall(), ttl),
                    true,
                ))
            }
        }
    }

    /// The multiplier at `at`: the service's, or the fallback.
    pub async fn multiplier(&self, at: LatLng) -> Multiplier {
        let path = format!("/v1/multiplier?lat={}&lon={}", at.lat(), at.lon());
        match self.call::<CellSurge, ()>(Method::GET, &path, None).await {
            Outcome::Answer(surge) => self.answered(Multiplier {
                multiplier: surge.multiplier,
                cell: surge.cell,
                fallback: false,
            }),
            // A validated position cannot be refused; if the service does, it is
            // not answering what we asked: price flat.
            Outcome::Rejected(err) => self.fallback_multiplier(at, "rejected", &err.to_string()),
            Outcome::Failed(cause, error) => self.fallback_multiplier(at, cause, &error),
        }
    }

    /// Sends a batch of signals (not retried, no fallback; see the module doc).
    pub async fn send_signals(&self, signals: &[Signal]) -> Result<SignalReport, PricingError> {
        let body = SignalsRequest {
            signals: signals.iter().copied().map(WireSignal::from).collect(),
        };
        match self
            .call::<SignalReport, _>(Method::POST, "/v1/signals", Some(&body))
            .await
        {
            Outcome::Answer(report) => Ok(report),
            Outcome::Rejected(err) => Err(self.rejected(err)),
            Outcome::Failed(cause, error) => {
                metrics::counter!("casebook_uber_pricing_signals_lost_total", "cause" => cause)
                    .increment(signals.len() as u64);
                Err(PricingError::Unavailable { cause, error })
            }
        }
    }

    fn cell_token(&self, at: LatLng) -> String {
        SurgeConfig {
            level: self.config.level,
            ..SurgeConfig::default()
        }
        .cell_of(at)
        .to_token()
    }

    fn fallback_multiplier(&self, at: LatLng, cause: &'static str, error: &str) -> Multiplier {
        self.fell_back(cause, error);
        Multiplier {
            multiplier: FALLBACK_MULTIPLIER,
            cell: self.cell_token(at),
            fallback: true,
        }
    }

    fn answered<T>(&self, value: T) -> T {
        self.counters.answered.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("casebook_uber_pricing_client_total", "outcome" => "answered")
            .increment(1);
        value
    }

    fn rejected(&self, err: PricingError) -> PricingError {
        self.counters.rejected.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("casebook_uber_pricing_client_total", "outcome" => "rejected")
            .increment(1);
        err
    }

    fn fell_back(&self, cause: &'static str, error: &str) {
        self.counters.fallbacks.fetch_add(1, Ordering::Relaxed);
        *self.counters.causes.lock().entry(cause.into()).or_default() += 1;
        metrics::counter!("casebook_uber_pricing_client_total", "outcome" => "fallback")
            .increment(1);
        metrics::counter!("casebook_uber_pricing_fallback_total", "cause" => cause).increment(1);
        tracing::debug!(cause, error, "pricing fallback");
    }

    /// One call through the stack, sorted into answer / wrong request / failure.
    async fn call<T: DeserializeOwned, B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Outcome<T> {
        let bytes = match body.map(serde_json::to_vec).transpose() {
            Ok(bytes) => bytes.map(Bytes::from).unwrap_or_default(),
            Err(e) => return Outcome::Failed("other", e.to_string()),
        };
        let uri = match &self.discovered {
            None => path.to_owned(),
            Some((resolver, near)) => match resolver.resolve(super::PRICING_SERVICE, near).await {
                Ok(address) => format!("http://{address}{path}"),
                Err(e) => return Outcome::Failed("unresolved", e.to_string()),
            },
        };
        let mut request = match http::Request::builder()
            .method(method.clone())
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(bytes)
        {
            Ok(r) => r,
            Err(e) => return Outcome::Failed("other", e.to_string()),
        };
        // Reads are side-effect free: a retry cannot count anything twice.
        if method == Method::GET || path == "/v1/quote" {
            mark_idempotent(&mut request);
        }
        let response = match self.http.send(request).await {
            Ok(response) => response,
            Err(err) => {
                // The instance we were given may be gone: ask discovery next time.
                if let Some((resolver, _)) = &self.discovered {
                    resolver.forget(super::PRICING_SERVICE);
                }
                return Outcome::Failed(cause_of(&err), err.to_string());
            }
        };
        let status = response.status();
        if status.is_client_error() {
            let (error, field) = match serde_json::from_slice::<ErrorBody>(response.body()) {
                Ok(body) => (body.error, body.field),
                Err(_) => (String::from_utf8_lossy(response.body()).into_owned(), None),
            };
            return Outcome::Rejected(PricingError::Rejected {
                status,
                error,
                field,
            });
        }
        if !status.is_success() {
            return Outcome::Failed("bad_answer", format!("unexpected status {status}"));
        }
        match serde_json::from_slice(response.body()) {
            Ok(value) => Outcome::Answer(value),
            Err(e) => Outcome::Failed("bad_answer", e.to_string()),
        }
    }
}

fn cause_of(err: &BoxError) -> &'static str {
    FailureKind::of(err).as_str()
}
