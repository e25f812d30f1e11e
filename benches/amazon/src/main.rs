//! One generator for reservations against casebook and its peers.
//!
//! Every target gets the same workload: `--clients` closed-loop clients, each with
//! its own connection, reserving 1–3 units of a SKU drawn from a Zipf law over
//! `--skus` SKUs (or one SKU with `--hot`), each request under a fresh
//! idempotency key — except `--duplicate-percent` of them, which resend one of the
//! client's recent requests with its key and must get the first answer back.
//! After the run the stock is read back and checked: no SKU below zero, and for
//! every SKU `available + reserved = stock` with `reserved` exactly the units of
//! the reservations the clients were given (nothing oversold, nothing lost,
//! nothing done twice). One JSON line per run goes to stdout.
//!
//! Targets, each durable before it answers:
//! - `ours`: `POST /v1/reservations` on casebook's amazon API (WAL, group commit,
//!   `fdatasync` before the reply).
//! - `postgres`: one statement per reservation — the idempotency insert, the
//!   conditional `UPDATE … SET available = available - $qty WHERE sku = $sku AND
//!   available >= $qty` and the reservation row, in one transaction
//!   (`synchronous_commit = on`).
//! - `redis`: one Lua script per reservation (key check, stock check, decrement,
//!   reservation, key), on a server with `appendfsync always`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    Ours,
    Postgres,
    Redis,
}

#[derive(Debug, Parser)]
#[command(about = "Reservations/s with an oversell check: casebook vs PostgreSQL vs Redis")]
struct Args {
    #[arg(long, value_enum)]
    target: Target,
    /// `http://127.0.0.1:PORT` (ours), `host=… port=… user=… dbname=…` (postgres),
    /// `redis://127.0.0.1:PORT` (redis).
    #[arg(long)]
    url: String,
    #[arg(long, default_value_t = 10_000)]
    skus: usize,
    /// All requests on one SKU.
    #[arg(long)]
    hot: bool,
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Measured seconds (after a 2 s warm-up).
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    #[arg(long, default_value_t = 5)]
    duplicate_percent: u32,
    #[arg(long, default_value_t = 1.0)]
    zipf: f64,
    /// Units each SKU starts with.
    #[arg(long, default_value_t = 10_000_000)]
    stock: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// A free-form description of the target's configuration, echoed in the result.
    #[arg(long, default_value = "")]
    config: String,
}

const WARMUP: Duration = Duration::from_secs(2);
/// Recent requests a client may resend.
const RECENT: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Reserved(String),
    Insufficient,
}

fn sku_name(i: usize) -> String {
    format!("sku-{i}")
}

/// One client's connection to a target.
enum Conn {
    Ours(SendRequest<Full<Bytes>>),
    Postgres(
        tokio_postgres::Client,
        tokio_postgres::Statement,
        tokio_postgres::Statement,
    ),
    Redis(redis::aio::MultiplexedConnection, redis::Script),
}

const PG_RESERVE: &str = "
WITH claim AS (
    INSERT INTO bench_keys (key) VALUES ($3) ON CONFLICT DO NOTHING RETURNING key
), taken AS (
    UPDATE bench_inventory SET available = available - $2
    WHERE sku = $1 AND available >= $2 AND EXISTS (SELECT 1 FROM claim)
    RETURNING sku
), made AS (
    INSERT INTO bench_reservations (sku, qty, key) SELECT $1, $2, $3 FROM taken RETURNING id
)
SELECT (SELECT count(*) FROM claim) AS claimed, (SELECT id FROM made) AS id";

const PG_REPLAY: &str = "SELECT id FROM bench_reservations WHERE key = $1";

const REDIS_RESERVE: &str = r"
local prev = redis.call('GET', KEYS[3])
if prev then return prev end
local available = tonumber(redis.call('GET', KEYS[1]))
if available == nil then return redis.error_reply('unknown sku') end
local qty = tonumber(ARGV[1])
if available < qty then
    redis.call('SET', KEYS[3], 'insufficient')
    return 'insufficient'
end
redis.call('DECRBY', KEYS[1], qty)
redis.call('INCRBY', KEYS[2], qty)
local id = redis.call('INCR', 'next_reservation')
redis.call('HSET', 'reservation:' .. id, 'sku', ARGV[2], 'qty', qty)
redis.call('SET', KEYS[3], id)
return tostring(id)";

