use std::marker::PhantomData;
use std::time::Duration;

use seawall_core::Name;
use seawall_core::config::{self, ConfigError, Raw};
use serde::{Deserialize, Deserializer, Serialize};

use crate::limit::{AdaptiveLimit, MAX_LIMIT};

const DEFAULT_NAME: &str = "bulkhead";
const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(1);
const DEFAULT_SAMPLE_WINDOW: Duration = Duration::from_secs(1);
const SAMPLE_WINDOWS: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(60);
// Half nginx's `send_timeout` (60 s), which closes a connection whose client read nothing for
// that long: giving a slot back costs the reader nothing (its response goes on streaming), so
// the bar may be lower. A healthy client on a slow link asks for the next frame far sooner.
const DEFAULT_MAX_READER_IDLE: Duration = Duration::from_secs(30);
const READER_IDLES: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(10)..=config::MAX_DURATION;
const MAX_QUEUE_LIMIT: usize = 1_000_000;
const MAX_PARTITIONS: usize = 64;

/// A validated bulkhead configuration.
///
/// Deserializes from, for example,
/// `{ "name": "db", "max_concurrent": 10, "queue_limit": 20, "max_wait": "50ms" }` or
/// `{ "adaptive": { "vegas": { "initial": 20, "max": 200 } } }`, and checks the values as it
/// does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "BulkheadSpec", into = "BulkheadSpec")]
pub struct BulkheadConfig {
    pub(crate) name: Name,
    pub(crate) limit: Limit,
    pub(crate) queue_limit: usize,
    pub(crate) max_wait: Duration,
    pub(crate) sample_window: Duration,
    pub(crate) partitions: Vec<PartitionConfig>,
    pub(crate) borrowing: bool,
    pub(crate) max_reader_idle: Duration,
}

impl BulkheadConfig {
    /// A builder for a configuration.
    pub fn builder() -> BulkheadConfigBuilder {
        BulkheadConfigBuilder::new()
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

    /// How the concurrency limit is set.
    pub fn limit(&self) -> &Limit {
        &self.limit
    }

    /// How many calls may wait for a slot.
    pub fn queue_limit(&self) -> usize {
        self.queue_limit
    }

    /// How long a call may wait for a slot.
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }

    /// How long an adaptive limit gathers samples before it moves.
    pub fn sample_window(&self) -> Duration {
        self.sample_window
    }

    /// The partitions, in the order a partition key's index refers to.
    pub fn partitions(&self) -> &[PartitionConfig] {
        &self.partitions
    }

    /// Whether a partition may use slots another partition's share leaves idle.
    pub fn borrowing(&self) -> bool {
        self.borrowing
    }

    /// How long a response body holding a slot may wait for its reader before the slot is
    /// given back.
    pub fn max_reader_idle(&self) -> Duration {
        self.max_reader_idle
    }
}

/// How a bulkhead's concurrency limit is set.
#[derive(Debug, Clone, PartialEq)]
pub enum Limit {
    /// A limit that only changes when a handle changes it.
    Fixed(usize),
    /// A limit that follows what the downstream can take.
    Adaptive(AdaptiveLimit),
}

/// One partition of a partitioned bulkhead: a name and the share of the limit it is sure of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "PartitionSpec", into = "PartitionSpec")]
pub struct PartitionConfig {
    pub(crate) name: String,
    pub(crate) share: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartitionSpec {
    name: Raw<String>,
    share: Raw<f64>,
}

impl From<PartitionConfig> for PartitionSpec {
    fn from(c: PartitionConfig) -> Self {
        Self {
            name: c.name.into(),
            share: c.share.into(),
        }
    }
}

impl TryFrom<PartitionSpec> for PartitionConfig {
    type Error = ConfigError;

    fn try_from(spec: PartitionSpec) -> Result<Self, ConfigError> {
        Ok(Self {
            name: spec.name.expected("partitions.name", "a non-empty name")?,
            share: spec.share.value("partitions.share", "(0, 1]")?,
        })
    }
}

impl PartitionConfig {
    /// The partition's name, for logs and the handle.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The share of the limit, in `(0, 1]`.
    pub fn share(&self) -> f64 {
        self.share
    }
}

/// Builds a [`BulkheadConfig`], or straight a layer when made by `BulkheadLayer::builder`.
#[derive(Debug)]
pub struct BulkheadConfigBuilder<T = BulkheadConfig> {
    spec: BulkheadSpec,
    _output: PhantomData<fn() -> T>,
}

impl<T: From<BulkheadConfig>> BulkheadConfigBuilder<T> {
    pub(crate) fn new() -> Self {
        Self {
            spec: BulkheadSpec {
                name: default_name(),
                max_concurrent: None,
                adaptive: None,
                queue_limit: 0.into(),
                max_wait: default_max_wait(),
                sample_window: default_sample_window(),
                partitions: Vec::new(),
                borrowing: yes(),
                max_reader_idle: default_max_reader_idle(),
            },
            _output: PhantomData,
        }
    }

