use std::time::Duration;

use super::*;
use crate::clock::ManualClock;

fn breaker(clock: &ManualClock) -> CircuitBreaker {
    CircuitBreaker::new("dep", BreakerConfig::default(), clock.shared()).unwrap()
}

/// Runs `total` calls of which the first `errors` fail.
fn run(b: &CircuitBreaker, total: u64, errors: u64) {
    for i in 0..total {
        let permit = b.try_acquire().expect("closed breaker admits");
        permit.record(if i < errors {
            CallOutcome::Failure
        } else {
            CallOutcome::Success
        });
    }
}

/// Lets the next snapshot happen and reports whether the next call is admitted.
fn admitted_after_snapshot(clock: &ManualClock, b: &CircuitBreaker) -> bool {
    clock.advance(Duration::from_millis(500));
    b.try_acquire().is_ok()
}

fn open(clock: &ManualClock) -> CircuitBreaker {
    let b = breaker(clock);
    run(&b, 20, 20);
    assert!(!admitted_after_snapshot(clock, &b));
    assert_eq!(b.state(), BreakerState::Open);
    b
}

#[test]
fn nineteen_requests_at_full_error_rate_do_not_trip() {
    let clock = ManualClock::new();
    let b = breaker(&clock);
    run(&b, 19, 19);
    assert!(admitted_after_snapshot(&clock, &b));
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.stats().snapshot_requests, 19);
    assert_eq!(b.stats().snapshot_error_percent, 100);
}

#[test]
fn twenty_requests_at_fifty_percent_trip() {
    let clock = ManualClock::new();
    let b = breaker(&clock);
    run(&b, 20, 10);
    assert!(!admitted_after_snapshot(&clock, &b));
    assert_eq!(b.state(), BreakerState::Open);
}

#[test]
fn forty_nine_percent_does_not_trip_and_the_percentage_is_floored() {
    let clock = ManualClock::new();
    let b = breaker(&clock);
    run(&b, 20, 9); // 45 %
    assert!(admitted_after_snapshot(&clock, &b));
    let b = breaker(&clock);
    run(&b, 100, 49); // 49 %
    assert!(admitted_after_snapshot(&clock, &b));
    let b = breaker(&clock);
    run(&b, 200, 99); // 49.5 %, floored to 49
    assert!(admitted_after_snapshot(&clock, &b));
    assert_eq!(b.stats().snapshot_error_percent, 49);
    assert_eq!(b.state(), BreakerState::Closed);
}

#[test]
fn timeouts_and_rejections_are_errors_and_short_circuits_are_not_counted() {
    let clock = ManualClock::new();
    let b = breaker(&clock);
    for outcome in [CallOutcome::Timeout, CallOutcome::Rejected] {
        for _ in 0..5 {
            b.try_acquire().unwrap().record(outcome);
        }
    }
    run(&b, 10, 0);
    assert!(!admitted_after_snapshot(&clock, &b), "10 errors of 20 trip");
    for _ in 0..50 {
        assert!(b.try_acquire().is_err());
    }
    let stats = b.stats();
    assert_eq!(
        stats.requests, 20,
        "short-circuits are not part of the total"
    );
    assert_eq!(stats.short_circuited, 51);
    assert_eq!((stats.timeouts, stats.rejections), (5, 5));
}

#[test]
fn the_trip_waits_for_the_next_snapshot() {
    let clock = ManualClock::new();
    let b = breaker(&clock);
    run(&b, 20, 20);
    clock.advance(Duration::from_millis(499));
    assert!(b.try_acquire().is_ok(), "no snapshot yet: still closed");
    assert_eq!(b.state(), BreakerState::Closed);
    clock.advance(Duration::from_millis(1));
    assert!(b.try_acquire().is_err(), "the 500 ms snapshot trips it");
    assert_eq!(b.state(), BreakerState::Open);
}

