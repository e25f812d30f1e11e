//! The chat node's transports and connection hygiene end to end, over real loopback
//! sockets: STARTTLS, direct TLS, RFC 7395 WebSocket, the generated certificate,
//! handshake and idle timeouts, the per-connection rate limit and the connection
//! cap across transports. The raw-XMPP client speaks every transport with the
//! crate's own XML layer. Waits are bounded by a deadline (a hang fails the test);
//! nothing asserts on timing.

mod support;

use std::path::Path;
use std::time::Duration;

use casebook_kit::clock::{ManualClock, SystemClock};
use casebook_testkit::eventually;
use casebook_whatsapp::node::conn::{PING_NS, TLS_NS};
use casebook_whatsapp::node::{WhatsappConfig, domain_dir, tls};
use casebook_whatsapp::xml::{CLIENT_NS, Element, FRAMING_NS, STREAMS_NS, StreamEvent};
use futures::{SinkExt, StreamExt};
use rustls::pki_types::ServerName;
use support::{Client, DEADLINE, HEADER, Io, Node, connector_trusting, mechanisms};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Starts a chat node on free ports with alice's and bob's accounts under `root`.
async fn start_node(root: &Path, config: WhatsappConfig) -> Node {
    Node::start_in(root, config, &["alice", "bob"], SystemClock::shared()).await
}

impl Client {
    /// Restarts the stream, binds `resource`, sends presence; returns the full JID.
    async fn bind_present(&mut self, resource: &str) -> String {
        let jid = self.bind(resource).await;
        self.presence().await;
        jid
    }

    async fn message(&mut self, to: &str, body: &str) {
        let message = format!(
            "<message to='{to}' type='chat'{}><body>{body}</body></message>",
            self.ns()
        );
        self.send(&message).await;
    }
}

fn body(stanza: &Element) -> String {
    stanza.child("body", CLIENT_NS).unwrap().text()
}

fn free_ports() -> WhatsappConfig {
    WhatsappConfig {
        port: 0,
        tls_port: 0,
        ws_port: 0,
        ..WhatsappConfig::default()
    }
}

/// Alice on TCP, Bob over `bob`'s transport: both online and synced.
async fn online(client: &mut Client, user: &str, password: &str, resource: &str) -> String {
    client.open().await;
    client.scram(user, password).await.unwrap();
    client.bind_present(resource).await
}

#[tokio::test]
async fn starttls_then_scram_and_a_message_over_tls_to_a_plaintext_user() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path(), free_ports()).await;
    let mut alice = Client::connect(node.addr).await;
    let features = alice.open().await;
    assert!(features.child("starttls", TLS_NS).is_some(), "{features:?}");
    assert!(
        features
            .child("starttls", TLS_NS)
            .unwrap()
            .child("required", TLS_NS)
            .is_none(),
        "optional by default"
    );
    let features = alice.starttls(&node.root).await;
    assert!(
        features.child("starttls", TLS_NS).is_none(),
        "not offered twice"
    );
    alice.scram("alice", "alice-pw").await.unwrap();
    assert_eq!(alice.bind_present("phone").await, "alice@localhost/phone");

    let mut bob = Client::connect(node.addr).await;
    online(&mut bob, "bob", "bob-pw", "laptop").await;
    alice.ping("a").await;
    bob.ping("b").await;

    alice.message("bob@localhost", "over tls").await;
    let got = bob.stanza().await;
    assert_eq!(got.attr("from"), Some("alice@localhost/phone"));
    assert_eq!(body(&got), "over tls");
    bob.message("alice@localhost/phone", "back in clear").await;
    let got = alice.stanza().await;
    assert_eq!(got.attr("from"), Some("bob@localhost/laptop"));
    assert_eq!(body(&got), "back in clear");
}

