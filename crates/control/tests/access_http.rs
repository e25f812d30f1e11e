//! The control plane's access rules over real HTTP: a real platform, the real
//! control-plane service, calls with and without the installation's token, foreign
//! `Host` and `Origin` headers, the admin API's refusals and discovery's bounds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use casebook_control::access::{TOKEN_COOKIE, TOKEN_FILE};
use casebook_control::discovery::DiscoveryConfig;
use casebook_control::{CONTROL_SERVICE, ControlConfig, ControlPlane, ControlSettings};
use casebook_kit::clock::SystemClock;
use casebook_kit::discovery::{DiscoveryClient, DiscoveryRegistrar, Registration};
use casebook_kit::http_client::{HttpClient, HttpResponse};
use casebook_kit::runtime::{
    BoxFuture, InstanceContext, InstanceSpec, Platform, ServiceFactory, StartError, serve_tcp,
};
use casebook_kit::topology::{InstanceInfo, Topology};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};

/// A service that speaks no HTTP: it accepts TCP connections and closes them.
#[derive(Debug)]
struct PlainTcp;

impl ServiceFactory for PlainTcp {
    fn name(&self) -> &str {
        "plain-tcp"
    }

    fn start<'a>(
        &'a self,
        ctx: &'a InstanceContext,
    ) -> BoxFuture<'a, Result<SocketAddr, StartError>> {
        Box::pin(async move {
            let listener = ctx.bind(ctx.listen_addr()).await?;
            let address = listener.local_addr().map_err(anyhow::Error::from)?;
            serve_tcp(ctx, listener, |_stream, _peer| async {});
            Ok(address)
        })
    }
}

struct Plane {
    platform: Platform,
    url: String,
    address: SocketAddr,
    control_id: String,
    _dir: Option<tempfile::TempDir>,
}

fn settings(control: ControlConfig, discovery: DiscoveryConfig) -> ControlSettings {
    ControlSettings {
        discovery,
        drain: Duration::from_secs(1),
        control,
        ..ControlSettings::default()
    }
}

async fn start_in(
    data_dir: &std::path::Path,
    control: ControlConfig,
    discovery: DiscoveryConfig,
) -> Result<Plane, StartError> {
    let platform = Platform::new(Topology::default(), data_dir, SystemClock::shared());
    let listen = SocketAddr::new(control.host, 0);
    platform.register_service(Arc::new(ControlPlane::new(
        platform.downgrade(),
        settings(control, discovery),
    )));
    platform.register_service(Arc::new(PlainTcp));
    let info = platform
        .start(InstanceSpec {
            service: CONTROL_SERVICE.into(),
            instance_id: None,
            placement: Topology::default().spread(0),
            listen,
            version: "test".into(),
            port_hint: None,
        })
        .await?;
    let address = casebook_kit::resolve::callable(info.address);
    Ok(Plane {
        platform,
        url: format!("http://{address}"),
        address,
        control_id: info.instance_id,
        _dir: None,
    })
}

async fn start() -> Plane {
    start_with(DiscoveryConfig::default()).await
}

async fn start_with(discovery: DiscoveryConfig) -> Plane {
    let dir = tempfile::tempdir().unwrap();
    let mut plane = start_in(dir.path(), ControlConfig::default(), discovery)
        .await
        .unwrap();
    plane._dir = Some(dir);
    plane
}

impl Plane {
    fn token(&self) -> String {
        std::fs::read_to_string(self.platform.data_dir().join(TOKEN_FILE))
            .unwrap()
            .trim()
            .to_owned()
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(header::HeaderName, &str)],
        body: Option<Value>,
    ) -> HttpResponse {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        let body = match body {
            Some(body) => {
                map.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                Bytes::from(serde_json::to_vec(&body).unwrap())
            }
            None => Bytes::new(),
        };
        HttpClient::default()
            .send(method, &format!("{}{path}", self.url), map, body)
            .await
            .unwrap()
    }

    async fn authed(&self, method: Method, path: &str, body: Option<Value>) -> HttpResponse {
        let auth = format!("Bearer {}", self.token());
        self.call(method, path, &[(header::AUTHORIZATION, &auth)], body)
            .await
    }
}

