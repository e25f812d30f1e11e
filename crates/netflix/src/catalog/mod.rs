//! The catalog service (`netflix-catalog`, :8087): a few thousand generated titles
//! and the content pipeline's playable ones.
//!
//! | route | what it answers |
//! |---|---|
//! | `GET /api/v1/titles?genre=&page=&per_page=` | `{"titles": [...], "page", "per_page", "total", "version"}`: playable titles first, then the generated ones by id; `genre` (case-insensitive, one of [`generate::GENRES`]) filters; `page` from 1, `per_page` 1..=[`MAX_PER_PAGE`] (default [`DEFAULT_PER_PAGE`]) |
//! | `GET /api/v1/titles/{id}` | one [`CatalogTitle`]; 404 naming `id` when unknown |
//! | `GET /internal/v1/catalog` | `{"version": n, "titles": [...]}`: everything, for the search index |
//! | `GET /internal/v1/catalog/version` | `{"version": n}`: what a reader polls, cheaply |
//!
//! **Generated titles** ([`generate`]) come from `seed`: ids `t00000`…,
//! `playable: false`. **The pipeline's titles** come from the origin
//! (`netflix-origin`, `GET /v1/titles`) through the playback API's catalog client
//! ([`crate::playback::catalog::Catalog`]: discovery, the resilience stack, the
//! last good copy while the origin is down), asked every `refresh`; they keep
//! their origin ids, are `playable: true`, and get genres, cast, year and synopsis
//! derived from their id (the pipeline knows only a name and a duration) and the
//! top popularity prior. An origin id that equals a generated one replaces it.
//!
//! **Version**: a fingerprint of the seed, the generated count and the pipeline's
//! titles (ids, names, durations), 53 bits (exact in JSON numbers everywhere). It
//! changes when the pipeline's titles change and only then, and is the same
//! after a restart, so a reader polling it re-indexes exactly when it must.
//!
//! Bounds: the catalog is `titles` (≤ [`MAX_TITLES`]) plus what the origin lists;
//! a page is at most [`MAX_PER_PAGE`] titles. Not guaranteed: a title published a
//! moment ago is listed only after the next refresh (default 5 s); an origin
//! that is down leaves the last pipeline titles seen (none before the first
//! answer) — the generated catalog is always served.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use casebook_kit::api::ApiError;
use casebook_kit::case::CaseEnv;
use casebook_kit::config::ConfigError;
use casebook_kit::resilience::breaker::BreakerRegistry;
use casebook_kit::resolve::Resolver;
use casebook_kit::runtime::{BoxFuture, InstanceContext, ServiceFactory, StartError, serve_http};
use casebook_kit::topology::Placement;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::NetflixConfig;
use crate::playback::catalog::{Catalog, Title};

pub mod generate;

/// The service's name in discovery.
pub const CATALOG_SERVICE: &str = "netflix-catalog";
/// The most titles `titles` may generate: the whole catalog (about 450 bytes
/// of JSON a title) must fit one internal answer, which the kit's HTTP client
/// reads up to 16 MiB of.
pub const MAX_TITLES: usize = 20_000;
/// The largest page `per_page` may ask for.
pub const MAX_PER_PAGE: usize = 100;
/// The page size when `per_page` is absent.
pub const DEFAULT_PER_PAGE: usize = 20;

/// The `[netflix.catalog]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CatalogConfig {
    /// The generator's seed: one seed, one catalog.
    pub seed: u64,
    /// How many titles to generate.
    pub titles: usize,
    /// How often the pipeline's titles are read from the origin.
    #[serde(with = "humantime_serde")]
    pub refresh: Duration,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            titles: 3000,
            refresh: Duration::from_secs(5),
        }
    }
}

impl CatalogConfig {
    /// Checks every key; the error names the first one at fault under `key`.
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if !(1..=MAX_TITLES).contains(&self.titles) {
            return Err(ConfigError::new(
                format!("{key}.titles"),
                format!("must be in 1..={MAX_TITLES}"),
            ));
        }
        if self.refresh < Duration::from_millis(100) || self.refresh > Duration::from_secs(3600) {
            return Err(ConfigError::new(
                format!("{key}.refresh"),
                "must be between 100ms and 1h",
            ));
        }
        Ok(())
    }
}

/// One title as the catalog serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogTitle {
    /// `t00042` when generated; the origin's id when the pipeline made it.
    pub id: String,
    pub name: String,
    pub year: u16,
    pub genres: Vec<String>,
    pub cast: Vec<String>,
    pub synopsis: String,
    /// A rating of [`generate::MATURITY`].
    pub maturity: String,
    pub duration_min: u32,
    /// The popularity prior: a share of views, Zipf-distributed over the
    /// generated titles (what "trending" falls back to).
    pub popularity: f64,
    /// Whether the origin has it (the pipeline's titles): playback can play it.
    pub playable: bool,
}

