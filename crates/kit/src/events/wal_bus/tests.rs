use super::*;
use crate::clock::ManualClock;
use crate::events::contract::{self, BusFactory};
use crate::wal::Durability;

fn config() -> WalConfig {
    WalConfig {
        segment_bytes: 8 * 1024,
        max_record_bytes: 4096,
        durability: Durability::NoSync,
        ..WalConfig::default()
    }
}

/// WalBus instances on one temporary directory; a second open is a restart.
struct Dir(tempfile::TempDir);

impl BusFactory for Dir {
    fn open(&self) -> BoxFuture<'_, Arc<dyn EventBus>> {
        Box::pin(async { Arc::new(WalBus::open(self.0.path(), config()).unwrap()) as _ })
    }
}

fn dir() -> Dir {
    Dir(tempfile::tempdir().unwrap())
}

#[tokio::test]
async fn contract_dense_ordered_offsets() {
    contract::dense_ordered_offsets(&dir()).await;
}

#[tokio::test]
async fn contract_uncommitted_events_are_redelivered_after_restart() {
    contract::uncommitted_events_are_redelivered_after_restart(&dir()).await;
}

#[tokio::test]
async fn contract_seek_and_read_replay_from_an_offset() {
    contract::seek_and_read_replay_from_an_offset(&dir()).await;
}

#[tokio::test]
async fn contract_fetch_waits_for_the_next_publish() {
    contract::fetch_waits_for_the_next_publish(&dir()).await;
}

#[tokio::test]
async fn contract_envelopes_round_trip_with_trace_headers() {
    contract::envelopes_round_trip_with_trace_headers(&dir()).await;
}

#[tokio::test]
async fn contract_names_are_validated() {
    contract::names_are_validated(&dir()).await;
}

fn event(clock: &ManualClock, n: u64) -> Event {
    Event::new(
        "order.placed",
        format!("order-{n}"),
        serde_json::json!({ "n": n }),
        clock,
    )
}

/// The embedded bus does not de-duplicate: a re-published id gets a new offset
/// (JetStream's bus drops it within its duplicate window).
#[tokio::test]
async fn republished_ids_are_appended_again() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let bus = WalBus::open(dir.path(), config()).unwrap();
    let e = event(&clock, 1);
    assert_eq!(bus.publish("t", e.clone()).await.unwrap(), 0);
    assert_eq!(bus.publish("t", e).await.unwrap(), 1);
}

#[tokio::test]
async fn stamps_come_from_the_clock() {
    let clock = ManualClock::new();
    assert_eq!(event(&clock, 1).time_ms, 1_767_225_600_000);
}
