use std::marker::PhantomData;
use std::ops::RangeInclusive;
use std::time::Duration;

use seawall_core::Name;
use seawall_core::backoff::Backoff;
use seawall_core::config::{self, ConfigError, MAX_DURATION, Raw};
use serde::{Deserialize, Deserializer, Serialize};

const DEFAULT_NAME: &str = "circuit_breaker";
const MAX_WINDOW_CALLS: u32 = 100_000;
const MAX_WINDOW_SECS: u64 = 3600;
const MAX_PROBES: u32 = 1000;
const MAX_CONSECUTIVE: u32 = 1_000_000;
const MAX_KEYS: usize = 1_000_000;
const DEFAULT_MAX_KEYS: usize = 10_000;
/// What the breakers of one keyed layer may hold at most: `max_keys ×` [`key_bytes`].
const MAX_KEYED_BYTES: u64 = 256 << 20;
const DEFAULT_HINTED_OPEN_MIN: Duration = Duration::from_secs(1);
const DEFAULT_HINTED_OPEN_MAX: Duration = Duration::from_secs(300);
// Nygard's "Release It!" trips on a handful of failures in a row; five is the most the
// issue "One default stack" allows a client to send to a dead downstream.
const DEFAULT_RUN_MIN: u32 = 5;
// One false trip in ten million calls: a day of a client at 100 calls a second.
const DEFAULT_RUN_ONE_IN: u64 = 10_000_000;
const MAX_RUN_MIN: u32 = 100;
// Open 1 s, then 2 s, then 3 s while probes keep failing, each stretched by up to a quarter:
// at most 3.75 s between probes, so a client uses a downstream that came back within 5 s of
// its return (Polly's default break duration is 5 s), and a probe a second at most.
const DEFAULT_OPEN_BASE: Duration = Duration::from_secs(1);
const DEFAULT_OPEN_CAP: Duration = Duration::from_secs(3);
const DEFAULT_OPEN_JITTER: f64 = 0.25;
// At 30 % errors, 5 of 10 probes succeed 95 % of the time: one false trip in a brownout costs
// one open duration, not the whole brownout (0.7^10 = 2.8 % for all ten).
const DEFAULT_HALF_OPEN_SUCCESS_RATIO: f64 = 0.5;
const MAX_RUN_ONE_IN: u64 = 1_000_000_000_000_000;
// Three standard deviations: a 100-call window at 40 % errors against a 50 % threshold then
// trips about once in ten million calls (as the run rule's `one_in`), where the bare threshold
// trips once in 300 (see `noise_margin`).
const DEFAULT_NOISE_MARGIN: f64 = 3.0;
const MAX_NOISE_MARGIN: f64 = 10.0;
const DEFAULT_HALF_OPEN_MAX_WAIT: Duration = Duration::from_secs(60);

/// Which calls the failure and slow-call rates are computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Window {
    /// The last `n` calls.
    Count(u32),
    /// The calls of the last whole seconds, kept in one bucket per second.
    Time(#[serde(with = "config::duration")] Duration),
}

/// A window as written: `{ count = 50 }` or `{ time = "10s" }`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum WindowSpec {
    Count(Raw<u32>),
    Time(Raw<Duration>),
}

impl From<Window> for WindowSpec {
    fn from(window: Window) -> Self {
        match window {
            Window::Count(n) => Self::Count(n.into()),
            Window::Time(span) => Self::Time(span.into()),
        }
    }
}

/// How long the breaker stays open before it lets probes through.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OpenDuration {
    /// The same time on every opening.
    Fixed(Duration),
    /// Growing with each re-opening that follows no full recovery, jittered, capped and never
    /// under the base.
    Backoff(Backoff),
}

/// How many failures in a row trip the breaker, whatever the window holds.
///
/// "In a row" is in admission order: calls admitted one after another that all failed (calls
/// whose outcome is ignored or that were cancelled left out). A call still in flight between
/// two failures keeps them apart until it ends; a success that comes back late from a call
/// admitted before the run does not end it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ConsecutiveFailures {
    /// Always this many.
    Fixed(u32),
    /// As many as make a run that long unlikely at the failure rate seen before it began: `k`
    /// with `p₀ᵏ ≤ 1 / one_in`, where `p₀` is the failure rate of the calls before the run
    /// (the window's, taken two standard errors up for its noise, or that of the last ten
    /// calls if higher), and never fewer than `min`, which is what a run from a clean history
    /// needs.
    ///
    /// A run of `k` failures at an independent failure rate `p₀` starts at a given call with
    /// probability about `p₀ᵏ`, so a breaker that acts on it does so by chance about once in
    /// `one_in` calls, whatever `p₀`: after `min` failures from a healthy downstream (an outage
    /// is found fast), after about sixteen in a 30 % brownout (which stays closed: a breaker
    /// would make that partial failure total). It is the CUSUM test of a jump to a failure
    /// rate of 1 from `p₀`.
    ///
    /// A clean history cannot tell an outage's first failures from a brownout's onset, so the
    /// run that is rare at the baseline *sheds* rather than opens: the breaker stays closed and
    /// rejects locally the next first attempt after each failure, and every retry (a rejection
    /// of kind `CircuitOpen` with no `retry_after`, counted as
    /// `seawall_circuit_breaker_calls_total{outcome="shed"}`, told to hooks as
    /// [`RejectReason::Shed`](crate::RejectReason::Shed)). It opens at the run as rare at a
    /// 30 % failure rate, the brownout it must ride through (14 with the defaults), or at the
    /// baseline's run when longer. A success ends the shedding once at most 30 % of the ten
    /// calls before it failed. `Fixed` runs open at once and never shed.
    Adaptive {
        /// The run that trips from a clean history, in `[1, 100]`.
        min: u32,
        /// How many calls, at the baseline failure rate, hold one such run by chance, in
        /// `[2, 10^15]`.
        one_in: u64,
    },
}

impl ConsecutiveFailures {
    /// The default: at least 5 failures in a row, one false trip in 10 million calls.
    pub const DEFAULT: Self = Self::Adaptive {
        min: DEFAULT_RUN_MIN,
        one_in: DEFAULT_RUN_ONE_IN,
    };
}

/// A validated circuit breaker configuration.
///
/// Deserializes from, for example,
/// `{ "name": "payments", "window": { "count": 50 }, "failure_rate_threshold": 0.5,
/// "open_duration": "10s" }`, checking every value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "CircuitBreakerSpec", into = "CircuitBreakerSpec")]
pub struct CircuitBreakerConfig {
    pub(crate) name: Name,
    pub(crate) window: Window,
    pub(crate) minimum_calls: u32,
    pub(crate) failure_rate: Option<f64>,
    pub(crate) slow_call_rate: Option<f64>,
    pub(crate) slow_call_duration: Option<Duration>,
    pub(crate) noise_margin: f64,
    pub(crate) consecutive_failures: Option<ConsecutiveFailures>,
    pub(crate) open_duration: OpenDuration,
    pub(crate) open_jitter: f64,
    pub(crate) hinted_open_min: Duration,
    pub(crate) hinted_open_max: Duration,
    pub(crate) half_open_probes: u32,
    pub(crate) half_open_success_ratio: f64,
    pub(crate) half_open_max_wait: Duration,
    pub(crate) automatic_transitions: bool,
    pub(crate) seed: Option<u64>,
    pub(crate) max_keys: usize,
    pub(crate) key_idle_timeout: Duration,
    pub(crate) overload_is_failure: bool,
    pub(crate) endpoint_fault_is_failure: bool,
    pub(crate) half_open_slow_start: bool,
}

