//! The playback API (`netflix-playback`, :8081): the catalog, playback sessions,
//! steering to the nearest healthy CDN instance, signed manifest URLs, and the
//! players' heartbeats and QoE events.
//!
//! | route | what it does |
//! |---|---|
//! | `GET /v1/titles` | `{"titles": [...], "stale": false}`: the origin's catalog, cached briefly; the last good one (`"stale": true`) while the origin is down |
//! | `POST /v1/playback` | `{"title", "region"?, "session"?, "failed_edge"?}` → [`PlayGrant`]: a session on the nearest healthy ISP cache of the client's region, and a signed manifest URL there |
//! | `POST /v1/playback/{session}/events` | `{"events": [...]}` ([`events::EventBatch`]) → 202 `{"accepted": n}`; into metrics (and viewing history, for a caller's session) |
//!
//! **Signing**: the manifest URL is
//! `http://{edge}/o/titles/{id}/master.m3u8?exp=…&sig=…`, signed with the key the
//! edges share ([`crate::case::signing_key`]) for exactly that path until
//! `now + manifest_ttl` (wall clock, Unix seconds; default 6 h). The edges rewrite
//! every URI of the playlists they serve, signed with the same `exp`.
//!
//! **Failover**: a re-POST naming an existing `session` means its edge failed
//! the player: that edge is reported failed (every session avoids it for
//! `failed_edge_ttl`), the session avoids it for good, and the answer is another
//! instance with the **same session id**. A `session` this instance does not know
//! (expired, evicted, or the service restarted) starts a new session; `failed_edge`
//! (`host:port`) is then how the player still names the edge that failed it.
//!
//! Bad input: a JSON error naming the field (`title`, `region`, `session`,
//! `failed_edge`, `events[3].kind`); an unknown title 404 (`field: title`); an
//! unknown session's events 404 (`field: session`); more than
//! [`events::MAX_EVENTS_PER_POST`] events 413; bodies over [`MAX_BODY_BYTES`] 413.
//!
//! **Callers**: a play that comes through the gateway carries the account in
//! `x-user-id` (the gateway sets it and drops a client's own); such a play needs an
//! active subscription (402 `subscription_required`, allowed when billing cannot
//! answer) and its heartbeats become viewing history ([`account`]). The same routes
//! are served under `/api/v1/…`, the paths the gateway forwards. A play without a
//! caller (the player fleet calling playback directly) is neither checked nor
//! recorded.
//!
//! Deliberately absent: DRM licences, per-device manifests, concurrent-stream
//! limits per plan.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use casebook_edge::signing::SigningKey;
use casebook_kit::api::ApiError;
use casebook_kit::clock::SharedClock;
use casebook_kit::resilience::breaker::BreakerRegistry;
use casebook_kit::resolve::Resolver;
use casebook_kit::runtime::{BoxFuture, InstanceContext, ServiceFactory, StartError, serve_http};
use casebook_kit::topology::{Placement, Topology};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::config::NetflixConfig;

pub mod account;
pub mod api;
pub mod catalog;
pub mod events;
pub mod sessions;
pub mod steering;

use account::{AccountLink, Progress, Verdict};
use catalog::{Catalog, CatalogView};
use events::{EventBatch, MAX_ERROR_KINDS, MAX_EVENTS_PER_POST, QoeEvent, valid_error_kind};
use sessions::{MAX_AVOIDED, Session, Sessions};
use steering::{Steering, SteeringError, Tier};

/// The playback API service's name.
pub const PLAYBACK_SERVICE: &str = "netflix-playback";
/// The largest request body the API reads.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// How often idle sessions are swept (expiry itself is judged on the clock).
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// `POST /v1/playback`'s body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlayRequest {
    pub title: String,
    /// The client's region; the playback instance's own region when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// An existing session: its edge failed, steer it elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The edge (`host:port`) that failed the player, if it knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_edge: Option<String>,
}

/// `POST /v1/playback`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlayGrant {
    pub session: String,
    /// The signed master playlist on the chosen edge.
    pub manifest_url: String,
    /// The chosen CDN instance, `host:port`.
    pub edge: String,
    /// The chosen instance's region (the client's unless every instance there is down).
    pub region: String,
    /// `isp` or `edge`.
    pub tier: Tier,
    /// When the manifest URL's signature expires, Unix seconds.
    pub expires_at: u64,
    /// How many times this session was steered away from a failed edge.
    pub failovers: u32,
}

