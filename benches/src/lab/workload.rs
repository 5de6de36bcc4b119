//! Open-loop load: request i is sent at its intended time whatever happened to the earlier
//! ones, and its latency is measured from that time, so a stack that stalls its caller cannot
//! hide the stall (no coordinated omission).

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use pin_project_lite::pin_project;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::time::{Instant, sleep_until};
use tower::Service;

use crate::lab::metrics::{BreakerState, Failure, Outcome, RequestRecord, Trace};
use crate::lab::scenario::{Arrivals, Scenario};
use crate::lab::sim::{DRAIN, FALLBACK, Request, Response, Tap};

/// Reads a stack's breaker state for a key; stacks without a breaker have none.
pub type BreakerProbe = Arc<dyn Fn(u32) -> BreakerState + Send + Sync>;

/// The intended send times of a run, in nanoseconds from its start.
pub fn arrivals(scenario: &Scenario, seed: u64) -> Vec<u64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let end = scenario.duration.as_nanos() as f64;
    let mut times = Vec::with_capacity(
        (scenario.workload.rate * scenario.duration.as_secs_f64() * 1.6) as usize,
    );
    let mut t = 0.0_f64;
    while t < end {
        times.push(t.round() as u64);
        let rate = scenario.workload.rate_at(Duration::from_nanos(t as u64));
        let gap = match scenario.workload.arrivals {
            Arrivals::Uniform => 1e9 / rate,
            Arrivals::Poisson => -(1.0 - rng.random::<f64>()).ln() * 1e9 / rate,
        };
        t += gap;
    }
    times
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

/// Sends every request of `plan` through `service` at its intended time, waits up to
/// [`DRAIN`] after the last for answers, and returns what happened to each.
pub async fn drive<S>(
    mut service: S,
    breaker: Option<BreakerProbe>,
    scenario: &Scenario,
    plan: &[u64],
    tap: &Tap,
) -> Trace
where
    S: Service<Request, Response = Response, Error = Failure>,
{
    let start = Instant::now();
    let keys = scenario.workload.keys;
    let mut records: Vec<RequestRecord> = plan
        .iter()
        .enumerate()
        .map(|(id, &intended)| RequestRecord {
            intended,
            latency: 0,
            outcome: Outcome::Unanswered,
            attempts: 0,
            key: id as u32 % keys,
            breaker: BreakerState::Closed,
        })
        .collect();
    let hard_end = start + scenario.duration + DRAIN;
    let mut in_flight = FuturesUnordered::new();
    let mut next = 0usize;
    let mut timer = pin!(sleep_until(start));
    let at = |ns: u64| start + Duration::from_nanos(ns);

    poll_fn(|cx| {
        loop {
            let now = Instant::now();
            let elapsed = now.duration_since(start).as_nanos() as u64;
            let mut blocked = false;
            while next < plan.len() && plan[next] <= elapsed {
                match service.poll_ready(cx) {
                    Poll::Pending => {
                        // The service wakes this task when it is ready; late requests keep
                        // their intended times, so the wait shows in their latency.
                        blocked = true;
                        break;
                    }
                    Poll::Ready(Err(failure)) => {
                        let record = &mut records[next];
                        record.outcome = Outcome::Failed(failure);
                        record.latency = elapsed - record.intended;
                    }
                    Poll::Ready(Ok(())) => {
                        let record = &mut records[next];
                        if let Some(probe) = &breaker {
                            record.breaker = probe(record.key);
                        }
                        let req = Request {
                            id: next as u32,
                            key: record.key,
                        };
                        in_flight.push(Tagged {
                            id: req.id,
                            fut: service.call(req),
                        });
                    }
                }
                next += 1;
            }
            while let Poll::Ready(Some((id, result))) = in_flight.poll_next_unpin(cx) {
                let record = &mut records[id as usize];
                record.latency = elapsed - record.intended;
                record.outcome = match result {
                    Ok(FALLBACK) => Outcome::Fallback,
                    Ok(_) => Outcome::Success,
                    Err(failure) => Outcome::Failed(failure),
                };
            }
            let done_sending = next >= plan.len();
            if (done_sending && in_flight.is_empty()) || now >= hard_end {
                return Poll::Ready(());
            }
            let wake = if done_sending || blocked {
                hard_end
            } else {
                at(plan[next])
            };
            if timer.deadline() != wake {
                timer.as_mut().reset(wake);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    })
    .await;

    let end = Instant::now().duration_since(start).as_nanos() as u64;
    for (id, record) in records.iter_mut().enumerate() {
        record.attempts = tap.attempts(id as u32);
        if record.outcome == Outcome::Unanswered {
            record.latency = end.saturating_sub(record.intended);
        }
    }
    drop(in_flight);
    Trace {
        duration: scenario.duration,
        requests: records,
        attempts_per_second: tap.per_second(),
        max_in_flight: tap.max_in_flight(),
    }
}
