//! The real player fleet: concurrent players streaming over HTTP from the
//! playback API and the CDN, each on its own network trace.
//!
//! A player, arriving open loop (the kit's [`loadgen`]: player *i* is due at
//! `i / rate`, never held back by slow ones; beyond `max_players` at once a due
//! player is dropped and counted):
//!
//! 1. `POST /v1/playback {"title","region"}` → a session and a signed manifest URL;
//! 2. `GET` the master playlist, then each rendition's media playlist when first
//!    needed, then the segments, all from the edge the grant names (URIs resolved
//!    against the playlist, so the edges' signed `/o/...` rewrites are followed);
//! 3. between requests it does what its [`Player`] says (fetch at a rendition,
//!    wait for buffer room) — the same decisions the simulator makes;
//! 4. on an edge failure (refused or reset connection, timeout, 5xx) it fails
//!    over: `POST /v1/playback` again with its session and `failed_edge`, the new
//!    edge's master playlist, and the failed segment again there; its buffer keeps
//!    playing meanwhile, so the failover costs no stall if it is shorter than the
//!    buffer. A 4xx from an edge (a refused signature, an unknown object) is not
//!    an edge failure: the session ends with that error;
//! 5. every `heartbeat` it posts its queued QoE events
//!    (`POST /v1/playback/{session}/events`) off its own path (one post in flight
//!    per player; what a slow post holds back goes with the next one).
//!
//! **Pacing**: every request is held until what the player's trace allows — one
//! round trip plus the transfer of the bytes received at the trace's bandwidth
//! from the request's start — so a player sees the trace's link, or a slower one
//! if the server is slower. The buffer drains in real time.
//!
//! Start times are measured from the play request (the task's start, which the
//! load generator spawns at its due time) to the first frame, on the real clock;
//! the report's percentiles come from an HdrHistogram.
//!
//! Not guaranteed: sub-millisecond pacing (tokio's timer is 1 ms); that the
//! machine running many players keeps up with their traces (an overloaded
//! generator shows as slower links, i.e. lower bitrates and later starts).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use casebook_kit::http_client::{HttpClient, HttpError};
use casebook_kit::loadgen::{self, LoadPlan, Progress, ShowProgress, Verdict};
use casebook_kit::partition::hashing::fmix64;
use http::{HeaderMap, Method};
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::Ladder;
use super::hls::{MasterPlaylist, MediaPlaylist, resolve};
use super::report::{FleetReport, FleetSetup, FleetStats};
use super::session::{Action, Player, PlayerConfig};
use super::trace::NetworkTrace;
use crate::playback::events::EventBatch;
use crate::playback::{CatalogResponse, PlayGrant, PlayRequest};

/// The most players at once a run may allow.
pub const MAX_PLAYERS_IN_FLIGHT: usize = 20_000;

/// A whole run.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// The playback API, `http://host:port`.
    pub playback: String,
    /// The title to play (default: the catalog's first).
    pub title: Option<String>,
    /// Player *i* plays from region `regions[i % len]` (empty: the playback
    /// service's own region).
    pub regions: Vec<String>,
    /// Players arriving per second.
    pub rate: f64,
    /// How long players keep arriving.
    pub duration: Duration,
    /// Players at once at most.
    pub max_players: usize,
    pub player: PlayerConfig,
    pub trace: Arc<NetworkTrace>,
    /// One request's timeout (an edge that does not answer within it failed).
    pub http_timeout: Duration,
    /// Failovers one session makes at most before it gives up.
    pub max_failovers: u32,
    pub seed: u64,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            playback: "http://127.0.0.1:8081".into(),
            title: None,
            regions: Vec::new(),
            rate: 10.0,
            duration: Duration::from_secs(10),
            max_players: 1_000,
            player: PlayerConfig::default(),
            trace: Arc::new(NetworkTrace::profile("fiber").expect("a built-in profile")),
            http_timeout: Duration::from_secs(2),
            max_failovers: 5,
            seed: 1,
        }
    }
}

