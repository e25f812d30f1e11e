//! A running proxy: its listener's accept loop and its live connections.
//!
//! Each accepted client is connected to the upstream (within
//! [`UPSTREAM_CONNECT_TIMEOUT`]; on failure the client is closed, as Toxiproxy does)
//! and run by [`super::link::run`] in a task of its own. At most
//! `max_connections` run at once; a client beyond is closed at once and counted
//! (`toxiproxy_connections_refused_total`). Stopping (disable, delete, a change of
//! `listen` or `upstream`, the control plane's shutdown) closes the listener and
//! every connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::link;
use super::toxics::{Chain, LinkChain};

/// How long a new connection waits for the upstream to accept.
pub const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A listening proxy. Dropping it does not stop it: [`Running::stop`] does.
#[derive(Debug)]
pub struct Running {
    pub bound: SocketAddr,
    cancel: CancellationToken,
    live: Arc<AtomicUsize>,
    /// Taken (so closed) by [`Running::stop`] itself: the port is free as soon as
    /// `stop` returns, for a re-enable on the same address.
    listener: Arc<Mutex<Option<TcpListener>>>,
}

impl Running {
    /// Serves `listener` until stopped (or `parent` is cancelled).
    pub fn start(
        name: Arc<str>,
        listener: TcpListener,
        upstream: String,
        chains: [watch::Receiver<Chain>; 2],
        max_connections: usize,
        parent: &CancellationToken,
    ) -> std::io::Result<Self> {
        let bound = listener.local_addr()?;
        let cancel = parent.child_token();
        let live = Arc::new(AtomicUsize::new(0));
        let listener = Arc::new(Mutex::new(Some(listener)));
        tokio::spawn(accept_loop(
            name,
            listener.clone(),
            upstream,
            chains,
            max_connections,
            cancel.clone(),
            live.clone(),
        ));
        Ok(Self {
            bound,
            cancel,
            live,
            listener,
        })
    }

    /// Closes the listener and every connection.
    pub fn stop(&self) {
        self.listener.lock().take();
        self.cancel.cancel();
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }
}

/// Decrements the live count however a connection's task ends.
struct LiveGuard(Arc<AtomicUsize>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn accept_loop(
    name: Arc<str>,
    listener: Arc<Mutex<Option<TcpListener>>>,
    upstream: String,
    chains: [watch::Receiver<Chain>; 2],
    max_connections: usize,
    cancel: CancellationToken,
    live: Arc<AtomicUsize>,
) {
    let accepted = metrics::counter!("toxiproxy_connections_total", "proxy" => name.to_string());
    let refused =
        metrics::counter!("toxiproxy_connections_refused_total", "proxy" => name.to_string());
    loop {
        let (client, _peer) = tokio::select! {
            () = cancel.cancelled() => return,
            // The lock is held for one poll, never across an await.
            accepted = std::future::poll_fn(|cx| match &*listener.lock() {
                Some(listener) => listener.poll_accept(cx),
                None => std::task::Poll::Pending,
            }) => match accepted {
                Ok(pair) => pair,
                // Out of descriptors, say: back off a little rather than spin.
                Err(err) => {
                    tracing::warn!(proxy = %name, error = %err, "toxiproxy accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // The toxics as they are at accept: a change from here on reaches the
        // connection as a change.
        let initial = chains
            .each_ref()
            .map(|chain| LinkChain::new(&chain.borrow(), Instant::now(), &mut rand::rng()));
        if live.fetch_add(1, Ordering::SeqCst) >= max_connections {
            live.fetch_sub(1, Ordering::SeqCst);
            refused.increment(1);
            drop(client);
            continue;
        }
        accepted.increment(1);
        let guard = LiveGuard(live.clone());
        let upstream = upstream.clone();
        let chains = chains.clone();
        let connection = cancel.child_token();
        let name = name.clone();
        let refused = refused.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let connect =
                tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(&upstream));
            let server = tokio::select! {
                () = connection.cancelled() => return,
                server = connect => server,
            };
            match server {
                Ok(Ok(server)) => {
                    link::run(name, client, server, chains, initial, connection).await
                }
                Ok(Err(err)) => {
                    refused.increment(1);
                    tracing::debug!(proxy = %name, %upstream, error = %err, "toxiproxy upstream refused");
                }
                Err(_) => {
                    refused.increment(1);
                    tracing::debug!(proxy = %name, %upstream, "toxiproxy upstream connect timed out");
                }
            }
        });
    }
}
