use std::marker::PhantomData;
use std::time::Duration;

use seawall_core::Name;
use seawall_core::config::{self, ConfigError};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

const DEFAULT_NAME: &str = "throttle";
const DEFAULT_MULTIPLIER: f64 = 2.0;
const DEFAULT_WINDOW: Duration = Duration::from_millis(500);
const DEFAULT_MIN_REQUESTS: u32 = 10;
const MAX_MULTIPLIER: f64 = 100.0;
const MIN_WINDOW: Duration = Duration::from_millis(10);
const MAX_WINDOW: Duration = Duration::from_secs(3600);
const MAX_MIN_REQUESTS: u32 = 1_000_000;
const DEFAULT_PROBE: f64 = 0.5;
const DEFAULT_ELEVATION: f64 = 2.0;
const DEFAULT_DECAY: Duration = Duration::from_secs(2);
const DEFAULT_BASE_WINDOW: Duration = Duration::from_secs(2);
const DEFAULT_TAIL_HOLD: Duration = Duration::from_secs(5);
const MAX_ELEVATION: f64 = 100.0;
const MIN_SHED_TIME: Duration = Duration::from_millis(100);
const MAX_SHED_TIME: Duration = Duration::from_secs(600);

/// A validated throttle configuration.
///
/// Deserializes from, for example, `{ "name": "inventory", "multiplier": 2.0, "window":
/// "500ms", "min_requests": 10, "max_window": "5s", "shed": { "probe": 0.5 } }`, checking
/// every value; every field may be left out. `shed` is off unless given (`"off"` or `null`
/// turns it off again).
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
    pub(crate) shed: Option<ShedConfig>,
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

    /// The shed on the response to shedding, if on.
    pub fn shed(&self) -> Option<&ShedConfig> {
        self.shed.as_ref()
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

    /// Sheds calls on the latency the downstream answers with, before it refuses any (see
    /// [`ShedConfig`]; default: off).
    pub fn shed(mut self, shed: ShedConfig) -> Self {
        self.spec.shed = Some(shed);
        self
    }

    /// No shed on latency: only the downstream's refusals throttle.
    pub fn no_shed(mut self) -> Self {
        self.spec.shed = None;
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
    #[serde(
        default,
        deserialize_with = "shed_or_off",
        serialize_with = "write_shed"
    )]
    shed: Option<ShedConfig>,
}

/// Reads a shed table, or `"off"` (or `null`) for none.
fn shed_or_off<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ShedConfig>, D::Error> {
    struct ShedOrOff;

    impl<'de> Visitor<'de> for ShedOrOff {
        type Value = Option<ShedConfig>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(SHED)
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            match v {
                "off" => Ok(None),
                other => Err(E::custom(ConfigError::expected(
                    "shed",
                    format_args!("{other:?}"),
                    SHED,
                ))),
            }
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            config::within("shed", de::value::MapAccessDeserializer::new(map)).map(Some)
        }
    }

    d.deserialize_any(ShedOrOff)
}

const SHED: &str = r#""off" or a shed such as { probe = 0.5, elevation = 2.0 }"#;

fn write_shed<S: Serializer>(shed: &Option<ShedConfig>, s: S) -> Result<S::Ok, S::Error> {
    match shed {
        Some(shed) => shed.serialize(s),
        None => s.serialize_str("off"),
    }
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
            shed: None,
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
            shed: spec.shed,
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
            shed: c.shed,
        }
    }
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self::try_from(ThrottleSpec::default()).expect("the defaults are valid")
    }
}

/// The shed on the response to shedding: local rejections while the downstream's latency says
/// its queue grows, before it refuses anything (see the crate docs, "Shedding on latency").
///
/// Deserializes from `{ "probe": 0.5, "elevation": 2.0, "decay": "2s", "base_window": "2s",
/// "tail_hold": "5s" }`, every field optional.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ShedSpec", into = "ShedSpec")]
pub struct ShedConfig {
    pub(crate) probe: f64,
    pub(crate) elevation: f64,
    pub(crate) decay: Duration,
    pub(crate) base_window: Duration,
    pub(crate) tail_hold: Duration,
}

