//! A live retry layer takes new settings through its handle without losing its budget's
//! counts or failing a call in flight.

use std::future::{Ready, ready};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use seawall_core::BoxError;
use seawall_core::backoff::{Backoff, Jitter};
use seawall_retry::{BudgetConfig, RetryConfig, RetryLayer};
use tokio::time::advance;
use tower::{Layer, Service, ServiceExt, service_fn};

fn backoff(base: Duration) -> Backoff {
    Backoff::constant(base)
        .jitter(Jitter::None)
        .build()
        .unwrap()
}

fn config(max_attempts: u32, budget: Option<BudgetConfig>) -> RetryConfig {
    let builder = RetryConfig::builder()
        .name("db")
        .max_attempts(max_attempts)
        .backoff(backoff(Duration::ZERO));
    match budget {
        Some(budget) => builder.budget(budget),
        None => builder.no_budget(),
    }
    .build()
    .unwrap()
}

/// A downstream that counts its calls and answers as `ok` says.
fn counting(
    calls: &Arc<AtomicUsize>,
    ok: bool,
) -> impl Service<u32, Response = u32, Error = BoxError, Future = Ready<Result<u32, BoxError>>>
+ Clone
+ Send
+ 'static {
    let calls = calls.clone();
    service_fn(move |n: u32| {
        calls.fetch_add(1, Ordering::SeqCst);
        ready(if ok {
            Ok(n)
        } else {
            Err::<u32, BoxError>("down".into())
        })
    })
}

#[tokio::test(start_paused = true)]
async fn new_max_attempts_apply_to_the_next_call() {
    let (layer, handle) = RetryLayer::new(config(2, None)).pair();
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = layer.layer(counting(&calls, false));
    svc.clone().oneshot(1).await.unwrap_err();
    assert_eq!(calls.swap(0, Ordering::SeqCst), 2);

    handle.reload(config(4, None)).unwrap();
    assert_eq!(handle.config().max_attempts(), 4);
    svc.clone().oneshot(1).await.unwrap_err();
    assert_eq!(calls.swap(0, Ordering::SeqCst), 4, "raised");

    handle.reload(config(1, None)).unwrap();
    svc.oneshot(1).await.unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 1, "lowered to no retry");
}

#[tokio::test(start_paused = true)]
async fn a_lowered_budget_ratio_caps_the_credit_the_budget_already_holds() {
    let generous = BudgetConfig::new(0.5, 0, Duration::from_secs(10)).unwrap();
    let (layer, handle) = RetryLayer::new(config(10, Some(generous))).pair();
    let ok = Arc::new(AtomicUsize::new(0));
    for n in 0..9 {
        layer.layer(counting(&ok, true)).oneshot(n).await.unwrap();
    }
    assert_eq!(handle.config().budget().unwrap().ratio(), 0.5);

    let strict = BudgetConfig::new(0.1, 0, Duration::from_secs(10)).unwrap();
    handle.reload(config(10, Some(strict))).unwrap();
    assert_eq!(handle.config().budget(), Some(&strict));
    assert_eq!(layer.budget().unwrap().config(), strict);
    let failed = Arc::new(AtomicUsize::new(0));
    layer
        .layer(counting(&failed, false))
        .oneshot(1)
        .await
        .unwrap_err();
    // 10 requests at 10 % hold one whole retry and no part of one (a part could be lent a
    // retry by a draw): the 5 the old ratio had earned are capped.
    assert_eq!(failed.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_reload_that_would_change_what_cannot_change_is_refused_and_the_old_settings_stay() {
    let budget = BudgetConfig::new(0.2, 1, Duration::from_secs(10)).unwrap();
    let (_layer, handle) = RetryLayer::new(config(3, Some(budget))).pair();

    let other_name = config(5, Some(budget)).named("cache").unwrap();
    assert_eq!(handle.reload(other_name).unwrap_err().field(), "name");
    let seeded = RetryConfig::builder()
        .name("db")
        .max_attempts(5)
        .seed(7)
        .build()
        .unwrap();
    assert_eq!(handle.reload(seeded).unwrap_err().field(), "seed");
    let other_window = BudgetConfig::new(0.2, 1, Duration::from_secs(20)).unwrap();
    let err = handle.reload(config(5, Some(other_window))).unwrap_err();
    assert_eq!(err.field(), "budget.ttl");
    assert!(err.to_string().contains("10s"), "{err}");
    let quiet = budget.with_quiet_ttl(Duration::from_millis(500)).unwrap();
    let err = handle.reload(config(5, Some(quiet))).unwrap_err();
    assert_eq!(err.field(), "budget.quiet_ttl");
    assert_eq!(
        handle.reload(config(5, None)).unwrap_err().field(),
        "budget"
    );

    assert_eq!(handle.config(), config(3, Some(budget)));
    assert!(handle.check_reload(&config(5, Some(budget))).is_ok());
    assert_eq!(handle.config().max_attempts(), 3, "a check changes nothing");

    let (_layer, handle) = RetryLayer::new(config(3, None)).pair();
    assert_eq!(
        handle.reload(config(3, Some(budget))).unwrap_err().field(),
        "budget"
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_waiting_to_retry_across_a_reload_completes() {
    let slow = RetryConfig::builder()
        .name("db")
        .max_attempts(3)
        .backoff(backoff(Duration::from_secs(1)))
        .no_budget()
        .build()
        .unwrap();
    let (layer, handle) = RetryLayer::new(slow).pair();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let svc = layer.layer(service_fn(move |n: u32| {
        let first = counter.fetch_add(1, Ordering::SeqCst) == 0;
        ready(if first {
            Err::<u32, BoxError>("reset".into())
        } else {
            Ok(n)
        })
    }));
    let call = tokio::spawn(svc.oneshot(7));
    tokio::task::yield_now().await;
    assert_eq!(calls.load(Ordering::SeqCst), 1, "waiting for its retry");
    handle.reload(config(2, None)).unwrap();
    advance(Duration::from_secs(1)).await;
    assert_eq!(
        call.await.unwrap().unwrap(),
        7,
        "no call fails for a reload"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// Reloads racing calls on many threads: every call succeeds, under one setting or the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reloads_racing_calls_lose_no_call() {
    let (layer, handle) = RetryLayer::new(config(3, None)).pair();
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = layer.layer(counting(&calls, true));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..200 {
                assert_eq!(svc.clone().oneshot(n).await.unwrap(), n);
            }
        }));
    }
    for i in 0..100 {
        handle
            .reload(config(if i % 2 == 0 { 2 } else { 5 }, None))
            .unwrap();
        tokio::task::yield_now().await;
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(calls.load(Ordering::SeqCst), 800);
}
