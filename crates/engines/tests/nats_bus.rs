//! The kit's EventBus contract on NATS JetStream, plus what only JetStream does
//! (de-duplication by event id). Ignored by a plain `cargo test`: run with
//! `ENGINES_NATS_URL=nats://127.0.0.1:4222 cargo test -p casebook-engines -- --ignored`.
//! Each test works in streams of its own (a random prefix) and deletes them.

use std::sync::Arc;

use casebook_engines::{NatsBus, NatsConfig};
use casebook_kit::clock::ManualClock;
use casebook_kit::events::contract::{self, BusFactory};
use casebook_kit::events::{BusError, Event, EventBus};
use futures::future::BoxFuture;

fn url() -> String {
    match std::env::var("ENGINES_NATS_URL") {
        Ok(url) => url,
        Err(_) => {
            println!(
                "the NATS bus tests want a JetStream server: \
                 ENGINES_NATS_URL=nats://127.0.0.1:4222 cargo test -p casebook-engines -- --ignored"
            );
            panic!("ENGINES_NATS_URL is not set");
        }
    }
}

/// Buses on streams of their own; a second open is a restart (a new connection).
struct Namespace {
    url: String,
    config: NatsConfig,
}

impl Namespace {
    fn new() -> Self {
        let tag = format!("{:08x}", rand::random::<u32>());
        Self {
            url: url(),
            config: NatsConfig {
                stream_prefix: format!("CASEBOOK_TEST_{tag}_"),
                subject_prefix: format!("casebook.test.{tag}"),
                ..NatsConfig::default()
            },
        }
    }

    async fn bus(&self) -> NatsBus {
        NatsBus::connect(&self.url, self.config.clone())
            .await
            .expect("a JetStream server at ENGINES_NATS_URL")
    }

    /// Runs `check` in this namespace, then deletes its streams (also on a panic).
    async fn run<F>(self, check: F)
    where
        F: for<'a> FnOnce(&'a Namespace) -> BoxFuture<'a, ()>,
    {
        let outcome =
            futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(check(&self))).await;
        let deleted = self.bus().await.delete_streams().await.unwrap();
        assert!(deleted > 0 || outcome.is_err(), "the check made no stream");
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }
}

impl BusFactory for Namespace {
    fn open(&self) -> BoxFuture<'_, Arc<dyn EventBus>> {
        Box::pin(async { Arc::new(self.bus().await) as _ })
    }
}

#[tokio::test]
#[ignore = "needs NATS JetStream: set ENGINES_NATS_URL and run with --ignored"]
async fn contract_dense_ordered_offsets() {
    Namespace::new()
        .run(|ns| Box::pin(contract::dense_ordered_offsets(ns)))
        .await;
}

#[tokio::test]
#[ignore = "needs NATS JetStream: set ENGINES_NATS_URL and run with --ignored"]
async fn contract_uncommitted_events_are_redelivered_after_restart() {
    Namespace::new()
        .run(|ns| {
            Box::pin(contract::uncommitted_events_are_redelivered_after_restart(
                ns,
            ))
        })
        .await;
}

#[tokio::test]
#[ignore = "needs NATS JetStream: set ENGINES_NATS_URL and run with --ignored"]
async fn contract_seek_and_read_replay_from_an_offset() {
    Namespace::new()
        .run(|ns| Box::pin(contract::seek_and_read_replay_from_an_offset(ns)))
        .await;
}

#[tokio::test]
#[ignore = "needs NATS JetStream: set ENGINES_NATS_URL and run with --ignored"]
async fn contract_fetch_waits_for_the_next_publish() {
    Namespace::new()
        .run(|ns| Box::pin(contract::fetch_waits_for_the_next_publish(ns)))
        .await;
}

#[tokio::test]
#[ignore = "needs NATS JetStream: set ENGINES_NATS_URL and run with --ignored"]
async fn contract_envelopes_round_trip_with_trace_headers() {
    Namespace::new()
        .run(|ns| Box::pin(contract::envelopes_round_trip_with_trace_headers(ns)))
        .await;
}

#[tokio::test]
#[ignore = "needs NATS JetStream: set ENGINES_NATS_URL and run with --ignored"]
async fn contract_names_are_validated() {
    Namespace::new()
        .run(|ns| {
            Box::pin(async move {
                // The check publishes nothing valid; give the namespace a stream.
                let bus = ns.bus().await;
                bus.publish("t", event(0)).await.unwrap();
                contract::names_are_validated(ns).await;
            })
        })
        .await;
}

fn event(n: u64) -> Event {
    Event::new(
        "order.placed",
        format!("order-{n}"),
        serde_json::json!({ "n": n }),
        &ManualClock::new(),
    )
}

