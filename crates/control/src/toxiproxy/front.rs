//! Fronting a whole service — the Rust API a chaos experiment ("Latency Monkey")
//! calls: a proxy in front of every `UP` instance of a service, one toxic on each,
//! and a rollback that removes all of it.
//!
//! Callers of the service are steered through the proxies by discovery's rewrites
//! (see [`crate::discovery::rewrites`]) as soon as the toxic is on; their resolver
//! caches answers (the kit's: 5 s), so the fault reaches them within that, and
//! leaves them within that after [`Toxiproxy::unfront`]. Instances that start after
//! the call are not fronted (call again, or front per instance through the HTTP API).

use std::net::SocketAddr;

use casebook_kit::topology::InstanceStatus;

use super::collection::Toxiproxy;
use super::error::ToxiError;
use super::model::{ProxySpec, ToxicSpec};
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
    /// `service` registered in `registry`, each with `toxic`. All or nothing: on an
    /// error, what was made is removed again. 404 when the service has no `UP`
    /// instance; 409 when a proxy of that name exists already.
    pub fn front_service(
        &self,
        registry: &Registry,
        service: &str,
        label: &str,
        toxic: &ToxicSpec,
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
                self.add_toxic(&spec.name, toxic)
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
