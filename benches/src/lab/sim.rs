//! The simulated downstream: an HTTP service with workers, a FIFO queue, a quota and the
//! scenario's faults, computed at each call's arrival in virtual time, and a tap that counts
//! what reaches it.
//!
//! Requests and responses are `http::Request<Call>` and `http::Response<Origin>`: a status and
//! headers (`Retry-After`) that the stacks' HTTP classifiers and retry policies read as they
//! would in production; the small bodies carry the lab's bookkeeping.
//!
//! A downstream of several endpoints (`downstream.endpoints`) gives each its own workers,
//! queue and latency draws; [`Downstream::endpoint`] is the service of one of them, and a
//! fault hits the endpoints it names. The quota is over all of them.
//!
//! What happens to a call arriving at `t` for a key at an endpoint, in this order:
//! 1. every fault active at `t` for the key and the endpoint draws its own die (in file
//!    order); `capacity` faults apply to every call of the endpoints they hit;
//! 2. a `hang` that hit: the call never returns and holds no worker;
//! 3. over the quota: `429` at once, with a `Retry-After`;
//! 4. an `error` or `status` that hit (the first in file order) without `error_cost`: that
//!    answer at once;
//! 5. otherwise the call waits for a worker (FIFO; workers beyond a `capacity` fault's number
//!    take no new call during its window): a full queue refuses it at once with `refuse`;
//!    it holds the worker for `error_cost` (a costly error), the latency ramp's value or the
//!    healthy latency (slower while the queue is past `degrade_above`);
//! 6. `slow` faults that hit delay the answer, holding no worker.
//!
//! A call its client abandons keeps its worker, as on a real server that never learns the
//! client gave up: that is what makes retries against an overloaded server so costly.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::RETRY_AFTER;
use http::{HeaderValue, StatusCode};
use pin_project_lite::pin_project;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use seawall_chaos::Latency;
use seawall_core::BoxError;
use seawall_retry::TryCloneBody;
use tokio::time::{Instant, Sleep, sleep_until};
use tower::Service;

use crate::lab::scenario::{Effect, Scenario, ramp_at};

/// A request's bookkeeping: its index in the run, its key (shard) and its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    /// Its index, in the order requests were sent.
    pub id: u32,
    /// The key it is for.
    pub key: u32,
    /// The client that sent it.
    pub client: u32,
}

impl TryCloneBody for Call {
    fn try_clone_body(&self) -> Option<Self> {
        Some(*self)
    }
}

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The downstream.
    Downstream,
    /// A stack's fallback, so that the lab tells fallback answers from the downstream's.
    Fallback,
}

/// A request to the downstream: `GET /` with its bookkeeping as body.
pub type Request = http::Request<Call>;

/// The downstream's (or a fallback's) answer.
pub type Response = http::Response<Origin>;

/// A request for `call`, to the host `key-<key>` (which a breaker per authority keys by).
pub fn request(call: Call) -> Request {
    let mut request = http::Request::new(call);
    *request.uri_mut() = format!("http://key-{}/", call.key)
        .parse()
        .expect("a valid URI");
    request
}

/// The authority of the requests for `key`.
pub fn authority(key: u32) -> http::uri::Authority {
    format!("key-{key}").parse().expect("a valid authority")
}

/// A fallback's answer, `200` marked as not the downstream's.
pub fn fallback_response() -> Response {
    http::Response::new(Origin::Fallback)
}

/// A transport error: the connection was reset before an answer came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionReset;

impl fmt::Display for ConnectionReset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("connection reset by the downstream")
    }
}

impl std::error::Error for ConnectionReset {}

/// What the downstream answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// `200 OK`.
    Ok,
    /// A [`ConnectionReset`].
    Reset,
    /// An error status, with a `Retry-After` in whole seconds.
    Status {
        /// The status code.
        code: u16,
        /// The `Retry-After`.
        retry_after: Option<Duration>,
    },
}

