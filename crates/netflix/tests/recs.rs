//! The recommendation service over HTTP: a real catalog service and a fake
//! users service (axum on loopback ports, registered in a fake discovery); home
//! rows from history and trending, the per-viewer cache on the manual clock, the
//! degraded paths, the popular fallback before the index exists, search's
//! shapes and bad input, and re-indexing when the catalog's version moves.

mod fakes;
mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing;
use casebook_kit::clock::ManualClock;
use casebook_kit::http_client::HttpClient;
use casebook_kit::resilience::breaker::BreakerRegistry;
use casebook_kit::resolve::Resolver;
use casebook_netflix::catalog::{CATALOG_SERVICE, CatalogConfig, CatalogStore, CatalogTitle};
use casebook_netflix::config::NetflixConfig;
use casebook_netflix::recs::home::{HistoryItem, TrendingItem};
use casebook_netflix::recs::{RECS_SERVICE, Recs, RecsConfig, RecsService, popular_fallback};
use casebook_netflix::users::USERS_SERVICE;
use fakes::{FakeDiscovery, placement, serve, title};
use http::{HeaderMap, HeaderValue, Method};
use parking_lot::Mutex;
use serde_json::{Value, json};
use support::Running;

/// The users service's internal routes, as the users service answers them.
struct FakeUsers {
    /// 501 (the skeleton's answer) while false.
    up: AtomicBool,
    history: Mutex<std::collections::HashMap<String, Vec<HistoryItem>>>,
    trending: Mutex<Vec<TrendingItem>>,
    calls: AtomicU64,
    last_history_query: Mutex<Option<String>>,
}

impl FakeUsers {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            up: AtomicBool::new(true),
            history: Mutex::new(Default::default()),
            trending: Mutex::new(Vec::new()),
            calls: AtomicU64::new(0),
            last_history_query: Mutex::new(None),
        })
    }

    fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/internal/v1/history/{account}", routing::get(history))
            .route("/internal/v1/trending", routing::get(trending))
            .with_state(self.clone())
    }
}

async fn history(
    State(users): State<Arc<FakeUsers>>,
    Path(account): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    users.calls.fetch_add(1, Ordering::SeqCst);
    if !users.up.load(Ordering::SeqCst) {
        return (StatusCode::NOT_IMPLEMENTED, "not built yet").into_response();
    }
    *users.last_history_query.lock() = query;
    if account == "ghost" {
        return (StatusCode::NOT_FOUND, "no such account").into_response();
    }
    let items = users
        .history
        .lock()
        .get(&account)
        .cloned()
        .unwrap_or_default();
    axum::Json(json!({ "account": account, "items": items })).into_response()
}

async fn trending(State(users): State<Arc<FakeUsers>>) -> Response {
    users.calls.fetch_add(1, Ordering::SeqCst);
    if !users.up.load(Ordering::SeqCst) {
        return (StatusCode::NOT_IMPLEMENTED, "not built yet").into_response();
    }
    axum::Json(json!({ "titles": *users.trending.lock() })).into_response()
}

struct Harness {
    clock: ManualClock,
    store: Arc<CatalogStore>,
    users: Arc<FakeUsers>,
    recs: Arc<Recs>,
    url: String,
    config: NetflixConfig,
    _dir: tempfile::TempDir,
}

async fn harness(with_users: bool) -> Harness {
    let clock = ManualClock::new();
    let discovery = Arc::new(FakeDiscovery::default());
    let config = NetflixConfig::default();
    let store = Arc::new(CatalogStore::new(&config.catalog));
    discovery.register(
        CATALOG_SERVICE,
        serve(casebook_netflix::catalog::router(store.clone())).await,
        "r1",
    );
    let users = FakeUsers::new();
    if with_users {
        discovery.register(USERS_SERVICE, serve(users.router()).await, "r1");
    }
    let resolver = Arc::new(Resolver::detached(clock.shared()));
    resolver.attach(discovery);
    let dir = tempfile::tempdir().unwrap();
    let recs = Arc::new(
        Recs::new(
            &config,
            resolver,
            placement("r1"),
            &dir.path().join("search"),
            clock.shared(),
            BreakerRegistry::new(clock.shared()),
        )
        .unwrap(),
    );
    assert!(recs.refresh().await.unwrap(), "the first refresh indexes");
    let url = format!(
        "http://{}",
        serve(casebook_netflix::recs::router(recs.clone())).await
    );
    Harness {
        clock,
        store,
        users,
        recs,
        url,
        config,
        _dir: dir,
    }
}

