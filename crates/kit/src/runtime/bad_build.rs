//! The "bad build" switch: a version of a service declared bad adds latency and
//! errors to every HTTP response its instances serve — what a canary analysis is
//! there to catch, on demand.
//!
//! A build is declared on the platform ([`crate::runtime::Platform::declare_bad_build`])
//! for a (service, version) pair; an instance started with that version carries it
//! ([`crate::runtime::InstanceContext::bad_build`]) and [`crate::runtime::serve_http`]
//! wraps its routes in [`layer`].
//!
//! **Guaranteed**: every response but `/health` and `/metrics` (a bad build still
//! passes health checks — which is why canaries exist) is delayed by `latency`
//! before the handler runs, and exactly `⌊n × error_rate⌋` of the first `n` such
//! requests are answered `500` without reaching the handler (deterministic: the
//! errors are spread evenly, not drawn at random). The request metrics see both,
//! because the layer sits inside the telemetry layer. **Not guaranteed**: declaring
//! a build changes instances started afterwards only; other protocols than HTTP are
//! untouched.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::middleware::Next;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};

/// The longest latency a bad build may add.
pub const MAX_LATENCY: Duration = Duration::from_secs(60);

/// What a bad build does to each HTTP response.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BadBuild {
    /// Added before each response.
    #[serde(with = "humantime_serde", default)]
    pub latency: Duration,
    /// Share of responses answered 500, `0.0..=1.0`.
    #[serde(default)]
    pub error_rate: f64,
}

impl BadBuild {
    /// Checks the bounds; the error names the field.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.latency > MAX_LATENCY {
            return Err(("latency", format!("at most {MAX_LATENCY:?}")));
        }
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err(("error_rate", "must be between 0 and 1 (0.05 is 5 %)".into()));
        }
        Ok(())
    }
}

impl fmt::Display for BadBuild {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "latency={},errors={}%",
            humantime::format_duration(self.latency),
            self.error_rate * 100.0
        )
    }
}

/// Parses `latency=150ms,errors=5%` (either part may be left out; `errors` also
/// takes a fraction, `errors=0.05`).
impl FromStr for BadBuild {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let mut build = BadBuild {
            latency: Duration::ZERO,
            error_rate: 0.0,
        };
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}` is not KEY=VALUE (latency=150ms, errors=5%)"))?;
            match key.trim() {
                "latency" => {
                    build.latency = humantime::parse_duration(value.trim())
                        .map_err(|e| format!("latency `{value}`: {e}"))?;
                }
                "errors" => {
                    let value = value.trim();
                    build.error_rate = match value.strip_suffix('%') {
                        Some(percent) => percent.trim().parse::<f64>().map(|p| p / 100.0),
                        None => value.parse::<f64>(),
                    }
                    .map_err(|_| format!("errors `{value}` is not a percentage like 5%"))?;
                }
                other => {
                    return Err(format!("unknown key `{other}` (known: latency, errors)"));
                }
            }
        }
        build
            .validate()
            .map_err(|(field, msg)| format!("{field}: {msg}"))?;
        Ok(build)
    }
}

/// Routes a bad build leaves alone.
const UNTOUCHED: [&str; 2] = ["/health", "/metrics"];

/// Wraps `router` so that its responses suffer `build`.
pub fn layer(router: Router, build: BadBuild) -> Router {
    let served = Arc::new(AtomicU64::new(0));
    router.layer(axum::middleware::from_fn(
        move |request: Request<Body>, next: Next| {
            let served = served.clone();
            async move {
                if UNTOUCHED.contains(&request.uri().path()) {
                    return next.run(request).await;
                }
                if !build.latency.is_zero() {
                    tokio::time::sleep(build.latency).await;
                }
                let n = served.fetch_add(1, Ordering::Relaxed);
                if fails(n, build.error_rate) {
                    return (StatusCode::INTERNAL_SERVER_ERROR, "bad build\n").into_response();
                }
                next.run(request).await
            }
        },
    ))
}

/// Whether request `n` (0-based) fails at `rate`: the count of failures among the
/// first `n + 1` grows by one exactly when `⌊(n+1)·rate⌋` does.
fn fails(n: u64, rate: f64) -> bool {
    ((n + 1) as f64 * rate).floor() > (n as f64 * rate).floor()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_cli_form() {
        let b: BadBuild = "latency=150ms,errors=5%".parse().unwrap();
        assert_eq!(b.latency, Duration::from_millis(150));
        assert!((b.error_rate - 0.05).abs() < 1e-12);
        let b: BadBuild = "errors=0.5".parse().unwrap();
        assert_eq!((b.latency, b.error_rate), (Duration::ZERO, 0.5));
        assert!(
            "latency=fast"
                .parse::<BadBuild>()
                .unwrap_err()
                .contains("latency")
        );
        assert!(
            "errors=150%"
                .parse::<BadBuild>()
                .unwrap_err()
                .contains("error_rate")
        );
        assert!(
            "speed=1"
                .parse::<BadBuild>()
                .unwrap_err()
                .contains("unknown key")
        );
    }

    #[test]
    fn errors_are_spread_exactly() {
        let failed = (0..1000).filter(|&n| fails(n, 0.05)).count();
        assert_eq!(failed, 50);
        assert_eq!((0..100).filter(|&n| fails(n, 0.0)).count(), 0);
        assert_eq!((0..100).filter(|&n| fails(n, 1.0)).count(), 100);
        // Evenly: never two failures within 19 requests at 5 %.
        let at: Vec<u64> = (0..1000).filter(|&n| fails(n, 0.05)).collect();
        assert!(at.windows(2).all(|w| w[1] - w[0] == 20));
    }
}
