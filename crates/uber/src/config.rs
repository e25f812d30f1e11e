//! The `[uber]` table of the configuration: the case's ports and limits, validated
//! with errors that start with the dotted key.

use serde::{Deserialize, Serialize};

use crate::region::{CityConfig, RegionMap, default_cities};

/// The `[uber]` table of the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UberConfig {
    /// The RESP port (Redis's is 6379; ours defaults to 6380).
    pub resp_port: u16,
    /// Most simultaneous RESP connections (Redis's `maxclients`, 10,000).
    pub resp_max_clients: usize,
    /// The RESP key served live from the driver index (empty: none).
    pub resp_live_key: String,
    /// The HTTP API's port (`uber` service): ingest, rides, trips.
    pub http_port: u16,
    /// The surge pricing service's port (`pricing`): signals, multipliers, quotes.
    pub pricing_port: u16,
    /// Where the `uber` service finds pricing (`casebook up` passes the address
    /// of the instance it started instead).
    pub pricing_url: String,
    /// Most updates in one `POST /v1/locations` (more: 413).
    pub max_location_batch: usize,
    /// The city trips are recorded in.
    pub city: String,
    /// A driver silent this many seconds leaves the available set.
    pub driver_stale_secs: u64,
    /// Seconds between snapshots of the driver index (a restart replays the
    /// location log only from the last one on).
    pub location_snapshot_secs: u64,
    /// The UDP port of region 0's replica gossip (foca); region *i* uses
    /// `gossip_port + i`. 0: a free port each (replicas of one process find
    /// each other in-process).
    pub gossip_port: u16,
    /// The cities and the region each belongs to (`[[uber.cities]]`): a ride
    /// belongs to the region of the city nearest its pickup.
    pub cities: Vec<CityConfig>,
    /// Largest RESP request in bytes (Redis's `proto-max-bulk-len` is 512 MB);
    /// beyond it the client gets a protocol error and is closed.
    pub resp_max_request_bytes: usize,
    /// Request bytes all RESP connections together may buffer; a connection
    /// whose partial request would pass it is told so and closed.
    pub resp_buffer_budget_bytes: usize,
    /// A RESP connection silent this long is closed (`"0s"`: never).
    #[serde(with = "humantime_serde")]
    pub resp_idle_timeout: std::time::Duration,
    /// Estimated bytes of stored geo data above which RESP writes get Redis's
    /// OOM error (0: no limit).
    pub resp_maxmemory_bytes: usize,
}

/// Most RESP connections one process may be configured for (the machine allows
/// 20,000 open files per process; the rest of the platform needs some).
pub const MAX_RESP_CLIENTS: usize = 15_000;

/// `base + offset`, the port of a region's instance; 0 (free ports) stays 0;
/// `None` beyond 65535.
pub fn regional_port(base: u16, offset: usize) -> Option<u16> {
    if base == 0 {
        return Some(0);
    }
    u16::try_from(offset).ok().and_then(|o| base.checked_add(o))
}

impl Default for UberConfig {
    fn default() -> Self {
        Self {
            resp_port: 6380,
            resp_max_clients: 10_000,
            resp_live_key: "drivers".to_owned(),
            http_port: 8090,
            pricing_port: 8091,
            pricing_url: "http://127.0.0.1:8091".to_owned(),
            max_location_batch: 10_000,
            city: "sf".to_owned(),
            driver_stale_secs: 30,
            location_snapshot_secs: 10,
            gossip_port: 7946,
            cities: default_cities(),
            resp_max_request_bytes: 4 * 1024 * 1024,
            resp_buffer_budget_bytes: 256 * 1024 * 1024,
            resp_idle_timeout: std::time::Duration::from_secs(300),
            resp_maxmemory_bytes: 512 * 1024 * 1024,
        }
    }
}

