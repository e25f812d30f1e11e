//! Recommendations and search (`netflix-recs`, :8088): home rows and full-text
//! search over the catalog (the case study's Elasticsearch role, with tantivy).
//!
//! | route | what it answers |
//! |---|---|
//! | `GET /api/v1/search?q=&limit=` | `{"query", "results": [{"id","name","year","genres","playable","score"}], "took_ms", "fallback": false}`; `q` 1..=[`search::MAX_QUERY_CHARS`] characters (400 naming `q` when missing, blank or longer), `limit` 1..=[`MAX_SEARCH_LIMIT`] (default [`DEFAULT_SEARCH_LIMIT`]; 400 naming `limit`) |
//! | `GET /api/v1/home` | `{"rows": [{"title","kind","items"}], "fallback": false, "degraded": [...], "cached": bool}` for the viewer named by `x-user-id` (401 naming `x-user-id` when absent; the gateway sets it on this route) |
//!
//! **The index** ([`search`]) is built from the catalog service's
//! `GET /internal/v1/catalog`, found through discovery; the catalog's version
//! (`/internal/v1/catalog/version`) is polled every `catalog_poll` and the index
//! rebuilt, in a fresh directory under the instance's data dir, when it changes;
//! searches see the old index until the new one is whole. Until the first
//! index is built (the catalog service not up yet), home and search answer the
//! cached popular rows ([`popular_fallback`], the gateway's fallback body), with
//! `"fallback": true` (search adds `"results": []`).
//!
//! **Home** ([`home`]) asks `netflix-users` for the viewer's history
//! (`/internal/v1/history/{account}?limit=history_limit`) and the trending titles
//! (`/internal/v1/trending`), concurrently, through the kit's resilience stack
//! (timeout `users_timeout`, one retry, a breaker); either unavailable degrades
//! the rows (named in `degraded`) instead of failing. A viewer's home is cached
//! for `home_ttl` (at most `home_cache_users` viewers, least recently used out;
//! `"cached": true` says so); a degraded home is never cached, so it heals at
//! the next request once the users service is back.
//!
//! Not guaranteed: that home reflects a view of the last `home_ttl`; a search
//! right after a publish finds the title only after the next poll and rebuild.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use casebook_kit::api::ApiError;
use casebook_kit::cache::{Cache, CacheConfig};
use casebook_kit::case::CaseEnv;
use casebook_kit::clock::SharedClock;
use casebook_kit::config::ConfigError;
use casebook_kit::http_client::HttpClient;
use casebook_kit::resilience::breaker::BreakerRegistry;
use casebook_kit::resilience::stack::{ResilienceConfig, ResilientClient, StackBuilder};
use casebook_kit::resolve::Resolver;
use casebook_kit::runtime::{BoxFuture, InstanceContext, ServiceFactory, StartError, serve_http};
use casebook_kit::topology::Placement;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::catalog::{CATALOG_SERVICE, CatalogSnapshot, CatalogTitle, generate};
use crate::config::NetflixConfig;
use crate::users::USERS_SERVICE;

pub mod home;
pub mod search;

use home::{HistoryAnswer, HistoryItem, TrendingAnswer, TrendingItem};
use search::{QueryError, SearchIndex};

/// The service's name in discovery.
pub const RECS_SERVICE: &str = "netflix-recs";
/// The most results a search may ask for.
pub const MAX_SEARCH_LIMIT: usize = 50;
/// Results when `limit` is absent.
pub const DEFAULT_SEARCH_LIMIT: usize = 20;
/// The dependency name of the calls to the users service (breaker, metrics).
pub const USERS_DEPENDENCY: &str = "netflix-recs-users";
/// The longest `x-user-id` accepted.
pub const MAX_ACCOUNT_CHARS: usize = 128;

