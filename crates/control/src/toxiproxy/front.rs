//! Fronting a whole service — the Rust API a chaos experiment ("Latency Monkey")
//! calls: a proxy in front of every `UP` instance of a service, the same toxics on
//! each, and a rollback that removes all of it. [`ProxyInjector`] is chaos's
//! [`LatencyInjector`] over it: a [`LatencySpec`] becomes one toxic per effect.
//!
//! Callers of the service are steered through the proxies by discovery's rewrites
//! (see [`crate::discovery::rewrites`]) as soon as the toxic is on; their resolver
//! caches answers (the kit's: 5 s), so the fault reaches them within that, and
//! leaves them within that after [`Toxiproxy::unfront`]. Instances that start after
//! the call are not fronted (call again, or front per instance through the HTTP API).

use std::net::SocketAddr;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use casebook_kit::runtime::BoxFuture;
use casebook_kit::topology::{InstanceInfo, InstanceStatus};

use super::collection::Toxiproxy;
use super::error::ToxiError;
use super::model::{ProxySpec, Stream, ToxicKind, ToxicSpec};
use crate::chaos::{InjectError, LatencyHandle, LatencyInjector, LatencySpec};
use crate::discovery::Registry;

/// What [`Toxiproxy::front_service`] made: enough to undo it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fronting {
    pub service: String,
    pub proxies: Vec<FrontedInstance>,
}

/// One fronted instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontedInstance {
    pub instance_id: String,
    /// The proxy's name: `{label}-{instance_id}`.
    pub proxy: String,
    /// The instance's registered address.
    pub upstream: SocketAddr,
    /// Where the proxy listens (what discovery now answers).
    pub listen: SocketAddr,
}

impl Toxiproxy {
    /// Puts a proxy named `{label}-{instance_id}` in front of every `UP` instance of
    /// `service` registered in `registry`, each with `toxics`. All or nothing: on an
    /// error, what was made is removed again. 404 when the service has no `UP`
    /// instance; 409 when a proxy of that name exists already.
    pub fn front_service(
        &self,
        registry: &Registry,
        service: &str,
        label: &str,
        toxics: &[ToxicSpec],
    ) -> Result<Fronting, ToxiError> {
        // The registered truth (`all`), not the rewritten service query.
        let instances: Vec<_> = registry
            .all()
            .services
            .remove(service)
            .unwrap_or_default()
            .into_iter()
            .filter(|view| view.status == InstanceStatus::Up)
            .collect();
        if instances.is_empty() {
            return Err(ToxiError::not_found(format!(
                "service not found: `{service}` has no UP instance to front"
            )));
        }
        let mut fronting = Fronting {
            service: service.to_owned(),
            proxies: Vec::new(),
        };
        for view in instances {
            let upstream = view.instance.address;
            let spec = ProxySpec {
                name: format!("{label}-{}", view.instance.instance_id),
                listen: SocketAddr::new(casebook_kit::resolve::callable(upstream).ip(), 0)
                    .to_string(),
                upstream: upstream.to_string(),
                enabled: true,
            };
            let made = self.create(&spec).and_then(|json| {
                let listen = json.listen.parse().map_err(|_| {
                    ToxiError::internal(format!("proxy {} listens on `{}`", json.name, json.listen))
                })?;
                fronting.proxies.push(FrontedInstance {
                    instance_id: view.instance.instance_id.clone(),
                    proxy: spec.name.clone(),
                    upstream,
                    listen,
                });
                toxics
                    .iter()
                    .try_for_each(|toxic| self.add_toxic(&spec.name, toxic).map(drop))
            });
            if let Err(err) = made {
                // A proxy made without its toxic is in `fronting` already.
                let _ = self.unfront(&fronting);
                return Err(err);
            }
        }
        Ok(fronting)
    }

