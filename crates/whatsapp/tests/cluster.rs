//! Regional chat nodes end to end: three nodes (one per region) in one platform,
//! real loopback sockets for clients and for the node-to-node link, a raw-XMPP
//! client built on the crate's own XML layer. Waits are bounded by a deadline (a
//! hang fails the test); nothing asserts on timing — batching is shown by counters.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use casebook_kit::clock::SystemClock;
use casebook_kit::runtime::{InstanceSpec, Platform};
use casebook_kit::topology::{Placement, Topology};
use casebook_testkit::{eventually, eventually_sync};
use casebook_whatsapp::cluster::frame::{self, Frame};
use casebook_whatsapp::cluster::{Cluster, MemberSpec, NodeRef};
use casebook_whatsapp::node::{
    CASEBOOK_XMPP_NS, ChatNode, ChatSettings, DELAY_NS, RETRY_AFTER_SECS, WhatsappConfig,
};
use casebook_whatsapp::xml::{CLIENT_NS, STREAM_ERRORS_NS};
use support::{Client, DEADLINE, add_accounts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const REGIONS: [&str; 3] = ["us-east", "eu-west", "ap-south"];

struct Cloud {
    platform: Platform,
    chat: Arc<ChatNode>,
    /// (instance id, client address, link address) per region.
    nodes: Vec<(String, SocketAddr, SocketAddr)>,
    _dir: tempfile::TempDir,
}

impl Cloud {
    async fn start(config: WhatsappConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        add_accounts(dir.path(), &config.domain, &["alice", "bob", "carol"]);
        let topology = Topology::uniform(&REGIONS, 1);
        let platform = Platform::new(topology.clone(), dir.path(), SystemClock::shared());
        let chat = Arc::new(
            ChatNode::new(ChatSettings {
                config,
                accounts_root: dir.path().to_path_buf(),
            })
            .with_topology(topology.clone()),
        );
        platform.register_service(chat.clone());
        let mut nodes = Vec::new();
        for region in &topology.regions {
            let info = platform
                .start(InstanceSpec {
                    service: "chat".into(),
                    instance_id: None,
                    placement: Placement {
                        region: region.name.clone(),
                        zone: region.zones[0].clone(),
                    },
                    listen: "127.0.0.1:0".parse().unwrap(),
                    version: "test".into(),
                    port_hint: None,
                })
                .await
                .unwrap();
            let view = platform
                .list()
                .into_iter()
                .find(|v| v.info.instance_id == info.instance_id)
                .unwrap();
            let link = view
                .listeners
                .iter()
                .find(|l| l.name == "chat-link")
                .expect("the link listener is published")
                .address;
            nodes.push((info.instance_id, info.address, link));
        }
        Self {
            platform,
            chat,
            nodes,
            _dir: dir,
        }
    }

    fn addr(&self, node: usize) -> SocketAddr {
        self.nodes[node].1
    }

    fn id(&self, node: usize) -> &str {
        &self.nodes[node].0
    }

    fn cluster(&self) -> Arc<Cluster> {
        self.chat.cluster().expect("started")
    }

    fn sent(&self, node: usize) -> (u64, u64) {
        let stats = self.cluster().link_stats(self.id(node));
        (
            stats.frames_sent.load(Ordering::Relaxed),
            stats.batches_sent.load(Ordering::Relaxed),
        )
    }
}

impl Client {
    /// Logs in, binds, sends initial presence and waits until it was handled.
    async fn online(addr: SocketAddr, user: &str, resource: &str) -> Self {
        let mut client = Self::connect(addr).await;
        client.open().await;
        client.scram(user, &format!("{user}-pw")).await.unwrap();
        let jid = client.bind(resource).await;
        assert_eq!(jid, format!("{user}@localhost/{resource}"));
        client.send("<presence/>").await;
        assert!(client.ping("online").await.is_empty());
        client
    }

    /// The next message's body.
    async fn body(&mut self) -> String {
        let message = self.stanza().await;
        assert!(message.is("message", CLIENT_NS), "{message:?}");
        message.child("body", CLIENT_NS).unwrap().text()
    }
}

fn message(to: &str, id: &str, body: &str) -> String {
    format!("<message to='{to}' type='chat' id='{id}'><body>{body}</body></message>")
}

#[tokio::test]
async fn bare_and_full_messages_cross_nodes_and_the_reply_comes_back() {
    let cloud = Cloud::start(WhatsappConfig::default()).await;
    let mut alice = Client::online(cloud.addr(0), "alice", "phone").await;
    let mut bob = Client::online(cloud.addr(1), "bob", "laptop").await;

    alice
        .send("<message to='bob@localhost' from='mallory@localhost/x' type='chat' id='m1'><body>to your bare jid</body></message>")
        .await;
    let got = bob.stanza().await;
    assert_eq!(
        got.attr("from"),
        Some("alice@localhost/phone"),
        "stamped on node A"
    );
    assert_eq!(got.attr("id"), Some("m1"));
    assert_eq!(
        got.child("body", CLIENT_NS).unwrap().text(),
        "to your bare jid"
    );
    assert!(
        got.child("delay", DELAY_NS).is_none(),
        "live, not from offline"
    );

    alice
        .send(&message("bob@localhost/laptop", "m2", "to your full jid"))
        .await;
    assert_eq!(bob.body().await, "to your full jid");

    bob.send(&message("alice@localhost/phone", "r1", "reply"))
        .await;
    let reply = alice.stanza().await;
    assert_eq!(reply.attr("from"), Some("bob@localhost/laptop"));
    assert_eq!(reply.child("body", CLIENT_NS).unwrap().text(), "reply");

    // An iq to a full JID on another node is routed too.
    alice
        .send("<iq type='get' id='v1' to='bob@localhost/laptop'><query xmlns='jabber:iq:version'/></iq>")
        .await;
    let iq = bob.stanza().await;
    assert_eq!(
        (iq.attr("id"), iq.attr("from")),
        (Some("v1"), Some("alice@localhost/phone"))
    );
    // A full JID bound nowhere is a bounce, known at once from the registry.
    alice
        .send("<iq type='get' id='v2' to='bob@localhost/nowhere'><query xmlns='jabber:iq:version'/></iq>")
        .await;
    let bounce = alice.stanza().await;
    assert_eq!(
        (bounce.attr("id"), bounce.attr("type")),
        (Some("v2"), Some("error"))
    );
}

#[tokio::test]
async fn a_user_on_two_nodes_gets_a_bare_message_on_both() {
    let cloud = Cloud::start(WhatsappConfig::default()).await;
    let mut alice = Client::online(cloud.addr(0), "alice", "phone").await;
    let mut laptop = Client::online(cloud.addr(1), "bob", "laptop").await;
    let mut tablet = Client::online(cloud.addr(2), "bob", "tablet").await;
    let mut here = Client::online(cloud.addr(0), "bob", "desk").await;

    let located = cloud.cluster().registry.lookup_now("bob@localhost");
    assert_eq!(
        located.len(),
        3,
        "bob is registered on three nodes: {located:?}"
    );

    alice
        .send(&message("bob@localhost", "b1", "everyone"))
        .await;
    assert_eq!(laptop.body().await, "everyone");
    assert_eq!(tablet.body().await, "everyone");
    assert_eq!(here.body().await, "everyone");

    // Unavailable resources are not bare targets; full-JID routing still finds them.
    tablet.send("<presence type='unavailable'/>").await;
    tablet.ping("away").await;
    alice
        .send(&message("bob@localhost", "b2", "available only"))
        .await;
    assert_eq!(laptop.body().await, "available only");
    assert_eq!(here.body().await, "available only");
    alice
        .send(&message("bob@localhost/tablet", "b3", "just you"))
        .await;
    assert_eq!(tablet.body().await, "just you");
    assert!(laptop.ping("nothing-else").await.is_empty());
}

// Two workers: the sending node's connection task and its link task run in
// parallel, as in production, so batching comes from the link, not the scheduler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_crosses_the_link_in_fewer_writes_than_messages() {
    // Bob's queue holds the whole burst: this test is about the link, not slow readers.
    let cloud = Cloud::start(WhatsappConfig {
        outbound_queue: 4096,
        ..WhatsappConfig::default()
    })
    .await;
    let mut alice = Client::online(cloud.addr(0), "alice", "phone").await;
    let mut bob = Client::online(cloud.addr(1), "bob", "laptop").await;
    const N: usize = 500;
    let (frames_before, batches_before) = cloud.sent(0);
    let burst: String = (0..N)
        .map(|n| message("bob@localhost", &format!("burst-{n}"), &format!("{n}")))
        .collect();
    alice.send(&burst).await;
    for n in 0..N {
        assert_eq!(bob.body().await, n.to_string(), "in order");
    }
    // The counters move just after the write returns: wait for them.
    eventually_sync("the link counted every entry", DEADLINE, || {
        cloud.sent(0).0 - frames_before == N as u64
    })
    .await;
    let (_, batches) = cloud.sent(0);
    let writes = batches - batches_before;
    assert!(
        writes < N as u64,
        "{N} messages crossed in {writes} link writes: batched"
    );
}

