use std::marker::PhantomData;
use std::time::Duration;

use seawall_core::Name;
use seawall_core::config::{self, ConfigError};
use serde::{Deserialize, Serialize};

const DEFAULT_NAME: &str = "throttle";
const DEFAULT_MULTIPLIER: f64 = 2.0;
const DEFAULT_WINDOW: Duration = Duration::from_millis(500);
const DEFAULT_MIN_REQUESTS: u32 = 10;
const MAX_MULTIPLIER: f64 = 100.0;
const MIN_WINDOW: Duration = Duration::from_millis(10);
const MAX_WINDOW: Duration = Duration::from_secs(3600);
const MAX_MIN_REQUESTS: u32 = 1_000_000;

/// A validated throttle configuration.
///
/// Deserializes from, for example, `{ "name": "inventory", "multiplier": 2.0, "window":
/// "500ms", "min_requests": 10, "max_window": "5s" }`, checking every value; every field
/// may be left out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ThrottleSpec", into = "ThrottleSpec")]
pub struct ThrottleConfig {
    pub(crate) name: Name,
    pub(crate) multiplier: f64,
    pub(crate) window: Duration,
    pub(crate) min_requests: u32,
    pub(crate) max_window: Duration,
    pub(crate) accept_failures: bool,
    pub(crate) seed: Option<u64>,
}

impl ThrottleConfig {
    /// A builder for a configuration.
    pub fn builder() -> ThrottleConfigBuilder {
        ThrottleConfigBuilder::new()
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

    /// K: how many requests per accept pass before the throttle rejects any.
    pub fn multiplier(&self) -> f64 {
        self.multiplier
    }

    /// The time constant of the window at rates of `min_requests / window` and above.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// The requests the window holds at least, below that rate, as far as `max_window` lets it.
    pub fn min_requests(&self) -> u32 {
        self.min_requests
    }

    /// The longest time constant the window stretches to for a client that calls rarely.
    pub fn max_window(&self) -> Duration {
        self.max_window
    }

    /// Whether a failure (the downstream answered, with an error) counts as an accept.
    pub fn accept_failures(&self) -> bool {
        self.accept_failures
    }

    /// The seed of the local rejections' random draws, when runs must repeat exactly.
    pub fn seed(&self) -> Option<u64> {
        self.seed
    }
}

/// Builds a [`ThrottleConfig`], or straight a layer when made by `ThrottleLayer::builder`.
#[derive(Debug)]
pub struct ThrottleConfigBuilder<T = ThrottleConfig> {
    spec: ThrottleSpec,
    _output: PhantomData<fn() -> T>,
}

impl<T: From<ThrottleConfig>> ThrottleConfigBuilder<T> {
    pub(crate) fn new() -> Self {
        Self {
            spec: ThrottleSpec::default(),
            _output: PhantomData,
        }
    }

    /// The name of the layer instance (default `"throttle"`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.spec.name = name.into();
        self
    }

    /// K, in `[1, 100]` (default 2, as the SRE book): the throttle rejects nothing while
    /// requests stay within K times the accepts, and lets through about K times what the
    /// downstream accepts when it refuses more. Lower is more aggressive.
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.spec.multiplier = multiplier;
        self
    }

    /// The time constant of the decaying window, in `[10ms, 1h]` (default 500 ms): after the
    /// downstream starts refusing everything, the first local rejection comes after
    /// `window × ln K`, and recovery from full refusal takes about `window × ln(rate × window /
    /// K)` (see the crate docs).
    pub fn window(mut self, window: Duration) -> Self {
        self.spec.window = window;
        self
    }

    /// The fewest requests the window holds, in `[1, 1000000]` (default 10): below `min_requests
    /// / window` requests a second the window stretches towards the last `min_requests`
    /// requests, no further than [`max_window`](Self::max_window) (by default not at all).
    pub fn min_requests(mut self, requests: u32) -> Self {
        self.spec.min_requests = requests;
        self
    }

    /// The longest the window stretches for a client that calls rarely, in `[window, 1h]`
    /// (default: `window`, so that it never stretches). A longer `max_window` lets a client
    /// below `min_requests / window` requests a second throttle on its own last `min_requests`
    /// requests, at the price of a recovery that takes about that many of its calls: at two
    /// requests a second and the default `min_requests`, several seconds of local rejections
    /// after the downstream accepts again (see the crate docs, "Low rates").
    pub fn max_window(mut self, max_window: Duration) -> Self {
        self.spec.max_window = Some(max_window);
        self
    }

    /// Whether a failure classified by the layer's classifier counts as an accept (default
    /// `true`: the downstream took the request and answered; failures are the circuit
    /// breaker's business). With `false` the throttle also backs off from a failing
    /// downstream.
    pub fn accept_failures(mut self, accept: bool) -> Self {
        self.spec.accept_failures = accept;
        self
    }

    /// Seeds the random draws of local rejections, so that runs repeat (default: a random
    /// seed per layer, so that replicas do not reject in step).
    pub fn seed(mut self, seed: u64) -> Self {
        self.spec.seed = Some(seed);
        self
    }

    /// Checks the values and builds.
    pub fn build(self) -> Result<T, ConfigError> {
        ThrottleConfig::try_from(self.spec).map(T::from)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ThrottleSpec {
    #[serde(default = "default_name")]
    name: String,
    #[serde(default = "default_multiplier")]
    multiplier: f64,
    #[serde(default = "default_window", with = "config::duration")]
    window: Duration,
    #[serde(default = "default_min_requests")]
    min_requests: u32,
    #[serde(
        default,
        with = "config::duration",
        skip_serializing_if = "Option::is_none"
    )]
    max_window: Option<Duration>,
    #[serde(default = "yes")]
    accept_failures: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
}