impl CircuitBreakerConfig {
    /// A builder for a configuration.
    pub fn builder() -> CircuitBreakerConfigBuilder {
        CircuitBreakerConfigBuilder::new()
    }

    /// The same configuration for a layer instance called `name` (as a ready-made stack names
    /// its layers after itself). An empty name is a `ConfigError`.
    pub fn named(mut self, name: impl Into<String>) -> Result<Self, ConfigError> {
        let name: String = name.into();
        self.name = Name::new(name)?;
        Ok(self)
    }

    /// The name of the layer instance, the `name` label of its metrics.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The sliding window.
    pub fn window(&self) -> Window {
        self.window
    }

    /// Calls the window must hold before a rate can trip the breaker.
    pub fn minimum_calls(&self) -> u32 {
        self.minimum_calls
    }

    /// The failure rate that trips the breaker, if that rule is on.
    pub fn failure_rate_threshold(&self) -> Option<f64> {
        self.failure_rate
    }

    /// The slow-call rate that trips the breaker, if that rule is on.
    pub fn slow_call_rate_threshold(&self) -> Option<f64> {
        self.slow_call_rate
    }

    /// How long a call must take to count as slow, if slow calls are tracked.
    pub fn slow_call_duration(&self) -> Option<Duration> {
        self.slow_call_duration
    }

    /// The standard deviations of sampling noise by which a rate must exceed its threshold
    /// to trip the breaker.
    pub fn noise_margin(&self) -> f64 {
        self.noise_margin
    }

    /// The run of failures in a row that trips the breaker, if that rule is on.
    pub fn consecutive_failures(&self) -> Option<ConsecutiveFailures> {
        self.consecutive_failures
    }

    /// How long the breaker stays open.
    pub fn open_duration(&self) -> OpenDuration {
        self.open_duration
    }

    /// How far each open duration is stretched at random: by a factor uniform in
    /// `[1, 1 + open_jitter]`.
    pub fn open_jitter(&self) -> f64 {
        self.open_jitter
    }

    /// The range an open duration read from a result (a `Retry-After`) is clamped to.
    pub fn hinted_open_range(&self) -> RangeInclusive<Duration> {
        self.hinted_open_min..=self.hinted_open_max
    }

    /// Probes admitted at once in half-open.
    pub fn half_open_probes(&self) -> u32 {
        self.half_open_probes
    }

    /// The share of probes that must succeed to close.
    pub fn half_open_success_ratio(&self) -> f64 {
        self.half_open_success_ratio
    }

    /// How long half-open waits for its probes before it opens again.
    pub fn half_open_max_wait(&self) -> Duration {
        self.half_open_max_wait
    }

    /// The most keys a keyed layer keeps.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// Whether a timer moves an idle breaker from open to half-open, and from half-open back
    /// to open, when time says so.
    pub fn automatic_transitions(&self) -> bool {
        self.automatic_transitions
    }

    /// Whether an overload refusal counts as a failure.
    pub fn overload_is_failure(&self) -> bool {
        self.overload_is_failure
    }

    /// Whether a failure an outlier set marked as its endpoint's own counts as a failure.
    pub fn endpoint_fault_is_failure(&self) -> bool {
        self.endpoint_fault_is_failure
    }

    /// Whether half-open lets its probes through one at a time at first, one more at once
    /// with each success.
    pub fn half_open_slow_start(&self) -> bool {
        self.half_open_slow_start
    }

    /// Probes that must succeed before the breaker closes.
    pub(crate) fn probes_to_close(&self) -> u32 {
        let needed = (self.half_open_success_ratio * f64::from(self.half_open_probes)).ceil();
        (needed as u32).clamp(1, self.half_open_probes)
    }
}

/// Builds a [`CircuitBreakerConfig`], or straight a layer when made by
/// `CircuitBreakerLayer::builder` or `KeyedCircuitBreakerLayer::builder` (whose key extractor
/// `X` is).
#[derive(Debug)]
pub struct CircuitBreakerConfigBuilder<T = CircuitBreakerConfig, X = ()> {
    spec: CircuitBreakerSpec,
    extra: X,
    _output: PhantomData<fn() -> T>,
}

/// What a [`CircuitBreakerConfigBuilder`] makes of a checked configuration and what it was
/// given besides (nothing, or a keyed breaker's key extractor).
pub trait FromConfig<X> {
    /// The value built from `config` and `extra`.
    fn from_config(config: CircuitBreakerConfig, extra: X) -> Self;
}

impl<T: From<CircuitBreakerConfig>> FromConfig<()> for T {
    fn from_config(config: CircuitBreakerConfig, (): ()) -> Self {
        T::from(config)
    }
}

impl<T> CircuitBreakerConfigBuilder<T> {
    pub(crate) fn new() -> Self {
        Self::with(())
    }
}

impl<T, X> CircuitBreakerConfigBuilder<T, X> {
    pub(crate) fn with(extra: X) -> Self {
        Self {
            spec: CircuitBreakerSpec::default(),
            extra,
            _output: PhantomData,
        }
    }

