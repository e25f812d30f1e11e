//! The chat node end to end: real loopback sockets, a minimal raw-XMPP client built
//! on the crate's own XML layer, a real platform instance. Waits are bounded by a
//! deadline (a hang fails the test); nothing asserts on timing.

mod support;

use std::time::Duration;

use casebook_kit::clock::SystemClock;
use casebook_testkit::eventually;
use casebook_whatsapp::node::conn::{DISCO_INFO_NS, PING_NS};
use casebook_whatsapp::node::{DELAY_NS, WhatsappConfig};
use casebook_whatsapp::xml::{CLIENT_NS, STREAMS_NS, StreamEvent};
use support::{Client, DEADLINE, Node, mechanisms, stanza_error};
use tokio::net::TcpStream;

async fn node_with(config: WhatsappConfig, users: &[&str]) -> Node {
    Node::start(config, users, SystemClock::shared()).await
}

async fn node() -> Node {
    node_with(WhatsappConfig::default(), &["alice", "bob"]).await
}

impl Client {
    /// Logs in with SCRAM, binds, sends initial presence.
    async fn online(
        addr: std::net::SocketAddr,
        user: &str,
        password: &str,
        resource: &str,
    ) -> (Self, String) {
        let mut client = Self::connect(addr).await;
        client.open().await;
        client.scram(user, password).await.unwrap();
        let jid = client.bind_session(Some(resource)).await;
        client.send("<presence/>").await;
        (client, jid)
    }
}

#[tokio::test]
async fn scram_login_then_two_users_chat_and_spoofed_from_is_rewritten() {
    let node = node().await;
    let (mut alice, alice_jid) = Client::online(node.addr, "alice", "alice-pw", "phone").await;
    let (mut bob, bob_jid) = Client::online(node.addr, "bob", "bob-pw", "laptop").await;
    assert_eq!(alice_jid, "alice@localhost/phone");
    assert_eq!(bob_jid, "bob@localhost/laptop");
    alice.ping("sync-a").await;
    bob.ping("sync-b").await;

    alice
        .send("<message to='bob@localhost' from='mallory@localhost/evil' type='chat' id='m1'><body>hi bob</body></message>")
        .await;
    let got = bob.stanza().await;
    assert!(got.is("message", CLIENT_NS));
    assert_eq!(
        got.attr("from"),
        Some("alice@localhost/phone"),
        "spoofed from rewritten"
    );
    assert_eq!(got.child("body", CLIENT_NS).unwrap().text(), "hi bob");
    assert!(
        got.child("delay", DELAY_NS).is_none(),
        "live delivery is not delayed"
    );

    bob.send(
        "<message to='alice@localhost/phone' type='chat' id='m2'><body>hi alice</body></message>",
    )
    .await;
    let got = alice.stanza().await;
    assert_eq!(got.attr("from"), Some("bob@localhost/laptop"));
    assert_eq!(got.child("body", CLIENT_NS).unwrap().text(), "hi alice");
}

#[tokio::test]
async fn plain_is_offered_only_when_allowed() {
    let node = node().await;
    let mut client = Client::connect(node.addr).await;
    let features = client.open().await;
    assert_eq!(mechanisms(&features), ["SCRAM-SHA-256", "SCRAM-SHA-1"]);
    assert_eq!(
        client.plain("alice", "alice-pw").await,
        Err("encryption-required".into())
    );

    let allowed = node_with(
        WhatsappConfig {
            allow_insecure_plain: true,
            ..WhatsappConfig::default()
        },
        &["alice"],
    )
    .await;
    let mut client = Client::connect(allowed.addr).await;
    let features = client.open().await;
    assert!(mechanisms(&features).contains(&"PLAIN".to_owned()));
    client.plain("alice", "alice-pw").await.unwrap();
    assert_eq!(
        client.bind_session(None).await.split('/').next(),
        Some("alice@localhost")
    );
}

#[tokio::test]
async fn wrong_password_is_not_authorized_and_stanzas_before_auth_close_the_stream() {
    let node = node().await;
    let mut client = Client::connect(node.addr).await;
    client.open().await;
    assert_eq!(
        client.scram("alice", "wrong").await,
        Err("not-authorized".into())
    );
    assert_eq!(
        client.scram("nobody", "x").await,
        Err("not-authorized".into())
    );
    client
        .send("<message to='bob@localhost'><body>x</body></message>")
        .await;
    client.expect_stream_error("not-authorized").await;
}

