//! Idempotency keys, with the semantics of Stripe's keys and the IETF
//! `Idempotency-Key` header draft.
//!
//! A request carries a key (at most [`MAX_KEY_LEN`] printable ASCII characters) and
//! is summarised by a [`Fingerprint`]. The first request with a key executes; its
//! status, content type and body are stored durably on a [`Wal`] and replayed
//! byte-identical to every retry within the retention window.
//!
//! # Guarantees
//! - Same key, same fingerprint, after completion → the stored response, verbatim.
//! - Same key, different fingerprint → [`IdempotencyError::FingerprintMismatch`] (422).
//! - Same key while the first execution is in flight → [`IdempotencyError::InFlight`] (409).
//! - Key required but missing → [`IdempotencyError::MissingKey`] (400); malformed → 400.
//! - A completed key is remembered for [`IdempotencyConfig::retention`] (24 h by
//!   default, measured on the injected clock's wall time, so it survives restarts);
//!   after that the key may execute anew.
//! - A response is acknowledged to the store only once its WAL record is durable, so
//!   a restart replays every response the store recorded.
//! - Bounded: at most [`IdempotencyConfig::max_keys`] keys are held; beyond that new
//!   keys are refused with [`IdempotencyError::Full`] (503) rather than evicting a
//!   live key.
//!
//! # Not guaranteed
//! - In-flight claims are not durable. If the process dies mid-execution, the key is
//!   free after restart and a retry executes again: handlers must make their own
//!   effects safe to redo (or record them on the same WAL).
//! - A claim older than [`IdempotencyConfig::in_flight_lease`] counts as abandoned (its
//!   handler is presumed hung or dead); a retry may then execute. The late handler's
//!   completion is refused with [`IdempotencyError::ClaimLost`].
//! - The fingerprint is a 128-bit FNV-1a hash, not a cryptographic one: collisions can
//!   be constructed, but only to replay a response under one's own key.
//! - Keys share one namespace per store; scope them (for example prefix a tenant id)
//!   if clients must not see each other's keys.
//! - Only the status, `content-type` and body are replayed, not other headers.
//! - The layer buffers request and response bodies (up to `max_body_bytes`), so it
//!   does not suit streaming responses; a response larger than that, or than the WAL's
//!   record limit, is answered but not stored.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use http::{HeaderName, HeaderValue, Method, Request, StatusCode, header};
use parking_lot::Mutex;

use crate::api::ApiError;
use crate::clock::SharedClock;
use crate::wal::{Wal, WalError};

/// The longest key accepted.
pub const MAX_KEY_LEN: usize = 255;
/// The header the key travels in.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// Set on replayed responses.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// Why a request cannot proceed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IdempotencyError {
    #[error("the Idempotency-Key header is required")]
    MissingKey,
    #[error("invalid Idempotency-Key: {0}")]
    InvalidKey(String),
    #[error("this Idempotency-Key was used with a different request")]
    FingerprintMismatch,
    #[error("a request with this Idempotency-Key is still being processed")]
    InFlight,
    #[error("the claim on this Idempotency-Key expired and was taken over")]
    ClaimLost,
    #[error("the idempotency store is full")]
    Full,
    #[error("idempotency store: {0}")]
    Storage(#[from] WalError),
}

impl IdempotencyError {
    /// The machine-readable code the error is answered with.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingKey => "idempotency_key_required",
            Self::InvalidKey(_) => "idempotency_key_invalid",
            Self::FingerprintMismatch => "idempotency_key_reused",
            Self::InFlight | Self::ClaimLost => "idempotency_key_in_use",
            Self::Full => "idempotency_store_full",
            Self::Storage(_) => "storage_unavailable",
        }
    }

    /// The HTTP status the error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingKey | Self::InvalidKey(_) => StatusCode::BAD_REQUEST,
            Self::FingerprintMismatch => StatusCode::UNPROCESSABLE_ENTITY,
            Self::InFlight | Self::ClaimLost => StatusCode::CONFLICT,
            Self::Full => StatusCode::SERVICE_UNAVAILABLE,
            Self::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<IdempotencyError> for ApiError {
    fn from(error: IdempotencyError) -> Self {
        let field = matches!(
            error,
            IdempotencyError::MissingKey | IdempotencyError::InvalidKey(_)
        )
        .then(|| "Idempotency-Key".to_string());
        ApiError {
            status: error.status(),
            error: error.to_string(),
            field,
            code: Some(error.code().to_owned()),
        }
    }
}

