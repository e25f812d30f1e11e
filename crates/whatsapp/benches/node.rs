//! Chat node benchmark over loopback: one run, one table.
//!
//! `cargo bench -p casebook-whatsapp --bench node` — `BENCH_MESSAGES`
//! (default 20000) messages per scenario; `BENCH_ARCHIVE=0` runs the node without
//! its message archive (`archive_messages = false`). Clients log in with PLAIN (enabled for the
//! benchmark only) so the numbers measure the node, not PBKDF2.
//!
//! Scenarios: login (connect → features → PLAIN → restart → bind → presence), routed
//! round trip (alice → bob → alice, one at a time: latency), pipelined one-way
//! (alice sends N with at most 1024 in flight, bob reads N: throughput) — with both
//! users on one node, then with the recipient on a second node (two regions), so
//! every message crosses the node-to-node link — and the same with XEP-0198 on both
//! ends (every message durable in the offline store before it is routed, removed on
//! the recipient's `<a/>`) for 1 and 16 pairs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use casebook_kit::clock::SystemClock;
use casebook_kit::runtime::{InstanceSpec, Platform};
use casebook_kit::topology::Topology;
use casebook_whatsapp::auth::{Accounts, AccountsConfig, encode_payload};
use casebook_whatsapp::node::{ChatNode, ChatSettings, WhatsappConfig};
use casebook_whatsapp::xml::{Element, StreamEvent, StreamParser};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const HEADER: &str = "<stream:stream to='localhost' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

struct Client {
    stream: TcpStream,
    parser: StreamParser,
    events: std::collections::VecDeque<StreamEvent>,
}

impl Client {
    async fn send(&mut self, data: &str) {
        self.stream.write_all(data.as_bytes()).await.expect("write");
    }

    async fn stanza(&mut self) -> Element {
        loop {
            match self.events.pop_front() {
                Some(StreamEvent::Stanza(element)) => return element,
                Some(_) => continue,
                None => {}
            }
            let mut buf = [0u8; 16 * 1024];
            let n = self.stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "the node closed the stream");
            let mut out = Vec::new();
            self.parser
                .feed_events(&buf[..n], &mut out)
                .expect("well-formed");
            self.events.extend(out);
        }
    }

    async fn login(addr: SocketAddr, user: &str) -> Self {
        let mut client = Self {
            stream: {
                let stream = TcpStream::connect(addr).await.expect("connect");
                stream.set_nodelay(true).expect("nodelay");
                stream
            },
            parser: StreamParser::new(Default::default()),
            events: Default::default(),
        };
        client.send(HEADER).await;
        client.stanza().await; // features
        let auth = encode_payload(format!("\0{user}\0pw-{user}").as_bytes());
        client
            .send(&format!(
                "<auth xmlns='{SASL}' mechanism='PLAIN'>{auth}</auth>"
            ))
            .await;
        assert!(client.stanza().await.is("success", SASL), "login");
        client.parser.reset();
        client.send(HEADER).await;
        client.stanza().await; // features
        client
            .send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>r</resource></bind></iq>")
            .await;
        client.stanza().await;
        client.send("<presence/>").await;
        client
            .send("<iq type='get' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>")
            .await;
        client.stanza().await;
        client
    }
}

fn row(name: &str, count: usize, elapsed: Duration, histogram: Option<&Histogram<u64>>) {
    let rate = count as f64 / elapsed.as_secs_f64();
    match histogram {
        Some(h) => println!(
            "| {name} | {count} | {rate:.0}/s | p50 {} µs | p99 {} µs | p99.9 {} µs |",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999)
        ),
        None => println!("| {name} | {count} | {rate:.0}/s | | | |"),
    }
}

#[tokio::main]
async fn main() {
    let messages: usize = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let logins = 200;
    let accounts =
        Accounts::open(dir.path(), "localhost", AccountsConfig::default()).expect("accounts");
    for user in ["alice", "bob", "carol", "dave"]
        .into_iter()
        .map(str::to_owned)
        .chain((0..logins).map(|i| format!("u{i}")))
        .chain(
            [1, SM_PAIRS]
                .into_iter()
                .flat_map(|n| (0..n).flat_map(move |p| [format!("s{n}-{p}"), format!("r{n}-{p}")])),
        )
    {
        accounts.add(&user, &format!("pw-{user}")).expect("add");
    }
    let topology = Topology::uniform(&["r1", "r2"], 1);
    let platform = Platform::new(topology.clone(), dir.path(), SystemClock::shared());
    platform.register_service(Arc::new(ChatNode::new(ChatSettings {
        config: WhatsappConfig {
            allow_insecure_plain: true,
            outbound_queue: 4096,
            // One client drives the whole load: lift its per-connection rate limit.
            max_stanzas_per_second: 1_000_000,
            stanza_burst: 1_000_000,
            max_bytes_per_second: u32::MAX,
            archive_messages: std::env::var("BENCH_ARCHIVE").map_or(true, |v| v != "0"),
            ..WhatsappConfig::default()
        },
        accounts_root: dir.path().to_path_buf(),
    })));
    let mut addrs = Vec::new();
    for node in 0..2 {
        let info = platform
            .start(InstanceSpec {
                service: "chat".into(),
                instance_id: None,
                placement: topology.spread(node),
                listen: "127.0.0.1:0".parse().expect("addr"),
                version: "bench".into(),
                port_hint: None,
            })
            .await
            .expect("start");
        addrs.push(info.address);
    }
    let addr = addrs[0];
    println!("| scenario | count | rate | p50 | p99 | p99.9 |\n|---|---|---|---|---|---|");

    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let started = Instant::now();
    let mut held = Vec::with_capacity(logins);
    for i in 0..logins {
        let t = Instant::now();
        held.push(Client::login(addr, &format!("u{i}")).await);
        histogram
            .record(t.elapsed().as_micros().max(1) as u64)
            .expect("record");
    }
    row(
        "login (PLAIN, 4096-iteration PBKDF2)",
        logins,
        started.elapsed(),
        Some(&histogram),
    );
    drop(held);

    for (label, sender, recipient, other) in [
        ("", "alice", "bob", addr),
        (", across nodes", "carol", "dave", addrs[1]),
    ] {
        routed(addr, other, sender, recipient, label, messages).await;
    }

    for pairs in [1, SM_PAIRS] {
        let per_pair = messages / pairs;
        let elapsed = sm_pairs(addr, pairs, per_pair).await;
        row(
            &format!("pipelined one-way, XEP-0198 both ends, durable first, {pairs} pair(s)"),
            per_pair * pairs,
            elapsed,
            None,
        );
    }
}

