//! The pieces `benches/netflix/cdn.sh` runs side by side with nginx: a synthetic
//! origin, one CDN tier, a URL signer and a Zipf trace replayer.
//!
//! ```text
//! cdn_bench origin --listen 127.0.0.1:9000
//! cdn_bench edge   --listen 127.0.0.1:9001 --upstream http://127.0.0.1:9000 --key KEYFILE --memory-bytes N [--disk-bytes N --data-dir DIR]
//! cdn_bench sign   --key KEYFILE --path /o/bench/seg2m.ts
//! cdn_bench trace  --base http://127.0.0.1:9001 --objects 4000 --requests 40000 --zipf 0.9 --seed 7 [--key KEYFILE]
//! ```
//!
//! The origin serves `bench/seg2m.ts` (2 MiB), `bench/small.ts` (1 kB),
//! `bench/index.m3u8` (a media
//! playlist of 30 segments) and `bench/obj{i:05}.ts` (a size drawn from the index:
//! 20 kB to 200 kB), and `GET /stats` → `{"requests", "bytes"}` (the origin bytes
//! of a run). The trace prints `{"requests", "bytes", "errors"}` as JSON.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use casebook_edge::cdn::{TierConfig, TierService, Upstream};
use casebook_edge::signing::SigningKey;
use casebook_kit::clock::{Clock, SystemClock};
use casebook_kit::http_client::HttpClient;
use casebook_kit::resolve::Resolver;
use casebook_kit::runtime::{InstanceSpec, Platform};
use casebook_kit::topology::Topology;
use http::{HeaderMap, Method};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SEGMENT_BYTES: usize = 2 << 20;

fn args() -> (String, HashMap<String, String>) {
    let mut raw = std::env::args().skip(1);
    let command = raw.next().unwrap_or_default();
    let mut flags = HashMap::new();
    while let Some(flag) = raw.next() {
        let name = flag.trim_start_matches("--").to_owned();
        flags.insert(name, raw.next().unwrap_or_default());
    }
    (command, flags)
}

fn flag<T: std::str::FromStr>(
    flags: &HashMap<String, String>,
    name: &str,
    default: Option<T>,
) -> T {
    match flags.get(name) {
        Some(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("--{name} {v}: not valid")),
        None => default.unwrap_or_else(|| panic!("--{name} is required")),
    }
}

/// The size of `bench/obj{i}.ts`: 20 kB to 200 kB, fixed by `i`.
fn object_size(i: u64) -> usize {
    let mixed = i.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17) ^ 0x5555;
    20_000 + (mixed % 180_000) as usize
}

fn playlist() -> String {
    let mut text = String::from(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:1\n",
    );
    for n in 1..=30 {
        text.push_str(&format!("#EXTINF:4.000,\nseg{n:05}.ts\n"));
    }
    text.push_str("#EXT-X-ENDLIST\n");
    text
}

#[derive(Default)]
struct OriginCounts {
    requests: AtomicU64,
    bytes: AtomicU64,
}

struct OriginState {
    counts: OriginCounts,
    blob: Bytes,
    playlist: Bytes,
}

