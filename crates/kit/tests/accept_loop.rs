//! The accept loop over real loopback sockets: a panicking connection is contained
//! and counted, connections past the per-listener limit are refused and counted,
//! and idle HTTP connections are closed after the header-read timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use casebook_kit::clock::SystemClock;
use casebook_kit::runtime::{
    AcceptOptions, BoxFuture, InstanceContext, InstanceSpec, ListenerLimits, Platform,
    ServiceFactory, StartError, serve_http, serve_tcp_with,
};
use casebook_kit::topology::{Placement, Topology};
use casebook_testkit::eventually;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Generous: only a broken server ever waits this long.
const DEADLINE: Duration = Duration::from_secs(10);

/// An HTTP service with `/ok` and `/boom` (which panics), served with the limits the
/// platform holds for it.
#[derive(Debug)]
struct HttpService;

impl ServiceFactory for HttpService {
    fn name(&self) -> &str {
        "http"
    }

    fn start<'a>(
        &'a self,
        ctx: &'a InstanceContext,
    ) -> BoxFuture<'a, Result<SocketAddr, StartError>> {
        Box::pin(async move {
            let listener = ctx.bind(ctx.listen_addr()).await?;
            let address = listener.local_addr().map_err(anyhow::Error::from)?;
            let router = Router::new()
                .route("/ok", get(|| async { "ok" }))
                .route(
                    "/peer",
                    get(
                        |axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<
                            SocketAddr,
                        >| async move { peer.to_string() },
                    ),
                )
                .route(
                    "/boom",
                    get(|| async {
                        panic!("a handler bug");
                        #[allow(unreachable_code)]
                        "never"
                    }),
                );
            serve_http(ctx, listener, router);
            Ok(address)
        })
    }
}

/// A raw TCP protocol: answers `pong` to each byte, panics on `p`.
#[derive(Debug)]
struct RawService;

impl ServiceFactory for RawService {
    fn name(&self) -> &str {
        "raw"
    }

    fn start<'a>(
        &'a self,
        ctx: &'a InstanceContext,
    ) -> BoxFuture<'a, Result<SocketAddr, StartError>> {
        Box::pin(async move {
            let listener = ctx.bind(ctx.listen_addr()).await?;
            let address = listener.local_addr().map_err(anyhow::Error::from)?;
            serve_tcp_with(
                ctx,
                listener,
                AcceptOptions::bounded(16),
                |mut stream, _peer| async move {
                    let mut byte = [0u8; 1];
                    while stream.read_exact(&mut byte).await.is_ok() {
                        assert_ne!(byte[0], b'p', "a protocol bug");
                        if stream.write_all(b"pong").await.is_err() {
                            break;
                        }
                    }
                },
            );
            Ok(address)
        })
    }
}

/// The platform, the instance's address, and its data directory (removed on drop).
/// A raw TCP protocol whose connection setup (on the accept loop itself) panics for
/// the first connection, then answers `pong` once.
#[derive(Debug)]
struct SetupPanicService;

impl ServiceFactory for SetupPanicService {
    fn name(&self) -> &str {
        "setup"
    }

    fn start<'a>(
        &'a self,
        ctx: &'a InstanceContext,
    ) -> BoxFuture<'a, Result<SocketAddr, StartError>> {
        Box::pin(async move {
            let listener = ctx.bind(ctx.listen_addr()).await?;
            let address = listener.local_addr().map_err(anyhow::Error::from)?;
            let mut accepted = 0;
            serve_tcp_with(
                ctx,
                listener,
                AcceptOptions::UNBOUNDED,
                move |mut stream, _peer| {
                    accepted += 1;
                    assert_ne!(accepted, 1, "a setup bug");
                    async move {
                        let _ = stream.write_all(b"pong").await;
                    }
                },
            );
            Ok(address)
        })
    }
}

async fn start(
    factory: Arc<dyn ServiceFactory>,
    id: &str,
    limits: ListenerLimits,
) -> (Platform, SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let platform = Platform::new(Topology::default(), dir.path(), SystemClock::shared());
    let service = factory.name().to_owned();
    platform.set_listener_limits(&service, limits);
    platform.register_service(factory);
    let info = platform
        .start(InstanceSpec {
            service,
            instance_id: Some(id.into()),
            placement: Placement {
                region: "eu-west".into(),
                zone: "eu-west-a".into(),
            },
            listen: "127.0.0.1:0".parse().unwrap(),
            version: "test".into(),
            port_hint: None,
        })
        .await
        .unwrap();
    (platform, info.address, dir)
}

/// Sends `GET path` on `stream` and reads one response (headers and a
/// content-length body); `None` if the connection ends first.
async fn get_on(stream: &mut TcpStream, path: &str) -> Option<String> {
    let request = format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let text = String::from_utf8_lossy(&response).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if response.len() >= end + 4 + length {
                return Some(text);
            }
        }
        let n = tokio::time::timeout(DEADLINE, stream.read(&mut chunk))
            .await
            .expect("the server answers or closes")
            .ok()?;
        if n == 0 {
            return None;
        }
        response.extend_from_slice(&chunk[..n]);
    }
}

/// Reads until the server closes the connection; what it sent.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut all))
        .await
        .expect("the server closes the connection");
    all
}

