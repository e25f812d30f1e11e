//! Regions × zones, and the identity of a service instance.
//!
//! Every instance lives in exactly one zone of one region; discovery orders answers
//! by it (same zone, then same region, then the rest) and chaos acts on it.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// One region and its availability zones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    /// Region name, e.g. `us-east`.
    pub name: String,
    /// Zone names, e.g. `us-east-a`; unique across the whole topology.
    pub zones: Vec<String>,
}

/// The regions and zones the platform runs in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// The regions, in placement order.
    pub regions: Vec<Region>,
}

impl Default for Topology {
    /// `us-east`, `eu-west`, `ap-south`, three zones (`-a`, `-b`, `-c`) each.
    fn default() -> Self {
        Self::uniform(&["us-east", "eu-west", "ap-south"], 3)
    }
}

/// Why a topology is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    #[error("the topology has no regions")]
    NoRegions,
    #[error("region `{0}` has no zones")]
    NoZones(String),
    #[error("`{0}` is named twice (region and zone names must be unique)")]
    Duplicate(String),
    #[error("name `{0}` is not a valid region or zone name (use 1-63 of a-z, 0-9 and '-')")]
    BadName(String),
}

/// A placement: one zone of one region.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Placement {
    pub region: String,
    pub zone: String,
}

impl Topology {
    /// `regions`, each with `zones_per_region` zones suffixed `-a`, `-b`, ….
    pub fn uniform(regions: &[&str], zones_per_region: usize) -> Self {
        assert!(zones_per_region <= 26, "zones are lettered a-z");
        Self {
            regions: regions
                .iter()
                .map(|r| Region {
                    name: (*r).to_owned(),
                    zones: (0..zones_per_region)
                        .map(|z| format!("{r}-{}", (b'a' + z as u8) as char))
                        .collect(),
                })
                .collect(),
        }
    }

    /// Checks names are valid and unique and nothing is empty.
    pub fn validate(&self) -> Result<(), TopologyError> {
        if self.regions.is_empty() {
            return Err(TopologyError::NoRegions);
        }
        let mut seen = std::collections::HashSet::new();
        for region in &self.regions {
            if region.zones.is_empty() {
                return Err(TopologyError::NoZones(region.name.clone()));
            }
            for name in std::iter::once(&region.name).chain(&region.zones) {
                if !valid_name(name) {
                    return Err(TopologyError::BadName(name.clone()));
                }
                if !seen.insert(name.as_str()) {
                    return Err(TopologyError::Duplicate(name.clone()));
                }
            }
        }
        Ok(())
    }

    /// The region a zone belongs to.
    pub fn region_of(&self, zone: &str) -> Option<&str> {
        self.regions
            .iter()
            .find(|r| r.zones.iter().any(|z| z == zone))
            .map(|r| r.name.as_str())
    }

    /// The position of `region` in placement order (region *i* of a per-region
    /// port plan).
    pub fn region_index(&self, region: &str) -> Option<usize> {
        self.regions.iter().position(|r| r.name == region)
    }

    /// The region names, in placement order.
    pub fn region_names(&self) -> Vec<String> {
        self.regions.iter().map(|r| r.name.clone()).collect()
    }

    /// Whether `zone` is a zone of `region`.
    pub fn contains(&self, region: &str, zone: &str) -> bool {
        self.region_of(zone) == Some(region)
    }

    /// Every placement, region by region, zone by zone.
    pub fn placements(&self) -> impl Iterator<Item = Placement> + '_ {
        self.regions.iter().flat_map(|r| {
            r.zones.iter().map(|z| Placement {
                region: r.name.clone(),
                zone: z.clone(),
            })
        })
    }

    /// The `n`th placement in round-robin over regions first, then zones — so that
    /// consecutive instances of one service spread across regions.
    pub fn spread(&self, n: usize) -> Placement {
        let region = &self.regions[n % self.regions.len()];
        let zone = &region.zones[(n / self.regions.len()) % region.zones.len()];
        Placement {
            region: region.name.clone(),
            zone: zone.clone(),
        }
    }
}

fn valid_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Lifecycle status of an instance, as Eureka names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InstanceStatus {
    /// Taking traffic.
    #[default]
    Up,
    /// Failing its own health checks.
    Down,
    /// Starting, not yet taking traffic.
    Starting,
    /// Deliberately taken out of rotation (e.g. a canary being rolled back).
    OutOfService,
}

impl fmt::Display for InstanceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Up => "UP",
            Self::Down => "DOWN",
            Self::Starting => "STARTING",
            Self::OutOfService => "OUT_OF_SERVICE",
        })
    }
}

/// Who an instance is and where it listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceInfo {
    /// Service name, e.g. `control`, `gateway`, `chat`.
    pub service: String,
    /// Unique instance id, e.g. `chat-us-east-a-1`.
    pub instance_id: String,
    pub region: String,
    pub zone: String,
    /// The main listening address.
    pub address: SocketAddr,
    /// Deployed version, e.g. `0.1.0` or a canary tag.
    pub version: String,
}

impl InstanceInfo {
    /// The instance's base URL for HTTP, e.g. `http://127.0.0.1:7700`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_topology_is_three_regions_of_three_zones() {
        let t = Topology::default();
        t.validate().unwrap();
        assert_eq!(t.regions.len(), 3);
        assert_eq!(t.placements().count(), 9);
        assert_eq!(t.region_of("eu-west-b"), Some("eu-west"));
        assert!(t.contains("ap-south", "ap-south-c"));
        assert!(!t.contains("us-east", "ap-south-c"));
        assert_eq!(t.region_index("ap-south"), Some(2));
        assert_eq!(t.region_index("mars"), None);
        assert_eq!(t.region_names(), ["us-east", "eu-west", "ap-south"]);
    }

    #[test]
    fn spread_visits_every_region_before_reusing_one() {
        let t = Topology::default();
        let regions: Vec<_> = (0..3).map(|n| t.spread(n).region).collect();
        assert_eq!(regions, ["us-east", "eu-west", "ap-south"]);
        assert_eq!(t.spread(3).zone, "us-east-b");
    }

    #[test]
    fn validation_names_what_is_wrong() {
        let mut t = Topology::default();
        t.regions[1].zones[0] = "us-east-a".into();
        assert_eq!(
            t.validate(),
            Err(TopologyError::Duplicate("us-east-a".into()))
        );
        let t = Topology { regions: vec![] };
        assert_eq!(t.validate(), Err(TopologyError::NoRegions));
        let t = Topology::uniform(&["Bad Name"], 1);
        assert!(matches!(t.validate(), Err(TopologyError::BadName(_))));
    }
}
