//! The gateway's configuration: routes, the filter chain, limits and credentials,
//! all data (serde, unknown keys refused), validated before anything starts with a
//! [`ConfigError`] naming the dotted key at fault (`netflix.gateway.routes[2].prefix`).
//!
//! An example (the `[netflix.gateway]` table, say):
//!
//! ```toml
//! service = "netflix-gateway"
//! body_limit = 1048576
//! rate_limit = { per_second = 100, burst = 200 }
//! filters = { inbound = ["trace", "body_limit", "auth", "rate_limit", "priority"], outbound = ["response_headers", "metrics"] }
//! jwt = { issuer = "netflix-users", audience = "netflix", leeway = "30s" }
//! api_keys = [{ id = "encoder", secret_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" }]
//!
//! [[routes]]
//! name = "catalog"
//! prefix = "/api/catalog"
//! service = "netflix-catalog"
//! timeout = "300ms"
//! retries = 1
//! auth = "optional"
//! priority = "critical"
//! fallback = { status = 200, body = { titles = [] } }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use casebook_kit::config::ConfigError;
use casebook_kit::resilience::Priority;
use casebook_kit::resilience::breaker::BreakerConfig;
use casebook_kit::resilience::rate_limit::RateLimitConfig;
use http::{HeaderName, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

use super::filters::{INBOUND_FILTERS, OUTBOUND_FILTERS};
use super::routes::{ADMIN_ROUTES_PATH, RESERVED_PATHS};

/// The most routes a gateway takes (the matcher scans them in order).
pub const MAX_ROUTES: usize = 256;
/// The most retries a route may ask for (the kit's stack caps attempts at 10).
pub const MAX_RETRIES: u32 = 9;
/// The largest request body limit accepted.
pub const MAX_BODY_LIMIT: u64 = 64 << 20;
/// The longest route timeout accepted.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);
/// The most API keys.
pub const MAX_API_KEYS: usize = 10_000;
/// The largest bulkhead of one route.
pub const MAX_CONCURRENT: usize = 100_000;

/// The whole gateway: what it is called, its limits, its filters and its routes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// The service's name in discovery (and in metrics), e.g. `netflix-gateway`.
    pub service: String,
    /// Largest request body, in bytes: a bigger one is answered 413 `body_too_large`.
    pub body_limit: u64,
    /// The limit per client (JWT subject, else API key id, else remote IP).
    pub rate_limit: RateLimitConfig,
    /// The filter chain, by the names of the built-in filters.
    pub filters: FilterChainConfig,
    /// How bearer tokens are checked (and issued, by the user service).
    pub jwt: JwtConfig,
    /// Machine clients: key id → SHA-256 of the secret.
    pub api_keys: Vec<ApiKeyConfig>,
    /// Headers the `response_headers` filter sets on every answer.
    pub response_headers: BTreeMap<String, String>,
    /// Longest prefix wins; order does not matter.
    pub routes: Vec<RouteConfig>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            service: "netflix-gateway".to_owned(),
            body_limit: 1 << 20,
            rate_limit: RateLimitConfig::default(),
            filters: FilterChainConfig::default(),
            jwt: JwtConfig::default(),
            api_keys: Vec::new(),
            response_headers: BTreeMap::new(),
            routes: Vec::new(),
        }
    }
}

/// Which built-in filters run, in which order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilterChainConfig {
    /// Run on the request head, in this order, before the endpoint.
    pub inbound: Vec<String>,
    /// Run on every answer (proxied, fallback or static), in this order.
    pub outbound: Vec<String>,
}

impl Default for FilterChainConfig {
    fn default() -> Self {
        Self {
            inbound: ["trace", "body_limit", "auth", "rate_limit", "priority"]
                .map(str::to_owned)
                .to_vec(),
            outbound: ["response_headers", "metrics"].map(str::to_owned).to_vec(),
        }
    }
}

