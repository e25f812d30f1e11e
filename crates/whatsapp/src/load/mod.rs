//! The swarm behind `casebook load whatsapp`: many XMPP sessions from one process,
//! logged in at a set rate, then messaging each other at a constant rate.
//!
//! Phases, each optional but the logins:
//! 1. **offline flush** (`offline_flush > 0`): a few sender sessions queue that many
//!    messages for the offline account `load-0`; it then logs in and the time until
//!    the last one arrives is measured (order per sender checked);
//! 2. **logins**: connection *i* logs in as `load-i` from source address
//!    `127.0.0.(1 + i % sources)`, open loop at `login_rate` through the kit's
//!    [`casebook_kit::loadgen`] (at most `login_concurrency` in flight);
//! 3. **messages** (`rate > 0`) or an idle **hold** (`rate == 0`, for memory
//!    measurements): message *k* is due at `start + k / rate` whatever came back
//!    before (open loop), goes from connection `k % n` to the bare JID of another,
//!    and carries its sequence number and intended send time in its body; the
//!    receiver computes the delivery latency from that stamp, so time the generator
//!    fell behind counts against the server (no coordinated omission);
//! 4. **report**: logins/s, sent / delivered / lost / duplicated, latency percentiles
//!    (HdrHistogram), receipts, errors by kind.
//!
//! Messages use their own schedule rather than the kit's per-request futures: the
//! stamp travels inside the stanza, so the generator needs no task or pending entry
//! per message and keeps its one core for the sockets.
//!
//! Bounded: connections ([`MAX_CONNECTIONS`]; the process also has an open-files
//! limit), connections per source address (the ephemeral port range), messages per
//! run ([`MAX_MESSAGES`], one bit each for duplicate detection), the per-connection
//! outbox ([`crate::client::OUTBOX_CAPACITY`]: a full one counts as `unsent`, never a wait).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use casebook_kit::loadgen::{self, LoadPlan, ShowProgress, Verdict};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;

use crate::client::{ClientConfig, Mechanism, RECEIPTS_NS, ScramCache, SendError, Session};
use crate::xml::{CLIENT_NS, Element};

/// Most connections one run may open.
pub const MAX_CONNECTIONS: usize = 1_000_000;
/// Most connections from one source address: the ephemeral port range 32768–60999.
pub const MAX_CONNECTIONS_PER_SOURCE: usize = 28_000;
/// Most messages one run may schedule.
pub const MAX_MESSAGES: u64 = 100_000_000;
/// Most offline messages the flush phase may queue.
pub const MAX_OFFLINE_FLUSH: usize = 1_000_000;
/// Sender sessions that fill the offline queue.
const OFFLINE_SENDERS: usize = 8;
/// Body prefix of a timed message: `cbl <seq> <intended µs since start>`.
const MARK: &str = "cbl ";
/// Body prefix of an offline-flush message: `cbo <run> <sender> <seq>`.
const OFFLINE_MARK: &str = "cbo ";
/// Histogram shards (receivers record concurrently).
const SHARDS: usize = 16;

/// What to run.
#[derive(Debug, Clone, Serialize)]
pub struct LoadConfig {
    pub target: SocketAddr,
    pub domain: String,
    /// Accounts `load-0 .. load-(users-1)` exist with this password.
    pub users: usize,
    #[serde(skip)]
    pub password: String,
    /// Sessions to hold; connection `i` is `load-i`, so at most `users`.
    pub connections: usize,
    /// Source addresses `127.0.0.1 ..= 127.0.0.<sources>`.
    pub sources: usize,
    pub login_rate: f64,
    pub login_concurrency: usize,
    /// Messages per second over all connections; 0 holds the sessions idle.
    pub rate: f64,
    #[serde(rename = "duration_ms", with = "casebook_kit::api::duration_ms")]
    pub duration: Duration,
    /// Ask for XEP-0184 receipts; receivers answer them and senders count them.
    pub receipts: bool,
    #[serde(skip)]
    pub mechanism: Mechanism,
    pub stream_management: bool,
    /// A message not delivered this long after the last send is lost.
    #[serde(rename = "loss_timeout_ms", with = "casebook_kit::api::duration_ms")]
    pub loss_timeout: Duration,
    /// Log every account in once, untimed, so SCRAM keys are derived before the
    /// timed logins (RFC 5802 lets clients cache them; real clients do).
    pub warm_scram: bool,
    /// Offline messages to queue and time the flush of (0: skip the phase).
    pub offline_flush: usize,
    /// Bound on each login step.
    #[serde(rename = "step_timeout_ms", with = "casebook_kit::api::duration_ms")]
    pub step_timeout: Duration,
}

