//! `casebook load netflix` through the binary: the simulated fleet (no platform
//! needed) reports the same JSON for the same seed, an edge kill shows as
//! failovers, and bad input or a missing playback API are told apart by exit code.

mod support;

use std::io::Write as _;

use support::casebook;

fn simulate(dir: &std::path::Path, extra: &[&str]) -> serde_json::Value {
    let run = casebook(dir)
        .args([
            "load",
            "netflix",
            "--simulate",
            "--players-per-sec",
            "20",
            "--duration",
            "5s",
            "--watch",
            "60s",
            "--json",
            "--no-progress",
        ])
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    serde_json::from_slice(&run.stdout).unwrap_or_else(|e| panic!("JSON report: {e}\n{stderr}"))
}

#[test]
fn a_simulated_fleet_is_deterministic_and_an_edge_kill_shows_as_failovers() {
    let dir = tempfile::tempdir().unwrap();
    let kill = [
        "--trace",
        "4g",
        "--abr",
        "bola",
        "--kill-edge-at",
        "3s",
        "--seed",
        "11",
    ];
    let first = simulate(dir.path(), &kill);
    let again = simulate(dir.path(), &kill);
    assert_eq!(first, again, "same seed, same report");
    assert_eq!(first["players"], 100, "{first}");
    assert_eq!(first["completed"], 100, "{first}");
    assert_eq!(first["setup"]["abr"], "bola");
    assert_eq!(first["setup"]["mode"], "simulated");
    assert!(first["failovers"].as_u64().unwrap() > 0, "{first}");
    assert!(first["start"]["p99_ms"].as_f64().unwrap() > 0.0);
    let claims = first["claims"].as_array().unwrap();
    assert_eq!(claims.len(), 2);
    assert!(claims.iter().all(|c| c["pass"].is_boolean()));
    let quiet = simulate(dir.path(), &["--trace", "4g", "--seed", "11"]);
    assert_eq!(quiet["failovers"], 0, "{quiet}");
}

#[test]
fn a_trace_file_is_read_and_a_bad_one_refused_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.csv");
    std::fs::File::create(&good)
        .unwrap()
        .write_all(b"t_ms,kbps,latency_ms\n0,8000,20\n5000,2000,40\n")
        .unwrap();
    let report = simulate(dir.path(), &["--trace", good.to_str().unwrap()]);
    assert!(
        report["setup"]["trace"]
            .as_str()
            .unwrap()
            .ends_with("good.csv")
    );

    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "0,8000,20\n5000,fast,40\n").unwrap();
    let run = casebook(dir.path())
        .args([
            "load",
            "netflix",
            "--simulate",
            "--trace",
            bad.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("line 2, kbps"), "{stderr}");
}

#[test]
fn without_a_playback_api_the_run_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let port = casebook_testkit::free_port();
    let run = casebook(dir.path())
        .args([
            "load",
            "netflix",
            "--target",
            &format!("127.0.0.1:{port}"),
            "--no-progress",
        ])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("catalog could not be read"), "{stderr}");
}