#[tokio::test]
async fn direct_tls_login_and_starttls_is_refused_once_encrypted_or_authenticated() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path(), free_ports()).await;
    let mut alice = Client::tls(&node).await;
    let features = alice.open().await;
    assert!(features.child("starttls", TLS_NS).is_none());
    assert!(
        mechanisms(&features).contains(&"PLAIN".to_owned()),
        "PLAIN over TLS"
    );
    alice.scram("alice", "alice-pw").await.unwrap();
    alice.bind_present("tls").await;
    alice.ping("p").await;

    // STARTTLS on an encrypted stream: <failure/> and close.
    let mut again = Client::tls(&node).await;
    again.open().await;
    again.send(&format!("<starttls xmlns='{TLS_NS}'/>")).await;
    assert!(again.stanza().await.is("failure", TLS_NS));
    again.expect_closed().await;

    // STARTTLS after authentication on a plaintext stream: the same.
    let mut late = Client::connect(node.addr).await;
    late.open().await;
    late.scram("bob", "bob-pw").await.unwrap();
    late.open().await;
    late.send(&format!("<starttls xmlns='{TLS_NS}'/>")).await;
    assert!(late.stanza().await.is("failure", TLS_NS));
    late.expect_closed().await;
    alice.ping("still").await;
}

#[tokio::test]
async fn plain_is_refused_before_tls_and_accepted_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path(), free_ports()).await;
    let mut client = Client::connect(node.addr).await;
    let features = client.open().await;
    assert!(!mechanisms(&features).contains(&"PLAIN".to_owned()));
    assert_eq!(
        client.plain("alice", "alice-pw").await,
        Err("encryption-required".to_owned())
    );
    let features = client.starttls(&node.root).await;
    assert!(mechanisms(&features).contains(&"PLAIN".to_owned()));
    client.plain("alice", "alice-pw").await.unwrap();
    assert_eq!(client.bind_present("plain").await, "alice@localhost/plain");
    client.ping("p").await;
}

#[tokio::test]
async fn require_encryption_refuses_auth_before_starttls() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(
        dir.path(),
        WhatsappConfig {
            require_encryption: true,
            ..free_ports()
        },
    )
    .await;
    let mut client = Client::connect(node.addr).await;
    let features = client.open().await;
    let starttls = features.child("starttls", TLS_NS).expect("offered");
    assert!(starttls.child("required", TLS_NS).is_some());
    assert!(mechanisms(&features).is_empty(), "no SASL before TLS");
    assert_eq!(
        client.scram("alice", "alice-pw").await,
        Err("encryption-required".to_owned())
    );
    let features = client.starttls(&node.root).await;
    assert!(!mechanisms(&features).is_empty());
    client.scram("alice", "alice-pw").await.unwrap();
    client.bind_present("secure").await;
    client.ping("p").await;
}

