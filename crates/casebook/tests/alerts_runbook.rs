//! An alert's runbook on a running platform: `casebook up --case amazon`, a rule
//! added through `POST /api/alerts/rules` on the live-instance gauge the alert
//! engine publishes (`platform_live_instances{service="amazon"}` below 1 for 2 s,
//! restart the service), then the `amazon` instance killed through the admin API:
//! the gauge reaches the store through the metrics pusher, the rule fires, the
//! restart runbook brings the instance back under its own id, and the alert
//! resolves — each step seen on `GET /api/alerts` and `GET /api/instances`, and the
//! run and the firing alert in the store as `alert_actions_total` and `alerts_firing`.

mod support;

use std::time::Duration;

use casebook_kit::http_client::HttpClient;
use casebook_testkit::eventually;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use support::{Up, admin_call};

/// Starting every amazon service on two busy cores can take a while; the
/// deadline only bounds a test that is already failing.
const DEADLINE: Duration = Duration::from_secs(90);

async fn get(url: &str) -> Value {
    HttpClient::new(Duration::from_secs(60))
        .get_json(url)
        .await
        .unwrap()
}

fn amazon(instances: &Value) -> Option<Value> {
    instances
        .as_array()?
        .iter()
        .find(|i| i["service"] == "amazon")
        .cloned()
}

#[tokio::test]
async fn a_killed_instance_fires_the_restart_runbook_and_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::builder(dir.path())
        .up_arg("--case")
        .up_arg("amazon")
        .env("CASEBOOK_ALERTS__INTERVAL", "500ms")
        .start();
    let instances = format!("{}/api/instances", up.url);
    let before = amazon(&get(&instances).await).expect("an amazon instance");
    let id = before["instance_id"].as_str().unwrap().to_owned();

    let rule = json!({
        "name": "amazon-down",
        "metric": "platform_live_instances",
        "filter": "service:amazon",
        "window": "10s",
        "op": "below",
        "threshold": 1.0,
        "for": "2s",
        "annotations": {"summary": "no live amazon API instance"},
        "actions": [{"kind": "restart", "service": "amazon", "retries": 3}]
    });
    let created = admin_call(
        &up.token,
        Method::POST,
        &format!("{}/api/alerts/rules", up.url),
        Some(rule),
    )
    .await;
    assert_eq!(
        created.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    // Evaluated on data before the kill: the gauge reads 1, nothing fires.
    let alerts = format!("{}/api/alerts", up.url);
    eventually("the rule read a value", DEADLINE, || async {
        get(&alerts).await["rules"][0]["alerts"][0]["value"] == json!(1.0)
    })
    .await;

    let killed = admin_call(
        &up.token,
        Method::POST,
        &format!("{}/api/instances/{id}/kill", up.url),
        None,
    )
    .await;
    assert_eq!(killed.status, StatusCode::ACCEPTED);

    // Fired, restarted by the runbook, recorded.
    eventually("the restart recorded", DEADLINE, || async {
        get(&alerts).await["log"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "action" && e["outcome"] == "ok")
    })
    .await;
    let view = get(&alerts).await;
    let log = view["log"].as_array().unwrap();
    let run = log.iter().find(|e| e["type"] == "action").unwrap();
    assert_eq!(run["rule"], "amazon-down");
    assert_eq!(run["action"], "restart");
    assert_eq!(run["event"], "firing");
    assert_eq!(run["target"], "service amazon");
    let detail = run["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("restarted {id} (killed before)")),
        "{detail}"
    );
    assert!(
        log.iter()
            .any(|e| e["type"] == "transition" && e["event"] == "firing"),
        "{log:?}"
    );
    let after = amazon(&get(&instances).await).unwrap();
    assert_eq!(after["instance_id"], id.as_str(), "under its own id");
    assert_eq!(after["state"], "running");
    assert_eq!(after["address"], before["address"], "where it was");

    // The gauge reads 1 again: the alert resolves.
    eventually("the alert resolved", DEADLINE, || async {
        get(&alerts).await["log"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "transition" && e["event"] == "resolved")
    })
    .await;
    // The run and the firing alert reached the store as metrics, like any other.
    for (name, filter) in [
        (
            "alert_actions_total",
            "rule:amazon-down,action:restart,outcome:ok",
        ),
        ("alerts_firing", "rule:amazon-down"),
    ] {
        let url = format!(
            "{}/api/metrics/query?name={name}&filter={filter}&fn=max&from=-5m",
            up.url
        );
        eventually(&format!("{name} in the store"), DEADLINE, || async {
            get(&url).await["series"][0]["values"]
                .as_array()
                .is_some_and(|values| values.iter().any(|v| v.as_f64().is_some_and(|v| v >= 1.0)))
        })
        .await;
    }
    // The API answers on the restarted instance.
    let address = after["address"].as_str().unwrap();
    let health = HttpClient::new(Duration::from_secs(30))
        .send(
            Method::GET,
            &format!("http://{address}/health"),
            http::HeaderMap::new(),
            Vec::new().into(),
        )
        .await
        .unwrap();
    assert_eq!(health.status, StatusCode::OK);
}
