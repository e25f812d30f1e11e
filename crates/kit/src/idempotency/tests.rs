use super::*;
use crate::clock::ManualClock;
use crate::wal::{Durability, WalConfig};
use std::sync::atomic::AtomicUsize;
use tower::ServiceExt;

fn wal_config() -> WalConfig {
    WalConfig {
        segment_bytes: 4096,
        max_record_bytes: 2048,
        durability: Durability::NoSync,
        ..WalConfig::default()
    }
}

fn open(dir: &std::path::Path, clock: &ManualClock) -> IdempotencyStore {
    let wal = Wal::open(dir, wal_config()).unwrap();
    IdempotencyStore::open(wal, clock.shared(), IdempotencyConfig::default()).unwrap()
}

/// Copies a log's segment files (not its lock) as a crash would leave them.
fn copy_log(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey::parse(k).unwrap()
}

fn response(body: &str) -> StoredResponse {
    StoredResponse {
        status: 201,
        content_type: Some("application/json".into()),
        body: body.as_bytes().to_vec(),
    }
}

fn fp(body: &str) -> Fingerprint {
    Fingerprint::of(&[b"POST", b"/orders", body.as_bytes()])
}

fn execute(store: &IdempotencyStore, k: &str, body: &str) -> Claim {
    match store.begin(&key(k), fp(body)).unwrap() {
        Begin::Execute(claim) => claim,
        Begin::Replay(r) => panic!("expected to execute, got replay {r:?}"),
    }
}

fn replay(store: &IdempotencyStore, k: &str, body: &str) -> Arc<StoredResponse> {
    match store.begin(&key(k), fp(body)).unwrap() {
        Begin::Replay(r) => r,
        Begin::Execute(_) => panic!("expected a replay"),
    }
}

#[test]
fn keys_are_validated_precisely() {
    assert_eq!(key("abc").as_str(), "abc");
    assert_eq!(key("\"8e03978e-40d5\"").as_str(), "8e03978e-40d5");
    assert_eq!(key(&"k".repeat(255)).as_str().len(), 255);
    for bad in ["", "\"\"", "caf\u{e9}", "tab\there"] {
        assert!(
            matches!(
                IdempotencyKey::parse(bad),
                Err(IdempotencyError::InvalidKey(_))
            ),
            "{bad:?}"
        );
    }
    let too_long = IdempotencyKey::parse(&"k".repeat(256)).unwrap_err();
    assert!(too_long.to_string().contains("256"), "{too_long}");
    assert_eq!(too_long.status(), StatusCode::BAD_REQUEST);
}

#[test]
fn fingerprints_separate_parts() {
    assert_ne!(
        Fingerprint::of(&[b"ab", b"c"]),
        Fingerprint::of(&[b"a", b"bc"])
    );
    assert_eq!(
        Fingerprint::of(&[b"ab", b"c"]),
        Fingerprint::of(&[b"ab", b"c"])
    );
}

#[tokio::test]
async fn first_execution_is_replayed_and_conflicts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let store = open(dir.path(), &clock);

    let claim = execute(&store, "k1", "{\"qty\":1}");
    // While in flight: same payload → 409, different payload → 422.
    assert!(matches!(
        store.begin(&key("k1"), fp("{\"qty\":1}")),
        Err(IdempotencyError::InFlight)
    ));
    assert!(matches!(
        store.begin(&key("k1"), fp("{\"qty\":2}")),
        Err(IdempotencyError::FingerprintMismatch)
    ));
    claim.complete(response("{\"id\":7}")).await.unwrap();

    let replayed = replay(&store, "k1", "{\"qty\":1}");
    assert_eq!(*replayed, response("{\"id\":7}"));
    let err = store.begin(&key("k1"), fp("{\"qty\":2}")).unwrap_err();
    assert_eq!(err.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // Other keys are independent.
    drop(execute(&store, "k2", "{\"qty\":1}"));
}

#[tokio::test]
async fn a_dropped_claim_frees_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let store = open(dir.path(), &clock);
    drop(execute(&store, "k", "a"));
    execute(&store, "k", "b")
        .complete(response("b"))
        .await
        .unwrap();
    assert_eq!(replay(&store, "k", "b").body, b"b");
}

