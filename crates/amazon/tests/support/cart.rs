//! Shared helpers of the cart's integration tests: a platform with the three cart
//! replicas (one per zone of region `r1`) and the `amazon` API in zone `r1-a`,
//! discovery faked over the platform's own instance list (with partitions), a
//! manual clock, and a JSON client.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use casebook_amazon::cart::{CART_SERVICE, CartReplicaService, Replica};
use casebook_amazon::config::AmazonConfig;
use casebook_amazon::service::{AMAZON_SERVICE, AmazonService};
use casebook_kit::clock::ManualClock;
use casebook_kit::discovery::DiscoveryError;
use casebook_kit::http_client::HttpClient;
use casebook_kit::resolve::{InstanceSource, Resolver};
use casebook_kit::runtime::{BoxFuture, InstanceSpec, InstanceState, Platform, WeakPlatform};
use casebook_kit::topology::{Placement, Topology};
use casebook_kit::wal::Durability;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use parking_lot::Mutex;
use serde_json::Value;

pub use casebook_testkit::{DEADLINE, eventually};

/// The zones of the test topology.
pub const ZONES: [&str; 3] = ["r1-a", "r1-b", "r1-c"];

/// Discovery as the tests control it: the platform's instances of a service —
/// running ones, and killed ones too (their leases have not expired) — and a
/// partition: groups of zones that see only each other.
pub struct FakeDiscovery {
    platform: Mutex<Option<WeakPlatform>>,
    partition: Mutex<Option<Vec<BTreeSet<String>>>>,
}

impl FakeDiscovery {
    fn group_of(&self, zone: &str) -> Option<BTreeSet<String>> {
        self.partition
            .lock()
            .as_ref()
            .and_then(|groups| groups.iter().find(|g| g.contains(zone)).cloned())
    }
}

impl InstanceSource for FakeDiscovery {
    fn nearest(
        &self,
        service: &str,
        near: &Placement,
    ) -> BoxFuture<'_, Result<Vec<(SocketAddr, Placement)>, DiscoveryError>> {
        let platform = self
            .platform
            .lock()
            .as_ref()
            .and_then(WeakPlatform::upgrade);
        let group = self.group_of(&near.zone);
        let service = service.to_owned();
        Box::pin(async move {
            let Some(platform) = platform else {
                return Ok(Vec::new());
            };
            Ok(platform
                .list()
                .into_iter()
                .filter(|v| v.info.service == service)
                .filter(|v| matches!(v.state, InstanceState::Running | InstanceState::Killed))
                .filter(|v| group.as_ref().is_none_or(|g| g.contains(&v.info.zone)))
                .map(|v| {
                    (
                        v.info.address,
                        Placement {
                            region: v.info.region,
                            zone: v.info.zone,
                        },
                    )
                })
                .collect())
        })
    }
}

/// The cart configuration of the tests: no fsync (the store's own test syncs),
/// quick rounds; anti-entropy off unless a test turns it on.
pub fn test_config() -> AmazonConfig {
    let mut config = AmazonConfig {
        http_port: 0,
        cart_port: 0,
        ..AmazonConfig::default()
    };
    config.cart.durability = Durability::NoSync;
    config.cart.anti_entropy_every = Duration::from_secs(3_600);
    config.cart.handoff_every = Duration::from_secs(1);
    config.cart.discovery_refresh = Duration::from_secs(1);
    config.cart.replica_timeout = Duration::from_secs(5);
    config.cart.max_lines = 20;
    config
}

/// A platform running the cart replicas and the API.
pub struct Cluster {
    pub platform: Platform,
    pub clock: ManualClock,
    pub replicas: Arc<CartReplicaService>,
    pub discovery: Arc<FakeDiscovery>,
    pub resolver: Arc<Resolver>,
    pub api: SocketAddr,
    pub http: HttpClient,
    /// The live replica instance of each zone.
    pub instances: Mutex<BTreeMap<String, String>>,
    _dir: tempfile::TempDir,
}

fn placement(zone: &str) -> Placement {
    Placement {
        region: "r1".to_owned(),
        zone: zone.to_owned(),
    }
}

impl Cluster {
    /// Starts the replicas of every zone, then the API in `r1-a`; `partition`
    /// is in force from the start.
    pub async fn start(config: AmazonConfig, partition: Option<Vec<Vec<&str>>>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new();
        let topology = Topology::uniform(&["r1"], 3);
        let platform = Platform::new(topology, dir.path(), clock.shared());
        let discovery = Arc::new(FakeDiscovery {
            platform: Mutex::new(Some(platform.downgrade())),
            partition: Mutex::new(None),
        });
        let resolver = Arc::new(Resolver::detached(clock.shared()));
        resolver.attach(discovery.clone());
        let replicas = Arc::new(CartReplicaService::new(config.clone(), resolver.clone()));
        platform.register_service(replicas.clone());
        platform.register_service(Arc::new(AmazonService::new(config, resolver.clone())));
        let cluster = Self {
            platform,
            clock,
            replicas,
            discovery,
            resolver,
            api: "127.0.0.1:1".parse().unwrap(),
            http: HttpClient::new(DEADLINE),
            instances: Mutex::new(BTreeMap::new()),
            _dir: dir,
        };
        if let Some(groups) = partition {
            cluster.partition(groups);
        }
        for zone in ZONES {
            cluster.start_replica(zone).await;
        }
        let api = cluster
            .platform
            .start(InstanceSpec {
                service: AMAZON_SERVICE.into(),
                instance_id: None,
                placement: placement(ZONES[0]),
                listen: "127.0.0.1:0".parse().unwrap(),
                version: "test".into(),
                port_hint: None,
            })
            .await
            .unwrap();
        let cluster = Self {
            api: api.address,
            ..cluster
        };
        // The replicas started one by one: let each list its peers again.
        cluster.advance(Duration::from_secs(2));
        cluster.peers_listed().await;
        cluster
    }

