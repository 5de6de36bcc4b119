use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use seawall_core::backoff::Backoff;
use seawall_core::config::{self, ConfigError};
use serde::{Deserialize, Serialize};

const DEFAULT_NAME: &str = "circuit_breaker";
const MAX_WINDOW_CALLS: u32 = 100_000;
const MAX_WINDOW_SECS: u64 = 3600;
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
const MAX_PROBES: u32 = 1000;
const MAX_CONSECUTIVE: u32 = 1_000_000;
const MAX_KEYS: usize = 1_000_000;

/// Which calls the failure and slow-call rates are computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Window {
    /// The last `n` calls.
    Count(u32),
    /// The calls of the last whole seconds, kept in one bucket per second.
    Time(#[serde(with = "config::duration")] Duration),
}

/// How long the breaker stays open before it lets probes through.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OpenDuration {
    /// The same time on every opening.
    Fixed(Duration),
    /// Growing with each re-opening that follows no full recovery, jittered and capped.
    Backoff(Backoff),
}

/// A validated circuit breaker configuration.
///
/// Deserializes from, for example,
/// `{ "name": "payments", "window": { "count": 50 }, "failure_rate_threshold": 0.5,
/// "open_duration": "10s" }`, checking every value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "CircuitBreakerSpec", into = "CircuitBreakerSpec")]
pub struct CircuitBreakerConfig {
    pub(crate) name: Arc<str>,
    pub(crate) window: Window,
    pub(crate) minimum_calls: u32,
    pub(crate) failure_rate: Option<f64>,
    pub(crate) slow_call_rate: Option<f64>,
    pub(crate) slow_call_duration: Option<Duration>,
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) open_duration: OpenDuration,
    pub(crate) half_open_probes: u32,
    pub(crate) half_open_success_ratio: f64,
    pub(crate) half_open_max_wait: Option<Duration>,
    pub(crate) seed: Option<u64>,
    pub(crate) max_keys: usize,
    pub(crate) key_idle_timeout: Duration,
    pub(crate) overload_is_failure: bool,
}

impl CircuitBreakerConfig {
    /// A builder for a configuration.
    pub fn builder() -> CircuitBreakerConfigBuilder {
        CircuitBreakerConfigBuilder::new()
    }

    /// The same configuration for a layer instance called `name` (as a ready-made stack names
    /// its layers after itself). An empty name is a `ConfigError`.
    pub fn named(mut self, name: impl Into<String>) -> Result<Self, ConfigError> {
        self.name = seawall_core::config::layer_name(name)?;
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

    /// The run of failures in a row that trips the breaker, if that rule is on.
    pub fn consecutive_failures(&self) -> Option<u32> {
        self.consecutive_failures
    }

    /// How long the breaker stays open.
    pub fn open_duration(&self) -> OpenDuration {
        self.open_duration
    }

    /// Probes admitted at once in half-open.
    pub fn half_open_probes(&self) -> u32 {
        self.half_open_probes
    }

    /// The share of probes that must succeed to close.
    pub fn half_open_success_ratio(&self) -> f64 {
        self.half_open_success_ratio
    }

    /// How long half-open waits for its probes before it opens again, if bounded.
    pub fn half_open_max_wait(&self) -> Option<Duration> {
        self.half_open_max_wait
    }

    /// Whether an overload refusal counts as a failure.
    pub fn overload_is_failure(&self) -> bool {
        self.overload_is_failure
    }

    /// Probes that must succeed before the breaker closes.
    pub(crate) fn probes_to_close(&self) -> u32 {
        let needed = (self.half_open_success_ratio * f64::from(self.half_open_probes)).ceil();
        (needed as u32).clamp(1, self.half_open_probes)
    }
}

/// Builds a [`CircuitBreakerConfig`], or straight a layer when made by
/// `CircuitBreakerLayer::builder`.
#[derive(Debug)]
pub struct CircuitBreakerConfigBuilder<T = CircuitBreakerConfig> {
    spec: CircuitBreakerSpec,
    _output: PhantomData<fn() -> T>,
}

impl<T: From<CircuitBreakerConfig>> CircuitBreakerConfigBuilder<T> {
    pub(crate) fn new() -> Self {
        Self {
            spec: CircuitBreakerSpec::default(),
            _output: PhantomData,
        }
    }