    /// Removes every proxy of `fronting` (the rollback); ones already gone are fine.
    /// Discovery answers the instances' own addresses again at once.
    pub fn unfront(&self, fronting: &Fronting) -> Result<(), ToxiError> {
        for fronted in &fronting.proxies {
            match self.delete(&fronted.proxy) {
                Ok(()) => {}
                Err(err) if err.status == 404 => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }
}

/// Chaos's [`LatencyInjector`] over the fault proxy: each injection fronts the
/// service under its own label (`latency-monkey-{n}`), so experiments on different
/// services, or one after another, never share a proxy.
#[derive(Debug, Clone)]
pub struct ProxyInjector {
    toxiproxy: Toxiproxy,
    registry: Arc<Registry>,
    injections: Arc<AtomicU64>,
}

impl ProxyInjector {
    pub fn new(toxiproxy: Toxiproxy, registry: Arc<Registry>) -> Self {
        Self {
            toxiproxy,
            registry,
            injections: Default::default(),
        }
    }
}

/// One toxic per effect the spec asks for, Toxiproxy's way: latency and bandwidth
/// on the answers (`downstream`), failures on the requests (`upstream`) with the
/// error rate as their `toxicity`, chosen per connection. A failed connection is
/// reset (`reset_peer`) or, without `reset`, swallowed (`timeout` 0: data dropped,
/// nothing answered) until the caller gives up.
pub fn toxics_for(spec: &LatencySpec) -> Vec<ToxicSpec> {
    let toxic = |name: &str, stream, toxicity, kind| ToxicSpec {
        name: name.to_owned(),
        stream,
        toxicity,
        kind,
    };
    let mut toxics = Vec::new();
    if spec.latency_ms > 0 || spec.jitter_ms > 0 {
        toxics.push(toxic(
            "latency",
            Stream::Downstream,
            1.0,
            ToxicKind::Latency {
                latency: spec.latency_ms,
                jitter: spec.jitter_ms,
            },
        ));
    }
    if spec.error_rate > 0.0 {
        let kind = if spec.reset {
            ToxicKind::ResetPeer { timeout: 0 }
        } else {
            ToxicKind::Timeout { timeout: 0 }
        };
        toxics.push(toxic(
            "errors",
            Stream::Upstream,
            spec.error_rate as f32,
            kind,
        ));
    }
    if let Some(rate) = spec.bandwidth_kbps {
        toxics.push(toxic(
            "bandwidth",
            Stream::Downstream,
            1.0,
            ToxicKind::Bandwidth { rate },
        ));
    }
    if let Some(timeout) = spec.timeout_ms {
        toxics.push(toxic(
            "timeout",
            Stream::Downstream,
            1.0,
            ToxicKind::Timeout { timeout },
        ));
    }
    toxics
}

impl LatencyInjector for ProxyInjector {
    fn inject<'a>(
        &'a self,
        spec: &'a LatencySpec,
        _instances: &'a [InstanceInfo],
    ) -> BoxFuture<'a, Result<LatencyHandle, InjectError>> {
        Box::pin(async move {
            // Discovery's `UP` instances rather than the platform's list: a proxy
            // only matters for an address callers are told.
            let n = self.injections.fetch_add(1, Ordering::Relaxed) + 1;
            let label = format!("latency-monkey-{n}");
            let fronting = self
                .toxiproxy
                .front_service(&self.registry, &spec.service, &label, &toxics_for(spec))
                .map_err(|e| InjectError(e.to_string()))?;
            Ok(LatencyHandle {
                id: label,
                service: spec.service.clone(),
                instances: fronting
                    .proxies
                    .into_iter()
                    .map(|p| p.instance_id)
                    .collect(),
            })
        })
    }

    fn remove<'a>(&'a self, handle: &'a LatencyHandle) -> BoxFuture<'a, Result<(), InjectError>> {
        Box::pin(async move {
            for instance in &handle.instances {
                match self.toxiproxy.delete(&format!("{}-{instance}", handle.id)) {
                    Ok(()) => {}
                    Err(err) if err.status == 404 => {}
                    Err(err) => return Err(InjectError(err.to_string())),
                }
            }
            Ok(())
        })
    }
}
