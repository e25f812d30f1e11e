//! The `[netflix]` table of the configuration, validated with [`ConfigError`]s
//! naming the dotted key.

use std::path::PathBuf;
use std::time::Duration;

use casebook_kit::config::ConfigError;
use serde::{Deserialize, Serialize};

use casebook_edge::gateway::GatewayConfig;

use crate::billing::BillingConfig;
use crate::catalog::CatalogConfig;
use crate::pipeline::ladder::{self, RenditionSpec};
use crate::recs::RecsConfig;
use crate::users::UsersConfig;

/// The `[netflix]` table of the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetflixConfig {
    /// The API gateway's port (`netflix-gateway`), the service plane's front door.
    pub gateway_port: u16,
    /// The user service's port (`netflix-users`).
    pub users_port: u16,
    /// The catalog service's port (`netflix-catalog`).
    pub catalog_port: u16,
    /// The recommendation and search service's port (`netflix-recs`).
    pub recs_port: u16,
    /// The billing service's port (`netflix-billing`).
    pub billing_port: u16,
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
    /// Whether a play through the gateway (one with a caller) needs an active
    /// subscription (checked with billing; allowed when billing cannot answer).
    pub require_subscription: bool,
    /// How long playback reuses billing's answer about an account.
    #[serde(with = "humantime_serde")]
    pub entitlement_ttl: Duration,
    /// Viewing-history records waiting for the user service at most (beyond:
    /// dropped and counted; playback never waits for history).
    pub history_queue: usize,

    // The origin's store and the content pipeline (docs/notes/netflix/pipeline.md).
    /// Where published titles live: unset = `<data_dir>/netflix/origin`; a
    /// directory or `file://` URL; `s3://bucket[/prefix]` in a build with the `s3`
    /// feature (credentials and endpoint from the `AWS_*` environment variables).
    pub origin_store: Option<String>,
    /// `auto` (ffmpeg when found, else the synthetic encoder), `ffmpeg` (refuse to
    /// run without it) or `synthetic`.
    pub encoder: EncoderChoice,
    /// The ffmpeg binary; default `ffmpeg` on the PATH.
    pub ffmpeg: Option<PathBuf>,
    /// The ffprobe binary; default: beside `ffmpeg`, else `ffprobe` on the PATH.
    pub ffprobe: Option<PathBuf>,
    /// x264's preset (speed against size): `ultrafast` … `veryslow`.
    pub x264_preset: String,
    /// The segment duration, whole seconds (HLS's EXT-X-TARGETDURATION).
    #[serde(with = "humantime_serde")]
    pub segment_duration: Duration,
    /// The bitrate ladder, highest first (`[[netflix.ladder]]`: name, height,
    /// video_bps, audio_bps); renditions taller than the source are skipped, keeping
    /// at least three.
    pub ladder: Vec<RenditionSpec>,
    /// The largest upload `POST /v1/titles` takes (streamed to a temporary file).
    pub max_upload_bytes: u64,
    /// Jobs waiting or running at once; `POST /v1/titles` answers 503 beyond.
    pub max_queued_jobs: usize,
    /// Make a sample title when the catalog is empty at the origin's or the
    /// pipeline's start.
    pub sample_title: bool,
    /// The sample title's length.
    #[serde(with = "humantime_serde")]
    pub sample_duration: Duration,

    // The service plane behind the gateway, one table each.
    /// `[netflix.gateway]`: the filter chain and the routes (default: every
    /// service of the case behind `/api/v1/…`).
    pub gateway: GatewayConfig,
    /// `[netflix.users]`: accounts, profiles, viewing history, login.
    pub users: UsersConfig,
    /// `[netflix.catalog]`: the generated catalog and the pipeline's titles.
    pub catalog: CatalogConfig,
    /// `[netflix.recs]`: home rows and search.
    pub recs: RecsConfig,
    /// `[netflix.billing]`: plans, subscriptions and the payment provider.
    pub billing: BillingConfig,
}

/// Which encoder the pipeline uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EncoderChoice {
    /// ffmpeg when it is found, else the synthetic encoder.
    #[default]
    Auto,
    /// ffmpeg, or an error naming what is missing.
    Ffmpeg,
    /// Never ffmpeg: segments of exact sizes that no player decodes.
    Synthetic,
}

/// Region *i*'s CDN ports step by this much.
pub const EDGE_PORT_STRIDE: u16 = 100;

impl Default for NetflixConfig {
    fn default() -> Self {
        Self {
            gateway_port: 8080,
            users_port: 8086,
            catalog_port: 8087,
            recs_port: 8088,
            billing_port: 8089,
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
            require_subscription: true,
            entitlement_ttl: Duration::from_secs(30),
            history_queue: 10_000,
            origin_store: None,
            encoder: EncoderChoice::Auto,
            ffmpeg: None,
            ffprobe: None,
            x264_preset: "veryfast".to_owned(),
            segment_duration: Duration::from_secs(4),
            ladder: ladder::default_ladder(),
            max_upload_bytes: 4 << 30,
            max_queued_jobs: 8,
            sample_title: true,
            sample_duration: Duration::from_secs(60),
            gateway: crate::gateway::default_gateway(),
            users: UsersConfig::default(),
            catalog: CatalogConfig::default(),
            recs: RecsConfig::default(),
            billing: BillingConfig::default(),
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
        if self.entitlement_ttl.is_zero() {
            return Err(ConfigError::new(
                "netflix.entitlement_ttl",
                "must be positive",
            ));
        }
        if !(1..=1_000_000).contains(&self.history_queue) {
            return Err(ConfigError::new(
                "netflix.history_queue",
                "must be 1..=1000000",
            ));
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
        self.validate_pipeline()?;
        self.gateway.validate("netflix.gateway")?;
        self.users.validate("netflix.users")?;
        self.catalog.validate("netflix.catalog")?;
        self.recs.validate("netflix.recs")?;
        self.billing.validate("netflix.billing")
    }

    fn validate_pipeline(&self) -> Result<(), ConfigError> {
        let secs = self.segment_duration.as_secs();
        if self.segment_duration.subsec_nanos() != 0 || !(1..=30).contains(&secs) {
            return Err(ConfigError::new(
                "netflix.segment_duration",
                "must be whole seconds from 1s to 30s",
            ));
        }
        ladder::validate(&self.ladder, "netflix.ladder")?;
        const PRESETS: &[&str] = &[
            "ultrafast",
            "superfast",
            "veryfast",
            "faster",
            "fast",
            "medium",
            "slow",
            "slower",
            "veryslow",
        ];
        if !PRESETS.contains(&self.x264_preset.as_str()) {
            return Err(ConfigError::new(
                "netflix.x264_preset",
                format!("must be one of {}", PRESETS.join(", ")),
            ));
        }
        if self.max_upload_bytes == 0 {
            return Err(ConfigError::new(
                "netflix.max_upload_bytes",
                "must be positive",
            ));
        }
        if !(1..=1024).contains(&self.max_queued_jobs) {
            return Err(ConfigError::new(
                "netflix.max_queued_jobs",
                "must be in 1..=1024",
            ));
        }
        if self.sample_duration < self.segment_duration || self.sample_duration.as_secs() > 3600 {
            return Err(ConfigError::new(
                "netflix.sample_duration",
                "must be at least one segment and at most 1h",
            ));
        }
        Ok(())
    }
}

/// The longest a signed manifest URL may live.
pub const MAX_MANIFEST_TTL: Duration = Duration::from_secs(7 * 86_400);
/// The most playback sessions `max_sessions` may allow.
pub const MAX_SESSIONS: usize = 10_000_000;
