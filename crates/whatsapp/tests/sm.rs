//! XEP-0198 stream management end to end: real loopback sockets, a raw-XMPP client
//! on the crate's own XML layer, a real platform instance (on a `ManualClock` where
//! the resumption window matters). Waits are bounded by a deadline (a hang fails
//! the test); nothing asserts on timing.

mod support;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::Duration;

use casebook_kit::clock::{ManualClock, SharedClock, SystemClock};
use casebook_testkit::eventually;
use casebook_whatsapp::node::conn::{PING_NS, SM_NS};
use casebook_whatsapp::node::stanza::STANZAS_NS;
use casebook_whatsapp::node::{DELAY_NS, WhatsappConfig};
use casebook_whatsapp::xml::{CLIENT_NS, Element};
use support::{Client, DEADLINE, Node};

const USERS: &[&str] = &["alice", "bob"];

async fn node(clock: SharedClock) -> Node {
    node_with(clock, WhatsappConfig::default()).await
}

async fn node_with(clock: SharedClock, config: WhatsappConfig) -> Node {
    Node::start(config, USERS, clock).await
}

impl Client {
    /// Connects, authenticates and restarts the stream (ready to bind or resume).
    async fn authenticated(addr: SocketAddr, user: &str) -> Self {
        let mut client = Self::connect(addr).await;
        client.open().await;
        client.scram(user, &format!("{user}-pw")).await.unwrap();
        let features = client.restart().await;
        assert!(
            features.child("sm", SM_NS).is_some(),
            "stream management is offered after authentication: {features:?}"
        );
        client
    }

    /// Enables stream management; returns the resumption id when asked for one.
    async fn enable(&mut self, resume: bool) -> Option<String> {
        let attr = if resume { " resume='true'" } else { "" };
        self.send(&format!("<enable xmlns='{SM_NS}'{attr}/>")).await;
        let enabled = self.stanza().await;
        assert!(enabled.is("enabled", SM_NS), "{enabled:?}");
        self.received = 0;
        if resume {
            assert_eq!(enabled.attr("resume"), Some("true"));
            assert_eq!(enabled.attr("max"), Some("300"));
        }
        enabled.attr("id").map(str::to_owned)
    }

    /// Logs in, binds, optionally enables stream management, sends presence.
    async fn online(
        addr: SocketAddr,
        user: &str,
        resource: &str,
        sm: Option<bool>,
    ) -> (Self, Option<String>) {
        let mut client = Self::authenticated(addr, user).await;
        client.bind_iq(Some(resource)).await;
        let id = match sm {
            Some(resume) => client.enable(resume).await,
            None => None,
        };
        client.send("<presence/>").await;
        (client, id)
    }

    /// Asks the server for its `h`.
    async fn request_ack(&mut self) -> u32 {
        self.send(&format!("<r xmlns='{SM_NS}'/>")).await;
        let a = self.stanza().await;
        assert!(a.is("a", SM_NS), "{a:?}");
        a.attr("h").unwrap().parse().unwrap()
    }

    /// Acknowledges everything received so far.
    async fn ack(&mut self) {
        let h = self.received;
        self.send(&format!("<a xmlns='{SM_NS}' h='{h}'/>")).await;
    }

    async fn message(&mut self, to: &str, id: &str) {
        self.send(&format!(
            "<message to='{to}' type='chat' id='{id}'><body>{id}</body></message>"
        ))
        .await;
    }
}

fn ids(stanzas: &[Element]) -> Vec<String> {
    stanzas
        .iter()
        .filter(|s| s.is("message", CLIENT_NS))
        .map(|s| s.attr("id").unwrap_or_default().to_owned())
        .collect()
}

/// Reads `n` messages (skipping other stanzas); returns their ids.
async fn read_messages(client: &mut Client, n: usize) -> Vec<Element> {
    let mut got = Vec::new();
    while got.len() < n {
        let stanza = client.stanza().await;
        if stanza.is("message", CLIENT_NS) {
            got.push(stanza);
        }
    }
    got
}

