//! `casebook up --case NAME`: the control plane plus only the named cases.

mod support;

use support::{Up, casebook};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_with_one_case_starts_the_control_plane_and_that_case_only() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::builder(dir.path())
        .up_arg("--case")
        .up_arg("uber")
        .start();
    assert_eq!(
        up.services().await,
        ["control", "geo-resp", "uber", "uber-pricing"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_with_two_cases_starts_both() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::builder(dir.path())
        .up_arg("--case")
        .up_arg("whatsapp")
        .up_arg("--case")
        .up_arg("uber")
        .start();
    let services = up.services().await;
    assert!(services.iter().any(|s| s == "chat"), "{services:?}");
    assert!(services.iter().any(|s| s == "uber"), "{services:?}");
}

#[test]
fn an_unknown_case_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let output = casebook(dir.path())
        .args(["--control-port", "0", "up", "--case", "netflx"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unknown case `netflx` (known: whatsapp, uber, amazon, netflix)"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty(), "nothing started, nothing printed");
}
