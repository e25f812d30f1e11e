//! Billing's SQL store, written once and run on every engine: SQLite here,
//! PostgreSQL and MariaDB when `.ci/run` runs the ignored tests. The intent is
//! unique per account and key (racing writers get one), outcomes are written
//! once, plan changes upsert, cancels are idempotent; and the whole service
//! charges a key once against the engine.

use std::sync::Arc;
use std::time::Duration;

use casebook_kit::clock::ManualClock;
use casebook_kit::http_client::HttpClient;
use casebook_kit::resilience::ManualSleeper;
use casebook_netflix::billing::provider::{Pause, SimulatedProvider, Simulation};
use casebook_netflix::billing::store::{Intent, Store};
use casebook_netflix::billing::{Billing, BillingConfig, api};
use casebook_netflix::sql::{Dialect, scratch::Scratch, sqlite_url};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};

fn intent(key: &str, plan: &str, now_ms: i64) -> Intent {
    Intent {
        account: "acct-1".to_owned(),
        idempotency_key: key.to_owned(),
        plan: plan.to_owned(),
        amount_cents: if plan == "premium" { 2299 } else { 999 },
        period_start_ms: now_ms,
        period_end_ms: now_ms + 1000,
        now_ms,
    }
}

async fn store_contract(url: &str) {
    let store = Store::open(url).await.unwrap();
    let first = store
        .record_intent(&intent("Key", "basic", 100))
        .await
        .unwrap();
    assert_eq!((first.status.as_str(), first.attempts), ("pending", 0));
    let again = store
        .record_intent(&intent("Key", "basic", 100))
        .await
        .unwrap();
    assert_eq!(again.id, first.id, "one intent per key");
    // Keys compare byte for byte on every engine.
    let other = store
        .record_intent(&intent("key", "basic", 200))
        .await
        .unwrap();
    assert_ne!(other.id, first.id);

    let racers: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.record_intent(&intent("race", "basic", 300)).await })
        })
        .collect();
    let mut ids = Vec::new();
    for racer in racers {
        ids.push(racer.await.unwrap().unwrap().id);
    }
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert_eq!(store.invoices("acct-1", 100).await.unwrap().len(), 3);

    store.count_attempt(&first.id, 110).await.unwrap();
    store.count_attempt(&first.id, 120).await.unwrap();
    store.succeed(&first, "ch_1", 130).await.unwrap();
    store.succeed(&first, "ch_2", 140).await.unwrap();
    store.decline(&first, "late", 150).await.unwrap();
    let paid = store
        .payment_by_key("acct-1", "Key")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(paid.status, "succeeded");
    assert_eq!(
        paid.charge_id.as_deref(),
        Some("ch_1"),
        "the first outcome stays"
    );
    assert_eq!(paid.attempts, 2);
    let invoice = store.invoice(&paid.invoice_id).await.unwrap().unwrap();
    assert_eq!(
        (invoice.status.as_str(), invoice.amount_cents),
        ("paid", 999)
    );
    let subscription = store.subscription("acct-1").await.unwrap().unwrap();
    assert_eq!(
        (
            subscription.plan.as_str(),
            subscription.status.as_str(),
            subscription.period_start_ms,
            subscription.period_end_ms
        ),
        ("basic", "active", 100, 1100)
    );

    store
        .decline(&other, "insufficient_funds", 210)
        .await
        .unwrap();
    let declined = store
        .payment_by_key("acct-1", "key")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(declined.status, "declined");
    assert_eq!(
        declined.decline_reason.as_deref(),
        Some("insufficient_funds")
    );
    let failed = store.invoice(&declined.invoice_id).await.unwrap().unwrap();
    assert_eq!(failed.status, "failed");
    assert_eq!(
        store.subscription("acct-1").await.unwrap().unwrap().plan,
        "basic"
    );

    // A plan change replaces the subscription row.
    let upgrade = store
        .record_intent(&intent("up", "premium", 400))
        .await
        .unwrap();
    store.succeed(&upgrade, "ch_3", 410).await.unwrap();
    let subscription = store.subscription("acct-1").await.unwrap().unwrap();
    assert_eq!(
        (subscription.plan.as_str(), subscription.period_start_ms),
        ("premium", 400)
    );

    assert!(store.cancel("acct-1", 500).await.unwrap());
    let canceled = store.subscription("acct-1").await.unwrap().unwrap();
    assert_eq!(
        (canceled.status.as_str(), canceled.updated_ms),
        ("canceled", 500)
    );
    assert!(store.cancel("acct-1", 600).await.unwrap());
    assert_eq!(
        store
            .subscription("acct-1")
            .await
            .unwrap()
            .unwrap()
            .updated_ms,
        500,
        "canceling twice changes nothing"
    );
    assert!(!store.cancel("nobody", 600).await.unwrap());

    let invoices = store.invoices("acct-1", 2).await.unwrap();
    let created: Vec<i64> = invoices.iter().map(|i| i.created_ms).collect();
    assert_eq!(created, [400, 300], "newest first, limited");
    assert_eq!(store.payments("acct-1").await.unwrap().len(), 4);
    assert!(store.invoices("nobody", 10).await.unwrap().is_empty());
    store.close().await;
}