#[tokio::test]
async fn enable_counts_handled_stanzas_and_both_sides_request_and_acknowledge() {
    let node = node(SystemClock::shared()).await;
    let (mut alice, _) = Client::online(node.addr, "alice", "phone", Some(false)).await;
    let (mut bob, _) = Client::online(node.addr, "bob", "laptop", Some(false)).await;
    bob.ping("ready").await;
    assert_eq!(bob.received, 1, "the ping result is counted");

    for n in 1..=3 {
        alice.message("bob@localhost", &format!("m{n}")).await;
    }
    alice.ping("p").await;
    // Presence (1) + three messages + the ping: five handled stanzas.
    assert_eq!(alice.request_ack().await, 5);

    let got = read_messages(&mut bob, 3).await;
    assert_eq!(ids(&got), ["m1", "m2", "m3"]);
    assert!(bob.ping("drain").await.is_empty());
    // The server asked for acknowledgement (its queue ran dry between stanzas).
    assert!(bob.requests >= 1);
    assert_eq!(bob.received, 5, "two ping results and three messages");
    bob.ack().await;
    bob.ping("acked").await;
    // Acknowledged: a fresh login of bob gets nothing stored.
    bob.close().await;
    let (mut again, _) = Client::online(node.addr, "bob", "tablet", Some(false)).await;
    assert!(
        ids(&again.ping("after").await).is_empty(),
        "acked messages were removed"
    );

    // Bad input: an <a/> with an h beyond what was sent.
    again.send(&format!("<a xmlns='{SM_NS}' h='99'/>")).await;
    let error = again.expect_stream_error("undefined-condition").await;
    let detail = error
        .child("handled-count-too-high", SM_NS)
        .expect("the XEP-0198 detail");
    assert_eq!(detail.attr("h"), Some("99"));
    assert_eq!(detail.attr("send-count"), Some("1"));
}

#[tokio::test]
async fn sm_elements_before_enable_or_bind_are_refused() {
    let node = node(SystemClock::shared()).await;
    let mut early = Client::authenticated(node.addr, "alice").await;
    early.send(&format!("<enable xmlns='{SM_NS}'/>")).await;
    let failed = early.stanza().await;
    assert!(failed.is("failed", SM_NS), "{failed:?}");
    assert!(failed.child("unexpected-request", STANZAS_NS).is_some());
    early.bind_iq(Some("phone")).await;
    early.send(&format!("<r xmlns='{SM_NS}'/>")).await;
    early.expect_stream_error("unsupported-stanza-type").await;
}

#[tokio::test]
async fn an_acknowledged_offline_message_survives_a_kill_of_the_instance() {
    let mut node = node(SystemClock::shared()).await;
    let (mut alice, _) = Client::online(node.addr, "alice", "phone", Some(false)).await;
    alice.message("bob@localhost", "durable-1").await;
    // h covers presence + the message: it was stored before this answer.
    assert_eq!(alice.request_ack().await, 2);
    node.kill_and_restart().await;
    assert!(alice.next().await.is_none(), "the kill cut alice off");

    let (mut bob, _) = Client::online(node.addr, "bob", "laptop", Some(false)).await;
    let got = bob.ping("after-restart").await;
    assert_eq!(ids(&got), ["durable-1"]);
    assert!(got[0].child("delay", DELAY_NS).is_some());
}

#[tokio::test]
async fn a_dropped_session_resumes_with_exactly_the_unacknowledged_stanzas_in_order() {
    let node = node(SystemClock::shared()).await;
    let (mut alice, _) = Client::online(node.addr, "alice", "phone", Some(false)).await;
    let (mut bob, id) = Client::online(node.addr, "bob", "laptop", Some(true)).await;
    let id = id.expect("a resumption id");
    bob.ping("ready").await;
    for n in 1..=3 {
        alice
            .message("bob@localhost/laptop", &format!("m{n}"))
            .await;
    }
    let got = read_messages(&mut bob, 3).await;
    assert_eq!(ids(&got), ["m1", "m2", "m3"]);
    // Bob acknowledges the ping and m1 only, then his socket dies (no </stream>).
    let h = bob.received - 2;
    bob.send(&format!("<a xmlns='{SM_NS}' h='{h}'/>")).await;
    bob.ping("acked").await;
    drop(bob);
    // Sent while bob is away: queued for the detached session.
    alice.message("bob@localhost", "m4").await;
    assert_eq!(alice.request_ack().await, 5);

    let mut back = Client::authenticated(node.addr, "bob").await;
    back.send(&format!("<resume xmlns='{SM_NS}' previd='{id}' h='{h}'/>"))
        .await;
    let resumed = back.stanza().await;
    assert!(resumed.is("resumed", SM_NS), "{resumed:?}");
    assert_eq!(resumed.attr("previd"), Some(id.as_str()));
    assert_eq!(resumed.attr("h"), Some("3"), "presence and two pings");
    back.received = h;
    let again = back.ping("resumed").await;
    let redelivered: Vec<&Element> = again
        .iter()
        .filter(|s| s.is("message", CLIENT_NS))
        .collect();
    assert_eq!(
        ids(&again),
        ["m2", "m3", "m4"],
        "the unacknowledged ones, in order, then the new one"
    );
    assert!(
        redelivered
            .iter()
            .all(|m| m.attr("from") == Some("alice@localhost/phone"))
    );
    // The resumed session is the bound one: live messages keep coming.
    alice.message("bob@localhost/laptop", "m5").await;
    assert_eq!(ids(&read_messages(&mut back, 1).await), ["m5"]);
    back.ack().await;
    // The counts line up: the server accepts that h, and nothing is left.
    assert_eq!(back.request_ack().await, 4, "one more ping handled");
}