/// Bearer tokens: HS256 under a shared secret file, with these claims required.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// The shared secret (made on first use, mode 0600); the caller picks a default
    /// under its data dir when unset ([`JwtConfig::key_file`]).
    pub secret_file: Option<PathBuf>,
    /// The `iss` every token must carry.
    pub issuer: String,
    /// The `aud` every token must carry.
    pub audience: String,
    /// Clock difference forgiven when judging `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// How long tokens issued with [`crate::gateway::TokenIssuer::issue`] live.
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            secret_file: None,
            issuer: "netflix-users".to_owned(),
            audience: "netflix".to_owned(),
            leeway: Duration::from_secs(30),
            token_ttl: Duration::from_secs(3600),
        }
    }
}

impl JwtConfig {
    /// The secret file: the configured one, else `default_dir/jwt.key`.
    pub fn key_file(&self, default_dir: &Path) -> PathBuf {
        self.secret_file
            .clone()
            .unwrap_or_else(|| default_dir.join("jwt.key"))
    }
}

/// One machine client. The secret itself is never configured, only its SHA-256
/// (hex): the secret is random and long, so a fast hash is enough.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Sent before the dot in `x-api-key: <id>.<secret>`; the client's rate-limit key.
    pub id: String,
    /// Lowercase hex SHA-256 of the secret ([`crate::gateway::hash_secret`]).
    pub secret_sha256: String,
}

/// Whether a route needs a caller's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// A valid bearer token or API key, else 401.
    #[default]
    Required,
    /// Anonymous callers pass; a credential that is sent must be valid (else 401).
    Optional,
    /// Credentials are not read; nothing is passed upstream as the caller.
    None,
}

/// One route: a path prefix and where its requests go, with its resilience.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Names the route in `/admin/routes`, metrics and its breaker.
    pub name: String,
    /// Starts with `/`; matches itself and paths below it (`/a` matches `/a/b`, not `/ab`).
    pub prefix: String,
    /// The upstream, found through discovery (zone-aware, cached); or …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// … a fixed base URL, `http://host:port[/base]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Whether the prefix is cut before the path goes upstream (`/api/users/7` → `/7`).
    #[serde(default = "yes")]
    pub strip_prefix: bool,
    /// Each attempt's timeout, until the upstream's response headers.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Further attempts after a failure, for idempotent requests only (GET, HEAD,
    /// PUT, DELETE, OPTIONS, or any request carrying an `Idempotency-Key`).
    #[serde(default)]
    pub retries: u32,
    /// The first backoff ceiling between attempts (full jitter, doubling).
    #[serde(default = "default_backoff", with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// The route's circuit breaker (Hystrix's defaults).
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// Most requests of this route upstream at once; more are refused 503 `bulkhead_full`.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: usize,
    #[serde(default)]
    pub auth: AuthMode,
    /// What GET and HEAD requests get when the upstream cannot answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<FallbackConfig>,
    /// The priority the gateway tags this route's requests with (`x-priority`).
    #[serde(default)]
    pub priority: Priority,
}

fn yes() -> bool {
    true
}
fn default_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_backoff() -> Duration {
    Duration::from_millis(10)
}
fn default_max_concurrent() -> usize {
    100
}

impl RouteConfig {
    /// A route to `service` under `prefix` with every default (auth required).
    pub fn to_service(name: &str, prefix: &str, service: &str) -> Self {
        Self {
            name: name.to_owned(),
            prefix: prefix.to_owned(),
            service: Some(service.to_owned()),
            url: None,
            strip_prefix: true,
            timeout: default_timeout(),
            retries: 0,
            retry_backoff: default_backoff(),
            breaker: BreakerConfig::default(),
            max_concurrent: default_max_concurrent(),
            auth: AuthMode::Required,
            fallback: None,
            priority: Priority::Normal,
        }
    }

    /// The same route to a fixed base URL instead.
    pub fn to_url(name: &str, prefix: &str, url: &str) -> Self {
        Self {
            service: None,
            url: Some(url.to_owned()),
            ..Self::to_service(name, prefix, "")
        }
    }
}

/// A static answer in place of a failed upstream call.
///
/// Chosen over "the last good response, cached": a static body is the same on
/// every instance, costs nothing on the success path, and can never serve one
/// user's data to another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackConfig {
    #[serde(default = "default_fallback_status")]
    pub status: u16,
    /// Answered as JSON.
    pub body: serde_json::Value,
}

