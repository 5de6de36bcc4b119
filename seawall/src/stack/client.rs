use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use seawall_bulkhead::{Bulkhead, BulkheadConfig, BulkheadHandle, BulkheadLayer, VegasConfig};
use seawall_circuit_breaker::{
    ByAuthority, CircuitBreaker, CircuitBreakerConfig, CircuitBreakerHandle, CircuitBreakerLayer,
    KeyedCircuitBreaker, KeyedCircuitBreakerLayer, NoRetryAfter,
};
use seawall_core::Name;
use seawall_core::classify::DefaultClassify;
use seawall_core::config::{self, ConfigError, MAX_DURATION, Raw};
use seawall_hedge::{Hedge, HedgeConfig, HedgeHandle, HedgeLayer};
use seawall_retry::{DefaultPolicy, Retry, RetryConfig, RetryHandle, RetryLayer};
use seawall_throttle::{Throttle, ThrottleConfig, ThrottleHandle, ThrottleLayer};
use seawall_timeout::{
    AdaptiveTimeout, NoDeadlines, ScopedDeadlines, Timeout, TimeoutConfig, TimeoutHandle,
    TimeoutLayer, TimeoutMode,
};
use serde::de::{self, IntoDeserializer, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tower::Layer;
use tower::util::Either;

const DEFAULT_NAME: &str = "client";
const ATTEMPT_SUFFIX: &str = ".attempt";
const DEFAULT_TOTAL_TIMEOUT: Duration = Duration::from_secs(1);

/// The client stack's service over `S`: total timeout, retry, hedging (when configured),
/// client-side throttle, circuit breaker (one, or one per authority), per-attempt timeout,
/// bulkhead.
pub type ClientStack<S, P = DefaultPolicy, C = DefaultClassify> = Timeout<
    Retry<Hedged<Throttle<Breakers<Timeout<Bulkhead<S, C>, NoDeadlines>, C>, C>, P>, P>,
    ScopedDeadlines,
>;

/// `S` behind one circuit breaker, or behind a breaker per URI authority when the stack's
/// [`circuit_breaker_key`](ClientStackConfig::with_breaker_key) says so.
pub type Breakers<S, C> = Either<
    CircuitBreaker<S, C, NoRetryAfter>,
    KeyedCircuitBreaker<S, Option<http::uri::Authority>, ByAuthority, C, NoRetryAfter>,
>;

/// Which circuit breaker a call of the client stack goes through.
///
/// One breaker is the default: a stack usually serves one dependency, and a breaker per key
/// costs a map lookup (a read lock and a hash) on every call. A client whose requests go to
/// several hosts (absolute URIs, a shared client) keys by authority so that one failing host
/// does not open the breaker for the others. The key is the authority, not the path: a path
/// holds ids (`/users/42`), which would make a breaker per resource, each with too few calls
/// to judge, and a host is what fails as a whole (its process, its network, its pool); routes
/// of one host that fail apart need a key of their own
/// (`seawall::circuit_breaker::KeyedCircuitBreakerLayer` with a route template).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BreakerKey {
    /// One breaker for every call.
    #[default]
    One,
    /// A breaker per URI authority (`host:port`) of an HTTP request, at most the circuit
    /// breaker's `max_keys` of them (idle ones evicted first, open ones last); requests
    /// without an authority share one.
    Authority,
}

impl BreakerKey {
    fn is_one(&self) -> bool {
        *self == Self::One
    }
}

/// `S` hedged with the retry policy `P` deciding what may be sent twice, or `S` itself when
/// the stack has no `hedge` section.
pub type Hedged<S, P> = Either<Hedge<S, P>, S>;

