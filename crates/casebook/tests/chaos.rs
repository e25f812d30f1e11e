//! `casebook chaos` against a real platform: Gorilla kills a zone's instances (the
//! control plane spared) and they leave discovery; Kong marks a region out and back;
//! an experiment whose hypothesis breaks while the fault holds is aborted and
//! rolled back; under Kong the region's uber replica refuses naming another
//! region and its chat node sends clients elsewhere. Discovery runs with short leases so a killed instance's
//! registration expires within seconds.

mod support;

use std::time::Duration;

use casebook_kit::http_client::HttpClient;
use serde_json::{Value, json};
use support::{Up, admin_call, casebook};

fn up(dir: &std::path::Path) -> Up {
    Up::builder(dir)
        .up_arg("--case")
        .up_arg("uber")
        .env("CASEBOOK_DISCOVERY__RENEW_INTERVAL", "1s")
        .env("CASEBOOK_DISCOVERY__LEASE_DURATION", "3s")
        .env("CASEBOOK_DISCOVERY__EVICTION_INTERVAL", "1s")
        .env("CASEBOOK_DISCOVERY__SELF_PRESERVATION", "false")
        .start()
}

async fn get(url: &str) -> Value {
    HttpClient::new(Duration::from_secs(60))
        .get_json(url)
        .await
        .unwrap()
}

/// `casebook chaos ARGS --url URL` with the platform's data dir (so its token).
fn chaos(dir: &std::path::Path, url: &str, args: &[&str]) -> std::process::Output {
    casebook(dir)
        .arg("chaos")
        .args(args)
        .args(["--url", url])
        .output()
        .unwrap()
}