fn default_fallback_status() -> u16 {
    200
}

impl GatewayConfig {
    /// Checks every key; the error names the first one at fault under `key`
    /// (where this table sits, e.g. `netflix.gateway`).
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let at = |field: &str| format!("{key}.{field}");
        if !valid_name(&self.service) {
            return Err(ConfigError::new(
                at("service"),
                "must be 1-64 characters of a-z, 0-9, '-' and '_'",
            ));
        }
        if self.body_limit == 0 || self.body_limit > MAX_BODY_LIMIT {
            return Err(ConfigError::new(
                at("body_limit"),
                format!("must be 1..={MAX_BODY_LIMIT} bytes"),
            ));
        }
        if self.rate_limit.per_second == 0 || self.rate_limit.burst == 0 {
            return Err(ConfigError::new(
                at("rate_limit"),
                "per_second and burst must be at least 1",
            ));
        }
        if self.rate_limit.prune_every == 0 {
            return Err(ConfigError::new(
                at("rate_limit.prune_every"),
                "must be at least 1",
            ));
        }
        check_chain(
            &self.filters.inbound,
            INBOUND_FILTERS,
            &at("filters.inbound"),
        )?;
        check_chain(
            &self.filters.outbound,
            OUTBOUND_FILTERS,
            &at("filters.outbound"),
        )?;
        self.validate_jwt(&at("jwt"))?;
        self.validate_api_keys(&at("api_keys"))?;
        for (name, value) in &self.response_headers {
            if HeaderName::try_from(name.as_str()).is_err()
                || HeaderValue::try_from(value.as_str()).is_err()
            {
                return Err(ConfigError::new(
                    at(&format!("response_headers.{name}")),
                    "must be a valid HTTP header name and value",
                ));
            }
        }
        if self.routes.len() > MAX_ROUTES {
            return Err(ConfigError::new(
                at("routes"),
                format!("at most {MAX_ROUTES} routes"),
            ));
        }
        let mut names = BTreeSet::new();
        let mut prefixes = BTreeSet::new();
        for (i, route) in self.routes.iter().enumerate() {
            let here = at(&format!("routes[{i}]"));
            route.validate(&here)?;
            if !names.insert(route.name.as_str()) {
                return Err(ConfigError::new(
                    format!("{here}.name"),
                    format!("route name `{}` is used twice", route.name),
                ));
            }
            if !prefixes.insert(route.prefix.as_str()) {
                return Err(ConfigError::new(
                    format!("{here}.prefix"),
                    format!("prefix `{}` is used twice", route.prefix),
                ));
            }
        }
        Ok(())
    }

    fn validate_jwt(&self, key: &str) -> Result<(), ConfigError> {
        let jwt = &self.jwt;
        if jwt.issuer.is_empty() || jwt.audience.is_empty() {
            return Err(ConfigError::new(
                key,
                "issuer and audience must not be empty",
            ));
        }
        if jwt.leeway > Duration::from_secs(600) {
            return Err(ConfigError::new(
                format!("{key}.leeway"),
                "must be at most 10m",
            ));
        }
        if jwt.token_ttl.is_zero() {
            return Err(ConfigError::new(
                format!("{key}.token_ttl"),
                "must be positive",
            ));
        }
        Ok(())
    }

    fn validate_api_keys(&self, key: &str) -> Result<(), ConfigError> {
        if self.api_keys.len() > MAX_API_KEYS {
            return Err(ConfigError::new(
                key,
                format!("at most {MAX_API_KEYS} keys"),
            ));
        }
        let mut ids = BTreeSet::new();
        for (i, api_key) in self.api_keys.iter().enumerate() {
            if !valid_name(&api_key.id) {
                return Err(ConfigError::new(
                    format!("{key}[{i}].id"),
                    "must be 1-64 characters of a-z, 0-9, '-' and '_'",
                ));
            }
            if !ids.insert(api_key.id.as_str()) {
                return Err(ConfigError::new(
                    format!("{key}[{i}].id"),
                    format!("key id `{}` is used twice", api_key.id),
                ));
            }
            let hex = &api_key.secret_sha256;
            if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return Err(ConfigError::new(
                    format!("{key}[{i}].secret_sha256"),
                    "must be 64 lowercase hex digits (the SHA-256 of the secret)",
                ));
            }
        }
        Ok(())
    }
}

