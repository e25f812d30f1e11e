use std::sync::atomic::AtomicUsize;

use futures::FutureExt;
use proptest::prelude::*;
use tower::service_fn;

use super::*;
use crate::clock::{Clock, ManualClock};
use crate::resilience::breaker::ShortCircuited;
use crate::resilience::stack::UpstreamStatus;
use crate::resilience::timeout::Elapsed;
use crate::resilience::{Deadline, ManualSleeper, mark_idempotent, set_deadline};

fn idempotent() -> http::Request<()> {
    let mut r = http::Request::new(());
    mark_idempotent(&mut r);
    r
}

/// A callee answering with `script[i]` on its i-th call (the last one repeats).
fn scripted(
    script: Vec<fn() -> Result<u32, BoxError>>,
    calls: Arc<AtomicUsize>,
) -> impl Service<http::Request<()>, Response = u32, Error = BoxError, Future: Send> + Clone + Send
{
    service_fn(move |_: http::Request<()>| {
        let i = calls.fetch_add(1, Ordering::SeqCst);
        let out = script[i.min(script.len() - 1)]();
        async move { out }
    })
}

fn down() -> Result<u32, BoxError> {
    Err("connection refused".into())
}
fn timed_out() -> Result<u32, BoxError> {
    Err(Elapsed {
        after: Duration::from_secs(1),
    }
    .into())
}
fn ok() -> Result<u32, BoxError> {
    Ok(7)
}

fn layer(budget: &Arc<RetryBudget>, sleeper: &ManualSleeper) -> RetryLayer<ManualSleeper> {
    RetryLayer::new(budget.clone()).with_sleeper(sleeper.clone())
}

proptest! {
    #[test]
    fn with_the_dependency_down_retries_never_exceed_the_budget_and_stop(
        calls in 1usize..400,
        timeouts in any::<bool>(),
        max_attempts in 2u32..6,
    ) {
        let budget = Arc::new(RetryBudget::new(RetryConfig { max_attempts, ..RetryConfig::default() }).unwrap());
        let sleeper = ManualSleeper::new(ManualClock::new());
        let attempts = Arc::new(AtomicUsize::new(0));
        let callee = scripted(vec![if timeouts { timed_out } else { down }], attempts.clone());
        let svc = layer(&budget, &sleeper).layer(callee);
        for _ in 0..calls {
            let result = svc.clone().oneshot(idempotent()).now_or_never().expect("no real waits");
            prop_assert!(result.is_err());
        }
        let retries = attempts.load(Ordering::SeqCst) - calls;
        let cap = if timeouts { 500 / 10 } else { 500 / 5 };
        prop_assert!(retries <= cap);
        prop_assert!(retries <= calls * (max_attempts as usize - 1));
        prop_assert_eq!(retries, cap.min(calls * (max_attempts as usize - 1)));
        prop_assert_eq!(sleeper.slept().len(), retries);
        // Once the budget is spent, a call is one attempt.
        if retries == cap {
            let before = attempts.load(Ordering::SeqCst);
            let _ = svc.clone().oneshot(idempotent()).now_or_never().unwrap();
            prop_assert_eq!(attempts.load(Ordering::SeqCst), before + 1);
        }
    }
}

#[tokio::test]
async fn backoff_is_full_jitter_under_exponential_ceilings_and_success_refunds() {
    let budget = Arc::new(RetryBudget::new(RetryConfig::default()).unwrap());
    let sleeper = ManualSleeper::new(ManualClock::new());
    let attempts = Arc::new(AtomicUsize::new(0));
    let svc = layer(&budget, &sleeper).layer(scripted(vec![down, timed_out, ok], attempts.clone()));
    assert_eq!(svc.oneshot(idempotent()).await.unwrap(), 7);
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    let slept = sleeper.slept();
    assert_eq!(slept.len(), 2);
    assert!(slept[0] <= Duration::from_millis(100));
    assert!(slept[1] <= Duration::from_millis(200));
    assert_eq!(budget.tokens(), 500 - 5 - 10 + 1);
    let cfg = RetryConfig::default();
    assert_eq!(cfg.backoff_ceiling(1), Duration::from_millis(100));
    assert_eq!(cfg.backoff_ceiling(4), Duration::from_millis(800));
    assert_eq!(cfg.backoff_ceiling(40), Duration::from_secs(20));
}

