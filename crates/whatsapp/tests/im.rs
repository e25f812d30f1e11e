//! Instant-messaging features end to end over real loopback sockets: rosters and
//! presence subscriptions (RFC 6121), receipts (XEP-0184), carbons (XEP-0280),
//! the message archive (XEP-0313), in-band registration (XEP-0077), disco#info.
//! Waits are bounded by a deadline (a hang fails the test); nothing asserts on
//! timing.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use casebook_kit::clock::{SharedClock, SystemClock};
use casebook_kit::runtime::{InstanceSpec, Platform};
use casebook_kit::topology::Topology;
use casebook_whatsapp::auth::{
    Accounts, AccountsConfig, ScramHash, decode_payload, encode_payload,
};
use casebook_whatsapp::node::conn::{BIND_NS, DISCO_INFO_NS, PING_NS, SASL_NS};
use casebook_whatsapp::node::stanza::STANZAS_NS;
use casebook_whatsapp::node::{ChatNode, ChatSettings, WhatsappConfig};
use casebook_whatsapp::xml::{CLIENT_NS, Element, STREAMS_NS, StreamEvent, StreamParser};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DEADLINE: Duration = Duration::from_secs(20);
const ROSTER_NS: &str = "jabber:iq:roster";

struct Node {
    platform: Platform,
    instance_id: String,
    addr: SocketAddr,
}

impl Node {
    /// Kills the instance and drops the process's state (a crash, as far as the
    /// stores can tell).
    async fn crash(self) {
        assert!(self.platform.kill(&self.instance_id).await);
        drop(self.platform);
    }
}

/// A node over `dir` (which may hold a previous node's state).
async fn node_in(dir: &Path, config: WhatsappConfig, users: &[&str], clock: SharedClock) -> Node {
    let accounts = Accounts::open(dir, &config.domain, AccountsConfig::default()).unwrap();
    for user in users {
        if !accounts.contains(user) {
            accounts.add(user, &format!("{user}-pw")).unwrap();
        }
    }
    let topology = Topology::uniform(&["r1"], 1);
    let platform = Platform::new(topology.clone(), dir, clock);
    platform.register_service(std::sync::Arc::new(ChatNode::new(ChatSettings {
        config,
        accounts_root: dir.to_path_buf(),
    })));
    let info = platform
        .start(InstanceSpec {
            service: "chat".into(),
            instance_id: None,
            placement: topology.spread(0),
            listen: "127.0.0.1:0".parse().unwrap(),
            version: "test".into(),
            port_hint: None,
        })
        .await
        .unwrap();
    Node {
        platform,
        instance_id: info.instance_id,
        addr: info.address,
    }
}

async fn node(dir: &Path) -> Node {
    node_in(
        dir,
        WhatsappConfig::default(),
        &["alice", "bob", "carol"],
        SystemClock::shared(),
    )
    .await
}

async fn login(addr: SocketAddr, user: &str, resource: &str) -> Client {
    let mut client = Client::connect(addr).await;
    client.open().await;
    client.scram(user, &format!("{user}-pw")).await.unwrap();
    client.bind(Some(resource)).await;
    client
}

fn condition(element: &Element) -> String {
    element
        .children()
        .next()
        .map(|c| c.name().to_owned())
        .unwrap_or_default()
}

fn stanza_error(stanza: &Element) -> Option<String> {
    let error = stanza.child("error", CLIENT_NS)?;
    error
        .children()
        .find(|c| c.ns() == STANZAS_NS)
        .map(|c| c.name().to_owned())
}

struct Client {
    stream: TcpStream,
    parser: StreamParser,
    events: VecDeque<StreamEvent>,
    eof: bool,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Self {
        Self {
            stream: TcpStream::connect(addr).await.unwrap(),
            parser: StreamParser::new(Default::default()),
            events: VecDeque::new(),
            eof: false,
        }
    }

    async fn send(&mut self, data: &str) {
        self.stream.write_all(data.as_bytes()).await.unwrap();
    }

