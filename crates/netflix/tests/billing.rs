//! The billing service over HTTP: a charge happens once across client retries,
//! concurrent retries, replicas, provider timeouts and a restart mid-charge;
//! declines, outages, plan changes, cancels, periods on the manual clock, and
//! bad input. The simulated provider's ledger is the judge.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use casebook_kit::clock::{Clock, ManualClock};
use casebook_kit::http_client::{HttpClient, HttpResponse};
use casebook_kit::resilience::{ManualSleeper, NeverSleeper};
use casebook_netflix::billing::provider::{Pause, SimulatedProvider, Simulation};
use casebook_netflix::billing::{Billing, BillingConfig, api};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};

const THIRTY_DAYS_MS: i64 = 30 * 24 * 3600 * 1000;

/// One billing instance served on a local port.
struct Instance {
    billing: Arc<Billing>,
    url: String,
    server: tokio::task::JoinHandle<()>,
}

impl Instance {
    async fn start(
        config: &BillingConfig,
        data_dir: &Path,
        provider: &Arc<SimulatedProvider>,
        clock: &ManualClock,
        pause: Pause,
    ) -> Self {
        let billing = Arc::new(
            Billing::open(config, data_dir, provider.clone(), clock.shared(), pause)
                .await
                .unwrap(),
        );
        let (address, server) = serve(api::router(billing.clone())).await;
        Self {
            billing,
            url: format!("http://{address}"),
            server,
        }
    }

    /// Stops serving and closes the stores, so the same directory can reopen.
    async fn stop(self) {
        self.server.abort();
        let _ = self.server.await;
        self.billing.close().await;
        drop(self.billing);
    }
}

async fn serve(router: axum::Router) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    (address, server)
}

struct Harness {
    _dir: tempfile::TempDir,
    clock: ManualClock,
    provider: Arc<SimulatedProvider>,
    instance: Instance,
    client: HttpClient,
}

/// A service whose provider answers at once and whose timeouts fire on the
/// manual clock (a call not ready at once has timed out).
async fn harness(simulation: Simulation) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let pause = Pause::from_sleeper(ManualSleeper::new(clock.clone()));
    let provider = Arc::new(SimulatedProvider::new(simulation, pause.clone()));
    let instance = Instance::start(
        &BillingConfig::default(),
        dir.path(),
        &provider,
        &clock,
        pause,
    )
    .await;
    Harness {
        _dir: dir,
        clock,
        provider,
        instance,
        client: HttpClient::new(Duration::from_secs(30)),
    }
}

async fn send(
    client: &HttpClient,
    base: &str,
    method: Method,
    path: &str,
    account: Option<&str>,
    key: Option<&str>,
    body: Option<Value>,
) -> HttpResponse {
    let mut headers = HeaderMap::new();
    if let Some(account) = account {
        headers.insert("x-user-id", HeaderValue::from_str(account).unwrap());
    }
    if let Some(key) = key {
        headers.insert("idempotency-key", HeaderValue::from_str(key).unwrap());
    }
    let body = match body {
        Some(body) => {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Bytes::from(serde_json::to_vec(&body).unwrap())
        }
        None => Bytes::new(),
    };
    client
        .send(method, &format!("{base}{path}"), headers, body)
        .await
        .unwrap()
}

impl Harness {
    async fn subscribe(&self, account: &str, key: &str, plan: &str) -> HttpResponse {
        send(
            &self.client,
            &self.instance.url,
            Method::POST,
            "/api/v1/billing/subscribe",
            Some(account),
            Some(key),
            Some(json!({ "plan": plan })),
        )
        .await
    }

    async fn get(&self, path: &str, account: &str) -> Value {
        let response = send(
            &self.client,
            &self.instance.url,
            Method::GET,
            path,
            Some(account),
            None,
            None,
        )
        .await;
        assert_eq!(response.status, StatusCode::OK, "{path}: {response:?}");
        json_of(&response)
    }

    async fn cancel(&self, account: &str) -> HttpResponse {
        send(
            &self.client,
            &self.instance.url,
            Method::POST,
            "/api/v1/billing/cancel",
            Some(account),
            None,
            None,
        )
        .await
    }

    fn charges_of(&self, account: &str) -> usize {
        charges_of(&self.provider, account)
    }
}

fn charges_of(provider: &SimulatedProvider, account: &str) -> usize {
    provider
        .ledger()
        .iter()
        .filter(|charge| charge.account == account)
        .count()
}

