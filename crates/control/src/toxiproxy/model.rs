//! The JSON of Toxiproxy 2.x's API: what requests parse into, what answers say.
//!
//! Parsing is by hand over `serde_json::Value` so every refusal names the field at
//! fault (`bad request body: attributes.latency: …`). Compared with Toxiproxy (Go's
//! `encoding/json`, which ignores what it does not know): unknown top-level fields
//! are ignored as there, but unknown *attributes* of a toxic are refused (a typo
//! such as `latancy` would otherwise silently inject nothing), attribute values must
//! be non-negative integers within [`MAX_ATTRIBUTE_MS`] for durations, and
//! `toxicity` must lie in `[0, 1]`.

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::error::ToxiError;

/// The longest name of a proxy or toxic, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// The largest duration attribute, in milliseconds (one day): longer is a typo.
pub const MAX_ATTRIBUTE_MS: u64 = 86_400_000;
/// The largest size attribute (bytes, KB/s): 1 TiB.
pub const MAX_ATTRIBUTE_SIZE: u64 = 1 << 40;
/// The listen address of a proxy created without one (Toxiproxy binds every
/// interface on a free port; casebook stays on loopback).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:0";

/// Which way a toxic acts: `upstream` is client → server, `downstream` server →
/// client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stream {
    Upstream,
    Downstream,
}

impl Stream {
    /// Both, in the order Toxiproxy lists toxics (upstream first).
    pub const BOTH: [Stream; 2] = [Stream::Upstream, Stream::Downstream];

    /// The JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Upstream => "upstream",
            Stream::Downstream => "downstream",
        }
    }

    /// The index of the stream's chain.
    pub fn index(self) -> usize {
        match self {
            Stream::Upstream => 0,
            Stream::Downstream => 1,
        }
    }

    fn parse(text: &str) -> Result<Self, ToxiError> {
        match text {
            "upstream" => Ok(Stream::Upstream),
            "downstream" => Ok(Stream::Downstream),
            other => Err(ToxiError::invalid_stream(other)),
        }
    }
}

/// A toxic's type and attributes (Toxiproxy's units: milliseconds, except the
/// slicer's `delay` in microseconds; `rate` in KB/s, 1 KB = 1000 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToxicKind {
    /// Delay each chunk by `latency` ± `jitter` ms.
    Latency { latency: u64, jitter: u64 },
    /// At most `rate` KB/s (0: unlimited).
    Bandwidth { rate: u64 },
    /// Delay the close by `delay` ms.
    SlowClose { delay: u64 },
    /// Drop all data; close after `timeout` ms (0: never).
    Timeout { timeout: u64 },
    /// On data, wait `timeout` ms, then reset the connection (RST).
    ResetPeer { timeout: u64 },
    /// Cut chunks into pieces of `average_size` ± `size_variation` bytes, `delay` µs
    /// apart.
    Slicer {
        average_size: u64,
        size_variation: u64,
        delay: u64,
    },
    /// Close after `bytes` bytes.
    LimitData { bytes: u64 },
}

/// The attribute names of each toxic type; `None` for an unknown type.
fn attribute_names(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "latency" => &["latency", "jitter"],
        "bandwidth" => &["rate"],
        "slow_close" => &["delay"],
        "timeout" => &["timeout"],
        "reset_peer" => &["timeout"],
        "slicer" => &["average_size", "size_variation", "delay"],
        "limit_data" => &["bytes"],
        _ => return None,
    })
}