    /// The name of the layer instance (default `"circuit_breaker"`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.spec.name = name.into().into();
        self
    }

    /// Rates over the last `calls` calls, in `[1, 100000]` (the default, with 100 calls).
    pub fn count_window(mut self, calls: u32) -> Self {
        self.spec.window = Window::Count(calls).into();
        self
    }

    /// Rates over the calls of the last `span`, whole seconds in `[1s, 1h]`.
    pub fn time_window(mut self, span: Duration) -> Self {
        self.spec.window = Window::Time(span).into();
        self
    }

    /// Calls the window must hold before a rate can trip, in `[1, window]` for a count window
    /// (default 100, or the window size if smaller, as in Resilience4j: a rate over a handful of
    /// calls is noise, and a 30% error rate would trip a breaker that decides on 20 calls about
    /// one time in twenty).
    pub fn minimum_calls(mut self, calls: u32) -> Self {
        self.spec.minimum_calls = Some(calls.into());
        self
    }

    /// Opens when at least this share of the window's calls failed, in `(0, 1]` (default 0.5).
    pub fn failure_rate_threshold(mut self, rate: f64) -> Self {
        self.spec.failure_rate_threshold = Some(rate.into());
        self.spec.no_failure_rate = false.into();
        self
    }

    /// Turns the failure-rate rule off (another rule must be on).
    pub fn no_failure_rate(mut self) -> Self {
        self.spec.failure_rate_threshold = None;
        self.spec.no_failure_rate = true.into();
        self
    }

    /// Counts calls longer than `duration` as slow, in `(0s, 1 day]`.
    pub fn slow_call_duration(mut self, duration: Duration) -> Self {
        self.spec.slow_call_duration = Some(duration.into());
        self
    }

    /// Opens when at least this share of the window's calls were slow, in `(0, 1]`; needs
    /// [`slow_call_duration`](Self::slow_call_duration).
    pub fn slow_call_rate_threshold(mut self, rate: f64) -> Self {
        self.spec.slow_call_rate_threshold = Some(rate.into());
        self
    }

    /// How far, in standard deviations of sampling noise, a rate must exceed its threshold to
    /// trip, in `[0, 10]` (default 3; 0 trips on the threshold alone).
    ///
    /// A window of `n` calls at a true failure rate `p` reads a rate that varies by
    /// `σ = √(p(1 − p)/n)`: 0.049 for 100 calls at 40 %. A threshold of 50 % is then 2σ away,
    /// and a sliding window, decided again at every call, crosses it about once in 300 calls: a
    /// 40 % brownout opens the breaker about every 300 ms at 1000 calls a second. So a rate
    /// `r` over `n` calls trips a threshold `t` only when `(r − t)² · n ≥ z² · t(1 − t)` with
    /// `r ≥ t` (that is, when `failures ≥ t·n + z·√(n·t(1 − t))`: the one-sided test of "the
    /// true rate is above `t`" at `z` standard deviations), or when every call in the window
    /// failed, whatever its size. The same holds for the slow-call rate.
    ///
    /// With `z = 3`, 100 calls and `t = 0.5`, that is 65 failures: a true rate of 40 % crosses
    /// it about once in 10⁷ calls (a false opening in one of 17 brownouts of 60 s at 10,000
    /// calls a second), 45 % once in 10⁵, 30 % once in 5·10¹²; at 50 % and above the breaker
    /// opens as its threshold says. A downstream that fails every call trips after 65 calls instead
    /// of 50 (6.5 ms at 10,000 calls a second, 65 ms at 1000, 0.65 s at 100), and the run rule
    /// (5 failures in a row by default) trips well before either. Larger windows shrink the
    /// margin: 1.5 points of rate at 10,000 calls.
    pub fn noise_margin(mut self, sigmas: f64) -> Self {
        self.spec.noise_margin = Some(sigmas.into());
        self
    }

    /// Opens after `failures` failures in a row, in `[1, 1000000]`, whatever the window holds
    /// (default: [`ConsecutiveFailures::DEFAULT`], a run that adapts to the failure rate).
    ///
    /// A fixed run opens a breaker in any brownout sooner or later: at 30 % independent
    /// errors, 5 in a row come about once in 600 calls.
    pub fn consecutive_failures(mut self, failures: u32) -> Self {
        self.spec.consecutive_failures = Some(RunSpec::Fixed(failures.into()));
        self
    }

    /// Opens after a run of failures unlikely at the failure rate seen before it: at least
    /// `min` in `[1, 100]`, such that a run that long comes by chance once in `one_in` calls
    /// in `[2, 10^15]` (see [`ConsecutiveFailures::Adaptive`]; the default is 5 and 10
    /// million).
    pub fn adaptive_consecutive_failures(mut self, min: u32, one_in: u64) -> Self {
        self.spec.consecutive_failures = Some(RunSpec::Adaptive {
            min: min.into(),
            one_in: one_in.into(),
        });
        self
    }

    /// Turns the consecutive-failures rule off (another rule must be on).
    pub fn no_consecutive_failures(mut self) -> Self {
        self.spec.consecutive_failures = Some(RunSpec::Off);
        self
    }

    /// Stays open for `duration` each time, in `(0s, 1 day]` (default: an open backoff of 1 s
    /// doubling to at most 3 s, see [`open_backoff`](Self::open_backoff)).
    pub fn open_duration(mut self, duration: Duration) -> Self {
        self.spec.open_duration = Some(duration.into());
        self.spec.open_backoff = None;
        self
    }

    /// Stays open longer on each re-opening without a full recovery in between, as `backoff`
    /// gives (attempt 1 for the first opening), with a base above zero.
    ///
    /// Never shorter than the base: the jitter spreads only the part of the curve above it
    /// (full jitter is uniform in `[base, curve]`, equal jitter in `[max(base, curve / 2),
    /// curve]`, decorrelated at least the base), so the first opening lasts exactly the base.
    pub fn open_backoff(mut self, backoff: Backoff) -> Self {
        self.spec.open_backoff = Some(backoff);
        self.spec.open_duration = None;
        self
    }

    /// Stretches every open duration (fixed or from the backoff, not one a result asked for)
    /// by a factor uniform in `[1, 1 + jitter]`, `jitter` in `[0, 1]`, so that clients whose
    /// breakers opened together do not all probe the downstream at the same instant (default
    /// 0.25).
    pub fn open_jitter(mut self, jitter: f64) -> Self {
        self.spec.open_jitter = Some(jitter.into());
        self
    }

    /// The shortest open duration a result may ask for (see
    /// `CircuitBreakerLayer::open_duration_from`), in `(0s, 1 day]` (default 1 s, or the
    /// longest if that is shorter): a `Retry-After: 0` must not switch the breaker off.
    pub fn hinted_open_min(mut self, min: Duration) -> Self {
        self.spec.hinted_open_min = Some(min.into());
        self
    }

    /// The longest open duration a result may ask for, in `[hinted_open_min, 1 day]`
    /// (default: the open backoff's cap, or 10 × the open duration, or 300 s with the default
    /// open durations; never under the shortest):
    /// a huge `Retry-After` must not hold the breaker open for a day.
    pub fn hinted_open_max(mut self, max: Duration) -> Self {
        self.spec.hinted_open_max = Some(max.into());
        self
    }

    /// Probes admitted at once in half-open, in `[1, 1000]` (default 10).
    pub fn half_open_probes(mut self, probes: u32) -> Self {
        self.spec.half_open_probes = Some(probes.into());
        self
    }

    /// The share of the probes that must succeed to close, in `(0, 1]` (default 0.5, the bar
    /// the failure rate sets while closed, as Resilience4j judges its half-open calls: a
    /// brownout's probes close the breaker again, an outage's open it after 6 of 10).
    pub fn half_open_success_ratio(mut self, ratio: f64) -> Self {
        self.spec.half_open_success_ratio = Some(ratio.into());
        self
    }

    /// Opens again when the probes have not decided within `wait`, in `(0s, 1 day]`
    /// (default 60 s).
    ///
    /// Probes are scored when their response head arrives (a stream does not hold its slot
    /// for as long as it lives), so this bounds how long a probe may take to answer at all: a
    /// probe that hangs must not keep the breaker half-open, rejecting every other call, for
    /// hours. The default is longer than the usual request timeouts (30 to 60 s), so a slow
    /// but healthy downstream still gets to answer; set it above the longest time to a
    /// response head you expect, or the breaker never closes.
    pub fn half_open_max_wait(mut self, wait: Duration) -> Self {
        self.spec.half_open_max_wait = Some(wait.into());
        self
    }

    /// Whether a timer moves the breaker from open to half-open when the open duration ends,
    /// and from half-open back to open at the maximum wait, with no call to make the move
    /// (default on, as Resilience4j's `automaticTransitionFromOpenToHalfOpenEnabled`).
    ///
    /// Without it an idle breaker reads open on its state gauge and to its subscribers (a
    /// health follower, say) long after it would let a probe through. The timer is a tokio task
    /// that runs only while the breaker is open or half-open, and only where a tokio runtime
    /// runs the transition that opens it; nothing runs per call. Either way the handle's
    /// [`state`](crate::CircuitBreakerHandle::state) reflects the time elapsed.
    pub fn automatic_transitions(mut self, on: bool) -> Self {
        self.spec.automatic_transitions = Some(on.into());
        self
    }

    /// Whether a call the classifier calls [`Overload`](seawall_core::classify::Outcome::Overload)
    /// (a `429`, a `503`, `RESOURCE_EXHAUSTED`) counts as a failure (default `false`: it counts
    /// for nothing). A downstream that refuses load it cannot take is up; opening on its
    /// refusals would turn shedding into an outage, so overload is left to throttling and
    /// backoff unless this is on.
    pub fn overload_is_failure(mut self, failure: bool) -> Self {
        self.spec.overload_is_failure = Some(failure.into());
        self
    }

    /// Whether a failure that an outlier set under a balancer marked as its endpoint's own
    /// ([`EndpointFault`](seawall_core::classify::EndpointFault) on a response,
    /// [`EndpointFaultError`](seawall_core::classify::EndpointFaultError) on an error) counts
    /// as a failure (default `false`: it counts for nothing). The set marks a failure only
    /// while another of its endpoints is succeeding, so the dependency is up and a retry likely
    /// lands on a working endpoint; a breaker for the whole set that counted it would open
    /// when four of five endpoints fail and cut the fifth off too. Once every endpoint fails,
    /// nothing is marked and the breaker sees the outage.
    pub fn endpoint_fault_is_failure(mut self, failure: bool) -> Self {
        self.spec.endpoint_fault_is_failure = Some(failure.into());
        self
    }

    /// Whether half-open starts with one probe in flight and lets one more through at once
    /// with each success, up to `half_open_probes` in all, as TCP's slow start grows its
    /// window (default on).
    ///
    /// A half-open client then adds load in proportion to how fast the downstream answers
    /// (Little's law: at most `1 + successes` calls per round trip), not to its own rate: a
    /// downstream still draining a backlog gets one call per client per queueing delay, and a
    /// healthy one every probe as soon as it answers. Without it, a fleet of clients that
    /// opened together sends up to `half_open_probes` each into the backlog the moment their
    /// open durations end, and every probe times out there.
    pub fn half_open_slow_start(mut self, on: bool) -> Self {
        self.spec.half_open_slow_start = Some(on.into());
        self
    }

    /// Seeds the jitter of the open backoff, so that runs repeat (default: a random seed).
    pub fn seed(mut self, seed: u64) -> Self {
        self.spec.seed = Some(seed.into());
        self
    }

    /// Keyed breaker only: the most keys kept, in `[1, 1000000]` and such that `max_keys ×`
    /// the window stays within 256 MiB (about 6 KiB per key plus a byte per call of a count
    /// window or 24 bytes per second of a time window; a `ConfigError` past that). Default
    /// 10000, or as many as fit in 256 MiB with a large window.
    pub fn max_keys(mut self, keys: usize) -> Self {
        self.spec.max_keys = Some(keys.into());
        self
    }

    /// Keyed breaker only: a closed breaker unused this long goes first when a new key needs
    /// room, in `(0s, 1 day]` (default 10 min).
    pub fn key_idle_timeout(mut self, idle: Duration) -> Self {
        self.spec.key_idle_timeout = Some(idle.into());
        self
    }
}