impl ShedConfig {
    /// The shed probability a first elevated answer sets, in `(0, 1)` (default 0.5).
    ///
    /// A client learns whether its queue answers shedding only from its next answer, and
    /// sheds `probe / (1 − probe)` calls before it, whatever the downstream: at 0.5, one call
    /// per step to a uniformly slower downstream. The lab's `slow-*` verdicts allow 5 % of a
    /// 20 s step; a client of a fleet of 1000 at 1.5 calls a second makes 30 calls in it, so
    /// `probe / (1 − probe) ≤ 1.5`, `probe ≤ 0.6`. Below about 0.4 a fleet's probe no longer
    /// takes the arrivals under the capacity of an overload of 1.5× (0.3 measured: 83 % of it
    /// served).
    pub fn with_probe(self, probe: f64) -> Result<Self, ConfigError> {
        Self::try_from(ShedSpec {
            probe,
            ..ShedSpec::from(self)
        })
    }

    /// An answer is elevated above `elevation` × the base (the fastest recent answer), in
    /// `[1.5, 100]` (default 2).
    ///
    /// A healthy downstream's spread stays below it (8–12 ms answers: at most 1.5× their
    /// minimum), and an accepted call at twice the healthy latency is where the lab's overload
    /// verdict fails, so a queue must be seen by then.
    pub fn with_elevation(self, elevation: f64) -> Result<Self, ConfigError> {
        Self::try_from(ShedSpec {
            elevation,
            ..ShedSpec::from(self)
        })
    }

    /// The time constant the shed probability decays with, in `[100ms, 600s]` (default 2 s).
    ///
    /// The probe falls from 0.5 to nothing (under 0.01) in `decay × ln 50`, about 8 s, with no
    /// elevated answer: a probe that nothing confirmed releases on its own. In a confirmed
    /// queue the decay is five times slower (see the crate docs), and answers that are not
    /// elevated release the shed instead.
    pub fn with_decay(self, decay: Duration) -> Result<Self, ConfigError> {
        Self::try_from(ShedSpec {
            decay,
            ..ShedSpec::from(self)
        })
    }

    /// The base is the fastest answer of the last one or two `base_window`s, in
    /// `[100ms, 600s]` (default 2 s).
    ///
    /// A client at 1.5 calls a second has 3 to 6 answers in it, enough for a minimum; a
    /// downstream that became slower for good is the base again after at most two windows
    /// even if no probe said so.
    pub fn with_base_window(self, base_window: Duration) -> Result<Self, ConfigError> {
        Self::try_from(ShedSpec {
            base_window,
            ..ShedSpec::from(self)
        })
    }

    /// No probe on an elevated answer for `tail_hold` after an attempt was cut (timed out)
    /// while nothing was shed, in `[0s, 600s]` (default 5 s).
    ///
    /// A cut that comes before any elevated answer is a tail, a hang or a step to a downstream
    /// slower than the attempt timeout, not a queue (a queue is elevated long before it reaches
    /// an attempt timeout, and one that passes it first probes on its run of cuts); the retries
    /// of cut calls queue a little on their own. 5 s is the mean gap between a client's cuts
    /// at 5 % of four calls a second cut.
    pub fn with_tail_hold(self, tail_hold: Duration) -> Result<Self, ConfigError> {
        Self::try_from(ShedSpec {
            tail_hold,
            ..ShedSpec::from(self)
        })
    }

    /// The shed probability a first elevated answer sets.
    pub fn probe(&self) -> f64 {
        self.probe
    }

    /// How many times the base an answer must take to be elevated.
    pub fn elevation(&self) -> f64 {
        self.elevation
    }

    /// The time constant of the shed probability's decay.
    pub fn decay(&self) -> Duration {
        self.decay
    }

    /// The window whose fastest answer is the base.
    pub fn base_window(&self) -> Duration {
        self.base_window
    }

    /// How long a cut while nothing was shed holds probes off.
    pub fn tail_hold(&self) -> Duration {
        self.tail_hold
    }
}

