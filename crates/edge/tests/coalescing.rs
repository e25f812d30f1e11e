//! Request coalescing: N concurrent misses for one object → one upstream fetch.

mod support;

use std::sync::Arc;

use casebook_testkit::{DEADLINE, eventually};
use http::StatusCode;
use support::{Origin, TierUnderTest, config, header, serve_origin};

const N: usize = 50;
const SEGMENT: &str = "titles/t/1080p/seg00007.ts";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_misses_make_one_upstream_fetch() {
    let origin = Arc::new(Origin::default());
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    origin.put(SEGMENT, body.clone());
    let (address, _) = serve_origin(Arc::clone(&origin), "127.0.0.1:0".parse().unwrap()).await;
    let tier = Arc::new(TierUnderTest::start(config(address)).await);
    // Hold the origin's answer until every request has reached the tier.
    let gate = origin.close_gate();

    let requests: Vec<_> = (0..N)
        .map(|_| {
            let tier = Arc::clone(&tier);
            tokio::spawn(async move { tier.get(SEGMENT, &[]).await })
        })
        .collect();
    eventually("every request waiting on the one flight", DEADLINE, || {
        let tier = Arc::clone(&tier);
        let origin = Arc::clone(&origin);
        async move {
            let stats = tier.stats().await;
            origin.waiting() == 1 && stats.coalesced == (N - 1) as u64
        }
    })
    .await;
    gate.send(true).unwrap();

    let mut leaders = 0;
    for request in requests {
        let response = request.await.unwrap();
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(response.body.as_ref(), body.as_slice());
        match header(&response, "x-cache") {
            Some("miss") => leaders += 1,
            Some("miss-coalesced") => {}
            other => panic!("unexpected x-cache {other:?}"),
        }
    }
    assert_eq!(leaders, 1);
    assert_eq!(origin.hits(SEGMENT), 1, "exactly one upstream fetch");
    let stats = tier.stats().await;
    assert_eq!(stats.upstream_fetches, 1);
    assert_eq!(stats.misses, N as u64);
    assert_eq!(stats.coalesced, (N - 1) as u64);
    // Later requests are hits.
    assert_eq!(
        header(&tier.get(SEGMENT, &[]).await, "x-cache"),
        Some("hit-memory")
    );
    assert_eq!(origin.hits(SEGMENT), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_flight_fails_every_waiter_once_and_the_next_miss_retries() {
    let origin = Arc::new(Origin::default());
    origin.put(SEGMENT, vec![7u8; 1000]);
    let (address, _) = serve_origin(Arc::clone(&origin), "127.0.0.1:0".parse().unwrap()).await;
    let tier = Arc::new(TierUnderTest::start(config(address)).await);
    origin.fail(true);
    let gate = origin.close_gate();
    let requests: Vec<_> = (0..10)
        .map(|_| {
            let tier = Arc::clone(&tier);
            tokio::spawn(async move { tier.get(SEGMENT, &[]).await })
        })
        .collect();
    eventually("ten requests on one flight", DEADLINE, || {
        let tier = Arc::clone(&tier);
        let origin = Arc::clone(&origin);
        async move { origin.waiting() == 1 && tier.stats().await.coalesced == 9 }
    })
    .await;
    gate.send(true).unwrap();
    for request in requests {
        assert_eq!(request.await.unwrap().status, StatusCode::BAD_GATEWAY);
    }
    assert_eq!(origin.hits(SEGMENT), 1);
    origin.fail(false);
    assert_eq!(tier.get(SEGMENT, &[]).await.status, StatusCode::OK);
    assert_eq!(origin.hits(SEGMENT), 2);
}
