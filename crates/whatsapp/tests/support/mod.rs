//! Shared test support for the chat node's integration tests: a node starter and a
//! minimal raw-XMPP client (plain TCP, TLS or RFC 7395 WebSocket) built on the
//! crate's own XML layer and auth helpers. Reads are bounded by [`DEADLINE`] (a
//! hang fails the test); nothing here asserts on timing. Each test binary uses a
//! subset, hence the `dead_code` allowance.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use casebook_kit::clock::SharedClock;
use casebook_kit::runtime::{InstanceSpec, Platform};
use casebook_kit::topology::Topology;
use casebook_whatsapp::auth::{
    Accounts, AccountsConfig, ScramHash, decode_payload, encode_payload,
};
use casebook_whatsapp::client::ScramClient;
use casebook_whatsapp::node::conn::{BIND_NS, PING_NS, SASL_NS, SM_NS, TLS_NS};
use casebook_whatsapp::node::stanza::STANZAS_NS;
use casebook_whatsapp::node::{ChatNode, ChatSettings, WhatsappConfig, domain_dir, tls};
use casebook_whatsapp::xml::{
    CLIENT_NS, Element, FRAMING_NS, Frame, FramedParser, STREAM_ERRORS_NS, STREAMS_NS, StreamEvent,
    StreamParser,
};
use futures::{SinkExt, StreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single wait may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);
/// The client's stream header.
pub const HEADER: &str = "<?xml version='1.0'?><stream:stream to='localhost' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

/// Adds each missing user under `root`, with the password `{user}-pw`.
pub fn add_accounts(root: &Path, domain: &str, users: &[&str]) {
    let accounts = Accounts::open(root, domain, AccountsConfig::default()).unwrap();
    for user in users {
        if !accounts.contains(user) {
            accounts.add(user, &format!("{user}-pw")).unwrap();
        }
    }
}

/// One chat instance in a one-region platform.
pub struct Node {
    pub platform: Platform,
    pub instance_id: String,
    /// The plain-TCP client address.
    pub addr: SocketAddr,
    /// Where the accounts and the node's state live.
    pub root: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Node {
    /// A node in a fresh temporary directory (kept as long as the node).
    pub async fn start(config: WhatsappConfig, users: &[&str], clock: SharedClock) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut node = Self::start_in(dir.path(), config, users, clock).await;
        node._dir = Some(dir);
        node
    }

    /// A node over `root` (which may hold a previous node's state).
    pub async fn start_in(
        root: &Path,
        config: WhatsappConfig,
        users: &[&str],
        clock: SharedClock,
    ) -> Self {
        add_accounts(root, &config.domain, users);
        let platform = Platform::new(Topology::uniform(&["r1"], 1), root, clock);
        platform.register_service(Arc::new(ChatNode::new(ChatSettings {
            config,
            accounts_root: root.to_path_buf(),
        })));
        let (instance_id, addr) = start_instance(&platform).await;
        Self {
            platform,
            instance_id,
            addr,
            root: root.to_path_buf(),
            _dir: None,
        }
    }

    /// The address of the instance's listener called `name`.
    pub fn listener(&self, name: &str) -> SocketAddr {
        let view = self
            .platform
            .list()
            .into_iter()
            .find(|v| v.info.instance_id == self.instance_id)
            .unwrap();
        view.listeners
            .iter()
            .find(|l| l.name == name)
            .unwrap_or_else(|| panic!("{name} published: {:?}", view.listeners))
            .address
    }

    /// Kills the instance (every task dropped at once) and starts a new one.
    pub async fn kill_and_restart(&mut self) {
        assert!(self.platform.kill(&self.instance_id).await);
        (self.instance_id, self.addr) = start_instance(&self.platform).await;
    }

    /// Kills the instance and drops the process's state (a crash, as far as the
    /// stores can tell).
    pub async fn crash(self) {
        assert!(self.platform.kill(&self.instance_id).await);
        drop(self.platform);
    }
}

async fn start_instance(platform: &Platform) -> (String, SocketAddr) {
    let info = platform
        .start(InstanceSpec {
            service: "chat".into(),
            instance_id: None,
            placement: Topology::uniform(&["r1"], 1).spread(0),
            listen: "127.0.0.1:0".parse().unwrap(),
            version: "test".into(),
            port_hint: None,
        })
        .await
        .unwrap();
    (info.instance_id, info.address)
}

