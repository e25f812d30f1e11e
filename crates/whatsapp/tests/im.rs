//! Instant-messaging features end to end over real loopback sockets: rosters and
//! presence subscriptions (RFC 6121), receipts (XEP-0184), carbons (XEP-0280),
//! the message archive (XEP-0313), in-band registration (XEP-0077), disco#info.
//! Waits are bounded by a deadline (a hang fails the test); nothing asserts on
//! timing.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use casebook_kit::clock::{SharedClock, SystemClock};
use casebook_whatsapp::node::WhatsappConfig;
use casebook_whatsapp::node::conn::DISCO_INFO_NS;
use casebook_whatsapp::xml::{CLIENT_NS, Element, STREAMS_NS, StreamEvent};
use support::{Client, Node, stanza_error};

const ROSTER_NS: &str = "jabber:iq:roster";

/// A node over `dir` (which may hold a previous node's state).
async fn node_in(dir: &Path, config: WhatsappConfig, users: &[&str], clock: SharedClock) -> Node {
    Node::start_in(dir, config, users, clock).await
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
    client.bind_session(Some(resource)).await;
    client
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
    // More groups than one item may have: refused, however many are sent.
    let groups: String = (0..500).map(|g| format!("<group>g{g}</group>")).collect();
    let reply = alice
        .iq(&format!("<iq type='set' id='groups'><query xmlns='{ROSTER_NS}'><item jid='bob@localhost'>{groups}</item></query></iq>"), "groups", &mut seen)
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

const RECEIPTS_NS: &str = "urn:xmpp:receipts";
const CARBONS_NS: &str = "urn:xmpp:carbons:2";
const FORWARD_NS: &str = "urn:xmpp:forward:0";
const MAM_NS: &str = "urn:xmpp:mam:2";
const SID_NS: &str = "urn:xmpp:sid:0";
const RSM_NS: &str = "http://jabber.org/protocol/rsm";

async fn online(addr: SocketAddr, user: &str, resource: &str) -> Client {
    let mut client = login(addr, user, resource).await;
    client.send("<presence/>").await;
    client.ping("online").await;
    client
}

#[tokio::test]
async fn receipts_travel_end_to_end_online_and_through_offline_storage() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path()).await;
    let mut alice = online(node.addr, "alice", "phone").await;
    let mut bob = online(node.addr, "bob", "laptop").await;
    alice
        .send(&format!("<message to='bob@localhost' type='chat' id='r1'><body>hi</body><request xmlns='{RECEIPTS_NS}'/></message>"))
        .await;
    let got = bob.until(|s| s.attr("id") == Some("r1")).await;
    assert!(got.child("request", RECEIPTS_NS).is_some());
    let from = got.attr("from").unwrap().to_owned();
    bob.send(&format!(
        "<message to='{from}' id='ack1'><received xmlns='{RECEIPTS_NS}' id='r1'/></message>"
    ))
    .await;
    let receipt = alice.until(|s| s.attr("id") == Some("ack1")).await;
    assert_eq!(receipt.attr("from"), Some("bob@localhost/laptop"));
    assert_eq!(
        receipt.child("received", RECEIPTS_NS).unwrap().attr("id"),
        Some("r1")
    );

    // Offline: bob is gone when the request is sent, alice is gone when the receipt is.
    drop(bob);
    alice.ping("settle").await;
    alice
        .send(&format!("<message to='bob@localhost' type='chat' id='r2'><body>later</body><request xmlns='{RECEIPTS_NS}'/></message>"))
        .await;
    alice.ping("stored").await;
    drop(alice);
    let mut bob = login(node.addr, "bob", "tablet").await;
    bob.send("<presence/>").await;
    let got = bob.until(|s| s.attr("id") == Some("r2")).await;
    assert!(got.child("request", RECEIPTS_NS).is_some());
    assert_eq!(got.attr("from"), Some("alice@localhost/phone"));
    bob.send(&format!("<message to='alice@localhost/phone' id='ack2'><received xmlns='{RECEIPTS_NS}' id='r2'/></message>"))
        .await;
    bob.ping("b").await;
    let mut alice = login(node.addr, "alice", "phone").await;
    alice.send("<presence/>").await;
    let receipt = alice.until(|s| s.attr("id") == Some("ack2")).await;
    assert_eq!(
        receipt.child("received", RECEIPTS_NS).unwrap().attr("id"),
        Some("r2")
    );
    assert_eq!(receipt.attr("from"), Some("bob@localhost/tablet"));
}