/// One version of the whole catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogSnapshot {
    pub version: u64,
    pub titles: Vec<CatalogTitle>,
}

/// The catalog: the generated titles and the pipeline's, merged, versioned.
#[derive(Debug)]
pub struct CatalogStore {
    seed: u64,
    generated: Vec<CatalogTitle>,
    current: RwLock<Arc<Indexed>>,
}

#[derive(Debug)]
struct Indexed {
    snapshot: CatalogSnapshot,
    by_id: HashMap<String, usize>,
}

impl CatalogStore {
    /// The catalog `config` generates, without pipeline titles yet.
    pub fn new(config: &CatalogConfig) -> Self {
        let generated = generate::generate(config.seed, config.titles);
        let current = RwLock::new(Arc::new(merge(config.seed, &generated, &[])));
        Self {
            seed: config.seed,
            generated,
            current,
        }
    }

    /// Takes the origin's titles as the pipeline's; whether the version changed.
    pub fn set_pipeline_titles(&self, titles: &[Title]) -> bool {
        let merged = merge(self.seed, &self.generated, titles);
        let changed = merged.snapshot.version != self.current.read().snapshot.version;
        if changed {
            tracing::info!(
                version = merged.snapshot.version,
                playable = titles.len(),
                "catalog changed"
            );
            *self.current.write() = Arc::new(merged);
        }
        changed
    }

    /// How many titles the catalog holds.
    pub fn title_count(&self) -> usize {
        self.current.read().snapshot.titles.len()
    }

    /// The current version.
    pub fn version(&self) -> u64 {
        self.current.read().snapshot.version
    }

    /// Everything, as `/internal/v1/catalog` answers it.
    pub fn snapshot(&self) -> CatalogSnapshot {
        self.current.read().snapshot.clone()
    }

    /// One title.
    pub fn title(&self, id: &str) -> Option<CatalogTitle> {
        let current = self.current.read().clone();
        current
            .by_id
            .get(id)
            .map(|&i| current.snapshot.titles[i].clone())
    }

    /// One page of the titles of `genre` (any when `None`): the page and the total.
    pub fn page(
        &self,
        genre: Option<&str>,
        page: usize,
        per_page: usize,
    ) -> (Vec<CatalogTitle>, usize) {
        let current = self.current.read().clone();
        let matching =
            current.snapshot.titles.iter().filter(|t| {
                genre.is_none_or(|g| t.genres.iter().any(|tg| tg.eq_ignore_ascii_case(g)))
            });
        let total = matching.clone().count();
        let skip = (page - 1).saturating_mul(per_page);
        (matching.skip(skip).take(per_page).cloned().collect(), total)
    }
}

fn merge(seed: u64, generated: &[CatalogTitle], pipeline: &[Title]) -> Indexed {
    let top_prior = generated
        .iter()
        .map(|t| t.popularity)
        .fold(0.0_f64, f64::max);
    let mut fingerprint = generate::fnv1a(&seed.to_le_bytes())
        ^ generate::fnv1a(&(generated.len() as u64).to_le_bytes()).rotate_left(7);
    let mut titles: Vec<CatalogTitle> = Vec::with_capacity(generated.len() + pipeline.len());
    let mut sorted: Vec<&Title> = pipeline.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    sorted.dedup_by(|a, b| a.id == b.id);
    for title in &sorted {
        let entry = format!("{}\0{}\0{}", title.id, title.name, title.duration_secs);
        fingerprint = (fingerprint ^ generate::fnv1a(entry.as_bytes())).wrapping_mul(31);
        let mut described = generate::describe_ingested(seed, &title.id, &title.name);
        described.playable = true;
        described.popularity = top_prior;
        described.duration_min = (title.duration_secs / 60.0).ceil().max(1.0) as u32;
        titles.push(described);
    }
    titles.extend(
        generated
            .iter()
            .filter(|g| sorted.binary_search_by(|t| t.id.cmp(&g.id)).is_err())
            .cloned(),
    );
    let by_id = titles
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.clone(), i))
        .collect();
    Indexed {
        snapshot: CatalogSnapshot {
            version: fingerprint & ((1 << 53) - 1),
            titles,
        },
        by_id,
    }
}