/// The client side of TLS, trusting exactly the certificate the node generated.
pub fn tls_connector(root: &Path) -> tokio_rustls::TlsConnector {
    let (cert, _) = tls::generated_paths(&domain_dir(root, "localhost"));
    connector_trusting(&cert)
}

/// The client side of TLS, trusting exactly the certificates in `cert`.
pub fn connector_trusting(cert: &Path) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

pub enum Io {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Ws(Box<WebSocketStream<MaybeTlsStream<TcpStream>>>),
    Gone,
}

/// A raw XMPP client. It counts the stanzas it receives (its XEP-0198 `h`) and
/// records the server's `<r/>` requests instead of returning them.
pub struct Client {
    pub io: Io,
    parser: StreamParser,
    framed: FramedParser,
    events: VecDeque<StreamEvent>,
    eof: bool,
    /// Stanzas received since `<enable/>` / `<resumed/>` started counting.
    pub received: u32,
    /// `<r/>` requests seen.
    pub requests: u32,
}

impl Client {
    pub fn over(io: Io) -> Self {
        Self {
            io,
            parser: StreamParser::new(Default::default()),
            framed: FramedParser::new(Default::default()),
            events: VecDeque::new(),
            eof: false,
            received: 0,
            requests: 0,
        }
    }

    /// Plain TCP.
    pub async fn connect(addr: SocketAddr) -> Self {
        Self::over(Io::Tcp(TcpStream::connect(addr).await.unwrap()))
    }

    /// Direct TLS to the node's TLS listener.
    pub async fn tls(node: &Node) -> Self {
        Self::tls_at(node.listener("xmpp-tls"), &node.root).await
    }

    pub async fn tls_at(addr: SocketAddr, root: &Path) -> Self {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let tls = tls_connector(root).connect(name, tcp).await.unwrap();
        Self::over(Io::Tls(Box::new(tls)))
    }

