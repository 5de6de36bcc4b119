//! A downstream's capacity: workers, a FIFO queue, and slowing down when the queue is long.
//!
//! The model is computed at arrival rather than simulated: each worker is known by the instant
//! it becomes free, so a call's start is the earliest of those (or now), its finish that plus
//! its service time. A call its caller abandons still takes its worker, as on a real server,
//! which never learns that the client gave up; that is what makes retries against an
//! overloaded service so costly.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use seawall_core::config::{self, ConfigError, Raw};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// A downstream with `workers` workers and a FIFO queue in front of them.
///
/// Each call takes a worker for its latency (the layer's `latency`); when every worker is
/// busy it waits its turn. While more than `degrade_above` calls wait, each new call is served
/// at `degraded` of the normal speed (a server thrashing under load). Beyond `queue_limit`
/// waiting calls, a new call fails at once.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "CapacitySpec", into = "CapacitySpec")]
pub struct Capacity {
    /// How many calls are served at once.
    pub workers: u32,
    /// How many calls may wait; unbounded when absent.
    pub queue_limit: Option<u32>,
    /// The queue depth past which the service slows down; never when absent.
    pub degrade_above: Option<u32>,
    /// The fraction of normal speed while degraded, in `(0, 1]`.
    pub degraded: f64,
}

/// A capacity model as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CapacitySpec {
    workers: Raw<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    queue_limit: Option<Raw<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    degrade_above: Option<Raw<u32>>,
    #[serde(default = "default_degraded")]
    degraded: Raw<f64>,
}

fn default_degraded() -> Raw<f64> {
    0.8.into()
}

impl TryFrom<CapacitySpec> for Capacity {
    type Error = ConfigError;

    fn try_from(spec: CapacitySpec) -> Result<Self, ConfigError> {
        const DEPTHS: &str = "[0, 4294967295]";
        Ok(Self {
            workers: spec.workers.value("workers", "[1, 1000000]")?,
            queue_limit: spec
                .queue_limit
                .map(|n| n.value("queue_limit", DEPTHS))
                .transpose()?,
            degrade_above: spec
                .degrade_above
                .map(|n| n.value("degrade_above", DEPTHS))
                .transpose()?,
            degraded: spec.degraded.value("degraded", "(0, 1]")?,
        })
    }
}

impl From<Capacity> for CapacitySpec {
    fn from(c: Capacity) -> Self {
        Self {
            workers: c.workers.into(),
            queue_limit: c.queue_limit.map(Raw::from),
            degrade_above: c.degrade_above.map(Raw::from),
            degraded: c.degraded.into(),
        }
    }
}

impl Capacity {
    /// `workers` workers, an unbounded queue, no degradation.
    pub const fn workers(workers: u32) -> Self {
        Self {
            workers,
            queue_limit: None,
            degrade_above: None,
            degraded: 0.8,
        }
    }

    /// At most `limit` calls wait.
    pub const fn queue_limit(mut self, limit: u32) -> Self {
        self.queue_limit = Some(limit);
        self
    }

    /// Serves at `degraded` of the normal speed while more than `depth` calls wait.
    pub const fn degrade_above(mut self, depth: u32, degraded: f64) -> Self {
        self.degrade_above = Some(depth);
        self.degraded = degraded;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        config::count_in("workers", self.workers, 1..=1_000_000)?;
        config::ratio("degraded", self.degraded)?;
        Ok(())
    }
}

/// The queue is full: the call is refused at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueFull;

#[derive(Debug)]
pub(crate) struct CapacityModel {
    config: Capacity,
    /// When each worker becomes free.
    free_at: BinaryHeap<Reverse<Instant>>,
    /// When each waiting call starts; those at or before now have left the queue.
    starts: BinaryHeap<Reverse<Instant>>,
}

impl CapacityModel {
    pub(crate) fn new(config: Capacity, epoch: Instant) -> Self {
        let workers = config.workers as usize;
        Self {
            config,
            free_at: std::iter::repeat_n(Reverse(epoch), workers).collect(),
            starts: BinaryHeap::new(),
        }
    }

