//! The runner: stock set-up, then each phase as one open-loop run.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use casebook_kit::http_client::HttpClient;
use casebook_kit::loadgen::{self, LoadPlan, Verdict};
use casebook_kit::sampling::{Rng, Zipf};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::json;

use super::config::WorkloadConfig;
use super::report::{
    CRITICAL, LOW, NORMAL, PhaseReport, PriorityOutcome, WorkloadProgress, WorkloadReport,
};
use super::timeline::{Priority, Timeline};
use super::{SETUP_CONCURRENCY, SETUP_RETRIES, WorkloadError};
use crate::catalog::sku;

/// One operation of the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Browse,
    Recs,
    CartAdd,
    CartRemove,
    Reserve,
    Checkout,
}

impl Op {
    fn class(self) -> &'static str {
        match self {
            Self::Browse => "browse",
            Self::Recs => "recs",
            Self::CartAdd => "cart_add",
            Self::CartRemove => "cart_remove",
            Self::Reserve => "reserve",
            Self::Checkout => "checkout",
        }
    }

    fn priority(self) -> Priority {
        match self {
            Self::Browse | Self::Recs => Priority::Low,
            Self::CartAdd | Self::CartRemove => Priority::Normal,
            Self::Reserve | Self::Checkout => Priority::Critical,
        }
    }
}

/// One request's place in the timeline; files it as an error if the generator
/// drops it unsent (the future is dropped without being polled).
struct Pending {
    timeline: Arc<Timeline>,
    due: Duration,
    phase: Arc<str>,
    priority: Priority,
    finished: bool,
}

impl Pending {
    fn finish(mut self, verdict: Verdict, latency: Duration) {
        self.finished = true;
        self.timeline.outcome(
            self.due,
            &self.phase,
            self.priority,
            Some((verdict, latency)),
        );
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.finished {
            self.timeline
                .outcome(self.due, &self.phase, self.priority, None);
        }
    }
}

struct Shared {
    config: WorkloadConfig,
    client: HttpClient,
    users: Zipf,
    skus: Zipf,
    /// The mix as cumulative percent bounds, in `Op` order.
    bounds: [(u32, Op); 6],
}

impl Shared {
    fn pick(&self, roll: u32) -> Op {
        self.bounds
            .iter()
            .find(|(upper, _)| roll < *upper)
            .map_or(Op::Browse, |(_, op)| *op)
    }
}

/// Runs the workload; `progress` shows the phase under way.
pub async fn run(
    config: WorkloadConfig,
    progress: Arc<WorkloadProgress>,
) -> Result<WorkloadReport, WorkloadError> {
    config.validate()?;
    let mix = &config.mix;
    let mut upper = 0;
    let mut bound = |share: u32, op| {
        upper += share;
        (upper, op)
    };
    let bounds = [
        bound(mix.browse, Op::Browse),
        bound(mix.recs, Op::Recs),
        bound(mix.cart_add, Op::CartAdd),
        bound(mix.cart_remove, Op::CartRemove),
        bound(mix.reserve, Op::Reserve),
        bound(mix.checkout, Op::Checkout),
    ];
    let shared = Arc::new(Shared {
        users: Zipf::new(config.users, config.zipf_s, 0.0)
            .map_err(|e| super::bad("zipf_s", e.to_string()))?,
        skus: Zipf::new(config.skus, config.zipf_s, 0.0)
            .map_err(|e| super::bad("zipf_s", e.to_string()))?,
        client: HttpClient::new(config.timeout),
        bounds,
        config,
    });
    if shared.config.stock_per_sku > 0 {
        progress.enter("stock");
        set_stock(&shared).await?;
    }
    let mut phases = Vec::new();
    let timeline = Arc::new(Timeline::new(shared.config.slo));
    // Wall time is what is measured here: the run's seconds, for the timeline.
    let run_start = tokio::time::Instant::now();
    for (index, phase) in shared.config.phases.iter().enumerate() {
        let live = progress.enter(&phase.name);
        let phase_start = tokio::time::Instant::now();
        let phase_offset = phase_start - run_start;
        let phase_name: Arc<str> = Arc::from(phase.name.as_str());
        let interval = 1.0 / (shared.config.rate_per_sec * phase.multiplier);
        let timeline = timeline.clone();
        let plan = LoadPlan {
            rate_per_sec: shared.config.rate_per_sec * phase.multiplier,
            duration: phase.duration,
            max_in_flight: shared.config.max_in_flight,
            slo: Some(shared.config.slo),
        };
        let run_shared = shared.clone();
        let load = loadgen::run_with_progress(&plan, &live, move |i| {
            let mut rng = Rng::new(
                run_shared.config.seed
                    ^ ((index as u64) << 56)
                    ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            );
            let op = run_shared.pick(rng.below(100) as u32);
            let shared = run_shared.clone();
            let key = format!("load-{}-{index}-{i}", shared.config.seed);
            // The loadgen calls this at the request's intended send time.
            let intended = phase_start + Duration::from_secs_f64(i as f64 * interval);
            let due = phase_offset + Duration::from_secs_f64(i as f64 * interval);
            timeline.due(due, &phase_name, op.priority());
            let pending = Pending {
                timeline: timeline.clone(),
                due,
                phase: phase_name.clone(),
                priority: op.priority(),
                finished: false,
            };
            (op.class(), async move {
                let verdict = request(&shared, op, &mut rng, &key).await;
                pending.finish(verdict, intended.elapsed());
                verdict
            })
        })
        .await?;
        phases.push(PhaseReport {
            name: phase.name.clone(),
            multiplier: phase.multiplier,
            critical: PriorityOutcome::of(&load, &CRITICAL),
            normal: PriorityOutcome::of(&load, &NORMAL),
            low: PriorityOutcome::of(&load, &LOW),
            load,
        });
    }
    Ok(WorkloadReport {
        target: shared.config.target.clone(),
        rate_per_sec: shared.config.rate_per_sec,
        phases,
        prescale: None,
        timeline: timeline.snapshot(),
    })
}

