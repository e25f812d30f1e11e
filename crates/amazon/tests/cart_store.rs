//! A replica's store across restarts: every acknowledged write is there after the
//! store is dropped and reopened on the same directory (snapshot + log replay),
//! with its hints and its actor id; the events of every acknowledged write reach
//! the bus at least once; compaction keeps what a replay needs.
//!
//! The log is opened with `Durability::Sync`: an acknowledged write has been
//! `fdatasync`ed, so dropping the store without any shutdown step (what an
//! in-process kill does) and reopening is the `kill -9` case as far as the log can
//! tell — the bytes on disk are all a restart has. (The process-level `kill -9`
//! test of the amazon binary lives with the inventory.)

use std::collections::BTreeMap;
use std::sync::Arc;

use casebook_amazon::cart::CartConfig;
use casebook_amazon::cart::crdt::Cart;
use casebook_amazon::cart::store::{CartStore, EVENTS_TOPIC, StoreError};
use casebook_amazon::cart::wire::{Op, UserCart};
use casebook_kit::clock::ManualClock;
use casebook_kit::events::EventBus;
use casebook_kit::wal::Durability;

fn config(max_lines: usize) -> CartConfig {
    CartConfig {
        durability: Durability::Sync,
        max_lines,
        hint_capacity: 1_000,
        ..CartConfig::default()
    }
}

fn add(sku: &str, qty: u32) -> Op {
    Op::Add {
        sku: sku.to_owned(),
        qty,
    }
}

/// What the acknowledged writes say each cart must hold: user → sku → qty.
type Expected = BTreeMap<String, BTreeMap<String, u32>>;