    /// RFC 7395 WebSocket with the `xmpp` subprotocol.
    pub async fn ws(node: &Node) -> Self {
        let mut request = format!("ws://{}/xmpp-websocket", node.listener("xmpp-websocket"))
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("sec-websocket-protocol", "xmpp".parse().unwrap());
        let (socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
        assert_eq!(
            response.headers().get("sec-websocket-protocol").unwrap(),
            "xmpp"
        );
        Self::over(Io::Ws(Box::new(socket)))
    }

    pub fn is_ws(&self) -> bool {
        matches!(self.io, Io::Ws(_))
    }

    pub async fn send(&mut self, data: &str) {
        match &mut self.io {
            Io::Tcp(tcp) => tcp.write_all(data.as_bytes()).await.unwrap(),
            Io::Tls(tls) => {
                tls.write_all(data.as_bytes()).await.unwrap();
                tls.flush().await.unwrap();
            }
            Io::Ws(ws) => ws.send(Message::Text(data.into())).await.unwrap(),
            Io::Gone => panic!("no transport"),
        }
    }

    /// Like [`Client::send`] but tolerates a peer that already closed.
    pub async fn try_send_raw(&mut self, data: &[u8]) -> bool {
        match &mut self.io {
            Io::Tcp(tcp) => tcp.write_all(data).await.is_ok(),
            Io::Tls(tls) => tls.write_all(data).await.is_ok() && tls.flush().await.is_ok(),
            Io::Ws(ws) => ws.send(Message::Binary(data.to_vec().into())).await.is_ok(),
            Io::Gone => false,
        }
    }

    /// The next event, or `None` once the server closed the connection.
    pub async fn next(&mut self) -> Option<StreamEvent> {
        tokio::time::timeout(DEADLINE, async {
            loop {
                if let Some(event) = self.events.pop_front() {
                    return Some(event);
                }
                if self.eof {
                    return None;
                }
                let mut buf = [0u8; 8192];
                let read = match &mut self.io {
                    Io::Tcp(tcp) => tcp.read(&mut buf).await,
                    Io::Tls(tls) => tls.read(&mut buf).await,
                    Io::Ws(ws) => {
                        match ws.next().await {
                            Some(Ok(Message::Text(text))) => {
                                let event = match self.framed.parse(text.as_bytes()).unwrap() {
                                    Frame::Open { attrs } => StreamEvent::StreamOpen { attrs },
                                    Frame::Close { .. } => StreamEvent::StreamClose,
                                    Frame::Stanza(e) => StreamEvent::Stanza(e),
                                };
                                self.events.push_back(event);
                            }
                            Some(Ok(Message::Binary(_))) => panic!("the server sent binary"),
                            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => self.eof = true,
                            Some(Ok(_)) => {}
                        }
                        continue;
                    }
                    Io::Gone => Ok(0),
                };
                match read {
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

    /// The next element other than an XEP-0198 `<r/>` (counted in `requests`);
    /// stanzas are counted in `received`.
    pub async fn stanza(&mut self) -> Element {
        loop {
            match self.next().await {
                Some(StreamEvent::Stanza(e)) if e.is("r", SM_NS) => self.requests += 1,
                Some(StreamEvent::Stanza(e)) => {
                    if e.ns() == CLIENT_NS {
                        self.received += 1;
                    }
                    return e;
                }
                other => panic!("expected a stanza, got {other:?}"),
            }
        }
    }

    /// Opens a stream (header or RFC 7395 `<open/>`); returns the features.
    pub async fn open(&mut self) -> Element {
        if self.is_ws() {
            self.send(&format!(
                "<open xmlns='{FRAMING_NS}' to='localhost' version='1.0'/>"
            ))
            .await;
        } else {
            self.parser.reset();
            self.send(HEADER).await;
        }
        match self.next().await {
            Some(StreamEvent::StreamOpen { attrs }) => {
                let attr = |name: &str| {
                    attrs
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.as_str())
                };
                assert_eq!(attr("from"), Some("localhost"), "{attrs:?}");
                assert!(
                    attr("id").is_some_and(|id| id.len() >= 16),
                    "a fresh stream id"
                );
            }
            other => panic!("expected a stream header, got {other:?}"),
        }
        let features = self.stanza().await;
        assert!(features.is("features", STREAMS_NS), "{features:?}");
        features
    }

    /// `<starttls/>`, `<proceed/>`, the TLS handshake trusting the node's stored
    /// certificate, then a fresh stream; returns its features.
    pub async fn starttls(&mut self, root: &Path) -> Element {
        self.send(&format!("<starttls xmlns='{TLS_NS}'/>")).await;
        let proceed = self.stanza().await;
        assert!(proceed.is("proceed", TLS_NS), "{proceed:?}");
        let Io::Tcp(tcp) = std::mem::replace(&mut self.io, Io::Gone) else {
            panic!("STARTTLS over plain TCP only");
        };
        let name = ServerName::try_from("localhost").unwrap();
        let tls = tls_connector(root).connect(name, tcp).await.unwrap();
        self.io = Io::Tls(Box::new(tls));
        self.open().await
    }

    /// Runs SCRAM-SHA-256 with the crate's client; `Ok` on success, else the
    /// failure condition.
    pub async fn scram(&mut self, user: &str, password: &str) -> Result<(), String> {
        let mut client = ScramClient::new(ScramHash::Sha256, user, password);
        self.send(&format!(
            "<auth xmlns='{SASL_NS}' mechanism='{}'>{}</auth>",
            client.mechanism(),
            encode_payload(&client.client_first())
        ))
        .await;
        let challenge = self.stanza().await;
        if challenge.is("failure", SASL_NS) {
            return Err(condition(&challenge));
        }
        assert!(challenge.is("challenge", SASL_NS), "{challenge:?}");
        let server_first = decode_payload(&challenge.text()).unwrap();
        let client_final = client.client_final(&server_first, None).unwrap();
        self.send(&format!(
            "<response xmlns='{SASL_NS}'>{}</response>",
            encode_payload(&client_final)
        ))
        .await;
        self.sasl_outcome().await
    }

    /// Runs SASL PLAIN; `Ok` on success, else the failure condition.
    pub async fn plain(&mut self, user: &str, password: &str) -> Result<(), String> {
        self.send(&format!(
            "<auth xmlns='{SASL_NS}' mechanism='PLAIN'>{}</auth>",
            encode_payload(format!("\0{user}\0{password}").as_bytes())
        ))
        .await;
        self.sasl_outcome().await
    }

    async fn sasl_outcome(&mut self) -> Result<(), String> {
        let outcome = self.stanza().await;
        if outcome.is("success", SASL_NS) {
            Ok(())
        } else {
            Err(condition(&outcome))
        }
    }

    /// Restarts the stream after authentication; returns the features, which
    /// offer resource binding.
    pub async fn restart(&mut self) -> Element {
        let features = self.open().await;
        assert!(features.child("bind", BIND_NS).is_some(), "{features:?}");
        features
    }

    /// Binds `resource` (or one the server picks) on the current stream; returns
    /// the full JID.
    pub async fn bind_iq(&mut self, resource: Option<&str>) -> String {
        let resource = resource
            .map(|r| format!("<resource>{r}</resource>"))
            .unwrap_or_default();
        let iq = format!(
            "<iq type='set' id='b1'{}><bind xmlns='{BIND_NS}'>{resource}</bind></iq>",
            self.ns()
        );
        self.send(&iq).await;
        let result = self.stanza().await;
        assert_eq!(result.attr("type"), Some("result"), "{result:?}");
        result
            .child("bind", BIND_NS)
            .unwrap()
            .child("jid", BIND_NS)
            .unwrap()
            .text()
    }

    /// Restarts the stream and binds `resource`; returns the full JID.
    pub async fn bind(&mut self, resource: &str) -> String {
        self.restart().await;
        self.bind_iq(Some(resource)).await
    }

    /// Restarts the stream, binds `resource` (or one the server picks) and
    /// establishes the legacy session; returns the full JID.
    pub async fn bind_session(&mut self, resource: Option<&str>) -> String {
        self.restart().await;
        let jid = self.bind_iq(resource).await;
        self.session().await;
        jid
    }

    /// The legacy RFC 3921 session establishment.
    pub async fn session(&mut self) {
        self.send(
            "<iq type='set' id='s1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>",
        )
        .await;
        let session = self.stanza().await;
        assert_eq!(
            (session.attr("type"), session.attr("id")),
            (Some("result"), Some("s1"))
        );
    }

    /// Initial presence.
    pub async fn presence(&mut self) {
        let presence = format!("<presence{}/>", self.ns());
        self.send(&presence).await;
    }

    /// RFC 7395 frames carry their own namespace; in a stream it is inherited.
    pub fn ns(&self) -> String {
        if self.is_ws() {
            format!(" xmlns='{CLIENT_NS}'")
        } else {
            String::new()
        }
    }

    /// A ping round trip: returns what the server sent before its result.
    pub async fn ping(&mut self, id: &str) -> Vec<Element> {
        let ping = format!(
            "<iq type='get' id='{id}'{}><ping xmlns='{PING_NS}'/></iq>",
            self.ns()
        );
        self.send(&ping).await;
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

    /// The `<stream:error/>` the server sent (skipping stanzas before it), after
    /// which it closed the stream and the connection.
    pub async fn stream_error(&mut self) -> Element {
        let error = loop {
            match self.next().await {
                Some(StreamEvent::Stanza(e)) if e.is("error", STREAMS_NS) => break e,
                Some(StreamEvent::Stanza(_)) | Some(StreamEvent::StreamOpen { .. }) => continue,
                other => panic!("expected a stream error, got {other:?}"),
            }
        };
        assert!(matches!(self.next().await, Some(StreamEvent::StreamClose)));
        assert!(
            self.next().await.is_none(),
            "the server closed the connection"
        );
        error
    }

    /// Expects `<stream:error><condition/>`, then the close and the end; returns
    /// the error.
    pub async fn expect_stream_error(&mut self, condition: &str) -> Element {
        let error = self.stream_error().await;
        assert!(
            error.child(condition, STREAM_ERRORS_NS).is_some(),
            "{error:?}"
        );
        error
    }

    /// Waits until the server closed the connection, skipping what it still sent.
    pub async fn expect_closed(&mut self) {
        while self.next().await.is_some() {}
    }

    /// Closes the stream cleanly and waits for the server's close.
    pub async fn close(mut self) {
        self.send("</stream:stream>").await;
        self.expect_closed().await;
    }
}

/// The name of an element's first child (a SASL failure's condition).
pub fn condition(element: &Element) -> String {
    element
        .children()
        .next()
        .map(|c| c.name().to_owned())
        .unwrap_or_default()
}

/// The SASL mechanisms offered in `features`.
pub fn mechanisms(features: &Element) -> Vec<String> {
    features
        .child("mechanisms", SASL_NS)
        .map(|m| m.children().map(Element::text).collect())
        .unwrap_or_default()
}

/// A stanza error's defined condition.
pub fn stanza_error(stanza: &Element) -> Option<String> {
    let error = stanza.child("error", CLIENT_NS)?;
    error
        .children()
        .find(|c| c.ns() == STANZAS_NS)
        .map(|c| c.name().to_owned())
}
