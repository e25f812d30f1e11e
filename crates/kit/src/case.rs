//! The face every case wears towards the binary: a [`Case`] declares its services,
//! and the binary iterates the registered cases instead of wiring them one by one.
//!
//! A case crate exports one function, `case(&CaseConfig, &CaseEnv) -> Result<Case,
//! ConfigError>`, that builds its service factories from its own configuration
//! table and says, for each service, where its instances go ([`Spread`]), on which
//! ports ([`PortPlan`]: `base + stride × region index`), how a user changes that port
//! when it is taken, and how `casebook up` labels its address. [`CaseRegistry`]
//! refuses two services with one name (an error at start, never a silent
//! replacement) and turns a declaration into [`InstanceSpec`]s.
//!
//! Guaranteed: every port a registry hands out was checked against 65535 by
//! [`PortPlan::check`] when the registry was built; a zone outside the topology is an
//! error, never a silent fallback. Not guaranteed: that a port is free (binding says).

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::ConfigError;
use crate::ports::PortPlan;
use crate::resolve::Resolver;
use crate::runtime::{InstanceSpec, ServiceFactory};
use crate::topology::{Placement, Topology};

/// What every case is built from besides its own configuration table.
#[derive(Debug, Clone)]
pub struct CaseEnv {
    pub topology: Topology,
    /// The address every listener binds (the control plane's host).
    pub host: IpAddr,
    /// The root of durable state (instances get their own directories below it).
    pub data_dir: PathBuf,
    /// How instances find each other: discovery, zone-aware, cached.
    pub resolver: Arc<Resolver>,
    /// The version instances register with.
    pub version: String,
}

/// Where a service's instances go when `casebook up` starts the case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spread {
    /// One instance in each region's first zone; region *i* listens on
    /// `ports.port(i)`.
    PerRegion,
    /// One instance in the first region's first zone.
    Single,
    /// One instance in each zone of the first region, where the `Single` services
    /// live: the replicas of a store that one of them coordinates (the amazon
    /// cart). Zone *j* listens on `ports.port(j)`; a base of 0 (free ports) is the
    /// usual plan, since callers find replicas through discovery.
    ZonesOfFirstRegion,
}

/// What a service's main address speaks, for `casebook up`'s table and the control
/// plane's index (only HTTP addresses are links).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressKind {
    /// HTTP: printed as `http://host:port`.
    Http,
    /// Another protocol (XMPP, RESP): printed as `host:port`.
    Tcp,
}

/// One service of a case.
#[derive(Clone)]
pub struct ServiceDecl {
    /// The factory; its [`ServiceFactory::name`] is the service's name, unique in
    /// the process (names carry their case where they could collide: `uber-pricing`).
    pub factory: Arc<dyn ServiceFactory>,
    pub spread: Spread,
    /// The main listener's port in each region.
    pub ports: PortPlan,
    /// The dotted configuration key of `ports.base`, named when it does not fit.
    pub port_key: String,
    /// How a user changes the port, shown when it is taken.
    pub port_hint: String,
    /// What `casebook up` prints before the address, e.g. `xmpp c2s`.
    pub label: String,
    pub address: AddressKind,
}

impl fmt::Debug for ServiceDecl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceDecl")
            .field("name", &self.name())
            .field("spread", &self.spread)
            .field("ports", &self.ports)
            .finish_non_exhaustive()
    }
}

impl ServiceDecl {
    /// The service's name.
    pub fn name(&self) -> &str {
        self.factory.name()
    }

    /// How `casebook up` shows an instance's main address.
    pub fn show_address(&self, address: SocketAddr) -> String {
        match (self.address, self.label.is_empty()) {
            (AddressKind::Http, true) => format!("http://{address}"),
            (AddressKind::Http, false) => format!("{} http://{address}", self.label),
            (AddressKind::Tcp, true) => address.to_string(),
            (AddressKind::Tcp, false) => format!("{} {address}", self.label),
        }
    }
}

/// A case: its name and its services.
#[derive(Debug, Clone)]
pub struct Case {
    /// e.g. `whatsapp`, `uber`.
    pub name: String,
    /// In start order: a service that others call comes before them.
    pub services: Vec<ServiceDecl>,
}

/// Why a set of cases cannot run together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("service `{service}` is declared twice (by `{first}` and by `{second}`)")]
    DuplicateService {
        service: String,
        first: String,
        second: String,
    },
    #[error("case `{0}` is registered twice")]
    DuplicateCase(String),
    #[error("unknown case `{name}` (known: {known})")]
    UnknownCase { name: String, known: String },
    #[error("unknown service `{name}` (known: {known})")]
    UnknownService { name: String, known: String },
    #[error("zone `{0}` is not in the topology")]
    UnknownZone(String),
    #[error("the topology has no zones")]
    NoZones,
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// The cases this binary runs, with unique service names.
#[derive(Debug, Clone)]
pub struct CaseRegistry {
    cases: Vec<Case>,
    topology: Topology,
    host: IpAddr,
    version: String,
}

