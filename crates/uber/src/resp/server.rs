//! The `geo-resp` server: one shared [`Server`] (keyspace, counters), one task
//! per connection.
//!
//! Connections beyond [`Limits::max_clients`] are told Redis's `-ERR max number
//! of clients reached` and closed. The connection loop reads into a bounded buffer, runs every complete request
//! in it, appends each reply to one output buffer and writes it once per read
//! (pipelining costs one write per batch). A protocol error is replied, flushed,
//! and the connection closed — every other connection carries on. QUIT replies
//! `+OK` and closes after flushing what came before it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use casebook_kit::runtime::{BoxFuture, InstanceContext, ServiceFactory, StartError, serve_tcp};
use parking_lot::RwLock;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::cmd::{self, Outcome};
use super::frame::{Frame, Proto};
use super::live::LiveKey;
use super::parse::{Limits, ProtocolError, RequestParser};
use crate::geo::store::{GeoStore, SortedGeoSet};

/// The keys of database 0: each a geo set.
pub type Keys = HashMap<Bytes, Box<dyn GeoStore>>;

/// Makes the store for a new key.
pub type StoreFactory = fn() -> Box<dyn GeoStore>;

fn sorted_set() -> Box<dyn GeoStore> {
    Box::new(SortedGeoSet::default())
}

/// State shared by every connection.
#[derive(Debug)]
pub struct Server {
    pub keys: RwLock<Keys>,
    pub new_store: StoreFactory,
    pub limits: Limits,
    pub started: Instant,
    pub port: AtomicU64,
    pub clients: AtomicUsize,
    next_client_id: AtomicU64,
    /// The key served from the driver index, if any.
    pub live: Option<LiveKey>,
}

impl Default for Server {
    fn default() -> Self {
        Self::new(Limits::default(), sorted_set)
    }
}

impl Server {
    pub fn new(limits: Limits, new_store: StoreFactory) -> Self {
        Self {
            keys: RwLock::new(HashMap::new()),
            new_store,
            limits,
            started: Instant::now(),
            port: AtomicU64::new(0),
            clients: AtomicUsize::new(0),
            next_client_id: AtomicU64::new(1),
            live: None,
        }
    }

    /// Serves `live` from the driver index instead of a sorted set.
    pub fn with_live(mut self, live: LiveKey) -> Self {
        self.live = Some(live);
        self
    }

    /// The live key, if `key` is it.
    pub fn live_key(&self, key: &[u8]) -> Option<&LiveKey> {
        self.live.as_ref().filter(|live| live.name == key)
    }

    /// Accepts connections on `listener` until `shutdown`, each in its own task.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        if let Ok(addr) = listener.local_addr() {
            self.port.store(u64::from(addr.port()), Ordering::Relaxed);
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        tokio::spawn(self.clone().serve_connection(stream, shutdown.clone()));
                    }
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                },
            }
        }
    }

    /// Serves one connection to its end.
    pub async fn serve_connection(
        self: Arc<Self>,
        mut stream: TcpStream,
        shutdown: CancellationToken,
    ) {
        let _ = stream.set_nodelay(true);
        // Counted before anything else, so a burst of connections cannot pass the cap.
        let admitted = self.clients.fetch_add(1, Ordering::AcqRel) < self.limits.max_clients;
        let _count = ClientCount(&self.clients);
        if !admitted {
            metrics::counter!("uber_resp_connections_refused_total").increment(1);
            let _ = stream
                .write_all(b"-ERR max number of clients reached\r\n")
                .await;
            return;
        }
        let mut session = Session {
            proto: Proto::Resp2,
            id: self.next_client_id.fetch_add(1, Ordering::Relaxed),
            name: None,
        };
        let mut parser = RequestParser::new(self.limits);
        let mut input = BytesMut::with_capacity(16 * 1024);
        let mut output = BytesMut::with_capacity(16 * 1024);
        loop {
            let mut close = false;
            loop {
                match parser.next(&mut input) {
                    Ok(Some(args)) if args.is_empty() => continue,
                    Ok(Some(args)) => {
                        match cmd::dispatch(&self, &mut session, &args) {
                            Outcome::Reply(frame) => frame.encode(session.proto, &mut output),
                            Outcome::Close(frame) => {
                                frame.encode(session.proto, &mut output);
                                close = true;
                                break;
                            }
                        }
                        // Bound the output of one batch too.
                        if output.len() >= 64 * 1024 {
                            if stream.write_all(&output).await.is_err() {
                                return;
                            }
                            output.clear();
                        }
                    }
                    Ok(None) => break,
                    Err(ProtocolError::Reply(text)) => {
                        metrics::counter!("uber_resp_protocol_errors_total").increment(1);
                        Frame::err(format!("Protocol error: {text}"))
                            .encode(session.proto, &mut output);
                        close = true;
                        break;
                    }
                    Err(error @ ProtocolError::TooLarge(_)) => {
                        tracing::info!(%error, "closing a client over its query buffer limit");
                        return;
                    }
                }
            }
            if !output.is_empty() {
                if stream.write_all(&output).await.is_err() {
                    return;
                }
                output.clear();
            }
            if close {
                let _ = stream.shutdown().await;
                return;
            }
            if input.capacity() - input.len() < 4096 {
                input.reserve(16 * 1024);
            }
            let read = tokio::select! {
                _ = shutdown.cancelled() => return,
                read = stream.read_buf(&mut input) => read,
            };
            match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }
}

