//! The checks behind the control plane's fuzz targets, shared by
//! `crates/control/fuzz` (cargo fuzz, nightly) and `tests/fuzz_corpus.rs` (the
//! committed corpus replayed on stable), so each check exists once.
//!
//! Each check takes arbitrary bytes and asserts more than "no panic": a parsed
//! [`Query`] re-parses identically from its canonical parameters, the discovery and
//! autoscaler APIs answer every request with a status they document, every 400 a
//! JSON error, a schedule time re-parses from its canonical text, and the
//! Toxiproxy JSON parsers refuse with a 400 naming Toxiproxy's error or accept what
//! their own answer re-parses to identically.
//! A failed check panics — that is how libFuzzer and the replay test see it.
//!
//! Not a public API: hidden from the docs, and only for fuzzing and its replay.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use casebook_kit::clock::ManualClock;
use casebook_kit::discovery::{InstanceView, Registration};
use casebook_kit::topology::Topology;
use tower::ServiceExt;

use crate::discovery::{DiscoveryConfig, Registry, api};
use crate::metrics_store::query::{Query, QueryError, TimeSpec};

pub use casebook_kit::fuzz_checks::Check;

/// Every control target, by the name of its fuzz target and corpus directory.
pub const TARGETS: &[(&str, Check)] = &[
    ("metrics_query", metrics_query),
    ("discovery_request", discovery_request),
    ("access_request", access_request),
    ("schedule_time", schedule_time),
    ("autoscaler_request", autoscaler_request),
    ("toxiproxy_json", toxiproxy_json),
];

/// The parameters that parse to `query`, written the one canonical way.
fn render(query: &Query) -> HashMap<String, String> {
    let time = |spec: TimeSpec| match spec {
        TimeSpec::Now => "now".to_owned(),
        TimeSpec::At(ms) => ms.to_string(),
        TimeSpec::Ago(secs) => format!("-{}", duration(secs)),
    };
    let mut params = HashMap::from([
        ("name".to_owned(), query.name.clone()),
        ("fn".to_owned(), query.aggregate.name()),
        ("from".to_owned(), time(query.from)),
        ("to".to_owned(), time(query.to)),
        ("step".to_owned(), duration(query.step_secs)),
    ]);
    if !query.filters.is_empty() {
        let terms: Vec<String> = query
            .filters
            .iter()
            .map(|f| {
                let bang = if f.negate { "!" } else { "" };
                format!("{}{bang}:{}", f.key, f.values.join("|"))
            })
            .collect();
        params.insert("filter".to_owned(), terms.join(","));
    }
    if !query.group_by.is_empty() {
        params.insert("group_by".to_owned(), query.group_by.join(","));
    }
    params
}