#[tokio::test]
async fn a_second_connection_resuming_an_attached_session_replaces_it() {
    let node = node(SystemClock::shared()).await;
    let (mut alice, _) = Client::online(node.addr, "alice", "phone", Some(false)).await;
    let (mut first, id) = Client::online(node.addr, "bob", "laptop", Some(true)).await;
    first.ping("ready").await;
    alice.message("bob@localhost", "x1").await;
    assert_eq!(ids(&read_messages(&mut first, 1).await), ["x1"]);

    let mut second = Client::authenticated(node.addr, "bob").await;
    second
        .send(&format!(
            "<resume xmlns='{SM_NS}' previd='{}' h='0'/>",
            id.unwrap()
        ))
        .await;
    let resumed = second.stanza().await;
    assert!(resumed.is("resumed", SM_NS), "{resumed:?}");
    // The older connection is cut off.
    while first.next().await.is_some() {}
    // Nothing was acknowledged: the ping result and x1 come again.
    let again = second.ping("second").await;
    assert_eq!(ids(&again), ["x1"]);
}

#[tokio::test]
async fn resuming_an_unknown_or_foreign_id_fails_and_the_client_binds_normally() {
    let node = node(SystemClock::shared()).await;
    let mut stranger = Client::authenticated(node.addr, "alice").await;
    stranger
        .send(&format!(
            "<resume xmlns='{SM_NS}' previd='no-such-id' h='0'/>"
        ))
        .await;
    let failed = stranger.stanza().await;
    assert!(failed.is("failed", SM_NS), "{failed:?}");
    assert!(failed.child("item-not-found", STANZAS_NS).is_some());
    stranger.bind_iq(Some("phone")).await;
    stranger.send("<presence/>").await;

    // Bob's live session cannot be taken over by alice, even with its id.
    let (mut bob, id) = Client::online(node.addr, "bob", "laptop", Some(true)).await;
    bob.ping("ready").await;
    let mut thief = Client::authenticated(node.addr, "alice").await;
    thief
        .send(&format!(
            "<resume xmlns='{SM_NS}' previd='{}' h='0'/>",
            id.unwrap()
        ))
        .await;
    let failed = thief.stanza().await;
    assert!(
        failed.child("item-not-found", STANZAS_NS).is_some(),
        "{failed:?}"
    );
    stranger.message("bob@localhost", "still-bob").await;
    assert_eq!(ids(&read_messages(&mut bob, 1).await), ["still-bob"]);
}

/// The messages a fresh login finds waiting (skipping presence), each of them
/// stamped as delivered from the offline store.
async fn offline_messages(bob: &mut Client) -> Vec<Element> {
    let got: Vec<Element> = bob
        .ping("poll")
        .await
        .into_iter()
        .filter(|s| s.is("message", CLIENT_NS))
        .collect();
    assert!(got.iter().all(|m| m.child("delay", DELAY_NS).is_some()));
    got
}