    /// The name of the layer instance (default `"bulkhead"`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.spec.name = name.into().into();
        self
    }

    /// A fixed limit of concurrent calls, in `[1, 1000000]`. This or
    /// [`adaptive`](Self::adaptive) is required.
    pub fn max_concurrent(mut self, limit: usize) -> Self {
        self.spec.max_concurrent = Some(limit.into());
        self
    }

    /// A limit that adapts to the downstream, from [`AimdConfig`](crate::AimdConfig),
    /// [`VegasConfig`](crate::VegasConfig) or [`Gradient2Config`](crate::Gradient2Config).
    pub fn adaptive(mut self, limit: impl Into<AdaptiveLimit>) -> Self {
        self.spec.adaptive = Some(limit.into());
        self
    }

    /// How many calls may wait for a slot when none is free (default 0: a full bulkhead
    /// rejects at once).
    pub fn queue_limit(mut self, queue_limit: usize) -> Self {
        self.spec.queue_limit = queue_limit.into();
        self
    }

    /// How long a queued call waits for a slot before it is rejected, in `(0s, 1 day]`
    /// (default 1 s).
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.spec.max_wait = max_wait.into();
        self
    }

    /// How long an adaptive limit gathers samples before it moves, in `[100ms, 1min]`
    /// (default 1 s, as Netflix's `WindowedLimit`). A window with fewer than 10 samples is
    /// skipped.
    pub fn sample_window(mut self, window: Duration) -> Self {
        self.spec.sample_window = window.into();
        self
    }

    /// Adds a partition with `share` of the limit, in `(0, 1]`; the shares may add up to at
    /// most 1. A partition key names a partition by its index, in the order they were added.
    pub fn partition(mut self, name: impl Into<String>, share: f64) -> Self {
        self.spec.partitions.push(PartitionConfig {
            name: name.into(),
            share,
        });
        self
    }

    /// Whether a partition may use slots that another partition's share leaves idle (default
    /// `true`); without borrowing, no partition ever holds more than its share.
    pub fn borrowing(mut self, borrowing: bool) -> Self {
        self.spec.borrowing = borrowing.into();
        self
    }

    /// How long a response body that holds a slot (with `BulkheadLayer::release_on_body_end`
    /// of the `http` feature, or a classifier that waits for the end of the body such as
    /// `GrpcCodes`) may wait for its reader to ask for the next frame before its slot is given
    /// back, in `[10ms, 1 day]` (default 30 s).
    ///
    /// A client that stops reading (a full socket buffer, a closed HTTP/2 window) would
    /// otherwise hold its slot for as long as its connection lives. Time the body spends
    /// waiting for its own producer (a slow handler, a quiet stream) does not count. The
    /// response itself goes on; only the bulkhead stops counting it, between 1 and 17/16 times
    /// this after the body began to wait for its reader, when a call needs the slot.
    pub fn max_reader_idle(mut self, idle: Duration) -> Self {
        self.spec.max_reader_idle = idle.into();
        self
    }

    /// Checks the values and builds.
    pub fn build(self) -> Result<T, ConfigError> {
        BulkheadConfig::try_from(self.spec).map(T::from)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkheadSpec {
    #[serde(default = "default_name")]
    name: Raw<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_concurrent: Option<Raw<usize>>,
    #[serde(
        default,
        deserialize_with = "adaptive_within",
        skip_serializing_if = "Option::is_none"
    )]
    adaptive: Option<AdaptiveLimit>,
    #[serde(default = "no_queue")]
    queue_limit: Raw<usize>,
    #[serde(default = "default_max_wait")]
    max_wait: Raw<Duration>,
    #[serde(default = "default_sample_window")]
    sample_window: Raw<Duration>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    partitions: Vec<PartitionConfig>,
    #[serde(default = "yes")]
    borrowing: Raw<bool>,
    #[serde(default = "default_max_reader_idle")]
    max_reader_idle: Raw<Duration>,
}

fn adaptive_within<'de, D: Deserializer<'de>>(d: D) -> Result<Option<AdaptiveLimit>, D::Error> {
    config::within("adaptive", d)
}

