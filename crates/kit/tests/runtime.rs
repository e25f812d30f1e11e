//! The platform runtime over real loopback sockets: start, graceful stop, kill.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use casebook_kit::clock::SystemClock;
use casebook_kit::http_client::HttpClient;
use casebook_kit::runtime::{
    InstanceContext, InstanceSpec, InstanceState, Lease, Platform, Registrar, ServiceFactory,
    StartError, serve_http,
};
use casebook_kit::topology::{InstanceInfo, Placement, Topology};
use parking_lot::Mutex;
use tokio::sync::{Notify, Semaphore};

/// A service whose `/slow` handler holds until the test releases it.
#[derive(Debug)]
struct Holding {
    entered: Notify,
    release: Semaphore,
}

impl Default for Holding {
    fn default() -> Self {
        Self {
            entered: Notify::new(),
            release: Semaphore::new(0),
        }
    }
}

#[derive(Debug)]
struct HoldingService(Arc<Holding>);

impl ServiceFactory for HoldingService {
    fn name(&self) -> &str {
        "holding"
    }
    fn start<'a>(
        &'a self,
        ctx: &'a InstanceContext,
    ) -> casebook_kit::runtime::BoxFuture<'a, Result<SocketAddr, StartError>> {
        Box::pin(async move {
            let listener = ctx.bind(ctx.listen_addr()).await?;
            let address = listener.local_addr().map_err(anyhow::Error::from)?;
            let holding = self.0.clone();
            let router = Router::new().route(
                "/slow",
                get(move || {
                    let holding = holding.clone();
                    async move {
                        holding.entered.notify_one();
                        holding.release.acquire().await.unwrap().forget();
                        "done"
                    }
                }),
            );
            serve_http(ctx, listener, router);
            Ok(address)
        })
    }
}

#[derive(Debug, Default)]
struct Events(Mutex<Vec<String>>);

#[derive(Debug)]
struct RecordingRegistrar(Arc<Events>);

#[derive(Debug)]
struct RecordingLease {
    id: String,
    events: Arc<Events>,
    released: bool,
}

impl Registrar for RecordingRegistrar {
    fn register(&self, info: InstanceInfo) -> Box<dyn Lease> {
        self.0
            .0
            .lock()
            .push(format!("register {}", info.instance_id));
        Box::new(RecordingLease {
            id: info.instance_id,
            events: self.0.clone(),
            released: false,
        })
    }
}

impl Lease for RecordingLease {
    fn release(mut self: Box<Self>) -> casebook_kit::runtime::BoxFuture<'static, ()> {
        self.released = true;
        self.events.0.lock().push(format!("release {}", self.id));
        Box::pin(async {})
    }
}

impl Drop for RecordingLease {
    fn drop(&mut self) {
        if !self.released {
            self.events.0.lock().push(format!("drop {}", self.id));
        }
    }
}

fn platform() -> (Platform, Arc<Holding>, Arc<Events>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let platform = Platform::new(Topology::default(), dir.path(), SystemClock::shared());
    let holding = Arc::new(Holding::default());
    platform.register_service(Arc::new(HoldingService(holding.clone())));
    let events = Arc::new(Events::default());
    platform.set_registrar(Arc::new(RecordingRegistrar(events.clone())));
    (platform, holding, events, dir)
}

fn spec(listen: &str) -> InstanceSpec {
    InstanceSpec {
        service: "holding".into(),
        instance_id: None,
        placement: Placement {
            region: "eu-west".into(),
            zone: "eu-west-b".into(),
        },
        listen: listen.parse().unwrap(),
        version: "test".into(),
        port_hint: Some("--holding-port".into()),
    }
}

/// Sends `GET /slow` and returns once its handler holds it in flight.
async fn request_held_in_flight(
    info: &InstanceInfo,
    holding: &Holding,
) -> tokio::task::JoinHandle<
    Result<casebook_kit::http_client::HttpResponse, casebook_kit::http_client::HttpError>,
> {
    let url = format!("{}/slow", info.http_url());
    let in_flight = tokio::spawn(async move {
        HttpClient::default()
            .call::<()>(http::Method::GET, &url, None)
            .await
    });
    holding.entered.notified().await;
    in_flight
}

async fn refuses_connections(addr: SocketAddr) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_err()
}

