//! How instances find each other: discovery, zone-aware, with a cached resolution.
//!
//! A caller asks [`Resolver::resolve`] for a service from its own placement; the
//! answer is the nearest `UP` instance (same zone, then same region, then the rest,
//! as discovery orders them), rotating among the equally near ones. The answer for a
//! (service, zone) pair is cached for [`Resolver::ttl`] on the injected clock, so a
//! busy caller asks discovery about once per TTL, not once per call. When discovery
//! cannot be reached, a cached answer is served past its TTL (availability over
//! freshness: the instances it names were alive a moment ago) for at most
//! [`STALE_LIMIT`]; a caller that found an address dead calls [`Resolver::forget`].
//!
//! The same code serves `casebook up` (everything in one process) and
//! `casebook serve` (one instance per process): the resolver starts detached and is
//! attached to the control plane's discovery once its address is known.
//!
//! **Traffic shares.** An instance registered with the metadata
//! [`TRAFFIC_SHARE_KEY`]` = "0.05"` (a canary, a baseline) takes that share of a
//! caller's resolutions of its service wherever it is placed, and the nearest
//! group shares the rest. The choice is deterministic (a low-discrepancy sequence
//! over the resolver's calls), so over `n` calls each shared instance is chosen
//! `share × n` times give or take one. Shares above a total of 1 are cut to it;
//! a service whose every instance has a share rotates among them.
//!
//! Bounds: one cache entry per (service, zone) asked for; at most
//! [`MAX_CACHED_ADDRESSES`] addresses per entry.

use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use crate::clock::SharedClock;
use crate::discovery::{DiscoveryClient, DiscoveryError};
use crate::runtime::BoxFuture;
use crate::topology::{InstanceStatus, Placement};

/// How long a resolution is reused before discovery is asked again.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5);
/// How long past its TTL a resolution is still served while discovery is unreachable.
pub const STALE_LIMIT: Duration = Duration::from_secs(300);
/// Most addresses kept for one (service, zone).
pub const MAX_CACHED_ADDRESSES: usize = 64;

/// The discovery metadata key of an instance's traffic share (a fraction, `0..=1`).
pub const TRAFFIC_SHARE_KEY: &str = "traffic_share";

/// One instance as the resolver weighs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub address: SocketAddr,
    pub placement: Placement,
    /// Its fixed share of the service's traffic, if it has one.
    pub share: Option<f64>,
}

/// Where the resolver learns about instances: discovery, or a fake in tests.
pub trait InstanceSource: Send + Sync + 'static {
    /// The `UP` instances' addresses for `service`, nearest to `near` first.
    fn nearest(
        &self,
        service: &str,
        near: &Placement,
    ) -> BoxFuture<'_, Result<Vec<(SocketAddr, Placement)>, DiscoveryError>>;

    /// The same with each instance's traffic share; by default none has one.
    fn weighted(
        &self,
        service: &str,
        near: &Placement,
    ) -> BoxFuture<'_, Result<Vec<Candidate>, DiscoveryError>> {
        let found = self.nearest(service, near);
        Box::pin(async move {
            Ok(found
                .await?
                .into_iter()
                .map(|(address, placement)| Candidate {
                    address,
                    placement,
                    share: None,
                })
                .collect())
        })
    }
}

/// The share an instance's metadata gives it, if a valid one.
pub fn share_of(metadata: &std::collections::BTreeMap<String, String>) -> Option<f64> {
    metadata
        .get(TRAFFIC_SHARE_KEY)
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| (0.0..=1.0).contains(s))
}

impl InstanceSource for DiscoveryClient {
    fn nearest(
        &self,
        service: &str,
        near: &Placement,
    ) -> BoxFuture<'_, Result<Vec<(SocketAddr, Placement)>, DiscoveryError>> {
        let service = service.to_owned();
        let near = near.clone();
        Box::pin(async move {
            let views = self.instances(&service, Some(&near)).await?;
            Ok(views
                .into_iter()
                .filter(|v| v.status == InstanceStatus::Up)
                .map(|v| {
                    (
                        v.instance.address,
                        Placement {
                            region: v.instance.region,
                            zone: v.instance.zone,
                        },
                    )
                })
                .collect())
        })
    }

    fn weighted(
        &self,
        service: &str,
        near: &Placement,
    ) -> BoxFuture<'_, Result<Vec<Candidate>, DiscoveryError>> {
        let service = service.to_owned();
        let near = near.clone();
        Box::pin(async move {
            let views = self.instances(&service, Some(&near)).await?;
            Ok(views
                .into_iter()
                .filter(|v| v.status == InstanceStatus::Up)
                .map(|v| Candidate {
                    share: share_of(&v.metadata),
                    address: v.instance.address,
                    placement: Placement {
                        region: v.instance.region,
                        zone: v.instance.zone,
                    },
                })
                .collect())
        })
    }
}

