//! The discovery client, and the JSON the discovery API speaks.
//!
//! The control plane serves discovery with Eureka's semantics (see
//! `casebook_control::discovery`); this module is the other half:
//!
//! - the wire types ([`Registration`], [`InstanceView`], [`Applications`],
//!   [`ServiceInstances`], [`DiscoveryStatus`]), defined here once and used by the server
//!   too, so client and server cannot drift apart;
//! - [`DiscoveryClient`], one HTTP call per method, no retries of its own (callers wrap
//!   it in the resilience stack, so retries are never stacked);
//! - [`LeaseKeeper`], the heartbeat task every instance runs: it registers, renews every
//!   renew interval, re-registers when the server has forgotten the instance (404), backs
//!   off (bounded, jittered) on transport errors, and on [`LeaseKeeper::stop`] cancels the
//!   registration. Dropping a keeper without `stop` only stops the heartbeat, as a killed
//!   process would: the server then lets the lease expire.
//!
//! Deliberately absent: a local cache of the registry with delta fetches (Eureka's
//! client keeps one; here callers resolve per call or cache with the kit's cache), and
//! failover between several discovery servers (there is one control plane).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{Method, StatusCode};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::http_client::{HttpError, HttpResponse, Reachability, ReachabilityChange};
use crate::resilience::stack::{ResilienceConfig, ResilientClient, UpstreamStatus};
use crate::topology::{InstanceInfo, InstanceStatus, Placement};

/// Where the discovery API lives on the control plane.
pub const API_PREFIX: &str = "/api/discovery";

/// An instance asking to be registered (the body of `POST /api/discovery/apps/{service}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// Who the instance is and where it listens; `instance.service` must match the path.
    pub instance: InstanceInfo,
    /// The status it registers with (Eureka: `STARTING` while warming up, then `UP`).
    #[serde(default)]
    pub status: InstanceStatus,
    /// The lease it asks for, in seconds; the server's `lease_duration` if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_duration_secs: Option<u64>,
    /// Free-form labels (e.g. `canary=true`), bounded in number and size by the server.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

impl Registration {
    /// An `UP` registration with the server's default lease and no metadata.
    pub fn up(instance: InstanceInfo) -> Self {
        Self {
            instance,
            status: InstanceStatus::Up,
            lease_duration_secs: None,
            metadata: BTreeMap::new(),
        }
    }
}

/// One registered instance, as the server reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceView {
    pub instance: InstanceInfo,
    /// The effective status: the override if one is set, else the registered status.
    pub status: InstanceStatus,
    /// The status set by an operator (`PUT …/status`), which wins over re-registrations.
    #[serde(default)]
    pub overridden_status: Option<InstanceStatus>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// The lease the instance holds, in milliseconds.
    pub lease_duration_ms: u64,
    /// Wall-clock milliseconds since the Unix epoch of the first registration.
    pub registered_at_ms: u64,
    /// Wall-clock milliseconds since the Unix epoch of the last renewal (or registration).
    pub last_renewed_at_ms: u64,
}

/// Every registered instance, grouped by service (`GET /api/discovery/apps`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Applications {
    /// Service name → its instances, ordered by instance id.
    pub services: BTreeMap<String, Vec<InstanceView>>,
}

/// One service's instances, nearest first (`GET /api/discovery/apps/{service}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceInstances {
    pub service: String,
    /// Same zone as the caller first, then same region, then the rest; by instance id
    /// within each group. Only `UP` instances unless `all_statuses=true` was asked.
    pub instances: Vec<InstanceView>,
}

/// The registry's health (`GET /api/discovery/status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryStatus {
    /// Instances registered now.
    pub instances: u64,
    /// Clients expected to send renewals (Eureka's `expectedNumberOfClientsSendingRenews`).
    pub expected_clients: u64,
    /// `expected_clients × 60 / renew_interval`.
    pub expected_renews_per_min: f64,
    /// `floor(expected_renews_per_min × renewal_threshold)`.
    pub renewal_threshold: u64,
    /// Renewals counted in the last complete minute.
    pub renews_last_minute: u64,
    /// Whether self-preservation is switched on in the configuration.
    pub self_preservation_enabled: bool,
    /// Whether expiry-based eviction is suspended right now.
    pub self_preservation_active: bool,
    /// Instances evicted for an expired lease since the server started.
    pub evictions_total: u64,
}

