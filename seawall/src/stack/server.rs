use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use seawall_bulkhead::{Bulkhead, BulkheadConfig, BulkheadHandle, BulkheadLayer};
use seawall_core::Name;
use seawall_core::config::{self, ConfigError, MAX_DURATION, Raw};
use seawall_rate_limit::{
    Direct, Fleet, RateLimit, RateLimitConfig, RateLimitHandle, RateLimitLayer,
};
use seawall_timeout::{
    DeadlineConfig, HeaderDeadlines, InboundDeadline, InboundDeadlineLayer, Timeout, TimeoutConfig,
    TimeoutLayer,
};
use serde::{Deserialize, Deserializer, Serialize};
use tower::Layer;
use tower::util::Either;

const DEFAULT_NAME: &str = "server";

/// The server stack's service over `S`: the caller's deadline stamped on arrival, rate limit
/// (when configured: in this process, or shared by the fleet through Redis when its config has
/// a `fleet` section), bulkhead, timeout.
pub type ServerStack<S> = InboundDeadline<
    Either<
        Either<
            RateLimit<Bulkhead<Timeout<S, HeaderDeadlines>>, Direct>,
            RateLimit<Bulkhead<Timeout<S, HeaderDeadlines>>, FleetLimiter>,
        >,
        Bulkhead<Timeout<S, HeaderDeadlines>>,
    >,
>;

/// Where the server stack's fleet-wide rate limit keeps its quota: Redis (feature `redis`).
#[cfg(feature = "redis")]
pub type FleetLimiter = Fleet<seawall_rate_limit::store::RedisStore>;

/// Where the server stack's fleet-wide rate limit keeps its quota: with the `redis` feature,
/// Redis; without it, a config with a `fleet` section is refused, and no call goes here.
#[cfg(not(feature = "redis"))]
pub type FleetLimiter = Fleet<seawall_rate_limit::store::MemoryStore>;

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
    name: Name,
    rate_limit: Option<RateLimitConfig>,
    bulkhead: BulkheadConfig,
    timeout: Duration,
    deadlines: DeadlineConfig,
}

impl ServerStackConfig {
    /// A builder, whose `build` checks the values as reading the configuration from a file
    /// does, with the same errors. The bulkhead and the timeout have no default; the caller's
    /// deadline is read from `grpc-timeout` (see [`DeadlineConfig::inbound`]) unless
    /// [`deadlines`](ServerStackConfigBuilder::deadlines) says otherwise.
    pub fn builder() -> ServerStackConfigBuilder {
        ServerStackConfigBuilder::new()
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
    /// With a `fleet` section (feature `redis`), the quota is the fleet's, kept in the Redis
    /// at `fleet.redis_url` with the section's lease and failure policy, as
    /// `RateLimitLayer::with_redis` keeps it (build that stack inside a tokio runtime: it
    /// starts its connection manager there); without one, it counts in this process.
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

/// Builds a [`ServerStackConfig`], or straight a layer when made by
/// [`ServerStackLayer::builder`].
#[derive(Debug)]
pub struct ServerStackConfigBuilder<T = ServerStackConfig> {
    name: Raw<String>,
    rate_limit: Option<RateLimitConfig>,
    bulkhead: Option<BulkheadConfig>,
    timeout: Option<Raw<Duration>>,
    deadlines: DeadlineConfig,
    _output: PhantomData<fn() -> T>,
}

impl<T: From<ServerStackConfig>> ServerStackConfigBuilder<T> {
    fn new() -> Self {
        Self {
            name: String::from(DEFAULT_NAME).into(),
            rate_limit: None,
            bulkhead: None,
            timeout: None,
            deadlines: DeadlineConfig::inbound(),
            _output: PhantomData,
        }
    }

    /// The stack's name, which names every layer in it (default `"server"`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into().into();
        self
    }

    /// A rate limit in front of the bulkhead (default: none).
    pub fn rate_limit(mut self, rate_limit: RateLimitConfig) -> Self {
        self.rate_limit = Some(rate_limit);
        self
    }

    /// The bulkhead's configuration (required).
    pub fn bulkhead(mut self, bulkhead: BulkheadConfig) -> Self {
        self.bulkhead = Some(bulkhead);
        self
    }

    /// How long an admitted call may run, in `(0s, 1 day]` (required).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout.into());
        self
    }

    /// How the caller's deadline is read (default [`DeadlineConfig::inbound`]).
    pub fn deadlines(mut self, deadlines: DeadlineConfig) -> Self {
        self.deadlines = deadlines;
        self
    }

