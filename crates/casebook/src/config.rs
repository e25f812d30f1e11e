//! The configuration: defaults, then the TOML file, then `CASEBOOK_*` environment
//! variables, then command-line flags — each later source overriding earlier ones.
//!
//! Any key can come from the environment: `CASEBOOK_` followed by its path with `__`
//! between tables, e.g. `CASEBOOK_CONTROL__PORT=7701` or
//! `CASEBOOK_SHUTDOWN__DRAIN_TIMEOUT=5s`. A value is read as TOML when it parses as
//! TOML (numbers, booleans, arrays) and as a string otherwise.
//!
//! A bad configuration is reported with where it came from (the file or the
//! variable), the key, and what was expected, before anything starts.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use casebook_amazon::config::AmazonConfig;
use casebook_control::ControlConfig;
use casebook_control::alerts::AlertsConfig;
use casebook_control::autoscaler::AutoscalerConfig;
use casebook_control::chaos::ChaosConfig;
use casebook_control::deploy::DeployConfig;
use casebook_control::discovery::DiscoveryConfig;
use casebook_control::metrics_store::MetricsStoreConfig;
use casebook_kit::runtime::ListenerLimits;
use casebook_kit::topology::Topology;
use casebook_netflix::config::NetflixConfig;
use casebook_uber::config::UberConfig;
use casebook_whatsapp::node::WhatsappConfig;
use serde::{Deserialize, Serialize};

/// Environment variables that are not configuration keys.
const NOT_KEYS: &[&str] = &["CASEBOOK_CONFIG", "CASEBOOK_DATA_DIR", "CASEBOOK_LOG"];

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where durable state lives.
    pub data_dir: PathBuf,
    /// Regions and zones.
    pub topology: Topology,
    /// The control plane.
    pub control: ControlConfig,
    /// Discovery: leases, eviction, self-preservation.
    pub discovery: DiscoveryConfig,
    /// The control plane's dimensional metrics store.
    pub metrics_store: MetricsStoreConfig,
    /// Metrics pushed from this process to the control plane.
    pub metrics_push: MetricsPushConfig,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
    /// The WhatsApp case's chat node (XMPP c2s).
    pub whatsapp: WhatsappConfig,
    /// The Uber case (its RESP geo port).
    pub uber: UberConfig,
    /// The Amazon case: the API, the cart replicas, inventory.
    pub amazon: AmazonConfig,
    /// The Netflix case: pipeline, origin, CDN tiers, playback.
    pub netflix: NetflixConfig,
    /// Every HTTP listener's bounds: connections at once, header-read timeout.
    pub http: ListenerLimits,
    /// The control plane's autoscaler: policies per service and the schedule.
    pub autoscaler: AutoscalerConfig,
    /// Chaos experiments and the Chaos Monkey daemon (`[chaos.monkey]`, off by default).
    pub chaos: ChaosConfig,
    /// The control plane's deployer: canary share, analysis window, judge.
    pub deploy: DeployConfig,
    /// The control plane's alert rules and their runbooks.
    pub alerts: AlertsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./casebook-data"),
            topology: Topology::default(),
            control: ControlConfig::default(),
            discovery: DiscoveryConfig::default(),
            metrics_store: MetricsStoreConfig::default(),
            metrics_push: MetricsPushConfig::default(),
            shutdown: ShutdownConfig::default(),
            whatsapp: WhatsappConfig::default(),
            uber: UberConfig::default(),
            amazon: AmazonConfig::default(),
            netflix: NetflixConfig::default(),
            http: ListenerLimits::default(),
            autoscaler: AutoscalerConfig::default(),
            chaos: ChaosConfig::default(),
            deploy: DeployConfig::default(),
            alerts: AlertsConfig::default(),
        }
    }
}

/// The `[metrics_push]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsPushConfig {
    /// Whether this process pushes its metrics to the control plane's store.
    pub enabled: bool,
    /// How often (the store keeps 1 s steps; at least 100 ms).
    #[serde(with = "humantime_serde")]
    pub step: Duration,
}

impl Default for MetricsPushConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            step: Duration::from_secs(1),
        }
    }
}