async fn connect(target: Target, url: &str) -> anyhow::Result<Conn> {
    Ok(match target {
        Target::Ours => {
            let authority = url
                .strip_prefix("http://")
                .ok_or_else(|| anyhow!("ours: the url is http://HOST:PORT"))?;
            let stream = tokio::net::TcpStream::connect(authority).await?;
            stream.set_nodelay(true)?;
            let (send, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            Conn::Ours(send)
        }
        Target::Postgres => {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            let reserve = client.prepare(PG_RESERVE).await?;
            let replay = client.prepare(PG_REPLAY).await?;
            Conn::Postgres(client, reserve, replay)
        }
        Target::Redis => {
            let client = redis::Client::open(url)?;
            let connection = client.get_multiplexed_async_connection().await?;
            Conn::Redis(connection, redis::Script::new(REDIS_RESERVE))
        }
    })
}

impl Conn {
    async fn reserve(&mut self, key: &str, sku: &str, qty: u32) -> anyhow::Result<Outcome> {
        match self {
            Conn::Ours(send) => {
                let body = format!(r#"{{"sku":"{sku}","qty":{qty}}}"#);
                let request = hyper::Request::post("/v1/reservations")
                    .header("host", "bench")
                    .header("content-type", "application/json")
                    .header("idempotency-key", key)
                    .body(Full::new(Bytes::from(body)))?;
                send.ready().await?;
                let response = send.send_request(request).await?;
                let status = response.status().as_u16();
                let bytes = response.into_body().collect().await?.to_bytes();
                let json: serde_json::Value = serde_json::from_slice(&bytes)?;
                match (status, json["code"].as_str()) {
                    (201, _) => Ok(Outcome::Reserved(
                        json["id"].as_str().context("an id")?.to_owned(),
                    )),
                    (409, Some("insufficient_stock")) => Ok(Outcome::Insufficient),
                    _ => bail!("ours answered {status}: {json}"),
                }
            }
            Conn::Postgres(client, reserve, replay) => {
                let row = client
                    .query_one(&*reserve, &[&sku, &i64::from(qty), &key])
                    .await?;
                let claimed: i64 = row.get(0);
                let id: Option<i64> = row.get(1);
                if claimed == 1 {
                    return Ok(id.map_or(Outcome::Insufficient, |id| {
                        Outcome::Reserved(id.to_string())
                    }));
                }
                // The key was decided before: its reservation, or none (short).
                let rows = client.query(&*replay, &[&key]).await?;
                Ok(match rows.first() {
                    Some(row) => Outcome::Reserved(row.get::<_, i64>(0).to_string()),
                    None => Outcome::Insufficient,
                })
            }
            Conn::Redis(connection, script) => {
                let answer: String = script
                    .key(format!("stock:{sku}"))
                    .key(format!("reserved:{sku}"))
                    .key(format!("key:{key}"))
                    .arg(qty)
                    .arg(sku)
                    .invoke_async(connection)
                    .await?;
                Ok(if answer == "insufficient" {
                    Outcome::Insufficient
                } else {
                    Outcome::Reserved(answer)
                })
            }
        }
    }
}

/// Creates every SKU with `stock` units (a fresh store for the run).
async fn setup(
    target: Target,
    url: &str,
    skus: usize,
    stock: u64,
    clients: usize,
) -> anyhow::Result<()> {
    match target {
        Target::Ours => {
            let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let mut tasks = Vec::new();
            for _ in 0..clients.min(skus) {
                let (url, next) = (url.to_owned(), next.clone());
                tasks.push(tokio::spawn(async move {
                    let Conn::Ours(mut send) = connect(Target::Ours, &url).await? else {
                        unreachable!()
                    };
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= skus {
                            return anyhow::Ok(());
                        }
                        let request = hyper::Request::put(format!("/v1/inventory/{}", sku_name(i)))
                            .header("host", "bench")
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(format!(
                                r#"{{"available":{stock}}}"#
                            ))))?;
                        send.ready().await?;
                        let response = send.send_request(request).await?;
                        let status = response.status();
                        response.into_body().collect().await?;
                        if status != 200 {
                            bail!("setting stock answered {status}");
                        }
                    }
                }));
            }
            for task in tasks {
                task.await??;
            }
        }
        Target::Postgres => {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            client
                .batch_execute(
                    "DROP TABLE IF EXISTS bench_reservations, bench_keys, bench_inventory;
                     CREATE TABLE bench_inventory (
                         sku text PRIMARY KEY,
                         available bigint NOT NULL CHECK (available >= 0));
                     CREATE TABLE bench_keys (key text PRIMARY KEY);
                     CREATE TABLE bench_reservations (
                         id bigserial PRIMARY KEY,
                         sku text NOT NULL,
                         qty int NOT NULL,
                         key text NOT NULL UNIQUE);",
                )
                .await?;
            client
                .execute(
                    "INSERT INTO bench_inventory (sku, available)
                     SELECT 'sku-' || g, $1 FROM generate_series(0, $2 - 1) g",
                    &[&(stock as i64), &(skus as i32)],
                )
                .await?;
            client
                .batch_execute("VACUUM ANALYZE bench_inventory")
                .await?;
        }
        Target::Redis => {
            let client = redis::Client::open(url)?;
            let mut connection = client.get_multiplexed_async_connection().await?;
            redis::cmd("FLUSHALL")
                .query_async::<()>(&mut connection)
                .await?;
            for chunk in (0..skus).collect::<Vec<_>>().chunks(1000) {
                let mut pipe = redis::pipe();
                for &i in chunk {
                    pipe.set(format!("stock:{}", sku_name(i)), stock).ignore();
                    pipe.set(format!("reserved:{}", sku_name(i)), 0).ignore();
                }
                pipe.query_async::<()>(&mut connection).await?;
            }
        }
    }
    Ok(())
}

