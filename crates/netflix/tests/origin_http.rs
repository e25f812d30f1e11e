//! The origin over HTTP on a real platform: objects with ranges, conditional
//! requests, CORS and HEAD; traversal refused in every spelling; the catalog.

mod support;

use std::sync::Arc;
use std::time::Duration;

use casebook_kit::clock::ManualClock;
use casebook_netflix::origin::OriginService;
use casebook_netflix::origin::catalog::CatalogEntry;
use casebook_netflix::origin::key::TitleId;
use casebook_netflix::origin::store::Origin;
use casebook_netflix::pipeline::encode::Source;
use casebook_netflix::pipeline::hls::parse_master;
use casebook_netflix::pipeline::progress::Progress;
use support::{Running, header, pipeline, raw, synthetic_config};

struct Fixture {
    origin: Running,
    entry: CatalogEntry,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Origin::local(&dir.path().join("origin")).unwrap();
    let entry = pipeline(store.clone(), synthetic_config(), &dir.path().join("work"))
        .ingest(
            &Source::TestPattern {
                duration: Duration::from_secs(6),
            },
            &TitleId::parse("demo").unwrap(),
            "Demo",
            &Progress::default(),
        )
        .await
        .unwrap();
    let service = OriginService::new(synthetic_config(), store, dir.path().to_owned());
    let origin = Running::start(Arc::new(service), dir.path(), ManualClock::new().shared()).await;
    Fixture {
        origin,
        entry,
        _dir: dir,
    }
}

const SEGMENT: &str = "/o/titles/demo/360p/seg00000.ts";

#[tokio::test]
async fn objects_are_served_whole_with_their_headers() {
    let f = fixture().await;
    let (status, headers, body) =
        raw(f.origin.addr, "GET", "/o/titles/demo/master.m3u8", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    assert_eq!(
        header(&headers, "cache-control"),
        Some("public, max-age=60")
    );
    assert_eq!(header(&headers, "access-control-allow-origin"), Some("*"));
    assert!(
        header(&headers, "access-control-expose-headers")
            .unwrap()
            .contains("Content-Range")
    );
    assert_eq!(header(&headers, "accept-ranges"), Some("bytes"));
    let etag = header(&headers, "etag").unwrap();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && !etag.starts_with("W/"),
        "{etag}"
    );
    assert!(header(&headers, "last-modified").unwrap().ends_with("GMT"));
    let master = parse_master(std::str::from_utf8(&body).unwrap()).unwrap();
    assert_eq!(master.variants.len(), f.entry.renditions.len());

    let (status, headers, body) = raw(f.origin.addr, "GET", SEGMENT, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), Some("video/mp2t"));
    assert_eq!(
        header(&headers, "cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(
        header(&headers, "content-length").unwrap(),
        body.len().to_string()
    );
    assert!(body.len() > 188 * 100 && body.len() % 188 == 0);

    // HEAD: the same headers, no body.
    let (status, head_headers, head_body) = raw(f.origin.addr, "HEAD", SEGMENT, &[]).await;
    assert_eq!(status, 200);
    assert!(head_body.is_empty());
    assert_eq!(
        header(&head_headers, "content-length"),
        header(&headers, "content-length")
    );
    assert_eq!(header(&head_headers, "etag"), header(&headers, "etag"));
}

#[tokio::test]
async fn ranges_answer_206_and_416() {
    let f = fixture().await;
    let (_, _, whole) = raw(f.origin.addr, "GET", SEGMENT, &[]).await;
    let size = whole.len();
    let cases = [
        ("bytes=0-187", 0..188),
        ("bytes=188-", 188..size),
        ("bytes=-376", size - 376..size),
        ("bytes=100-99999999", 100..size),
    ];
    for (range, expected) in cases {
        let (status, headers, body) = raw(f.origin.addr, "GET", SEGMENT, &[("Range", range)]).await;
        assert_eq!(status, 206, "{range}");
        assert_eq!(body, &whole[expected.clone()], "{range}");
        assert_eq!(
            header(&headers, "content-range").unwrap(),
            format!("bytes {}-{}/{size}", expected.start, expected.end - 1)
        );
        assert_eq!(
            header(&headers, "content-length").unwrap(),
            expected.len().to_string()
        );
    }
    let past = format!("bytes={size}-");
    let (status, headers, body) = raw(f.origin.addr, "GET", SEGMENT, &[("Range", &past)]).await;
    assert_eq!(status, 416);
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    assert_eq!(
        header(&headers, "content-range").unwrap(),
        format!("bytes */{size}")
    );
    assert_eq!(header(&headers, "access-control-allow-origin"), Some("*"));
    let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["field"], "range");
    // Several ranges, another unit, bad syntax: the whole object.
    for ignored in ["bytes=0-1,5-6", "items=0-1", "bytes=9-2"] {
        let (status, _, body) = raw(f.origin.addr, "GET", SEGMENT, &[("Range", ignored)]).await;
        assert_eq!((status, body.len()), (200, size), "{ignored}");
    }
    // If-Range with a stale validator: the whole object.
    let (status, _, body) = raw(
        f.origin.addr,
        "GET",
        SEGMENT,
        &[("Range", "bytes=0-9"), ("If-Range", "\"stale\"")],
    )
    .await;
    assert_eq!((status, body.len()), (200, size));
    let (_, headers, _) = raw(f.origin.addr, "HEAD", SEGMENT, &[]).await;
    let etag = header(&headers, "etag").unwrap().to_owned();
    let (status, _, body) = raw(
        f.origin.addr,
        "GET",
        SEGMENT,
        &[("Range", "bytes=0-9"), ("If-Range", &etag)],
    )
    .await;
    assert_eq!((status, body.len()), (206, 10));
}