/// Why a service could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no discovery attached yet: cannot resolve `{0}`")]
    Detached(String),
    #[error("no UP instance of `{0}` is registered")]
    NoInstance(String),
    #[error("discovery is unreachable while resolving `{service}`: {source}")]
    Discovery {
        service: String,
        #[source]
        source: DiscoveryError,
    },
}

#[derive(Clone)]
struct Group {
    /// The nearest group of instances without a share: every address as near as
    /// the first one.
    addresses: Vec<SocketAddr>,
    /// Instances with a fixed share, wherever placed; shares sum to at most 1.
    shared: Vec<(SocketAddr, f64)>,
}

impl Group {
    fn is_empty(&self) -> bool {
        self.addresses.is_empty() && self.shared.is_empty()
    }
}

struct Cached {
    group: Group,
    fetched: Instant,
}

/// Zone-aware, cached service resolution through discovery. Cheap to share.
pub struct Resolver {
    source: RwLock<Option<Arc<dyn InstanceSource>>>,
    clock: SharedClock,
    ttl: Duration,
    cache: Mutex<HashMap<(String, String), Cached>>,
    next: AtomicUsize,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("attached", &self.source.read().is_some())
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Resolver {
    /// A resolver with no discovery yet (every resolution fails until
    /// [`attach`](Self::attach)).
    pub fn detached(clock: SharedClock) -> Self {
        Self {
            source: RwLock::new(None),
            clock,
            ttl: DEFAULT_TTL,
            cache: Mutex::new(HashMap::new()),
            next: AtomicUsize::new(0),
        }
    }

    /// The same, caching answers for `ttl`.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How long an answer is reused.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Resolves through `source` from now on (and forgets earlier answers).
    pub fn attach(&self, source: Arc<dyn InstanceSource>) {
        *self.source.write() = Some(source);
        self.cache.lock().clear();
    }

    /// Whether a source is attached.
    pub fn is_attached(&self) -> bool {
        self.source.read().is_some()
    }

    /// The address of the nearest `UP` instance of `service` as seen from `near`.
    /// An unspecified bind address (`0.0.0.0`) is answered as loopback.
    pub async fn resolve(
        &self,
        service: &str,
        near: &Placement,
    ) -> Result<SocketAddr, ResolveError> {
        let key = (service.to_owned(), near.zone.clone());
        let now = self.clock.now();
        let stale = {
            let cache = self.cache.lock();
            match cache.get(&key) {
                Some(c) if now.saturating_duration_since(c.fetched) < self.ttl => {
                    return Ok(self.pick(&c.group));
                }
                Some(c) if now.saturating_duration_since(c.fetched) < self.ttl + STALE_LIMIT => {
                    Some(c.group.clone())
                }
                _ => None,
            }
        };
        let source = self
            .source
            .read()
            .clone()
            .ok_or_else(|| ResolveError::Detached(service.to_owned()))?;
        match source.weighted(service, near).await {
            Ok(found) => {
                let group = weighted_group(&found, near);
                if group.is_empty() {
                    self.cache.lock().remove(&key);
                    return Err(ResolveError::NoInstance(service.to_owned()));
                }
                let answer = self.pick(&group);
                self.cache.lock().insert(
                    key,
                    Cached {
                        group,
                        fetched: now,
                    },
                );
                Ok(answer)
            }
            Err(source) => match stale {
                Some(group) => {
                    tracing::debug!(service, error = %source, "discovery unreachable; serving the last resolution");
                    Ok(self.pick(&group))
                }
                None => Err(ResolveError::Discovery {
                    service: service.to_owned(),
                    source,
                }),
            },
        }
    }

    /// Every `UP` instance of `service`, nearest to `near` first (same zone, same
    /// region, then the rest), straight from discovery: for callers that talk to
    /// all replicas (anti-entropy, steering), not one. Never cached, so a caller
    /// asks at its own pace.
    pub async fn all(
        &self,
        service: &str,
        near: &Placement,
    ) -> Result<Vec<(SocketAddr, Placement)>, ResolveError> {
        let source = self
            .source
            .read()
            .clone()
            .ok_or_else(|| ResolveError::Detached(service.to_owned()))?;
        let found =
            source
                .nearest(service, near)
                .await
                .map_err(|source| ResolveError::Discovery {
                    service: service.to_owned(),
                    source,
                })?;
        let mut all: Vec<_> = found
            .into_iter()
            .map(|(address, placement)| (callable(address), placement))
            .collect();
        all.sort_by_key(|(_, p)| nearness(p, near));
        Ok(all)
    }

    /// Drops what is cached for `service` (a caller found an address dead).
    pub fn forget(&self, service: &str) {
        self.cache.lock().retain(|(s, _), _| s != service);
    }

    fn pick(&self, group: &Group) -> SocketAddr {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        if group.shared.is_empty() {
            return group.addresses[n % group.addresses.len()];
        }
        if group.addresses.is_empty() {
            return group.shared[n % group.shared.len()].0;
        }
        // The Weyl sequence n·φ⁻¹ mod 1 spreads the calls evenly over [0, 1).
        const INVERSE_GOLDEN: f64 = 0.618_033_988_749_894_8;
        let u = (n as f64 * INVERSE_GOLDEN).fract();
        let mut edge = 0.0;
        for (address, share) in &group.shared {
            edge += share;
            if u < edge {
                return *address;
            }
        }
        group.addresses[n % group.addresses.len()]
    }
}

/// The addresses as near to `near` as the nearest one (same zone, else same region,
/// else all), loopback for an unspecified bind address.
/// 0: same zone as `near`; 1: same region; 2: elsewhere.
fn nearness(p: &Placement, near: &Placement) -> u8 {
    if p.zone == near.zone {
        0
    } else if p.region == near.region {
        1
    } else {
        2
    }
}

/// The nearest group of the instances without a share, and the shared ones (their
/// shares cut so that they sum to at most 1).
fn weighted_group(found: &[Candidate], near: &Placement) -> Group {
    let plain: Vec<(SocketAddr, Placement)> = found
        .iter()
        .filter(|c| c.share.is_none())
        .map(|c| (c.address, c.placement.clone()))
        .collect();
    let mut left = 1.0;
    let shared = found
        .iter()
        .filter_map(|c| Some((callable(c.address), c.share?)))
        .take(MAX_CACHED_ADDRESSES)
        .map(|(address, share)| {
            let share = share.min(left);
            left -= share;
            (address, share)
        })
        .collect();
    Group {
        addresses: nearest_group(&plain, near),
        shared,
    }
}

fn nearest_group(found: &[(SocketAddr, Placement)], near: &Placement) -> Vec<SocketAddr> {
    let rank = |p: &Placement| nearness(p, near);
    let Some(best) = found.iter().map(|(_, p)| rank(p)).min() else {
        return Vec::new();
    };
    found
        .iter()
        .filter(|(_, p)| rank(p) == best)
        .take(MAX_CACHED_ADDRESSES)
        .map(|(address, _)| callable(*address))
        .collect()
}

/// An address a client can call: a wildcard bind address becomes loopback.
pub fn callable(mut address: SocketAddr) -> SocketAddr {
    if address.ip().is_unspecified() {
        address.set_ip(match address {
            SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        });
    }
    address
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;
    use crate::clock::ManualClock;

    /// A discovery stand-in: fixed instances, countable calls, switchable outage.
    #[derive(Default)]
    struct Fake {
        instances: Mutex<Vec<(SocketAddr, Placement)>>,
        calls: AtomicU64,
        down: std::sync::atomic::AtomicBool,
    }

    impl InstanceSource for Fake {
        fn nearest(
            &self,
            _service: &str,
            _near: &Placement,
        ) -> BoxFuture<'_, Result<Vec<(SocketAddr, Placement)>, DiscoveryError>> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            let answer = if self.down.load(Ordering::Relaxed) {
                Err(DiscoveryError::Unavailable("fake outage".into()))
            } else {
                Ok(self.instances.lock().clone())
            };
            Box::pin(async move { answer })
        }
    }

    fn at(zone: &str) -> Placement {
        Placement {
            region: zone.rsplit_once('-').unwrap().0.to_owned(),
            zone: zone.to_owned(),
        }
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn setup() -> (Arc<Fake>, Resolver, ManualClock) {
        let clock = ManualClock::new();
        let fake = Arc::new(Fake::default());
        *fake.instances.lock() = vec![
            (addr(1), at("us-east-b")),
            (addr(2), at("us-east-a")),
            (addr(3), at("eu-west-a")),
            (addr(4), at("us-east-a")),
        ];
        let resolver = Resolver::detached(Arc::new(clock.clone()));
        resolver.attach(fake.clone());
        (fake, resolver, clock)
    }

    #[tokio::test]
    async fn the_same_zone_wins_and_equally_near_instances_rotate() {
        let (_, resolver, _) = setup();
        let near = at("us-east-a");
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(resolver.resolve("svc", &near).await.unwrap().port());
        }
        seen.sort_unstable();
        assert_eq!(seen, [2, 2, 4, 4]);
        // From another zone of the region: the region's instances.
        let mut region = Vec::new();
        for _ in 0..3 {
            region.push(
                resolver
                    .resolve("svc", &at("us-east-c"))
                    .await
                    .unwrap()
                    .port(),
            );
        }
        region.sort_unstable();
        region.dedup();
        assert_eq!(region, [1, 2, 4]);
        let far = resolver.resolve("svc", &at("ap-south-a")).await.unwrap();
        assert!([1, 2, 3, 4].contains(&far.port()));
    }

    #[tokio::test]
    async fn answers_are_cached_for_the_ttl_on_the_injected_clock() {
        let (fake, resolver, clock) = setup();
        let near = at("eu-west-a");
        for _ in 0..10 {
            assert_eq!(resolver.resolve("svc", &near).await.unwrap(), addr(3));
        }
        assert_eq!(fake.calls.load(Ordering::Relaxed), 1);
        clock.advance(DEFAULT_TTL);
        resolver.resolve("svc", &near).await.unwrap();
        assert_eq!(fake.calls.load(Ordering::Relaxed), 2);
        resolver.forget("svc");
        resolver.resolve("svc", &near).await.unwrap();
        assert_eq!(fake.calls.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn a_stale_answer_is_served_while_discovery_is_down_but_not_forever() {
        let (fake, resolver, clock) = setup();
        let near = at("eu-west-a");
        resolver.resolve("svc", &near).await.unwrap();
        fake.down.store(true, Ordering::Relaxed);
        clock.advance(DEFAULT_TTL);
        assert_eq!(resolver.resolve("svc", &near).await.unwrap(), addr(3));
        clock.advance(STALE_LIMIT);
        assert!(matches!(
            resolver.resolve("svc", &near).await,
            Err(ResolveError::Discovery { .. })
        ));
    }

    #[tokio::test]
    async fn nothing_registered_and_detached_are_errors() {
        let (fake, resolver, _) = setup();
        fake.instances.lock().clear();
        assert!(matches!(
            resolver.resolve("svc", &at("us-east-a")).await,
            Err(ResolveError::NoInstance(s)) if s == "svc"
        ));
        let detached = Resolver::detached(Arc::new(ManualClock::new()));
        assert!(matches!(
            detached.resolve("svc", &at("us-east-a")).await,
            Err(ResolveError::Detached(_))
        ));
    }

    /// A source whose instances carry shares.
    struct Weighted(Vec<Candidate>);

    impl InstanceSource for Weighted {
        fn nearest(
            &self,
            _service: &str,
            _near: &Placement,
        ) -> BoxFuture<'_, Result<Vec<(SocketAddr, Placement)>, DiscoveryError>> {
            unreachable!("the resolver asks for weighted candidates")
        }

        fn weighted(
            &self,
            _service: &str,
            _near: &Placement,
        ) -> BoxFuture<'_, Result<Vec<Candidate>, DiscoveryError>> {
            let found = self.0.clone();
            Box::pin(async move { Ok(found) })
        }
    }

    #[tokio::test]
    async fn shared_instances_take_their_share_wherever_they_are() {
        let candidate = |port, zone, share| Candidate {
            address: addr(port),
            placement: at(zone),
            share,
        };
        let resolver = Resolver::detached(Arc::new(ManualClock::new()));
        resolver.attach(Arc::new(Weighted(vec![
            candidate(1, "us-east-a", None),
            candidate(2, "us-east-a", None),
            candidate(3, "eu-west-a", None),
            candidate(8, "ap-south-b", Some(0.1)),
            candidate(9, "eu-west-c", Some(0.1)),
        ])));
        let mut counts = HashMap::new();
        for _ in 0..10_000 {
            let port = resolver
                .resolve("svc", &at("us-east-a"))
                .await
                .unwrap()
                .port();
            *counts.entry(port).or_insert(0u32) += 1;
        }
        // Far away, yet each shared instance gets its 10 %; the far plain one none.
        for shared in [8, 9] {
            assert!((990..=1010).contains(&counts[&shared]), "{counts:?}");
        }
        assert!(!counts.contains_key(&3));
        assert_eq!(counts[&1] + counts[&2], 10_000 - counts[&8] - counts[&9]);
    }

    #[test]
    fn a_share_is_read_from_metadata_only_when_valid() {
        let meta = |v: &str| {
            std::collections::BTreeMap::from([(TRAFFIC_SHARE_KEY.to_owned(), v.to_owned())])
        };
        assert_eq!(share_of(&meta("0.05")), Some(0.05));
        assert_eq!(share_of(&meta("1.5")), None);
        assert_eq!(share_of(&meta("lots")), None);
        assert_eq!(share_of(&Default::default()), None);
    }

    #[test]
    fn a_wildcard_bind_address_is_called_on_loopback() {
        assert_eq!(callable("0.0.0.0:80".parse().unwrap()), addr(80));
        assert_eq!(
            callable("[::]:80".parse().unwrap()),
            "[::1]:80".parse().unwrap()
        );
    }
}