    /// The next event, or `None` once the server closed the socket.
    async fn next(&mut self) -> Option<StreamEvent> {
        tokio::time::timeout(DEADLINE, async {
            loop {
                if let Some(event) = self.events.pop_front() {
                    return Some(event);
                }
                if self.eof {
                    return None;
                }
                let mut buf = [0u8; 4096];
                match self.stream.read(&mut buf).await {
                    Ok(0) | Err(_) => self.eof = true,
                    Ok(n) => {
                        let mut out = Vec::new();
                        self.parser.feed_events(&buf[..n], &mut out).unwrap();
                        self.events.extend(out);
                    }
                }
            }
        })
        .await
        .expect("the server answered before the deadline")
    }

    async fn stanza(&mut self) -> Element {
        match self.next().await {
            Some(StreamEvent::Stanza(element)) => element,
            other => panic!("expected a stanza, got {other:?}"),
        }
    }

    /// Opens a stream; returns the features.
    async fn open(&mut self) -> Element {
        self.parser.reset();
        self.send("<?xml version='1.0'?><stream:stream to='localhost' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>").await;
        match self.next().await {
            Some(StreamEvent::StreamOpen { attrs }) => {
                let id = attrs
                    .iter()
                    .find(|(k, _)| k == "id")
                    .map(|(_, v)| v.clone());
                assert!(id.is_some_and(|id| id.len() >= 16), "a fresh stream id");
            }
            other => panic!("expected a stream header, got {other:?}"),
        }
        let features = self.stanza().await;
        assert!(features.is("features", STREAMS_NS), "{features:?}");
        features
    }

    /// Runs SCRAM-SHA-256; `Ok` on success, else the failure condition.
    async fn scram(&mut self, user: &str, password: &str) -> Result<(), String> {
        let hash = ScramHash::Sha256;
        let bare = format!("n={user},r=clientnonce{}", rand::random::<u32>());
        self.send(&format!(
            "<auth xmlns='{SASL_NS}' mechanism='SCRAM-SHA-256'>{}</auth>",
            encode_payload(format!("n,,{bare}").as_bytes())
        ))
        .await;
        let challenge = self.stanza().await;
        if challenge.is("failure", SASL_NS) {
            return Err(condition(&challenge));
        }
        assert!(challenge.is("challenge", SASL_NS), "{challenge:?}");
        let server_first = String::from_utf8(decode_payload(&challenge.text()).unwrap()).unwrap();
        let field = |key: &str| {
            server_first
                .split(',')
                .find_map(|p| p.strip_prefix(key))
                .unwrap()
                .to_owned()
        };
        let (nonce, salt, iterations) = (
            field("r="),
            field("s="),
            field("i=").parse::<u32>().unwrap(),
        );
        let salt = decode_payload(&salt).unwrap();
        let salted = hash.salted_password(password.as_bytes(), &salt, iterations);
        let client_key = hash.hmac(&salted, &[b"Client Key"]);
        let stored_key = hash.digest(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{bare},{server_first},{without_proof}");
        let signature = hash.hmac(&stored_key, &[auth_message.as_bytes()]);
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        self.send(&format!(
            "<response xmlns='{SASL_NS}'>{}</response>",
            encode_payload(format!("{without_proof},p={}", encode_payload(&proof)).as_bytes())
        ))
        .await;
        let outcome = self.stanza().await;
        if outcome.is("success", SASL_NS) {
            Ok(())
        } else {
            Err(condition(&outcome))
        }
    }

    async fn plain(&mut self, user: &str, password: &str) -> Result<(), String> {
        self.send(&format!(
            "<auth xmlns='{SASL_NS}' mechanism='PLAIN'>{}</auth>",
            encode_payload(format!("\0{user}\0{password}").as_bytes())
        ))
        .await;
        let outcome = self.stanza().await;
        if outcome.is("success", SASL_NS) {
            Ok(())
        } else {
            Err(condition(&outcome))
        }
    }

    /// Restarts the stream, binds `resource`; returns the full JID.
    async fn bind(&mut self, resource: Option<&str>) -> String {
        let features = self.open().await;
        assert!(features.child("bind", BIND_NS).is_some());
        let resource = resource
            .map(|r| format!("<resource>{r}</resource>"))
            .unwrap_or_default();
        self.send(&format!(
            "<iq type='set' id='b1'><bind xmlns='{BIND_NS}'>{resource}</bind></iq>"
        ))
        .await;
        let result = self.stanza().await;
        assert_eq!(result.attr("type"), Some("result"), "{result:?}");
        let jid = result
            .child("bind", BIND_NS)
            .unwrap()
            .child("jid", BIND_NS)
            .unwrap()
            .text();
        self.send(
            "<iq type='set' id='s1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>",
        )
        .await;
        let session = self.stanza().await;
        assert_eq!(
            (session.attr("type"), session.attr("id")),
            (Some("result"), Some("s1"))
        );
        jid
    }

    /// Logs in with SCRAM, binds, sends initial presence.
    async fn online(
        addr: SocketAddr,
        user: &str,
        password: &str,
        resource: &str,
    ) -> (Self, String) {
        let mut client = Self::connect(addr).await;
        client.open().await;
        client.scram(user, password).await.unwrap();
        let jid = client.bind(Some(resource)).await;
        client.send("<presence/>").await;
        (client, jid)
    }

    /// A ping round trip: everything the server sent before it is drained first.
    async fn ping(&mut self, id: &str) -> Vec<Element> {
        self.send(&format!(
            "<iq type='get' id='{id}'><ping xmlns='{PING_NS}'/></iq>"
        ))
        .await;
        let mut before = Vec::new();
        loop {
            let stanza = self.stanza().await;
            if stanza.is("iq", CLIENT_NS) && stanza.attr("id") == Some(id) {
                assert_eq!(stanza.attr("type"), Some("result"));
                return before;
            }
            before.push(stanza);
        }
    }
}

impl Client {
    /// Sends an iq and returns its answer; other stanzas received meanwhile are
    /// kept in `seen`.
    async fn iq(&mut self, xml: &str, id: &str, seen: &mut Vec<Element>) -> Element {
        self.send(xml).await;
        loop {
            let stanza = self.stanza().await;
            if stanza.is("iq", CLIENT_NS)
                && stanza.attr("id") == Some(id)
                && matches!(stanza.attr("type"), Some("result") | Some("error"))
            {
                return stanza;
            }
            seen.push(stanza);
        }
    }

