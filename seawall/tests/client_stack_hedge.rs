//! Hedging in the client stack: off unless configured; when on, a slow call is answered by
//! its hedge, within the hedge budget, and only what the retry policy would send twice is.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use seawall::BoxError;
use seawall::hedge::HedgeConfig;
use seawall::retry::Idempotent;
use seawall::stack::{ClientStackConfig, ClientStackLayer};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

fn config(hedge: Option<serde_json::Value>) -> ClientStackConfig {
    let mut config = serde_json::json!({
        "name": "search",
        "total_timeout": "2s",
        "attempt_timeout": "1500ms",
        "retry": { "max_attempts": 2, "budget": null, "seed": 7 },
        "bulkhead": { "max_concurrent": 8 }
    });
    if let Some(hedge) = hedge {
        config["hedge"] = hedge;
    }
    serde_json::from_value(config).unwrap()
}

fn hedge_after_20ms() -> Option<serde_json::Value> {
    Some(serde_json::json!({ "delay": "20ms" }))
}

/// A request that says whether it may be sent twice.
#[derive(Debug, Clone, Copy)]
struct Op {
    idempotent: bool,
}

impl Idempotent for Op {
    fn is_idempotent(&self) -> bool {
        self.idempotent
    }
}

// Names no host: one breaker, whatever the stack's breaker key.
impl seawall::circuit_breaker::HasAuthority for Op {}

/// A dependency whose `slow`-th call (counting from 0) takes a second and every other 10 ms.
fn dependency(
    calls: &Arc<AtomicUsize>,
    slow: usize,
) -> impl Service<Op, Response = usize, Error = BoxError, Future = impl Send + use<>> + Clone + use<>
{
    let calls = calls.clone();
    service_fn(move |_: Op| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        async move {
            let ms = if n == slow { 1000 } else { 10 };
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, BoxError>(n)
        }
    })
}

const READ: Op = Op { idempotent: true };
const WRITE: Op = Op { idempotent: false };

#[test]
fn hedging_is_off_by_default_and_loads_from_its_section() {
    assert!(ClientStackConfig::default().hedge().is_none());
    assert!(config(None).hedge().is_none());
    let config = config(hedge_after_20ms());
    let hedge = config.hedge().expect("configured");
    assert_eq!(hedge.name(), "search");
    assert_eq!(hedge.max_attempts(), 2);
    // It serializes back to what it read.
    let again: ClientStackConfig =
        serde_json::from_value(serde_json::to_value(&config).unwrap()).unwrap();
    assert_eq!(again.hedge(), config.hedge());
    let err = serde_json::from_value::<ClientStackConfig>(serde_json::json!({
        "name": "x", "total_timeout": "1s", "attempt_timeout": "1s",
        "bulkhead": { "max_concurrent": 1 }, "hedge": { "max_attempts": 0 }
    }))
    .unwrap_err();
    assert!(err.to_string().contains("hedge.max_attempts"), "{err}");
}

#[test]
fn with_hedge_names_the_hedge_after_the_stack() {
    let config = ClientStackConfig::default()
        .with_hedge(HedgeConfig::default())
        .unwrap();
    assert_eq!(config.hedge().unwrap().name(), "client");
    assert!(ClientStackLayer::new(config).hedge().is_some());
    assert!(
        ClientStackLayer::new(ClientStackConfig::default())
            .hedge()
            .is_none()
    );
}

#[tokio::test(start_paused = true)]
async fn without_a_hedge_section_a_slow_call_is_sent_once() {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = ClientStackLayer::new(config(None)).layer(dependency(&calls, 20));
    for _ in 0..20 {
        svc.clone().oneshot(READ).await.unwrap();
    }
    let start = Instant::now();
    assert_eq!(svc.oneshot(READ).await.unwrap(), 20);
    assert_eq!(start.elapsed(), Duration::from_millis(1000));
    assert_eq!(calls.load(Ordering::SeqCst), 21);
}

#[tokio::test(start_paused = true)]
async fn a_slow_call_is_answered_by_its_hedge() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = ClientStackLayer::new(config(hedge_after_20ms()));
    let handle = layer.hedge().expect("the stack hedges");
    let svc = layer.layer(dependency(&calls, 20));
    // 20 calls earn the 10 % budget two hedges.
    for _ in 0..20 {
        svc.clone().oneshot(READ).await.unwrap();
    }
    assert_eq!(handle.budget_available(), 2);
    let start = Instant::now();
    // The first attempt (call 20) hangs; its hedge (call 21) answers 10 ms after the delay.
    assert_eq!(svc.oneshot(READ).await.unwrap(), 21);
    assert_eq!(start.elapsed(), Duration::from_millis(30));
    assert_eq!(calls.load(Ordering::SeqCst), 22);
    assert_eq!(handle.budget_available(), 1);
}

#[tokio::test(start_paused = true)]
async fn what_the_retry_policy_would_not_resend_is_not_hedged() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = ClientStackLayer::new(config(hedge_after_20ms()));
    let svc = layer.layer(dependency(&calls, 20));
    for _ in 0..20 {
        svc.clone().oneshot(READ).await.unwrap();
    }
    let start = Instant::now();
    assert_eq!(svc.oneshot(WRITE).await.unwrap(), 20);
    assert_eq!(start.elapsed(), Duration::from_millis(1000));
    assert_eq!(calls.load(Ordering::SeqCst), 21);
}

#[tokio::test(start_paused = true)]
async fn a_hedge_that_loses_is_not_a_breaker_failure() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = ClientStackLayer::new(config(hedge_after_20ms()));
    let breaker = layer.circuit_breaker();
    let svc = layer.layer(dependency(&calls, 20));
    for _ in 0..21 {
        svc.clone().oneshot(READ).await.unwrap();
    }
    // The hung first attempt was dropped when its hedge won: a cancellation, not a failure.
    let counts = breaker.counts();
    assert_eq!((counts.calls, counts.failures), (21, 0));
}