#[tokio::test]
async fn killing_a_node_sends_its_users_messages_offline_and_forgets_its_sessions() {
    let cloud = Cloud::start(WhatsappConfig::default()).await;
    let mut alice = Client::online(cloud.addr(0), "alice", "phone").await;
    let mut bob = Client::online(cloud.addr(1), "bob", "laptop").await;
    let cluster = cloud.cluster();
    assert_eq!(cluster.registry.lookup_now("bob@localhost").len(), 1);
    assert_eq!(cluster.directory.nodes().len(), 3);

    assert!(cloud.platform.kill(cloud.id(1)).await);
    assert!(
        bob.next().await.is_none(),
        "bob's connection died with node B"
    );
    assert_eq!(cluster.directory.nodes().len(), 2, "B left the directory");
    assert!(
        cluster.registry.lookup_now("bob@localhost").is_empty(),
        "the registry forgot B's sessions"
    );
    assert_eq!(cluster.registry.entries(), 1, "only alice's entry is left");

    for n in 1..=3 {
        alice
            .send(&message(
                "bob@localhost",
                &format!("k{n}"),
                &format!("after kill {n}"),
            ))
            .await;
    }
    assert!(
        alice.ping("stored").await.is_empty(),
        "no error: the messages were stored"
    );

    let mut bob = Client::connect(cloud.addr(0)).await;
    bob.open().await;
    bob.scram("bob", "bob-pw").await.unwrap();
    bob.bind("desk").await;
    bob.send("<presence/>").await;
    let delivered = bob.ping("flushed").await;
    let bodies: Vec<String> = delivered
        .iter()
        .map(|m| {
            assert!(m.child("delay", DELAY_NS).is_some(), "from offline storage");
            m.child("body", CLIENT_NS).unwrap().text()
        })
        .collect();
    assert_eq!(bodies, ["after kill 1", "after kill 2", "after kill 3"]);
}

