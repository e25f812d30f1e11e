//! What the gateway adds to a request: an upstream and the gateway in one process
//! (both as platform instances behind the kit's `serve_http`), driven open loop
//! with the kit's load generator at the same rate directly and through the gateway,
//! in alternating phases of one run.
//!
//! The route is the full path a client's request takes: the default filter chain
//! (trace, body limit, JWT auth, rate limit, priority; response headers, metrics),
//! discovery resolution (cached), and the resilience stack (retry, breaker,
//! timeout, bulkhead). One bearer token; the rate limit is set out of the way.
//!
//! ```text
//! cargo run --release -p casebook-edge --example gateway_overhead -- [RATE] [SECONDS] [ROUNDS]
//! ```
//! (defaults: 10000 requests/s, 5 s per phase, 2 rounds of direct + gateway,
//! after a 2 s warm-up of each).
//!
//! Two latencies per phase: from the **intended** send time (the load generator's,
//! counting its own timer lag, as a client would feel it), and the **service time**
//! from the actual send to the full answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use casebook_edge::gateway::{GatewayConfig, GatewayService, JwtKey, RouteConfig};
use casebook_kit::clock::SystemClock;
use casebook_kit::discovery::DiscoveryError;
use casebook_kit::http_client::HttpClient;
use casebook_kit::loadgen::{LoadPlan, LoadReport, Verdict, run};
use casebook_kit::resilience::rate_limit::RateLimitConfig;
use casebook_kit::resolve::{InstanceSource, Resolver};
use casebook_kit::runtime::{
    BoxFuture, InstanceContext, InstanceSpec, Platform, ServiceFactory, StartError, serve_http,
};
use casebook_kit::topology::{Placement, Topology};
use hdrhistogram::Histogram;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use parking_lot::Mutex;

const UPSTREAM: &str = "bench-upstream";

/// A small JSON answer, as a catalog lookup might give.
#[derive(Debug)]
struct Upstream;

impl ServiceFactory for Upstream {
    fn name(&self) -> &str {
        UPSTREAM
    }
    fn start<'a>(
        &'a self,
        ctx: &'a InstanceContext,
    ) -> BoxFuture<'a, Result<SocketAddr, StartError>> {
        Box::pin(async move {
            let listener = ctx.bind(ctx.listen_addr()).await?;
            let address = listener.local_addr().map_err(anyhow::Error::from)?;
            let body = Bytes::from(format!("{{\"id\":7,\"title\":\"{}\"}}", "x".repeat(80)));
            let app = Router::new().route(
                "/titles/7",
                get(move || {
                    let body = body.clone();
                    async move { ([("content-type", "application/json")], body) }
                }),
            );
            serve_http(ctx, listener, app);
            Ok(address)
        })
    }
}

/// Discovery with one instance.
#[derive(Debug)]
struct One(SocketAddr, Placement);

impl InstanceSource for One {
    fn nearest(
        &self,
        _: &str,
        _: &Placement,
    ) -> BoxFuture<'_, Result<Vec<(SocketAddr, Placement)>, DiscoveryError>> {
        let found = vec![(self.0, self.1.clone())];
        Box::pin(async move { Ok(found) })
    }
}

struct Phase {
    name: &'static str,
    report: LoadReport,
    service_us: Histogram<u64>,
    /// CPU time the whole process spent per request of the phase (generator,
    /// gateway and upstream alike), in µs: what a shared machine cannot blur.
    cpu_us_per_request: Option<f64>,
}

/// The process's CPU time so far (user + system), from `/proc/self/stat`.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // The kernel's USER_HZ is 100 on every Linux this runs on.
    Some(Duration::from_millis(ticks * 10))
}

async fn phase(
    name: &'static str,
    url: &str,
    auth: &HeaderMap,
    client: &HttpClient,
    rate: f64,
    secs: u64,
) -> Phase {
    let plan = LoadPlan {
        max_in_flight: 2_000,
        ..LoadPlan::new(rate, Duration::from_secs(secs))
    };
    let service = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap(),
    ));
    let cpu_before = cpu_time();
    let report = run(&plan, |_| {
        let (client, url, headers, service) = (
            client.clone(),
            url.to_owned(),
            auth.clone(),
            service.clone(),
        );
        (name, async move {
            let sent = Instant::now();
            let result = client.send(Method::GET, &url, headers, Bytes::new()).await;
            match result {
                Ok(r) if r.status == StatusCode::OK => {
                    let us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                    service.lock().saturating_record(us.max(1));
                    Verdict::Ok
                }
                _ => Verdict::Error,
            }
        })
    })
    .await
    .expect("a valid plan");
    let requests = report.class(name).map_or(0, |c| c.sent);
    let cpu_us_per_request = match (cpu_before, cpu_time()) {
        (Some(before), Some(after)) if requests > 0 => {
            Some((after - before).as_micros() as f64 / requests as f64)
        }
        _ => None,
    };
    let service_us = Arc::try_unwrap(service)
        .map(Mutex::into_inner)
        .unwrap_or_else(|s| s.lock().clone());
    Phase {
        name,
        report,
        service_us,
        cpu_us_per_request,
    }
}