impl RouteConfig {
    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let at = |field: &str| format!("{key}.{field}");
        if !valid_name(&self.name) {
            return Err(ConfigError::new(
                at("name"),
                "must be 1-64 characters of a-z, 0-9, '-' and '_'",
            ));
        }
        check_prefix(&self.prefix).map_err(|why| ConfigError::new(at("prefix"), why))?;
        match (&self.service, &self.url) {
            (Some(service), None) if valid_name(service) => {}
            (Some(_), None) => {
                return Err(ConfigError::new(
                    at("service"),
                    "must be a service name: 1-64 characters of a-z, 0-9, '-' and '_'",
                ));
            }
            (None, Some(url)) => {
                super::routes::Target::parse_url(url)
                    .map_err(|why| ConfigError::new(at("url"), why))?;
            }
            _ => {
                return Err(ConfigError::new(
                    at("service"),
                    "give exactly one of `service` (found through discovery) and `url`",
                ));
            }
        }
        if self.timeout.is_zero() || self.timeout > MAX_TIMEOUT {
            return Err(ConfigError::new(
                at("timeout"),
                format!("must be positive and at most {MAX_TIMEOUT:?}"),
            ));
        }
        if self.retries > MAX_RETRIES {
            return Err(ConfigError::new(
                at("retries"),
                format!("must be 0..={MAX_RETRIES}"),
            ));
        }
        if self.retry_backoff.is_zero() || self.retry_backoff > Duration::from_secs(10) {
            return Err(ConfigError::new(
                at("retry_backoff"),
                "must be positive and at most 10s",
            ));
        }
        self.breaker
            .validate()
            .map_err(|e| ConfigError::new(at(e.field), e.reason))?;
        if self.max_concurrent == 0 || self.max_concurrent > MAX_CONCURRENT {
            return Err(ConfigError::new(
                at("max_concurrent"),
                format!("must be 1..={MAX_CONCURRENT}"),
            ));
        }
        if let Some(fallback) = &self.fallback
            && StatusCode::from_u16(fallback.status).is_err()
        {
            return Err(ConfigError::new(
                at("fallback.status"),
                "must be an HTTP status, 100..=999",
            ));
        }
        Ok(())
    }
}

/// Service, route and key names: short, lowercase, safe in a metric label.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_'))
}

/// A prefix is a clean absolute path: `/`, or segments without a trailing slash,
/// never shadowing the gateway's own paths.
fn check_prefix(prefix: &str) -> Result<(), String> {
    if !prefix.starts_with('/') {
        return Err(format!("`{prefix}` must start with '/'"));
    }
    if prefix.len() > 1 && prefix.ends_with('/') {
        return Err(format!("`{prefix}` must not end with '/'"));
    }
    if prefix.len() > 256 {
        return Err("must be at most 256 characters".to_owned());
    }
    if super::routes::clean_path(prefix).is_err() {
        return Err(format!(
            "`{prefix}` must be printable ASCII without empty, `.` or `..` segments, `?` or `#`"
        ));
    }
    for reserved in RESERVED_PATHS {
        if super::routes::covers(reserved, prefix) {
            return Err(format!(
                "`{prefix}` is the gateway's own (`{reserved}`; also /health, /metrics, {ADMIN_ROUTES_PATH})"
            ));
        }
    }
    Ok(())
}

