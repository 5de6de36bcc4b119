//! What every clone of one throttle shares: the window, the random draws, the metric handles
//! and the hooks. Created once, when the layer is built.

use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use metrics::Gauge;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use seawall_core::classify::Outcome;
use seawall_core::metrics::{CallCounter, MetricScope};
use seawall_core::{BoxError, Hook, Rejected, RejectionKind};
use tokio::time::Instant;

use crate::config::ThrottleConfig;
use crate::event::{CallResult, RejectedEvent, ThrottlingChangedEvent};
use crate::window::{ThrottleCounts, Window};

/// The hooks of one throttle, shared by every clone of its layer and every handle.
#[derive(Default, Debug)]
pub(crate) struct Hooks {
    pub(crate) on_rejected: Hook<RejectedEvent<'static>>,
    pub(crate) on_throttling: Hook<ThrottlingChangedEvent<'static>>,
}

/// Random draws in `[0, 1)` that every clone takes from one seeded ChaCha8 stream: draw `n`
/// is the stream's `n`-th 64-bit word, so no generator state needs a lock.
struct Draws {
    rng: ChaCha8Rng,
    next: AtomicU64,
}

impl Draws {
    fn next(&self) -> f64 {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut rng = self.rng.clone();
        rng.set_word_pos(u128::from(n) * 2);
        (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl fmt::Debug for Draws {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Draws")
            .field("drawn", &self.next.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) name: Arc<str>,
    pub(crate) window: Window,
    accept_failures: bool,
    draws: Draws,
    /// Whether the last admission saw a rejection probability above zero.
    throttling: AtomicBool,
    calls: [CallCounter; 5],
    probability: Gauge,
    pub(crate) hooks: Hooks,
}

impl State {
    pub(crate) fn new(config: &ThrottleConfig) -> Self {
        let metrics = MetricScope::new(config.name.clone());
        let calls = metrics
            .call_counters::<CallResult, { CallResult::ALL.len() }>("seawall_throttle_calls_total");
        let probability = metrics.gauge("seawall_throttle_rejection_probability", &[]);
        probability.set(0.0);
        let seed = config
            .seed
            .unwrap_or_else(|| RandomState::new().hash_one(config.name.as_ptr()));
        Self {
            name: config.name.clone().into(),
            window: Window::new(
                config.window,
                config.max_window,
                config.min_requests,
                config.multiplier,
                Instant::now(),
            ),
            accept_failures: config.accept_failures,
            draws: Draws {
                rng: ChaCha8Rng::seed_from_u64(seed),
                next: AtomicU64::new(0),
            },
            throttling: AtomicBool::new(false),
            calls,
            probability,
            hooks: Hooks::default(),
        }
    }

    /// Lets a call through, or answers it with the throttle's rejection.
    #[inline]
    pub(crate) fn admit(&self) -> Result<(), BoxError> {
        // Decay scales requests and accepts alike: whether requests exceed K × accepts reads
        // the same before it, so this needs no clock.
        if self.window.may_reject() {
            return self.draw();
        }
        if self.throttling.load(Ordering::Relaxed) {
            self.throttling_changed(false, 0.0);
        }
        Ok(())
    }

    /// Rejects with the current probability; a rejection counts as a request without accept.
    #[cold]
    #[inline(never)]
    fn draw(&self) -> Result<(), BoxError> {
        let now = Instant::now();
        if self.window.advance(now) {
            self.publish();
        }
        let probability = self.probability_at(now);
        if probability <= 0.0 {
            // Accepts came in since the window was read, or the downstream refused nothing
            // lately.
            return Ok(());
        }
        if !self.throttling.load(Ordering::Relaxed) {
            self.throttling_changed(true, probability);
        }
        if self.draws.next() >= probability {
            return Ok(());
        }
        self.window.add(false);
        self.calls[CallResult::Rejected.index()].increment(1);
        tracing::debug!(rejected_by = %self.name, rejection = "throttled", probability, "call rejected");
        self.hooks.on_rejected.call(RejectedEvent {
            name: &self.name,
            probability,
        });
        Err(Rejected::new(RejectionKind::Throttled, self.name.clone()).into())
    }

    /// Counts how a call let through ended.
    #[inline]
    pub(crate) fn record(&self, outcome: Outcome) {
        let (result, accepted) = match outcome {
            Outcome::Success => (CallResult::Success, true),
            Outcome::Failure => (CallResult::Failure, self.accept_failures),
            Outcome::Overload => (CallResult::Overload, false),
            Outcome::Ignored => (CallResult::Ignored, false),
        };
        let decayed = match result {
            CallResult::Ignored => false,
            _ if accepted => self.window.record(true, Instant::now),
            _ => {
                let now = Instant::now();
                self.window.refused_at(now);
                self.window.record(false, || now)
            }
        };
        if decayed {
            self.publish();
        }
        self.calls[result.index()].increment(1);
        tracing::trace!(name = %self.name, result = result.as_str(), "call recorded");
    }

    /// The probability a call made at `now` is rejected with: the SRE book's on the window
    /// decayed to `now`, while the downstream refused a call lately; 0 otherwise.
    pub(crate) fn probability_at(&self, now: Instant) -> f64 {
        if !self.window.refused_lately(now) {
            return 0.0;
        }
        self.window
            .counts_at(now)
            .rejection_probability(self.window.multiplier())
    }

    /// Sets the gauge after the window decayed, once per tick at most.
    #[cold]
    fn publish(&self) {
        self.probability.set(self.probability_at(Instant::now()));
    }

    #[cold]
    #[inline(never)]
    fn throttling_changed(&self, throttling: bool, probability: f64) {
        if self.throttling.swap(throttling, Ordering::AcqRel) == throttling {
            return;
        }
        self.probability.set(probability);
        let counts = self.window.counts();
        if throttling {
            tracing::info!(
                name = %self.name,
                probability,
                requests = counts.requests,
                accepts = counts.accepts,
                "throttling started: the downstream refuses too much of its load"
            );
        } else {
            tracing::info!(name = %self.name, "throttling stopped");
        }
        self.hooks.on_throttling.call(ThrottlingChangedEvent {
            name: &self.name,
            throttling,
            probability,
        });
    }

    /// The counts decayed to now.
    pub(crate) fn counts_now(&self) -> ThrottleCounts {
        self.window.counts_at(Instant::now())
    }

    pub(crate) fn is_throttling(&self) -> bool {
        self.throttling.load(Ordering::Relaxed)
    }
}

/// Everything one layer's services share: the throttle and the classifier.
pub(crate) struct Shared<C> {
    pub(crate) state: Arc<State>,
    pub(crate) classify: C,
}