fn default_name() -> Raw<String> {
    String::from(DEFAULT_NAME).into()
}

fn no_queue() -> Raw<usize> {
    0.into()
}

fn default_max_reader_idle() -> Raw<Duration> {
    DEFAULT_MAX_READER_IDLE.into()
}

fn default_max_wait() -> Raw<Duration> {
    DEFAULT_MAX_WAIT.into()
}

fn default_sample_window() -> Raw<Duration> {
    DEFAULT_SAMPLE_WINDOW.into()
}

fn yes() -> Raw<bool> {
    true.into()
}

impl TryFrom<BulkheadSpec> for BulkheadConfig {
    type Error = ConfigError;

    fn try_from(spec: BulkheadSpec) -> Result<Self, ConfigError> {
        let name = Name::from_raw(spec.name)?;
        let limit = match (spec.max_concurrent, spec.adaptive) {
            (Some(n), None) => Limit::Fixed(config::count_in("max_concurrent", n, 1..=MAX_LIMIT)?),
            (None, Some(adaptive)) => {
                adaptive.validate()?;
                Limit::Adaptive(adaptive)
            }
            (None, None) => {
                return Err(ConfigError::expected(
                    "max_concurrent",
                    "nothing",
                    "a limit in [1, 1000000], or an adaptive limit",
                ));
            }
            (Some(_), Some(_)) => {
                return Err(ConfigError::expected(
                    "max_concurrent",
                    "a limit",
                    "nothing when an adaptive limit is set",
                ));
            }
        };
        let queue_limit = config::count_in("queue_limit", spec.queue_limit, 0..=MAX_QUEUE_LIMIT)?;
        let max_wait = config::positive_duration("max_wait", spec.max_wait, config::MAX_DURATION)?;
        let sample_window =
            config::duration_in("sample_window", spec.sample_window, SAMPLE_WINDOWS)?;
        validate_partitions(&spec.partitions)?;
        let max_reader_idle =
            config::duration_in("max_reader_idle", spec.max_reader_idle, READER_IDLES)?;
        Ok(Self {
            max_reader_idle,
            sample_window,
            name,
            limit,
            queue_limit,
            max_wait,
            partitions: spec.partitions,
            borrowing: spec.borrowing.expected("borrowing", "true or false")?,
        })
    }
}

fn validate_partitions(partitions: &[PartitionConfig]) -> Result<(), ConfigError> {
    config::count_in("partitions", partitions.len(), 0..=MAX_PARTITIONS)?;
    let mut total = 0.0;
    for (i, partition) in partitions.iter().enumerate() {
        let within = |e: ConfigError| e.within(&format!("partitions[{i}]"));
        if partition.name.is_empty() {
            return Err(within(ConfigError::expected(
                "name",
                "\"\"",
                "a non-empty name",
            )));
        }
        if partitions[..i].iter().any(|p| p.name == partition.name) {
            return Err(within(ConfigError::expected(
                "name",
                format_args!("{:?}", partition.name),
                "a name no other partition has",
            )));
        }
        config::ratio("share", partition.share).map_err(within)?;
        total += partition.share;
    }
    // A little slack, so that shares such as 0.7 + 0.2 + 0.1 are not refused for rounding.
    if total > 1.0 + 1e-9 {
        return Err(ConfigError::new(
            "partitions.share",
            format_args!("a sum of {total}"),
            "a sum of at most 1",
        ));
    }
    Ok(())
}