/// Why a run could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FleetError {
    #[error("invalid fleet: {0}")]
    Config(String),
    #[error("the playback API's catalog could not be read: {0}")]
    Catalog(String),
    #[error("the catalog is empty: ingest a title first (casebook up makes a sample)")]
    NoTitles,
    #[error("no title `{title}` in the catalog (known: {known})")]
    UnknownTitle { title: String, known: String },
}

impl FleetConfig {
    /// Checks the numbers; the error names the setting.
    pub fn validate(&self) -> Result<(), FleetError> {
        let bad = |m: String| Err(FleetError::Config(m));
        if !self.playback.starts_with("http://") {
            return bad(format!(
                "playback: `{}` is not an http:// URL",
                self.playback
            ));
        }
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return bad(format!(
                "rate: must be a positive number, got {}",
                self.rate
            ));
        }
        if !(1..=MAX_PLAYERS_IN_FLIGHT).contains(&self.max_players) {
            return bad(format!(
                "max_players: must be 1..={MAX_PLAYERS_IN_FLIGHT}, got {}",
                self.max_players
            ));
        }
        if self.http_timeout < Duration::from_millis(10) {
            return bad("http_timeout: must be at least 10ms".into());
        }
        self.player.validate().map_err(FleetError::Config)
    }
}

/// Live counters for the progress bar.
#[derive(Debug, Default)]
pub struct FleetProgress {
    /// The arrivals' loadgen progress.
    pub arrivals: Arc<Progress>,
    pub playing: AtomicU64,
    pub started: AtomicU64,
    pub stalled_now: AtomicU64,
    pub failovers: AtomicU64,
    pub errors: AtomicU64,
    pub segments: AtomicU64,
}

/// The bar every `casebook load` draws: players due over planned, with who is
/// playing, started, stalled right now, failed over and failed.
impl ShowProgress for FleetProgress {
    fn phase(&self) -> String {
        let arrivals = &self.arrivals;
        if arrivals.total() == 0 {
            "catalog".to_owned()
        } else if arrivals.due() < arrivals.total() {
            "players".to_owned()
        } else {
            "draining".to_owned()
        }
    }

    fn position(&self) -> (u64, u64) {
        (self.arrivals.due(), self.arrivals.total())
    }

    fn message(&self) -> String {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "playing {} started {} stalled {} failovers {} errors {} segments {}",
            n(&self.playing),
            n(&self.started),
            n(&self.stalled_now),
            n(&self.failovers),
            n(&self.errors),
            n(&self.segments)
        )
    }
}

struct Shared {
    config: FleetConfig,
    title: String,
    client: HttpClient,
    stats: Mutex<FleetStats>,
    progress: Arc<FleetProgress>,
}