/// Seconds in the largest unit that divides them (the parser bounds the number).
fn duration(secs: u64) -> String {
    if secs > 0 && secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs > 0 && secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// `Query::parse` over `key=value` lines: an accepted query re-parses identically
/// from its canonical parameters; a refused one names a parameter it was given (or
/// `name`, the required one).
pub fn metrics_query(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let params: HashMap<String, String> = text
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    match Query::parse(&params) {
        Ok(query) => {
            assert!(!query.name.is_empty());
            assert!((1..=crate::metrics_store::WINDOW_SECS).contains(&query.step_secs));
            let canonical = render(&query);
            let again = Query::parse(&canonical)
                .unwrap_or_else(|e| panic!("{canonical:?} (from {query:?}) fails: {e}"));
            assert_eq!(again, query, "{canonical:?} re-parses differently");
        }
        Err(error) => {
            let field = error.field();
            assert!(
                params.contains_key(field) || field == "name",
                "error names `{field}`, which was not given: {error}"
            );
            if let QueryError::Invalid { reason, .. } = &error {
                assert!(!reason.is_empty());
            }
        }
    }
}

/// Percent-encodes every byte but ASCII alphanumerics, for a path segment.
fn path_segment(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Requests at most one input may make, so one input stays cheap.
const MAX_REQUESTS: usize = 8;

/// The discovery API over arbitrary requests, separated by NUL bytes; in each, the
/// first byte picks the method, the rest of the first line is the path and query,
/// and what follows is the body. Every answer is a documented status (never a 5xx
/// but 503), every 400 a JSON error; a registration answered 204 is then found.
pub fn discovery_request(data: &[u8]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    let clock = ManualClock::new();
    let registry = Arc::new(
        Registry::new(
            DiscoveryConfig::default(),
            Topology::default(),
            clock.shared(),
        )
        .expect("the default registry"),
    );
    let router = api::router(registry);
    let call = |method: Method, uri: &str, body: Vec<u8>| {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .ok()?;
        runtime.block_on(async {
            let response = router.clone().oneshot(request).await.expect("infallible");
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .expect("an in-memory body");
            Some((status, bytes))
        })
    };
    for request in data.split(|&b| b == 0).take(MAX_REQUESTS) {
        let Some((&selector, rest)) = request.split_first() else {
            continue;
        };
        let method = [Method::GET, Method::POST, Method::PUT, Method::DELETE]
            [usize::from(selector % 4)]
        .clone();
        let (target, body) = match rest.iter().position(|&b| b == b'\n') {
            Some(end) => (&rest[..end], &rest[end + 1..]),
            None => (rest, &[][..]),
        };
        let Ok(target) = std::str::from_utf8(target) else {
            continue;
        };
        let Some((status, bytes)) = call(method.clone(), target, body.to_vec()) else {
            continue;
        };
        assert!(
            !status.is_server_error() || status == StatusCode::SERVICE_UNAVAILABLE,
            "{method} {target} answered {status}"
        );
        if status == StatusCode::BAD_REQUEST {
            let error: serde_json::Value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("{method} {target}: a 400 that is not JSON"));
            let message = error.get("error").and_then(|e| e.as_str()).unwrap_or("");
            assert!(
                !message.is_empty(),
                "{method} {target}: a 400 without a message"
            );
        }
        if method == Method::POST && status == StatusCode::NO_CONTENT {
            let registration: Registration =
                casebook_kit::api::parse_json(body).expect("an accepted registration body parses");
            let instance = &registration.instance;
            let uri = format!(
                "{}/apps/{}/{}",
                casebook_kit::discovery::API_PREFIX,
                path_segment(&instance.service),
                path_segment(&instance.instance_id)
            );
            let (status, bytes) = call(Method::GET, &uri, Vec::new()).expect("a valid URI");
            assert_eq!(
                status,
                StatusCode::OK,
                "registered instance not found at {uri}"
            );
            let view: InstanceView = serde_json::from_slice(&bytes).expect("an instance view");
            assert_eq!(&view.instance, instance);
        }
    }
}

/// The token [`access_request`] protects its router with.
const FUZZ_TOKEN: &str = "fuzz-token";

/// The access layer over an arbitrary request: the first byte picks the method, the
/// first line is the path and query, every further line a `Name: value` header. The
/// answer is one the layer documents (403 and 401 as JSON errors, 401 with a
/// `Bearer` challenge, 303 only for `/?token=` with the right token), and a request
/// reaches the route only with a good `Host`, and — when it changes state — the token.
pub fn access_request(data: &[u8]) {
    use crate::access::{AccessPolicy, Token};
    use axum::routing::get;

    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let method = [Method::GET, Method::POST, Method::DELETE, Method::HEAD]
        [usize::from(selector % 4)]
    .clone();
    let mut lines = text.split('\n');
    let target = lines.next().unwrap_or("/");
    let mut builder = Request::builder().method(method.clone()).uri(target);
    for line in lines.take(16) {
        if let Some((name, value)) = line.split_once(':') {
            builder = builder.header(name.trim(), value.trim());
        }
    }
    let Ok(request) = builder.body(Body::empty()) else {
        return;
    };
    let host_ok = request
        .headers()
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| {
            ["127.0.0.1:7700", "localhost:7700", "[::1]:7700"]
                .iter()
                .any(|a| a.eq_ignore_ascii_case(h))
        });
    let carries_token = request.headers().values().any(|v| {
        v.as_bytes()
            .windows(FUZZ_TOKEN.len())
            .any(|w| w == FUZZ_TOKEN.as_bytes())
    });
    let router =
        axum::Router::new().route("/", get(|| async { "index" }).post(|| async { "posted" }));
    let policy = AccessPolicy::for_bound(
        "127.0.0.1:7700".parse().expect("an address"),
        Token::parse(FUZZ_TOKEN).expect("a token"),
    );
    let app = policy.protect(router);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    let (status, headers, body) = runtime.block_on(async {
        let response = app.oneshot(request).await.expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
            .await
            .expect("an in-memory body");
        (status, headers, body)
    });
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            // A HEAD answer has no body, by definition.
            if method != Method::HEAD {
                let error: serde_json::Value =
                    serde_json::from_slice(&body).expect("a refusal is a JSON error");
                assert!(error["error"].as_str().is_some_and(|e| !e.is_empty()));
            }
            if status == StatusCode::UNAUTHORIZED {
                let challenge = headers
                    .get(axum::http::header::WWW_AUTHENTICATE)
                    .expect("a 401 challenges");
                assert!(challenge.as_bytes().starts_with(b"Bearer"));
            }
        }
        StatusCode::SEE_OTHER => {
            assert!(
                host_ok && target.contains(FUZZ_TOKEN),
                "a cookie for a request without the token"
            );
            let cookie = headers
                .get(axum::http::header::SET_COOKIE)
                .expect("the sign-in sets the cookie");
            assert!(cookie.to_str().is_ok_and(|c| c.contains("HttpOnly")));
        }
        other => {
            assert!(host_ok, "{other} for a foreign Host");
            if other.is_success() && method != Method::GET && method != Method::HEAD {
                assert!(
                    carries_token,
                    "{method} {target} changed state without the token"
                );
            }
        }
    }
}

