use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Context;

use futures::FutureExt;
use proptest::prelude::*;
use tower::{Layer, Service, ServiceExt, service_fn};

use super::*;
use crate::clock::{Clock, ManualClock};
use crate::resilience::{Deadline, RequestMeta, set_deadline, set_priority};

fn small_config() -> ShedConfig {
    ShedConfig {
        limit: AimdConfig {
            initial_limit: 10,
            max_limit: 50,
            ..AimdConfig::default()
        },
        hard_limit: 60,
        ..ShedConfig::default()
    }
}

fn request(priority: Priority, deadline: Option<Deadline>) -> http::Request<()> {
    let mut r = http::Request::new(());
    set_priority(&mut r, priority);
    if let Some(d) = deadline {
        set_deadline(&mut r, d);
    }
    r
}

proptest! {
    #[test]
    fn a_passed_deadline_never_executes(
        budget_ms in 0u64..1000,
        wait_ms in 0u64..2000,
        priority in prop::sample::select(Priority::ALL.to_vec()),
    ) {
        let clock = ManualClock::new();
        let ran = Arc::new(AtomicUsize::new(0));
        let counter = ran.clone();
        let svc = LoadShedLayer::new("t", small_config(), clock.shared()).unwrap().layer(
            service_fn(move |_: http::Request<()>| {
                counter.fetch_add(1, Ordering::SeqCst);
                async { Ok::<_, BoxError>(()) }
            }),
        );
        let deadline = Deadline(clock.now() + Duration::from_millis(budget_ms));
        clock.advance(Duration::from_millis(wait_ms));
        let result = svc.oneshot(request(priority, Some(deadline))).now_or_never().unwrap();
        if wait_ms >= budget_ms {
            prop_assert_eq!(ran.load(Ordering::SeqCst), 0);
            let err = result.unwrap_err();
            prop_assert_eq!(FailureKind::of(&err), FailureKind::DeadlineExceeded);
        } else {
            prop_assert_eq!(ran.load(Ordering::SeqCst), 1);
            prop_assert!(result.is_ok());
        }
    }

    /// Whatever the load and the limit's history, whenever a `critical` request is
    /// shed, a `low` one would be too; and `low` is shed while `critical` is admitted
    /// whenever in-flight sits between their caps.
    #[test]
    fn low_is_always_shed_before_critical(
        steps in prop::collection::vec((0usize..3, 0u8..4, 0u64..300), 1..300),
    ) {
        let clock = ManualClock::new();
        let shedder = LoadShedder::new("t", small_config(), clock.shared()).unwrap();
        let mut held = Vec::new();
        for (prio, action, ms) in steps {
            let priority = Priority::ALL[prio];
            let admitted: Vec<bool> = Priority::ALL.iter().map(|&p| {
                matches!(shedder.admit(p, None), Admission::Admitted(_))
            }).collect();
            // Admission is monotone in priority: low ⇒ normal ⇒ critical.
            prop_assert!(!admitted[0] || admitted[1]);
            prop_assert!(!admitted[1] || admitted[2]);
            match action {
                0 | 1 => if let Admission::Admitted(p) = shedder.admit(priority, None) {
                    held.push(p);
                },
                2 => if let Some(p) = held.pop() {
                    clock.advance(Duration::from_millis(ms));
                    p.success();
                },
                _ => if let Some(p) = held.pop() { p.dropped(); },
            }
            prop_assert!(shedder.limiter().in_flight() <= 60, "never past the hard limit");
        }
    }
}

#[test]
fn under_overload_low_goes_first_then_normal_and_critical_at_the_hard_limit() {
    let clock = ManualClock::new();
    let shedder = LoadShedder::new("t", small_config(), clock.shared()).unwrap();
    let mut held = Vec::new();
    let admit = |p| matches!(shedder.admit(p, None), Admission::Admitted(_));
    // Limit 10: low may use 8 slots.
    while let Admission::Admitted(p) = shedder.admit(Priority::Low, None) {
        held.push(p);
    }
    assert_eq!(held.len(), 8);
    assert!(admit(Priority::Normal));
    while let Admission::Admitted(p) = shedder.admit(Priority::Normal, None) {
        held.push(p);
    }
    assert_eq!(held.len(), 10);
    assert!(!admit(Priority::Low));
    while let Admission::Admitted(p) = shedder.admit(Priority::Critical, None) {
        held.push(p);
    }
    assert_eq!(held.len(), 60, "critical runs up to the hard limit");
    match shedder.admit(Priority::Critical, None) {
        Admission::Refused(e) => {
            let o = e.downcast_ref::<Overloaded>().unwrap();
            assert_eq!((o.priority, o.in_flight), (Priority::Critical, 60));
        }
        Admission::Admitted(_) => panic!("past the hard limit"),
    }
}