/// A fake peer node: joins the directory with a link listener the test drives.
async fn fake_peer(cloud: &Cloud, bob_resource: &str) -> (NodeRef, TcpListener) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cluster = cloud.cluster();
    let node = cluster.directory.join(MemberSpec {
        id: "chat-fake".into(),
        region: "nowhere".into(),
        client_addr: "127.0.0.1:9".parse().unwrap(),
        link_addr: listener.local_addr().unwrap(),
        live: Arc::new(AtomicUsize::new(0)),
        max_connections: 10,
    });
    cluster
        .registry
        .register_now("bob@localhost", bob_resource, true, &node);
    (node, listener)
}

/// Reads frames until a whole one arrived.
async fn read_frame(stream: &mut TcpStream, buf: &mut BytesMut) -> Option<Frame> {
    tokio::time::timeout(DEADLINE, async {
        loop {
            if let Some(frame) = frame::decode(buf).unwrap() {
                return Some(frame);
            }
            if stream.read_buf(buf).await.unwrap_or(0) == 0 {
                return None;
            }
        }
    })
    .await
    .expect("a frame before the deadline")
}

/// Reads batches until one carries a stanza containing `text` (nudges — asks to
/// flush offline messages — may come first); returns the first seq of the first
/// batch read, the last batch's last seq and every entry read.
async fn batch_with(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    text: &str,
) -> (u64, u64, Vec<frame::Entry>) {
    let mut first = None;
    let mut all = Vec::new();
    loop {
        match read_frame(stream, buf).await {
            Some(Frame::Batch { first_seq, entries }) => {
                first.get_or_insert(first_seq);
                let last = first_seq + entries.len() as u64 - 1;
                let found = entries.iter().any(|e| e.stanza.contains(text));
                all.extend(entries);
                if found {
                    return (first.unwrap(), last, all);
                }
            }
            other => panic!("expected a batch with {text:?}, got {other:?}"),
        }
    }
}