fn forwarded<'a>(carbon: &'a Element, direction: &str) -> &'a Element {
    carbon
        .child(direction, CARBONS_NS)
        .and_then(|d| d.child("forwarded", FORWARD_NS))
        .and_then(|f| f.child("message", CLIENT_NS))
        .unwrap_or_else(|| panic!("a {direction} carbon: {carbon:?}"))
}

#[tokio::test]
async fn carbons_copy_sent_and_received_chats_to_enabled_resources_only() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path()).await;
    let mut phone = online(node.addr, "alice", "phone").await;
    let mut desk = online(node.addr, "alice", "desk").await;
    let mut plain = online(node.addr, "alice", "plain").await;
    let mut bob = online(node.addr, "bob", "laptop").await;
    for (client, id) in [(&mut phone, "e1"), (&mut desk, "e2")] {
        let mut seen = Vec::new();
        let reply = client
            .iq(
                &format!("<iq type='set' id='{id}'><enable xmlns='{CARBONS_NS}'/></iq>"),
                id,
                &mut seen,
            )
            .await;
        assert_eq!(reply.attr("type"), Some("result"));
    }

    // Sent by phone: desk (enabled) gets a sent carbon; plain (not enabled) does not.
    phone
        .send("<message to='bob@localhost' type='chat' id='c1'><body>from phone</body></message>")
        .await;
    bob.until(|s| s.attr("id") == Some("c1")).await;
    let carbon = desk.until(|s| s.child("sent", CARBONS_NS).is_some()).await;
    assert_eq!(carbon.attr("from"), Some("alice@localhost"));
    assert_eq!(carbon.attr("to"), Some("alice@localhost/desk"));
    let inner = forwarded(&carbon, "sent");
    assert_eq!(inner.attr("id"), Some("c1"));
    assert_eq!(inner.attr("from"), Some("alice@localhost/phone"));

    // Received on phone (full JID): desk gets a received carbon.
    bob.send(
        "<message to='alice@localhost/phone' type='chat' id='c2'><body>to phone</body></message>",
    )
    .await;
    phone.until(|s| s.attr("id") == Some("c2")).await;
    let carbon = desk
        .until(|s| s.child("received", CARBONS_NS).is_some())
        .await;
    assert_eq!(forwarded(&carbon, "received").attr("id"), Some("c2"));

    // Private and no-copy messages, and headlines, are not copied.
    phone
        .send(&format!("<message to='bob@localhost' type='chat' id='p1'><body>secret</body><private xmlns='{CARBONS_NS}'/></message>"))
        .await;
    phone
        .send("<message to='bob@localhost' type='chat' id='p2'><body>x</body><no-copy xmlns='urn:xmpp:hints'/></message>")
        .await;
    phone
        .send("<message to='bob@localhost' type='headline' id='p3'><body>news</body></message>")
        .await;
    bob.until(|s| s.attr("id") == Some("p3")).await;
    // Disabling stops them too.
    let mut seen = Vec::new();
    desk.iq(
        &format!("<iq type='set' id='d1'><disable xmlns='{CARBONS_NS}'/></iq>"),
        "d1",
        &mut seen,
    )
    .await;
    assert!(
        seen.iter().all(|s| s.child("sent", CARBONS_NS).is_none()),
        "{seen:?}"
    );
    phone
        .send(
            "<message to='bob@localhost' type='chat' id='c3'><body>after disable</body></message>",
        )
        .await;
    bob.until(|s| s.attr("id") == Some("c3")).await;
    let late = desk.ping("d").await;
    assert!(
        late.iter().all(|s| s.child("sent", CARBONS_NS).is_none()),
        "{late:?}"
    );
    let never = plain.ping("p").await;
    assert!(
        never.iter().all(|s| !s.is("message", CLIENT_NS)),
        "{never:?}"
    );

    // A bad carbons request.
    let reply = phone
        .iq(
            &format!("<iq type='get' id='bad'><enable xmlns='{CARBONS_NS}'/></iq>"),
            "bad",
            &mut seen,
        )
        .await;
    assert_eq!(stanza_error(&reply).as_deref(), Some("bad-request"));
}

