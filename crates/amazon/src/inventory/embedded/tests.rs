use std::time::Duration;

use casebook_kit::clock::ManualClock;
use casebook_kit::idempotency::{Fingerprint, IdempotencyKey};
use casebook_kit::wal::Durability;

use super::*;
use crate::inventory::model::{KeyScope, Keyed, Line};

fn config() -> EmbeddedConfig {
    EmbeddedConfig {
        shards: 8,
        max_reservations: 10_000,
        max_keys: 10_000,
        retention: Duration::from_secs(3600),
        snapshot_after_records: 1_000,
        wal: WalConfig {
            segment_bytes: 16 * 1024,
            max_record_bytes: 8 * 1024,
            durability: Durability::NoSync,
            ..WalConfig::default()
        },
    }
}

fn sku(s: &str) -> Sku {
    Sku::parse(s).unwrap()
}

fn request(key: &str, lines: &[(&str, u32)], ttl_secs: u64) -> ReserveRequest {
    ReserveRequest {
        key: Keyed {
            scope: KeyScope::Reservation,
            key: IdempotencyKey::parse(key).unwrap(),
            fingerprint: Fingerprint::of(&[format!("{lines:?}/{ttl_secs}").as_bytes()]),
        },
        lines: lines
            .iter()
            .map(|(s, q)| Line {
                sku: sku(s),
                qty: *q,
            })
            .collect(),
        ttl: Duration::from_secs(ttl_secs),
    }
}

fn open(dir: &Path, clock: &ManualClock) -> WalInventory {
    WalInventory::open(dir, config(), clock.shared()).unwrap()
}

async fn level(store: &WalInventory, s: &str) -> (u64, u64, u64) {
    let l = store.stock(&sku(s)).await.unwrap();
    (l.available, l.reserved, l.confirmed)
}

fn reserved(outcome: &Replayable<ReserveOutcome>) -> Vec<Reservation> {
    match &outcome.value {
        ReserveOutcome::Reserved(made) => made.clone(),
        other => panic!("expected a reservation, got {other:?}"),
    }
}

#[tokio::test]
async fn reserves_until_short_and_never_below_zero() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let store = open(dir.path(), &clock);
    store.set_stock(&sku("tea"), 5).await.unwrap();
    let first = store
        .reserve(request("a", &[("tea", 3)], 60))
        .await
        .unwrap();
    assert!(!first.replayed);
    let made = reserved(&first);
    assert_eq!(made[0].qty, 3);
    assert_eq!(made[0].state, ReservationState::Active);
    let short = store
        .reserve(request("b", &[("tea", 3)], 60))
        .await
        .unwrap();
    assert_eq!(
        short.value,
        ReserveOutcome::Insufficient {
            sku: sku("tea"),
            requested: 3,
            available: 2
        }
    );
    assert_eq!(level(&store, "tea").await, (2, 3, 0));
    assert_eq!(
        store
            .reserve(request("c", &[("coffee", 1)], 60))
            .await
            .unwrap_err(),
        InventoryError::UnknownSku(sku("coffee"))
    );
    // The refused key recorded nothing: it is free for another request.
    store.set_stock(&sku("coffee"), 1).await.unwrap();
    reserved(
        &store
            .reserve(request("c", &[("coffee", 1), ("tea", 2)], 60))
            .await
            .unwrap(),
    );
    assert_eq!(level(&store, "tea").await, (0, 5, 0));
    assert_eq!(level(&store, "coffee").await, (0, 1, 0));
}

#[tokio::test]
async fn a_key_replays_its_first_answer_and_refuses_another_request() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let store = open(dir.path(), &clock);
    store.set_stock(&sku("tea"), 4).await.unwrap();
    let first = store
        .reserve(request("k", &[("tea", 3)], 60))
        .await
        .unwrap();
    let again = store
        .reserve(request("k", &[("tea", 3)], 60))
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.value, first.value);
    assert_eq!(level(&store, "tea").await, (1, 3, 0), "one effect");
    assert_eq!(
        store
            .reserve(request("k", &[("tea", 1)], 60))
            .await
            .unwrap_err(),
        InventoryError::KeyReused
    );
    // A refusal is an answer too: replayed even once stock is back.
    let short = store
        .reserve(request("s", &[("tea", 2)], 60))
        .await
        .unwrap();
    assert!(matches!(short.value, ReserveOutcome::Insufficient { .. }));
    store.set_stock(&sku("tea"), 100).await.unwrap();
    let replayed = store
        .reserve(request("s", &[("tea", 2)], 60))
        .await
        .unwrap();
    assert!(replayed.replayed);
    assert_eq!(replayed.value, short.value);
    // The same key string in another scope is another key.
    let mut checkout = request("k", &[("tea", 1)], 60);
    checkout.key.scope = KeyScope::Checkout;
    assert!(!store.reserve(checkout).await.unwrap().replayed);
}

