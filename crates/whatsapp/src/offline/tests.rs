use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use casebook_kit::clock::{ManualClock, SharedClock, SystemClock};
use casebook_kit::wal::{Durability, WalConfig};
use proptest::prelude::*;

use super::*;

/// Small segments so a few hundred messages span several; `NoSync` because these
/// tests restart in-process (a process crash, not a power loss: see the kill -9 test).
fn config(shards: usize) -> OfflineConfig {
    OfflineConfig {
        shards,
        wal: WalConfig {
            segment_bytes: 16 * 1024,
            max_record_bytes: 2048,
            durability: Durability::NoSync,
            ..WalConfig::default()
        },
        ..OfflineConfig::default()
    }
}

fn open(dir: &Path, config: OfflineConfig, clock: &SharedClock) -> OfflineStore {
    OfflineStore::open(dir, config, clock.clone()).unwrap()
}

fn msg(recipient: &str, sender: &str, id: &str) -> NewMessage {
    NewMessage {
        id: id.into(),
        recipient: recipient.into(),
        sender: sender.into(),
        payload: Bytes::from(format!(
            "<message to='{recipient}' id='{id}'>{}</message>",
            "x".repeat(40)
        )),
    }
}

fn ids(store: &OfflineStore, recipient: &str) -> Vec<String> {
    store
        .pending(recipient, usize::MAX)
        .into_iter()
        .map(|m| m.id)
        .collect()
}

#[tokio::test]
async fn stored_messages_survive_a_restart_identical_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let clock = SystemClock::shared();
    let recipients = ["alice@example.net", "bob@example.net", "carol@example.org"];
    let before: Vec<Vec<OfflineMessage>> = {
        let store = open(dir.path(), config(4), &clock);
        for i in 0..60 {
            let recipient = recipients[i % 3];
            let seq = store
                .store(msg(recipient, "dave@example.com/phone", &format!("m{i}")))
                .await
                .unwrap();
            assert_eq!(
                store.pending(recipient, usize::MAX).last().unwrap().seq,
                seq
            );
        }
        assert_eq!(store.total_pending(), 60);
        recipients
            .iter()
            .map(|r| store.pending(r, usize::MAX))
            .collect()
    };
    for (r, pending) in recipients.iter().zip(&before) {
        let expected: Vec<String> = (0..60)
            .filter(|i| recipients[i % 3] == *r)
            .map(|i| format!("m{i}"))
            .collect();
        assert_eq!(
            pending.iter().map(|m| m.id.clone()).collect::<Vec<_>>(),
            expected
        );
        assert!(pending.windows(2).all(|w| w[0].seq < w[1].seq));
    }
    let store = open(dir.path(), config(4), &clock);
    for (r, pending) in recipients.iter().zip(&before) {
        assert_eq!(&store.pending(r, usize::MAX), pending);
        assert_eq!(store.count(r), 20);
    }
    assert_eq!(store.total_pending(), 60);
    assert_eq!(store.pending("alice@example.net", 5).len(), 5);
    let page = store.pending_after("alice@example.net", Some(before[0][4].seq), 3);
    assert_eq!(page, before[0][5..8].to_vec());
}

#[tokio::test]
async fn ack_removes_durably() {
    let dir = tempfile::tempdir().unwrap();
    let clock = SystemClock::shared();
    let r = "bob@example.net";
    {
        let store = open(dir.path(), config(2), &clock);
        for i in 0..20 {
            store
                .store(msg(r, "alice@x", &format!("m{i}")))
                .await
                .unwrap();
        }
        let pending = store.pending(r, usize::MAX);
        assert_eq!(store.ack(r, Ack::UpTo(pending[9].seq)).await.unwrap(), 10);
        // Acknowledging again removes nothing more.
        assert_eq!(store.ack(r, Ack::UpTo(pending[9].seq)).await.unwrap(), 0);
        let keys = vec![
            MessageKey {
                sender: "alice@x".into(),
                id: "m12".into(),
            },
            MessageKey {
                sender: "alice@x".into(),
                id: "m15".into(),
            },
            MessageKey {
                sender: "someone@else".into(),
                id: "m16".into(),
            },
        ];
        assert_eq!(store.ack(r, Ack::Messages(keys)).await.unwrap(), 2);
        assert_eq!(
            store
                .ack("nobody@x", Ack::UpTo(OfflineSeq(u64::MAX)))
                .await
                .unwrap(),
            0
        );
    }
    let expected = ["m10", "m11", "m13", "m14", "m16", "m17", "m18", "m19"];
    let store = open(dir.path(), config(2), &clock);
    assert_eq!(ids(&store, r), expected);
    assert_eq!(
        store.ack(r, Ack::UpTo(OfflineSeq(u64::MAX))).await.unwrap(),
        8
    );
    drop(store);
    let store = open(dir.path(), config(2), &clock);
    assert_eq!(store.count(r), 0);
    assert_eq!(store.total_pending(), 0);
    assert_eq!(store.used_bytes(), 0);
}