fn json_of(response: &HttpResponse) -> Value {
    serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&response.body)))
}

#[tokio::test]
async fn state_changing_calls_need_the_token() {
    let plane = start().await;
    let start_plain = json!({"service": "plain-tcp"});

    let none = plane
        .call(
            Method::POST,
            "/api/instances",
            &[],
            Some(start_plain.clone()),
        )
        .await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(none.headers[header::WWW_AUTHENTICATE], "Bearer");
    assert!(json_of(&none)["error"].as_str().unwrap().contains("token"));

    let wrong = plane
        .call(
            Method::POST,
            "/api/instances",
            &[(header::AUTHORIZATION, "Bearer not-the-token")],
            Some(start_plain.clone()),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(
        wrong.headers[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );

    let right = plane
        .authed(Method::POST, "/api/instances", Some(start_plain))
        .await;
    assert_eq!(right.status, StatusCode::CREATED, "{:?}", right.body);

    // Discovery writes and metrics publishing are state-changing too.
    let registration = Registration::up(fake_instance("svc", "svc-1"));
    let register = plane
        .call(
            Method::POST,
            "/api/discovery/apps/svc",
            &[],
            Some(serde_json::to_value(&registration).unwrap()),
        )
        .await;
    assert_eq!(register.status, StatusCode::UNAUTHORIZED);
    let publish = plane
        .call(
            Method::POST,
            "/api/metrics/publish",
            &[],
            Some(json!({"metrics": []})),
        )
        .await;
    assert_eq!(publish.status, StatusCode::UNAUTHORIZED);

    // Reads on loopback need none.
    let topology = plane.call(Method::GET, "/api/topology", &[], None).await;
    assert_eq!(topology.status, StatusCode::OK);
}

#[tokio::test]
async fn a_foreign_host_is_refused_even_with_the_token() {
    let plane = start().await;
    let port = plane.address.port();
    let evil = format!("evil.example:{port}");
    let read = plane
        .call(Method::GET, "/api/topology", &[(header::HOST, &evil)], None)
        .await;
    assert_eq!(read.status, StatusCode::FORBIDDEN);
    assert!(json_of(&read)["error"].as_str().unwrap().contains("Host"));
    let auth = format!("Bearer {}", plane.token());
    let write = plane
        .call(
            Method::POST,
            "/api/instances",
            &[(header::HOST, &evil), (header::AUTHORIZATION, &auth)],
            Some(json!({"service": "plain-tcp"})),
        )
        .await;
    assert_eq!(write.status, StatusCode::FORBIDDEN);
    // Every loopback name of the bound port is fine.
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}")] {
        let ok = plane
            .call(Method::GET, "/api/topology", &[(header::HOST, &host)], None)
            .await;
        assert_eq!(ok.status, StatusCode::OK, "{host}");
    }
}

#[tokio::test]
async fn a_foreign_origin_cannot_change_state() {
    let plane = start().await;
    let auth = format!("Bearer {}", plane.token());
    let foreign = plane
        .call(
            Method::POST,
            "/api/instances",
            &[
                (header::ORIGIN, "http://evil.example"),
                (header::AUTHORIZATION, &auth),
            ],
            Some(json!({"service": "plain-tcp"})),
        )
        .await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN);
    assert!(
        json_of(&foreign)["error"]
            .as_str()
            .unwrap()
            .contains("Origin")
    );
    let own_origin = plane.url.clone();
    let same = plane
        .call(
            Method::POST,
            "/api/instances",
            &[
                (header::ORIGIN, &own_origin),
                (header::AUTHORIZATION, &auth),
            ],
            Some(json!({"service": "plain-tcp"})),
        )
        .await;
    assert_eq!(same.status, StatusCode::CREATED);
}

