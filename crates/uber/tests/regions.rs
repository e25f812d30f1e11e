//! Regions: three regional replicas of the `uber` engine gossiping driver state over foca on an in-memory network with cuts,
//! all on one `ManualClock` — deterministic (seeded foca, stepped timers, packets
//! delivered by the test). A simulated partition shows regional autonomy: the cut
//! region keeps matching its own riders and refuses cross-region trips (and the
//! others refuse trips toward it) while pings go on on both sides; after the heal
//! every replica converges by last-writer-wins and cross-region trips are accepted
//! again. Waits are bounded in simulated rounds; nothing asserts on timing.
//!
//! The regions are three neighbouring cities around San Francisco Bay (pricing
//! quotes trips of at most 300 km, so an accepted cross-region trip needs
//! neighbours; the default map's regions are continents apart).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use casebook_kit::clock::ManualClock;
use casebook_kit::wal::Durability;
use casebook_uber::api::{ApiConfig, Engine, router};
use casebook_uber::index::{DriverId, DriverStatus};
use casebook_uber::region::{CityConfig, GossipConfig, MemNetwork, RegionMap, Regional, Replica};
use http::{Method, Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt;

const REGIONS: [&str; 3] = ["bay", "valley", "coast"];
/// Simulated rounds any convergence may take at most (60 s of clock).
const MAX_ROUNDS: usize = 3_000;
/// One round of clock: the service's gossip step.
const ROUND: Duration = casebook_uber::service::GOSSIP_STEP;

const SF: (f64, f64) = (37.7749, -122.4194);
const OAKLAND: (f64, f64) = (37.8044, -122.2712);
const SACRAMENTO: (f64, f64) = (38.5816, -121.4944);
const DAVIS: (f64, f64) = (38.5449, -121.7405);
const MONTEREY: (f64, f64) = (36.6002, -121.8947);

fn cities() -> Vec<CityConfig> {
    let city = |name: &str, (lat, lng): (f64, f64), region: &str| CityConfig {
        name: name.to_owned(),
        lat,
        lng,
        radius_km: 25.0,
        region: region.to_owned(),
    };
    vec![
        city("san-francisco", SF, "bay"),
        city("oakland", OAKLAND, "bay"),
        city("sacramento", SACRAMENTO, "valley"),
        city("davis", DAVIS, "valley"),
        city("monterey", MONTEREY, "coast"),
    ]
}

struct Node {
    addr: SocketAddr,
    engine: Arc<Engine>,
    replica: Arc<Replica>,
    router: Router,
}

struct Sim {
    clock: ManualClock,
    net: Arc<MemNetwork>,
    nodes: Vec<Node>,
    _dirs: Vec<tempfile::TempDir>,
}

fn addr(i: usize) -> SocketAddr {
    format!("10.0.0.{}:7946", i + 1).parse().unwrap()
}

impl Sim {
    fn new() -> Self {
        let clock = ManualClock::new();
        let net = MemNetwork::new();
        let regions: Vec<String> = REGIONS.iter().map(|r| (*r).to_owned()).collect();
        let map = Arc::new(RegionMap::new(&cities(), &regions).unwrap());
        let mut nodes = Vec::new();
        let mut dirs = Vec::new();
        for (i, region) in REGIONS.iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let mut config = ApiConfig {
                durability: Durability::NoSync,
                ..ApiConfig::default()
            };
            // Simulated minutes pass: nobody goes stale, no offer times out.
            config.index.stale_after = Duration::from_secs(86_400);
            let engine = Engine::open(dir.path(), config, clock.shared()).unwrap();
            let replica = Replica::new(
                region,
                addr(i),
                0,
                GossipConfig {
                    rng_seed: i as u64 + 1,
                    ..GossipConfig::default()
                },
                clock.shared(),
                net.endpoint(addr(i)),
            )
            .unwrap();
            replica.set_seeds((0..REGIONS.len()).map(addr).collect());
            engine
                .attach_region(Regional {
                    map: map.clone(),
                    replica: replica.clone(),
                })
                .unwrap();
            nodes.push(Node {
                addr: addr(i),
                router: router(engine.clone()),
                engine,
                replica,
            });
            dirs.push(dir);
        }
        Self {
            clock,
            net,
            nodes,
            _dirs: dirs,
        }
    }

    fn node(&self, region: &str) -> &Node {
        &self.nodes[REGIONS.iter().position(|r| *r == region).unwrap()]
    }

    /// One round: time moves, every replica steps, packets are delivered until
    /// the network is quiet, learned states reach the engines.
    fn round(&self) {
        self.clock.advance(ROUND);
        for n in &self.nodes {
            n.replica.step();
        }
        for _ in 0..100 {
            let packets = self.net.take();
            if packets.is_empty() {
                break;
            }
            for (to, data) in packets {
                if let Some(n) = self.nodes.iter().find(|n| n.addr == to) {
                    n.replica.handle_packet(&data);
                }
            }
        }
        for n in &self.nodes {
            n.engine.apply_remote(&n.replica.take_learned());
        }
    }

    /// Rounds until `done` holds; panics naming `what` after [`MAX_ROUNDS`].
    fn run_until(&self, what: &str, done: impl Fn(&Self) -> bool) -> usize {
        for rounds in 0..MAX_ROUNDS {
            if done(self) {
                return rounds;
            }
            self.round();
        }
        panic!("{what}: not reached in {MAX_ROUNDS} rounds");
    }

    fn all_reach_all(&self) -> bool {
        self.nodes
            .iter()
            .all(|n| REGIONS.iter().all(|r| n.replica.reachable(r)))
    }

    /// Every replica holds the same value for every driver in `drivers`.
    fn converged(&self, drivers: &[u64]) -> bool {
        drivers.iter().all(|d| {
            let first = self.nodes[0].replica.driver(*d).map(|r| r.state);
            first.is_some()
                && self
                    .nodes
                    .iter()
                    .all(|n| n.replica.driver(*d).map(|r| r.state) == first)
        })
    }
}

