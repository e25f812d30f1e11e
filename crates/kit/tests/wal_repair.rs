//! The process-wide WAL repair override (the hook behind an operator's "repair the
//! WAL" flag), and a refused log failing an instance's start with its message. Its
//! own test binary: the override is process-wide, so it must not race other tests.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use casebook_kit::clock::SystemClock;
use casebook_kit::runtime::{
    BoxFuture, InstanceContext, InstanceSpec, InstanceState, Platform, ServiceFactory, StartError,
};
use casebook_kit::topology::{Placement, Topology};
use casebook_kit::wal::{Durability, Repair, Wal, WalConfig, WalError, set_process_repair};

fn config() -> WalConfig {
    WalConfig {
        segment_bytes: 4096,
        max_record_bytes: 256,
        durability: Durability::NoSync,
        ..WalConfig::default()
    }
}

/// Writes 20 records to the log in `dir`, then damages record 5's payload.
fn damaged_log(dir: &Path) {
    let wal = Wal::open(dir, config()).unwrap();
    for i in 0..20u32 {
        wal.append_blocking(format!("record-{i:04}")).unwrap();
    }
    drop(wal);
    let segment = dir.join(format!("{:020}.wal", 0));
    let mut bytes = std::fs::read(&segment).unwrap();
    // Header 16 bytes; every frame is 16 + 11 bytes.
    bytes[16 + 5 * 27 + 16 + 3] ^= 0xff;
    std::fs::write(&segment, bytes).unwrap();
}

/// A service whose start opens a WAL in its data directory.
#[derive(Debug)]
struct WalService;

impl ServiceFactory for WalService {
    fn name(&self) -> &str {
        "walsvc"
    }

    fn start<'a>(
        &'a self,
        ctx: &'a InstanceContext,
    ) -> BoxFuture<'a, Result<SocketAddr, StartError>> {
        Box::pin(async move {
            let _wal = Wal::open(ctx.data_dir().join("log"), config())
                .map_err(|e| StartError::Other(e.into()))?;
            Ok(ctx.listen_addr())
        })
    }
}

#[tokio::test]
async fn a_refused_log_fails_the_instance_start_and_the_process_override_repairs_it() {
    let data = tempfile::tempdir().unwrap();
    let platform = Platform::new(Topology::default(), data.path(), SystemClock::shared());
    platform.register_service(Arc::new(WalService));
    let spec = InstanceSpec {
        service: "walsvc".into(),
        instance_id: Some("walsvc-1".into()),
        placement: Placement {
            region: "eu-west".into(),
            zone: "eu-west-b".into(),
        },
        listen: "127.0.0.1:0".parse().unwrap(),
        version: "test".into(),
        port_hint: None,
    };
    platform.start(spec.clone()).await.unwrap();
    let view = platform.list().pop().unwrap();
    platform.kill("walsvc-1").await;
    let log = view.data_dir.join("log");
    tokio::task::spawn_blocking(move || damaged_log(&log))
        .await
        .unwrap();

    let error = platform.start(spec.clone()).await.unwrap_err().to_string();
    assert!(error.contains("corrupt at byte"), "{error}");
    assert!(error.contains("expected seq 5"), "{error}");
    match platform.state("walsvc-1") {
        Some(InstanceState::Failed(reason)) => assert_eq!(reason, error),
        other => panic!("expected a failed start, got {other:?}"),
    }
    // The override reaches every log opened in the process, whatever its config says.
    set_process_repair(Repair::TruncateAfterCopy);
    platform.start(spec).await.unwrap();
    set_process_repair(Repair::Refuse);
    platform.kill("walsvc-1").await;
    let wal = Wal::open(view.data_dir.join("log"), config()).unwrap();
    assert_eq!(wal.next_seq(), 5);
    assert_eq!(wal.recovery().truncated_at, None);
    drop(wal);

    // Back to refusing: a freshly damaged log is refused again.
    let other = tempfile::tempdir().unwrap();
    let path = other.path().to_path_buf();
    tokio::task::spawn_blocking(move || damaged_log(&path))
        .await
        .unwrap();
    assert!(matches!(
        Wal::open(other.path(), config()),
        Err(WalError::CorruptMidLog(refusal)) if refusal.kept_records == 5
    ));
}