impl<T: FromConfig<X>, X> CircuitBreakerConfigBuilder<T, X> {
    /// Checks the values and builds.
    pub fn build(self) -> Result<T, ConfigError> {
        let config = CircuitBreakerConfig::try_from(self.spec)?;
        Ok(T::from_config(config, self.extra))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CircuitBreakerSpec {
    #[serde(default = "default_name")]
    name: Raw<String>,
    #[serde(default = "default_window")]
    window: WindowSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    minimum_calls: Option<Raw<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failure_rate_threshold: Option<Raw<f64>>,
    #[serde(default = "no", skip_serializing_if = "is_false")]
    no_failure_rate: Raw<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    slow_call_rate_threshold: Option<Raw<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    slow_call_duration: Option<Raw<Duration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    noise_margin: Option<Raw<f64>>,
    #[serde(
        default,
        deserialize_with = "run_or_off",
        skip_serializing_if = "Option::is_none"
    )]
    consecutive_failures: Option<RunSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    open_duration: Option<Raw<Duration>>,
    #[serde(
        default,
        deserialize_with = "open_backoff_within",
        skip_serializing_if = "Option::is_none"
    )]
    open_backoff: Option<Backoff>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    open_jitter: Option<Raw<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hinted_open_min: Option<Raw<Duration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hinted_open_max: Option<Raw<Duration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    half_open_probes: Option<Raw<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    half_open_success_ratio: Option<Raw<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    half_open_max_wait: Option<Raw<Duration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    half_open_slow_start: Option<Raw<bool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    automatic_transitions: Option<Raw<bool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seed: Option<Raw<u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_keys: Option<Raw<usize>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_idle_timeout: Option<Raw<Duration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    overload_is_failure: Option<Raw<bool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    endpoint_fault_is_failure: Option<Raw<bool>>,
}

/// A consecutive-failures rule as written: a count, `{ min = 5, one_in = 10000000 }` or `"off"`.
#[derive(Debug, Clone)]
enum RunSpec {
    Fixed(Raw<u32>),
    Adaptive { min: Raw<u32>, one_in: Raw<u64> },
    Off,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdaptiveRunSpec {
    #[serde(default = "default_run_min")]
    min: Raw<u32>,
    #[serde(default = "default_run_one_in")]
    one_in: Raw<u64>,
}

/// The default open durations: 1 s, 2 s, then 3 s while probes keep failing (before the
/// stretch of `open_jitter`).
fn default_open_backoff() -> Backoff {
    Backoff::exponential(DEFAULT_OPEN_BASE)
        .cap(DEFAULT_OPEN_CAP)
        .jitter(seawall_core::backoff::Jitter::None)
        .build()
        .expect("the default open backoff is valid")
}

fn default_run_min() -> Raw<u32> {
    DEFAULT_RUN_MIN.into()
}

fn default_run_one_in() -> Raw<u64> {
    DEFAULT_RUN_ONE_IN.into()
}

const RUN: &str = r#"a count, "off" or { min = 5, one_in = 10000000 }"#;

impl Serialize for RunSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            Self::Fixed(n) => n.serialize(s),
            Self::Off => s.serialize_str("off"),
            Self::Adaptive { min, one_in } => {
                let mut map = s.serialize_map(Some(2))?;
                map.serialize_entry("min", min)?;
                map.serialize_entry("one_in", one_in)?;
                map.end()
            }
        }
    }
}