/// A validated client stack configuration; every layer is named after the stack (the two
/// timeouts `<name>.total` and `<name>.attempt`), and retry never plans a wait that would end
/// after the total timeout. `throttle` may be left out (its defaults), as may `retry`,
/// `circuit_breaker` and `attempt_timeout`.
///
/// `attempt_timeout` is a duration for a fixed timeout, or a table for one learned from recent
/// latency ([`AdaptiveTimeout`]: `{ multiplier = 3, floor = "100ms", ceiling = "500ms" }`, any
/// field left out at its default; the ceiling defaults to half the total timeout, so that a
/// retry fits after a cut there). Left out, it is adaptive with every default. An attempt may
/// wait past the ceiling for what the total leaves when the ceiling is no bound the downstream
/// was seen to keep: fewer calls seen than the estimate needs, or calls cut there with none
/// answered within it since (a downstream uniformly slower than half the total is waited for,
/// not failed on every attempt).
///
/// ```
/// use seawall::stack::ClientStackConfig;
///
/// let config: ClientStackConfig = serde_json::from_str(r#"{
///     "name": "inventory",
///     "total_timeout": "2s",
///     "attempt_timeout": "500ms",
///     "retry": { "max_attempts": 3 },
///     "circuit_breaker": { "window": { "count": 50 }, "failure_rate_threshold": 0.5 },
///     "bulkhead": { "max_concurrent": 32 }
/// }"#).unwrap();
/// assert_eq!(config.name(), "inventory");
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "ClientStackSpec", into = "ClientStackSpec")]
pub struct ClientStackConfig {
    name: Name,
    total_timeout: Duration,
    attempt_timeout: TimeoutMode,
    retry: RetryConfig,
    throttle: ThrottleConfig,
    circuit_breaker: CircuitBreakerConfig,
    bulkhead: BulkheadConfig,
    hedge: Option<HedgeConfig>,
    circuit_breaker_key: BreakerKey,
}

impl ClientStackConfig {
    /// A builder starting from the [defaults](Self::default), whose `build` checks the values
    /// as reading the configuration from a file does, with the same errors.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use seawall::stack::{ClientStackConfig, ClientStackLayer};
    ///
    /// # fn main() -> Result<(), seawall::config::ConfigError> {
    /// let config = ClientStackConfig::builder()
    ///     .name("inventory")
    ///     .total_timeout(Duration::from_secs(2))
    ///     .attempt_timeout(Duration::from_millis(500))
    ///     .build()?;
    /// let layer = ClientStackLayer::new(config);
    /// # let _ = layer;
    ///
    /// let too_long = ClientStackConfig::builder()
    ///     .total_timeout(Duration::from_secs(1))
    ///     .attempt_timeout(Duration::from_secs(2))
    ///     .build();
    /// assert_eq!(too_long.unwrap_err().field(), "attempt_timeout");
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder() -> ClientStackConfigBuilder {
        ClientStackConfigBuilder::new()
    }

    /// The same stack with a circuit breaker per `key` (one breaker unless asked); the breaker
    /// configuration's `max_keys` and `key_idle_timeout` bound the breakers kept.
    pub fn with_breaker_key(mut self, key: BreakerKey) -> Self {
        self.circuit_breaker_key = key;
        self
    }

    /// Which circuit breaker a call goes through.
    pub fn breaker_key(&self) -> BreakerKey {
        self.circuit_breaker_key
    }

    /// The same stack with `throttle` as its client-side throttle (named after the stack).
    pub fn with_throttle(mut self, throttle: ThrottleConfig) -> Result<Self, ConfigError> {
        self.throttle = throttle.named(&*self.name)?;
        Ok(self)
    }

    /// The same stack, hedging with `hedge` (named after the stack) inside retry and outside
    /// the circuit breaker; see the [module docs](super) for why there.
    pub fn with_hedge(mut self, hedge: HedgeConfig) -> Result<Self, ConfigError> {
        self.hedge = Some(hedge.named(&*self.name)?);
        Ok(self)
    }

    /// Its hedging, if it hedges (off unless asked for).
    pub fn hedge(&self) -> Option<&HedgeConfig> {
        self.hedge.as_ref()
    }

