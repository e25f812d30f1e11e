//! `casebook chaos …`: chaos experiments against a running platform, through the
//! control plane's `/api/chaos` (token from the data directory, as `load` does).
//! Shows the experiment's timeline on stderr while it runs, prints the verdict as a
//! table on stdout, and exits 1 when the steady-state hypothesis did not hold, 2
//! when the control plane refused the request.
//! Ctrl-C aborts the experiment (the control plane rolls it back) and waits for it.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use casebook_kit::http_client::{HttpClient, bearer};
use clap::{Args, Subcommand};
use http::{HeaderMap, HeaderValue, Method, header};
use serde_json::{Value, json};

use crate::config::Config;

/// `casebook chaos …`.
#[derive(Debug, Subcommand)]
pub enum ChaosCommand {
    /// Chaos Monkey as an experiment: kill random instances of a service, e.g.
    /// `monkey uber --every 10s --duration 2m --probe success:uber>=0.999`.
    Monkey {
        /// The service.
        service: String,
        /// Only instances of this region.
        #[arg(long)]
        region: Option<String>,
        /// Only instances of this zone.
        #[arg(long)]
        zone: Option<String>,
        /// Instances killed at each strike.
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// Strike again this often while the experiment runs (default: once).
        #[arg(long, value_parser = humantime::parse_duration)]
        every: Option<Duration>,
        /// Restart, at rollback, what nothing replaced.
        #[arg(long)]
        restore: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Chaos Gorilla: kill every instance of a zone (the control plane spared),
    /// measure recovery, restart what did not come back.
    Gorilla {
        /// The zone, e.g. `us-east-b`.
        zone: String,
        /// Leave the killed instances dead at rollback.
        #[arg(long)]
        no_restore: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Chaos Kong: mark a region OUT_OF_SERVICE in discovery, measure evacuation,
    /// mark it back.
    Kong {
        /// The region, e.g. `eu-west`.
        region: String,
        #[command(flatten)]
        common: Common,
    },
    /// Latency Monkey: latency, errors or bandwidth limits in front of a
    /// service's instances (through the control plane's fault proxy).
    Latency {
        /// The service.
        service: String,
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        #[arg(long, default_value_t = 0)]
        jitter_ms: u64,
        /// Fraction of connections failed, 0 to 1.
        #[arg(long, default_value_t = 0.0)]
        error_rate: f64,
        /// Failed connections are reset rather than delayed.
        #[arg(long)]
        reset: bool,
        #[arg(long)]
        bandwidth_kbps: Option<u64>,
        #[arg(long)]
        timeout_ms: Option<u64>,
        #[command(flatten)]
        common: Common,
    },
    /// Run an experiment from a JSON file (the `POST /api/chaos/experiments` body).
    Run {
        file: std::path::PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// List the experiments the control plane keeps, newest first.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Show one experiment's verdict (exit 1 if it did not hold).
    Show {
        id: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Abort a running experiment (it is rolled back).
    Abort {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// The Chaos Monkey daemon (`[chaos.monkey]`): `start [FILE.json]`, `stop`, `status`.
    Daemon {
        /// `start`, `stop` or `status`.
        action: String,
        /// For `start`: the `[chaos.monkey]` table as JSON (default: the configured one).
        file: Option<std::path::PathBuf>,
        #[command(flatten)]
        conn: Conn,
    },
}

/// Where the control plane is.
#[derive(Debug, Args)]
pub struct Conn {
    /// The control plane: its URL (the one `up` prints will do) or HOST:PORT
    /// (default: 127.0.0.1 and the configured port).
    #[arg(long = "control", alias = "url", value_name = "URL")]
    url: Option<String>,
}

/// What every experiment takes.
#[derive(Debug, Args)]
pub struct Common {
    #[command(flatten)]
    conn: Conn,
    /// How long the fault holds.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// How often the probes run while it holds.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    probe_interval: Duration,
    /// How long after rollback the "after" probes are taken.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    settle: Duration,
    /// A probe of the hypothesis (repeatable; none given: success ≥ 0.999 over every
    /// service): `success:SERVICE>=0.999`,
    /// `p99:SERVICE<=250` (ms; any `pNN`), `rate:SERVICE>=5` (requests/s), then
    /// optional `,abort=VALUE`, `,window=30s`, `,region=NAME`.
    #[arg(long = "probe", value_name = "PROBE")]
    probes: Vec<String>,
    /// Seeds the fault's random choices.
    #[arg(long)]
    seed: Option<u64>,
    /// Start it and print its id; do not wait.
    #[arg(long)]
    detach: bool,
    /// Print the final record as JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// No timeline on stderr while it runs.
    #[arg(long)]
    no_progress: bool,
}

/// The hypothesis of an experiment run without `--probe`.
fn default_probe() -> Value {
    json!({
        "name": "success ratio, every service",
        "kind": "success_ratio",
        "service": "*",
        "min": 0.999,
        "allow_no_data": true,
    })
}

/// Parses `success:uber>=0.999,abort=0.99,window=30s` into a probe's JSON.
pub fn parse_probe(text: &str) -> Result<Value, String> {
    let mut parts = text.split(',');
    let head = parts.next().unwrap_or_default();
    let (kind, rest) = head.split_once(':').ok_or_else(|| {
        format!("`{text}`: expected KIND:SERVICE>=VALUE, e.g. success:uber>=0.999")
    })?;
    let (service, op, value) = if let Some((s, v)) = rest.split_once(">=") {
        (s, "min", v)
    } else if let Some((s, v)) = rest.split_once("<=") {
        (s, "max", v)
    } else {
        return Err(format!("`{text}`: expected >= or <= and a value"));
    };
    let value: f64 = value
        .trim()
        .trim_end_matches("ms")
        .parse()
        .map_err(|_| format!("`{text}`: `{value}` is not a number"))?;
    let mut probe = serde_json::Map::new();
    match kind {
        "success" | "success_ratio" => {
            probe.insert("kind".into(), json!("success_ratio"));
        }
        "rate" | "request_rate" => {
            probe.insert("kind".into(), json!("request_rate"));
        }
        p if p.starts_with('p') && p[1..].parse::<f64>().is_ok() => {
            probe.insert("kind".into(), json!("latency"));
            let digits = &p[1..];
            // p999 means 99.9, p99 means 99, p50 means 50.
            let percentile = if digits.len() > 2 {
                format!("{}.{}", &digits[..2], &digits[2..])
                    .parse::<f64>()
                    .unwrap_or(99.0)
            } else {
                digits.parse::<f64>().unwrap_or(99.0)
            };
            probe.insert("percentile".into(), json!(percentile));
        }
        other => return Err(format!("`{other}` is not success, rate or pNN (p99, p999)")),
    }
    probe.insert("service".into(), json!(service.trim()));
    probe.insert(op.into(), json!(value));
    for option in parts {
        let (key, v) = option
            .split_once('=')
            .ok_or_else(|| format!("`{option}`: expected key=value"))?;
        match key {
            "abort" => {
                let limit: f64 = v
                    .parse()
                    .map_err(|_| format!("abort=`{v}` is not a number"))?;
                probe.insert(
                    if op == "min" {
                        "abort_min"
                    } else {
                        "abort_max"
                    }
                    .into(),
                    json!(limit),
                );
            }
            "window" => {
                probe.insert("window".into(), json!(v));
            }
            "region" => {
                probe.insert("region".into(), json!(v));
            }
            other => return Err(format!("`{other}` is not abort, window or region")),
        }
    }
    Ok(Value::Object(probe))
}

struct Api {
    base: String,
    client: HttpClient,
    headers: HeaderMap,
}

impl Api {
    fn new(config: &Config, conn: &Conn) -> anyhow::Result<Self> {
        let base = conn
            .url
            .clone()
            .unwrap_or_else(|| format!("http://127.0.0.1:{}", config.control.port));
        let base = if base.starts_with("http://") || base.starts_with("https://") {
            base
        } else {
            format!("http://{base}")
        };
        // The URL `up` prints carries `/?token=…`: only its origin is the base.
        let base = match base.find("/?") {
            Some(at) => base[..at].to_owned(),
            None => base.trim_end_matches('/').to_owned(),
        };
        let mut control = config.control.clone();
        casebook_control::access::resolve_token(&mut control, &config.data_dir, false)?;
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(value) = control.token.as_deref().and_then(bearer) {
            headers.insert(header::AUTHORIZATION, value);
        }
        Ok(Self {
            base,
            client: HttpClient::new(Duration::from_secs(30)),
            headers,
        })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let url = format!("{}{path}", self.base);
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let response = self
            .client
            .send(method, &url, self.headers.clone(), body.into())
            .await
            .with_context(|| format!("calling {url} (is `casebook up` running?)"))?;
        let value = serde_json::from_slice(&response.body).unwrap_or_else(|_| {
            Value::String(String::from_utf8_lossy(&response.body).into_owned())
        });
        Ok((response.status.as_u16(), value))
    }

    async fn ok(&self, method: Method, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let (status, value) = self.call(method, path, body).await?;
        if !(200..300).contains(&status) {
            let error = value
                .get("error")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| value.to_string());
            return Err(match value.get("field").and_then(Value::as_str) {
                Some(field) => Refused(format!("{status}: {field}: {error}")),
                None => Refused(format!("{status}: {error}")),
            }
            .into());
        }
        Ok(value)
    }
}

/// The control plane refused a request: exit 2, as `deploy` (1 says the hypothesis
/// did not hold).
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

pub async fn run(config: &Config, command: ChaosCommand) -> anyhow::Result<ExitCode> {
    match run_command(config, command).await {
        Err(err) if err.downcast_ref::<Refused>().is_some() => {
            eprintln!("casebook chaos: {err}");
            Ok(ExitCode::from(2))
        }
        other => other,
    }
}

async fn run_command(config: &Config, command: ChaosCommand) -> anyhow::Result<ExitCode> {
    let (fault, common) = match command {
        ChaosCommand::Monkey {
            service,
            region,
            zone,
            count,
            every,
            restore,
            common,
        } => {
            let mut fault =
                json!({"kind": "monkey", "service": service, "count": count, "restore": restore});
            if let Some(r) = region {
                fault["region"] = json!(r);
            }
            if let Some(z) = zone {
                fault["zone"] = json!(z);
            }
            if let Some(every) = every {
                fault["interval"] = json!(humantime::format_duration(every).to_string());
            }
            (fault, common)
        }
        ChaosCommand::Gorilla {
            zone,
            no_restore,
            common,
        } => (
            json!({"kind": "gorilla", "zone": zone, "restore": !no_restore}),
            common,
        ),
        ChaosCommand::Kong { region, common } => {
            (json!({"kind": "kong", "region": region}), common)
        }
        ChaosCommand::Latency {
            service,
            latency_ms,
            jitter_ms,
            error_rate,
            reset,
            bandwidth_kbps,
            timeout_ms,
            common,
        } => {
            let mut fault = json!({"kind": "latency", "service": service, "latency_ms": latency_ms,
                "jitter_ms": jitter_ms, "error_rate": error_rate, "reset": reset});
            if let Some(b) = bandwidth_kbps {
                fault["bandwidth_kbps"] = json!(b);
            }
            if let Some(t) = timeout_ms {
                fault["timeout_ms"] = json!(t);
            }
            (fault, common)
        }
        ChaosCommand::Run { file, common } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let spec: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", file.display()))?;
            let api = Api::new(config, &common.conn)?;
            return start_and_watch(&api, spec, &common).await;
        }
        ChaosCommand::List { conn } => {
            let api = Api::new(config, &conn)?;
            let list = api.ok(Method::GET, "/api/chaos/experiments", None).await?;
            say!(
                "{:<12} {:<10} {:<24} {:<10} {:<6} {}",
                "ID",
                "KIND",
                "TARGET",
                "STATUS",
                "HELD",
                "STARTED"
            );
            for e in list.as_array().into_iter().flatten() {
                say!(
                    "{:<12} {:<10} {:<24} {:<10} {:<6} {}",
                    text(&e["id"]),
                    text(&e["kind"]),
                    text(&e["target"]),
                    text(&e["status"]),
                    held_text(&e["held"]),
                    text(&e["started_at"])
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        ChaosCommand::Show { id, json, conn } => {
            let api = Api::new(config, &conn)?;
            let record = api
                .ok(Method::GET, &format!("/api/chaos/experiments/{id}"), None)
                .await?;
            return Ok(verdict(&record, json));
        }
        ChaosCommand::Abort { id, conn } => {
            let api = Api::new(config, &conn)?;
            let answer = api
                .ok(
                    Method::POST,
                    &format!("/api/chaos/experiments/{id}/abort"),
                    None,
                )
                .await?;
            say!("{answer}");
            return Ok(ExitCode::SUCCESS);
        }
        ChaosCommand::Daemon { action, file, conn } => {
            let api = Api::new(config, &conn)?;
            let answer = match action.as_str() {
                "start" => {
                    let body = match file {
                        Some(f) => Some(serde_json::from_str::<Value>(
                            &std::fs::read_to_string(&f)
                                .with_context(|| format!("reading {}", f.display()))?,
                        )?),
                        None => None,
                    };
                    api.ok(Method::POST, "/api/chaos/monkey/start", body.as_ref())
                        .await?
                }
                "stop" => api.ok(Method::POST, "/api/chaos/monkey/stop", None).await?,
                "status" => api.ok(Method::GET, "/api/chaos/monkey", None).await?,
                other => {
                    return Err(Refused(format!("`{other}` is not start, stop or status")).into());
                }
            };
            say!("{}", serde_json::to_string_pretty(&answer)?);
            return Ok(ExitCode::SUCCESS);
        }
    };
    let mut probes = Vec::new();
    for p in &common.probes {
        match parse_probe(p) {
            Ok(v) => probes.push(v),
            Err(e) => {
                eprintln!("casebook: --probe {e}");
                return Ok(ExitCode::from(2));
            }
        }
    }
    if probes.is_empty() {
        // Every experiment states a hypothesis: without one given, the platform's
        // success ratio stays at 99.9 % (a quiet platform, with no requests, holds).
        probes.push(default_probe());
        eprintln!("chaos: no --probe given: the hypothesis is success ≥ 0.999 over every service");
    }
    let mut spec = json!({
        "fault": fault,
        "probes": probes,
        "duration": humantime::format_duration(common.duration).to_string(),
        "probe_interval": humantime::format_duration(common.probe_interval).to_string(),
        "settle": humantime::format_duration(common.settle).to_string(),
    });
    if let Some(seed) = common.seed {
        spec["seed"] = json!(seed);
    }
    let api = Api::new(config, &common.conn)?;
    start_and_watch(&api, spec, &common).await
}

async fn start_and_watch(api: &Api, spec: Value, common: &Common) -> anyhow::Result<ExitCode> {
    let started = api
        .ok(Method::POST, "/api/chaos/experiments", Some(&spec))
        .await?;
    let id = text(&started["id"]);
    if common.detach {
        say!("{id}");
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("chaos: {id} started: {}", text(&started["title"]));
    let mut shown = 0usize;
    let mut aborted = false;
    let stop = super::signal::stop_requested();
    tokio::pin!(stop);
    loop {
        let record = api
            .ok(Method::GET, &format!("/api/chaos/experiments/{id}"), None)
            .await?;
        if !common.no_progress {
            let timeline = record["timeline"].as_array().cloned().unwrap_or_default();
            for entry in timeline.iter().skip(shown) {
                eprintln!(
                    "  {} [{}] {}",
                    text(&entry["at"]),
                    text(&entry["phase"]),
                    text(&entry["event"])
                );
            }
            shown = timeline.len();
        }
        if record["status"] != "running" {
            return Ok(verdict(&record, common.json));
        }
        tokio::select! {
            () = &mut stop, if !aborted => {
                aborted = true;
                eprintln!("chaos: aborting {id} (it is rolled back); Ctrl-C again leaves it to the control plane");
                api.ok(Method::POST, &format!("/api/chaos/experiments/{id}/abort"), None).await?;
            }
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn held_text(v: &Value) -> &'static str {
    match v.as_bool() {
        Some(true) => "yes",
        Some(false) => "no",
        None => "-",
    }
}

fn number(v: &Value) -> String {
    v.as_f64().map_or("no data".into(), |n| {
        if n.abs() >= 100.0 {
            format!("{n:.1}")
        } else {
            format!("{n:.4}")
        }
    })
}

/// Prints the verdict; the exit code says whether the hypothesis held.
fn verdict(record: &Value, json: bool) -> ExitCode {
    if json {
        say!(
            "{}",
            serde_json::to_string_pretty(record).unwrap_or_default()
        );
    } else {
        say!(
            "experiment {} — {} ({})",
            text(&record["id"]),
            text(&record["title"]),
            text(&record["status"])
        );
        if let Some(reason) = record["abort_reason"].as_str() {
            say!("aborted: {reason}");
        }
        if let Some(error) = record["error"].as_str() {
            say!("error: {error}");
        }
        let probes = record["probes"].as_array().cloned().unwrap_or_default();
        if !probes.is_empty() {
            let width = probes
                .iter()
                .map(|p| text(&p["name"]).chars().count())
                .max()
                .unwrap_or(5)
                .max(5);
            say!(
                "{:<width$}  {:<14} {:>10} {:>10} {:>10}  {}",
                "PROBE",
                "TARGET",
                "BEFORE",
                "DURING",
                "AFTER",
                "HELD"
            );
            for p in &probes {
                say!(
                    "{:<width$}  {:<14} {:>10} {:>10} {:>10}  {}",
                    text(&p["name"]),
                    text(&p["target"]),
                    number(&p["before"]),
                    number(&p["during"]),
                    number(&p["after"]),
                    held_text(&p["held"])
                );
            }
        }
        if !record["fault"].is_null() {
            say!("fault: {}", record["fault"]);
        }
        say!(
            "hypothesis: {}",
            if record["held"] == Value::Bool(true) {
                "held"
            } else {
                "did not hold"
            }
        );
    }
    if record["held"] == Value::Bool(true) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_hypothesis_is_a_valid_probe() {
        let mut probe: casebook_control::chaos::Probe =
            serde_json::from_value(default_probe()).unwrap();
        probe.validate("probes[0]").unwrap();
        assert_eq!(probe.min, Some(0.999));
        assert_eq!(probe.service.as_deref(), Some("*"), "every service");
    }

    #[test]
    fn probes_parse_from_their_short_form() {
        assert_eq!(
            parse_probe("success:uber>=0.999,abort=0.99,window=10s").unwrap(),
            json!({"kind": "success_ratio", "service": "uber", "min": 0.999, "abort_min": 0.99, "window": "10s"})
        );
        assert_eq!(
            parse_probe("p999:chat<=250ms").unwrap(),
            json!({"kind": "latency", "service": "chat", "percentile": 99.9, "max": 250.0})
        );
        assert_eq!(
            parse_probe("rate:uber>=5,region=eu-west").unwrap(),
            json!({"kind": "request_rate", "service": "uber", "min": 5.0, "region": "eu-west"})
        );
        assert!(parse_probe("uber>=1").is_err());
        assert!(parse_probe("success:uber=1").is_err());
        assert!(parse_probe("mean:uber>=1").is_err());
        assert!(parse_probe("success:uber>=1,foo=2").is_err());
    }
}
