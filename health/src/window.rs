//! The calls of the last seconds, in per-second buckets, judged once a second.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

use crate::config::RateConfig;
use crate::state::HealthState;
use crate::tracker::{ComponentHandle, Refresh};

const COUNT_BITS: u32 = 20;
const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;
const TAG_MASK: u64 = (1 << 24) - 1;

/// A bucket packs the second it counts (24 bits, plus one so that zero means empty), its
/// calls and its bad calls (20 bits each) into one word, so a call is counted with one
/// compare-and-swap and no lock.
fn pack(tag: u64, calls: u64, bad: u64) -> u64 {
    (tag << (2 * COUNT_BITS)) | (calls << COUNT_BITS) | bad
}

fn unpack(word: u64) -> (u64, u64, u64) {
    (
        word >> (2 * COUNT_BITS),
        (word >> COUNT_BITS) & COUNT_MAX,
        word & COUNT_MAX,
    )
}

fn tag_of(second: u64) -> u64 {
    (second + 1) & TAG_MASK
}

pub(crate) struct RateWindow {
    origin: Instant,
    buckets: Box<[AtomicU64]>,
    evaluated: AtomicU64,
    config: RateConfig,
    handle: ComponentHandle,
}

impl RateWindow {
    pub(crate) fn new(config: RateConfig, handle: ComponentHandle) -> Self {
        Self {
            origin: Instant::now(),
            buckets: (0..config.window_secs).map(|_| AtomicU64::new(0)).collect(),
            evaluated: AtomicU64::new(0),
            config,
            handle,
        }
    }

    pub(crate) fn config(&self) -> &RateConfig {
        &self.config
    }

    fn second(&self) -> u64 {
        Instant::now()
            .saturating_duration_since(self.origin)
            .as_secs()
    }

    /// Counts one call, and judges the window if a second has passed since it last did.
    pub(crate) fn record(&self, bad: bool) {
        let second = self.second();
        let bucket = &self.buckets[(second % self.buckets.len() as u64) as usize];
        let tag = tag_of(second);
        let mut word = bucket.load(Ordering::Relaxed);
        loop {
            let (seen, calls, bads) = unpack(word);
            let next = if seen == tag {
                pack(
                    tag,
                    (calls + 1).min(COUNT_MAX),
                    (bads + u64::from(bad)).min(COUNT_MAX),
                )
            } else {
                pack(tag, 1, u64::from(bad))
            };
            match bucket.compare_exchange_weak(word, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => break,
                Err(actual) => word = actual,
            }
        }
        self.judge_if_due(second);
    }

    /// Calls and bad calls in the complete seconds of the window before `second`.
    fn totals(&self, second: u64) -> (u64, u64) {
        let n = self.buckets.len() as u64;
        (second.saturating_sub(n)..second)
            .map(|s| {
                let (tag, calls, bad) =
                    unpack(self.buckets[(s % n) as usize].load(Ordering::Acquire));
                if tag == tag_of(s) {
                    (calls, bad)
                } else {
                    (0, 0)
                }
            })
            .fold((0, 0), |(c, b), (calls, bad)| (c + calls, b + bad))
    }

    fn judge_if_due(&self, second: u64) {
        let last = self.evaluated.load(Ordering::Acquire);
        if second <= last
            || self
                .evaluated
                .compare_exchange(last, second, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return;
        }
        let (calls, bad) = self.totals(second);
        let observation = self.judge(calls, bad);
        let detail = (observation != HealthState::Healthy).then(|| {
            format!(
                "{bad} of {calls} calls bad in the last {}s",
                self.buckets.len()
            )
        });
        // Each second since the last judgement is one observation of the window as it stands.
        for _ in 0..(second - last).min(self.buckets.len() as u64) {
            if !self.handle.observe(observation, detail.clone()) {
                return;
            }
        }
    }

    fn judge(&self, calls: u64, bad: u64) -> HealthState {
        if calls < u64::from(self.config.minimum_calls) {
            return HealthState::Healthy;
        }
        let rate = bad as f64 / calls as f64;
        if rate >= self.config.unhealthy_rate {
            HealthState::Unhealthy
        } else if rate >= self.config.degraded_rate {
            HealthState::Degraded
        } else {
            HealthState::Healthy
        }
    }
}

impl Refresh for RateWindow {
    fn refresh(&self) {
        self.judge_if_due(self.second());
    }
}

/// Registers a rate component in `tracker` and returns its window.
pub(crate) fn rate_component(
    tracker: &crate::HealthTracker,
    config: RateConfig,
) -> Arc<RateWindow> {
    Arc::new_cyclic(|weak: &std::sync::Weak<RateWindow>| {
        let refresh: std::sync::Weak<dyn Refresh> = weak.clone();
        let handle = tracker.register(config.component.clone(), Some(refresh));
        RateWindow::new(config, handle)
    })
}

/// What every clone of one layer's services shares: its component's window and the
/// classifier that judges each call.
pub(crate) struct Shared<C> {
    pub(crate) window: Arc<RateWindow>,
    pub(crate) classifier: C,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_round_trips() {
        assert_eq!(unpack(pack(5, 7, 3)), (5, 7, 3));
        assert_eq!(
            unpack(pack(TAG_MASK, COUNT_MAX, COUNT_MAX)),
            (TAG_MASK, COUNT_MAX, COUNT_MAX)
        );
    }
}