    /// Checks the values and builds; an error names the field as a configuration file would.
    pub fn build(self) -> Result<T, ConfigError> {
        let bulkhead = self.bulkhead.ok_or_else(|| {
            ConfigError::expected("bulkhead", "nothing", "a bulkhead configuration")
        })?;
        let timeout = self.timeout.ok_or_else(|| {
            ConfigError::expected("timeout", "nothing", "a duration in (0s, 1day]")
        })?;
        ServerStackConfig::try_from(ServerStackSpec {
            name: self.name,
            rate_limit: self.rate_limit,
            bulkhead,
            timeout,
            deadlines: self.deadlines,
        })
        .map(T::from)
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
        let name = Name::from_raw(spec.name)?;
        let rate_limit = spec
            .rate_limit
            .map(|r| r.named(name.as_str()))
            .transpose()?;
        if let Some(fleet) = rate_limit.as_ref().and_then(RateLimitConfig::fleet) {
            check_fleet(fleet).map_err(|e| e.within("rate_limit"))?;
        }
        Ok(Self {
            rate_limit,
            bulkhead: spec.bulkhead.named(name.as_str())?,
            timeout: config::positive_duration("timeout", spec.timeout, MAX_DURATION)?,
            deadlines: spec.deadlines,
            name,
        })
    }
}

/// A fleet section is served from Redis: it must say where (the URL itself was checked as it
/// was read).
#[cfg(feature = "redis")]
fn check_fleet(fleet: &seawall_rate_limit::FleetConfig) -> Result<(), ConfigError> {
    match fleet.redis_url() {
        Some(_) => Ok(()),
        None => Err(ConfigError::expected(
            "fleet.redis_url",
            "nothing",
            "a redis:// URL: the server stack keeps a fleet's quota in Redis",
        )),
    }
}

/// Without Redis a fleet section cannot be served, and a quota silently kept per process would
/// multiply by the replicas: refused.
#[cfg(not(feature = "redis"))]
fn check_fleet(_: &seawall_rate_limit::FleetConfig) -> Result<(), ConfigError> {
    Err(ConfigError::expected(
        "fleet",
        "a fleet section",
        "none, or seawall built with its `redis` feature, which serves it",
    ))
}

impl From<ServerStackConfig> for ServerStackLayer {
    fn from(config: ServerStackConfig) -> Self {
        Self::new(config)
    }
}

impl From<ServerStackConfig> for ServerStackSpec {
    fn from(c: ServerStackConfig) -> Self {
        Self {
            name: c.name.into(),
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
    rate_limit: Option<Either<RateLimitLayer, RateLimitLayer<FleetLimiter>>>,
    bulkhead: BulkheadLayer,
    timeout: TimeoutLayer<HeaderDeadlines>,
}

impl ServerStackLayer {
    /// A builder whose `build` makes the layer.
    pub fn builder() -> ServerStackConfigBuilder<Self> {
        ServerStackConfigBuilder::new()
    }

    /// The stack `config` describes.
    pub fn new(config: ServerStackConfig) -> Self {
        let timeout = TimeoutConfig::builder()
            .name(config.name.to_string())
            .timeout(config.timeout)
            .build()
            .expect("checked when the stack config was");
        Self {
            inbound: InboundDeadlineLayer::new(config.deadlines.clone()),
            rate_limit: config.rate_limit.map(rate_limit),
            bulkhead: BulkheadLayer::new(config.bulkhead),
            timeout: TimeoutLayer::new(timeout)
                .propagate(config.deadlines)
                .below_inbound(),
        }
    }

    /// The bulkhead's handle: in flight, queued, the limit.
    pub fn bulkhead(&self) -> BulkheadHandle {
        self.bulkhead.handle()
    }

    /// The rate limit's handle (its quota and `max_wait`, reloaded live), when the stack has
    /// one: counted in this process, or the fleet's in its store, whose reload keeps the
    /// store's buckets and refuses another `fleet` section as needing a restart (see
    /// [`RateLimitHandle::reload`]).
    pub fn rate_limit(&self) -> Option<RateLimitHandle> {
        match self.rate_limit.as_ref()? {
            Either::Left(local) => Some(local.handle()),
            Either::Right(fleet) => Some(fleet.handle()),
        }
    }

    /// The rate limit kept in the fleet's store, when the stack's has a `fleet` section: its
    /// store and lease ([`rate_limit`](Self::rate_limit) reloads it).
    pub fn fleet_rate_limit(&self) -> Option<&RateLimitLayer<FleetLimiter>> {
        match self.rate_limit.as_ref()? {
            Either::Left(_) => None,
            Either::Right(fleet) => Some(fleet),
        }
    }
}

/// The rate limit `config` describes: in this process, or the fleet's when it has a `fleet`
/// section.
fn rate_limit(config: RateLimitConfig) -> Either<RateLimitLayer, RateLimitLayer<FleetLimiter>> {
    let fleet = config.fleet().is_some();
    let layer = RateLimitLayer::new(config);
    if !fleet {
        return Either::Left(layer);
    }
    #[cfg(feature = "redis")]
    return Either::Right(
        layer
            .with_redis()
            .expect("checked when the stack config was"),
    );
    #[cfg(not(feature = "redis"))]
    unreachable!("a fleet section is refused without the `redis` feature")
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
            Some(Either::Left(local)) => Either::Left(Either::Left(local.layer(admitted))),
            Some(Either::Right(fleet)) => Either::Left(Either::Right(fleet.layer(admitted))),
            None => Either::Right(admitted),
        })
    }
}
