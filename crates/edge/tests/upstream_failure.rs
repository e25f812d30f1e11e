//! The upstream down, slow, or without the object: precise JSON errors, the 404
//! remembered briefly on the injected clock, and recovery once it is back.

mod support;

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use support::{Origin, TierUnderTest, config, error_of, header, serve_origin};

const SEGMENT: &str = "titles/t/720p/seg00001.ts";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_502_and_a_restarted_one_serves_again() {
    let port = casebook_testkit::free_port();
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let tier = TierUnderTest::start(config(address)).await;

    let response = tier.get(SEGMENT, &[]).await;
    assert_eq!(response.status, StatusCode::BAD_GATEWAY);
    let error = error_of(&response);
    assert!(
        error["error"].as_str().unwrap().contains("unavailable"),
        "{error}"
    );
    assert_eq!(header(&response, "access-control-allow-origin"), Some("*"));

    let origin = Arc::new(Origin::default());
    origin.put(SEGMENT, vec![5u8; 4096]);
    let _server = serve_origin(Arc::clone(&origin), address).await;
    let response = tier.get(SEGMENT, &[]).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.body.len(), 4096);
    let stats = tier.stats().await;
    assert_eq!(stats.upstream_errors, 1);
    assert_eq!(stats.upstream_fetches, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upstream_is_504_and_5xx_is_502() {
    let origin = Arc::new(Origin::default());
    origin.put(SEGMENT, vec![5u8; 10]);
    let (address, _) = serve_origin(Arc::clone(&origin), "127.0.0.1:0".parse().unwrap()).await;
    let mut config = config(address);
    config.resilience.timeout.default = Duration::from_millis(200);
    let tier = TierUnderTest::start(config).await;

    origin.delay(Some(Duration::from_secs(3)));
    let response = tier.get(SEGMENT, &[]).await;
    assert_eq!(response.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        error_of(&response)["error"]
            .as_str()
            .unwrap()
            .contains("in time")
    );

    origin.delay(None);
    origin.fail(true);
    let response = tier.get(SEGMENT, &[]).await;
    assert_eq!(response.status, StatusCode::BAD_GATEWAY);
    assert!(error_of(&response)["error"].is_string());

    origin.fail(false);
    assert_eq!(tier.get(SEGMENT, &[]).await.status, StatusCode::OK);
    assert_eq!(tier.stats().await.upstream_errors, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_object_is_404_remembered_for_the_negative_ttl() {
    let origin = Arc::new(Origin::default());
    let (address, _) = serve_origin(Arc::clone(&origin), "127.0.0.1:0".parse().unwrap()).await;
    let mut config = config(address);
    config.negative_ttl = Duration::from_secs(5);
    let tier = TierUnderTest::start(config).await;
    let missing = "titles/nope/master.m3u8";

    let response = tier.get(missing, &[]).await;
    assert_eq!(response.status, StatusCode::NOT_FOUND);
    assert!(
        error_of(&response)["error"]
            .as_str()
            .unwrap()
            .contains(missing)
    );
    assert_eq!(header(&response, "access-control-allow-origin"), Some("*"));
    assert_eq!(tier.get(missing, &[]).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        origin.hits(missing),
        1,
        "the second 404 came from the negative cache"
    );

    // Published meanwhile: visible once the negative entry expires on the clock.
    origin.put(missing, "#EXTM3U\n");
    tier.clock.advance(Duration::from_secs(4));
    assert_eq!(tier.get(missing, &[]).await.status, StatusCode::NOT_FOUND);
    tier.clock.advance(Duration::from_secs(2));
    assert_eq!(tier.get(missing, &[]).await.status, StatusCode::OK);
    assert_eq!(origin.hits(missing), 2);
    assert_eq!(tier.stats().await.hits_negative, 2);
}
