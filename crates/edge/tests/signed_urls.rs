//! Signed URLs and bad keys: what a tier refuses before it fetches anything.

mod support;

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use support::{Origin, TierUnderTest, config, error_of, header, serve_origin};

const SEGMENT: &str = "titles/t/720p/seg00001.ts";

async fn tier() -> (Arc<Origin>, TierUnderTest) {
    let origin = Arc::new(Origin::default());
    origin.put(SEGMENT, vec![1u8; 100]);
    origin.put("titles/t/720p/seg00002.ts", vec![2u8; 100]);
    let (address, _) = serve_origin(Arc::clone(&origin), "127.0.0.1:0".parse().unwrap()).await;
    (origin, TierUnderTest::start(config(address)).await)
}

fn assert_forbidden(response: &casebook_kit::http_client::HttpResponse, what: &str) {
    assert_eq!(response.status, StatusCode::FORBIDDEN, "{what}");
    let error = error_of(response);
    assert_eq!(error["field"], "sig", "{what}");
    assert!(error["error"].is_string(), "{what}");
    assert_eq!(
        header(response, "access-control-allow-origin"),
        Some("*"),
        "{what}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_tampered_expired_and_foreign_urls_are_403() {
    let (origin, tier) = tier().await;
    let path = format!("/o/{SEGMENT}");

    let response = tier.send(Method::GET, &path, &[]).await;
    assert_forbidden(&response, "unsigned");
    assert!(
        error_of(&response)["error"]
            .as_str()
            .unwrap()
            .contains("not signed")
    );

    let signed = tier.signed(SEGMENT);
    let tampered = format!("{}0", &signed[..signed.len() - 1]);
    let tampered = if tampered == signed {
        format!("{}1", &signed[..signed.len() - 1])
    } else {
        tampered
    };
    assert_forbidden(
        &tier.send(Method::GET, &tampered, &[]).await,
        "tampered signature",
    );

    let stretched = signed.replace("exp=", "exp=9");
    assert_forbidden(
        &tier.send(Method::GET, &stretched, &[]).await,
        "changed expiry",
    );

    // Signed for another object.
    let other = tier.signed("titles/t/720p/seg00002.ts");
    let (_, query) = other.split_once('?').unwrap();
    assert_forbidden(
        &tier
            .send(Method::GET, &format!("{path}?{query}"), &[])
            .await,
        "another object's signature",
    );

    // Valid now; expired once the tier's clock passes `exp`.
    let exp = tier.now_secs() + 60;
    let short = format!("{path}?{}", tier.key.sign(&path, exp));
    assert_eq!(
        tier.send(Method::GET, &short, &[]).await.status,
        StatusCode::OK
    );
    tier.clock.advance(Duration::from_secs(61));
    let response = tier.send(Method::GET, &short, &[]).await;
    assert_forbidden(&response, "expired");
    assert!(
        error_of(&response)["error"]
            .as_str()
            .unwrap()
            .contains("expired")
    );

    assert_eq!(
        origin.requests(),
        1,
        "only the valid request reached the origin"
    );
    assert_eq!(tier.stats().await.refused_signature, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_query_is_forwarded_upstream() {
    let (origin, tier) = tier().await;
    let signed = tier.signed(SEGMENT);
    assert_eq!(
        tier.send(Method::GET, &signed, &[]).await.status,
        StatusCode::OK
    );
    let (_, query) = signed.split_once('?').unwrap();
    assert_eq!(origin.queries(), vec![Some(query.to_owned())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_keys_are_400_naming_the_key() {
    let (origin, tier) = tier().await;
    let long = format!("/o/{}", "a".repeat(1025));
    for path in [
        "/o/../etc/passwd",
        "/o/titles/../../etc/passwd",
        "/o/titles/./t",
        "/o/%2e%2e/etc/passwd",
        "/o/titles%2f..%2f..%2fetc",
        "/o/titles/%2E%2E/x",
        "/o//etc/passwd",
        "/o/a%00b",
        "/o/a%20b",
        "/o/titles/t/",
        long.as_str(),
    ] {
        // Signed or not, a bad key is refused first.
        let exp = tier.now_secs() + 60;
        let signed = format!("{path}?{}", tier.key.sign(path, exp));
        let response = tier.send(Method::GET, &signed, &[]).await;
        assert_eq!(response.status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(error_of(&response)["field"], "key", "{path}");
    }
    assert_eq!(origin.requests(), 0);
    // The tier still serves others.
    assert_eq!(tier.get(SEGMENT, &[]).await.status, StatusCode::OK);
}
