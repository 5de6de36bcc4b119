use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::time::Duration;

use criterion::Criterion;
use seawall_bench::overhead::{Comparison, bare, yielding};
use tower::Layer;
use tower::retry::budget::{Budget, TpsBudget};

fn seawall() -> seawall_retry::RetryLayer {
    // The defaults: three attempts, exponential backoff with jitter, the 20 % budget.
    seawall_retry::RetryLayer::builder()
        .build()
        .expect("a valid retry configuration")
}

/// tower's retry with the policy its docs suggest: retry errors while the `TpsBudget` allows.
#[derive(Clone)]
struct BudgetedPolicy {
    budget: Arc<TpsBudget>,
}

impl<E> tower::retry::Policy<u64, u64, E> for BudgetedPolicy {
    type Future = Ready<()>;

    fn retry(&mut self, _req: &mut u64, result: &mut Result<u64, E>) -> Option<Self::Future> {
        match result {
            Ok(_) => {
                self.budget.deposit();
                None
            }
            Err(_) => self.budget.withdraw().then(|| ready(())),
        }
    }

    fn clone_request(&mut self, req: &u64) -> Option<u64> {
        Some(*req)
    }
}

fn tower() -> tower::retry::RetryLayer<BudgetedPolicy> {
    tower::retry::RetryLayer::new(BudgetedPolicy {
        budget: Arc::new(TpsBudget::default()),
    })
}

fn resilience() -> tower_resilience::retry::RetryLayer<u64, u64, Infallible> {
    tower_resilience::retry::RetryLayer::builder()
        .max_attempts(3)
        .exponential_backoff(Duration::from_millis(100))
        .build()
}

/// The success path, where no retry is needed: a call that answers on its first poll, then
/// one that waits once.
pub(crate) fn bench(c: &mut Criterion) {
    let rt = crate::runtime();
    let _guard = rt.enter();

    let mut cmp = Comparison::new(c, "retry");
    cmp.contender("bare", bare());
    cmp.contender("seawall", seawall().layer(bare()));
    cmp.contender("tower", tower().layer(bare()));
    cmp.contender("tower-resilience", resilience().layer(bare()));
    cmp.finish();

    let mut cmp = Comparison::new(c, "retry-pending");
    cmp.contender("bare", yielding());
    cmp.contender("seawall", seawall().layer(yielding()));
    cmp.contender("tower", tower().layer(yielding()));
    cmp.contender("tower-resilience", resilience().layer(yielding()));
    cmp.finish();
}
