use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use proptest::prelude::*;
use tokio::sync::oneshot;
use tower::{Layer, Service, service_fn};

use super::*;

type Call = Pin<Box<dyn Future<Output = Result<(), BoxError>>>>;

/// A callee that runs until its request's channel fires, tracking how many run.
fn callee(
    running: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
) -> impl Service<oneshot::Receiver<()>, Response = (), Error = BoxError, Future: Send> + Clone + Send
{
    service_fn(move |done: oneshot::Receiver<()>| {
        let running = running.clone();
        let peak = peak.clone();
        async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            // Counts down on completion and on cancellation alike.
            let _running = Running(running);
            let _ = done.await;
            Ok::<_, BoxError>(())
        }
    })
}

struct Running(Arc<AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn poll_once(call: &mut Call) -> Poll<Result<(), BoxError>> {
    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    call.as_mut().poll(&mut cx)
}

#[derive(Debug, Clone)]
enum Op {
    Start,
    Finish(usize),
    Cancel(usize),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            3 => Just(Op::Start),
            2 => (0usize..64).prop_map(Op::Finish),
            1 => (0usize..64).prop_map(Op::Cancel),
        ],
        1..120,
    )
}

proptest! {
    #[test]
    fn never_admits_more_than_its_limit(limit in 1usize..6, queue in 0usize..4, ops in ops()) {
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let layer = BulkheadLayer::new(limit, queue).unwrap();
        let bulkhead = layer.bulkhead.clone();
        let mut svc = layer.layer(callee(running.clone(), peak.clone()));
        let mut calls: Vec<(Call, Option<oneshot::Sender<()>>)> = Vec::new();
        for op in ops {
            match op {
                Op::Start => {
                    let (tx, rx) = oneshot::channel();
                    let (in_flight, queued) = (bulkhead.in_flight(), bulkhead.queued());
                    let mut call: Call = Box::pin(svc.call(rx));
                    let first = poll_once(&mut call);
                    let refused = matches!(&first, Poll::Ready(Err(e)) if e.is::<BulkheadFull>());
                    // Refused exactly when every slot and every queue place is taken.
                    prop_assert_eq!(refused, in_flight == limit && queued == queue);
                    if first.is_pending() {
                        calls.push((call, Some(tx)));
                    }
                }
                Op::Finish(i) if !calls.is_empty() => {
                    let i = i % calls.len();
                    if let Some(tx) = calls[i].1.take() { let _ = tx.send(()); }
                }
                Op::Cancel(i) if !calls.is_empty() => {
                    let i = i % calls.len();
                    drop(calls.swap_remove(i));
                }
                _ => {}
            }
            // Let finished calls end and queued calls take freed slots.
            for _ in 0..3 {
                calls.retain_mut(|(call, _)| poll_once(call).is_pending());
            }
            prop_assert!(running.load(Ordering::SeqCst) <= limit);
            prop_assert!(bulkhead.in_flight() <= limit);
            prop_assert!(bulkhead.queued() <= queue);
        }
        prop_assert!(peak.load(Ordering::SeqCst) <= limit);
    }
}

#[tokio::test]
async fn a_full_bulkhead_without_a_queue_refuses_at_once_and_frees_slots() {
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut svc = BulkheadLayer::new(2, 0)
        .unwrap()
        .layer(callee(running.clone(), peak.clone()));
    let (tx1, rx1) = oneshot::channel();
    let (_tx2, rx2) = oneshot::channel();
    let first = tokio::spawn(svc.call(rx1));
    let second = tokio::spawn(svc.call(rx2));
    let (_tx3, rx3) = oneshot::channel();
    let err = svc.call(rx3).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<BulkheadFull>(),
        Some(&BulkheadFull {
            max_concurrent: 2,
            max_queue: 0
        })
    );
    tx1.send(()).unwrap();
    first.await.unwrap().unwrap();
    let (tx4, rx4) = oneshot::channel();
    tx4.send(()).unwrap();
    svc.call(rx4).await.expect("a slot was freed");
    second.abort();
    assert!(BulkheadLayer::new(0, 0).is_err());
}
