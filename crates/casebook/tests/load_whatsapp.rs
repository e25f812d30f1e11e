//! `casebook load whatsapp` end to end: accounts created by the command, a
//! `casebook up` child serving XMPP on a free port, a short run whose JSON report
//! must account for every message. Nothing asserts on timing.

mod support;

use support::{Up, casebook};

#[tokio::test]
async fn a_short_run_against_casebook_up_delivers_every_message_it_sent() {
    let dir = tempfile::tempdir().unwrap();
    // Accounts first (the node reads them when it starts): no sessions, no messages.
    let created = casebook(dir.path())
        .args([
            "load",
            "whatsapp",
            "--users",
            "4",
            "--create-users",
            "--connections",
            "0",
            "--rate",
            "0",
            "--duration",
            "1ms",
            "--target",
            "127.0.0.1:9",
            "--no-progress",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&created.stderr);
    assert!(created.status.success(), "{stderr}");
    assert!(stderr.contains("created 4 load accounts"), "{stderr}");

    let up = Up::start(dir.path());
    let target = up.address_of("chat").await;

    let run = casebook(dir.path())
        .args([
            "load",
            "whatsapp",
            "--target",
            &target,
            "--users",
            "4",
            "--sources",
            "2",
            "--rate",
            "20",
            "--duration",
            "2s",
            "--receipts",
            "--json",
            "--no-progress",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&run.stdout)
        .unwrap_or_else(|e| panic!("JSON report: {e}\n{stderr}"));
    assert_eq!(report["logins"]["ok"], 4, "{report}");
    let messages = &report["messages"];
    assert_eq!(messages["sent"], 40, "{report}");
    assert_eq!(messages["delivered"], messages["sent"], "{report}");
    assert_eq!(messages["lost"], 0, "{report}");
    assert_eq!(messages["receipts_received"], messages["sent"], "{report}");
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    assert_eq!(report["config"]["duration_ms"], 2000, "{report}");
    assert!(stderr.contains("phase: messages"), "{stderr}");
}

#[test]
fn bad_options_are_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = casebook(dir.path())
        .args(["load", "whatsapp", "--users", "2", "--connections", "3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--connections 3 exceeds --users 2"));
    let out = casebook(dir.path())
        .args(["load", "whatsapp", "--mechanism", "md5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown mechanism"));
}