#[tokio::test]
async fn if_none_match_answers_304() {
    let f = fixture().await;
    let (_, headers, _) = raw(f.origin.addr, "GET", SEGMENT, &[]).await;
    let etag = header(&headers, "etag").unwrap().to_owned();
    for inm in [
        etag.clone(),
        format!("W/{etag}"),
        format!("\"other\", {etag}"),
        "*".to_owned(),
    ] {
        let (status, headers, body) =
            raw(f.origin.addr, "GET", SEGMENT, &[("If-None-Match", &inm)]).await;
        assert_eq!(status, 304, "{inm}");
        assert!(body.is_empty());
        assert_eq!(header(&headers, "etag"), Some(etag.as_str()));
        assert_eq!(header(&headers, "access-control-allow-origin"), Some("*"));
    }
    let (status, _, body) = raw(
        f.origin.addr,
        "GET",
        SEGMENT,
        &[("If-None-Match", "\"other\"")],
    )
    .await;
    assert_eq!(status, 200);
    assert!(!body.is_empty());
}

#[tokio::test]
async fn cors_preflight_allows_range_requests_from_any_origin() {
    let f = fixture().await;
    let (status, headers, _) = raw(
        f.origin.addr,
        "OPTIONS",
        SEGMENT,
        &[
            ("Origin", "http://player.example"),
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "range"),
        ],
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(header(&headers, "access-control-allow-origin"), Some("*"));
    assert!(
        header(&headers, "access-control-allow-methods")
            .unwrap()
            .contains("GET")
    );
    assert!(
        header(&headers, "access-control-allow-headers")
            .unwrap()
            .contains("Range")
    );
    assert!(header(&headers, "access-control-max-age").is_some());
}

#[tokio::test]
async fn traversal_and_bad_keys_are_refused_with_400_and_unknown_keys_404() {
    let f = fixture().await;
    let secret = f._dir.path().join("secret.txt");
    std::fs::write(&secret, "do not serve").unwrap();
    for path in [
        "/o/../secret.txt",
        "/o/titles/../../secret.txt",
        "/o/%2e%2e/secret.txt",
        "/o/titles/%2E%2E/%2e%2e/secret.txt",
        "/o/..%2fsecret.txt",
        "/o/%252e%252e/secret.txt",
        "/o//etc/passwd",
        "/o/%2fetc/passwd",
        &format!("/o/{}", secret.display()),
        "/o/titles/demo/./master.m3u8",
        "/o/titles//demo",
        "/o/titles/demo/x%00.ts",
        "/o/titles/%zz",
        "/o/",
    ] {
        for method in ["GET", "HEAD"] {
            let (status, headers, body) = raw(f.origin.addr, method, path, &[]).await;
            assert_eq!(status, 400, "{method} {path}");
            if method == "GET" {
                let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(error["field"], "key", "{path}");
                assert!(!String::from_utf8_lossy(&body).contains("do not serve"));
            }
            assert_eq!(header(&headers, "access-control-allow-origin"), Some("*"));
        }
    }
    let (status, _, body) = raw(f.origin.addr, "GET", "/o/titles/demo/nope.ts", &[]).await;
    assert_eq!(status, 404);
    let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("titles/demo/nope.ts")
    );
}

#[tokio::test]
async fn the_catalog_lists_published_titles() {
    let f = fixture().await;
    let (status, headers, body) = raw(f.origin.addr, "GET", "/v1/titles", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "access-control-allow-origin"), Some("*"));
    let titles: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let titles = titles.as_array().unwrap();
    assert_eq!(titles.len(), 1);
    let t = &titles[0];
    // The wire contract's fields.
    assert_eq!(t["id"], "demo");
    assert_eq!(t["name"], "Demo");
    assert_eq!(t["duration_secs"], 6.0);
    assert_eq!(t["segment_secs"], 4);
    assert_eq!(t["master_key"], "titles/demo/master.m3u8");
    let r = &t["renditions"][0];
    for field in ["name", "bandwidth_bps", "width", "height", "codecs"] {
        assert!(!r[field].is_null(), "rendition.{field}");
    }
    let one: CatalogEntry =
        serde_json::from_slice(&raw(f.origin.addr, "GET", "/v1/titles/demo", &[]).await.2).unwrap();
    assert_eq!(one, f.entry);
    let (status, _, body) = raw(f.origin.addr, "GET", "/v1/titles/unknown", &[]).await;
    assert_eq!(status, 404);
    assert!(serde_json::from_slice::<serde_json::Value>(&body).unwrap()["error"].is_string());
    let (status, _, body) = raw(f.origin.addr, "GET", "/v1/titles/Bad_Id", &[]).await;
    assert_eq!(status, 400);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["field"],
        "id"
    );
}