/// Round trip and pipelined one-way from `sender` on `from` to `recipient` on `to`.
async fn routed(
    from: SocketAddr,
    to: SocketAddr,
    sender: &str,
    recipient: &str,
    label: &str,
    messages: usize,
) {
    let mut alice = Client::login(from, sender).await;
    let mut bob = Client::login(to, recipient).await;
    let body = "hello ".repeat(30);
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let rounds = messages / 4;
    let started = Instant::now();
    for i in 0..rounds {
        let t = Instant::now();
        alice
            .send(&format!(
                "<message to='{recipient}@localhost/r' type='chat' id='q{i}'><body>{body}</body></message>"
            ))
            .await;
        bob.stanza().await;
        bob.send(&format!(
            "<message to='{sender}@localhost/r' type='chat' id='a{i}'><body>ok</body></message>"
        ))
        .await;
        alice.stanza().await;
        histogram
            .record(t.elapsed().as_micros().max(1) as u64)
            .expect("record");
    }
    row(
        &format!("routed round trip (2 hops){label}"),
        rounds,
        started.elapsed(),
        Some(&histogram),
    );

    // At most WINDOW messages in flight: an unpaced flood would (by design) get
    // the reader cut off as slow once its queue is full.
    const WINDOW: usize = 1024;
    let window = Arc::new(tokio::sync::Semaphore::new(WINDOW));
    let started = Instant::now();
    let permits = window.clone();
    let to = recipient.to_owned();
    let sender = tokio::spawn(async move {
        for i in 0..messages {
            permits.acquire().await.expect("open").forget();
            alice
                .send(&format!("<message to='{to}@localhost' type='chat' id='p{i}'><body>{body}</body></message>"))
                .await;
        }
        alice
    });
    for _ in 0..messages {
        bob.stanza().await;
        window.add_permits(1);
    }
    let _alice = sender.await.expect("sender");
    row(
        &format!("pipelined one-way, bare JID{label}"),
        messages,
        started.elapsed(),
        None,
    );
}

const SM_PAIRS: usize = 16;
const SM: &str = "urn:xmpp:sm:3";

/// `pairs` senders each send `per_pair` messages to their own recipient, both with
/// stream management on (the recipient answers every `<r/>`); returns the time
/// until every recipient had all of its messages.
async fn sm_pairs(addr: SocketAddr, pairs: usize, per_pair: usize) -> Duration {
    const WINDOW: usize = 256;
    let mut ends = Vec::new();
    for p in 0..pairs {
        // Accounts of their own per run: nothing left over from another scenario.
        let mut sender = Client::login(addr, &format!("s{pairs}-{p}")).await;
        let mut recipient = Client::login(addr, &format!("r{pairs}-{p}")).await;
        for client in [&mut sender, &mut recipient] {
            client.send(&format!("<enable xmlns='{SM}'/>")).await;
            assert!(client.stanza().await.is("enabled", SM));
        }
        ends.push((sender, recipient));
    }
    let body = "hello ".repeat(30);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (p, (mut sender, mut recipient)) in ends.into_iter().enumerate() {
        let window = Arc::new(tokio::sync::Semaphore::new(WINDOW));
        let permits = window.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_pair {
                permits.acquire().await.expect("open").forget();
                sender
                    .send(&format!("<message to='r{pairs}-{p}@localhost' type='chat' id='d{i}'><body>{body}</body></message>"))
                    .await;
            }
            sender
        }));
        tasks.push(tokio::spawn(async move {
            let mut received = 0u32;
            while (received as usize) < per_pair {
                let element = recipient.stanza().await;
                if element.is("r", SM) {
                    recipient
                        .send(&format!("<a xmlns='{SM}' h='{received}'/>"))
                        .await;
                } else if element.name() == "message" {
                    received += 1;
                    window.add_permits(1);
                }
            }
            recipient
        }));
    }
    for task in tasks {
        task.await.expect("pair");
    }
    started.elapsed()
}
