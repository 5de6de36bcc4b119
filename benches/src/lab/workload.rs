//! The load: open-loop arrivals, each sent at its intended time whatever happened to earlier
//! ones and measured from that time (no coordinated omission), or closed-loop callers; from
//! one client stack or many sharing the downstream.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use pin_project_lite::pin_project;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::time::{Instant, Sleep, sleep_until};
use tower::Service;

use crate::lab::metrics::{BreakerState, Failure, Outcome, RequestRecord, Trace};
use crate::lab::scenario::{Arrivals, Mode, Scenario, Workload};
use crate::lab::sim::{self, Call, Origin, Request, Response, Tap};

/// Reads a client's breaker state for a key; stacks without a breaker have none.
pub type BreakerProbe = Arc<dyn Fn(u32) -> BreakerState + Send + Sync>;

/// Reads how many endpoints a client has ejected; stacks without outlier ejection have none.
pub type EjectedProbe = Arc<dyn Fn() -> u32 + Send + Sync>;

/// One client's stack, ready to run.
pub struct Built<S> {
    /// The stack over the downstream.
    pub service: S,
    /// Reads the breaker's state for a key.
    pub breaker: Option<BreakerProbe>,
    /// Whether the breaker keeps one state per key (otherwise one for every key).
    pub keyed_breaker: bool,
    /// Reads how many endpoints the stack has ejected.
    pub ejected: Option<EjectedProbe>,
}

impl<S> std::fmt::Debug for Built<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Built")
            .field("breaker", &self.breaker.is_some())
            .field("keyed_breaker", &self.keyed_breaker)
            .finish_non_exhaustive()
    }
}

/// One open-loop request: when it is meant to be sent and by which client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Arrival {
    /// Nanoseconds from the start of the run.
    pub at: u64,
    /// The client sending it.
    pub client: u32,
}

/// The intended send times of an open-loop run, every client's merged in time order.
///
/// The total rate is split evenly between clients; each client's arrivals start at a random
/// offset (uniform within one of its gaps), so that clients do not send in lockstep, and a gap
/// that spans a rate step is rescaled at it.
pub fn arrivals(scenario: &Scenario, seed: u64) -> Vec<Arrival> {
    let w = &scenario.workload;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let end = scenario.duration.as_nanos() as f64;
    let clients = f64::from(w.clients);
    let mut plan = Vec::with_capacity((w.rate * scenario.duration.as_secs_f64() * 1.1) as usize);
    let mut steps: Vec<f64> = (w.phases.iter())
        .flat_map(|p| [p.start, p.end])
        .map(|d| d.as_nanos() as f64)
        .collect();
    steps.sort_by(f64::total_cmp);
    steps.dedup();
    for client in 0..w.clients {
        let gap = |t: f64, rng: &mut ChaCha8Rng| {
            let mean = 1e9 * clients / w.rate_at(Duration::from_nanos(t as u64));
            match w.arrivals {
                Arrivals::Uniform => mean,
                Arrivals::Poisson => -(1.0 - rng.random::<f64>()).ln() * mean,
            }
        };
        let offset = rng.random::<f64>() * gap(0.0, &mut rng);
        let mut t = across_steps(w, &steps, 0.0, offset);
        while t < end {
            plan.push(Arrival {
                at: t.round() as u64,
                client,
            });
            t = across_steps(w, &steps, t, gap(t, &mut rng));
        }
    }
    plan.sort_unstable();
    plan
}

/// Where a gap drawn at `t` at the rate there ends when it spans rate steps: what is left of
/// it at a step is scaled by the ratio of the gaps.
///
/// A client that kept its phase (the rest of its old gap unscaled) would bunch a fleet whose
/// phases are uniform: after a step from 1/s to 1.5/s a thousand clients send 1000/s for
/// two thirds of a second and then 2000/s. Scaled, uniform phases stay uniform, and Poisson
/// gaps become those of the new rate.
fn across_steps(w: &Workload, steps: &[f64], t: f64, gap: f64) -> f64 {
    let rate = |t: f64| w.rate_at(Duration::from_nanos(t as u64));
    let (mut from, mut next) = (t, t + gap);
    for &step in &steps[steps.partition_point(|&s| s <= t)..] {
        if step >= next {
            break;
        }
        next = step + (next - step) * rate(from) / rate(step);
        from = step;
    }
    next
}