/// The `[netflix.recs]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecsConfig {
    /// Titles per home row.
    pub row_size: usize,
    /// History items asked of the users service per home.
    pub history_limit: usize,
    /// How long a viewer's home is reused.
    #[serde(with = "humantime_serde")]
    pub home_ttl: Duration,
    /// Viewers whose home is cached at most.
    pub home_cache_users: u64,
    /// How often the catalog's version is checked.
    #[serde(with = "humantime_serde")]
    pub catalog_poll: Duration,
    /// The timeout of one call to the users service.
    #[serde(with = "humantime_serde")]
    pub users_timeout: Duration,
}

impl Default for RecsConfig {
    fn default() -> Self {
        Self {
            row_size: 12,
            history_limit: 50,
            home_ttl: Duration::from_secs(10),
            home_cache_users: 100_000,
            catalog_poll: Duration::from_secs(5),
            users_timeout: Duration::from_millis(300),
        }
    }
}

impl RecsConfig {
    /// Checks every key; the error names the first one at fault under `key`.
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let bad =
            |name: &str, message: &str| Err(ConfigError::new(format!("{key}.{name}"), message));
        if !(1..=50).contains(&self.row_size) {
            return bad("row_size", "must be in 1..=50");
        }
        if !(1..=500).contains(&self.history_limit) {
            return bad("history_limit", "must be in 1..=500");
        }
        if self.home_ttl < Duration::from_millis(100) || self.home_ttl > Duration::from_secs(3600) {
            return bad("home_ttl", "must be between 100ms and 1h");
        }
        if !(1..=10_000_000).contains(&self.home_cache_users) {
            return bad("home_cache_users", "must be in 1..=10000000");
        }
        if self.catalog_poll < Duration::from_millis(100)
            || self.catalog_poll > Duration::from_secs(3600)
        {
            return bad("catalog_poll", "must be between 100ms and 1h");
        }
        if self.users_timeout < Duration::from_millis(10)
            || self.users_timeout > Duration::from_secs(10)
        {
            return bad("users_timeout", "must be between 10ms and 10s");
        }
        Ok(())
    }
}

/// One version of the catalog, indexed: what home and search read.
#[derive(Debug)]
pub struct Ready {
    pub version: u64,
    pub titles: Vec<CatalogTitle>,
    pub by_id: HashMap<String, usize>,
    /// Positions in `titles`, most popular first.
    pub by_popularity: Vec<usize>,
    pub index: SearchIndex,
    dir: PathBuf,
}

impl Ready {
    /// Indexes `snapshot` into `dir` (blocking: call off the async workers).
    pub fn build(snapshot: CatalogSnapshot, dir: PathBuf) -> anyhow::Result<Self> {
        let index = SearchIndex::build(&dir, &snapshot.titles)?;
        let by_popularity = home::popularity_order(&snapshot.titles);
        let by_id = snapshot
            .titles
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id.clone(), i))
            .collect();
        Ok(Self {
            version: snapshot.version,
            titles: snapshot.titles,
            by_id,
            by_popularity,
            index,
            dir,
        })
    }
}

/// The recommendation and search engine, apart from HTTP.
#[derive(Debug)]
pub struct Recs {
    config: RecsConfig,
    fallback: Value,
    ready: RwLock<Option<Arc<Ready>>>,
    users: ResilientClient,
    catalog_http: HttpClient,
    resolver: Arc<Resolver>,
    near: Placement,
    // Keyed by the index version too: a rebuilt index makes older homes unreachable.
    homes: Cache<(u64, String), Arc<Value>>,
    clock: SharedClock,
    index_root: PathBuf,
    builds: AtomicU64,
}