#[test]
fn the_window_spans_ten_one_second_buckets() {
    // 10 failures in the first bucket and 10 in the last still trip together...
    let clock = ManualClock::new();
    let b = breaker(&clock);
    run(&b, 10, 10);
    clock.advance(Duration::from_millis(9_400));
    run(&b, 10, 10);
    clock.advance(Duration::from_millis(500)); // t = 9.9 s: bucket 0 is still in
    assert!(b.try_acquire().is_err());

    // ...but once the first bucket has slid out, only 10 remain: no trip.
    let clock = ManualClock::new();
    let b = breaker(&clock);
    run(&b, 10, 10);
    clock.advance(Duration::from_millis(9_400));
    run(&b, 10, 10);
    clock.advance(Duration::from_millis(600)); // t = 10.0 s: bucket 0 is out
    assert!(b.try_acquire().is_ok());
    assert_eq!(b.stats().snapshot_requests, 10);
}

#[test]
fn the_breaker_stays_open_for_the_sleep_window() {
    let clock = ManualClock::new();
    let b = open(&clock);
    clock.advance(Duration::from_millis(4_999));
    assert!(b.try_acquire().is_err());
    clock.advance(Duration::from_millis(1));
    let trial = b
        .try_acquire()
        .expect("the sleep window is over: one trial");
    assert!(trial.is_trial());
    assert_eq!(b.state(), BreakerState::HalfOpen);
}

#[test]
fn exactly_one_trial_with_concurrent_callers() {
    let clock = ManualClock::new();
    let b = open(&clock);
    clock.advance(Duration::from_secs(5));
    let admitted = std::sync::atomic::AtomicUsize::new(0);
    let permits = parking_lot::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..100 {
                    if let Ok(p) = b.try_acquire() {
                        admitted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        permits.lock().push(p);
                    }
                }
            });
        }
    });
    assert_eq!(admitted.into_inner(), 1);
    let permits = permits.into_inner();
    assert!(permits[0].is_trial());
    // 799 refused here, plus the one refused when the breaker was seen open.
    assert_eq!(b.stats().short_circuited, 1 + 799);
}

#[test]
fn a_successful_trial_closes_and_resets_the_window() {
    let clock = ManualClock::new();
    let b = open(&clock);
    clock.advance(Duration::from_secs(5));
    b.try_acquire().unwrap().record(CallOutcome::Success);
    assert_eq!(b.state(), BreakerState::Closed);
    let stats = b.stats();
    assert_eq!(
        (stats.requests, stats.failures, stats.short_circuited),
        (0, 0, 0)
    );
    // Reset means the old failures cannot re-trip it at the next snapshot.
    assert!(admitted_after_snapshot(&clock, &b));
    assert_eq!(b.state(), BreakerState::Closed);
}

#[test]
fn a_failed_timed_out_or_cancelled_trial_reopens_with_a_new_open_time() {
    for outcome in [
        Some(CallOutcome::Failure),
        Some(CallOutcome::Timeout),
        Some(CallOutcome::Rejected),
        None,
    ] {
        let clock = ManualClock::new();
        let b = open(&clock);
        clock.advance(Duration::from_secs(5));
        let trial = b.try_acquire().unwrap();
        clock.advance(Duration::from_secs(1));
        match outcome {
            Some(o) => trial.record(o),
            None => drop(trial),
        }
        assert_eq!(b.state(), BreakerState::Open, "{outcome:?}");
        // The new open time is the trial's end, not the first trip.
        clock.advance(Duration::from_millis(4_999));
        assert!(b.try_acquire().is_err(), "{outcome:?}");
        clock.advance(Duration::from_millis(1));
        assert!(b.try_acquire().unwrap().is_trial(), "{outcome:?}");
    }
}

#[test]
fn a_cancelled_call_in_the_closed_state_is_not_counted() {
    let clock = ManualClock::new();
    let b = breaker(&clock);
    drop(b.try_acquire().unwrap());
    assert_eq!(b.stats().requests, 0);
    assert_eq!(b.state(), BreakerState::Closed);
}