#[tokio::test]
async fn when_the_window_expires_unacknowledged_messages_go_offline() {
    let clock = ManualClock::new();
    let node = node(clock.shared()).await;
    // Alice without stream management: her messages are routed live, not stored.
    let mut alice = Client::authenticated(node.addr, "alice").await;
    alice.bind_iq(Some("phone")).await;
    alice.send("<presence/>").await;
    let (mut bob, _) = Client::online(node.addr, "bob", "laptop", Some(true)).await;
    bob.ping("ready").await;
    alice.message("bob@localhost", "w1").await;
    alice.message("bob@localhost", "w2").await;
    assert_eq!(ids(&read_messages(&mut bob, 2).await), ["w1", "w2"]);
    drop(bob); // never acknowledged
    alice.ping("sent").await;

    clock.advance(Duration::from_secs(301));
    // The sweep runs on a cadence: poll with fresh logins until the messages are
    // delivered from the offline store.
    let collected = RefCell::new(Vec::new());
    eventually(
        "the unacknowledged messages are delivered offline",
        DEADLINE,
        || async {
            let (mut bob, _) = Client::online(node.addr, "bob", "tablet", None).await;
            // Presence of bob's other (detached) resource may come too: messages only.
            let got = offline_messages(&mut bob).await;
            assert!(
                got.iter()
                    .all(|m| m.attr("from") == Some("alice@localhost/phone"))
            );
            collected.borrow_mut().extend(ids(&got));
            bob.close().await;
            // Again, in case bob's drop was noticed only after the first advance.
            clock.advance(Duration::from_secs(301));
            collected.borrow().len() >= 2
        },
    )
    .await;
    assert_eq!(collected.into_inner(), ["w1", "w2"]);
}

#[tokio::test]
async fn flushed_offline_messages_stay_stored_until_acknowledged() {
    let node = node(SystemClock::shared()).await;
    let (mut alice, _) = Client::online(node.addr, "alice", "phone", Some(false)).await;
    for n in 1..=3 {
        alice.message("bob@localhost", &format!("o{n}")).await;
    }
    assert_eq!(alice.request_ack().await, 4);

    // Bob gets them, but his socket dies before he acknowledges.
    let (mut bob, _) = Client::online(node.addr, "bob", "laptop", Some(false)).await;
    assert_eq!(ids(&read_messages(&mut bob, 3).await), ["o1", "o2", "o3"]);
    drop(bob);

    // So the next login gets them again; this time bob acknowledges.
    let redelivered = RefCell::new(None);
    eventually("the messages are delivered again", DEADLINE, || async {
        let (mut bob, _) = Client::online(node.addr, "bob", "tablet", Some(false)).await;
        let got = bob.ping("second").await;
        if ids(&got) == ["o1", "o2", "o3"] {
            *redelivered.borrow_mut() = Some(bob);
            return true;
        }
        // The first connection's end was not processed yet (its resource still bound).
        bob.close().await;
        false
    })
    .await;
    let mut bob = redelivered.into_inner().unwrap();
    bob.ack().await;
    bob.ping("acked").await;
    bob.close().await;

    let (mut third, _) = Client::online(node.addr, "bob", "desk", Some(false)).await;
    assert!(
        ids(&third.ping("third").await).is_empty(),
        "removed once acknowledged"
    );
}

#[tokio::test]
async fn a_session_over_its_unacked_bound_is_closed_and_its_messages_go_offline() {
    let node = node_with(
        SystemClock::shared(),
        WhatsappConfig {
            sm_max_unacked: 16,
            ..WhatsappConfig::default()
        },
    )
    .await;
    let mut alice = Client::authenticated(node.addr, "alice").await;
    alice.bind_iq(Some("phone")).await;
    alice.send("<presence/>").await;
    let (mut bob, _) = Client::online(node.addr, "bob", "laptop", Some(false)).await;
    bob.ping("ready").await; // one unacknowledged stanza
    // Bob never acknowledges: the 16th message finds his unacked queue full.
    for n in 1..=16 {
        alice.message("bob@localhost", &format!("u{n:02}")).await;
    }
    bob.expect_stream_error("resource-constraint").await;
    alice.ping("sent").await;

    let want: Vec<String> = (1..=16).map(|n| format!("u{n:02}")).collect();
    // Polling logins may catch the store half-way: collect across them.
    let collected = RefCell::new(Vec::new());
    eventually(
        "everything unacknowledged is stored offline",
        DEADLINE,
        || async {
            let (mut bob, _) = Client::online(node.addr, "bob", "tablet", None).await;
            // Presence of bob's other (detached) resource may come too: messages only.
            let got = offline_messages(&mut bob).await;
            collected.borrow_mut().extend(ids(&got));
            bob.close().await;
            collected.borrow().len() >= want.len()
        },
    )
    .await;
    assert_eq!(
        collected.into_inner(),
        want,
        "everything unacknowledged, in order, once"
    );
}