    async fn roster(&mut self) -> Vec<Element> {
        let mut seen = Vec::new();
        let result = self
            .iq(
                &format!("<iq type='get' id='rg'><query xmlns='{ROSTER_NS}'/></iq>"),
                "rg",
                &mut seen,
            )
            .await;
        assert_eq!(result.attr("type"), Some("result"), "{result:?}");
        result
            .child("query", ROSTER_NS)
            .unwrap()
            .children()
            .cloned()
            .collect()
    }

    /// Reads until a stanza matches `pred`; panics past the deadline.
    async fn until(&mut self, pred: impl Fn(&Element) -> bool) -> Element {
        loop {
            let stanza = self.stanza().await;
            if pred(&stanza) {
                return stanza;
            }
        }
    }
}

fn presence_of<'a>(stanzas: &'a [Element], from: &str, kind: Option<&str>) -> Option<&'a Element> {
    stanzas.iter().find(|s| {
        s.is("presence", CLIENT_NS) && s.attr("from") == Some(from) && s.attr("type") == kind
    })
}

fn item<'a>(items: &'a [Element], jid: &str) -> Option<&'a Element> {
    items.iter().find(|i| i.attr("jid") == Some(jid))
}

fn is_push(stanza: &Element, jid: &str) -> Option<(String, Option<String>)> {
    if !(stanza.is("iq", CLIENT_NS) && stanza.attr("type") == Some("set")) {
        return None;
    }
    let item = stanza.child("query", ROSTER_NS)?.child("item", ROSTER_NS)?;
    (item.attr("jid") == Some(jid)).then(|| {
        (
            item.attr("subscription").unwrap_or_default().to_owned(),
            item.attr("ask").map(str::to_owned),
        )
    })
}

fn subscription(stanzas: &[Element], jid: &str) -> Option<(String, Option<String>)> {
    stanzas.iter().find_map(|s| is_push(s, jid))
}

