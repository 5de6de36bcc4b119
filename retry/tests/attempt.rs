//! The attempt a retry layer is making, as the layers below read it while it calls them.

use std::future::{Ready, ready};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use seawall_core::backoff::{Backoff, Jitter};
use seawall_core::{Attempt, BoxError};
use seawall_retry::{BudgetConfig, RetryBudget, RetryLayer};
use tower::{Layer, Service, ServiceExt, service_fn};

/// A downstream that always fails, and notes the attempt current when it was called.
fn failing(
    seen: &Arc<Mutex<Vec<Option<Attempt>>>>,
) -> impl Service<u32, Response = u32, Error = BoxError, Future = Ready<Result<u32, BoxError>>>
+ Clone
+ Send
+ 'static {
    let seen = seen.clone();
    service_fn(move |_req: u32| {
        seen.lock().unwrap().push(Attempt::current());
        ready(Err::<u32, BoxError>("down".into()))
    })
}

fn backoff() -> Backoff {
    Backoff::constant(Duration::from_millis(10))
        .jitter(Jitter::None)
        .build()
        .unwrap()
}

fn attempt(number: u32, last: bool) -> Option<Attempt> {
    Some(Attempt { number, last })
}

#[tokio::test(start_paused = true)]
async fn each_attempt_is_current_with_its_number_and_the_last_is_marked() {
    let seen = Arc::default();
    let layer = RetryLayer::builder()
        .name("dep")
        .max_attempts(3)
        .backoff(backoff())
        .no_budget()
        .build()
        .unwrap();
    let _ = layer.layer(failing(&seen)).oneshot(1).await;
    assert_eq!(
        *seen.lock().unwrap(),
        [attempt(1, false), attempt(2, false), attempt(3, true)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_single_attempt_is_the_last() {
    let seen = Arc::default();
    let layer = RetryLayer::builder()
        .name("dep")
        .max_attempts(1)
        .build()
        .unwrap();
    let _ = layer.layer(failing(&seen)).oneshot(1).await;
    assert_eq!(*seen.lock().unwrap(), [attempt(1, true)]);
    assert_eq!(
        Attempt::current(),
        None,
        "only while the layers below are called"
    );
}

#[tokio::test(start_paused = true)]
async fn after_the_budget_refused_a_retry_every_attempt_is_the_last() {
    let seen = Arc::default();
    // No floor, and nine requests' credit and the first call's own: one whole retry and no
    // part, so the first call's second retry is refused for certain (with ten deposited, the
    // first call's tenth was lent a second retry whenever the drawn threshold fell under it:
    // CI run 4). The second call's own tenth may be lent one after its first attempt, which
    // this test does not look at.
    let budget = RetryBudget::new(BudgetConfig::new(0.1, 0, Duration::from_secs(10)).unwrap());
    for _ in 0..9 {
        budget.deposit();
    }
    let mut svc = RetryLayer::builder()
        .name("dep")
        .max_attempts(3)
        .backoff(backoff())
        .build()
        .unwrap()
        .with_budget(budget)
        .layer(failing(&seen));
    let _ = svc.ready().await.unwrap().call(1).await;
    let _ = svc.ready().await.unwrap().call(2).await;
    assert_eq!(
        seen.lock().unwrap()[..3],
        [attempt(1, false), attempt(2, false), attempt(1, true)],
        "the first call's second retry was refused, so the second call's attempt is the last"
    );
}