impl Reply {
    fn into_result(self) -> Result<Response, BoxError> {
        match self {
            Self::Ok => Ok(http::Response::new(Origin::Downstream)),
            Self::Reset => Err(Box::new(ConnectionReset)),
            Self::Status { code, retry_after } => {
                let mut res = http::Response::new(Origin::Downstream);
                *res.status_mut() = StatusCode::from_u16(code).expect("checked when read");
                if let Some(after) = retry_after {
                    res.headers_mut()
                        .insert(RETRY_AFTER, HeaderValue::from(after.as_secs()));
                }
                Ok(res)
            }
        }
    }

    fn retry_after(self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => retry_after,
            _ => None,
        }
    }
}

/// When a call is answered.
enum Plan {
    Now(Reply),
    At(Instant, Reply),
    Never,
}

/// A fault as the model applies it.
#[derive(Debug)]
struct ActiveFault {
    windows: Vec<(u64, u64)>,
    start: Duration,
    end: Duration,
    keys: u64,
    endpoints: u64,
    rate: f64,
    effect: Effect,
}

impl ActiveFault {
    fn active(&self, t: u64, key: u32, endpoint: u32) -> bool {
        self.keys & (1 << key) != 0
            && self.endpoints & (1 << endpoint) != 0
            && self.windows.iter().any(|&(s, e)| s <= t && t < e)
    }
}

#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: u64,
    retry_after: Option<Duration>,
}

impl Bucket {
    /// Takes a token at `t` ns, or says how long until there is one.
    fn take(&mut self, t: u64) -> Result<(), Duration> {
        let elapsed = t.saturating_sub(self.last) as f64 / 1e9;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = t;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - self.tokens) / self.rate).ceil().max(1.0);
            Err(self.retry_after.unwrap_or(Duration::from_secs(wait as u64)))
        }
    }
}

/// Workers and their FIFO queue, computed at arrival: each worker is known by the instant it
/// becomes free, and a call starts on the earliest one it may use.
#[derive(Debug)]
struct Workers {
    free_at: BinaryHeap<Reverse<(Instant, u32)>>,
    starts: BinaryHeap<Reverse<Instant>>,
    queue_limit: Option<u32>,
    degrade_above: Option<u32>,
    degraded: f64,
    /// `capacity` windows in ns from the epoch, with the workers left in each.
    limits: Vec<(u64, u64, u32)>,
}

impl Workers {
    fn queued(&mut self, now: Instant) -> usize {
        while self.starts.peek().is_some_and(|Reverse(s)| *s <= now) {
            self.starts.pop();
        }
        self.starts.len()
    }

    /// The earliest instant from `t` at which worker `i` may take a new call.
    fn usable_from(&self, epoch: Instant, i: u32, t: Instant) -> Instant {
        let mut at = t.duration_since(epoch).as_nanos() as u64;
        'search: loop {
            for &(s, e, workers) in &self.limits {
                if s <= at && at < e && i >= workers {
                    at = e;
                    continue 'search;
                }
            }
            return epoch + Duration::from_nanos(at);
        }
    }

    /// When a call arriving at `now` that needs `service` of a worker starts and finishes, or
    /// `None` when the queue is full.
    fn admit(
        &mut self,
        epoch: Instant,
        now: Instant,
        service: Duration,
    ) -> Option<(Instant, Instant)> {
        let queued = self.queued(now);
        loop {
            let Reverse((free, i)) = self.free_at.pop().expect("at least one worker");
            let start = free.max(now);
            let usable = self.usable_from(epoch, i, start);
            if usable > start {
                self.free_at.push(Reverse((usable, i)));
                continue;
            }
            if start > now
                && let Some(limit) = self.queue_limit
                && queued >= limit as usize
            {
                self.free_at.push(Reverse((free, i)));
                return None;
            }
            let service = match self.degrade_above {
                Some(depth) if queued > depth as usize => service.div_f64(self.degraded),
                _ => service,
            };
            let finish = start + service;
            self.free_at.push(Reverse((finish, i)));
            if start > now {
                self.starts.push(Reverse(start));
            }
            return Some((start, finish));
        }
    }
}

