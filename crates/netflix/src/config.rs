//! The `[netflix]` table of the configuration, validated with [`ConfigError`]s
//! naming the dotted key.

use std::path::PathBuf;
use std::time::Duration;

use casebook_kit::config::ConfigError;
use serde::{Deserialize, Serialize};

/// The `[netflix]` table of the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetflixConfig {
    /// The playback API's port (`netflix-playback`).
    pub playback_port: u16,
    /// The origin's port (`netflix-origin`).
    pub origin_port: u16,
    /// The content pipeline's port (`netflix-pipeline`).
    pub pipeline_port: u16,
    /// Region 0's regional edge port (`netflix-edge`); region *i* adds 100 × *i*.
    pub edge_port: u16,
    /// Region 0's ISP cache port (`netflix-isp`); region *i* adds 100 × *i*.
    pub isp_port: u16,
    /// Bytes the ISP cache keeps in memory.
    pub isp_memory_bytes: u64,
    /// Bytes the regional edge keeps in memory.
    pub edge_memory_bytes: u64,
    /// Bytes the regional edge keeps on disk.
    pub edge_disk_bytes: u64,
    /// The file holding the key that signs playback URLs (made on first use,
    /// mode 0600); default `<data_dir>/netflix/signing.key`.
    pub signing_key_file: Option<PathBuf>,
    /// How long a signed manifest URL from `POST /v1/playback` stays valid.
    #[serde(with = "humantime_serde")]
    pub manifest_ttl: Duration,
    /// How long the playback API reuses the catalog it fetched from the origin.
    #[serde(with = "humantime_serde")]
    pub catalog_ttl: Duration,
    /// How long the playback API steers away from an edge a player reported failed
    /// (default: discovery's lease, so a killed edge is avoided until its
    /// registration expires).
    #[serde(with = "humantime_serde")]
    pub failed_edge_ttl: Duration,
    /// A playback session with no request or event for this long is forgotten.
    #[serde(with = "humantime_serde")]
    pub session_idle: Duration,
    /// Playback sessions held at most (the least recently active one goes first).
    pub max_sessions: usize,
}

/// Region *i*'s CDN ports step by this much.
pub const EDGE_PORT_STRIDE: u16 = 100;

impl Default for NetflixConfig {
    fn default() -> Self {
        Self {
            playback_port: 8081,
            origin_port: 8082,
            pipeline_port: 8083,
            edge_port: 8084,
            isp_port: 8085,
            isp_memory_bytes: 64 << 20,
            edge_memory_bytes: 256 << 20,
            edge_disk_bytes: 2 << 30,
            signing_key_file: None,
            manifest_ttl: Duration::from_secs(6 * 3600),
            catalog_ttl: Duration::from_secs(2),
            failed_edge_ttl: Duration::from_secs(90),
            session_idle: Duration::from_secs(120),
            max_sessions: 100_000,
        }
    }
}

impl NetflixConfig {
    /// Checks every key; the error names the first one at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.isp_memory_bytes < 1 << 20 {
            return Err(ConfigError::new(
                "netflix.isp_memory_bytes",
                "the ISP cache needs at least 1 MiB",
            ));
        }
        if self.edge_memory_bytes < 1 << 20 {
            return Err(ConfigError::new(
                "netflix.edge_memory_bytes",
                "the regional edge needs at least 1 MiB of memory",
            ));
        }
        if self.manifest_ttl < Duration::from_secs(1) || self.manifest_ttl > MAX_MANIFEST_TTL {
            return Err(ConfigError::new(
                "netflix.manifest_ttl",
                "must be between 1s and 7days",
            ));
        }
        if self.catalog_ttl.is_zero() {
            return Err(ConfigError::new("netflix.catalog_ttl", "must be positive"));
        }
        if self.failed_edge_ttl.is_zero() {
            return Err(ConfigError::new(
                "netflix.failed_edge_ttl",
                "must be positive",
            ));
        }
        if self.session_idle < Duration::from_secs(1) {
            return Err(ConfigError::new(
                "netflix.session_idle",
                "must be at least 1s",
            ));
        }
        if !(1..=MAX_SESSIONS).contains(&self.max_sessions) {
            return Err(ConfigError::new(
                "netflix.max_sessions",
                format!("must be 1..={MAX_SESSIONS}"),
            ));
        }
        Ok(())
    }
}

/// The longest a signed manifest URL may live.
pub const MAX_MANIFEST_TTL: Duration = Duration::from_secs(7 * 86_400);
/// The most playback sessions `max_sessions` may allow.
pub const MAX_SESSIONS: usize = 10_000_000;
