//! Each route's health over a rolling window, for `/admin/routes`.
//!
//! Guarantees: the window is the last [`WINDOW`] on the injected clock, in
//! [`BUCKETS`] one-second buckets that slide one at a time; memory is fixed per
//! route (one count set and one HdrHistogram per bucket, whatever the traffic);
//! latency is from a request's arrival to its response head, in microseconds at
//! two significant digits, for requests that reached the endpoint (filter
//! refusals are counted, not timed).
//!
//! Not guaranteed: time to the last body byte (bodies stream after the head), or
//! exact percentiles (HdrHistogram's precision).

use std::sync::Arc;
use std::time::{Duration, Instant};

use casebook_kit::clock::SharedClock;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;

use super::filters::Outcome;

/// How far back the view looks.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Buckets in the window.
pub const BUCKETS: u64 = 10;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
struct Counts {
    requests: u64,
    /// Reached the endpoint (a route matched and no filter refused).
    upstream_calls: u64,
    /// The upstream call failed (whether or not a fallback answered).
    errors: u64,
    fallbacks: u64,
    rate_limited: u64,
    /// Refused by any inbound filter (rate limits included).
    refused: u64,
    status_2xx: u64,
    status_3xx: u64,
    status_4xx: u64,
    status_5xx: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.requests += o.requests;
        self.upstream_calls += o.upstream_calls;
        self.errors += o.errors;
        self.fallbacks += o.fallbacks;
        self.rate_limited += o.rate_limited;
        self.refused += o.refused;
        self.status_2xx += o.status_2xx;
        self.status_3xx += o.status_3xx;
        self.status_4xx += o.status_4xx;
        self.status_5xx += o.status_5xx;
    }
}

struct Bucket {
    /// Which second since `origin` this bucket holds; `u64::MAX` = never used.
    tick: u64,
    counts: Counts,
    latency_us: Histogram<u32>,
}

fn histogram() -> Histogram<u32> {
    // 1 µs .. 1 h at two significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("static histogram bounds are valid")
}

/// One route's rolling statistics. Cloning shares them.
#[derive(Clone)]
pub struct RouteStats {
    inner: Arc<Inner>,
}

struct Inner {
    clock: SharedClock,
    origin: Instant,
    buckets: Mutex<Vec<Bucket>>,
}

impl std::fmt::Debug for RouteStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RouteStats")
    }
}

/// Latency percentiles over the window, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencyMs {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// A route's window as `/admin/routes` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowView {
    /// Every request matched to the route per second (refusals included).
    pub requests_per_second: f64,
    pub requests: u64,
    pub upstream_calls: u64,
    pub errors: u64,
    /// `floor(errors × 100 / upstream_calls)`.
    pub error_percent: u8,
    pub fallbacks: u64,
    pub rate_limited: u64,
    pub refused: u64,
    pub status_2xx: u64,
    pub status_3xx: u64,
    pub status_4xx: u64,
    pub status_5xx: u64,
    pub latency_ms: LatencyMs,
}

