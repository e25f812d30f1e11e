//! `casebook load amazon`: the Amazon workload ([`casebook_amazon::load`]) against
//! the API on :8100 — browsing, recommendations, carts, reservations and checkout
//! over Zipf users and SKUs — or, with `--prime-day`, the surge profile.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use casebook_amazon::load::{
    self as workload, Mix, Phase, WorkloadConfig, WorkloadProgress, prime_day_phases,
};

use crate::config::Config;

#[derive(Debug, clap::Args)]
pub struct AmazonArgs {
    /// The API (default: 127.0.0.1:<amazon.http_port>).
    #[arg(long, value_name = "HOST:PORT")]
    target: Option<String>,
    /// Requests per second (open loop); the prime-day surge is ten times this.
    #[arg(long, default_value_t = 200.0, value_name = "R")]
    rate: f64,
    /// How long to run (with `--prime-day`: each 1x phase; the surge lasts twice this).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// The surge profile: 1x, a scheduled pre-scale, 10x, then 1x again.
    #[arg(long)]
    prime_day: bool,
    /// With `--prime-day`: the service the autoscaler pre-scales ahead of the surge
    /// (a policy for it is set through the control plane's autoscaler API).
    #[arg(long, default_value = "amazon-cart", value_name = "SERVICE")]
    prescale_service: String,
    /// With `--prime-day`: the instances the pre-scale raises it to (0: no pre-scale).
    #[arg(long, default_value_t = 6, value_name = "N")]
    prescale_instances: u32,
    /// With `--prime-day`: how long before the surge the pre-scale starts.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    prescale_lead: Duration,
    /// The control plane, for the pre-scale (default: 127.0.0.1:<control.port>).
    #[arg(long, value_name = "HOST:PORT")]
    control: Option<String>,
    /// Distinct users (Zipf).
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    users: usize,
    /// Distinct SKUs (Zipf; the catalog's `sku-00000` …).
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    skus: usize,
    /// Zipf exponent of user and SKU popularity.
    #[arg(long, default_value_t = 1.0, value_name = "S")]
    zipf: f64,
    /// Stock set on every SKU first (0: keep the current stock).
    #[arg(long, default_value_t = 1_000_000, value_name = "N")]
    stock: u64,
    /// A success slower than this does not count as goodput.
    #[arg(long, default_value = "300ms", value_parser = humantime::parse_duration)]
    slo: Duration,
    /// Requests outstanding at most (a request due beyond that is dropped, counted).
    #[arg(long, default_value_t = 4_096, value_name = "N")]
    max_in_flight: usize,
    /// The operations' shares in percent, e.g. `recs=100` (recommendations only);
    /// the ones not named get 0, and the shares must sum to 100 (default: 40
    /// browse, 20 recs, 20 cart_add, 5 cart_remove, 10 reserve, 5 checkout).
    #[arg(long, value_name = "OP=PCT,...")]
    mix: Option<String>,
    /// Seed of the generators.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// No progress bar (it is also hidden when stderr is not a terminal).
    #[arg(long)]
    no_progress: bool,
}

pub async fn run(config: &Config, args: AmazonArgs) -> anyhow::Result<ExitCode> {
    let target = args
        .target
        .clone()
        .unwrap_or_else(|| format!("127.0.0.1:{}", config.amazon.http_port));
    let target = if target.starts_with("http://") {
        target
    } else {
        format!("http://{target}")
    };
    let phases = if args.prime_day {
        let phases = prime_day_phases(args.duration);
        print_schedule(&phases, args.rate);
        phases
    } else {
        vec![Phase {
            name: "steady".into(),
            multiplier: 1.0,
            duration: args.duration,
        }]
    };
    let mix = match args.mix.as_deref().map(parse_mix).transpose() {
        Ok(mix) => mix.unwrap_or_default(),
        Err(problem) => {
            eprintln!("casebook: --mix: {problem}");
            return Ok(ExitCode::from(2));
        }
    };
    let load = WorkloadConfig {
        target,
        mix,
        users: args.users,
        skus: args.skus,
        zipf_s: args.zipf,
        rate_per_sec: args.rate,
        phases,
        stock_per_sku: args.stock,
        max_in_flight: args.max_in_flight,
        slo: args.slo,
        seed: args.seed,
        ..WorkloadConfig::default()
    };
    if let Err(problem) = load.validate() {
        eprintln!("casebook: {problem}");
        return Ok(ExitCode::from(2));
    }
    let prescale = if args.prime_day && args.prescale_instances > 0 {
        let control = args
            .control
            .clone()
            .unwrap_or_else(|| format!("127.0.0.1:{}", config.control.port));
        let mut control_config = config.control.clone();
        casebook_control::access::resolve_token(&mut control_config, &config.data_dir, false)?;
        Some(schedule_prescale(&args, &load, &control, control_config.token.as_deref()).await)
    } else {
        None
    };
    let progress = Arc::new(WorkloadProgress::default());
    let watcher = tokio::spawn(super::watch(progress.clone(), args.no_progress));
    let report = workload::run(load, progress).await.map(|mut report| {
        report.prescale = prescale;
        report
    });
    watcher.abort();
    super::print_report(report, args.json, |r| r.table())
}

