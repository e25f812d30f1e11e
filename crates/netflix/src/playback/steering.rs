//! Steering: which CDN instance a session's manifest URL points at.
//!
//! The order, for a client in region *R* (Open Connect's: the ISP's own cache
//! first, then the nearest internet-exchange site, then farther ones):
//!
//! 1. the `netflix-isp` caches of *R*, then *R*'s `netflix-edge` (regional edge);
//! 2. the same for every other region, in the topology's order.
//!
//! Within one tier of one region, the instance is the session's rendezvous choice
//! (highest-random-weight over the session id), so sessions spread over equal
//! caches and a session's choice is stable while the set is. Instances come from
//! discovery (`UP` only, [`Resolver::all`]), the lists reused for
//! [`CANDIDATES_TTL`] on the injected clock and the last lists kept while
//! discovery is unreachable.
//!
//! **Evacuated regions** (Chaos Kong, or an operator's region override) need
//! nothing here: discovery answers their instances `OUT_OF_SERVICE`, so they
//! leave the lists within [`CANDIDATES_TTL`] and sessions are steered to the next
//! region (`tests/steering_discovery.rs`, against the real discovery API).
//!
//! **Failover**: an instance a player reported failed (a re-POST of its session)
//! is skipped by every session for `failed_edge_ttl` on the injected clock —
//! discovery still lists a killed instance until its lease expires — and by that
//! session for as long as it lives. When every candidate is excluded, the one that
//! failed longest ago is answered rather than nothing.
//!
//! Bounds: at most [`MAX_FAILED`] instances remembered as failed (expired ones go
//! first, then the oldest). Not guaranteed: that the answered instance is alive
//! (discovery's view is seconds old); a client reporting healthy edges as failed
//! moves other sessions off them for the TTL (there is no authentication).

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use casebook_kit::cache::{AsyncCache, CacheConfig};
use casebook_kit::clock::SharedClock;
use casebook_kit::partition::Rendezvous;
use casebook_kit::partition::hashing::stable_hash;
use casebook_kit::resolve::Resolver;
use casebook_kit::topology::{Placement, Topology};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::case::{EDGE_SERVICE, ISP_SERVICE};

/// How long discovery's lists of CDN instances are reused.
pub const CANDIDATES_TTL: Duration = Duration::from_secs(1);
/// The most instances remembered as failed.
pub const MAX_FAILED: usize = 4096;

/// The CDN tier an instance belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// `netflix-isp`: the ISP cache players fetch from.
    Isp,
    /// `netflix-edge`: the regional edge.
    Edge,
}

impl Tier {
    fn service(self) -> &'static str {
        match self {
            Self::Isp => ISP_SERVICE,
            Self::Edge => EDGE_SERVICE,
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Isp => "isp",
            Self::Edge => "edge",
        })
    }
}

/// A CDN instance a session may be steered to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub address: SocketAddr,
    pub region: String,
    pub tier: Tier,
}

/// Why no instance could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SteeringError {
    #[error("no CDN instance is up (neither {ISP_SERVICE} nor {EDGE_SERVICE})")]
    NoInstance,
    #[error("discovery is unreachable and no earlier list is known: {0}")]
    Discovery(String),
}

/// Instances reported failed, each until its report is `ttl` old.
#[derive(Debug)]
struct FailedEdges {
    ttl: Duration,
    clock: SharedClock,
    at: Mutex<HashMap<SocketAddr, Instant>>,
}

impl FailedEdges {
    fn mark(&self, address: SocketAddr) {
        let now = self.clock.now();
        let mut at = self.at.lock();
        if at.len() >= MAX_FAILED && !at.contains_key(&address) {
            at.retain(|_, when| now.saturating_duration_since(*when) < self.ttl);
            if at.len() >= MAX_FAILED
                && let Some(oldest) = at.iter().min_by_key(|(_, when)| **when).map(|(a, _)| *a)
            {
                at.remove(&oldest);
            }
        }
        at.insert(address, now);
    }

    /// When `address` was reported failed, if that is recent.
    fn failed_at(&self, address: &SocketAddr) -> Option<Instant> {
        let now = self.clock.now();
        self.at
            .lock()
            .get(address)
            .copied()
            .filter(|when| now.saturating_duration_since(*when) < self.ttl)
    }
}

type Listed = Arc<Vec<(SocketAddr, Placement)>>;

