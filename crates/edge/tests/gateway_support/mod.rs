//! What the gateway tests share: a platform on a `ManualClock` with the gateway and
//! tiny upstream services as real instances on loopback (so an upstream can be
//! killed: every connection dropped, the listener closed), a discovery stand-in
//! the tests fill (zone-aware answers, as discovery gives them), a token issuer
//! with the gateway's key, and a raw HTTP/1.1 client for heads a normal client
//! would not send.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use casebook_edge::gateway::{GatewayConfig, GatewayService, JwtKey, TokenIssuer};
use casebook_kit::clock::ManualClock;
use casebook_kit::discovery::DiscoveryError;
use casebook_kit::http_client::{HttpClient, HttpResponse};
use casebook_kit::resolve::{InstanceSource, Resolver};
use casebook_kit::runtime::{
    BoxFuture, InstanceContext, InstanceSpec, Platform, ServiceFactory, StartError, serve_http,
};
use casebook_kit::topology::{Placement, Topology};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const DEADLINE: Duration = casebook_testkit::DEADLINE;

/// Discovery as the tests say it is: `UP` instances per service.
#[derive(Debug, Default)]
pub struct FakeDiscovery {
    instances: Mutex<HashMap<String, Vec<(SocketAddr, Placement)>>>,
}

impl FakeDiscovery {
    pub fn set(&self, service: &str, instances: Vec<(SocketAddr, Placement)>) {
        self.instances.lock().insert(service.to_owned(), instances);
    }
}

impl InstanceSource for FakeDiscovery {
    fn nearest(
        &self,
        service: &str,
        _near: &Placement,
    ) -> BoxFuture<'_, Result<Vec<(SocketAddr, Placement)>, DiscoveryError>> {
        let found = self
            .instances
            .lock()
            .get(service)
            .cloned()
            .unwrap_or_default();
        Box::pin(async move { Ok(found) })
    }
}

/// Requests an upstream saw, by path.
#[derive(Debug, Default)]
pub struct Hits(Mutex<HashMap<String, usize>>);

impl Hits {
    pub fn of(&self, path: &str) -> usize {
        self.0.lock().get(path).copied().unwrap_or(0)
    }
}

/// An upstream: echoes what it got as JSON, except on paths ending in
/// `/fail` (500 with a JSON body), `/fail-text` (500, plain text), `/hang`
/// (never answers) and `/hop` (answers with hop-by-hop headers of its own).
#[derive(Debug)]
pub struct EchoService {
    pub name: String,
    pub hits: Arc<Hits>,
}

impl ServiceFactory for EchoService {
    fn name(&self) -> &str {
        &self.name
    }

    fn start<'a>(
        &'a self,
        ctx: &'a InstanceContext,
    ) -> BoxFuture<'a, Result<SocketAddr, StartError>> {
        Box::pin(async move {
            let listener = ctx.bind(ctx.listen_addr()).await?;
            let address = listener.local_addr().map_err(anyhow::Error::from)?;
            let hits = self.hits.clone();
            let instance = ctx.info().instance_id;
            let app = Router::new().fallback(move |request: Request| {
                let hits = hits.clone();
                let instance = instance.clone();
                async move { echo(request, &hits, &instance).await }
            });
            serve_http(ctx, listener, app);
            Ok(address)
        })
    }
}

async fn echo(request: Request, hits: &Hits, instance: &str) -> Response {
    let (head, body) = request.into_parts();
    let path = head.uri.path().to_owned();
    *hits.0.lock().entry(path.clone()).or_default() += 1;
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    if path.ends_with("/hang") {
        std::future::pending::<()>().await;
    }
    if path.ends_with("/fail") {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"error": "boom", "instance": instance})),
        )
            .into_response();
    }
    if path.ends_with("/fail-text") {
        return (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response();
    }
    let headers: serde_json::Map<String, Value> = head
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), json!(v.to_str().unwrap_or("?"))))
        .collect();
    let echoed = axum::Json(json!({
        "instance": instance,
        "method": head.method.as_str(),
        "uri": head.uri.to_string(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    }));
    if path.ends_with("/hop") {
        return (
            [
                ("connection", "x-upstream-hop"),
                ("x-upstream-hop", "1"),
                ("x-kept", "1"),
                ("x-gateway-fallback", "forged"),
            ],
            echoed,
        )
            .into_response();
    }
    echoed.into_response()
}

/// The platform with a gateway and its upstreams.
pub struct Harness {
    pub platform: Platform,
    pub clock: ManualClock,
    pub discovery: Arc<FakeDiscovery>,
    pub gateway: SocketAddr,
    pub gateway_id: String,
    pub service: Arc<GatewayService>,
    pub issuer: TokenIssuer,
    pub client: HttpClient,
    pub hits: HashMap<String, Arc<Hits>>,
    /// The first instance of each upstream, by service.
    pub upstream_ids: HashMap<String, String>,
    _dir: tempfile::TempDir,
}