/// What a renewal found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewOutcome {
    /// The lease was extended.
    Renewed,
    /// The server does not know the instance (evicted, cancelled, or the server
    /// restarted); the instance should register again.
    UnknownInstance,
}

/// Why a discovery call failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The server does not know this instance.
    #[error("discovery does not know instance `{instance_id}` of `{service}`")]
    UnknownInstance {
        service: String,
        instance_id: String,
    },
    /// The server refused the request; `field` names the part at fault, if one is.
    #[error("discovery refused the request ({status}): {error}{}", field.as_deref().map(|f| format!(" [field `{f}`]")).unwrap_or_default())]
    Rejected {
        status: StatusCode,
        error: String,
        field: Option<String>,
    },
    /// The call did not get an answer (or got one that is not the expected JSON).
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The resilience stack refused the call: the breaker is open, the bulkhead is
    /// full, or the attempt timed out.
    #[error("discovery is unavailable: {0}")]
    Unavailable(String),
}

impl DiscoveryError {
    /// The field the server blamed, for a rejected request.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Rejected { field, .. } => field.as_deref(),
            _ => None,
        }
    }
}

/// The JSON error body the server answers with (see `casebook_kit::api::ApiError`).
#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: String,
    #[serde(default)]
    field: Option<String>,
}

/// A client of the control plane's discovery API.
///
/// Every call goes through the resilience stack of the `discovery` dependency
/// (timeout, circuit breaker, bulkhead) and is never retried there: the
/// [`LeaseKeeper`]'s own backoff is the one retry loop on this call path.
#[derive(Debug, Clone)]
pub struct DiscoveryClient {
    http: ResilientClient,
    base_url: String,
    /// The control plane's token, sent as `Authorization: Bearer` on every call.
    token: Option<http::HeaderValue>,
}

/// The dependency name of the discovery server, for its breaker and metrics.
pub const DEPENDENCY: &str = "discovery";

impl DiscoveryClient {
    /// A client of the control plane at `base_url` (e.g. `http://127.0.0.1:7700`),
    /// through the process's `discovery` stack ([`default_resilience`]).
    pub fn new(base_url: impl Into<String>) -> Self {
        let http = ResilientClient::for_dependency(DEPENDENCY, &default_resilience())
            .expect("the default discovery resilience config is valid");
        Self::with_client(base_url, http)
    }

    /// A client calling through the given stack.
    pub fn with_client(base_url: impl Into<String>, http: ResilientClient) -> Self {
        let base_url = base_url.into().trim_end_matches('/').to_owned();
        Self {
            http,
            base_url,
            token: None,
        }
    }

    /// Sends `token` (the control plane's) with every call; `None` sends none.
    pub fn with_token(mut self, token: Option<&str>) -> Self {
        self.token = token.and_then(crate::http_client::bearer);
        self
    }