async fn get(url: &str, user: Option<&str>) -> (StatusCode, Value) {
    let mut headers = HeaderMap::new();
    if let Some(user) = user {
        headers.insert("x-user-id", HeaderValue::from_str(user).unwrap());
    }
    let response = HttpClient::default()
        .send(Method::GET, url, headers, bytes::Bytes::new())
        .await
        .unwrap();
    let body = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    (response.status, body)
}

fn watched(title: &str, position_s: f64, duration_s: f64) -> HistoryItem {
    HistoryItem {
        title: title.into(),
        position_s,
        duration_s,
        updated_ms: 0,
    }
}

fn ids(row: &Value) -> Vec<String> {
    row["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

fn row<'a>(home: &'a Value, kind: &str) -> Vec<&'a Value> {
    home["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == kind)
        .collect()
}

#[tokio::test]
async fn home_rows_come_from_history_trending_and_the_catalog() {
    let h = harness(true).await;
    let catalog = h.store.snapshot().titles;
    let by_id = |id: &str| -> &CatalogTitle { catalog.iter().find(|t| t.id == id).unwrap() };
    // Newest first: t00010 half-watched, t00020 finished, t00010 again (older).
    h.users.history.lock().insert(
        "acct-1".into(),
        vec![
            watched("t00010", 600.0, 1200.0),
            watched("t00020", 1190.0, 1200.0),
            watched("gone", 10.0, 100.0),
            watched("t00010", 100.0, 1200.0),
        ],
    );
    *h.users.trending.lock() = vec![
        TrendingItem {
            title: "t00300".into(),
            views: 40,
        },
        TrendingItem {
            title: "unknown".into(),
            views: 30,
        },
        TrendingItem {
            title: "t00301".into(),
            views: 20,
        },
    ];
    let (status, home) = get(&format!("{}/api/v1/home", h.url), Some("acct-1")).await;
    assert_eq!(status, StatusCode::OK, "{home}");
    assert_eq!(home["fallback"], false);
    assert_eq!(home["degraded"], json!([]));
    assert_eq!(home["cached"], false);
    assert_eq!(
        h.users.last_history_query.lock().as_deref(),
        Some("limit=50")
    );
    let kinds: Vec<&str> = home["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "continue_watching",
            "because_you_watched",
            "because_you_watched",
            "trending",
            "top_genre",
            "top_genre"
        ]
    );

    // Continue watching: the unfinished title once, with its position.
    let resume = row(&home, "continue_watching")[0];
    assert_eq!(ids(resume), ["t00010"]);
    assert_eq!(resume["items"][0]["position_s"], 600.0);

    // Because you watched: the two titles watched last, similar, none watched.
    let because = row(&home, "because_you_watched");
    let watched_ids: HashSet<&str> = ["t00010", "t00020"].into();
    for (row, source) in because.iter().zip(["t00010", "t00020"]) {
        let source = by_id(source);
        assert_eq!(row["title"], format!("Because you watched {}", source.name));
        let items = ids(row);
        assert_eq!(items.len(), h.config.recs.row_size);
        for id in &items {
            assert!(!watched_ids.contains(id.as_str()), "{id} was watched");
            let similar = by_id(id);
            let shares = similar.genres.iter().any(|g| source.genres.contains(g))
                || similar.cast.iter().any(|c| source.cast.contains(c));
            assert!(shares, "{similar:?} shares nothing with {source:?}");
        }
        assert_eq!(items.iter().collect::<HashSet<_>>().len(), items.len());
    }

    // Trending: the users service's order, unknown titles skipped, topped up
    // from the popularity prior.
    let trending = ids(row(&home, "trending")[0]);
    assert_eq!(&trending[..2], ["t00300", "t00301"]);
    assert_eq!(trending.len(), h.config.recs.row_size);
    let most_popular = catalog
        .iter()
        .max_by(|a, b| a.popularity.total_cmp(&b.popularity))
        .unwrap();
    assert_eq!(trending[2], most_popular.id);

    // Top picks: the viewer's genres (t00010's first, the most recent), unwatched.
    let genre_rows = row(&home, "top_genre");
    let first_genre = genre_rows[0]["title"]
        .as_str()
        .unwrap()
        .strip_prefix("Top picks in ")
        .expect("named after the viewer's genre");
    let viewer_genres: HashSet<&String> = by_id("t00010")
        .genres
        .iter()
        .chain(&by_id("t00020").genres)
        .collect();
    assert!(viewer_genres.iter().any(|g| g.as_str() == first_genre));
    for id in ids(genre_rows[0]) {
        assert!(!watched_ids.contains(id.as_str()));
        assert!(by_id(&id).genres.iter().any(|g| g == first_genre));
    }
}