/// The first call of each closed-loop caller: a random instant in the first 100 ms, and the
/// client it belongs to (callers are dealt to clients in turn).
pub fn callers(scenario: &Scenario, seed: u64) -> Vec<Arrival> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..scenario.workload.concurrency)
        .map(|caller| Arrival {
            at: rng.random_range(0..100_000_000),
            client: caller % scenario.workload.clients,
        })
        .collect()
}

pin_project! {
    struct Tagged<F> {
        id: u32,
        #[pin]
        fut: F,
    }
}

impl<F: Future> Future for Tagged<F> {
    type Output = (u32, F::Output);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        this.fut.poll(cx).map(|out| (*this.id, out))
    }
}

/// Where the next requests come from.
enum Source<'a> {
    Open {
        plan: &'a [Arrival],
        next: usize,
    },
    Closed {
        /// (intended send time, caller).
        due: BinaryHeap<Reverse<(u64, u32)>>,
        client_of: Vec<u32>,
        think: u64,
        end: u64,
        /// The caller of each request.
        caller_of: Vec<u32>,
    },
}

impl Source<'_> {
    fn next_due(&self) -> Option<u64> {
        match self {
            Self::Open { plan, next } => plan.get(*next).map(|a| a.at),
            Self::Closed { due, .. } => due.peek().map(|Reverse((t, _))| *t),
        }
    }

    /// The next request due at or before `now`: its intended time and client.
    fn pop_due(&mut self, now: u64) -> Option<(u64, u32)> {
        match self {
            Self::Open { plan, next } => {
                let a = plan.get(*next).filter(|a| a.at <= now)?;
                *next += 1;
                Some((a.at, a.client))
            }
            Self::Closed {
                due,
                client_of,
                caller_of,
                ..
            } => {
                let &Reverse((t, caller)) = due.peek().filter(|Reverse((t, _))| *t <= now)?;
                due.pop();
                caller_of.push(caller);
                Some((t, client_of[caller as usize]))
            }
        }
    }

    /// Request `id` was answered at `now` after `latency`: its caller calls again.
    fn answered(&mut self, id: u32, now: u64, latency: u64) {
        if let Self::Closed {
            due,
            think,
            end,
            caller_of,
            ..
        } = self
        {
            // A call answered at the instant it was sent waits 1 ms, so that an instant
            // rejection cannot loop forever on the paused clock.
            let wait = if latency == 0 {
                (*think).max(1_000_000)
            } else {
                *think
            };
            let next = now + wait;
            if next < *end {
                due.push(Reverse((next, caller_of[id as usize])));
            }
        }
    }
}

struct Driver<'a, S: Service<Request>> {
    clients: Vec<Built<S>>,
    keys: u32,
    start: Instant,
    hard_end: Instant,
    source: Source<'a>,
    records: Vec<RequestRecord>,
    next_key: Vec<u32>,
    backlog: Vec<VecDeque<u32>>,
    blocked: Vec<u32>,
    in_flight: FuturesUnordered<Tagged<S::Future>>,
}