    /// The stack's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The per-attempt timeout: fixed, or adaptive (with no ceiling when it is half the total
    /// timeout).
    pub fn attempt_timeout(&self) -> &TimeoutMode {
        &self.attempt_timeout
    }

    /// The per-attempt timeout's configuration, as
    /// [`TimeoutHandle::reload`](seawall_timeout::TimeoutHandle::reload) takes it (named
    /// `<name>.attempt`, an adaptive ceiling resolved).
    pub fn attempt(&self) -> TimeoutConfig {
        let builder = TimeoutConfig::builder().name(format!("{}{ATTEMPT_SUFFIX}", self.name));
        match self.attempt_timeout {
            TimeoutMode::Fixed(timeout) => builder.timeout(timeout),
            TimeoutMode::Adaptive(adaptive) => builder.adaptive(
                adaptive.ceiling(
                    adaptive
                        .get_ceiling()
                        .unwrap_or(self.total_timeout / 2)
                        .max(adaptive.get_floor()),
                ),
            ),
        }
        .build()
        .expect("checked when the stack config was")
    }

    /// The retry configuration, as [`RetryHandle::reload`] takes it (named after the stack,
    /// its waits bounded by the total timeout).
    pub fn retry(&self) -> &RetryConfig {
        &self.retry
    }

    /// The circuit breaker's configuration, as
    /// [`CircuitBreakerHandle::reload`](seawall_circuit_breaker::CircuitBreakerHandle::reload)
    /// takes it.
    pub fn circuit_breaker(&self) -> &CircuitBreakerConfig {
        &self.circuit_breaker
    }

    /// The bulkhead's configuration, as
    /// [`BulkheadHandle::reload`](seawall_bulkhead::BulkheadHandle::reload) takes it.
    pub fn bulkhead(&self) -> &BulkheadConfig {
        &self.bulkhead
    }
}

/// Builds a [`ClientStackConfig`], or straight a layer when made by
/// [`ClientStackLayer::builder`].
#[derive(Debug)]
pub struct ClientStackConfigBuilder<T = ClientStackConfig> {
    spec: ClientStackSpec,
    _output: PhantomData<fn() -> T>,
}

impl<T: From<ClientStackConfig>> ClientStackConfigBuilder<T> {
    fn new() -> Self {
        Self {
            spec: ClientStackSpec {
                name: String::from(DEFAULT_NAME).into(),
                total_timeout: DEFAULT_TOTAL_TIMEOUT.into(),
                attempt_timeout: AttemptSpec::default(),
                retry: default_retry(),
                throttle: default_throttle(),
                circuit_breaker: default_breaker(),
                circuit_breaker_key: BreakerKey::One,
                bulkhead: default_bulkhead(),
                hedge: None,
            },
            _output: PhantomData,
        }
    }