#[tokio::test]
async fn subscription_handshake_then_presence_flows_one_way_and_unavailable_on_disconnect() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path()).await;
    let mut alice = login(node.addr, "alice", "phone").await;
    assert!(alice.roster().await.is_empty());
    alice.send("<presence/>").await;
    let mut bob = login(node.addr, "bob", "laptop").await;
    assert!(bob.roster().await.is_empty());
    bob.send("<presence><status>here</status></presence>").await;
    bob.ping("b0").await;

    alice
        .send("<presence to='bob@localhost/ignored' type='subscribe' id='sub1'><status>hi</status></presence>")
        .await;
    let push = alice.until(|s| is_push(s, "bob@localhost").is_some()).await;
    assert_eq!(
        is_push(&push, "bob@localhost"),
        Some(("none".into(), Some("subscribe".into()))),
        "pending-out"
    );
    let request = bob
        .until(|s| s.is("presence", CLIENT_NS) && s.attr("type") == Some("subscribe"))
        .await;
    assert_eq!(
        request.attr("from"),
        Some("alice@localhost"),
        "bare JID stamped"
    );
    assert_eq!(request.child("status", CLIENT_NS).unwrap().text(), "hi");

    bob.send("<presence to='alice@localhost' type='subscribed'/>")
        .await;
    let push = bob.until(|s| is_push(s, "alice@localhost").is_some()).await;
    assert_eq!(
        is_push(&push, "alice@localhost"),
        Some(("from".into(), None))
    );
    let seen = alice.ping("a1").await;
    assert_eq!(
        subscription(&seen, "bob@localhost"),
        Some(("to".into(), None))
    );
    assert!(
        presence_of(&seen, "bob@localhost", Some("subscribed")).is_some(),
        "{seen:?}"
    );
    let current = presence_of(&seen, "bob@localhost/laptop", None).expect("bob's current presence");
    assert_eq!(current.child("status", CLIENT_NS).unwrap().text(), "here");

    // Bob's updates reach alice; alice's do not reach bob (he has only `from`).
    bob.send("<presence><show>away</show></presence>").await;
    let update = alice
        .until(|s| s.is("presence", CLIENT_NS) && s.attr("from") == Some("bob@localhost/laptop"))
        .await;
    assert_eq!(update.child("show", CLIENT_NS).unwrap().text(), "away");
    alice.send("<presence><show>dnd</show></presence>").await;
    assert!(
        bob.ping("b1")
            .await
            .iter()
            .all(|s| !s.is("presence", CLIENT_NS))
    );

    // A fresh resource's roster says the same, durably.
    let mut tablet = login(node.addr, "alice", "tablet").await;
    let items = tablet.roster().await;
    let bob_item = item(&items, "bob@localhost").unwrap();
    assert_eq!(bob_item.attr("subscription"), Some("to"));
    assert_eq!(bob_item.attr("ask"), None);

    // Bob's socket goes away: alice's resources hear he is unavailable.
    drop(bob);
    let gone = alice
        .until(|s| s.is("presence", CLIENT_NS) && s.attr("type") == Some("unavailable"))
        .await;
    assert_eq!(gone.attr("from"), Some("bob@localhost/laptop"));
    assert_eq!(gone.attr("to"), Some("alice@localhost"));
}

#[tokio::test]
async fn unanswered_request_survives_a_crash_and_is_redelivered_at_each_login_until_answered() {
    let dir = tempfile::tempdir().unwrap();
    let node1 = node(dir.path()).await;
    let mut alice = login(node1.addr, "alice", "phone").await;
    alice.roster().await;
    alice.send("<presence/>").await;
    alice
        .send("<presence to='carol@localhost' type='subscribe'/>")
        .await;
    let seen = alice.ping("a1").await;
    assert_eq!(
        subscription(&seen, "carol@localhost"),
        Some(("none".into(), Some("subscribe".into()))),
        "{seen:?}"
    );
    drop(alice);
    node1.crash().await;

    let node2 = node(dir.path()).await;
    let mut alice = login(node2.addr, "alice", "phone").await;
    let items = alice.roster().await;
    let carol_item = item(&items, "carol@localhost").expect("roster survived the crash");
    assert_eq!(carol_item.attr("ask"), Some("subscribe"));
    alice.send("<presence/>").await;

    for resource in ["one", "two"] {
        let mut carol = login(node2.addr, "carol", resource).await;
        carol.send("<presence/>").await;
        let seen = carol.ping("c").await;
        assert!(
            presence_of(&seen, "alice@localhost", Some("subscribe")).is_some(),
            "re-delivered at login: {seen:?}"
        );
    }
    let mut carol = login(node2.addr, "carol", "three").await;
    carol.roster().await;
    carol.send("<presence/>").await;
    carol.ping("c3").await;
    carol
        .send("<presence to='alice@localhost' type='subscribed'/>")
        .await;
    let seen = carol.ping("c4").await;
    assert_eq!(
        subscription(&seen, "alice@localhost"),
        Some(("from".into(), None))
    );
    let seen = alice.ping("a2").await;
    assert!(presence_of(&seen, "carol@localhost", Some("subscribed")).is_some());
    assert_eq!(
        subscription(&seen, "carol@localhost"),
        Some(("to".into(), None))
    );
    let three = presence_of(&seen, "carol@localhost/three", None).expect("carol's presence");
    assert_eq!(three.attr("to"), Some("alice@localhost"));

    let mut again = login(node2.addr, "carol", "four").await;
    again.send("<presence/>").await;
    let seen = again.ping("c5").await;
    assert!(
        presence_of(&seen, "alice@localhost", Some("subscribe")).is_none(),
        "answered requests are not re-delivered"
    );
}