/// Runs a MAM query; returns the results' (id, body) and the `<fin/>`.
async fn mam(
    client: &mut Client,
    id: &str,
    form: &str,
    rsm: &str,
) -> (Vec<(String, String)>, Element) {
    let mut seen = Vec::new();
    let reply = client
        .iq(&format!("<iq type='set' id='{id}'><query xmlns='{MAM_NS}' queryid='q-{id}'>{form}{rsm}</query></iq>"), id, &mut seen)
        .await;
    assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
    let results = seen
        .iter()
        .filter_map(|m| m.child("result", MAM_NS))
        .map(|r| {
            assert_eq!(r.attr("queryid"), Some(format!("q-{id}").as_str()));
            let forwarded = r.child("forwarded", FORWARD_NS).unwrap();
            assert!(forwarded.child("delay", "urn:xmpp:delay").is_some());
            let message = forwarded.child("message", CLIENT_NS).unwrap();
            (
                r.attr("id").unwrap().to_owned(),
                message.child("body", CLIENT_NS).unwrap().text(),
            )
        })
        .collect();
    (results, reply.child("fin", MAM_NS).unwrap().clone())
}

fn with_form(with: &str) -> String {
    format!(
        "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{MAM_NS}</value></field><field var='with'><value>{with}</value></field></x>"
    )
}

