use super::*;
use crate::clock::ManualClock;
use crate::wal::Durability;

fn config() -> WalConfig {
    WalConfig {
        segment_bytes: 8 * 1024,
        max_record_bytes: 4096,
        durability: Durability::NoSync,
        ..WalConfig::default()
    }
}

fn event(clock: &ManualClock, n: u64) -> Event {
    Event::new(
        "order.placed",
        format!("order-{n}"),
        serde_json::json!({ "n": n }),
        clock,
    )
}

fn numbers(deliveries: &[Delivery]) -> Vec<u64> {
    deliveries
        .iter()
        .map(|d| d.event.payload["n"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn uncommitted_events_are_redelivered_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    {
        let bus = WalBus::open(dir.path(), config()).unwrap();
        for n in 0..10 {
            assert_eq!(bus.publish("orders", event(&clock, n)).await.unwrap(), n);
        }
        let first = bus.fetch("orders", "billing", 4).await.unwrap();
        assert_eq!(numbers(&first), vec![0, 1, 2, 3]);
        assert_eq!(first[3].offset, 3);
        bus.commit("orders", "billing", 4).await.unwrap();
        // Fetched but never committed: must come back after the restart.
        assert_eq!(
            numbers(&bus.fetch("orders", "billing", 3).await.unwrap()),
            vec![4, 5, 6]
        );
        // Another group has its own position.
        assert_eq!(
            numbers(&bus.fetch("orders", "audit", 2).await.unwrap()),
            vec![0, 1]
        );
    }
    let bus = WalBus::open(dir.path(), config()).unwrap();
    assert_eq!(bus.committed("orders", "billing").await.unwrap(), 4);
    assert_eq!(
        numbers(&bus.fetch("orders", "billing", 100).await.unwrap()),
        vec![4, 5, 6, 7, 8, 9]
    );
    assert_eq!(
        numbers(&bus.fetch("orders", "audit", 1).await.unwrap()),
        vec![0]
    );
}

#[tokio::test]
async fn seek_and_read_replay_from_an_offset() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let bus = WalBus::open(dir.path(), config()).unwrap();
    for n in 0..5 {
        bus.publish("t", event(&clock, n)).await.unwrap();
    }
    assert_eq!(bus.fetch("t", "g", 10).await.unwrap().len(), 5);
    bus.commit("t", "g", 5).await.unwrap();
    bus.seek("t", "g", 2).await.unwrap();
    assert_eq!(bus.committed("t", "g").await.unwrap(), 2);
    assert_eq!(
        numbers(&bus.fetch("t", "g", 10).await.unwrap()),
        vec![2, 3, 4]
    );
    assert_eq!(numbers(&bus.read("t", 3, 10).await.unwrap()), vec![3, 4]);
    assert!(bus.read("t", 5, 10).await.unwrap().is_empty());
    assert!(matches!(
        bus.read("t", 6, 10).await,
        Err(BusError::OffsetBeyondEnd {
            offset: 6,
            end: 5,
            ..
        })
    ));
    assert!(matches!(
        bus.commit("t", "g", 9).await,
        Err(BusError::OffsetBeyondEnd { .. })
    ));
    assert!(matches!(
        bus.seek("t", "g", 9).await,
        Err(BusError::OffsetBeyondEnd { .. })
    ));
}

#[tokio::test]
async fn fetch_waits_for_the_next_publish() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let bus = WalBus::open(dir.path(), config()).unwrap();
    let waiting = tokio::spawn({
        let bus = bus.clone();
        async move { bus.fetch("t", "g", 10).await }
    });
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished());
    bus.publish("t", event(&clock, 7)).await.unwrap();
    let got = waiting.await.unwrap().unwrap();
    assert_eq!(numbers(&got), vec![7]);
}

#[tokio::test]
async fn envelopes_round_trip_with_trace_headers() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let bus = WalBus::open(dir.path(), config()).unwrap();
    let trace = crate::telemetry::TraceContext::new_root();
    let sent = trace.clone().scope(async { event(&clock, 1) }).await;
    let traceparent = sent.headers.get(crate::events::TRACEPARENT).unwrap();
    assert!(traceparent.contains(&crate::telemetry::TraceContext::traceparent(&trace)[3..35]));
    assert_eq!(sent.time_ms, 1_767_225_600_000);
    bus.publish("t", sent.clone()).await.unwrap();
    assert_eq!(bus.read("t", 0, 1).await.unwrap()[0].event, sent);
    assert_ne!(event(&clock, 1).id, sent.id, "ids are unique");
}

#[tokio::test]
async fn names_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let bus = WalBus::open(dir.path(), config()).unwrap();
    for bad in ["", "..", "a/b", "sp ace", &"x".repeat(129)] {
        assert!(
            matches!(
                bus.publish(bad, event(&clock, 0)).await,
                Err(BusError::InvalidName { what: "topic", .. })
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        bus.fetch("t", "../g", 1).await,
        Err(BusError::InvalidName { what: "group", .. })
    ));
}