impl<S> Driver<'_, S>
where
    S: Service<Request, Response = Response, Error = Failure>,
{
    fn elapsed(&self, now: Instant) -> u64 {
        now.duration_since(self.start).as_nanos() as u64
    }

    fn finish(&mut self, id: u32, now: u64, result: Result<Response, Failure>) {
        let record = &mut self.records[id as usize];
        record.latency = now - record.intended;
        record.outcome = match result {
            Ok(res) if *res.body() == Origin::Fallback => Outcome::Fallback,
            Ok(res) if res.status().is_success() => Outcome::Success,
            Ok(res) => Outcome::Failed(Failure::Status(res.status().as_u16())),
            Err(failure) => Outcome::Failed(failure),
        };
        let latency = record.latency;
        self.source.answered(id, now, latency);
    }

    /// Sends request `id` if its client is ready; `false` when the client is not.
    fn send(&mut self, id: u32, now: u64, cx: &mut Context<'_>) -> bool {
        let client = self.records[id as usize].client as usize;
        let stack = &mut self.clients[client];
        match stack.service.poll_ready(cx) {
            // The service wakes this task when it is ready; late requests keep their
            // intended times, so the wait shows in their latency.
            Poll::Pending => false,
            Poll::Ready(Err(failure)) => {
                self.finish(id, now, Err(failure));
                true
            }
            Poll::Ready(Ok(())) => {
                let record = &mut self.records[id as usize];
                if let Some(probe) = &stack.breaker {
                    record.breaker = probe(record.key);
                }
                if let Some(probe) = &stack.ejected {
                    record.ejected = probe();
                }
                let call = Call {
                    id,
                    key: record.key,
                    client: client as u32,
                };
                self.in_flight.push(Tagged {
                    id,
                    fut: stack.service.call(sim::request(call)),
                });
                true
            }
        }
    }

    fn poll(&mut self, mut timer: Pin<&mut Sleep>, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let now = Instant::now();
            let elapsed = self.elapsed(now);
            let mut i = 0;
            while i < self.blocked.len() {
                let client = self.blocked[i] as usize;
                while let Some(&id) = self.backlog[client].front() {
                    if !self.send(id, elapsed, cx) {
                        break;
                    }
                    self.backlog[client].pop_front();
                }
                if self.backlog[client].is_empty() {
                    self.blocked.swap_remove(i);
                } else {
                    i += 1;
                }
            }
            while let Some((intended, client)) = self.source.pop_due(elapsed) {
                let id = self.records.len() as u32;
                let key = self.next_key[client as usize];
                self.next_key[client as usize] = (key + 1) % self.keys;
                self.records.push(RequestRecord {
                    intended,
                    latency: 0,
                    outcome: Outcome::Unanswered,
                    attempts: 0,
                    key,
                    client,
                    breaker: BreakerState::Closed,
                    ejected: 0,
                });
                let c = client as usize;
                if !self.backlog[c].is_empty() {
                    self.backlog[c].push_back(id);
                } else if !self.send(id, elapsed, cx) {
                    self.blocked.push(client);
                    self.backlog[c].push_back(id);
                }
            }
            while let Poll::Ready(Some((id, result))) = self.in_flight.poll_next_unpin(cx) {
                self.finish(id, elapsed, result);
            }
            let waiting = !self.blocked.is_empty();
            let due = self.source.next_due();
            if (due.is_none() && self.in_flight.is_empty() && !waiting) || now >= self.hard_end {
                return Poll::Ready(());
            }
            let wake = due.map_or(self.hard_end, |t| {
                (self.start + Duration::from_nanos(t)).min(self.hard_end)
            });
            if wake <= now {
                continue;
            }
            if timer.deadline() != wake {
                timer.as_mut().reset(wake);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

/// Sends the scenario's load through `clients` (one stack per client), waits up to the
/// [drain](sim::drain) after the last request for answers, and returns what happened to
/// each request.
pub async fn drive<S>(clients: Vec<Built<S>>, scenario: &Scenario, seed: u64, tap: &Tap) -> Trace
where
    S: Service<Request, Response = Response, Error = Failure>,
{
    let start = Instant::now();
    let w = &scenario.workload;
    let keyed_breaker = clients.first().is_some_and(|c| c.keyed_breaker);
    let plan;
    let source = match w.mode {
        Mode::Open => {
            plan = arrivals(scenario, seed);
            Source::Open {
                plan: &plan,
                next: 0,
            }
        }
        Mode::Closed => {
            let starts = callers(scenario, seed);
            Source::Closed {
                due: starts
                    .iter()
                    .enumerate()
                    .map(|(caller, a)| Reverse((a.at, caller as u32)))
                    .collect(),
                client_of: starts.iter().map(|a| a.client).collect(),
                think: w.think.as_nanos() as u64,
                end: scenario.duration.as_nanos() as u64,
                caller_of: Vec::new(),
            }
        }
    };
    let n = clients.len();
    let mut driver = Driver {
        clients,
        keys: w.keys,
        start,
        hard_end: start + scenario.duration + sim::drain(scenario),
        source,
        records: Vec::new(),
        next_key: vec![0; n],
        backlog: vec![VecDeque::new(); n],
        blocked: Vec::new(),
        in_flight: FuturesUnordered::new(),
    };
    let mut timer = pin!(sleep_until(start));
    poll_fn(|cx| driver.poll(timer.as_mut(), cx)).await;

    let end = driver.elapsed(Instant::now());
    let tap = tap.report();
    let mut records = std::mem::take(&mut driver.records);
    for (id, record) in records.iter_mut().enumerate() {
        record.attempts = tap.attempts.get(id).copied().unwrap_or(0);
        if record.outcome == Outcome::Unanswered {
            record.latency = end.saturating_sub(record.intended);
        }
    }
    drop(driver);
    Trace {
        duration: scenario.duration,
        clients: w.clients,
        keyed_breaker,
        requests: records,
        attempts_per_second: tap.per_second,
        queue_wait_per_second: tap.queue_wait_per_second,
        max_in_flight: tap.max_in_flight,
        max_in_flight_per_client: tap.max_in_flight_per_client,
        early_retries: tap.early_retries,
        endpoint_fault: tap.endpoint_fault,
    }
}
