//! Canary deploys on a running platform: a bad build is judged and rolled back, a
//! good one promoted by a rolling update — driven by `casebook deploy`, with traffic
//! from a caller that resolves the service through discovery as every instance does
//! (so the canary's traffic share is the resolver's doing, and measured here).

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use casebook_kit::clock::SystemClock;
use casebook_kit::discovery::DiscoveryClient;
use casebook_kit::http_client::HttpClient;
use casebook_kit::resolve::Resolver;
use casebook_kit::topology::Placement;
use std::sync::Mutex;
use support::{Up, casebook};

const SERVICE: &str = "amazon";

/// Calls the service through a discovery-backed resolver until stopped, counting
/// the answers per instance address and status class.
fn drive(
    control_url: &str,
    token: &str,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<BTreeMap<String, (u32, u32)>>>,
) -> tokio::task::JoinHandle<()> {
    let discovery = DiscoveryClient::new(control_url).with_token(Some(token));
    let resolver = Resolver::detached(SystemClock::shared()).with_ttl(Duration::from_millis(250));
    resolver.attach(Arc::new(discovery));
    let near = Placement {
        region: "us-east".into(),
        zone: "us-east-a".into(),
    };
    tokio::spawn(async move {
        let client = HttpClient::new(Duration::from_secs(5));
        let mut ticks = tokio::time::interval(Duration::from_millis(20));
        while !stop.load(Ordering::Relaxed) {
            ticks.tick().await;
            let Ok(address) = resolver.resolve(SERVICE, &near).await else {
                continue;
            };
            let url = format!("http://{address}/v1/products?limit=5");
            let ok = match client.get_json::<serde_json::Value>(&url).await {
                Ok(_) => true,
                Err(e) => {
                    if e.status().is_none() {
                        // The instance went away (a rollout): look again.
                        resolver.forget(SERVICE);
                    }
                    false
                }
            };
            let mut seen = seen.lock().unwrap();
            let entry = seen.entry(address.to_string()).or_default();
            if ok {
                entry.0 += 1;
            } else {
                entry.1 += 1;
            }
        }
    })
}

async fn instances(up: &Up) -> Vec<serde_json::Value> {
    let all: serde_json::Value = HttpClient::new(Duration::from_secs(60))
        .get_json(&format!("{}/api/instances", up.url))
        .await
        .unwrap();
    all.as_array()
        .unwrap()
        .iter()
        .filter(|i| i["service"] == SERVICE && matches!(i["state"].as_str(), Some("running")))
        .cloned()
        .collect()
}

/// `casebook deploy …` against the running platform; its exit code and stdout.
fn deploy(dir: &std::path::Path, up: &Up, args: &[&str]) -> (i32, String) {
    let control = up.url.trim_start_matches("http://");
    let output = casebook(dir)
        .args(["deploy", "--control", control])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("casebook deploy {args:?}:\n{stdout}{stderr}");
    (output.status.code().unwrap_or(-1), stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_build_is_rolled_back_and_a_good_one_promoted() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::builder(dir.path())
        .up_arg("--case")
        .up_arg("amazon")
        // A short analysis: 1 s warm-up, two intervals of 4 s.
        .env("CASEBOOK_DEPLOY__WARMUP", "1s")
        .env("CASEBOOK_DEPLOY__INTERVAL", "4s")
        .env("CASEBOOK_DEPLOY__INTERVALS", "2")
        .env("CASEBOOK_DEPLOY__TICK", "250ms")
        .start();
    // The service runs one instance; wait until discovery and the admin API know it.
    let mut before = Vec::new();
    for _ in 0..240 {
        before = instances(&up).await;
        if !before.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(before.len(), 1, "one {SERVICE} instance to start with");
    let original = before[0]["version"].as_str().unwrap().to_owned();

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(BTreeMap::new()));
    // A few callers at once, so a slow instance does not slow every call.
    let traffic: Vec<_> = (0..4)
        .map(|_| drive(&up.url, &up.token, stop.clone(), seen.clone()))
        .collect();

    // A bad build: 150 ms more per response and 5 % errors → High → rolled back.
    let (code, out) = deploy(
        dir.path(),
        &up,
        &[
            SERVICE,
            "--version",
            "9.9.0-bad",
            "--bad-build",
            "latency=150ms,errors=5%",
            "--share",
            "25%",
        ],
    );
    assert_eq!(code, 1, "a rolled-back deploy exits 1");
    assert!(out.contains("rolled_back"), "{out}");
    let bad: serde_json::Value = HttpClient::new(Duration::from_secs(10))
        .get_json(&format!("{}/api/deploys/{SERVICE}-1", up.url))
        .await
        .unwrap();
    assert_eq!(bad["outcome"], "rolled_back");
    let metrics = &bad["judgements"][0]["judgement"]["metrics"];
    let class = |name: &str| {
        metrics
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .map(|m| m["classification"].as_str().unwrap().to_owned())
            .unwrap()
    };
    assert_eq!(class("latency_mean"), "High", "{metrics}");
    // Below the marginal threshold at the first interval. (At this traffic a 5 %
    // error rate leaves most one-second steps without an error, so whether the
    // critical error metric is High too is up to the draw of the steps.)
    assert!(
        bad["judgements"][0]["score"].as_f64().unwrap() < 75.0,
        "{bad}"
    );
    assert_eq!(bad["judgements"].as_array().unwrap().len(), 1);
    // The canary took about its share of the calls while it ran.
    eprintln!(
        "calls (ok, failed) per address during the bad canary: {:?}",
        seen.lock().unwrap()
    );
    let after_bad = instances(&up).await;
    assert_eq!(after_bad.len(), 1);
    assert_eq!(after_bad[0]["version"], original.as_str());

    // A good build → promoted by a rolling update.
    seen.lock().unwrap().clear();
    let (code, out) = deploy(
        dir.path(),
        &up,
        &[SERVICE, "--version", "9.9.1", "--share", "25%"],
    );
    assert_eq!(code, 0, "a promoted deploy exits 0: {out}");
    assert!(out.contains("promoted"), "{out}");
    let good: serde_json::Value = HttpClient::new(Duration::from_secs(10))
        .get_json(&format!("{}/api/deploys/{SERVICE}-2", up.url))
        .await
        .unwrap();
    assert_eq!(good["outcome"], "promoted");
    assert_eq!(good["judgements"].as_array().unwrap().len(), 2);
    let after = instances(&up).await;
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0]["version"], "9.9.1");
    assert_eq!(after[0]["zone"], before[0]["zone"]);
    let (calls, errors): (u32, u32) = seen
        .lock()
        .unwrap()
        .values()
        .fold((0, 0), |(c, e), (ok, err)| (c + ok + err, e + err));
    eprintln!("good canary: {calls} calls, {errors} failed (rollout included)");
    assert!(calls > 0);

    // The listing shows both.
    let (code, out) = deploy(dir.path(), &up, &["--list"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("rolled_back") && out.contains("promoted"),
        "{out}"
    );
    stop.store(true, Ordering::Relaxed);
    for caller in traffic {
        caller.await.unwrap();
    }
}
