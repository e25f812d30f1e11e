//! `casebook load uber` end to end: a `casebook up` child serving the Uber API on a
//! free port, a short greedy run with plenty of drivers whose JSON report must show
//! every ride matched and every trip paid. Nothing asserts on timing.

mod support;

use casebook_kit::http_client::HttpClient;
use support::{Up, casebook};

#[tokio::test]
async fn a_short_run_against_casebook_up_matches_every_ride() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(dir.path());
    // San Francisco and Chicago are us-east's: another region's replica
    // answers their rides 421.
    let target = up.address_in("uber", "us-east").await;

    // 300 drivers for 40 rides (burst included): supply is never short.
    let run = casebook(dir.path())
        .args([
            "load",
            "uber",
            "--target",
            &target,
            "--drivers",
            "300",
            "--rides-per-sec",
            "10",
            "--duration",
            "3s",
            "--burst-at",
            "1s",
            "--burst-len",
            "1s",
            "--burst-rate",
            "10",
            "--trip-step",
            "20ms",
            "--json",
            "--no-progress",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&run.stdout)
        .unwrap_or_else(|e| panic!("JSON report: {e}\n{stderr}"));
    let rides = &report["rides"];
    assert_eq!(rides["requested"], 40, "{report}");
    assert_eq!(rides["matched"], rides["requested"], "{report}");
    assert_eq!(rides["unmatched"], 0, "{report}");
    assert_eq!(rides["latency"]["ok"], 30, "{report}");
    assert_eq!(rides["burst"]["ok"], 10, "{report}");
    let trips = &report["trips"];
    assert_eq!(trips["accepted"], 40, "{report}");
    assert_eq!(trips["paid"], 40, "{report}");
    let pings = &report["pings"];
    assert!(pings["sent"].as_u64().unwrap() >= 300, "{report}");
    assert_eq!(pings["failed"], 0, "{report}");
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    // Durations are numbers with their unit in the name.
    assert!(report["elapsed_ms"].is_u64(), "{report}");
    assert!(report["config"]["duration_ms"].is_u64(), "{report}");

    // The trips are in the API's read model too.
    let city: serde_json::Value = HttpClient::default()
        .get_json(&format!("http://{target}/v1/city"))
        .await
        .unwrap();
    assert_eq!(city["drivers"], 300, "{city}");
    let trips: u64 = city["trips"]
        .as_object()
        .unwrap_or_else(|| panic!("trips by status in {city}"))
        .values()
        .filter_map(serde_json::Value::as_u64)
        .sum();
    assert_eq!(trips, 40, "{city}");
}

#[tokio::test]
async fn a_trips_csv_is_replayed_and_every_ride_matched() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(dir.path());
    // San Francisco and Chicago are us-east's: another region's replica
    // answers their rides 421.
    let target = up.address_in("uber", "us-east").await;
    // Chicago-like rows, one without coordinates (skipped), one with a quoted comma.
    let csv = dir.path().join("trips.csv");
    std::fs::write(
        &csv,
        "pickup_latitude,pickup_longitude,dropoff_latitude,dropoff_longitude,company\n\
         41.98,-87.80,,,Cash\n\
         41.89,-87.63,41.90,-87.62,\"Taxi, Affiliation\"\n\
         41.88,-87.64,41.87,-87.65,Flash Cab\n\
         41.79,-87.75,41.88,-87.63,Flash Cab\n",
    )
    .unwrap();
    let run = casebook(dir.path())
        .args(["load", "uber", "--target", &target, "--drivers", "200"])
        .args([
            "--rides-per-sec",
            "10",
            "--duration",
            "2s",
            "--trip-step",
            "20ms",
        ])
        .arg("--trips-csv")
        .arg(&csv)
        .args(["--json", "--no-progress"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains("replaying 3 trips"), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&run.stdout)
        .unwrap_or_else(|e| panic!("JSON report: {e}\n{stderr}"));
    assert_eq!(report["rides"]["requested"], 20, "{report}");
    assert_eq!(report["rides"]["matched"], 20, "{report}");
    assert_eq!(report["trips"]["paid"], 20, "{report}");
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
}

#[test]
fn bad_options_are_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = casebook(dir.path())
        .args(["load", "uber", "--rides-per-sec", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("rides_per_sec"));
    let out = casebook(dir.path())
        .args(["load", "uber", "--airport-share", "2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("airport_share"));
}