impl LoadConfig {
    /// Checks every bound; the error says which option is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.users == 0 {
            return Err("--users must be at least 1".into());
        }
        if self.connections > self.users {
            return Err(format!(
                "--connections {} exceeds --users {}: connection i logs in as load-i",
                self.connections, self.users
            ));
        }
        if self.connections > MAX_CONNECTIONS {
            return Err(format!("--connections must be at most {MAX_CONNECTIONS}"));
        }
        if !(1..=254).contains(&self.sources) {
            return Err("--sources must be in 1..=254 (127.0.0.1 ..= 127.0.0.254)".into());
        }
        if self.connections.div_ceil(self.sources) > MAX_CONNECTIONS_PER_SOURCE {
            return Err(format!(
                "{} connections over {} source addresses exceed {MAX_CONNECTIONS_PER_SOURCE} \
                 per address (ephemeral ports 32768-60999): raise --sources",
                self.connections, self.sources
            ));
        }
        if !(self.login_rate.is_finite() && self.login_rate > 0.0) {
            return Err("--login-rate must be positive".into());
        }
        if !(1..=loadgen::MAX_IN_FLIGHT).contains(&self.login_concurrency) {
            return Err("--login-concurrency out of range".into());
        }
        if !(self.rate.is_finite() && self.rate >= 0.0) {
            return Err("--rate must be zero (idle) or positive".into());
        }
        if self.rate > 0.0 && self.connections < 2 {
            return Err("messaging needs at least 2 connections".into());
        }
        if self.duration.is_zero() {
            return Err("--duration must be positive".into());
        }
        if self.rate * self.duration.as_secs_f64() > MAX_MESSAGES as f64 {
            return Err(format!("more than {MAX_MESSAGES} messages in one run"));
        }
        if self.offline_flush > MAX_OFFLINE_FLUSH {
            return Err(format!(
                "--offline-flush must be at most {MAX_OFFLINE_FLUSH}"
            ));
        }
        if self.offline_flush > 0 && self.users < 2 {
            return Err("--offline-flush needs at least 2 users".into());
        }
        Ok(())
    }

    fn client(&self, user: usize, scram_cache: &ScramCache) -> ClientConfig {
        let mut client = ClientConfig::new(
            self.target,
            &self.domain,
            &format!("load-{user}"),
            &self.password,
        );
        client.source = self
            .target
            .ip()
            .is_loopback()
            .then(|| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (user % self.sources) as u8)));
        client.resource = Some("load".into());
        client.mechanism = self.mechanism;
        client.stream_management = self.stream_management;
        client.timeout = self.step_timeout;
        client.scram_cache = Some(scram_cache.clone());
        client
    }
}

/// The phase a run is in, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Phase {
    Starting,
    OfflineFlush,
    WarmScram,
    Logins,
    Messages,
    Hold,
    Draining,
    Done,
}

/// Live counters, read by a progress bar from another task.
#[derive(Debug)]
pub struct LoadProgress {
    phase: Mutex<Phase>,
    logins: Mutex<Arc<loadgen::Progress>>,
    /// Messages due so far and the run's total.
    pub scheduled: AtomicU64,
    pub total_messages: AtomicU64,
    pub delivered: AtomicU64,
    pub online: AtomicUsize,
}

impl Default for LoadProgress {
    fn default() -> Self {
        Self {
            phase: Mutex::new(Phase::Starting),
            logins: Mutex::new(Arc::default()),
            scheduled: AtomicU64::new(0),
            total_messages: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            online: AtomicUsize::new(0),
        }
    }
}

impl LoadProgress {
    pub fn phase(&self) -> Phase {
        *self.phase.lock()
    }
    /// (done, total) of the current login pass.
    pub fn logins(&self) -> (u64, u64) {
        let p = self.logins.lock().clone();
        (p.done(), p.total())
    }
    fn set_phase(&self, phase: Phase) {
        *self.phase.lock() = phase;
    }
}