impl ToxicKind {
    /// The JSON `type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            ToxicKind::Latency { .. } => "latency",
            ToxicKind::Bandwidth { .. } => "bandwidth",
            ToxicKind::SlowClose { .. } => "slow_close",
            ToxicKind::Timeout { .. } => "timeout",
            ToxicKind::ResetPeer { .. } => "reset_peer",
            ToxicKind::Slicer { .. } => "slicer",
            ToxicKind::LimitData { .. } => "limit_data",
        }
    }

    /// The JSON `attributes`, with every attribute (Toxiproxy's answer shape).
    pub fn attributes(&self) -> Value {
        match *self {
            ToxicKind::Latency { latency, jitter } => json!({"latency": latency, "jitter": jitter}),
            ToxicKind::Bandwidth { rate } => json!({"rate": rate}),
            ToxicKind::SlowClose { delay } => json!({"delay": delay}),
            ToxicKind::Timeout { timeout } | ToxicKind::ResetPeer { timeout } => {
                json!({"timeout": timeout})
            }
            ToxicKind::Slicer {
                average_size,
                size_variation,
                delay,
            } => {
                json!({"average_size": average_size, "size_variation": size_variation, "delay": delay})
            }
            ToxicKind::LimitData { bytes } => json!({"bytes": bytes}),
        }
    }

    /// A toxic of type `kind` from `attributes` laid over `base` (missing
    /// attributes keep the base's value, 0 when there is none — Go's zero value).
    pub fn from_attributes(
        kind: &str,
        attributes: Option<&Value>,
        base: Option<&ToxicKind>,
    ) -> Result<Self, ToxiError> {
        let names = attribute_names(kind).ok_or_else(|| ToxiError::invalid_type(kind))?;
        let mut values: Map<String, Value> = match base {
            Some(base) => match base.attributes() {
                Value::Object(map) => map,
                _ => Map::new(),
            },
            None => Map::new(),
        };
        match attributes {
            None | Some(Value::Null) => {}
            Some(Value::Object(given)) => {
                for (key, value) in given {
                    if !names.contains(&key.as_str()) {
                        return Err(ToxiError::bad_body(format!(
                            "attributes.{key}: unknown attribute of a {kind} toxic (expected {})",
                            names.join(", ")
                        )));
                    }
                    values.insert(key.clone(), value.clone());
                }
            }
            Some(other) => {
                return Err(ToxiError::bad_body(format!(
                    "attributes: expected an object, got {}",
                    type_of(other)
                )));
            }
        }
        let get = |name: &str, bound: u64| -> Result<u64, ToxiError> {
            match values.get(name) {
                None | Some(Value::Null) => Ok(0),
                Some(value) => {
                    let number = value.as_u64().ok_or_else(|| {
                        ToxiError::bad_body(format!(
                            "attributes.{name}: expected a non-negative integer, got {value}"
                        ))
                    })?;
                    if number > bound {
                        return Err(ToxiError::bad_body(format!(
                            "attributes.{name}: {number} is above the bound {bound}"
                        )));
                    }
                    Ok(number)
                }
            }
        };
        let ms = MAX_ATTRIBUTE_MS;
        let size = MAX_ATTRIBUTE_SIZE;
        let toxic = match kind {
            "latency" => ToxicKind::Latency {
                latency: get("latency", ms)?,
                jitter: get("jitter", ms)?,
            },
            "bandwidth" => ToxicKind::Bandwidth {
                rate: get("rate", size)?,
            },
            "slow_close" => ToxicKind::SlowClose {
                delay: get("delay", ms)?,
            },
            "timeout" => ToxicKind::Timeout {
                timeout: get("timeout", ms)?,
            },
            "reset_peer" => ToxicKind::ResetPeer {
                timeout: get("timeout", ms)?,
            },
            "slicer" => {
                let average_size = get("average_size", size)?;
                let size_variation = get("size_variation", size)?;
                // Toxiproxy recurses forever on an average of 0 and cuts nonsense
                // when the variation reaches the average.
                if average_size == 0 {
                    return Err(ToxiError::bad_body(
                        "attributes.average_size: must be at least 1",
                    ));
                }
                if size_variation >= average_size {
                    return Err(ToxiError::bad_body(format!(
                        "attributes.size_variation: must be below average_size ({average_size})"
                    )));
                }
                ToxicKind::Slicer {
                    average_size,
                    size_variation,
                    delay: get("delay", ms.saturating_mul(1000))?,
                }
            }
            "limit_data" => ToxicKind::LimitData {
                bytes: get("bytes", size)?,
            },
            other => return Err(ToxiError::invalid_type(other)),
        };
        Ok(toxic)
    }
}

/// A toxic as the API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToxicSpec {
    pub name: String,
    pub stream: Stream,
    /// The probability that the toxic acts on a given connection, in `[0, 1]`.
    pub toxicity: f32,
    pub kind: ToxicKind,
}

/// A toxic's JSON, in Toxiproxy's field order.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ToxicJson {
    pub attributes: Value,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub stream: &'static str,
    pub toxicity: f32,
}

impl ToxicSpec {
    /// The JSON answer.
    pub fn to_json(&self) -> ToxicJson {
        ToxicJson {
            attributes: self.kind.attributes(),
            name: self.name.clone(),
            kind: self.kind.type_name(),
            stream: self.stream.as_str(),
            toxicity: self.toxicity,
        }
    }
}

/// A proxy as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProxyJson {
    pub name: String,
    pub listen: String,
    pub upstream: String,
    pub enabled: bool,
    pub toxics: Vec<ToxicJson>,
}