#[tokio::test]
async fn a_resent_message_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = SystemClock::shared();
    let r = "bob@example.net";
    {
        let store = open(dir.path(), config(2), &clock);
        let first = store.store(msg(r, "alice@x/a", "m1")).await.unwrap();
        assert_eq!(store.store(msg(r, "alice@x/a", "m1")).await.unwrap(), first);
        // Same id from another sender is another message.
        let other = store.store(msg(r, "carol@x/c", "m1")).await.unwrap();
        assert_ne!(other, first);
        // Concurrent resends of one message while it is being stored: one copy.
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let store = store.clone();
            tasks.spawn(async move { store.store(msg(r, "alice@x/a", "m2")).await.unwrap() });
        }
        let seqs: Vec<OfflineSeq> = tasks.join_all().await;
        assert!(seqs.iter().all(|s| *s == seqs[0]), "{seqs:?}");
        assert_eq!(ids(&store, r), ["m1", "m1", "m2"]);
    }
    let store = open(dir.path(), config(2), &clock);
    assert_eq!(ids(&store, r), ["m1", "m1", "m2"]);
    // After the recipient acknowledged it, a resend is a new pending copy (documented).
    store.ack(r, Ack::UpTo(OfflineSeq(u64::MAX))).await.unwrap();
    store.store(msg(r, "alice@x/a", "m1")).await.unwrap();
    assert_eq!(ids(&store, r), ["m1"]);
}

#[tokio::test]
async fn per_recipient_order_holds_across_shards_concurrency_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let clock = SystemClock::shared();
    let recipients: Vec<String> = (0..24).map(|i| format!("user{i}@example.net")).collect();
    for round in 0..3 {
        let store = open(dir.path(), config(8), &clock);
        let mut tasks = tokio::task::JoinSet::new();
        // One sending task per recipient, all at once, so shards interleave.
        for r in recipients.clone() {
            let store = store.clone();
            tasks.spawn(async move {
                for i in 0..10 {
                    store
                        .store(msg(&r, "sender@x", &format!("r{round}-{i}")))
                        .await
                        .unwrap();
                }
            });
        }
        tasks.join_all().await;
        let shards: std::collections::HashSet<usize> =
            recipients.iter().map(|r| store.shard_of(r)).collect();
        assert!(
            shards.len() > 4,
            "recipients spread over shards: {shards:?}"
        );
    }
    let store = open(dir.path(), config(8), &clock);
    for r in &recipients {
        let expected: Vec<String> = (0..3)
            .flat_map(|round| (0..10).map(move |i| format!("r{round}-{i}")))
            .collect();
        assert_eq!(ids(&store, r), expected, "{r}");
    }
}

/// Messages of `r` in one shard, enough to fill several 16 KiB segments.
async fn fill(store: &OfflineStore, r: &str, n: usize) -> Vec<OfflineSeq> {
    let mut seqs = Vec::new();
    for i in 0..n {
        seqs.push(
            store
                .store(msg(r, "alice@x", &format!("m{i}")))
                .await
                .unwrap(),
        );
    }
    seqs
}