/// Each SKU's (available, reserved) as the target holds them after the run.
async fn levels(
    target: Target,
    url: &str,
    skus: usize,
) -> anyhow::Result<HashMap<String, (i64, i64)>> {
    let mut out = HashMap::new();
    match target {
        Target::Ours => {
            let Conn::Ours(mut send) = connect(Target::Ours, url).await? else {
                unreachable!()
            };
            for i in 0..skus {
                let request = hyper::Request::get(format!("/v1/inventory/{}", sku_name(i)))
                    .header("host", "bench")
                    .body(Full::new(Bytes::new()))?;
                send.ready().await?;
                let response = send.send_request(request).await?;
                let bytes = response.into_body().collect().await?.to_bytes();
                let json: serde_json::Value = serde_json::from_slice(&bytes)?;
                let field = |f: &str| json[f].as_i64().with_context(|| format!("{f} in {json}"));
                if field("confirmed")? != 0 {
                    bail!("nothing was confirmed, yet {json}");
                }
                out.insert(sku_name(i), (field("available")?, field("reserved")?));
            }
        }
        Target::Postgres => {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            for row in client
                .query(
                    "SELECT i.sku, i.available, COALESCE(SUM(r.qty), 0)::bigint
                     FROM bench_inventory i LEFT JOIN bench_reservations r ON r.sku = i.sku
                     GROUP BY i.sku, i.available",
                    &[],
                )
                .await?
            {
                out.insert(row.get(0), (row.get(1), row.get(2)));
            }
        }
        Target::Redis => {
            let client = redis::Client::open(url)?;
            let mut connection = client.get_multiplexed_async_connection().await?;
            for chunk in (0..skus).collect::<Vec<_>>().chunks(1000) {
                let stock_keys: Vec<String> = chunk
                    .iter()
                    .map(|&i| format!("stock:{}", sku_name(i)))
                    .collect();
                let reserved_keys: Vec<String> = chunk
                    .iter()
                    .map(|&i| format!("reserved:{}", sku_name(i)))
                    .collect();
                let available: Vec<i64> = redis::cmd("MGET")
                    .arg(&stock_keys)
                    .query_async(&mut connection)
                    .await?;
                let reserved: Vec<i64> = redis::cmd("MGET")
                    .arg(&reserved_keys)
                    .query_async(&mut connection)
                    .await?;
                for (k, &i) in chunk.iter().enumerate() {
                    out.insert(sku_name(i), (available[k], reserved[k]));
                }
            }
        }
    }
    Ok(out)
}

/// Zipf's law over `n` items: item `i` with weight `1 / (i + 1)^s`.
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut total = 0.0;
        let mut cumulative: Vec<f64> = (0..n)
            .map(|i| {
                total += 1.0 / ((i + 1) as f64).powf(s);
                total
            })
            .collect();
        for c in &mut cumulative {
            *c /= total;
        }
        Self { cumulative }
    }

    fn sample(&self, rng: &mut StdRng) -> usize {
        let u: f64 = rng.random();
        self.cumulative
            .partition_point(|&c| c <= u)
            .min(self.cumulative.len() - 1)
    }
}

/// What one client did.
#[derive(Default)]
struct Tally {
    decisions: u64,
    reserved: u64,
    insufficient: u64,
    duplicates: u64,
    /// Duplicates answered differently from the first time (must stay 0).
    mismatched: u64,
    /// Units per SKU of the reservations given (each id once).
    units: HashMap<String, i64>,
    ids: HashSet<String>,
    latency: Option<Histogram<u64>>,
}