fn row(p: &Phase) -> String {
    let c = p.report.class(p.name).expect("the phase's class");
    let s = &p.service_us;
    let us = |q: f64| s.value_at_quantile(q) as f64;
    format!(
        "| {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} |",
        p.name,
        c.ok,
        c.error,
        c.dropped,
        c.p50_ms * 1000.0,
        c.p99_ms * 1000.0,
        c.p999_ms * 1000.0,
        us(0.5),
        us(0.99),
        us(0.999),
        p.cpu_us_per_request
            .map_or("?".to_owned(), |c| format!("{c:.0}")),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rate: f64 = args.first().map_or(Ok(10_000.0), |a| a.parse())?;
    let secs: u64 = args.get(1).map_or(Ok(5), |a| a.parse())?;
    let rounds: usize = args.get(2).map_or(Ok(2), |a| a.parse())?;

    let dir = tempfile::tempdir()?;
    let clock = SystemClock::shared();
    let topology = Topology::uniform(&["r1"], 1);
    let platform = Platform::new(topology.clone(), dir.path(), clock.clone());
    platform.register_service(Arc::new(Upstream));
    let spec = |service: &str| InstanceSpec {
        service: service.to_owned(),
        instance_id: None,
        placement: topology.spread(0),
        listen: "127.0.0.1:0".parse().expect("an address"),
        version: "bench".into(),
        port_hint: None,
    };
    let upstream = platform.start(spec(UPSTREAM)).await?.address;

    let resolver = Arc::new(Resolver::detached(clock.clone()));
    resolver.attach(Arc::new(One(upstream, topology.spread(0))));
    let key = Arc::new(JwtKey::from_bytes(&[5; 32])?);
    let config = GatewayConfig {
        rate_limit: RateLimitConfig {
            per_second: 10_000_000,
            burst: 10_000_000,
            prune_every: 4096,
        },
        routes: vec![RouteConfig {
            max_concurrent: 2_000,
            ..RouteConfig::to_service("catalog", "/api/catalog", UPSTREAM)
        }],
        ..GatewayConfig::default()
    };
    let service = Arc::new(GatewayService::new(config, resolver, key)?);
    let token = service.issuer(clock.clone()).issue("bench-user");
    platform.register_service(service.clone());
    let gateway = platform.start(spec("netflix-gateway")).await?.address;

    let direct_url = format!("http://{upstream}/titles/7");
    let gateway_url = format!("http://{gateway}/api/catalog/titles/7");
    let mut auth = HeaderMap::new();
    auth.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}"))?,
    );
    let client = HttpClient::new(Duration::from_secs(10));
    // The same head both ways: the upstream ignores the token.
    phase("direct", &direct_url, &auth, &client, rate, 2).await;
    phase("gateway", &gateway_url, &auth, &client, rate, 2).await;

    let mut phases = Vec::new();
    for _ in 0..rounds {
        phases.push(phase("direct", &direct_url, &auth, &client, rate, secs).await);
        phases.push(phase("gateway", &gateway_url, &auth, &client, rate, secs).await);
    }
    println!(
        "{rate} requests/s open loop, {secs} s per phase, {rounds} rounds; one process, loopback"
    );
    println!(
        "| phase | ok | errors | dropped | p50 µs | p99 µs | p99.9 µs | service p50 µs | service p99 µs | service p99.9 µs | CPU µs/request |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for p in &phases {
        println!("{}", row(p));
    }
    let merged = |name: &str| {
        let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("static bounds");
        for p in phases.iter().filter(|p| p.name == name) {
            all.add(&p.service_us).expect("same bounds");
        }
        all
    };
    let (direct, through) = (merged("direct"), merged("gateway"));
    for (label, q) in [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)] {
        let added = through.value_at_quantile(q) as f64 - direct.value_at_quantile(q) as f64;
        println!("added at {label} (service time, all rounds): {added:.0} µs");
    }
    let cpu = |name: &str| {
        let each: Vec<f64> = phases
            .iter()
            .filter(|p| p.name == name)
            .filter_map(|p| p.cpu_us_per_request)
            .collect();
        (!each.is_empty()).then(|| each.iter().sum::<f64>() / each.len() as f64)
    };
    if let (Some(direct), Some(through)) = (cpu("direct"), cpu("gateway")) {
        println!(
            "CPU per request: direct {direct:.0} µs, through the gateway {through:.0} µs: the gateway's hop costs {:.0} µs of CPU",
            through - direct
        );
    }
    let admin: serde_json::Value = serde_json::from_slice(
        &client
            .send(
                Method::GET,
                &format!("http://{gateway}/admin/routes"),
                HeaderMap::new(),
                Bytes::new(),
            )
            .await?
            .body,
    )?;
    println!(
        "gateway's own view of the last 10 s: {}",
        admin["routes"][0]["latency_ms"]
    );
    platform.stop_all(Duration::from_secs(2)).await;
    Ok(())
}