fn default_name() -> String {
    DEFAULT_NAME.into()
}

fn default_multiplier() -> f64 {
    DEFAULT_MULTIPLIER
}

fn default_window() -> Duration {
    DEFAULT_WINDOW
}

fn default_min_requests() -> u32 {
    DEFAULT_MIN_REQUESTS
}

fn yes() -> bool {
    true
}

impl Default for ThrottleSpec {
    fn default() -> Self {
        Self {
            name: default_name(),
            multiplier: DEFAULT_MULTIPLIER,
            window: DEFAULT_WINDOW,
            min_requests: DEFAULT_MIN_REQUESTS,
            max_window: None,
            accept_failures: true,
            seed: None,
        }
    }
}

impl TryFrom<ThrottleSpec> for ThrottleConfig {
    type Error = ConfigError;

    fn try_from(spec: ThrottleSpec) -> Result<Self, ConfigError> {
        let name = Name::new(spec.name)?;
        if !(1.0..=MAX_MULTIPLIER).contains(&spec.multiplier) {
            return Err(ConfigError::new("multiplier", spec.multiplier, "[1, 100]"));
        }
        let window = config::duration_in("window", spec.window, MIN_WINDOW..=MAX_WINDOW)?;
        let min_requests =
            config::count_in("min_requests", spec.min_requests, 1..=MAX_MIN_REQUESTS)?;
        let max_window = match spec.max_window {
            Some(max_window) => config::duration_in("max_window", max_window, window..=MAX_WINDOW)?,
            None => window,
        };
        Ok(Self {
            name,
            multiplier: spec.multiplier,
            window,
            min_requests,
            max_window,
            accept_failures: spec.accept_failures,
            seed: spec.seed,
        })
    }
}

impl From<ThrottleConfig> for ThrottleSpec {
    fn from(c: ThrottleConfig) -> Self {
        Self {
            name: c.name.into(),
            multiplier: c.multiplier,
            window: c.window,
            min_requests: c.min_requests,
            max_window: (c.max_window != c.window).then_some(c.max_window),
            accept_failures: c.accept_failures,
            seed: c.seed,
        }
    }
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self::try_from(ThrottleSpec::default()).expect("the defaults are valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(
        f: impl FnOnce(ThrottleConfigBuilder) -> ThrottleConfigBuilder,
    ) -> Result<ThrottleConfig, ConfigError> {
        f(ThrottleConfig::builder()).build()
    }

    #[test]
    fn defaults_are_valid() {
        let c = build(|b| b).unwrap();
        assert_eq!(c, ThrottleConfig::default());
        assert_eq!(c.name(), "throttle");
        assert_eq!(c.multiplier(), 2.0);
        assert_eq!(c.window(), Duration::from_millis(500));
        assert_eq!(c.min_requests(), 10);
        assert_eq!(c.max_window(), c.window());
        assert!(c.accept_failures());
        assert_eq!(c.seed(), None);
    }

    #[test]
    fn the_window_stretches_no_further_than_itself_unless_told() {
        let c = build(|b| b.window(Duration::from_secs(2))).unwrap();
        assert_eq!(c.max_window(), Duration::from_secs(2));
        let c: ThrottleConfig = serde_json::from_str(r#"{"window": "2s"}"#).unwrap();
        assert_eq!(c.max_window(), Duration::from_secs(2));
        let c = build(|b| b.max_window(Duration::from_secs(30))).unwrap();
        assert_eq!(c.max_window(), Duration::from_secs(30));
    }

    #[test]
    fn bad_values_name_their_field_and_range() {
        let cases = [
            (build(|b| b.name("")), "name", "a non-empty name"),
            (build(|b| b.multiplier(0.5)), "multiplier", "[1, 100]"),
            (build(|b| b.multiplier(-2.0)), "multiplier", "[1, 100]"),
            (build(|b| b.multiplier(f64::NAN)), "multiplier", "[1, 100]"),
            (
                build(|b| b.window(Duration::from_millis(5))),
                "window",
                "[10ms, 3600s]",
            ),
            (build(|b| b.min_requests(0)), "min_requests", "[1, 1000000]"),
            (
                build(|b| b.max_window(Duration::from_millis(100))),
                "max_window",
                "[500ms, 3600s]",
            ),
        ];
        for (result, field, allowed) in cases {
            let err = result.unwrap_err();
            assert_eq!((err.field(), err.allowed()), (field, allowed), "{err}");
        }
    }

    #[test]
    fn deserializes_validates_and_round_trips() {
        let c: ThrottleConfig = serde_json::from_str(
            r#"{"name": "db", "multiplier": 1.5, "window": "1s", "min_requests": 20,
                "max_window": "1m", "accept_failures": false, "seed": 7}"#,
        )
        .unwrap();
        assert_eq!(c.window(), Duration::from_secs(1));
        assert_eq!(c.max_window(), Duration::from_secs(60));
        assert!(!c.accept_failures());
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<ThrottleConfig>(&json).unwrap(), c);
        let bad = serde_json::from_str::<ThrottleConfig>(r#"{"multiplier": -1}"#).unwrap_err();
        assert!(bad.to_string().contains("multiplier"), "{bad}");
        let typo = serde_json::from_str::<ThrottleConfig>(r#"{"windw": "1s"}"#).unwrap_err();
        assert!(typo.to_string().contains("unknown field"), "{typo}");
        let empty: ThrottleConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, ThrottleConfig::default());
    }
}
