//! The RESP port's live key (`drivers`) served from the uber service's driver
//! index, both started by the kit's platform as `casebook up` starts them: a
//! driver pinged over HTTP is found over RESP with Redis's answers (the same
//! replies as a plain geo set holding the same points), and a driver added over
//! RESP is offered a ride over HTTP. Time is a `ManualClock`; waits are bounded.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use casebook_kit::clock::ManualClock;
use casebook_kit::http_client::HttpClient;
use casebook_kit::runtime::{InstanceSpec, Platform};
use casebook_kit::topology::Topology;
use casebook_kit::wal::Durability;
use casebook_uber::api::ApiConfig;
use casebook_uber::config::UberConfig;
use casebook_uber::index::{DriverId, DriverStatus};
use casebook_uber::resp::{Frame, GeoResp};
use casebook_uber::service::UberService;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};
use support::{Client, show};

const DEADLINE: Duration = Duration::from_secs(20);
const PICKUP: (f64, f64) = (37.7750, -122.4190);

struct Setup {
    _platform: Platform,
    service: Arc<UberService>,
    http: SocketAddr,
    resp: u16,
    client: HttpClient,
    _dir: tempfile::TempDir,
}

async fn start(platform: &Platform, service: &str) -> SocketAddr {
    platform
        .start(InstanceSpec {
            service: service.into(),
            instance_id: Some(format!("{service}-test")),
            placement: Topology::uniform(&["r1"], 1).spread(0),
            listen: "127.0.0.1:0".parse().unwrap(),
            version: "test".into(),
            port_hint: None,
        })
        .await
        .unwrap()
        .address
}