/// Reads a count, `"off"` or an adaptive rule's table; anything else is kept as written for
/// the check to report with the allowed range.
fn run_or_off<'de, D: Deserializer<'de>>(d: D) -> Result<Option<RunSpec>, D::Error> {
    use serde::de::{self, MapAccess, Visitor};

    struct Run;

    impl<'de> Visitor<'de> for Run {
        type Value = RunSpec;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(RUN)
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<RunSpec, E> {
            match v {
                "off" => Ok(RunSpec::Off),
                other => Ok(RunSpec::Fixed(Raw::deserialize(
                    de::value::StrDeserializer::<E>::new(other),
                )?)),
            }
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<RunSpec, E> {
            Ok(RunSpec::Fixed(Raw::deserialize(
                de::value::I64Deserializer::<E>::new(v),
            )?))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<RunSpec, E> {
            Ok(RunSpec::Fixed(Raw::deserialize(
                de::value::U64Deserializer::<E>::new(v),
            )?))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<RunSpec, E> {
            Ok(RunSpec::Fixed(Raw::deserialize(
                de::value::F64Deserializer::<E>::new(v),
            )?))
        }

        fn visit_bool<E: de::Error>(self, v: bool) -> Result<RunSpec, E> {
            Ok(RunSpec::Fixed(Raw::deserialize(
                de::value::BoolDeserializer::<E>::new(v),
            )?))
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RunSpec, A::Error> {
            let spec: AdaptiveRunSpec = config::within(
                "consecutive_failures",
                de::value::MapAccessDeserializer::new(map),
            )?;
            Ok(RunSpec::Adaptive {
                min: spec.min,
                one_in: spec.one_in,
            })
        }
    }

    d.deserialize_any(Run).map(Some)
}

fn open_backoff_within<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Backoff>, D::Error> {
    config::within("open_backoff", d)
}

fn no() -> Raw<bool> {
    false.into()
}

fn is_false(b: &Raw<bool>) -> bool {
    *b == Raw::from(false)
}

fn default_name() -> Raw<String> {
    String::from(DEFAULT_NAME).into()
}

fn default_window() -> WindowSpec {
    Window::Count(100).into()
}

impl Default for CircuitBreakerSpec {
    fn default() -> Self {
        Self {
            name: default_name(),
            window: default_window(),
            minimum_calls: None,
            failure_rate_threshold: None,
            no_failure_rate: no(),
            slow_call_rate_threshold: None,
            slow_call_duration: None,
            noise_margin: None,
            consecutive_failures: None,
            open_duration: None,
            open_backoff: None,
            open_jitter: None,
            hinted_open_min: None,
            hinted_open_max: None,
            half_open_probes: None,
            half_open_success_ratio: None,
            half_open_max_wait: None,
            half_open_slow_start: None,
            automatic_transitions: None,
            seed: None,
            max_keys: None,
            key_idle_timeout: None,
            overload_is_failure: None,
            endpoint_fault_is_failure: None,
        }
    }
}

impl TryFrom<CircuitBreakerSpec> for CircuitBreakerConfig {
    type Error = ConfigError;

    fn try_from(spec: CircuitBreakerSpec) -> Result<Self, ConfigError> {
        let name = Name::from_raw(spec.name)?;
        let window = match spec.window {
            WindowSpec::Count(n) => {
                Window::Count(config::count_in("window.count", n, 1..=MAX_WINDOW_CALLS)?)
            }
            WindowSpec::Time(span) => {
                let span = span.value("window.time", "whole seconds in [1s, 3600s]")?;
                if span.subsec_nanos() != 0 || !(1..=MAX_WINDOW_SECS).contains(&span.as_secs()) {
                    return Err(ConfigError::new(
                        "window.time",
                        format_args!("{span:?}"),
                        "whole seconds in [1s, 3600s]",
                    ));
                }
                Window::Time(span)
            }
        };
        let minimum_calls = match (spec.minimum_calls, window) {
            (Some(n), Window::Count(size)) => config::count_in("minimum_calls", n, 1..=size)?,
            (Some(n), Window::Time(_)) => {
                config::count_in("minimum_calls", n, 1..=MAX_WINDOW_CALLS)?
            }
            (None, Window::Count(size)) => size.min(100),
            (None, Window::Time(_)) => 100,
        };
        let failure_rate = if spec
            .no_failure_rate
            .expected("no_failure_rate", "true or false")?
        {
            None
        } else {
            Some(config::ratio(
                "failure_rate_threshold",
                spec.failure_rate_threshold.unwrap_or_else(|| 0.5.into()),
            )?)
        };
        let slow_call_rate = spec
            .slow_call_rate_threshold
            .map(|r| config::ratio("slow_call_rate_threshold", r))
            .transpose()?;
        let slow_call_duration = spec
            .slow_call_duration
            .map(|d| config::positive_duration("slow_call_duration", d, MAX_DURATION))
            .transpose()?;
        if slow_call_rate.is_some() && slow_call_duration.is_none() {
            return Err(ConfigError::expected(
                "slow_call_duration",
                "nothing",
                format!(
                    "a duration in {} when slow_call_rate_threshold is set",
                    config::POSITIVE_DURATIONS
                ),
            ));
        }
        let noise_margin = config::count_in(
            "noise_margin",
            spec.noise_margin
                .unwrap_or_else(|| DEFAULT_NOISE_MARGIN.into()),
            0.0..=MAX_NOISE_MARGIN,
        )?;
        let consecutive_failures = match spec.consecutive_failures {
            None => Some(ConsecutiveFailures::DEFAULT),
            Some(RunSpec::Off) => None,
            Some(RunSpec::Fixed(n)) => Some(ConsecutiveFailures::Fixed(config::count_in(
                "consecutive_failures",
                n,
                1..=MAX_CONSECUTIVE,
            )?)),
            Some(RunSpec::Adaptive { min, one_in }) => {
                let check = || -> Result<ConsecutiveFailures, ConfigError> {
                    Ok(ConsecutiveFailures::Adaptive {
                        min: config::count_in("min", min, 1..=MAX_RUN_MIN)?,
                        one_in: config::count_in("one_in", one_in, 2..=MAX_RUN_ONE_IN)?,
                    })
                };
                Some(check().map_err(|e| e.within("consecutive_failures"))?)
            }
        };
        if failure_rate.is_none() && slow_call_rate.is_none() && consecutive_failures.is_none() {
            return Err(ConfigError::expected(
                "failure_rate_threshold",
                "nothing",
                "at least one trip rule (failure rate, slow-call rate or consecutive failures)",
            ));
        }
        let defaulted_open = spec.open_duration.is_none() && spec.open_backoff.is_none();
        let open_duration = match (spec.open_duration, spec.open_backoff) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::expected(
                    "open_backoff",
                    "a backoff",
                    "nothing when open_duration is set (one or the other)",
                ));
            }
            (_, Some(backoff)) => {
                config::positive_duration("open_backoff.base", backoff.base(), MAX_DURATION)?;
                OpenDuration::Backoff(backoff)
            }
            (Some(fixed), None) => OpenDuration::Fixed(config::positive_duration(
                "open_duration",
                fixed,
                MAX_DURATION,
            )?),
            (None, None) => OpenDuration::Backoff(default_open_backoff()),
        };
        let open_jitter = config::ratio_or_zero(
            "open_jitter",
            spec.open_jitter
                .unwrap_or_else(|| DEFAULT_OPEN_JITTER.into()),
        )?;
        let (hinted_open_min, hinted_open_max) = hinted_open(
            &open_duration,
            defaulted_open,
            spec.hinted_open_min,
            spec.hinted_open_max,
        )?;
        let half_open_probes = config::count_in(
            "half_open_probes",
            spec.half_open_probes.unwrap_or_else(|| 10.into()),
            1..=MAX_PROBES,
        )?;
        let half_open_success_ratio = config::ratio(
            "half_open_success_ratio",
            spec.half_open_success_ratio
                .unwrap_or_else(|| DEFAULT_HALF_OPEN_SUCCESS_RATIO.into()),
        )?;
        let half_open_max_wait = config::positive_duration(
            "half_open_max_wait",
            spec.half_open_max_wait
                .unwrap_or_else(|| DEFAULT_HALF_OPEN_MAX_WAIT.into()),
            MAX_DURATION,
        )?;
        let max_keys = spec
            .max_keys
            .map(|keys| keys.value("max_keys", format!("[1, {MAX_KEYS}]")))
            .transpose()?;
        let max_keys = max_keys_for(max_keys, window)?;
        let automatic_transitions = spec
            .automatic_transitions
            .map(|on| on.expected("automatic_transitions", "true or false"))
            .transpose()?
            .unwrap_or(true);
        let key_idle_timeout = config::positive_duration(
            "key_idle_timeout",
            spec.key_idle_timeout
                .unwrap_or_else(|| Duration::from_secs(600).into()),
            MAX_DURATION,
        )?;
        let seed = spec
            .seed
            .map(|seed| seed.value("seed", "[0, 18446744073709551615]"))
            .transpose()?;
        Ok(Self {
            name,
            window,
            minimum_calls,
            failure_rate,
            slow_call_rate,
            slow_call_duration,
            noise_margin,
            consecutive_failures,
            open_duration,
            open_jitter,
            hinted_open_min,
            hinted_open_max,
            half_open_probes,
            half_open_success_ratio,
            half_open_max_wait,
            automatic_transitions,
            seed,
            max_keys,
            key_idle_timeout,
            overload_is_failure: spec
                .overload_is_failure
                .map(|on| on.expected("overload_is_failure", "true or false"))
                .transpose()?
                .unwrap_or(false),
            endpoint_fault_is_failure: spec
                .endpoint_fault_is_failure
                .map(|on| on.expected("endpoint_fault_is_failure", "true or false"))
                .transpose()?
                .unwrap_or(false),
            half_open_slow_start: spec
                .half_open_slow_start
                .map(|on| on.expected("half_open_slow_start", "true or false"))
                .transpose()?
                .unwrap_or(true),
        })
    }
}

/// Roughly what one key of a keyed layer holds: the breaker and its map entry (about 1.5 KiB),
/// its admission ring (4 KiB) and its window, a byte per call of a count window or 24 bytes per
/// second of a time window.
fn key_bytes(window: Window) -> u64 {
    6144 + match window {
        Window::Count(calls) => u64::from(calls),
        Window::Time(span) => 24 * span.as_secs(),
    }
}

/// The most keys a keyed layer keeps: as configured if that fits in [`MAX_KEYED_BYTES`] with
/// this window, by default 10000 or as many as fit.
fn max_keys_for(keys: Option<usize>, window: Window) -> Result<usize, ConfigError> {
    let per_key = key_bytes(window);
    let fit = usize::try_from(MAX_KEYED_BYTES / per_key).unwrap_or(usize::MAX);
    let Some(keys) = keys else {
        return Ok(DEFAULT_MAX_KEYS.min(fit));
    };
    let keys = config::count_in("max_keys", keys, 1..=MAX_KEYS)?;
    if keys > fit {
        let mib = (keys as u64).saturating_mul(per_key) >> 20;
        return Err(ConfigError::new(
            "max_keys",
            format_args!(
                "{keys} (× about {per_key} bytes of breaker and window per key: {mib} MiB)"
            ),
            format!("[1, {fit}] with this window, so that max_keys × window stays within 256 MiB"),
        ));
    }
    Ok(keys)
}

/// The range a result's open duration is clamped to: by default at least 1 s and at most the
/// backoff's cap (or 10 × the fixed open duration, or 300 s when neither is configured), each
/// default giving way to the other bound.
fn hinted_open(
    open: &OpenDuration,
    defaulted_open: bool,
    min: Option<Raw<Duration>>,
    max: Option<Raw<Duration>>,
) -> Result<(Duration, Duration), ConfigError> {
    let max = max
        .map(|d| {
            d.value(
                "hinted_open_max",
                format!("[hinted_open_min, {MAX_DURATION:?}]"),
            )
        })
        .transpose()?;
    let min = min
        .map(|d| config::positive_duration("hinted_open_min", d, MAX_DURATION))
        .transpose()?;
    let default_max = || match open {
        // The short default open durations are for a downstream that says nothing; one that
        // asks for a wait is heard out up to the former default's bound.
        _ if defaulted_open => DEFAULT_HINTED_OPEN_MAX,
        OpenDuration::Fixed(d) => d.saturating_mul(10).min(MAX_DURATION),
        OpenDuration::Backoff(b) => b.max_delay(),
    };
    let (min, max) = match (min, max) {
        (Some(min), Some(max)) => (min, max),
        (Some(min), None) => (min, default_max().max(min)),
        (None, Some(max)) => (DEFAULT_HINTED_OPEN_MIN.min(max), max),
        (None, None) => {
            let max = default_max();
            (DEFAULT_HINTED_OPEN_MIN.min(max), max)
        }
    };
    let max = config::duration_in("hinted_open_max", max, min..=MAX_DURATION)?;
    Ok((min, max))
}

impl From<CircuitBreakerConfig> for CircuitBreakerSpec {
    fn from(c: CircuitBreakerConfig) -> Self {
        let (open_duration, open_backoff) = match c.open_duration {
            OpenDuration::Fixed(d) => (Some(d.into()), None),
            OpenDuration::Backoff(b) => (None, Some(b)),
        };
        Self {
            name: c.name.into(),
            window: c.window.into(),
            minimum_calls: Some(c.minimum_calls.into()),
            failure_rate_threshold: c.failure_rate.map(Raw::from),
            no_failure_rate: c.failure_rate.is_none().into(),
            slow_call_rate_threshold: c.slow_call_rate.map(Raw::from),
            slow_call_duration: c.slow_call_duration.map(Raw::from),
            noise_margin: Some(c.noise_margin.into()),
            consecutive_failures: Some(match c.consecutive_failures {
                None => RunSpec::Off,
                Some(ConsecutiveFailures::Fixed(n)) => RunSpec::Fixed(n.into()),
                Some(ConsecutiveFailures::Adaptive { min, one_in }) => RunSpec::Adaptive {
                    min: min.into(),
                    one_in: one_in.into(),
                },
            }),
            open_duration,
            open_backoff,
            open_jitter: Some(c.open_jitter.into()),
            hinted_open_min: Some(c.hinted_open_min.into()),
            hinted_open_max: Some(c.hinted_open_max.into()),
            half_open_probes: Some(c.half_open_probes.into()),
            half_open_success_ratio: Some(c.half_open_success_ratio.into()),
            half_open_max_wait: Some(c.half_open_max_wait.into()),
            half_open_slow_start: (!c.half_open_slow_start).then_some(false.into()),
            automatic_transitions: Some(c.automatic_transitions.into()),
            seed: c.seed.map(Raw::from),
            max_keys: Some(c.max_keys.into()),
            key_idle_timeout: Some(c.key_idle_timeout.into()),
            overload_is_failure: c.overload_is_failure.then_some(true.into()),
            endpoint_fault_is_failure: c.endpoint_fault_is_failure.then_some(true.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(
        f: impl FnOnce(CircuitBreakerConfigBuilder) -> CircuitBreakerConfigBuilder,
    ) -> Result<CircuitBreakerConfig, ConfigError> {
        f(CircuitBreakerConfig::builder()).build()
    }

    #[test]
    fn defaults_are_valid() {
        let c = build(|b| b).unwrap();
        assert_eq!(c.name(), "circuit_breaker");
        assert_eq!(c.window(), Window::Count(100));
        assert_eq!(c.minimum_calls(), 100);
        assert_eq!(c.failure_rate_threshold(), Some(0.5));
        assert_eq!(c.noise_margin(), 3.0);
        assert_eq!(c.half_open_probes(), 10);
        assert_eq!(c.probes_to_close(), 5);
        assert_eq!(c.half_open_max_wait(), Duration::from_secs(60));
        assert_eq!(c.open_jitter(), 0.25);
        assert_eq!(
            c.open_duration(),
            OpenDuration::Backoff(default_open_backoff())
        );
        assert!(c.automatic_transitions());
        assert!(!c.overload_is_failure());
        assert!(!c.endpoint_fault_is_failure());
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases: Vec<(&str, ConfigError)> = vec![
            ("window.count", build(|b| b.count_window(0)).unwrap_err()),
            (
                "window.time",
                build(|b| b.time_window(Duration::ZERO)).unwrap_err(),
            ),
            (
                "window.time",
                build(|b| b.time_window(Duration::from_millis(1500))).unwrap_err(),
            ),
            (
                "failure_rate_threshold",
                build(|b| b.failure_rate_threshold(0.0)).unwrap_err(),
            ),
            (
                "failure_rate_threshold",
                build(|b| b.failure_rate_threshold(1.5)).unwrap_err(),
            ),
            (
                "half_open_probes",
                build(|b| b.half_open_probes(0)).unwrap_err(),
            ),
            ("noise_margin", build(|b| b.noise_margin(-1.0)).unwrap_err()),
            (
                "noise_margin",
                build(|b| b.noise_margin(f64::NAN)).unwrap_err(),
            ),
            (
                "minimum_calls",
                build(|b| b.count_window(10).minimum_calls(11)).unwrap_err(),
            ),
            (
                "slow_call_duration",
                build(|b| b.slow_call_rate_threshold(0.5)).unwrap_err(),
            ),
            (
                "failure_rate_threshold",
                build(|b| b.no_failure_rate().no_consecutive_failures()).unwrap_err(),
            ),
            (
                "open_duration",
                build(|b| b.open_duration(Duration::ZERO)).unwrap_err(),
            ),
            (
                "half_open_success_ratio",
                build(|b| b.half_open_success_ratio(0.0)).unwrap_err(),
            ),
            ("max_keys", build(|b| b.max_keys(0)).unwrap_err()),
            (
                "hinted_open_min",
                build(|b| b.hinted_open_min(Duration::ZERO)).unwrap_err(),
            ),
            (
                "hinted_open_max",
                build(|b| {
                    b.hinted_open_min(Duration::from_secs(5))
                        .hinted_open_max(Duration::from_secs(4))
                })
                .unwrap_err(),
            ),
            (
                "open_backoff.base",
                build(|b| b.open_backoff(Backoff::constant(Duration::ZERO).build().unwrap()))
                    .unwrap_err(),
            ),
        ];
        for (field, err) in cases {
            assert_eq!(err.field(), field, "{err}");
        }
    }

    #[test]
    fn deserializes_and_validates() {
        let c: CircuitBreakerConfig = serde_json::from_str(
            r#"{"name": "db", "window": {"time": "10s"}, "failure_rate_threshold": 0.25,
                "slow_call_duration": "2s", "slow_call_rate_threshold": 0.5,
                "open_backoff": {"kind": "exponential", "base": "1s", "cap": "1m"}}"#,
        )
        .unwrap();
        assert_eq!(c.window(), Window::Time(Duration::from_secs(10)));
        assert_eq!(c.slow_call_duration(), Some(Duration::from_secs(2)));
        assert!(matches!(c.open_duration(), OpenDuration::Backoff(_)));
        assert!(!c.overload_is_failure());
        let counted: CircuitBreakerConfig =
            serde_json::from_str(r#"{"overload_is_failure": true}"#).unwrap();
        assert!(counted.overload_is_failure());
        let marked: CircuitBreakerConfig =
            serde_json::from_str(r#"{"endpoint_fault_is_failure": true}"#).unwrap();
        assert!(marked.endpoint_fault_is_failure());
        assert!(c.half_open_slow_start());
        let all_at_once: CircuitBreakerConfig =
            serde_json::from_str(r#"{"half_open_slow_start": false}"#).unwrap();
        assert!(!all_at_once.half_open_slow_start());
        let back: CircuitBreakerConfig =
            serde_json::from_value(serde_json::to_value(&all_at_once).unwrap()).unwrap();
        assert_eq!(back, all_at_once);
        let bad =
            serde_json::from_str::<CircuitBreakerConfig>(r#"{"half_open_probes": 0}"#).unwrap_err();
        assert!(bad.to_string().contains("half_open_probes"), "{bad}");
        let typo =
            serde_json::from_str::<CircuitBreakerConfig>(r#"{"windw": {"count": 5}}"#).unwrap_err();
        assert!(typo.to_string().contains("unknown field"), "{typo}");
        let both = serde_json::from_str::<CircuitBreakerConfig>(
            r#"{"open_duration": "1s", "open_backoff": {"kind": "constant", "base": "1s"}}"#,
        )
        .unwrap_err();
        assert!(both.to_string().contains("open_backoff"), "{both}");
    }

    #[test]
    fn errors_name_the_field_and_its_range_in_toml_and_json() {
        seawall_core::testing::config::assert_errors::<CircuitBreakerConfig>(&[
            (
                "window = { count = -1 }",
                "invalid `window.count`: -1 is outside the allowed range [1, 100000]",
            ),
            (
                r#"window = { time = "-5s" }"#,
                r#"invalid `window.time`: "-5s" is outside the allowed range whole seconds in [1s, 3600s]"#,
            ),
            (
                "minimum_calls = -1",
                "invalid `minimum_calls`: -1 is outside the allowed range [1, 100]",
            ),
            (
                "failure_rate_threshold = -0.5",
                "invalid `failure_rate_threshold`: -0.5 is outside the allowed range (0, 1]",
            ),
            (
                r#"no_failure_rate = "yes""#,
                r#"invalid `no_failure_rate`: "yes", expected true or false"#,
            ),
            (
                "slow_call_rate_threshold = 2",
                "invalid `slow_call_rate_threshold`: 2 is outside the allowed range (0, 1]",
            ),
            (
                r#"slow_call_duration = "-5s""#,
                r#"invalid `slow_call_duration`: "-5s" is outside the allowed range (0s, 86400s]"#,
            ),
            (
                "noise_margin = 11",
                "invalid `noise_margin`: 11 is outside the allowed range [0, 10]",
            ),
            (
                "consecutive_failures = -1",
                "invalid `consecutive_failures`: -1 is outside the allowed range [1, 1000000]",
            ),
            (
                r#"open_duration = "-5s""#,
                r#"invalid `open_duration`: "-5s" is outside the allowed range (0s, 86400s]"#,
            ),
            (
                r#"open_backoff = { kind = "exponential", base = "-5s" }"#,
                r#"invalid `open_backoff.base`: "-5s" is outside the allowed range (0s, 3600s]"#,
            ),
            (
                "half_open_probes = -1",
                "invalid `half_open_probes`: -1 is outside the allowed range [1, 1000]",
            ),
            (
                "half_open_success_ratio = 0",
                "invalid `half_open_success_ratio`: 0 is outside the allowed range (0, 1]",
            ),
            (
                r#"half_open_max_wait = "-5s""#,
                r#"invalid `half_open_max_wait`: "-5s" is outside the allowed range (0s, 86400s]"#,
            ),
            (
                "seed = -1",
                "invalid `seed`: -1 is outside the allowed range [0, 18446744073709551615]",
            ),
            (
                "max_keys = -1",
                "invalid `max_keys`: -1 is outside the allowed range [1, 1000000]",
            ),
            (
                r#"key_idle_timeout = "-5s""#,
                r#"invalid `key_idle_timeout`: "-5s" is outside the allowed range (0s, 86400s]"#,
            ),
            (
                r#"name = """#,
                r#"invalid `name`: "", expected a non-empty name"#,
            ),
            (
                "consecutive_failures = { min = 0 }",
                "invalid `consecutive_failures.min`: 0 is outside the allowed range [1, 100]",
            ),
            (
                "consecutive_failures = { one_in = -3 }",
                "invalid `consecutive_failures.one_in`: -3 is outside the allowed range [2, 1000000000000000]",
            ),
            (
                r#"consecutive_failures = "sometimes""#,
                r#"invalid `consecutive_failures`: "sometimes" is outside the allowed range [1, 1000000]"#,
            ),
            (
                "open_jitter = 1.5",
                "invalid `open_jitter`: 1.5 is outside the allowed range [0, 1]",
            ),
        ]);
    }

    #[test]
    fn the_consecutive_rule_reads_as_a_count_a_table_or_off() {
        let read = |toml: &str| -> CircuitBreakerConfig { toml::from_str(toml).unwrap() };
        assert_eq!(
            read("").consecutive_failures(),
            Some(ConsecutiveFailures::DEFAULT)
        );
        assert_eq!(
            read("consecutive_failures = 3").consecutive_failures(),
            Some(ConsecutiveFailures::Fixed(3))
        );
        assert_eq!(
            read("consecutive_failures = { min = 3 }").consecutive_failures(),
            Some(ConsecutiveFailures::Adaptive {
                min: 3,
                one_in: 10_000_000
            })
        );
        assert_eq!(
            read(r#"consecutive_failures = "off""#).consecutive_failures(),
            None
        );
        let typo = toml::from_str::<CircuitBreakerConfig>("consecutive_failures = { mni = 3 }")
            .unwrap_err();
        assert!(typo.to_string().contains("unknown field"), "{typo}");
        for config in [
            read("consecutive_failures = 3"),
            read(r#"consecutive_failures = "off""#),
            read("consecutive_failures = { min = 4, one_in = 1000 }\nopen_jitter = 0.2"),
        ] {
            let json = serde_json::to_string(&config).unwrap();
            assert_eq!(
                serde_json::from_str::<CircuitBreakerConfig>(&json).unwrap(),
                config
            );
        }
    }

    #[test]
    fn round_trips_through_serde() {
        let c = build(|b| {
            b.name("x")
                .time_window(Duration::from_secs(5))
                .no_failure_rate()
                .consecutive_failures(3)
                .noise_margin(2.5)
                .half_open_max_wait(Duration::from_secs(2))
                .automatic_transitions(false)
                .overload_is_failure(true)
                .endpoint_fault_is_failure(true)
        })
        .unwrap();
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(
            serde_json::from_str::<CircuitBreakerConfig>(&json).unwrap(),
            c
        );
    }

    #[test]
    fn hinted_open_range_defaults_to_1s_up_to_the_cap_or_10_times_the_open_duration() {
        fn secs(n: u64) -> Duration {
            Duration::from_secs(n)
        }
        let range = |f: fn(CircuitBreakerConfigBuilder) -> CircuitBreakerConfigBuilder| {
            build(f).unwrap().hinted_open_range()
        };
        assert_eq!(range(|b| b), secs(1)..=secs(300));
        assert_eq!(range(|b| b.open_duration(secs(5))), secs(1)..=secs(50));
        let backoff = Backoff::exponential(secs(1))
            .cap(secs(120))
            .build()
            .unwrap();
        let with_backoff = build(|b| b.open_backoff(backoff)).unwrap();
        assert_eq!(with_backoff.hinted_open_range(), secs(1)..=secs(120));
        let short = Duration::from_millis(50);
        assert_eq!(
            range(|b| b.open_duration(Duration::from_millis(50))),
            short * 10..=short * 10,
            "the default minimum gives way to a shorter maximum"
        );
        assert_eq!(
            range(|b| b.open_duration(secs(1)).hinted_open_min(secs(20))),
            secs(20)..=secs(20)
        );
        assert_eq!(
            range(|b| b.hinted_open_min(secs(2)).hinted_open_max(secs(3))),
            secs(2)..=secs(3)
        );
        let c: CircuitBreakerConfig =
            serde_json::from_str(r#"{"hinted_open_min": "500ms", "hinted_open_max": "1m"}"#)
                .unwrap();
        assert_eq!(c.hinted_open_range(), Duration::from_millis(500)..=secs(60));
    }

    #[test]
    fn max_keys_times_the_window_stays_within_256_mib() {
        assert_eq!(build(|b| b).unwrap().max_keys(), 10_000);
        assert_eq!(
            build(|b| b.count_window(100_000)).unwrap().max_keys(),
            2528,
            "the default gives way to a large window"
        );
        assert_eq!(
            build(|b| b.count_window(100_000).max_keys(2528))
                .unwrap()
                .max_keys(),
            2528
        );
        let err = build(|b| b.count_window(100_000).max_keys(10_000)).unwrap_err();
        assert_eq!(err.field(), "max_keys");
        assert!(err.to_string().contains("256 MiB"), "{err}");
        let err =
            build(|b| b.time_window(Duration::from_secs(3600)).max_keys(1_000_000)).unwrap_err();
        assert_eq!(
            err.allowed(),
            "[1, 2900] with this window, so that max_keys × window stays within 256 MiB"
        );
        let err = serde_json::from_str::<CircuitBreakerConfig>(
            r#"{"window": {"count": 50000}, "max_keys": 100000}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("max_keys"), "{err}");
    }

    #[test]
    fn probes_to_close_rounds_up() {
        let c = build(|b| b.half_open_probes(3).half_open_success_ratio(0.5)).unwrap();
        assert_eq!(c.probes_to_close(), 2);
    }
}
