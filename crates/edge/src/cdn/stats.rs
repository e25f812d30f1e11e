//! What a tier counts, as `metrics` counters (Prometheus `/metrics`, pushed to the
//! control plane's store) and as the `/stats` JSON view.
//!
//! Counters, each labelled `service` (the tier: `netflix-isp`, `netflix-edge`)
//! and `instance`:
//! - `casebook_cdn_requests_total` — object requests that passed validation and
//!   the signature check;
//! - `casebook_cdn_hits_total{level=memory|disk|negative}` — answered from this
//!   tier without asking upstream (`negative`: a recent 404 remembered);
//! - `casebook_cdn_misses_total` — requests that waited for an upstream fetch
//!   (leaders and coalesced followers alike);
//! - `casebook_cdn_coalesced_total` — misses that joined a fetch already in flight;
//! - `casebook_cdn_bytes_served_total{source=memory|disk|upstream}` — body bytes
//!   sent to clients (ranges count what was sent; `HEAD` and 304 send none);
//! - `casebook_cdn_upstream_fetches_total`, `casebook_cdn_upstream_bytes_total`,
//!   `casebook_cdn_upstream_errors_total{cause}`;
//! - `casebook_cdn_refused_total{reason=key|signature|header}`;
//! - `casebook_cdn_stale_served_total` — stale playlists served because the
//!   upstream failed.
//!
//! Hit ratio = hits / (hits + misses); byte-hit ratio = bytes served from memory
//! or disk / all bytes served. The numbers are the instance's since it started
//! (the process's metrics registry aggregates every instance of a process by label).

use std::sync::atomic::{AtomicU64, Ordering};

use metrics::Counter;
use serde::Serialize;

/// Where a served object came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Memory,
    Disk,
    /// Fetched for this request (or for a flight it joined).
    Upstream,
    /// A stale copy, served because the upstream failed.
    Stale,
}

impl Source {
    /// The `x-cache` header value.
    pub fn header(self, coalesced: bool) -> &'static str {
        match (self, coalesced) {
            (Self::Memory, _) => "hit-memory",
            (Self::Disk, _) => "hit-disk",
            (Self::Upstream, false) => "miss",
            (Self::Upstream, true) => "miss-coalesced",
            (Self::Stale, _) => "stale",
        }
    }
}

#[derive(Debug, Default)]
struct Totals {
    requests: AtomicU64,
    hits_memory: AtomicU64,
    hits_disk: AtomicU64,
    hits_negative: AtomicU64,
    misses: AtomicU64,
    coalesced: AtomicU64,
    bytes_memory: AtomicU64,
    bytes_disk: AtomicU64,
    bytes_upstream: AtomicU64,
    upstream_fetches: AtomicU64,
    upstream_bytes: AtomicU64,
    upstream_errors: AtomicU64,
    refused_key: AtomicU64,
    refused_signature: AtomicU64,
    refused_header: AtomicU64,
    stale_served: AtomicU64,
    disk_writes_skipped: AtomicU64,
}

struct Handles {
    requests: Counter,
    hits_memory: Counter,
    hits_disk: Counter,
    hits_negative: Counter,
    misses: Counter,
    coalesced: Counter,
    bytes_memory: Counter,
    bytes_disk: Counter,
    bytes_upstream: Counter,
    upstream_fetches: Counter,
    upstream_bytes: Counter,
    refused_key: Counter,
    refused_signature: Counter,
    refused_header: Counter,
    stale_served: Counter,
}

/// A tier's counters.
pub struct Stats {
    service: String,
    instance: String,
    totals: Totals,
    handles: Handles,
}

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stats")
            .field("service", &self.service)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// Why a request was refused before any lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Key,
    Signature,
    Header,
}