#[tokio::test]
async fn offline_message_is_stored_then_delivered_in_order_with_a_delay_once() {
    let node = node().await;
    let (mut alice, _) = Client::online(node.addr, "alice", "alice-pw", "phone").await;
    for n in 1..=3 {
        alice
            .send(&format!("<message to='bob@localhost' type='chat' id='o{n}'><body>offline {n}</body></message>"))
            .await;
    }
    // The ping answers after the three messages were handled (stored durably).
    assert!(
        alice.ping("after-store").await.is_empty(),
        "no error came back"
    );

    let (mut bob, _) = Client::online(node.addr, "bob", "bob-pw", "laptop").await;
    let delivered = bob.ping("after-flush").await;
    let bodies: Vec<String> = delivered
        .iter()
        .map(|m| m.child("body", CLIENT_NS).unwrap().text())
        .collect();
    assert_eq!(bodies, ["offline 1", "offline 2", "offline 3"]);
    for message in &delivered {
        assert_eq!(message.attr("from"), Some("alice@localhost/phone"));
        let delay = message.child("delay", DELAY_NS).expect("a XEP-0203 stamp");
        assert_eq!(delay.attr("from"), Some("localhost"));
        let stamp = delay.attr("stamp").unwrap();
        assert!(
            stamp.len() == 24 && stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
            "{stamp}"
        );
    }
    drop(bob);
    let (mut again, _) = Client::online(node.addr, "bob", "bob-pw", "tablet").await;
    assert!(
        again.ping("second-login").await.is_empty(),
        "delivered messages were removed"
    );
}

#[tokio::test]
async fn message_to_unknown_account_bounces_service_unavailable() {
    let node = node().await;
    let (mut alice, _) = Client::online(node.addr, "alice", "alice-pw", "phone").await;
    alice
        .send("<message to='ghost@localhost' id='g1'><body>boo</body></message>")
        .await;
    let reply = alice.stanza().await;
    assert_eq!(reply.attr("type"), Some("error"));
    assert_eq!(reply.attr("id"), Some("g1"));
    assert_eq!(reply.attr("from"), Some("ghost@localhost"));
    assert_eq!(stanza_error(&reply).as_deref(), Some("service-unavailable"));
}

#[tokio::test]
async fn ping_disco_and_unknown_iq() {
    let node = node().await;
    let (mut alice, _) = Client::online(node.addr, "alice", "alice-pw", "phone").await;
    assert!(alice.ping("p1").await.is_empty());

    alice
        .send(&format!(
            "<iq type='get' id='d1' to='localhost'><query xmlns='{DISCO_INFO_NS}'/></iq>"
        ))
        .await;
    let disco = alice.stanza().await;
    assert_eq!(
        (disco.attr("type"), disco.attr("id")),
        (Some("result"), Some("d1"))
    );
    let features: Vec<&str> = disco
        .child("query", DISCO_INFO_NS)
        .unwrap()
        .children()
        .filter_map(|f| f.attr("var"))
        .collect();
    assert_eq!(
        features,
        [
            DISCO_INFO_NS,
            PING_NS,
            DELAY_NS,
            "jabber:iq:roster",
            "urn:xmpp:carbons:2",
            "urn:xmpp:mam:2",
            "urn:xmpp:sid:0"
        ]
    );

    alice
        .send("<iq type='get' id='u1'><query xmlns='urn:example:unknown'/></iq>")
        .await;
    let unknown = alice.stanza().await;
    assert_eq!(
        (unknown.attr("type"), unknown.attr("id")),
        (Some("error"), Some("u1"))
    );
    assert_eq!(
        stanza_error(&unknown).as_deref(),
        Some("service-unavailable")
    );
}

#[tokio::test]
async fn iq_to_another_full_jid_is_routed_with_the_real_from() {
    let node = node().await;
    let (mut alice, _) = Client::online(node.addr, "alice", "alice-pw", "phone").await;
    let (mut bob, _) = Client::online(node.addr, "bob", "bob-pw", "laptop").await;
    bob.ping("sync").await;
    alice.send("<iq type='get' id='v1' to='bob@localhost/laptop' from='x@y'><query xmlns='jabber:iq:version'/></iq>").await;
    let routed = bob.stanza().await;
    assert_eq!(routed.attr("from"), Some("alice@localhost/phone"));
    assert_eq!(routed.attr("id"), Some("v1"));
    alice.send("<iq type='get' id='v2' to='bob@localhost/gone'><query xmlns='jabber:iq:version'/></iq>").await;
    assert_eq!(
        stanza_error(&alice.stanza().await).as_deref(),
        Some("service-unavailable")
    );
}

#[tokio::test]
async fn malformed_xml_is_not_well_formed_then_closed() {
    let node = node().await;
    let (mut alice, _) = Client::online(node.addr, "alice", "alice-pw", "phone").await;
    alice.send("<message><body>broken</message>").await;
    alice.expect_stream_error("not-well-formed").await;
}

#[tokio::test]
async fn oversized_stanza_is_a_policy_violation() {
    let node = node_with(
        WhatsappConfig {
            max_stanza_bytes: 2048,
            ..WhatsappConfig::default()
        },
        &["alice"],
    )
    .await;
    let (mut alice, _) = Client::online(node.addr, "alice", "alice-pw", "phone").await;
    let body = "x".repeat(4096);
    alice
        .send(&format!(
            "<message to='alice@localhost'><body>{body}</body></message>"
        ))
        .await;
    alice.expect_stream_error("policy-violation").await;
}