/// Draws a delay from `latency`.
pub fn sample(latency: &Latency, rng: &mut ChaCha8Rng) -> Duration {
    const MAX: f64 = seawall_core::config::MAX_DURATION.as_secs_f64();
    match *latency {
        Latency::Fixed { value } => value,
        Latency::Uniform { min, max } => {
            let u: f64 = rng.random();
            min + (max - min).mul_f64(u)
        }
        Latency::LongTail { median, p99 } => {
            // z of the 99th percentile of the standard normal distribution.
            const Z99: f64 = 2.326_347_874_040_841;
            let sigma = (p99.as_secs_f64() / median.as_secs_f64()).ln() / Z99;
            let (u1, u2): (f64, f64) = (rng.random(), rng.random());
            let z = (-2.0 * (1.0 - u1).ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            Duration::from_secs_f64((median.as_secs_f64() * (sigma * z).exp()).min(MAX))
        }
    }
}

/// What the tap saw, after the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapReport {
    /// Attempts that reached the downstream, per request id.
    pub attempts: Vec<u16>,
    /// Attempts per second of the run, by when they reached the downstream.
    pub per_second: Vec<u32>,
    /// The longest an attempt reaching the downstream in each second waited for a worker, in
    /// microseconds; empty for a downstream without workers.
    pub queue_wait_per_second: Vec<u64>,
    /// The most calls in flight at the downstream at once.
    pub max_in_flight: u32,
    /// The most calls in flight at once from one client.
    pub max_in_flight_per_client: u32,
    /// Retries (a request's second attempt or later) a client sent to a key before a
    /// `Retry-After` it had received for that key expired.
    pub early_retries: u64,
    /// Attempts each endpoint received.
    pub endpoint_attempts: Vec<u64>,
    /// Attempts each endpoint received during the fault span, and of them those it served
    /// with a success within the workload's deadline.
    pub endpoint_fault: Vec<(u64, u64)>,
}

#[derive(Debug)]
struct Model {
    epoch: Instant,
    latency: Latency,
    error_cost: Duration,
    refuse: Reply,
    faults: Vec<ActiveFault>,
    /// One stream per endpoint, the first from the downstream's seed.
    latency_rng: Vec<ChaCha8Rng>,
    fault_rng: ChaCha8Rng,
    /// One pool per endpoint.
    workers: Vec<Option<Workers>>,
    quota: Option<Bucket>,
    keys: u32,
    // The tap.
    attempts: Vec<u16>,
    per_second: Vec<u32>,
    queue_wait_per_second: Vec<u64>,
    in_flight: u32,
    max_in_flight: u32,
    client_in_flight: Vec<u32>,
    max_in_flight_per_client: u32,
    /// When each (client, key) may be retried, in ns from the epoch.
    not_before: Vec<u64>,
    early_retries: u64,
    endpoint_attempts: Vec<u64>,
    endpoint_fault: Vec<(u64, u64)>,
    /// The fault span in ns from the epoch, and the deadline, for `endpoint_fault`.
    span: Option<(u64, u64)>,
    deadline: Duration,
}

impl Model {
    fn since(&self, now: Instant) -> u64 {
        now.duration_since(self.epoch).as_nanos() as u64
    }

    fn record(&mut self, now: Instant, call: Call) {
        let id = call.id as usize;
        if id >= self.attempts.len() {
            self.attempts.resize(id + 1, 0);
        }
        let before = self.attempts[id];
        self.attempts[id] = before.saturating_add(1);
        let t = self.since(now);
        if before > 0 && t < self.not_before[self.slot(call)] {
            self.early_retries += 1;
        }
        if let Some(n) = self.per_second.get_mut((t / 1_000_000_000) as usize) {
            *n += 1;
        }
        self.in_flight += 1;
        self.max_in_flight = self.max_in_flight.max(self.in_flight);
        let c = &mut self.client_in_flight[call.client as usize];
        *c += 1;
        self.max_in_flight_per_client = self.max_in_flight_per_client.max(*c);
    }