#[tokio::test]
async fn bad_tls_handshake_bytes_close_that_connection_only() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path(), free_ports()).await;
    let mut alice = Client::connect(node.addr).await;
    online(&mut alice, "alice", "alice-pw", "phone").await;
    alice.ping("before").await;

    // Garbage on the direct-TLS port.
    let mut garbage = TcpStream::connect(node.listener("xmpp-tls")).await.unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(DEADLINE, async {
        loop {
            match garbage.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue, // a TLS alert, then the close
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the node closed the garbage connection");

    // Garbage after <proceed/>.
    let mut client = Client::connect(node.addr).await;
    client.open().await;
    client.send(&format!("<starttls xmlns='{TLS_NS}'/>")).await;
    assert!(client.stanza().await.is("proceed", TLS_NS));
    client
        .try_send_raw(&[0x16, 0x03, 0x01, 0xff, 0xff, 0, 0, 0])
        .await;
    let closed = tokio::time::timeout(DEADLINE, async {
        let Io::Tcp(tcp) = &mut client.io else {
            unreachable!()
        };
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the node dropped the failed handshake");

    // Everyone else is still served, over every transport.
    alice.ping("after").await;
    let mut bob = Client::tls(&node).await;
    online(&mut bob, "bob", "bob-pw", "laptop").await;
    bob.ping("tls").await;
}

#[tokio::test]
async fn the_generated_certificate_is_reused_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = tls::generated_paths(&domain_dir(dir.path(), "localhost"));
    let node = start_node(dir.path(), free_ports()).await;
    let first = std::fs::read(&cert).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the key is private");
    }
    let mut client = Client::tls(&node).await;
    online(&mut client, "alice", "alice-pw", "one").await;
    client.ping("one").await;
    node.platform.stop_all(Duration::from_secs(5)).await;
    drop(client);
    // The process ends: its platform, factory and domain state with it.
    drop(node);

    // A new process (platform and factory) on the same data dir.
    let node = start_node(dir.path(), free_ports()).await;
    assert_eq!(std::fs::read(&cert).unwrap(), first, "the same certificate");
    let mut client = Client::tls(&node).await;
    online(&mut client, "alice", "alice-pw", "two").await;
    client.ping("two").await;
}

#[tokio::test]
async fn a_configured_certificate_is_served_instead_of_a_generated_one() {
    let dir = tempfile::tempdir().unwrap();
    let own = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("own.pem"), dir.path().join("own.key"));
    std::fs::write(&cert, own.cert.pem()).unwrap();
    std::fs::write(&key, own.signing_key.serialize_pem()).unwrap();
    let node = start_node(
        dir.path(),
        WhatsappConfig {
            tls_cert: Some(cert.clone()),
            tls_key: Some(key),
            ..free_ports()
        },
    )
    .await;
    let (generated, _) = tls::generated_paths(&domain_dir(dir.path(), "localhost"));
    assert!(
        !generated.exists(),
        "nothing generated when one is configured"
    );
    let tcp = TcpStream::connect(node.listener("xmpp-tls")).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = connector_trusting(&cert).connect(name, tcp).await.unwrap();
    let mut client = Client::over(Io::Tls(Box::new(tls)));
    online(&mut client, "alice", "alice-pw", "own").await;
    client.ping("p").await;
}

#[tokio::test]
async fn websocket_login_and_messages_to_a_tcp_user_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path(), free_ports()).await;
    let mut alice = Client::ws(&node).await;
    let features = alice.open().await;
    assert!(
        features.child("starttls", TLS_NS).is_none(),
        "no STARTTLS over WebSocket"
    );
    alice.scram("alice", "alice-pw").await.unwrap();
    assert_eq!(
        alice.bind_present("browser").await,
        "alice@localhost/browser"
    );
    let mut bob = Client::connect(node.addr).await;
    online(&mut bob, "bob", "bob-pw", "laptop").await;
    alice.ping("a").await;
    bob.ping("b").await;

    alice.message("bob@localhost", "from the browser").await;
    let got = bob.stanza().await;
    assert_eq!(got.attr("from"), Some("alice@localhost/browser"));
    assert_eq!(body(&got), "from the browser");
    bob.message("alice@localhost", "to the browser").await;
    let got = alice.stanza().await;
    assert_eq!(got.attr("from"), Some("bob@localhost/laptop"));
    assert_eq!(body(&got), "to the browser");

    // RFC 7395 §3.6: <close/> is answered with <close/>, then the end.
    alice.send(&format!("<close xmlns='{FRAMING_NS}'/>")).await;
    assert!(matches!(alice.next().await, Some(StreamEvent::StreamClose)));
    assert!(alice.next().await.is_none());
}