/// A service the autoscaler API may name; never started.
#[derive(Debug)]
struct NeverStarted;

impl casebook_kit::runtime::ServiceFactory for NeverStarted {
    fn name(&self) -> &str {
        "svc"
    }

    fn start<'a>(
        &'a self,
        _ctx: &'a casebook_kit::runtime::InstanceContext,
    ) -> casebook_kit::runtime::BoxFuture<
        'a,
        Result<std::net::SocketAddr, casebook_kit::runtime::StartError>,
    > {
        Box::pin(async { Err(anyhow::anyhow!("never started in fuzzing").into()) })
    }
}

/// Schedule times and entries, from lines `at`, `until`, lead seconds, wall
/// seconds: an accepted time displays canonically and re-parses to itself; an
/// accepted entry's window (if any) ends after the wall time and starts no later
/// than it ends (a daily one spans less than two days), and the entry is active exactly when the
/// wall time lies in that window.
pub fn schedule_time(data: &[u8]) {
    use crate::autoscaler::{ScheduleTime, ScheduledScale};
    use std::time::{Duration, UNIX_EPOCH};

    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let time = |line: Option<&str>| {
        let line = line?;
        match ScheduleTime::parse(line) {
            Ok(time) => {
                let canonical = time.to_string();
                assert_eq!(
                    ScheduleTime::parse(&canonical),
                    Ok(time),
                    "{line:?} → {canonical:?} re-parses differently"
                );
                if let ScheduleTime::Daily(minutes) = time {
                    assert!(minutes < 1440);
                }
                Some(time)
            }
            Err(reason) => {
                assert!(!reason.is_empty());
                None
            }
        }
    };
    let (at, until) = (time(lines.next()), time(lines.next()));
    let number = |line: Option<&str>| line.and_then(|l| l.trim().parse::<u64>().ok());
    let lead = number(lines.next()).unwrap_or(0) % (2 * 86_400);
    let wall = number(lines.next()).unwrap_or(1_767_225_600) % (400 * 365 * 86_400);
    let (Some(at), Some(until)) = (at, until) else {
        return;
    };
    let entry = ScheduledScale {
        service: "svc".into(),
        at,
        until,
        instances: 1,
        lead: Duration::from_secs(lead),
    };
    if entry.validate("").is_err() {
        return;
    }
    let wall = UNIX_EPOCH + Duration::from_secs(wall);
    match entry.window_at_or_after(wall) {
        Some(window) => {
            assert!(
                window.until > wall,
                "{entry:?} at {wall:?}: {window:?} is over"
            );
            assert!(window.from <= window.until);
            if let ScheduleTime::Daily(_) = entry.at {
                assert!(
                    window.until.duration_since(window.from).expect("ordered")
                        < Duration::from_secs(2 * 86_400)
                );
            }
            assert_eq!(entry.is_active(wall), window.from <= wall);
        }
        None => assert!(!entry.is_active(wall)),
    }
}

