//! An XMPP client library: what the load generator (`casebook load whatsapp`) and
//! the tests drive a chat node — or any RFC 6120 server, Prosody included — with.
//!
//! [`Session::login`] connects over TCP from a chosen local source address (so a
//! swarm can spread over 127.0.0.x and beat the 28k ephemeral ports of one source),
//! negotiates the stream, authenticates with SASL SCRAM-SHA-256 or PLAIN
//! ([`scram`]), binds a resource, optionally enables XEP-0198 (only if offered) and
//! sends initial presence. After that, [`Session::send`] / [`Session::next_stanza`]
//! drive it directly, or [`Session::into_split`] gives a cloneable, coalescing
//! [`Outbox`] plus a [`Inbox`] so one task reads while many send.
//!
//! Guarantees: every wait is bounded by [`ClientConfig::timeout`] during login;
//! the parser enforces the crate's XML [`Limits`]; errors say which step failed
//! ([`ClientError::kind`] is a short label for counting); the outbox queue is
//! bounded. With XEP-0198 enabled, the inbox answers the server's `<r/>` with the
//! count of stanzas handled. Deliberately absent: TLS/STARTTLS (plaintext streams
//! only: a benchmark tool for localhost), stream resumption, rosters.
//!
//! | module | role |
//! |---|---|
//! | [`scram`] | client side SCRAM (server signature verified) and PLAIN, a key cache |
//! | [`fuzzing`] | the invariants the `scram` fuzz target checks over both ends' SCRAM parsers |

pub mod fuzzing;
pub mod scram;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpSocket;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

use crate::auth::{ScramHash, decode_payload, encode_payload};
use crate::xml::{
    Element, Limits, STREAM_ERRORS_NS, STREAMS_NS, StreamEvent, StreamParser, XmlError,
    write_stanza,
};
pub use scram::{ScramCache, ScramClient, ScramError};

pub use crate::xmpp::{BIND_NS, PING_NS, RECEIPTS_NS, SASL_NS, SESSION_NS, SM_NS};

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;
/// Stanzas queued in one [`Outbox`] before senders see [`SendError::Full`].
pub const OUTBOX_CAPACITY: usize = 4096;
/// Most bytes one coalesced write carries.
const MAX_WRITE_BATCH: usize = 64 * 1024;

/// Which SASL mechanism to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mechanism {
    /// SCRAM-SHA-256, else SCRAM-SHA-1, else PLAIN: the strongest offered.
    #[default]
    Auto,
    ScramSha256,
    ScramSha1,
    Plain,
}

impl Mechanism {
    /// Parses `auto`, `scram-sha-256`, `scram-sha-1`, `plain` (any case).
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "auto" => Some(Self::Auto),
            "scram-sha-256" => Some(Self::ScramSha256),
            "scram-sha-1" => Some(Self::ScramSha1),
            "plain" => Some(Self::Plain),
            _ => None,
        }
    }
}

/// How to reach and log in to a server.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The server's client-to-server address.
    pub target: SocketAddr,
    /// The local address to connect from (`None`: the kernel's choice).
    pub source: Option<IpAddr>,
    /// The XMPP domain (`to` of the stream header).
    pub domain: String,
    pub username: String,
    pub password: String,
    /// The resource to ask for (`None`: the server picks one).
    pub resource: Option<String>,
    pub mechanism: Mechanism,
    /// Enable XEP-0198 if the server offers it.
    pub stream_management: bool,
    /// Send initial presence once bound (what makes the server flush offline messages).
    pub initial_presence: bool,
    /// Bound on each wait while logging in.
    pub timeout: Duration,
    /// Derived SCRAM keys to reuse across logins.
    pub scram_cache: Option<ScramCache>,
}

impl ClientConfig {
    /// `username@domain` with `password` at `target`: SCRAM preferred, presence sent,
    /// XEP-0198 if offered, 10 s per step.
    pub fn new(target: SocketAddr, domain: &str, username: &str, password: &str) -> Self {
        Self {
            target,
            source: None,
            domain: domain.to_owned(),
            username: username.to_owned(),
            password: password.to_owned(),
            resource: None,
            mechanism: Mechanism::Auto,
            stream_management: true,
            initial_presence: true,
            timeout: Duration::from_secs(10),
            scram_cache: None,
        }
    }
}