#[tokio::test]
async fn mam_archives_both_sides_with_stanza_ids_and_pages_with_rsm() {
    let dir = tempfile::tempdir().unwrap();
    let node1 = node(dir.path()).await;
    let mut alice = online(node1.addr, "alice", "phone").await;
    let mut bob = online(node1.addr, "bob", "laptop").await;
    let mut stanza_ids = Vec::new();
    for n in 1..=5 {
        alice
            .send(&format!("<message to='bob@localhost' type='chat' id='m{n}'><body>b{n}</body><stanza-id xmlns='{SID_NS}' by='bob@localhost' id='forged'/></message>"))
            .await;
        let got = bob
            .until(|s| s.attr("id") == Some(format!("m{n}").as_str()))
            .await;
        let ids: Vec<&Element> = got
            .children()
            .filter(|c| c.is("stanza-id", SID_NS))
            .collect();
        assert_eq!(ids.len(), 1, "the forged one was removed: {got:?}");
        assert_eq!(ids[0].attr("by"), Some("bob@localhost"));
        stanza_ids.push(ids[0].attr("id").unwrap().to_owned());
    }
    alice
        .send("<message to='carol@localhost' type='chat' id='mc'><body>to carol</body></message>")
        .await;
    // Receipts without a body are not archived.
    bob.send(&format!("<message to='alice@localhost/phone' id='rc'><received xmlns='{RECEIPTS_NS}' id='m1'/></message>"))
        .await;
    alice.until(|s| s.attr("id") == Some("rc")).await;

    // Bob's archive: the five, with the ids stamped on delivery; paged by 2.
    let (page, fin) = mam(
        &mut bob,
        "q1",
        "",
        "<set xmlns='http://jabber.org/protocol/rsm'><max>2</max></set>",
    )
    .await;
    assert_eq!(
        page.iter().map(|(_, b)| b.as_str()).collect::<Vec<_>>(),
        ["b1", "b2"]
    );
    assert_eq!(page[0].0, stanza_ids[0]);
    assert_eq!(fin.attr("complete"), None);
    let set = fin.child("set", RSM_NS).unwrap();
    assert_eq!(set.child("count", RSM_NS).unwrap().text(), "5");
    let last = set.child("last", RSM_NS).unwrap().text();
    let (page, _) = mam(
        &mut bob,
        "q2",
        "",
        &format!("<set xmlns='{RSM_NS}'><max>2</max><after>{last}</after></set>"),
    )
    .await;
    assert_eq!(
        page.iter().map(|(_, b)| b.as_str()).collect::<Vec<_>>(),
        ["b3", "b4"]
    );
    let (page, fin) = mam(
        &mut bob,
        "q3",
        "",
        &format!("<set xmlns='{RSM_NS}'><max>2</max><before/></set>"),
    )
    .await;
    assert_eq!(
        page.iter().map(|(_, b)| b.as_str()).collect::<Vec<_>>(),
        ["b4", "b5"]
    );
    assert_eq!(fin.attr("complete"), None, "earlier pages remain");
    let (page, fin) = mam(
        &mut bob,
        "q4",
        "",
        &format!(
            "<set xmlns='{RSM_NS}'><after>{}</after></set>",
            stanza_ids[3]
        ),
    )
    .await;
    assert_eq!(page.len(), 1);
    assert_eq!(fin.attr("complete"), Some("true"));

    // Alice's archive holds her sent copies; `with` filters by counterpart.
    let (page, fin) = mam(&mut alice, "q5", &with_form("carol@localhost"), "").await;
    assert_eq!(
        page.iter().map(|(_, b)| b.as_str()).collect::<Vec<_>>(),
        ["to carol"]
    );
    assert_eq!(fin.attr("complete"), Some("true"));
    let (page, _) = mam(&mut alice, "q6", &with_form("bob@localhost"), "").await;
    assert_eq!(page.len(), 5);
    let future = "<x xmlns='jabber:x:data' type='submit'><field var='start'><value>2999-01-01T00:00:00Z</value></field></x>";
    let (page, _) = mam(&mut alice, "q7", future, "").await;
    assert!(page.is_empty());

    // The archive survives a crash.
    drop((alice, bob));
    node1.crash().await;
    let node2 = node(dir.path()).await;
    let mut bob = online(node2.addr, "bob", "laptop").await;
    let (page, _) = mam(&mut bob, "q8", &with_form("alice@localhost/phone"), "").await;
    assert_eq!(page.len(), 5);
    assert_eq!(
        page.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
        stanza_ids
    );
}

