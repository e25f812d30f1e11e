//! The origin's HTTP face.
//!
//! | route | answer |
//! |---|---|
//! | `GET`/`HEAD /o/{key}` | the object: `Range` (206, 416 with `Content-Range: bytes */size`), strong `ETag`, `If-None-Match` (304), `If-Range`, `Content-Type` by extension, `Cache-Control` (segments immutable for a year, playlists 60 s), `Last-Modified`, CORS |
//! | `OPTIONS` on any route | the CORS preflight (204): GET/HEAD/OPTIONS, `Range`, `If-None-Match`, `If-Range` allowed |
//! | `GET /v1/titles` | the catalog: every title published whole, by id |
//! | `GET /v1/titles/{id}` | one title, 404 when unknown |
//!
//! Refusals are JSON `{"error","field"}`: a key with `..` or `.` segments, an
//! absolute path, an empty segment, a character outside `[A-Za-z0-9._-/]` or a bad
//! or double percent-escape 400 (field `key`); a bad title id 400 (field `id`);
//! an unknown object or title 404; an unsatisfiable range 416 (field `range`).
//! The origin is internal: it checks no signature (the edges do).

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use casebook_kit::api::ApiError;
use object_store::{GetOptions, GetRange};

use super::key::{ObjectKey, TitleId};
use super::range::{self, RangeAnswer};
use super::store::Origin;

/// Segments never change once published.
pub const SEGMENT_CACHE_CONTROL: &str = "public, max-age=31536000, immutable";
/// Playlists are kept briefly: a title may be removed and ingested anew.
pub const PLAYLIST_CACHE_CONTROL: &str = "public, max-age=60";
/// Catalog answers and other objects: revalidate every time.
pub const OTHER_CACHE_CONTROL: &str = "no-cache";
const ALLOW_METHODS: &str = "GET, HEAD, OPTIONS";
const ALLOW_HEADERS: &str = "Range, If-None-Match, If-Range, If-Modified-Since";
const EXPOSE_HEADERS: &str = "Content-Length, Content-Range, Accept-Ranges, ETag, Cache-Control";

/// The origin's routes.
pub fn router(origin: Origin) -> Router {
    Router::new()
        .route("/o/{*key}", get(object).head(object).options(preflight))
        .route("/o/", get(empty_key).head(empty_key).options(preflight))
        .route("/v1/titles", get(list_titles).options(preflight))
        .route("/v1/titles/{id}", get(one_title).options(preflight))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "this route does not take that method",
            )
        })
        .with_state(origin)
}

/// `Content-Type` by the key's extension.
pub fn content_type(key: &ObjectKey) -> &'static str {
    match key.extension().as_deref() {
        Some("m3u8") => crate::pipeline::hls::CONTENT_TYPE,
        Some("ts") => "video/mp2t",
        Some("m4s") => "video/iso.segment",
        Some("mp4") => "video/mp4",
        Some("aac") => "audio/aac",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// `Cache-Control` by the key's extension.
pub fn cache_control(key: &ObjectKey) -> &'static str {
    match key.extension().as_deref() {
        Some("ts" | "m4s" | "mp4" | "aac") => SEGMENT_CACHE_CONTROL,
        Some("m3u8") => PLAYLIST_CACHE_CONTROL,
        _ => OTHER_CACHE_CONTROL,
    }
}

fn cors(headers: &mut HeaderMap) {
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSE_HEADERS),
    );
}

fn with_cors(response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    cors(response.headers_mut());
    response
}

async fn preflight() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let h = response.headers_mut();
    cors(h);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOW_METHODS),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOW_HEADERS),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    response
}

async fn empty_key() -> Response {
    with_cors(ApiError::bad_field("key", "no object key after /o/"))
}

fn store_error(e: object_store::Error) -> Response {
    tracing::error!(error = %e, "origin store");
    with_cors(ApiError::internal(format!("the origin store: {e}")))
}