    fn slot(&self, call: Call) -> usize {
        call.client as usize * self.keys as usize + call.key as usize
    }

    /// Plans the call, and counts it for its endpoint.
    fn plan(&mut self, now: Instant, call: Call, endpoint: u32) -> Plan {
        let plan = self.plan_at(now, call, endpoint);
        let e = endpoint as usize;
        self.endpoint_attempts[e] += 1;
        let t = self.since(now);
        if let Some((start, end)) = self.span
            && start <= t
            && t < end
        {
            let served = match plan {
                Plan::Now(Reply::Ok) => true,
                Plan::At(at, Reply::Ok) => at - now <= self.deadline,
                _ => false,
            };
            let counts = &mut self.endpoint_fault[e];
            counts.0 += 1;
            counts.1 += u64::from(served);
        }
        plan
    }

    fn plan_at(&mut self, now: Instant, call: Call, endpoint: u32) -> Plan {
        let t = self.since(now);
        let tt = Duration::from_nanos(t);
        let mut hang = false;
        let mut fail: Option<Reply> = None;
        let mut extra = Duration::ZERO;
        let mut ramp: Option<Duration> = None;
        for f in &self.faults {
            if matches!(f.effect, Effect::Capacity(_)) || !f.active(t, call.key, endpoint) {
                continue;
            }
            if f.rate < 1.0 && self.fault_rng.random::<f64>() >= f.rate {
                continue;
            }
            match f.effect {
                Effect::Hang => hang = true,
                Effect::Error => {
                    fail.get_or_insert(Reply::Reset);
                }
                Effect::Status { code, retry_after } => {
                    fail.get_or_insert(Reply::Status { code, retry_after });
                }
                Effect::Slow(latency) => extra += sample(&latency, &mut self.fault_rng),
                Effect::Ramp { from, to } => {
                    ramp.get_or_insert(ramp_at(from, to, f.start, f.end, tt));
                }
                Effect::Capacity(_) => {}
            }
        }
        if hang {
            return Plan::Never;
        }
        let answer = |at: Instant, reply: Reply| {
            if at <= now {
                Plan::Now(reply)
            } else {
                Plan::At(at, reply)
            }
        };
        if let Some(quota) = &mut self.quota
            && let Err(wait) = quota.take(t)
        {
            let reply = Reply::Status {
                code: 429,
                retry_after: Some(wait),
            };
            return answer(now + extra, reply);
        }
        if let Some(reply) = fail
            && self.error_cost.is_zero()
        {
            return answer(now + extra, reply);
        }
        let service = match (fail, ramp) {
            (Some(_), _) => self.error_cost,
            (None, Some(ramp)) => ramp,
            (None, None) => sample(&self.latency, &mut self.latency_rng[endpoint as usize]),
        };
        let finish = match &mut self.workers[endpoint as usize] {
            None => now + service,
            Some(workers) => match workers.admit(self.epoch, now, service) {
                Some((start, finish)) => {
                    let second = (t / 1_000_000_000) as usize;
                    if let Some(wait) = self.queue_wait_per_second.get_mut(second) {
                        *wait = (*wait).max((start - now).as_micros() as u64);
                    }
                    finish
                }
                None => return answer(now + extra, self.refuse),
            },
        };
        answer(finish + extra, fail.unwrap_or(Reply::Ok))
    }
}

/// The simulated downstream, or one of its endpoints; clones share it.
#[derive(Debug, Clone)]
pub struct Downstream {
    model: Arc<Mutex<Model>>,
    endpoint: u32,
    endpoints: u32,
}

impl Downstream {
    /// How many endpoints the downstream has.
    pub fn endpoints(&self) -> u32 {
        self.endpoints
    }

