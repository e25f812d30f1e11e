//! The proxies and their toxics: every operation of the API, synchronous, under one
//! lock (binding a listener is a quick syscall; name resolution happens before the
//! lock is taken), and the feed of discovery's address rewrites.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use casebook_kit::resolve::callable;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::error::ToxiError;
use super::model::{ProxyJson, ProxySpec, ProxyUpdate, Stream, ToxicJson, ToxicSpec, ToxicUpdate};
use super::proxy::Running;
use super::toxics::{Chain, ChainEntry};
use crate::discovery::{AddressRewrites, Rewrite};

/// The bounds of one Toxiproxy server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Proxies at most (a create beyond is a 409).
    pub max_proxies: usize,
    /// Connections open at once per proxy (a client beyond is closed at accept).
    pub max_connections_per_proxy: usize,
    /// Toxics per proxy, both streams together (an add beyond is a 409).
    pub max_toxics_per_proxy: usize,
    /// Whether a proxy may listen beyond loopback (the control plane's
    /// `allow_insecure_bind`): a proxy is an open door to its upstream.
    pub allow_beyond_loopback: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_proxies: 256,
            max_connections_per_proxy: 1024,
            max_toxics_per_proxy: 32,
            allow_beyond_loopback: false,
        }
    }
}

#[derive(Debug)]
struct Toxic {
    spec: ToxicSpec,
    generation: u64,
}

#[derive(Debug)]
struct Proxy {
    name: Arc<str>,
    /// What `listen` shows: the bound address once it has listened.
    listen: String,
    upstream: String,
    /// `upstream` resolved when it was set, for the rewrites.
    upstream_addrs: Vec<SocketAddr>,
    enabled: bool,
    /// Per stream, in the order added.
    toxics: [Vec<Toxic>; 2],
    chains: [watch::Sender<Chain>; 2],
    running: Option<Running>,
}

impl Proxy {
    fn json(&self) -> ProxyJson {
        ProxyJson {
            name: self.name.to_string(),
            listen: self.listen.clone(),
            upstream: self.upstream.clone(),
            enabled: self.enabled,
            toxics: self.toxic_json(),
        }
    }

    fn toxic_json(&self) -> Vec<ToxicJson> {
        self.toxics
            .iter()
            .flatten()
            .map(|toxic| toxic.spec.to_json())
            .collect()
    }

    fn find(&self, name: &str) -> Option<(usize, usize)> {
        self.toxics.iter().enumerate().find_map(|(stream, toxics)| {
            toxics
                .iter()
                .position(|t| t.spec.name == name)
                .map(|i| (stream, i))
        })
    }

    /// Publishes the stream's chain to its live links.
    fn publish(&self, stream: usize) {
        let chain: Chain = self.toxics[stream]
            .iter()
            .map(|toxic| ChainEntry {
                name: toxic.spec.name.clone(),
                generation: toxic.generation,
                toxicity: toxic.spec.toxicity,
                kind: toxic.spec.kind,
            })
            .collect();
        self.chains[stream].send_replace(chain);
    }

    fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Debug)]
struct Inner {
    limits: Limits,
    rewrites: AddressRewrites,
    proxies: Mutex<BTreeMap<String, Proxy>>,
    generation: AtomicU64,
    shutdown: CancellationToken,
}

/// A Toxiproxy server's state: proxies, their toxics, their listeners. Cheap to
/// clone (one `Arc`); every method is synchronous and must be called within a
/// tokio runtime (listeners are tokio's).
#[derive(Debug, Clone)]
pub struct Toxiproxy {
    inner: Arc<Inner>,
}

/// A listen address resolved and checked.
fn resolve_listen(listen: &str, limits: &Limits) -> Result<Vec<SocketAddr>, ToxiError> {
    let addrs: Vec<SocketAddr> = listen
        .to_socket_addrs()
        .map_err(|err| ToxiError::bad_request(format!("listen `{listen}`: {err}")))?
        .collect();
    if addrs.is_empty() {
        return Err(ToxiError::bad_request(format!(
            "listen `{listen}` resolves to no address"
        )));
    }
    if !limits.allow_beyond_loopback && addrs.iter().any(|a| !a.ip().is_loopback()) {
        return Err(ToxiError::bad_request(format!(
            "listen `{listen}` is beyond loopback: a proxy there opens its upstream to the \
             network; listen on 127.0.0.1, or set control.allow_insecure_bind = true"
        )));
    }
    Ok(addrs)
}

