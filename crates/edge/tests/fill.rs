//! Proactive fill: `POST /fill` pre-positions a title's whole ladder, and the
//! schedule fills the source's titles when due on the injected clock and inside
//! its window of hours.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use casebook_edge::cdn::fill::FillReport;
use casebook_edge::cdn::{FillSchedule, FillSource};
use casebook_kit::clock::{Clock, ManualClock};
use casebook_testkit::{DEADLINE, eventually};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use support::{Origin, TierUnderTest, config, error_of, header, serve_origin};

fn publish(origin: &Origin, title: &str) {
    origin.put(
        &format!("titles/{title}/master.m3u8"),
        "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nlow/index.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=2\nhigh/index.m3u8\n",
    );
    for rendition in ["low", "high"] {
        origin.put(
            &format!("titles/{title}/{rendition}/index.m3u8"),
            "#EXTM3U\n#EXTINF:4,\nseg00001.ts\n#EXTINF:4,\nseg00002.ts\n#EXT-X-ENDLIST\n",
        );
        for n in 1..=2 {
            origin.put(
                &format!("titles/{title}/{rendition}/seg{n:05}.ts"),
                vec![n as u8; 10_000],
            );
        }
    }
}

async fn post_fill(
    tier: &TierUnderTest,
    query: &str,
    body: &str,
) -> casebook_kit::http_client::HttpResponse {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    tier.client
        .send(
            Method::POST,
            &tier.url(&format!("/fill{query}")),
            headers,
            Bytes::from(body.to_owned()),
        )
        .await
        .unwrap()
}

fn fill_query(tier: &TierUnderTest) -> String {
    format!("?{}", tier.key.sign("/fill", tier.now_secs() + 60))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_pre_positions_a_titles_ladder() {
    let origin = Arc::new(Origin::default());
    publish(&origin, "popular");
    let (address, _) = serve_origin(Arc::clone(&origin), "127.0.0.1:0".parse().unwrap()).await;
    let tier = TierUnderTest::start(config(address)).await;

    let response = post_fill(&tier, "", r#"{"titles":["popular"]}"#).await;
    assert_eq!(
        response.status,
        StatusCode::FORBIDDEN,
        "a fill must be signed for /fill"
    );
    let response = post_fill(&tier, &fill_query(&tier), r#"{"titles":["Not Valid"]}"#).await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_of(&response)["field"], "titles[0]");
    let response = post_fill(&tier, &fill_query(&tier), r#"{"keys":["../x"]}"#).await;
    assert_eq!(error_of(&response)["field"], "keys[0]");
    let response = post_fill(&tier, &fill_query(&tier), r#"{"tittles":[]}"#).await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert_eq!(origin.requests(), 0);

    let response = post_fill(&tier, &fill_query(&tier), r#"{"titles":["popular"]}"#).await;
    assert_eq!(response.status, StatusCode::OK);
    let report: FillReport = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(
        report.fetched,
        1 + 2 + 4,
        "master, two playlists, four segments"
    );
    assert_eq!(report.bytes, origin.bytes());
    assert_eq!(report.failed, 0);
    // The fill signed its own upstream requests.
    assert!(
        origin
            .queries()
            .iter()
            .all(|q| q.as_deref().is_some_and(|q| q.contains("sig=")))
    );

    // Players now hit; nothing more reaches the origin.
    let before = origin.requests();
    for key in [
        "titles/popular/high/seg00002.ts",
        "titles/popular/low/seg00001.ts",
    ] {
        assert_eq!(
            header(&tier.get(key, &[]).await, "x-cache"),
            Some("hit-memory")
        );
    }
    assert_eq!(origin.requests(), before);
    let stats = tier.stats().await;
    assert_eq!(stats.fill.objects, 7);
    assert_eq!(stats.hits, 2, "fill lookups are not client hits");

    // A second fill finds the segments held.
    let response = post_fill(
        &tier,
        &fill_query(&tier),
        r#"{"titles":["popular"],"keys":["titles/gone/x.ts"]}"#,
    )
    .await;
    let report: FillReport = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(report.fetched, 0);
    assert_eq!(report.not_found, 1);
    assert_eq!(report.already_held, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_stops_at_its_byte_budget() {
    let origin = Arc::new(Origin::default());
    publish(&origin, "big");
    let (address, _) = serve_origin(Arc::clone(&origin), "127.0.0.1:0".parse().unwrap()).await;
    let tier = TierUnderTest::start(config(address)).await;
    let response = post_fill(
        &tier,
        &fill_query(&tier),
        r#"{"titles":["big"],"max_bytes":15000}"#,
    )
    .await;
    let report: FillReport = serde_json::from_slice(&response.body).unwrap();
    assert!(report.budget_reached);
    assert!(
        report.bytes >= 15_000 && report.bytes < 15_000 + 10_000,
        "{}",
        report.bytes
    );
    assert!(report.fetched < 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedule_fills_in_its_window_when_due() {
    let origin = Arc::new(Origin::default());
    publish(&origin, "first");
    publish(&origin, "second");
    origin.set_catalog(r#"[{"id":"first","name":"First"}]"#);
    let (address, _) = serve_origin(Arc::clone(&origin), "127.0.0.1:0".parse().unwrap()).await;
    let mut config = config(address);
    config.fill = Some(FillSchedule {
        source: FillSource::Url(format!("http://{address}/v1/titles")),
        every: Duration::from_secs(3600),
        window_utc_hours: Some((2, 6)),
        max_titles: 5,
    });
    // 2026-01-01T00:00Z: outside the 02:00–06:00 window.
    let clock = ManualClock::new();
    assert_eq!((clock.wall_millis() / 3_600_000) % 24, 0);
    let tier = TierUnderTest::start_in(
        config,
        Arc::new(tempfile::tempdir().unwrap()),
        clock.clone(),
    )
    .await;
    let stats = tier.stats().await;
    assert_eq!(stats.fill.runs, 0);
    assert_eq!(origin.requests(), 0, "nothing fetched outside the window");

    clock.advance(Duration::from_secs(2 * 3600));
    eventually("the first round in the window", DEADLINE, || async {
        tier.stats().await.fill.runs == 1
    })
    .await;
    assert_eq!(origin.hits("titles/first/high/seg00002.ts"), 1);
    assert_eq!(origin.hits("titles/second/master.m3u8"), 0);

    // Not due again until `every` has passed on the clock.
    origin.set_catalog(r#"{"titles":["first","second"]}"#);
    clock.advance(Duration::from_secs(1800));
    tokio::time::sleep(Duration::from_millis(600)).await; // two ticks of the schedule
    assert_eq!(tier.stats().await.fill.runs, 1);
    clock.advance(Duration::from_secs(1800));
    eventually("the second round", DEADLINE, || async {
        tier.stats().await.fill.runs == 2
    })
    .await;
    assert_eq!(origin.hits("titles/second/low/seg00001.ts"), 1);
    assert_eq!(
        origin.hits("titles/first/low/seg00001.ts"),
        1,
        "held objects are not fetched again"
    );
    assert_eq!(tier.stats().await.fill.last_error, None);
}