fn json_of(response: &HttpResponse) -> Value {
    serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", response.body))
}

fn replayed(response: &HttpResponse) -> bool {
    response
        .headers
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true")
}

fn assert_error(response: &HttpResponse, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status, status, "{:?}", response.body);
    let body = json_of(response);
    assert_eq!(body["code"], code, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
    body
}

#[tokio::test]
async fn subscribe_charges_and_activates_for_a_period() {
    let h = harness(Simulation::default()).await;
    // The period starts when the intent is recorded (the manual sleeper then
    // moves the clock by the provider timeout it arms).
    let start = h.clock.wall_millis() as i64;
    let response = h.subscribe("acct-1", "k1", "standard").await;
    assert_eq!(response.status, StatusCode::CREATED, "{:?}", response.body);
    assert!(!replayed(&response));
    let body = json_of(&response);
    assert_eq!(body["subscription"]["account"], "acct-1");
    assert_eq!(body["subscription"]["plan"], "standard");
    assert_eq!(body["subscription"]["status"], "active");
    assert_eq!(body["subscription"]["price_cents"], 1549);
    assert_eq!(body["subscription"]["period_start_ms"], start);
    assert_eq!(
        body["subscription"]["period_end_ms"],
        start + THIRTY_DAYS_MS
    );
    assert_eq!(body["invoice"]["status"], "paid");
    assert_eq!(body["invoice"]["amount_cents"], 1549);
    assert_eq!(body["payment"]["status"], "succeeded");
    assert_eq!(body["payment"]["attempts"], 1);
    assert_eq!(body["payment"]["invoice"], body["invoice"]["id"]);
    let ledger = h.provider.ledger();
    assert_eq!(ledger.len(), 1);
    assert_eq!(body["payment"]["charge_id"], ledger[0].charge_id);
    assert_eq!(ledger[0].amount_cents, 1549);

    let current = h.get("/api/v1/billing/subscription", "acct-1").await;
    assert_eq!(current["subscription"], body["subscription"]);
    let invoices = h.get("/api/v1/billing/invoices", "acct-1").await;
    assert_eq!(invoices["invoices"], json!([body["invoice"]]));
    let entitled = h.get("/internal/v1/entitlement/acct-1", "ops").await;
    assert_eq!(
        entitled,
        json!({"account": "acct-1", "active": true, "plan": "standard"})
    );
    let nobody = h.get("/internal/v1/entitlement/acct-2", "ops").await;
    assert_eq!(
        nobody,
        json!({"account": "acct-2", "active": false, "plan": null})
    );
    let none = h.get("/api/v1/billing/subscription", "acct-2").await;
    assert_eq!(none, json!({ "subscription": null }));
    let plans = h.get("/api/v1/billing/plans", "acct-2").await;
    let ids: Vec<&str> = plans["plans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["basic", "standard", "premium"]);
}

#[tokio::test]
async fn a_retried_key_replays_the_first_answer_and_charges_once() {
    let h = harness(Simulation::default()).await;
    let first = h.subscribe("acct-1", "retry-me", "premium").await;
    assert_eq!(first.status, StatusCode::CREATED);
    for _ in 0..5 {
        let again = h.subscribe("acct-1", "retry-me", "premium").await;
        assert_eq!(again.status, StatusCode::CREATED);
        assert!(replayed(&again));
        assert_eq!(again.body, first.body, "byte-identical");
    }
    assert_eq!(h.charges_of("acct-1"), 1);

    // The same key with another body is refused, and charges nothing.
    let other = h.subscribe("acct-1", "retry-me", "basic").await;
    assert_error(
        &other,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    );
    assert_eq!(h.charges_of("acct-1"), 1);

    // Keys belong to their account: another account's same key is its own.
    let theirs = h.subscribe("acct-2", "retry-me", "premium").await;
    assert_eq!(theirs.status, StatusCode::CREATED);
    assert!(!replayed(&theirs));
    assert_eq!(json_of(&theirs)["subscription"]["account"], "acct-2");
    assert_eq!(h.charges_of("acct-2"), 1);
    assert_eq!(h.provider.ledger().len(), 2);
}

#[tokio::test]
async fn concurrent_retries_of_one_key_charge_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    // Real sleeps: the provider takes a while, so the retries overlap.
    let provider = Arc::new(SimulatedProvider::new(
        Simulation {
            latency: Duration::from_millis(30),
            ..Simulation::default()
        },
        Pause::tokio(),
    ));
    let mut config = BillingConfig::default();
    config.provider.timeout = Duration::from_secs(30);
    let instance = Instance::start(&config, dir.path(), &provider, &clock, Pause::tokio()).await;
    let client = HttpClient::new(Duration::from_secs(30));
    let mut calls = Vec::new();
    for _ in 0..16 {
        let (client, url) = (client.clone(), instance.url.clone());
        calls.push(tokio::spawn(async move {
            send(
                &client,
                &url,
                Method::POST,
                "/api/v1/billing/subscribe",
                Some("acct-1"),
                Some("same"),
                Some(json!({"plan": "basic"})),
            )
            .await
        }));
    }
    let mut created = Vec::new();
    for call in calls {
        let response = call.await.unwrap();
        match response.status {
            StatusCode::CREATED => created.push(response.body),
            StatusCode::CONFLICT => {
                assert_eq!(json_of(&response)["code"], "idempotency_key_in_use");
            }
            other => panic!("unexpected {other}: {:?}", response.body),
        }
    }
    assert!(!created.is_empty());
    assert!(created.iter().all(|body| *body == created[0]));
    assert_eq!(charges_of(&provider, "acct-1"), 1);
    let after = send(
        &client,
        &instance.url,
        Method::POST,
        "/api/v1/billing/subscribe",
        Some("acct-1"),
        Some("same"),
        Some(json!({"plan": "basic"})),
    )
    .await;
    assert!(replayed(&after));
    assert_eq!(after.body, created[0]);
    instance.stop().await;
}

