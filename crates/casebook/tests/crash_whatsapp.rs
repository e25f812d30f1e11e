//! `kill -9` the real `casebook up` while XMPP senders with XEP-0198 stream
//! management push numbered messages to online and offline recipients; restart on
//! the same data dir; every message the server acknowledged (covered by an
//! `<a h/>`) must be delivered at least once, nothing that was never sent may
//! appear, and a message whose recipient's acknowledgement the server confirmed
//! before the crash must not come again. Duplicates (at-least-once) are reported.
//! One online recipient stalls (stops reading, socket open) early: what was routed
//! to it is only in the server's memory and socket buffers at the kill, so only a
//! server that made acknowledged messages durable before routing them passes.
//! Waits are bounded by deadlines; nothing asserts on timing.

mod common;

mod support;

use support::casebook;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use casebook_whatsapp::xml::{CLIENT_NS, Element};
use common::{Incoming, Xmpp};

const SENDERS: usize = 4;
const ONLINE: usize = 2;
const OFFLINE: usize = 2;
const PASSWORD: &str = "crash-pw";
/// Messages a sender may have unacknowledged.
const WINDOW: usize = 40;
/// Acknowledged messages (all senders) before the kill.
const KILL_AFTER_ACKED: usize = 3000;
const DEADLINE: Duration = Duration::from_secs(60);

fn add_user(data_dir: &std::path::Path, user: &str) {
    let status = casebook(data_dir)
        .args([
            "whatsapp",
            "add-user",
            &format!("{user}@localhost"),
            PASSWORD,
        ])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "add-user {user}");
}

/// Starts `casebook up`; returns it and the chat node's address (read from what
/// it prints; the rest of its output is drained so it never blocks).
fn start(data_dir: &std::path::Path) -> (Child, SocketAddr) {
    let mut child = casebook(data_dir)
        .args(["--control-port", "0", "up"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in stdout.lines() {
            let Ok(line) = line else { break };
            if let Some(addr) = line.split("xmpp c2s ").nth(1)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(addr.trim().to_owned());
            }
        }
    });
    let addr = rx
        .recv_timeout(DEADLINE)
        .expect("casebook up printed the chat node's address");
    (child, addr.parse().unwrap())
}

fn online(n: usize) -> String {
    format!("online{n}")
}

fn offline(n: usize) -> String {
    format!("offline{n}")
}

/// Where sender `s`'s message `i` goes: even ones to online recipients.
fn recipient(s: usize, i: usize) -> String {
    if i.is_multiple_of(2) {
        online((s + i / 2) % ONLINE)
    } else {
        offline((s + i / 2) % OFFLINE)
    }
}

/// What one sender wrote, and how many of them the server acknowledged.
struct Sent {
    ids: Vec<String>,
    acked: usize,
}

/// Sends until the server dies; counts what its `<a h/>` covered.
async fn sender(addr: SocketAddr, s: usize, acked_total: Arc<AtomicUsize>) -> Sent {
    let user = format!("sender{s}");
    let mut client = Xmpp::login(addr, &user, PASSWORD, "load").await.unwrap();
    let mut sent = Sent {
        ids: Vec::new(),
        acked: 0,
    };
    // The server's h counts our presence first, then each message.
    let counted_before_messages = 1u32;
    'load: loop {
        while sent.ids.len() - sent.acked < WINDOW {
            let i = sent.ids.len();
            let id = format!("s{s}-{i}");
            let to = recipient(s, i);
            let message = format!(
                "<message to='{to}@localhost' type='chat' id='{id}'><body>{id}</body></message>"
            );
            if client.send(&message).await.is_err() {
                break 'load;
            }
            sent.ids.push(id);
            if sent.ids.len().is_multiple_of(10)
                && client.send("<r xmlns='urn:xmpp:sm:3'/>").await.is_err()
            {
                break 'load;
            }
        }
        loop {
            match client.next().await {
                Ok(Incoming::Ack(h)) => {
                    let covered = h.saturating_sub(counted_before_messages) as usize;
                    let covered = covered.min(sent.ids.len());
                    if covered > sent.acked {
                        acked_total.fetch_add(covered - sent.acked, Ordering::Relaxed);
                        sent.acked = covered;
                    }
                    break;
                }
                Ok(Incoming::Request) => {
                    if client.ack().await.is_err() {
                        break 'load;
                    }
                }
                Ok(Incoming::Stanza(stanza)) => {
                    // A bounce would mean the message was refused, not acknowledged.
                    panic!("sender {s} got {stanza:?}");
                }
                Ok(Incoming::Other) => {}
                Err(_) => break 'load,
            }
        }
    }
    sent
}

/// What an online recipient got before the crash.
#[derive(Default)]
struct Received {
    ids: Vec<String>,
    /// Ids whose acknowledgement the server confirmed (a ping answered after it).
    confirmed: HashSet<String>,
}

fn message_id(stanza: &Element) -> Option<String> {
    stanza
        .is("message", CLIENT_NS)
        .then(|| stanza.attr("id").map(str::to_owned))
        .flatten()
}