/// Why a login or a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("xml: {0}")]
    Xml(#[from] XmlError),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("the server closed the connection")]
    Closed,
    #[error("stream error <{0}/>")]
    Stream(String),
    #[error("authentication failed: <{0}/>")]
    Auth(String),
    #[error("no usable SASL mechanism among {0:?}")]
    NoMechanism(Vec<String>),
    #[error("scram: {0}")]
    Scram(#[from] ScramError),
    #[error("protocol: {0}")]
    Protocol(String),
}

impl ClientError {
    /// A short label for counting errors by kind, e.g. `auth:not-authorized`.
    pub fn kind(&self) -> String {
        match self {
            Self::Connect(e) => format!("connect:{:?}", e.kind()),
            Self::Io(e) => format!("io:{:?}", e.kind()),
            Self::Xml(e) => format!("xml:{}", e.condition.as_condition()),
            Self::Timeout(step) => format!("timeout:{step}"),
            Self::Closed => "closed".into(),
            Self::Stream(condition) => format!("stream-error:{condition}"),
            Self::Auth(condition) => format!("auth:{condition}"),
            Self::NoMechanism(_) => "no-mechanism".into(),
            Self::Scram(_) => "scram".into(),
            Self::Protocol(_) => "protocol".into(),
        }
    }
}

/// A logged-in XMPP session over one TCP connection.
#[derive(Debug)]
pub struct Session {
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    inbound: Inbound,
    domain: String,
    jid: String,
    sm: bool,
    local: SocketAddr,
}

/// The parsing half: socket bytes to events.
#[derive(Debug)]
struct Inbound {
    parser: StreamParser,
    events: VecDeque<StreamEvent>,
    scratch: Vec<StreamEvent>,
    buf: Box<[u8]>,
    /// Stanzas handled, for XEP-0198 `<a h=…/>`.
    handled: u32,
}

impl Inbound {
    fn new() -> Self {
        Self {
            parser: StreamParser::new(Limits::default()),
            events: VecDeque::new(),
            scratch: Vec::new(),
            buf: vec![0u8; READ_CHUNK].into_boxed_slice(),
            handled: 0,
        }
    }

    /// The next event; `Ok(None)` on EOF.
    async fn next(
        &mut self,
        reader: &mut OwnedReadHalf,
    ) -> Result<Option<StreamEvent>, ClientError> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Ok(Some(event));
            }
            let n = reader.read(&mut self.buf).await?;
            if n == 0 {
                return Ok(None);
            }
            let result = self.parser.feed_events(&self.buf[..n], &mut self.scratch);
            self.events.extend(self.scratch.drain(..));
            result?;
        }
    }

    /// The next top-level element; a `<stream:error/>` or close is an error.
    async fn element(&mut self, reader: &mut OwnedReadHalf) -> Result<Element, ClientError> {
        match self.next(reader).await? {
            Some(StreamEvent::Stanza(element)) => {
                if element.is("error", STREAMS_NS) {
                    return Err(ClientError::Stream(stream_condition(&element)));
                }
                Ok(element)
            }
            Some(StreamEvent::StreamOpen { .. }) => {
                Err(ClientError::Protocol("a second stream header".into()))
            }
            Some(StreamEvent::StreamClose) | None => Err(ClientError::Closed),
        }
    }
}

fn stream_condition(error: &Element) -> String {
    error
        .children()
        .find(|c| c.ns() == STREAM_ERRORS_NS && c.name() != "text")
        .map(|c| c.name().to_owned())
        .unwrap_or_else(|| "undefined-condition".into())
}

fn first_child_name(element: &Element) -> String {
    element
        .children()
        .find(|c| c.name() != "text")
        .map(|c| c.name().to_owned())
        .unwrap_or_else(|| "unspecified".into())
}

impl Session {
    /// Connects, authenticates, binds and (by default) sends initial presence.
    pub async fn login(config: &ClientConfig) -> Result<Self, ClientError> {
        let step = config.timeout;
        let stream = bounded(step, "connect", async {
            let socket = if config.target.is_ipv4() {
                TcpSocket::new_v4()
            } else {
                TcpSocket::new_v6()
            }
            .map_err(ClientError::Connect)?;
            if let Some(source) = config.source {
                socket
                    .bind(SocketAddr::new(source, 0))
                    .map_err(ClientError::Connect)?;
            }
            socket
                .connect(config.target)
                .await
                .map_err(ClientError::Connect)
        })
        .await?;
        stream.set_nodelay(true)?;
        let local = stream.local_addr()?;
        let (reader, writer) = stream.into_split();
        let mut session = Self {
            reader,
            writer,
            inbound: Inbound::new(),
            domain: config.domain.clone(),
            jid: String::new(),
            sm: false,
            local,
        };
        let features = session.open(step).await?;
        session.authenticate(config, &features).await?;
        session.inbound.parser.reset();
        let features = session.open(step).await?;
        session.bind(config, &features).await?;
        if config.stream_management && features.child("sm", SM_NS).is_some() {
            session
                .send_raw(&format!("<enable xmlns='{SM_NS}'/>"))
                .await?;
            let answer = session.expect(step, "sm enable").await?;
            session.sm = answer.is("enabled", SM_NS);
        }
        if config.initial_presence {
            session.send_raw("<presence/>").await?;
        }
        Ok(session)
    }

