//! Latency Monkey's side of the fault proxy: what to inject ([`LatencySpec`]) and
//! the seam ([`LatencyInjector`]) through which it is put in front of a service's
//! instances. The control plane's fault proxy (Toxiproxy-compatible) implements the
//! trait; this module only defines it and a recording fake for tests.
//!
//! **Guaranteed.** A spec is validated before anything is injected (every error
//! names its field); the experiment removes what it injected on every way out
//! (end, abort, error, shutdown), calling [`LatencyInjector::remove`] with the
//! handle `inject` returned. **Not guaranteed:** anything about how the injector
//! realises the spec (that is the proxy's contract), nor removal after the control
//! plane itself is killed.

use std::fmt;
use std::sync::Arc;

use casebook_kit::config::ConfigError;
use casebook_kit::runtime::BoxFuture;
use casebook_kit::topology::InstanceInfo;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// The most latency or jitter one spec adds, in milliseconds.
pub const MAX_LATENCY_MS: u64 = 60_000;
/// The longest timeout toxic, in milliseconds.
pub const MAX_TIMEOUT_MS: u64 = 600_000;

/// What Latency Monkey does to a service's traffic (Toxiproxy's toxics, in one
/// spec). At least one effect must be asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencySpec {
    /// The service whose instances get a proxy in front of them.
    pub service: String,
    /// Added to every response (Toxiproxy `latency.latency`).
    #[serde(default)]
    pub latency_ms: u64,
    /// ± this much around `latency_ms` (Toxiproxy `latency.jitter`).
    #[serde(default)]
    pub jitter_ms: u64,
    /// The fraction of connections failed, 0 to 1 (the toxics' `toxicity`).
    #[serde(default)]
    pub error_rate: f64,
    /// Whether a failed connection is reset (`reset_peer`) rather than delayed.
    #[serde(default)]
    pub reset: bool,
    /// Caps throughput, KB/s (Toxiproxy `bandwidth.rate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_kbps: Option<u64>,
    /// Stops passing data and closes after this long (Toxiproxy `timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

impl LatencySpec {
    /// Checks every field; the error names the key under `at` (e.g. `fault`).
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let key = |field: &str| {
            if at.is_empty() {
                field.to_owned()
            } else {
                format!("{at}.{field}")
            }
        };
        if self.latency_ms > MAX_LATENCY_MS {
            return Err(ConfigError::new(
                key("latency_ms"),
                format!("at most {MAX_LATENCY_MS} ms"),
            ));
        }
        if self.jitter_ms > MAX_LATENCY_MS {
            return Err(ConfigError::new(
                key("jitter_ms"),
                format!("at most {MAX_LATENCY_MS} ms"),
            ));
        }
        // `!(..)` so NaN is refused too.
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err(ConfigError::new(
                key("error_rate"),
                format!("a fraction from 0 to 1, got {}", self.error_rate),
            ));
        }
        if self.bandwidth_kbps == Some(0) {
            return Err(ConfigError::new(
                key("bandwidth_kbps"),
                "0 would stop all traffic; use timeout_ms for that",
            ));
        }
        if self.timeout_ms.is_some_and(|t| t > MAX_TIMEOUT_MS) {
            return Err(ConfigError::new(
                key("timeout_ms"),
                format!("at most {MAX_TIMEOUT_MS} ms"),
            ));
        }
        if self.reset && self.error_rate == 0.0 {
            return Err(ConfigError::new(
                key("error_rate"),
                "`reset` needs an error_rate above 0 (the fraction of connections reset)",
            ));
        }
        let effect = self.latency_ms > 0
            || self.jitter_ms > 0
            || self.error_rate > 0.0
            || self.bandwidth_kbps.is_some()
            || self.timeout_ms.is_some();
        if !effect {
            return Err(ConfigError::new(
                key("latency_ms"),
                "no effect asked for: set latency_ms, jitter_ms, error_rate, bandwidth_kbps or timeout_ms",
            ));
        }
        Ok(())
    }
}