async fn call(node: &Node, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(match body {
            Some(b) => Body::from(b.to_string()),
            None => Body::empty(),
        })
        .unwrap();
    let response = node.router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, value)
}

async fn pings(node: &Node, updates: &[(u64, (f64, f64), u64)]) {
    let updates: Vec<Value> = updates
        .iter()
        .map(|(driver, (lat, lon), ts)| {
            json!({"driver": driver, "lat": lat, "lon": lon, "ts": ts, "status": "available"})
        })
        .collect();
    let (status, report) = call(
        node,
        Method::POST,
        "/v1/locations",
        Some(json!({ "updates": updates })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["accepted"], updates.len(), "{report}");
}

async fn ride(node: &Node, rider: u64, from: (f64, f64), to: (f64, f64)) -> (StatusCode, Value) {
    call(
        node,
        Method::POST,
        "/v1/rides",
        Some(json!({
            "rider": rider,
            "pickup": {"lat": from.0, "lng": from.1},
            "dropoff": {"lat": to.0, "lng": to.1},
        })),
    )
    .await
}

fn near((lat, lng): (f64, f64), k: f64) -> (f64, f64) {
    (lat + 0.001 * k, lng + 0.001 * k)
}

fn available(node: &Node, driver: u64) -> bool {
    node.engine
        .index()
        .get(DriverId(driver))
        .is_some_and(|v| v.status == DriverStatus::Available)
}

/// In the replica's pool: available, or dispatched (an offer's claim moves the
/// driver out of the searches until it is answered).
fn in_pool(node: &Node, driver: u64) -> bool {
    node.engine
        .index()
        .get(DriverId(driver))
        .is_some_and(|v| matches!(v.status, DriverStatus::Available | DriverStatus::Dispatched))
}

#[tokio::test]
async fn a_simulated_partition_shows_regional_autonomy_and_lww_convergence_after_heal() {
    let sim = Sim::new();
    let (bay, valley, coast) = (sim.node("bay"), sim.node("valley"), sim.node("coast"));
    let joined = sim.run_until("membership", Sim::all_reach_all);

    // Drivers ping their own region's replica.
    pings(bay, &[(1, near(SF, 1.0), 1), (2, near(SF, 2.0), 1)]).await;
    pings(
        valley,
        &[
            (11, near(SACRAMENTO, 1.0), 1),
            (12, near(SACRAMENTO, 2.0), 1),
        ],
    )
    .await;
    pings(
        coast,
        &[(21, near(MONTEREY, 1.0), 1), (22, near(MONTEREY, 2.0), 1)],
    )
    .await;
    let all = [1, 2, 11, 12, 21, 22];
    let spread = sim.run_until("gossip convergence", |s| s.converged(&all));
    eprintln!("membership after {joined} rounds, driver states everywhere after {spread}");

    // bay sees valley's driver, learned by gossip, but does not match with it.
    let (status, d11) = call(bay, Method::GET, "/v1/drivers/11", None).await;
    assert_eq!(status, StatusCode::OK, "{d11}");
    assert_eq!(
        (
            d11["source"].clone(),
            d11["region"].clone(),
            d11["city"].clone()
        ),
        (json!("gossip"), json!("valley"), json!("sacramento"))
    );
    assert_eq!(d11["matchable_here"], false);
    let (_, d1) = call(bay, Method::GET, "/v1/drivers/1", None).await;
    assert_eq!(
        (d1["source"].clone(), d1["matchable_here"].clone()),
        (json!("local"), json!(true))
    );
    // A ride picked up in Sacramento is valley's: bay refuses it, naming the owner.
    let (status, refused) = ride(bay, 900, SACRAMENTO, DAVIS).await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "{refused}");
    assert!(
        refused["error"].as_str().unwrap().contains("valley"),
        "{refused}"
    );
    assert_eq!(refused["field"], "pickup");
    // Connected, a cross-region trip is accepted.
    let (status, cross) = ride(bay, 901, near(SF, 0.5), SACRAMENTO).await;
    assert_eq!(status, StatusCode::CREATED, "{cross}");
    let (status, cross) = ride(coast, 902, near(MONTEREY, 0.5), SACRAMENTO).await;
    assert_eq!(status, StatusCode::CREATED, "{cross}");
    assert_eq!(cross["status"]["state"], "offered");

    // Partition valley off.
    sim.net.isolate(valley.addr, true);
    let cut = sim.run_until("partition detected", |s| {
        let valley = s.node("valley");
        !valley.replica.reachable("bay")
            && !valley.replica.reachable("coast")
            && !s.node("bay").replica.reachable("valley")
            && !s.node("coast").replica.reachable("valley")
    });
    eprintln!("partition detected after {cut} rounds");
    // bay and coast still reach each other.
    assert!(bay.replica.reachable("coast") && coast.replica.reachable("bay"));

    // Autonomy: valley keeps matching its own riders.
    let (status, local) = ride(valley, 100, near(SACRAMENTO, 1.1), DAVIS).await;
    assert_eq!(status, StatusCode::CREATED, "{local}");
    assert_eq!(local["status"]["state"], "offered", "{local}");
    let offered = local["status"]["driver"].as_u64().unwrap();
    assert!([11, 12].contains(&offered), "{local}");
    // Cross-region trips from it and toward it are refused while cut.
    let (status, refused) = ride(valley, 101, near(SACRAMENTO, 2.1), OAKLAND).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{refused}");
    assert_eq!(
        refused["error"],
        "region bay unreachable: cross-region trips refused until the partition heals"
    );
    assert_eq!(refused["field"], "dropoff");
    for (node, from) in [(bay, SF), (coast, MONTEREY)] {
        let (status, refused) = ride(node, 102, near(from, 0.3), SACRAMENTO).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{refused}");
        assert!(
            refused["error"]
                .as_str()
                .unwrap()
                .contains("region valley unreachable")
        );
    }
    // The rest keep their own cross-region trips.
    let (status, ok) = ride(bay, 103, near(SF, 0.4), MONTEREY).await;
    assert_eq!(status, StatusCode::CREATED, "{ok}");

    // Pings go on on both sides; driver 1 turns up in Sacramento (newer ts there).
    pings(
        valley,
        &[
            (11, near(SACRAMENTO, 3.0), 5),
            (1, near(SACRAMENTO, 4.0), 6),
        ],
    )
    .await;
    pings(bay, &[(2, near(SF, 3.0), 5), (1, near(SF, 4.0), 5)]).await;
    pings(coast, &[(21, near(MONTEREY, 3.0), 5)]).await;
    for _ in 0..250 {
        sim.round();
    }
    // Nothing crossed the cut: bay still holds driver 11's old state.
    assert_eq!(bay.replica.driver(11).unwrap().state.ts, 1);
    assert_eq!(valley.replica.driver(2).unwrap().state.ts, 1);
    assert_eq!(
        coast.replica.driver(2).unwrap().state.ts,
        5,
        "the connected side gossips"
    );
    assert!(
        in_pool(bay, 1) && in_pool(valley, 1),
        "each side matches driver 1 on its own"
    );

    // Heal.
    sim.net.isolate(valley.addr, false);
    let reach = sim.run_until("heal: membership", Sim::all_reach_all);
    let healed = sim.run_until("heal: LWW convergence", |s| s.converged(&all));
    eprintln!(
        "heal: membership after {reach} rounds, registers converged {healed} rounds later; \
         dropped by the cut: {} packets",
        sim.net.dropped()
    );
    assert!(sim.all_reach_all());
    for n in &sim.nodes {
        let d1 = n.replica.driver(1).unwrap().state;
        assert_eq!(
            (d1.ts, d1.lat),
            (6, near(SACRAMENTO, 4.0).0),
            "driver 1 is where ts 6 says"
        );
        assert_eq!(n.replica.driver(11).unwrap().state.ts, 5);
        assert_eq!(n.replica.driver(2).unwrap().state.ts, 5);
    }
    // Driver 1's latest state is in valley: only valley matches with it now.
    assert!(!available(bay, 1), "bay took driver 1 out of matching");
    assert!(available(valley, 1));
    let (_, d1) = call(bay, Method::GET, "/v1/drivers/1", None).await;
    assert_eq!(
        (d1["region"].clone(), d1["source"].clone()),
        (json!("valley"), json!("gossip"))
    );

    // Cross-region trips are accepted again, both ways.
    let (status, ok) = ride(bay, 104, near(SF, 0.6), SACRAMENTO).await;
    assert_eq!(status, StatusCode::CREATED, "{ok}");
    let (status, ok) = ride(valley, 105, near(SACRAMENTO, 0.6), MONTEREY).await;
    assert_eq!(status, StatusCode::CREATED, "{ok}");

    let (status, regions) = call(valley, Method::GET, "/v1/regions", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(regions["region"], "valley");
    assert_eq!(
        regions["reachable"],
        json!({"bay": true, "valley": true, "coast": true})
    );
    assert_eq!(
        regions["members"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["state"] == "alive")
            .count(),
        2,
        "{regions}"
    );
}

#[tokio::test]
async fn the_admin_switch_isolates_a_replica_and_heals_it() {
    let sim = Sim::new();
    let (bay, valley) = (sim.node("bay"), sim.node("valley"));
    sim.run_until("membership", Sim::all_reach_all);
    let (status, view) = call(
        valley,
        Method::POST,
        "/v1/admin/partition",
        Some(json!({"isolate": true})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["isolated"], true);
    // Isolated, it reaches no other region at once.
    assert_eq!(
        view["reachable"],
        json!({"bay": false, "valley": true, "coast": false})
    );
    let (status, refused) = ride(valley, 1, SACRAMENTO, SF).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{refused}");
    sim.run_until("the others see it down", |s| {
        !s.node("bay").replica.reachable("valley")
    });
    let (status, _) = call(
        valley,
        Method::POST,
        "/v1/admin/partition",
        Some(json!({"isolate": false})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    sim.run_until("heal", Sim::all_reach_all);
    assert!(bay.replica.reachable("valley"));
    // Bad input is named.
    let (status, bad) = call(
        valley,
        Method::POST,
        "/v1/admin/partition",
        Some(json!({"isolate": "yes"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
}

// ------------------------------------------------------------- real sockets

mod udp {
    use super::*;
    use bytes::Bytes;
    use casebook_kit::clock::SystemClock;
    use casebook_kit::http_client::HttpClient;
    use casebook_kit::runtime::{InstanceSpec, Platform};
    use casebook_kit::topology::Topology;
    use casebook_uber::service::{RegionSetup, UberService};
    use http::HeaderMap;

    /// Any bounded wait here gives up after this long.
    const DEADLINE: Duration = Duration::from_secs(30);
    const TWO: [&str; 2] = ["bay", "valley"];

    async fn http(
        client: &HttpClient,
        method: Method,
        at: SocketAddr,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "application/json".parse().unwrap());
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let response = client
            .send(
                method,
                &format!("http://{at}{path}"),
                headers,
                Bytes::from(body),
            )
            .await
            .unwrap();
        let value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        (response.status, value)
    }

    /// Polls `probe` until it holds; panics naming `what` after [`DEADLINE`].
    async fn wait_for<F, Fut>(what: &str, probe: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        casebook_testkit::eventually(what, DEADLINE, probe).await;
    }

    async fn reaches(client: &HttpClient, at: SocketAddr, region: &str) -> bool {
        let (status, view) = http(client, Method::GET, at, "/v1/regions", None).await;
        status == StatusCode::OK && view["reachable"][region] == true
    }

    /// Two replicas (bay, valley) on one platform; their API addresses.
    async fn two_replicas(dir: &std::path::Path) -> (Platform, Vec<SocketAddr>) {
        let topology = Topology::uniform(&TWO, 1);
        let platform = Platform::new(topology.clone(), dir, SystemClock::shared());
        let regions: Vec<String> = TWO.iter().map(|r| (*r).to_owned()).collect();
        let two_cities: Vec<_> = cities()
            .into_iter()
            .filter(|c| c.region != "coast")
            .collect();
        let map = RegionMap::new(&two_cities, &regions).unwrap();
        let config = ApiConfig {
            durability: Durability::NoSync,
            ..ApiConfig::default()
        };
        let service = Arc::new(UberService::new(config).with_regions(RegionSetup {
            map: Arc::new(map),
            host: "127.0.0.1".parse().unwrap(),
            gossip_port: 0,
            gossip: GossipConfig::default(),
        }));
        platform.register_service(service.clone());
        let mut api = Vec::new();
        for (i, region) in TWO.iter().enumerate() {
            let info = platform
                .start(InstanceSpec {
                    service: "uber".into(),
                    instance_id: None,
                    placement: topology.spread(i),
                    listen: "127.0.0.1:0".parse().unwrap(),
                    version: "test".into(),
                    port_hint: None,
                })
                .await
                .unwrap();
            assert_eq!(info.region, *region);
            api.push(info.address);
        }
        (platform, api)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_evacuated_replica_refuses_naming_the_other_region_then_serves_again() {
        let dir = tempfile::tempdir().unwrap();
        let (platform, api) = two_replicas(dir.path()).await;
        let (bay, valley) = (api[0], api[1]);
        let client = HttpClient::new(DEADLINE);
        platform.set_region_evacuated("valley", true);

        let response = client
            .send(
                Method::GET,
                &format!("http://{valley}/v1/regions"),
                HeaderMap::new(),
                Bytes::new(),
            )
            .await
            .unwrap();
        assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers["retry-after"], "5");
        let refusal: Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(refusal["code"], "region_evacuated", "{refusal}");
        assert_eq!(refusal["region"], "valley");
        assert_eq!(refusal["serving"]["region"], "bay");
        assert_eq!(refusal["serving"]["url"], format!("http://{bay}"));
        // Writes are refused too; health and metrics still answer.
        let ping =
            json!({"lat": SACRAMENTO.0, "lon": SACRAMENTO.1, "ts": 1, "status": "available"});
        let (status, _) = http(
            &client,
            Method::POST,
            valley,
            "/v1/drivers/7/location",
            Some(ping),
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        for path in ["/health", "/metrics"] {
            let response = client
                .send(
                    Method::GET,
                    &format!("http://{valley}{path}"),
                    HeaderMap::new(),
                    Bytes::new(),
                )
                .await
                .unwrap();
            assert_eq!(response.status, StatusCode::OK, "{path}");
        }
        // The bay serves; with both regions out, no replica is named.
        let (status, _) = http(&client, Method::GET, bay, "/v1/regions", None).await;
        assert_eq!(status, StatusCode::OK);
        platform.set_region_evacuated("bay", true);
        let (status, refusal) = http(&client, Method::GET, valley, "/v1/regions", None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(refusal["serving"].is_null(), "{refusal}");

        platform.set_region_evacuated("bay", false);
        platform.set_region_evacuated("valley", false);
        let (status, _) = http(&client, Method::GET, valley, "/v1/regions", None).await;
        assert_eq!(status, StatusCode::OK);
        platform.stop_all(Duration::from_secs(5)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_replicas_gossip_over_udp_and_the_admin_switch_partitions_them() {
        let dir = tempfile::tempdir().unwrap();
        let (platform, api) = two_replicas(dir.path()).await;
        let (bay, valley) = (api[0], api[1]);
        let client = HttpClient::new(DEADLINE);
        wait_for("the replicas find each other", || async {
            reaches(&client, bay, "valley").await && reaches(&client, valley, "bay").await
        })
        .await;

        // A ping in the bay reaches the valley's replica by gossip over UDP.
        let ping = json!({"lat": SF.0, "lon": SF.1, "ts": 1, "status": "available"});
        let (status, _) = http(
            &client,
            Method::POST,
            bay,
            "/v1/drivers/5/location",
            Some(ping),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        wait_for("driver 5 gossiped to the valley", || async {
            let (status, d) = http(&client, Method::GET, valley, "/v1/drivers/5", None).await;
            status == StatusCode::OK && d["source"] == "gossip" && d["region"] == "bay"
        })
        .await;

        // Cut the valley off from outside, through its admin API.
        let (status, view) = http(
            &client,
            Method::POST,
            valley,
            "/v1/admin/partition",
            Some(json!({"isolate": true})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{view}");
        assert_eq!(view["reachable"]["bay"], false);
        let to_bay = json!({"rider": 1, "pickup": {"lat": SACRAMENTO.0, "lng": SACRAMENTO.1},
            "dropoff": {"lat": SF.0, "lng": SF.1}});
        let (status, refused) = http(
            &client,
            Method::POST,
            valley,
            "/v1/rides",
            Some(to_bay.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{refused}");
        wait_for("the bay sees the valley gone", || async {
            !reaches(&client, bay, "valley").await
        })
        .await;
        let to_valley = json!({"rider": 2, "pickup": {"lat": SF.0, "lng": SF.1},
            "dropoff": {"lat": SACRAMENTO.0, "lng": SACRAMENTO.1}});
        let (status, refused) = http(
            &client,
            Method::POST,
            bay,
            "/v1/rides",
            Some(to_valley.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{refused}");
        // The bay keeps matching on its own.
        let local = json!({"rider": 3, "pickup": {"lat": SF.0, "lng": SF.1},
            "dropoff": {"lat": OAKLAND.0, "lng": OAKLAND.1}});
        let (status, matched) = http(&client, Method::POST, bay, "/v1/rides", Some(local)).await;
        assert_eq!(status, StatusCode::CREATED, "{matched}");
        assert_eq!(matched["status"]["driver"], 5, "{matched}");
        // A ping during the cut.
        let ping = json!({"lat": SF.0, "lon": SF.1, "ts": 2, "status": "available"});
        let (status, _) = http(
            &client,
            Method::POST,
            bay,
            "/v1/drivers/6/location",
            Some(ping),
        )
        .await;
        assert_eq!(status, StatusCode::OK);

        // Heal: both sides reach each other again and the valley catches up.
        let (status, _) = http(
            &client,
            Method::POST,
            valley,
            "/v1/admin/partition",
            Some(json!({"isolate": false})),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        wait_for("heal", || async {
            reaches(&client, bay, "valley").await && reaches(&client, valley, "bay").await
        })
        .await;
        wait_for("driver 6 reaches the valley after the heal", || async {
            let (status, _) = http(&client, Method::GET, valley, "/v1/drivers/6", None).await;
            status == StatusCode::OK
        })
        .await;
        let (status, accepted) =
            http(&client, Method::POST, bay, "/v1/rides", Some(to_valley)).await;
        assert_eq!(status, StatusCode::CREATED, "{accepted}");
        platform.stop_all(Duration::from_secs(5)).await;
    }
}

/// Not a timing test: counts what ten thousand drivers cost to spread (rounds of
/// one gossip step, packets), printed for the note; asserts only convergence.
#[tokio::test]
async fn ten_thousand_drivers_converge_on_every_replica() {
    let sim = Sim::new();
    sim.run_until("membership", Sim::all_reach_all);
    let bay = sim.node("bay");
    let drivers: Vec<u64> = (1..=10_000).collect();
    for chunk in drivers.chunks(1_000) {
        let updates: Vec<(u64, (f64, f64), u64)> = chunk
            .iter()
            .map(|d| (*d, near(SF, (*d % 100) as f64 / 10.0), 1))
            .collect();
        pings(bay, &updates).await;
    }
    let before: u64 = sim
        .nodes
        .iter()
        .map(|n| n.replica.stats().packets_sent)
        .sum();
    let rounds = sim.run_until("10k drivers everywhere", |s| {
        s.nodes
            .iter()
            .all(|n| n.replica.stats().drivers_known == 10_000)
    });
    let sent: u64 = sim
        .nodes
        .iter()
        .map(|n| n.replica.stats().packets_sent)
        .sum::<u64>()
        - before;
    assert!(sim.converged(&drivers));
    let offered = bay.replica.stats().states_offered;
    eprintln!(
        "10k drivers: everywhere after {rounds} rounds of {ROUND:?}, {sent} packets, {offered} states offered by the origin"
    );
}