impl Recs {
    /// An engine finding its neighbours through `resolver` from `near`, keeping
    /// its indexes under `index_root` (emptied now: an index is rebuilt at start).
    pub fn new(
        config: &NetflixConfig,
        resolver: Arc<Resolver>,
        near: Placement,
        index_root: &Path,
        clock: SharedClock,
        registry: BreakerRegistry,
    ) -> anyhow::Result<Self> {
        let recs = &config.recs;
        let mut resilience = ResilienceConfig::default();
        resilience.timeout.default = recs.users_timeout;
        resilience.retry.max_attempts = 2;
        let users = ResilientClient::with_builder(
            StackBuilder::new(USERS_DEPENDENCY, resilience).registry(registry),
            None,
        )
        .map_err(|e| anyhow::anyhow!("{USERS_DEPENDENCY} stack: {}: {}", e.field, e.reason))?;
        let homes = Cache::new(
            CacheConfig::new("netflix_recs_home", recs.home_cache_users)
                .time_to_live(recs.home_ttl),
            clock.clone(),
        )?;
        if index_root.exists() {
            std::fs::remove_dir_all(index_root)?;
        }
        std::fs::create_dir_all(index_root)?;
        Ok(Self {
            config: recs.clone(),
            fallback: popular_fallback(config),
            ready: RwLock::new(None),
            users,
            catalog_http: HttpClient::new(Duration::from_secs(5)),
            resolver,
            near,
            homes,
            clock,
            index_root: index_root.to_owned(),
            builds: AtomicU64::new(0),
        })
    }

    /// The index and catalog in use, once built.
    pub fn ready(&self) -> Option<Arc<Ready>> {
        self.ready.read().clone()
    }

    /// Checks the catalog's version and, when it changed (or nothing is indexed
    /// yet), fetches the catalog and rebuilds the index. Whether it rebuilt.
    pub async fn refresh(&self) -> anyhow::Result<bool> {
        let address = self.resolver.resolve(CATALOG_SERVICE, &self.near).await?;
        let current = self.ready().map(|r| r.version);
        if current.is_some() {
            let url = format!("http://{address}/internal/v1/catalog/version");
            let answer: Value = self.catalog_http.get_json(&url).await.inspect_err(|_| {
                self.resolver.forget(CATALOG_SERVICE);
            })?;
            if answer["version"].as_u64() == current {
                return Ok(false);
            }
        }
        let url = format!("http://{address}/internal/v1/catalog");
        let snapshot: CatalogSnapshot =
            self.catalog_http.get_json(&url).await.inspect_err(|_| {
                self.resolver.forget(CATALOG_SERVICE);
            })?;
        if Some(snapshot.version) == current {
            return Ok(false);
        }
        let n = self.builds.fetch_add(1, Ordering::Relaxed);
        let dir = self.index_root.join(format!("v{}-{n}", snapshot.version));
        let built = tokio::task::spawn_blocking(move || Ready::build(snapshot, dir)).await??;
        tracing::info!(
            version = built.version,
            titles = built.titles.len(),
            "search index built"
        );
        let old = self.ready.write().replace(Arc::new(built));
        if let Some(old) = old {
            // Searches holding the old index keep their mapped files (unlinked, not unmapped).
            let _ = std::fs::remove_dir_all(&old.dir);
        }
        Ok(true)
    }

    /// `GET /api/v1/search`.
    pub fn search(&self, query: Option<&str>, limit: Option<&str>) -> Result<Value, ApiError> {
        let text = query.unwrap_or_default();
        let terms = search::query_terms(text).map_err(|e| match e {
            QueryError::Empty => ApiError::bad_field("q", "a search needs `q`, some words"),
            QueryError::TooLong(_) => ApiError::bad_field("q", e.to_string()),
        })?;
        let limit = match limit {
            None => DEFAULT_SEARCH_LIMIT,
            Some(text) => match text.parse::<usize>() {
                Ok(n) if (1..=MAX_SEARCH_LIMIT).contains(&n) => n,
                _ => {
                    return Err(ApiError::bad_field(
                        "limit",
                        format!("must be a whole number in 1..={MAX_SEARCH_LIMIT}"),
                    ));
                }
            },
        };
        let Some(ready) = self.ready() else {
            let mut body = self.fallback.clone();
            body["query"] = json!(text);
            body["results"] = json!([]);
            return Ok(body);
        };
        let started = self.clock.now();
        let hits = ready.index.search(&terms, limit).map_err(|e| {
            tracing::warn!(error = %e, "search failed");
            ApiError::internal("the search failed")
        })?;
        let results: Vec<Value> = hits
            .iter()
            .filter_map(|hit| ready.titles.get(hit.ord).map(|t| (t, hit.score)))
            .map(|(t, score)| {
                json!({
                    "id": t.id,
                    "name": t.name,
                    "year": t.year,
                    "genres": t.genres,
                    "playable": t.playable,
                    "score": score,
                })
            })
            .collect();
        let took = self.clock.now().saturating_duration_since(started);
        metrics::histogram!("casebook_netflix_search_seconds").record(took.as_secs_f64());
        Ok(json!({
            "query": text,
            "results": results,
            "took_ms": took.as_secs_f64() * 1000.0,
            "fallback": false,
        }))
    }