/// What an injection left in place, to remove it later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LatencyHandle {
    /// The injector's own id of the injection.
    pub id: String,
    pub service: String,
    /// The instances it stands in front of.
    pub instances: Vec<String>,
}

/// Why an injection or its removal failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InjectError(pub String);

/// Puts a [`LatencySpec`] in front of a service's instances and takes it away.
/// Implemented over the fault proxy by whoever wires the control plane.
pub trait LatencyInjector: Send + Sync + fmt::Debug + 'static {
    /// Injects `spec` in front of `instances` (the service's live instances, never
    /// empty); the handle is what [`Self::remove`] gets back.
    fn inject<'a>(
        &'a self,
        spec: &'a LatencySpec,
        instances: &'a [InstanceInfo],
    ) -> BoxFuture<'a, Result<LatencyHandle, InjectError>>;

    /// Removes what `inject` put in place; removing twice is not an error.
    fn remove<'a>(&'a self, handle: &'a LatencyHandle) -> BoxFuture<'a, Result<(), InjectError>>;
}

/// An injector that records what it is asked (tests, and a dry run).
#[derive(Debug, Default)]
pub struct RecordingInjector {
    state: Mutex<Recorded>,
}

/// What a [`RecordingInjector`] saw.
#[derive(Debug, Default, Clone)]
pub struct Recorded {
    /// Injections in force, by handle id.
    pub active: Vec<(LatencyHandle, LatencySpec)>,
    pub injected: usize,
    pub removed: usize,
    /// When set, `inject` fails with this message.
    pub fail_inject: Option<String>,
}

impl RecordingInjector {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn recorded(&self) -> Recorded {
        self.state.lock().clone()
    }

    /// Makes every later `inject` fail with `message`.
    pub fn fail_with(&self, message: &str) {
        self.state.lock().fail_inject = Some(message.to_owned());
    }
}

impl LatencyInjector for RecordingInjector {
    fn inject<'a>(
        &'a self,
        spec: &'a LatencySpec,
        instances: &'a [InstanceInfo],
    ) -> BoxFuture<'a, Result<LatencyHandle, InjectError>> {
        Box::pin(async move {
            let mut state = self.state.lock();
            if let Some(message) = &state.fail_inject {
                return Err(InjectError(message.clone()));
            }
            state.injected += 1;
            let handle = LatencyHandle {
                id: format!("fake-{}", state.injected),
                service: spec.service.clone(),
                instances: instances.iter().map(|i| i.instance_id.clone()).collect(),
            };
            state.active.push((handle.clone(), spec.clone()));
            Ok(handle)
        })
    }

    fn remove<'a>(&'a self, handle: &'a LatencyHandle) -> BoxFuture<'a, Result<(), InjectError>> {
        Box::pin(async move {
            let mut state = self.state.lock();
            let before = state.active.len();
            state.active.retain(|(h, _)| h.id != handle.id);
            if state.active.len() < before {
                state.removed += 1;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> LatencySpec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_spec_needs_an_effect_and_names_the_bad_field() {
        let ok = spec(serde_json::json!({"service": "uber", "latency_ms": 200, "jitter_ms": 50}));
        ok.validate("fault").unwrap();
        let none = spec(serde_json::json!({"service": "uber"}));
        assert_eq!(
            none.validate("fault").unwrap_err().key(),
            "fault.latency_ms"
        );
        let rate = spec(serde_json::json!({"service": "uber", "error_rate": 1.5}));
        assert_eq!(
            rate.validate("fault").unwrap_err().key(),
            "fault.error_rate"
        );
        let reset = spec(serde_json::json!({"service": "uber", "reset": true}));
        assert_eq!(reset.validate("").unwrap_err().key(), "error_rate");
        let band = spec(serde_json::json!({"service": "uber", "bandwidth_kbps": 0}));
        assert_eq!(band.validate("").unwrap_err().key(), "bandwidth_kbps");
        let err = serde_json::from_value::<LatencySpec>(
            serde_json::json!({"service": "uber", "latencyms": 3}),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("latencyms"), "{err}");
    }
}