/// The autoscaler API over arbitrary requests, framed as in [`discovery_request`]:
/// never a 5xx, every 400 a JSON error with a message (and a non-empty `field` when
/// it names one); an accepted policy or schedule entry then shows in
/// `GET /api/autoscaler` as accepted.
pub fn autoscaler_request(data: &[u8]) {
    use crate::autoscaler::{Autoscaler, AutoscalerConfig, FedSignal, Policy, ScheduledScale, api};
    use casebook_kit::runtime::Platform;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    let clock = ManualClock::new();
    // Never started: the data directory is never touched.
    let platform = Platform::new(
        Topology::default(),
        "/nonexistent/casebook-fuzz",
        clock.shared(),
    );
    platform.register_service(Arc::new(NeverStarted));
    let autoscaler = Arc::new(Autoscaler::new(
        &AutoscalerConfig::default(),
        Arc::new(FedSignal::new()),
        platform.downgrade(),
        clock.shared(),
        std::time::Duration::from_secs(1),
    ));
    let router = api::router(autoscaler.clone());
    let call = |method: Method, uri: &str, body: Vec<u8>| {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .ok()?;
        runtime.block_on(async {
            let response = router.clone().oneshot(request).await.expect("infallible");
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .expect("an in-memory body");
            Some((status, bytes))
        })
    };
    for request in data.split(|&b| b == 0).take(MAX_REQUESTS) {
        let Some((&selector, rest)) = request.split_first() else {
            continue;
        };
        let method = [Method::GET, Method::POST, Method::PUT, Method::DELETE]
            [usize::from(selector % 4)]
        .clone();
        let (target, body) = match rest.iter().position(|&b| b == b'\n') {
            Some(end) => (&rest[..end], &rest[end + 1..]),
            None => (rest, &[][..]),
        };
        let Ok(target) = std::str::from_utf8(target) else {
            continue;
        };
        let Some((status, bytes)) = call(method.clone(), target, body.to_vec()) else {
            continue;
        };
        assert!(
            !status.is_server_error(),
            "{method} {target} answered {status}"
        );
        if status == StatusCode::BAD_REQUEST {
            let error: serde_json::Value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("{method} {target}: a 400 that is not JSON"));
            assert!(
                error["error"].as_str().is_some_and(|m| !m.is_empty()),
                "{method} {target}: a 400 without a message"
            );
            if let Some(field) = error.get("field") {
                assert!(field.as_str().is_some_and(|f| !f.is_empty()), "{error}");
            }
        }
        let view = || autoscaler.view();
        if method == Method::POST && status == StatusCode::OK {
            let policy: Policy =
                casebook_kit::api::parse_json(body).expect("an accepted policy parses");
            assert!(
                view().services.iter().any(|s| s.policy == policy),
                "accepted policy {policy:?} not shown"
            );
        }
        if method == Method::POST && status == StatusCode::CREATED {
            let entry: ScheduledScale =
                casebook_kit::api::parse_json(body).expect("an accepted entry parses");
            assert!(
                view().schedule.iter().any(|s| s.entry == entry),
                "accepted entry {entry:?} not shown"
            );
        }
    }
}

/// The Toxiproxy API's JSON parsers over arbitrary bodies (the first byte picks the
/// parser: proxy, populate, proxy update, toxic, toxic update): a refusal is a 400
/// with one of Toxiproxy's messages; an accepted toxic or proxy, written back as the
/// API answers it, parses to the same thing; an update of an accepted toxic keeps
/// its name, type and stream.
pub fn toxiproxy_json(data: &[u8]) {
    use crate::toxiproxy::model;
    const PREFIXES: &[&str] = &[
        "bad request body",
        "missing required field",
        "invalid toxic type",
        "stream was invalid",
    ];
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let refused = |err: crate::toxiproxy::ToxiError| {
        assert_eq!(err.status, 400, "{err:?}");
        assert!(
            PREFIXES.iter().any(|p| err.error.starts_with(p)),
            "not one of Toxiproxy's messages: {err:?}"
        );
    };
    let proxy_round_trip = |spec: &model::ProxySpec| {
        let json = serde_json::json!({
            "name": spec.name, "listen": spec.listen,
            "upstream": spec.upstream, "enabled": spec.enabled,
        });
        let again = model::parse_proxy(json.to_string().as_bytes()).expect("its own answer parses");
        assert_eq!(&again, spec);
    };
    match selector % 5 {
        0 => match model::parse_proxy(body) {
            Ok(spec) => proxy_round_trip(&spec),
            Err(err) => refused(err),
        },
        1 => match model::parse_populate(body, 16) {
            Ok(specs) => {
                assert!(specs.len() <= 16);
                specs.iter().for_each(proxy_round_trip);
            }
            Err(err) => refused(err),
        },
        2 => {
            if let Err(err) = model::parse_proxy_update(body) {
                refused(err);
            }
        }
        3 => match model::parse_toxic(body) {
            Ok(spec) => {
                assert!((0.0..=1.0).contains(&spec.toxicity));
                let json = serde_json::to_vec(&spec.to_json()).expect("serialises");
                let again = model::parse_toxic(&json).expect("its own answer parses");
                // f32 → text → f64 → f32 may round once more: equal within an ulp.
                assert!((again.toxicity - spec.toxicity).abs() <= f32::EPSILON);
                assert_eq!(
                    model::ToxicSpec {
                        toxicity: spec.toxicity,
                        ..again
                    },
                    spec
                );
            }
            Err(err) => refused(err),
        },
        _ => {
            let base = model::parse_toxic(br#"{"type":"slicer","attributes":{"average_size":10}}"#)
                .expect("a valid toxic");
            match model::parse_toxic_update(body).and_then(|update| base.updated(&update)) {
                Ok(updated) => {
                    assert_eq!(updated.name, base.name);
                    assert_eq!(updated.stream, base.stream);
                    assert_eq!(updated.kind.type_name(), base.kind.type_name());
                }
                Err(err) => refused(err),
            }
        }
    }
}