/// `POST /proxies` and each element of `POST /populate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySpec {
    pub name: String,
    pub listen: String,
    pub upstream: String,
    pub enabled: bool,
}

/// `POST /proxies/{proxy}`: every field optional, missing ones unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyUpdate {
    pub listen: Option<String>,
    pub upstream: Option<String>,
    pub enabled: Option<bool>,
}

/// `POST /proxies/{proxy}/toxics/{toxic}`: attributes laid over the current ones,
/// and the toxicity if given (type, stream and name cannot change, as in Toxiproxy).
#[derive(Debug, Clone, PartialEq)]
pub struct ToxicUpdate {
    pub attributes: Option<Value>,
    pub toxicity: Option<f32>,
}

fn type_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn parse_json(body: &[u8]) -> Result<Value, ToxiError> {
    serde_json::from_slice(body).map_err(ToxiError::bad_body)
}

fn object<'a>(value: &'a Value, what: &str) -> Result<&'a Map<String, Value>, ToxiError> {
    value.as_object().ok_or_else(|| {
        ToxiError::bad_body(format!("{what}expected an object, got {}", type_of(value)))
    })
}

fn string_field(
    map: &Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<Option<String>, ToxiError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(other) => Err(ToxiError::bad_body(format!(
            "{key}{at}: expected a string, got {}",
            type_of(other)
        ))),
    }
}

fn bool_field(map: &Map<String, Value>, key: &str, at: &str) -> Result<Option<bool>, ToxiError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(value)) => Ok(Some(*value)),
        Some(other) => Err(ToxiError::bad_body(format!(
            "{key}{at}: expected true or false, got {}",
            type_of(other)
        ))),
    }
}

/// A name a URL path can address: 1–128 bytes, no `/`, no control characters.
pub fn check_name(name: &str, what: &str) -> Result<(), ToxiError> {
    if name.len() > MAX_NAME_LEN {
        return Err(ToxiError::bad_body(format!(
            "{what}: longer than {MAX_NAME_LEN} bytes"
        )));
    }
    if name.chars().any(|c| c == '/' || c.is_control()) {
        return Err(ToxiError::bad_body(format!(
            "{what}: `{}` holds `/` or a control character",
            name.escape_debug()
        )));
    }
    Ok(())
}

fn proxy_spec(value: &Value, at: &str) -> Result<ProxySpec, ToxiError> {
    let map = object(
        value,
        &if at.is_empty() {
            String::new()
        } else {
            format!("{}: ", &at[1..])
        },
    )?;
    let name = string_field(map, "name", at)?.unwrap_or_default();
    if name.is_empty() {
        return Err(ToxiError::missing(format!("name{at}")));
    }
    check_name(&name, "name")?;
    let upstream = string_field(map, "upstream", at)?.unwrap_or_default();
    if upstream.is_empty() {
        return Err(ToxiError::missing(format!("upstream{at}")));
    }
    let listen = string_field(map, "listen", at)?
        .filter(|listen| !listen.is_empty())
        .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let enabled = bool_field(map, "enabled", at)?.unwrap_or(true);
    Ok(ProxySpec {
        name,
        listen,
        upstream,
        enabled,
    })
}

/// `POST /proxies`.
pub fn parse_proxy(body: &[u8]) -> Result<ProxySpec, ToxiError> {
    proxy_spec(&parse_json(body)?, "")
}

/// `POST /populate`: a JSON array of proxies (Toxiproxy names the one at fault
/// `at proxy N`, counting from 1).
pub fn parse_populate(body: &[u8], max: usize) -> Result<Vec<ProxySpec>, ToxiError> {
    let value = parse_json(body)?;
    let Value::Array(items) = value else {
        return Err(ToxiError::bad_body(format!(
            "expected an array of proxies, got {}",
            type_of(&value)
        )));
    };
    if items.len() > max {
        return Err(ToxiError::bad_body(format!(
            "{} proxies, above the bound of {max}",
            items.len()
        )));
    }
    let specs = items
        .iter()
        .enumerate()
        .map(|(i, item)| proxy_spec(item, &format!(" at proxy {}", i + 1)))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, spec) in specs.iter().enumerate() {
        if specs[..i].iter().any(|earlier| earlier.name == spec.name) {
            return Err(ToxiError::bad_body(format!(
                "name at proxy {}: `{}` is given twice",
                i + 1,
                spec.name
            )));
        }
    }
    Ok(specs)
}