    /// `GET /api/v1/home` for `account`.
    pub async fn home(&self, account: &str) -> Result<Value, ApiError> {
        let Some(ready) = self.ready() else {
            return Ok(self.fallback.clone());
        };
        if let Some(cached) = self.homes.get(&(ready.version, account.to_owned())) {
            let mut body = cached.as_ref().clone();
            body["cached"] = json!(true);
            return Ok(body);
        }
        let (history, trending) = tokio::join!(self.history(account), self.trending());
        let composed = home::compose(
            &ready,
            history.as_deref(),
            trending.as_deref(),
            self.config.row_size,
        );
        for what in &composed.degraded {
            metrics::counter!("casebook_netflix_home_degraded_total", "missing" => *what)
                .increment(1);
        }
        let body = json!({
            "rows": composed.rows,
            "fallback": false,
            "degraded": composed.degraded,
            "cached": false,
        });
        if composed.degraded.is_empty() {
            self.homes
                .insert((ready.version, account.to_owned()), Arc::new(body.clone()));
        }
        Ok(body)
    }

    async fn users_get(&self, path: &str) -> Result<Option<Bytes>, String> {
        let address = self
            .resolver
            .resolve(USERS_SERVICE, &self.near)
            .await
            .map_err(|e| e.to_string())?;
        let url = format!("http://{address}{path}");
        let mut request = http::Request::get(&url)
            .body(Bytes::new())
            .map_err(|e| e.to_string())?;
        casebook_kit::resilience::mark_idempotent(&mut request);
        match self.users.send(request).await {
            Ok(response) if response.status() == StatusCode::NOT_FOUND => Ok(None),
            Ok(response) if response.status().is_success() => Ok(Some(response.into_body())),
            Ok(response) => Err(format!("{url} answered {}", response.status())),
            Err(error) => {
                self.resolver.forget(USERS_SERVICE);
                Err(error.to_string())
            }
        }
    }

    /// The viewer's history, newest first; `None` when unavailable (an account
    /// the users service does not know has an empty history).
    async fn history(&self, account: &str) -> Option<Vec<HistoryItem>> {
        let path = format!(
            "/internal/v1/history/{account}?limit={}",
            self.config.history_limit
        );
        match self.users_get(&path).await {
            Ok(None) => Some(Vec::new()),
            Ok(Some(body)) => match serde_json::from_slice::<HistoryAnswer>(&body) {
                Ok(answer) => Some(answer.items),
                Err(error) => {
                    tracing::debug!(%error, "the history is not the expected JSON");
                    None
                }
            },
            Err(error) => {
                tracing::debug!(%error, "history unavailable");
                None
            }
        }
    }

    /// The trending titles; `None` when unavailable.
    async fn trending(&self) -> Option<Vec<TrendingItem>> {
        let path = format!("/internal/v1/trending?limit={}", self.config.row_size);
        match self.users_get(&path).await {
            Ok(Some(body)) => serde_json::from_slice::<TrendingAnswer>(&body)
                .ok()
                .map(|a| a.titles),
            Ok(None) => None,
            Err(error) => {
                tracing::debug!(%error, "trending unavailable");
                None
            }
        }
    }
}