    /// The name of the layer instance (default `"circuit_breaker"`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.spec.name = name.into();
        self
    }

    /// Rates over the last `calls` calls, in `[1, 100000]` (the default, with 100 calls).
    pub fn count_window(mut self, calls: u32) -> Self {
        self.spec.window = Window::Count(calls);
        self
    }

    /// Rates over the calls of the last `span`, whole seconds in `[1s, 1h]`.
    pub fn time_window(mut self, span: Duration) -> Self {
        self.spec.window = Window::Time(span);
        self
    }

    /// Calls the window must hold before a rate can trip, in `[1, window]` for a count window
    /// (default 100, or the window size if smaller, as in Resilience4j: a rate over a handful of
    /// calls is noise, and a 30% error rate would trip a breaker that decides on 20 calls about
    /// one time in twenty).
    pub fn minimum_calls(mut self, calls: u32) -> Self {
        self.spec.minimum_calls = Some(calls);
        self
    }

    /// Opens when at least this share of the window's calls failed, in `(0, 1]` (default 0.5).
    pub fn failure_rate_threshold(mut self, rate: f64) -> Self {
        self.spec.failure_rate_threshold = Some(rate);
        self.spec.no_failure_rate = false;
        self
    }

    /// Turns the failure-rate rule off (another rule must be on).
    pub fn no_failure_rate(mut self) -> Self {
        self.spec.failure_rate_threshold = None;
        self.spec.no_failure_rate = true;
        self
    }

    /// Counts calls longer than `duration` as slow, in `(0s, 1 day]`.
    pub fn slow_call_duration(mut self, duration: Duration) -> Self {
        self.spec.slow_call_duration = Some(duration);
        self
    }

    /// Opens when at least this share of the window's calls were slow, in `(0, 1]`; needs
    /// [`slow_call_duration`](Self::slow_call_duration).
    pub fn slow_call_rate_threshold(mut self, rate: f64) -> Self {
        self.spec.slow_call_rate_threshold = Some(rate);
        self
    }

    /// Opens after `failures` failures in a row, in `[1, 1000000]`, whatever the window holds.
    pub fn consecutive_failures(mut self, failures: u32) -> Self {
        self.spec.consecutive_failures = Some(failures);
        self
    }

    /// Stays open for `duration` each time, in `(0s, 1 day]` (default 30 s).
    pub fn open_duration(mut self, duration: Duration) -> Self {
        self.spec.open_duration = Some(duration);
        self.spec.open_backoff = None;
        self
    }

    /// Stays open longer on each re-opening without a full recovery in between, as `backoff`
    /// gives (attempt 1 for the first opening), with its jitter.
    pub fn open_backoff(mut self, backoff: Backoff) -> Self {
        self.spec.open_backoff = Some(backoff);
        self.spec.open_duration = None;
        self
    }

    /// Probes admitted at once in half-open, in `[1, 1000]` (default 10).
    pub fn half_open_probes(mut self, probes: u32) -> Self {
        self.spec.half_open_probes = Some(probes);
        self
    }

    /// The share of the probes that must succeed to close, in `(0, 1]` (default 1: one failed
    /// probe opens the breaker again).
    pub fn half_open_success_ratio(mut self, ratio: f64) -> Self {
        self.spec.half_open_success_ratio = Some(ratio);
        self
    }

    /// Opens again when the probes have not decided within `wait`, in `(0s, 1 day]`.
    pub fn half_open_max_wait(mut self, wait: Duration) -> Self {
        self.spec.half_open_max_wait = Some(wait);
        self
    }