fn check_chain(names: &[String], known: &[&str], key: &str) -> Result<(), ConfigError> {
    let mut seen = BTreeSet::new();
    for (i, name) in names.iter().enumerate() {
        if !known.contains(&name.as_str()) {
            return Err(ConfigError::new(
                format!("{key}[{i}]"),
                format!("unknown filter `{name}` (known: {})", known.join(", ")),
            ));
        }
        if !seen.insert(name.as_str()) {
            return Err(ConfigError::new(
                format!("{key}[{i}]"),
                format!("filter `{name}` is listed twice"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> GatewayConfig {
        GatewayConfig {
            routes: vec![
                RouteConfig::to_service("users", "/api/users", "netflix-users"),
                RouteConfig::to_url("static", "/static", "http://127.0.0.1:9000/assets"),
            ],
            ..GatewayConfig::default()
        }
    }

    #[test]
    fn the_documented_example_parses_and_validates() {
        let doc = include_str!("config.rs");
        let toml_text: String = doc
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| format!("{}\n", l.trim_start_matches("//!").trim_start()))
            .collect();
        let config: GatewayConfig = toml::from_str(&toml_text).unwrap();
        config.validate("gateway").unwrap();
        let route = &config.routes[0];
        assert_eq!(route.timeout, Duration::from_millis(300));
        assert_eq!(route.priority, Priority::Critical);
        assert_eq!(route.auth, AuthMode::Optional);
        assert!(route.strip_prefix, "strip_prefix defaults to true");
        assert_eq!(
            route.fallback.as_ref().unwrap().body,
            serde_json::json!({"titles": []})
        );
        assert_eq!(config.api_keys[0].id, "encoder");
    }

    #[test]
    fn bad_values_name_their_dotted_key() {
        type Breaks = Box<dyn Fn(&mut GatewayConfig)>;
        let cases: Vec<(Breaks, &str)> = vec![
            (Box::new(|c| c.body_limit = 0), "gw.body_limit"),
            (
                Box::new(|c| c.filters.inbound.push("teleport".into())),
                "gw.filters.inbound[5]",
            ),
            (
                Box::new(|c| c.filters.outbound.push("metrics".into())),
                "gw.filters.outbound[2]",
            ),
            (
                Box::new(|c| c.routes[1].prefix = "/api/users".into()),
                "gw.routes[1].prefix",
            ),
            (
                Box::new(|c| c.routes[0].prefix = "/api/../x".into()),
                "gw.routes[0].prefix",
            ),
            (
                Box::new(|c| c.routes[0].prefix = "/admin".into()),
                "gw.routes[0].prefix",
            ),
            (
                Box::new(|c| c.routes[0].prefix = "/api/".into()),
                "gw.routes[0].prefix",
            ),
            (
                Box::new(|c| c.routes[1].name = "users".into()),
                "gw.routes[1].name",
            ),
            (
                Box::new(|c| c.routes[0].url = Some("http://x:1".into())),
                "gw.routes[0].service",
            ),
            (
                Box::new(|c| c.routes[1].url = Some("https://x:1".into())),
                "gw.routes[1].url",
            ),
            (
                Box::new(|c| c.routes[0].retries = 10),
                "gw.routes[0].retries",
            ),
            (
                Box::new(|c| c.routes[0].timeout = Duration::ZERO),
                "gw.routes[0].timeout",
            ),
            (
                Box::new(|c| c.routes[0].breaker.buckets = 0),
                "gw.routes[0].breaker.buckets",
            ),
            (
                Box::new(|c| c.routes[0].max_concurrent = 0),
                "gw.routes[0].max_concurrent",
            ),
            (
                Box::new(|c| {
                    c.routes[0].fallback = Some(FallbackConfig {
                        status: 42,
                        body: serde_json::Value::Null,
                    })
                }),
                "gw.routes[0].fallback.status",
            ),
            (
                Box::new(|c| {
                    c.api_keys.push(ApiKeyConfig {
                        id: "k".into(),
                        secret_sha256: "XYZ".into(),
                    })
                }),
                "gw.api_keys[0].secret_sha256",
            ),
            (
                Box::new(|c| {
                    c.response_headers.insert("bad header".into(), "x".into());
                }),
                "gw.response_headers.bad header",
            ),
        ];
        for (break_it, key) in cases {
            let mut config = valid();
            config.validate("gw").unwrap();
            break_it(&mut config);
            let err = config.validate("gw").unwrap_err();
            assert_eq!(err.key(), key, "{err}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<GatewayConfig>(
            "[[routes]]\nname = \"a\"\nprefix = \"/a\"\nservise = \"x\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("servise"), "{err}");
    }
}