impl Phase {
    /// The phase as a progress display names it.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::OfflineFlush => "offline-flush",
            Phase::WarmScram => "warm-scram",
            Phase::Logins => "logins",
            Phase::Messages => "messages",
            Phase::Hold => "hold",
            Phase::Draining => "draining",
            Phase::Done => "done",
        }
    }
}

/// The swarm's progress as every case's load draws it: logins (or warming the
/// SCRAM cache) over the accounts, then messages due over the run's total.
impl ShowProgress for LoadProgress {
    fn phase(&self) -> String {
        LoadProgress::phase(self).name().to_owned()
    }

    fn position(&self) -> (u64, u64) {
        match LoadProgress::phase(self) {
            Phase::WarmScram | Phase::Logins => self.logins(),
            Phase::Messages | Phase::Draining => (
                self.scheduled.load(Ordering::Relaxed),
                self.total_messages.load(Ordering::Relaxed),
            ),
            _ => (0, 0),
        }
    }

    fn message(&self) -> String {
        match LoadProgress::phase(self) {
            Phase::Messages | Phase::Draining => format!(
                "delivered {} online {}",
                self.delivered.load(Ordering::Relaxed),
                self.online.load(Ordering::Relaxed)
            ),
            _ => format!("online {}", self.online.load(Ordering::Relaxed)),
        }
    }
}

/// Login phase results.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoginReport {
    pub attempted: u64,
    pub ok: u64,
    pub failed: u64,
    /// Due while `login_concurrency` logins were outstanding: never attempted.
    pub dropped: u64,
    pub elapsed_s: f64,
    /// Successful logins per second of the phase.
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Sessions that enabled XEP-0198.
    pub stream_management: usize,
}

/// Messaging phase results.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MessageReport {
    pub offered_rate: f64,
    pub duration_s: f64,
    /// Handed to a connection's socket writer.
    pub sent: u64,
    /// Not sent: the connection's outbox was full or closed.
    pub unsent: u64,
    /// Distinct messages that arrived.
    pub delivered: u64,
    /// Sent, never arrived within the loss timeout.
    pub lost: u64,
    pub duplicates: u64,
    /// Delivered per second of the sending phase.
    pub delivered_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// Receipts requested (one per sent message with `--receipts`) and received.
    pub receipts_requested: u64,
    pub receipts_received: u64,
}

/// Offline flush phase results.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FlushReport {
    pub queued: u64,
    /// Time for the senders to send everything and see it acknowledged (pings).
    pub store_ms: f64,
    pub delivered: u64,
    /// From the recipient's login start to the last queued message.
    pub flush_ms: f64,
    /// From the end of its login (presence sent) to the last queued message.
    pub flush_after_login_ms: f64,
    /// Messages that came out of order for their sender.
    pub out_of_order: u64,
    /// Messages carrying a XEP-0203 delay stamp.
    pub delay_stamped: u64,
}

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub config: LoadConfig,
    pub offline_flush: Option<FlushReport>,
    pub logins: LoginReport,
    pub messages: Option<MessageReport>,
    /// Errors by kind (`auth:not-authorized`, `connect:…`, `outbox-full`, …).
    pub errors: BTreeMap<String, u64>,
}

impl LoadReport {
    /// The report as a text table.
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let c = &self.config;
        let _ = writeln!(
            out,
            "target {}  domain {}  connections {}  sources {}  rate {}/s  duration {:?}",
            c.target, c.domain, c.connections, c.sources, c.rate, c.duration
        );
        if let Some(f) = &self.offline_flush {
            let _ = writeln!(
                out,
                "offline flush   queued {}  stored in {:.1} ms  delivered {}  flush {:.1} ms ({:.1} ms after login)  out of order {}  delay-stamped {}",
                f.queued,
                f.store_ms,
                f.delivered,
                f.flush_ms,
                f.flush_after_login_ms,
                f.out_of_order,
                f.delay_stamped
            );
        }
        let l = &self.logins;
        let _ = writeln!(
            out,
            "logins          ok {}  failed {}  dropped {}  in {:.2} s = {:.0}/s  p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  xep-0198 {}",
            l.ok,
            l.failed,
            l.dropped,
            l.elapsed_s,
            l.per_sec,
            l.p50_ms,
            l.p99_ms,
            l.max_ms,
            l.stream_management
        );
        if let Some(m) = &self.messages {
            let _ = writeln!(
                out,
                "messages        sent {}  delivered {}  lost {}  unsent {}  duplicates {}  = {:.0} delivered/s (offered {}/s)",
                m.sent,
                m.delivered,
                m.lost,
                m.unsent,
                m.duplicates,
                m.delivered_per_sec,
                m.offered_rate
            );
            let _ = writeln!(
                out,
                "latency (ms)    p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
                m.p50_ms, m.p99_ms, m.p999_ms, m.max_ms
            );
            if m.receipts_requested > 0 {
                let _ = writeln!(
                    out,
                    "receipts        requested {}  received {}",
                    m.receipts_requested, m.receipts_received
                );
            }
        }
        if self.errors.is_empty() {
            let _ = writeln!(out, "errors          none");
        } else {
            for (kind, n) in &self.errors {
                let _ = writeln!(out, "error           {kind}: {n}");
            }
        }
        out
    }
}