impl CaseRegistry {
    /// The registry of `cases` (in start order) placed on `env`'s topology. Refuses
    /// a service name used twice, a case name used twice, and a port plan that does
    /// not fit below 65536.
    pub fn new(env: &CaseEnv, cases: Vec<Case>) -> Result<Self, RegistryError> {
        let mut services: Vec<(&str, &str)> = Vec::new();
        let mut names = BTreeSet::new();
        for case in &cases {
            if !names.insert(case.name.as_str()) {
                return Err(RegistryError::DuplicateCase(case.name.clone()));
            }
            for decl in &case.services {
                if let Some((_, first)) = services.iter().find(|(s, _)| *s == decl.name()) {
                    return Err(RegistryError::DuplicateService {
                        service: decl.name().to_owned(),
                        first: (*first).to_owned(),
                        second: case.name.clone(),
                    });
                }
                services.push((decl.name(), &case.name));
                let regions = match decl.spread {
                    Spread::PerRegion => env.topology.regions.len(),
                    Spread::Single => 1,
                    Spread::ZonesOfFirstRegion => {
                        env.topology.regions.first().map_or(1, |r| r.zones.len())
                    }
                };
                decl.ports.check(&decl.port_key, regions)?;
            }
        }
        Ok(Self {
            cases,
            topology: env.topology.clone(),
            host: env.host,
            version: env.version.clone(),
        })
    }

    /// Every case, in start order.
    pub fn cases(&self) -> &[Case] {
        &self.cases
    }

