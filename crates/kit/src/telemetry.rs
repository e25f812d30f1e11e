//! Logs, request ids and trace context, `/health` and `/metrics`.
//!
//! - **Logs**: `tracing`, initialised once per process by [`init_tracing`].
//! - **Request ids**: [`TelemetryLayer`] wraps every HTTP server. It keeps the
//!   caller's `x-request-id` (or creates one at the edge), continues the caller's W3C
//!   `traceparent` (or starts a trace), makes the [`TraceContext`] current for the
//!   handler, echoes `x-request-id` on the response, and records request counts and
//!   latencies. [`crate::http_client::HttpClient`] copies the current context onto every
//!   outgoing call ([`inject_headers`]), so one id follows a request through every hop.
//! - **Metrics**: the `metrics` facade, recorded into a Prometheus exporter (served
//!   as `/metrics` by [`health_and_metrics`]) and into a [`MetricsRegistry`] whose
//!   snapshots are pushed to the control plane's dimensional store.
//!
//! Deliberately absent: span export to a tracing backend (spans are logged), and
//! per-instance recorders — the `metrics` recorder is process-wide, so in the embedded
//! default every instance's `/metrics` shows the whole process, with `service` and
//! `instance` labels telling them apart.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::Router;
use axum::extract::MatchedPath;
use axum::response::IntoResponse;
use axum::routing::get;
use http::{HeaderMap, HeaderValue, Request, Response, header};
use metrics::{Key, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use metrics_util::layers::FanoutBuilder;
use metrics_util::registry::{AtomicStorage, Registry};
use rand::RngCore;
use tracing::Instrument;

/// The request-id header carried through every hop.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// The W3C trace-context header.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// Starts `tracing` logs for the process with `filter` (an `EnvFilter` directive)
/// and installs the metrics recorder. Calling it again is harmless.
pub fn init_tracing(filter: &str) {
    use tracing_subscriber::EnvFilter;
    // The caller decides between its flag and `RUST_LOG`; a bad filter falls back
    // to warnings rather than silence.
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("warn"));
    // Logs go to stderr: stdout is for what commands print (URLs, reports).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    metrics();
}

// ---------------------------------------------------------------------------
// Trace context
// ---------------------------------------------------------------------------

/// The identity of the request being served: its request id and W3C trace context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// The `x-request-id`, kept verbatim from the edge.
    pub request_id: String,
    /// W3C trace id (16 bytes, never all zero).
    pub trace_id: [u8; 16],
    /// The span id of this hop (8 bytes, never all zero).
    pub span_id: [u8; 8],
    /// W3C `sampled` flag.
    pub sampled: bool,
}

tokio::task_local! {
    static CURRENT: TraceContext;
}

/// The longest request id kept from a caller; longer ones are replaced.
pub const MAX_REQUEST_ID_LEN: usize = 128;

impl TraceContext {
    /// A new trace, as the edge starts one.
    pub fn new_root() -> Self {
        let mut rng = rand::rng();
        let mut trace_id = [0u8; 16];
        rng.fill_bytes(&mut trace_id);
        trace_id[0] |= 1; // never all zero
        let request_id = hex(&trace_id);
        Self {
            request_id,
            trace_id,
            span_id: new_span_id(),
            sampled: true,
        }
    }

    /// The context of an incoming request: the caller's request id and trace if
    /// valid, a new one otherwise; always a new span id for this hop.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let parent = headers
            .get(TRACEPARENT_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_traceparent);
        let mut ctx = match parent {
            Some((trace_id, _parent_span, sampled)) => Self {
                request_id: hex(&trace_id),
                trace_id,
                span_id: new_span_id(),
                sampled,
            },
            None => Self::new_root(),
        };
        if let Some(id) = headers
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|id| valid_request_id(id))
        {
            ctx.request_id = id.to_owned();
        }
        ctx
    }

    /// The `traceparent` for a call made from this hop (a child span).
    pub fn child_traceparent(&self) -> String {
        format!(
            "00-{}-{}-{}",
            hex(&self.trace_id),
            hex(&new_span_id()),
            if self.sampled { "01" } else { "00" }
        )
    }

    /// The `traceparent` naming this hop's own span.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{}",
            hex(&self.trace_id),
            hex(&self.span_id),
            if self.sampled { "01" } else { "00" }
        )
    }

    /// Runs `fut` with this context current.
    pub fn scope<F: Future>(self, fut: F) -> tokio::task::futures::TaskLocalFuture<Self, F> {
        CURRENT.scope(self, fut)
    }
}