impl RouteStats {
    pub fn new(clock: SharedClock) -> Self {
        let origin = clock.now();
        let buckets = (0..BUCKETS)
            .map(|_| Bucket {
                tick: u64::MAX,
                counts: Counts::default(),
                latency_us: histogram(),
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                clock,
                origin,
                buckets: Mutex::new(buckets),
            }),
        }
    }

    fn tick(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.inner.origin).as_secs()
    }

    /// Counts one finished request.
    pub fn record(&self, outcome: &Outcome) {
        let tick = self.tick(self.inner.clock.now());
        let mut buckets = self.inner.buckets.lock();
        let bucket = &mut buckets[(tick % BUCKETS) as usize];
        if bucket.tick != tick {
            bucket.tick = tick;
            bucket.counts = Counts::default();
            bucket.latency_us.reset();
        }
        let c = &mut bucket.counts;
        c.requests += 1;
        match outcome.status.as_u16() {
            200..=299 => c.status_2xx += 1,
            300..=399 => c.status_3xx += 1,
            400..=499 => c.status_4xx += 1,
            _ => c.status_5xx += 1,
        }
        if outcome.reached_endpoint {
            c.upstream_calls += 1;
            if outcome.upstream_failed {
                c.errors += 1;
            }
            if outcome.label == "fallback" {
                c.fallbacks += 1;
            }
            let micros = u64::try_from(outcome.elapsed.as_micros()).unwrap_or(u64::MAX);
            bucket.latency_us.saturating_record(micros.max(1));
        } else {
            c.refused += 1;
            if outcome.label == "rate_limited" {
                c.rate_limited += 1;
            }
        }
    }

    /// The window ending now.
    pub fn view(&self) -> WindowView {
        let current = self.tick(self.inner.clock.now());
        let oldest = current.saturating_sub(BUCKETS - 1);
        let mut counts = Counts::default();
        let mut latency = histogram();
        for b in self.inner.buckets.lock().iter() {
            if b.tick != u64::MAX && (oldest..=current).contains(&b.tick) {
                counts.add(&b.counts);
                // Same bounds on both sides: adding cannot fail.
                let _ = latency.add(&b.latency_us);
            }
        }
        let ms = |q: f64| {
            if latency.is_empty() {
                0.0
            } else {
                latency.value_at_quantile(q) as f64 / 1000.0
            }
        };
        let error_percent = (counts.errors * 100)
            .checked_div(counts.upstream_calls)
            .map_or(0, |p| u8::try_from(p).unwrap_or(100));
        WindowView {
            requests_per_second: counts.requests as f64 / WINDOW.as_secs_f64(),
            requests: counts.requests,
            upstream_calls: counts.upstream_calls,
            errors: counts.errors,
            error_percent,
            fallbacks: counts.fallbacks,
            rate_limited: counts.rate_limited,
            refused: counts.refused,
            status_2xx: counts.status_2xx,
            status_3xx: counts.status_3xx,
            status_4xx: counts.status_4xx,
            status_5xx: counts.status_5xx,
            latency_ms: LatencyMs {
                p50: ms(0.5),
                p90: ms(0.9),
                p99: ms(0.99),
                max: if latency.is_empty() {
                    0.0
                } else {
                    latency.max() as f64 / 1000.0
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use casebook_kit::clock::ManualClock;
    use http::StatusCode;

    use super::*;

    fn outcome(status: u16, label: &'static str, reached: bool, failed: bool, ms: u64) -> Outcome {
        Outcome {
            route: "r".into(),
            status: StatusCode::from_u16(status).unwrap(),
            label,
            reached_endpoint: reached,
            upstream_failed: failed,
            elapsed: Duration::from_millis(ms),
        }
    }

    #[test]
    fn the_window_counts_the_last_ten_seconds_on_the_injected_clock() {
        let clock = ManualClock::new();
        let stats = RouteStats::new(clock.shared());
        for ms in 1..=100 {
            stats.record(&outcome(200, "ok", true, false, ms));
        }
        stats.record(&outcome(200, "fallback", true, true, 5));
        stats.record(&outcome(503, "breaker_open", true, true, 1));
        stats.record(&outcome(429, "rate_limited", false, false, 0));
        let view = stats.view();
        assert_eq!(
            (view.requests, view.upstream_calls, view.errors),
            (103, 102, 2)
        );
        assert_eq!((view.fallbacks, view.rate_limited, view.refused), (1, 1, 1));
        assert_eq!(
            (view.status_2xx, view.status_4xx, view.status_5xx),
            (101, 1, 1)
        );
        assert_eq!(view.error_percent, 1);
        assert!((view.requests_per_second - 10.3).abs() < 1e-9);
        assert!(
            (49.0..=51.0).contains(&view.latency_ms.p50),
            "{:?}",
            view.latency_ms
        );
        assert!(
            (99.0..=101.0).contains(&view.latency_ms.max),
            "{:?}",
            view.latency_ms
        );

        clock.advance(Duration::from_secs(5));
        stats.record(&outcome(200, "ok", true, false, 7));
        assert_eq!(stats.view().requests, 104);
        clock.advance(Duration::from_secs(5));
        let later = stats.view();
        assert_eq!(later.requests, 1, "the first second slid out");
        // Two significant digits: 7 ms reads back within 1 %.
        assert!(
            (7.0..7.1).contains(&later.latency_ms.max),
            "{:?}",
            later.latency_ms
        );
        clock.advance(Duration::from_secs(10));
        assert_eq!(stats.view().requests, 0);
        assert_eq!(stats.view().latency_ms, LatencyMs::default());
    }
}
