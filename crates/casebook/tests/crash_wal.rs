//! A write-ahead log damaged mid-way, through the real binary: `kill -9` the uber
//! case after acknowledged pings, flip one byte inside the first record of the
//! location log (intact records follow it, so this is not a torn tail), and
//! restart. `casebook up` must refuse to start, naming the segment, and lose
//! nothing; `casebook up --repair-wal` must start, keeping the intact prefix and
//! copying the damaged part aside. Waits are bounded; nothing asserts on timing.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use casebook_kit::http_client::HttpClient;
use http::Method;
use serde_json::{Value, json};
use support::{Up, casebook};

const PINGS: u64 = 20;
const DEADLINE: Duration = Duration::from_secs(90);

/// The location log's segments of the us-east replica.
fn location_segments(data: &Path) -> Vec<PathBuf> {
    let log = data.join("uber/us-east/us-east-a/0/locations/log");
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&log)
        .unwrap_or_else(|e| panic!("{}: {e}", log.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    segments.sort();
    segments
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_damaged_mid_way_stops_up_naming_it_and_repair_wal_keeps_the_intact_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let client = HttpClient::default();
    {
        let mut up = Up::builder(dir.path())
            .up_arg("--case")
            .up_arg("uber")
            .start();
        let api = format!("http://{}", up.address_in("uber", "us-east").await);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        // One request, one durable record: acknowledged before the next is sent.
        for id in 0..PINGS {
            let ping = json!({"lat": 41.88, "lon": -87.63 + id as f64 * 1e-4, "ts": now, "status": "available"});
            let answer: Value = client
                .json(
                    Method::POST,
                    &format!("{api}/v1/drivers/{id}/location"),
                    &ping,
                )
                .await
                .unwrap();
            assert_eq!(answer["accepted"], 1, "{answer}");
        }
        up.kill();
    }

    let segments = location_segments(dir.path());
    let first = segments.first().expect("a location segment");
    let pristine = std::fs::read(first).unwrap();
    // Past the segment header (16 bytes) and the first record's header (16): a
    // byte of the first record's payload.
    let mut damaged = pristine.clone();
    damaged[16 + 16 + 4] ^= 0xff;
    std::fs::write(first, &damaged).unwrap();

    // Without the override: `up` stops, naming the segment, and changes nothing.
    let mut child = casebook(dir.path())
        .args(["--control-port", "0", "up", "--case", "uber"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let give_up = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > give_up {
            let _ = child.kill();
            panic!("`casebook up` kept running on a damaged log");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    let name = first.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        stderr.contains(&name),
        "the error names the segment: {stderr}"
    );
    assert_eq!(
        std::fs::read(first).unwrap(),
        damaged,
        "a refused log is left as it was"
    );

    // With the override: it starts; the damaged part is kept aside, never deleted.
    let up = Up::builder(dir.path())
        .up_arg("--case")
        .up_arg("uber")
        .up_arg("--repair-wal")
        .start();
    let api = format!("http://{}", up.address_in("uber", "us-east").await);
    let regions: Value = client.get_json(&format!("{api}/v1/regions")).await.unwrap();
    assert!(regions.is_object(), "{regions}");
    let aside: Vec<_> = std::fs::read_dir(first.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&name) && n.contains(".corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "one set-aside copy, got {aside:?}");
    // `<segment>.corrupt-<offset>`: the bytes from the damaged record on.
    let offset: usize = aside[0].rsplit('-').next().unwrap().parse().unwrap();
    let copy = std::fs::read(first.parent().unwrap().join(&aside[0])).unwrap();
    assert_eq!(offset, 16, "the cut is at the first record");
    assert!(
        !copy.is_empty() && damaged.get(offset..offset + copy.len()) == Some(&copy[..]),
        "the copy holds the damaged part byte for byte"
    );
}
