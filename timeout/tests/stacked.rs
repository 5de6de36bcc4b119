//! A total timeout over an attempt timeout, as a client stack has them, on the paused clock:
//! which one ends a call, and when, whichever deadline is the earlier, and whatever the layers
//! between them do with the attempt.

use std::future::{Future, pending};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use seawall_core::testing::TestRecorder;
use seawall_core::{BoxError, Rejected, RejectionKind, rejected};
use seawall_timeout::TimeoutLayer;
use tokio::time::{Instant, sleep};
use tower::{Layer, Service, ServiceExt, service_fn};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn timeout(name: &str, timeout: Duration) -> TimeoutLayer {
    TimeoutLayer::builder()
        .name(name)
        .timeout(timeout)
        .build()
        .unwrap()
}

/// A service whose calls never finish.
fn hanging() -> impl Service<(), Response = (), Error = BoxError, Future: Send> + Clone + Send {
    service_fn(|()| async { pending::<Result<(), BoxError>>().await })
}

/// The layer that ended a call, its kind, and how long the call took; the call is given 10 s
/// of virtual time, so that a timer that never fires fails the test instead of hanging it.
async fn ended<S>(svc: S) -> (String, RejectionKind, Duration)
where
    S: Service<(), Response = (), Error = BoxError>,
{
    let start = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(10), svc.oneshot(()))
        .await
        .expect("no timeout fired within 10 s");
    let err = result.expect_err("the call should time out");
    let rejection: &Rejected = rejected(&*err).expect("a timeout is a rejection");
    (
        rejection.name().to_owned(),
        rejection.kind(),
        start.elapsed(),
    )
}

#[tokio::test(start_paused = true)]
async fn an_attempt_deadline_before_the_total_ends_the_call_as_the_attempt() {
    let svc = timeout("total", ms(500))
        .scoped()
        .layer(timeout("attempt", ms(300)).layer(hanging()));
    assert_eq!(
        ended(svc).await,
        ("attempt".into(), RejectionKind::TimedOut, ms(300))
    );
}

#[tokio::test(start_paused = true)]
async fn a_total_deadline_before_the_attempt_ends_the_call_as_the_total() {
    let svc = timeout("total", ms(200))
        .scoped()
        .layer(timeout("attempt", ms(300)).layer(hanging()));
    assert_eq!(
        ended(svc).await,
        ("total".into(), RejectionKind::TimedOut, ms(200))
    );
}

#[tokio::test(start_paused = true)]
async fn deadlines_at_the_same_instant_end_the_call_as_the_attempt() {
    // The total polls the attempt before its own timer: the attempt's answer comes first.
    let svc = timeout("total", ms(300))
        .scoped()
        .layer(timeout("attempt", ms(300)).layer(hanging()));
    assert_eq!(
        ended(svc).await,
        ("attempt".into(), RejectionKind::TimedOut, ms(300))
    );
}

#[tokio::test(start_paused = true)]
async fn a_scoped_timeout_between_takes_the_earlier_deadline_as_the_callers() {
    let inner = || timeout("inner", ms(400)).scoped();
    let svc = timeout("total", ms(500))
        .scoped()
        .layer(inner().layer(timeout("attempt", ms(300)).layer(hanging())));
    assert_eq!(
        ended(svc).await,
        ("attempt".into(), RejectionKind::TimedOut, ms(300))
    );
    let svc = timeout("total", ms(200))
        .scoped()
        .layer(inner().layer(timeout("attempt", ms(300)).layer(hanging())));
    assert_eq!(
        ended(svc).await,
        ("inner".into(), RejectionKind::DeadlineExceeded, ms(200)),
        "the inner timeout holds the total's deadline as its caller's"
    );
}

/// Between the two timeouts: a retry of every failed attempt, at once.
#[derive(Clone)]
struct Again<S>(S);

impl<S: Service<(), Error = BoxError> + Clone> Service<()> for Again<S> {
    type Response = S::Response;
    type Error = BoxError;
    type Future = AgainFuture<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, (): ()) -> Self::Future {
        AgainFuture {
            future: Box::pin(self.0.call(())),
            svc: self.0.clone(),
        }
    }
}

struct AgainFuture<S: Service<()>> {
    future: Pin<Box<S::Future>>,
    svc: S,
}

impl<S: Service<(), Error = BoxError>> Future for AgainFuture<S> {
    type Output = Result<S::Response, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        while let Poll::Ready(result) = self.future.as_mut().poll(cx) {
            if result.is_ok() {
                return Poll::Ready(result);
            }
            let next = self.svc.call(());
            self.future = Box::pin(next);
        }
        Poll::Pending
    }
}

impl<S: Service<()>> Unpin for AgainFuture<S> {}

