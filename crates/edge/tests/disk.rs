//! The disk level through the service: bounded by bytes, and still there after a
//! graceful restart and after a kill.

mod support;

use std::path::Path;
use std::sync::Arc;

use casebook_testkit::{DEADLINE, eventually};
use http::StatusCode;
use support::{Origin, TierUnderTest, config, header, serve_origin};

fn segment(i: usize) -> String {
    format!("titles/t/720p/seg{i:05}.ts")
}

fn object_files_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "obj" || e == "tmp") {
                // A file evicted while the walk runs is simply gone.
                total += entry.metadata().map_or(0, |m| m.len());
            }
        }
    }
    total
}

async fn disk_entries(tier: &TierUnderTest, n: u64) {
    eventually(&format!("{n} objects on disk"), DEADLINE, || async {
        tier.stats().await.disk.unwrap().entries == n
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disk_level_survives_a_restart_and_a_kill() {
    let origin = Arc::new(Origin::default());
    for i in 0..4 {
        origin.put(&segment(i), vec![i as u8; 300_000]);
    }
    let (address, _) = serve_origin(Arc::clone(&origin), "127.0.0.1:0".parse().unwrap()).await;
    let mut config = config(address);
    config.memory_bytes = 1 << 20;
    config.disk_bytes = 8 << 20;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let clock = casebook_kit::clock::ManualClock::new();

    let tier = TierUnderTest::start_in(config.clone(), Arc::clone(&dir), clock.clone()).await;
    for i in 0..4 {
        assert_eq!(tier.get(&segment(i), &[]).await.status, StatusCode::OK);
    }
    disk_entries(&tier, 4).await;
    tier.stop().await;

    let tier = TierUnderTest::start_in(config.clone(), Arc::clone(&dir), clock.clone()).await;
    assert_eq!(
        tier.stats().await.disk.unwrap().entries,
        4,
        "the index was rebuilt"
    );
    for i in 0..4 {
        let response = tier.get(&segment(i), &[]).await;
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(header(&response, "x-cache"), Some("hit-disk"));
        assert!(response.body.iter().all(|b| *b == i as u8));
    }
    // Killed: every task dropped at once, as a crash would.
    assert!(tier.platform.kill(&tier.instance).await);
    let tier = TierUnderTest::start_in(config, Arc::clone(&dir), clock).await;
    let response = tier.get(&segment(2), &[]).await;
    assert_eq!(header(&response, "x-cache"), Some("hit-disk"));
    for i in 0..4 {
        assert_eq!(
            origin.hits(&segment(i)),
            1,
            "fetched from the origin once, ever"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_files_never_exceed_the_disk_budget() {
    let origin = Arc::new(Origin::default());
    let objects = 30;
    for i in 0..objects {
        origin.put(&segment(i), vec![i as u8; 200_000]);
    }
    let (address, _) = serve_origin(Arc::clone(&origin), "127.0.0.1:0".parse().unwrap()).await;
    let mut config = config(address);
    config.memory_bytes = 1 << 20;
    config.disk_bytes = 2 << 20;
    let tier = TierUnderTest::start(config).await;
    for i in 0..objects {
        assert_eq!(tier.get(&segment(i), &[]).await.status, StatusCode::OK);
        let on_disk = object_files_bytes(tier.dir.path());
        assert!(
            on_disk <= 2 << 20,
            "{on_disk} bytes of object files after {i}"
        );
    }
    eventually("the disk writer done", DEADLINE, || async {
        let disk = tier.stats().await.disk.unwrap();
        disk.entries > 0 && disk.bytes == object_files_bytes(tier.dir.path())
    })
    .await;
    let stats = tier.stats().await;
    let disk = stats.disk.unwrap();
    assert!(disk.bytes <= disk.capacity_bytes);
    assert!(disk.entries < objects as u64, "older objects were evicted");
    assert_eq!(stats.disk_writes_skipped, 0);
}