/// Errors by kind, shared by every task of a run.
#[derive(Debug, Clone, Default)]
struct Errors(Arc<Mutex<BTreeMap<String, u64>>>);

impl Errors {
    fn count(&self, kind: impl Into<String>) {
        *self.0.lock().entry(kind.into()).or_default() += 1;
    }
}

/// Runs the whole swarm.
pub async fn run(config: LoadConfig, progress: Arc<LoadProgress>) -> Result<LoadReport, String> {
    config.validate()?;
    let errors = Errors::default();
    let cache = ScramCache::default();
    let offline_flush = if config.offline_flush > 0 {
        progress.set_phase(Phase::OfflineFlush);
        Some(offline_flush(&config, &cache, &errors).await)
    } else {
        None
    };
    if config.warm_scram {
        progress.set_phase(Phase::WarmScram);
        warm_scram(&config, &cache).await;
    }
    progress.set_phase(Phase::Logins);
    let (sessions, logins) = logins(&config, &cache, &errors, &progress).await?;
    let sessions: Vec<Session> = sessions.into_iter().flatten().collect();
    progress.online.store(sessions.len(), Ordering::Relaxed);

    let messages = if config.rate > 0.0 && sessions.len() < 2 {
        // The report still says why (the login errors): no messages to send.
        errors.count("too-few-sessions-to-message");
        None
    } else if config.rate > 0.0 {
        progress.set_phase(Phase::Messages);
        Some(messages(&config, sessions, &errors, &progress).await)
    } else {
        progress.set_phase(Phase::Hold);
        tokio::time::sleep(config.duration).await;
        for session in sessions {
            let _ = session.close(config.step_timeout).await;
        }
        None
    };
    progress.set_phase(Phase::Done);
    let errors = errors.0.lock().clone();
    Ok(LoadReport {
        config,
        offline_flush,
        logins,
        messages,
        errors,
    })
}

/// Logs every account in once and out again, closed loop (none dropped, at most
/// `login_concurrency` at a time), so each account's SCRAM keys are in `cache`.
/// Failures are left to the timed pass to count.
async fn warm_scram(config: &LoadConfig, cache: &ScramCache) {
    use futures::StreamExt as _;
    futures::stream::iter(0..config.connections)
        .for_each_concurrent(config.login_concurrency, |i| {
            let client = config.client(i, cache);
            async move {
                if let Ok(session) = Session::login(&client).await {
                    let _ = session.close(client.timeout).await;
                }
            }
        })
        .await;
}