/// The service on the engine: retried and concurrent keys charge once.
async fn service_contract(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let provider = Arc::new(SimulatedProvider::new(
        Simulation::default(),
        Pause::from_sleeper(ManualSleeper::new(clock.clone())),
    ));
    let config = BillingConfig {
        database: Some(url.to_owned()),
        ..BillingConfig::default()
    };
    let billing = Arc::new(
        Billing::open(
            &config,
            dir.path(),
            provider.clone(),
            clock.shared(),
            Pause::from_sleeper(ManualSleeper::new(clock.clone())),
        )
        .await
        .unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, api::router(billing)).await.unwrap();
    });
    let client = HttpClient::new(Duration::from_secs(30));
    let mut headers = HeaderMap::new();
    headers.insert("x-user-id", HeaderValue::from_static("acct-9"));
    headers.insert("idempotency-key", HeaderValue::from_static("once"));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let url = format!("http://{address}/api/v1/billing/subscribe");
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let response = client
            .send(
                Method::POST,
                &url,
                headers.clone(),
                bytes::Bytes::from_static(br#"{"plan":"premium"}"#),
            )
            .await
            .unwrap();
        assert_eq!(response.status, StatusCode::CREATED, "{:?}", response.body);
        bodies.push(response.body);
    }
    assert!(bodies.iter().all(|b| *b == bodies[0]));
    assert_eq!(provider.ledger().len(), 1);
    server.abort();
}

#[tokio::test]
async fn sqlite_migrates_from_empty_and_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir.path().join("fresh/billing.db"));
    store_contract(&url).await;
    // Reopening migrates nothing and finds the rows.
    let store = Store::open(&url).await.unwrap();
    assert_eq!(store.dialect(), Dialect::Sqlite);
    assert_eq!(store.payments("acct-1").await.unwrap().len(), 4);
    store.close().await;
    let other = tempfile::tempdir().unwrap();
    service_contract(&sqlite_url(&other.path().join("billing.db"))).await;
}

#[tokio::test]
#[ignore = "needs MariaDB (CASEBOOK_TEST_MYSQL); run by .ci/run"]
async fn mariadb_keeps_the_contract() {
    let scratch = Scratch::new(&casebook_netflix::sql::scratch::mysql_url())
        .await
        .unwrap();
    store_contract(&scratch.url).await;
    let store = Store::open(&scratch.url).await.unwrap();
    assert_eq!(store.dialect(), Dialect::MySql);
    store.close().await;
    service_contract(&scratch.url).await;
    scratch.drop_now().await.unwrap();
}

#[tokio::test]
#[ignore = "needs PostgreSQL (CASEBOOK_TEST_POSTGRES); run by .ci/run"]
async fn postgres_keeps_the_contract() {
    let scratch = Scratch::new(&casebook_netflix::sql::scratch::postgres_url())
        .await
        .unwrap();
    store_contract(&scratch.url).await;
    service_contract(&scratch.url).await;
    scratch.drop_now().await.unwrap();
}