/// The `[shutdown]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// How long a graceful stop waits for in-flight work before killing it.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Where the bad value came from: a file path or an environment variable.
    pub source: String,
    /// The key at fault, as a dotted path (empty for a syntax error).
    pub key: String,
    /// What was wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "bad configuration in {}: {}", self.source, self.message)
        } else {
            write!(
                f,
                "bad configuration in {}: key `{}`: {}",
                self.source, self.key, self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// Values given on the command line, applied last.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub control_port: Option<u16>,
    pub whatsapp_port: Option<u16>,
}

/// Loads the configuration from `file` (if any), the environment and `overrides`.
pub fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    overrides: &Overrides,
) -> Result<Config, ConfigError> {
    let mut table = toml::Table::new();
    // Which source set each key, to blame the right one.
    let mut origin: BTreeMap<String, String> = BTreeMap::new();
    let file_label = file.map(|p| p.display().to_string());

    if let Some(path) = file {
        let label = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            source: label.clone(),
            key: String::new(),
            message: format!("cannot read the file: {e}"),
        })?;
        table = text.parse::<toml::Table>().map_err(|e| ConfigError {
            source: label.clone(),
            key: String::new(),
            message: e.to_string().trim_end().to_owned(),
        })?;
    }

    let mut env: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("CASEBOOK_") && !NOT_KEYS.contains(&k.as_str()))
        .collect();
    env.sort();
    // A value is read as its key's own type: a string key given `1234` stays a string.
    let defaults = toml::Value::try_from(Config::default()).ok();
    for (var, raw) in env {
        let path: Vec<String> = var["CASEBOOK_".len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError {
                source: format!("environment variable {var}"),
                key: String::new(),
                message: "expected CASEBOOK_<TABLE>__<KEY>, with `__` between parts".into(),
            });
        }
        let value = if default_is_string(defaults.as_ref(), &path) {
            toml::Value::String(raw)
        } else {
            parse_env_value(&raw)
        };
        set_path(&mut table, &path, value).map_err(|message| ConfigError {
            source: format!("environment variable {var}"),
            key: path.join("."),
            message,
        })?;
        origin.insert(path.join("."), format!("environment variable {var}"));
    }

    let mut config: Config =
        serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|err| {
            let key = err.path().to_string();
            let key = if key == "." { String::new() } else { key };
            let source = blame(&origin, &key)
                .or_else(|| file_label.clone())
                .unwrap_or_else(|| "defaults".into());
            ConfigError {
                source,
                key,
                message: err.into_inner().to_string(),
            }
        })?;

    if let Some(dir) = &overrides.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(port) = overrides.control_port {
        config.control.port = port;
    }
    if let Some(port) = overrides.whatsapp_port {
        config.whatsapp.port = port;
    }

    let whole = file_label.unwrap_or_else(|| "the configuration".into());
    config.topology.validate().map_err(|e| ConfigError {
        source: blame(&origin, "topology").unwrap_or_else(|| whole.clone()),
        key: "topology".into(),
        message: e.to_string(),
    })?;
    config.discovery.validate().map_err(|e| {
        let key = format!("discovery.{}", e.key);
        ConfigError {
            source: blame(&origin, &key).unwrap_or_else(|| whole.clone()),
            key,
            message: e.reason,
        }
    })?;
    if let Err(error) = config.whatsapp.validate() {
        return Err(ConfigError {
            source: blame(&origin, error.key()).unwrap_or_else(|| whole.clone()),
            key: error.key().to_owned(),
            message: error.message().to_owned(),
        });
    }
    let regions: Vec<String> = config
        .topology
        .regions
        .iter()
        .map(|r| r.name.clone())
        .collect();
    if let Err(e) = config
        .uber
        .validate()
        .and_then(|()| config.uber.validate_regions(&regions).map(|_| ()))
    {
        let (key, message) = (e.key().to_owned(), e.message().to_owned());
        return Err(ConfigError {
            source: blame(&origin, &key).unwrap_or_else(|| whole.clone()),
            key,
            message,
        });
    }
    for checked in [
        config.amazon.validate(),
        config.netflix.validate(),
        config.autoscaler.validate(),
        config.chaos.validate(),
        config.deploy.validate(),
        config.alerts.validate(),
    ] {
        if let Err(e) = checked {
            let (key, message) = (e.key().to_owned(), e.message().to_owned());
            return Err(ConfigError {
                source: blame(&origin, &key).unwrap_or_else(|| whole.clone()),
                key,
                message,
            });
        }
    }
    if let Err(e) = config.http.validate("http") {
        return Err(ConfigError {
            source: blame(&origin, e.key()).unwrap_or_else(|| whole.clone()),
            key: e.key().to_owned(),
            message: e.message().to_owned(),
        });
    }
    if let Err(e) = config.control.validate() {
        return Err(ConfigError {
            source: blame(&origin, e.key()).unwrap_or_else(|| whole.clone()),
            key: e.key().to_owned(),
            message: e.message().to_owned(),
        });
    }
    if let Some(zone) = &config.control.zone
        && config.topology.region_of(zone).is_none()
    {
        return Err(ConfigError {
            source: blame(&origin, "control.zone").unwrap_or(whole),
            key: "control.zone".into(),
            message: format!("zone `{zone}` is not in the topology"),
        });
    }
    Ok(config)
}