async fn origin_object(State(state): State<Arc<OriginState>>, uri: Uri) -> Response {
    let key = uri.path().trim_start_matches("/o/");
    let body = match key {
        "bench/seg2m.ts" => state.blob.slice(..SEGMENT_BYTES),
        "bench/small.ts" => state.blob.slice(..1_000),
        "bench/index.m3u8" => state.playlist.clone(),
        other => match other
            .strip_prefix("bench/obj")
            .and_then(|rest| rest.strip_suffix(".ts"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            Some(i) => state.blob.slice(..object_size(i)),
            None => return (StatusCode::NOT_FOUND, "no such object").into_response(),
        },
    };
    state.counts.requests.fetch_add(1, Ordering::Relaxed);
    state
        .counts
        .bytes
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    let content_type = if key.ends_with(".m3u8") {
        "application/vnd.apple.mpegurl"
    } else {
        "video/mp2t"
    };
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn origin_stats(State(state): State<Arc<OriginState>>) -> Response {
    axum::Json(serde_json::json!({
        "requests": state.counts.requests.load(Ordering::Relaxed),
        "bytes": state.counts.bytes.load(Ordering::Relaxed),
    }))
    .into_response()
}

async fn origin(flags: HashMap<String, String>) {
    let listen: SocketAddr = flag(&flags, "listen", None);
    let blob: Vec<u8> = (0..SEGMENT_BYTES).map(|i| (i % 251) as u8).collect();
    let state = Arc::new(OriginState {
        counts: OriginCounts::default(),
        blob: Bytes::from(blob),
        playlist: Bytes::from(playlist()),
    });
    let app = Router::new()
        .route("/o/{*key}", axum::routing::get(origin_object))
        .route("/stats", axum::routing::get(origin_stats))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .expect("bind the origin");
    axum::serve(listener, app).await.expect("serve the origin");
}

async fn edge(flags: HashMap<String, String>) {
    let listen: SocketAddr = flag(&flags, "listen", None);
    let upstream: String = flag(&flags, "upstream", None);
    let key_file: PathBuf = flag(&flags, "key", None);
    let key = SigningKey::load_or_create(&key_file).expect("the signing key");
    let mut config = TierConfig::new("cdn-bench", Upstream::Url(upstream), key);
    config.memory_bytes = flag(&flags, "memory-bytes", Some(512 << 20));
    config.disk_bytes = flag(&flags, "disk-bytes", Some(0));
    let data_dir: PathBuf = flag(
        &flags,
        "data-dir",
        Some(std::env::temp_dir().join("cdn-bench-edge")),
    );
    let topology = Topology::uniform(&["r1"], 1);
    let clock = SystemClock::shared();
    let platform = Platform::new(topology.clone(), data_dir, clock.clone());
    let service = config.service.clone();
    platform.register_service(Arc::new(TierService {
        config,
        resolver: Arc::new(Resolver::detached(clock)),
    }));
    let info = platform
        .start(InstanceSpec {
            service,
            instance_id: None,
            placement: topology.spread(0),
            listen,
            version: "bench".into(),
            port_hint: None,
        })
        .await
        .expect("start the edge");
    eprintln!("edge on {}", info.address);
    let _ = tokio::signal::ctrl_c().await;
}

fn sign(flags: HashMap<String, String>) {
    let key_file: PathBuf = flag(&flags, "key", None);
    let path: String = flag(&flags, "path", None);
    let ttl: u64 = flag(&flags, "ttl", Some(86_400));
    let key = SigningKey::load_or_create(&key_file).expect("the signing key");
    let now = SystemClock.wall_millis() / 1000;
    println!("{}", key.sign(&path, now + ttl));
}

async fn trace(flags: HashMap<String, String>) {
    let base: String = flag(&flags, "base", None);
    let objects: usize = flag(&flags, "objects", Some(4000));
    let requests: usize = flag(&flags, "requests", Some(40_000));
    let s: f64 = flag(&flags, "zipf", Some(0.9));
    let seed: u64 = flag(&flags, "seed", Some(7));
    let key = flags.get("key").map(|file| {
        SigningKey::load_or_create(std::path::Path::new(file)).expect("the signing key")
    });
    let mut rng = StdRng::seed_from_u64(seed);
    let mut cdf = Vec::with_capacity(objects);
    let mut total = 0.0;
    for rank in 1..=objects {
        total += 1.0 / (rank as f64).powf(s);
        cdf.push(total);
    }
    // Popularity independent of index (and so of size).
    let mut by_rank: Vec<usize> = (0..objects).collect();
    for i in (1..objects).rev() {
        by_rank.swap(i, rng.random_range(0..=i));
    }
    // `--lru-bytes N`: also replay the trace through an exact byte-bounded LRU of N
    // bytes (what nginx's policy would do with its bound enforced at every insert).
    let lru_bytes: u64 = flag(&flags, "lru-bytes", Some(0));
    let mut lru = Lru::new(lru_bytes);
    let client = HttpClient::new(Duration::from_secs(30));
    let exp = SystemClock.wall_millis() / 1000 + 86_400;
    let (mut bytes, mut errors) = (0u64, 0u64);
    for _ in 0..requests {
        let u: f64 = rng.random::<f64>() * total;
        let object = by_rank[cdf.partition_point(|c| *c < u).min(objects - 1)];
        lru.access(object, object_size(object as u64) as u64);
        let path = format!("/o/bench/obj{object:05}.ts");
        let query = key
            .as_ref()
            .map(|k| format!("?{}", k.sign(&path, exp)))
            .unwrap_or_default();
        match client
            .send(
                Method::GET,
                &format!("{base}{path}{query}"),
                HeaderMap::new(),
                Bytes::new(),
            )
            .await
        {
            Ok(r) if r.status == StatusCode::OK && r.body.len() == object_size(object as u64) => {
                bytes += r.body.len() as u64;
            }
            _ => errors += 1,
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "requests": requests,
            "bytes": bytes,
            "errors": errors,
            "lru_hit_bytes": lru.hit_bytes,
        })
    );
}

/// An exact byte-bounded LRU, for the trace's reference line.
struct Lru {
    capacity: u64,
    used: u64,
    tick: u64,
    hit_bytes: u64,
    entries: HashMap<usize, (u64, u64)>,
    order: std::collections::BTreeMap<u64, usize>,
}

impl Lru {
    fn new(capacity: u64) -> Self {
        Self {
            capacity,
            used: 0,
            tick: 0,
            hit_bytes: 0,
            entries: HashMap::new(),
            order: std::collections::BTreeMap::new(),
        }
    }

    fn access(&mut self, object: usize, size: u64) {
        self.tick += 1;
        if let Some((_, tick)) = self.entries.get_mut(&object) {
            self.order.remove(tick);
            *tick = self.tick;
            self.order.insert(self.tick, object);
            self.hit_bytes += size;
            return;
        }
        if size > self.capacity {
            return;
        }
        while self.used + size > self.capacity {
            let Some((_, victim)) = self.order.pop_first() else {
                break;
            };
            if let Some((bytes, _)) = self.entries.remove(&victim) {
                self.used -= bytes;
            }
        }
        self.entries.insert(object, (size, self.tick));
        self.order.insert(self.tick, object);
        self.used += size;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (command, flags) = args();
    match command.as_str() {
        "origin" => origin(flags).await,
        "edge" => edge(flags).await,
        "sign" => sign(flags),
        "trace" => trace(flags).await,
        _ => {
            eprintln!(
                "usage: cdn_bench origin|edge|sign|trace --flag value ... (see the file's docs)"
            );
            std::process::exit(2);
        }
    }
}
