use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use seawall_bulkhead::{Bulkhead, BulkheadConfig, BulkheadHandle, BulkheadLayer};
use seawall_core::config::{self, ConfigError, Raw};
use seawall_rate_limit::{Direct, RateLimit, RateLimitConfig, RateLimitHandle, RateLimitLayer};
use seawall_timeout::{
    DeadlineConfig, HeaderDeadlines, InboundDeadline, InboundDeadlineLayer, Timeout, TimeoutConfig,
    TimeoutLayer,
};
use serde::{Deserialize, Deserializer, Serialize};
use tower::Layer;
use tower::util::Either;

const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// The server stack's service over `S`: the caller's deadline stamped on arrival, rate limit
/// (when configured), bulkhead, timeout.
pub type ServerStack<S> = InboundDeadline<
    Either<
        RateLimit<Bulkhead<Timeout<S, HeaderDeadlines>>, Direct>,
        Bulkhead<Timeout<S, HeaderDeadlines>>,
    >,
>;

/// A validated server stack configuration; every layer is named after the stack.
///
/// ```
/// use seawall::stack::ServerStackConfig;
///
/// let config: ServerStackConfig = serde_json::from_str(r#"{
///     "name": "api",
///     "rate_limit": { "quota": { "per_second": 100, "burst": 20 } },
///     "bulkhead": { "max_concurrent": 64, "queue_limit": 64, "max_wait": "100ms" },
///     "timeout": "2s"
/// }"#).unwrap();
/// assert_eq!(config.name(), "api");
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "ServerStackSpec", into = "ServerStackSpec")]
pub struct ServerStackConfig {
    name: Arc<str>,
    rate_limit: Option<RateLimitConfig>,
    bulkhead: BulkheadConfig,
    timeout: Duration,
    deadlines: DeadlineConfig,
}

impl ServerStackConfig {
    /// Checks and builds a configuration; the caller's deadline is read from `grpc-timeout`
    /// (see [`DeadlineConfig::inbound`]) as the request arrives.
    pub fn new(
        name: impl Into<String>,
        rate_limit: Option<RateLimitConfig>,
        bulkhead: BulkheadConfig,
        timeout: Duration,
    ) -> Result<Self, ConfigError> {
        Self::try_from(ServerStackSpec {
            name: name.into().into(),
            rate_limit,
            bulkhead,
            timeout: timeout.into(),
            deadlines: DeadlineConfig::inbound(),
        })
    }

    /// Reads the caller's deadline as `deadlines` says instead.
    pub fn with_deadlines(mut self, deadlines: DeadlineConfig) -> Self {
        self.deadlines = deadlines;
        self
    }

    /// The stack's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The rate limit's configuration, if the stack has one.
    ///
    /// The stack's own rate limit counts in this process: a `fleet` section is not its to
    /// serve. To share the quota with other replicas, take the stack
    /// [`without_rate_limit`](Self::without_rate_limit) and put
    /// `RateLimitLayer::new(config).with_redis()?` in front of it.
    pub fn rate_limit(&self) -> Option<&RateLimitConfig> {
        self.rate_limit.as_ref()
    }

    /// The same stack without its rate limit, for a service that applies its own.
    pub fn without_rate_limit(mut self) -> Self {
        self.rate_limit = None;
        self
    }

    /// The bulkhead's configuration, as
    /// [`BulkheadHandle::reload`](seawall_bulkhead::BulkheadHandle::reload) takes it.
    pub fn bulkhead(&self) -> &BulkheadConfig {
        &self.bulkhead
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerStackSpec {
    name: Raw<String>,
    #[serde(
        default,
        deserialize_with = "rate_limit_within",
        skip_serializing_if = "Option::is_none"
    )]
    rate_limit: Option<RateLimitConfig>,
    #[serde(deserialize_with = "bulkhead_within")]
    bulkhead: BulkheadConfig,
    timeout: Raw<Duration>,
    #[serde(
        default = "DeadlineConfig::inbound",
        deserialize_with = "deadlines_within"
    )]
    deadlines: DeadlineConfig,
}

fn rate_limit_within<'de, D: Deserializer<'de>>(d: D) -> Result<Option<RateLimitConfig>, D::Error> {
    config::within("rate_limit", d)
}

fn bulkhead_within<'de, D: Deserializer<'de>>(d: D) -> Result<BulkheadConfig, D::Error> {
    config::within("bulkhead", d)
}

fn deadlines_within<'de, D: Deserializer<'de>>(d: D) -> Result<DeadlineConfig, D::Error> {
    config::within("deadlines", d)
}

impl TryFrom<ServerStackSpec> for ServerStackConfig {
    type Error = ConfigError;

    fn try_from(spec: ServerStackSpec) -> Result<Self, ConfigError> {
        let name = config::name(spec.name)?;
        Ok(Self {
            rate_limit: spec
                .rate_limit
                .map(|r| r.named(name.as_str()))
                .transpose()?,
            bulkhead: spec.bulkhead.named(name.as_str())?,
            timeout: config::positive_duration("timeout", spec.timeout, MAX_TIMEOUT)?,
            deadlines: spec.deadlines,
            name: name.into(),
        })
    }
}

impl From<ServerStackConfig> for ServerStackLayer {
    fn from(config: ServerStackConfig) -> Self {
        Self::new(config)
    }
}

impl From<ServerStackConfig> for ServerStackSpec {
    fn from(c: ServerStackConfig) -> Self {
        Self {
            name: c.name.to_string().into(),
            rate_limit: c.rate_limit,
            bulkhead: c.bulkhead,
            timeout: c.timeout.into(),
            deadlines: c.deadlines,
        }
    }
}

/// The server stack as one layer; see the [module docs](super) for the order and why.
#[derive(Clone)]
pub struct ServerStackLayer {
    inbound: InboundDeadlineLayer,
    rate_limit: Option<RateLimitLayer>,
    bulkhead: BulkheadLayer,
    timeout: TimeoutLayer<HeaderDeadlines>,
}

impl ServerStackLayer {
    /// The stack `config` describes.
    pub fn new(config: ServerStackConfig) -> Self {
        let timeout = TimeoutConfig::builder()
            .name(config.name.to_string())
            .timeout(config.timeout)
            .build()
            .expect("checked when the stack config was");
        Self {
            inbound: InboundDeadlineLayer::new(config.deadlines.clone()),
            rate_limit: config.rate_limit.map(RateLimitLayer::new),
            bulkhead: BulkheadLayer::new(config.bulkhead),
            timeout: TimeoutLayer::new(timeout).propagate(config.deadlines),
        }
    }

    /// The bulkhead's handle: in flight, queued, the limit.
    pub fn bulkhead(&self) -> BulkheadHandle {
        self.bulkhead.handle()
    }

    /// The rate limit's handle (its quota and `max_wait`, reloaded live), when the stack has
    /// one.
    pub fn rate_limit(&self) -> Option<RateLimitHandle> {
        self.rate_limit.as_ref().map(|r| r.handle())
    }
}

impl fmt::Debug for ServerStackLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerStackLayer")
            .field("rate_limit", &self.rate_limit)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for ServerStackLayer {
    type Service = ServerStack<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let admitted = self.bulkhead.layer(self.timeout.layer(inner));
        self.inbound.layer(match &self.rate_limit {
            Some(rate_limit) => Either::Left(rate_limit.layer(admitted)),
            None => Either::Right(admitted),
        })
    }
}
