//! A tier's configuration: where its misses go, how much it holds, how long
//! playlists and 404s stay, how it calls upstream, and its fill schedule.
//!
//! [`TierConfig::validate`] names the field at fault; [`TierConfig::new`] gives the
//! defaults (the ISP cache and the regional edge differ only in sizes and
//! upstream).

use std::time::Duration;

use casebook_kit::config::ConfigError;
use casebook_kit::resilience::stack::ResilienceConfig;

use crate::signing::SigningKey;

/// The least memory a tier may have.
pub const MIN_MEMORY_BYTES: u64 = 1 << 20;
/// The least disk a tier with a disk level may have.
pub const MIN_DISK_BYTES: u64 = 1 << 20;

/// Where a tier fetches its misses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// The nearest `UP` instance of this service (zone, then region, then any).
    Service(String),
    /// A fixed base URL (tests, or an origin outside the platform).
    Url(String),
}

/// Where a scheduled fill learns what to pre-position: a JSON document that is
/// either `{"titles": [...], "keys": [...]}` or the origin's catalog
/// (`[{"id": ...}, ...]`), taken in order (most popular first, when the source
/// ranks them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FillSource {
    /// `path` on the nearest instance of `service`, e.g. the origin's `/v1/titles`.
    Service { service: String, path: String },
    /// A fixed URL.
    Url(String),
}

/// Proactive fill on a schedule, as Open Connect fills its appliances off-peak.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FillSchedule {
    pub source: FillSource,
    /// A round runs this long after the previous one (the first at start-up).
    pub every: Duration,
    /// Rounds run only while the wall clock's UTC hour is in `[start, end)`
    /// (wrapping past midnight when `start > end`); `None`: at any hour.
    pub window_utc_hours: Option<(u8, u8)>,
    /// At most this many titles per round, first ones first.
    pub max_titles: usize,
}

/// One tier's configuration.
#[derive(Debug, Clone)]
pub struct TierConfig {
    /// The service's name, e.g. `netflix-isp`, `netflix-edge`.
    pub service: String,
    pub upstream: Upstream,
    /// Bytes of objects kept in memory.
    pub memory_bytes: u64,
    /// Bytes of objects kept on disk under the instance's data dir (0: none).
    pub disk_bytes: u64,
    /// The key signed URLs are checked with (and playlist URLs re-signed with).
    pub key: SigningKey,
    /// How long a playlist is served before it is fetched again (also its
    /// `Cache-Control: max-age`).
    pub playlist_ttl: Duration,
    /// How long a 404 from upstream is remembered (0: not at all).
    pub negative_ttl: Duration,
    /// The stack upstream calls go through (its retry setting is ignored: see
    /// `upstream.rs`).
    pub resilience: ResilienceConfig,
    /// A fill at most this many bytes per run (0: half the largest level).
    pub fill_max_bytes: u64,
    pub fill: Option<FillSchedule>,
}

impl TierConfig {
    /// A tier with the defaults: 64 MiB of memory, no disk, playlists for 2 s,
    /// 404s for 1 s, a 10 s upstream timeout, 64 upstream calls at once (256
    /// queued), no schedule.
    pub fn new(service: impl Into<String>, upstream: Upstream, key: SigningKey) -> Self {
        let mut resilience = ResilienceConfig::default();
        resilience.timeout.default = Duration::from_secs(10);
        resilience.bulkhead.max_concurrent = 64;
        resilience.bulkhead.max_queue = 256;
        Self {
            service: service.into(),
            upstream,
            memory_bytes: 64 << 20,
            disk_bytes: 0,
            key,
            playlist_ttl: Duration::from_secs(2),
            negative_ttl: Duration::from_secs(1),
            resilience,
            fill_max_bytes: 0,
            fill: None,
        }
    }

    /// Checks every field; the error names the first one at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.memory_bytes < MIN_MEMORY_BYTES {
            return Err(ConfigError::new(
                "memory_bytes",
                "a tier needs at least 1 MiB of memory",
            ));
        }
        if self.disk_bytes != 0 && self.disk_bytes < MIN_DISK_BYTES {
            return Err(ConfigError::new(
                "disk_bytes",
                "0 (no disk) or at least 1 MiB",
            ));
        }
        if self.playlist_ttl.is_zero() {
            return Err(ConfigError::new("playlist_ttl", "must be positive"));
        }
        match &self.upstream {
            Upstream::Url(url) if !(url.starts_with("http://") || url.starts_with("https://")) => {
                return Err(ConfigError::new(
                    "upstream",
                    "a URL starts with http:// or https://",
                ));
            }
            Upstream::Service(name) if name.is_empty() => {
                return Err(ConfigError::new("upstream", "a service name"));
            }
            _ => {}
        }
        if let Some(fill) = &self.fill {
            if fill.every.is_zero() {
                return Err(ConfigError::new("fill.every", "must be positive"));
            }
            if fill.max_titles == 0 {
                return Err(ConfigError::new("fill.max_titles", "must be at least 1"));
            }
            if let Some((start, end)) = fill.window_utc_hours
                && (start > 23 || end > 23 || start == end)
            {
                return Err(ConfigError::new(
                    "fill.window_utc_hours",
                    "two different hours in 0..=23",
                ));
            }
        }
        Ok(())
    }

    /// The most bytes one fill run fetches.
    pub fn fill_budget(&self) -> u64 {
        if self.fill_max_bytes > 0 {
            self.fill_max_bytes
        } else {
            self.memory_bytes.max(self.disk_bytes) / 2
        }
    }
}

impl FillSchedule {
    /// Whether a round may run at UTC hour `hour`.
    pub fn in_window(&self, hour: u8) -> bool {
        match self.window_utc_hours {
            None => true,
            Some((start, end)) if start < end => (start..end).contains(&hour),
            Some((start, end)) => hour >= start || hour < end,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> TierConfig {
        TierConfig::new(
            "t",
            Upstream::Url("http://127.0.0.1:1".into()),
            SigningKey::from_bytes(vec![1; 32]).unwrap(),
        )
    }

    #[test]
    fn defaults_validate_and_bad_fields_are_named() {
        assert!(config().validate().is_ok());
        let mut c = config();
        c.memory_bytes = 10;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("memory_bytes")
        );
        let mut c = config();
        c.disk_bytes = 10;
        assert!(c.validate().unwrap_err().to_string().contains("disk_bytes"));
        let mut c = config();
        c.upstream = Upstream::Url("ftp://x".into());
        assert!(c.validate().unwrap_err().to_string().contains("upstream"));
        let mut c = config();
        c.fill = Some(FillSchedule {
            source: FillSource::Url("http://x".into()),
            every: Duration::from_secs(1),
            window_utc_hours: Some((3, 3)),
            max_titles: 1,
        });
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("fill.window_utc_hours")
        );
    }

    #[test]
    fn fill_windows_wrap_past_midnight() {
        let mut s = FillSchedule {
            source: FillSource::Url("http://x".into()),
            every: Duration::from_secs(1),
            window_utc_hours: Some((2, 6)),
            max_titles: 1,
        };
        assert!(s.in_window(2) && s.in_window(5));
        assert!(!s.in_window(6) && !s.in_window(1));
        s.window_utc_hours = Some((22, 4));
        assert!(s.in_window(23) && s.in_window(0) && s.in_window(3));
        assert!(!s.in_window(4) && !s.in_window(21));
        s.window_utc_hours = None;
        assert!(s.in_window(12));
    }
}