/// The routes over a store.
pub fn router(store: Arc<CatalogStore>) -> Router {
    Router::new()
        .route("/api/v1/titles", get(list))
        .route("/api/v1/titles/{id}", get(one))
        .route("/internal/v1/catalog", get(everything))
        .route("/internal/v1/catalog/version", get(version))
        .fallback(|| async { ApiError::not_found("no such route") })
        .with_state(store)
}

fn parse_bounded(
    query: &HashMap<String, String>,
    field: &str,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match query.get(field) {
        None => Ok(default),
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_field(
                field,
                format!("`{text}` is not a whole number in 1..={max}"),
            )),
        },
    }
}

async fn list(
    State(store): State<Arc<CatalogStore>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let page = parse_bounded(&query, "page", 1, 1_000_000)?;
    let per_page = parse_bounded(&query, "per_page", DEFAULT_PER_PAGE, MAX_PER_PAGE)?;
    let genre = match query.get("genre").map(String::as_str) {
        None | Some("") => None,
        Some(genre) => Some(
            *generate::GENRES
                .iter()
                .find(|g| g.eq_ignore_ascii_case(genre))
                .ok_or_else(|| {
                    ApiError::bad_field(
                        "genre",
                        format!(
                            "unknown genre `{}`; known: {}",
                            genre.chars().take(64).collect::<String>(),
                            generate::GENRES.join(", ")
                        ),
                    )
                })?,
        ),
    };
    let (titles, total) = store.page(genre, page, per_page);
    Ok(Json(json!({
        "titles": titles,
        "page": page,
        "per_page": per_page,
        "total": total,
        "version": store.version(),
    })))
}

async fn one(
    State(store): State<Arc<CatalogStore>>,
    Path(id): Path<String>,
) -> Result<Json<CatalogTitle>, ApiError> {
    store.title(&id).map(Json).ok_or_else(|| ApiError {
        field: Some("id".into()),
        ..ApiError::not_found(format!(
            "no title `{}`",
            id.chars().take(64).collect::<String>()
        ))
    })
}

async fn version(State(store): State<Arc<CatalogStore>>) -> Json<Value> {
    Json(json!({ "version": store.version() }))
}

async fn everything(State(store): State<Arc<CatalogStore>>) -> Json<CatalogSnapshot> {
    Json(store.snapshot())
}

/// The platform's factory for `netflix-catalog`.
#[derive(Debug)]
pub struct CatalogService {
    config: NetflixConfig,
    resolver: Arc<Resolver>,
}

impl CatalogService {
    pub fn new(config: &NetflixConfig, env: &CaseEnv) -> Result<Self, ConfigError> {
        config.catalog.validate("netflix.catalog")?;
        Ok(Self {
            config: config.clone(),
            resolver: env.resolver.clone(),
        })
    }

    /// A factory finding the origin through `resolver` (tests).
    pub fn with_resolver(config: &NetflixConfig, resolver: Arc<Resolver>) -> Self {
        Self {
            config: config.clone(),
            resolver,
        }
    }
}

impl ServiceFactory for CatalogService {
    fn name(&self) -> &str {
        CATALOG_SERVICE
    }

    fn start<'a>(
        &'a self,
        ctx: &'a InstanceContext,
    ) -> BoxFuture<'a, Result<SocketAddr, StartError>> {
        Box::pin(async move {
            let info = ctx.info();
            let store = Arc::new(CatalogStore::new(&self.config.catalog));
            let origin = Catalog::new(
                self.resolver.clone(),
                Placement {
                    region: info.region,
                    zone: info.zone,
                },
                self.config.catalog.refresh,
                ctx.clock().clone(),
                BreakerRegistry::global().clone(),
            )?;
            let listener = ctx.bind(ctx.listen_addr()).await?;
            let address = listener.local_addr().map_err(anyhow::Error::from)?;
            ctx.spawn(follow_pipeline(
                store.clone(),
                origin,
                self.config.catalog.refresh,
                ctx.shutdown_token(),
            ));
            serve_http(ctx, listener, router(store));
            Ok(address)
        })
    }
}

/// Reads the origin's titles every `every` until the instance stops.
async fn follow_pipeline(
    store: Arc<CatalogStore>,
    origin: Catalog,
    every: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticks.tick() => {
                match origin.titles().await {
                    // A stale view is the last good one: already taken.
                    Ok(view) if !view.stale => {
                        store.set_pipeline_titles(&view.titles);
                    }
                    Ok(_) => {}
                    Err(error) => tracing::debug!(%error, "the origin's titles are not available yet"),
                }
                metrics::gauge!("casebook_netflix_catalog_titles").set(store.title_count() as f64);
            }
        }
    }
}
