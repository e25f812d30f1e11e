//! The inventory API over the embedded store: the issue's bad-input list, replays
//! byte for byte, TTLs on the manual clock, and what a reopen brings back.

mod support;

use std::sync::Arc;
use std::time::Duration;

use casebook_kit::clock::ManualClock;
use support::{MemoryCart, Stack};

fn stack(dir: &std::path::Path, clock: &ManualClock) -> Stack {
    Stack::open(dir, clock, Arc::new(MemoryCart::default()))
}

const RESERVE: &str = "/v1/reservations";

#[tokio::test]
async fn stock_and_reservations_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let api = stack(dir.path(), &clock);
    let level = api
        .call(
            "PUT",
            "/v1/inventory/tea",
            None,
            Some(r#"{"available": 5}"#),
        )
        .await;
    assert_eq!(
        level.expect(200, None),
        &serde_json::json!({"sku": "tea", "available": 5, "reserved": 0, "confirmed": 0})
    );
    let made = api
        .call(
            "POST",
            RESERVE,
            Some("k1"),
            Some(r#"{"sku":"tea","qty":2,"ttl_seconds":60}"#),
        )
        .await;
    let body = made.expect(201, None);
    assert_eq!(body["sku"], "tea");
    assert_eq!(body["qty"], 2);
    assert_eq!(body["state"], "active");
    let id = body["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("res_"), "{id}");
    assert!(body["expires_at"].as_str().unwrap().ends_with('Z'));
    let got = api
        .call("GET", &format!("{RESERVE}/{id}"), None, None)
        .await;
    assert_eq!(got.expect(200, None)["state"], "active");
    let confirmed = api
        .call("POST", &format!("{RESERVE}/{id}/confirm"), None, None)
        .await;
    assert_eq!(confirmed.expect(200, None)["state"], "confirmed");
    let level = api.call("GET", "/v1/inventory/tea", None, None).await;
    assert_eq!(
        level.expect(200, None),
        &serde_json::json!({"sku": "tea", "available": 3, "reserved": 0, "confirmed": 2})
    );
    let short = api
        .call(
            "POST",
            RESERVE,
            Some("k2"),
            Some(r#"{"sku":"tea","qty":4}"#),
        )
        .await;
    assert_eq!(
        short.expect(409, Some("insufficient_stock"))["field"],
        "qty"
    );
}

#[tokio::test]
async fn a_retry_gets_the_first_answer_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let api = stack(dir.path(), &clock);
    api.call(
        "PUT",
        "/v1/inventory/tea",
        None,
        Some(r#"{"available": 1}"#),
    )
    .await;
    let body = r#"{"sku":"tea","qty":1}"#;
    let first = api.call("POST", RESERVE, Some("same"), Some(body)).await;
    first.expect(201, None);
    assert!(!first.replayed);
    // The same request spelled differently (field order, the default TTL named).
    let respelled = r#"{"ttl_seconds":900,"qty":1,"sku":"tea"}"#;
    for request in [body, respelled] {
        let again = api.call("POST", RESERVE, Some("same"), Some(request)).await;
        assert_eq!(again.status.as_u16(), 201);
        assert!(again.replayed);
        assert_eq!(again.bytes, first.bytes);
    }
    // Even after the reservation moved on, the replay is the original answer.
    let id = first.json["id"].as_str().unwrap();
    api.call("POST", &format!("{RESERVE}/{id}/release"), None, None)
        .await
        .expect(200, None);
    let later = api.call("POST", RESERVE, Some("same"), Some(body)).await;
    assert_eq!(later.bytes, first.bytes);
    // A short answer is replayed too.
    let short = api
        .call(
            "POST",
            RESERVE,
            Some("short"),
            Some(r#"{"sku":"tea","qty":5}"#),
        )
        .await;
    short.expect(409, Some("insufficient_stock"));
    let again = api
        .call(
            "POST",
            RESERVE,
            Some("short"),
            Some(r#"{"sku":"tea","qty":5}"#),
        )
        .await;
    assert!(again.replayed);
    assert_eq!(again.bytes, short.bytes);
    // After a restart, still the same bytes.
    drop(api);
    let api = stack(dir.path(), &clock);
    let restarted = api.call("POST", RESERVE, Some("same"), Some(body)).await;
    assert!(restarted.replayed);
    assert_eq!(restarted.bytes, first.bytes);
}

#[tokio::test]
async fn bad_input_gets_a_coded_error_naming_the_field_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let api = stack(dir.path(), &clock);
    api.call(
        "PUT",
        "/v1/inventory/tea",
        None,
        Some(r#"{"available": 10}"#),
    )
    .await;
    let reserve =
        |key: Option<&'static str>, body: &'static str| api.call("POST", RESERVE, key, Some(body));

    let missing = reserve(None, r#"{"sku":"tea","qty":1}"#).await;
    assert_eq!(
        missing.expect(400, Some("idempotency_key_required"))["field"],
        "Idempotency-Key"
    );
    for (body, field) in [
        (r#"{"sku":"tea","qty":0}"#, "qty"),
        (r#"{"sku":"tea","qty":-3}"#, "qty"),
        (r#"{"sku":"tea","qty":101}"#, "qty"),
        (r#"{"sku":"tea","qty":1,"ttl_seconds":0}"#, "ttl_seconds"),
        (
            r#"{"sku":"tea","qty":1,"ttl_seconds":86401}"#,
            "ttl_seconds",
        ),
        (r#"{"sku":"te a","qty":1}"#, "sku"),
        (r#"{"sku":"","qty":1}"#, "sku"),
    ] {
        let answer = reserve(Some("bad"), body).await;
        assert_eq!(
            answer.expect(400, Some("invalid_field"))["field"],
            field,
            "{body}"
        );
    }
    for (body, field) in [
        (r#"{"sku":7,"qty":1}"#, Some("sku")),
        (r#"{"sku":"tea","qty":"one"}"#, Some("qty")),
        (r#"{"sku":"tea"}"#, Some("qty")),
        (r#"{"sku":"tea","qty":1,"colour":"red"}"#, None),
        (r#"{"sku":"tea","qty":1"#, None),
        ("", None),
    ] {
        let answer = reserve(Some("bad"), body).await;
        let json = answer.expect(400, Some("invalid_json"));
        if let Some(field) = field {
            assert_eq!(json["field"], field, "{body}");
        }
    }
    // The key was never decided by a refused request: it still works.
    reserve(Some("bad"), r#"{"sku":"tea","qty":1}"#)
        .await
        .expect(201, None);
    let reused = reserve(Some("bad"), r#"{"sku":"tea","qty":2}"#).await;
    reused.expect(422, Some("idempotency_key_reused"));
    reserve(Some("k"), r#"{"sku":"coffee","qty":1}"#)
        .await
        .expect(404, Some("unknown_sku"));
    api.call("GET", "/v1/inventory/coffee", None, None)
        .await
        .expect(404, Some("unknown_sku"));
    for id in ["res_999", "res_", "nonsense", "res_1x"] {
        api.call("GET", &format!("{RESERVE}/{id}"), None, None)
            .await
            .expect(404, Some("unknown_reservation"));
        api.call("POST", &format!("{RESERVE}/{id}/confirm"), None, None)
            .await
            .expect(404, Some("unknown_reservation"));
    }
    for (body, field) in [
        (r#"{"available":-1}"#, "available"),
        (r#"{"available":"many"}"#, "available"),
    ] {
        let answer = api.call("PUT", "/v1/inventory/tea", None, Some(body)).await;
        assert_eq!(answer.status.as_u16(), 400, "{}", answer.json);
        assert_eq!(answer.json["field"], field);
    }
    let long_key = "k".repeat(300);
    let answer = api
        .call(
            "POST",
            RESERVE,
            Some(&long_key),
            Some(r#"{"sku":"tea","qty":1}"#),
        )
        .await;
    answer.expect(400, Some("invalid_idempotency_key"));
    // Only the one good reservation took stock.
    let level = api.call("GET", "/v1/inventory/tea", None, None).await;
    assert_eq!(level.json["available"], 9);
}

#[tokio::test]
async fn confirming_an_expired_or_released_reservation_is_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let api = stack(dir.path(), &clock);
    api.call(
        "PUT",
        "/v1/inventory/tea",
        None,
        Some(r#"{"available": 10}"#),
    )
    .await;
    let mut ids = Vec::new();
    for key in ["a", "b", "c"] {
        let made = api
            .call(
                "POST",
                RESERVE,
                Some(key),
                Some(r#"{"sku":"tea","qty":1,"ttl_seconds":30}"#),
            )
            .await;
        ids.push(made.json["id"].as_str().unwrap().to_owned());
    }
    api.call("POST", &format!("{RESERVE}/{}/release", ids[0]), None, None)
        .await
        .expect(200, None);
    api.call("POST", &format!("{RESERVE}/{}/confirm", ids[0]), None, None)
        .await
        .expect(409, Some("reservation_released"));
    api.call("POST", &format!("{RESERVE}/{}/confirm", ids[2]), None, None)
        .await
        .expect(200, None);
    api.call("POST", &format!("{RESERVE}/{}/release", ids[2]), None, None)
        .await
        .expect(409, Some("reservation_confirmed"));
    clock.advance(Duration::from_secs(30));
    api.call("POST", &format!("{RESERVE}/{}/confirm", ids[1]), None, None)
        .await
        .expect(409, Some("reservation_expired"));
    let expired = api
        .call("GET", &format!("{RESERVE}/{}", ids[1]), None, None)
        .await;
    assert_eq!(expired.expect(200, None)["state"], "expired");
    let level = api.call("GET", "/v1/inventory/tea", None, None).await;
    assert_eq!(
        level.json,
        serde_json::json!({"sku": "tea", "available": 9, "reserved": 0, "confirmed": 1})
    );
}
