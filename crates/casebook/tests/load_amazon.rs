//! `casebook load amazon --prime-day` against a real `casebook up --case amazon`:
//! the report comes back (three phases, the surge at 10x, a per-second timeline),
//! and the pre-scale it asks for shows on `GET /api/autoscaler` as a `schedule`
//! scale-out of `amazon-cart` — placed within the cart's declared spread (the
//! first region's zones), not in the least-loaded zone of any region.

mod support;

use std::time::Duration;

use casebook_testkit::eventually;
use serde_json::Value;
use support::{Up, admin_call, casebook};

#[tokio::test]
async fn a_prime_day_run_reports_and_its_pre_scale_shows_on_the_autoscaler() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::builder(dir.path())
        .up_arg("--case")
        .up_arg("amazon")
        // Ticks often, so the scheduled floor is acted on within the short run.
        .env("CASEBOOK_AUTOSCALER__INTERVAL", "200ms")
        .start();
    let api = up.address_of("amazon").await;
    let control = up.url.clone();
    let data_dir = dir.path().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        casebook(&data_dir)
            .args(["load", "amazon", "--prime-day", "--json", "--no-progress"])
            .args(["--target", &api, "--control", &control])
            .args([
                "--rate",
                "20",
                "--duration",
                "2s",
                "--users",
                "50",
                "--skus",
                "50",
            ])
            .args([
                "--stock",
                "1000",
                "--prescale-instances",
                "4",
                "--prescale-lead",
                "5s",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let phases: Vec<(&str, f64)> = report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["multiplier"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(phases, [("before", 1.0), ("surge", 10.0), ("after", 1.0)]);
    let surge = &report["phases"][1];
    assert!(surge["critical"]["sent"].as_u64().unwrap() > 0, "{surge}");
    assert!(
        report["prescale"]
            .as_str()
            .unwrap()
            .starts_with("amazon-cart floor 4"),
        "{}",
        report["prescale"]
    );
    // The timeline covers the run, second by second, the surge among them.
    let timeline = report["timeline"].as_array().unwrap();
    assert!(timeline.len() >= 8, "{} seconds", timeline.len());
    assert!(timeline.iter().any(|s| s["phase"] == "surge"));
    let due: u64 = timeline
        .iter()
        .flat_map(|s| ["critical", "normal", "low"].map(|p| s[p]["due"].as_u64().unwrap()))
        .sum();
    let sent: u64 = report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["load"]["classes"].as_array().unwrap().clone())
        .map(|c| c["sent"].as_u64().unwrap() + c["dropped"].as_u64().unwrap())
        .sum();
    assert_eq!(due, sent, "every request is in the timeline once");

    // The schedule's scale-out, on the autoscaler's API.
    let view_url = format!("{}/api/autoscaler", up.url);
    let scheduled = |view: &Value| {
        view["decisions"].as_array().is_some_and(|d| {
            d.iter().any(|d| {
                d["service"] == "amazon-cart"
                    && d["reason"] == "schedule"
                    && d["direction"] == "out"
            })
        })
    };
    eventually(
        "a scheduled scale-out of amazon-cart",
        Duration::from_secs(60),
        || async {
            let view = admin_call(&up.token, http::Method::GET, &view_url, None).await;
            serde_json::from_slice::<Value>(&view.body).is_ok_and(|v| scheduled(&v))
        },
    )
    .await;
    // Every cart replica, the new ones too, in the first region.
    let instances = admin_call(
        &up.token,
        http::Method::GET,
        &format!("{}/api/instances", up.url),
        None,
    )
    .await;
    let instances: Value = serde_json::from_slice(&instances.body).unwrap();
    let carts: Vec<&Value> = instances
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["service"] == "amazon-cart")
        .collect();
    assert!(carts.len() > 3, "{instances}");
    assert!(
        carts.iter().all(|i| i["region"] == "us-east"),
        "{instances}"
    );
}