    /// The full JID the server bound.
    pub fn jid(&self) -> &str {
        &self.jid
    }

    /// The local address this session connects from.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Whether XEP-0198 was enabled.
    pub fn stream_management(&self) -> bool {
        self.sm
    }

    /// Writes raw XML (trusted: the caller escapes).
    pub async fn send_raw(&mut self, xml: &str) -> Result<(), ClientError> {
        self.writer.write_all(xml.as_bytes()).await?;
        Ok(())
    }

    /// Writes one element.
    pub async fn send(&mut self, element: &Element) -> Result<(), ClientError> {
        self.send_raw(&write_stanza(element)).await
    }

    /// The next stanza; `Ok(None)` once the server closed the stream. XEP-0198
    /// requests are answered here and not returned.
    pub async fn next_stanza(&mut self) -> Result<Option<Element>, ClientError> {
        loop {
            match self.inbound.element(&mut self.reader).await {
                Ok(element) => {
                    if let Some(answer) = sm_step(&mut self.inbound, self.sm, &element) {
                        self.send_raw(&answer).await?;
                    }
                    if element.ns() == SM_NS {
                        continue;
                    }
                    return Ok(Some(element));
                }
                Err(ClientError::Closed) => return Ok(None),
                Err(other) => return Err(other),
            }
        }
    }

    /// Sends a XEP-0199 ping and returns every stanza that arrived before its answer.
    pub async fn ping(&mut self, id: &str, timeout: Duration) -> Result<Vec<Element>, ClientError> {
        self.send_raw(&format!(
            "<iq type='get' id='{}'><ping xmlns='{PING_NS}'/></iq>",
            crate::xml::escape(id)
        ))
        .await?;
        let mut before = Vec::new();
        bounded(timeout, "ping", async {
            loop {
                let Some(stanza) = self.next_stanza().await? else {
                    return Err(ClientError::Closed);
                };
                if stanza.name() == "iq" && stanza.attr("id") == Some(id) {
                    return Ok(());
                }
                before.push(stanza);
            }
        })
        .await?;
        Ok(before)
    }

    /// Ends the stream politely (`</stream:stream>`) and waits for the server's close.
    pub async fn close(mut self, timeout: Duration) -> Result<(), ClientError> {
        self.send_raw("</stream:stream>").await?;
        let _ = bounded(timeout, "close", async {
            while self.next_stanza().await?.is_some() {}
            Ok(())
        })
        .await;
        Ok(())
    }

    /// Splits into a reading half and a cloneable, bounded, coalescing sender
    /// backed by a writer task.
    pub fn into_split(self) -> (Inbox, Outbox) {
        let (tx, rx) = mpsc::channel(OUTBOX_CAPACITY);
        tokio::spawn(write_loop(self.writer, rx));
        let outbox = Outbox { tx };
        (
            Inbox {
                reader: self.reader,
                inbound: self.inbound,
                sm: self.sm,
                outbox: outbox.clone(),
            },
            outbox,
        )
    }

    async fn expect(&mut self, step: Duration, what: &'static str) -> Result<Element, ClientError> {
        bounded(step, what, self.inbound.element(&mut self.reader)).await
    }

    /// Sends the stream header; returns the features.
    async fn open(&mut self, step: Duration) -> Result<Element, ClientError> {
        self.send_raw(&format!(
            "<?xml version='1.0'?><stream:stream to='{}' version='1.0' xmlns='jabber:client' xmlns:stream='{STREAMS_NS}'>",
            crate::xml::escape(&self.domain)
        ))
        .await?;
        let header = bounded(step, "stream header", self.inbound.next(&mut self.reader)).await?;
        match header {
            Some(StreamEvent::StreamOpen { .. }) => {}
            Some(StreamEvent::Stanza(e)) if e.is("error", STREAMS_NS) => {
                return Err(ClientError::Stream(stream_condition(&e)));
            }
            Some(other) => {
                return Err(ClientError::Protocol(format!(
                    "expected a stream header, got {other:?}"
                )));
            }
            None => return Err(ClientError::Closed),
        }
        let features = self.expect(step, "stream features").await?;
        if !features.is("features", STREAMS_NS) {
            return Err(ClientError::Protocol(format!(
                "expected stream features, got <{}/>",
                features.name()
            )));
        }
        Ok(features)
    }