#[tokio::test]
async fn compaction_keeps_every_pending_message_and_frees_segments() {
    let dir = tempfile::tempdir().unwrap();
    let clock = SystemClock::shared();
    let r = "bob@example.net";
    let store = open(dir.path(), config(1), &clock);
    let seqs = fill(&store, r, 600).await;
    let segments_before = store.segment_counts()[0];
    assert!(segments_before >= 4, "{segments_before} segments");
    // Keep a few early messages (they pin the oldest segment) and every 50th.
    let keep: Vec<usize> = (0..600).filter(|i| *i < 3 || i % 50 == 0).collect();
    let acked: Vec<MessageKey> = (0..600)
        .filter(|i| !keep.contains(i))
        .map(|i| MessageKey {
            sender: "alice@x".into(),
            id: format!("m{i}"),
        })
        .collect();
    assert_eq!(
        store.ack(r, Ack::Messages(acked)).await.unwrap(),
        600 - keep.len()
    );
    let expected: Vec<String> = keep.iter().map(|i| format!("m{i}")).collect();
    let mut rewritten = 0;
    for _ in 0..20 {
        let report = store.compact_step().await.unwrap();
        assert_eq!(report.shard, 0);
        rewritten += report.rewritten;
        assert_eq!(ids(&store, r), expected);
    }
    assert!(
        rewritten >= keep.len() - 1,
        "live messages were copied forward: {rewritten}"
    );
    let segments_after = store.segment_counts()[0];
    assert!(
        segments_after < segments_before,
        "{segments_after} >= {segments_before}"
    );
    assert!(segments_after <= 2, "{segments_after}");
    // Seqs (and so the order) did not change when the messages moved.
    let pending = store.pending(r, usize::MAX);
    assert_eq!(
        pending.iter().map(|m| m.seq).collect::<Vec<_>>(),
        keep.iter().map(|&i| seqs[i]).collect::<Vec<_>>()
    );
    drop(store);
    let store = open(dir.path(), config(1), &clock);
    assert_eq!(store.pending(r, usize::MAX), pending);
    // Acknowledge everything: compaction drops every segment but the active one.
    store.ack(r, Ack::UpTo(OfflineSeq(u64::MAX))).await.unwrap();
    let report = store.compact_step().await.unwrap();
    assert_eq!(report.rewritten, 0);
    assert_eq!(store.segment_counts(), [1]);
    drop(store);
    assert_eq!(open(dir.path(), config(1), &clock).count(r), 0);
}

#[tokio::test]
async fn a_fully_live_oldest_segment_is_not_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let clock = SystemClock::shared();
    let store = open(dir.path(), config(1), &clock);
    fill(&store, "bob@example.net", 400).await;
    let segments = store.segment_counts()[0];
    let report = store.compact_step().await.unwrap();
    assert_eq!((report.rewritten, report.segments_freed), (0, 0));
    assert_eq!(store.segment_counts()[0], segments);
}

#[tokio::test]
async fn retention_expires_old_messages_on_the_injected_clock() {
    let dir = tempfile::tempdir().unwrap();
    let manual = ManualClock::new();
    let clock = manual.shared();
    let r = "bob@example.net";
    let cfg = || OfflineConfig {
        retention: Duration::from_secs(30 * 24 * 3600),
        ..config(1)
    };
    let store = open(dir.path(), cfg(), &clock);
    store.store(msg(r, "alice@x", "old")).await.unwrap();
    manual.advance(Duration::from_secs(29 * 24 * 3600));
    store.store(msg(r, "alice@x", "new")).await.unwrap();
    assert_eq!(ids(&store, r), ["old", "new"]);
    let report = store.compact_step().await.unwrap();
    assert_eq!(report.expired, 0);
    manual.advance(Duration::from_secs(2 * 24 * 3600));
    // Past retention: no longer delivered, even before compaction tombstones it.
    assert_eq!(ids(&store, r), ["new"]);
    assert_eq!(store.count(r), 2);
    let report = store.compact_step().await.unwrap();
    assert_eq!(report.expired, 1);
    assert_eq!(store.count(r), 1);
    drop(store);
    let store = open(dir.path(), cfg(), &clock);
    assert_eq!(ids(&store, r), ["new"]);
    manual.advance(Duration::from_secs(29 * 24 * 3600));
    drop(store);
    // Expired while the store was closed: not loaded at all.
    let store = open(dir.path(), cfg(), &clock);
    assert_eq!(store.count(r), 0);
    assert_eq!(store.used_bytes(), 0);
}

