//! The retry budget against a reference model, and under concurrency.

mod invariants;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use seawall_core::BoxError;
use seawall_core::backoff::{Backoff, Jitter};
use seawall_core::testing::paused_runtime;
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
    (0u32..=100, 0u32..5, 1u64..=5, 1u64..=20).prop_map(|(percent, floor, ttl, quiet)| {
        BudgetConfig::new(f64::from(percent) / 100.0, floor, Duration::from_secs(ttl))
            .unwrap()
            .with_quiet_ttl(Duration::from_millis(quiet * 50).min(Duration::from_secs(ttl)))
            .unwrap()
    })
}

/// The budget as the module documents it, over lists of events stamped with their slot (a
/// tenth of `quiet_ttl`, at most a thousand over `ttl`): a ledger of credit that each request
/// adds `ratio` to, capped at what the requests of the window earned (the last `quiet_ttl`, or
/// while retries are wanted for `ratio` of the requests of the last `ttl`, since that began),
/// a whole retry taken for each grant (lent against later requests when the credit reached
/// only its threshold, where the window holds a whole retry), a part spent on a draw.
struct Model {
    ratio: f64,
    floor_per_slot: f64,
    quiet: u64,
    ttl: u64,
    slot_nanos: u64,
    deposits: Vec<u64>,
    wants: Vec<u64>,
    credit: f64,
    seen: usize,
    last_slot: u64,
    episode: Option<u64>,
    partial: f64,
}

/// What the model says of a withdrawal.
#[derive(Debug, PartialEq)]
enum Decision {
    Grant,
    Refuse,
    /// Only part of a retry is left, in a window that holds no whole one: granted with that
    /// probability, and spent either way.
    Maybe,
    /// Only part of a retry is left, in a window that holds a whole one: granted when it
    /// reached the budget's threshold, and a whole retry taken.
    Threshold,
}

impl Model {
    fn new(config: &BudgetConfig) -> Self {
        let quiet = config.quiet_ttl().as_nanos() as u64;
        let ttl = config.ttl().as_nanos() as u64;
        let slot_nanos = (quiet / 10).max(ttl.div_ceil(1000)).max(1);
        let quiet = quiet
            .div_ceil(slot_nanos)
            .clamp(1, ttl.div_ceil(slot_nanos));
        let floor_per_slot = f64::from(config.min_per_second()) * slot_nanos as f64 / 1e9;
        Self {
            ratio: config.ratio(),
            floor_per_slot,
            quiet,
            ttl: ttl.div_ceil(slot_nanos),
            slot_nanos,
            deposits: Vec::new(),
            wants: Vec::new(),
            credit: floor_per_slot * quiet as f64,
            seen: 0,
            last_slot: 0,
            episode: None,
            partial: 0.0,
        }
    }

    fn slot(&self, elapsed: Duration) -> u64 {
        elapsed.as_nanos() as u64 / self.slot_nanos
    }

    fn count(events: &[u64], from: u64, to: u64) -> u64 {
        events.iter().filter(|&&s| from <= s && s <= to).count() as u64
    }

    /// The decision on a withdrawal at `slot`; `granted` is what the budget did, which the
    /// model follows where it would draw.
    fn withdraw(&mut self, slot: u64) -> Decision {
        self.wants.push(slot);
        let ttl_from = (slot + 1).saturating_sub(self.ttl);
        let requests = Self::count(&self.deposits, ttl_from, slot);
        let wanted = Self::count(&self.wants, ttl_from, slot);
        if wanted as f64 >= self.ratio * requests as f64 {
            self.episode.get_or_insert(slot);
        } else {
            self.episode = None;
        }
        let length = match self.episode {
            None => self.quiet,
            Some(began) => self.ttl.min(slot - began + self.quiet),
        };
        let from = (slot + 1).saturating_sub(length);
        // Requests since the last withdrawal, within the ttl.
        let fresh = self.deposits[self.seen..]
            .iter()
            .filter(|&&s| s >= ttl_from)
            .count();
        self.seen = self.deposits.len();
        let earned =
            self.ratio * fresh as f64 + self.floor_per_slot * (slot - self.last_slot) as f64;
        self.last_slot = slot;
        let cap = self.ratio * Self::count(&self.deposits, from, slot) as f64
            + self.floor_per_slot * length as f64;
        self.credit = (self.credit + earned).min(cap);
        if self.credit >= 1.0 - 1e-9 {
            Decision::Grant
        } else if self.credit <= 1e-9 {
            Decision::Refuse
        } else if cap < 1.0 - 1e-9 {
            Decision::Maybe
        } else {
            Decision::Threshold
        }
    }