    async fn authenticate(
        &mut self,
        config: &ClientConfig,
        features: &Element,
    ) -> Result<(), ClientError> {
        let offered: Vec<String> = features
            .child("mechanisms", SASL_NS)
            .map(|m| m.children().map(Element::text).collect())
            .unwrap_or_default();
        let has = |name: &str| offered.iter().any(|m| m == name);
        let chosen = match config.mechanism {
            Mechanism::Auto if has("SCRAM-SHA-256") => Mechanism::ScramSha256,
            Mechanism::Auto if has("SCRAM-SHA-1") => Mechanism::ScramSha1,
            Mechanism::Auto if has("PLAIN") => Mechanism::Plain,
            Mechanism::ScramSha256 if has("SCRAM-SHA-256") => Mechanism::ScramSha256,
            Mechanism::ScramSha1 if has("SCRAM-SHA-1") => Mechanism::ScramSha1,
            Mechanism::Plain if has("PLAIN") => Mechanism::Plain,
            _ => return Err(ClientError::NoMechanism(offered)),
        };
        let step = config.timeout;
        let hash = match chosen {
            Mechanism::Plain => {
                self.send_raw(&format!(
                    "<auth xmlns='{SASL_NS}' mechanism='PLAIN'>{}</auth>",
                    encode_payload(&scram::plain_message(&config.username, &config.password))
                ))
                .await?;
                let outcome = self.expect(step, "sasl outcome").await?;
                return sasl_outcome(&outcome).map(|_| ());
            }
            Mechanism::ScramSha1 => ScramHash::Sha1,
            _ => ScramHash::Sha256,
        };
        let mut scram = ScramClient::new(hash, &config.username, &config.password);
        self.send_raw(&format!(
            "<auth xmlns='{SASL_NS}' mechanism='{}'>{}</auth>",
            scram.mechanism(),
            encode_payload(&scram.client_first())
        ))
        .await?;
        let challenge = self.expect(step, "sasl challenge").await?;
        if !challenge.is("challenge", SASL_NS) {
            sasl_outcome(&challenge)?;
            return Err(ClientError::Protocol("success before the proof".into()));
        }
        let server_first = decode_payload(&challenge.text())
            .map_err(|_| ScramError::ServerFirst("not base64".into()))?;
        let last = scram.client_final(&server_first, config.scram_cache.as_ref())?;
        self.send_raw(&format!(
            "<response xmlns='{SASL_NS}'>{}</response>",
            encode_payload(&last)
        ))
        .await?;
        let outcome = self.expect(step, "sasl outcome").await?;
        let additional = sasl_outcome(&outcome)?;
        scram.verify_server_final(&additional)?;
        Ok(())
    }

    async fn bind(&mut self, config: &ClientConfig, features: &Element) -> Result<(), ClientError> {
        if features.child("bind", BIND_NS).is_none() {
            return Err(ClientError::Protocol(
                "the server offers no resource binding".into(),
            ));
        }
        let resource = config
            .resource
            .as_deref()
            .map(|r| format!("<resource>{}</resource>", crate::xml::escape(r)))
            .unwrap_or_default();
        self.send_raw(&format!(
            "<iq type='set' id='bind'><bind xmlns='{BIND_NS}'>{resource}</bind></iq>"
        ))
        .await?;
        let result = self.expect(config.timeout, "bind").await?;
        if result.attr("type") != Some("result") {
            return Err(ClientError::Protocol(format!(
                "bind refused: {}",
                result
                    .child("error", crate::xml::CLIENT_NS)
                    .map(first_child_name)
                    .unwrap_or_default()
            )));
        }
        self.jid = result
            .child("bind", BIND_NS)
            .and_then(|b| b.child("jid", BIND_NS))
            .map(Element::text)
            .ok_or_else(|| ClientError::Protocol("bind result without a jid".into()))?;
        // RFC 6121 made the session step optional; only old servers still need it.
        if let Some(session) = features.child("session", SESSION_NS)
            && session.child("optional", SESSION_NS).is_none()
        {
            self.send_raw(&format!(
                "<iq type='set' id='sess'><session xmlns='{SESSION_NS}'/></iq>"
            ))
            .await?;
            let result = self.expect(config.timeout, "session").await?;
            if result.attr("type") != Some("result") {
                return Err(ClientError::Protocol("session refused".into()));
            }
        }
        Ok(())
    }
}