    /// The stack's name, which names every layer in it (default `"client"`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.spec.name = name.into().into();
        self
    }

    /// How long the caller waits, retries included, in `(0s, 1 day]` (default 1 s).
    pub fn total_timeout(mut self, timeout: Duration) -> Self {
        self.spec.total_timeout = timeout.into();
        self
    }

    /// The per-attempt timeout: a `Duration` (at most the total timeout), or an
    /// [`AdaptiveTimeout`] (default: adaptive with every default).
    pub fn attempt_timeout(mut self, timeout: impl Into<TimeoutMode>) -> Self {
        self.spec.attempt_timeout = AttemptSpec::from(timeout.into());
        self
    }

    /// The retry layer's configuration (default: its defaults), named after the stack.
    pub fn retry(mut self, retry: RetryConfig) -> Self {
        self.spec.retry = retry;
        self
    }

    /// The client-side throttle's configuration (default: its defaults).
    pub fn throttle(mut self, throttle: ThrottleConfig) -> Self {
        self.spec.throttle = throttle;
        self
    }

    /// The circuit breaker's configuration (default: its defaults).
    pub fn circuit_breaker(mut self, breaker: CircuitBreakerConfig) -> Self {
        self.spec.circuit_breaker = breaker;
        self
    }

    /// One circuit breaker, or one per key (default one).
    pub fn breaker_key(mut self, key: BreakerKey) -> Self {
        self.spec.circuit_breaker_key = key;
        self
    }

    /// The bulkhead's configuration (default: an adaptive Vegas limit of at most 1000 calls at
    /// once, no queue).
    pub fn bulkhead(mut self, bulkhead: BulkheadConfig) -> Self {
        self.spec.bulkhead = bulkhead;
        self
    }

    /// Hedges with `hedge` (default: no hedging).
    pub fn hedge(mut self, hedge: HedgeConfig) -> Self {
        self.spec.hedge = Some(hedge);
        self
    }

    /// Checks the values and builds; an error names the field as a configuration file would
    /// (`attempt_timeout`, `attempt_timeout.ceiling`).
    pub fn build(self) -> Result<T, ConfigError> {
        ClientStackConfig::try_from(self.spec).map(T::from)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientStackSpec {
    name: Raw<String>,
    total_timeout: Raw<Duration>,
    #[serde(default)]
    attempt_timeout: AttemptSpec,
    #[serde(default = "default_retry", deserialize_with = "retry_within")]
    retry: RetryConfig,
    #[serde(default = "default_throttle", deserialize_with = "throttle_within")]
    throttle: ThrottleConfig,
    #[serde(default = "default_breaker", deserialize_with = "breaker_within")]
    circuit_breaker: CircuitBreakerConfig,
    #[serde(default, skip_serializing_if = "BreakerKey::is_one")]
    circuit_breaker_key: BreakerKey,
    #[serde(deserialize_with = "bulkhead_within")]
    bulkhead: BulkheadConfig,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "hedge_within"
    )]
    hedge: Option<HedgeConfig>,
}

/// An attempt timeout as written: a duration, or an adaptive table.
#[derive(Debug, Clone)]
enum AttemptSpec {
    Fixed(Raw<Duration>),
    Adaptive(AdaptiveTimeout),
}

impl Default for AttemptSpec {
    fn default() -> Self {
        Self::Adaptive(AdaptiveTimeout::default())
    }
}

impl From<TimeoutMode> for AttemptSpec {
    fn from(mode: TimeoutMode) -> Self {
        match mode {
            TimeoutMode::Fixed(timeout) => Self::Fixed(timeout.into()),
            TimeoutMode::Adaptive(adaptive) => Self::Adaptive(adaptive),
        }
    }
}