/// The account named by `x-user-id`: 401 when absent, 400 when malformed (it
/// goes into a path of the users service, so only characters safe there pass).
pub fn account_of(headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(value) = headers.get("x-user-id") else {
        return Err(ApiError {
            field: Some("x-user-id".into()),
            ..ApiError::new(
                StatusCode::UNAUTHORIZED,
                "home is personal: the caller's account (x-user-id) is missing",
            )
            .with_code("unauthenticated")
        });
    };
    let account = value.to_str().unwrap_or_default();
    let safe = (1..=MAX_ACCOUNT_CHARS).contains(&account.len())
        && account
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:@".contains(&b));
    if !safe {
        return Err(ApiError::bad_field(
            "x-user-id",
            format!("an account id is 1-{MAX_ACCOUNT_CHARS} of A-Z, a-z, 0-9 and -_.:@"),
        ));
    }
    Ok(account.to_owned())
}

/// The routes over an engine.
pub fn router(recs: Arc<Recs>) -> Router {
    Router::new()
        .route("/api/v1/search", get(search_route))
        .route("/api/v1/home", get(home_route))
        .fallback(|| async { ApiError::not_found("no such route") })
        .with_state(recs)
}

async fn search_route(
    State(recs): State<Arc<Recs>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_field("q", e.body_text()))?;
    recs.search(
        query.get("q").map(String::as_str),
        query.get("limit").map(String::as_str),
    )
    .map(Json)
}

async fn home_route(
    State(recs): State<Arc<Recs>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let account = account_of(&headers)?;
    recs.home(&account).await.map(Json)
}

/// The platform's factory for `netflix-recs`.
#[derive(Debug)]
pub struct RecsService {
    config: NetflixConfig,
    resolver: Arc<Resolver>,
}

impl RecsService {
    pub fn new(config: &NetflixConfig, env: &CaseEnv) -> Result<Self, ConfigError> {
        config.recs.validate("netflix.recs")?;
        Ok(Self {
            config: config.clone(),
            resolver: env.resolver.clone(),
        })
    }

    /// A factory finding its neighbours through `resolver` (tests).
    pub fn with_resolver(config: &NetflixConfig, resolver: Arc<Resolver>) -> Self {
        Self {
            config: config.clone(),
            resolver,
        }
    }
}

impl ServiceFactory for RecsService {
    fn name(&self) -> &str {
        RECS_SERVICE
    }

    fn start<'a>(
        &'a self,
        ctx: &'a InstanceContext,
    ) -> BoxFuture<'a, Result<SocketAddr, StartError>> {
        Box::pin(async move {
            let info = ctx.info();
            let recs = Arc::new(Recs::new(
                &self.config,
                self.resolver.clone(),
                Placement {
                    region: info.region,
                    zone: info.zone,
                },
                &ctx.data_dir().join("search"),
                ctx.clock().clone(),
                BreakerRegistry::global().clone(),
            )?);
            let listener = ctx.bind(ctx.listen_addr()).await?;
            let address = listener.local_addr().map_err(anyhow::Error::from)?;
            ctx.spawn(follow_catalog(
                recs.clone(),
                self.config.recs.catalog_poll,
                ctx.shutdown_token(),
            ));
            serve_http(ctx, listener, router(recs));
            Ok(address)
        })
    }
}

/// Keeps the index on the catalog's version until the instance stops: every
/// `every` once built; every second, until then, so the first index follows
/// the catalog service's start closely.
async fn follow_catalog(
    recs: Arc<Recs>,
    every: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        if let Err(error) = recs.refresh().await {
            tracing::debug!(%error, "the catalog could not be indexed (yet)");
        }
        let wait = if recs.ready().is_some() {
            every
        } else {
            every.min(Duration::from_secs(1))
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// The cached popular rows the gateway answers `home` and `search` with when this
/// service cannot (flagged `"fallback": true`): computed from the catalog the
/// configuration generates (deterministic: one configuration, one body) — a
/// "Popular on casebook" row of the top titles by the popularity prior and
/// "Popular in G" rows for the three most popular genres.
pub fn popular_fallback(config: &NetflixConfig) -> Value {
    let titles = generate::generate(config.catalog.seed, config.catalog.titles);
    let order = home::popularity_order(&titles);
    let rows = home::popular_rows(&titles, &order, config.recs.row_size, 3);
    json!({ "rows": rows, "fallback": true })
}
