//! The `[uber]` table of the configuration: the case's ports and limits, validated
//! with [`ConfigError`]s naming the dotted key. Durations are humantime strings
//! (`driver_stale = "30s"`).

use std::time::Duration;

use casebook_kit::config::ConfigError;
use casebook_kit::ports::PortPlan;
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
    /// The surge pricing service's port (`uber-pricing`): signals, multipliers, quotes.
    pub pricing_port: u16,
    /// Most updates in one `POST /v1/locations` (more: 413).
    pub max_location_batch: usize,
    /// The city trips are recorded in.
    pub city: String,
    /// A driver silent this long leaves the available set (1 s to 1 day).
    #[serde(with = "humantime_serde")]
    pub driver_stale: Duration,
    /// Time between snapshots of the driver index (a restart replays the
    /// location log only from the last one on; 1 s to 1 h).
    #[serde(with = "humantime_serde")]
    pub location_snapshot: Duration,
    /// How far ahead of the server's clock a driver's timestamp may be (at
    /// most 1 day): latest wins by that timestamp, so a later one is refused
    /// (400 naming `ts`) rather than freezing the driver.
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
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

/// Region *i*'s API port is `http_port + HTTP_PORT_STRIDE × i` (like the chat nodes).
pub const HTTP_PORT_STRIDE: u16 = 100;
/// Region *i*'s gossip port is `gossip_port + i`.
pub const GOSSIP_PORT_STRIDE: u16 = 1;

impl Default for UberConfig {
    fn default() -> Self {
        Self {
            resp_port: 6380,
            resp_max_clients: 10_000,
            resp_live_key: "drivers".to_owned(),
            http_port: 8090,
            pricing_port: 8091,
            max_location_batch: 10_000,
            city: "sf".to_owned(),
            driver_stale: Duration::from_secs(30),
            location_snapshot: Duration::from_secs(10),
            max_clock_skew: Duration::from_secs(300),
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
    /// Checks every bound; the error names the dotted key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_RESP_CLIENTS).contains(&self.resp_max_clients) {
            return Err(ConfigError::new(
                "uber.resp_max_clients",
                format!("must be in 1..={MAX_RESP_CLIENTS}"),
            ));
        }
        if self.resp_live_key.len() > 256 {
            return Err(ConfigError::new(
                "uber.resp_live_key",
                "must be at most 256 bytes",
            ));
        }
        if !(1..=crate::index::MAX_BATCH).contains(&self.max_location_batch) {
            return Err(ConfigError::new(
                "uber.max_location_batch",
                format!("must be in 1..={}", crate::index::MAX_BATCH),
            ));
        }
        let city_ok = (1..=64).contains(&self.city.len())
            && self
                .city
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !city_ok {
            return Err(ConfigError::new(
                "uber.city",
                "must be 1-64 characters from [A-Za-z0-9._-]",
            ));
        }
        let second = Duration::from_secs(1);
        if !(second..=Duration::from_secs(86_400)).contains(&self.driver_stale) {
            return Err(ConfigError::new(
                "uber.driver_stale",
                "must be between 1s and 1day",
            ));
        }
        if !(second..=Duration::from_secs(3_600)).contains(&self.location_snapshot) {
            return Err(ConfigError::new(
                "uber.location_snapshot",
                "must be between 1s and 1h",
            ));
        }
        if self.max_clock_skew > crate::index::MAX_CLOCK_SKEW {
            return Err(ConfigError::new(
                "uber.max_clock_skew",
                "must be at most 1day",
            ));
        }
        if self.http_port != 0 && self.http_port == self.resp_port {
            return Err(ConfigError::new(
                "uber.http_port",
                "must differ from resp_port",
            ));
        }
        if self.pricing_port != 0
            && (self.pricing_port == self.http_port || self.pricing_port == self.resp_port)
        {
            return Err(ConfigError::new(
                "uber.pricing_port",
                "must differ from http_port and resp_port",
            ));
        }
        crate::resp::limits::validate_config(self)?;
        Ok(())
    }

    /// The API's ports across regions.
    pub fn http_ports(&self) -> PortPlan {
        PortPlan::new(self.http_port, HTTP_PORT_STRIDE)
    }

    /// The gossip's UDP ports across regions.
    pub fn gossip_ports(&self) -> PortPlan {
        PortPlan::new(self.gossip_port, GOSSIP_PORT_STRIDE)
    }

    /// Region *i*'s API port (0 stays 0).
    pub fn http_port_of(&self, index: usize) -> u16 {
        self.http_ports()
            .port(index)
            .expect("http ports validated by validate_regions")
    }

    /// Region *i*'s gossip port (0 stays 0).
    pub fn gossip_port_of(&self, index: usize) -> u16 {
        self.gossip_ports()
            .port(index)
            .expect("gossip ports validated by validate_regions")
    }

    /// Checks the regional settings against the topology's `regions` and
    /// returns the map; the error names the dotted key.
    pub fn validate_regions(&self, regions: &[String]) -> Result<RegionMap, ConfigError> {
        self.gossip_ports()
            .check("uber.gossip_port", regions.len())?;
        self.http_ports().check("uber.http_port", regions.len())?;
        RegionMap::new(&self.cities, regions).map_err(|e| {
            // The map's errors start with their key below `uber.`.
            let text = e.to_string();
            match text.split_once(": ") {
                Some((key, message)) => ConfigError::new(format!("uber.{key}"), message),
                None => ConfigError::new("uber.cities", text),
            }
        })
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
        assert_eq!(e.key(), "uber.http_port", "{e}");
        let e = config
            .validate_regions(&["us-east".to_owned()])
            .unwrap_err();
        assert_eq!(e.key(), "uber.cities[3].region", "{e}");
    }

    #[test]
    fn durations_are_humantime_and_bad_ones_name_their_key() {
        let config: UberConfig = serde_json::from_str(
            r#"{"driver_stale": "45s", "location_snapshot": "2m", "max_clock_skew": "1m"}"#,
        )
        .unwrap();
        assert_eq!(config.driver_stale, Duration::from_secs(45));
        assert_eq!(config.location_snapshot, Duration::from_secs(120));
        assert_eq!(config.max_clock_skew, Duration::from_secs(60));
        assert!(serde_json::from_str::<UberConfig>(r#"{"driver_stale_secs": 30}"#).is_err());
        for (bad, key) in [
            (
                UberConfig {
                    driver_stale: Duration::ZERO,
                    ..UberConfig::default()
                },
                "uber.driver_stale",
            ),
            (
                UberConfig {
                    location_snapshot: Duration::from_secs(7_200),
                    ..UberConfig::default()
                },
                "uber.location_snapshot",
            ),
            (
                UberConfig {
                    max_clock_skew: Duration::from_secs(86_401),
                    ..UberConfig::default()
                },
                "uber.max_clock_skew",
            ),
        ] {
            assert_eq!(bad.validate().unwrap_err().key(), key);
        }
    }
}