    /// The case called `name`.
    pub fn case(&self, name: &str) -> Result<&Case, RegistryError> {
        self.cases
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| RegistryError::UnknownCase {
                name: name.to_owned(),
                known: self.case_names().join(", "),
            })
    }

    /// The case names, in start order.
    pub fn case_names(&self) -> Vec<&str> {
        self.cases.iter().map(|c| c.name.as_str()).collect()
    }

    /// Every service declaration, case by case.
    pub fn services(&self) -> impl Iterator<Item = &ServiceDecl> {
        self.cases.iter().flat_map(|c| c.services.iter())
    }

    /// The declaration of service `name`.
    pub fn service(&self, name: &str) -> Result<&ServiceDecl, RegistryError> {
        self.services()
            .find(|d| d.name() == name)
            .ok_or_else(|| RegistryError::UnknownService {
                name: name.to_owned(),
                known: self
                    .services()
                    .map(|d| d.name().to_owned())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// The spec of one instance of `decl` in `zone` (default: the first zone),
    /// listening on its region's port.
    pub fn spec(
        &self,
        decl: &ServiceDecl,
        zone: Option<&str>,
    ) -> Result<InstanceSpec, RegistryError> {
        let placement = match zone {
            Some(zone) => Placement {
                region: self
                    .topology
                    .region_of(zone)
                    .ok_or_else(|| RegistryError::UnknownZone(zone.to_owned()))?
                    .to_owned(),
                zone: zone.to_owned(),
            },
            None => self.first_zone(0)?,
        };
        let index = match decl.spread {
            Spread::PerRegion => self.topology.region_index(&placement.region).unwrap_or(0),
            Spread::Single => 0,
            Spread::ZonesOfFirstRegion => self
                .topology
                .regions
                .first()
                .and_then(|r| r.zones.iter().position(|z| *z == placement.zone))
                .unwrap_or(0),
        };
        let port = decl.ports.port(index).ok_or_else(|| {
            ConfigError::new(
                decl.port_key.clone(),
                format!("region {index}'s port is beyond 65535"),
            )
        })?;
        Ok(InstanceSpec {
            service: decl.name().to_owned(),
            instance_id: None,
            placement,
            listen: SocketAddr::new(self.host, port),
            version: self.version.clone(),
            port_hint: Some(decl.port_hint.clone()),
        })
    }

    /// What `casebook up` starts for `decl`: one spec per region's first zone, one
    /// per zone of the first region, or one in the first zone.
    pub fn up_specs(&self, decl: &ServiceDecl) -> Result<Vec<InstanceSpec>, RegistryError> {
        match decl.spread {
            Spread::Single => Ok(vec![self.spec(decl, None)?]),
            Spread::ZonesOfFirstRegion => {
                let region = self
                    .topology
                    .regions
                    .first()
                    .ok_or(RegistryError::NoZones)?;
                region
                    .zones
                    .iter()
                    .map(|zone| self.spec(decl, Some(zone)))
                    .collect()
            }
            Spread::PerRegion => (0..self.topology.regions.len())
                .map(|i| {
                    let zone = self.first_zone(i)?.zone;
                    self.spec(decl, Some(&zone))
                })
                .collect(),
        }
    }

    fn first_zone(&self, region: usize) -> Result<Placement, RegistryError> {
        let region = self
            .topology
            .regions
            .get(region)
            .ok_or(RegistryError::NoZones)?;
        let zone = region.zones.first().ok_or(RegistryError::NoZones)?;
        Ok(Placement {
            region: region.name.clone(),
            zone: zone.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{BoxFuture, InstanceContext, StartError};

    #[derive(Debug)]
    struct Named(&'static str);

    impl ServiceFactory for Named {
        fn name(&self) -> &str {
            self.0
        }
        fn start<'a>(
            &'a self,
            _ctx: &'a InstanceContext,
        ) -> BoxFuture<'a, Result<SocketAddr, StartError>> {
            Box::pin(async { Err(StartError::Other(anyhow::anyhow!("not started in tests"))) })
        }
    }

    fn env() -> CaseEnv {
        CaseEnv {
            topology: Topology::default(),
            host: IpAddr::from([127, 0, 0, 1]),
            data_dir: PathBuf::from("/nonexistent"),
            resolver: Arc::new(Resolver::detached(crate::clock::SystemClock::shared())),
            version: "0.1.0".to_owned(),
        }
    }

    fn decl(name: &'static str, spread: Spread, base: u16) -> ServiceDecl {
        ServiceDecl {
            factory: Arc::new(Named(name)),
            spread,
            ports: PortPlan::new(base, 100),
            port_key: format!("{name}.port"),
            port_hint: format!("`port` in [{name}]"),
            label: String::new(),
            address: AddressKind::Http,
        }
    }

    fn case(name: &str, services: Vec<ServiceDecl>) -> Case {
        Case {
            name: name.to_owned(),
            services,
        }
    }

    #[test]
    fn a_service_name_used_twice_is_an_error_naming_both_cases() {
        let err = CaseRegistry::new(
            &env(),
            vec![
                case("uber", vec![decl("pricing", Spread::Single, 8091)]),
                case("amazon", vec![decl("pricing", Spread::Single, 9091)]),
            ],
        )
        .unwrap_err();
        assert_eq!(
            err,
            RegistryError::DuplicateService {
                service: "pricing".into(),
                first: "uber".into(),
                second: "amazon".into(),
            }
        );
    }

    #[test]
    fn zone_replicas_get_one_spec_per_zone_of_the_first_region() {
        let registry = CaseRegistry::new(
            &env(),
            vec![case(
                "amazon",
                vec![
                    decl("amazon", Spread::Single, 8100),
                    decl("amazon-cart", Spread::ZonesOfFirstRegion, 0),
                ],
            )],
        )
        .unwrap();
        let specs = registry
            .up_specs(registry.service("amazon-cart").unwrap())
            .unwrap();
        let shown: Vec<_> = specs
            .iter()
            .map(|s| (s.placement.zone.as_str(), s.listen.port()))
            .collect();
        assert_eq!(
            shown,
            [("us-east-a", 0), ("us-east-b", 0), ("us-east-c", 0)]
        );
    }

    #[test]
    fn per_region_services_get_one_spec_per_region_on_stepped_ports() {
        let registry = CaseRegistry::new(
            &env(),
            vec![case(
                "uber",
                vec![
                    decl("uber", Spread::PerRegion, 8090),
                    decl("uber-pricing", Spread::Single, 8091),
                ],
            )],
        )
        .unwrap();
        let uber = registry.service("uber").unwrap();
        let specs = registry.up_specs(uber).unwrap();
        let shown: Vec<_> = specs
            .iter()
            .map(|s| (s.placement.zone.as_str(), s.listen.port()))
            .collect();
        assert_eq!(
            shown,
            [
                ("us-east-a", 8090),
                ("eu-west-a", 8190),
                ("ap-south-a", 8290)
            ]
        );
        let pricing = registry
            .up_specs(registry.service("uber-pricing").unwrap())
            .unwrap();
        assert_eq!(pricing.len(), 1);
        assert_eq!(pricing[0].listen.port(), 8091);
        // serve in a named zone: that region's port.
        let spec = registry.spec(uber, Some("eu-west-c")).unwrap();
        assert_eq!(
            (spec.placement.region.as_str(), spec.listen.port()),
            ("eu-west", 8190)
        );
        assert_eq!(
            registry.spec(uber, Some("mars-a")).unwrap_err(),
            RegistryError::UnknownZone("mars-a".into())
        );
    }

    #[test]
    fn a_port_plan_past_65535_is_refused_naming_its_key() {
        let err = CaseRegistry::new(
            &env(),
            vec![case("uber", vec![decl("uber", Spread::PerRegion, 65_400)])],
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("uber.port: 3 regions"), "{err}");
    }

    #[test]
    fn unknown_names_list_the_known_ones() {
        let registry = CaseRegistry::new(
            &env(),
            vec![case("uber", vec![decl("uber", Spread::Single, 0)])],
        )
        .unwrap();
        assert_eq!(
            registry.case("netflix").unwrap_err().to_string(),
            "unknown case `netflix` (known: uber)"
        );
        assert_eq!(
            registry.service("gateway").unwrap_err().to_string(),
            "unknown service `gateway` (known: uber)"
        );
    }

    #[test]
    fn addresses_are_shown_by_kind() {
        let mut d = decl("chat", Spread::PerRegion, 5222);
        let at: SocketAddr = "127.0.0.1:5222".parse().unwrap();
        assert_eq!(d.show_address(at), "http://127.0.0.1:5222");
        d.address = AddressKind::Tcp;
        d.label = "xmpp c2s".into();
        assert_eq!(d.show_address(at), "xmpp c2s 127.0.0.1:5222");
    }
}