#[tokio::test]
async fn caps_refuse_with_a_precise_error_and_free_up_on_ack() {
    let dir = tempfile::tempdir().unwrap();
    let clock = SystemClock::shared();
    let r = "bob@example.net";
    let store = open(
        dir.path(),
        OfflineConfig {
            max_per_recipient: 3,
            ..config(2)
        },
        &clock,
    );
    for i in 0..3 {
        store.store(msg(r, "a@x", &format!("m{i}"))).await.unwrap();
    }
    match store.store(msg(r, "a@x", "m3")).await {
        Err(OfflineError::RecipientFull { recipient, cap: 3 }) => assert_eq!(recipient, r),
        other => panic!("expected RecipientFull, got {other:?}"),
    }
    // A resend of a pending message is not refused: it is already stored.
    store.store(msg(r, "a@x", "m0")).await.unwrap();
    store.store(msg("carol@x", "a@x", "m3")).await.unwrap();
    let first = store.pending(r, 1)[0].seq;
    store.ack(r, Ack::UpTo(first)).await.unwrap();
    store.store(msg(r, "a@x", "m3")).await.unwrap();
    drop(store);

    let dir = tempfile::tempdir().unwrap();
    let one = cost(
        "bob@example.net",
        "a@x",
        "m0",
        msg(r, "a@x", "m0").payload.len(),
    );
    let store = open(
        dir.path(),
        OfflineConfig {
            max_total_bytes: 2 * one + 1,
            ..config(2)
        },
        &clock,
    );
    store.store(msg(r, "a@x", "m0")).await.unwrap();
    store.store(msg(r, "a@x", "m1")).await.unwrap();
    assert_eq!(store.used_bytes(), 2 * one);
    match store.store(msg(r, "a@x", "m2")).await {
        Err(OfflineError::StoreFull { needed, used, cap }) => {
            assert_eq!((needed, used, cap), (one, 2 * one, 2 * one + 1));
        }
        other => panic!("expected StoreFull, got {other:?}"),
    }
    // A refusal leaves no reservation behind.
    assert_eq!(store.used_bytes(), 2 * one);
    assert_eq!(store.count(r), 2);
}

#[tokio::test]
async fn bad_input_and_bad_config_are_precise_errors() {
    let dir = tempfile::tempdir().unwrap();
    let clock = SystemClock::shared();
    let store = open(dir.path(), config(2), &clock);
    let cases = [
        (msg("", "a@x", "m"), "recipient"),
        (msg("bob@x/phone", "a@x", "m"), "recipient"),
        (msg("bob@x", "", "m"), "sender"),
        (msg("bob@x", "a@x", ""), "id"),
        (msg("bob@x", "a@x", &"i".repeat(MAX_ID_BYTES + 1)), "id"),
        (msg("bob@x", "a\nb", "m"), "sender"),
        (
            NewMessage {
                payload: Bytes::from(vec![b'x'; 4096]),
                ..msg("bob@x", "a@x", "m")
            },
            "payload",
        ),
    ];
    for (bad, expected) in cases {
        match store.store(bad).await {
            Err(OfflineError::Invalid { field, .. }) => assert_eq!(field, expected),
            other => panic!("expected Invalid {{ field: {expected} }}, got {other:?}"),
        }
    }
    assert_eq!(store.total_pending(), 0);
    drop(store);
    // The shard count is fixed once the store exists.
    assert!(matches!(
        OfflineStore::open(dir.path(), config(4), clock.clone()),
        Err(OfflineError::Layout { .. })
    ));
    for bad in [
        OfflineConfig {
            shards: 0,
            ..config(1)
        },
        OfflineConfig {
            max_per_recipient: 0,
            ..config(1)
        },
        OfflineConfig {
            retention: Duration::ZERO,
            ..config(1)
        },
        OfflineConfig {
            compact_batch: 0,
            ..config(1)
        },
    ] {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            OfflineStore::open(dir.path(), bad, clock.clone()),
            Err(OfflineError::InvalidConfig(_))
        ));
    }
}