#[tokio::test]
#[ignore = "needs NATS JetStream: set ENGINES_NATS_URL and run with --ignored"]
async fn a_republished_event_id_is_stored_once() {
    Namespace::new()
        .run(|ns| {
            Box::pin(async move {
                let bus = ns.bus().await;
                let first = event(1);
                assert_eq!(bus.publish("t", first.clone()).await.unwrap(), 0);
                assert_eq!(bus.publish("t", event(2)).await.unwrap(), 1);
                // The same id again (an outbox relay retrying): the first copy's offset.
                assert_eq!(bus.publish("t", first.clone()).await.unwrap(), 0);
                // Also from another connection (a restarted relay).
                assert_eq!(ns.bus().await.publish("t", first).await.unwrap(), 0);
                assert_eq!(bus.end_offset("t").await.unwrap(), 2);
                assert_eq!(
                    contract::numbers(&bus.read("t", 0, 10).await.unwrap()),
                    vec![1, 2]
                );
            })
        })
        .await;
}

#[tokio::test]
#[ignore = "needs NATS JetStream: set ENGINES_NATS_URL and run with --ignored"]
async fn the_server_is_new_enough_and_refusals_are_clear() {
    let ns = Namespace::new();
    let bus = ns.bus().await;
    println!("NATS server {}", bus.server_version());
    assert!(!bus.server_version().is_empty());
    let err = NatsBus::connect("nats://127.0.0.1:1", NatsConfig::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, BusError::Engine { engine: "nats", .. }),
        "{err}"
    );
    assert!(
        bus.stream_name(&"_".repeat(128)).is_err(),
        "an over-long stream name"
    );
}

/// A delivery taken by a pull whose caller went away (a cancelled fetch) is not
/// skipped: the next fetch sees the gap, resets the group to its committed offset
/// and hands out what was lost, in order.
#[tokio::test]
#[ignore = "needs NATS JetStream: set ENGINES_NATS_URL and run with --ignored"]
async fn a_delivery_lost_to_a_cancelled_pull_is_not_skipped() {
    Namespace::new()
        .run(|ns| {
            Box::pin(async move {
                let bus = ns.bus().await;
                for n in 0..4 {
                    bus.publish("t", event(n)).await.unwrap();
                }
                assert_eq!(
                    contract::numbers(&bus.fetch("t", "g", 1).await.unwrap()),
                    vec![0]
                );
                // Another pull on the group's consumer takes offset 1 and never acks.
                let js = async_nats::jetstream::new(async_nats::connect(&ns.url).await.unwrap());
                let stream = js.get_stream(bus.stream_name("t").unwrap()).await.unwrap();
                let consumer: async_nats::jetstream::consumer::PullConsumer =
                    stream.get_consumer("g").await.unwrap();
                let mut taken = consumer.fetch().max_messages(1).messages().await.unwrap();
                use futures::StreamExt;
                let lost = taken.next().await.unwrap().unwrap();
                assert_eq!(lost.info().unwrap().stream_sequence, 2);
                let got = bus.fetch("t", "g", 10).await.unwrap();
                assert_eq!(contract::numbers(&got), vec![1, 2, 3]);
                assert_eq!(bus.committed("t", "g").await.unwrap(), 0);
                bus.commit("t", "g", 4).await.unwrap();
                assert_eq!(bus.committed("t", "g").await.unwrap(), 4);
            })
        })
        .await;
}

/// JetStream redelivers what stays unacked past `ack_wait`; the instance that
/// fetched it drops those redeliveries, and a commit still acks them.
#[tokio::test]
#[ignore = "needs NATS JetStream: set ENGINES_NATS_URL and run with --ignored"]
async fn redeliveries_after_ack_wait_are_not_handed_out_twice() {
    let mut ns = Namespace::new();
    ns.config.ack_wait = std::time::Duration::from_millis(500);
    ns.run(|ns| {
        Box::pin(async move {
            let bus = ns.bus().await;
            for n in 0..2 {
                bus.publish("t", event(n)).await.unwrap();
            }
            assert_eq!(
                contract::numbers(&bus.fetch("t", "g", 10).await.unwrap()),
                vec![0, 1]
            );
            tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
            bus.publish("t", event(2)).await.unwrap();
            assert_eq!(
                contract::numbers(&bus.fetch("t", "g", 10).await.unwrap()),
                vec![2]
            );
            bus.commit("t", "g", 2).await.unwrap();
            assert_eq!(bus.committed("t", "g").await.unwrap(), 2);
            bus.commit("t", "g", 3).await.unwrap();
            assert_eq!(bus.committed("t", "g").await.unwrap(), 3);
        })
    })
    .await;
}