#[tokio::test]
async fn everything_acknowledged_comes_back_after_reopen_with_keys_and_ids() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let (first, released, confirmed) = {
        let store = open(dir.path(), &clock);
        store.set_stock(&sku("tea"), 10).await.unwrap();
        let first = store
            .reserve(request("a", &[("tea", 2)], 60))
            .await
            .unwrap();
        let r2 = reserved(
            &store
                .reserve(request("b", &[("tea", 3)], 60))
                .await
                .unwrap(),
        );
        let r3 = reserved(
            &store
                .reserve(request("c", &[("tea", 4)], 60))
                .await
                .unwrap(),
        );
        let released = store.release(r2[0].id).await.unwrap();
        let confirmed = store
            .confirm(&[r3[0].id], Some("ord_1"), TtlRule::Enforce)
            .await
            .unwrap();
        assert_eq!(level(&store, "tea").await, (4, 2, 4));
        (first, released, confirmed)
    };
    let store = open(dir.path(), &clock);
    assert_eq!(store.recovery().replayed, 6);
    assert_eq!(level(&store, "tea").await, (4, 2, 4));
    let again = store
        .reserve(request("a", &[("tea", 2)], 60))
        .await
        .unwrap();
    assert!(again.replayed, "the key survived with its reservation");
    assert_eq!(again.value, first.value);
    assert_eq!(store.reservation(released.id).await.unwrap(), released);
    assert_eq!(
        store
            .reservation(confirmed[0].id)
            .await
            .unwrap()
            .order_id
            .as_deref(),
        Some("ord_1")
    );
    let next = reserved(
        &store
            .reserve(request("d", &[("tea", 1)], 60))
            .await
            .unwrap(),
    );
    assert!(next[0].id > confirmed[0].id, "ids continue after a restart");
}

#[tokio::test]
async fn a_snapshot_bounds_the_replay_and_cuts_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let mut keys = Vec::new();
    {
        let store = open(dir.path(), &clock);
        for n in 0..50 {
            store
                .set_stock(&sku(&format!("s{n}")), 1_000)
                .await
                .unwrap();
        }
        for n in 0..400 {
            let key = format!("key-{n}");
            let outcome = store
                .reserve(request(&key, &[(&format!("s{}", n % 50), 1)], 60))
                .await
                .unwrap();
            keys.push((key, n % 50, outcome.value));
        }
        let at = store.snapshot().await.unwrap();
        assert_eq!(at, 450);
        assert!(
            store.inner.wal.first_seq() > 0,
            "segments before the snapshot are gone"
        );
        for n in 0..5 {
            store
                .set_stock(&sku(&format!("s{n}")), 2_000)
                .await
                .unwrap();
        }
    }
    let store = open(dir.path(), &clock);
    let recovery = store.recovery();
    assert_eq!(recovery.snapshot_at, Some(450));
    assert_eq!(recovery.replayed, 5);
    assert_eq!(recovery.reservations, 400);
    assert_eq!(level(&store, "s0").await, (2_000, 8, 0));
    assert_eq!(level(&store, "s7").await, (992, 8, 0));
    for (key, s, value) in keys {
        let again = store
            .reserve(request(&key, &[(&format!("s{s}"), 1)], 60))
            .await
            .unwrap();
        assert!(again.replayed);
        assert_eq!(again.value, value);
    }
}

