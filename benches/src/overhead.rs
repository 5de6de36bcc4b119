//! Driving a service one call at a time, the way the overhead benches and allocation tests do.

use std::fmt::Debug;
use std::future::{Future, Ready, ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use criterion::measurement::WallTime;
use std::hint::black_box;

use criterion::{BenchmarkGroup, Criterion};
use tower::Service;
use tower::util::{ServiceFn, service_fn};

use crate::alloc::counting;

/// The service every layer wraps: answers at once with its request.
pub type Bare = ServiceFn<fn(u64) -> Ready<Result<u64, std::convert::Infallible>>>;

/// A service that answers at once with its request.
pub fn bare() -> Bare {
    service_fn(|req| ready(Ok(req)))
}

/// A service whose calls return `Pending` once before answering with the request, as a call
/// that waits on I/O does; it shows the cost of a layer's timers and wakers.
pub type Yielding = ServiceFn<fn(u64) -> YieldOnce>;

/// A service whose calls return `Pending` once, then answer with the request.
pub fn yielding() -> Yielding {
    service_fn(|req| YieldOnce {
        value: req,
        yielded: false,
    })
}

/// The future of [`yielding`]: `Pending` on its first poll, then ready.
#[derive(Debug)]
pub struct YieldOnce {
    value: u64,
    yielded: bool,
}

impl Future for YieldOnce {
    type Output = Result<u64, std::convert::Infallible>;

    fn poll(mut self: std::pin::Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
        if std::mem::replace(&mut self.yielded, true) {
            Poll::Ready(Ok(self.value))
        } else {
            Poll::Pending
        }
    }
}

/// One call through `svc`, polled with a no-op waker: ready, call, and polls of the response
/// future until it is ready (at most a few: the services here never wait on anything real).
pub fn call_now<S, Req>(svc: &mut S, req: Req) -> S::Response
where
    S: Service<Req>,
    S::Error: Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        Poll::Ready(Err(err)) => panic!("service failed readiness: {err:?}"),
        Poll::Pending => panic!("service not ready at once"),
    }
    let mut call = pin!(svc.call(req));
    for _ in 0..4 {
        match call.as_mut().poll(&mut cx) {
            Poll::Ready(Ok(res)) => return res,
            Poll::Ready(Err(err)) => panic!("call failed: {err:?}"),
            Poll::Pending => {}
        }
    }
    panic!("call still pending after four polls")
}

/// Heap allocations per call through `svc`, averaged over `calls` calls after a warm-up.
pub fn allocations_per_call<S>(svc: &mut S, calls: u64) -> f64
where
    S: Service<u64>,
    S::Error: Debug,
{
    for i in 0..100 {
        call_now(svc, i);
    }
    let ((), n) = counting(|| {
        for i in 0..calls {
            black_box(call_now(svc, black_box(i)));
        }
    });
    n as f64 / calls as f64
}

/// A criterion group that compares contenders for one job, printing each one's allocations
/// per call beside criterion's timing.
pub struct Comparison<'a> {
    name: String,
    group: BenchmarkGroup<'a, WallTime>,
}

impl std::fmt::Debug for Comparison<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Comparison")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<'a> Comparison<'a> {
    /// A comparison named `name`.
    pub fn new(c: &'a mut Criterion, name: &str) -> Self {
        Self {
            name: name.to_owned(),
            group: c.benchmark_group(name),
        }
    }

    /// Measures `svc` as the contender `name`.
    pub fn contender<S>(&mut self, name: &str, mut svc: S)
    where
        S: Service<u64>,
        S::Error: Debug,
    {
        let allocs = allocations_per_call(&mut svc, 10_000);
        println!("{}/{name}: {allocs:.2} allocations per call", self.name);
        self.group.bench_function(name, |b| {
            b.iter(|| black_box(call_now(&mut svc, black_box(7))))
        });
    }

    /// Ends the comparison.
    pub fn finish(self) {
        self.group.finish();
    }
}
