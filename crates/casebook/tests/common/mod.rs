//! A small raw-XMPP test client for tests that drive the real `casebook` binary:
//! plain TCP, the whatsapp crate's own stream parser, SCRAM-SHA-256 through its
//! auth helpers, and XEP-0198 (`enable`, `<r/>`, `<a/>`) counted by hand so a test
//! knows exactly what it acknowledged.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;

use casebook_whatsapp::auth::{ScramHash, decode_payload, encode_payload};
use casebook_whatsapp::node::conn::{BIND_NS, PING_NS, SASL_NS, SM_NS};
use casebook_whatsapp::xml::{CLIENT_NS, Element, StreamEvent, StreamParser};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the client read next.
#[derive(Debug)]
pub enum Incoming {
    /// A `jabber:client` stanza (counted towards `received`).
    Stanza(Element),
    /// The server's `<r/>`.
    Request,
    /// The server's `<a h/>`.
    Ack(u32),
    /// Any other top-level element.
    Other,
}

fn broken(what: impl Into<String>) -> io::Error {
    io::Error::other(what.into())
}

/// One XMPP client connection.
pub struct Xmpp {
    stream: TcpStream,
    parser: StreamParser,
    events: VecDeque<StreamEvent>,
    /// Stanzas received since stream management was enabled (our `h`).
    pub received: u32,
}

impl Xmpp {
    /// Connects, authenticates with SCRAM-SHA-256, binds `resource`, enables
    /// XEP-0198 (without resumption) and sends initial presence.
    pub async fn login(
        addr: SocketAddr,
        user: &str,
        password: &str,
        resource: &str,
    ) -> io::Result<Self> {
        let mut client = Self {
            stream: TcpStream::connect(addr).await?,
            parser: StreamParser::new(Default::default()),
            events: VecDeque::new(),
            received: 0,
        };
        client.open().await?;
        client.scram(user, password).await?;
        client.open().await?;
        client
            .send(&format!(
                "<iq type='set' id='bind'><bind xmlns='{BIND_NS}'><resource>{resource}</resource></bind></iq>"
            ))
            .await?;
        match client.element().await? {
            e if e.attr("type") == Some("result") => {}
            e => return Err(broken(format!("bind refused: {e:?}"))),
        }
        client.send(&format!("<enable xmlns='{SM_NS}'/>")).await?;
        match client.element().await? {
            e if e.is("enabled", SM_NS) => {}
            e => return Err(broken(format!("enable refused: {e:?}"))),
        }
        client.received = 0;
        client.send("<presence/>").await?;
        Ok(client)
    }

    pub async fn send(&mut self, data: &str) -> io::Result<()> {
        self.stream.write_all(data.as_bytes()).await
    }

    async fn event(&mut self) -> io::Result<StreamEvent> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Ok(event);
            }
            let mut buf = [0u8; 16 * 1024];
            let n = self.stream.read(&mut buf).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let mut out = Vec::new();
            self.parser
                .feed_events(&buf[..n], &mut out)
                .map_err(|e| broken(e.to_string()))?;
            self.events.extend(out);
        }
    }

    async fn element(&mut self) -> io::Result<Element> {
        loop {
            match self.event().await? {
                StreamEvent::StreamOpen { .. } => continue,
                StreamEvent::Stanza(element) => return Ok(element),
                StreamEvent::StreamClose => return Err(io::ErrorKind::UnexpectedEof.into()),
            }
        }
    }

    /// The next thing the server sent; stanzas are counted.
    pub async fn next(&mut self) -> io::Result<Incoming> {
        let element = self.element().await?;
        Ok(if element.is("r", SM_NS) {
            Incoming::Request
        } else if element.is("a", SM_NS) {
            let h = element.attr("h").and_then(|h| h.parse().ok());
            Incoming::Ack(h.ok_or_else(|| broken("an <a/> without h"))?)
        } else if element.ns() == CLIENT_NS {
            self.received = self.received.wrapping_add(1);
            Incoming::Stanza(element)
        } else {
            Incoming::Other
        })
    }

    /// Acknowledges everything received so far.
    pub async fn ack(&mut self) -> io::Result<()> {
        let h = self.received;
        self.send(&format!("<a xmlns='{SM_NS}' h='{h}'/>")).await
    }

    /// Sends a ping with `id` (its result tells that what came before was handled).
    pub async fn ping(&mut self, id: &str) -> io::Result<()> {
        self.send(&format!(
            "<iq type='get' id='{id}'><ping xmlns='{PING_NS}'/></iq>"
        ))
        .await
    }

    async fn open(&mut self) -> io::Result<()> {
        self.parser.reset();
        self.send("<?xml version='1.0'?><stream:stream to='localhost' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>").await?;
        match self.element().await? {
            e if e.name() == "features" => Ok(()),
            e => Err(broken(format!("expected features, got {e:?}"))),
        }
    }

    async fn scram(&mut self, user: &str, password: &str) -> io::Result<()> {
        let hash = ScramHash::Sha256;
        let nonce = format!("{:x}{:x}", std::process::id(), user.len() * 7919);
        let bare = format!("n={user},r=client{nonce}");
        self.send(&format!(
            "<auth xmlns='{SASL_NS}' mechanism='SCRAM-SHA-256'>{}</auth>",
            encode_payload(format!("n,,{bare}").as_bytes())
        ))
        .await?;
        let challenge = self.element().await?;
        if !challenge.is("challenge", SASL_NS) {
            return Err(broken(format!("login refused: {challenge:?}")));
        }
        let server_first = String::from_utf8(
            decode_payload(&challenge.text()).map_err(|_| broken("bad challenge"))?,
        )
        .map_err(|_| broken("bad challenge"))?;
        let field = |key: &str| {
            server_first
                .split(',')
                .find_map(|p| p.strip_prefix(key))
                .map(str::to_owned)
                .ok_or_else(|| broken(format!("challenge without {key}")))
        };
        let (server_nonce, salt, iterations) = (field("r=")?, field("s=")?, field("i=")?);
        let iterations: u32 = iterations.parse().map_err(|_| broken("bad i="))?;
        let salt = decode_payload(&salt).map_err(|_| broken("bad salt"))?;
        let salted = hash.salted_password(password.as_bytes(), &salt, iterations);
        let client_key = hash.hmac(&salted, &[b"Client Key"]);
        let stored_key = hash.digest(&client_key);
        let without_proof = format!("c=biws,r={server_nonce}");
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
        .await?;
        match self.element().await? {
            e if e.is("success", SASL_NS) => Ok(()),
            e => Err(broken(format!("login refused: {e:?}"))),
        }
    }
}