struct ClientCount<'a>(&'a AtomicUsize);

impl Drop for ClientCount<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Per-connection state.
#[derive(Debug)]
pub struct Session {
    pub proto: Proto,
    pub id: u64,
    pub name: Option<Bytes>,
}

/// The geo-resp service's name.
pub const GEO_RESP_SERVICE: &str = "geo-resp";

/// The `geo-resp` service: a RESP server over one keyspace, shared by every
/// instance of this process (the keyspace is in memory; a restarted instance
/// finds it as it was, a restarted process starts empty).
#[derive(Debug, Default)]
pub struct GeoResp {
    server: Arc<Server>,
}

impl GeoResp {
    pub fn new(server: Arc<Server>) -> Self {
        Self { server }
    }

    /// The service as `[uber]` configures it, on the sorted-set store, without a
    /// live key.
    pub fn from_config(config: &crate::config::UberConfig) -> Self {
        Self::new(Arc::new(Server::new(limits_of(config), sorted_set)))
    }

    /// [`from_config`](Self::from_config), with `[uber] resp_live_key` served
    /// from the index `source` finds (none when the key is configured empty).
    pub fn from_config_live(
        config: &crate::config::UberConfig,
        source: super::live::IndexSource,
    ) -> Self {
        let mut server = Server::new(limits_of(config), sorted_set);
        if !config.resp_live_key.is_empty() {
            server = server.with_live(LiveKey::new(config.resp_live_key.clone(), source));
        }
        Self::new(Arc::new(server))
    }

    /// The shared server.
    pub fn server(&self) -> &Arc<Server> {
        &self.server
    }
}

fn limits_of(config: &crate::config::UberConfig) -> Limits {
    Limits {
        max_clients: config.resp_max_clients,
        ..Limits::default()
    }
}

impl ServiceFactory for GeoResp {
    fn name(&self) -> &str {
        GEO_RESP_SERVICE
    }

    fn start<'a>(
        &'a self,
        ctx: &'a InstanceContext,
    ) -> BoxFuture<'a, Result<SocketAddr, StartError>> {
        Box::pin(async move {
            let listener = ctx.bind(ctx.listen_addr()).await?;
            let address = listener.local_addr().map_err(anyhow::Error::from)?;
            self.server
                .port
                .store(u64::from(address.port()), Ordering::Relaxed);
            let server = self.server.clone();
            let shutdown = ctx.shutdown_token();
            serve_tcp(ctx, listener, move |stream, _peer| {
                server.clone().serve_connection(stream, shutdown.clone())
            });
            Ok(address)
        })
    }
}