#[tokio::test]
async fn home_is_cached_per_viewer_on_the_clock() {
    let h = harness(true).await;
    h.users
        .history
        .lock()
        .insert("viewer".into(), vec![watched("t00001", 10.0, 100.0)]);
    let url = format!("{}/api/v1/home", h.url);
    let (_, first) = get(&url, Some("viewer")).await;
    let calls = h.users.calls.load(Ordering::SeqCst);
    assert_eq!(calls, 2, "history and trending");
    let (_, again) = get(&url, Some("viewer")).await;
    assert_eq!(again["cached"], true);
    assert_eq!(again["rows"], first["rows"]);
    assert_eq!(h.users.calls.load(Ordering::SeqCst), calls);
    // Another viewer is not served the first one's rows.
    let (_, other) = get(&url, Some("other")).await;
    assert_eq!(other["cached"], false);
    assert!(row(&other, "continue_watching").is_empty());
    // Past the TTL the users service is asked again.
    h.clock
        .advance(h.config.recs.home_ttl + Duration::from_millis(1));
    let (_, later) = get(&url, Some("viewer")).await;
    assert_eq!(later["cached"], false);
    assert_eq!(h.users.calls.load(Ordering::SeqCst), calls + 4);
}

#[tokio::test]
async fn home_degrades_when_the_users_service_cannot_answer() {
    let h = harness(true).await;
    h.users.up.store(false, Ordering::SeqCst);
    let url = format!("{}/api/v1/home", h.url);
    let (status, home) = get(&url, Some("acct-1")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(home["fallback"], false);
    assert_eq!(home["degraded"], json!(["history", "trending"]));
    assert!(row(&home, "continue_watching").is_empty());
    assert!(row(&home, "because_you_watched").is_empty());
    // Trending is the popularity prior.
    let mut catalog = h.store.snapshot().titles;
    catalog.sort_by(|a, b| b.popularity.total_cmp(&a.popularity));
    let prior: Vec<String> = catalog
        .iter()
        .take(h.config.recs.row_size)
        .map(|t| t.id.clone())
        .collect();
    assert_eq!(ids(row(&home, "trending")[0]), prior);
    assert_eq!(row(&home, "top_genre").len(), 2);
    // A degraded home is not cached: the users service back, home heals.
    h.users.up.store(true, Ordering::SeqCst);
    h.users
        .history
        .lock()
        .insert("acct-1".into(), vec![watched("t00001", 10.0, 100.0)]);
    let (_, healed) = get(&url, Some("acct-1")).await;
    assert_eq!(healed["degraded"], json!([]));
    assert_eq!(healed["cached"], false);
    assert_eq!(ids(row(&healed, "continue_watching")[0]), ["t00001"]);
    // An account the users service does not know has no history: not degraded.
    let (_, ghost) = get(&url, Some("ghost")).await;
    assert_eq!(ghost["degraded"], json!([]));
    assert!(row(&ghost, "continue_watching").is_empty());
    assert!(
        row(&ghost, "top_genre")[0]["title"]
            .as_str()
            .unwrap()
            .starts_with("Popular in ")
    );
}

#[tokio::test]
async fn home_degrades_without_a_users_service_at_all() {
    let h = harness(false).await;
    let (status, home) = get(&format!("{}/api/v1/home", h.url), Some("acct-1")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(home["degraded"], json!(["history", "trending"]));
    assert_eq!(
        row(&home, "trending")[0]["items"].as_array().unwrap().len(),
        12
    );
}

#[tokio::test]
async fn home_needs_the_viewer() {
    let h = harness(true).await;
    let url = format!("{}/api/v1/home", h.url);
    let (status, body) = get(&url, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["field"], "x-user-id");
    assert_eq!(body["code"], "unauthenticated");
    for bad in ["../../admin", "a/b", "a?b", "", &"x".repeat(129)] {
        let (status, body) = get(&url, Some(bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}");
        assert_eq!(body["field"], "x-user-id");
    }
    assert_eq!(h.users.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn search_answers_its_shape_and_refuses_bad_input() {
    let h = harness(true).await;
    let (status, body) = get(&format!("{}/api/v1/search?q=strnger&limit=3", h.url), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["query"], "strnger");
    assert_eq!(body["fallback"], false);
    assert!(body["took_ms"].as_f64().unwrap() >= 0.0);
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    for r in results {
        let keys: HashSet<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["id", "name", "year", "genres", "playable", "score"].into()
        );
        assert!(r["name"].as_str().unwrap().contains("Stranger"));
    }
    let scores: Vec<f64> = results
        .iter()
        .map(|r| r["score"].as_f64().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]));

    for query in [
        "%27%20OR%201%3D1%20--",
        "title%3A(",
        "*",
        "%22unbalanced",
        "%5C",
    ] {
        let (status, body) = get(&format!("{}/api/v1/search?q={query}", h.url), None).await;
        assert_eq!(status, StatusCode::OK, "{query}: {body}");
        assert!(body["results"].is_array());
    }

    let long = "a".repeat(201);
    for (query, field) in [
        ("", "q"),
        ("q=", "q"),
        ("q=%20%20", "q"),
        (&format!("q={long}"), "q"),
        ("q=x&limit=0", "limit"),
        ("q=x&limit=51", "limit"),
        ("q=x&limit=ten", "limit"),
    ] {
        let (status, body) = get(&format!("{}/api/v1/search?{query}", h.url), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(body["field"], field, "{query}");
    }
}

#[tokio::test]
async fn a_new_catalog_version_is_indexed_and_searchable() {
    let h = harness(true).await;
    assert!(!h.recs.refresh().await.unwrap(), "same version: no rebuild");
    let before = h.recs.ready().unwrap().version;
    // Cache a home, then publish: the new version's home is computed afresh.
    let home_url = format!("{}/api/v1/home", h.url);
    get(&home_url, Some("acct")).await;
    h.store.set_pipeline_titles(&[title("sample", 4)]);
    assert!(h.recs.refresh().await.unwrap());
    let ready = h.recs.ready().unwrap();
    assert_ne!(ready.version, before);
    assert_eq!(ready.version, h.store.version());
    let (_, body) = get(&format!("{}/api/v1/search?q=title%20sample", h.url), None).await;
    assert_eq!(body["results"][0]["id"], "sample");
    assert_eq!(body["results"][0]["playable"], true);
    let (_, home) = get(&home_url, Some("acct")).await;
    assert_eq!(home["cached"], false);
    // Playable titles carry the top prior: the prior's trending row starts with it.
    assert_eq!(ids(row(&home, "trending")[0])[0], "sample");
    // One index directory at a time.
    let dirs = std::fs::read_dir(h._dir.path().join("search"))
        .unwrap()
        .count();
    assert_eq!(dirs, 1);
}

#[tokio::test]
async fn before_the_index_exists_the_popular_rows_are_served_flagged() {
    let clock = ManualClock::new();
    let resolver = Arc::new(Resolver::detached(clock.shared()));
    resolver.attach(Arc::new(FakeDiscovery::default()));
    let dir = tempfile::tempdir().unwrap();
    let config = NetflixConfig::default();
    let recs = Arc::new(
        Recs::new(
            &config,
            resolver,
            placement("r1"),
            dir.path(),
            clock.shared(),
            BreakerRegistry::new(clock.shared()),
        )
        .unwrap(),
    );
    assert!(recs.refresh().await.is_err(), "no catalog service");
    let url = format!(
        "http://{}",
        serve(casebook_netflix::recs::router(recs)).await
    );
    let popular = popular_fallback(&config);
    let (status, home) = get(&format!("{url}/api/v1/home"), Some("acct")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(home, popular);
    let (status, search) = get(&format!("{url}/api/v1/search?q=harbor"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(search["fallback"], true);
    assert_eq!(search["results"], json!([]));
    assert_eq!(search["rows"], popular["rows"]);
    // Bad input is still refused, index or not.
    let (status, _) = get(&format!("{url}/api/v1/search"), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[test]
fn the_popular_fallback_is_deterministic_and_flagged() {
    let config = NetflixConfig::default();
    let popular = popular_fallback(&config);
    assert_eq!(popular, popular_fallback(&config));
    assert_eq!(popular["fallback"], true);
    let rows = popular["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0]["title"], "Popular on casebook");
    let mut titles = casebook_netflix::catalog::generate::generate(42, 3000);
    titles.sort_by(|a, b| b.popularity.total_cmp(&a.popularity));
    let top: Vec<String> = titles.iter().take(12).map(|t| t.id.clone()).collect();
    assert_eq!(ids(&rows[0]), top);
    for genre_row in &rows[1..] {
        let genre = genre_row["title"]
            .as_str()
            .unwrap()
            .strip_prefix("Popular in ")
            .unwrap();
        assert_eq!(genre_row["items"].as_array().unwrap().len(), 12);
        for item in genre_row["items"].as_array().unwrap() {
            assert!(
                item["genres"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|g| g == genre)
            );
        }
    }
    let other = NetflixConfig {
        catalog: CatalogConfig {
            seed: 7,
            ..CatalogConfig::default()
        },
        ..NetflixConfig::default()
    };
    assert_ne!(popular_fallback(&other), popular);
    // The gateway's "popular" fallback body is these rows.
    let gateway = casebook_netflix::gateway::resolved_gateway(&config);
    let home_route = gateway.routes.iter().find(|r| r.name == "home").unwrap();
    assert_eq!(home_route.fallback.as_ref().unwrap().body, popular);
}

#[test]
fn the_config_is_validated() {
    let ok = RecsConfig::default();
    assert!(ok.validate("netflix.recs").is_ok());
    for (bad, key) in [
        (
            RecsConfig {
                row_size: 0,
                ..ok.clone()
            },
            "row_size",
        ),
        (
            RecsConfig {
                history_limit: 501,
                ..ok.clone()
            },
            "history_limit",
        ),
        (
            RecsConfig {
                home_ttl: Duration::ZERO,
                ..ok.clone()
            },
            "home_ttl",
        ),
        (
            RecsConfig {
                home_cache_users: 0,
                ..ok.clone()
            },
            "home_cache_users",
        ),
        (
            RecsConfig {
                catalog_poll: Duration::from_secs(7200),
                ..ok.clone()
            },
            "catalog_poll",
        ),
        (
            RecsConfig {
                users_timeout: Duration::from_millis(1),
                ..ok.clone()
            },
            "users_timeout",
        ),
    ] {
        assert_eq!(
            bad.validate("netflix.recs").unwrap_err().key(),
            format!("netflix.recs.{key}")
        );
    }
}

#[tokio::test]
async fn the_service_indexes_under_its_data_dir_once_the_catalog_is_up() {
    let clock = ManualClock::new();
    let discovery = Arc::new(FakeDiscovery::default());
    let resolver = Arc::new(Resolver::detached(clock.shared()));
    resolver.attach(discovery.clone());
    let config = NetflixConfig {
        catalog: CatalogConfig {
            titles: 300,
            ..CatalogConfig::default()
        },
        recs: RecsConfig {
            catalog_poll: Duration::from_millis(100),
            ..RecsConfig::default()
        },
        ..NetflixConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let running = Running::start(
        Arc::new(RecsService::with_resolver(&config, resolver)),
        dir.path(),
        clock.shared(),
    )
    .await;
    assert_eq!(RECS_SERVICE, "netflix-recs");
    let (_, early) = get(&running.url("/api/v1/search?q=harbor"), None).await;
    assert_eq!(early["fallback"], true);
    // The catalog comes up after recs: recs retries until it indexes.
    let store = Arc::new(CatalogStore::new(&config.catalog));
    discovery.register(
        CATALOG_SERVICE,
        serve(casebook_netflix::catalog::router(store)).await,
        "r1",
    );
    let mut body = Value::Null;
    for _ in 0..150 {
        body = get(&running.url("/api/v1/search?q=harbor"), None).await.1;
        if body["fallback"] == false {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(body["fallback"], false, "{body}");
    assert!(!body["results"].as_array().unwrap().is_empty());
    // The index lives in the instance's data dir.
    let found = walk(dir.path())
        .into_iter()
        .any(|p| p.ends_with("meta.json") && p.to_string_lossy().contains("search"));
    assert!(found, "no index under {}", dir.path().display());
    running.stop().await;
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
