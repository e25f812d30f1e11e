//! The `geo-resp` connection loop and service: one task per connection over a
//! shared [`Server`](super::state::Server).
//!
//! Connections beyond [`Limits::max_clients`] are told Redis's `-ERR max number
//! of clients reached` and closed. The loop reads at most [`READ_CHUNK`] at a
//! time, runs every complete request in its buffer, appends each reply to one
//! output buffer and writes it once per read (pipelining costs one write per
//! batch; flushed early past 64 KiB). A protocol error is replied, flushed, and
//! the connection closed — every other connection carries on. QUIT replies
//! `+OK` and closes after flushing what came before it.
//!
//! Bounds (see [`super::limits`]): one request ≤ `max_request_bytes`; request
//! bytes held by all connections ≤ the buffer budget + one read chunk per
//! connection (a connection whose partial request would pass the budget is told
//! so and closed); buffers that grew past 64 KiB are replaced once empty; a
//! connection idle for `idle_timeout` on the instance's clock is closed. A
//! command that panics unwinds this connection's task only: the client count
//! and buffer charge are given back by drop guards, and no lock is poisoned
//! (`parking_lot`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use casebook_kit::runtime::{BoxFuture, InstanceContext, ServiceFactory, StartError, serve_tcp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::cmd::{self, Outcome};
use super::frame::Frame;
use super::limits::{Charge, Limits, READ_CHUNK};
use super::live::LiveKey;
use super::parse::{ProtocolError, RequestParser};
use super::state::{Server, sorted_set};

/// A buffer that grew beyond this for one large request or reply is replaced
/// by a fresh one once emptied, so an idle connection holds little.
const SHRINK_ABOVE: usize = 64 * 1024;

/// How often (real time) a connection compares its idle time, read on the
/// instance's clock, with the timeout.
const IDLE_CHECK_EVERY: Duration = Duration::from_secs(1);

impl Server {
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
        let mut session = self.new_session();
        let clock = self.clock();
        let mut last_active = clock.now();
        let mut idle_check = tokio::time::interval_at(
            tokio::time::Instant::now() + IDLE_CHECK_EVERY,
            IDLE_CHECK_EVERY,
        );
        idle_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut charge = Charge::new(&self.buffered);
        let mut parser = RequestParser::new(self.limits);
        let mut input = BytesMut::with_capacity(READ_CHUNK);
        let mut output = BytesMut::with_capacity(READ_CHUNK);
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
                    Err(error) => {
                        metrics::counter!("uber_resp_protocol_errors_total").increment(1);
                        if let ProtocolError::TooLarge(_) = error {
                            tracing::info!(%error, "closing a client over its request size limit");
                        }
                        Frame::err(error).encode(session.proto, &mut output);
                        close = true;
                        break;
                    }
                }
            }
            if !output.is_empty() {
                if stream.write_all(&output).await.is_err() {
                    return;
                }
                output.clear();
            }
            if output.capacity() > SHRINK_ABOVE {
                output = BytesMut::with_capacity(READ_CHUNK);
            }
            if close {
                let _ = stream.shutdown().await;
                return;
            }
            // Between requests a connection reads one chunk uncharged; in the
            // middle of one it charges what it holds and its next read first.
            let held = input.len() + parser.pending_bytes();
            let charged = if held == 0 { 0 } else { held + READ_CHUNK };
            if !charge.set(charged) {
                metrics::counter!("uber_resp_budget_refusals_total").increment(1);
                tracing::info!(
                    held,
                    "closing a client: the request buffer budget is exhausted"
                );
                let _ = stream
                    .write_all(
                        b"-ERR request buffer budget exhausted (uber.resp_buffer_budget_bytes): too many large requests in flight, retry later\r\n",
                    )
                    .await;
                let _ = stream.shutdown().await;
                return;
            }
            if input.is_empty() && input.capacity() > SHRINK_ABOVE {
                input = BytesMut::with_capacity(READ_CHUNK);
            }
            // Reserved only when short: reserving on every read costs a
            // reclaim per request when unpipelined.
            if input.capacity() - input.len() < READ_CHUNK / 4 {
                input.reserve(READ_CHUNK);
            }
            let mut one_chunk = (&mut stream).take(READ_CHUNK as u64);
            let read = loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    read = one_chunk.read_buf(&mut input) => break read,
                    _ = idle_check.tick(), if self.limits.idle_timeout.is_some() => {
                        let idle = clock.now().saturating_duration_since(last_active);
                        if self.limits.idle_timeout.is_some_and(|timeout| idle >= timeout) {
                            metrics::counter!("uber_resp_idle_closed_total").increment(1);
                            return;
                        }
                    }
                }
            };
            match read {
                Ok(0) | Err(_) => return,
                Ok(_) => last_active = clock.now(),
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
        Self::new(Arc::new(Server::new(
            Limits::from_config(config),
            sorted_set,
        )))
    }

    /// [`from_config`](Self::from_config), with `[uber] resp_live_key` served
    /// from the index `source` finds (none when the key is configured empty).
    pub fn from_config_live(
        config: &crate::config::UberConfig,
        source: super::live::IndexSource,
    ) -> Self {
        let mut server = Server::new(Limits::from_config(config), sorted_set);
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
            self.server.set_clock(ctx.clock().clone());
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
