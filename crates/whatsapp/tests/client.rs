//! The client library and the load swarm against a real chat node over loopback
//! sockets. Waits are bounded (a hang fails); nothing asserts on timing.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use casebook_kit::clock::SystemClock;
use casebook_kit::runtime::{InstanceSpec, Platform};
use casebook_kit::topology::Topology;
use casebook_whatsapp::auth::{Accounts, AccountsConfig};
use casebook_whatsapp::client::{
    ClientConfig, ClientError, Mechanism, RECEIPTS_NS, ScramCache, Session,
};
use casebook_whatsapp::load::{self, LoadConfig, LoadProgress};
use casebook_whatsapp::node::{ChatNode, ChatSettings, WhatsappConfig};
use casebook_whatsapp::xml::CLIENT_NS;

const DEADLINE: Duration = Duration::from_secs(20);

struct Node {
    _platform: Platform,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

async fn node_with(config: WhatsappConfig, users: &[(&str, &str)]) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let accounts = Accounts::open(dir.path(), &config.domain, AccountsConfig::default()).unwrap();
    for (user, password) in users {
        accounts.add(user, password).unwrap();
    }
    let topology = Topology::uniform(&["r1"], 1);
    let platform = Platform::new(topology.clone(), dir.path(), SystemClock::shared());
    platform.register_service(Arc::new(ChatNode::new(ChatSettings {
        config,
        accounts_root: dir.path().to_path_buf(),
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
        _platform: platform,
        addr: info.address,
        _dir: dir,
    }
}

fn client(node: &Node, user: &str, password: &str) -> ClientConfig {
    let mut config = ClientConfig::new(node.addr, "localhost", user, password);
    config.timeout = DEADLINE;
    config
}

async fn login(config: &ClientConfig) -> Result<Session, ClientError> {
    tokio::time::timeout(DEADLINE, Session::login(config))
        .await
        .expect("login finished before the deadline")
}

async fn next(session: &mut Session) -> casebook_whatsapp::xml::Element {
    tokio::time::timeout(DEADLINE, session.next_stanza())
        .await
        .expect("a stanza before the deadline")
        .unwrap()
        .expect("the stream is open")
}

#[tokio::test]
async fn scram_sessions_from_a_chosen_source_exchange_a_message_and_its_receipt() {
    let node = node_with(
        WhatsappConfig::default(),
        &[("alice", "alice-pw"), ("bob", "bob-pw")],
    )
    .await;
    let mut alice_config = client(&node, "alice", "alice-pw");
    alice_config.source = Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
    alice_config.resource = Some("phone".into());
    alice_config.mechanism = Mechanism::ScramSha256;
    let cache = ScramCache::default();
    alice_config.scram_cache = Some(cache.clone());
    let mut alice = login(&alice_config).await.unwrap();
    assert_eq!(alice.jid(), "alice@localhost/phone");
    assert_eq!(
        alice.local_addr().ip(),
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
        "the socket was bound to the chosen source address"
    );
    assert_eq!(cache.len(), 1, "the derived keys were cached");
    let mut bob = login(&client(&node, "bob", "bob-pw")).await.unwrap();
    assert!(bob.jid().starts_with("bob@localhost/"));
    // The pings answer after the initial presence was handled: both are online.
    alice.ping("a", DEADLINE).await.unwrap();
    bob.ping("b", DEADLINE).await.unwrap();

    alice
        .send_raw(&format!(
            "<message to='bob@localhost' type='chat' id='m1'><body>hi</body><request xmlns='{RECEIPTS_NS}'/></message>"
        ))
        .await
        .unwrap();
    let got = next(&mut bob).await;
    assert_eq!(got.attr("from"), Some("alice@localhost/phone"));
    assert_eq!(got.child("body", CLIENT_NS).unwrap().text(), "hi");
    assert!(got.child("request", RECEIPTS_NS).is_some());

    // The split halves: bob answers the receipt through his outbox.
    let (mut bob_inbox, bob_outbox) = bob.into_split();
    bob_outbox
        .try_send(format!(
            "<message to='alice@localhost/phone'><received xmlns='{RECEIPTS_NS}' id='m1'/></message>"
        ))
        .unwrap();
    let receipt = next(&mut alice).await;
    assert_eq!(
        receipt
            .child("received", RECEIPTS_NS)
            .and_then(|r| r.attr("id")),
        Some("m1")
    );
    alice
        .send_raw("<message to='bob@localhost' type='chat'><body>again</body></message>")
        .await
        .unwrap();
    let again = tokio::time::timeout(DEADLINE, bob_inbox.next_stanza())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(again.child("body", CLIENT_NS).unwrap().text(), "again");
    alice.close(DEADLINE).await.unwrap();
}

#[tokio::test]
async fn plain_logs_in_when_the_server_allows_it_and_is_not_used_when_not_offered() {
    let users = [("alice", "alice-pw")];
    let strict = node_with(WhatsappConfig::default(), &users).await;
    let mut plain = client(&strict, "alice", "alice-pw");
    plain.mechanism = Mechanism::Plain;
    match login(&plain).await {
        Err(ClientError::NoMechanism(offered)) => {
            assert!(!offered.iter().any(|m| m == "PLAIN"), "{offered:?}")
        }
        other => panic!("expected no usable mechanism, got {other:?}"),
    }

    let relaxed = node_with(
        WhatsappConfig {
            allow_insecure_plain: true,
            ..WhatsappConfig::default()
        },
        &users,
    )
    .await;
    let mut plain = client(&relaxed, "alice", "alice-pw");
    plain.mechanism = Mechanism::Plain;
    let mut session = login(&plain).await.unwrap();
    assert!(session.jid().starts_with("alice@localhost/"));
    session.ping("p", DEADLINE).await.unwrap();
}

#[tokio::test]
async fn a_wrong_password_or_unknown_user_is_not_authorized() {
    let node = node_with(WhatsappConfig::default(), &[("alice", "alice-pw")]).await;
    for (user, password) in [("alice", "wrong"), ("nobody", "x")] {
        match login(&client(&node, user, password)).await {
            Err(error @ ClientError::Auth(_)) => {
                assert_eq!(error.kind(), "auth:not-authorized")
            }
            other => panic!("expected not-authorized, got {other:?}"),
        }
    }
    // A refused client harms nobody: the right password still works.
    login(&client(&node, "alice", "alice-pw")).await.unwrap();
}

#[tokio::test]
async fn nothing_listening_is_a_connect_error() {
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = unused.local_addr().unwrap();
    drop(unused);
    let config = ClientConfig::new(addr, "localhost", "alice", "pw");
    let error = login(&config).await.unwrap_err();
    assert!(error.kind().starts_with("connect:"), "{error}");
}

#[tokio::test]
async fn the_swarm_delivers_every_message_with_receipts_and_flushes_the_offline_queue() {
    let users: Vec<(String, String)> = (0..4)
        .map(|i| (format!("load-{i}"), "load-pw".to_owned()))
        .collect();
    let users: Vec<(&str, &str)> = users
        .iter()
        .map(|(u, p)| (u.as_str(), p.as_str()))
        .collect();
    let node = node_with(WhatsappConfig::default(), &users).await;
    let config = LoadConfig {
        target: node.addr,
        domain: "localhost".into(),
        users: 4,
        password: "load-pw".into(),
        connections: 4,
        sources: 2,
        login_rate: 50.0,
        login_concurrency: 4,
        rate: 40.0,
        duration: Duration::from_secs(1),
        receipts: true,
        mechanism: Mechanism::Auto,
        stream_management: true,
        loss_timeout: Duration::from_secs(10),
        warm_scram: true,
        offline_flush: 60,
        step_timeout: DEADLINE,
    };
    let progress = Arc::new(LoadProgress::default());
    let report = tokio::time::timeout(Duration::from_secs(60), load::run(config, progress.clone()))
        .await
        .expect("the run finished before the deadline")
        .unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.logins.ok, 4);

    let flush = report.offline_flush.as_ref().unwrap();
    assert_eq!(flush.delivered, 60);
    assert_eq!(flush.out_of_order, 0);
    assert_eq!(flush.delay_stamped, 60, "offline messages carry XEP-0203");

    let messages = report.messages.as_ref().unwrap();
    assert_eq!(messages.sent, 40);
    assert_eq!(messages.delivered, messages.sent);
    assert_eq!(
        (messages.lost, messages.duplicates, messages.unsent),
        (0, 0, 0)
    );
    assert_eq!(messages.receipts_received, messages.sent);
    assert!(messages.max_ms >= messages.p50_ms);
    assert!(report.table().contains("delivered 40"));
    assert_eq!(
        progress
            .delivered
            .load(std::sync::atomic::Ordering::Relaxed),
        40
    );
}

#[tokio::test]
async fn the_swarm_counts_failed_logins_by_kind() {
    let node = node_with(WhatsappConfig::default(), &[("load-0", "right")]).await;
    let config = LoadConfig {
        target: node.addr,
        domain: "localhost".into(),
        users: 2,
        password: "wrong".into(),
        connections: 2,
        sources: 1,
        login_rate: 100.0,
        login_concurrency: 2,
        rate: 0.0,
        duration: Duration::from_millis(10),
        receipts: false,
        mechanism: Mechanism::Auto,
        stream_management: false,
        loss_timeout: Duration::from_secs(1),
        warm_scram: false,
        offline_flush: 0,
        step_timeout: DEADLINE,
    };
    let report = tokio::time::timeout(Duration::from_secs(60), load::run(config, Arc::default()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((report.logins.ok, report.logins.failed), (0, 2));
    assert_eq!(report.errors.get("auth:not-authorized"), Some(&2));
    assert!(report.messages.is_none(), "rate 0 only holds the sessions");
}

#[test]
fn bulk_accounts_are_created_once_and_a_bad_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let accounts = Accounts::open(dir.path(), "localhost", AccountsConfig::default()).unwrap();
    let batch: Vec<(String, String)> = (0..5)
        .map(|i| (format!("load-{i}"), "pw".to_owned()))
        .collect();
    assert_eq!(accounts.add_many(&batch[..3], 2).unwrap(), 3);
    assert_eq!(
        accounts.add_many(&batch, 2).unwrap(),
        2,
        "existing ones are kept"
    );
    assert_eq!(accounts.len(), 5);
    let reopened = Accounts::open(dir.path(), "localhost", AccountsConfig::default()).unwrap();
    assert_eq!(reopened.len(), 5, "one persist holds them all");
    assert!(
        accounts
            .add_many(&[("bad@name".into(), "pw".into())], 1)
            .is_err()
    );
}