    /// Whether a call the classifier calls [`Overload`](seawall_core::classify::Outcome::Overload)
    /// (a `429`, a `503`, `RESOURCE_EXHAUSTED`) counts as a failure (default `false`: it counts
    /// for nothing). A downstream that refuses load it cannot take is up; opening on its
    /// refusals would turn shedding into an outage, so overload is left to throttling and
    /// backoff unless this is on.
    pub fn overload_is_failure(mut self, failure: bool) -> Self {
        self.spec.overload_is_failure = failure;
        self
    }

    /// Seeds the jitter of the open backoff, so that runs repeat (default: a random seed).
    pub fn seed(mut self, seed: u64) -> Self {
        self.spec.seed = Some(seed);
        self
    }

    /// Keyed breaker only: the most keys kept, in `[1, 1000000]` (default 10000).
    pub fn max_keys(mut self, keys: usize) -> Self {
        self.spec.max_keys = Some(keys);
        self
    }

    /// Keyed breaker only: a key unused this long may be evicted, in `(0s, 1 day]`
    /// (default 10 min).
    pub fn key_idle_timeout(mut self, idle: Duration) -> Self {
        self.spec.key_idle_timeout = Some(idle);
        self
    }

    /// Checks the values and builds.
    pub fn build(self) -> Result<T, ConfigError> {
        CircuitBreakerConfig::try_from(self.spec).map(T::from)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CircuitBreakerSpec {
    #[serde(default = "default_name")]
    name: String,
    #[serde(default = "default_window")]
    window: Window,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    minimum_calls: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failure_rate_threshold: Option<f64>,
    #[serde(default, skip_serializing_if = "is_false")]
    no_failure_rate: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    slow_call_rate_threshold: Option<f64>,
    #[serde(
        default,
        with = "config::duration",
        skip_serializing_if = "Option::is_none"
    )]
    slow_call_duration: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    consecutive_failures: Option<u32>,
    #[serde(
        default,
        with = "config::duration",
        skip_serializing_if = "Option::is_none"
    )]
    open_duration: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    open_backoff: Option<Backoff>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    half_open_probes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    half_open_success_ratio: Option<f64>,
    #[serde(
        default,
        with = "config::duration",
        skip_serializing_if = "Option::is_none"
    )]
    half_open_max_wait: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_keys: Option<usize>,
    #[serde(
        default,
        with = "config::duration",
        skip_serializing_if = "Option::is_none"
    )]
    key_idle_timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "is_false")]
    overload_is_failure: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn default_name() -> String {
    DEFAULT_NAME.into()
}

fn default_window() -> Window {
    Window::Count(100)
}

impl Default for CircuitBreakerSpec {
    fn default() -> Self {
        Self {
            name: default_name(),
            window: default_window(),
            minimum_calls: None,
            failure_rate_threshold: None,
            no_failure_rate: false,
            slow_call_rate_threshold: None,
            slow_call_duration: None,
            consecutive_failures: None,
            open_duration: None,
            open_backoff: None,
            half_open_probes: None,
            half_open_success_ratio: None,
            half_open_max_wait: None,
            seed: None,
            max_keys: None,
            key_idle_timeout: None,
            overload_is_failure: false,
        }
    }
}

impl TryFrom<CircuitBreakerSpec> for CircuitBreakerConfig {
    type Error = ConfigError;