#[tokio::test]
async fn mam_bad_queries_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path()).await;
    let mut alice = online(node.addr, "alice", "phone").await;
    let big = "v".repeat(4000);
    let cases = [
        ("unknown", "<x xmlns='jabber:x:data' type='submit'><field var='color'><value>red</value></field></x>".to_owned(), "bad-request"),
        ("badtime", "<x xmlns='jabber:x:data' type='submit'><field var='end'><value>noon</value></field></x>".to_owned(), "bad-request"),
        ("badjid", "<x xmlns='jabber:x:data' type='submit'><field var='with'><value>a@b@c</value></field></x>".to_owned(), "bad-request"),
        ("big", format!("<x xmlns='jabber:x:data' type='submit'><field var='with'><value>{big}</value></field></x>"), "bad-request"),
        ("many", format!("<x xmlns='jabber:x:data' type='submit'>{}</x>", "<field var='with'><value>a@b</value></field>".repeat(9)), "bad-request"),
        ("max", format!("<set xmlns='{RSM_NS}'><max>lots</max></set>"), "bad-request"),
        ("after", format!("<set xmlns='{RSM_NS}'><after>00000000000000ff</after></set>"), "item-not-found"),
    ];
    for (id, body, expected) in cases {
        let mut seen = Vec::new();
        let reply = alice
            .iq(
                &format!("<iq type='set' id='{id}'><query xmlns='{MAM_NS}'>{body}</query></iq>"),
                id,
                &mut seen,
            )
            .await;
        assert_eq!(
            stanza_error(&reply).as_deref(),
            Some(expected),
            "{id}: {reply:?}"
        );
    }
    // `max` is capped: a huge one is served as the server's page size.
    for n in 0..3 {
        alice
            .send(&format!(
                "<message to='bob@localhost' type='chat' id='x{n}'><body>{n}</body></message>"
            ))
            .await;
    }
    let (page, fin) = mam(
        &mut alice,
        "cap",
        "",
        &format!("<set xmlns='{RSM_NS}'><max>1000000</max></set>"),
    )
    .await;
    assert_eq!(page.len(), 3);
    assert_eq!(fin.attr("complete"), Some("true"));
    // The form is discoverable.
    let mut seen = Vec::new();
    let form = alice
        .iq(
            &format!("<iq type='get' id='f'><query xmlns='{MAM_NS}'/></iq>"),
            "f",
            &mut seen,
        )
        .await;
    let vars: Vec<String> = form
        .child("query", MAM_NS)
        .and_then(|q| q.child("x", "jabber:x:data"))
        .unwrap()
        .children()
        .filter_map(|f| f.attr("var").map(str::to_owned))
        .collect();
    assert_eq!(vars, ["FORM_TYPE", "with", "start", "end"]);
}

#[tokio::test]
async fn disco_lists_the_im_features_and_unknown_namespaces_stay_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path()).await;
    let mut alice = online(node.addr, "alice", "phone").await;
    let mut seen = Vec::new();
    let info = alice
        .iq(
            &format!("<iq type='get' id='d' to='localhost'><query xmlns='{DISCO_INFO_NS}'/></iq>"),
            "d",
            &mut seen,
        )
        .await;
    let features: Vec<String> = info
        .child("query", DISCO_INFO_NS)
        .unwrap()
        .children()
        .filter_map(|f| f.attr("var").map(str::to_owned))
        .collect();
    for expected in [ROSTER_NS, CARBONS_NS, MAM_NS, SID_NS] {
        assert!(
            features.iter().any(|f| f == expected),
            "{expected} in {features:?}"
        );
    }
    assert!(
        !features.iter().any(|f| f == "jabber:iq:register"),
        "registration is off"
    );
    let reply = alice
        .iq(
            "<iq type='get' id='u'><query xmlns='urn:example:unknown'/></iq>",
            "u",
            &mut seen,
        )
        .await;
    assert_eq!(stanza_error(&reply).as_deref(), Some("service-unavailable"));
}

const REGISTER_NS: &str = "jabber:iq:register";

/// Sends a pre-auth registration iq and returns the answer.
async fn pre_auth_iq(client: &mut Client, xml: &str) -> Element {
    client.send(xml).await;
    client.stanza().await
}

#[tokio::test]
async fn registration_is_off_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path()).await;
    let mut client = Client::connect(node.addr).await;
    let features = client.open().await;
    assert!(
        features
            .child("register", "http://jabber.org/features/iq-register")
            .is_none()
    );
    client
        .send(&format!("<iq type='set' id='r'><query xmlns='{REGISTER_NS}'><username>x</username><password>secret-pw</password></query></iq>"))
        .await;
    loop {
        match client.next().await {
            Some(StreamEvent::Stanza(e)) if e.is("error", STREAMS_NS) => {
                assert!(
                    e.child("not-authorized", casebook_whatsapp::xml::STREAM_ERRORS_NS)
                        .is_some()
                );
                break;
            }
            Some(_) => continue,
            None => panic!("closed without a stream error"),
        }
    }
}