#[derive(Debug, Clone)]
enum Op {
    Store {
        recipient: usize,
        sender: usize,
        id: usize,
        len: usize,
    },
    AckUpTo {
        recipient: usize,
        nth: usize,
    },
    AckKeys {
        recipient: usize,
        sender: usize,
        ids: Vec<usize>,
    },
    Restart,
    Compact,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3usize, 0..2usize, 0..8usize, 0..300usize)
            .prop_map(|(recipient, sender, id, len)| Op::Store { recipient, sender, id, len }),
        2 => (0..3usize, 0..8usize).prop_map(|(recipient, nth)| Op::AckUpTo { recipient, nth }),
        1 => (0..3usize, 0..2usize, proptest::collection::vec(0..8usize, 0..4))
            .prop_map(|(recipient, sender, ids)| Op::AckKeys { recipient, sender, ids }),
        1 => Just(Op::Restart),
        2 => Just(Op::Compact),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random stores, acks, restarts and compactions agree with a list per recipient.
    #[test]
    fn store_ack_restart_compact_match_a_model(ops in proptest::collection::vec(op(), 1..60)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let clock = SystemClock::shared();
            // Tiny segments so compaction has whole segments to free and rewrite.
            let cfg = || OfflineConfig {
                wal: WalConfig { segment_bytes: 4096, max_record_bytes: 1024, durability: Durability::NoSync, ..WalConfig::default() },
                compact_batch: 4,
                ..config(2)
            };
            let recipients = ["r0@x", "r1@x", "r2@x"];
            let senders = ["s0@y", "s1@y"];
            let mut store = open(dir.path(), cfg(), &clock);
            // recipient → pending (sender, id, payload), in order.
            let mut model: HashMap<usize, Vec<(usize, usize, Vec<u8>)>> = HashMap::new();
            for op in ops {
                match op {
                    Op::Store { recipient, sender, id, len } => {
                        let payload = vec![b'a' + (id as u8); len];
                        store.store(NewMessage {
                            id: format!("i{id}"),
                            recipient: recipients[recipient].into(),
                            sender: senders[sender].into(),
                            payload: Bytes::from(payload.clone()),
                        }).await.unwrap();
                        let queue = model.entry(recipient).or_default();
                        if !queue.iter().any(|(s, i, _)| (*s, *i) == (sender, id)) {
                            queue.push((sender, id, payload));
                        }
                    }
                    Op::AckUpTo { recipient, nth } => {
                        let pending = store.pending(recipients[recipient], usize::MAX);
                        let queue = model.entry(recipient).or_default();
                        if let Some(m) = pending.get(nth) {
                            prop_assert_eq!(store.ack(recipients[recipient], Ack::UpTo(m.seq)).await.unwrap(), nth + 1);
                            queue.drain(..=nth);
                        }
                    }
                    Op::AckKeys { recipient, sender, ids } => {
                        let keys = ids.iter().map(|i| MessageKey { sender: senders[sender].into(), id: format!("i{i}") }).collect();
                        let queue = model.entry(recipient).or_default();
                        let before = queue.len();
                        queue.retain(|(s, i, _)| !(*s == sender && ids.contains(i)));
                        prop_assert_eq!(store.ack(recipients[recipient], Ack::Messages(keys)).await.unwrap(), before - queue.len());
                    }
                    Op::Restart => {
                        drop(store);
                        store = open(dir.path(), cfg(), &clock);
                    }
                    Op::Compact => {
                        store.compact_step().await.unwrap();
                    }
                }
                for (r, name) in recipients.iter().enumerate() {
                    let got: Vec<(String, String, Vec<u8>)> = store
                        .pending(name, usize::MAX)
                        .into_iter()
                        .map(|m| (m.sender, m.id, m.payload.to_vec()))
                        .collect();
                    let want: Vec<(String, String, Vec<u8>)> = model
                        .get(&r)
                        .map(|q| q.iter().map(|(s, i, p)| (senders[*s].to_string(), format!("i{i}"), p.clone())).collect())
                        .unwrap_or_default();
                    prop_assert_eq!(got, want);
                }
            }
            Ok(())
        })?;
    }
}