    fn granted(&mut self, decision: &Decision, granted: bool) {
        match decision {
            Decision::Grant => self.credit -= 1.0,
            Decision::Threshold if granted => self.credit -= 1.0,
            Decision::Threshold => {}
            Decision::Maybe => {
                self.partial += self.credit;
                self.credit = 0.0;
            }
            Decision::Refuse => {}
        }
    }
}

proptest! {
    #[test]
    fn the_budget_agrees_with_the_model_and_lends_at_most_what_it_earns(
        config in budget_config(),
        seed in any::<u64>(),
        ops in proptest::collection::vec(op(), 1..300),
    ) {
        paused_runtime().block_on(async {
            let budget = RetryBudget::seeded(config, seed);
            let start = Instant::now();
            let mut model = Model::new(&config);
            let (mut retries, mut draws) = (0.0f64, 0.0f64);
            for op in ops {
                let slot = model.slot(start.elapsed());
                match op {
                    Op::Advance(ms) => advance(Duration::from_millis(ms)).await,
                    Op::Deposit => {
                        budget.deposit();
                        model.deposits.push(slot);
                    }
                    Op::Withdraw => {
                        let expected = model.withdraw(slot);
                        let granted = budget.withdraw();
                        match expected {
                            Decision::Grant => prop_assert!(granted, "slot {}", slot),
                            Decision::Refuse => prop_assert!(!granted, "slot {}", slot),
                            Decision::Maybe | Decision::Threshold => draws += 1.0,
                        }
                        model.granted(&expected, granted);
                        retries += f64::from(u8::from(granted));
                    }
                }
            }
            // Every retry is paid for by the ratio of the requests and the floor of the time,
            // but for the draws on parts of retries, which grant their parts' worth on average,
            // and the one retry at most lent on a threshold and not repaid yet.
            let slots = model.slot(start.elapsed()) + model.quiet;
            let paid = config.ratio() * model.deposits.len() as f64
                + f64::from(config.min_per_second()) * (slots * model.slot_nanos) as f64 / 1e9;
            prop_assert!(
                retries <= paid + 2.0 * draws.sqrt() + 1.0,
                "{} retries > {} paid ({} draws)", retries, paid, draws
            );
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
                .seed(11)
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
            let seconds = start.elapsed().as_secs_f64();
            // Each call's retries are paid for by the ratio of the requests and the floor, and
            // partial retries granted on a draw even out: four standard deviations of at most
            // one draw per retry wanted, each of variance at most a quarter.
            let wanted = calls.len() as f64 * f64::from(max_attempts - 1);
            let bound = config.ratio() * calls.len() as f64
                + f64::from(config.min_per_second()) * (seconds + config.ttl().as_secs_f64())
                + 2.0 * wanted.sqrt()
                + 1.0;
            prop_assert!(retries as f64 <= bound, "{} retries > {}", retries, bound);
            Ok(())
        })?;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_withdrawals_never_overdraw() {
    // No ratio: only the floor's whole retries, so no withdrawal is ever granted on a draw.
    let config = BudgetConfig::new(0.0, 500, Duration::from_secs(60))
        .unwrap()
        .with_quiet_ttl(Duration::from_secs(60))
        .unwrap();
    let budget = RetryBudget::new(config);
    let granted = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (budget, granted) = (budget.clone(), granted.clone());
            tokio::spawn(async move {
                for i in 0..5_000u64 {
                    if budget.withdraw() {
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
    // 500 a second over the 60 s window: 30 000, of 40 000 wanted.
    let granted = granted.load(Ordering::SeqCst);
    invariants::never_overdrawn(granted, 0, &budget.config());
    assert!(
        granted >= 30_000 - 8,
        "a budget with room left refused: {granted} of 30000"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_callers_of_a_failing_downstream_stay_within_the_budget() {
    let config = BudgetConfig::new(0.2, 0, Duration::from_secs(60)).unwrap();
    let layer = RetryLayer::builder()
        .max_attempts(5)
        .seed(5)
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
    let requests: f64 = 8.0 * 250.0;
    let downstream = downstream.load(Ordering::SeqCst) as f64;
    // The ratio of the requests, and partial retries granted on draws evening out.
    let bound = requests * 1.2 + 2.0 * (requests * 4.0).sqrt();
    assert!(downstream <= bound, "{downstream} > {bound}");
}