impl Setup {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new();
        let platform = Platform::new(Topology::uniform(&["r1"], 1), dir.path(), clock.shared());
        let service = Arc::new(UberService::new(ApiConfig {
            durability: Durability::NoSync,
            tick_every: Duration::from_millis(20),
            ..ApiConfig::default()
        }));
        platform.register_service(service.clone());
        let engine_of = Arc::downgrade(&service);
        platform.register_service(Arc::new(GeoResp::from_config_live(
            &UberConfig::default(),
            Arc::new(move || Some(engine_of.upgrade()?.engine()?.index().clone())),
        )));
        let resp = start(&platform, "geo-resp").await.port();
        let http = start(&platform, "uber").await;
        Self {
            _platform: platform,
            service,
            http,
            resp,
            client: HttpClient::new(DEADLINE),
            _dir: dir,
        }
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let url = format!("http://{}{path}", self.http);
        let response = self
            .client
            .send(Method::POST, &url, headers, Bytes::from(body.to_string()))
            .await
            .unwrap();
        let value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        (response.status, value)
    }

    async fn ping(&self, driver: u64, lat: f64, lon: f64, ts: u64) {
        let (status, body) = self
            .post(
                &format!("/v1/drivers/{driver}/location"),
                json!({"lat": lat, "lon": lon, "ts": ts, "status": "available"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    /// Runs `commands` on one RESP connection (a blocking client, off the
    /// runtime's workers) and returns the replies.
    async fn resp(&self, commands: Vec<Vec<String>>) -> Vec<Frame> {
        let port = self.resp;
        tokio::task::spawn_blocking(move || {
            let mut c = Client::connect(port);
            commands
                .iter()
                .map(|cmd| c.cmd_str(&cmd.iter().map(String::as_str).collect::<Vec<_>>()))
                .collect()
        })
        .await
        .unwrap()
    }
}

fn cmd(words: &str) -> Vec<String> {
    words.split_whitespace().map(str::to_owned).collect()
}

/// Points around the pickup, a few hundred metres apart, and two at one spot.
fn points() -> Vec<(u64, f64, f64)> {
    let mut out: Vec<(u64, f64, f64)> = (0..40u64)
        .map(|i| {
            let (dx, dy) = ((i % 7) as f64 - 3.0, (i / 7) as f64 - 3.0);
            (i + 1, PICKUP.0 + dy * 0.004, PICKUP.1 + dx * 0.005)
        })
        .collect();
    out.push((41, PICKUP.0 + 0.001, PICKUP.1 + 0.001));
    out.push((42, PICKUP.0 + 0.001, PICKUP.1 + 0.001));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drivers_pinged_over_http_are_found_over_resp_with_redis_answers() {
    let setup = Setup::start().await;
    let points = points();
    for &(driver, lat, lon) in &points {
        setup.ping(driver, lat, lon, 1).await;
    }
    // The same points in a plain geo set: the live key must answer like it.
    let mut load = vec![cmd("GEOADD plain")];
    for &(driver, lat, lon) in &points {
        load[0].extend([lon.to_string(), lat.to_string(), driver.to_string()]);
    }
    let loaded = setup.resp(load).await;
    assert_eq!(loaded, vec![Frame::Integer(points.len() as i64)]);

    let (lon, lat) = (PICKUP.1, PICKUP.0);
    let queries = [
        format!(
            "GEOSEARCH {{}} FROMLONLAT {lon} {lat} BYRADIUS 1.2 km ASC WITHDIST WITHCOORD WITHHASH"
        ),
        format!("GEOSEARCH {{}} FROMLONLAT {lon} {lat} BYRADIUS 5 km COUNT 10 DESC WITHDIST"),
        format!("GEOSEARCH {{}} FROMLONLAT {lon} {lat} BYBOX 2 1500 m ASC"),
        "GEOSEARCH {} FROMMEMBER 17 BYRADIUS 900 m ASC COUNT 5 WITHDIST".to_owned(),
        format!("GEORADIUS {{}} {lon} {lat} 800 m WITHDIST ASC"),
        "GEORADIUSBYMEMBER {} 41 300 m ASC".to_owned(),
        "GEOPOS {} 1 17 41 999 abc".to_owned(),
        "GEODIST {} 1 40 km".to_owned(),
        "GEOHASH {} 1 42 7".to_owned(),
        "ZSCORE {} 23".to_owned(),
        "ZCARD {}".to_owned(),
    ];
    let mut live = Vec::new();
    let mut plain = Vec::new();
    for q in &queries {
        live.push(cmd(&q.replace("{}", "drivers")));
        plain.push(cmd(&q.replace("{}", "plain")));
    }
    let from_index = setup.resp(live).await;
    let from_set = setup.resp(plain).await;
    for ((q, a), b) in queries.iter().zip(&from_index).zip(&from_set) {
        assert_eq!(a, b, "{q}: live {} vs plain {}", show(a), show(b));
        assert!(!matches!(a, Frame::Error(_)), "{q}: {}", show(a));
    }
    assert!(
        matches!(&from_index[0], Frame::Array(hits) if hits.len() > 5),
        "the radius search finds drivers: {}",
        show(&from_index[0])
    );

    // ZREM takes a driver offline in the index; it leaves the searches.
    let engine = setup.service.engine().unwrap();
    let after = setup
        .resp(vec![
            cmd("ZREM drivers 41 41 999 abc"),
            cmd("GEOPOS drivers 41"),
        ])
        .await;
    assert_eq!(after[0], Frame::Integer(1));
    assert_eq!(after[1], Frame::Array(vec![Frame::NullArray]));
    assert_eq!(
        engine.index().get(DriverId(41)).unwrap().status,
        DriverStatus::Offline
    );
    // What the live key does not do, and FLUSHDB leaves it alone.
    let refused = setup
        .resp(vec![
            cmd("GEOADD drivers -122.41 37.77 driver-x"),
            cmd("ZRANGE drivers 0 -1"),
            cmd("DEL plain drivers"),
            cmd("GEOSEARCHSTORE drivers plain FROMMEMBER 1 BYRADIUS 1 km"),
            cmd("FLUSHDB"),
            cmd("ZCARD drivers"),
            cmd("ZCARD plain"),
        ])
        .await;
    for (i, reply) in refused[..4].iter().enumerate() {
        assert!(matches!(reply, Frame::Error(_)), "{i}: {}", show(reply));
    }
    assert_eq!(
        refused[0],
        Frame::err(
            "member 'driver-x' of the live key 'drivers' must be a driver id (an unsigned decimal integer)"
        )
    );
    assert_eq!(refused[4], Frame::ok());
    assert_eq!(refused[5], Frame::Integer(points.len() as i64 - 1));
    assert_eq!(refused[6], Frame::Integer(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_added_over_resp_is_offered_a_ride_over_http() {
    let setup = Setup::start().await;
    // Driver 5 pings over HTTP far away; driver 9 is added next to the pickup over RESP.
    setup.ping(5, PICKUP.0 + 0.02, PICKUP.1, 1).await;
    let (lat, lon) = (PICKUP.0 + 0.0001, PICKUP.1 + 0.0001);
    let replies = setup
        .resp(vec![
            cmd(&format!("GEOADD drivers NX {lon} {lat} 9")),
            cmd(&format!("GEOADD drivers NX {lon} {lat} 9")),
            cmd(&format!("GEOADD drivers XX CH {} {lat} 9", lon + 0.001)),
            cmd(&format!("GEOADD drivers CH {lon} {lat} 9 {lon} {lat} 5")),
        ])
        .await;
    assert_eq!(
        replies,
        vec![
            Frame::Integer(1),
            Frame::Integer(0),
            Frame::Integer(1),
            Frame::Integer(2)
        ]
    );
    let engine = setup.service.engine().unwrap();
    let nine = engine
        .index()
        .available(DriverId(9))
        .expect("driver 9 is available");
    assert!((nine.position.lat() - lat).abs() < 1e-9);
    // A later HTTP ping of driver 5 still wins (its timestamp is newer).
    setup.ping(5, PICKUP.0 + 0.02, PICKUP.1, 1_000).await;

    let (status, ride) = setup
        .post(
            "/v1/rides",
            json!({
                "rider": 100,
                "pickup": {"lat": PICKUP.0, "lng": PICKUP.1},
                "dropoff": {"lat": 37.8000, "lng": -122.4000},
                "mode": "greedy",
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ride}");
    assert_eq!(ride["status"]["state"], "offered");
    assert_eq!(ride["status"]["driver"], 9);
    // Accepted: dispatched, so no longer in the live key.
    let id = ride["id"].as_u64().unwrap();
    let (status, accepted) = setup
        .post(&format!("/v1/rides/{id}/accept"), json!({"driver": 9}))
        .await;
    assert_eq!(status, StatusCode::OK, "{accepted}");
    let after = setup.resp(vec![cmd("ZSCORE drivers 9")]).await;
    assert_eq!(after, vec![Frame::Null]);
}