    /// The number of calls waiting for a worker at `now`.
    pub(crate) fn queued(&mut self, now: Instant) -> usize {
        while self
            .starts
            .peek()
            .is_some_and(|Reverse(start)| *start <= now)
        {
            self.starts.pop();
        }
        self.starts.len()
    }

    /// Admits a call arriving at `now` that needs `service` of a worker's time, and returns
    /// when it finishes.
    pub(crate) fn admit(&mut self, now: Instant, service: Duration) -> Result<Instant, QueueFull> {
        let queued = self.queued(now);
        let Reverse(free) = *self.free_at.peek().expect("at least one worker");
        if free > now
            && let Some(limit) = self.config.queue_limit
            && queued >= limit as usize
        {
            return Err(QueueFull);
        }
        let service = match self.config.degrade_above {
            Some(depth) if queued > depth as usize => service.div_f64(self.config.degraded),
            _ => service,
        };
        let start = free.max(now);
        let finish = start + service;
        self.free_at.pop();
        self.free_at.push(Reverse(finish));
        if start > now {
            self.starts.push(Reverse(start));
        }
        Ok(finish)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn calls_wait_in_order_for_a_free_worker() {
        let t0 = Instant::now();
        let mut model = CapacityModel::new(Capacity::workers(2), t0);
        assert_eq!(model.admit(t0, 10 * MS), Ok(t0 + 10 * MS));
        assert_eq!(model.admit(t0, 10 * MS), Ok(t0 + 10 * MS));
        // Both workers busy: the third waits for the first to finish, the fourth for the second.
        assert_eq!(model.admit(t0, 10 * MS), Ok(t0 + 20 * MS));
        assert_eq!(model.admit(t0 + MS, 10 * MS), Ok(t0 + 20 * MS));
        assert_eq!(model.queued(t0 + MS), 2);
        assert_eq!(model.queued(t0 + 10 * MS), 0);
    }

    #[test]
    fn a_full_queue_refuses_and_a_long_one_slows_down() {
        let t0 = Instant::now();
        let capacity = Capacity::workers(1).queue_limit(2).degrade_above(0, 0.5);
        let mut model = CapacityModel::new(capacity, t0);
        assert_eq!(model.admit(t0, 10 * MS), Ok(t0 + 10 * MS));
        assert_eq!(model.admit(t0, 10 * MS), Ok(t0 + 20 * MS));
        // One call waits, more than `degrade_above`: this one is served at half speed.
        assert_eq!(model.admit(t0, 10 * MS), Ok(t0 + 40 * MS));
        assert_eq!(model.admit(t0, 10 * MS), Err(QueueFull));
    }

    mod reference {
        /// A tick-by-tick simulation of `workers` workers and a FIFO queue, in milliseconds:
        /// the finish time of each call `(arrival, service)`, given in order of arrival.
        pub(super) fn finishes(workers: usize, calls: &[(u64, u64)]) -> Vec<u64> {
            let mut finish = vec![0; calls.len()];
            let mut busy: Vec<u64> = Vec::new();
            let mut queue = std::collections::VecDeque::new();
            let mut next = 0;
            let mut t = 0;
            while next < calls.len() || !queue.is_empty() {
                while next < calls.len() && calls[next].0 == t {
                    queue.push_back(next);
                    next += 1;
                }
                busy.retain(|&f| f > t);
                while busy.len() < workers {
                    let Some(i) = queue.pop_front() else { break };
                    finish[i] = t + calls[i].1;
                    busy.push(finish[i]);
                }
                t += 1;
            }
            finish
        }
    }

    proptest::proptest! {
        #[test]
        fn matches_a_tick_by_tick_fifo_simulation(
            workers in 1u32..4,
            calls in proptest::collection::vec((0u64..5, 1u64..20), 1..60),
        ) {
            let t0 = Instant::now();
            let mut model = CapacityModel::new(Capacity::workers(workers), t0);
            let mut arrival = 0;
            let mut timed = Vec::new();
            let mut got = Vec::new();
            for (gap, service) in calls {
                arrival += gap;
                timed.push((arrival, service));
                let finish = model
                    .admit(t0 + MS * arrival as u32, MS * service as u32)
                    .unwrap();
                got.push((finish - t0).as_millis() as u64);
            }
            proptest::prop_assert_eq!(got, reference::finishes(workers as usize, &timed));
        }
    }
}
