//! Stand-ins for the playback API's and the players' neighbours: discovery (an
//! `InstanceSource`), an origin serving a catalog, and CDN edges serving a
//! synthetic ladder the way the real tiers do (signed URLs checked, playlist URIs
//! rewritten into signed absolute `/o/...` paths with the request's `exp`).

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use casebook_edge::signing::SigningKey;
use casebook_kit::discovery::DiscoveryError;
use casebook_kit::resolve::InstanceSource;
use casebook_kit::runtime::BoxFuture;
use casebook_kit::topology::Placement;
use casebook_netflix::playback::catalog::{Rendition, Title};
use casebook_netflix::player::hls::{MasterPlaylist, MediaPlaylist, Segment, Variant};
use parking_lot::Mutex;

/// A zone's placement: `<region>-a`.
pub fn placement(region: &str) -> Placement {
    Placement {
        region: region.into(),
        zone: format!("{region}-a"),
    }
}

/// Discovery as a map from service to its `UP` instances.
#[derive(Default)]
pub struct FakeDiscovery {
    pub services: Mutex<HashMap<String, Vec<(SocketAddr, Placement)>>>,
}

impl FakeDiscovery {
    pub fn register(&self, service: &str, address: SocketAddr, region: &str) {
        self.services
            .lock()
            .entry(service.into())
            .or_default()
            .push((address, placement(region)));
    }
}

impl InstanceSource for FakeDiscovery {
    fn nearest(
        &self,
        service: &str,
        _near: &Placement,
    ) -> BoxFuture<'_, Result<Vec<(SocketAddr, Placement)>, DiscoveryError>> {
        let found = self
            .services
            .lock()
            .get(service)
            .cloned()
            .unwrap_or_default();
        Box::pin(async move { Ok(found) })
    }
}

/// Serves `router` on a free loopback port.
pub async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    address
}

/// The synthetic ladder: three renditions, 1 s segments.
pub const LADDER: [(&str, u64); 3] = [("low", 200_000), ("mid", 400_000), ("high", 800_000)];

/// A catalog entry for `id`, `segments` seconds long.
pub fn title(id: &str, segments: u32) -> Title {
    Title {
        id: id.into(),
        name: format!("Title {id}"),
        duration_secs: f64::from(segments),
        segment_secs: 1.0,
        renditions: LADDER
            .iter()
            .map(|(name, bps)| Rendition {
                name: (*name).into(),
                bandwidth_bps: *bps,
                width: 640,
                height: 360,
                codecs: "avc1.4d401e,mp4a.40.2".into(),
            })
            .collect(),
        master_key: format!("titles/{id}/master.m3u8"),
    }
}

/// An origin answering `GET /v1/titles`; 503 while `up` is false.
pub struct FakeOrigin {
    pub up: AtomicBool,
    pub titles: Mutex<Vec<Title>>,
    pub fetches: AtomicU64,
}

impl FakeOrigin {
    pub fn new(titles: Vec<Title>) -> Arc<Self> {
        Arc::new(Self {
            up: AtomicBool::new(true),
            titles: Mutex::new(titles),
            fetches: AtomicU64::new(0),
        })
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/v1/titles", get(origin_titles))
            .with_state(self.clone())
    }
}

async fn origin_titles(State(origin): State<Arc<FakeOrigin>>) -> Response {
    origin.fetches.fetch_add(1, Ordering::Relaxed);
    if !origin.up.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
    }
    axum::Json(origin.titles.lock().clone()).into_response()
}

/// A CDN edge serving every title of `segments` seconds in [`LADDER`].
pub struct FakeEdge {
    pub key: SigningKey,
    pub segments: u32,
    /// Segment requests answered 503 once this many were served (`u64::MAX`: never).
    pub fail_after: AtomicU64,
    pub segments_served: AtomicU64,
    pub refused: AtomicU64,
    pub requests: AtomicU64,
}

impl FakeEdge {
    pub fn new(key: SigningKey, segments: u32) -> Arc<Self> {
        Arc::new(Self {
            key,
            segments,
            fail_after: AtomicU64::new(u64::MAX),
            segments_served: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        })
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/o/{*key}", get(edge_object))
            .with_state(self.clone())
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

fn exp_of(query: &str) -> u64 {
    query
        .split('&')
        .find_map(|p| p.strip_prefix("exp="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn edge_object(
    State(edge): State<Arc<FakeEdge>>,
    Path(key): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    edge.requests.fetch_add(1, Ordering::Relaxed);
    let path = format!("/o/{key}");
    if let Err(e) = edge.key.verify(&path, query.as_deref(), now_secs()) {
        edge.refused.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::FORBIDDEN, e.to_string()).into_response();
    }
    let exp = exp_of(query.as_deref().unwrap_or(""));
    let signed = |key: String| {
        let path = format!("/o/{key}");
        let query = edge.key.sign(&path, exp);
        format!("{path}?{query}")
    };
    let parts: Vec<&str> = key.split('/').collect();
    match parts.as_slice() {
        ["titles", id, "master.m3u8"] => MasterPlaylist {
            variants: LADDER
                .iter()
                .map(|(name, bps)| Variant {
                    bandwidth_bps: *bps,
                    resolution: Some((640, 360)),
                    codecs: None,
                    uri: signed(format!("titles/{id}/{name}/index.m3u8")),
                })
                .collect(),
        }
        .render()
        .into_response(),
        ["titles", id, rendition, "index.m3u8"] => MediaPlaylist {
            target_duration: Some(1),
            segments: (0..edge.segments)
                .map(|n| Segment {
                    duration: Duration::from_secs(1),
                    uri: signed(format!("titles/{id}/{rendition}/seg{n:05}.ts")),
                })
                .collect(),
            ended: true,
        }
        .render()
        .into_response(),
        ["titles", _, rendition, segment] if segment.starts_with("seg") => {
            if edge.segments_served.load(Ordering::Relaxed)
                >= edge.fail_after.load(Ordering::Relaxed)
            {
                return (StatusCode::SERVICE_UNAVAILABLE, "edge failing").into_response();
            }
            let Some((_, bps)) = LADDER.iter().find(|(n, _)| n == rendition) else {
                return StatusCode::NOT_FOUND.into_response();
            };
            edge.segments_served.fetch_add(1, Ordering::Relaxed);
            vec![0x47u8; (*bps / 8) as usize].into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}