    /// The control plane's base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn apps_url(&self) -> String {
        format!("{}{API_PREFIX}/apps", self.base_url)
    }

    fn service_url(&self, service: &str) -> String {
        format!("{}/{}", self.apps_url(), encode_segment(service))
    }

    fn instance_url(&self, service: &str, instance_id: &str) -> String {
        format!(
            "{}/{}",
            self.service_url(service),
            encode_segment(instance_id)
        )
    }

    /// Registers (or re-registers) an instance.
    pub async fn register(&self, registration: &Registration) -> Result<(), DiscoveryError> {
        let url = self.service_url(&registration.instance.service);
        let body = serde_json::to_vec(registration).map_err(|e| HttpError::InvalidRequest {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        let response = self.send(Method::POST, &url, headers, body.into()).await?;
        expect_success(response.status, &response.body, None)
    }

    /// Renews an instance's lease.
    pub async fn renew(
        &self,
        service: &str,
        instance_id: &str,
    ) -> Result<RenewOutcome, DiscoveryError> {
        let url = self.instance_url(service, instance_id);
        let response = self
            .send(Method::PUT, &url, Default::default(), Default::default())
            .await?;
        match expect_success(
            response.status,
            &response.body,
            Some((service, instance_id)),
        ) {
            Ok(()) => Ok(RenewOutcome::Renewed),
            Err(DiscoveryError::UnknownInstance { .. }) => Ok(RenewOutcome::UnknownInstance),
            Err(other) => Err(other),
        }
    }

    /// Cancels a registration (graceful stop).
    pub async fn cancel(&self, service: &str, instance_id: &str) -> Result<(), DiscoveryError> {
        let url = self.instance_url(service, instance_id);
        let response = self
            .send(Method::DELETE, &url, Default::default(), Default::default())
            .await?;
        expect_success(
            response.status,
            &response.body,
            Some((service, instance_id)),
        )
    }

    /// Overrides an instance's status (e.g. `OUT_OF_SERVICE` to take it out of rotation).
    pub async fn set_status(
        &self,
        service: &str,
        instance_id: &str,
        status: InstanceStatus,
    ) -> Result<(), DiscoveryError> {
        let url = format!(
            "{}/status?value={status}",
            self.instance_url(service, instance_id)
        );
        let response = self
            .send(Method::PUT, &url, Default::default(), Default::default())
            .await?;
        expect_success(
            response.status,
            &response.body,
            Some((service, instance_id)),
        )
    }

    /// The `UP` instances of `service`, nearest to `near` first when given.
    pub async fn instances(
        &self,
        service: &str,
        near: Option<&Placement>,
    ) -> Result<Vec<InstanceView>, DiscoveryError> {
        let mut url = self.service_url(service);
        if let Some(placement) = near {
            url.push_str(&format!(
                "?region={}&zone={}",
                encode_segment(&placement.region),
                encode_segment(&placement.zone)
            ));
        }
        let answer: ServiceInstances = self.get(&url).await?;
        Ok(answer.instances)
    }

    /// Every registered instance, grouped by service.
    pub async fn all(&self) -> Result<Applications, DiscoveryError> {
        self.get(&self.apps_url()).await
    }

    /// The registry's health: counts, threshold, self-preservation.
    pub async fn status(&self) -> Result<DiscoveryStatus, DiscoveryError> {
        self.get(&format!("{}{API_PREFIX}/status", self.base_url))
            .await
    }

    /// One call through the stack; any answer the server gave comes back as a
    /// response (5xx included), everything else as an error.
    async fn send(
        &self,
        method: Method,
        url: &str,
        headers: http::HeaderMap,
        body: bytes::Bytes,
    ) -> Result<HttpResponse, DiscoveryError> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(url)
            .body(body)
            .map_err(|e| HttpError::InvalidRequest {
                url: url.to_owned(),
                reason: e.to_string(),
            })?;
        *request.headers_mut() = headers;
        if let Some(token) = &self.token {
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, token.clone());
        }
        match self.http.send(request).await {
            Ok(response) => {
                let (parts, body) = response.into_parts();
                Ok(HttpResponse {
                    status: parts.status,
                    headers: parts.headers,
                    body,
                })
            }
            Err(err) => {
                let err = match err.downcast::<UpstreamStatus>() {
                    Ok(upstream) => {
                        return Ok(HttpResponse {
                            status: upstream.status,
                            headers: Default::default(),
                            body: upstream.body,
                        });
                    }
                    Err(err) => err,
                };
                match err.downcast::<HttpError>() {
                    Ok(http) => Err(DiscoveryError::Http(*http)),
                    Err(other) => Err(DiscoveryError::Unavailable(other.to_string())),
                }
            }
        }
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, DiscoveryError> {
        let response = self
            .send(Method::GET, url, Default::default(), Default::default())
            .await?;
        expect_success(response.status, &response.body, None)?;
        serde_json::from_slice(&response.body).map_err(|source| {
            DiscoveryError::Http(HttpError::Decode {
                method: Method::GET,
                url: url.to_owned(),
                source,
            })
        })
    }
}

