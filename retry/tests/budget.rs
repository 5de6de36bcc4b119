//! The retry budget against a reference model, and under concurrency.

mod invariants;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use seawall_core::BoxError;
use seawall_core::backoff::{Backoff, Jitter};
use seawall_retry::{BudgetConfig, RetryBudget, RetryLayer};
use tokio::time::{Instant, advance};
use tower::{Layer, ServiceExt, service_fn};

#[derive(Debug, Clone, Copy)]
enum Op {
    Advance(u64),
    Deposit,
    Withdraw,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0u64..2500).prop_map(Op::Advance),
        4 => Just(Op::Deposit),
        4 => Just(Op::Withdraw),
    ]
}

fn budget_config() -> impl Strategy<Value = BudgetConfig> {
    (0u32..=100, 0u32..5, 1u64..=5).prop_map(|(percent, floor, ttl)| {
        BudgetConfig::new(f64::from(percent) / 100.0, floor, Duration::from_secs(ttl)).unwrap()
    })
}

/// The budget as a list of timestamped events, counted over the window each time.
struct Model {
    ratio_ppm: u64,
    reserve_ppm: u64,
    ttl: u64,
    deposits: Vec<u64>,
    withdrawals: Vec<u64>,
}

impl Model {
    fn new(config: &BudgetConfig) -> Self {
        let ttl = config.ttl().as_secs();
        Self {
            ratio_ppm: (config.ratio() * 1e6) as u64,
            reserve_ppm: u64::from(config.min_per_second()) * ttl * 1_000_000,
            ttl,
            deposits: Vec::new(),
            withdrawals: Vec::new(),
        }
    }

    fn in_window(&self, events: &[u64], now: u64) -> u64 {
        events.iter().filter(|&&s| s + self.ttl > now).count() as u64
    }

    fn withdraw(&mut self, now: u64) -> bool {
        let spent = self.in_window(&self.withdrawals, now) + 1;
        let allowed = self.ratio_ppm * self.in_window(&self.deposits, now) + self.reserve_ppm;
        let ok = spent * 1_000_000 <= allowed;
        if ok {
            self.withdrawals.push(now);
        }
        ok
    }
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

proptest! {
    #[test]
    fn the_budget_agrees_with_the_model_and_never_lends_more_than_ratio_plus_floor(
        config in budget_config(),
        ops in proptest::collection::vec(op(), 1..300),
    ) {
        paused_runtime().block_on(async {
            let budget = RetryBudget::new(config);
            let start = Instant::now();
            let mut model = Model::new(&config);
            for op in ops {
                let now = start.elapsed().as_secs();
                match op {
                    Op::Advance(ms) => advance(Duration::from_millis(ms)).await,
                    Op::Deposit => {
                        budget.deposit();
                        model.deposits.push(now);
                    }
                    Op::Withdraw => {
                        prop_assert_eq!(budget.withdraw(), model.withdraw(now), "at second {}", now);
                    }
                }
            }
            let seconds = start.elapsed().as_secs();
            let retries = model.withdrawals.len() as f64;
            let bound = config.ratio() * model.deposits.len() as f64
                + f64::from(config.min_per_second()) * (seconds + model.ttl) as f64;
            prop_assert!(retries <= bound, "{} retries > {}", retries, bound);
            Ok(())
        })?;
    }

    #[test]
    fn attempts_stay_within_max_attempts_and_retries_within_the_budget(
        config in budget_config(),
        max_attempts in 1u32..6,
        calls in proptest::collection::vec((0u64..1500, proptest::collection::vec(any::<bool>(), 1..6)), 1..60),
    ) {
        paused_runtime().block_on(async {
            let layer = RetryLayer::builder()
                .max_attempts(max_attempts)
                .backoff(Backoff::constant(Duration::from_millis(5)).jitter(Jitter::None).build().unwrap())
                .budget(config)
                .build()
                .unwrap();
            let start = Instant::now();
            let mut retries = 0u64;
            for (gap, outcomes) in &calls {
                advance(Duration::from_millis(*gap)).await;
                let attempts = Arc::new(AtomicU64::new(0));
                let seen = attempts.clone();
                let outcomes = outcomes.clone();
                let svc = layer.layer(service_fn(move |_: u32| {
                    let n = seen.fetch_add(1, Ordering::SeqCst) as usize;
                    let ok = outcomes.get(n).copied().unwrap_or(false);
                    std::future::ready(if ok { Ok(n) } else { Err::<usize, BoxError>("fail".into()) })
                }));
                let result = svc.oneshot(0).await;
                let made = attempts.load(Ordering::SeqCst);
                prop_assert!(made >= 1 && made <= u64::from(max_attempts));
                if let Ok(n) = result {
                    prop_assert_eq!(n as u64 + 1, made, "stops at the first success");
                }
                retries += made - 1;
            }
            let seconds = start.elapsed().as_secs();
            let bound = config.ratio() * calls.len() as f64
                + f64::from(config.min_per_second()) * (seconds + config.ttl().as_secs()) as f64;
            prop_assert!(retries as f64 <= bound, "{} retries > {}", retries, bound);
            Ok(())
        })?;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_withdrawals_never_overdraw() {
    let config = BudgetConfig::new(0.25, 3, Duration::from_secs(60)).unwrap();
    let budget = RetryBudget::new(config);
    let deposits = Arc::new(AtomicU64::new(0));
    let granted = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let (budget, deposits, granted) = (budget.clone(), deposits.clone(), granted.clone());
            tokio::spawn(async move {
                for i in 0..5_000u64 {
                    if (i + t) % 3 == 0 {
                        budget.deposit();
                        deposits.fetch_add(1, Ordering::SeqCst);
                    } else if budget.withdraw() {
                        granted.fetch_add(1, Ordering::SeqCst);
                    }
                    if i % 64 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    invariants::never_overdrawn(
        granted.load(Ordering::SeqCst),
        deposits.load(Ordering::SeqCst),
        budget.config(),
    );
    let deposits = deposits.load(Ordering::SeqCst) as f64;
    let granted = granted.load(Ordering::SeqCst) as f64;
    let bound = 0.25 * deposits + 3.0 * 60.0;
    assert!(
        granted >= bound - 8.0,
        "a budget with room left refused: {granted} of {bound}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_callers_of_a_failing_downstream_stay_within_the_budget() {
    let config = BudgetConfig::new(0.2, 10, Duration::from_secs(60)).unwrap();
    let layer = RetryLayer::builder()
        .max_attempts(5)
        .backoff(Backoff::constant(Duration::ZERO).build().unwrap())
        .budget(config)
        .build()
        .unwrap();
    let downstream = Arc::new(AtomicU64::new(0));
    let calls = downstream.clone();
    let svc = layer.layer(service_fn(move |_: u32| {
        calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Err::<u32, _>(std::io::Error::other("down")))
    }));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move {
                for i in 0..250 {
                    assert!(svc.clone().oneshot(i).await.is_err());
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let requests = 8.0 * 250.0;
    let downstream = downstream.load(Ordering::SeqCst) as f64;
    // Within one ttl: the ratio of the requests, plus the floor for the ttl.
    let bound = requests * 1.2 + 10.0 * 60.0;
    assert!(downstream <= bound, "{downstream} > {bound}");
}