/// The context of the request being served on this task, if any.
pub fn current() -> Option<TraceContext> {
    CURRENT.try_with(Clone::clone).ok()
}

/// The request id of the request being served on this task, if any.
pub fn current_request_id() -> Option<String> {
    CURRENT.try_with(|c| c.request_id.clone()).ok()
}

/// Adds `x-request-id` and a child `traceparent` for an outgoing call, unless the
/// caller set them already.
pub fn inject_headers(headers: &mut HeaderMap) {
    let Ok(Some((id, parent))) = CURRENT.try_with(|c| {
        Some((
            HeaderValue::from_str(&c.request_id).ok()?,
            HeaderValue::from_str(&c.child_traceparent()).ok()?,
        ))
    }) else {
        return;
    };
    headers.entry(REQUEST_ID_HEADER).or_insert(id);
    headers.entry(TRACEPARENT_HEADER).or_insert(parent);
}

fn valid_request_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_REQUEST_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic())
}

fn new_span_id() -> [u8; 8] {
    let mut id = [0u8; 8];
    rand::rng().fill_bytes(&mut id);
    id[0] |= 1;
    id
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

/// Parses a W3C `traceparent` (version 00): `00-<trace-id>-<parent-id>-<flags>`.
/// All-zero ids and malformed values are rejected, as the spec says.
pub fn parse_traceparent(value: &str) -> Option<([u8; 16], [u8; 8], bool)> {
    let mut parts = value.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "00" || parts.next().is_some() {
        return None;
    }
    let trace_id = unhex::<16>(trace).filter(|t| t.iter().any(|b| *b != 0))?;
    let parent_id = unhex::<8>(parent).filter(|p| p.iter().any(|b| *b != 0))?;
    let flags = unhex::<1>(flags)?[0];
    Some((trace_id, parent_id, flags & 1 == 1))
}

// ---------------------------------------------------------------------------
// The server-side layer
// ---------------------------------------------------------------------------

/// Observes every incoming request of one service: trace context, a span, the
/// `x-request-id` response header, and `http_requests_total` /
/// `http_request_duration_seconds` metrics labelled by service, route and status.
#[derive(Debug, Clone)]
pub struct TelemetryLayer {
    labels: Arc<ServiceLabels>,
}

#[derive(Debug)]
struct ServiceLabels {
    service: String,
    instance: String,
}

impl TelemetryLayer {
    pub fn new(service: impl Into<String>, instance: impl Into<String>) -> Self {
        Self {
            labels: Arc::new(ServiceLabels {
                service: service.into(),
                instance: instance.into(),
            }),
        }
    }
}

impl<S> tower::Layer<S> for TelemetryLayer {
    type Service = TelemetryService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        TelemetryService {
            inner,
            labels: self.labels.clone(),
        }
    }
}

/// The service made by [`TelemetryLayer`].
#[derive(Debug, Clone)]
pub struct TelemetryService<S> {
    inner: S,
    labels: Arc<ServiceLabels>,
}

impl<S, B, RB> tower::Service<Request<B>> for TelemetryService<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = TelemetryFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let ctx = TraceContext::from_headers(req.headers());
        let route = req
            .extensions()
            .get::<MatchedPath>()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "unmatched".to_owned());
        let span = tracing::info_span!(
            "request",
            service = %self.labels.service,
            request_id = %ctx.request_id,
            method = %req.method(),
            path = %req.uri().path(),
        );
        let request_id = HeaderValue::from_str(&ctx.request_id).ok();
        let inner = ctx.scope(self.inner.call(req).instrument(span));
        TelemetryFuture {
            inner,
            request_id,
            started: Instant::now(),
            labels: self.labels.clone(),
            route,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`TelemetryService`].
    pub struct TelemetryFuture<F> {
        #[pin]
        inner: tokio::task::futures::TaskLocalFuture<TraceContext, tracing::instrument::Instrumented<F>>,
        request_id: Option<HeaderValue>,
        started: Instant,
        labels: Arc<ServiceLabels>,
        route: String,
    }
}