/// A validated idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Validates a key: 1..=255 printable ASCII characters. A structured-field string
    /// (`"abc"`, as the IETF draft sends it) is unquoted first.
    pub fn parse(raw: &str) -> Result<Self, IdempotencyError> {
        let key = match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
            Some(inner) => inner,
            None => raw,
        };
        if key.is_empty() {
            return Err(IdempotencyError::InvalidKey("the key is empty".into()));
        }
        if key.len() > MAX_KEY_LEN {
            return Err(IdempotencyError::InvalidKey(format!(
                "the key is {} characters; at most {MAX_KEY_LEN} are allowed",
                key.len()
            )));
        }
        if let Some(bad) = key.chars().find(|c| !(' '..='~').contains(c)) {
            return Err(IdempotencyError::InvalidKey(format!(
                "the key contains {bad:?}; only printable ASCII is allowed"
            )));
        }
        Ok(Self(key.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A 128-bit summary of a request (FNV-1a over length-prefixed parts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub u128);

impl Fingerprint {
    /// Fingerprints the given parts; the length prefix keeps `["ab","c"]` and
    /// `["a","bc"]` apart.
    pub fn of(parts: &[&[u8]]) -> Self {
        const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
        const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
        let mut hash = OFFSET;
        let mut eat = |bytes: &[u8]| {
            for &byte in bytes {
                hash ^= u128::from(byte);
                hash = hash.wrapping_mul(PRIME);
            }
        };
        for part in parts {
            eat(&(part.len() as u64).to_le_bytes());
            eat(part);
        }
        Self(hash)
    }
}

/// A response as stored and replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl StoredResponse {
    /// The response as HTTP, marked as a replay.
    pub fn to_replayed_response(&self) -> Response {
        let mut response = Response::new(Body::from(self.body.clone()));
        *response.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if let Some(value) = self
            .content_type
            .as_deref()
            .and_then(|ct| HeaderValue::from_str(ct).ok())
        {
            response.headers_mut().insert(header::CONTENT_TYPE, value);
        }
        response
            .headers_mut()
            .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
        response
    }
}

/// Retention and bounds.
#[derive(Debug, Clone)]
pub struct IdempotencyConfig {
    /// How long a completed key is remembered.
    pub retention: Duration,
    /// How long an unfinished claim holds its key.
    pub in_flight_lease: Duration,
    /// The most keys (in flight or completed) held at once.
    pub max_keys: usize,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(24 * 3600),
            in_flight_lease: Duration::from_secs(60),
            max_keys: 1_000_000,
        }
    }
}

#[derive(Debug)]
enum Entry {
    InFlight {
        fingerprint: Fingerprint,
        started: Instant,
        token: u64,
    },
    Done {
        fingerprint: Fingerprint,
        response: Arc<StoredResponse>,
        completed_wall_ms: u64,
        seq: u64,
    },
}

#[derive(Debug)]
struct Inner {
    clock: SharedClock,
    config: IdempotencyConfig,
    wal: Wal,
    entries: Mutex<HashMap<String, Entry>>,
    next_token: AtomicU64,
}

impl Inner {
    fn expired(&self, entry: &Entry, now: Instant, wall_ms: u64) -> bool {
        match entry {
            Entry::InFlight { started, .. } => {
                now.duration_since(*started) >= self.config.in_flight_lease
            }
            Entry::Done {
                completed_wall_ms, ..
            } => {
                wall_ms
                    >= completed_wall_ms.saturating_add(self.config.retention.as_millis() as u64)
            }
        }
    }

    fn release(&self, key: &str, token: u64) {
        let mut entries = self.entries.lock();
        if matches!(entries.get(key), Some(Entry::InFlight { token: t, .. }) if *t == token) {
            entries.remove(key);
        }
    }
}

/// What [`IdempotencyStore::begin`] decided.
#[derive(Debug)]
pub enum Begin {
    /// First time: execute, then [`Claim::complete`].
    Execute(Claim),
    /// Seen and completed: answer with this.
    Replay(Arc<StoredResponse>),
}