async fn accept_link(listener: &TcpListener, me: &NodeRef) -> (TcpStream, BytesMut) {
    let (mut stream, _) = tokio::time::timeout(DEADLINE, listener.accept())
        .await
        .unwrap()
        .unwrap();
    let mut buf = BytesMut::new();
    match read_frame(&mut stream, &mut buf).await {
        Some(Frame::Hello {
            to_node, to_epoch, ..
        }) => assert_eq!((to_node, to_epoch), (me.id.clone(), me.epoch)),
        other => panic!("expected a hello, got {other:?}"),
    }
    (stream, buf)
}

#[tokio::test]
async fn failures_after_the_link_accepted_a_message_store_it_offline_and_the_link_reconnects() {
    let cloud = Cloud::start(WhatsappConfig::default()).await;
    let mut alice = Client::online(cloud.addr(0), "alice", "phone").await;
    let (fake, listener) = fake_peer(&cloud, "phone").await;
    let stats = cloud.cluster().link_stats(cloud.id(0));

    // 1. The peer answers "gone" for the entry: node A stores it offline.
    alice
        .send(&message("bob@localhost", "f1", "gone there"))
        .await;
    let (mut link, mut buf) = accept_link(&listener, &fake).await;
    let (first_seq, last, _) = batch_with(&mut link, &mut buf, "gone there").await;
    assert_eq!((first_seq, last), (1, 1));
    let mut out = BytesMut::new();
    frame::encode(
        &Frame::Ack {
            upto: 1,
            gone: vec![1],
        },
        &mut out,
    );
    link.write_all(&out).await.unwrap();
    eventually_sync("the gone message is stored offline", DEADLINE, || {
        stats.diverted_offline.load(Ordering::Relaxed) == 1
    })
    .await;

    // 2. The peer answers garbage: the link drops, the unacknowledged entry is
    // stored offline, and the link is re-established.
    let failures = stats.failures.load(Ordering::Relaxed);
    alice
        .send(&message("bob@localhost", "f2", "lost in flight"))
        .await;
    batch_with(&mut link, &mut buf, "lost in flight").await;
    link.write_all(b"\x00\x00\x00\x02\xff\xff").await.unwrap();
    eventually_sync("the in-flight message is stored offline", DEADLINE, || {
        stats.diverted_offline.load(Ordering::Relaxed) == 2
    })
    .await;
    assert!(stats.failures.load(Ordering::Relaxed) > failures);
    // The link comes back (after its backoff) and carries the next message.
    let (again, mut buf) = accept_link(&listener, &fake).await;
    eventually_sync("the link is up again", DEADLINE, || {
        stats.connects.load(Ordering::Relaxed) >= 2
    })
    .await;
    // Until the router sees the link up again a message goes offline at once
    // (same id: stored once); after that it crosses the new connection.
    let alice = tokio::sync::Mutex::new(alice);
    let again = tokio::sync::Mutex::new(again);
    eventually("a batch after the reconnect", DEADLINE, || async {
        let mut alice = alice.lock().await;
        alice
            .send(&message("bob@localhost", "f3", "after reconnect"))
            .await;
        alice.ping("f3-sent").await;
        let mut peek = [0u8; 1];
        let again = again.lock().await;
        matches!(
            tokio::time::timeout(Duration::from_millis(200), again.peek(&mut peek)).await,
            Ok(Ok(_))
        )
    })
    .await;
    // Alice stays connected to the end.
    let (_alice, mut again) = (alice.into_inner(), again.into_inner());
    let (first_seq, last, entries) = batch_with(&mut again, &mut buf, "after reconnect").await;
    assert_eq!(first_seq, 1, "a new connection numbers from 1");
    // The nudge for what was diverted while the link was down follows it up.
    assert!(
        entries
            .iter()
            .any(|e| e.op == frame::Op::Nudge && e.bare == "bob@localhost"),
        "bob's sessions there are asked to flush: {entries:?}"
    );
    let mut out = BytesMut::new();
    frame::encode(
        &Frame::Ack {
            upto: last,
            gone: vec![],
        },
        &mut out,
    );
    again.write_all(&out).await.unwrap();

    // Bob logs in on a real node and finds both diverted messages, once each.
    cloud.cluster().directory.leave(&fake);
    let mut bob = Client::connect(cloud.addr(1)).await;
    bob.open().await;
    bob.scram("bob", "bob-pw").await.unwrap();
    bob.bind("laptop").await;
    bob.send("<presence/>").await;
    let bodies: Vec<String> = bob
        .ping("flushed")
        .await
        .iter()
        .map(|m| m.child("body", CLIENT_NS).unwrap().text())
        .filter(|b| b != "after reconnect")
        .collect();
    assert_eq!(bodies, ["gone there", "lost in flight"]);
}