#[tokio::test]
async fn retention_expires_keys_on_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let store = open(dir.path(), &clock);
    execute(&store, "k", "a")
        .complete(response("first"))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(24 * 3600 - 1));
    assert_eq!(replay(&store, "k", "a").body, b"first");
    clock.advance(Duration::from_secs(1));
    // Expired: executes anew, even with a different payload.
    execute(&store, "k", "other")
        .complete(response("second"))
        .await
        .unwrap();
    assert_eq!(replay(&store, "k", "other").body, b"second");
}

#[tokio::test]
async fn an_abandoned_claim_is_taken_over_after_its_lease() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let store = open(dir.path(), &clock);
    let stale = execute(&store, "k", "a");
    clock.advance(Duration::from_secs(59));
    assert!(matches!(
        store.begin(&key("k"), fp("a")),
        Err(IdempotencyError::InFlight)
    ));
    clock.advance(Duration::from_secs(1));
    let fresh = execute(&store, "k", "a");
    assert!(matches!(
        stale.complete(response("late")).await,
        Err(IdempotencyError::ClaimLost)
    ));
    fresh.complete(response("fresh")).await.unwrap();
    assert_eq!(replay(&store, "k", "a").body, b"fresh");
}

#[tokio::test]
async fn responses_survive_restart_until_retention_ends() {
    let dir = tempfile::tempdir().unwrap();
    let crashed = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    {
        let store = open(dir.path(), &clock);
        execute(&store, "old", "a")
            .complete(response("old"))
            .await
            .unwrap();
        clock.advance(Duration::from_secs(3600));
        execute(&store, "new", "a")
            .complete(response("new"))
            .await
            .unwrap();
        // In flight at the "crash": not durable, free after restart.
        std::mem::forget(execute(&store, "pending", "a"));
        // The crash image: the log's files as they stand, opened afresh (the leaked
        // store still holds the original directory's lock, as no crashed process would).
        copy_log(dir.path(), crashed.path());
    }
    clock.advance(Duration::from_secs(23 * 3600));
    let store = open(crashed.path(), &clock);
    assert_eq!(replay(&store, "new", "a").body, b"new");
    drop(execute(&store, "old", "a"));
    drop(execute(&store, "pending", "a"));
}

#[tokio::test]
async fn compaction_drops_segments_of_expired_responses_only() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let store = open(dir.path(), &clock);
    let big = "x".repeat(1000);
    for i in 0..12 {
        execute(&store, &format!("old-{i}"), "a")
            .complete(response(&big))
            .await
            .unwrap();
    }
    clock.advance(Duration::from_secs(20 * 3600));
    execute(&store, "live", "a")
        .complete(response(&big))
        .await
        .unwrap();
    assert_eq!(store.compact().unwrap(), 0, "nothing has expired yet");
    clock.advance(Duration::from_secs(5 * 3600));
    assert!(store.compact().unwrap() >= 2);
    assert_eq!(store.len(), 1);
    drop(store);
    let store = open(dir.path(), &clock);
    assert_eq!(replay(&store, "live", "a").body, big.as_bytes());
}

#[tokio::test]
async fn the_store_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let wal = Wal::open(dir.path(), wal_config()).unwrap();
    let config = IdempotencyConfig {
        max_keys: 2,
        ..IdempotencyConfig::default()
    };
    let store = IdempotencyStore::open(wal, clock.shared(), config).unwrap();
    let _a = execute(&store, "a", "x");
    let _b = execute(&store, "b", "x");
    assert!(matches!(
        store.begin(&key("c"), fp("x")),
        Err(IdempotencyError::Full)
    ));
    clock.advance(Duration::from_secs(60));
    // Both claims' leases ran out: purged to make room.
    drop(execute(&store, "c", "x"));
}

mod layer {
    use super::*;
    use axum::Router;
    use axum::routing::{get, post};
    use http::Method;

    fn app(
        store: IdempotencyStore,
        executions: Arc<AtomicUsize>,
        gate: Arc<tokio::sync::Semaphore>,
    ) -> Router {
        Router::new()
            .route(
                "/orders",
                post(move |body: String| async move {
                    let n = executions.fetch_add(1, Ordering::SeqCst) + 1;
                    let _permit = gate.acquire().await.unwrap();
                    (
                        StatusCode::CREATED,
                        axum::Json(serde_json::json!({"order": n, "echo": body})),
                    )
                }),
            )
            .route("/orders/1", get(|| async { "an order" }))
            .layer(IdempotencyLayer::new(store, true))
    }