/// Sets a policy for the pre-scaled service and schedules its floor for the
/// surge window, through the control plane's autoscaler API. What happened is
/// reported, never fatal: the run measures the storefront either way.
async fn schedule_prescale(
    args: &AmazonArgs,
    load: &WorkloadConfig,
    control: &str,
    token: Option<&str>,
) -> String {
    use casebook_kit::http_client::{HttpClient, bearer};
    use http::{HeaderMap, HeaderValue, Method, header};
    let base = if control.starts_with("http://") {
        control.to_owned()
    } else {
        format!("http://{control}")
    };
    let stock_setup = Duration::from_secs(5); // a rough allowance; the lead absorbs the rest
    let before = load.phases.first().map_or(Duration::ZERO, |p| p.duration);
    let surge = load.phases.get(1).map_or(Duration::ZERO, |p| p.duration);
    let now = std::time::SystemTime::now();
    let at = now + stock_setup + before;
    let until = at + surge;
    let service = &args.prescale_service;
    let policy = serde_json::json!({
        "service": service,
        "min_instances": 1,
        "max_instances": args.prescale_instances,
        "capacity": 1000.0,
        "window": "5s",
        "cooldown_out": "5s",
        "cooldown_in": "20s",
    });
    let entry = serde_json::json!({
        "service": service,
        "at": humantime::format_rfc3339_seconds(at).to_string(),
        "until": humantime::format_rfc3339_seconds(until).to_string(),
        "instances": args.prescale_instances,
        "lead": humantime::format_duration(args.prescale_lead).to_string(),
    });
    let client = HttpClient::new(Duration::from_secs(5));
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(value) = token.and_then(bearer) {
        headers.insert(header::AUTHORIZATION, value);
    }
    for (path, body) in [("policies", &policy), ("schedule", &entry)] {
        let url = format!("{base}/api/autoscaler/{path}");
        match client
            .send(Method::POST, &url, headers.clone(), body.to_string().into())
            .await
        {
            Ok(r) if r.status.is_success() => {}
            Ok(r) => {
                return format!(
                    "not scheduled: {url} answered {}: {}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                );
            }
            Err(e) => return format!("not scheduled: {e}"),
        }
    }
    eprintln!(
        "pre-scale: {service} to {} instances from {} before the surge ({} → {})",
        args.prescale_instances,
        humantime::format_duration(args.prescale_lead),
        entry["at"],
        entry["until"]
    );
    format!(
        "{service} floor {} from {} ({} ahead) until {}; decisions on /api/autoscaler",
        args.prescale_instances, entry["at"], entry["lead"], entry["until"]
    )
}

/// `recs=100` or `browse=50,recs=50`: the named shares, the others 0 (the sum is
/// checked with the rest of the workload).
fn parse_mix(text: &str) -> Result<Mix, String> {
    let mut mix = Mix {
        browse: 0,
        recs: 0,
        cart_add: 0,
        cart_remove: 0,
        reserve: 0,
        checkout: 0,
    };
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (op, share) = part
            .split_once('=')
            .ok_or_else(|| format!("`{part}` is not OP=PERCENT"))?;
        let share: u32 = share
            .trim()
            .parse()
            .map_err(|_| format!("`{share}` is not a whole percentage"))?;
        let slot = match op.trim() {
            "browse" => &mut mix.browse,
            "recs" => &mut mix.recs,
            "cart_add" => &mut mix.cart_add,
            "cart_remove" => &mut mix.cart_remove,
            "reserve" => &mut mix.reserve,
            "checkout" => &mut mix.checkout,
            other => {
                return Err(format!(
                    "unknown operation `{other}` (browse, recs, cart_add, cart_remove, reserve, checkout)"
                ));
            }
        };
        *slot = share;
    }
    Ok(mix)
}

/// The prime-day schedule, printed before it runs.
fn print_schedule(phases: &[Phase], rate: f64) {
    eprintln!("prime day (time compressed):");
    let mut at = Duration::ZERO;
    for phase in phases {
        eprintln!(
            "  {:>6} → {:>6}  {:<7} {:>5}x = {:.0}/s",
            humantime::format_duration(at).to_string(),
            humantime::format_duration(at + phase.duration).to_string(),
            phase.name,
            phase.multiplier,
            rate * phase.multiplier
        );
        at += phase.duration;
    }
}