impl<F> std::fmt::Debug for TelemetryFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryFuture")
            .field("route", &self.route)
            .finish_non_exhaustive()
    }
}

impl<F, RB, E> Future for TelemetryFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = Result<Response<RB>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut result = std::task::ready!(this.inner.poll(cx));
        let status = match &mut result {
            Ok(response) => {
                if let Some(id) = this.request_id.take() {
                    response.headers_mut().insert(REQUEST_ID_HEADER, id);
                }
                response.status().as_u16()
            }
            Err(_) => 599,
        };
        let labels = [
            ("service", this.labels.service.clone()),
            ("instance", this.labels.instance.clone()),
            ("route", std::mem::take(this.route)),
            ("status", status.to_string()),
        ];
        metrics::counter!("http_requests_total", &labels).increment(1);
        metrics::histogram!("http_request_duration_seconds", &labels[..3])
            .record(this.started.elapsed().as_secs_f64());
        Poll::Ready(result)
    }
}

// ---------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------

/// The process's metrics: a Prometheus exposition and a registry to snapshot.
#[derive(Clone)]
pub struct Metrics {
    prometheus: PrometheusHandle,
    registry: MetricsRegistry,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// Installs the process-wide metrics recorder once and returns it.
///
/// If some other recorder was installed first (a test harness, say), casebook's
/// metrics go to that one and these views stay empty; nothing fails.
pub fn metrics() -> &'static Metrics {
    METRICS.get_or_init(|| {
        let prometheus = PrometheusBuilder::new()
            .set_buckets(&[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ])
            .expect("static, non-empty buckets")
            .build_recorder();
        let handle = prometheus.handle();
        let registry = MetricsRegistry::default();
        let fanout = FanoutBuilder::default()
            .add_recorder(prometheus)
            .add_recorder(registry.clone())
            .build();
        if metrics::set_global_recorder(fanout).is_err() {
            tracing::debug!(
                "a metrics recorder was already installed; casebook's views stay empty"
            );
        }
        Metrics {
            prometheus: handle,
            registry,
        }
    })
}

impl Metrics {
    /// The Prometheus text exposition of every metric in the process.
    pub fn render_prometheus(&self) -> String {
        self.prometheus.run_upkeep();
        self.prometheus.render()
    }

    /// The registry that snapshots feed the control plane's store from.
    pub fn registry(&self) -> &MetricsRegistry {
        &self.registry
    }
}

/// A metrics recorder whose values can be read back: counters and gauges as they
/// stand, histogram samples drained since the last snapshot.
#[derive(Clone)]
pub struct MetricsRegistry {
    inner: Arc<Registry<Key, AtomicStorage>>,
}

impl Default for MetricsRegistry {
    fn default() -> Self {
        Self {
            inner: Arc::new(Registry::atomic()),
        }
    }
}

impl std::fmt::Debug for MetricsRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsRegistry").finish_non_exhaustive()
    }
}

/// A point-in-time reading of a [`MetricsRegistry`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsSnapshot {
    /// Monotonic counters, cumulative since the process started.
    pub counters: Vec<(Key, u64)>,
    /// Gauges as they stand.
    pub gauges: Vec<(Key, f64)>,
    /// Histogram samples recorded since the previous snapshot (drained).
    pub histograms: Vec<(Key, Vec<f64>)>,
}

impl MetricsRegistry {
    /// Reads every metric; drains histogram samples.
    pub fn snapshot(&self) -> MetricsSnapshot {
        use std::sync::atomic::Ordering;
        let mut snap = MetricsSnapshot::default();
        self.inner.visit_counters(|key, c| {
            snap.counters.push((key.clone(), c.load(Ordering::Relaxed)));
        });
        self.inner.visit_gauges(|key, g| {
            snap.gauges
                .push((key.clone(), f64::from_bits(g.load(Ordering::Relaxed))));
        });
        self.inner.visit_histograms(|key, h| {
            let mut samples = Vec::new();
            h.clear_with(|xs| samples.extend_from_slice(xs));
            if !samples.is_empty() {
                snap.histograms.push((key.clone(), samples));
            }
        });
        snap
    }
}