pub fn topology() -> Topology {
    Topology::uniform(&["r1"], 2)
}

impl Harness {
    /// Starts `config`'s gateway in zone `r1-a` after an instance of each of
    /// `upstreams` (registered in the fake discovery, zone `r1-a`).
    pub async fn start(config: GatewayConfig, upstreams: &[&str]) -> Self {
        Self::start_with(upstreams, move |_| config).await
    }

    /// The same, with the gateway's configuration made once the upstreams'
    /// addresses are known (for routes to a fixed `url`).
    pub async fn start_with(
        upstreams: &[&str],
        config: impl FnOnce(&HashMap<String, SocketAddr>) -> GatewayConfig,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new();
        let platform = Platform::new(topology(), dir.path(), clock.shared());
        let discovery = Arc::new(FakeDiscovery::default());
        let mut hits = HashMap::new();
        let mut addresses = HashMap::new();
        let mut upstream_ids = HashMap::new();
        for name in upstreams {
            let h = Arc::new(Hits::default());
            platform.register_service(Arc::new(EchoService {
                name: (*name).to_owned(),
                hits: h.clone(),
            }));
            hits.insert((*name).to_owned(), h);
            let (id, address) = start_instance(&platform, name, 0).await;
            upstream_ids.insert((*name).to_owned(), id);
            discovery.set(name, vec![(address, topology().spread(0))]);
            addresses.insert((*name).to_owned(), address);
        }
        let resolver = Arc::new(Resolver::detached(clock.shared()));
        resolver.attach(discovery.clone());
        let key = Arc::new(JwtKey::load_or_create(&dir.path().join("jwt.key")).unwrap());
        let service = Arc::new(GatewayService::new(config(&addresses), resolver, key).unwrap());
        platform.register_service(service.clone());
        let (gateway_id, gateway) =
            start_instance(&platform, &service.config().service.clone(), 0).await;
        Self {
            issuer: service.issuer(clock.shared()),
            platform,
            clock,
            discovery,
            gateway,
            gateway_id,
            service,
            client: HttpClient::new(DEADLINE),
            hits,
            upstream_ids,
            _dir: dir,
        }
    }

    /// Starts an instance of `service` at placement `n` of the topology.
    pub async fn start_instance(&self, service: &str, n: usize) -> (String, SocketAddr) {
        start_instance(&self.platform, service, n).await
    }

    pub fn hits(&self, service: &str) -> &Hits {
        &self.hits[service]
    }

    /// A bearer `Authorization` header for `user`.
    pub fn bearer(&self, user: &str) -> (&'static str, String) {
        (
            "authorization",
            format!("Bearer {}", self.issuer.issue(user)),
        )
    }

    /// One call to the gateway.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> HttpResponse {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                http::HeaderName::try_from(*name).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        self.client
            .send(
                method,
                &format!("http://{}{path}", self.gateway),
                map,
                Bytes::from(body.to_owned()),
            )
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        self.call(Method::GET, path, headers, "").await
    }

    /// `/admin/routes` as JSON.
    pub async fn admin(&self) -> Value {
        let response = self.get("/admin/routes", &[]).await;
        assert_eq!(response.status, StatusCode::OK);
        serde_json::from_slice(&response.body).unwrap()
    }

    /// One route of `/admin/routes`.
    pub async fn admin_route(&self, name: &str) -> Value {
        let admin = self.admin().await;
        admin["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("route {name} not in {admin}"))
    }
}

async fn start_instance(platform: &Platform, service: &str, n: usize) -> (String, SocketAddr) {
    let info = platform
        .start(InstanceSpec {
            service: service.to_owned(),
            instance_id: None,
            placement: topology().spread(n),
            listen: "127.0.0.1:0".parse().unwrap(),
            version: "test".into(),
            port_hint: None,
        })
        .await
        .unwrap();
    (info.instance_id, info.address)
}

/// The JSON body of an answer.
pub fn json_body(response: &HttpResponse) -> Value {
    serde_json::from_slice(&response.body).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {:?}",
            String::from_utf8_lossy(&response.body)
        )
    })
}

/// Asserts a static gateway error: its status, JSON `code` and a message.
pub fn assert_error(response: &HttpResponse, status: StatusCode, code: &str) {
    assert_eq!(
        response.status,
        status,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(response.headers["content-type"], "application/json");
    let body = json_body(response);
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
}

/// A raw HTTP/1.1 exchange (the request must say `Connection: close`): status,
/// headers (lowercase names), body (de-chunked).
pub async fn raw(addr: SocketAddr, request: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut out))
        .await
        .expect("the server closes the connection")
        .unwrap();
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = out[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    (status, headers, body)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&data[..line_end])
                .split(';')
                .next()
                .unwrap()
                .trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 {
            return out;
        }
        let start = line_end + 2;
        out.extend_from_slice(&data[start..start + size]);
        data = &data[start + size + 2..];
    }
}

/// A header of a raw answer.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}