/// The right to execute a key. Dropping it without completing frees the key, so a
/// retry can execute (for handlers that fail before doing anything).
#[derive(Debug)]
pub struct Claim {
    store: Arc<Inner>,
    key: String,
    token: u64,
    fingerprint: Fingerprint,
    done: bool,
}

impl Claim {
    /// Records the response durably, then returns it for answering.
    pub async fn complete(
        mut self,
        response: StoredResponse,
    ) -> Result<Arc<StoredResponse>, IdempotencyError> {
        self.check_still_ours()?;
        let wall_ms = self.store.clock.wall_millis();
        let content_type_len = response.content_type.as_ref().map_or(0, String::len);
        let record = encode_record(&self.key, self.fingerprint, wall_ms, &response).ok_or(
            // Keys are at most MAX_KEY_LEN, so only the content type can be too long.
            IdempotencyError::Storage(WalError::RecordTooLarge {
                len: content_type_len,
                max: usize::from(u16::MAX),
            }),
        )?;
        let seq = self.store.wal.append(record).await?;
        let response = Arc::new(response);
        let mut entries = self.store.entries.lock();
        // Only our own claim may become the completed entry.
        match entries.get(&self.key) {
            Some(Entry::InFlight { token, .. }) if *token == self.token => {
                entries.insert(
                    self.key.clone(),
                    Entry::Done {
                        fingerprint: self.fingerprint,
                        response: response.clone(),
                        completed_wall_ms: wall_ms,
                        seq,
                    },
                );
                self.done = true;
                Ok(response)
            }
            _ => Err(IdempotencyError::ClaimLost),
        }
    }

    fn check_still_ours(&self) -> Result<(), IdempotencyError> {
        match self.store.entries.lock().get(&self.key) {
            Some(Entry::InFlight { token, .. }) if *token == self.token => Ok(()),
            _ => Err(IdempotencyError::ClaimLost),
        }
    }

    /// The key this claim holds.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.done {
            self.store.release(&self.key, self.token);
        }
    }
}

/// The idempotency store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct IdempotencyStore {
    inner: Arc<Inner>,
}

impl IdempotencyStore {
    /// Opens the store on `wal`, replaying the responses recorded there that are
    /// still within retention.
    pub fn open(
        wal: Wal,
        clock: SharedClock,
        config: IdempotencyConfig,
    ) -> Result<Self, IdempotencyError> {
        let mut entries = HashMap::new();
        let wall_ms = clock.wall_millis();
        let retention_ms = config.retention.as_millis() as u64;
        let mut reader = wal.reader(wal.first_seq())?;
        while let Some(record) = reader.next_record()? {
            let (key, fingerprint, completed_wall_ms, response) = decode_record(&record.payload)
                .ok_or_else(|| WalError::Corrupt {
                    seq: record.seq,
                    reason: "not an idempotency record".into(),
                })?;
            if wall_ms < completed_wall_ms.saturating_add(retention_ms) {
                entries.insert(
                    key,
                    Entry::Done {
                        fingerprint,
                        response: Arc::new(response),
                        completed_wall_ms,
                        seq: record.seq,
                    },
                );
            } else {
                entries.remove(&key);
            }
        }
        Ok(Self {
            inner: Arc::new(Inner {
                clock,
                config,
                wal,
                entries: Mutex::new(entries),
                next_token: AtomicU64::new(1),
            }),
        })
    }

    /// Decides whether a request executes or replays.
    pub fn begin(
        &self,
        key: &IdempotencyKey,
        fingerprint: Fingerprint,
    ) -> Result<Begin, IdempotencyError> {
        let inner = &self.inner;
        let now = inner.clock.now();
        let wall_ms = inner.clock.wall_millis();
        let mut entries = inner.entries.lock();
        if let Some(entry) = entries.get(key.as_str())
            && !inner.expired(entry, now, wall_ms)
        {
            return match entry {
                Entry::InFlight { fingerprint: f, .. } if *f != fingerprint => {
                    Err(IdempotencyError::FingerprintMismatch)
                }
                Entry::InFlight { .. } => Err(IdempotencyError::InFlight),
                Entry::Done { fingerprint: f, .. } if *f != fingerprint => {
                    Err(IdempotencyError::FingerprintMismatch)
                }
                Entry::Done { response, .. } => Ok(Begin::Replay(response.clone())),
            };
        }
        if entries.len() >= inner.config.max_keys && !entries.contains_key(key.as_str()) {
            entries.retain(|_, entry| !inner.expired(entry, now, wall_ms));
            if entries.len() >= inner.config.max_keys {
                return Err(IdempotencyError::Full);
            }
        }
        let token = inner.next_token.fetch_add(1, Ordering::Relaxed);
        entries.insert(
            key.as_str().to_string(),
            Entry::InFlight {
                fingerprint,
                started: now,
                token,
            },
        );
        Ok(Begin::Execute(Claim {
            store: inner.clone(),
            key: key.as_str().to_string(),
            token,
            fingerprint,
            done: false,
        }))
    }