fn holds(store: &CartStore, expected: &Expected) {
    for (user, lines) in expected {
        let cart = store
            .get(user)
            .unwrap_or_else(|| panic!("{user}'s cart is gone"));
        let got: BTreeMap<String, u32> = cart.lines().map(|(s, q)| (s.to_owned(), q)).collect();
        assert_eq!(&got, lines, "{user}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_hints_and_events_survive_a_drop_and_reopen() {
    let config = || config(100);
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let (store, recovery) = CartStore::open(dir.path(), &config(), clock.shared()).unwrap();
    assert_eq!(recovery.carts, 0);
    let store = Arc::new(store);
    let actor = store.actor();

    // 8 writers at once, 30 writes each, on 4 users: per-user writes are
    // serialised by the store, so the expected quantities are exact.
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..30 {
                    let user = format!("u{}", (w + i) % 4);
                    let sku = format!("w{w}-s{}", i % 3);
                    store
                        .write(&user, &[add(&sku, 1)], None, &[])
                        .await
                        .unwrap();
                    acked.push((user, sku));
                }
                acked
            })
        })
        .collect();
    let mut expected = Expected::new();
    for writer in writers {
        for (user, sku) in writer.await.unwrap() {
            *expected.entry(user).or_default().entry(sku).or_default() += 1;
        }
    }
    let snapshot = store.snapshot().await.unwrap();
    assert_eq!(snapshot.carts, 4);

    // After the snapshot: a set, a remove, hints, and a merge from a peer.
    store
        .write(
            "u0",
            &[Op::Set {
                sku: "w0-s0".into(),
                qty: 7,
            }],
            None,
            &["r1-b".to_owned()],
        )
        .await
        .unwrap();
    expected.get_mut("u0").unwrap().insert("w0-s0".into(), 7);
    let seen = store.get("u1").unwrap().clock().clone();
    store
        .write(
            "u1",
            &[Op::Remove {
                sku: "w1-s0".into(),
                context: seen,
            }],
            None,
            &[],
        )
        .await
        .unwrap();
    expected.get_mut("u1").unwrap().remove("w1-s0");
    let mut peer = Cart::default();
    peer.add(casebook_amazon::cart::crdt::ActorId(7), "from-peer", 2, 99);
    let changed = store
        .merge(&[UserCart {
            user: "u9".into(),
            cart: peer,
        }])
        .await
        .unwrap();
    assert_eq!(changed, 1);
    expected
        .entry("u9".into())
        .or_default()
        .insert("from-peer".into(), 2);
    holds(&store, &expected);

    // Relay part of the events, then "crash": drop everything, no shutdown step.
    let relayed_before = store.relay().relay_once().await.unwrap();
    assert!(relayed_before > 0);
    drop(store);

    let (store, recovery) = CartStore::open(dir.path(), &config(), clock.shared()).unwrap();
    assert_eq!(
        store.actor(),
        actor,
        "the actor id belongs to the directory"
    );
    assert_eq!(recovery.snapshot_carts, 4);
    assert!(recovery.replayed >= 3, "{recovery:?}");
    holds(&store, &expected);
    assert_eq!(store.hints().pending("r1-b", 10), ["u0"]);

    // The relay resumes: every add's event is on the bus at least once, each id
    // counted once.
    while store.relay().relay_once().await.unwrap() > 0 {}
    let events = store.bus().read(EVENTS_TOPIC, 0, 10_000).await.unwrap();
    let mut added: BTreeMap<String, u64> = BTreeMap::new();
    let mut ids = std::collections::HashSet::new();
    for delivery in &events {
        if ids.insert(delivery.event.id.clone()) && delivery.event.event_type == "ItemAdded" {
            *added.entry(delivery.event.key.clone()).or_default() += 1;
        }
    }
    assert_eq!(
        added.values().sum::<u64>(),
        8 * 30,
        "one ItemAdded per acknowledged add"
    );
    assert!(
        events
            .iter()
            .any(|d| d.event.event_type == "QuantityChanged")
    );
    assert!(
        events
            .iter()
            .any(|d| d.event.event_type == "ItemRemoved" && d.event.payload["sku"] == "w1-s0")
    );

    // A handoff recorded, a snapshot, a restart: the hint stays gone and the log
    // was compacted only below the snapshot.
    store
        .hints_delivered("r1-b", &["u0".to_owned()])
        .await
        .unwrap();
    let report = store.snapshot().await.unwrap();
    assert_eq!(report.carts, 5);
    drop(store);
    let (store, recovery) = CartStore::open(dir.path(), &config(), clock.shared()).unwrap();
    assert_eq!(recovery.hints, 0);
    assert_eq!(recovery.replayed, 0, "nothing after the last snapshot");
    holds(&store, &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_writes_change_nothing_and_bad_states_are_refused_whole() {
    let config = || config(10);
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let (store, _) = CartStore::open(dir.path(), &config(), clock.shared()).unwrap();
    for i in 0..10 {
        store
            .write("u", &[add(&format!("s{i}"), 1)], None, &[])
            .await
            .unwrap();
    }
    let before = store.get("u").unwrap();
    let next = store.outbox().next_seq();
    // An eleventh line: the cart is full; two ops in one write, all or nothing.
    let err = store
        .write("u", &[add("s0", 1), add("s10", 1)], None, &[])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::CartFull { .. }), "{err}");
    let err = store
        .write("u", &[add("s0", 101)], None, &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Invalid { field: "qty", .. }),
        "{err}"
    );
    assert_eq!(store.get("u").unwrap(), before);
    assert_eq!(store.outbox().next_seq(), next, "nothing logged");

    // A merge with one state breaking the invariants is refused whole.
    let good = UserCart {
        user: "v".into(),
        cart: before.clone(),
    };
    let bad: Cart = serde_json::from_str(
        r#"{"clock":{"0000000000000001":1},"lines":{"x":[["0000000000000001",5,"a",1]]}}"#,
    )
    .unwrap();
    let err = store
        .merge(&[
            good,
            UserCart {
                user: "w".into(),
                cart: bad,
            },
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }), "{err}");
    assert!(store.get("v").is_none());
    // The same state again changes nothing and logs nothing.
    let next = store.outbox().next_seq();
    let same = UserCart {
        user: "u".into(),
        cart: before,
    };
    assert_eq!(store.merge(&[same]).await.unwrap(), 0);
    assert_eq!(store.outbox().next_seq(), next);
}