/// The upstream's addresses now (empty when it does not resolve: Toxiproxy accepts
/// such an upstream, and connections to the proxy then fail).
fn resolve_upstream(upstream: &str) -> Result<Vec<SocketAddr>, ToxiError> {
    if upstream
        .rsplit_once(':')
        .is_none_or(|(_, port)| port.parse::<u16>().is_err())
    {
        return Err(ToxiError::bad_request(format!(
            "upstream `{upstream}` is not HOST:PORT"
        )));
    }
    Ok(upstream
        .to_socket_addrs()
        .map(Iterator::collect)
        .unwrap_or_default())
}

impl Toxiproxy {
    /// An empty server feeding `rewrites` (discovery's table).
    pub fn new(limits: Limits, rewrites: AddressRewrites) -> Self {
        Self {
            inner: Arc::new(Inner {
                limits,
                rewrites,
                proxies: Mutex::new(BTreeMap::new()),
                generation: AtomicU64::new(1),
                shutdown: CancellationToken::new(),
            }),
        }
    }

    /// The bounds it runs with.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Stops every proxy and connection, for good (the control plane's shutdown);
    /// later starts fail.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.proxies.lock().clear();
        self.inner.rewrites.replace(BTreeMap::new());
    }

    /// Stops everything when `token` is cancelled or this future is dropped (the
    /// control plane's instance is killed).
    pub async fn run_until(self, token: CancellationToken) {
        struct OnDrop(Toxiproxy);
        impl Drop for OnDrop {
            fn drop(&mut self) {
                self.0.shutdown();
            }
        }
        let _guard = OnDrop(self);
        token.cancelled().await;
    }

    fn next_generation(&self) -> u64 {
        self.inner.generation.fetch_add(1, Ordering::Relaxed)
    }

    /// Binds and serves `proxy` if it is enabled and not yet running.
    fn start(&self, proxy: &mut Proxy) -> Result<(), ToxiError> {
        if proxy.running.is_some() || !proxy.enabled {
            return Ok(());
        }
        if self.inner.shutdown.is_cancelled() {
            return Err(ToxiError::internal("the control plane is shutting down"));
        }
        let addrs = resolve_listen(&proxy.listen, &self.inner.limits)?;
        let listener = std::net::TcpListener::bind(&addrs[..])
            .and_then(|listener| {
                listener.set_nonblocking(true)?;
                tokio::net::TcpListener::from_std(listener)
            })
            .map_err(|err| {
                ToxiError::internal(format!(
                    "proxy {} cannot listen on {}: {err}",
                    proxy.name, proxy.listen
                ))
            })?;
        let running = Running::start(
            proxy.name.clone(),
            listener,
            proxy.upstream.clone(),
            [proxy.chains[0].subscribe(), proxy.chains[1].subscribe()],
            self.inner.limits.max_connections_per_proxy,
            &self.inner.shutdown,
        )
        .map_err(|err| ToxiError::internal(format!("proxy {}: {err}", proxy.name)))?;
        // Toxiproxy shows (and re-binds after a disable) the address it got.
        proxy.listen = running.bound.to_string();
        proxy.running = Some(running);
        Ok(())
    }

    /// Recomputes discovery's rewrites: an enabled proxy with at least one toxic
    /// steers its upstream's callers through itself.
    fn sync_rewrites(&self, proxies: &BTreeMap<String, Proxy>) {
        let mut table = BTreeMap::new();
        for proxy in proxies.values() {
            let Some(running) = &proxy.running else {
                continue;
            };
            if proxy.toxics.iter().all(Vec::is_empty) {
                continue;
            }
            let to = callable(running.bound);
            for &from in &proxy.upstream_addrs {
                if from != to {
                    table.entry(from).or_insert_with(|| Rewrite {
                        to,
                        by: format!("toxiproxy:{}", proxy.name),
                    });
                }
            }
        }
        self.inner.rewrites.replace(table);
    }

    fn new_proxy(&self, spec: &ProxySpec, upstream_addrs: Vec<SocketAddr>) -> Proxy {
        let empty: Chain = Arc::from(Vec::new());
        Proxy {
            name: Arc::from(spec.name.as_str()),
            listen: spec.listen.clone(),
            upstream: spec.upstream.clone(),
            upstream_addrs,
            enabled: spec.enabled,
            toxics: [Vec::new(), Vec::new()],
            chains: [watch::Sender::new(empty.clone()), watch::Sender::new(empty)],
            running: None,
        }
    }

    /// Every proxy by name (`GET /proxies`).
    pub fn list(&self) -> BTreeMap<String, ProxyJson> {
        let proxies = self.inner.proxies.lock();
        proxies
            .iter()
            .map(|(name, proxy)| (name.clone(), proxy.json()))
            .collect()
    }

    /// One proxy (`GET /proxies/{proxy}`).
    pub fn get(&self, name: &str) -> Result<ProxyJson, ToxiError> {
        let proxies = self.inner.proxies.lock();
        proxies
            .get(name)
            .map(Proxy::json)
            .ok_or_else(|| ToxiError::proxy_not_found(name))
    }

    /// Creates a proxy, listening at once if enabled (`POST /proxies`).
    pub fn create(&self, spec: &ProxySpec) -> Result<ProxyJson, ToxiError> {
        let upstream_addrs = resolve_upstream(&spec.upstream)?;
        resolve_listen(&spec.listen, &self.inner.limits)?;
        let mut proxies = self.inner.proxies.lock();
        if proxies.contains_key(&spec.name) {
            return Err(ToxiError::proxy_exists(&spec.name));
        }
        if proxies.len() >= self.inner.limits.max_proxies {
            return Err(ToxiError::conflict(format!(
                "proxy limit reached: {} proxies exist already; delete some first",
                self.inner.limits.max_proxies
            )));
        }
        let mut proxy = self.new_proxy(spec, upstream_addrs);
        self.start(&mut proxy)?;
        let json = proxy.json();
        proxies.insert(spec.name.clone(), proxy);
        self.sync_rewrites(&proxies);
        Ok(json)
    }

    /// Creates or replaces each proxy in order (`POST /populate`): one with the same
    /// `listen` and `upstream` is kept as it is, toxics included, as in Toxiproxy.
    /// On an error, the proxies done so far and the error.
    pub fn populate(
        &self,
        specs: &[ProxySpec],
    ) -> Result<Vec<ProxyJson>, (ToxiError, Vec<ProxyJson>)> {
        let mut done = Vec::new();
        for spec in specs {
            let kept = {
                let proxies = self.inner.proxies.lock();
                proxies
                    .get(&spec.name)
                    .filter(|p| p.listen == spec.listen && p.upstream == spec.upstream)
                    .map(Proxy::json)
            };
            if let Some(json) = kept {
                done.push(json);
                continue;
            }
            // Replaced: the old one stops (its port is free for the new one).
            {
                let mut proxies = self.inner.proxies.lock();
                proxies.remove(&spec.name);
                self.sync_rewrites(&proxies);
            }
            match self.create(spec) {
                Ok(json) => done.push(json),
                Err(err) => return Err((err, done)),
            }
        }
        Ok(done)
    }

    /// Changes `listen`, `upstream` or `enabled` (`POST /proxies/{proxy}`): a new
    /// address restarts the proxy, closing its connections, as in Toxiproxy.
    pub fn update(&self, name: &str, update: &ProxyUpdate) -> Result<ProxyJson, ToxiError> {
        let upstream_addrs = match &update.upstream {
            Some(upstream) => Some(resolve_upstream(upstream)?),
            None => None,
        };
        if let Some(listen) = &update.listen {
            resolve_listen(listen, &self.inner.limits)?;
        }
        let mut proxies = self.inner.proxies.lock();
        let proxy = proxies
            .get_mut(name)
            .ok_or_else(|| ToxiError::proxy_not_found(name))?;
        let listen_changes = update.listen.as_ref().is_some_and(|listen| {
            *listen != proxy.listen
                && !matches!(
                    (resolve_listen(listen, &self.inner.limits), &proxy.running),
                    (Ok(addrs), Some(running)) if addrs.contains(&running.bound)
                )
        });
        let upstream_changes = update
            .upstream
            .as_ref()
            .is_some_and(|upstream| *upstream != proxy.upstream);
        if listen_changes || upstream_changes {
            proxy.stop();
            if let Some(listen) = &update.listen {
                proxy.listen = listen.clone();
            }
            if let (Some(upstream), Some(addrs)) = (&update.upstream, upstream_addrs) {
                proxy.upstream = upstream.clone();
                proxy.upstream_addrs = addrs;
            }
        }
        if let Some(enabled) = update.enabled {
            proxy.enabled = enabled;
            if !enabled {
                proxy.stop();
            }
        }
        let started = self.start(proxy);
        let json = proxy.json();
        self.sync_rewrites(&proxies);
        started.map(|()| json)
    }

    /// Stops and forgets a proxy (`DELETE /proxies/{proxy}`).
    pub fn delete(&self, name: &str) -> Result<(), ToxiError> {
        let mut proxies = self.inner.proxies.lock();
        proxies
            .remove(name)
            .ok_or_else(|| ToxiError::proxy_not_found(name))?;
        self.sync_rewrites(&proxies);
        Ok(())
    }

    /// Enables every proxy and removes every toxic (`POST /reset`).
    pub fn reset(&self) -> Result<(), ToxiError> {
        let mut proxies = self.inner.proxies.lock();
        let mut first_error = None;
        for proxy in proxies.values_mut() {
            for stream in Stream::BOTH {
                proxy.toxics[stream.index()].clear();
                proxy.publish(stream.index());
            }
            proxy.enabled = true;
            if let Err(err) = self.start(proxy) {
                first_error.get_or_insert(err);
            }
        }
        self.sync_rewrites(&proxies);
        first_error.map_or(Ok(()), Err)
    }

    /// A proxy's toxics, upstream first (`GET /proxies/{proxy}/toxics`).
    pub fn toxics(&self, proxy: &str) -> Result<Vec<ToxicJson>, ToxiError> {
        let proxies = self.inner.proxies.lock();
        let proxy = proxies
            .get(proxy)
            .ok_or_else(|| ToxiError::proxy_not_found(proxy))?;
        Ok(proxy.toxic_json())
    }

    /// One toxic (`GET /proxies/{proxy}/toxics/{toxic}`).
    pub fn toxic(&self, proxy: &str, toxic: &str) -> Result<ToxicJson, ToxiError> {
        let proxies = self.inner.proxies.lock();
        let proxy = proxies
            .get(proxy)
            .ok_or_else(|| ToxiError::proxy_not_found(proxy))?;
        let (stream, i) = proxy
            .find(toxic)
            .ok_or_else(|| ToxiError::toxic_not_found(toxic))?;
        Ok(proxy.toxics[stream][i].spec.to_json())
    }

    /// Adds a toxic at the end of its stream's chain; live connections get it at
    /// once (`POST /proxies/{proxy}/toxics`).
    pub fn add_toxic(&self, proxy: &str, spec: &ToxicSpec) -> Result<ToxicJson, ToxiError> {
        let mut proxies = self.inner.proxies.lock();
        let entry = proxies
            .get_mut(proxy)
            .ok_or_else(|| ToxiError::proxy_not_found(proxy))?;
        if entry.find(&spec.name).is_some() {
            return Err(ToxiError::toxic_exists(&spec.name));
        }
        let count: usize = entry.toxics.iter().map(Vec::len).sum();
        if count >= self.inner.limits.max_toxics_per_proxy {
            return Err(ToxiError::conflict(format!(
                "toxic limit reached: proxy {proxy} has {count} toxics; remove some first"
            )));
        }
        let stream = spec.stream.index();
        entry.toxics[stream].push(Toxic {
            spec: spec.clone(),
            generation: self.next_generation(),
        });
        entry.publish(stream);
        self.sync_rewrites(&proxies);
        Ok(spec.to_json())
    }

    /// Changes a toxic's attributes or toxicity; live connections re-roll it
    /// (`POST /proxies/{proxy}/toxics/{toxic}`).
    pub fn update_toxic(
        &self,
        proxy: &str,
        toxic: &str,
        update: &ToxicUpdate,
    ) -> Result<ToxicJson, ToxiError> {
        let mut proxies = self.inner.proxies.lock();
        let entry = proxies
            .get_mut(proxy)
            .ok_or_else(|| ToxiError::proxy_not_found(proxy))?;
        let (stream, i) = entry
            .find(toxic)
            .ok_or_else(|| ToxiError::toxic_not_found(toxic))?;
        let updated = entry.toxics[stream][i].spec.updated(update)?;
        let json = updated.to_json();
        entry.toxics[stream][i] = Toxic {
            spec: updated,
            generation: self.next_generation(),
        };
        entry.publish(stream);
        Ok(json)
    }

    /// Removes a toxic (`DELETE /proxies/{proxy}/toxics/{toxic}`); with the last
    /// one gone, discovery answers the upstream's own address again.
    pub fn remove_toxic(&self, proxy: &str, toxic: &str) -> Result<(), ToxiError> {
        let mut proxies = self.inner.proxies.lock();
        let entry = proxies
            .get_mut(proxy)
            .ok_or_else(|| ToxiError::proxy_not_found(proxy))?;
        let (stream, i) = entry
            .find(toxic)
            .ok_or_else(|| ToxiError::toxic_not_found(toxic))?;
        entry.toxics[stream].remove(i);
        entry.publish(stream);
        self.sync_rewrites(&proxies);
        Ok(())
    }

    /// Connections open now through `proxy` (0 when it is not listening).
    pub fn connections(&self, proxy: &str) -> Result<usize, ToxiError> {
        let proxies = self.inner.proxies.lock();
        let proxy = proxies
            .get(proxy)
            .ok_or_else(|| ToxiError::proxy_not_found(proxy))?;
        Ok(proxy.running.as_ref().map_or(0, Running::connections))
    }
}