/// The stack for discovery calls: a 2 s timeout per call, the standard breaker,
/// and a bulkhead wide enough for a fleet's instances registering at once (64 in
/// flight, 1024 queued). Retries are off here (see [`DiscoveryClient`]).
pub fn default_resilience() -> ResilienceConfig {
    let mut config = ResilienceConfig::default();
    config.timeout.default = Duration::from_secs(2);
    config.bulkhead.max_concurrent = 64;
    config.bulkhead.max_queue = 1024;
    config
}

/// Maps a non-2xx answer to the error it means; `instance` names what a 404 is about.
fn expect_success(
    status: StatusCode,
    body: &[u8],
    instance: Option<(&str, &str)>,
) -> Result<(), DiscoveryError> {
    if status.is_success() {
        return Ok(());
    }
    if let (StatusCode::NOT_FOUND, Some((service, instance_id))) = (status, instance) {
        return Err(DiscoveryError::UnknownInstance {
            service: service.to_owned(),
            instance_id: instance_id.to_owned(),
        });
    }
    let (error, field) = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(parsed) => (parsed.error, parsed.field),
        Err(_) => (String::from_utf8_lossy(body).into_owned(), None),
    };
    Err(DiscoveryError::Rejected {
        status,
        error,
        field,
    })
}

/// Percent-encodes one path segment or query value (RFC 3986 unreserved pass through).
fn encode_segment(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Counters of what a [`LeaseKeeper`] has done, for tests and dashboards.
#[derive(Debug, Default)]
pub struct LeaseStats {
    registrations: AtomicU64,
    renewals: AtomicU64,
    failures: AtomicU64,
    outages: AtomicU64,
}

impl LeaseStats {
    /// Successful registrations, the first one included.
    pub fn registrations(&self) -> u64 {
        self.registrations.load(Ordering::Relaxed)
    }
    /// Successful renewals.
    pub fn renewals(&self) -> u64 {
        self.renewals.load(Ordering::Relaxed)
    }
    /// Calls that failed (transport errors, refusals).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
    /// Runs of consecutive failures: each is logged once, however many calls fail.
    pub fn outages(&self) -> u64 {
        self.outages.load(Ordering::Relaxed)
    }
}

/// The heartbeat of one instance: keeps its registration alive until stopped.
#[derive(Debug)]
pub struct LeaseKeeper {
    client: DiscoveryClient,
    service: String,
    instance_id: String,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
    stats: Arc<LeaseStats>,
}

/// The shortest wait before retrying a failed call, whatever the renew interval.
const MIN_BACKOFF: Duration = Duration::from_millis(10);

impl LeaseKeeper {
    /// Spawns the heartbeat on the current tokio runtime: register now, then renew
    /// every `renew_interval`.
    ///
    /// A renewal answered 404 registers again at once. A failed call is retried after
    /// a backoff that starts at a tenth of the interval, doubles per consecutive
    /// failure, never exceeds the interval, and is jittered over its upper half, so a
    /// fleet does not stampede a restarting control plane. A registration the server
    /// refuses (400, 401) is retried the same way: it will not pass until the
    /// configuration is fixed, but giving up would hide it. Failures are logged once
    /// per change ([`Reachability`]): a warning when calls start failing, with the
    /// error, and a line when they succeed again — never once per failed call.
    ///
    /// # Panics
    /// Outside a tokio runtime, or if `renew_interval` is zero.
    pub fn start(
        client: DiscoveryClient,
        registration: Registration,
        renew_interval: Duration,
    ) -> LeaseKeeper {
        assert!(!renew_interval.is_zero(), "renew interval must be positive");
        let cancel = CancellationToken::new();
        let stats = Arc::new(LeaseStats::default());
        let service = registration.instance.service.clone();
        let instance_id = registration.instance.instance_id.clone();
        let task = tokio::spawn(heartbeat(
            client.clone(),
            registration,
            renew_interval,
            cancel.clone(),
            stats.clone(),
        ));
        LeaseKeeper {
            client,
            service,
            instance_id,
            cancel,
            task: Some(task),
            stats,
        }
    }

    /// What the heartbeat has done so far; the handle outlives the keeper, and the
    /// heartbeat task holds one until it ends.
    pub fn stats(&self) -> Arc<LeaseStats> {
        self.stats.clone()
    }

    /// Stops renewing and cancels the registration (graceful stop).
    ///
    /// Waits for any call in flight to finish first, so a late renewal or
    /// registration can never land after the cancel. An instance the server no longer
    /// knows counts as cancelled.
    pub async fn stop(mut self) -> Result<(), DiscoveryError> {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            // The task only ends by seeing the token; a panic in it is a bug worth
            // surfacing, but the cancel below must still go out.
            if let Err(err) = task.await {
                tracing::error!(error = %err, "lease keeper task failed");
            }
        }
        match self.client.cancel(&self.service, &self.instance_id).await {
            Ok(()) | Err(DiscoveryError::UnknownInstance { .. }) => Ok(()),
            Err(err) => Err(err),
        }
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        // Without `stop`, the heartbeat just ends, as a killed process's would.
        self.cancel.cancel();
    }
}

