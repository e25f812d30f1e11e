//! The netflix tests' helpers: configurations, services on a real platform, a
//! store that records and fails puts, and raw HTTP for requests a client would
//! tidy up (traversal).

// Each test binary uses a part of this module.
#![allow(dead_code)]

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use casebook_kit::clock::{ManualClock, SharedClock};
use casebook_kit::runtime::{InstanceSpec, Platform, ServiceFactory};
use casebook_kit::topology::Topology;
use casebook_netflix::config::{EncoderChoice, NetflixConfig};
use casebook_netflix::origin::store::Origin;
use casebook_netflix::pipeline::Pipeline;
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The synthetic encoder, no sample title, short segments for short tests.
pub fn synthetic_config() -> NetflixConfig {
    NetflixConfig {
        encoder: EncoderChoice::Synthetic,
        sample_title: false,
        ..NetflixConfig::default()
    }
}

pub fn pipeline(origin: Origin, config: NetflixConfig, work: &std::path::Path) -> Pipeline {
    Pipeline::new(origin, config, work, ManualClock::new().shared()).unwrap()
}

/// A service instance on a one-zone platform, on a free port.
pub struct Running {
    pub platform: Platform,
    pub instance_id: String,
    pub addr: SocketAddr,
}

impl Running {
    pub async fn start(
        factory: Arc<dyn ServiceFactory>,
        dir: &std::path::Path,
        clock: SharedClock,
    ) -> Self {
        let topology = Topology::uniform(&["r1"], 1);
        let platform = Platform::new(topology.clone(), dir, clock);
        let service = factory.name().to_owned();
        platform.register_service(factory);
        let info = platform
            .start(InstanceSpec {
                service,
                instance_id: None,
                placement: topology.spread(0),
                listen: "127.0.0.1:0".parse().unwrap(),
                version: "test".into(),
                port_hint: None,
            })
            .await
            .unwrap();
        Self {
            instance_id: info.instance_id,
            addr: info.address,
            platform,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn stop(&self) {
        self.platform
            .stop(&self.instance_id, std::time::Duration::from_secs(5))
            .await;
    }
}

/// A raw HTTP/1.1 exchange (`Connection: close`), so a path reaches the server
/// exactly as written: status, lowercased header lines, body.
pub async fn raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = response[split + 4..].to_vec();
    if is_chunked(&headers) {
        body = dechunk(&body);
    }
    (status, headers, body)
}

fn is_chunked(headers: &[(String, String)]) -> bool {
    headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"))
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..end]).unwrap().trim(), 16).unwrap();
        data = &data[end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// An in-memory store that records every put's key in order, and fails the
/// `fail_at`-th put (0-based) if asked.
#[derive(Debug)]
pub struct Recording {
    inner: InMemory,
    pub puts: parking_lot::Mutex<Vec<String>>,
    count: AtomicUsize,
    fail_at: Option<usize>,
}

impl Recording {
    pub fn new(fail_at: Option<usize>) -> Arc<Self> {
        Arc::new(Self {
            inner: InMemory::new(),
            puts: Default::default(),
            count: AtomicUsize::new(0),
            fail_at,
        })
    }

    pub fn origin(self: &Arc<Self>) -> Origin {
        Origin::from_store(self.clone(), "memory")
    }
}

impl fmt::Display for Recording {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Recording")
    }
}

#[async_trait]
impl ObjectStore for Recording {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let n = self.count.fetch_add(1, Ordering::SeqCst);
        if Some(n) == self.fail_at {
            return Err(object_store::Error::Generic {
                store: "Recording",
                source: format!("injected failure at put {n} ({location})").into(),
            });
        }
        self.puts.lock().push(location.to_string());
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
