//! The platform's admin API and HTML index.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | an HTML page listing instances and the API |
//! | `GET /api/topology` | regions and zones |
//! | `GET /api/services` | services the platform can start |
//! | `GET /api/instances` | every instance this process runs, with its state |
//! | `POST /api/instances` | start an instance: `{"service", "zone"?, "version"?}` |
//! | `POST /api/instances/{id}/stop?drain=5s` | graceful stop |
//! | `POST /api/instances/{id}/kill` | immediate stop, as SIGKILL |
//!
//! Every route sits behind [`crate::access::AccessPolicy`]. The control plane refuses
//! to stop or kill itself (409: nothing could restart it). An instance starts on port
//! 0 (a free port), a port in `control.instance_ports`, or a port an instance of this
//! platform has listened on (to restart a killed instance where it was); anything
//! else, and every port below 1024, is a 400 naming `port`.
//!
//! The HTML index links an instance's `/health` only when its main address speaks
//! HTTP: the control plane and the services in
//! [`ControlSettings::http_services`](crate::ControlSettings) (the listing's `http`
//! flag says the same); other instances (XMPP, RESP) show a plain address.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use axum::{Json, Router};
use casebook_kit::api::{ApiError, JsonBody};
use casebook_kit::runtime::{InstanceSpec, InstanceView, Platform, StartError, WeakPlatform};
use casebook_kit::topology::{Placement, Topology};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::discovery::Registry;
use crate::plane::{LOWEST_INSTANCE_PORT, PortRange};

/// What the admin routes need.
#[derive(Debug, Clone)]
pub struct AdminState {
    pub platform: WeakPlatform,
    pub topology: Topology,
    pub default_drain: Duration,
    /// Discovery's view, shown beside each instance's runtime state.
    pub registry: Arc<Registry>,
    /// The control plane's own instance, which the API never stops or kills.
    pub own_instance_id: String,
    /// Where started instances may listen (see the module docs).
    pub instance_ports: PortRange,
    /// Services whose main address speaks HTTP.
    pub http_services: Vec<String>,
}

impl AdminState {
    fn speaks_http(&self, service: &str) -> bool {
        service == crate::CONTROL_SERVICE || self.http_services.iter().any(|s| s == service)
    }

    /// 409 when `id` is the control plane: stopping it from its own API would leave
    /// nothing to start it again.
    fn refuse_self(&self, platform: &Platform, id: &str, verb: &str) -> Result<(), ApiError> {
        let is_control = id == self.own_instance_id
            || platform
                .list()
                .iter()
                .any(|v| v.info.instance_id == id && v.info.service == crate::CONTROL_SERVICE);
        if is_control {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "`{id}` is the control plane: it cannot {verb} itself through its own API \
                     (nothing could start it again); stop the process instead"
                ),
            ));
        }
        Ok(())
    }

    /// 400 naming `port` unless `port` is allowed (see the module docs).
    fn check_port(&self, platform: &Platform, port: u16) -> Result<(), ApiError> {
        if port == 0 {
            return Ok(());
        }
        if port < LOWEST_INSTANCE_PORT {
            return Err(ApiError::bad_field(
                "port",
                format!(
                    "port {port} is privileged (below {LOWEST_INSTANCE_PORT}); use 0 or {}",
                    self.instance_ports
                ),
            ));
        }
        let known = platform
            .list()
            .iter()
            .any(|v| v.info.address.port() == port);
        if self.instance_ports.contains(port) || known {
            return Ok(());
        }
        Err(ApiError::bad_field(
            "port",
            format!(
                "port {port} is outside control.instance_ports ({}) and no instance of this \
                 platform has used it; use 0 for a free port",
                self.instance_ports
            ),
        ))
    }

    fn platform(&self) -> Result<Platform, ApiError> {
        self.platform.upgrade().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the platform is shutting down",
            )
        })
    }
}

/// The admin routes, state applied.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/api/topology", get(topology))
        .route("/api/services", get(services))
        .route("/api/instances", get(instances).post(start_instance))
        .route("/api/instances/{id}/stop", post(stop_instance))
        .route("/api/instances/{id}/kill", post(kill_instance))
        .fallback(not_found)
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
}

async fn topology(State(state): State<AdminState>) -> Json<Topology> {
    Json(state.topology)
}

async fn services(State(state): State<AdminState>) -> Result<Json<Vec<String>>, ApiError> {
    Ok(Json(state.platform()?.services()))
}

/// An instance as the admin API lists it: the runtime's view and discovery's.
#[derive(Debug, Serialize)]
struct ListedInstance {
    #[serde(flatten)]
    runtime: InstanceView,
    /// Discovery's record of it; `null` once deregistered or evicted (or before
    /// its first registration lands).
    discovery: Option<casebook_kit::discovery::InstanceView>,
    /// Whether the main address speaks HTTP (serves `/health`).
    http: bool,
}

async fn instances(State(state): State<AdminState>) -> Result<Json<Vec<ListedInstance>>, ApiError> {
    let listed = state
        .platform()?
        .list()
        .into_iter()
        .map(|runtime| ListedInstance {
            http: state.speaks_http(&runtime.info.service),
            discovery: state
                .registry
                .get(&runtime.info.service, &runtime.info.instance_id),
            runtime,
        })
        .collect();
    Ok(Json(listed))
}

/// Body of `POST /api/instances`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartRequest {
    service: String,
    /// Defaults to the zone with the fewest live instances of the service.
    zone: Option<String>,
    version: Option<String>,
    /// Defaults to a free port on the control plane's host.
    port: Option<u16>,
}