    /// Waits until every running replica lists the peers discovery shows it.
    pub async fn peers_listed(&self) {
        let zones: Vec<String> = self.instances.lock().keys().cloned().collect();
        for zone in zones {
            let expected = ZONES
                .iter()
                .filter(|z| **z != zone)
                .filter(|z| {
                    self.discovery
                        .group_of(&zone)
                        .is_none_or(|g| g.contains(**z))
                })
                .count();
            let replica = self.replica(&zone);
            eventually("the replicas list their peers", DEADLINE, || {
                let n = replica.peer_zones().len();
                async move { n == expected }
            })
            .await;
        }
    }

    /// Starts a replica in `zone` (on the zone's slot: a restart finds its data).
    pub async fn start_replica(&self, zone: &str) {
        let info = self
            .platform
            .start(InstanceSpec {
                service: CART_SERVICE.into(),
                instance_id: None,
                placement: placement(zone),
                listen: "127.0.0.1:0".parse().unwrap(),
                version: "test".into(),
                port_hint: None,
            })
            .await
            .unwrap();
        self.instances
            .lock()
            .insert(zone.to_owned(), info.instance_id);
    }

    /// Kills `zone`'s replica as a crash would (its listing stays).
    pub async fn kill_replica(&self, zone: &str) {
        let id = self.instances.lock().remove(zone).expect("a live replica");
        assert!(self.platform.kill(&id).await);
    }

    /// The running replica of `zone`.
    pub fn replica(&self, zone: &str) -> Arc<Replica> {
        self.replicas
            .replica(zone)
            .expect("the zone's replica runs")
    }

    /// Splits discovery into groups of zones that see only each other.
    pub fn partition(&self, groups: Vec<Vec<&str>>) {
        *self.discovery.partition.lock() = Some(
            groups
                .into_iter()
                .map(|g| g.into_iter().map(str::to_owned).collect())
                .collect(),
        );
    }

    /// Heals the partition.
    pub fn heal(&self) {
        *self.discovery.partition.lock() = None;
    }

    /// Moves the manual clock on (leases of lists, rounds).
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// Calls the API: `(status, JSON body)`.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let url = format!("http://{}{path}", self.api);
        call(&self.http, method, &url, body.map(|b| b.to_string())).await
    }

    /// Calls a replica's internal API directly (another coordinator would).
    pub async fn call_replica(
        &self,
        zone: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let id = self
            .instances
            .lock()
            .get(zone)
            .cloned()
            .expect("a live replica");
        let address = self
            .platform
            .list()
            .into_iter()
            .find(|v| v.info.instance_id == id)
            .expect("listed")
            .info
            .address;
        let url = format!("http://{address}{path}");
        call(&self.http, method, &url, body.map(|b| b.to_string())).await
    }

    /// Adds through the API; panics unless it is acknowledged.
    pub async fn add(&self, user: &str, sku: &str, qty: u32) -> Value {
        let (status, body) = self
            .call(
                Method::POST,
                &format!("/v1/carts/{user}/items"),
                Some(serde_json::json!({ "sku": sku, "qty": qty })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "add {user}/{sku}: {body}");
        body
    }

    /// The lines of `user`'s cart as one replica holds it: sku → qty.
    pub fn lines_at(&self, zone: &str, user: &str) -> BTreeMap<String, u32> {
        self.replica(zone)
            .store()
            .get(user)
            .map(|cart| cart.lines().map(|(s, q)| (s.to_owned(), q)).collect())
            .unwrap_or_default()
    }

    /// Whether every running replica holds the same carts (equal digests).
    pub fn converged(&self) -> bool {
        let digests: Vec<Vec<u64>> = self
            .instances
            .lock()
            .keys()
            .map(|zone| self.replica(zone).store().digest())
            .collect();
        digests.windows(2).all(|w| w[0] == w[1])
    }
}

/// One JSON call.
pub async fn call(
    http: &HttpClient,
    method: Method,
    url: &str,
    body: Option<String>,
) -> (StatusCode, Value) {
    let mut headers = HeaderMap::new();
    if body.is_some() {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    let response = http
        .send(method, url, headers, Bytes::from(body.unwrap_or_default()))
        .await
        .unwrap();
    let value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    (response.status, value)
}

/// The lines of a view as sku → qty.
pub fn lines_of(view: &Value) -> BTreeMap<String, u64> {
    view["lines"]
        .as_array()
        .unwrap_or_else(|| panic!("no lines in {view}"))
        .iter()
        .map(|l| {
            (
                l["sku"].as_str().unwrap().to_owned(),
                l["qty"].as_u64().unwrap(),
            )
        })
        .collect()
}