    /// Forgets expired keys; returns how many went.
    pub fn purge_expired(&self) -> usize {
        let now = self.inner.clock.now();
        let wall_ms = self.inner.clock.wall_millis();
        let mut entries = self.inner.entries.lock();
        let before = entries.len();
        entries.retain(|_, entry| !self.inner.expired(entry, now, wall_ms));
        before - entries.len()
    }

    /// Purges expired keys, then drops WAL segments that hold only forgotten
    /// responses. Returns the segments removed.
    pub fn compact(&self) -> Result<usize, IdempotencyError> {
        self.purge_expired();
        let oldest_live = {
            let entries = self.inner.entries.lock();
            entries
                .values()
                .filter_map(|entry| match entry {
                    Entry::Done { seq, .. } => Some(*seq),
                    Entry::InFlight { .. } => None,
                })
                .min()
        };
        let keep_from = oldest_live.unwrap_or_else(|| self.inner.wal.next_seq());
        Ok(self.inner.wal.truncate_before(keep_from)?)
    }

    /// Keys currently held (in flight or completed, expired ones not yet purged).
    pub fn len(&self) -> usize {
        self.inner.entries.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

const RECORD_VERSION: u8 = 1;

/// The record's bytes; `None` when the key or content type outgrows its `u16`
/// length prefix (a cast would wrap and store a record that replays garbage).
pub(crate) fn encode_record(
    key: &str,
    fingerprint: Fingerprint,
    completed_wall_ms: u64,
    response: &StoredResponse,
) -> Option<Vec<u8>> {
    let content_type = response.content_type.as_deref().unwrap_or("");
    let key_len = u16::try_from(key.len()).ok()?;
    let content_type_len = u16::try_from(content_type.len()).ok()?;
    let mut out = Vec::with_capacity(40 + key.len() + content_type.len() + response.body.len());
    out.push(RECORD_VERSION);
    out.extend_from_slice(&key_len.to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(&fingerprint.0.to_le_bytes());
    out.extend_from_slice(&completed_wall_ms.to_le_bytes());
    out.extend_from_slice(&response.status.to_le_bytes());
    out.push(u8::from(response.content_type.is_some()));
    out.extend_from_slice(&content_type_len.to_le_bytes());
    out.extend_from_slice(content_type.as_bytes());
    out.extend_from_slice(&response.body);
    Some(out)
}

pub(crate) fn decode_record(bytes: &[u8]) -> Option<(String, Fingerprint, u64, StoredResponse)> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = bytes.split_at_checked(n)?;
        *bytes = rest;
        Some(head)
    }
    let mut rest = bytes;
    if take(&mut rest, 1)? != [RECORD_VERSION] {
        return None;
    }
    let key_len = u16::from_le_bytes(take(&mut rest, 2)?.try_into().ok()?) as usize;
    let key = String::from_utf8(take(&mut rest, key_len)?.to_vec()).ok()?;
    let fingerprint = Fingerprint(u128::from_le_bytes(take(&mut rest, 16)?.try_into().ok()?));
    let completed = u64::from_le_bytes(take(&mut rest, 8)?.try_into().ok()?);
    let status = u16::from_le_bytes(take(&mut rest, 2)?.try_into().ok()?);
    let has_content_type = take(&mut rest, 1)? == [1];
    let ct_len = u16::from_le_bytes(take(&mut rest, 2)?.try_into().ok()?) as usize;
    let content_type = String::from_utf8(take(&mut rest, ct_len)?.to_vec()).ok()?;
    Some((
        key,
        fingerprint,
        completed,
        StoredResponse {
            status,
            content_type: has_content_type.then_some(content_type),
            body: rest.to_vec(),
        },
    ))
}

/// A tower layer applying the store to HTTP handlers.
#[derive(Debug, Clone)]
pub struct IdempotencyLayer {
    store: IdempotencyStore,
    required: bool,
    max_body_bytes: usize,
}

impl IdempotencyLayer {
    /// Applies to POST and PATCH (other methods are idempotent by definition and pass
    /// through). Such requests without a key are refused with 400 when `required`, and
    /// pass through untouched otherwise.
    pub fn new(store: IdempotencyStore, required: bool) -> Self {
        Self {
            store,
            required,
            max_body_bytes: crate::api::DEFAULT_BODY_LIMIT,
        }
    }