#[tokio::test]
async fn the_control_plane_refuses_to_stop_or_kill_itself() {
    let plane = start().await;
    for verb in ["stop", "kill"] {
        let path = format!("/api/instances/{}/{verb}", plane.control_id);
        let answer = plane.authed(Method::POST, &path, None).await;
        assert_eq!(answer.status, StatusCode::CONFLICT, "{verb}");
        assert!(
            json_of(&answer)["error"]
                .as_str()
                .unwrap()
                .contains("control plane")
        );
    }
    // Still serving.
    let health = plane.call(Method::GET, "/health", &[], None).await;
    assert_eq!(health.status, StatusCode::OK);
}

#[tokio::test]
async fn instances_start_only_on_allowed_ports() {
    let plane = start().await;
    for port in [22, 80, 1023, 40000] {
        let answer = plane
            .authed(
                Method::POST,
                "/api/instances",
                Some(json!({"service": "plain-tcp", "port": port})),
            )
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "port {port}");
        assert_eq!(json_of(&answer)["field"], "port", "port {port}");
    }
    // Port 0 (a free port) is always fine.
    let free = plane
        .authed(
            Method::POST,
            "/api/instances",
            Some(json!({"service": "plain-tcp", "port": 0})),
        )
        .await;
    assert_eq!(free.status, StatusCode::CREATED);
}

fn fake_instance(service: &str, id: &str) -> InstanceInfo {
    let placement = Topology::default().spread(0);
    InstanceInfo {
        service: service.into(),
        instance_id: id.into(),
        region: placement.region,
        zone: placement.zone,
        address: "127.0.0.1:9".parse().unwrap(),
        version: "0".into(),
    }
}

#[tokio::test]
async fn a_registration_flood_is_bounded_and_the_platform_still_registers() {
    let plane = start_with(DiscoveryConfig {
        max_instances_per_service: 20,
        ..DiscoveryConfig::default()
    })
    .await;
    let token = plane.token();
    let client = DiscoveryClient::new(&plane.url).with_token(Some(&token));
    let mut refused = None;
    for n in 0..50 {
        let registration = Registration::up(fake_instance("fake", &format!("fake-{n}")));
        if let Err(err) = client.register(&registration).await {
            refused = Some((n, err));
            break;
        }
    }
    let (n, err) = refused.expect("the flood is refused");
    assert_eq!(n, 20, "refused at the bound");
    assert!(
        err.to_string().contains("max_instances_per_service"),
        "{err}"
    );
    let raw = plane
        .authed(
            Method::POST,
            "/api/discovery/apps/fake",
            Some(serde_json::to_value(Registration::up(fake_instance("fake", "fake-x"))).unwrap()),
        )
        .await;
    assert_eq!(raw.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(json_of(&raw)["error"].is_string());

    // The platform's own instances register through the real registrar.
    plane
        .platform
        .set_registrar(Arc::new(DiscoveryRegistrar::new(
            client.clone(),
            Duration::from_secs(30),
        )));
    let started = plane
        .authed(
            Method::POST,
            "/api/instances",
            Some(json!({"service": "plain-tcp"})),
        )
        .await;
    assert_eq!(started.status, StatusCode::CREATED);
    let id = json_of(&started)["instance_id"]
        .as_str()
        .unwrap()
        .to_owned();
    casebook_testkit::eventually(
        "the platform's instances registered",
        Duration::from_secs(10),
        || {
            let client = client.clone();
            let id = id.clone();
            let control_id = plane.control_id.clone();
            async move {
                let all = client.all().await.unwrap();
                let has = |service: &str, id: &str| {
                    all.services
                        .get(service)
                        .is_some_and(|list| list.iter().any(|v| v.instance.instance_id == id))
                };
                has("plain-tcp", &id) && has(CONTROL_SERVICE, &control_id)
            }
        },
    )
    .await;
}

#[tokio::test]
async fn the_token_file_is_private_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let first = start_in(
        dir.path(),
        ControlConfig::default(),
        DiscoveryConfig::default(),
    )
    .await
    .unwrap();
    let token = first.token();
    assert_eq!(token.len(), 64);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join(TOKEN_FILE))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    first.platform.stop_all(Duration::from_secs(1)).await;
    drop(first);

    let second = start_in(
        dir.path(),
        ControlConfig::default(),
        DiscoveryConfig::default(),
    )
    .await
    .unwrap();
    assert_eq!(second.token(), token, "a restart keeps the token");
    let answer = second
        .call(
            Method::POST,
            "/api/instances",
            &[(header::AUTHORIZATION, &format!("Bearer {token}"))],
            Some(json!({"service": "plain-tcp"})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED);
}

