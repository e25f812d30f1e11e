//! The [`EventBus`] contract as a suite of checks every implementation runs: the
//! embedded [`WalBus`](super::WalBus) in this crate's tests, the JetStream bus in
//! `casebook-engines`. Not an API: each check panics on a breach.
//!
//! A [`BusFactory`] opens buses on one private namespace (a directory, a stream
//! prefix); opening a second bus on it is a restart. Each check wants a fresh
//! factory; the caller removes the namespace afterwards.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::{BusError, Delivery, Event, EventBus, TRACEPARENT};
use crate::clock::ManualClock;

/// Opens buses on one private namespace; a second [`open`](Self::open) is a restart.
pub trait BusFactory: Send + Sync {
    fn open(&self) -> BoxFuture<'_, Arc<dyn EventBus>>;
}

/// How long a check waits for something that should happen promptly.
const PROMPT: Duration = Duration::from_secs(10);

fn event(clock: &ManualClock, n: u64) -> Event {
    Event::new(
        "order.placed",
        format!("order-{n}"),
        serde_json::json!({ "n": n }),
        clock,
    )
}

/// The `n` of each delivery's payload, in delivery order.
pub fn numbers(deliveries: &[Delivery]) -> Vec<u64> {
    deliveries
        .iter()
        .map(|d| d.event.payload["n"].as_u64().unwrap())
        .collect()
}

async fn fetch(bus: &dyn EventBus, topic: &str, group: &str, max: usize) -> Vec<Delivery> {
    tokio::time::timeout(PROMPT, bus.fetch(topic, group, max))
        .await
        .expect("fetch of available events returns promptly")
        .unwrap()
}

/// Offsets are dense and ordered per topic, from 0, and independent across topics;
/// a delivery carries the offset its publish returned.
pub async fn dense_ordered_offsets(factory: &dyn BusFactory) {
    let clock = ManualClock::new();
    let bus = factory.open().await;
    for n in 0..20 {
        assert_eq!(
            bus.publish("orders.eu_1", event(&clock, n)).await.unwrap(),
            n
        );
    }
    assert_eq!(
        bus.publish("orders-us", event(&clock, 100)).await.unwrap(),
        0
    );
    assert_eq!(
        bus.publish("orders-us", event(&clock, 101)).await.unwrap(),
        1
    );
    let all = bus.read("orders.eu_1", 0, 100).await.unwrap();
    assert_eq!(
        all.iter().map(|d| d.offset).collect::<Vec<_>>(),
        (0..20).collect::<Vec<_>>()
    );
    assert_eq!(numbers(&all), (0..20).collect::<Vec<_>>());
    let got = fetch(&*bus, "orders.eu_1", "g", 7).await;
    assert_eq!(
        got.iter().map(|d| d.offset).collect::<Vec<_>>(),
        (0..7).collect::<Vec<_>>()
    );
    let got = fetch(&*bus, "orders.eu_1", "g", 100).await;
    assert_eq!(
        got.iter().map(|d| d.offset).collect::<Vec<_>>(),
        (7..20).collect::<Vec<_>>()
    );
}

/// At-least-once: fetched but uncommitted events come back after a restart;
/// commit and committed agree across it; groups are independent.
pub async fn uncommitted_events_are_redelivered_after_restart(factory: &dyn BusFactory) {
    let clock = ManualClock::new();
    {
        let bus = factory.open().await;
        assert_eq!(bus.committed("orders", "billing").await.unwrap(), 0);
        for n in 0..10 {
            assert_eq!(bus.publish("orders", event(&clock, n)).await.unwrap(), n);
        }
        let first = fetch(&*bus, "orders", "billing", 4).await;
        assert_eq!(numbers(&first), vec![0, 1, 2, 3]);
        assert_eq!(first[3].offset, 3);
        bus.commit("orders", "billing", 4).await.unwrap();
        assert_eq!(bus.committed("orders", "billing").await.unwrap(), 4);
        // Fetched but never committed: must come back after the restart.
        assert_eq!(
            numbers(&fetch(&*bus, "orders", "billing", 3).await),
            vec![4, 5, 6]
        );
        // Another group has its own position.
        assert_eq!(
            numbers(&fetch(&*bus, "orders", "audit", 2).await),
            vec![0, 1]
        );
    }
    let bus = factory.open().await;
    assert_eq!(bus.committed("orders", "billing").await.unwrap(), 4);
    assert_eq!(
        numbers(&fetch(&*bus, "orders", "billing", 100).await),
        vec![4, 5, 6, 7, 8, 9]
    );
    assert_eq!(numbers(&fetch(&*bus, "orders", "audit", 1).await), vec![0]);
    bus.commit("orders", "billing", 10).await.unwrap();
    assert_eq!(bus.committed("orders", "billing").await.unwrap(), 10);
    assert_eq!(bus.committed("orders", "audit").await.unwrap(), 0);
}

