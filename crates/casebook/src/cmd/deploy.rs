//! `casebook deploy`: canary deployments through the control plane's deployer
//! (`/api/deploys`), and their progress as it happens.
//!
//! `casebook deploy SERVICE --version V` starts one and follows it step by step
//! until it is promoted (exit 0) or rolled back (exit 1); `--no-wait` only starts
//! it. `--list` shows every deploy kept, `--status ID` one, `--rollback ID` rolls
//! one back. Bad input is refused before anything is sent (exit 2).

use std::process::ExitCode;
use std::time::Duration;

use casebook_kit::http_client::{HttpClient, bearer};
use casebook_kit::runtime::BadBuild;
use clap::Args as ClapArgs;
use http::{HeaderMap, HeaderValue, Method, header};
use serde_json::{Value, json};

use crate::config::Config;

/// How often a followed deploy is polled.
const POLL: Duration = Duration::from_millis(500);

/// `casebook deploy`'s arguments.
#[derive(Debug, Clone, ClapArgs)]
pub struct Args {
    /// The service to deploy, e.g. `netflix-recs`.
    #[arg(required_unless_present_any = ["list", "status", "rollback"])]
    pub service: Option<String>,
    /// The version to canary and, if it passes, roll out.
    #[arg(long, value_name = "V", required_unless_present_any = ["list", "status", "rollback"])]
    pub version: Option<String>,
    /// Declare the version a bad build: its instances add this latency and error
    /// rate to every response, e.g. `latency=150ms,errors=5%`.
    #[arg(long, value_name = "SPEC", value_parser = parse_bad_build)]
    pub bad_build: Option<BadBuild>,
    /// The traffic share canary and baseline take each, e.g. `10%` or `0.1`
    /// (default: `deploy.share`).
    #[arg(long, value_parser = parse_share)]
    pub share: Option<f64>,
    /// Warm-up before the analysis (default: `deploy.warmup`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub warmup: Option<Duration>,
    /// One analysis interval (default: `deploy.interval`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub interval: Option<Duration>,
    /// Analysis intervals (default: `deploy.intervals`).
    #[arg(long)]
    pub intervals: Option<u32>,
    /// Start the deploy and return; do not follow it.
    #[arg(long)]
    pub no_wait: bool,
    /// List the deploys in progress and finished.
    #[arg(long, conflicts_with_all = ["service", "status", "rollback"])]
    pub list: bool,
    /// Show one deploy (its steps and judgements) as JSON.
    #[arg(long, value_name = "ID", conflicts_with_all = ["service", "rollback"])]
    pub status: Option<String>,
    /// Roll a deploy back (a promoted one is reverted to the previous version).
    #[arg(long, value_name = "ID", conflicts_with = "service")]
    pub rollback: Option<String>,
    /// Why, for `--rollback` (recorded in the deploy's steps).
    #[arg(long, requires = "rollback")]
    pub reason: Option<String>,
    /// The control plane: HOST:PORT or its URL (default: 127.0.0.1:<control.port>).
    #[arg(long, value_name = "HOST:PORT")]
    pub control: Option<String>,
}

fn parse_bad_build(text: &str) -> Result<BadBuild, String> {
    text.parse()
}

fn parse_share(text: &str) -> Result<f64, String> {
    let value = match text.trim().strip_suffix('%') {
        Some(percent) => percent.trim().parse::<f64>().map(|p| p / 100.0),
        None => text.trim().parse::<f64>(),
    }
    .map_err(|_| format!("`{text}` is not a share like 10% or 0.1"))?;
    if value > 0.0 && value <= 0.5 {
        Ok(value)
    } else {
        Err(format!(
            "`{text}` is not in (0, 50%]: canary and baseline take it each"
        ))
    }
}

struct Control {
    base: String,
    client: HttpClient,
    headers: HeaderMap,
}

impl Control {
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let url = format!("{}{path}", self.base);
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let response = self
            .client
            .send(method, &url, self.headers.clone(), bytes.into())
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach the control plane at {}: {e}", self.base))?;
        let value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        Ok((response.status.as_u16(), value))
    }
}