/// Runs the fleet against `config.playback` and reports it.
pub async fn run(
    config: FleetConfig,
    progress: Arc<FleetProgress>,
) -> Result<FleetReport, FleetError> {
    config.validate()?;
    let client = HttpClient::new(config.http_timeout);
    let catalog: CatalogResponse = client
        .get_json(&format!("{}/v1/titles", config.playback))
        .await
        .map_err(|e| FleetError::Catalog(e.to_string()))?;
    let title = match &config.title {
        Some(wanted) => catalog
            .titles
            .iter()
            .find(|t| &t.id == wanted)
            .map(|t| t.id.clone())
            .ok_or_else(|| FleetError::UnknownTitle {
                title: wanted.clone(),
                known: catalog
                    .titles
                    .iter()
                    .map(|t| t.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?,
        None => catalog
            .titles
            .first()
            .map(|t| t.id.clone())
            .ok_or(FleetError::NoTitles)?,
    };
    let shared = Arc::new(Shared {
        title,
        client,
        stats: Mutex::new(FleetStats::new()),
        progress: progress.clone(),
        config,
    });
    let plan = LoadPlan {
        max_in_flight: shared.config.max_players,
        ..LoadPlan::new(shared.config.rate, shared.config.duration)
    };
    let started = Instant::now();
    let report = loadgen::run_with_progress(&plan, &progress.arrivals, |i| {
        ("player", play(shared.clone(), i))
    })
    .await
    .map_err(|e| FleetError::Config(e.to_string()))?;
    let elapsed = started.elapsed();
    let dropped: u64 = report.classes.iter().map(|c| c.dropped).sum();
    let mut stats = shared.stats.lock().clone();
    stats.dropped(dropped);
    let c = &shared.config;
    Ok(stats.report(
        FleetSetup {
            mode: "http".into(),
            abr: c.player.abr.to_string(),
            trace: c.trace.name().to_owned(),
            buffer: c.player.buffer_max,
            title: shared.title.clone(),
            seed: c.seed,
        },
        elapsed,
    ))
}

/// Why a request failed, and whether the edge is to blame.
struct Failure {
    kind: &'static str,
    edge_down: bool,
}

fn classify(error: &HttpError) -> Failure {
    match error {
        HttpError::Timeout { .. } => Failure {
            kind: "edge_timeout",
            edge_down: true,
        },
        HttpError::Status { status, .. } if status.is_server_error() => Failure {
            kind: "edge_5xx",
            edge_down: true,
        },
        HttpError::Status { status, .. } if status.as_u16() == 403 => Failure {
            kind: "edge_403",
            edge_down: false,
        },
        HttpError::Status { status, .. } if status.as_u16() == 404 => Failure {
            kind: "edge_404",
            edge_down: false,
        },
        HttpError::Status { .. } => Failure {
            kind: "edge_4xx",
            edge_down: false,
        },
        HttpError::Decode { .. } | HttpError::InvalidRequest { .. } => Failure {
            kind: "edge_bad_answer",
            edge_down: false,
        },
        HttpError::Transport { .. } => Failure {
            kind: "edge_transport",
            edge_down: true,
        },
    }
}

/// One player's link and clock.
struct Link {
    trace: Arc<NetworkTrace>,
    offset: Duration,
    t0: Instant,
}

impl Link {
    fn now(&self) -> Duration {
        self.t0.elapsed()
    }

    /// Holds until a request sent at session time `sent` that brought `bytes`
    /// would have completed on the trace.
    async fn pace(&self, sent: Duration, bytes: u64) -> Duration {
        let at = self.offset + sent;
        let latency = self.trace.latency_at(at);
        let done = sent + latency + self.trace.transfer_time(at + latency, bytes);
        tokio::time::sleep_until(self.t0 + done).await;
        self.now()
    }
}

/// One player's view of the edge it streams from.
struct Stream {
    grant: PlayGrant,
    /// Variants in ladder order (ascending bitrate): their media playlists' URLs…
    variant_urls: Vec<String>,
    /// …and their bitrates.
    bitrates: Vec<u64>,
    /// Each rendition's segment URLs, once fetched from this edge.
    segments: Vec<Option<Vec<String>>>,
}

struct PlayerRun {
    shared: Arc<Shared>,
    link: Link,
    region: Option<String>,
    failovers: u32,
    posting: Option<JoinHandle<()>>,
    next_post: Duration,
}

enum Ended {
    /// Could not begin: no grant or no playable ladder.
    NotBegun(&'static str),
    Played,
}

async fn play(shared: Arc<Shared>, i: u64) -> Verdict {
    let seed = fmix64(shared.config.seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let trace = shared.config.trace.clone();
    let regions = &shared.config.regions;
    let mut run = PlayerRun {
        link: Link {
            offset: Duration::from_nanos(seed % trace.period().as_nanos().max(1) as u64),
            trace,
            t0: Instant::now(),
        },
        region: (!regions.is_empty()).then(|| regions[(i % regions.len() as u64) as usize].clone()),
        failovers: 0,
        posting: None,
        next_post: shared.config.player.heartbeat,
        shared: shared.clone(),
    };
    let progress = shared.progress.clone();
    progress.playing.fetch_add(1, Ordering::Relaxed);
    let ended = run.play().await;
    progress.playing.fetch_sub(1, Ordering::Relaxed);
    match ended {
        Ended::Played => Verdict::Ok,
        Ended::NotBegun(kind) => {
            progress.errors.fetch_add(1, Ordering::Relaxed);
            shared.stats.lock().failed_to_begin(kind);
            Verdict::Error
        }
    }
}

impl PlayerRun {
    fn config(&self) -> &FleetConfig {
        &self.shared.config
    }

    async fn get(&self, url: &str) -> Result<(Bytes, Duration), Failure> {
        let sent = self.link.now();
        let response = self
            .shared
            .client
            .send(Method::GET, url, HeaderMap::new(), Bytes::new())
            .await;
        let response = match response {
            Ok(r) if r.status.is_success() => r,
            Ok(r) => {
                return Err(classify(&HttpError::Status {
                    method: Method::GET,
                    url: url.to_owned(),
                    status: r.status,
                    body: String::new(),
                }));
            }
            Err(e) => return Err(classify(&e)),
        };
        let done = self.link.pace(sent, response.body.len() as u64).await;
        Ok((response.body, done - sent))
    }

    async fn grant(&self, session: Option<&PlayGrant>) -> Result<PlayGrant, &'static str> {
        let request = PlayRequest {
            title: self.shared.title.clone(),
            region: self.region.clone(),
            session: session.map(|g| g.session.clone()),
            failed_edge: session.map(|g| g.edge.clone()),
        };
        let sent = self.link.now();
        let url = format!("{}/v1/playback", self.config().playback);
        match self
            .shared
            .client
            .json::<_, PlayGrant>(Method::POST, &url, &request)
            .await
        {
            Ok(grant) => {
                self.link.pace(sent, 512).await;
                Ok(grant)
            }
            Err(e) if e.status().is_some() => Err("playback_refused"),
            Err(_) => Err("playback_unreachable"),
        }
    }

    /// The master playlist of `grant`'s edge, read into a stream.
    async fn open(&self, grant: PlayGrant) -> Result<Stream, Failure> {
        let (body, _) = self.get(&grant.manifest_url).await?;
        let text = std::str::from_utf8(&body).map_err(|_| Failure {
            kind: "bad_playlist",
            edge_down: false,
        })?;
        let master = MasterPlaylist::parse(text).map_err(|_| Failure {
            kind: "bad_playlist",
            edge_down: false,
        })?;
        let mut variants = master.variants;
        variants.sort_by(|a, b| (a.bandwidth_bps, &a.uri).cmp(&(b.bandwidth_bps, &b.uri)));
        Ok(Stream {
            variant_urls: variants
                .iter()
                .map(|v| resolve(&grant.manifest_url, &v.uri))
                .collect(),
            bitrates: variants.iter().map(|v| v.bandwidth_bps).collect(),
            segments: vec![None; variants.len()],
            grant,
        })
    }

    /// Rendition `r`'s media playlist from the stream's edge.
    async fn media(&self, stream: &mut Stream, r: usize) -> Result<MediaPlaylist, Failure> {
        let url = stream.variant_urls[r].clone();
        let (body, _) = self.get(&url).await?;
        let media = std::str::from_utf8(&body)
            .ok()
            .and_then(|text| MediaPlaylist::parse(text).ok())
            .ok_or(Failure {
                kind: "bad_playlist",
                edge_down: false,
            })?;
        stream.segments[r] = Some(
            media
                .segments
                .iter()
                .map(|s| resolve(&url, &s.uri))
                .collect(),
        );
        Ok(media)
    }

    async fn play(&mut self) -> Ended {
        let grant = match self.grant(None).await {
            Ok(grant) => grant,
            Err(kind) => return Ended::NotBegun(kind),
        };
        let mut stream = match self.open(grant).await {
            Ok(stream) if !stream.variant_urls.is_empty() => stream,
            Ok(_) | Err(_) => return Ended::NotBegun("no_playlist"),
        };
        // The lowest rendition's playlist gives the segments' durations.
        let ladder = match self.media(&mut stream, 0).await {
            // Named by their URLs: the ladder's order is then the stream's.
            Ok(media) => Ladder::new(
                stream
                    .variant_urls
                    .iter()
                    .cloned()
                    .zip(stream.bitrates.iter().copied()),
                media.durations(),
            ),
            Err(_) => return Ended::NotBegun("no_playlist"),
        };
        let Ok(ladder) = ladder else {
            return Ended::NotBegun("bad_ladder");
        };
        let mut player = Player::new(self.config().player.clone(), ladder);
        let progress = self.shared.progress.clone();
        let mut was_started = false;
        let mut was_stalled = false;
        loop {
            let now = self.link.now();
            let action = player.next_action(now);
            self.post_events(&mut player, &stream, false).await;
            let (started, stalled) = (player.has_started(), player.is_stalled());
            if started && !was_started {
                progress.started.fetch_add(1, Ordering::Relaxed);
                was_started = true;
            }
            if stalled != was_stalled {
                if stalled {
                    progress.stalled_now.fetch_add(1, Ordering::Relaxed);
                } else {
                    progress.stalled_now.fetch_sub(1, Ordering::Relaxed);
                }
                was_stalled = stalled;
            }
            match action {
                Action::Done => break,
                Action::Wait(d) => tokio::time::sleep(d).await,
                Action::Fetch { segment, rendition } => {
                    let requested = self.link.now();
                    match self.fetch(&mut stream, segment, rendition).await {
                        Ok(bytes) => {
                            let now = self.link.now();
                            player.downloaded(now, segment, rendition, bytes, now - requested);
                            progress.segments.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(failure) => {
                            player.fetch_failed(self.link.now(), failure.kind);
                            progress.errors.fetch_add(1, Ordering::Relaxed);
                            if !failure.edge_down || self.failovers >= self.config().max_failovers {
                                break;
                            }
                            match self.fail_over(&stream).await {
                                Some(next) => {
                                    stream = next;
                                    let now = self.link.now();
                                    player.failed_over(now, now - requested);
                                    progress.failovers.fetch_add(1, Ordering::Relaxed);
                                }
                                None => {
                                    player.fetch_failed(self.link.now(), "failover_failed");
                                    break;
                                }
                            }
                        }
                    }
                }
            }
        }
        if was_stalled {
            progress.stalled_now.fetch_sub(1, Ordering::Relaxed);
        }
        let report = player.finish(self.link.now());
        self.post_events(&mut player, &stream, true).await;
        self.shared.stats.lock().record(&report);
        Ended::Played
    }

    async fn fetch(
        &self,
        stream: &mut Stream,
        segment: usize,
        rendition: usize,
    ) -> Result<u64, Failure> {
        if stream.segments[rendition].is_none() {
            self.media(stream, rendition).await?;
        }
        let url = stream.segments[rendition]
            .as_ref()
            .and_then(|urls| urls.get(segment))
            .cloned()
            .ok_or(Failure {
                kind: "missing_segment",
                edge_down: false,
            })?;
        let (body, _) = self.get(&url).await?;
        Ok(body.len() as u64)
    }

    /// A new edge for the session, with its master playlist read: the same
    /// ladder, or nothing.
    async fn fail_over(&mut self, failed: &Stream) -> Option<Stream> {
        let mut failed_grant = failed.grant.clone();
        while self.failovers < self.config().max_failovers {
            self.failovers += 1;
            let grant = self.grant(Some(&failed_grant)).await.ok()?;
            match self.open(grant.clone()).await {
                Ok(stream) if stream.bitrates == failed.bitrates => return Some(stream),
                Ok(_) => return None,
                Err(f) if f.edge_down => failed_grant = grant,
                Err(_) => return None,
            }
        }
        None
    }

    /// Posts the player's queued events when a heartbeat is due (or at the end),
    /// one post in flight at a time.
    async fn post_events(&mut self, player: &mut Player, stream: &Stream, last: bool) {
        let now = self.link.now();
        if !last && now < self.next_post {
            return;
        }
        if let Some(previous) = &self.posting {
            if !last && !previous.is_finished() {
                return;
            }
            if let Some(previous) = self.posting.take() {
                let _ = previous.await;
            }
        }
        self.next_post = now + self.config().player.heartbeat;
        let events = player.drain_events();
        if events.is_empty() {
            return;
        }
        let url = format!(
            "{}/v1/playback/{}/events",
            self.config().playback,
            stream.grant.session
        );
        let client = self.shared.client.clone();
        let shared = self.shared.clone();
        let post = async move {
            let batch = EventBatch { events };
            if let Err(e) = client.call(Method::POST, &url, Some(&batch)).await {
                tracing::debug!(error = %e, "QoE events not posted");
                shared.stats.lock().error("events_post", 1);
            }
        };
        if last {
            post.await;
        } else {
            self.posting = Some(tokio::spawn(post));
        }
    }
}
