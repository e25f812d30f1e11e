//! `kill -9` the offline store under load — stores, resends, recipients acking and
//! compaction all running — then restart: every message whose store returned (what
//! the server would acknowledge to the sender) and that its recipient did not
//! acknowledge is pending exactly once, in order; every acknowledged one is gone;
//! acknowledging the rest removes them for good.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use bytes::Bytes;
use casebook_kit::clock::SystemClock;
use casebook_kit::wal::{Durability, WalConfig};
use casebook_whatsapp::offline::{
    Ack, MessageKey, NewMessage, OfflineConfig, OfflineSeq, OfflineStore,
};

const CHILD_DIR_ENV: &str = "CASEBOOK_OFFLINE_CRASH_CHILD_DIR";
const CHILD_ROUND_ENV: &str = "CASEBOOK_OFFLINE_CRASH_ROUND";
const SENDERS: usize = 16;
const RECIPIENTS: usize = 12;
const ACKS_BEFORE_KILL: usize = 2000;
/// Recipients below this one come online during the run and acknowledge what they
/// get, so compaction has dead records to clean while the child is killed.
const ONLINE_RECIPIENTS: usize = 8;

fn config() -> OfflineConfig {
    OfflineConfig {
        shards: 4,
        wal: WalConfig {
            // Small segments so the kill can land mid-rotation too.
            segment_bytes: 32 * 1024,
            max_record_bytes: 4096,
            durability: Durability::Sync,
            ..WalConfig::default()
        },
        max_per_recipient: 100_000,
        ..OfflineConfig::default()
    }
}

fn recipient(n: usize) -> String {
    format!("user{n}@example.net")
}

fn message(round: u32, sender: usize, i: u64) -> NewMessage {
    NewMessage {
        id: format!("{round}-{i}"),
        recipient: recipient((sender + i as usize) % RECIPIENTS),
        sender: format!("sender{sender}@example.com/phone"),
        payload: Bytes::from(format!(
            "<message id='{round}-{i}'><body>{}</body></message>",
            "x".repeat((i % 90) as usize)
        )),
    }
}

/// The child: stores from many tasks until killed, printing `ACK round sender i seq`
/// once each store returned. Every 7th message to an offline recipient it first
/// resends the previous one, as a client reconnecting after a dropped connection
/// would. Meanwhile the online recipients fetch and acknowledge their messages
/// (printing `DEL sender id` once the ack returned) and compaction runs.
#[test]
#[ignore = "the child half of kill_9_under_load_keeps_every_acknowledged_message_once"]
fn crash_child_stores_until_killed() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let round: u32 = std::env::var(CHILD_ROUND_ENV).unwrap().parse().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let store = OfflineStore::open(&dir, config(), SystemClock::shared()).unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for sender in 0..SENDERS {
            let store = store.clone();
            tasks.spawn(async move {
                for i in 0u64.. {
                    let previous = message(round, sender, i.saturating_sub(1));
                    if i % 7 == 6 && !is_online(&previous.recipient) {
                        store.store(previous).await.unwrap();
                    }
                    let seq = store.store(message(round, sender, i)).await.unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {round} {sender} {i} {}", seq.0).unwrap();
                    out.flush().unwrap();
                }
            });
        }
        tasks.spawn(async move {
            loop {
                let mut acked = 0;
                for r in 0..ONLINE_RECIPIENTS {
                    let batch = store.pending(&recipient(r), 50);
                    {
                        // Intent first: the ack may become durable just before the kill.
                        let mut out = std::io::stdout().lock();
                        for m in &batch {
                            writeln!(out, "ACKING {} {}", m.sender, m.id).unwrap();
                        }
                        out.flush().unwrap();
                    }
                    let keys: Vec<MessageKey> = batch
                        .iter()
                        .map(|m| MessageKey {
                            sender: m.sender.clone(),
                            id: m.id.clone(),
                        })
                        .collect();
                    acked += store.ack(&recipient(r), Ack::Messages(keys)).await.unwrap();
                    let mut out = std::io::stdout().lock();
                    for m in &batch {
                        writeln!(out, "DEL {} {}", m.sender, m.id).unwrap();
                    }
                    out.flush().unwrap();
                }
                let report = store.compact_step().await.unwrap();
                if report.segments_freed + report.rewritten > 0 {
                    let mut out = std::io::stdout().lock();
                    writeln!(
                        out,
                        "COMPACTED {} {}",
                        report.segments_freed, report.rewritten
                    )
                    .unwrap();
                    out.flush().unwrap();
                }
                if acked == 0 {
                    tokio::task::yield_now().await;
                }
            }
        });
        tasks.join_all().await;
    });
}

fn is_online(recipient_jid: &str) -> bool {
    (0..ONLINE_RECIPIENTS).any(|r| recipient(r) == recipient_jid)
}

/// (round, sender, i) → seq the child printed.
type Acked = HashMap<(u32, usize, u64), u64>;
/// (sender JID, id) of messages their recipient acknowledged.
type Deleted = HashSet<(String, String)>;

/// What the child's recipients did: acks started, and acks that returned.
#[derive(Default)]
struct RecipientAcks {
    started: Deleted,
    done: Deleted,
    /// Segments compaction freed and messages it copied forward, as the child reported.
    segments_freed: usize,
    rewritten: usize,
}

