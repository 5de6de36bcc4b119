//! Deciding, call by call, what to inject: the schedule of phases, the dice and the capacity
//! model, all behind one lock so that a seed gives the same faults for the same calls.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;

use crate::capacity::CapacityModel;
use crate::config::{ChaosConfig, Faults, Phase};
use crate::latency::{Latency, sample};

/// What happens to one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Straight to the inner service.
    Pass,
    /// The inner service's answer is held until `until`; `slow` when a slow-call fault fired.
    Delay { until: Instant, slow: bool },
    /// An injected error.
    Error,
    /// Never answers.
    Hang,
    /// The responder answers.
    Respond,
    /// The capacity model's queue is full.
    QueueFull,
}

/// The faults in force and when: the usual ones and the phases, sorted by start.
#[derive(Debug, Clone)]
pub(crate) struct Schedule {
    pub(crate) epoch: Instant,
    faults: Faults,
    phases: Box<[Phase]>,
    latency: Option<Latency>,
}

impl Schedule {
    pub(crate) fn new(config: &ChaosConfig, epoch: Instant) -> Self {
        Self {
            epoch,
            faults: config.faults,
            phases: config.phases().into(),
            latency: config.latency,
        }
    }

    /// The faults in force at `now`: the first phase open then, or the usual ones (always
    /// before the epoch).
    pub(crate) fn faults_at(&self, now: Instant) -> &Faults {
        let Some(elapsed) = now.checked_duration_since(self.epoch) else {
            return &self.faults;
        };
        self.phases
            .iter()
            .take_while(|w| w.start <= elapsed)
            .find(|w| elapsed < w.end)
            .map_or(&self.faults, |w| &w.faults)
    }
}

#[derive(Debug)]
pub(crate) struct Injector {
    rng: ChaCha8Rng,
    capacity: Option<CapacityModel>,
}

impl Injector {
    pub(crate) fn new(config: &ChaosConfig, epoch: Instant) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            // Workers are free from now, even when the schedule's epoch lies ahead.
            capacity: config
                .capacity
                .map(|c| CapacityModel::new(c, epoch.min(Instant::now()))),
        }
    }

    pub(crate) fn queued(&mut self, now: Instant) -> usize {
        self.capacity.as_mut().map_or(0, |c| c.queued(now))
    }

    pub(crate) fn decide(&mut self, schedule: &Schedule, now: Instant) -> Decision {
        let faults = schedule.faults_at(now);
        if faults.error + faults.hang + faults.response > 0.0 {
            let roll: f64 = self.rng.random();
            if roll < faults.error {
                return Decision::Error;
            }
            if roll < faults.error + faults.hang {
                return Decision::Hang;
            }
            if roll < faults.error + faults.hang + faults.response {
                return Decision::Respond;
            }
        }
        let mut until = now;
        if let Some(latency) = &schedule.latency {
            let service = sample(latency, &mut self.rng);
            until = match &mut self.capacity {
                Some(capacity) => match capacity.admit(now, service) {
                    Ok(finish) => finish,
                    Err(_) => return Decision::QueueFull,
                },
                None => now + service,
            };
        }
        let mut slow = false;
        if faults.slow > 0.0
            && let Some(latency) = &faults.slow_latency
            && self.rng.random::<f64>() < faults.slow
        {
            until += sample(latency, &mut self.rng);
            slow = true;
        }
        if until > now {
            Decision::Delay { until, slow }
        } else {
            Decision::Pass
        }
    }
}