fn counter(name: &str, instance: &str) -> u64 {
    let text = casebook_kit::telemetry::metrics().render_prometheus();
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(&format!("instance=\"{instance}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

#[tokio::test]
async fn a_panicking_http_handler_closes_only_its_connection() {
    let (platform, address, _dir) = start(
        Arc::new(HttpService),
        "http-panic",
        ListenerLimits::default(),
    )
    .await;
    let mut doomed = TcpStream::connect(address).await.unwrap();
    let mut bystander = TcpStream::connect(address).await.unwrap();
    assert!(
        get_on(&mut bystander, "/ok")
            .await
            .unwrap()
            .starts_with("HTTP/1.1 200")
    );

    assert_eq!(
        get_on(&mut doomed, "/boom").await,
        None,
        "the panicking connection is closed"
    );
    // The connection open before the panic and a new one are both served.
    assert!(
        get_on(&mut bystander, "/ok")
            .await
            .unwrap()
            .starts_with("HTTP/1.1 200")
    );
    let mut fresh = TcpStream::connect(address).await.unwrap();
    assert!(
        get_on(&mut fresh, "/ok")
            .await
            .unwrap()
            .starts_with("HTTP/1.1 200")
    );
    assert_eq!(counter("connection_panics_total", "http-panic"), 1);
    assert!(platform.list()[0].state == casebook_kit::runtime::InstanceState::Running);
}

#[tokio::test]
async fn a_panicking_tcp_protocol_task_closes_only_its_connection() {
    let (_platform, address, _dir) =
        start(Arc::new(RawService), "raw-panic", ListenerLimits::default()).await;
    let mut doomed = TcpStream::connect(address).await.unwrap();
    let mut bystander = TcpStream::connect(address).await.unwrap();
    doomed.write_all(b"p").await.unwrap();
    assert!(read_until_closed(&mut doomed).await.is_empty());
    bystander.write_all(b"x").await.unwrap();
    let mut pong = [0u8; 4];
    bystander.read_exact(&mut pong).await.unwrap();
    assert_eq!(&pong, b"pong");
    assert_eq!(counter("connection_panics_total", "raw-panic"), 1);
    // Only the bystander is still open; closing it leaves none.
    let open = || counter("tcp_connections_open", "raw-panic");
    casebook_testkit::eventually(
        "the panicked connection uncounted",
        casebook_testkit::DEADLINE,
        || async { open() == 1 },
    )
    .await;
    drop(bystander);
    casebook_testkit::eventually(
        "the closed connection uncounted",
        casebook_testkit::DEADLINE,
        || async { open() == 0 },
    )
    .await;
}

#[tokio::test]
async fn connections_past_the_limit_are_refused_until_one_closes() {
    let limits = ListenerLimits {
        max_connections: 2,
        ..ListenerLimits::default()
    };
    let (_platform, address, _dir) = start(Arc::new(HttpService), "http-limit", limits).await;
    // Two kept-alive connections, each served once so the server holds both.
    let mut first = TcpStream::connect(address).await.unwrap();
    let mut second = TcpStream::connect(address).await.unwrap();
    assert!(
        get_on(&mut first, "/ok")
            .await
            .unwrap()
            .starts_with("HTTP/1.1 200")
    );
    assert!(
        get_on(&mut second, "/ok")
            .await
            .unwrap()
            .starts_with("HTTP/1.1 200")
    );

    // A third is told 503 and closed (it sends nothing, so the close is a clean FIN).
    let mut third = TcpStream::connect(address).await.unwrap();
    let refusal = String::from_utf8(read_until_closed(&mut third).await).unwrap();
    assert!(refusal.starts_with("HTTP/1.1 503"), "{refusal}");
    assert!(refusal.contains("connection: close"), "{refusal}");
    assert_eq!(counter("connections_refused_total", "http-limit"), 1);
    // The held ones are unharmed.
    assert!(
        get_on(&mut second, "/ok")
            .await
            .unwrap()
            .starts_with("HTTP/1.1 200")
    );

    drop(first);
    eventually(
        "a connection to be served after one closed",
        DEADLINE,
        || async {
            let mut next = TcpStream::connect(address).await.unwrap();
            get_on(&mut next, "/ok")
                .await
                .is_some_and(|r| r.starts_with("HTTP/1.1 200"))
        },
    )
    .await;
}

#[tokio::test]
async fn an_idle_http_connection_is_closed_after_the_header_read_timeout() {
    let limits = ListenerLimits {
        header_read_timeout: Duration::from_millis(200),
        ..ListenerLimits::default()
    };
    let (_platform, address, _dir) = start(Arc::new(HttpService), "http-idle", limits).await;
    let mut kept_alive = TcpStream::connect(address).await.unwrap();
    assert!(
        get_on(&mut kept_alive, "/ok")
            .await
            .unwrap()
            .starts_with("HTTP/1.1 200")
    );
    // Idle after a request, and idle from the start: both are closed by the server.
    let mut silent = TcpStream::connect(address).await.unwrap();
    read_until_closed(&mut kept_alive).await;
    read_until_closed(&mut silent).await;
}

#[tokio::test]
async fn a_panic_while_setting_up_a_connection_keeps_the_accept_loop_alive() {
    let (_platform, address, _dir) = start(
        Arc::new(SetupPanicService),
        "setup-panic",
        ListenerLimits::default(),
    )
    .await;
    let mut doomed = TcpStream::connect(address).await.unwrap();
    assert!(read_until_closed(&mut doomed).await.is_empty());
    let mut next = TcpStream::connect(address).await.unwrap();
    assert_eq!(read_until_closed(&mut next).await, b"pong");
    assert_eq!(counter("connection_panics_total", "setup-panic"), 1);
}

#[tokio::test]
async fn handlers_see_the_callers_address() {
    let (_platform, address, _dir) = start(
        Arc::new(HttpService),
        "http-peer",
        ListenerLimits::default(),
    )
    .await;
    let mut stream = TcpStream::connect(address).await.unwrap();
    let me = stream.local_addr().unwrap().to_string();
    let answer = get_on(&mut stream, "/peer").await.unwrap();
    assert!(answer.ends_with(&me), "{answer:?} should name {me}");
}