/// One pass of open-loop logins; slot `i` holds `load-i`'s session if it logged in.
async fn logins(
    config: &LoadConfig,
    cache: &ScramCache,
    errors: &Errors,
    progress: &LoadProgress,
) -> Result<(Vec<Option<Session>>, LoginReport), String> {
    let n = config.connections;
    if n == 0 {
        return Ok((Vec::new(), LoginReport::default()));
    }
    let slots: Arc<Mutex<Vec<Option<Session>>>> =
        Arc::new(Mutex::new((0..n).map(|_| None).collect()));
    let sm = Arc::new(AtomicUsize::new(0));
    let mut plan = LoadPlan::new(
        config.login_rate,
        Duration::from_secs_f64(n as f64 / config.login_rate),
    );
    plan.max_in_flight = config.login_concurrency;
    let loadgen_progress = Arc::new(loadgen::Progress::default());
    *progress.logins.lock() = loadgen_progress.clone();
    let report = loadgen::run_with_progress(&plan, &loadgen_progress, |i| {
        let i = i as usize;
        let client = (i < n).then(|| config.client(i, cache));
        let (slots, errors, sm) = (slots.clone(), errors.clone(), sm.clone());
        let class = if i < n { "login" } else { "beyond" };
        (class, async move {
            // Rounding of rate x duration may schedule one more than asked for.
            let Some(client) = client else {
                return Verdict::Ok;
            };
            match Session::login(&client).await {
                Ok(session) => {
                    if session.stream_management() {
                        sm.fetch_add(1, Ordering::Relaxed);
                    }
                    slots.lock()[i] = Some(session);
                    Verdict::Ok
                }
                Err(error) => {
                    errors.count(error.kind());
                    Verdict::Error
                }
            }
        })
    })
    .await
    .map_err(|e| e.to_string())?;
    let class = report
        .class("login")
        .cloned()
        .unwrap_or_else(|| loadgen::ClassReport::empty("login"));
    if class.dropped > 0 {
        errors
            .0
            .lock()
            .insert("login-dropped".into(), class.dropped);
    }
    let elapsed_s = report.elapsed.as_secs_f64();
    let sessions = std::mem::take(&mut *slots.lock());
    Ok((
        sessions,
        LoginReport {
            attempted: class.sent,
            ok: class.ok,
            failed: class.error,
            dropped: class.dropped,
            elapsed_s,
            per_sec: if elapsed_s > 0.0 {
                class.ok as f64 / elapsed_s
            } else {
                0.0
            },
            p50_ms: class.p50_ms,
            p99_ms: class.p99_ms,
            max_ms: class.max_ms,
            stream_management: sm.load(Ordering::Relaxed),
        },
    ))
}

/// Shared by the receivers of the messaging phase.
#[derive(Debug)]
struct Delivery {
    start: Instant,
    seen: Vec<AtomicU64>,
    histograms: Vec<Mutex<Histogram<u64>>>,
    delivered: AtomicU64,
    duplicates: AtomicU64,
    receipts: AtomicU64,
    answer_receipts: bool,
    stopping: AtomicBool,
}