#[tokio::test]
async fn in_band_registration_creates_changes_and_removes_accounts_within_a_rate_limit() {
    let dir = tempfile::tempdir().unwrap();
    let clock = casebook_kit::clock::ManualClock::new();
    let config = WhatsappConfig {
        allow_registration: true,
        // The test's stream is plaintext: registration carries a password.
        allow_insecure_plain: true,
        ..WhatsappConfig::default()
    };
    let node = node_in(dir.path(), config, &["bob"], clock.shared()).await;
    let mut client = Client::connect(node.addr).await;
    let features = client.open().await;
    assert!(
        features
            .child("register", "http://jabber.org/features/iq-register")
            .is_some()
    );
    let form = pre_auth_iq(
        &mut client,
        &format!("<iq type='get' id='f'><query xmlns='{REGISTER_NS}'/></iq>"),
    )
    .await;
    let query = form.child("query", REGISTER_NS).unwrap();
    assert!(
        query.child("username", REGISTER_NS).is_some()
            && query.child("password", REGISTER_NS).is_some()
    );

    let register = |id: &str, user: &str| {
        format!(
            "<iq type='set' id='{id}'><query xmlns='{REGISTER_NS}'><username>{user}</username><password>{user}-pw</password></query></iq>"
        )
    };
    let reply = pre_auth_iq(&mut client, &register("r1", "dave")).await;
    assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
    let reply = pre_auth_iq(&mut client, &register("r2", "dave")).await;
    assert_eq!(stanza_error(&reply).as_deref(), Some("conflict"));
    let reply = pre_auth_iq(&mut client, &format!("<iq type='set' id='r3'><query xmlns='{REGISTER_NS}'><username>x</username></query></iq>")).await;
    assert_eq!(stanza_error(&reply).as_deref(), Some("not-acceptable"));
    let reply = pre_auth_iq(&mut client, &register("r4", "bad user")).await;
    assert_eq!(stanza_error(&reply).as_deref(), Some("not-acceptable"));
    for (n, user) in ["erin", "frank"].iter().enumerate() {
        let reply = pre_auth_iq(&mut client, &register(&format!("ok{n}"), user)).await;
        assert_eq!(reply.attr("type"), Some("result"));
    }
    let reply = pre_auth_iq(&mut client, &register("r5", "gina")).await;
    assert_eq!(
        stanza_error(&reply).as_deref(),
        Some("policy-violation"),
        "5 attempts per hour per address"
    );
    clock.advance(Duration::from_secs(3601));
    // An hour on the node's clock is past this connection's handshake deadline
    // too: register over a fresh one.
    let mut client = Client::connect(node.addr).await;
    client.open().await;
    let reply = pre_auth_iq(&mut client, &register("r6", "gina")).await;
    assert_eq!(reply.attr("type"), Some("result"), "the window moved on");

    // The new account logs in; bob subscribes to it.
    let mut dave = login(node.addr, "dave", "one").await;
    dave.roster().await;
    dave.send("<presence/>").await;
    let mut other = login(node.addr, "dave", "two").await;
    other.ping("o").await;
    let mut bob = login(node.addr, "bob", "laptop").await;
    bob.roster().await;
    bob.send("<presence/>").await;
    bob.send("<presence to='dave@localhost' type='subscribe'/>")
        .await;
    dave.until(|s| s.attr("type") == Some("subscribe")).await;
    dave.send("<presence to='bob@localhost' type='subscribed'/>")
        .await;
    bob.until(|s| s.attr("type") == Some("subscribed")).await;

    // Registration shows in disco#info when it is on.
    let mut seen = Vec::new();
    let info = dave
        .iq(
            &format!("<iq type='get' id='di' to='localhost'><query xmlns='{DISCO_INFO_NS}'/></iq>"),
            "di",
            &mut seen,
        )
        .await;
    assert!(
        info.child("query", DISCO_INFO_NS)
            .unwrap()
            .children()
            .any(|f| f.attr("var") == Some(REGISTER_NS))
    );

    // Password change: only one's own.
    let mut seen = Vec::new();
    let reply = dave
        .iq(&format!("<iq type='set' id='pw0'><query xmlns='{REGISTER_NS}'><username>bob</username><password>x-pw-x</password></query></iq>"), "pw0", &mut seen)
        .await;
    assert_eq!(stanza_error(&reply).as_deref(), Some("not-authorized"));
    let reply = dave
        .iq(&format!("<iq type='set' id='pw'><query xmlns='{REGISTER_NS}'><username>dave</username><password>new-secret</password></query></iq>"), "pw", &mut seen)
        .await;
    assert_eq!(reply.attr("type"), Some("result"));
    let mut check = Client::connect(node.addr).await;
    check.open().await;
    assert_eq!(
        check.scram("dave", "dave-pw").await,
        Err("not-authorized".into())
    );
    assert_eq!(check.scram("dave", "new-secret").await, Ok(()));

    // Removal: result, then the stream ends; the other session is dropped; bob
    // loses the subscription; the account cannot log in any more.
    let reply = dave
        .iq(
            &format!("<iq type='set' id='rm'><query xmlns='{REGISTER_NS}'><remove/></query></iq>"),
            "rm",
            &mut seen,
        )
        .await;
    assert_eq!(reply.attr("type"), Some("result"));
    loop {
        match dave.next().await {
            Some(StreamEvent::Stanza(e)) if e.is("error", STREAMS_NS) => break,
            Some(_) => continue,
            None => panic!("closed without a stream error"),
        }
    }
    while other.next().await.is_some() {}
    let seen = bob.ping("b").await;
    assert!(
        presence_of(&seen, "dave@localhost", Some("unsubscribed")).is_some(),
        "{seen:?}"
    );
    let items = bob.roster().await;
    assert_eq!(
        item(&items, "dave@localhost").unwrap().attr("subscription"),
        Some("none")
    );
    let mut gone = Client::connect(node.addr).await;
    gone.open().await;
    assert_eq!(
        gone.scram("dave", "new-secret").await,
        Err("not-authorized".into())
    );
}