impl Stats {
    pub fn new(service: &str, instance: &str) -> Self {
        casebook_kit::telemetry::metrics();
        let labels = [
            ("service", service.to_owned()),
            ("instance", instance.to_owned()),
        ];
        let counter = |name: &'static str| metrics::counter!(name, &labels);
        let with = |name: &'static str, key: &'static str, value: &'static str| {
            let mut labels = labels.to_vec();
            labels.push((key, value.to_owned()));
            metrics::counter!(name, &labels)
        };
        Self {
            service: service.to_owned(),
            instance: instance.to_owned(),
            totals: Totals::default(),
            handles: Handles {
                requests: counter("casebook_cdn_requests_total"),
                hits_memory: with("casebook_cdn_hits_total", "level", "memory"),
                hits_disk: with("casebook_cdn_hits_total", "level", "disk"),
                hits_negative: with("casebook_cdn_hits_total", "level", "negative"),
                misses: counter("casebook_cdn_misses_total"),
                coalesced: counter("casebook_cdn_coalesced_total"),
                bytes_memory: with("casebook_cdn_bytes_served_total", "source", "memory"),
                bytes_disk: with("casebook_cdn_bytes_served_total", "source", "disk"),
                bytes_upstream: with("casebook_cdn_bytes_served_total", "source", "upstream"),
                upstream_fetches: counter("casebook_cdn_upstream_fetches_total"),
                upstream_bytes: counter("casebook_cdn_upstream_bytes_total"),
                refused_key: with("casebook_cdn_refused_total", "reason", "key"),
                refused_signature: with("casebook_cdn_refused_total", "reason", "signature"),
                refused_header: with("casebook_cdn_refused_total", "reason", "header"),
                stale_served: counter("casebook_cdn_stale_served_total"),
            },
        }
    }

    fn bump(total: &AtomicU64, handle: &Counter, n: u64) {
        total.fetch_add(n, Ordering::Relaxed);
        handle.increment(n);
    }

    pub fn request(&self) {
        Self::bump(&self.totals.requests, &self.handles.requests, 1);
    }

    pub fn refused(&self, why: Refusal) {
        let (total, handle) = match why {
            Refusal::Key => (&self.totals.refused_key, &self.handles.refused_key),
            Refusal::Signature => (
                &self.totals.refused_signature,
                &self.handles.refused_signature,
            ),
            Refusal::Header => (&self.totals.refused_header, &self.handles.refused_header),
        };
        Self::bump(total, handle, 1);
    }

    /// A lookup answered from memory or disk.
    pub fn hit(&self, source: Source) {
        match source {
            Source::Memory => Self::bump(&self.totals.hits_memory, &self.handles.hits_memory, 1),
            Source::Disk => Self::bump(&self.totals.hits_disk, &self.handles.hits_disk, 1),
            Source::Upstream | Source::Stale => {}
        }
    }

    /// A lookup that waits for an upstream fetch, counted as it joins the flight
    /// (so a fetch still in flight already shows its waiters).
    pub fn missed(&self, coalesced: bool) {
        Self::bump(&self.totals.misses, &self.handles.misses, 1);
        if coalesced {
            Self::bump(&self.totals.coalesced, &self.handles.coalesced, 1);
        }
    }

    /// A stale copy served because the fetch failed.
    pub fn stale_served(&self) {
        Self::bump(&self.totals.stale_served, &self.handles.stale_served, 1);
    }

    pub fn negative_hit(&self) {
        Self::bump(&self.totals.hits_negative, &self.handles.hits_negative, 1);
    }

    /// Body bytes sent to a client.
    pub fn served(&self, source: Source, bytes: u64) {
        let (total, handle) = match source {
            Source::Memory => (&self.totals.bytes_memory, &self.handles.bytes_memory),
            Source::Disk => (&self.totals.bytes_disk, &self.handles.bytes_disk),
            Source::Upstream | Source::Stale => {
                (&self.totals.bytes_upstream, &self.handles.bytes_upstream)
            }
        };
        Self::bump(total, handle, bytes);
    }

    pub fn fetched(&self, bytes: u64) {
        Self::bump(
            &self.totals.upstream_fetches,
            &self.handles.upstream_fetches,
            1,
        );
        Self::bump(
            &self.totals.upstream_bytes,
            &self.handles.upstream_bytes,
            bytes,
        );
    }

    pub fn upstream_error(&self, cause: &'static str) {
        self.totals.upstream_errors.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(
            "casebook_cdn_upstream_errors_total",
            "service" => self.service.clone(),
            "instance" => self.instance.clone(),
            "cause" => cause
        )
        .increment(1);
    }

    pub fn disk_write_skipped(&self) {
        self.totals
            .disk_writes_skipped
            .fetch_add(1, Ordering::Relaxed);
    }

    /// The counters as `/stats` shows them, with the tiers' sizes filled by the caller.
    pub fn view(&self, memory: LevelView, disk: Option<LevelView>, fill: FillView) -> StatsView {
        let t = &self.totals;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let hits = get(&t.hits_memory) + get(&t.hits_disk) + get(&t.hits_negative);
        let misses = get(&t.misses);
        let from_cache = get(&t.bytes_memory) + get(&t.bytes_disk);
        let served = from_cache + get(&t.bytes_upstream);
        let ratio = |part: u64, whole: u64| (whole > 0).then(|| part as f64 / whole as f64);
        StatsView {
            service: self.service.clone(),
            instance: self.instance.clone(),
            requests: get(&t.requests),
            hits,
            hits_memory: get(&t.hits_memory),
            hits_disk: get(&t.hits_disk),
            hits_negative: get(&t.hits_negative),
            misses,
            hit_ratio: ratio(hits, hits + misses),
            byte_hit_ratio: ratio(from_cache, served),
            bytes_served: served,
            bytes_served_from_cache: from_cache,
            coalesced: get(&t.coalesced),
            upstream_fetches: get(&t.upstream_fetches),
            upstream_bytes: get(&t.upstream_bytes),
            upstream_errors: get(&t.upstream_errors),
            stale_served: get(&t.stale_served),
            refused_key: get(&t.refused_key),
            refused_signature: get(&t.refused_signature),
            refused_header: get(&t.refused_header),
            disk_writes_skipped: get(&t.disk_writes_skipped),
            memory,
            disk,
            fill,
        }
    }
}

/// One storage level's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct LevelView {
    pub bytes: u64,
    pub entries: u64,
    pub capacity_bytes: u64,
}

/// What fills have done.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct FillView {
    /// Fill runs finished (API and schedule).
    pub runs: u64,
    /// Objects fetched by fills.
    pub objects: u64,
    /// Bytes fetched by fills.
    pub bytes: u64,
    /// The last scheduled round's error, if it failed.
    pub last_error: Option<String>,
}

/// The `/stats` document.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct StatsView {
    pub service: String,
    pub instance: String,
    pub requests: u64,
    pub hits: u64,
    pub hits_memory: u64,
    pub hits_disk: u64,
    pub hits_negative: u64,
    pub misses: u64,
    /// `None` before the first lookup.
    pub hit_ratio: Option<f64>,
    /// `None` before the first byte served.
    pub byte_hit_ratio: Option<f64>,
    pub bytes_served: u64,
    pub bytes_served_from_cache: u64,
    pub coalesced: u64,
    pub upstream_fetches: u64,
    pub upstream_bytes: u64,
    pub upstream_errors: u64,
    pub stale_served: u64,
    pub refused_key: u64,
    pub refused_signature: u64,
    pub refused_header: u64,
    pub disk_writes_skipped: u64,
    pub memory: LevelView,
    /// `None` for a memory-only tier.
    pub disk: Option<LevelView>,
    pub fill: FillView,
}