impl Delivery {
    fn new(total: u64, answer_receipts: bool) -> Self {
        Self {
            start: Instant::now(),
            seen: (0..total.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            histograms: (0..SHARDS)
                .map(|_| {
                    // 1 µs .. 1 h at 3 significant figures.
                    Mutex::new(
                        Histogram::new_with_bounds(1, 3_600_000_000, 3)
                            .expect("static histogram bounds are valid"),
                    )
                })
                .collect(),
            delivered: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            receipts: AtomicU64::new(0),
            answer_receipts,
            stopping: AtomicBool::new(false),
        }
    }

    /// Records one timed message; whether it was new.
    fn record(&self, seq: u64, intended_us: u64, shard: usize) -> bool {
        let Some(word) = self.seen.get((seq / 64) as usize) else {
            return false;
        };
        let bit = 1u64 << (seq % 64);
        if word.fetch_or(bit, Ordering::AcqRel) & bit != 0 {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let now_us = self.start.elapsed().as_micros() as u64;
        let latency = now_us.saturating_sub(intended_us).max(1);
        let _ = self.histograms[shard % SHARDS].lock().record(latency);
        self.delivered.fetch_add(1, Ordering::Relaxed);
        true
    }
}

/// The constant-rate messaging phase over established sessions.
async fn messages(
    config: &LoadConfig,
    sessions: Vec<Session>,
    errors: &Errors,
    progress: &Arc<LoadProgress>,
) -> MessageReport {
    let total = ((config.rate * config.duration.as_secs_f64()).round() as u64).max(1);
    progress.total_messages.store(total, Ordering::Relaxed);
    let jids: Vec<String> = sessions
        .iter()
        .map(|s| s.jid().split('/').next().unwrap_or_default().to_owned())
        .collect();
    let delivery = Arc::new(Delivery::new(total, config.receipts));
    let mut outboxes = Vec::with_capacity(sessions.len());
    let mut receivers = Vec::with_capacity(sessions.len());
    for (index, session) in sessions.into_iter().enumerate() {
        let (inbox, outbox) = session.into_split();
        receivers.push(tokio::spawn(receive(
            inbox,
            outbox.clone(),
            delivery.clone(),
            errors.clone(),
            progress.clone(),
            index,
        )));
        outboxes.push(outbox);
    }
    let n = outboxes.len();
    let receipt = if config.receipts {
        format!("<request xmlns='{RECEIPTS_NS}'/>")
    } else {
        String::new()
    };
    let interval = 1.0 / config.rate;
    let start = delivery.start;
    let (mut sent, mut unsent) = (0u64, 0u64);
    let mut next = 0u64;
    while next < total {
        // Everything due by now goes out; nothing waits for an answer.
        let due = ((start.elapsed().as_secs_f64() / interval).floor() as u64 + 1).min(total);
        while next < due {
            let k = next;
            next += 1;
            let from = (k as usize) % n;
            let hop = 1 + (k as usize / n) % (n - 1);
            let to = (from + hop) % n;
            let intended_us = (k as f64 * interval * 1e6) as u64;
            let xml = format!(
                "<message to='{}' type='chat' id='m{k}'><body>{MARK}{k} {intended_us}</body>{receipt}</message>",
                jids[to]
            );
            match outboxes[from].try_send(xml) {
                Ok(()) => sent += 1,
                Err(SendError::Full) => {
                    unsent += 1;
                    errors.count("outbox-full");
                }
                Err(SendError::Closed) => {
                    unsent += 1;
                    errors.count("outbox-closed");
                }
            }
        }
        progress.scheduled.store(next, Ordering::Relaxed);
        if next < total {
            let at = start + Duration::from_secs_f64(next as f64 * interval);
            tokio::time::sleep_until(at).await;
        }
    }
    let sending_s = start.elapsed().as_secs_f64();

    // Drain: wait until everything sent arrived, or nothing arrived for a while.
    progress.set_phase(Phase::Draining);
    let mut last = delivery.delivered.load(Ordering::Relaxed);
    let mut quiet_since = Instant::now();
    loop {
        let now = delivery.delivered.load(Ordering::Relaxed);
        let receipts_done = !config.receipts || delivery.receipts.load(Ordering::Relaxed) >= now;
        if now >= sent && receipts_done {
            break;
        }
        if now != last {
            last = now;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= config.loss_timeout {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    delivery.stopping.store(true, Ordering::Release);
    for outbox in &outboxes {
        let _ = outbox.try_send("</stream:stream>".into());
    }
    drop(outboxes);
    for receiver in receivers {
        let _ = tokio::time::timeout(config.step_timeout, receiver).await;
    }

    let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
        .expect("static histogram bounds are valid");
    for shard in &delivery.histograms {
        let _ = histogram.add(&*shard.lock());
    }
    let ms = |q: f64| {
        if histogram.is_empty() {
            0.0
        } else {
            histogram.value_at_quantile(q) as f64 / 1000.0
        }
    };
    let delivered = delivery.delivered.load(Ordering::Relaxed);
    MessageReport {
        offered_rate: config.rate,
        duration_s: sending_s,
        sent,
        unsent,
        delivered,
        lost: sent.saturating_sub(delivered),
        duplicates: delivery.duplicates.load(Ordering::Relaxed),
        delivered_per_sec: delivered as f64 / sending_s.max(config.duration.as_secs_f64()),
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: if histogram.is_empty() {
            0.0
        } else {
            histogram.max() as f64 / 1000.0
        },
        receipts_requested: if config.receipts { sent } else { 0 },
        receipts_received: delivery.receipts.load(Ordering::Relaxed),
    }
}

/// One connection's reading task during the messaging phase.
async fn receive(
    mut inbox: crate::client::Inbox,
    outbox: crate::client::Outbox,
    delivery: Arc<Delivery>,
    errors: Errors,
    progress: Arc<LoadProgress>,
    index: usize,
) {
    loop {
        let stanza = match inbox.next_stanza().await {
            Ok(Some(stanza)) => stanza,
            Ok(None) => {
                if !delivery.stopping.load(Ordering::Acquire) {
                    errors.count("closed-by-server");
                }
                return;
            }
            Err(error) => {
                if !delivery.stopping.load(Ordering::Acquire) {
                    errors.count(error.kind());
                }
                return;
            }
        };
        if stanza.name() != "message" {
            continue;
        }
        if stanza.attr("type") == Some("error") {
            errors.count(format!("message-error:{}", stanza_error(&stanza)));
            continue;
        }
        if stanza.child("received", RECEIPTS_NS).is_some() {
            delivery.receipts.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let Some(body) = stanza.child("body", CLIENT_NS).map(Element::text) else {
            continue;
        };
        let Some((seq, intended_us)) = parse_mark(&body) else {
            continue;
        };
        if delivery.record(seq, intended_us, index) {
            progress.delivered.fetch_add(1, Ordering::Relaxed);
        }
        if delivery.answer_receipts
            && stanza.child("request", RECEIPTS_NS).is_some()
            && let (Some(from), Some(id)) = (stanza.attr("from"), stanza.attr("id"))
        {
            let answer = format!(
                "<message to='{}'><received xmlns='{RECEIPTS_NS}' id='{}'/></message>",
                crate::xml::escape(from),
                crate::xml::escape(id)
            );
            if outbox.try_send(answer).is_err() {
                errors.count("receipt-unsent");
            }
        }
    }
}

fn parse_mark(body: &str) -> Option<(u64, u64)> {
    let mut parts = body.strip_prefix(MARK)?.split(' ');
    let seq = parts.next()?.parse().ok()?;
    let intended = parts.next()?.parse().ok()?;
    Some((seq, intended))
}

fn stanza_error(stanza: &Element) -> String {
    stanza
        .child("error", CLIENT_NS)
        .and_then(|e| e.children().find(|c| c.name() != "text"))
        .map(|c| c.name().to_owned())
        .unwrap_or_else(|| "undefined-condition".into())
}

/// Queues `offline_flush` messages for the offline `load-0`, then logs it in and
/// times the flush. Failures are counted in `errors` and leave a partial report.
async fn offline_flush(config: &LoadConfig, cache: &ScramCache, errors: &Errors) -> FlushReport {
    let queued = config.offline_flush;
    let run: u32 = rand::random();
    let senders_n = OFFLINE_SENDERS.min(config.users - 1);
    let mut report = FlushReport {
        queued: queued as u64,
        ..FlushReport::default()
    };
    let recipient = format!("load-0@{}", config.domain);
    let mut senders = Vec::with_capacity(senders_n);
    for s in 1..=senders_n {
        match Session::login(&config.client(s, cache)).await {
            Ok(session) => senders.push(session),
            Err(error) => errors.count(format!("offline-sender:{}", error.kind())),
        }
    }
    if senders.is_empty() {
        return report;
    }
    let started = Instant::now();
    let per_sender = queued.div_ceil(senders.len());
    let mut tasks = Vec::new();
    let mut remaining = queued;
    for (s, mut session) in senders.into_iter().enumerate() {
        let count = per_sender.min(remaining);
        remaining -= count;
        let recipient = recipient.clone();
        let timeout = config.loss_timeout.max(Duration::from_secs(60));
        tasks.push(tokio::spawn(async move {
            let mut batch = String::new();
            for seq in 0..count {
                batch.push_str(&format!(
                    "<message to='{recipient}' type='chat' id='o{s}-{seq}'><body>{OFFLINE_MARK}{run} {s} {seq}</body></message>"
                ));
                if batch.len() > 32 * 1024 {
                    session.send_raw(&batch).await?;
                    batch.clear();
                }
            }
            session.send_raw(&batch).await?;
            // The answer comes after every message before it was handled (stored).
            let before = session.ping("stored", timeout).await?;
            let _ = session.close(Duration::from_secs(5)).await;
            // Presence echoes may come back too; only bounced messages count.
            let bounced = before
                .iter()
                .filter(|s| s.name() == "message" && s.attr("type") == Some("error"))
                .count();
            Ok::<usize, crate::client::ClientError>(bounced)
        }));
    }
    for task in tasks {
        match task.await {
            Ok(Ok(0)) => {}
            Ok(Ok(bounces)) => {
                *errors.0.lock().entry("offline-bounced".into()).or_default() += bounces as u64;
            }
            Ok(Err(error)) => errors.count(format!("offline-sender:{}", error.kind())),
            Err(_) => errors.count("offline-sender:panic"),
        }
    }
    report.store_ms = started.elapsed().as_secs_f64() * 1e3;

    let login_start = Instant::now();
    let mut session = match Session::login(&config.client(0, cache)).await {
        Ok(session) => session,
        Err(error) => {
            errors.count(format!("offline-recipient:{}", error.kind()));
            return report;
        }
    };
    let logged_in = Instant::now();
    let mut next_seq = [0u64; OFFLINE_SENDERS];
    let bound = config.loss_timeout.max(Duration::from_secs(60));
    let outcome = tokio::time::timeout(bound, async {
        while report.delivered < queued as u64 {
            let Some(stanza) = session.next_stanza().await? else {
                return Err(crate::client::ClientError::Closed);
            };
            let Some(body) = stanza.child("body", CLIENT_NS).map(Element::text) else {
                continue;
            };
            let mut parts = match body.strip_prefix(OFFLINE_MARK) {
                Some(rest) => rest.split(' '),
                None => continue,
            };
            let (Some(r), Some(s), Some(seq)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            if r.parse::<u32>().ok() != Some(run) {
                continue; // left over from an earlier run
            }
            let (Ok(s), Ok(seq)) = (s.parse::<usize>(), seq.parse::<u64>()) else {
                continue;
            };
            if let Some(expected) = next_seq.get_mut(s) {
                if seq != *expected {
                    report.out_of_order += 1;
                }
                *expected = seq + 1;
            }
            if stanza.child("delay", crate::xmpp::DELAY_NS).is_some() {
                report.delay_stamped += 1;
            }
            report.delivered += 1;
        }
        Ok(())
    })
    .await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(error)) => errors.count(format!("offline-recipient:{}", error.kind())),
        Err(_) => errors.count("offline-flush-timeout"),
    }
    report.flush_ms = login_start.elapsed().as_secs_f64() * 1e3;
    report.flush_after_login_ms = logged_in.elapsed().as_secs_f64() * 1e3;
    let _ = session.close(Duration::from_secs(5)).await;
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_shows_the_phase_its_position_and_counters() {
        let progress = LoadProgress::default();
        let shown: &dyn ShowProgress = &progress;
        assert_eq!(
            (shown.phase(), shown.position()),
            ("starting".into(), (0, 0))
        );
        progress.set_phase(Phase::Messages);
        progress.total_messages.store(50, Ordering::Relaxed);
        progress.scheduled.store(20, Ordering::Relaxed);
        progress.delivered.store(18, Ordering::Relaxed);
        progress.online.store(4, Ordering::Relaxed);
        assert_eq!(shown.phase(), "messages");
        assert_eq!(shown.position(), (20, 50));
        assert_eq!(shown.message(), "delivered 18 online 4");
        progress.set_phase(Phase::Hold);
        assert_eq!(
            (shown.phase(), shown.message()),
            ("hold".into(), "online 4".into())
        );
    }

    fn config() -> LoadConfig {
        LoadConfig {
            target: "127.0.0.1:5222".parse().unwrap(),
            domain: "localhost".into(),
            users: 10,
            password: "pw".into(),
            connections: 10,
            sources: 1,
            login_rate: 100.0,
            login_concurrency: 10,
            rate: 10.0,
            duration: Duration::from_secs(1),
            receipts: false,
            mechanism: Mechanism::Auto,
            stream_management: true,
            loss_timeout: Duration::from_secs(1),
            warm_scram: false,
            offline_flush: 0,
            step_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn bad_options_are_refused_with_the_option_named() {
        config().validate().unwrap();
        type Change = fn(&mut LoadConfig);
        let cases: [(Change, &str); 6] = [
            (|c| c.connections = 11, "--connections"),
            (|c| c.sources = 0, "--sources"),
            (|c| c.login_rate = 0.0, "--login-rate"),
            (|c| c.rate = -1.0, "--rate"),
            (|c| c.duration = Duration::ZERO, "--duration"),
            (
                |c| {
                    c.users = 60_000;
                    c.connections = 60_000;
                },
                "--sources",
            ),
        ];
        for (change, option) in cases {
            let mut c = config();
            change(&mut c);
            let error = c.validate().unwrap_err();
            assert!(error.contains(option), "{error}");
        }
    }

    #[test]
    fn the_body_mark_round_trips_and_duplicates_are_counted_once() {
        assert_eq!(parse_mark("cbl 42 1234"), Some((42, 1234)));
        assert_eq!(parse_mark("hello"), None);
        assert_eq!(parse_mark("cbl x 1"), None);
        let delivery = Delivery::new(100, false);
        assert!(delivery.record(7, 0, 0));
        assert!(!delivery.record(7, 0, 1));
        assert!(!delivery.record(1000, 0, 1), "out of range is ignored");
        assert_eq!(delivery.delivered.load(Ordering::Relaxed), 1);
        assert_eq!(delivery.duplicates.load(Ordering::Relaxed), 1);
    }
}