#[tokio::test]
async fn refusals_answer_503_with_retry_after_and_skip_the_inner_service() {
    let clock = ManualClock::new();
    let cfg = ShedConfig {
        retry_after: Duration::from_millis(1500),
        ..small_config()
    };
    let mut svc = LoadShedLayer::new("t", cfg, clock.shared())
        .unwrap()
        .layer(service_fn(|_: http::Request<()>| async {
            std::future::pending::<()>().await;
            Ok::<_, BoxError>(())
        }));
    let mut pending = Vec::new();
    for _ in 0..8 {
        std::future::poll_fn(|cx: &mut Context<'_>| svc.poll_ready(cx))
            .await
            .unwrap();
        pending.push(svc.call(request(Priority::Low, None)));
    }
    let err = svc.call(request(Priority::Low, None)).await.unwrap_err();
    let response = overload_response(&err).unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()[header::RETRY_AFTER], "2");

    let late = Deadline(clock.now());
    let err = svc
        .call(request(Priority::Critical, Some(late)))
        .await
        .unwrap_err();
    assert_eq!(
        overload_response(&err).unwrap().status(),
        StatusCode::GATEWAY_TIMEOUT
    );
    let other: BoxError = "boom".into();
    assert!(overload_response(&other).is_none());
    assert_eq!(
        handle_error(other).await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
}

#[test]
fn a_hard_limit_below_the_limit_ceiling_is_refused() {
    let cfg = ShedConfig {
        hard_limit: 10,
        ..small_config()
    };
    let err = LoadShedder::new("t", cfg, ManualClock::new().shared()).unwrap_err();
    assert_eq!(err.field, "shed.hard_limit");
}

#[tokio::test]
async fn headers_reach_the_shedder_and_a_bad_header_is_a_400() {
    let clock = ManualClock::new();
    let shed = LoadShedLayer::new("t", small_config(), clock.shared()).unwrap();
    let svc = RequestMetaLayer::new(clock.shared()).layer(shed.layer(service_fn(
        |r: http::Request<()>| async move { Ok::<_, BoxError>(r.priority()) },
    )));
    let ok = http::Request::builder()
        .header("x-priority", "low")
        .body(())
        .unwrap();
    assert_eq!(svc.clone().oneshot(ok).await.unwrap(), Priority::Low);
    let expired = http::Request::builder()
        .header("x-deadline-ms", "0")
        .body(())
        .unwrap();
    let err = svc.clone().oneshot(expired).await.unwrap_err();
    assert_eq!(FailureKind::of(&err), FailureKind::DeadlineExceeded);
    let bad = http::Request::builder()
        .header("x-priority", "vip")
        .body(())
        .unwrap();
    let err = svc.oneshot(bad).await.unwrap_err();
    let response = handle_error(err).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn on_an_axum_router_overload_answers_503_with_retry_after() {
    use axum::error_handling::HandleErrorLayer;
    use axum::routing::get;

    let clock = ManualClock::new();
    let release = Arc::new(tokio::sync::Notify::new());
    let gate = release.clone();
    let app: axum::Router = axum::Router::new()
        .route(
            "/",
            get(move || {
                let gate = gate.clone();
                async move {
                    gate.notified().await;
                    "done"
                }
            }),
        )
        .layer(
            tower::ServiceBuilder::new()
                .layer(HandleErrorLayer::new(handle_error))
                .layer(RequestMetaLayer::new(clock.shared()))
                .layer(LoadShedLayer::new("api", small_config(), clock.shared()).unwrap()),
        );
    let low = || {
        http::Request::get("/")
            .header("x-priority", "low")
            .body(axum::body::Body::empty())
            .unwrap()
    };
    // Limit 10, low share 0.8: eight low requests run, the ninth is shed.
    let mut running: Vec<_> = (0..8)
        .map(|_| Box::pin(app.clone().oneshot(low())))
        .collect();
    for call in &mut running {
        assert!(futures::poll!(call.as_mut()).is_pending());
    }
    let shed = app.clone().oneshot(low()).await.unwrap();
    assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(shed.headers()[header::RETRY_AFTER], "1");
    let critical = http::Request::get("/")
        .header("x-priority", "critical")
        .body(axum::body::Body::empty())
        .unwrap();
    let mut critical = Box::pin(app.clone().oneshot(critical));
    assert!(
        futures::poll!(critical.as_mut()).is_pending(),
        "critical still admitted"
    );
    release.notify_waiters();
    for call in running {
        assert_eq!(call.await.unwrap().status(), StatusCode::OK);
    }
    assert_eq!(critical.await.unwrap().status(), StatusCode::OK);
}