async fn client(
    id: usize,
    args: Arc<Args>,
    zipf: Arc<Zipf>,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Tally> {
    let mut conn = connect(args.target, &args.url).await?;
    let mut rng = StdRng::seed_from_u64(args.seed ^ ((id as u64) << 32));
    let mut tally = Tally {
        latency: Some(Histogram::new_with_bounds(1, 60_000_000, 3)?),
        ..Tally::default()
    };
    let mut recent: Vec<(String, String, u32, Outcome)> = Vec::with_capacity(RECENT);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let duplicate = !recent.is_empty() && rng.random_range(0..100) < args.duplicate_percent;
        let (key, sku, qty, first) = if duplicate {
            let (key, sku, qty, outcome) = recent[rng.random_range(0..recent.len())].clone();
            (key, sku, qty, Some(outcome))
        } else {
            n += 1;
            let sku = if args.hot {
                sku_name(0)
            } else {
                sku_name(zipf.sample(&mut rng))
            };
            (
                format!("{}-c{id}-{n}", args.seed),
                sku,
                rng.random_range(1..=3u32),
                None,
            )
        };
        let started = Instant::now();
        let outcome = conn.reserve(&key, &sku, qty).await?;
        let counted = measuring.load(Ordering::Relaxed);
        if counted {
            let micros = started.elapsed().as_micros() as u64;
            tally
                .latency
                .as_mut()
                .expect("made above")
                .record(micros.max(1))?;
        }
        match first {
            Some(first) => {
                tally.duplicates += u64::from(counted);
                tally.mismatched += u64::from(first != outcome);
            }
            None => {
                if counted {
                    tally.decisions += 1;
                }
                match &outcome {
                    Outcome::Reserved(rid) => {
                        tally.reserved += u64::from(counted);
                        if !tally.ids.insert(rid.clone()) {
                            tally.mismatched += 1;
                        }
                        *tally.units.entry(sku.clone()).or_default() += i64::from(qty);
                    }
                    Outcome::Insufficient => tally.insufficient += u64::from(counted),
                }
                if recent.len() == RECENT {
                    recent.remove(0);
                }
                recent.push((key, sku, qty, outcome));
            }
        }
    }
    Ok(tally)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    let skus = if args.hot { 1 } else { args.skus };
    setup(args.target, &args.url, skus, args.stock, args.clients).await?;
    let zipf = Arc::new(Zipf::new(skus, args.zipf));
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..args.clients)
        .map(|id| {
            tokio::spawn(client(
                id,
                args.clone(),
                zipf.clone(),
                measuring.clone(),
                stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(WARMUP).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut total = Tally {
        latency: Some(Histogram::new_with_bounds(1, 60_000_000, 3)?),
        ..Tally::default()
    };
    for task in tasks {
        let tally = task.await??;
        total.decisions += tally.decisions;
        total.reserved += tally.reserved;
        total.insufficient += tally.insufficient;
        total.duplicates += tally.duplicates;
        total.mismatched += tally.mismatched;
        for (sku, units) in tally.units {
            *total.units.entry(sku).or_default() += units;
        }
        for rid in tally.ids {
            if !total.ids.insert(rid) {
                total.mismatched += 1;
            }
        }
        total
            .latency
            .as_mut()
            .expect("made above")
            .add(tally.latency.expect("made"))?;
    }
    // The oversell check: every SKU non-negative and conserved, its reserved units
    // exactly those of the reservations handed out.
    let held = levels(args.target, &args.url, skus).await?;
    let mut oversold = 0u64;
    let mut violations = Vec::new();
    for i in 0..skus {
        let sku = sku_name(i);
        let (available, reserved) = held.get(&sku).copied().context("a SKU vanished")?;
        let given = total.units.get(&sku).copied().unwrap_or(0);
        if available < 0 {
            oversold += 1;
        }
        if available + reserved != args.stock as i64 || reserved != given {
            violations.push(format!(
                "{sku}: available {available} + reserved {reserved} vs stock {}, {given} units given",
                args.stock
            ));
        }
    }
    let latency = total.latency.as_ref().expect("made above");
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    let result = serde_json::json!({
        "target": format!("{:?}", args.target).to_lowercase(),
        "config": args.config,
        "skus": skus,
        "hot": args.hot,
        "clients": args.clients,
        "seconds": elapsed,
        "duplicate_percent": args.duplicate_percent,
        "decisions_per_s": (total.decisions as f64 / elapsed).round(),
        "reserved_per_s": (total.reserved as f64 / elapsed).round(),
        "insufficient": total.insufficient,
        "duplicates": total.duplicates,
        "duplicates_mismatched": total.mismatched,
        "p50_ms": ms(0.50),
        "p99_ms": ms(0.99),
        "p999_ms": ms(0.999),
        "oversold_skus": oversold,
        "conservation_violations": violations.len(),
    });
    println!("{result}");
    if oversold > 0 || !violations.is_empty() || total.mismatched > 0 {
        for v in violations.iter().take(10) {
            eprintln!("{v}");
        }
        bail!(
            "the check failed: {oversold} SKUs oversold, {} not conserved, {} duplicates answered differently",
            violations.len(),
            total.mismatched
        );
    }
    Ok(())
}