async fn heartbeat(
    client: DiscoveryClient,
    registration: Registration,
    renew_interval: Duration,
    cancel: CancellationToken,
    stats: Arc<LeaseStats>,
) {
    let service = registration.instance.service.as_str();
    let instance_id = registration.instance.instance_id.as_str();
    let mut registered = false;
    let mut consecutive_failures: u32 = 0;
    let mut control_plane = Reachability::default();
    loop {
        // Calls are never abandoned half-way (only the waits are cancellable), so
        // `stop` can cancel knowing nothing of ours is still in flight.
        let outcome = if registered {
            client.renew(service, instance_id).await
        } else {
            client
                .register(&registration)
                .await
                .map(|()| RenewOutcome::Renewed)
        };
        match (&outcome, registered) {
            (Ok(RenewOutcome::Renewed), true) => {
                stats.renewals.fetch_add(1, Ordering::Relaxed);
            }
            (Ok(RenewOutcome::Renewed), false) => {
                stats.registrations.fetch_add(1, Ordering::Relaxed);
                registered = true;
            }
            (Ok(RenewOutcome::UnknownInstance), _) => {
                tracing::info!(
                    service,
                    instance_id,
                    "discovery forgot us; registering again"
                );
                registered = false;
            }
            (Err(_), _) => {}
        }
        let wait = match outcome {
            Ok(RenewOutcome::Renewed) => {
                consecutive_failures = 0;
                if let Some(ReachabilityChange::ReachableAgain { failed_calls }) =
                    control_plane.succeeded()
                {
                    tracing::info!(
                        service,
                        instance_id,
                        failed_calls,
                        "control plane reachable again"
                    );
                }
                renew_interval
            }
            // Re-register straight away: the instance is invisible until we do.
            Ok(RenewOutcome::UnknownInstance) => Duration::ZERO,
            Err(err) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                consecutive_failures = consecutive_failures.saturating_add(1);
                let wait = backoff(renew_interval, consecutive_failures);
                if control_plane.failed().is_some() {
                    stats.outages.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(service, instance_id, error = %err, "control plane unreachable: discovery heartbeat failed; retrying with backoff");
                } else {
                    tracing::debug!(service, instance_id, error = %err, retry_in = ?wait, "discovery heartbeat failed again");
                }
                wait
            }
        };
        if cancel.is_cancelled() {
            return;
        }
        if !wait.is_zero() {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// The wait before retry number `failures` (≥ 1): `interval/10 × 2^(failures−1)`,
/// capped at `interval`, jittered uniformly over its upper half.
fn backoff(interval: Duration, failures: u32) -> Duration {
    debug_assert!(failures >= 1);
    let base = (interval / 10).max(MIN_BACKOFF).min(interval);
    let exponent = failures.saturating_sub(1).min(16);
    let capped = base.saturating_mul(1 << exponent).min(interval);
    let half = capped / 2;
    let jitter_nanos = rand::rng().random_range(0..=half.as_nanos() as u64);
    half + Duration::from_nanos(jitter_nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_within_the_interval() {
        let interval = Duration::from_secs(30);
        for failures in 1..40 {
            let wait = backoff(interval, failures);
            assert!(wait <= interval, "{failures}: {wait:?}");
            let expected_cap =
                (Duration::from_secs(3) * (1 << (failures - 1).min(16))).min(interval);
            assert!(wait >= expected_cap / 2, "{failures}: {wait:?}");
            assert!(wait <= expected_cap, "{failures}: {wait:?}");
        }
        // A tiny interval still waits at least the floor's half, never more than it.
        let wait = backoff(Duration::from_millis(1), 3);
        assert!(wait <= Duration::from_millis(1));
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(encode_segment("chat-us-east-a-1"), "chat-us-east-a-1");
        assert_eq!(encode_segment("a/b c"), "a%2Fb%20c");
        assert_eq!(encode_segment("é"), "%C3%A9");
    }

    #[test]
    fn registration_json_is_strict_and_defaults_apply() {
        let json = r#"{"instance":{"service":"chat","instance_id":"chat-1","region":"us-east",
            "zone":"us-east-a","address":"127.0.0.1:5222","version":"0.1.0"}}"#;
        let reg: Registration = crate::api::parse_json(json.as_bytes()).unwrap();
        assert_eq!(reg.status, InstanceStatus::Up);
        assert_eq!(reg.lease_duration_secs, None);
        assert!(reg.metadata.is_empty());

        let bad = json.replace("\"chat-1\"", "7");
        let err = crate::api::parse_json::<Registration>(bad.as_bytes()).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("instance.instance_id"));

        let unknown = json.replacen('{', r#"{"leese":1,"#, 1);
        let err = crate::api::parse_json::<Registration>(unknown.as_bytes()).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn error_answers_map_to_what_they_mean() {
        let not_found = expect_success(StatusCode::NOT_FOUND, b"{}", Some(("chat", "chat-1")));
        assert!(matches!(
            not_found,
            Err(DiscoveryError::UnknownInstance { ref instance_id, .. }) if instance_id == "chat-1"
        ));
        let rejected = expect_success(
            StatusCode::BAD_REQUEST,
            br#"{"error":"unknown zone","field":"instance.zone"}"#,
            None,
        )
        .unwrap_err();
        assert_eq!(rejected.field(), Some("instance.zone"));
        let plain = expect_success(StatusCode::BAD_GATEWAY, b"upstream", None).unwrap_err();
        assert!(
            matches!(plain, DiscoveryError::Rejected { ref error, field: None, .. } if error == "upstream")
        );
        assert!(expect_success(StatusCode::NO_CONTENT, b"", None).is_ok());
    }
}

/// Registers every instance the [`Platform`](crate::runtime::Platform) starts with
/// the control plane's discovery, each with its own [`LeaseKeeper`].
#[derive(Debug, Clone)]
pub struct DiscoveryRegistrar {
    client: DiscoveryClient,
    renew_interval: Duration,
}

impl DiscoveryRegistrar {
    /// Registers with the discovery server at `client`, renewing every `renew_interval`.
    pub fn new(client: DiscoveryClient, renew_interval: Duration) -> Self {
        Self {
            client,
            renew_interval,
        }
    }
}

impl crate::runtime::Registrar for DiscoveryRegistrar {
    fn register(&self, info: InstanceInfo) -> Box<dyn crate::runtime::Lease> {
        Box::new(LeaseKeeper::start(
            self.client.clone(),
            Registration::up(info),
            self.renew_interval,
        ))
    }
}

impl crate::runtime::Lease for LeaseKeeper {
    fn release(self: Box<Self>) -> crate::runtime::BoxFuture<'static, ()> {
        Box::pin(async move {
            let instance = self.instance_id.clone();
            if let Err(err) = self.stop().await {
                tracing::warn!(%instance, error = %err, "could not cancel the registration; it will expire");
            }
        })
    }
}