#[test]
fn stats_report_rate_and_latency_percentiles() {
    let clock = ManualClock::new();
    let b = breaker(&clock);
    for ms in 1..=100u64 {
        let p = b.try_acquire().unwrap();
        clock.advance(Duration::from_millis(ms));
        p.record(CallOutcome::Success);
        clock.advance(Duration::from_millis(0));
    }
    // 5050 ms have passed: all calls are still in the 10 s window.
    let s = b.stats();
    assert_eq!(s.requests, 100);
    assert!((s.rate_per_second - 10.0).abs() < 1e-9);
    assert!(
        (49.0..=51.0).contains(&s.latency_ms_p50),
        "{}",
        s.latency_ms_p50
    );
    assert!(
        (89.0..=91.0).contains(&s.latency_ms_p90),
        "{}",
        s.latency_ms_p90
    );
    assert!(
        (98.0..=100.0).contains(&s.latency_ms_p99),
        "{}",
        s.latency_ms_p99
    );
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["state"], "closed");
}

#[test]
fn bad_configuration_is_refused_with_the_field() {
    let clock = ManualClock::new();
    let bad = [
        BreakerConfig {
            buckets: 0,
            ..Default::default()
        },
        BreakerConfig {
            buckets: 3,
            ..Default::default()
        },
        BreakerConfig {
            error_threshold_percent: 101,
            ..Default::default()
        },
        BreakerConfig {
            sleep_window: Duration::ZERO,
            ..Default::default()
        },
        BreakerConfig {
            snapshot_interval: Duration::ZERO,
            ..Default::default()
        },
    ];
    let fields: Vec<_> = bad
        .into_iter()
        .map(|c| {
            CircuitBreaker::new("x", c, clock.shared())
                .unwrap_err()
                .field
        })
        .collect();
    assert_eq!(
        fields,
        [
            "breaker.buckets",
            "breaker.window",
            "breaker.error_threshold_percent",
            "breaker.sleep_window",
            "breaker.snapshot_interval"
        ]
    );
}

#[test]
fn the_registry_keeps_one_breaker_per_dependency() {
    let clock = ManualClock::new();
    let reg = BreakerRegistry::new(clock.shared());
    let a = reg.get_or_create("a", &BreakerConfig::default()).unwrap();
    reg.get_or_create("b", &BreakerConfig::default()).unwrap();
    run(&a, 20, 20);
    let again = reg.get_or_create("a", &BreakerConfig::default()).unwrap();
    assert_eq!(again.stats().requests, 20);
    let names: Vec<_> = reg.snapshot().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["a", "b"]);
}

#[tokio::test]
async fn the_api_lists_every_breaker_as_json() {
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let clock = ManualClock::new();
    let reg = BreakerRegistry::new(clock.shared());
    let b = reg
        .get_or_create("metrics-store", &BreakerConfig::default())
        .unwrap();
    run(&b, 20, 20);
    assert!(!admitted_after_snapshot(&clock, &b));
    let response = breakers_router(reg)
        .oneshot(
            http::Request::get("/api/breakers")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json[0]["name"], "metrics-store");
    assert_eq!(json[0]["state"], "open");
    assert_eq!(json[0]["error_percent"], 100);
    assert_eq!(json[0]["short_circuited"], 1);
}