/// `POST /proxies/{proxy}`.
pub fn parse_proxy_update(body: &[u8]) -> Result<ProxyUpdate, ToxiError> {
    let value = parse_json(body)?;
    let map = object(&value, "")?;
    Ok(ProxyUpdate {
        listen: string_field(map, "listen", "")?.filter(|listen| !listen.is_empty()),
        upstream: string_field(map, "upstream", "")?.filter(|upstream| !upstream.is_empty()),
        enabled: bool_field(map, "enabled", "")?,
    })
}

fn toxicity(map: &Map<String, Value>) -> Result<Option<f32>, ToxiError> {
    match map.get("toxicity") {
        None | Some(Value::Null) => Ok(None),
        Some(value) => {
            let number = value.as_f64().ok_or_else(|| {
                ToxiError::bad_body(format!(
                    "toxicity: expected a number in [0, 1], got {}",
                    type_of(value)
                ))
            })?;
            if !(0.0..=1.0).contains(&number) {
                return Err(ToxiError::bad_body(format!(
                    "toxicity: {number} is not in [0, 1]"
                )));
            }
            Ok(Some(number as f32))
        }
    }
}

/// `POST /proxies/{proxy}/toxics`: `type` required; `stream` defaults to
/// `downstream`, `toxicity` to 1, `name` to `{type}_{stream}` (as Toxiproxy).
pub fn parse_toxic(body: &[u8]) -> Result<ToxicSpec, ToxiError> {
    let value = parse_json(body)?;
    let map = object(&value, "")?;
    let stream = match string_field(map, "stream", "")? {
        None => Stream::Downstream,
        Some(text) if text.is_empty() => Stream::Downstream,
        Some(text) => Stream::parse(&text)?,
    };
    let kind_name = string_field(map, "type", "")?.unwrap_or_default();
    if kind_name.is_empty() {
        return Err(ToxiError::missing("type"));
    }
    let kind = ToxicKind::from_attributes(&kind_name, map.get("attributes"), None)?;
    let name = string_field(map, "name", "")?
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| format!("{kind_name}_{}", stream.as_str()));
    check_name(&name, "name")?;
    Ok(ToxicSpec {
        name,
        stream,
        toxicity: toxicity(map)?.unwrap_or(1.0),
        kind,
    })
}

/// `POST /proxies/{proxy}/toxics/{toxic}`.
pub fn parse_toxic_update(body: &[u8]) -> Result<ToxicUpdate, ToxiError> {
    let value = parse_json(body)?;
    let map = object(&value, "")?;
    Ok(ToxicUpdate {
        attributes: map.get("attributes").cloned(),
        toxicity: toxicity(map)?,
    })
}