/// `GET /v1/titles`' answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogResponse {
    pub titles: Vec<catalog::Title>,
    /// True while the origin is unreachable and this is the last good catalog.
    pub stale: bool,
}

/// The playback engine, apart from HTTP.
#[derive(Debug)]
pub struct Playback {
    catalog: Catalog,
    steering: Steering,
    sessions: Sessions,
    key: SigningKey,
    clock: SharedClock,
    manifest_ttl: Duration,
    home_region: String,
    error_kinds: Mutex<HashSet<String>>,
    /// Entitlement and viewing history, for plays with a caller.
    accounts: Option<AccountLink>,
    require_subscription: bool,
}

/// A title id as the pipeline makes them: `[a-z0-9-]{1,64}`.
pub fn valid_title_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// An account id as the gateway passes it: short, and safe in a URL path.
fn valid_account_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn valid_session_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

fn new_session_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

impl Playback {
    /// An engine for an instance at `home` (the default client region), on `clock`.
    pub fn new(
        config: &NetflixConfig,
        key: SigningKey,
        resolver: Arc<Resolver>,
        topology: Topology,
        home: Placement,
        clock: SharedClock,
        registry: BreakerRegistry,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            catalog: Catalog::new(
                resolver.clone(),
                home.clone(),
                config.catalog_ttl,
                clock.clone(),
                registry,
            )?,
            steering: Steering::new(resolver, topology, config.failed_edge_ttl, clock.clone())?,
            sessions: Sessions::new(clock.clone(), config.session_idle, config.max_sessions),
            key,
            clock,
            manifest_ttl: config.manifest_ttl,
            home_region: home.region,
            error_kinds: Mutex::new(HashSet::new()),
            accounts: None,
            require_subscription: config.require_subscription,
        })
    }

    /// Checks and records plays that carry a caller through `link`.
    pub fn with_accounts(mut self, link: AccountLink) -> Self {
        self.accounts = Some(link);
        self
    }

    /// The sessions held.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// The steering (failed edges, candidates).
    pub fn steering(&self) -> &Steering {
        &self.steering
    }

    /// The catalog, fresh or the last good one.
    pub async fn catalog(&self) -> Result<CatalogView, ApiError> {
        self.catalog
            .titles()
            .await
            .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
    }

    /// A playback grant: a new session, or a known one re-steered (failover).
    /// `caller` is the account the gateway vouches for (`x-user-id`), if any.
    pub async fn play(
        &self,
        request: PlayRequest,
        caller: Option<String>,
    ) -> Result<PlayGrant, ApiError> {
        if !valid_title_id(&request.title) {
            return Err(ApiError::bad_field(
                "title",
                "a title id is 1-64 of a-z, 0-9 and '-'",
            ));
        }
        let region = request
            .region
            .clone()
            .unwrap_or_else(|| self.home_region.clone());
        if self.steering.topology().region_index(&region).is_none() {
            return Err(ApiError::bad_field(
                "region",
                format!(
                    "unknown region `{region}`; known: {}",
                    self.steering.topology().region_names().join(", ")
                ),
            ));
        }
        let failed_edge = match &request.failed_edge {
            None => None,
            Some(text) => Some(text.parse::<SocketAddr>().map_err(|_| {
                ApiError::bad_field("failed_edge", format!("`{text}` is not host:port"))
            })?),
        };
        if let Some(id) = &request.session
            && !valid_session_id(id)
        {
            return Err(ApiError::bad_field(
                "session",
                "a session id is 32 lowercase hex digits",
            ));
        }
        if let Some(account) = &caller
            && !valid_account_id(account)
        {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "the caller's account id is malformed",
            )
            .with_code("invalid_caller"));
        }
        let catalog = self.catalog().await?;
        if catalog.title(&request.title).is_none() {
            return Err(ApiError {
                field: Some("title".into()),
                ..ApiError::not_found(format!("no title `{}`", request.title))
            });
        }
        if let (Some(account), Some(link), true) =
            (&caller, &self.accounts, self.require_subscription)
            && link.entitlement(account).await == Verdict::NotEntitled
        {
            return Err(ApiError::new(
                StatusCode::PAYMENT_REQUIRED,
                "this account has no active subscription: subscribe first",
            )
            .with_code("subscription_required"));
        }
        let known = request
            .session
            .as_deref()
            .and_then(|id| self.sessions.touch(id));
        let mut session = match known {
            Some(existing) => {
                if existing.title != request.title {
                    return Err(ApiError::bad_field(
                        "title",
                        format!(
                            "session {} plays `{}`, not `{}`",
                            existing.id, existing.title, request.title
                        ),
                    ));
                }
                // The re-POST is the player's report that its edge failed it.
                let mut existing = existing;
                self.steering.mark_failed(existing.edge);
                if existing.avoided.len() == MAX_AVOIDED {
                    existing.avoided.remove(0);
                }
                existing.avoided.push(existing.edge);
                existing.failovers += 1;
                existing.client_region = region.clone();
                existing
            }
            None => Session {
                id: new_session_id(),
                title: request.title.clone(),
                client_region: region.clone(),
                edge: SocketAddr::from(([0, 0, 0, 0], 0)),
                edge_region: String::new(),
                tier: Tier::Isp,
                failovers: 0,
                avoided: Vec::new(),
                account: caller,
            },
        };
        if let Some(failed) = failed_edge {
            self.steering.mark_failed(failed);
            if !session.avoided.contains(&failed) {
                if session.avoided.len() == MAX_AVOIDED {
                    session.avoided.remove(0);
                }
                session.avoided.push(failed);
            }
        }
        let chosen = self
            .steering
            .steer(&region, &session.id, &session.avoided)
            .await
            .map_err(|e| match e {
                SteeringError::NoInstance | SteeringError::Discovery(_) => {
                    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
                }
            })?;
        session.edge = chosen.address;
        session.edge_region = chosen.region.clone();
        session.tier = chosen.tier;
        let path = format!("/o/titles/{}/master.m3u8", request.title);
        let expires_at = self.clock.wall_millis() / 1000 + self.manifest_ttl.as_secs();
        let manifest_url = format!(
            "http://{}{path}?{}",
            chosen.address,
            self.key.sign(&path, expires_at)
        );
        let kind = if session.failovers > 0 && request.session.as_deref() == Some(&session.id) {
            "failover"
        } else {
            "new"
        };
        metrics::counter!(
            "casebook_netflix_playback_grants_total",
            "title" => session.title.clone(),
            "edge" => chosen.address.to_string(),
            "region" => region.clone(),
            "kind" => kind,
        )
        .increment(1);
        let grant = PlayGrant {
            session: session.id.clone(),
            manifest_url,
            edge: chosen.address.to_string(),
            region: chosen.region,
            tier: chosen.tier,
            expires_at,
            failovers: session.failovers,
        };
        self.sessions.put(session);
        Ok(grant)
    }

    /// Records a batch of events of session `id` as metrics; returns how many.
    pub fn record_events(&self, id: &str, batch: &EventBatch) -> Result<usize, ApiError> {
        if batch.events.len() > MAX_EVENTS_PER_POST {
            return Err(ApiError {
                field: Some("events".into()),
                ..ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "{} events in one post; at most {MAX_EVENTS_PER_POST}",
                        batch.events.len()
                    ),
                )
            });
        }
        for (i, event) in batch.events.iter().enumerate() {
            if let QoeEvent::Error { kind } = event
                && !valid_error_kind(kind)
            {
                return Err(ApiError::bad_field(
                    format!("events[{i}].kind"),
                    "an error kind is 1-32 of a-z, 0-9 and '_'",
                ));
            }
        }
        let session = self.sessions.touch(id).ok_or_else(|| ApiError {
            field: Some("session".into()),
            ..ApiError::not_found(format!("no session `{id}` (unknown or expired)"))
        })?;
        // The title's length, for "continue watching" (the catalog is cached).
        let duration_s = match (&session.account, &self.accounts) {
            (Some(_), Some(_)) => self.catalog.cached().and_then(|titles| {
                titles
                    .iter()
                    .find(|t| t.id == session.title)
                    .map(|t| t.duration_secs)
            }),
            _ => None,
        };
        let tags = [
            ("title", session.title.clone()),
            ("edge", session.edge.to_string()),
            ("region", session.client_region.clone()),
        ];
        for event in &batch.events {
            let mut with_type = tags.to_vec();
            with_type.push(("type", event.kind().to_owned()));
            metrics::counter!("casebook_netflix_qoe_events_total", &with_type).increment(1);
            match event {
                QoeEvent::Start {
                    start_ms,
                    bitrate_bps,
                } => {
                    metrics::histogram!("casebook_netflix_qoe_start_seconds", &tags)
                        .record(*start_ms as f64 / 1000.0);
                    metrics::histogram!("casebook_netflix_qoe_bitrate_mbps", &tags)
                        .record(*bitrate_bps as f64 / 1e6);
                }
                QoeEvent::Heartbeat {
                    position_ms,
                    buffer_ms,
                    bitrate_bps,
                } => {
                    if let (Some(account), Some(link)) = (&session.account, &self.accounts) {
                        link.record(Progress {
                            account: account.clone(),
                            title: session.title.clone(),
                            position_s: *position_ms as f64 / 1000.0,
                            duration_s: duration_s.unwrap_or(0.0),
                        });
                    }
                    metrics::histogram!("casebook_netflix_qoe_buffer_seconds", &tags)
                        .record(*buffer_ms as f64 / 1000.0);
                    metrics::histogram!("casebook_netflix_qoe_bitrate_mbps", &tags)
                        .record(*bitrate_bps as f64 / 1e6);
                }
                QoeEvent::StallEnd { stall_ms } => {
                    metrics::histogram!("casebook_netflix_qoe_stall_seconds", &tags)
                        .record(*stall_ms as f64 / 1000.0);
                }
                QoeEvent::BitrateSwitch { .. } => {
                    metrics::counter!("casebook_netflix_qoe_switches_total", &tags).increment(1);
                }
                QoeEvent::Error { kind } => {
                    let kind = self.error_kind_tag(kind);
                    let mut with_kind = tags.to_vec();
                    with_kind.push(("kind", kind));
                    metrics::counter!("casebook_netflix_qoe_errors_total", &with_kind).increment(1);
                }
                QoeEvent::StallBegin { .. } => {}
            }
        }
        Ok(batch.events.len())
    }

    /// `kind` as a tag: itself while fewer than [`MAX_ERROR_KINDS`] were seen.
    fn error_kind_tag(&self, kind: &str) -> String {
        let mut seen = self.error_kinds.lock();
        if seen.contains(kind) || seen.len() < MAX_ERROR_KINDS {
            seen.insert(kind.to_owned());
            kind.to_owned()
        } else {
            "other".to_owned()
        }
    }
}