#[tokio::test]
async fn reservations_expire_on_the_injected_clock_swept_or_lazily() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let store = open(dir.path(), &clock);
    store.set_stock(&sku("tea"), 3).await.unwrap();
    let short = reserved(
        &store
            .reserve(request("a", &[("tea", 1)], 10))
            .await
            .unwrap(),
    );
    let long = reserved(
        &store
            .reserve(request("b", &[("tea", 2)], 100))
            .await
            .unwrap(),
    );
    clock.advance(Duration::from_secs(9));
    assert_eq!(store.expire_due(100).await.unwrap(), 0, "not yet");
    clock.advance(Duration::from_secs(1));
    assert_eq!(store.expire_due(100).await.unwrap(), 1);
    assert_eq!(level(&store, "tea").await, (1, 2, 0));
    assert_eq!(
        store.reservation(short[0].id).await.unwrap().state,
        ReservationState::Expired
    );
    assert_eq!(
        store
            .confirm(&[short[0].id], None, TtlRule::Enforce)
            .await
            .unwrap_err(),
        InventoryError::Conflict {
            id: short[0].id,
            state: ReservationState::Expired
        }
    );
    // Due but not swept: a request short of stock expires it on its way.
    clock.advance(Duration::from_secs(90));
    let third = store
        .reserve(request("c", &[("tea", 3)], 10))
        .await
        .unwrap();
    assert_eq!(reserved(&third)[0].qty, 3);
    assert_eq!(
        store.reservation(long[0].id).await.unwrap().state,
        ReservationState::Expired
    );
    // Looking at a due reservation expires it, recorded.
    clock.advance(Duration::from_secs(10));
    let third_id = reserved(&third)[0].id;
    assert_eq!(
        store.reservation(third_id).await.unwrap().state,
        ReservationState::Expired
    );
    drop(store);
    let store = open(dir.path(), &clock);
    assert_eq!(level(&store, "tea").await, (3, 0, 0));
    assert_eq!(
        store.reservation(third_id).await.unwrap().state,
        ReservationState::Expired
    );
}

#[tokio::test]
async fn confirm_and_release_follow_the_state_rules() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let store = open(dir.path(), &clock);
    store.set_stock(&sku("tea"), 10).await.unwrap();
    let mut ids = Vec::new();
    for n in 0..4 {
        let made = reserved(
            &store
                .reserve(request(&format!("k{n}"), &[("tea", 1)], 10))
                .await
                .unwrap(),
        );
        ids.push(made[0].id);
    }
    let conflict = |id, state| InventoryError::Conflict { id, state };
    // Confirming twice answers the same state; releasing a confirmed one is refused.
    let once = store
        .confirm(&[ids[0]], None, TtlRule::Enforce)
        .await
        .unwrap();
    let twice = store
        .confirm(&[ids[0]], None, TtlRule::Enforce)
        .await
        .unwrap();
    assert_eq!(once, twice);
    assert_eq!(once[0].state, ReservationState::Confirmed);
    assert_eq!(
        store.release(ids[0]).await.unwrap_err(),
        conflict(ids[0], ReservationState::Confirmed)
    );
    // Releasing twice answers the same state; confirming a released one is refused.
    assert_eq!(
        store.release(ids[1]).await.unwrap().state,
        ReservationState::Released
    );
    assert_eq!(
        store.release(ids[1]).await.unwrap().state,
        ReservationState::Released
    );
    assert_eq!(
        store
            .confirm(&[ids[1]], None, TtlRule::Enforce)
            .await
            .unwrap_err(),
        conflict(ids[1], ReservationState::Released)
    );
    // All or none: one released id refuses the whole confirm.
    assert!(
        store
            .confirm(&[ids[2], ids[1]], Some("ord_x"), TtlRule::Enforce)
            .await
            .is_err()
    );
    assert_eq!(
        store.reservation(ids[2]).await.unwrap().state,
        ReservationState::Active
    );
    // Past its TTL: the API's confirm refuses (and expires it); a committed
    // order's confirm honours it while it is still active.
    clock.advance(Duration::from_secs(11));
    assert_eq!(
        store
            .confirm(&[ids[2]], None, TtlRule::Enforce)
            .await
            .unwrap_err(),
        conflict(ids[2], ReservationState::Expired)
    );
    let honoured = store
        .confirm(&[ids[3]], Some("ord_3"), TtlRule::HonourCommitted)
        .await
        .unwrap();
    assert_eq!(honoured[0].state, ReservationState::Confirmed);
    assert_eq!(
        store
            .confirm(&[ids[3]], Some("ord_other"), TtlRule::HonourCommitted)
            .await
            .unwrap_err(),
        conflict(ids[3], ReservationState::Confirmed),
        "confirmed for another order"
    );
    assert_eq!(level(&store, "tea").await, (8, 0, 2));
    assert_eq!(
        store.reservation(ReservationId(999)).await.unwrap_err(),
        InventoryError::UnknownReservation(ReservationId(999))
    );
}