#[tokio::test]
async fn websocket_upgrade_without_the_xmpp_subprotocol_or_elsewhere_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path(), free_ports()).await;
    let status = |result: Result<_, tokio_tungstenite::tungstenite::Error>| match result {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("the upgrade was accepted"),
    };
    let url = format!("ws://{}/xmpp-websocket", node.listener("xmpp-websocket"));
    assert_eq!(
        status(tokio_tungstenite::connect_async(url.as_str()).await),
        400
    );
    let mut other = url.as_str().into_client_request().unwrap();
    other
        .headers_mut()
        .insert("sec-websocket-protocol", "mqtt".parse().unwrap());
    assert_eq!(status(tokio_tungstenite::connect_async(other).await), 400);
    let mut elsewhere = format!("ws://{}/chat", node.listener("xmpp-websocket"))
        .into_client_request()
        .unwrap();
    elsewhere
        .headers_mut()
        .insert("sec-websocket-protocol", "xmpp".parse().unwrap());
    assert_eq!(
        status(tokio_tungstenite::connect_async(elsewhere).await),
        404
    );
    // The listener still works.
    let mut client = Client::ws(&node).await;
    client.open().await;
}

#[tokio::test]
async fn a_malformed_websocket_frame_is_not_well_formed_then_close() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path(), free_ports()).await;
    let mut client = Client::ws(&node).await;
    online(&mut client, "alice", "alice-pw", "ws").await;
    client.ping("p").await;
    // One frame, one complete element: half a stanza is malformed.
    client
        .send("<message xmlns='jabber:client'><body>half")
        .await;
    client.expect_stream_error("not-well-formed").await;
}

#[tokio::test]
async fn an_oversized_websocket_message_is_closed_with_1009_and_others_are_unharmed() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path(), free_ports()).await;
    let mut bystander = Client::ws(&node).await;
    online(&mut bystander, "bob", "bob-pw", "ws").await;
    let mut client = Client::ws(&node).await;
    online(&mut client, "alice", "alice-pw", "ws").await;
    let Io::Ws(ws) = &mut client.io else {
        unreachable!()
    };
    // Past what the WebSocket layer accepts (the stanza limit plus framing slack).
    let body = "x".repeat(WhatsappConfig::default().max_stanza_bytes + 8 * 1024);
    let oversized = format!("<message xmlns='jabber:client'><body>{body}</body></message>");
    // The server may close while the frame is still being written.
    let _ = ws.send(Message::Text(oversized.into())).await;
    let close = tokio::time::timeout(DEADLINE, async {
        while let Some(message) = ws.next().await {
            match message {
                Ok(Message::Close(frame)) => return frame,
                Ok(_) => continue,
                Err(error) => panic!("connection ended without a close frame: {error}"),
            }
        }
        panic!("connection ended without a close frame")
    })
    .await
    .expect("a close frame within the deadline")
    .expect("the close frame carries a status");
    assert_eq!(
        u16::from(close.code),
        1009,
        "Message Too Big (RFC 6455 §7.4.1)"
    );
    bystander.ping("still-served").await;
}

#[tokio::test]
async fn a_binary_websocket_message_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path(), free_ports()).await;
    let mut client = Client::ws(&node).await;
    client.open().await;
    assert!(client.try_send_raw(b"<presence/>").await);
    client.expect_stream_error("bad-format").await;
}

/// Starts a chat node on `clock` (timeouts are decided on it), free ports.
async fn start_node_on(root: &Path, config: WhatsappConfig, clock: &ManualClock) -> Node {
    Node::start_in(root, config, &["alice", "bob"], clock.shared()).await
}

/// Sends a WebSocket-level ping (input, but no stanza) and waits for its pong,
/// which the server sends once it has read the ping.
async fn ws_keepalive(client: &mut Client) {
    ws_ping(client).await;
    let Io::Ws(ws) = &mut client.io else {
        unreachable!()
    };
    let pong = tokio::time::timeout(DEADLINE, ws.next()).await.unwrap();
    assert!(matches!(pong, Some(Ok(Message::Pong(_)))), "{pong:?}");
}

/// Sends a WebSocket-level ping without waiting (the server may close instead).
async fn ws_ping(client: &mut Client) {
    let Io::Ws(ws) = &mut client.io else {
        unreachable!()
    };
    let _ = ws.send(Message::Ping(b"keepalive".to_vec().into())).await;
}