/// The playback API's factory.
#[derive(Debug)]
pub struct PlaybackService {
    config: NetflixConfig,
    key: SigningKey,
    resolver: Arc<Resolver>,
    topology: Topology,
}

impl PlaybackService {
    /// A factory for instances that sign with `key`, find the origin and the CDN
    /// through `resolver`, and know `topology`'s regions.
    pub fn new(
        config: NetflixConfig,
        key: SigningKey,
        resolver: Arc<Resolver>,
        topology: Topology,
    ) -> Self {
        Self {
            config,
            key,
            resolver,
            topology,
        }
    }
}

impl ServiceFactory for PlaybackService {
    fn name(&self) -> &str {
        PLAYBACK_SERVICE
    }

    fn start<'a>(
        &'a self,
        ctx: &'a InstanceContext,
    ) -> BoxFuture<'a, Result<SocketAddr, StartError>> {
        Box::pin(async move {
            let info = ctx.info();
            let near = Placement {
                region: info.region,
                zone: info.zone,
            };
            let registry = BreakerRegistry::global().clone();
            let (link, history) = AccountLink::new(
                self.resolver.clone(),
                near.clone(),
                ctx.clock().clone(),
                registry.clone(),
                self.config.entitlement_ttl,
                self.config.history_queue,
            )?;
            let playback = Arc::new(
                Playback::new(
                    &self.config,
                    self.key.clone(),
                    self.resolver.clone(),
                    self.topology.clone(),
                    near.clone(),
                    ctx.clock().clone(),
                    registry.clone(),
                )?
                .with_accounts(link),
            );
            ctx.spawn(account::write_history(
                history,
                self.resolver.clone(),
                near,
                registry,
                ctx.shutdown_token(),
            ));
            let listener = ctx.bind(ctx.listen_addr()).await?;
            let address = listener.local_addr().map_err(anyhow::Error::from)?;
            ctx.spawn(sweep(playback.clone(), ctx.shutdown_token()));
            serve_http(ctx, listener, api::router(playback));
            Ok(address)
        })
    }
}

/// Drops idle sessions every [`SWEEP_EVERY`] until the instance stops.
async fn sweep(playback: Arc<Playback>, shutdown: tokio_util::sync::CancellationToken) {
    let mut ticks = tokio::time::interval(SWEEP_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticks.tick() => {
                let gone = playback.sessions.expire();
                metrics::gauge!("casebook_netflix_playback_sessions").set(playback.sessions.len() as f64);
                if gone > 0 {
                    tracing::debug!(gone, "idle playback sessions expired");
                }
            }
        }
    }
}