#[tokio::test]
async fn login_gets_contacts_presence_and_remove_cancels_both_directions() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path()).await;
    let mut alice = login(node.addr, "alice", "phone").await;
    alice.roster().await;
    alice.send("<presence/>").await;
    let mut bob = login(node.addr, "bob", "laptop").await;
    bob.roster().await;
    bob.send("<presence><status>bob here</status></presence>")
        .await;
    // Mutual subscription.
    alice
        .send("<presence to='bob@localhost' type='subscribe'/>")
        .await;
    bob.until(|s| s.attr("type") == Some("subscribe")).await;
    bob.send("<presence to='alice@localhost' type='subscribed'/>")
        .await;
    bob.send("<presence to='alice@localhost' type='subscribe'/>")
        .await;
    alice.until(|s| s.attr("type") == Some("subscribe")).await;
    alice
        .send("<presence to='bob@localhost' type='subscribed'/>")
        .await;
    let seen = alice.ping("a1").await;
    assert_eq!(
        subscription(&seen, "bob@localhost").unwrap().0,
        "both",
        "{seen:?}"
    );
    bob.ping("b1").await;

    // A second alice resource logging in gets bob's presence (probe result) and
    // alice's other resource's presence.
    let mut tablet = login(node.addr, "alice", "tablet").await;
    tablet.send("<presence/>").await;
    let seen = tablet.ping("t1").await;
    let probe = presence_of(&seen, "bob@localhost/laptop", None).expect("probe result");
    assert_eq!(probe.child("status", CLIENT_NS).unwrap().text(), "bob here");
    assert!(
        presence_of(&seen, "alice@localhost/phone", None).is_some(),
        "{seen:?}"
    );
    let seen = bob.ping("b2").await;
    assert!(
        presence_of(&seen, "alice@localhost/tablet", None).is_some(),
        "broadcast to from-contacts"
    );

    // Removal: the item goes, bob loses both directions and hears about it.
    let mut seen = Vec::new();
    let result = alice
        .iq(
            &format!("<iq type='set' id='rm'><query xmlns='{ROSTER_NS}'><item jid='bob@localhost' subscription='remove'/></query></iq>"),
            "rm",
            &mut seen,
        )
        .await;
    assert_eq!(result.attr("type"), Some("result"));
    let seen = bob.ping("b3").await;
    assert!(
        presence_of(&seen, "alice@localhost", Some("unsubscribe")).is_some(),
        "{seen:?}"
    );
    assert!(presence_of(&seen, "alice@localhost", Some("unsubscribed")).is_some());
    assert!(presence_of(&seen, "alice@localhost/phone", Some("unavailable")).is_some());
    let items = bob.roster().await;
    assert_eq!(
        item(&items, "alice@localhost")
            .unwrap()
            .attr("subscription"),
        Some("none")
    );
    assert!(item(&alice.roster().await, "bob@localhost").is_none());
}