#[tokio::test]
async fn connections_beyond_the_limit_get_resource_constraint() {
    let node = node_with(
        WhatsappConfig {
            max_connections: 2,
            ..WhatsappConfig::default()
        },
        &["alice"],
    )
    .await;
    let mut first = Client::connect(node.addr).await;
    first.open().await;
    let mut second = Client::connect(node.addr).await;
    second.open().await;
    let mut third = Client::connect(node.addr).await;
    third.expect_stream_error("resource-constraint").await;
    // A slot frees when a connection ends.
    first.send("</stream:stream>").await;
    assert!(matches!(first.next().await, Some(StreamEvent::StreamClose)));
    assert!(first.next().await.is_none());
    eventually("the slot is released", DEADLINE, || async {
        let mut fourth = Client::connect(node.addr).await;
        fourth.send(support::HEADER).await;
        fourth.next().await;
        fourth.stanza().await.is("features", STREAMS_NS)
    })
    .await;
}

#[tokio::test]
async fn killing_the_instance_cuts_every_connection() {
    let node = node().await;
    let (mut alice, _) = Client::online(node.addr, "alice", "alice-pw", "phone").await;
    let (mut bob, _) = Client::online(node.addr, "bob", "bob-pw", "laptop").await;
    alice.ping("a").await;
    bob.ping("b").await;
    assert!(node.platform.kill(&node.instance_id).await);
    assert!(alice.next().await.is_none(), "alice's socket was closed");
    assert!(bob.next().await.is_none(), "bob's socket was closed");
    assert!(
        TcpStream::connect(node.addr).await.is_err(),
        "the listener is gone"
    );
}

#[tokio::test]
async fn a_slow_reader_is_disconnected_and_never_blocks_the_sender_or_others() {
    let node = node_with(
        WhatsappConfig {
            outbound_queue: 4,
            // Alice's flood is the test's instrument, not what it is about.
            max_stanzas_per_second: 1_000_000,
            stanza_burst: 1_000_000,
            max_bytes_per_second: u32::MAX,
            ..WhatsappConfig::default()
        },
        &["alice", "bob", "carol"],
    )
    .await;
    let (mut alice, _) = Client::online(node.addr, "alice", "alice-pw", "phone").await;
    let (mut bob, _) = Client::online(node.addr, "bob", "bob-pw", "laptop").await;
    let (mut carol, _) = Client::online(node.addr, "carol", "carol-pw", "desk").await;
    bob.ping("ready").await;
    carol.ping("ready").await;
    // Bob stops reading. Alice floods him with headlines (never stored offline) until
    // the kernel buffers and his bounded queue are full and the router drops him.
    let body = "y".repeat(32 * 1024);
    let flood =
        format!("<message to='bob@localhost' type='headline'><body>{body}</body></message>");
    const SENT: usize = 1024; // 32 MiB: far beyond loopback socket buffers
    for round in 0..SENT {
        alice.send(&flood).await;
        if round % 128 == 127 {
            // Alice is still served while Bob is stuck.
            assert!(alice.ping(&format!("alive-{round}")).await.is_empty());
        }
    }
    // Bob's socket ends after what the kernel had buffered.
    let mut stanzas = 0usize;
    while let Some(event) = bob.next().await {
        assert!(matches!(event, StreamEvent::Stanza(_)), "{event:?}");
        stanzas += 1;
    }
    assert!(
        stanzas < SENT,
        "bob was cut off: only {stanzas} of {SENT} reached him"
    );
    // Carol never noticed.
    alice
        .send("<message to='carol@localhost' type='chat'><body>still here</body></message>")
        .await;
    assert_eq!(
        carol
            .stanza()
            .await
            .child("body", CLIENT_NS)
            .unwrap()
            .text(),
        "still here"
    );
}

#[tokio::test]
async fn an_account_added_by_the_operator_command_can_log_in_on_the_running_node() {
    let node = node().await;
    let root = node.root.clone();
    let added = casebook_whatsapp::auth::run_account_command(
        &root,
        casebook_whatsapp::auth::AccountCommand::Add {
            jid: "dave@localhost".into(),
            password: "dave-pw".into(),
            iterations: 4096,
        },
    )
    .unwrap();
    assert!(added.contains("dave@localhost"));
    // The node re-reads the account file on a cadence: poll until it knows dave
    // (seldom: every failed login counts against this address in the limiter).
    eventually("the new account becomes usable", DEADLINE, || async {
        let mut client = Client::connect(node.addr).await;
        client.open().await;
        if client.scram("dave", "dave-pw").await.is_err() {
            // Paced to the reload cadence, so the failures stay below the
            // limiter's per-account bound.
            tokio::time::sleep(Duration::from_secs(1)).await;
            return false;
        }
        assert_eq!(
            client.bind_session(None).await.split('/').next(),
            Some("dave@localhost")
        );
        true
    })
    .await;
}

#[tokio::test]
async fn a_graceful_stop_tells_clients_system_shutdown() {
    let node = node().await;
    let (mut alice, _) = Client::online(node.addr, "alice", "alice-pw", "phone").await;
    alice.ping("ready").await;
    let platform = node.platform.clone();
    let id = node.instance_id.clone();
    let stop = tokio::spawn(async move { platform.stop(&id, Duration::from_secs(5)).await });
    alice.expect_stream_error("system-shutdown").await;
    let report = stop.await.unwrap().expect("the instance existed");
    assert!(report.drained, "every connection task finished");
}
