//! The `[netflix]` table of the configuration, validated with [`ConfigError`]s
//! naming the dotted key.

use std::path::PathBuf;

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
        Ok(())
    }
}