#[tokio::test]
async fn two_replicas_on_one_database_charge_a_key_once() {
    let shared = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let provider = Arc::new(SimulatedProvider::new(
        Simulation {
            latency: Duration::from_millis(30),
            ..Simulation::default()
        },
        Pause::tokio(),
    ));
    let mut config = BillingConfig::default();
    config.provider.timeout = Duration::from_secs(30);
    config.database = Some(casebook_netflix::sql::sqlite_url(
        &shared.path().join("billing.db"),
    ));
    // Each replica has its own idempotency store: only SQL is shared.
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Instance::start(&config, dir_a.path(), &provider, &clock, Pause::tokio()).await;
    let b = Instance::start(&config, dir_b.path(), &provider, &clock, Pause::tokio()).await;
    let client = HttpClient::new(Duration::from_secs(30));
    let mut calls = Vec::new();
    for round in 0..8 {
        let url = if round % 2 == 0 { &a.url } else { &b.url };
        let (client, url) = (client.clone(), url.clone());
        calls.push(tokio::spawn(async move {
            send(
                &client,
                &url,
                Method::POST,
                "/api/v1/billing/subscribe",
                Some("acct-1"),
                Some("k"),
                Some(json!({"plan": "standard"})),
            )
            .await
        }));
    }
    let mut payments = Vec::new();
    for call in calls {
        let response = call.await.unwrap();
        match response.status {
            StatusCode::CREATED => payments.push(json_of(&response)["payment"]["id"].clone()),
            StatusCode::CONFLICT => {}
            other => panic!("unexpected {other}: {:?}", response.body),
        }
    }
    assert!(payments.len() >= 2, "both replicas answered: {payments:?}");
    assert!(payments.iter().all(|id| *id == payments[0]));
    assert_eq!(charges_of(&provider, "acct-1"), 1);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_timed_out_charge_is_reconciled_never_doubled() {
    // Every new charge times out; half of them were made anyway.
    let h = harness(Simulation {
        timeout_rate: 1.0,
        seed: 11,
        ..Simulation::default()
    })
    .await;
    let mut reconciled_at_once = 0;
    let mut timed_out = Vec::new();
    for i in 0..20 {
        let account = format!("acct-{i}");
        let response = h.subscribe(&account, "k", "basic").await;
        match response.status {
            StatusCode::CREATED => {
                reconciled_at_once += 1;
                assert_eq!(h.charges_of(&account), 1);
            }
            StatusCode::GATEWAY_TIMEOUT => {
                let body = json_of(&response);
                assert_eq!(body["code"], "payment_provider_timeout");
                assert!(h.charges_of(&account) == 0, "made, yet not reconciled");
                timed_out.push(account);
            }
            other => panic!("unexpected {other}: {:?}", response.body),
        }
    }
    assert!(
        reconciled_at_once > 0 && !timed_out.is_empty(),
        "{timed_out:?}"
    );
    // The provider recovers; the same keys resume the same payments.
    h.provider.set_rates(0.0, 0.0, 0.0);
    for account in &timed_out {
        let response = h.subscribe(account, "k", "basic").await;
        assert_eq!(response.status, StatusCode::CREATED, "{:?}", response.body);
        assert!(!replayed(&response), "a 504 is not recorded");
        let body = json_of(&response);
        assert_eq!(body["payment"]["attempts"], 4, "3 timed out, then 1");
    }
    for i in 0..20 {
        assert_eq!(h.charges_of(&format!("acct-{i}")), 1, "acct-{i}");
    }
}

#[tokio::test]
async fn a_decline_is_final_for_its_key_and_a_new_key_may_try_again() {
    let h = harness(Simulation {
        decline_rate: 1.0,
        ..Simulation::default()
    })
    .await;
    let declined = h.subscribe("acct-1", "k1", "basic").await;
    assert_error(&declined, StatusCode::PAYMENT_REQUIRED, "payment_declined");
    let current = h.get("/api/v1/billing/subscription", "acct-1").await;
    assert_eq!(current["subscription"], Value::Null);
    let entitled = h.get("/internal/v1/entitlement/acct-1", "ops").await;
    assert_eq!(entitled["active"], false);
    let invoices = h.get("/api/v1/billing/invoices", "acct-1").await;
    assert_eq!(invoices["invoices"][0]["status"], "failed");

    h.provider.set_rates(0.0, 0.0, 0.0);
    let again = h.subscribe("acct-1", "k1", "basic").await;
    assert_eq!(again.status, StatusCode::PAYMENT_REQUIRED);
    assert!(replayed(&again));
    assert_eq!(again.body, declined.body);
    assert_eq!(h.charges_of("acct-1"), 0);

    let fresh = h.subscribe("acct-1", "k2", "basic").await;
    assert_eq!(fresh.status, StatusCode::CREATED);
    assert_eq!(h.charges_of("acct-1"), 1);
    let invoices = h.get("/api/v1/billing/invoices", "acct-1").await;
    let statuses: Vec<&str> = invoices["invoices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses.len(), 2);
    assert!(statuses.contains(&"paid") && statuses.contains(&"failed"));
}

#[tokio::test]
async fn an_unavailable_provider_is_a_502_the_same_key_resumes() {
    let h = harness(Simulation {
        failure_rate: 1.0,
        ..Simulation::default()
    })
    .await;
    let down = h.subscribe("acct-1", "k", "premium").await;
    assert_error(
        &down,
        StatusCode::BAD_GATEWAY,
        "payment_provider_unavailable",
    );
    assert_eq!(h.charges_of("acct-1"), 0);
    h.provider.set_rates(0.0, 0.0, 0.0);
    let up = h.subscribe("acct-1", "k", "premium").await;
    assert_eq!(up.status, StatusCode::CREATED);
    assert!(!replayed(&up));
    let body = json_of(&up);
    assert_eq!(body["payment"]["attempts"], 4);
    assert_eq!(h.provider.ledger().len(), 1);
    // One intent for the key: one invoice.
    let invoices = h.get("/api/v1/billing/invoices", "acct-1").await;
    assert_eq!(invoices["invoices"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_restart_keeps_replaying_finished_answers() {
    let h = harness(Simulation::default()).await;
    let paid = h.subscribe("acct-1", "k", "basic").await;
    assert_eq!(paid.status, StatusCode::CREATED);
    h.provider.set_rates(1.0, 0.0, 0.0);
    let declined = h.subscribe("acct-2", "k", "basic").await;
    assert_eq!(declined.status, StatusCode::PAYMENT_REQUIRED);
    h.provider.set_rates(0.0, 0.0, 0.0);

    let Harness {
        _dir,
        clock,
        provider,
        instance,
        client,
    } = h;
    instance.stop().await;
    let instance = Instance::start(
        &BillingConfig::default(),
        _dir.path(),
        &provider,
        &clock,
        Pause::from_sleeper(ManualSleeper::new(clock.clone())),
    )
    .await;
    let h = Harness {
        _dir,
        clock,
        provider,
        instance,
        client,
    };
    let again = h.subscribe("acct-1", "k", "basic").await;
    assert!(replayed(&again));
    assert_eq!(again.body, paid.body);
    let again = h.subscribe("acct-2", "k", "basic").await;
    assert!(replayed(&again));
    assert_eq!(again.body, declined.body);
    assert_eq!(h.provider.ledger().len(), 1);
}

/// The process dies after the provider charged and before the answer was
/// recorded anywhere: the idempotency store's claim is gone with it, the SQL
/// intent is not, and the retry charges under the same provider key.
#[test]
fn a_crash_between_the_charge_and_the_answer_charges_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let provider = Arc::new(SimulatedProvider::new(
        Simulation::default(),
        Pause::tokio(),
    ));
    provider.set_hang_after_charge(true);
    let doomed = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let client_side = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let url = doomed.block_on(async {
        // The caller's timeout never fires: the request hangs after the charge.
        let instance = Instance::start(
            &BillingConfig::default(),
            dir.path(),
            &provider,
            &clock,
            Pause::from_sleeper(NeverSleeper),
        )
        .await;
        instance.url.clone()
    });
    let client = HttpClient::new(Duration::from_secs(60));
    let first = client_side.spawn({
        let (client, url) = (client.clone(), url.clone());
        async move {
            let mut headers = HeaderMap::new();
            headers.insert("x-user-id", HeaderValue::from_static("acct-1"));
            headers.insert("idempotency-key", HeaderValue::from_static("k"));
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            client
                .send(
                    Method::POST,
                    &format!("{url}/api/v1/billing/subscribe"),
                    headers,
                    Bytes::from_static(br#"{"plan":"standard"}"#),
                )
                .await
        }
    });
    client_side.block_on(provider.wait_for_charges(1));
    // The crash: every task of the service's process is gone, mid-request.
    drop(doomed);
    client_side.block_on(async {
        assert!(first.await.unwrap().is_err(), "the client saw no answer");
        provider.set_hang_after_charge(false);
        let instance = Instance::start(
            &BillingConfig::default(),
            dir.path(),
            &provider,
            &clock,
            Pause::from_sleeper(ManualSleeper::new(clock.clone())),
        )
        .await;
        let retry = send(
            &client,
            &instance.url,
            Method::POST,
            "/api/v1/billing/subscribe",
            Some("acct-1"),
            Some("k"),
            Some(json!({"plan": "standard"})),
        )
        .await;
        assert_eq!(retry.status, StatusCode::CREATED, "{:?}", retry.body);
        let body = json_of(&retry);
        assert_eq!(body["payment"]["attempts"], 2);
        assert_eq!(body["subscription"]["status"], "active");
        let ledger = provider.ledger();
        assert_eq!(ledger.len(), 1, "{ledger:?}");
        assert_eq!(body["payment"]["charge_id"], ledger[0].charge_id);
        instance.stop().await;
    });
}

#[tokio::test]
async fn plan_changes_cancels_and_periods_follow_the_clock() {
    let h = harness(Simulation::default()).await;
    assert_eq!(
        h.subscribe("acct-1", "k1", "basic").await.status,
        StatusCode::CREATED
    );
    let twice = h.subscribe("acct-1", "k2", "basic").await;
    assert_error(&twice, StatusCode::CONFLICT, "already_subscribed");
    h.clock.advance(Duration::from_secs(86400));
    let start = h.clock.wall_millis() as i64;
    let upgraded = h.subscribe("acct-1", "k3", "premium").await;
    assert_eq!(upgraded.status, StatusCode::CREATED);
    let body = json_of(&upgraded);
    assert_eq!(body["subscription"]["plan"], "premium");
    assert_eq!(body["subscription"]["period_start_ms"], start);
    assert_eq!(h.charges_of("acct-1"), 2);

    let canceled = h.cancel("acct-1").await;
    assert_eq!(canceled.status, StatusCode::OK);
    let canceled_body = json_of(&canceled);
    assert_eq!(canceled_body["subscription"]["status"], "canceled");
    h.clock.advance(Duration::from_secs(1));
    let again = h.cancel("acct-1").await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(
        json_of(&again),
        canceled_body,
        "canceling twice changes nothing"
    );
    // Paid up: entitled until the period ends, then not.
    let entitled = h.get("/internal/v1/entitlement/acct-1", "ops").await;
    assert_eq!(entitled["active"], true);
    h.clock.advance(Duration::from_secs(30 * 86400));
    let entitled = h.get("/internal/v1/entitlement/acct-1", "ops").await;
    assert_eq!(
        entitled,
        json!({"account": "acct-1", "active": false, "plan": null})
    );
    assert_error(
        &h.cancel("acct-2").await,
        StatusCode::NOT_FOUND,
        "no_subscription",
    );

    // An active subscription whose period ended unrenewed is past due, and
    // its plan can be bought again.
    assert_eq!(
        h.subscribe("acct-3", "k1", "standard").await.status,
        StatusCode::CREATED
    );
    h.clock.advance(Duration::from_secs(31 * 86400));
    let current = h.get("/api/v1/billing/subscription", "acct-3").await;
    assert_eq!(current["subscription"]["status"], "past_due");
    assert_eq!(
        h.subscribe("acct-3", "k2", "standard").await.status,
        StatusCode::CREATED
    );
    let current = h.get("/api/v1/billing/subscription", "acct-3").await;
    assert_eq!(current["subscription"]["status"], "active");
}

#[tokio::test]
async fn bad_input_is_named_and_charges_nothing() {
    let h = harness(Simulation::default()).await;
    let url = &h.instance.url;
    let path = "/api/v1/billing/subscribe";
    let body = Some(json!({"plan": "basic"}));
    let post = |account: Option<&'static str>, key: Option<&'static str>, body: Option<Value>| {
        send(&h.client, url, Method::POST, path, account, key, body)
    };

    let no_key = post(Some("a"), None, body.clone()).await;
    let error = assert_error(&no_key, StatusCode::BAD_REQUEST, "idempotency_key_required");
    assert_eq!(error["field"], "Idempotency-Key");
    let long_key: &'static str = "k".repeat(300).leak();
    let bad_key = post(Some("a"), Some(long_key), body.clone()).await;
    assert_error(&bad_key, StatusCode::BAD_REQUEST, "idempotency_key_invalid");
    let anonymous = post(None, Some("k"), body.clone()).await;
    assert_error(&anonymous, StatusCode::UNAUTHORIZED, "unauthenticated");

    let unknown = post(Some("a"), Some("k"), Some(json!({"plan": "platinum"}))).await;
    let error = assert_error(&unknown, StatusCode::BAD_REQUEST, "unknown_plan");
    assert_eq!(error["field"], "plan");
    assert!(error["error"].as_str().unwrap().contains("premium"));
    let missing = post(Some("a"), Some("k"), Some(json!({}))).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(json_of(&missing)["field"], "plan");
    let wrong_type = post(Some("a"), Some("k"), Some(json!({"plan": 3}))).await;
    assert_eq!(json_of(&wrong_type)["field"], "plan");
    let extra = post(
        Some("a"),
        Some("k"),
        Some(json!({"plan": "basic", "coupon": "x"})),
    )
    .await;
    assert_eq!(extra.status, StatusCode::BAD_REQUEST);
    let mut headers = HeaderMap::new();
    headers.insert("x-user-id", HeaderValue::from_static("a"));
    headers.insert("idempotency-key", HeaderValue::from_static("k"));
    let not_json = h
        .client
        .send(
            Method::POST,
            &format!("{url}{path}"),
            headers,
            Bytes::from_static(b"plan=basic"),
        )
        .await
        .unwrap();
    assert_eq!(not_json.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let limit = send(
        &h.client,
        url,
        Method::GET,
        "/api/v1/billing/invoices?limit=0",
        Some("a"),
        None,
        None,
    )
    .await;
    assert_eq!(json_of(&limit)["field"], "limit");
    assert_eq!(limit.status, StatusCode::BAD_REQUEST);
    let bad_account = send(
        &h.client,
        url,
        Method::GET,
        "/api/v1/billing/subscription",
        Some(&"x".repeat(200)),
        None,
        None,
    )
    .await;
    assert_eq!(json_of(&bad_account)["field"], "x-user-id");
    let wrong_method = send(&h.client, url, Method::GET, path, Some("a"), None, None).await;
    assert_error(
        &wrong_method,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    assert!(h.provider.ledger().is_empty());

    // None of those used the key up: fixed, it subscribes.
    let fixed = post(Some("a"), Some("k"), body).await;
    assert_eq!(fixed.status, StatusCode::CREATED, "{:?}", fixed.body);
    assert!(!replayed(&fixed));
    assert_eq!(h.provider.ledger().len(), 1);
}