#[tokio::test]
async fn binding_beyond_loopback_needs_the_force_key() {
    let dir = tempfile::tempdir().unwrap();
    let everywhere = ControlConfig {
        host: "0.0.0.0".parse().unwrap(),
        ..ControlConfig::default()
    };
    let err = start_in(dir.path(), everywhere.clone(), DiscoveryConfig::default())
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("control.allow_insecure_bind"),
        "{err}"
    );
    assert!(everywhere.validate().is_err());

    let forced = ControlConfig {
        allow_insecure_bind: true,
        ..everywhere
    };
    forced.validate().unwrap();
    let plane = start_in(dir.path(), forced, DiscoveryConfig::default())
        .await
        .unwrap();
    // Beyond loopback, reads need the token too.
    let read = plane.call(Method::GET, "/api/topology", &[], None).await;
    assert_eq!(read.status, StatusCode::UNAUTHORIZED);
    let read = plane.authed(Method::GET, "/api/topology", None).await;
    assert_eq!(read.status, StatusCode::OK);
}

#[tokio::test]
async fn the_index_signs_in_from_the_url_and_links_only_http_endpoints() {
    let plane = start().await;
    let token = plane.token();
    let wrong = plane.call(Method::GET, "/?token=nope", &[], None).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);

    let signed_in = plane
        .call(Method::GET, &format!("/?token={token}"), &[], None)
        .await;
    assert_eq!(signed_in.status, StatusCode::SEE_OTHER);
    assert_eq!(signed_in.headers[header::LOCATION], "/");
    let cookie = signed_in.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(
        cookie.starts_with(&format!("{TOKEN_COOKIE}_{}={token};", plane.address.port())),
        "{cookie}"
    );
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );

    // The page's own requests carry the cookie: it stands for the token.
    let cookie_pair = cookie.split(';').next().unwrap().to_owned();
    let origin = plane.url.clone();
    let started = plane
        .call(
            Method::POST,
            "/api/instances",
            &[(header::COOKIE, &cookie_pair), (header::ORIGIN, &origin)],
            Some(json!({"service": "plain-tcp"})),
        )
        .await;
    assert_eq!(started.status, StatusCode::CREATED);
    let plain_address = json_of(&started)["address"].as_str().unwrap().to_owned();

    let index = plane.call(Method::GET, "/", &[], None).await;
    let html = String::from_utf8_lossy(&index.body);
    assert!(
        html.contains(&format!("href=\"http://{}/health\"", plane.address)),
        "{html}"
    );
    assert!(html.contains(&plain_address), "{html}");
    assert!(
        !html.contains(&format!("http://{plain_address}/health")),
        "a non-HTTP instance gets no /health link: {html}"
    );
    let listed = json_of(&plane.call(Method::GET, "/api/instances", &[], None).await);
    let http_flag = |service: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["service"] == service)
            .unwrap()["http"]
            .clone()
    };
    assert_eq!(http_flag(CONTROL_SERVICE), true);
    assert_eq!(http_flag("plain-tcp"), false);
}