    /// The largest request or response body buffered (default 1 MiB).
    pub fn max_body_bytes(mut self, max: usize) -> Self {
        self.max_body_bytes = max;
        self
    }
}

impl<S> tower::Layer<S> for IdempotencyLayer {
    type Service = IdempotencyService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        IdempotencyService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`IdempotencyLayer`] wraps handlers in.
#[derive(Debug, Clone)]
pub struct IdempotencyService<S> {
    inner: S,
    layer: IdempotencyLayer,
}

impl<S> tower::Service<Request<Body>> for IdempotencyService<S>
where
    S: tower::Service<Request<Body>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // The ready clone serves this call; the fresh clone waits for the next.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move { Ok(handle(inner, layer, request).await) })
    }
}

async fn handle<S>(mut inner: S, layer: IdempotencyLayer, request: Request<Body>) -> Response
where
    S: tower::Service<Request<Body>, Response = Response, Error = Infallible>,
{
    // Safe and idempotent methods are idempotent already; keys apply to POST and PATCH.
    if !matches!(request.method(), &Method::POST | &Method::PATCH) {
        return call(&mut inner, request).await;
    }
    let header_name = HeaderName::from_static(IDEMPOTENCY_KEY_HEADER);
    let key = match request.headers().get(&header_name) {
        None if layer.required => {
            return ApiError::from(IdempotencyError::MissingKey).into_response();
        }
        None => return call(&mut inner, request).await,
        Some(value) => match value
            .to_str()
            .map_err(|_| IdempotencyError::InvalidKey("the key is not ASCII".into()))
            .and_then(IdempotencyKey::parse)
        {
            Ok(key) => key,
            Err(error) => return ApiError::from(error).into_response(),
        },
    };
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, layer.max_body_bytes).await {
        Ok(body) => body,
        Err(_) => {
            return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "request body is too large")
                .into_response();
        }
    };
    let target = parts.uri.path_and_query().map_or("", |pq| pq.as_str());
    let fingerprint =
        Fingerprint::of(&[parts.method.as_str().as_bytes(), target.as_bytes(), &body]);
    let claim = match layer.store.begin(&key, fingerprint) {
        Ok(Begin::Replay(stored)) => return stored.to_replayed_response(),
        Ok(Begin::Execute(claim)) => claim,
        Err(error) => return ApiError::from(error).into_response(),
    };
    let response = call(&mut inner, Request::from_parts(parts, Body::from(body))).await;
    let (parts, body) = response.into_parts();
    let body = match axum::body::to_bytes(body, layer.max_body_bytes).await {
        Ok(body) => body,
        Err(_) => {
            // Not storable: the claim drops, freeing the key, and the caller learns why.
            return ApiError::internal("response too large to store for idempotent replay")
                .into_response();
        }
    };
    let stored = StoredResponse {
        status: parts.status.as_u16(),
        content_type: parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: body.to_vec(),
    };
    if let Err(error) = claim.complete(stored).await {
        // The handler ran; its answer still goes back, but a retry may run it again.
        tracing::error!(%error, key = key.as_str(), "idempotent response not recorded");
    }
    Response::from_parts(parts, Body::from(body))
}

async fn call<S>(inner: &mut S, request: Request<Body>) -> Response
where
    S: tower::Service<Request<Body>, Response = Response, Error = Infallible>,
{
    match inner.call(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

#[cfg(test)]
mod tests;
