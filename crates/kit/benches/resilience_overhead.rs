//! Overhead per call of the standard resilience stack (retry → breaker → timeout →
//! bulkhead) against the bare service, single- and multi-threaded.
//!
//! Run: `cargo bench -p casebook-kit --bench resilience_overhead`
//!
//! The callee answers at once, so what is measured is the stack's own cost: the
//! breaker's lock and window, the bulkhead's semaphore, the timeout's timer entry
//! (created, never polled: the call wins), the retry layer's boxed future.

use std::sync::LazyLock;

use casebook_kit::clock::SystemClock;
use casebook_kit::resilience::BoxError;
use casebook_kit::resilience::breaker::BreakerRegistry;
use casebook_kit::resilience::stack::{ResilienceConfig, StackBuilder};
use futures::FutureExt;
use tower::{Service, ServiceExt, service_fn};

static RT: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
});

fn main() {
    divan::main();
}

async fn callee(request: http::Request<()>) -> Result<usize, BoxError> {
    Ok(request.uri().path().len())
}

fn call<S>(svc: &S) -> usize
where
    S: Service<http::Request<()>, Response = usize, Error = BoxError> + Clone,
{
    call_with(svc, false)
}

fn call_with<S>(svc: &S, idempotent: bool) -> usize
where
    S: Service<http::Request<()>, Response = usize, Error = BoxError> + Clone,
{
    let _runtime = RT.enter();
    let mut request = http::Request::get("/x").body(()).expect("static request");
    if idempotent {
        casebook_kit::resilience::mark_idempotent(&mut request);
    }
    svc.clone()
        .oneshot(request)
        .now_or_never()
        .expect("the callee answers at once")
        .expect("the callee never fails")
}

#[divan::bench(threads = [1, 2], sample_count = 500, sample_size = 200)]
fn bare(bencher: divan::Bencher<'_, '_>) {
    let svc = service_fn(callee);
    bencher.bench(|| call(&svc));
}

#[divan::bench(threads = [1, 2], sample_count = 500, sample_size = 200)]
fn full_stack(bencher: divan::Bencher<'_, '_>) {
    let config = ResilienceConfig {
        // Room for every benchmark thread: the bulkhead must not be what is measured.
        bulkhead: casebook_kit::resilience::bulkhead::BulkheadConfig {
            max_concurrent: 64,
            max_queue: 0,
        },
        ..ResilienceConfig::default()
    };
    let (svc, _breaker) = StackBuilder::new("bench", config)
        .registry(BreakerRegistry::new(SystemClock::shared()))
        .build(service_fn(callee))
        .expect("default config is valid");
    bencher.bench(|| call(&svc));
}

/// The same stack with casebook's metrics recorder installed (Prometheus + the
/// control plane's registry), as in a running service.
#[divan::bench(threads = [1, 2], sample_count = 500, sample_size = 200)]
fn full_stack_with_metrics(bencher: divan::Bencher<'_, '_>) {
    casebook_kit::telemetry::metrics();
    let config = ResilienceConfig {
        bulkhead: casebook_kit::resilience::bulkhead::BulkheadConfig {
            max_concurrent: 64,
            max_queue: 0,
        },
        ..ResilienceConfig::default()
    };
    let (svc, _breaker) = StackBuilder::new("bench-metrics", config)
        .registry(BreakerRegistry::new(SystemClock::shared()))
        .build(service_fn(callee))
        .expect("default config is valid");
    bencher.bench(|| call(&svc));
}

/// An idempotent call: the retry layer keeps a copy of the request and of the
/// service in case it must try again.
#[divan::bench(threads = [1, 2], sample_count = 500, sample_size = 200)]
fn full_stack_idempotent(bencher: divan::Bencher<'_, '_>) {
    let config = ResilienceConfig {
        bulkhead: casebook_kit::resilience::bulkhead::BulkheadConfig {
            max_concurrent: 64,
            max_queue: 0,
        },
        ..ResilienceConfig::default()
    };
    let (svc, _breaker) = StackBuilder::new("bench-idempotent", config)
        .registry(BreakerRegistry::new(SystemClock::shared()))
        .build(service_fn(callee))
        .expect("default config is valid");
    bencher.bench(|| call_with(&svc, true));
}
