//! The catalog service: the generator's determinism and shape, the pipeline's
//! titles merged in (playable, their origin ids, a version that moves only when
//! they change), and the HTTP API with its bad input.

mod fakes;
mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use casebook_kit::clock::ManualClock;
use casebook_kit::http_client::HttpClient;
use casebook_kit::resolve::Resolver;
use casebook_netflix::catalog::generate::{GENRES, MATURITY, NEWEST_YEAR, generate};
use casebook_netflix::catalog::{
    CATALOG_SERVICE, CatalogConfig, CatalogService, CatalogSnapshot, CatalogStore, CatalogTitle,
    MAX_PER_PAGE, router,
};
use casebook_netflix::config::NetflixConfig;
use casebook_netflix::origin::ORIGIN_SERVICE;
use fakes::{FakeDiscovery, FakeOrigin, serve, title};
use http::{HeaderMap, Method, StatusCode};
use serde_json::Value;
use support::Running;

#[test]
fn the_generator_is_deterministic_and_plausible() {
    let titles = generate(42, 3000);
    assert_eq!(titles, generate(42, 3000));
    assert_ne!(titles[0], generate(43, 3000)[0]);
    // Title k does not depend on how many follow it.
    assert_eq!(generate(42, 10)[7].name, titles[7].name);
    assert_eq!(titles.len(), 3000);
    let ids: HashSet<&str> = titles.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids.len(), 3000);
    assert_eq!(titles[42].id, "t00042");
    let mut actors = std::collections::HashMap::<&str, usize>::new();
    for t in &titles {
        assert!(!t.playable);
        assert!((1..=3).contains(&t.genres.len()), "{t:?}");
        assert!(t.genres.iter().all(|g| GENRES.contains(&g.as_str())));
        assert!((3..=5).contains(&t.cast.len()));
        assert!((1951..=NEWEST_YEAR).contains(&t.year), "{}", t.year);
        assert!(MATURITY.contains(&t.maturity.as_str()));
        assert!((22..=180).contains(&t.duration_min));
        assert!(t.popularity > 0.0);
        assert!(t.synopsis.len() > 40 && t.synopsis.ends_with('.'));
        for actor in &t.cast {
            *actors.entry(actor).or_default() += 1;
        }
    }
    // Zipf-ish: the most popular title is far above the median one.
    let mut priors: Vec<f64> = titles.iter().map(|t| t.popularity).collect();
    priors.sort_by(|a, b| b.total_cmp(a));
    assert!(
        priors[0] > 100.0 * priors[1500],
        "{} vs {}",
        priors[0],
        priors[1500]
    );
    // Actors recur: similarity by cast has something to find.
    let busiest = actors.values().max().copied().unwrap_or(0);
    assert!(busiest >= 20, "the busiest actor is in {busiest} titles");
}

#[test]
fn pipeline_titles_are_merged_playable_and_move_the_version() {
    let store = CatalogStore::new(&CatalogConfig::default());
    let generated_version = store.version();
    assert_eq!(store.title_count(), 3000);
    assert!(store.set_pipeline_titles(&[title("sample", 4)]));
    let with_sample = store.version();
    assert_ne!(with_sample, generated_version);
    assert!(with_sample < 1 << 53);
    let sample = store.title("sample").expect("merged");
    assert!(sample.playable);
    assert_eq!(sample.name, "Title sample");
    assert!(!sample.genres.is_empty() && !sample.cast.is_empty());
    assert_eq!(store.title_count(), 3001);
    // The same titles again (in any order): no change.
    assert!(!store.set_pipeline_titles(&[title("sample", 4)]));
    assert!(store.set_pipeline_titles(&[title("zeta", 2), title("sample", 4)]));
    assert!(!store.set_pipeline_titles(&[title("sample", 4), title("zeta", 2)]));
    // Playable titles come first, in id order.
    let first: Vec<String> = store.page(None, 1, 3).0.into_iter().map(|t| t.id).collect();
    assert_eq!(first, ["sample", "zeta", "t00000"]);
    // An origin id equal to a generated one replaces it.
    assert!(store.set_pipeline_titles(&[title("t00007", 2)]));
    let replaced = store.title("t00007").unwrap();
    assert!(replaced.playable);
    assert_eq!(store.title_count(), 3000);
    // Back to no pipeline titles: the generated version again (restart-stable).
    store.set_pipeline_titles(&[]);
    assert_eq!(store.version(), generated_version);
    assert_eq!(
        CatalogStore::new(&CatalogConfig::default()).version(),
        generated_version
    );
}