/// `casebook chaos ARGS --detach`: the experiment started, its id.
fn detached(dir: &std::path::Path, url: &str, args: &[&str]) -> String {
    let output = chaos(dir, url, args);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

async fn wait_done(up: &Up, id: &str) -> Value {
    for _ in 0..600 {
        let record = get(&format!("{}/api/chaos/experiments/{id}", up.url)).await;
        if record["status"] != "running" {
            return record;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("experiment {id} did not finish");
}

/// The instance ids discovery lists for `service`, whatever their status.
async fn registered(up: &Up, service: &str) -> Vec<String> {
    let apps = get(&format!(
        "{}/api/discovery/apps/{service}?all_statuses=true",
        up.url
    ))
    .await;
    apps["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["instance"]["instance_id"].as_str().unwrap().to_owned())
        .collect()
}

/// The regions of `service`'s instances discovery answers callers with (UP only).
async fn up_regions(up: &Up, service: &str) -> Vec<String> {
    let apps = get(&format!("{}/api/discovery/apps/{service}", up.url)).await;
    let mut regions: Vec<String> = apps["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["instance"]["region"].as_str().unwrap().to_owned())
        .collect();
    regions.sort();
    regions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gorilla_kong_and_an_aborted_experiment_on_a_running_platform() {
    let dir = tempfile::tempdir().unwrap();
    let up = up(dir.path());
    let url = up.url.clone();
    // Every uber replica registered first (one per region).
    for _ in 0..600 {
        if up_regions(&up, "uber").await.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        up_regions(&up, "uber").await,
        ["ap-south", "eu-west", "us-east"]
    );

    // Refusals: the control plane, unknown names.
    let post = |body: Value| {
        let (token, url) = (up.token.clone(), format!("{url}/api/chaos/experiments"));
        async move { admin_call(&token, http::Method::POST, &url, Some(body)).await }
    };
    let refused = post(json!({"fault": {"kind": "monkey", "service": "control"}})).await;
    assert_eq!(refused.status, 400);
    let error: Value = serde_json::from_slice(&refused.body).unwrap();
    assert_eq!(error["field"], "fault.service");
    let refused = post(json!({"fault": {"kind": "gorilla", "zone": "us-east-z"}})).await;
    assert_eq!(refused.status, 404);
    assert!(String::from_utf8_lossy(&refused.body).contains("us-east-z"));
    let refused = post(json!({"fault": {"kind": "kong", "region": "mars"}})).await;
    assert_eq!(refused.status, 404);
    // Without the token nothing starts.
    let anonymous = HttpClient::default()
        .send(
            http::Method::POST,
            &format!("{url}/api/chaos/kong/eu-west"),
            http::HeaderMap::new(),
            Vec::new().into(),
        )
        .await
        .unwrap();
    assert_eq!(anonymous.status, 401);

    // Gorilla on the zone the control plane and the first region's replicas share.
    let instances = get(&format!("{url}/api/instances")).await;
    let in_zone: Vec<(String, String)> = instances
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| {
            i["zone"] == "us-east-a" && i["service"] != "control" && i["state"] == "running"
        })
        .map(|i| {
            let id = i["instance_id"].as_str().unwrap().to_owned();
            (id, i["service"].as_str().unwrap().to_owned())
        })
        .collect();
    assert!(!in_zone.is_empty(), "{instances}");
    let output = chaos(
        dir.path(),
        &url,
        &[
            "gorilla",
            "us-east-a",
            "--duration",
            "12s",
            "--probe-interval",
            "500ms",
            "--settle",
            "0s",
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("hypothesis: held"), "{stdout}");
    let list = get(&format!("{url}/api/chaos/experiments")).await;
    let gorilla = &list[0];
    assert_eq!(gorilla["kind"], "gorilla");
    let mut killed: Vec<String> =
        serde_json::from_value(gorilla["fault"]["killed"].clone()).unwrap();
    killed.sort();
    let mut expected: Vec<String> = in_zone.iter().map(|(id, _)| id.clone()).collect();
    expected.sort();
    assert_eq!(killed, expected);
    assert!(
        gorilla["fault"]["gone_from_discovery_ms"].is_u64(),
        "the killed instances left discovery while the fault held: {gorilla:#}"
    );
    for (id, service) in &in_zone {
        assert!(
            !registered(&up, service).await.contains(id),
            "{id} still registered"
        );
    }
    // The control plane lives, and the rollback restarted what nothing replaced.
    assert!(registered(&up, "control").await.len() == 1);
    let restarted = gorilla["fault"]["restarted"].as_array().unwrap();
    assert_eq!(restarted.len(), killed.len(), "{gorilla:#}");
    for _ in 0..600 {
        if up_regions(&up, "uber").await.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        up_regions(&up, "uber").await,
        ["ap-south", "eu-west", "us-east"]
    );

    // Kong: eu-west out of discovery until aborted, then back.
    let id = detached(
        dir.path(),
        &url,
        &["kong", "eu-west", "--duration", "1h", "--detach"],
    );
    for _ in 0..600 {
        if !up_regions(&up, "uber")
            .await
            .contains(&"eu-west".to_owned())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(up_regions(&up, "uber").await, ["ap-south", "us-east"]);
    let overrides = get(&format!("{url}/api/discovery/regions")).await;
    assert_eq!(overrides[0]["region"], "eu-west");
    assert_eq!(
        up_regions(&up, "control").await.len(),
        1,
        "the control plane is exempt"
    );
    let output = chaos(dir.path(), &url, &["abort", &id]);
    assert_eq!(output.status.code(), Some(0));
    let kong = wait_done(&up, &id).await;
    assert_eq!(kong["status"], "aborted");
    assert_eq!(kong["abort_reason"], "aborted by an operator");
    assert_eq!(
        up_regions(&up, "uber").await,
        ["ap-south", "eu-west", "us-east"]
    );
    assert_eq!(
        get(&format!("{url}/api/discovery/regions")).await,
        json!([])
    );

    // A hypothesis that breaks once the fault holds: ap-south's evacuations must
    // stay 0 (no data before counts as holding); Kong's mark counts one, through
    // the metrics pusher into the store, beyond the abort limit: the experiment
    // aborts and rolls back.
    let spec = json!({
        "title": "kong trips its own probe",
        "fault": {"kind": "kong", "region": "ap-south"},
        "probes": [{"kind": "metric", "metric": "chaos_region_evacuations_total",
                    "filters": {"region": ["ap-south"]},
                    "max": 0, "abort_max": 0.5, "window": "30s", "allow_no_data": true}],
        "duration": "5m", "probe_interval": "500ms", "settle": "0s",
    });
    let file = dir.path().join("spec.json");
    std::fs::write(&file, spec.to_string()).unwrap();
    let output = chaos(dir.path(), &url, &["run", file.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("did not hold"), "{stdout}");
    assert!(stdout.contains("abort limit"), "{stdout}");
    let last = &get(&format!("{url}/api/chaos/experiments")).await[0];
    assert_eq!(last["status"], "aborted");
    assert!(
        last["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["phase"] == "rollback")
    );
    assert_eq!(
        get(&format!("{url}/api/discovery/regions")).await,
        json!([])
    );
    assert_eq!(
        up_regions(&up, "uber").await,
        ["ap-south", "eu-west", "us-east"]
    );
}

/// Discovery's answer for `service`: (address, `proxied_by`) of each UP instance.
async fn answered(up: &Up, service: &str) -> Vec<(String, Option<String>)> {
    let apps = get(&format!("{}/api/discovery/apps/{service}", up.url)).await;
    apps["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let address = i["instance"]["address"].as_str().unwrap().to_owned();
            let by = i["metadata"]["proxied_by"].as_str().map(str::to_owned);
            (address, by)
        })
        .collect()
}

/// Latency Monkey through the control plane's own fault proxy: while the
/// experiment holds, discovery answers callers of `uber-pricing` with a proxy
/// that delays every answer; the abort takes the proxy away again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_monkey_fronts_a_service_with_the_fault_proxy_and_takes_it_away() {
    let dir = tempfile::tempdir().unwrap();
    // The fault proxy's API on a port known here, to list its proxies.
    let toxiproxy_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let up = Up::builder(dir.path())
        .up_arg("--case")
        .up_arg("uber")
        .env(
            "CASEBOOK_CONTROL__TOXIPROXY_PORT",
            &toxiproxy_port.to_string(),
        )
        .start();
    let url = up.url.clone();
    let mut direct = Vec::new();
    for _ in 0..600 {
        direct = answered(&up, "uber-pricing").await;
        if !direct.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!direct.is_empty(), "uber-pricing never registered");
    assert!(direct.iter().all(|(_, by)| by.is_none()), "{direct:?}");

    let id = detached(
        dir.path(),
        &url,
        &[
            "latency",
            "uber-pricing",
            "--latency-ms",
            "400",
            "--duration",
            "1h",
            "--detach",
        ],
    );
    let mut proxied = Vec::new();
    for _ in 0..600 {
        proxied = answered(&up, "uber-pricing").await;
        if proxied.iter().all(|(_, by)| by.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(proxied.len(), direct.len(), "{proxied:?}");
    for ((address, by), (original, _)) in proxied.iter().zip(&direct) {
        assert_ne!(address, original, "the proxy stands in front");
        assert!(
            by.as_deref()
                .unwrap()
                .starts_with("toxiproxy:latency-monkey-"),
            "{by:?}"
        );
        // Through the proxy the answer still comes, no sooner than the latency.
        let started = std::time::Instant::now();
        let health = HttpClient::new(Duration::from_secs(30))
            .get_json::<Value>(&format!("http://{address}/health"))
            .await;
        assert!(health.is_ok(), "{health:?}");
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "answered in {:?}",
            started.elapsed()
        );
    }
    let proxies = get(&format!("http://127.0.0.1:{}/proxies", toxiproxy_port)).await;
    assert_eq!(
        proxies.as_object().unwrap().len(),
        direct.len(),
        "{proxies}"
    );

    let output = chaos(dir.path(), &url, &["abort", &id]);
    assert_eq!(output.status.code(), Some(0));
    let record = wait_done(&up, &id).await;
    assert_eq!(record["status"], "aborted", "{record:#}");
    assert_eq!(record["fault"]["removed"], true, "{record:#}");
    assert_eq!(answered(&up, "uber-pricing").await, direct);
    let proxies = get(&format!("http://127.0.0.1:{}/proxies", toxiproxy_port)).await;
    assert_eq!(proxies, json!({}));
}

/// What a chat node answers a fresh stream header with: everything it sends
/// until it offers features or closes.
async fn xmpp_hello(address: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut xmpp = tokio::net::TcpStream::connect(address).await.unwrap();
    xmpp.write_all(
        b"<stream:stream to='localhost' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    loop {
        let text = String::from_utf8_lossy(&answer);
        if text.contains("</stream:features>") || text.contains("</stream:stream>") {
            return text.into_owned();
        }
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(20), xmpp.read(&mut buf))
            .await
            .expect("the chat node answers")
            .unwrap();
        if n == 0 {
            return String::from_utf8_lossy(&answer).into_owned();
        }
        answer.extend_from_slice(&buf[..n]);
    }
}

/// Status and JSON body of a GET.
async fn status_of(url: &str) -> (u16, Value) {
    use casebook_kit::http_client::HttpError;
    match HttpClient::new(Duration::from_secs(60))
        .call::<()>(http::Method::GET, url, None)
        .await
    {
        Ok(response) => (
            response.status.as_u16(),
            serde_json::from_slice(&response.body).unwrap_or(Value::Null),
        ),
        Err(HttpError::Status { status, body, .. }) => (
            status.as_u16(),
            serde_json::from_str(&body).unwrap_or(Value::Null),
        ),
        Err(e) => panic!("GET {url}: {e}"),
    }
}

/// Kong on eu-west: the region's uber replica refuses, naming a replica in
/// another region, and its chat node sends a new client elsewhere with
/// `<see-other-host/>`; after the abort both serve again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kong_makes_the_regions_outward_services_send_clients_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::builder(dir.path())
        .up_arg("--case")
        .up_arg("uber")
        .up_arg("--case")
        .up_arg("whatsapp")
        .start();
    let url = up.url.clone();
    let uber_eu = up.address_in("uber", "eu-west").await;
    let chat_eu = up.address_in("chat", "eu-west").await;
    let chat_elsewhere = [
        up.address_in("chat", "us-east").await,
        up.address_in("chat", "ap-south").await,
    ];
    let regions_url = format!("http://{uber_eu}/v1/regions");
    assert_eq!(status_of(&regions_url).await.0, 200);
    assert!(xmpp_hello(&chat_eu).await.contains("</stream:features>"));

    let id = detached(
        dir.path(),
        &url,
        &["kong", "eu-west", "--duration", "1h", "--detach"],
    );
    // The override is set at injection, right after the before-probes.
    let mut refusal = (0, Value::Null);
    for _ in 0..600 {
        refusal = status_of(&regions_url).await;
        if refusal.0 == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if refusal.0 != 503 {
        let record = get(&format!("{url}/api/chaos/experiments/{id}")).await;
        panic!("no regional refusal: {} under {record}", refusal.1);
    }
    assert_eq!(refusal.1["code"], "region_evacuated");
    assert_eq!(refusal.1["region"], "eu-west");
    let serving = refusal.1["serving"]["region"].as_str().unwrap_or_default();
    assert!(["us-east", "ap-south"].contains(&serving), "{}", refusal.1);
    assert_eq!(status_of(&format!("http://{uber_eu}/health")).await.0, 200);

    let hello = xmpp_hello(&chat_eu).await;
    let named = hello
        .split_once("<see-other-host")
        .and_then(|(_, rest)| rest.split_once('>'))
        .and_then(|(_, rest)| rest.split_once('<'))
        .map(|(address, _)| address.to_owned())
        .unwrap_or_else(|| panic!("see-other-host expected: {hello}"));
    assert!(
        chat_elsewhere.contains(&named),
        "{named} in {chat_elsewhere:?}"
    );

    let output = chaos(dir.path(), &url, &["abort", &id]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(wait_done(&up, &id).await["status"], "aborted");
    assert_eq!(status_of(&regions_url).await.0, 200);
    assert!(xmpp_hello(&chat_eu).await.contains("</stream:features>"));
}