#[tokio::test]
async fn malformed_frames_drop_only_that_link_connection() {
    let cloud = Cloud::start(WhatsappConfig::default()).await;
    let mut alice = Client::online(cloud.addr(0), "alice", "phone").await;
    let mut bob = Client::online(cloud.addr(1), "bob", "laptop").await;
    alice.send(&message("bob@localhost", "w1", "warm-up")).await;
    assert_eq!(bob.body().await, "warm-up");
    let link_b = cloud.nodes[1].2;
    let refused = cloud.cluster().link_stats(cloud.id(1));
    let before = refused.inbound_refused.load(Ordering::Relaxed);

    // Garbage instead of a hello: B drops the connection.
    let mut garbage = TcpStream::connect(link_b).await.unwrap();
    garbage
        .write_all(b"\xff\xff\xff\xffnot a frame")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let read = tokio::time::timeout(DEADLINE, garbage.read_to_end(&mut sink))
        .await
        .unwrap();
    assert!(read.is_err() || sink.is_empty(), "closed without an answer");

    // A hello for another life of B is rejected with a reason.
    let mut stale = TcpStream::connect(link_b).await.unwrap();
    let mut out = BytesMut::new();
    frame::encode(
        &Frame::Hello {
            version: frame::VERSION,
            from_node: "intruder".into(),
            from_epoch: 1,
            to_node: cloud.id(1).to_owned(),
            to_epoch: u64::MAX,
        },
        &mut out,
    );
    stale.write_all(&out).await.unwrap();
    let mut buf = BytesMut::new();
    assert!(matches!(
        read_frame(&mut stale, &mut buf).await,
        Some(Frame::Reject { .. })
    ));

    // A good hello then a batch out of sequence: dropped.
    let me = NodeRef {
        id: cloud.id(1).to_owned(),
        epoch: cloud
            .cluster()
            .directory
            .nodes()
            .iter()
            .find(|n| n.node.id == cloud.id(1))
            .unwrap()
            .node
            .epoch,
    };
    let mut skew = TcpStream::connect(link_b).await.unwrap();
    let mut out = BytesMut::new();
    frame::encode(
        &Frame::Hello {
            version: frame::VERSION,
            from_node: "intruder".into(),
            from_epoch: 1,
            to_node: me.id.clone(),
            to_epoch: me.epoch,
        },
        &mut out,
    );
    frame::encode(
        &Frame::Batch {
            first_seq: 7,
            entries: vec![frame::Entry {
                op: frame::Op::Bare,
                flags: 0,
                bare: "bob@localhost".into(),
                resource: String::new(),
                stanza: "<message><body>skewed</body></message>".into(),
            }],
        },
        &mut out,
    );
    skew.write_all(&out).await.unwrap();
    let mut buf = BytesMut::new();
    assert_eq!(read_frame(&mut skew, &mut buf).await, None, "dropped");

    eventually_sync("B counted three refused link connections", DEADLINE, || {
        refused.inbound_refused.load(Ordering::Relaxed) == before + 3
    })
    .await;
    // The real link and both nodes keep serving.
    alice
        .send(&message("bob@localhost", "w2", "still flowing"))
        .await;
    assert_eq!(bob.body().await, "still flowing");
    assert!(bob.ping("alive").await.is_empty());
}