#[tokio::test]
async fn without_archiving_there_is_no_history_no_stanza_id_and_no_mam() {
    let dir = tempfile::tempdir().unwrap();
    let config = WhatsappConfig {
        archive_messages: false,
        ..WhatsappConfig::default()
    };
    let node = node_in(dir.path(), config, &["alice", "bob"], SystemClock::shared()).await;
    let mut alice = online(node.addr, "alice", "phone").await;
    let mut bob = online(node.addr, "bob", "laptop").await;
    alice
        .send("<message to='bob@localhost' type='chat' id='n1'><body>ephemeral</body></message>")
        .await;
    let got = bob.until(|s| s.attr("id") == Some("n1")).await;
    assert!(got.child("stanza-id", SID_NS).is_none());
    let mut seen = Vec::new();
    let reply = alice
        .iq(
            &format!("<iq type='set' id='q'><query xmlns='{MAM_NS}'/></iq>"),
            "q",
            &mut seen,
        )
        .await;
    assert_eq!(stanza_error(&reply).as_deref(), Some("service-unavailable"));
    let info = alice
        .iq(
            &format!("<iq type='get' id='d' to='localhost'><query xmlns='{DISCO_INFO_NS}'/></iq>"),
            "d",
            &mut seen,
        )
        .await;
    let features: Vec<&str> = info
        .child("query", DISCO_INFO_NS)
        .unwrap()
        .children()
        .filter_map(|f| f.attr("var"))
        .collect();
    assert!(
        !features.contains(&MAM_NS) && !features.contains(&SID_NS),
        "{features:?}"
    );
    assert!(features.contains(&ROSTER_NS));
}
