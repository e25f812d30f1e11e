//! The tier's HTTP face.
//!
//! | route | what |
//! |---|---|
//! | `GET`, `HEAD /o/{key}?exp=…&sig=…` | an object: Range (206/416), ETag + If-None-Match (304), Cache-Control, Content-Type, CORS; playlists rewritten and re-signed |
//! | `OPTIONS /o/{key}` | CORS preflight (204), no signature needed |
//! | `GET /stats` | the tier's counters and sizes ([`StatsView`](super::stats::StatsView)) |
//! | `POST /fill?exp=…&sig=…` | pre-position objects now (`{"keys": [...], "titles": [...], "max_bytes"?}`), signed for the path `/fill` |
//!
//! Order of checks on an object request, each refusal a JSON error: the key (400,
//! field `key`), the signature for exactly `/o/{key}` with `exp` judged on the
//! injected clock's wall time (403, field `sig`), the `Range`/`If-None-Match`/
//! `If-Range` headers being visible ASCII (400, naming the header), then the
//! lookup: unknown object 404, upstream failure 502, upstream timeout 504, other
//! upstream refusals (4xx) passed through. Conditional requests are evaluated
//! before Range (RFC 9110 §13.2.2); `If-Range` with an ETag other than the
//! current one turns a range request into a full one.
//!
//! CORS: every response under `/o/` — objects, 304, 206, 416 and errors alike —
//! carries `Access-Control-Allow-Origin: *` and exposes `Content-Range`,
//! `Content-Length`, `ETag`, `Accept-Ranges`, so a player on another origin can
//! read them; preflight allows `GET, HEAD, OPTIONS` and the `Range`,
//! `If-None-Match` and `If-Range` request headers. Credentials are never allowed
//! (signatures travel in the URL, not in cookies).
//!
//! Header sizes and counts are bounded by the kit's `serve_http` (hyper's limits
//! answer 431/400) before a route runs.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use casebook_kit::api::{ApiError, JsonBody};

use super::fill::{self, FillRequest};
use super::key::ObjectKey;
use super::object::{Kind, cache_control, none_match};
use super::range::{self, RangeOutcome};
use super::stats::Refusal;
use super::tier::{Asker, Lookup, Tier};

/// The path `/fill` requests are signed for.
pub const FILL_PATH: &str = "/fill";

/// The tier's routes (served by the kit's `serve_http`, which adds `/health` and
/// `/metrics`).
pub fn router(tier: Arc<Tier>) -> Router {
    let objects = Router::new()
        .route(
            "/o/{*key}",
            get(object)
                .options(preflight)
                .fallback(|| async { method_not_allowed() }),
        )
        .layer(axum::middleware::map_response(with_cors));
    Router::new()
        .route("/stats", get(stats))
        .route("/fill", post(fill_now))
        .merge(objects)
        .fallback(|| async { ApiError::not_found("no such route") })
        .with_state(tier)
}

fn method_not_allowed() -> Response {
    let mut response = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "objects take GET, HEAD or OPTIONS",
    )
    .into_response();
    response.headers_mut().insert(
        header::ALLOW,
        HeaderValue::from_static("GET, HEAD, OPTIONS"),
    );
    response
}

async fn with_cors(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Content-Range, Content-Length, ETag, Accept-Ranges, X-Cache"),
    );
    response
}

async fn preflight() -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            (header::ACCESS_CONTROL_ALLOW_METHODS, "GET, HEAD, OPTIONS"),
            (
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                "Range, If-None-Match, If-Range",
            ),
            (header::ACCESS_CONTROL_MAX_AGE, "86400"),
        ],
    )
        .into_response()
}

fn wall_secs(tier: &Tier) -> u64 {
    tier.clock.wall_millis() / 1000
}

/// A header as text; `Err` (400 naming it) when it is not visible ASCII.
fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Result<Option<&str>, ApiError> {
    match headers.get(&name) {
        None => Ok(None),
        Some(value) => value.to_str().map(Some).map_err(|_| {
            ApiError::bad_field(
                name.as_str(),
                format!("the {name} header is not visible ASCII"),
            )
        }),
    }
}

async fn object(
    State(tier): State<Arc<Tier>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let key = match ObjectKey::from_path(uri.path()) {
        Ok(key) => key,
        Err(e) => {
            tier.stats.refused(Refusal::Key);
            return ApiError::bad_field("key", e.to_string()).into_response();
        }
    };
    let exp = match tier
        .config
        .key
        .verify_expiry(&key.path(), uri.query(), wall_secs(&tier))
    {
        Ok(exp) => exp,
        Err(e) => {
            tier.stats.refused(Refusal::Signature);
            return ApiError {
                field: Some("sig".into()),
                ..ApiError::new(StatusCode::FORBIDDEN, e.to_string())
            }
            .into_response();
        }
    };
    let checked = (
        header_text(&headers, header::IF_NONE_MATCH),
        header_text(&headers, header::IF_RANGE),
        header_text(&headers, header::RANGE),
    );
    let (if_none_match, if_range, range) = match checked {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c),
        (Err(e), ..) | (_, Err(e), _) | (.., Err(e)) => {
            tier.stats.refused(Refusal::Header);
            return e.into_response();
        }
    };
    tier.stats.request();
    let lookup = match tier.get(&key, uri.query(), Asker::Client).await {
        Ok(Some(lookup)) => lookup,
        Ok(None) => return ApiError::not_found(format!("no object at `{key}`")).into_response(),
        Err(e) => {
            let status = e.status();
            return ApiError::new(status, e.to_string()).into_response();
        }
    };
    let request = Request {
        method: &method,
        if_none_match,
        if_range,
        range: range.map(str::as_bytes),
    };
    respond(&tier, &key, exp, &lookup, &request)
}

