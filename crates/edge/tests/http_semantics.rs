//! HTTP semantics of a tier over loopback: Range (206, 416), conditional requests
//! (304), HEAD, Content-Type, Cache-Control and CORS, including preflight.

mod support;

use std::sync::Arc;

use http::{Method, StatusCode};
use support::{Origin, TierUnderTest, config, error_of, header, serve_origin};

const SEGMENT: &str = "titles/t/720p/seg00001.ts";

async fn tier_with_segment() -> (Arc<Origin>, TierUnderTest, Vec<u8>) {
    let origin = Arc::new(Origin::default());
    let body: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    origin.put(SEGMENT, body.clone());
    let (address, _) = serve_origin(Arc::clone(&origin), "127.0.0.1:0".parse().unwrap()).await;
    let tier = TierUnderTest::start(config(address)).await;
    (origin, tier, body)
}

fn assert_cors(response: &casebook_kit::http_client::HttpResponse) {
    assert_eq!(header(response, "access-control-allow-origin"), Some("*"));
    let exposed = header(response, "access-control-expose-headers").unwrap_or_default();
    for name in ["Content-Range", "Content-Length", "ETag", "Accept-Ranges"] {
        assert!(exposed.contains(name), "{name} not exposed in {exposed:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_is_served_whole_with_its_headers() {
    let (_origin, tier, body) = tier_with_segment().await;
    let response = tier.get(SEGMENT, &[]).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.body.as_ref(), body.as_slice());
    assert_eq!(header(&response, "content-type"), Some("video/mp2t"));
    assert_eq!(
        header(&response, "cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(header(&response, "accept-ranges"), Some("bytes"));
    assert_eq!(header(&response, "content-length"), Some("1000"));
    assert_eq!(header(&response, "x-cache"), Some("miss"));
    let etag = header(&response, "etag").unwrap();
    assert!(etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2);
    assert_cors(&response);

    let again = tier.get(SEGMENT, &[]).await;
    assert_eq!(header(&again, "x-cache"), Some("hit-memory"));
    assert_eq!(header(&again, "etag"), Some(etag));

    let head = tier.send(Method::HEAD, &tier.signed(SEGMENT), &[]).await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
    assert_eq!(header(&head, "content-length"), Some("1000"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_answer_206_and_unsatisfiable_ones_416() {
    let (_origin, tier, body) = tier_with_segment().await;
    let cases: [(&str, usize, usize); 4] = [
        ("bytes=0-99", 0, 99),
        ("bytes=900-", 900, 999),
        ("bytes=-10", 990, 999),
        ("bytes=500-5000", 500, 999),
    ];
    for (range, start, end) in cases {
        let response = tier.get(SEGMENT, &[("range", range)]).await;
        assert_eq!(response.status, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(response.body.as_ref(), &body[start..=end], "{range}");
        assert_eq!(
            header(&response, "content-range"),
            Some(format!("bytes {start}-{end}/1000").as_str())
        );
        assert_eq!(
            header(&response, "content-length"),
            Some((end - start + 1).to_string().as_str())
        );
        assert_cors(&response);
    }
    for range in [
        "bytes=1000-",
        "bytes=5000-6000",
        "bytes=-0",
        "bytes=9-3",
        "bytes=x-1",
    ] {
        let response = tier.get(SEGMENT, &[("range", range)]).await;
        assert_eq!(
            response.status,
            StatusCode::RANGE_NOT_SATISFIABLE,
            "{range}"
        );
        assert_eq!(
            header(&response, "content-range"),
            Some("bytes */1000"),
            "{range}"
        );
        assert_eq!(error_of(&response)["field"], "range");
        assert_cors(&response);
    }
    // Several ranges: the whole representation (the documented choice).
    let response = tier.get(SEGMENT, &[("range", "bytes=0-1,5-6")]).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.body.len(), 1000);
    // Another unit is ignored.
    let response = tier.get(SEGMENT, &[("range", "items=0-1")]).await;
    assert_eq!(response.status, StatusCode::OK);
    // If-Range with another validator turns the range into a full response.
    let response = tier
        .get(
            SEGMENT,
            &[("range", "bytes=0-1"), ("if-range", "\"other\"")],
        )
        .await;
    assert_eq!(response.status, StatusCode::OK);
    let etag = header(&response, "etag").unwrap().to_owned();
    let response = tier
        .get(SEGMENT, &[("range", "bytes=0-1"), ("if-range", &etag)])
        .await;
    assert_eq!(response.status, StatusCode::PARTIAL_CONTENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_none_match_answers_304_with_the_validators() {
    let (origin, tier, _) = tier_with_segment().await;
    let first = tier.get(SEGMENT, &[]).await;
    let etag = header(&first, "etag").unwrap().to_owned();
    for condition in [
        etag.clone(),
        format!("W/{etag}"),
        format!("\"nope\", {etag}"),
        "*".to_owned(),
    ] {
        let response = tier.get(SEGMENT, &[("if-none-match", &condition)]).await;
        assert_eq!(response.status, StatusCode::NOT_MODIFIED, "{condition}");
        assert!(response.body.is_empty());
        assert_eq!(header(&response, "etag"), Some(etag.as_str()));
        assert!(header(&response, "cache-control").is_some());
        assert_cors(&response);
    }
    let response = tier.get(SEGMENT, &[("if-none-match", "\"other\"")]).await;
    assert_eq!(response.status, StatusCode::OK);
    // Conditionals come before ranges.
    let response = tier
        .get(SEGMENT, &[("if-none-match", &etag), ("range", "bytes=0-1")])
        .await;
    assert_eq!(response.status, StatusCode::NOT_MODIFIED);
    assert_eq!(origin.hits(SEGMENT), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_allows_range_from_any_origin() {
    let (origin, tier, _) = tier_with_segment().await;
    let response = tier
        .send(
            Method::OPTIONS,
            &format!("/o/{SEGMENT}"),
            &[
                ("origin", "https://player.example"),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "range"),
            ],
        )
        .await;
    assert_eq!(response.status, StatusCode::NO_CONTENT);
    assert_eq!(header(&response, "access-control-allow-origin"), Some("*"));
    let methods = header(&response, "access-control-allow-methods").unwrap();
    assert!(methods.contains("GET") && methods.contains("HEAD"));
    let allowed = header(&response, "access-control-allow-headers").unwrap();
    assert!(allowed.to_ascii_lowercase().contains("range"));
    assert_eq!(origin.requests(), 0, "a preflight fetches nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_methods_and_routes_are_refused_as_json() {
    let (_origin, tier, _) = tier_with_segment().await;
    let response = tier.send(Method::POST, &tier.signed(SEGMENT), &[]).await;
    assert_eq!(response.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(error_of(&response)["error"].is_string());
    assert_cors(&response);
    let response = tier.send(Method::GET, "/nothing-here", &[]).await;
    assert_eq!(response.status, StatusCode::NOT_FOUND);
    assert!(error_of(&response)["error"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_headers_are_400() {
    let (origin, tier, _) = tier_with_segment().await;
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "range",
        http::HeaderValue::from_bytes(b"bytes=0-\xff").unwrap(),
    );
    let response = tier
        .client
        .send(
            Method::GET,
            &tier.url(&tier.signed(SEGMENT)),
            headers,
            bytes::Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_of(&response)["field"], "range");
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "if-none-match",
        http::HeaderValue::from_bytes(b"\"\xfe\"").unwrap(),
    );
    let response = tier
        .client
        .send(
            Method::GET,
            &tier.url(&tier.signed(SEGMENT)),
            headers,
            bytes::Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_of(&response)["field"], "if-none-match");
    assert_eq!(origin.requests(), 0, "refused before any fetch");
    // Oversized headers are the kit's listener's (hyper's) to refuse, before any
    // route runs: 431, or the connection closed. The tier still serves others.
    let huge = "x".repeat(512 * 1024);
    let response = tier
        .client
        .send(
            Method::GET,
            &tier.url(&tier.signed(SEGMENT)),
            [(
                http::HeaderName::from_static("x-huge"),
                http::HeaderValue::from_str(&huge).unwrap(),
            )]
            .into_iter()
            .collect(),
            bytes::Bytes::new(),
        )
        .await;
    if let Ok(response) = response {
        assert_eq!(response.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }
    assert_eq!(origin.requests(), 0);
    assert_eq!(tier.get(SEGMENT, &[]).await.status, StatusCode::OK);
}