impl Serialize for AttemptSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Fixed(timeout) => timeout.serialize(s),
            Self::Adaptive(adaptive) => adaptive.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for AttemptSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct AttemptVisitor;

        impl AttemptVisitor {
            fn fixed<'de, V, E>(value: V) -> Result<AttemptSpec, E>
            where
                V: IntoDeserializer<'de, E>,
                E: de::Error,
            {
                Raw::deserialize(value.into_deserializer()).map(AttemptSpec::Fixed)
            }
        }

        impl<'de> Visitor<'de> for AttemptVisitor {
            type Value = AttemptSpec;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a duration such as "300ms", or { multiplier = 3 }"#)
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<AttemptSpec, E> {
                Self::fixed(v)
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<AttemptSpec, E> {
                Self::fixed(v)
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<AttemptSpec, E> {
                Self::fixed(v)
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<AttemptSpec, E> {
                Self::fixed(v)
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> Result<AttemptSpec, E> {
                Self::fixed(v)
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<AttemptSpec, A::Error> {
                config::within(
                    "attempt_timeout",
                    de::value::MapAccessDeserializer::new(map),
                )
                .map(AttemptSpec::Adaptive)
            }
        }

        d.deserialize_any(AttemptVisitor)
    }
}

fn retry_within<'de, D: Deserializer<'de>>(d: D) -> Result<RetryConfig, D::Error> {
    config::within("retry", d)
}

fn throttle_within<'de, D: Deserializer<'de>>(d: D) -> Result<ThrottleConfig, D::Error> {
    config::within("throttle", d)
}

fn breaker_within<'de, D: Deserializer<'de>>(d: D) -> Result<CircuitBreakerConfig, D::Error> {
    config::within("circuit_breaker", d)
}

fn bulkhead_within<'de, D: Deserializer<'de>>(d: D) -> Result<BulkheadConfig, D::Error> {
    config::within("bulkhead", d)
}

fn hedge_within<'de, D: Deserializer<'de>>(d: D) -> Result<Option<HedgeConfig>, D::Error> {
    config::within("hedge", d)
}

fn default_retry() -> RetryConfig {
    RetryConfig::builder()
        .build()
        .expect("the defaults are valid")
}

fn default_throttle() -> ThrottleConfig {
    ThrottleConfig::default()
}

fn default_bulkhead() -> BulkheadConfig {
    BulkheadConfig::builder()
        .adaptive(VegasConfig::new().max(1000))
        .queue_limit(0)
        .build()
        .expect("the defaults are valid")
}

fn default_breaker() -> CircuitBreakerConfig {
    CircuitBreakerConfig::builder()
        .build()
        .expect("the defaults are valid")
}

impl TryFrom<ClientStackSpec> for ClientStackConfig {
    type Error = ConfigError;

    fn try_from(spec: ClientStackSpec) -> Result<Self, ConfigError> {
        let name = Name::from_raw(spec.name)?;
        // The longest name a layer of the stack takes must be a valid name too.
        if name.len() + ATTEMPT_SUFFIX.len() > seawall_core::Name::MAX_LEN {
            return Err(ConfigError::expected(
                "name",
                format_args!("a name of {} bytes", name.len()),
                "a name of at most 120 bytes (its timeouts add `.attempt`)",
            ));
        }
        let total_timeout =
            config::positive_duration("total_timeout", spec.total_timeout, MAX_DURATION)?;
        let attempt_timeout = match spec.attempt_timeout {
            AttemptSpec::Fixed(timeout) => TimeoutMode::Fixed(config::positive_duration(
                "attempt_timeout",
                timeout,
                total_timeout,
            )?),
            AttemptSpec::Adaptive(adaptive) => {
                let ceiling = adaptive.get_ceiling().unwrap_or(total_timeout / 2);
                if adaptive.get_ceiling().is_some() {
                    config::duration_in(
                        "attempt_timeout.ceiling",
                        ceiling,
                        adaptive.get_floor()..=total_timeout,
                    )?;
                }
                // The ceiling must be checked with the rest of the table: a floor above half
                // the total is its error.
                adaptive
                    .ceiling(ceiling)
                    .check()
                    .map_err(|e| e.within("attempt_timeout"))?;
                TimeoutMode::Adaptive(adaptive)
            }
        };
        Ok(Self {
            retry: spec.retry.named(name.as_str())?.within(total_timeout),
            throttle: spec.throttle.named(name.as_str())?,
            circuit_breaker: spec.circuit_breaker.named(name.as_str())?,
            bulkhead: spec.bulkhead.named(name.as_str())?,
            hedge: spec.hedge.map(|h| h.named(name.as_str())).transpose()?,
            circuit_breaker_key: spec.circuit_breaker_key,
            name,
            total_timeout,
            attempt_timeout,
        })
    }
}

impl From<ClientStackConfig> for ClientStackLayer {
    fn from(config: ClientStackConfig) -> Self {
        Self::new(config)
    }
}

impl From<ClientStackConfig> for ClientStackSpec {
    fn from(c: ClientStackConfig) -> Self {
        Self {
            name: c.name.into(),
            total_timeout: c.total_timeout.into(),
            attempt_timeout: c.attempt_timeout.into(),
            retry: c.retry,
            throttle: c.throttle,
            circuit_breaker: c.circuit_breaker,
            bulkhead: c.bulkhead,
            hedge: c.hedge,
            circuit_breaker_key: c.circuit_breaker_key,
        }
    }
}

/// The client stack as one layer; see the [module docs](super) for the order and why.
///
/// Its state (retry budget, throttle window, breaker window, bulkhead slots) is made when it is
/// built and shared by every service it makes.
pub struct ClientStackLayer<P = DefaultPolicy, C = DefaultClassify> {
    total: TimeoutLayer<ScopedDeadlines>,
    retry: RetryLayer<P>,
    throttle: ThrottleLayer<C>,
    hedge: Option<HedgeLayer<P>>,
    breaker: BreakerLayer<C>,
    /// With a breaker per authority, a breaker no call goes through, for `circuit_breaker()`.
    unkeyed: Option<CircuitBreakerHandle>,
    attempt: TimeoutLayer,
    bulkhead: BulkheadLayer<C>,
}

/// One circuit breaker, or one per authority.
type BreakerLayer<C> = Either<
    CircuitBreakerLayer<C>,
    KeyedCircuitBreakerLayer<Option<http::uri::Authority>, ByAuthority, C>,
>;

impl ClientStackLayer {
    /// A builder whose `build` makes the layer, with the default retry policy and classifier.
    pub fn builder() -> ClientStackConfigBuilder<Self> {
        ClientStackConfigBuilder::new()
    }

    /// The stack `config` describes, with the default retry policy and classifier.
    ///
    /// The default classifier, [`DefaultClassify`], judges an `http::Response` by its status
    /// (5xx but 503 a failure, 429 and 503 overload, as `HttpStatus::server_errors()` does), so
    /// the breaker opens on a failing HTTP dependency and the throttle sees its refusals; any
    /// other response is a success and any error a failure.
    ///
    /// The default retry policy, [`DefaultPolicy`], never repeats what may not be sent twice:
    /// over an HTTP client it is `HttpPolicy` (only `GET`, `HEAD`, `OPTIONS`, `PUT` and
    /// `DELETE` are retried, on 5xx, 429 and errors), so a `POST` whose attempt timed out after
    /// the server acted is not sent again; over other request types it retries errors of
    /// requests whose type is [`Idempotent`](seawall_retry::Idempotent).
    pub fn new(config: ClientStackConfig) -> Self {
        let timeout = |suffix: &str, timeout| {
            TimeoutLayer::new(
                TimeoutConfig::builder()
                    .name(format!("{}.{suffix}", config.name))
                    .timeout(timeout)
                    .build()
                    .expect("checked when the stack config was"),
            )
        };
        let attempt = TimeoutLayer::new(config.attempt());
        Self {
            total: timeout("total", config.total_timeout).scoped(),
            retry: RetryLayer::new(config.retry),
            throttle: ThrottleLayer::new(config.throttle).classify(DefaultClassify),
            hedge: config
                .hedge
                .map(|h| HedgeLayer::new(h).policy(DefaultPolicy)),
            unkeyed: (config.circuit_breaker_key != BreakerKey::One)
                .then(|| CircuitBreakerLayer::new(config.circuit_breaker.clone()).handle()),
            breaker: match config.circuit_breaker_key {
                BreakerKey::One => Either::Left(
                    CircuitBreakerLayer::new(config.circuit_breaker).classify(DefaultClassify),
                ),
                BreakerKey::Authority => Either::Right(
                    KeyedCircuitBreakerLayer::new(config.circuit_breaker, ByAuthority)
                        .classify(DefaultClassify),
                ),
            },
            attempt,
            bulkhead: BulkheadLayer::new(config.bulkhead).classify(DefaultClassify),
        }
    }
}

impl<P, C> ClientStackLayer<P, C> {
    /// Decides what is retried, and hedged, with `policy`
    /// (`seawall::retry::HttpPolicy::new().with_method` for a `POST` made safe by an
    /// idempotency key, `GrpcPolicy` with the idempotent methods marked for a tonic
    /// `Channel`): a hedge sends what a retry would, the same copy.
    pub fn retry_policy<Q: Clone>(self, policy: Q) -> ClientStackLayer<Q, C> {
        ClientStackLayer {
            total: self.total,
            hedge: self.hedge.map(|h| h.policy(policy.clone())),
            retry: self.retry.policy(policy),
            throttle: self.throttle,
            breaker: self.breaker,
            unkeyed: self.unkeyed,
            attempt: self.attempt,
            bulkhead: self.bulkhead,
        }
    }

    /// Judges results with `classifier` in the throttle, the breaker and the bulkhead (`GrpcCodes`
    /// for a tonic `Channel`, whose statuses come in trailers; `AnyError` to count only errors).
    pub fn classify<C2: Clone>(self, classifier: C2) -> ClientStackLayer<P, C2> {
        ClientStackLayer {
            total: self.total,
            retry: self.retry,
            throttle: self.throttle.classify(classifier.clone()),
            hedge: self.hedge,
            breaker: match self.breaker {
                Either::Left(one) => Either::Left(one.classify(classifier.clone())),
                Either::Right(keyed) => Either::Right(keyed.classify(classifier.clone())),
            },
            unkeyed: self.unkeyed,
            attempt: self.attempt,
            bulkhead: self.bulkhead.classify(classifier),
        }
    }

    /// The retry layer's handle: its settings, and its budget's, reloaded live.
    pub fn retry(&self) -> RetryHandle {
        self.retry.handle()
    }

    /// The throttle's handle: its window and its rejection probability.
    pub fn throttle(&self) -> ThrottleHandle {
        self.throttle.handle()
    }

    /// The circuit breaker's handle: its state, its figures, forced transitions. With a
    /// breaker per authority there is no one breaker: this is a breaker no call goes through;
    /// see [`circuit_breaker_for`](Self::circuit_breaker_for).
    pub fn circuit_breaker(&self) -> CircuitBreakerHandle {
        match &self.breaker {
            Either::Left(one) => one.handle(),
            Either::Right(_) => self.unkeyed.clone().expect("kept with a keyed breaker"),
        }
    }

    /// The handle of the breaker that calls to `authority` go through: the one breaker, or
    /// that authority's once a call was made to it (`None` before).
    pub fn circuit_breaker_for(
        &self,
        authority: Option<&http::uri::Authority>,
    ) -> Option<CircuitBreakerHandle> {
        match &self.breaker {
            Either::Left(one) => Some(one.handle()),
            Either::Right(keyed) => keyed.handle(&authority.cloned()),
        }
    }

    /// The bulkhead's handle: in flight, queued, the limit.
    pub fn bulkhead(&self) -> BulkheadHandle {
        self.bulkhead.handle()
    }

    /// The per-attempt timeout's handle: the timeout a call gets now, the latency it learned,
    /// reload.
    pub fn attempt_timeout(&self) -> TimeoutHandle {
        self.attempt.handle()
    }

    /// The hedge layer's handle, when the stack hedges: its delay, latency and budget, and
    /// reload (a fixed delay, the most attempts and the budget ratio; the rest needs a restart).
    pub fn hedge(&self) -> Option<HedgeHandle> {
        self.hedge.as_ref().map(HedgeLayer::handle)
    }
}

impl<P, C> Clone for ClientStackLayer<P, C> {
    fn clone(&self) -> Self {
        Self {
            total: self.total.clone(),
            retry: self.retry.clone(),
            throttle: self.throttle.clone(),
            hedge: self.hedge.clone(),
            breaker: self.breaker.clone(),
            unkeyed: self.unkeyed.clone(),
            attempt: self.attempt.clone(),
            bulkhead: self.bulkhead.clone(),
        }
    }
}

impl<P, C> fmt::Debug for ClientStackLayer<P, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientStackLayer")
            .field("total", &self.total)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl<S: Clone, P, C> Layer<S> for ClientStackLayer<P, C> {
    type Service = ClientStack<S, P, C>;

    fn layer(&self, inner: S) -> Self::Service {
        let attempt = self.attempt.layer(self.bulkhead.layer(inner));
        let throttled = self.throttle.layer(self.breaker.layer(attempt));
        let hedged = match &self.hedge {
            Some(hedge) => Either::Left(hedge.layer(throttled)),
            None => Either::Right(throttled),
        };
        self.total.layer(self.retry.layer(hedged))
    }
}

impl Default for ClientStackConfig {
    /// A stack named `client` for a call a user is waiting on, each value from a source rather
    /// than a benchmark:
    /// - total timeout 1 s: the limit for a user's flow of thought to stay uninterrupted
    ///   (Nielsen, "Response Times: The 3 Important Limits");
    /// - attempt timeout adaptive ([`AdaptiveTimeout::default`]): 3 × the 99th percentile of
    ///   the last 30 s of attempts, between 100 ms and half the total (500 ms), and half the
    ///   total until 100 attempts were seen; an attempt that no retry can follow may use what
    ///   is left of the total. A fixed timeout (Polly's standard pipeline uses a third of the
    ///   total) either cuts a downstream that became uniformly slower, turning slow into an
    ///   outage, or waits long on a black hole; one learned from the downstream's own latency
    ///   does neither (Dean and Barroso, "The Tail at Scale"; the AWS Builders' Library,
    ///   "Timeouts, retries and backoff with jitter");
    /// - retry: its defaults (3 attempts, exponential backoff with full jitter, and a budget
    ///   of 9 % of requests with no per-client floor, so that a fleet of any size stays within
    ///   the SRE book's 10 % retry ratio, "Handling Overload");
    /// - client-side throttle: its defaults (the SRE book's rule with K = 2 over a window of
    ///   500 ms that ages by time at any rate, so a client stops rejecting within about a
    ///   second once its downstream accepts again, and one sending under 8 requests a second
    ///   leaves its load to the retry budget and `Retry-After`);
    /// - circuit breaker: its defaults (a run of failures adapted to the failure rate before
    ///   it, beside the failure rate; open 1 s, 2 s, then 3 s while probes fail, each stretched
    ///   by up to a quarter, so a downstream that came back is used within 5 s; half-open
    ///   probes one call at first and one more at once per success, so a fleet whose breakers
    ///   opened together does not refill a backlog still draining);
    /// - bulkhead: an adaptive limit (Vegas, `adaptive = { vegas = { max = 1000 } }`) of at
    ///   most 1000 calls at once, and no queue. The maximum is Polly's standard concurrency
    ///   limiter (Envoy's default is 1024): by Little's law a client needs rate × latency calls
    ///   in flight, and 1000 carries 1000 req/s even when every call takes the whole 1 s total
    ///   timeout, and 10,000 req/s at up to 100 ms; past it a client only piles up calls
    ///   against a black hole. Below it the limit falls when the downstream queues behind the
    ///   client's own calls, so an overloaded downstream keeps serving its capacity near its
    ///   healthy latency (the lab's `overload`: goodput 99.7–100 % and accepted p99 1.4–1.5 ×
    ///   healthy, against 43 % and 36–39 × with a fixed 1000), and never below what Little's
    ///   law asks at the offered load while nothing shows overload. Calls that hang, a
    ///   downstream that got slower, a limit that has measured nothing yet (its initial 20) and
    ///   one at its maximum are not read as a queue. A client of a large fleet at a few calls a
    ///   second never fills a window of 10 calls, and its calls come in over the initial 20
    ///   while no queue shows. `max_concurrent = N` instead gives a fixed limit;
    /// - no hedging: it adds load, and is for calls whose tail matters more than that
    ///   ([`with_hedge`](Self::with_hedge), or a `hedge` section).
    fn default() -> Self {
        Self::builder().build().expect("the defaults are valid")
    }
}