/// The parts of a request that shape an object response.
struct Request<'a> {
    method: &'a Method,
    if_none_match: Option<&'a str>,
    if_range: Option<&'a str>,
    range: Option<&'a [u8]>,
}

fn respond(
    tier: &Tier,
    key: &ObjectKey,
    exp: u64,
    lookup: &Lookup,
    request: &Request<'_>,
) -> Response {
    let object = &lookup.object;
    let (body, etag) = match object.kind {
        Kind::Immutable => (object.body.clone(), object.etag.clone()),
        Kind::Playlist => match tier.rewritten(key, object, exp) {
            Some(rewritten) => rewritten,
            None => {
                return ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    format!("the upstream's playlist `{key}` is not UTF-8 (RFC 8216 §4)"),
                )
                .into_response();
            }
        },
    };
    let len = body.len() as u64;
    let mut headers = HeaderMap::new();
    let mut set = |name: header::HeaderName, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set(header::ETAG, &etag);
    set(
        header::CACHE_CONTROL,
        &cache_control(object.kind, tier.config.playlist_ttl),
    );
    set(header::CONTENT_TYPE, &object.content_type);
    set(header::ACCEPT_RANGES, "bytes");
    set(
        header::HeaderName::from_static("x-cache"),
        lookup.source.header(lookup.coalesced),
    );

    if request
        .if_none_match
        .is_some_and(|inm| none_match(inm, &etag))
    {
        headers.remove(header::CONTENT_TYPE);
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    let range_header = match request.if_range {
        Some(validator) if validator.trim() != etag => None,
        _ => request.range,
    };
    let head = request.method == Method::HEAD;
    let outcome = if head {
        RangeOutcome::Full
    } else {
        range::evaluate(range_header, len)
    };
    let (status, body) = match outcome {
        RangeOutcome::Full => (StatusCode::OK, body),
        RangeOutcome::Partial { start, end } => {
            set_header(
                &mut headers,
                header::CONTENT_RANGE,
                &format!("bytes {start}-{end}/{len}"),
            );
            (
                StatusCode::PARTIAL_CONTENT,
                body.slice(start as usize..=end as usize),
            )
        }
        RangeOutcome::Unsatisfiable => {
            let mut response = ApiError {
                field: Some("range".into()),
                ..ApiError::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    format!("the range cannot be satisfied by `{key}` ({len} bytes)"),
                )
            }
            .into_response();
            set_header(
                response.headers_mut(),
                header::CONTENT_RANGE,
                &format!("bytes */{len}"),
            );
            return response;
        }
        RangeOutcome::Malformed => {
            tier.stats.refused(Refusal::Header);
            return ApiError::bad_field("range", "the Range header is not visible ASCII")
                .into_response();
        }
    };
    set_header(
        &mut headers,
        header::CONTENT_LENGTH,
        &body.len().to_string(),
    );
    if head {
        return (status, headers).into_response();
    }
    tier.stats.served(lookup.source, body.len() as u64);
    (status, headers, Body::from(body)).into_response()
}

fn set_header(headers: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

async fn stats(State(tier): State<Arc<Tier>>) -> Response {
    axum::Json(tier.stats_view()).into_response()
}

async fn fill_now(
    State(tier): State<Arc<Tier>>,
    uri: Uri,
    body: Result<JsonBody<FillRequest>, ApiError>,
) -> Response {
    if let Err(e) = tier
        .config
        .key
        .verify(FILL_PATH, uri.query(), wall_secs(&tier))
    {
        return ApiError {
            field: Some("sig".into()),
            ..ApiError::new(StatusCode::FORBIDDEN, e.to_string())
        }
        .into_response();
    }
    let JsonBody(request) = match body {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    let plan = match request.plan() {
        Ok(plan) => plan,
        Err(e) => return e.into_response(),
    };
    let Some(_running) = tier.start_fill() else {
        return ApiError::new(
            StatusCode::CONFLICT,
            "a fill is already running on this tier",
        )
        .into_response();
    };
    let budget = request
        .max_bytes
        .unwrap_or_else(|| tier.config.fill_budget());
    let report = fill::run(&tier, plan, budget).await;
    axum::Json(report).into_response()
}