impl ToxicSpec {
    /// This toxic with `update` applied; the attributes are checked as at creation.
    pub fn updated(&self, update: &ToxicUpdate) -> Result<ToxicSpec, ToxiError> {
        let kind = ToxicKind::from_attributes(
            self.kind.type_name(),
            update.attributes.as_ref(),
            Some(&self.kind),
        )?;
        Ok(ToxicSpec {
            kind,
            toxicity: update.toxicity.unwrap_or(self.toxicity),
            ..self.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(result: Result<impl std::fmt::Debug, ToxiError>) -> (u16, String) {
        let err = result.unwrap_err();
        (err.status, err.error)
    }

    #[test]
    fn a_proxy_takes_toxiproxys_defaults() {
        let spec = parse_proxy(br#"{"name":"redis","upstream":"127.0.0.1:6380"}"#).unwrap();
        assert_eq!(spec.listen, DEFAULT_LISTEN);
        assert!(spec.enabled);
        let spec = parse_proxy(
            br#"{"name":"r","upstream":"u:1","listen":"localhost:26379","enabled":false,"extra":1}"#,
        )
        .unwrap();
        assert_eq!(spec.listen, "localhost:26379");
        assert!(!spec.enabled);
    }

    #[test]
    fn proxy_refusals_say_what_toxiproxy_says_and_name_the_field() {
        assert_eq!(
            error(parse_proxy(br#"{"upstream":"u:1"}"#)),
            (400, "missing required field: name".into())
        );
        assert_eq!(
            error(parse_proxy(br#"{"name":"a"}"#)),
            (400, "missing required field: upstream".into())
        );
        let (status, message) = error(parse_proxy(b"{nope"));
        assert_eq!(status, 400);
        assert!(message.starts_with("bad request body: "), "{message}");
        let (_, message) = error(parse_proxy(
            br#"{"name":"a","upstream":"u:1","enabled":"yes"}"#,
        ));
        assert!(
            message.contains("enabled: expected true or false"),
            "{message}"
        );
        let (_, message) = error(parse_proxy(br#"{"name":"a/b","upstream":"u:1"}"#));
        assert!(message.contains("name"), "{message}");
        let (_, message) = error(parse_populate(
            br#"[{"name":"a","upstream":"u:1"},{"name":"b"}]"#,
            10,
        ));
        assert_eq!(message, "missing required field: upstream at proxy 2");
        let (_, message) = error(parse_populate(
            br#"[{"name":"a","upstream":"u:1"},{"name":"a","upstream":"u:2"}]"#,
            10,
        ));
        assert!(message.contains("given twice"), "{message}");
        let (_, message) = error(parse_populate(br#"{"name":"a"}"#, 10));
        assert!(message.contains("expected an array"), "{message}");
    }

    #[test]
    fn a_toxic_defaults_to_downstream_full_toxicity_and_type_stream_name() {
        let toxic = parse_toxic(br#"{"type":"latency","attributes":{"latency":100}}"#).unwrap();
        assert_eq!(toxic.name, "latency_downstream");
        assert_eq!(toxic.stream, Stream::Downstream);
        assert_eq!(toxic.toxicity, 1.0);
        assert_eq!(
            toxic.kind,
            ToxicKind::Latency {
                latency: 100,
                jitter: 0
            }
        );
        let json = serde_json::to_value(toxic.to_json()).unwrap();
        assert_eq!(
            json,
            json!({"attributes":{"latency":100,"jitter":0},"name":"latency_downstream",
                   "type":"latency","stream":"downstream","toxicity":1.0})
        );
    }

    #[test]
    fn toxic_refusals_are_precise() {
        let (status, message) = error(parse_toxic(br#"{"type":"lag"}"#));
        assert_eq!(status, 400);
        assert!(message.starts_with("invalid toxic type"), "{message}");
        let (_, message) = error(parse_toxic(br#"{"type":"latency","stream":"sideways"}"#));
        assert!(message.starts_with("stream was invalid"), "{message}");
        let (_, message) = error(parse_toxic(
            br#"{"type":"latency","attributes":{"latancy":1}}"#,
        ));
        assert!(
            message.contains("attributes.latancy: unknown attribute"),
            "{message}"
        );
        let (_, message) = error(parse_toxic(
            br#"{"type":"latency","attributes":{"latency":-5}}"#,
        ));
        assert!(
            message.contains("attributes.latency: expected a non-negative integer"),
            "{message}"
        );
        let (_, message) = error(parse_toxic(
            br#"{"type":"timeout","attributes":{"timeout":1.5}}"#,
        ));
        assert!(message.contains("attributes.timeout"), "{message}");
        let (_, message) = error(parse_toxic(br#"{"type":"timeout","toxicity":1.5}"#));
        assert!(
            message.contains("toxicity: 1.5 is not in [0, 1]"),
            "{message}"
        );
        let (_, message) = error(parse_toxic(
            br#"{"type":"slicer","attributes":{"average_size":0}}"#,
        ));
        assert!(message.contains("average_size"), "{message}");
        let (_, message) = error(parse_toxic(
            br#"{"type":"slicer","attributes":{"average_size":10,"size_variation":10}}"#,
        ));
        assert!(message.contains("size_variation"), "{message}");
        let (_, message) = error(parse_toxic(br#"{"type":"latency","attributes":[1]}"#));
        assert!(
            message.contains("attributes: expected an object"),
            "{message}"
        );
        assert_eq!(
            error(parse_toxic(br#"{}"#)).1,
            "missing required field: type"
        );
    }

    #[test]
    fn an_update_lays_attributes_over_the_current_ones() {
        let toxic =
            parse_toxic(br#"{"type":"latency","attributes":{"latency":100,"jitter":5}}"#).unwrap();
        let update = parse_toxic_update(br#"{"attributes":{"jitter":7},"toxicity":0.5}"#).unwrap();
        let updated = toxic.updated(&update).unwrap();
        assert_eq!(
            updated.kind,
            ToxicKind::Latency {
                latency: 100,
                jitter: 7
            }
        );
        assert_eq!(updated.toxicity, 0.5);
        assert_eq!(updated.name, toxic.name);
        let bad = parse_toxic_update(br#"{"attributes":{"rate":1}}"#).unwrap();
        assert!(toxic.updated(&bad).is_err());
    }
}