async fn object(
    State(origin): State<Origin>,
    method: Method,
    uri: Uri,
    request_headers: HeaderMap,
) -> Response {
    // The raw path, not axum's decoded capture: escapes are decoded exactly once,
    // here, and validated after decoding.
    let raw = uri.path().strip_prefix("/o/").unwrap_or_default();
    let key = match ObjectKey::from_url_path(raw) {
        Ok(key) => key,
        Err(e) => return with_cors(ApiError::bad_field("key", e.to_string())),
    };
    let head = method == Method::HEAD;
    let meta = match origin.head(&key).await {
        Ok(Some(meta)) => meta,
        Ok(None) => return with_cors(ApiError::not_found(format!("no object `{key}`"))),
        Err(e) => return store_error(e),
    };
    let etag = format!(
        "\"{}\"",
        meta.e_tag
            .clone()
            .unwrap_or_else(|| format!(
                "{:x}-{:x}",
                meta.size,
                meta.last_modified.timestamp_micros()
            ))
            .replace('"', "")
    );
    let mut headers = HeaderMap::new();
    cors(&mut headers);
    let mut set = |name, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set(header::ETAG, &etag);
    set(header::CACHE_CONTROL, cache_control(&key));
    set(
        header::LAST_MODIFIED,
        &meta
            .last_modified
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string(),
    );
    set(header::ACCEPT_RANGES, "bytes");
    let wanted = |name| request_headers.get(name).and_then(|v| v.to_str().ok());
    if wanted(header::IF_NONE_MATCH).is_some_and(|inm| range::none_match(inm, &etag)) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    let size = meta.size;
    // A range applies to GET only, and only while If-Range (if any) still holds.
    let range_header = wanted(header::RANGE)
        .filter(|_| !head)
        .filter(|_| wanted(header::IF_RANGE).is_none_or(|ir| range::if_range_holds(ir, &etag)));
    let (status, bytes) = match range::evaluate(range_header, size) {
        RangeAnswer::Full => (StatusCode::OK, 0..size),
        RangeAnswer::Partial(r) => {
            set(
                header::CONTENT_RANGE,
                &format!("bytes {}-{}/{size}", r.start, r.end - 1),
            );
            (StatusCode::PARTIAL_CONTENT, r)
        }
        RangeAnswer::Unsatisfiable => {
            set(header::CONTENT_RANGE, &format!("bytes */{size}"));
            let mut response = ApiError {
                field: Some("range".into()),
                ..ApiError::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    format!(
                        "`{}` is outside the object's {size} bytes",
                        range_header.unwrap_or("")
                    ),
                )
            }
            .into_response();
            response.headers_mut().extend(headers);
            return response;
        }
    };
    // Only now: a 416 keeps its JSON body's type.
    set(header::CONTENT_TYPE, content_type(&key));
    set(
        header::CONTENT_LENGTH,
        &(bytes.end - bytes.start).to_string(),
    );
    if head {
        return (status, headers).into_response();
    }
    let options = GetOptions {
        range: (bytes != (0..size)).then(|| GetRange::Bounded(bytes.clone())),
        // The bytes must be the ones the headers describe.
        if_match: meta.e_tag.clone(),
        ..GetOptions::default()
    };
    let result = match origin.get(&key, options).await {
        Ok(result) => result,
        Err(object_store::Error::NotFound { .. }) => {
            return with_cors(ApiError::not_found(format!("no object `{key}`")));
        }
        Err(e) => return store_error(e),
    };
    metrics::counter!("casebook_netflix_origin_bytes_total").increment(bytes.end - bytes.start);
    (status, headers, Body::from_stream(result.into_stream())).into_response()
}

async fn list_titles(State(origin): State<Origin>) -> Response {
    match origin.catalog().await {
        Ok(titles) => catalog_json(&titles),
        Err(e) => store_error(e),
    }
}

async fn one_title(State(origin): State<Origin>, Path(id): Path<String>) -> Response {
    let Ok(id) = TitleId::parse(&id) else {
        return with_cors(ApiError::bad_field(
            "id",
            "a title id is 1 to 64 of a-z, 0-9 and -",
        ));
    };
    match origin.title(&id).await {
        Ok(Some(entry)) => catalog_json(&entry),
        Ok(None) => with_cors(ApiError::not_found(format!("no title `{id}`"))),
        Err(e) => store_error(e),
    }
}

fn catalog_json<T: serde::Serialize + ?Sized>(value: &T) -> Response {
    let mut response = axum::Json(value).into_response();
    cors(response.headers_mut());
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(OTHER_CACHE_CONTROL),
    );
    response
}