    fn request(key: Option<&str>, body: &str) -> Request<Body> {
        let mut builder = Request::builder().method(Method::POST).uri("/orders");
        if let Some(key) = key {
            builder = builder.header(IDEMPOTENCY_KEY_HEADER, key);
        }
        builder.body(Body::from(body.to_string())).unwrap()
    }

    async fn send(app: &Router, req: Request<Body>) -> (StatusCode, Option<String>, Vec<u8>) {
        let response = app.clone().oneshot(req).await.unwrap();
        let status = response.status();
        let replayed = response
            .headers()
            .get(REPLAYED_HEADER)
            .map(|v| v.to_str().unwrap().to_string());
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, replayed, body.to_vec())
    }

    #[tokio::test]
    async fn http_replays_byte_identical_and_maps_errors() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new();
        let executions = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Semaphore::new(1000));
        let app = app(open(dir.path(), &clock), executions.clone(), gate);

        let (status, replayed, first) = send(&app, request(Some("k"), "one")).await;
        assert_eq!((status, replayed), (StatusCode::CREATED, None));
        let (status, replayed, again) = send(&app, request(Some("k"), "one")).await;
        assert_eq!(
            (status, replayed.as_deref()),
            (StatusCode::CREATED, Some("true"))
        );
        assert_eq!(again, first);
        assert_eq!(executions.load(Ordering::SeqCst), 1);

        let (status, _, body) = send(&app, request(Some("k"), "two")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            String::from_utf8(body)
                .unwrap()
                .contains("different request")
        );

        let (status, _, body) = send(&app, request(None, "one")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["field"], "Idempotency-Key");

        let (status, _, _) = send(&app, request(Some(&"k".repeat(256)), "one")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        // GET needs no key even when keys are required.
        let get = Request::builder()
            .uri("/orders/1")
            .body(Body::empty())
            .unwrap();
        let (status, _, body) = send(&app, get).await;
        assert_eq!((status, body), (StatusCode::OK, b"an order".to_vec()));
        assert_eq!(executions.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn http_duplicate_while_in_flight_gets_409() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new();
        let executions = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let app = app(open(dir.path(), &clock), executions.clone(), gate.clone());

        let first = tokio::spawn({
            let app = app.clone();
            async move { send(&app, request(Some("k"), "one")).await }
        });
        // Wait until the first request is inside the handler (no sleeping: yield).
        while executions.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let (status, _, _) = send(&app, request(Some("k"), "one")).await;
        assert_eq!(status, StatusCode::CONFLICT);
        gate.add_permits(1);
        let (status, _, body) = first.await.unwrap();
        assert_eq!(status, StatusCode::CREATED);
        let (_, replayed, again) = send(&app, request(Some("k"), "one")).await;
        assert_eq!((replayed.as_deref(), again), (Some("true"), body));
        assert_eq!(executions.load(Ordering::SeqCst), 1);
    }
}

/// Found while writing the `idempotency_record` fuzz target: a content type longer
/// than its `u16` length prefix wrapped, and the stored record replayed a wrong
/// content type and body. Such a response is now answered but not stored.
#[tokio::test]
async fn a_content_type_too_long_to_store_is_refused_not_corrupted() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let config = WalConfig {
        segment_bytes: 1 << 20,
        max_record_bytes: 1 << 18,
        durability: Durability::NoSync,
        ..WalConfig::default()
    };
    let wal = Wal::open(dir.path(), config).unwrap();
    let store = IdempotencyStore::open(wal, clock.shared(), IdempotencyConfig::default()).unwrap();
    let long = StoredResponse {
        status: 200,
        content_type: Some("x".repeat(usize::from(u16::MAX) + 1)),
        body: b"body".to_vec(),
    };
    assert_eq!(encode_record("k", fp("a"), 0, &long), None);
    let err = execute(&store, "k", "a").complete(long).await.unwrap_err();
    assert!(matches!(
        err,
        IdempotencyError::Storage(WalError::RecordTooLarge {
            len: 65536,
            max: 65535
        })
    ));
    // Nothing was stored, and the key is free again.
    execute(&store, "k", "a")
        .complete(response("ok"))
        .await
        .unwrap();
    assert_eq!(replay(&store, "k", "a").body, b"ok");
}