mod model {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Acquire,
        Finish(usize, u8),
        Cancel(usize),
        Advance(u64),
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        prop::collection::vec(
            prop_oneof![
                4 => Just(Op::Acquire),
                4 => (0usize..32, 0u8..4).prop_map(|(i, o)| Op::Finish(i, o)),
                1 => (0usize..32).prop_map(Op::Cancel),
                2 => (0u64..3000).prop_map(Op::Advance),
            ],
            1..400,
        )
    }

    fn outcome(o: u8) -> CallOutcome {
        [
            CallOutcome::Success,
            CallOutcome::Failure,
            CallOutcome::Timeout,
            CallOutcome::Rejected,
        ][usize::from(o)]
    }

    proptest! {
        /// Whatever the interleaving: only a closed breaker admits ordinary calls,
        /// there is never more than one trial, an open breaker past its sleep
        /// window always admits the trial, and states only move along the
        /// Hystrix edges.
        #[test]
        fn transitions_follow_hystrix(ops in ops()) {
            let clock = ManualClock::new();
            let b = CircuitBreaker::new("m", BreakerConfig::default(), clock.shared()).unwrap();
            let mut held: Vec<Permit> = Vec::new();
            let mut opened_at = None;
            let mut last = BreakerState::Closed;
            for op in ops {
                match op {
                    Op::Acquire => {
                        let trial_due = last == BreakerState::Open
                            && opened_at.is_some_and(|t: Duration| clock.elapsed() - t >= Duration::from_secs(5));
                        match b.try_acquire() {
                            Ok(p) => {
                                if p.is_trial() {
                                    prop_assert!(held.iter().all(|h| !h.is_trial()), "two trials");
                                    prop_assert_eq!(b.state(), BreakerState::HalfOpen);
                                } else {
                                    prop_assert_eq!(b.state(), BreakerState::Closed);
                                }
                                held.push(p);
                            }
                            Err(_) => {
                                prop_assert!(!trial_due, "the sleep window is over: the trial must be admitted");
                                prop_assert_ne!(b.state(), BreakerState::Closed);
                            }
                        }
                    }
                    Op::Finish(i, o) if !held.is_empty() => {
                        let p = held.swap_remove(i % held.len());
                        p.record(outcome(o));
                    }
                    Op::Cancel(i) if !held.is_empty() => {
                        drop(held.swap_remove(i % held.len()));
                    }
                    Op::Advance(ms) => clock.advance(Duration::from_millis(ms)),
                    _ => {}
                }
                let now = b.state();
                // One op is at most one call, so at most one edge per step.
                let allowed = last == now
                    || matches!(
                        (last, now),
                        (BreakerState::Closed, BreakerState::Open)
                            | (BreakerState::Open, BreakerState::HalfOpen)
                            | (BreakerState::HalfOpen, BreakerState::Closed)
                            | (BreakerState::HalfOpen, BreakerState::Open)
                    );
                prop_assert!(allowed, "{last:?} -> {now:?}");
                if now == BreakerState::Open && last != BreakerState::Open {
                    opened_at = Some(clock.elapsed());
                }
                last = now;
            }
        }
    }
}

#[test]
fn state_counts_and_latency_are_exported_as_metrics() {
    let registry = crate::telemetry::MetricsRegistry::default();
    let clock = ManualClock::new();
    // Handles are bound when the breaker is created: the recorder must exist first.
    let b = metrics::with_local_recorder(&registry, || breaker(&clock));
    run(&b, 20, 15);
    assert!(!admitted_after_snapshot(&clock, &b));
    let snap = registry.snapshot();
    let value = |name: &str, outcome: Option<&str>| {
        snap.counters
            .iter()
            .find(|(k, _)| {
                k.name() == name
                    && outcome
                        .is_none_or(|o| k.labels().any(|l| l.key() == "outcome" && l.value() == o))
            })
            .map(|(_, v)| *v)
    };
    assert_eq!(
        value("casebook_breaker_calls_total", Some("failure")),
        Some(15)
    );
    assert_eq!(
        value("casebook_breaker_calls_total", Some("success")),
        Some(5)
    );
    assert_eq!(
        value("casebook_breaker_calls_total", Some("short_circuited")),
        Some(1)
    );
    let gauge = |name: &str| {
        snap.gauges
            .iter()
            .find(|(k, _)| k.name() == name)
            .map(|(_, v)| *v)
    };
    assert_eq!(gauge("casebook_breaker_state"), Some(1.0), "open");
    assert_eq!(gauge("casebook_breaker_error_percent"), Some(75.0));
    let latency = snap
        .histograms
        .iter()
        .find(|(k, _)| k.name() == "casebook_breaker_latency_seconds")
        .map(|(_, v)| v.len());
    assert_eq!(latency, Some(20), "short-circuits have no latency");
}