#[tokio::test]
async fn a_started_instance_serves_health_metrics_and_echoes_the_request_id() {
    let (platform, _holding, events, dir) = platform();
    let info = platform.start(spec("127.0.0.1:0")).await.unwrap();
    assert_eq!(info.instance_id, "holding-eu-west-b-1");
    assert!(dir.path().join("holding/eu-west/eu-west-b/0").is_dir());
    let client = HttpClient::default();
    let health: serde_json::Value = client
        .get_json(&format!("{}/health", info.http_url()))
        .await
        .unwrap();
    assert_eq!(health["status"], "up");
    assert_eq!(health["zone"], "eu-west-b");
    let mut headers = http::HeaderMap::new();
    headers.insert("x-request-id", "abc-123".parse().unwrap());
    let response = client
        .send(
            http::Method::GET,
            &format!("{}/metrics", info.http_url()),
            headers,
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.headers["x-request-id"], "abc-123");
    assert_eq!(events.0.lock().as_slice(), ["register holding-eu-west-b-1"]);
    assert_eq!(platform.list()[0].state, InstanceState::Running);
}

#[tokio::test]
async fn graceful_stop_deregisters_stops_accepting_and_finishes_in_flight_requests() {
    let (platform, holding, events, _dir) = platform();
    let info = platform.start(spec("127.0.0.1:0")).await.unwrap();
    let in_flight = request_held_in_flight(&info, &holding).await;

    let stopping = {
        let platform = platform.clone();
        let id = info.instance_id.clone();
        tokio::spawn(async move { platform.stop(&id, Duration::from_secs(30)).await })
    };
    // The listener closes while the request is still in flight.
    while !refuses_connections(info.address).await {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        platform.state(&info.instance_id),
        Some(InstanceState::Stopping)
    );
    holding.release.add_permits(1);

    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(&response.body[..], b"done");
    let report = stopping.await.unwrap().unwrap();
    assert!(report.drained);
    assert_eq!(
        platform.state(&info.instance_id),
        Some(InstanceState::Stopped)
    );
    assert_eq!(
        events.0.lock().as_slice(),
        [
            "register holding-eu-west-b-1",
            "release holding-eu-west-b-1"
        ]
    );
}

#[tokio::test]
async fn kill_drops_in_flight_requests_closes_sockets_and_leaves_the_lease_to_expire() {
    let (platform, holding, events, _dir) = platform();
    let info = platform.start(spec("127.0.0.1:0")).await.unwrap();
    let in_flight = request_held_in_flight(&info, &holding).await;

    assert!(platform.kill(&info.instance_id).await);
    let err = in_flight
        .await
        .unwrap()
        .expect_err("the connection is cut mid-request");
    assert!(!err.is_timeout(), "cut, not timed out: {err}");
    assert!(refuses_connections(info.address).await);
    assert_eq!(
        platform.state(&info.instance_id),
        Some(InstanceState::Killed)
    );
    assert_eq!(
        events.0.lock().as_slice(),
        ["register holding-eu-west-b-1", "drop holding-eu-west-b-1"]
    );
    assert!(!platform.kill("no-such-instance").await);
}

#[tokio::test]
async fn a_stop_whose_drain_deadline_passes_kills_the_rest() {
    let (platform, holding, _events, _dir) = platform();
    let info = platform.start(spec("127.0.0.1:0")).await.unwrap();
    let in_flight = request_held_in_flight(&info, &holding).await;
    let report = platform
        .stop(&info.instance_id, Duration::from_millis(20))
        .await
        .unwrap();
    assert!(!report.drained);
    assert!(in_flight.await.unwrap().is_err());
    assert_eq!(
        platform.state(&info.instance_id),
        Some(InstanceState::Stopped)
    );
}

#[tokio::test]
async fn a_taken_port_names_the_port_and_the_flag_that_changes_it() {
    let (platform, _holding, _events, _dir) = platform();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = platform.start(spec(&addr.to_string())).await.unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains(&format!("port {} is taken", addr.port())),
        "{message}"
    );
    assert!(message.contains("--holding-port"), "{message}");
    assert!(matches!(platform.list()[0].state, InstanceState::Failed(_)));
    // A failed start can be retried once the port is free.
    drop(taken);
    platform.start(spec(&addr.to_string())).await.unwrap();
}