/// Seek moves cursor and committed offset; read replays without a group and never
/// waits; offsets beyond the end are refused.
pub async fn seek_and_read_replay_from_an_offset(factory: &dyn BusFactory) {
    let clock = ManualClock::new();
    let bus = factory.open().await;
    for n in 0..5 {
        bus.publish("t", event(&clock, n)).await.unwrap();
    }
    assert_eq!(fetch(&*bus, "t", "g", 10).await.len(), 5);
    bus.commit("t", "g", 5).await.unwrap();
    bus.seek("t", "g", 2).await.unwrap();
    assert_eq!(bus.committed("t", "g").await.unwrap(), 2);
    assert_eq!(numbers(&fetch(&*bus, "t", "g", 10).await), vec![2, 3, 4]);
    assert_eq!(numbers(&bus.read("t", 3, 10).await.unwrap()), vec![3, 4]);
    assert_eq!(numbers(&bus.read("t", 0, 2).await.unwrap()), vec![0, 1]);
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
    // Seek forward skips; the skip survives a restart.
    bus.seek("t", "g", 4).await.unwrap();
    drop(bus);
    let bus = factory.open().await;
    assert_eq!(bus.committed("t", "g").await.unwrap(), 4);
    assert_eq!(numbers(&fetch(&*bus, "t", "g", 10).await), vec![4]);
}

/// A fetch with nothing to deliver waits, and returns once an event is published.
pub async fn fetch_waits_for_the_next_publish(factory: &dyn BusFactory) {
    let clock = ManualClock::new();
    let bus = factory.open().await;
    let waiting = tokio::spawn({
        let bus = bus.clone();
        async move { bus.fetch("t", "g", 10).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "fetch returned with nothing to deliver"
    );
    bus.publish("t", event(&clock, 7)).await.unwrap();
    let got = tokio::time::timeout(PROMPT, waiting)
        .await
        .expect("the waiting fetch wakes up on a publish")
        .unwrap()
        .unwrap();
    assert_eq!(numbers(&got), vec![7]);
}

/// The envelope (id, type, key, time, payload, trace headers) round-trips.
pub async fn envelopes_round_trip_with_trace_headers(factory: &dyn BusFactory) {
    let clock = ManualClock::new();
    let bus = factory.open().await;
    let trace = crate::telemetry::TraceContext::new_root();
    let sent = trace.clone().scope(async { event(&clock, 1) }).await;
    let traceparent = sent.headers.get(TRACEPARENT).unwrap();
    assert!(traceparent.contains(&crate::telemetry::TraceContext::traceparent(&trace)[3..35]));
    bus.publish("t", sent.clone()).await.unwrap();
    assert_eq!(bus.read("t", 0, 1).await.unwrap()[0].event, sent);
    assert_eq!(fetch(&*bus, "t", "g", 1).await[0].event, sent);
}

/// Topic and group names outside `[A-Za-z0-9._-]{1,128}` are refused.
pub async fn names_are_validated(factory: &dyn BusFactory) {
    let clock = ManualClock::new();
    let bus = factory.open().await;
    for bad in ["", "..", "a/b", "sp ace", "a*", "a>", &"x".repeat(129)] {
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
    assert!(matches!(
        bus.commit("t", "g g", 0).await,
        Err(BusError::InvalidName { what: "group", .. })
    ));
}