/// `http://HOST:PORT` from HOST:PORT or a URL (the one `up` prints, token and all).
fn control_base(address: &str) -> String {
    let base = if address.starts_with("http://") || address.starts_with("https://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    };
    let origin_end = base
        .match_indices('/')
        .nth(2)
        .map_or(base.len(), |(at, _)| at);
    base[..origin_end].to_owned()
}

/// Runs the command.
pub async fn run(config: &Config, args: Args) -> anyhow::Result<ExitCode> {
    let address = args
        .control
        .clone()
        .unwrap_or_else(|| format!("127.0.0.1:{}", config.control.port));
    let mut control_config = config.control.clone();
    casebook_control::access::resolve_token(&mut control_config, &config.data_dir, false)?;
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(value) = control_config.token.as_deref().and_then(bearer) {
        headers.insert(header::AUTHORIZATION, value);
    }
    let control = Control {
        base: control_base(&address),
        client: HttpClient::new(Duration::from_secs(10)),
        headers,
    };
    if args.list {
        let (status, body) = control.call(Method::GET, "/api/deploys", None).await?;
        return Ok(answer(status, &body, |body| {
            for deploy in body["active"].as_array().into_iter().flatten() {
                say!("{}", line(deploy));
            }
            for deploy in body["finished"].as_array().into_iter().flatten() {
                say!("{}", line(deploy));
            }
        }));
    }
    if let Some(id) = &args.status {
        let (status, body) = control
            .call(Method::GET, &format!("/api/deploys/{id}"), None)
            .await?;
        return Ok(answer(status, &body, |body| {
            say!("{}", serde_json::to_string_pretty(body).unwrap_or_default());
        }));
    }
    if let Some(id) = &args.rollback {
        let body = args.reason.as_ref().map(|r| json!({ "reason": r }));
        let path = format!("/api/deploys/{id}/rollback");
        let (status, body) = control.call(Method::POST, &path, body).await?;
        return Ok(answer(status, &body, |body| say!("{}", line(body))));
    }
    let (Some(service), Some(version)) = (&args.service, &args.version) else {
        anyhow::bail!("SERVICE and --version are needed");
    };
    let mut request = json!({ "service": service, "version": version });
    if let Some(build) = args.bad_build {
        request["bad_build"] = serde_json::to_value(build)?;
    }
    if let Some(share) = args.share {
        request["share"] = json!(share);
    }
    if let Some(warmup) = args.warmup {
        request["warmup"] = json!(humantime::format_duration(warmup).to_string());
    }
    if let Some(interval) = args.interval {
        request["interval"] = json!(humantime::format_duration(interval).to_string());
    }
    if let Some(intervals) = args.intervals {
        request["intervals"] = json!(intervals);
    }
    let (status, body) = control
        .call(Method::POST, "/api/deploys", Some(request))
        .await?;
    if status != 202 {
        return Ok(answer(status, &body, |_| {}));
    }
    let id = body["id"].as_str().unwrap_or_default().to_owned();
    say!(
        "deploy {id}: {service} {} → {version}",
        body["previous_version"].as_str().unwrap_or("?")
    );
    if args.no_wait {
        return Ok(ExitCode::SUCCESS);
    }
    follow(&control, &id).await
}

/// Prints each new step until the deploy is done; exit 0 when promoted.
async fn follow(control: &Control, id: &str) -> anyhow::Result<ExitCode> {
    // The deployer keeps at most a bounded number of steps per deploy, so this set
    // of printed ones is bounded too.
    let mut printed = std::collections::HashSet::new();
    loop {
        let (status, body) = control
            .call(Method::GET, &format!("/api/deploys/{id}"), None)
            .await?;
        if status != 200 {
            return Ok(answer(status, &body, |_| {}));
        }
        for step in body["steps"].as_array().into_iter().flatten() {
            if !printed.insert(step.to_string()) {
                continue;
            }
            let detail = step["detail"].as_str().unwrap_or_default();
            say!(
                "{}  {:<16} {detail}",
                step["at"].as_str().unwrap_or_default(),
                step["step"].as_str().unwrap_or_default()
            );
        }
        if body["phase"] == "done" {
            let outcome = body["outcome"].as_str().unwrap_or("?");
            say!("deploy {id}: {outcome}");
            return Ok(if outcome == "promoted" {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// One line per deploy: id, service, versions, phase or outcome, last score.
fn line(deploy: &Value) -> String {
    let phase = match deploy["phase"].as_str() {
        Some("done") => deploy["outcome"].as_str().unwrap_or("done").to_owned(),
        Some(phase) => phase.to_owned(),
        None => "?".into(),
    };
    let score = deploy["judgements"]
        .as_array()
        .and_then(|j| j.last())
        .and_then(|j| j["score"].as_f64())
        .map(|s| format!("score {s:.2}"))
        .unwrap_or_default();
    format!(
        "{:<24} {:<20} {} → {}  {phase}  {score}",
        deploy["id"].as_str().unwrap_or("?"),
        deploy["service"].as_str().unwrap_or("?"),
        deploy["previous_version"].as_str().unwrap_or("?"),
        deploy["version"].as_str().unwrap_or("?"),
    )
}

/// Prints the body on success, the API's error otherwise (exit 2 for a refusal).
fn answer(status: u16, body: &Value, ok: impl FnOnce(&Value)) -> ExitCode {
    if (200..300).contains(&status) {
        ok(body);
        return ExitCode::SUCCESS;
    }
    let error = body["error"].as_str().unwrap_or("(no error message)");
    let field = body["field"]
        .as_str()
        .map(|f| format!(" ({f})"))
        .unwrap_or_default();
    eprintln!("casebook deploy: {status}: {error}{field}");
    ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_control_plane_is_named_by_address_or_url() {
        assert_eq!(control_base("127.0.0.1:7700"), "http://127.0.0.1:7700");
        assert_eq!(
            control_base("http://127.0.0.1:7700/?token=abc"),
            "http://127.0.0.1:7700"
        );
        assert_eq!(control_base("http://h:1"), "http://h:1");
    }

    #[test]
    fn shares_read_as_percentages_or_fractions() {
        assert_eq!(parse_share("10%"), Ok(0.1));
        assert_eq!(parse_share("0.25"), Ok(0.25));
        assert!(parse_share("80%").unwrap_err().contains("50%"));
        assert!(parse_share("lots").is_err());
    }
}