#[test]
fn the_config_is_validated() {
    let ok = CatalogConfig::default();
    assert!(ok.validate("netflix.catalog").is_ok());
    let zero = CatalogConfig {
        titles: 0,
        ..ok.clone()
    };
    assert_eq!(
        zero.validate("netflix.catalog").unwrap_err().key(),
        "netflix.catalog.titles"
    );
    let fast = CatalogConfig {
        refresh: Duration::from_millis(1),
        ..ok
    };
    assert_eq!(
        fast.validate("netflix.catalog").unwrap_err().key(),
        "netflix.catalog.refresh"
    );
    let toml: NetflixConfig = serde_json::from_value(serde_json::json!({
        "catalog": { "seed": 7, "titles": 500, "refresh": "2s" }
    }))
    .unwrap();
    assert_eq!(toml.catalog.titles, 500);
    assert_eq!(toml.catalog.refresh, Duration::from_secs(2));
}

async fn get(url: &str) -> (StatusCode, Value) {
    let response = HttpClient::default()
        .send(Method::GET, url, HeaderMap::new(), bytes::Bytes::new())
        .await
        .unwrap();
    let body = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    (response.status, body)
}

#[tokio::test]
async fn the_api_pages_filters_and_refuses_bad_input() {
    let store = Arc::new(CatalogStore::new(&CatalogConfig::default()));
    store.set_pipeline_titles(&[title("sample", 4)]);
    let base = format!("http://{}", serve(router(store.clone())).await);

    let (status, body) = get(&format!("{base}/api/v1/titles")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["titles"].as_array().unwrap().len(), 20);
    assert_eq!(body["titles"][0]["id"], "sample");
    assert_eq!(body["titles"][0]["playable"], true);
    assert_eq!(body["total"], 3001);
    assert_eq!(body["version"], store.version());

    let (_, page2) = get(&format!("{base}/api/v1/titles?page=2&per_page=5")).await;
    let ids: Vec<&str> = page2["titles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["t00004", "t00005", "t00006", "t00007", "t00008"]);

    let (_, comedy) = get(&format!("{base}/api/v1/titles?genre=comedy&per_page=100")).await;
    let listed = comedy["titles"].as_array().unwrap();
    assert!(!listed.is_empty());
    assert!(listed.iter().all(|t| {
        t["genres"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g == "Comedy")
    }));
    let expected = store.page(Some("Comedy"), 1, 1).1;
    assert_eq!(comedy["total"], expected);
    assert!(expected > 200 && expected < 2000, "{expected}");

    let (_, beyond) = get(&format!("{base}/api/v1/titles?page=9999&per_page=100")).await;
    assert_eq!(beyond["titles"].as_array().unwrap().len(), 0);

    for (query, field) in [
        ("per_page=0", "per_page"),
        (&format!("per_page={}", MAX_PER_PAGE + 1), "per_page"),
        ("per_page=abc", "per_page"),
        ("page=0", "page"),
        ("page=-1", "page"),
        ("genre=Polka", "genre"),
    ] {
        let (status, body) = get(&format!("{base}/api/v1/titles?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(body["field"], field, "{query}");
    }

    let (status, one) = get(&format!("{base}/api/v1/titles/t00042")).await;
    assert_eq!(status, StatusCode::OK);
    let parsed: CatalogTitle = serde_json::from_value(one).unwrap();
    let want = store.title("t00042").unwrap();
    assert_eq!(
        (&parsed.id, &parsed.name, &parsed.cast),
        (&want.id, &want.name, &want.cast)
    );
    let (status, missing) = get(&format!("{base}/api/v1/titles/t99999")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(missing["field"], "id");

    let (status, all) = get(&format!("{base}/internal/v1/catalog")).await;
    assert_eq!(status, StatusCode::OK);
    let snapshot: CatalogSnapshot = serde_json::from_value(all).unwrap();
    let expected = store.snapshot();
    assert_eq!(snapshot.version, expected.version);
    assert_eq!(snapshot.titles.len(), expected.titles.len());
    for (got, want) in snapshot.titles.iter().zip(&expected.titles) {
        // JSON floats come back within an ulp or so, not bit for bit.
        assert!((got.popularity - want.popularity).abs() <= want.popularity * 1e-12);
        let got = CatalogTitle {
            popularity: want.popularity,
            ..got.clone()
        };
        assert!(&got == want, "{} differs", want.id);
    }
    let (_, version) = get(&format!("{base}/internal/v1/catalog/version")).await;
    assert_eq!(version["version"], store.version());
}

#[tokio::test]
async fn the_service_reads_the_pipelines_titles_from_the_origin() {
    let clock = ManualClock::new();
    let discovery = Arc::new(FakeDiscovery::default());
    let origin = FakeOrigin::new(vec![title("sample", 4)]);
    discovery.register(ORIGIN_SERVICE, serve(origin.router()).await, "r1");
    let resolver = Arc::new(Resolver::detached(clock.shared()));
    resolver.attach(discovery.clone());
    let config = NetflixConfig {
        catalog: CatalogConfig {
            titles: 100,
            refresh: Duration::from_millis(100),
            ..CatalogConfig::default()
        },
        ..NetflixConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let running = Running::start(
        Arc::new(CatalogService::with_resolver(&config, resolver)),
        dir.path(),
        clock.shared(),
    )
    .await;
    assert_eq!(CATALOG_SERVICE, "netflix-catalog");

    // The first refresh runs at start; wait for it (bounded), not for a time.
    let mut sample = (StatusCode::NOT_FOUND, Value::Null);
    for _ in 0..100 {
        sample = get(&running.url("/api/v1/titles/sample")).await;
        if sample.0 == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sample.0, StatusCode::OK, "{}", sample.1);
    assert_eq!(sample.1["playable"], true);
    let (_, before) = get(&running.url("/internal/v1/catalog/version")).await;

    // A new title at the origin: listed once the origin cache expires on the clock.
    origin.titles.lock().push(title("second", 2));
    clock.advance(Duration::from_secs(1));
    let mut after = before.clone();
    for _ in 0..100 {
        after = get(&running.url("/internal/v1/catalog/version")).await.1;
        if after != before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_ne!(after, before);
    let (status, second) = get(&running.url("/api/v1/titles/second")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(second["playable"], true);

    // The origin goes down: the last titles stay listed.
    origin.up.store(false, std::sync::atomic::Ordering::Relaxed);
    clock.advance(Duration::from_secs(1));
    tokio::time::sleep(Duration::from_millis(250)).await;
    let (status, _) = get(&running.url("/api/v1/titles/second")).await;
    assert_eq!(status, StatusCode::OK);
    running.stop().await;
}

#[test]
fn the_largest_catalog_fits_one_internal_answer() {
    let config = CatalogConfig {
        titles: casebook_netflix::catalog::MAX_TITLES,
        ..CatalogConfig::default()
    };
    let store = CatalogStore::new(&config);
    let bytes = serde_json::to_vec(&store.snapshot()).unwrap().len();
    assert!(
        bytes < casebook_kit::http_client::DEFAULT_MAX_RESPONSE * 3 / 4,
        "{bytes} bytes"
    );
}