#[tokio::test(start_paused = true)]
async fn a_retried_attempt_that_would_outlive_the_total_is_ended_by_the_total() {
    // Attempts at 0 and 300 ms; the second would end at 600, after the total's 500.
    let svc = timeout("total", ms(500))
        .scoped()
        .layer(Again(timeout("attempt", ms(300)).layer(hanging())));
    assert_eq!(
        ended(svc).await,
        ("total".into(), RejectionKind::TimedOut, ms(500))
    );
}

/// Between the two timeouts: polls the attempt once, then drops it, still waiting, and waits
/// on nothing that would ever wake the call.
struct Abandon<S>(S);

impl<S: Service<(), Error = BoxError>> Service<()> for Abandon<S> {
    type Response = S::Response;
    type Error = BoxError;
    type Future = AbandonFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, (): ()) -> Self::Future {
        AbandonFuture(Some(Box::pin(self.0.call(()))))
    }
}

struct AbandonFuture<F>(Option<Pin<Box<F>>>);

impl<F: Future> Future for AbandonFuture<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // Dropped pending, its timer with it, within the total's poll.
        if let Some(mut future) = self.0.take()
            && let Poll::Ready(output) = future.as_mut().poll(cx)
        {
            return Poll::Ready(output);
        }
        Poll::Pending
    }
}

#[tokio::test(start_paused = true)]
async fn an_attempt_dropped_while_waiting_leaves_the_total_to_fire() {
    let svc = timeout("total", ms(500))
        .scoped()
        .layer(Abandon(timeout("attempt", ms(300)).layer(hanging())));
    assert_eq!(
        ended(svc).await,
        ("total".into(), RejectionKind::TimedOut, ms(500))
    );
}

/// Between the two timeouts: once the attempt fails, waits on nothing that would ever wake the
/// call.
struct Swallow<S>(S);

impl<S: Service<(), Error = BoxError>> Service<()> for Swallow<S> {
    type Response = S::Response;
    type Error = BoxError;
    type Future = SwallowFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, (): ()) -> Self::Future {
        SwallowFuture(Box::pin(self.0.call(())))
    }
}

struct SwallowFuture<F>(Pin<Box<F>>);

impl<T, F: Future<Output = Result<T, BoxError>>> Future for SwallowFuture<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        match self.0.as_mut().poll(cx) {
            Poll::Ready(Ok(answer)) => Poll::Ready(Ok(answer)),
            Poll::Ready(Err(_)) | Poll::Pending => Poll::Pending,
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_attempt_followed_by_a_wait_without_a_timer_leaves_the_total_to_fire() {
    let svc = timeout("total", ms(500))
        .scoped()
        .layer(Swallow(timeout("attempt", ms(300)).layer(hanging())));
    assert_eq!(
        ended(svc).await,
        ("total".into(), RejectionKind::TimedOut, ms(500))
    );
}

#[tokio::test(start_paused = true)]
async fn the_total_records_the_budget_left_after_a_wait_under_an_attempt() {
    let recorder = TestRecorder::new();
    let (total, attempt) = recorder.install_for(|| {
        (
            timeout("total", ms(500)).scoped(),
            timeout("attempt", ms(300)),
        )
    });
    let downstream = service_fn(|wait: u64| async move {
        if wait > 0 {
            sleep(ms(wait)).await;
        }
        Ok::<_, BoxError>(())
    });
    let svc = total.layer(attempt.layer(downstream));
    for wait in [0, 100, 250] {
        svc.clone().oneshot(wait).await.unwrap();
    }
    assert_eq!(
        recorder.histogram("seawall_timeout_remaining_seconds", &[("name", "total")]),
        [0.5, 0.4, 0.25]
    );
    assert_eq!(
        recorder.histogram("seawall_timeout_remaining_seconds", &[("name", "attempt")]),
        [0.3, 0.2, 0.05]
    );
}

/// On the real clock, so that time passes within a call: the layers a scoped timeout calls
/// read the clock reading its deadline was counted from, and a call after it reads afresh.
#[test]
fn the_layers_a_scoped_timeout_calls_share_its_clock_reading() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let downstream = service_fn(move |()| {
        // A millisecond between the timeout's reading and this one, were they two.
        std::thread::sleep(ms(1));
        let deadline = seawall_core::Deadline::current().expect("called under the deadline");
        record
            .lock()
            .unwrap()
            .push((deadline.0, seawall_core::time::call_now()));
        std::future::ready(Ok::<_, BoxError>(()))
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut svc = timeout("total", ms(500)).scoped().layer(downstream);
    runtime.block_on(async {
        for _ in 0..2 {
            svc.ready().await.unwrap();
            svc.call(()).await.unwrap();
        }
    });
    let seen = seen.lock().unwrap();
    for &(deadline, now) in seen.iter() {
        assert_eq!(deadline, now + ms(500), "the timeout's own reading");
    }
    assert!(
        seen[1].1 > seen[0].1,
        "each call reads the clock once, afresh"
    );
}