impl Default for ShedConfig {
    fn default() -> Self {
        Self {
            probe: DEFAULT_PROBE,
            elevation: DEFAULT_ELEVATION,
            decay: DEFAULT_DECAY,
            base_window: DEFAULT_BASE_WINDOW,
            tail_hold: DEFAULT_TAIL_HOLD,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ShedSpec {
    probe: f64,
    elevation: f64,
    #[serde(with = "config::duration")]
    decay: Duration,
    #[serde(with = "config::duration")]
    base_window: Duration,
    #[serde(with = "config::duration")]
    tail_hold: Duration,
}

impl Default for ShedSpec {
    fn default() -> Self {
        ShedConfig::default().into()
    }
}

impl TryFrom<ShedSpec> for ShedConfig {
    type Error = ConfigError;

    fn try_from(spec: ShedSpec) -> Result<Self, ConfigError> {
        if !(spec.probe > 0.0 && spec.probe < 1.0) {
            return Err(ConfigError::new("probe", spec.probe, "(0, 1)"));
        }
        if !(1.5..=MAX_ELEVATION).contains(&spec.elevation) {
            return Err(ConfigError::new("elevation", spec.elevation, "[1.5, 100]"));
        }
        let time = MIN_SHED_TIME..=MAX_SHED_TIME;
        Ok(Self {
            probe: spec.probe,
            elevation: spec.elevation,
            decay: config::duration_in("decay", spec.decay, time.clone())?,
            base_window: config::duration_in("base_window", spec.base_window, time)?,
            tail_hold: config::duration_in(
                "tail_hold",
                spec.tail_hold,
                Duration::ZERO..=MAX_SHED_TIME,
            )?,
        })
    }
}

impl From<ShedConfig> for ShedSpec {
    fn from(c: ShedConfig) -> Self {
        Self {
            probe: c.probe,
            elevation: c.elevation,
            decay: c.decay,
            base_window: c.base_window,
            tail_hold: c.tail_hold,
        }
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

    #[test]
    fn the_shed_is_off_unless_given_and_reads_from_a_table() {
        assert_eq!(ThrottleConfig::default().shed(), None);
        let c = build(|b| b.shed(ShedConfig::default())).unwrap();
        let shed = c.shed().unwrap();
        assert_eq!(shed.probe(), 0.5);
        assert_eq!(shed.elevation(), 2.0);
        assert_eq!(shed.decay(), Duration::from_secs(2));
        assert_eq!(shed.base_window(), Duration::from_secs(2));
        assert_eq!(shed.tail_hold(), Duration::from_secs(5));
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<ThrottleConfig>(&json).unwrap(), c);
        let c: ThrottleConfig =
            serde_json::from_str(r#"{"shed": {"probe": 0.4, "tail_hold": "0s"}}"#).unwrap();
        assert_eq!(c.shed().unwrap().probe(), 0.4);
        assert_eq!(c.shed().unwrap().tail_hold(), Duration::ZERO);
        for off in [r#"{"shed": "off"}"#, r#"{"shed": null}"#] {
            let c: ThrottleConfig = serde_json::from_str(off).unwrap();
            assert_eq!(c.shed(), None, "{off}");
        }
        let bad = serde_json::from_str::<ThrottleConfig>(r#"{"shed": {"probe": 1.0}}"#)
            .unwrap_err()
            .to_string();
        assert!(
            bad.contains("shed.probe") && bad.contains("(0, 1)"),
            "{bad}"
        );
        let bad = serde_json::from_str::<ThrottleConfig>(r#"{"shed": {"decay": "1ms"}}"#)
            .unwrap_err()
            .to_string();
        assert!(bad.contains("shed.decay"), "{bad}");
        let cases = [
            (ShedConfig::default().with_probe(0.0), "probe"),
            (ShedConfig::default().with_elevation(1.2), "elevation"),
            (ShedConfig::default().with_decay(Duration::ZERO), "decay"),
            (
                ShedConfig::default().with_base_window(Duration::from_secs(601)),
                "base_window",
            ),
            (
                ShedConfig::default().with_tail_hold(Duration::from_secs(601)),
                "tail_hold",
            ),
        ];
        for (result, field) in cases {
            assert_eq!(result.unwrap_err().field(), field);
        }
    }
}