/// Acks, compaction and new stores racing on one shard leave memory and disk in
/// agreement: what is pending after a restart is exactly what was pending before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_acks_compaction_and_stores_agree_with_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = SystemClock::shared();
    let cfg = || OfflineConfig {
        compact_batch: 16,
        ..config(1)
    };
    let recipients = ["a@x", "b@x", "c@x"];
    let store = open(dir.path(), cfg(), &clock);
    for i in 0..300 {
        store
            .store(msg(recipients[i % 3], "s@y", &format!("m{i}")))
            .await
            .unwrap();
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (n, r) in recipients.into_iter().enumerate() {
        let store = store.clone();
        tasks.spawn(async move {
            // Acknowledge two of every three messages, a few at a time.
            for i in (n..300).step_by(3).filter(|i| i % 2 == 0 || i % 5 == 0) {
                let key = MessageKey {
                    sender: "s@y".into(),
                    id: format!("m{i}"),
                };
                store.ack(r, Ack::Messages(vec![key])).await.unwrap();
            }
            0
        });
    }
    {
        let store = store.clone();
        tasks.spawn(async move {
            for i in 300..400 {
                store
                    .store(msg(recipients[i % 3], "s@y", &format!("m{i}")))
                    .await
                    .unwrap();
            }
            0
        });
    }
    {
        let store = store.clone();
        tasks.spawn(async move {
            let mut rewritten = 0;
            for _ in 0..40 {
                rewritten += store.compact_step().await.unwrap().rewritten;
            }
            rewritten
        });
    }
    let mut rewritten: usize = tasks.join_all().await.into_iter().sum();
    for _ in 0..40 {
        rewritten += store.compact_step().await.unwrap().rewritten;
    }
    assert!(rewritten > 0, "compaction copied messages forward");
    let before: Vec<Vec<OfflineMessage>> = recipients
        .iter()
        .map(|r| store.pending(r, usize::MAX))
        .collect();
    let expected = (0..400)
        .filter(|i| i >= &300 || !(i % 2 == 0 || i % 5 == 0))
        .count();
    assert_eq!(before.iter().map(Vec::len).sum::<usize>(), expected);
    assert_eq!(store.total_pending() as usize, expected);
    drop(store);
    let store = open(dir.path(), cfg(), &clock);
    let after: Vec<Vec<OfflineMessage>> = recipients
        .iter()
        .map(|r| store.pending(r, usize::MAX))
        .collect();
    assert_eq!(after, before);
}

/// Compaction copies messages forward only while no ack or expiry is writing
/// tombstones (they hold the gate shared), so a copy never lands after the
/// tombstone of its message and revives it on replay.
#[tokio::test(flavor = "current_thread")]
async fn compaction_waits_for_acks_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let clock = SystemClock::shared();
    let store = open(dir.path(), config(1), &clock);
    store.store(msg("bob@x", "a@x", "m0")).await.unwrap();
    let ack_in_flight = store.inner.shards[0].gate.read().await;
    let compaction = tokio::spawn({
        let store = store.clone();
        async move { store.compact_step().await.unwrap() }
    });
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
    assert!(
        !compaction.is_finished(),
        "compaction ran while an ack held the gate"
    );
    drop(ack_in_flight);
    assert_eq!(compaction.await.unwrap().shard, 0);
}

/// A store whose record is durable but not yet indexed must not have its segment
/// truncated by a compaction running in between (it would be lost on restart).
#[tokio::test(flavor = "current_thread")]
async fn compaction_keeps_the_segment_of_a_store_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let clock = SystemClock::shared();
    let store = open(dir.path(), config(1), &clock);
    let wal = store.inner.shards[0].wal.clone();
    let before = wal.next_seq();
    let pause = Arc::new(tokio::sync::Semaphore::new(0));
    *store.inner.pause_after_append.lock() = Some(pause.clone());
    let in_flight = tokio::spawn({
        let store = store.clone();
        async move { store.store(msg("bob@x", "a@x", "m0")).await.unwrap() }
    });
    // The record becomes durable; the store is parked before its index update.
    while wal.next_seq() == before {
        tokio::task::yield_now().await;
    }
    // Other records (valid tombstones of nobody) push it out of the active segment.
    let filler = wal.clone();
    std::thread::spawn(move || {
        for _ in 0..40 {
            filler
                .append_blocking(record::encode_removed("nobody@x", &[0; 100]))
                .unwrap();
        }
    })
    .join()
    .unwrap();
    assert!(wal.segment_starts().len() > 1);
    assert!(!in_flight.is_finished());
    store.compact_shard(0).await.unwrap();
    pause.add_permits(1);
    let seq = in_flight.await.unwrap();
    drop((store, wal));
    let store = open(dir.path(), config(1), &clock);
    assert_eq!(
        store
            .pending("bob@x", 10)
            .iter()
            .map(|m| m.seq)
            .collect::<Vec<_>>(),
        [seq]
    );
    assert!(matches!(
        store.compact_shard(1).await,
        Err(OfflineError::Invalid { field: "shard", .. })
    ));
}