/// See the module docs.
#[derive(Debug)]
pub struct Steering {
    resolver: Arc<Resolver>,
    topology: Topology,
    failed: FailedEdges,
    lists: AsyncCache<Tier, Listed>,
    last_lists: Mutex<HashMap<Tier, Listed>>,
}

impl Steering {
    /// Steering over the instances `resolver` lists, remembering failures for
    /// `failed_ttl` on `clock`.
    pub fn new(
        resolver: Arc<Resolver>,
        topology: Topology,
        failed_ttl: Duration,
        clock: SharedClock,
    ) -> anyhow::Result<Self> {
        let lists = AsyncCache::new(
            CacheConfig::new("netflix_playback_cdn_instances", 2).time_to_live(CANDIDATES_TTL),
            clock.clone(),
        )?;
        Ok(Self {
            resolver,
            topology,
            failed: FailedEdges {
                ttl: failed_ttl,
                clock,
                at: Mutex::new(HashMap::new()),
            },
            lists,
            last_lists: Mutex::new(HashMap::new()),
        })
    }

    /// The topology's regions.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Remembers `address` as failed (a player could not fetch from it).
    pub fn mark_failed(&self, address: SocketAddr) {
        self.failed.mark(address);
        metrics::counter!("casebook_netflix_playback_edges_reported_failed_total").increment(1);
    }

    /// Whether `address` was reported failed within the TTL.
    pub fn is_failed(&self, address: &SocketAddr) -> bool {
        self.failed.failed_at(address).is_some()
    }

    async fn listed(&self, tier: Tier, near: &Placement) -> Result<Listed, SteeringError> {
        let load = async {
            self.resolver
                .all(tier.service(), near)
                .await
                .map(Arc::new)
                .map_err(|e| e.to_string())
        };
        match self.lists.try_get_or_insert_with(tier, load).await {
            Ok(list) => {
                self.last_lists.lock().insert(tier, list.clone());
                Ok(list)
            }
            Err(error) => self
                .last_lists
                .lock()
                .get(&tier)
                .cloned()
                .ok_or(SteeringError::Discovery(error)),
        }
    }

    /// Every candidate in steering order for a client in `region` and session
    /// `session` (see the module docs), failures not yet excluded.
    pub async fn ranked(
        &self,
        region: &str,
        session: &str,
    ) -> Result<Vec<Candidate>, SteeringError> {
        let near = Placement {
            region: region.to_owned(),
            zone: self
                .topology
                .regions
                .iter()
                .find(|r| r.name == region)
                .and_then(|r| r.zones.first().cloned())
                .unwrap_or_default(),
        };
        let isp = self.listed(Tier::Isp, &near).await;
        let edge = self.listed(Tier::Edge, &near).await;
        let (isp, edge) = match (isp, edge) {
            (Err(e), Err(_)) => return Err(e),
            (isp, edge) => (isp.unwrap_or_default(), edge.unwrap_or_default()),
        };
        let mut regions: Vec<&str> = vec![region];
        regions.extend(
            self.topology
                .regions
                .iter()
                .map(|r| r.name.as_str())
                .filter(|r| *r != region),
        );
        let key = stable_hash(session);
        let mut ranked = Vec::new();
        for r in regions {
            for (tier, list) in [(Tier::Isp, &isp), (Tier::Edge, &edge)] {
                let mut set = Rendezvous::new();
                for (address, _) in list.iter().filter(|(_, p)| p.region == r) {
                    // Weight 1 is always valid; a set past the kit's bound keeps
                    // the instances already in it.
                    let _ = set.insert(*address, 1.0);
                }
                ranked.extend(
                    set.pick_many(key, set.len())
                        .into_iter()
                        .map(|address| Candidate {
                            address: *address,
                            region: r.to_owned(),
                            tier,
                        }),
                );
            }
        }
        Ok(ranked)
    }