#[tokio::test]
async fn a_storage_error_fails_closed_and_leaves_no_unrecorded_decrement() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let small = EmbeddedConfig {
        wal: WalConfig {
            // A key this long makes the record too large: the append is refused,
            // as a failed write would be.
            max_record_bytes: 120,
            segment_bytes: 4096,
            durability: Durability::NoSync,
            ..WalConfig::default()
        },
        ..config()
    };
    {
        let store = WalInventory::open(dir.path(), small.clone(), clock.shared()).unwrap();
        store.set_stock(&sku("tea"), 5).await.unwrap();
        let long_key = "x".repeat(200);
        assert!(matches!(
            store
                .reserve(request(&long_key, &[("tea", 2)], 60))
                .await
                .unwrap_err(),
            InventoryError::Unavailable(_)
        ));
        assert!(store.failure().is_some());
        // Closed: nothing is answered from a state the log does not hold.
        assert!(matches!(
            store.stock(&sku("tea")).await.unwrap_err(),
            InventoryError::Unavailable(_)
        ));
        assert!(matches!(
            store
                .reserve(request("ok", &[("tea", 1)], 60))
                .await
                .unwrap_err(),
            InventoryError::Unavailable(_)
        ));
    }
    let store = WalInventory::open(dir.path(), small, clock.shared()).unwrap();
    assert_eq!(level(&store, "tea").await, (5, 0, 0));
}

#[tokio::test]
async fn bounds_refuse_new_reservations_and_keys_rather_than_evict() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let bounded = EmbeddedConfig {
        max_reservations: 2,
        max_keys: 4,
        ..config()
    };
    let store = WalInventory::open(dir.path(), bounded, clock.shared()).unwrap();
    store.set_stock(&sku("tea"), 10).await.unwrap();
    let a = reserved(
        &store
            .reserve(request("a", &[("tea", 1)], 10))
            .await
            .unwrap(),
    );
    // A refusal for want of stock decides its key too.
    for key in ["e", "g"] {
        assert!(matches!(
            store
                .reserve(request(key, &[("tea", 50)], 10))
                .await
                .unwrap()
                .value,
            ReserveOutcome::Insufficient { .. }
        ));
    }
    reserved(
        &store
            .reserve(request("b", &[("tea", 1)], 10))
            .await
            .unwrap(),
    );
    assert_eq!(
        store
            .reserve(request("c", &[("tea", 1)], 10))
            .await
            .unwrap_err(),
        InventoryError::Full("idempotency key")
    );
    store.release(a[0].id).await.unwrap();
    clock.advance(Duration::from_secs(3601));
    assert_eq!(store.purge(), (1, 4), "a released reservation, every key");
    reserved(
        &store
            .reserve(request("c", &[("tea", 1)], 10))
            .await
            .unwrap(),
    );
    assert_eq!(
        store
            .reserve(request("d", &[("tea", 1)], 10))
            .await
            .unwrap_err(),
        InventoryError::Full("reservation"),
        "b and c are held"
    );
    assert_eq!(
        store.reservation(a[0].id).await.unwrap_err(),
        InventoryError::UnknownReservation(a[0].id),
        "forgotten after the retention"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reservations_never_oversell_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let store = open(dir.path(), &clock);
    for s in ["hot", "warm", "cold"] {
        store.set_stock(&sku(s), 100).await.unwrap();
    }
    let mut tasks = Vec::new();
    for client in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut won = Vec::new();
            for n in 0..40 {
                let s = ["hot", "hot", "warm", "cold"][(client + n) % 4];
                let key = format!("c{client}-{n}");
                let lines = [(s, 1 + (n % 3) as u32)];
                let outcome = store.reserve(request(&key, &lines, 60)).await.unwrap();
                // A retry of the same key: the same answer, no second effect.
                let again = store.reserve(request(&key, &lines, 60)).await.unwrap();
                assert_eq!(again.value, outcome.value);
                if let ReserveOutcome::Reserved(made) = outcome.value {
                    won.extend(made);
                }
            }
            won
        }));
    }
    let mut won = Vec::new();
    for task in tasks {
        won.extend(task.await.unwrap());
    }
    for s in ["hot", "warm", "cold"] {
        let held: u64 = won
            .iter()
            .filter(|r| r.sku.as_str() == s)
            .map(|r| u64::from(r.qty))
            .sum();
        let (available, reserved, confirmed) = level(&store, s).await;
        assert_eq!(
            reserved, held,
            "{s}: every unit held is a known reservation"
        );
        assert_eq!(available + reserved + confirmed, 100, "{s}");
    }
    let before: Vec<_> = futures::future::join_all(["hot", "warm", "cold"].map(|s| {
        let store = store.clone();
        async move { level(&store, s).await }
    }))
    .await;
    drop(store);
    let store = open(dir.path(), &clock);
    for (s, before) in ["hot", "warm", "cold"].iter().zip(before) {
        assert_eq!(level(&store, s).await, before);
    }
}