async fn start_instance(
    State(state): State<AdminState>,
    JsonBody(request): JsonBody<StartRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let platform = state.platform()?;
    // A second control plane would hold a second, empty registry: one per platform.
    if request.service == crate::CONTROL_SERVICE {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "the control plane runs once per platform; stop or kill it to replace it",
        ));
    }
    let placement = match &request.zone {
        Some(zone) => Placement {
            region: state
                .topology
                .region_of(zone)
                .ok_or_else(|| ApiError::bad_field("zone", format!("unknown zone `{zone}`")))?
                .to_owned(),
            zone: zone.clone(),
        },
        None => least_loaded_zone(&platform, &state.topology, &request.service),
    };
    let port = request.port.unwrap_or(0);
    state.check_port(&platform, port)?;
    let host = instance_host(&platform);
    let spec = InstanceSpec {
        service: request.service,
        instance_id: None,
        placement,
        listen: SocketAddr::new(host, port),
        version: request
            .version
            .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned()),
        port_hint: Some("the `port` field".to_owned()),
    };
    match platform.start(spec).await {
        Ok(info) => Ok((StatusCode::CREATED, Json(info))),
        Err(err @ StartError::UnknownService { .. }) => {
            Err(ApiError::bad_field("service", err.to_string()))
        }
        Err(err @ StartError::Bind(_)) => Err(ApiError::new(StatusCode::CONFLICT, err.to_string())),
        Err(err) => Err(ApiError::internal(err.to_string())),
    }
}

/// The host started instances listen on: the control plane's.
pub(crate) fn instance_host(platform: &Platform) -> std::net::IpAddr {
    platform
        .list()
        .iter()
        .find(|v| v.info.service == crate::CONTROL_SERVICE)
        .map(|v| v.info.address.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
}

/// Where a new instance of `service` goes: the zone with the fewest live instances
/// of it, ties going round the regions (so successive starts spread over zones) —
/// the autoscaler's rule with no placement restriction.
pub(crate) fn least_loaded_zone(
    platform: &Platform,
    topology: &Topology,
    service: &str,
) -> Placement {
    crate::autoscaler::act::least_loaded_allowed_zone(
        &platform.list(),
        topology,
        service,
        &crate::autoscaler::config::PlacementRule::default(),
    )
    .expect("a validated topology has zones")
}

#[derive(Debug, Deserialize)]
struct StopQuery {
    #[serde(default, with = "humantime_serde::option")]
    drain: Option<Duration>,
}

async fn stop_instance(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    query: Result<Query<StopQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_field("drain", e.body_text()))?;
    let platform = state.platform()?;
    state.refuse_self(&platform, &id, "stop")?;
    let drain = query.drain.unwrap_or(state.default_drain);
    match platform.stop(&id, drain).await {
        Some(report) => Ok(Json(report)),
        None => Err(ApiError::not_found(format!("no instance `{id}`"))),
    }
}

async fn kill_instance(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let platform = state.platform()?;
    state.refuse_self(&platform, &id, "kill")?;
    // Answer first, then kill: the instance may hold connections of this request's path.
    if !platform.list().iter().any(|v| v.info.instance_id == id) {
        return Err(ApiError::not_found(format!("no instance `{id}`")));
    }
    let id_for_task = id.clone();
    tokio::spawn(async move {
        platform.kill(&id_for_task).await;
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "instance_id": id, "killed": true })),
    ))
}

async fn index(State(state): State<AdminState>) -> Result<Html<String>, ApiError> {
    let platform = state.platform()?;
    let mut rows = String::new();
    for view in platform.list() {
        let state_name = serde_json::to_value(&view.state)
            .ok()
            .and_then(|v| v.get("state").and_then(|s| s.as_str()).map(str::to_owned))
            .unwrap_or_default();
        let address = if state.speaks_http(&view.info.service) {
            format!(
                "<a href=\"http://{addr}/health\">{addr}</a>",
                addr = view.info.address
            )
        } else {
            view.info.address.to_string()
        };
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{address}</td><td>{}</td><td>{}</td></tr>\n",
            escape(&view.info.service),
            escape(&view.info.instance_id),
            escape(&view.info.region),
            escape(&view.info.zone),
            escape(&view.info.version),
            escape(&state_name),
        ));
    }
    Ok(Html(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>casebook control plane</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}}</style>
</head><body>
<h1>casebook control plane</h1>
<h2>Instances</h2>
<table><tr><th>service</th><th>instance</th><th>region</th><th>zone</th><th>address</th><th>version</th><th>state</th></tr>
{rows}</table>
<h2>API</h2>
<ul>
<li><a href="/api/topology">/api/topology</a></li>
<li><a href="/api/services">/api/services</a></li>
<li><a href="/api/instances">/api/instances</a></li>
<li><a href="/api/discovery/apps">/api/discovery/apps</a></li>
<li><a href="/api/discovery/status">/api/discovery/status</a></li>
<li><a href="/api/breakers">/api/breakers</a></li>
<li><a href="/api/metrics/stats">/api/metrics/stats</a></li>
<li><a href="/api/autoscaler">/api/autoscaler</a> (policies, schedule, decisions)</li>
<li><a href="/api/alerts">/api/alerts</a> (rules, alerts, the runbook log)</li>
<li><a href="/metrics">/metrics</a></li>
</ul>
</body></html>
"#
    )))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