impl Recorder for MetricsRegistry {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }

    fn register_counter(&self, key: &Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        self.inner
            .get_or_create_counter(key, |c| metrics::Counter::from_arc(c.clone()))
    }
    fn register_gauge(&self, key: &Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        self.inner
            .get_or_create_gauge(key, |g| metrics::Gauge::from_arc(g.clone()))
    }
    fn register_histogram(&self, key: &Key, _: &metrics::Metadata<'_>) -> metrics::Histogram {
        self.inner
            .get_or_create_histogram(key, |h| metrics::Histogram::from_arc(h.clone()))
    }
}

// ---------------------------------------------------------------------------
// /health and /metrics
// ---------------------------------------------------------------------------

/// What `/health` reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Health {
    pub status: &'static str,
    pub service: String,
    pub instance: String,
    pub region: String,
    pub zone: String,
    pub version: String,
}

/// `/health` (JSON) and `/metrics` (Prometheus text) for one instance.
pub fn health_and_metrics(info: &crate::topology::InstanceInfo) -> Router {
    let health = Health {
        status: "up",
        service: info.service.clone(),
        instance: info.instance_id.clone(),
        region: info.region.clone(),
        zone: info.zone.clone(),
        version: info.version.clone(),
    };
    Router::new()
        .route(
            "/health",
            get(move || {
                let health = health.clone();
                async move { axum::Json(health) }
            }),
        )
        .route("/metrics", get(render_metrics))
}

async fn render_metrics() -> Result<impl IntoResponse, Infallible> {
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics().render_prometheus(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_rejects_malformed_values() {
        let root = TraceContext::new_root();
        let (trace, span, sampled) = parse_traceparent(&root.traceparent()).unwrap();
        assert_eq!((trace, span, sampled), (root.trace_id, root.span_id, true));
        for bad in [
            "",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
    }

    #[test]
    fn incoming_context_keeps_the_callers_trace_and_request_id() {
        let mut headers = HeaderMap::new();
        headers.insert(
            TRACEPARENT_HEADER,
            HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"),
        );
        headers.insert(REQUEST_ID_HEADER, HeaderValue::from_static("req-42"));
        let ctx = TraceContext::from_headers(&headers);
        assert_eq!(hex(&ctx.trace_id), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(ctx.request_id, "req-42");
        assert!(!ctx.sampled);
        assert_ne!(
            hex(&ctx.span_id),
            "b7ad6b7169203331",
            "each hop gets its own span"
        );
    }

    #[test]
    fn an_overlong_or_binary_request_id_is_replaced() {
        let mut headers = HeaderMap::new();
        headers.insert(
            REQUEST_ID_HEADER,
            HeaderValue::from_str(&"x".repeat(MAX_REQUEST_ID_LEN + 1)).unwrap(),
        );
        let ctx = TraceContext::from_headers(&headers);
        assert_eq!(ctx.request_id.len(), 32);
    }

    #[tokio::test]
    async fn outgoing_headers_carry_the_current_context() {
        let ctx = TraceContext::new_root();
        let expected = ctx.clone();
        let headers = ctx
            .scope(async {
                let mut h = HeaderMap::new();
                inject_headers(&mut h);
                h
            })
            .await;
        assert_eq!(headers[REQUEST_ID_HEADER], expected.request_id.as_str());
        let (trace, span, _) =
            parse_traceparent(headers[TRACEPARENT_HEADER].to_str().unwrap()).unwrap();
        assert_eq!(trace, expected.trace_id);
        assert_ne!(span, expected.span_id);
        let mut outside = HeaderMap::new();
        inject_headers(&mut outside);
        assert!(outside.is_empty(), "no context outside a request");
    }

    #[test]
    fn registry_snapshots_counters_gauges_and_drains_histograms() {
        let registry = MetricsRegistry::default();
        metrics::with_local_recorder(&registry, || {
            metrics::counter!("requests", "route" => "/a").increment(3);
            metrics::gauge!("queue_depth").set(7.5);
            metrics::histogram!("latency").record(0.25);
        });
        let snap = registry.snapshot();
        assert_eq!(snap.counters.len(), 1);
        assert_eq!(snap.counters[0].1, 3);
        assert_eq!(snap.gauges[0].1, 7.5);
        assert_eq!(snap.histograms[0].1, vec![0.25]);
        assert!(registry.snapshot().histograms.is_empty(), "drained");
        assert_eq!(
            registry.snapshot().counters[0].1,
            3,
            "counters stay cumulative"
        );
    }
}