impl From<BulkheadConfig> for BulkheadSpec {
    fn from(config: BulkheadConfig) -> Self {
        let (max_concurrent, adaptive) = match config.limit {
            Limit::Fixed(n) => (Some(n), None),
            Limit::Adaptive(adaptive) => (None, Some(adaptive)),
        };
        Self {
            name: config.name.into(),
            max_concurrent: max_concurrent.map(Raw::from),
            adaptive,
            queue_limit: config.queue_limit.into(),
            max_wait: config.max_wait.into(),
            sample_window: config.sample_window.into(),
            partitions: config.partitions,
            borrowing: config.borrowing.into(),
            max_reader_idle: config.max_reader_idle.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::{AimdConfig, Gradient2Config, VegasConfig};

    fn fixed(n: usize) -> BulkheadConfigBuilder {
        BulkheadConfig::builder().max_concurrent(n)
    }

    #[test]
    fn a_zero_or_missing_limit_is_refused() {
        assert_eq!(fixed(0).build().unwrap_err().field(), "max_concurrent");
        let missing = BulkheadConfig::builder().build().unwrap_err();
        assert_eq!(missing.field(), "max_concurrent");
        let both = fixed(3).adaptive(AimdConfig::new()).build().unwrap_err();
        assert_eq!(both.field(), "max_concurrent");
        assert_eq!(
            fixed(0).build().unwrap_err().to_string(),
            "invalid `max_concurrent`: 0 is outside the allowed range [1, 1000000]"
        );
    }

    #[test]
    fn adaptive_bounds_are_checked() {
        let min_above_max = BulkheadConfig::builder()
            .adaptive(VegasConfig::new().min(50).max(10))
            .build()
            .unwrap_err();
        assert_eq!(min_above_max.field(), "adaptive.vegas.max");
        let initial_outside = BulkheadConfig::builder()
            .adaptive(AimdConfig::new().min(5).max(10).initial(20))
            .build()
            .unwrap_err();
        assert_eq!(initial_outside.field(), "adaptive.aimd.initial");
        let zero_min = BulkheadConfig::builder()
            .adaptive(Gradient2Config::new().min(0))
            .build()
            .unwrap_err();
        assert_eq!(zero_min.field(), "adaptive.gradient2.min");
        let ratio = BulkheadConfig::builder()
            .adaptive(AimdConfig::new().backoff_ratio(1.0))
            .build()
            .unwrap_err();
        assert_eq!(ratio.field(), "adaptive.aimd.backoff_ratio");
        let smoothing = BulkheadConfig::builder()
            .adaptive(Gradient2Config::new().smoothing(0.0))
            .build()
            .unwrap_err();
        assert_eq!(smoothing.field(), "adaptive.gradient2.smoothing");
    }

    #[test]
    fn partition_shares_must_sum_to_at_most_one() {
        let over = fixed(10)
            .partition("live", 0.9)
            .partition("batch", 0.2)
            .build()
            .unwrap_err();
        assert_eq!(over.field(), "partitions.share");
        assert!(over.to_string().contains("at most 1"), "{over}");
        let ok = fixed(10)
            .partition("a", 0.7)
            .partition("b", 0.2)
            .partition("c", 0.1)
            .build();
        assert!(ok.is_ok());
        let zero = fixed(10).partition("a", 0.0).build().unwrap_err();
        assert_eq!(zero.field(), "partitions[0].share");
        let twice = fixed(10)
            .partition("a", 0.5)
            .partition("a", 0.5)
            .build()
            .unwrap_err();
        assert_eq!(twice.field(), "partitions[1].name");
    }

    #[test]
    fn the_sample_window_is_checked() {
        let short = BulkheadConfig::builder()
            .adaptive(AimdConfig::new())
            .sample_window(Duration::from_millis(10))
            .build()
            .unwrap_err();
        assert_eq!(short.field(), "sample_window");
        assert_eq!(short.allowed(), "[100ms, 60s]");
    }

    #[test]
    fn queue_and_wait_are_checked() {
        assert_eq!(
            fixed(1)
                .max_wait(Duration::ZERO)
                .build()
                .unwrap_err()
                .field(),
            "max_wait"
        );
        // The house's longest duration, as every layer's waits and timeouts.
        assert!(fixed(1).max_wait(config::MAX_DURATION).build().is_ok());
        let long = fixed(1)
            .max_wait(config::MAX_DURATION + Duration::from_nanos(1))
            .build()
            .unwrap_err();
        assert_eq!((long.field(), long.allowed()), ("max_wait", "(0s, 86400s]"));
        assert_eq!(
            fixed(1).queue_limit(2_000_000).build().unwrap_err().field(),
            "queue_limit"
        );
    }

    #[test]
    fn the_reader_idle_time_is_checked_and_read() {
        assert_eq!(
            fixed(1).build().unwrap().max_reader_idle(),
            Duration::from_secs(30)
        );
        let short = fixed(1)
            .max_reader_idle(Duration::from_millis(1))
            .build()
            .unwrap_err();
        assert_eq!(short.field(), "max_reader_idle");
        assert_eq!(short.allowed(), "[10ms, 86400s]");
        let config: BulkheadConfig =
            serde_json::from_str(r#"{"max_concurrent": 4, "max_reader_idle": "5s"}"#).unwrap();
        assert_eq!(config.max_reader_idle(), Duration::from_secs(5));
    }

    #[test]
    fn deserializes_fixed_and_adaptive_limits() {
        let config: BulkheadConfig = serde_json::from_str(
            r#"{"name": "db", "max_concurrent": 10, "queue_limit": 5, "max_wait": "50ms",
                "partitions": [{"name": "live", "share": 0.9}, {"name": "batch", "share": 0.1}]}"#,
        )
        .unwrap();
        assert_eq!(config.limit(), &Limit::Fixed(10));
        assert_eq!(config.max_wait(), Duration::from_millis(50));
        assert_eq!(config.partitions()[1].name(), "batch");
        let adaptive: BulkheadConfig =
            serde_json::from_str(r#"{"adaptive": {"vegas": {"initial": 30, "max": 300}}}"#)
                .unwrap();
        assert_eq!(
            adaptive.limit(),
            &Limit::Adaptive(AdaptiveLimit::Vegas(
                VegasConfig::new().initial(30).max(300)
            ))
        );
        let aimd: BulkheadConfig =
            serde_json::from_str(r#"{"adaptive": {"aimd": {"timeout": "250ms"}}}"#).unwrap();
        assert_eq!(
            aimd.limit(),
            &Limit::Adaptive(AdaptiveLimit::Aimd(
                AimdConfig::new().timeout(Duration::from_millis(250))
            ))
        );
    }

    #[test]
    fn deserializing_validates_and_rejects_unknown_fields() {
        let zero = serde_json::from_str::<BulkheadConfig>(r#"{"max_concurrent": 0}"#).unwrap_err();
        assert!(
            zero.to_string().contains("invalid `max_concurrent`"),
            "{zero}"
        );
        let typo = serde_json::from_str::<BulkheadConfig>(r#"{"max_concurent": 3}"#).unwrap_err();
        assert!(typo.to_string().contains("unknown field"), "{typo}");
        let inner =
            serde_json::from_str::<BulkheadConfig>(r#"{"adaptive": {"aimd": {"inital": 3}}}"#)
                .unwrap_err();
        assert!(inner.to_string().contains("unknown field"), "{inner}");
    }

    #[test]
    fn errors_name_the_field_and_its_range_in_toml_and_json() {
        seawall_core::testing::config::assert_errors::<BulkheadConfig>(&[
            (
                "max_concurrent = -1",
                "invalid `max_concurrent`: -1 is outside the allowed range [1, 1000000]",
            ),
            (
                "max_concurrent = 1\nqueue_limit = -1",
                "invalid `queue_limit`: -1 is outside the allowed range [0, 1000000]",
            ),
            (
                "max_concurrent = 1\nmax_wait = \"-5s\"",
                r#"invalid `max_wait`: "-5s" is outside the allowed range (0s, 86400s]"#,
            ),
            (
                "max_concurrent = 1\nsample_window = \"-5s\"",
                r#"invalid `sample_window`: "-5s" is outside the allowed range [100ms, 60s]"#,
            ),
            (
                "max_concurrent = 1\nborrowing = 2",
                "invalid `borrowing`: 2, expected true or false",
            ),
            (
                "max_concurrent = 1\nname = \"\"",
                r#"invalid `name`: "", expected a non-empty name"#,
            ),
            (
                "adaptive = { aimd = { min = -1 } }",
                "invalid `adaptive.aimd.min`: -1 is outside the allowed range [1, 1000000]",
            ),
            (
                "adaptive = { vegas = { min = 50, max = 10 } }",
                "invalid `adaptive.vegas.max`: 10 is outside the allowed range [50, 1000000]",
            ),
            (
                "adaptive = { gradient2 = { smoothing = \"-1\" } }",
                "invalid `adaptive.gradient2.smoothing`: -1 is outside the allowed range (0, 1]",
            ),
            (
                "adaptive = { aimd = { timeout = \"-5s\" } }",
                r#"invalid `adaptive.aimd.timeout`: "-5s" is outside the allowed range (0s, 86400s]"#,
            ),
            (
                "max_concurrent = 1\npartitions = [{ name = \"a\", share = 0.5 }, { name = \"b\", share = -1 }]",
                "invalid `partitions[1].share`: -1 is outside the allowed range (0, 1]",
            ),
            (
                "max_concurrent = 1\npartitions = [{ name = \"a\", share = \"half\" }]",
                r#"invalid `partitions.share`: "half" is outside the allowed range (0, 1]"#,
            ),
        ]);
    }

    #[test]
    fn round_trips_through_serde() {
        let config = BulkheadConfig::builder()
            .name("db")
            .adaptive(Gradient2Config::new().max(400))
            .queue_limit(8)
            .max_wait(Duration::from_millis(20))
            .partition("live", 0.75)
            .borrowing(false)
            .build()
            .unwrap();
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(
            serde_json::from_str::<BulkheadConfig>(&json).unwrap(),
            config
        );
    }
}