#[tokio::test]
async fn an_unbound_connection_times_out_and_a_bound_one_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let config = WhatsappConfig {
        handshake_timeout: Duration::from_secs(10),
        ..free_ports()
    };
    let node = start_node_on(dir.path(), config, &clock).await;
    let mut bound = Client::connect(node.addr).await;
    online(&mut bound, "alice", "alice-pw", "phone").await;
    // Sits at the header, never authenticates; and one over WebSocket too.
    let mut lingering = Client::connect(node.addr).await;
    lingering.open().await;
    let mut ws = Client::ws(&node).await;
    ws.open().await;
    // Input before the deadline does not extend the handshake.
    clock.advance(Duration::from_secs(9));
    ws_keepalive(&mut ws).await;
    bound.ping("before").await;
    clock.advance(Duration::from_secs(2));
    // Whatever an unbound connection does after its deadline, it is timed out.
    lingering.try_send_raw(b" ").await;
    lingering.expect_stream_error("connection-timeout").await;
    ws_ping(&mut ws).await;
    ws.expect_stream_error("connection-timeout").await;
    // The session bound before the deadline is still served after it.
    bound.ping("alive").await;
}

#[tokio::test]
async fn an_idle_session_times_out_and_a_talking_one_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let config = WhatsappConfig {
        idle_timeout: Duration::from_secs(60),
        ..free_ports()
    };
    let node = start_node_on(dir.path(), config, &clock).await;
    let mut alice = Client::connect(node.addr).await;
    online(&mut alice, "alice", "alice-pw", "phone").await;
    // Five idle timeouts in all, never one without input.
    for n in 0..10 {
        clock.advance(Duration::from_secs(30));
        alice.ping(&format!("p{n}")).await;
    }
    clock.advance(Duration::from_secs(61));
    alice
        .try_send_raw(b"<iq type='get' id='late'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    alice.expect_stream_error("connection-timeout").await;
}

#[tokio::test]
async fn websocket_pings_keep_a_session_alive_and_silence_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let config = WhatsappConfig {
        idle_timeout: Duration::from_secs(60),
        ..free_ports()
    };
    let node = start_node_on(dir.path(), config, &clock).await;
    let mut client = Client::ws(&node).await;
    online(&mut client, "alice", "alice-pw", "ws").await;
    client.ping("p").await;
    // Keepalive only at the WebSocket level, for longer than the idle timeout.
    for _ in 0..8 {
        clock.advance(Duration::from_secs(30));
        ws_keepalive(&mut client).await;
    }
    client.ping("still-here").await;
    // Then silence past the timeout: the next keepalive is too late.
    clock.advance(Duration::from_secs(61));
    ws_ping(&mut client).await;
    client.expect_stream_error("connection-timeout").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_plain_logins_over_tls_all_succeed_while_a_session_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path(), free_ports()).await;
    let mut bob = Client::connect(node.addr).await;
    online(&mut bob, "bob", "bob-pw", "calm").await;
    // PLAIN verification is PBKDF2 on the server: it runs on the blocking pool.
    let logins: Vec<_> = (0..16)
        .map(|i| {
            let (addr, root) = (node.listener("xmpp-tls"), node.root.clone());
            tokio::spawn(async move {
                let mut client = Client::tls_at(addr, &root).await;
                client.open().await;
                client.plain("alice", "alice-pw").await.unwrap();
                client.bind_present(&format!("r{i}")).await
            })
        })
        .collect();
    for round in 0..10 {
        bob.ping(&format!("during-{round}")).await;
    }
    for (i, login) in logins.into_iter().enumerate() {
        let jid = tokio::time::timeout(DEADLINE, login)
            .await
            .expect("every login finished")
            .unwrap();
        assert_eq!(jid, format!("alice@localhost/r{i}"));
    }
}