#[tokio::test]
async fn a_503_retry_after_is_honoured_and_one_beyond_the_cap_ends_retries() {
    fn busy() -> Result<u32, BoxError> {
        Err(UpstreamStatus::new(
            http::StatusCode::SERVICE_UNAVAILABLE,
            Some(Duration::from_secs(2)),
        )
        .into())
    }
    fn very_busy() -> Result<u32, BoxError> {
        Err(UpstreamStatus::new(
            http::StatusCode::SERVICE_UNAVAILABLE,
            Some(Duration::from_secs(60)),
        )
        .into())
    }
    let budget = Arc::new(RetryBudget::new(RetryConfig::default()).unwrap());
    let sleeper = ManualSleeper::new(ManualClock::new());
    let attempts = Arc::new(AtomicUsize::new(0));
    let svc = layer(&budget, &sleeper).layer(scripted(vec![busy, ok], attempts.clone()));
    assert_eq!(svc.oneshot(idempotent()).await.unwrap(), 7);
    assert_eq!(sleeper.slept(), [Duration::from_secs(2)]);

    let attempts = Arc::new(AtomicUsize::new(0));
    let svc = layer(&budget, &sleeper).layer(scripted(vec![very_busy, ok], attempts.clone()));
    assert!(svc.oneshot(idempotent()).await.is_err());
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn unmarked_requests_and_short_circuits_are_not_retried() {
    fn open() -> Result<u32, BoxError> {
        Err(ShortCircuited {
            dependency: "d".into(),
        }
        .into())
    }
    let budget = Arc::new(RetryBudget::new(RetryConfig::default()).unwrap());
    let sleeper = ManualSleeper::new(ManualClock::new());
    let attempts = Arc::new(AtomicUsize::new(0));
    let svc = layer(&budget, &sleeper).layer(scripted(vec![down, ok], attempts.clone()));
    assert!(
        svc.oneshot(http::Request::new(())).await.is_err(),
        "not marked idempotent"
    );
    assert_eq!(attempts.load(Ordering::SeqCst), 1);

    let attempts = Arc::new(AtomicUsize::new(0));
    let svc = layer(&budget, &sleeper).layer(scripted(vec![open, ok], attempts.clone()));
    assert!(svc.oneshot(idempotent()).await.is_err());
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
    assert_eq!(budget.tokens(), 500);
}

#[tokio::test]
async fn no_retry_is_made_that_would_start_after_the_deadline() {
    let clock = ManualClock::new();
    let budget = Arc::new(RetryBudget::new(RetryConfig::default()).unwrap());
    let sleeper = ManualSleeper::new(clock.clone());
    let attempts = Arc::new(AtomicUsize::new(0));
    fn busy() -> Result<u32, BoxError> {
        Err(UpstreamStatus::new(
            http::StatusCode::SERVICE_UNAVAILABLE,
            Some(Duration::from_secs(1)),
        )
        .into())
    }
    let svc = layer(&budget, &sleeper)
        .with_clock(clock.shared())
        .layer(scripted(vec![busy, ok], attempts.clone()));
    let mut request = idempotent();
    set_deadline(
        &mut request,
        Deadline(clock.now() + Duration::from_millis(500)),
    );
    assert!(svc.oneshot(request).await.is_err());
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn successes_of_calls_that_cannot_be_retried_refill_the_budget_too() {
    let budget = Arc::new(RetryBudget::new(RetryConfig::default()).unwrap());
    assert!(budget.try_withdraw(false) && budget.try_withdraw(true));
    assert_eq!(budget.tokens(), 485);
    let sleeper = ManualSleeper::new(ManualClock::new());
    let svc = layer(&budget, &sleeper).layer(scripted(vec![ok], Arc::default()));
    for _ in 0..3 {
        svc.clone().oneshot(http::Request::new(())).await.unwrap();
    }
    assert_eq!(budget.tokens(), 488);
    for _ in 0..20 {
        svc.clone().oneshot(http::Request::new(())).await.unwrap();
    }
    assert_eq!(budget.tokens(), 500, "never above a full budget");
}

#[test]
fn bad_numbers_are_refused() {
    for (cfg, field) in [
        (
            RetryConfig {
                max_attempts: 0,
                ..Default::default()
            },
            "retry.max_attempts",
        ),
        (
            RetryConfig {
                retry_cost: 0,
                ..Default::default()
            },
            "retry.retry_cost",
        ),
        (
            RetryConfig {
                backoff_base: Duration::from_secs(30),
                ..Default::default()
            },
            "retry.backoff_base",
        ),
    ] {
        assert_eq!(RetryBudget::new(cfg).unwrap_err().field, field);
    }
}