#[tokio::test]
async fn a_full_node_points_to_the_least_loaded_other_then_all_full_means_retry_after() {
    let cloud = Cloud::start(WhatsappConfig {
        max_connections: 1,
        ..WhatsappConfig::default()
    })
    .await;
    // C holds one connection, A holds one: B is the only node with room.
    let mut on_c = Client::connect(cloud.addr(2)).await;
    on_c.open().await;
    let mut on_a = Client::connect(cloud.addr(0)).await;
    on_a.open().await;

    let mut extra = Client::connect(cloud.addr(0)).await;
    let error = extra.stream_error().await;
    let other = error
        .child("see-other-host", STREAM_ERRORS_NS)
        .unwrap_or_else(|| panic!("see-other-host expected: {error:?}"));
    assert_eq!(
        other.text(),
        cloud.addr(1).to_string(),
        "names node B's client port"
    );

    // Following the redirect works; now every node is full.
    let mut on_b = Client::connect(cloud.addr(1)).await;
    on_b.open().await;
    let mut extra = Client::connect(cloud.addr(0)).await;
    let error = extra.stream_error().await;
    assert!(
        error
            .child("resource-constraint", STREAM_ERRORS_NS)
            .is_some(),
        "{error:?}"
    );
    let retry = error
        .child("retry-after", CASEBOOK_XMPP_NS)
        .expect("an application-specific retry-after");
    assert_eq!(
        retry.attr("seconds"),
        Some(RETRY_AFTER_SECS.to_string().as_str())
    );
    drop((on_a, on_b, on_c));
}

#[tokio::test]
async fn an_evacuated_region_sends_new_and_connected_clients_to_another_region_then_serves_again() {
    let cloud = Cloud::start(WhatsappConfig::default()).await;
    // Bob on us-east and Carol on ap-south load those nodes; alice is on eu-west.
    let _bob = Client::online(cloud.addr(0), "bob", "phone").await;
    let _carol = Client::online(cloud.addr(2), "carol", "phone").await;
    let mut bob_again = Client::online(cloud.addr(2), "bob", "laptop").await;
    let mut alice = Client::online(cloud.addr(1), "alice", "phone").await;

    // ap-south is out too: only us-east may be named.
    cloud.platform.set_region_evacuated("ap-south", true);
    cloud.platform.set_region_evacuated("eu-west", true);

    // The connected session is told to go elsewhere, then its stream closes.
    let error = alice.stream_error().await;
    let other = error
        .child("see-other-host", STREAM_ERRORS_NS)
        .unwrap_or_else(|| panic!("see-other-host expected: {error:?}"));
    assert_eq!(other.text(), cloud.addr(0).to_string(), "us-east's node");
    // ap-south's session is moved too, to the one serving region.
    let error = bob_again.stream_error().await;
    assert_eq!(
        error
            .child("see-other-host", STREAM_ERRORS_NS)
            .map(|e| e.text()),
        Some(cloud.addr(0).to_string())
    );

    // A new client of eu-west is refused with the same answer.
    let mut fresh = Client::connect(cloud.addr(1)).await;
    let error = fresh.stream_error().await;
    assert_eq!(
        error
            .child("see-other-host", STREAM_ERRORS_NS)
            .map(|e| e.text()),
        Some(cloud.addr(0).to_string())
    );
    // Following it works.
    let _alice = Client::online(cloud.addr(0), "alice", "phone").await;

    // Back in service: eu-west accepts again.
    cloud.platform.set_region_evacuated("eu-west", false);
    cloud.platform.set_region_evacuated("ap-south", false);
    let _alice_home = Client::online(cloud.addr(1), "alice", "desk").await;
}

#[tokio::test]
async fn an_evacuated_region_with_nowhere_to_go_keeps_its_sessions_and_says_retry_later() {
    let cloud = Cloud::start(WhatsappConfig::default()).await;
    let mut alice = Client::online(cloud.addr(1), "alice", "phone").await;
    for region in REGIONS {
        cloud.platform.set_region_evacuated(region, true);
    }
    let mut fresh = Client::connect(cloud.addr(1)).await;
    let error = fresh.stream_error().await;
    assert!(
        error
            .child("resource-constraint", STREAM_ERRORS_NS)
            .is_some(),
        "{error:?}"
    );
    // The session stays: it still answers, well after a move tick.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(alice.ping("still-here").await.is_empty());
}