/// `<success/>`'s additional data, or the failure's condition as an error.
fn sasl_outcome(outcome: &Element) -> Result<Vec<u8>, ClientError> {
    if outcome.is("success", SASL_NS) {
        let text = outcome.text();
        if text.is_empty() || text == "=" {
            return Ok(Vec::new());
        }
        return decode_payload(&text)
            .map_err(|_| ClientError::Protocol("success data is not base64".into()));
    }
    if outcome.is("failure", SASL_NS) {
        return Err(ClientError::Auth(first_child_name(outcome)));
    }
    Err(ClientError::Protocol(format!(
        "unexpected <{}/> during SASL",
        outcome.name()
    )))
}

/// XEP-0198 bookkeeping for one inbound element: counts stanzas, answers `<r/>`.
fn sm_step(inbound: &mut Inbound, sm: bool, element: &Element) -> Option<String> {
    if !sm {
        return None;
    }
    if element.ns() == SM_NS {
        return (element.name() == "r")
            .then(|| format!("<a xmlns='{SM_NS}' h='{}'/>", inbound.handled));
    }
    if matches!(element.name(), "message" | "presence" | "iq") {
        inbound.handled = inbound.handled.wrapping_add(1);
    }
    None
}

async fn bounded<T>(
    timeout: Duration,
    what: &'static str,
    work: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| ClientError::Timeout(what))?
}

/// Why a stanza could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("the outbox is full")]
    Full,
    #[error("the connection is closed")]
    Closed,
}

/// The sending half after [`Session::into_split`]: cheap to clone, bounded.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::Sender<String>,
}

impl Outbox {
    /// Queues raw XML without waiting; a full queue is an error, not a wait (open
    /// loop: the caller counts it instead of slowing down).
    pub fn try_send(&self, xml: String) -> Result<(), SendError> {
        self.tx.try_send(xml).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendError::Full,
            mpsc::error::TrySendError::Closed(_) => SendError::Closed,
        })
    }

    /// Queues raw XML, waiting for room.
    pub async fn send(&self, xml: String) -> Result<(), SendError> {
        self.tx.send(xml).await.map_err(|_| SendError::Closed)
    }
}

/// The reading half after [`Session::into_split`].
#[derive(Debug)]
pub struct Inbox {
    reader: OwnedReadHalf,
    inbound: Inbound,
    sm: bool,
    outbox: Outbox,
}

impl Inbox {
    /// The next stanza; `Ok(None)` once the server closed the stream. XEP-0198
    /// requests are answered through the outbox and not returned.
    pub async fn next_stanza(&mut self) -> Result<Option<Element>, ClientError> {
        loop {
            match self.inbound.element(&mut self.reader).await {
                Ok(element) => {
                    if let Some(answer) = sm_step(&mut self.inbound, self.sm, &element) {
                        // The ack must not be lost to a momentarily full queue.
                        self.outbox
                            .send(answer)
                            .await
                            .map_err(|_| ClientError::Closed)?;
                    }
                    if element.ns() == SM_NS {
                        continue;
                    }
                    return Ok(Some(element));
                }
                Err(ClientError::Closed) => return Ok(None),
                Err(other) => return Err(other),
            }
        }
    }
}

/// Drains the outbox into the socket, coalescing whatever is queued into one write.
async fn write_loop(mut writer: OwnedWriteHalf, mut rx: mpsc::Receiver<String>) {
    let mut batch = Vec::with_capacity(4096);
    while let Some(first) = rx.recv().await {
        batch.extend_from_slice(first.as_bytes());
        while batch.len() < MAX_WRITE_BATCH {
            match rx.try_recv() {
                Ok(more) => batch.extend_from_slice(more.as_bytes()),
                Err(_) => break,
            }
        }
        if writer.write_all(&batch).await.is_err() {
            return;
        }
        batch.clear();
        if batch.capacity() > MAX_WRITE_BATCH * 2 {
            batch.shrink_to(4096);
        }
    }
    let _ = writer.shutdown().await;
}