#[tokio::test]
async fn a_flooding_client_does_not_keep_another_from_being_answered() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(
        dir.path(),
        WhatsappConfig {
            max_stanzas_per_second: 50,
            stanza_burst: 50,
            ..free_ports()
        },
    )
    .await;
    let mut flooder = Client::connect(node.addr).await;
    online(&mut flooder, "alice", "alice-pw", "flood").await;
    flooder.ping("ready").await;
    let mut bob = Client::connect(node.addr).await;
    online(&mut bob, "bob", "bob-pw", "calm").await;
    bob.ping("ready").await;

    // The flooder writes pings as fast as it can and never reads the answers.
    let Io::Tcp(mut socket) = std::mem::replace(&mut flooder.io, Io::Gone) else {
        unreachable!()
    };
    let flood = tokio::spawn(async move {
        let chunk: String = (0..1000)
            .map(|i| format!("<iq type='get' id='f{i}'><ping xmlns='{PING_NS}'/></iq>"))
            .collect();
        for _ in 0..1000 {
            if socket.write_all(chunk.as_bytes()).await.is_err() {
                return;
            }
        }
    });
    for round in 0..20 {
        bob.ping(&format!("during-{round}")).await;
    }
    assert!(
        !flood.is_finished(),
        "the flooder is held back by TCP backpressure, not served at its own pace"
    );
    flood.abort();
}

#[tokio::test]
async fn the_connection_cap_counts_tcp_tls_and_websocket_together() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(
        dir.path(),
        WhatsappConfig {
            max_connections: 2,
            ..free_ports()
        },
    )
    .await;
    let mut tcp = Client::connect(node.addr).await;
    tcp.open().await;
    let mut ws = Client::ws(&node).await;
    ws.open().await;
    let mut refused_ws = Client::ws(&node).await;
    refused_ws.expect_stream_error("resource-constraint").await;
    let mut refused_tls = Client::tls(&node).await;
    refused_tls.expect_stream_error("resource-constraint").await;
    let mut refused_tcp = Client::connect(node.addr).await;
    refused_tcp.expect_stream_error("resource-constraint").await;

    // Closing the WebSocket one frees a slot for a TCP one.
    ws.send(&format!("<close xmlns='{FRAMING_NS}'/>")).await;
    ws.expect_closed().await;
    eventually("the slot is released", DEADLINE, || async {
        let mut next = Client::connect(node.addr).await;
        next.send(HEADER).await;
        next.next().await;
        next.stanza().await.is("features", STREAMS_NS)
    })
    .await;
    assert!(node.platform.kill(&node.instance_id).await);
}

/// A burst routed to one session is drained from its queue and written in as few
/// writes as possible; over WebSocket it still arrives as one message per element
/// (the client's framed parser refuses anything else), over TLS intact, in order.
#[tokio::test]
async fn a_burst_of_queued_stanzas_arrives_whole_and_in_order_over_websocket_and_tls() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path(), free_ports()).await;
    let mut ws = Client::ws(&node).await;
    online(&mut ws, "alice", "alice-pw", "browser").await;
    let mut tls = Client::tls(&node).await;
    online(&mut tls, "alice", "alice-pw", "tls").await;
    let mut bob = Client::connect(node.addr).await;
    online(&mut bob, "bob", "bob-pw", "laptop").await;
    ws.ping("a").await;
    tls.ping("b").await;
    bob.ping("c").await;

    // One write from bob: his task routes them all before either recipient runs.
    const BURST: usize = 80;
    let mut burst = String::new();
    for n in 0..BURST {
        for resource in ["browser", "tls"] {
            burst.push_str(&format!(
                "<message to='alice@localhost/{resource}' type='chat'><body>{resource}-{n}</body></message>"
            ));
        }
    }
    bob.send(&burst).await;
    for (client, resource) in [(&mut ws, "browser"), (&mut tls, "tls")] {
        let mut got = Vec::new();
        while got.len() < BURST {
            let stanza = client.stanza().await;
            if stanza.is("message", CLIENT_NS) {
                got.push(body(&stanza));
            }
        }
        let expected: Vec<String> = (0..BURST).map(|n| format!("{resource}-{n}")).collect();
        assert_eq!(got, expected, "{resource}");
        client.ping("after").await;
    }
}