/// Reads and acknowledges until the server dies — or, after `stall_after`
/// messages, stops reading with its socket open (a phone in a tunnel), so what
/// the server routed to it sits in queues and buffers when the kill comes.
async fn live_recipient(mut client: Xmpp, stop: Arc<AtomicBool>, stall_after: usize) -> Received {
    let mut got = Received::default();
    let mut pings: Vec<(String, usize)> = Vec::new();
    let mut next_ping = 0usize;
    while !stop.load(Ordering::Relaxed) {
        if got.ids.len() >= stall_after {
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            break;
        }
        match client.next().await {
            Ok(Incoming::Stanza(stanza)) => {
                if let Some(id) = message_id(&stanza) {
                    got.ids.push(id);
                } else if let Some(id) = stanza.attr("id")
                    && let Some(at) = pings.iter().position(|(p, _)| p == id)
                {
                    // Everything acknowledged before this ping is removed for good.
                    let (_, upto) = pings[at];
                    got.confirmed.extend(got.ids[..upto].iter().cloned());
                    pings.drain(..=at);
                }
            }
            Ok(Incoming::Request) => {
                let id = format!("confirm-{next_ping}");
                next_ping += 1;
                let upto = got.ids.len();
                if client.ack().await.is_err() || client.ping(&id).await.is_err() {
                    break;
                }
                pings.push((id, upto));
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    got
}

/// After the restart: logs in and collects everything, acknowledging as it goes,
/// until a ping round brings nothing new.
async fn collect(addr: SocketAddr, user: &str) -> Vec<Element> {
    let mut client = Xmpp::login(addr, user, PASSWORD, "after").await.unwrap();
    let mut got = Vec::new();
    for round in 0.. {
        let id = format!("round-{round}");
        client.ping(&id).await.unwrap();
        let before = got.len();
        loop {
            let incoming = tokio::time::timeout(DEADLINE, client.next())
                .await
                .expect("the server answered before the deadline")
                .unwrap();
            match incoming {
                Incoming::Stanza(stanza) if stanza.attr("id") == Some(id.as_str()) => break,
                Incoming::Stanza(stanza) if stanza.is("message", CLIENT_NS) => got.push(stanza),
                Incoming::Request => client.ack().await.unwrap(),
                _ => {}
            }
        }
        // Acknowledge, so a flush paused at the unacked bound carries on.
        client.ack().await.unwrap();
        if got.len() == before {
            break;
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_message_survives_kill_9_of_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let users: Vec<String> = (0..SENDERS)
        .map(|s| format!("sender{s}"))
        .chain((0..ONLINE).map(online))
        .chain((0..OFFLINE).map(offline))
        .collect();
    for user in &users {
        add_user(dir.path(), user);
    }

    let (mut child, addr) = start(dir.path());
    let stop = Arc::new(AtomicBool::new(false));
    let mut receivers = Vec::new();
    for n in 0..ONLINE {
        let client = Xmpp::login(addr, &online(n), PASSWORD, "live")
            .await
            .unwrap();
        // The last online recipient stalls early in the run.
        let stall_after = if n + 1 == ONLINE { 100 } else { usize::MAX };
        receivers.push(tokio::spawn(live_recipient(
            client,
            stop.clone(),
            stall_after,
        )));
    }
    let acked_total = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| tokio::spawn(sender(addr, s, acked_total.clone())))
        .collect();

    let deadline = tokio::time::Instant::now() + DEADLINE;
    while acked_total.load(Ordering::Relaxed) < KILL_AFTER_ACKED {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} messages acknowledged",
            acked_total.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // SIGKILL mid-load.
    child.kill().unwrap();
    child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);

    let mut sent_ids = HashSet::new();
    let mut acked_ids = HashSet::new();
    for handle in senders {
        let sent = tokio::time::timeout(DEADLINE, handle)
            .await
            .unwrap()
            .unwrap();
        acked_ids.extend(sent.ids[..sent.acked].iter().cloned());
        sent_ids.extend(sent.ids);
    }
    let mut delivered: HashMap<String, usize> = HashMap::new();
    let mut confirmed = HashSet::new();
    for handle in receivers {
        let got = tokio::time::timeout(DEADLINE, handle)
            .await
            .unwrap()
            .unwrap();
        for id in got.ids {
            *delivered.entry(id).or_default() += 1;
        }
        confirmed.extend(got.confirmed);
    }
    let before_crash = delivered.values().sum::<usize>();

    let (mut child, addr) = start(dir.path());
    let mut redelivered_confirmed = Vec::new();
    for user in (0..ONLINE).map(online).chain((0..OFFLINE).map(offline)) {
        for stanza in collect(addr, &user).await {
            let id = message_id(&stanza).expect("messages carry their id");
            let sender = id.strip_prefix('s').and_then(|r| r.split('-').next());
            assert_eq!(
                stanza.attr("from"),
                Some(format!("sender{}@localhost/load", sender.unwrap_or("?")).as_str()),
                "the stamped sender is kept"
            );
            if confirmed.contains(&id) {
                redelivered_confirmed.push(id.clone());
            }
            *delivered.entry(id).or_default() += 1;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let lost: Vec<&String> = acked_ids
        .iter()
        .filter(|id| !delivered.contains_key(*id))
        .collect();
    let invented: Vec<&String> = delivered
        .keys()
        .filter(|id| !sent_ids.contains(*id))
        .collect();
    let duplicates: usize = delivered.values().map(|n| n - 1).sum();
    eprintln!(
        "crash test: {} sent, {} acknowledged, {} delivered before the kill ({} acknowledgements confirmed), {} distinct delivered in all, {} duplicate deliveries",
        sent_ids.len(),
        acked_ids.len(),
        before_crash,
        confirmed.len(),
        delivered.len(),
        duplicates
    );
    assert!(acked_ids.len() >= KILL_AFTER_ACKED);
    assert!(
        lost.is_empty(),
        "acknowledged but never delivered: {lost:?}"
    );
    assert!(
        invented.is_empty(),
        "delivered but never sent: {invented:?}"
    );
    assert!(
        redelivered_confirmed.is_empty(),
        "acknowledged by the recipient before the crash, delivered again: {redelivered_confirmed:?}"
    );
}