#[test]
fn stream_management_config_is_bounded_and_names_the_field() {
    let config: WhatsappConfig =
        serde_json::from_str(r#"{"sm_resume_timeout": "30s", "sm_max_unacked": 64}"#).unwrap();
    assert_eq!(config.sm_resume_timeout, Duration::from_secs(30));
    config.validate().unwrap();
    let err = WhatsappConfig {
        sm_max_unacked: 0,
        ..WhatsappConfig::default()
    }
    .validate()
    .unwrap_err();
    assert_eq!(err.key(), "whatsapp.sm_max_unacked", "{err}");
    let err = WhatsappConfig {
        sm_resume_timeout: Duration::from_secs(2 * 24 * 3600),
        ..WhatsappConfig::default()
    }
    .validate()
    .unwrap_err();
    assert_eq!(err.key(), "whatsapp.sm_resume_timeout", "{err}");
}

#[tokio::test]
async fn a_stored_message_written_to_a_recipient_without_sm_is_removed_after_the_write() {
    let node = node(SystemClock::shared()).await;
    let (mut alice, _) = Client::online(node.addr, "alice", "phone", Some(false)).await;
    let (mut bob, _) = Client::online(node.addr, "bob", "laptop", None).await;
    bob.ping("ready").await;
    alice.message("bob@localhost", "live-1").await;
    // Stored durably before this answer, then routed live.
    assert_eq!(alice.request_ack().await, 2);
    assert_eq!(ids(&read_messages(&mut bob, 1).await), ["live-1"]);
    // Answered after the removal that followed the write.
    bob.ping("written").await;
    bob.close().await;
    let (mut again, _) = Client::online(node.addr, "bob", "tablet", None).await;
    assert!(
        ids(&again.ping("again").await).is_empty(),
        "not delivered a second time"
    );
}

#[tokio::test]
async fn a_clean_close_moves_unacknowledged_messages_offline() {
    let node = node(SystemClock::shared()).await;
    let mut alice = Client::authenticated(node.addr, "alice").await;
    alice.bind_iq(Some("phone")).await;
    alice.send("<presence/>").await;
    let (mut bob, _) = Client::online(node.addr, "bob", "laptop", Some(true)).await;
    bob.ping("ready").await;
    alice.message("bob@localhost", "c1").await;
    assert_eq!(ids(&read_messages(&mut bob, 1).await), ["c1"]);
    // Not acknowledged, then </stream>: the session is over, not resumable.
    bob.close().await;
    alice.ping("sent").await;

    eventually("the message is stored offline", DEADLINE, || async {
        let (mut bob, _) = Client::online(node.addr, "bob", "tablet", None).await;
        let got = bob.ping("poll").await;
        if got.is_empty() {
            bob.close().await;
            return false;
        }
        assert_eq!(ids(&got), ["c1"]);
        assert!(got[0].child("delay", DELAY_NS).is_some());
        true
    })
    .await;
}

#[tokio::test]
async fn pipelined_durable_messages_keep_order_and_h_counts_bounces_behind_them() {
    let node = node(SystemClock::shared()).await;
    let (mut alice, _) = Client::online(node.addr, "alice", "phone", Some(false)).await;
    // One burst: durable messages, a bounce and a ping in between.
    let mut burst = String::new();
    for n in 1..=40 {
        burst.push_str(&format!(
            "<message to='bob@localhost' type='chat' id='p{n:02}'><body>p{n:02}</body></message>"
        ));
        if n == 10 {
            burst.push_str(
                "<message to='ghost@localhost' type='chat' id='lost'><body>x</body></message>",
            );
        }
        if n == 20 {
            burst.push_str(&format!(
                "<iq type='get' id='mid'><ping xmlns='{PING_NS}'/></iq>"
            ));
        }
    }
    burst.push_str(&format!("<r xmlns='{SM_NS}'/>"));
    alice.send(&burst).await;
    let mut replies = Vec::new();
    let h = loop {
        let element = alice.stanza().await;
        if element.is("a", SM_NS) {
            break element.attr("h").unwrap().parse::<u32>().unwrap();
        }
        replies.push(element);
    };
    // Presence + 40 messages + the bounced one + the ping, all handled.
    assert_eq!(h, 43);
    let reply_ids: Vec<&str> = replies.iter().filter_map(|r| r.attr("id")).collect();
    assert_eq!(
        reply_ids,
        ["lost", "mid"],
        "the bounce, then the ping result"
    );

    let (mut bob, _) = Client::online(node.addr, "bob", "laptop", Some(false)).await;
    let want: Vec<String> = (1..=40).map(|n| format!("p{n:02}")).collect();
    assert_eq!(ids(&read_messages(&mut bob, 40).await), want);
}

/// Two stream-managed senders pipeline long bursts to one offline recipient at once:
/// each sender's messages come out of the offline store in the order it sent them
/// (durable stores to one recipient never overlap within a connection).
#[tokio::test]
async fn concurrent_pipelined_senders_keep_their_own_order_offline() {
    let node = Node::start(
        WhatsappConfig::default(),
        &["alice", "bob", "carol"],
        SystemClock::shared(),
    )
    .await;
    const BURST: usize = 300;
    let mut senders = Vec::new();
    for user in ["alice", "carol"] {
        let addr = node.addr;
        senders.push(tokio::spawn(async move {
            let (mut client, _) = Client::online(addr, user, "phone", Some(false)).await;
            let mut burst = String::new();
            for n in 0..BURST {
                burst.push_str(&format!(
                    "<message to='bob@localhost' type='chat' id='{user}-{n}'><body>{n}</body></message>"
                ));
            }
            burst.push_str(&format!("<r xmlns='{SM_NS}'/>"));
            client.send(&burst).await;
            // The <a/> comes once every message of the burst is durable.
            loop {
                if client.stanza().await.is("a", SM_NS) {
                    break;
                }
            }
            client
        }));
    }
    let mut done = Vec::new();
    for sender in senders {
        done.push(sender.await.unwrap());
    }
    // Without stream management, so the flush is not held at the unacked bound.
    let (mut bob, _) = Client::online(node.addr, "bob", "laptop", None).await;
    let got = ids(&read_messages(&mut bob, 2 * BURST).await);
    for user in ["alice", "carol"] {
        let mine: Vec<&String> = got.iter().filter(|id| id.starts_with(user)).collect();
        let want: Vec<String> = (0..BURST).map(|n| format!("{user}-{n}")).collect();
        assert_eq!(mine.len(), BURST, "{user}: every message once");
        assert!(
            mine.iter().zip(&want).all(|(a, b)| *a == b),
            "{user}: out of order: {mine:?}"
        );
    }
}

/// A burst queued for a stream-managed session is written in coalesced writes;
/// `h` still counts every stanza: acknowledging exactly what arrived is accepted,
/// and leaves nothing unacknowledged (nothing comes back on a fresh login).
#[tokio::test]
async fn a_coalesced_burst_counts_every_stanza_in_h() {
    let node = node(SystemClock::shared()).await;
    let (mut alice, _) = Client::online(node.addr, "alice", "phone", None).await;
    let (mut bob, _) = Client::online(node.addr, "bob", "laptop", Some(false)).await;
    bob.ping("ready").await;
    alice.ping("ready").await;
    const BURST: usize = 150;
    let mut burst = String::new();
    for n in 0..BURST {
        burst.push_str(&format!(
            "<message to='bob@localhost/laptop' type='chat' id='b{n}'><body>{n}</body></message>"
        ));
    }
    alice.send(&burst).await;
    alice.ping("sent").await;
    let got = read_messages(&mut bob, BURST).await;
    let expected: Vec<String> = (0..BURST).map(|n| format!("b{n}")).collect();
    assert_eq!(ids(&got), expected);
    assert!(bob.ping("drain").await.is_empty());
    assert_eq!(bob.received as usize, BURST + 2, "two ping results");
    bob.ack().await;
    bob.ping("acked").await;
    // One beyond what arrived is refused, naming the server's count: exactly
    // what the client counted (per stanza, not per write).
    let sent = bob.received;
    bob.send(&format!("<a xmlns='{SM_NS}' h='{}'/>", sent + 1))
        .await;
    let error = bob.expect_stream_error("undefined-condition").await;
    let count = sent.to_string();
    assert_eq!(
        error
            .child("handled-count-too-high", SM_NS)
            .and_then(|d| d.attr("send-count")),
        Some(count.as_str())
    );
    let (mut again, _) = Client::online(node.addr, "bob", "tablet", Some(false)).await;
    assert!(
        ids(&again.ping("after").await).is_empty(),
        "every message was acknowledged: none went offline"
    );
}