fn run_child_and_kill(dir: &Path, round: u32, acks: &mut RecipientAcks) -> Acked {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child_stores_until_killed",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_ROUND_ENV, round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let parse = |line: &str| -> Option<((u32, usize, u64), u64)> {
        let mut parts = line.strip_prefix("ACK ")?.split(' ');
        let round = parts.next()?.parse().ok()?;
        let sender = parts.next()?.parse().ok()?;
        let i = parts.next()?.parse().ok()?;
        let seq = parts.next()?.parse().ok()?;
        Some(((round, sender, i), seq))
    };
    let mut parse_acks = |line: &str| {
        if let Some(rest) = line.strip_prefix("COMPACTED ") {
            let (freed, rewritten) = rest.split_once(' ').unwrap();
            acks.segments_freed += freed.parse::<usize>().unwrap();
            acks.rewritten += rewritten.parse::<usize>().unwrap();
            return;
        }
        let (set, rest) = if let Some(rest) = line.strip_prefix("DEL ") {
            (&mut acks.done, rest)
        } else if let Some(rest) = line.strip_prefix("ACKING ") {
            (&mut acks.started, rest)
        } else {
            return;
        };
        let (sender, id) = rest.split_once(' ').unwrap();
        set.insert((sender.to_owned(), id.to_owned()));
    };
    let mut acked = Acked::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        parse_acks(&line);
        if let Some((key, seq)) = parse(&line) {
            acked.insert(key, seq);
            if acked.len() >= ACKS_BEFORE_KILL {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Lines already in the pipe were acknowledged before the kill, too.
    for line in lines {
        let Ok(line) = line else { break };
        parse_acks(&line);
        if let Some((key, seq)) = parse(&line) {
            acked.insert(key, seq);
        }
    }
    assert!(
        acked.len() >= ACKS_BEFORE_KILL,
        "round {round}: the child acknowledged only {}",
        acked.len()
    );
    acked
}

/// Every message stored and not acknowledged by its recipient is pending exactly
/// once with the seq it was given, no acknowledged one is, and each sender's
/// messages to a recipient are in the order it sent them. (An ack the kill
/// interrupted may or may not have happened.)
fn check(store: &OfflineStore, acked: &Acked, acks: &RecipientAcks) {
    let mut seen: HashMap<(String, String), OfflineSeq> = HashMap::new();
    for r in 0..RECIPIENTS {
        let pending = store.pending(&recipient(r), usize::MAX);
        assert_eq!(pending.len(), store.count(&recipient(r)));
        assert!(pending.windows(2).all(|w| w[0].seq < w[1].seq));
        let mut last_per_sender: HashMap<&str, (u32, u64)> = HashMap::new();
        for m in &pending {
            let (round, i) = m.id.split_once('-').unwrap();
            let (round, i): (u32, u64) = (round.parse().unwrap(), i.parse().unwrap());
            if let Some(prev) = last_per_sender.insert(&m.sender, (round, i)) {
                assert!(
                    prev < (round, i),
                    "{} out of order: {prev:?} then {:?}",
                    m.sender,
                    (round, i)
                );
            }
            let key = (m.sender.clone(), m.id.clone());
            assert!(
                !acks.done.contains(&key),
                "{key:?} was acknowledged but is pending"
            );
            let duplicate = seen.insert(key, m.seq);
            assert!(duplicate.is_none(), "{} {} pending twice", m.sender, m.id);
        }
    }
    for (&(round, sender, i), &seq) in acked {
        let expected = message(round, sender, i);
        if acks
            .started
            .contains(&(expected.sender.clone(), expected.id.clone()))
        {
            continue;
        }
        let found = seen.get(&(expected.sender.clone(), expected.id.clone()));
        assert_eq!(
            found,
            Some(&OfflineSeq(seq)),
            "acknowledged message {round}-{i} of sender {sender} lost or moved"
        );
        let pending = store.pending(&expected.recipient, usize::MAX);
        let stored = pending.iter().find(|m| m.seq.0 == seq).unwrap();
        assert_eq!(stored.payload, expected.payload);
    }
}

#[test]
fn kill_9_under_load_keeps_every_acknowledged_message_once() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut all = Acked::new();
    let mut acks = RecipientAcks::default();
    // Twice: the second round stores onto a recovered tail.
    for round in 0..2 {
        all.extend(run_child_and_kill(dir.path(), round, &mut acks));
        assert!(
            acks.done.len() > 100,
            "round {round}: only {} acknowledged by recipients",
            acks.done.len()
        );
        let store = OfflineStore::open(dir.path(), config(), SystemClock::shared()).unwrap();
        check(&store, &all, &acks);
    }
    // Compaction ran under the load the child was killed in.
    assert!(acks.segments_freed > 0, "compaction freed no segment");
    assert!(acks.rewritten > 0, "compaction copied no message forward");
    runtime.block_on(async {
        let store = OfflineStore::open(dir.path(), config(), SystemClock::shared()).unwrap();
        for r in 0..RECIPIENTS {
            let count = store.count(&recipient(r));
            let removed = store
                .ack(&recipient(r), Ack::UpTo(OfflineSeq(u64::MAX)))
                .await
                .unwrap();
            assert_eq!(removed, count);
        }
        for _ in 0..8 {
            store.compact_step().await.unwrap();
        }
    });
    let store = OfflineStore::open(dir.path(), config(), SystemClock::shared()).unwrap();
    assert_eq!(store.total_pending(), 0);
    assert_eq!(store.used_bytes(), 0);
    assert!(store.segment_counts().iter().all(|&n| n == 1));
}