async fn set_stock(shared: &Arc<Shared>) -> Result<(), WorkloadError> {
    let permits = Arc::new(tokio::sync::Semaphore::new(SETUP_CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..shared.config.skus {
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| WorkloadError::Setup(e.to_string()))?;
        let shared = shared.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let url = format!("{}/v1/inventory/{}", shared.config.target, sku(i));
            let body = json!({ "available": shared.config.stock_per_sku });
            let mut tries = 0;
            loop {
                match shared.client.call(Method::PUT, &url, Some(&body)).await {
                    Ok(_) => return Ok(()),
                    Err(e)
                        if tries < SETUP_RETRIES
                            && matches!(e.status().map(|s| s.as_u16()), Some(429 | 503)) =>
                    {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
        });
        while let Some(done) = tasks.try_join_next() {
            done.map_err(|e| WorkloadError::Setup(e.to_string()))?
                .map_err(WorkloadError::Setup)?;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| WorkloadError::Setup(e.to_string()))?
            .map_err(WorkloadError::Setup)?;
    }
    Ok(())
}

fn judge(status: StatusCode) -> Verdict {
    match status.as_u16() {
        200..=299 => Verdict::Ok,
        // A correct refusal (short stock, an empty cart) is an answer.
        409 => Verdict::Ok,
        429 | 503 => Verdict::Shed,
        _ => Verdict::Error,
    }
}

async fn request(shared: &Shared, op: Op, rng: &mut Rng, key: &str) -> Verdict {
    let base = &shared.config.target;
    let user = format!("user-{}", shared.users.sample(rng));
    let item = sku(shared.skus.sample(rng));
    let json_headers = |idempotency: Option<&str>| {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(key) = idempotency.and_then(|k| HeaderValue::from_str(k).ok()) {
            headers.insert("idempotency-key", key);
        }
        headers
    };
    let send = |method: Method, url: String, headers: HeaderMap, body: Bytes| async move {
        match shared.client.send(method, &url, headers, body).await {
            Ok(response) => (judge(response.status), Some(response)),
            Err(_) => (Verdict::Error, None),
        }
    };
    let body = |value: serde_json::Value| Bytes::from(value.to_string());
    match op {
        Op::Browse => {
            send(
                Method::GET,
                format!("{base}/v1/products/{item}?user={user}"),
                HeaderMap::new(),
                Bytes::new(),
            )
            .await
            .0
        }
        Op::Recs => {
            send(
                Method::GET,
                format!("{base}/v1/recommendations/{user}?limit=10"),
                HeaderMap::new(),
                Bytes::new(),
            )
            .await
            .0
        }
        Op::CartAdd => {
            send(
                Method::POST,
                format!("{base}/v1/carts/{user}/items"),
                json_headers(None),
                body(json!({"sku": item, "qty": 1})),
            )
            .await
            .0
        }
        Op::CartRemove => {
            send(
                Method::DELETE,
                format!("{base}/v1/carts/{user}/items/{item}"),
                HeaderMap::new(),
                Bytes::new(),
            )
            .await
            .0
        }
        Op::Reserve => {
            let (verdict, response) = send(
                Method::POST,
                format!("{base}/v1/reservations"),
                json_headers(Some(key)),
                body(json!({"sku": item, "qty": 1, "ttl_seconds": 60})),
            )
            .await;
            // Give the stock back off the measured path, so a long run does not
            // drain it (an unreleased one would expire after its TTL anyway).
            if let Some(id) = response
                .filter(|r| r.status == StatusCode::CREATED)
                .and_then(|r| serde_json::from_slice::<serde_json::Value>(&r.body).ok())
                .and_then(|v| v.get("id").and_then(|id| id.as_str()).map(str::to_owned))
            {
                let client = shared.client.clone();
                let url = format!("{base}/v1/reservations/{id}/release");
                tokio::spawn(async move {
                    let _ = client
                        .send(Method::POST, &url, HeaderMap::new(), Bytes::new())
                        .await;
                });
            }
            verdict
        }
        Op::Checkout => {
            send(
                Method::POST,
                format!("{base}/v1/checkout/{user}"),
                json_headers(Some(key)),
                Bytes::from_static(b"{}"),
            )
            .await
            .0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_that_answer_are_ok_and_overload_is_shed() {
        assert_eq!(judge(StatusCode::CREATED), Verdict::Ok);
        assert_eq!(judge(StatusCode::CONFLICT), Verdict::Ok);
        assert_eq!(judge(StatusCode::SERVICE_UNAVAILABLE), Verdict::Shed);
        assert_eq!(judge(StatusCode::TOO_MANY_REQUESTS), Verdict::Shed);
        assert_eq!(judge(StatusCode::BAD_REQUEST), Verdict::Error);
    }
}