impl UberConfig {
    /// Checks every bound; the error starts with the dotted key.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_RESP_CLIENTS).contains(&self.resp_max_clients) {
            return Err(format!(
                "uber.resp_max_clients: must be in 1..={MAX_RESP_CLIENTS}"
            ));
        }
        if self.resp_live_key.len() > 256 {
            return Err("uber.resp_live_key: must be at most 256 bytes".to_owned());
        }
        if !(1..=crate::index::MAX_BATCH).contains(&self.max_location_batch) {
            return Err(format!(
                "uber.max_location_batch: must be in 1..={}",
                crate::index::MAX_BATCH
            ));
        }
        let city_ok = (1..=64).contains(&self.city.len())
            && self
                .city
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !city_ok {
            return Err("uber.city: must be 1-64 characters from [A-Za-z0-9._-]".to_owned());
        }
        if !(1..=86_400).contains(&self.driver_stale_secs) {
            return Err("uber.driver_stale_secs: must be in 1..=86400".to_owned());
        }
        if !(1..=3_600).contains(&self.location_snapshot_secs) {
            return Err("uber.location_snapshot_secs: must be in 1..=3600".to_owned());
        }
        if !(self.pricing_url.starts_with("http://") || self.pricing_url.starts_with("https://")) {
            return Err(format!(
                "uber.pricing_url: must start with http:// or https://, got {:?}",
                self.pricing_url
            ));
        }
        if self.http_port != 0 && self.http_port == self.resp_port {
            return Err("uber.http_port: must differ from resp_port".to_owned());
        }
        if self.pricing_port != 0
            && (self.pricing_port == self.http_port || self.pricing_port == self.resp_port)
        {
            return Err("uber.pricing_port: must differ from http_port and resp_port".to_owned());
        }
        crate::resp::limits::validate_config(self)?;
        Ok(())
    }

    /// Region *i*'s API port (`http_port + 100 i`, like the chat nodes; 0 stays 0).
    pub fn http_port_of(&self, index: usize) -> u16 {
        regional_port(self.http_port, index.saturating_mul(100))
            .expect("http ports validated by validate_regions")
    }

    /// Region *i*'s gossip port (`gossip_port + i`; 0 stays 0).
    pub fn gossip_port_of(&self, index: usize) -> u16 {
        regional_port(self.gossip_port, index).expect("gossip ports validated by validate_regions")
    }

    /// Checks the regional settings against the topology's `regions` and
    /// returns the map; the error starts with the dotted key.
    pub fn validate_regions(&self, regions: &[String]) -> Result<RegionMap, String> {
        let last = u64::from(self.gossip_port) + regions.len().saturating_sub(1) as u64;
        if self.gossip_port != 0 && last > u64::from(u16::MAX) {
            return Err(format!(
                "uber.gossip_port: {} regions need ports up to {last}, beyond 65535",
                regions.len()
            ));
        }
        let last = u64::from(self.http_port) + 100 * regions.len().saturating_sub(1) as u64;
        if self.http_port != 0 && last > u64::from(u16::MAX) {
            return Err(format!(
                "uber.http_port: {} regions need ports up to {last}, beyond 65535",
                regions.len()
            ));
        }
        RegionMap::new(&self.cities, regions).map_err(|e| format!("uber.{e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regions() -> Vec<String> {
        ["us-east", "eu-west", "ap-south"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    }

    #[test]
    fn regional_ports_step_and_bad_regions_are_named() {
        let config = UberConfig::default();
        let map = config.validate_regions(&regions()).unwrap();
        assert_eq!(map.regions(), regions().as_slice());
        assert_eq!(
            (0..3).map(|i| config.http_port_of(i)).collect::<Vec<_>>(),
            [8090, 8190, 8290]
        );
        assert_eq!(
            (0..3).map(|i| config.gossip_port_of(i)).collect::<Vec<_>>(),
            [7946, 7947, 7948]
        );
        let free = UberConfig {
            http_port: 0,
            gossip_port: 0,
            ..UberConfig::default()
        };
        assert_eq!((free.http_port_of(2), free.gossip_port_of(2)), (0, 0));
        let high = UberConfig {
            http_port: 65_400,
            ..UberConfig::default()
        };
        let e = high.validate_regions(&regions()).unwrap_err();
        assert!(e.starts_with("uber.http_port:"), "{e}");
        let e = config
            .validate_regions(&["us-east".to_owned()])
            .unwrap_err();
        assert!(e.starts_with("uber.cities[3].region:"), "{e}");
    }
}