    /// The instance for a session: the first of [`ranked`](Self::ranked) neither
    /// reported failed nor in `avoid`; if every one is, the one that failed longest
    /// ago.
    pub async fn steer(
        &self,
        region: &str,
        session: &str,
        avoid: &[SocketAddr],
    ) -> Result<Candidate, SteeringError> {
        let ranked = self.ranked(region, session).await?;
        let excluded = |c: &Candidate| {
            avoid.contains(&c.address) || self.failed.failed_at(&c.address).is_some()
        };
        if let Some(first) = ranked.iter().find(|c| !excluded(c)) {
            return Ok(first.clone());
        }
        // Everything is excluded: better a cache that may have recovered than none.
        ranked
            .into_iter()
            .min_by_key(|c| {
                (
                    avoid.contains(&c.address),
                    self.failed.failed_at(&c.address),
                )
            })
            .ok_or(SteeringError::NoInstance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use casebook_kit::clock::ManualClock;
    use casebook_kit::discovery::DiscoveryError;
    use casebook_kit::resolve::InstanceSource;
    use casebook_kit::runtime::BoxFuture;

    /// Discovery stand-in: fixed instances per service.
    struct Fake(HashMap<&'static str, Vec<(SocketAddr, Placement)>>);

    impl InstanceSource for Fake {
        fn nearest(
            &self,
            service: &str,
            _near: &Placement,
        ) -> BoxFuture<'_, Result<Vec<(SocketAddr, Placement)>, DiscoveryError>> {
            let found = self.0.get(service).cloned().unwrap_or_default();
            Box::pin(async move { Ok(found) })
        }
    }

    fn at(port: u16, region: &str) -> (SocketAddr, Placement) {
        (
            SocketAddr::from(([127, 0, 0, 1], port)),
            Placement {
                region: region.into(),
                zone: format!("{region}-a"),
            },
        )
    }

    fn steering(clock: &ManualClock) -> Steering {
        let fake = Fake(HashMap::from([
            (
                ISP_SERVICE,
                vec![at(1, "us-east"), at(2, "eu-west"), at(3, "eu-west")],
            ),
            (EDGE_SERVICE, vec![at(11, "us-east"), at(12, "eu-west")]),
        ]));
        let resolver = Arc::new(Resolver::detached(clock.shared()));
        resolver.attach(Arc::new(fake));
        Steering::new(
            resolver,
            Topology::default(),
            Duration::from_secs(30),
            clock.shared(),
        )
        .unwrap()
    }

    fn ports(ranked: &[Candidate]) -> Vec<u16> {
        ranked.iter().map(|c| c.address.port()).collect()
    }

    #[tokio::test]
    async fn the_clients_region_isp_first_then_its_edge_then_other_regions() {
        let clock = ManualClock::new();
        let s = steering(&clock);
        let ranked = s.ranked("eu-west", "session-a").await.unwrap();
        let order = ports(&ranked);
        assert_eq!(order.len(), 5);
        assert!(matches!(order[..2], [2, 3] | [3, 2]), "{order:?}");
        assert_eq!(order[2..], [12, 1, 11]);
        assert_eq!(ranked[0].tier, Tier::Isp);
        assert_eq!(ranked[2].tier, Tier::Edge);
        // A region with nothing of its own falls to the others, in topology order.
        let ap = ports(&s.ranked("ap-south", "session-a").await.unwrap());
        assert_eq!(ap[0], 1);
    }

    #[tokio::test]
    async fn equal_caches_share_the_sessions() {
        let clock = ManualClock::new();
        let s = steering(&clock);
        let mut on = HashMap::new();
        for i in 0..200 {
            let c = s.steer("eu-west", &format!("s{i}"), &[]).await.unwrap();
            *on.entry(c.address.port()).or_insert(0) += 1;
        }
        assert_eq!(on.len(), 2, "{on:?}");
        assert!(on.values().all(|n| *n > 50), "{on:?}");
    }

    #[tokio::test]
    async fn a_failed_instance_is_skipped_until_its_report_expires() {
        let clock = ManualClock::new();
        let s = steering(&clock);
        let first = s.steer("us-east", "x", &[]).await.unwrap();
        assert_eq!(first.address.port(), 1);
        s.mark_failed(first.address);
        let next = s.steer("us-east", "x", &[]).await.unwrap();
        assert_eq!((next.address.port(), next.tier), (11, Tier::Edge));
        // Avoided by this session too: the edge of another region.
        let further = s.steer("us-east", "x", &[next.address]).await.unwrap();
        assert_eq!(further.region, "eu-west");
        clock.advance(Duration::from_secs(30));
        assert_eq!(
            s.steer("us-east", "x", &[]).await.unwrap().address.port(),
            1
        );
    }

    #[tokio::test]
    async fn everything_failed_answers_the_oldest_failure() {
        let clock = ManualClock::new();
        let s = steering(&clock);
        for port in [11, 1, 2, 3, 12] {
            s.mark_failed(SocketAddr::from(([127, 0, 0, 1], port)));
            clock.advance(Duration::from_secs(1));
        }
        assert_eq!(
            s.steer("us-east", "x", &[]).await.unwrap().address.port(),
            11
        );
    }
}