#[tokio::test]
async fn directed_presence_is_routed_and_retracted_when_the_session_ends() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path()).await;
    let mut carol = login(node.addr, "carol", "desk").await;
    carol.send("<presence/>").await;
    carol.ping("c0").await;
    let mut alice = login(node.addr, "alice", "phone").await;
    alice.send("<presence/>").await;
    alice
        .send("<presence to='carol@localhost/desk'><status>psst</status></presence>")
        .await;
    alice.ping("a0").await;
    let got = carol.until(|s| s.is("presence", CLIENT_NS)).await;
    assert_eq!(got.attr("from"), Some("alice@localhost/phone"));
    assert_eq!(got.child("status", CLIENT_NS).unwrap().text(), "psst");
    drop(alice);
    let gone = carol.until(|s| s.is("presence", CLIENT_NS)).await;
    assert_eq!(gone.attr("type"), Some("unavailable"));
    assert_eq!(gone.attr("to"), Some("carol@localhost/desk"));
}

#[tokio::test]
async fn roster_bad_input_gets_precise_errors() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path()).await;
    let mut alice = login(node.addr, "alice", "phone").await;
    alice.send("<presence/>").await;
    let cases = [
        (
            "two",
            "<item jid='bob@localhost'/><item jid='carol@localhost'/>",
            "bad-request",
        ),
        ("none", "", "bad-request"),
        ("nojid", "<item name='x'/>", "bad-request"),
        ("res", "<item jid='bob@localhost/phone'/>", "bad-request"),
        ("bad", "<item jid='a@b@c'/>", "bad-request"),
        (
            "dup",
            "<item jid='bob@localhost'><group>g</group><group>g</group></item>",
            "bad-request",
        ),
        (
            "unknown",
            "<item jid='bob@localhost'><foo/></item>",
            "bad-request",
        ),
        (
            "rm",
            "<item jid='nobody@localhost' subscription='remove'/>",
            "item-not-found",
        ),
    ];
    for (id, items, expected) in cases {
        let mut seen = Vec::new();
        let reply = alice
            .iq(
                &format!(
                    "<iq type='set' id='{id}'><query xmlns='{ROSTER_NS}'>{items}</query></iq>"
                ),
                id,
                &mut seen,
            )
            .await;
        assert_eq!(reply.attr("type"), Some("error"), "{id}");
        assert_eq!(stanza_error(&reply).as_deref(), Some(expected), "{id}");
    }
    let long = "n".repeat(2000);
    let mut seen = Vec::new();
    let reply = alice
        .iq(&format!("<iq type='set' id='long'><query xmlns='{ROSTER_NS}'><item jid='bob@localhost' name='{long}'/></query></iq>"), "long", &mut seen)
        .await;
    assert_eq!(stanza_error(&reply).as_deref(), Some("not-acceptable"));
    // A good set after the bad ones works and is pushed.
    let reply = alice
        .iq(&format!("<iq type='set' id='ok'><query xmlns='{ROSTER_NS}'><item jid='Bob@LocalHost' name='Bob'><group>Friends</group></item></query></iq>"), "ok", &mut seen)
        .await;
    assert_eq!(reply.attr("type"), Some("result"));
    let items = alice.roster().await;
    let bob = item(&items, "bob@localhost").unwrap();
    assert_eq!(
        (bob.attr("name"), bob.attr("subscription")),
        (Some("Bob"), Some("none"))
    );

    // Subscriptions: malformed JID, no `to`, another domain, a ghost.
    alice
        .send("<presence to='a@b@c' type='subscribe' id='s1'/>")
        .await;
    let reply = alice.until(|s| s.attr("id") == Some("s1")).await;
    assert_eq!(stanza_error(&reply).as_deref(), Some("jid-malformed"));
    alice.send("<presence type='subscribe' id='s2'/>").await;
    let reply = alice.until(|s| s.attr("id") == Some("s2")).await;
    assert_eq!(stanza_error(&reply).as_deref(), Some("bad-request"));
    alice
        .send("<presence to='x@elsewhere.example' type='subscribe' id='s3'/>")
        .await;
    let reply = alice.until(|s| s.attr("id") == Some("s3")).await;
    assert_eq!(stanza_error(&reply).as_deref(), Some("service-unavailable"));
    alice
        .send("<presence to='ghost@localhost' type='subscribe'/>")
        .await;
    let seen = alice.ping("g").await;
    assert!(
        presence_of(&seen, "ghost@localhost", Some("unsubscribed")).is_some(),
        "{seen:?}"
    );
    let items = alice.roster().await;
    let ghost = item(&items, "ghost@localhost").unwrap();
    assert_eq!(
        (ghost.attr("subscription"), ghost.attr("ask")),
        (Some("none"), None)
    );
}