#[tokio::test]
async fn unknown_services_and_placements_are_refused() {
    let (platform, _holding, _events, _dir) = platform();
    let mut bad = spec("127.0.0.1:0");
    bad.service = "nope".into();
    let err = platform.start(bad).await.unwrap_err();
    assert_eq!(err.to_string(), "unknown service `nope` (known: holding)");
    let mut bad = spec("127.0.0.1:0");
    bad.placement.zone = "us-east-a".into();
    assert!(matches!(
        platform.start(bad).await,
        Err(StartError::UnknownPlacement { .. })
    ));
}

#[tokio::test]
async fn stop_all_stops_services_in_reverse_start_order() {
    let (platform, _holding, events, _dir) = platform();
    let first = platform.start(spec("127.0.0.1:0")).await.unwrap();
    let mut second = spec("127.0.0.1:0");
    second.instance_id = Some("second".into());
    platform.start(second).await.unwrap();
    assert!(!platform.is_shutting_down());
    let reports = platform.stop_all(Duration::from_secs(5)).await;
    assert!(platform.is_shutting_down());
    assert_eq!(reports.len(), 2);
    assert!(reports.iter().all(|r| r.drained));
    assert!(
        platform
            .list()
            .iter()
            .all(|v| v.state == InstanceState::Stopped)
    );
    assert!(
        events
            .0
            .lock()
            .contains(&format!("release {}", first.instance_id))
    );
}

/// The view of one instance by id.
fn view(platform: &Platform, instance_id: &str) -> casebook_kit::runtime::InstanceView {
    platform
        .list()
        .into_iter()
        .find(|v| v.info.instance_id == instance_id)
        .unwrap()
}

