//! Regions: cities belong to regions, one `uber` replica per
//! region, driver state gossiped between the replicas over foca.
//!
//! | module | role |
//! |---|---|
//! | [`cities`] | [`RegionMap`]: cities (centre, radius, region) validated against the topology; `region_of` a point = its nearest city's region |
//! | [`evacuated`] | [`RegionalRefusal`]: while the replica's region is evacuated, 503 + `Retry-After` naming a replica serving in another region |
//! | [`gossip`] | [`Replica`]: a last-writer-wins register per driver, disseminated by foca's custom broadcasts; membership and reachability from foca; the [`Transport`] seam (UDP in the service, [`MemNetwork`] with cuts in tests); the isolation switch |
//!
//! The rules the API applies with them ([`crate::api`]): a ride whose pickup is
//! in another region is refused (421, naming the owner); a cross-region ride is
//! accepted while the dropoff's region is reachable and refused (503) while it is
//! not; matching uses only drivers whose latest state is in the replica's region.

pub mod cities;
pub mod evacuated;
pub mod gossip;

use std::sync::Arc;

pub use cities::{City, CityConfig, RegionError, RegionMap, default_cities};
pub use evacuated::RegionalRefusal;
pub use gossip::{
    DriverState, GossipConfig, GossipStats, MemNetwork, MemberView, Register, Replica, Transport,
};

/// What a regional replica knows about regions: the map and its gossip.
#[derive(Debug, Clone)]
pub struct Regional {
    pub map: Arc<RegionMap>,
    pub replica: Arc<Replica>,
}

impl Regional {
    /// This replica's region.
    pub fn region(&self) -> &str {
        self.replica.region()
    }
}