    /// The endpoint `i` alone (the first is the one a downstream of one endpoint is).
    pub fn endpoint(&self, i: u32) -> Self {
        assert!(i < self.endpoints, "endpoint {i} of {}", self.endpoints);
        Self {
            model: self.model.clone(),
            endpoint: i,
            endpoints: self.endpoints,
        }
    }

    /// Which endpoint this is.
    pub fn index(&self) -> u32 {
        self.endpoint
    }
}

/// Reads what the downstream's tap saw.
#[derive(Debug, Clone)]
pub struct Tap {
    model: Arc<Mutex<Model>>,
}

fn lock(model: &Mutex<Model>) -> MutexGuard<'_, Model> {
    model.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Tap {
    /// What it saw so far.
    pub fn report(&self) -> TapReport {
        let m = lock(&self.model);
        TapReport {
            attempts: m.attempts.clone(),
            per_second: m.per_second.clone(),
            queue_wait_per_second: m.queue_wait_per_second.clone(),
            max_in_flight: m.max_in_flight,
            max_in_flight_per_client: m.max_in_flight_per_client,
            early_retries: m.early_retries,
            endpoint_attempts: m.endpoint_attempts.clone(),
            endpoint_fault: m.endpoint_fault.clone(),
        }
    }
}

/// Builds the downstream of `scenario` with its own seeds (latency, faults), starting now,
/// and the tap that watches it.
///
/// `requests` is how many requests the run is expected to send (it grows past it),
/// `seconds` how long it lasts, drain included.
pub fn downstream(
    scenario: &Scenario,
    seeds: [u64; 2],
    requests: usize,
    seconds: usize,
) -> (Downstream, Tap) {
    let epoch = Instant::now();
    let ns = |d: Duration| d.as_nanos() as u64;
    let all_keys = if scenario.workload.keys >= 64 {
        u64::MAX
    } else {
        (1 << scenario.workload.keys) - 1
    };
    let faults: Vec<ActiveFault> = scenario
        .faults
        .iter()
        .map(|f| ActiveFault {
            windows: f.windows().map(|(s, e)| (ns(s), ns(e))).collect(),
            start: f.start,
            end: f.end,
            keys: f.keys.as_ref().map_or(all_keys, |keys| {
                keys.iter().fold(0, |bits, k| bits | 1 << k)
            }),
            endpoints: f.endpoints.as_ref().map_or(u64::MAX, |endpoints| {
                endpoints.iter().fold(0, |bits, e| bits | 1 << e)
            }),
            rate: f.rate,
            effect: f.effect,
        })
        .collect();
    let d = &scenario.downstream;
    let pool = |endpoint: u32| {
        d.workers.map(|n| Workers {
            free_at: (0..n).map(|i| Reverse((epoch, i))).collect(),
            starts: BinaryHeap::new(),
            queue_limit: d.queue_limit,
            degrade_above: d.degrade_above,
            degraded: d.degraded,
            limits: faults
                .iter()
                .filter(|f| f.endpoints & (1 << endpoint) != 0)
                .filter_map(|f| match f.effect {
                    Effect::Capacity(w) => Some(f.windows.iter().map(move |&(s, e)| (s, e, w))),
                    _ => None,
                })
                .flatten()
                .collect(),
        })
    };
    let workers = (0..d.endpoints).map(pool).collect();
    // The first endpoint draws from the downstream's seed, so that a downstream of one
    // endpoint is the same as before endpoints existed.
    let latency_rng = (0..d.endpoints)
        .map(|i| {
            ChaCha8Rng::seed_from_u64(
                seeds[0].wrapping_add(u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            )
        })
        .collect();
    let clients = scenario.workload.clients as usize;
    let model = Model {
        epoch,
        latency: d.latency,
        error_cost: d.error_cost,
        refuse: Reply::Status {
            code: d.refuse.status,
            retry_after: d.refuse.retry_after,
        },
        faults,
        latency_rng,
        fault_rng: ChaCha8Rng::seed_from_u64(seeds[1]),
        workers,
        quota: d.quota.map(|q| Bucket {
            rate: q.rate,
            burst: f64::from(q.burst),
            tokens: f64::from(q.burst),
            last: 0,
            retry_after: q.retry_after,
        }),
        keys: scenario.workload.keys,
        attempts: Vec::with_capacity(requests),
        per_second: vec![0; seconds],
        queue_wait_per_second: if d.workers.is_some() {
            vec![0; seconds]
        } else {
            Vec::new()
        },
        in_flight: 0,
        max_in_flight: 0,
        client_in_flight: vec![0; clients],
        max_in_flight_per_client: 0,
        not_before: vec![0; clients * scenario.workload.keys as usize],
        early_retries: 0,
        endpoint_attempts: vec![0; d.endpoints as usize],
        endpoint_fault: vec![(0, 0); d.endpoints as usize],
        span: scenario.span().map(|(s, e)| (ns(s), ns(e))),
        deadline: scenario.workload.deadline,
    };
    let model = Arc::new(Mutex::new(model));
    (
        Downstream {
            model: model.clone(),
            endpoint: 0,
            endpoints: d.endpoints,
        },
        Tap { model },
    )
}

impl Service<Request> for Downstream {
    type Response = Response;
    type Error = BoxError;
    type Future = DownstreamFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> DownstreamFuture {
        let call = *req.body();
        let now = Instant::now();
        let plan = {
            let mut m = lock(&self.model);
            m.record(now, call);
            m.plan(now, call, self.endpoint)
        };
        let guard = InFlight {
            model: self.model.clone(),
            call,
        };
        let state = match plan {
            Plan::Now(reply) => State::Now {
                reply: Some(reply),
                guard,
            },
            Plan::At(at, reply) => State::Later {
                sleep: sleep_until(at),
                reply,
                guard,
            },
            Plan::Never => State::Never { _guard: guard },
        };
        DownstreamFuture { state }
    }
}

/// Leaves the in-flight counts when the call ends or is dropped.
#[derive(Debug)]
struct InFlight {
    model: Arc<Mutex<Model>>,
    call: Call,
}

impl InFlight {
    /// The client received `reply`: a `Retry-After` on it holds that client's retries to the
    /// key.
    fn received(&self, reply: Reply) {
        if let Some(after) = reply.retry_after() {
            let mut m = lock(&self.model);
            let until = m.since(Instant::now()) + after.as_nanos() as u64;
            let slot = m.slot(self.call);
            m.not_before[slot] = m.not_before[slot].max(until);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut m = lock(&self.model);
        m.in_flight -= 1;
        m.client_in_flight[self.call.client as usize] -= 1;
    }
}

pin_project! {
    #[project = StateProj]
    #[derive(Debug)]
    enum State {
        Now { reply: Option<Reply>, guard: InFlight },
        Later { #[pin] sleep: Sleep, reply: Reply, guard: InFlight },
        Never { _guard: InFlight },
    }
}

pin_project! {
    /// A call to the downstream, counted in flight until it ends or is dropped.
    #[derive(Debug)]
    pub struct DownstreamFuture {
        #[pin]
        state: State,
    }
}

impl Future for DownstreamFuture {
    type Output = Result<Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Now { reply, guard } => {
                let reply = reply.take().expect("polled after completion");
                guard.received(reply);
                Poll::Ready(reply.into_result())
            }
            StateProj::Later {
                sleep,
                reply,
                guard,
            } => {
                std::task::ready!(sleep.poll(cx));
                guard.received(*reply);
                Poll::Ready(reply.into_result())
            }
            StateProj::Never { .. } => Poll::Pending,
        }
    }
}

/// How long after the last arrival the run waits for answers before calling the rest
/// unanswered: longer than any stack's worst case (the naive stack's four 1 s attempts), and
/// one second longer than the deadline.
pub fn drain(scenario: &Scenario) -> Duration {
    DRAIN.max(scenario.workload.deadline + Duration::from_secs(1))
}

/// The shortest drain.
pub const DRAIN: Duration = Duration::from_secs(5);