#[tokio::test]
async fn start_seq_orders_instances_by_start_whatever_their_ids() {
    let (platform, _holding, _events, _dir) = platform();
    let mut ids = Vec::new();
    // Ids that sort the other way round from their starts.
    for id in ["c", "b", "a"] {
        let mut spec = spec("127.0.0.1:0");
        spec.instance_id = Some(id.into());
        ids.push(platform.start(spec).await.unwrap().instance_id);
    }
    let seqs: Vec<u64> = ids.iter().map(|id| view(&platform, id).start_seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    // A restart under an old id is a later start.
    platform.stop("c", Duration::from_secs(1)).await.unwrap();
    let mut again = spec("127.0.0.1:0");
    again.instance_id = Some("c".into());
    platform.start(again).await.unwrap();
    assert!(view(&platform, "c").start_seq > seqs[2]);
    platform.stop_all(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_replacement_instance_takes_over_its_slot_and_its_data() {
    let (platform, _holding, _events, dir) = platform();
    let first = platform.start(spec("127.0.0.1:0")).await.unwrap();
    let earlier = view(&platform, &first.instance_id);
    assert_eq!(earlier.slot.to_string(), "holding/eu-west/eu-west-b/0");
    assert_eq!(
        earlier.data_dir,
        dir.path().join("holding/eu-west/eu-west-b/0")
    );
    std::fs::write(earlier.data_dir.join("acknowledged"), b"trip-1").unwrap();
    platform
        .stop(&first.instance_id, Duration::from_secs(5))
        .await
        .unwrap();

    let second = platform.start(spec("127.0.0.1:0")).await.unwrap();
    assert_ne!(second.instance_id, first.instance_id);
    let later = view(&platform, &second.instance_id);
    assert_eq!(later.slot, earlier.slot);
    assert_eq!(
        std::fs::read(later.data_dir.join("acknowledged")).unwrap(),
        b"trip-1"
    );
    // The admin API's listing shows the slot.
    let listed = serde_json::to_value(&later).unwrap();
    assert_eq!(listed["slot"]["ordinal"], 0);
    assert_eq!(listed["slot"]["zone"], "eu-west-b");
}

#[tokio::test]
async fn live_instances_of_a_service_in_a_zone_hold_distinct_slots_and_a_kill_frees_one() {
    let (platform, _holding, _events, _dir) = platform();
    let a = platform.start(spec("127.0.0.1:0")).await.unwrap();
    let b = platform.start(spec("127.0.0.1:0")).await.unwrap();
    let other_zone = platform
        .start(InstanceSpec {
            placement: Placement {
                region: "eu-west".into(),
                zone: "eu-west-a".into(),
            },
            ..spec("127.0.0.1:0")
        })
        .await
        .unwrap();
    assert_eq!(view(&platform, &a.instance_id).slot.ordinal, 0);
    assert_eq!(view(&platform, &b.instance_id).slot.ordinal, 1);
    // Ordinals count per zone.
    assert_eq!(view(&platform, &other_zone.instance_id).slot.ordinal, 0);
    assert_ne!(
        view(&platform, &a.instance_id).data_dir,
        view(&platform, &b.instance_id).data_dir
    );

    std::fs::write(view(&platform, &a.instance_id).data_dir.join("mark"), b"a").unwrap();
    assert!(platform.kill(&a.instance_id).await);
    let c = platform.start(spec("127.0.0.1:0")).await.unwrap();
    // The lowest free slot: the killed instance's (with its data), not a third one.
    let replacement = view(&platform, &c.instance_id);
    assert_eq!(replacement.slot.ordinal, 0);
    assert_eq!(
        std::fs::read(replacement.data_dir.join("mark")).unwrap(),
        b"a"
    );
    let d = platform.start(spec("127.0.0.1:0")).await.unwrap();
    assert_eq!(view(&platform, &d.instance_id).slot.ordinal, 2);
}

#[tokio::test]
async fn instance_id_directories_from_before_slots_are_adopted_and_strays_reported() {
    let (platform, _holding, _events, dir) = platform();
    // The old layout: <data>/<service>/<instance id>, ids `<service>-<zone>-<n>`.
    let old_first = dir.path().join("holding/holding-eu-west-b-1");
    let old_later = dir.path().join("holding/holding-eu-west-b-7");
    std::fs::create_dir_all(&old_first).unwrap();
    std::fs::create_dir_all(&old_later).unwrap();
    std::fs::write(old_first.join("state"), b"first").unwrap();
    std::fs::write(old_later.join("state"), b"later").unwrap();
    let stray = dir.path().join("holding/custom-id");
    let gone_zone = dir.path().join("holding/eu-west/eu-west-q");
    std::fs::create_dir_all(&stray).unwrap();
    std::fs::create_dir_all(&gone_zone).unwrap();
    // Slots of a service no longer configured, and state that is no instance's.
    let retired = dir.path().join("retired");
    std::fs::create_dir_all(retired.join("eu-west/eu-west-b/0")).unwrap();
    let accounts = dir.path().join("whatsapp/example.com");
    std::fs::create_dir_all(&accounts).unwrap();

    let info = platform.start(spec("127.0.0.1:0")).await.unwrap();
    let adopted = view(&platform, &info.instance_id);
    assert_eq!(adopted.slot.ordinal, 0);
    assert_eq!(
        std::fs::read(adopted.data_dir.join("state")).unwrap(),
        b"first"
    );
    assert!(!old_first.exists() && !old_later.exists());
    assert_eq!(
        std::fs::read(dir.path().join("holding/eu-west/eu-west-b/1/state")).unwrap(),
        b"later"
    );
    let mut orphaned = platform.orphaned_data();
    orphaned.sort();
    assert_eq!(
        orphaned,
        vec![stray.clone(), gone_zone.clone(), retired.clone()]
    );
    // Reported, never removed.
    assert!(stray.is_dir() && gone_zone.is_dir() && retired.is_dir() && accounts.is_dir());
}

#[tokio::test]
async fn processes_sharing_a_data_root_never_share_a_slot() {
    // Fleet mode: one platform per process, one data root. Two platforms in one test
    // process stand in for two processes: the slot lock is per open file.
    let (first, _holding, _events, dir) = platform();
    let second = Platform::new(Topology::default(), dir.path(), SystemClock::shared());
    second.register_service(Arc::new(HoldingService(Arc::new(Holding::default()))));
    let a = first.start(spec("127.0.0.1:0")).await.unwrap();
    let b = second.start(spec("127.0.0.1:0")).await.unwrap();
    assert_eq!(view(&first, &a.instance_id).slot.ordinal, 0);
    assert_eq!(view(&second, &b.instance_id).slot.ordinal, 1);
    // Once the first process's instance ends, its slot is free for anyone.
    first.kill(&a.instance_id).await;
    let c = second.start(spec("127.0.0.1:0")).await.unwrap();
    assert_eq!(view(&second, &c.instance_id).slot.ordinal, 0);
}