    fn try_from(spec: CircuitBreakerSpec) -> Result<Self, ConfigError> {
        seawall_core::config::check_name(&spec.name)?;
        let window = match spec.window {
            Window::Count(n) => {
                Window::Count(config::count_in("window.count", n, 1..=MAX_WINDOW_CALLS)?)
            }
            Window::Time(span) => {
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
        let failure_rate = if spec.no_failure_rate {
            None
        } else {
            Some(config::ratio(
                "failure_rate_threshold",
                spec.failure_rate_threshold.unwrap_or(0.5),
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
            return Err(ConfigError::new(
                "slow_call_duration",
                "nothing",
                "a duration in (0s, 1day] when slow_call_rate_threshold is set",
            ));
        }
        let consecutive_failures = spec
            .consecutive_failures
            .map(|n| config::count_in("consecutive_failures", n, 1..=MAX_CONSECUTIVE))
            .transpose()?;
        if failure_rate.is_none() && slow_call_rate.is_none() && consecutive_failures.is_none() {
            return Err(ConfigError::new(
                "failure_rate_threshold",
                "nothing",
                "at least one trip rule (failure rate, slow-call rate or consecutive failures)",
            ));
        }
        let open_duration = match (spec.open_duration, spec.open_backoff) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "open_backoff",
                    "a backoff",
                    "nothing when open_duration is set (one or the other)",
                ));
            }
            (_, Some(backoff)) => OpenDuration::Backoff(backoff),
            (fixed, None) => OpenDuration::Fixed(config::positive_duration(
                "open_duration",
                fixed.unwrap_or(Duration::from_secs(30)),
                MAX_DURATION,
            )?),
        };
        let half_open_probes = config::count_in(
            "half_open_probes",
            spec.half_open_probes.unwrap_or(10),
            1..=MAX_PROBES,
        )?;
        let half_open_success_ratio = config::ratio(
            "half_open_success_ratio",
            spec.half_open_success_ratio.unwrap_or(1.0),
        )?;
        let half_open_max_wait = spec
            .half_open_max_wait
            .map(|d| config::positive_duration("half_open_max_wait", d, MAX_DURATION))
            .transpose()?;
        let max_keys = config::count_in("max_keys", spec.max_keys.unwrap_or(10_000), 1..=MAX_KEYS)?;
        let key_idle_timeout = config::positive_duration(
            "key_idle_timeout",
            spec.key_idle_timeout.unwrap_or(Duration::from_secs(600)),
            MAX_DURATION,
        )?;
        Ok(Self {
            name: spec.name.into(),
            window,
            minimum_calls,
            failure_rate,
            slow_call_rate,
            slow_call_duration,
            consecutive_failures,
            open_duration,
            half_open_probes,
            half_open_success_ratio,
            half_open_max_wait,
            seed: spec.seed,
            max_keys,
            key_idle_timeout,
            overload_is_failure: spec.overload_is_failure,
        })
    }
}

impl From<CircuitBreakerConfig> for CircuitBreakerSpec {
    fn from(c: CircuitBreakerConfig) -> Self {
        let (open_duration, open_backoff) = match c.open_duration {
            OpenDuration::Fixed(d) => (Some(d), None),
            OpenDuration::Backoff(b) => (None, Some(b)),
        };
        Self {
            name: c.name.to_string(),
            window: c.window,
            minimum_calls: Some(c.minimum_calls),
            failure_rate_threshold: c.failure_rate,
            no_failure_rate: c.failure_rate.is_none(),
            slow_call_rate_threshold: c.slow_call_rate,
            slow_call_duration: c.slow_call_duration,
            consecutive_failures: c.consecutive_failures,
            open_duration,
            open_backoff,
            half_open_probes: Some(c.half_open_probes),
            half_open_success_ratio: Some(c.half_open_success_ratio),
            half_open_max_wait: c.half_open_max_wait,
            seed: c.seed,
            max_keys: Some(c.max_keys),
            key_idle_timeout: Some(c.key_idle_timeout),
            overload_is_failure: c.overload_is_failure,
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
        assert_eq!(c.half_open_probes(), 10);
        assert_eq!(c.probes_to_close(), 10);
        assert!(!c.overload_is_failure());
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
                build(|b| b.no_failure_rate()).unwrap_err(),
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
    fn round_trips_through_serde() {
        let c = build(|b| {
            b.name("x")
                .time_window(Duration::from_secs(5))
                .no_failure_rate()
                .consecutive_failures(3)
                .half_open_max_wait(Duration::from_secs(2))
                .overload_is_failure(true)
        })
        .unwrap();
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(
            serde_json::from_str::<CircuitBreakerConfig>(&json).unwrap(),
            c
        );
    }

    #[test]
    fn probes_to_close_rounds_up() {
        let c = build(|b| b.half_open_probes(3).half_open_success_ratio(0.5)).unwrap();
        assert_eq!(c.probes_to_close(), 2);
    }
}