/// The source that set `key` or the nearest table containing it.
fn blame(origin: &BTreeMap<String, String>, key: &str) -> Option<String> {
    let mut key = key;
    loop {
        if let Some(source) = origin.get(key) {
            return Some(source.clone());
        }
        // `serde_path_to_error` paths may carry indices (`topology.regions[0].name`).
        if let Some(found) = origin
            .iter()
            .find(|(k, _)| key.starts_with(k.as_str()))
            .map(|(_, s)| s.clone())
        {
            return Some(found);
        }
        key = key.rsplit_once('.')?.0;
    }
}

/// Whether the default configuration holds a string at `path`.
fn default_is_string(defaults: Option<&toml::Value>, path: &[String]) -> bool {
    let mut at = defaults;
    for part in path {
        at = at.and_then(|v| v.get(part.as_str()));
    }
    matches!(at, Some(toml::Value::String(_)))
}

fn parse_env_value(raw: &str) -> toml::Value {
    // Parse as the right-hand side of a TOML key; fall back to a plain string.
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = path.split_last().expect("non-empty path");
    let mut current = table;
    for (depth, part) in parents.iter().enumerate() {
        let entry = current
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{}` is not a table", parents[..=depth].join(".")))?;
    }
    current.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn defaults_match_the_blueprint() {
        let config = load(None, env(&[]), &Overrides::default()).unwrap();
        assert_eq!(config.control.port, 7700);
        assert_eq!(config.data_dir, PathBuf::from("./casebook-data"));
        assert_eq!(config.topology.regions.len(), 3);
        assert_eq!(config.shutdown.drain_timeout, Duration::from_secs(10));
    }

    #[test]
    fn file_then_environment_then_flags() {
        let f = file(
            "data_dir = \"/from/file\"\n[control]\nport = 7000\n[shutdown]\ndrain_timeout = \"3s\"\n",
        );
        let config = load(
            Some(f.path()),
            env(&[("CASEBOOK_CONTROL__PORT", "7100"), ("PATH", "/bin")]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(config.control.port, 7100);
        assert_eq!(config.data_dir, PathBuf::from("/from/file"));
        assert_eq!(config.shutdown.drain_timeout, Duration::from_secs(3));
        let config = load(
            Some(f.path()),
            env(&[("CASEBOOK_CONTROL__PORT", "7100")]),
            &Overrides {
                control_port: Some(7200),
                data_dir: Some("/flag".into()),
                whatsapp_port: Some(5300),
            },
        )
        .unwrap();
        assert_eq!(config.control.port, 7200);
        assert_eq!(config.data_dir, PathBuf::from("/flag"));
        assert_eq!(config.whatsapp.port, 5300);
    }

    #[test]
    fn a_bad_value_names_the_file_the_key_and_the_expectation() {
        let f = file("[control]\nport = \"seven\"\n");
        let err = load(Some(f.path()), env(&[]), &Overrides::default()).unwrap_err();
        assert_eq!(err.source, f.path().display().to_string());
        assert_eq!(err.key, "control.port");
        assert!(err.message.contains("expected u16"), "{}", err.message);
        assert!(err.to_string().contains("key `control.port`"));
    }

    #[test]
    fn an_unknown_key_is_refused() {
        let f = file("[control]\nprot = 1\n");
        let err = load(Some(f.path()), env(&[]), &Overrides::default()).unwrap_err();
        assert!(
            err.message.contains("unknown field `prot`"),
            "{}",
            err.message
        );
        assert_eq!(err.key, "control.prot");
    }

    #[test]
    fn a_bad_environment_value_blames_the_variable() {
        let err = load(
            None,
            env(&[("CASEBOOK_SHUTDOWN__DRAIN_TIMEOUT", "soon")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(
            err.source,
            "environment variable CASEBOOK_SHUTDOWN__DRAIN_TIMEOUT"
        );
        assert_eq!(err.key, "shutdown.drain_timeout");
    }

    #[test]
    fn syntax_errors_and_bad_topologies_are_reported() {
        let f = file("[control\nport = 1\n");
        let err = load(Some(f.path()), env(&[]), &Overrides::default()).unwrap_err();
        assert!(err.key.is_empty());
        assert!(err.message.contains("line 1"), "{}", err.message);

        let f = file("[[topology.regions]]\nname = \"solo\"\nzones = []\n");
        let err = load(Some(f.path()), env(&[]), &Overrides::default()).unwrap_err();
        assert_eq!(err.key, "topology");
        assert_eq!(err.message, "region `solo` has no zones");

        let f = file("[discovery]\nlease_duration = \"10s\"\n");
        let err = load(Some(f.path()), env(&[]), &Overrides::default()).unwrap_err();
        assert_eq!(err.key, "discovery.lease_duration");
        assert!(err.message.contains("renew_interval"), "{}", err.message);

        let f = file("[control]\nzone = \"mars-a\"\n");
        let err = load(Some(f.path()), env(&[]), &Overrides::default()).unwrap_err();
        assert_eq!(err.key, "control.zone");
    }

    #[test]
    fn the_http_table_bounds_every_listener_and_names_its_keys() {
        let config = load(None, env(&[]), &Overrides::default()).unwrap();
        assert_eq!(config.http, ListenerLimits::default());
        let config = load(
            None,
            env(&[
                ("CASEBOOK_HTTP__MAX_CONNECTIONS", "64"),
                ("CASEBOOK_HTTP__HEADER_READ_TIMEOUT", "5s"),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(config.http.max_connections, 64);
        assert_eq!(config.http.header_read_timeout, Duration::from_secs(5));
        let err = load(
            None,
            env(&[("CASEBOOK_HTTP__MAX_CONNECTIONS", "0")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(err.key, "http.max_connections");
        assert_eq!(
            err.source,
            "environment variable CASEBOOK_HTTP__MAX_CONNECTIONS"
        );
    }

    #[test]
    fn an_environment_value_is_read_as_its_keys_own_type() {
        let config = load(
            None,
            env(&[
                ("CASEBOOK_UBER__CITY", "1234"),
                ("CASEBOOK_WHATSAPP__DOMAIN", "true"),
                ("CASEBOOK_CONTROL__PORT", "7701"),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(config.uber.city, "1234");
        assert_eq!(config.whatsapp.domain, "true");
        assert_eq!(config.control.port, 7701);
        // A number key given a string is still an error naming the variable.
        let err = load(
            None,
            env(&[("CASEBOOK_CONTROL__PORT", "seven")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(err.key, "control.port");
    }

    #[test]
    fn control_refuses_an_unforced_bind_beyond_loopback_and_bad_port_ranges() {
        let everywhere = [("CASEBOOK_CONTROL__HOST", "0.0.0.0")];
        let err = load(None, env(&everywhere), &Overrides::default()).unwrap_err();
        assert_eq!(err.key, "control.host");
        assert_eq!(err.source, "environment variable CASEBOOK_CONTROL__HOST");
        assert!(
            err.message.contains("control.allow_insecure_bind"),
            "{}",
            err.message
        );
        let forced = [
            ("CASEBOOK_CONTROL__HOST", "0.0.0.0"),
            ("CASEBOOK_CONTROL__ALLOW_INSECURE_BIND", "true"),
        ];
        assert!(load(None, env(&forced), &Overrides::default()).is_ok());

        let f = file("[control]\ninstance_ports = \"22-30000\"\n");
        let err = load(Some(f.path()), env(&[]), &Overrides::default()).unwrap_err();
        assert_eq!(err.key, "control.instance_ports");
        assert!(err.message.contains("1024"), "{}", err.message);

        // The token comes from the environment but is never printed.
        let token = [("CASEBOOK_CONTROL__TOKEN", "abc-123")];
        let config = load(None, env(&token), &Overrides::default()).unwrap();
        assert_eq!(config.control.token.as_deref(), Some("abc-123"));
        assert!(!toml::to_string(&config).unwrap().contains("abc-123"));
        assert!(!format!("{config:?}").contains("abc-123"));
        let bad = [("CASEBOOK_CONTROL__TOKEN", "a b")];
        let err = load(None, env(&bad), &Overrides::default()).unwrap_err();
        assert_eq!(err.key, "control.token");
    }

    #[test]
    fn whatsapp_table_defaults_env_and_precise_errors() {
        let config = load(None, env(&[]), &Overrides::default()).unwrap();
        assert_eq!(config.whatsapp.port, 5222);
        assert_eq!(config.whatsapp.domain, "localhost");
        assert!(!config.whatsapp.allow_insecure_plain);

        let config = load(
            None,
            env(&[
                ("CASEBOOK_WHATSAPP__PORT", "0"),
                ("CASEBOOK_WHATSAPP__ALLOW_INSECURE_PLAIN", "true"),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(config.whatsapp.port, 0);
        assert!(config.whatsapp.allow_insecure_plain);

        let err = load(
            None,
            env(&[("CASEBOOK_WHATSAPP__MAX_CONNECTIONS", "0")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(
            err.source,
            "environment variable CASEBOOK_WHATSAPP__MAX_CONNECTIONS"
        );
        assert_eq!(err.key, "whatsapp.max_connections");
        assert!(err.message.contains("1..="), "{}", err.message);

        let config = load(
            None,
            env(&[
                ("CASEBOOK_WHATSAPP__TLS_PORT", "0"),
                ("CASEBOOK_WHATSAPP__WS_PORT", "0"),
                ("CASEBOOK_WHATSAPP__IDLE_TIMEOUT", "90s"),
                ("CASEBOOK_WHATSAPP__REQUIRE_ENCRYPTION", "true"),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!((config.whatsapp.tls_port, config.whatsapp.ws_port), (0, 0));
        assert_eq!(config.whatsapp.idle_timeout, Duration::from_secs(90));
        assert!(config.whatsapp.require_encryption);
        let err = load(
            None,
            env(&[("CASEBOOK_WHATSAPP__HANDSHAKE_TIMEOUT", "0s")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(err.key, "whatsapp.handshake_timeout");
        let f = file("[whatsapp]\nws_port = 5222\n");
        let err = load(Some(f.path()), env(&[]), &Overrides::default()).unwrap_err();
        assert_eq!(err.key, "whatsapp.ws_port");

        let f = file("[whatsapp]\ndomain = \"not a domain!\"\n");
        let err = load(Some(f.path()), env(&[]), &Overrides::default()).unwrap_err();
        assert_eq!(err.key, "whatsapp.domain");
        assert_eq!(err.source, f.path().display().to_string());

        let f = file("[whatsapp]\nbogus = 1\n");
        let err = load(Some(f.path()), env(&[]), &Overrides::default()).unwrap_err();
        assert!(err.message.contains("bogus"), "{}", err.message);
    }

    #[test]
    fn uber_table_defaults_and_env() {
        let config = load(None, env(&[]), &Overrides::default()).unwrap();
        assert_eq!(config.uber.resp_port, 6380);
        assert_eq!(config.uber.http_port, 8090);
        let config = load(
            None,
            env(&[
                ("CASEBOOK_UBER__RESP_PORT", "0"),
                ("CASEBOOK_UBER__HTTP_PORT", "0"),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(config.uber.resp_port, 0);
        assert_eq!(config.uber.http_port, 0);
        let err = load(
            None,
            env(&[("CASEBOOK_UBER__MAX_LOCATION_BATCH", "0")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(err.key, "uber.max_location_batch");
        let f = file("[uber]\nresp_port = \"six\"\n");
        let err = load(Some(f.path()), env(&[]), &Overrides::default()).unwrap_err();
        assert_eq!(err.source, f.path().display().to_string());
        let err = load(
            None,
            env(&[("CASEBOOK_UBER__RESP_MAX_CLIENTS", "0")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(
            err.source,
            "environment variable CASEBOOK_UBER__RESP_MAX_CLIENTS"
        );
        assert_eq!(err.key, "uber.resp_max_clients");
    }

    #[test]
    fn the_autoscaler_table_reads_policies_and_names_a_bad_key() {
        let config = load(None, env(&[]), &Overrides::default()).unwrap();
        assert!(
            config.autoscaler.policies.is_empty(),
            "nothing scaled by default"
        );
        let f = file(
            "[[autoscaler.policies]]\nservice = \"amazon\"\nmax_instances = 4\ncapacity = 200.0\n\
             [[autoscaler.schedule]]\nservice = \"amazon\"\nat = \"09:00\"\nuntil = \"11:00\"\n\
             lead = \"10m\"\ninstances = 3\n",
        );
        let config = load(
            Some(f.path()),
            env(&[("CASEBOOK_AUTOSCALER__INTERVAL", "2s")]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(config.autoscaler.interval, Duration::from_secs(2));
        assert_eq!(config.autoscaler.policies[0].max_instances, 4);
        assert_eq!(config.autoscaler.schedule[0].lead, Duration::from_secs(600));

        let f = file(
            "[[autoscaler.policies]]\nservice = \"amazon\"\nmax_instances = 4\ncapacity = 200.0\n\
             scale_in_below = 0.8\n",
        );
        let err = load(Some(f.path()), env(&[]), &Overrides::default()).unwrap_err();
        assert_eq!(err.key, "autoscaler.policies[0].scale_in_below");
        assert_eq!(err.source, f.path().display().to_string());
    }

    #[test]
    fn the_alerts_table_reads_rules_and_names_a_bad_key() {
        let config = load(None, env(&[]), &Overrides::default()).unwrap();
        assert!(config.alerts.rules.is_empty(), "no rule by default");
        let f = file(
            "[[alerts.rules]]\nname = \"amazon-errors\"\nmetric = \"http_requests_total\"\n\
             filter = \"service:amazon,status:500|503\"\nratio_of = { filter = \"service:amazon\" }\n\
             scale = 100.0\nop = \"above\"\nthreshold = 1.0\nfor = \"30s\"\n\
             [[alerts.rules.actions]]\nkind = \"restart\"\n",
        );
        let config = load(
            Some(f.path()),
            env(&[("CASEBOOK_ALERTS__INTERVAL", "2s")]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(config.alerts.interval, Duration::from_secs(2));
        assert_eq!(config.alerts.rules[0].for_, Duration::from_secs(30));
        assert_eq!(config.alerts.rules[0].actions.len(), 1);

        let f = file(
            "[[alerts.rules]]\nname = \"a\"\nmetric = \"m\"\nop = \"above\"\nthreshold = 1.0\n\
             [[alerts.rules]]\nname = \"b\"\nmetric = \"m\"\nop = \"above\"\nthreshold = 1.0\n\
             for = \"2h\"\n",
        );
        let err = load(Some(f.path()), env(&[]), &Overrides::default()).unwrap_err();
        assert_eq!(err.key, "alerts.rules[1].for");
        assert_eq!(err.source, f.path().display().to_string());
    }

    #[test]
    fn uber_regions_are_checked_against_the_topology() {
        let config = load(None, env(&[]), &Overrides::default()).unwrap();
        assert_eq!(config.uber.gossip_port, 7946);
        assert_eq!(config.uber.cities[0].name, "san-francisco");
        let f = file(
            "[[uber.cities]]\nname = \"atlantis\"\nlat = 0.0\nlng = 0.0\nradius_km = 10.0\nregion = \"mars\"\n",
        );
        let err = load(Some(f.path()), env(&[]), &Overrides::default()).unwrap_err();
        assert_eq!(err.key, "uber.cities[0].region");
        assert!(
            err.message.contains("us-east, eu-west, ap-south"),
            "{}",
            err.message
        );
        let err = load(
            None,
            env(&[("CASEBOOK_UBER__GOSSIP_PORT", "65535")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(err.key, "uber.gossip_port");
    }
}
