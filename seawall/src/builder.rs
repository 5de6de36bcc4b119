//! [`ServiceBuilderExt`]: seawall's layers as `ServiceBuilder` methods.
//!
//! The methods are named `with_*` because tower's own `ServiceBuilder` has inherent
//! `timeout`, `retry` and `rate_limit` methods behind its features, and an inherent method
//! always wins over a trait's: any crate in the build enabling tower's `timeout` feature would
//! otherwise turn `.timeout(seawall_layer)` into a type error.

use tower::ServiceBuilder;

/// A builder with `L` added to its stack (unused when no layer feature is on).
#[allow(dead_code)]
type With<L, Rest> = ServiceBuilder<tower::layer::util::Stack<L, Rest>>;

mod sealed {
    pub trait Sealed {}

    impl<L> Sealed for tower::ServiceBuilder<L> {}
}

/// seawall's layers as [`ServiceBuilder`] methods. Sealed: implemented for `ServiceBuilder`
/// only.
///
/// Each takes anything that converts into its layer, so a configuration (loaded from a file,
/// say) goes straight in: `.with_timeout(config)` builds the layer `TimeoutLayer::new(config)`
/// would.
///
/// ```
/// use std::time::Duration;
/// use seawall::ServiceBuilderExt;
/// use seawall::timeout::TimeoutLayer;
/// use tower::ServiceBuilder;
///
/// # fn main() -> Result<(), seawall::config::ConfigError> {
/// // As loaded from a configuration file:
/// let breaker = seawall::circuit_breaker::CircuitBreakerConfig::builder().name("db").build()?;
/// let stack = ServiceBuilder::new()
///     .with_http_errors()
///     .with_timeout(TimeoutLayer::builder().timeout(Duration::from_secs(2)).build()?)
///     .with_circuit_breaker(breaker);
/// # let _ = stack;
/// # Ok(())
/// # }
/// ```
pub trait ServiceBuilderExt<L>: sealed::Sealed + Sized {
    /// Adds a per-call timeout.
    #[cfg(feature = "timeout")]
    fn with_timeout<D>(
        self,
        layer: impl Into<crate::timeout::TimeoutLayer<D>>,
    ) -> With<crate::timeout::TimeoutLayer<D>, L>;

    /// Adds retries.
    #[cfg(feature = "retry")]
    fn with_retry<P>(
        self,
        layer: impl Into<crate::retry::RetryLayer<P>>,
    ) -> With<crate::retry::RetryLayer<P>, L>;

    /// Adds a circuit breaker.
    #[cfg(feature = "circuit-breaker")]
    fn with_circuit_breaker<C, H>(
        self,
        layer: impl Into<crate::circuit_breaker::CircuitBreakerLayer<C, H>>,
    ) -> With<crate::circuit_breaker::CircuitBreakerLayer<C, H>, L>;

    /// Adds a circuit breaker per key.
    #[cfg(feature = "circuit-breaker")]
    fn with_keyed_circuit_breaker<K, F, C, H>(
        self,
        layer: impl Into<crate::circuit_breaker::KeyedCircuitBreakerLayer<K, F, C, H>>,
    ) -> With<crate::circuit_breaker::KeyedCircuitBreakerLayer<K, F, C, H>, L>;

    /// Adds a bulkhead.
    #[cfg(feature = "bulkhead")]
    fn with_bulkhead<C, K>(
        self,
        layer: impl Into<crate::bulkhead::BulkheadLayer<C, K>>,
    ) -> With<crate::bulkhead::BulkheadLayer<C, K>, L>;

    /// Adds a rate limit.
    #[cfg(feature = "rate-limit")]
    fn with_rate_limit<K>(
        self,
        layer: impl Into<crate::rate_limit::RateLimitLayer<K>>,
    ) -> With<crate::rate_limit::RateLimitLayer<K>, L>;

    /// Adds a fallback.
    #[cfg(feature = "fallback")]
    fn with_fallback<Src, W>(
        self,
        layer: impl Into<crate::fallback::FallbackLayer<Src, W>>,
    ) -> With<crate::fallback::FallbackLayer<Src, W>, L>;

    /// Adds health reporting.
    #[cfg(feature = "health")]
    fn with_health<C>(
        self,
        layer: impl Into<crate::health::HealthLayer<C>>,
    ) -> With<crate::health::HealthLayer<C>, L>;

    /// Adds a client-side throttle.
    #[cfg(feature = "throttle")]
    fn with_throttle<C>(
        self,
        layer: impl Into<crate::throttle::ThrottleLayer<C>>,
    ) -> With<crate::throttle::ThrottleLayer<C>, L>;

    /// Adds hedged requests.
    #[cfg(feature = "hedge")]
    fn with_hedge<P>(
        self,
        layer: impl Into<crate::hedge::HedgeLayer<P>>,
    ) -> With<crate::hedge::HedgeLayer<P>, L>;

    /// Adds outlier ejection to a set of endpoints (a `tower::discover::Discover`); put a
    /// balancer such as `tower::balance::p2c::Balance` over it (each endpoint is its own
    /// `Load`: latency, calls in flight and recent failures).
    #[cfg(feature = "outlier")]
    fn with_outlier<K, C, P>(
        self,
        layer: impl Into<crate::outlier::OutlierLayer<K, C, P>>,
    ) -> With<crate::outlier::OutlierLayer<K, C, P>, L>;

    /// Adds fault injection.
    #[cfg(feature = "chaos")]
    fn with_chaos<T, R>(
        self,
        layer: impl Into<crate::chaos::ChaosLayer<T, R>>,
    ) -> With<crate::chaos::ChaosLayer<T, R>, L>;

    /// Adds the client stack.
    #[cfg(all(
        feature = "timeout",
        feature = "retry",
        feature = "circuit-breaker",
        feature = "bulkhead",
        feature = "rate-limit",
        feature = "throttle",
        feature = "hedge"
    ))]
    fn with_client_stack<P, C>(
        self,
        layer: impl Into<crate::stack::ClientStackLayer<P, C>>,
    ) -> With<crate::stack::ClientStackLayer<P, C>, L>;

    /// Adds the server stack.
    #[cfg(all(
        feature = "timeout",
        feature = "retry",
        feature = "circuit-breaker",
        feature = "bulkhead",
        feature = "rate-limit",
        feature = "throttle",
        feature = "hedge"
    ))]
    fn with_server_stack(
        self,
        layer: impl Into<crate::stack::ServerStackLayer>,
    ) -> With<crate::stack::ServerStackLayer, L>;

    /// Answers every error of the layers below with an HTTP response, so the stack's error is
    /// `Infallible` (put it first, outermost).
    #[cfg(feature = "http")]
    fn with_http_errors(self) -> With<crate::http::ErrorResponseLayer, L>;

    /// Answers every error of the layers below with a gRPC status (put it first, outermost).
    #[cfg(feature = "grpc")]
    fn with_grpc_errors(self) -> With<crate::grpc::ErrorStatusLayer, L>;
}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    #[cfg(feature = "timeout")]
    fn with_timeout<D>(
        self,
        layer: impl Into<crate::timeout::TimeoutLayer<D>>,
    ) -> With<crate::timeout::TimeoutLayer<D>, L> {
        self.layer(layer.into())
    }

    #[cfg(feature = "retry")]
    fn with_retry<P>(
        self,
        layer: impl Into<crate::retry::RetryLayer<P>>,
    ) -> With<crate::retry::RetryLayer<P>, L> {
        self.layer(layer.into())
    }

    #[cfg(feature = "circuit-breaker")]
    fn with_circuit_breaker<C, H>(
        self,
        layer: impl Into<crate::circuit_breaker::CircuitBreakerLayer<C, H>>,
    ) -> With<crate::circuit_breaker::CircuitBreakerLayer<C, H>, L> {
        self.layer(layer.into())
    }

    #[cfg(feature = "circuit-breaker")]
    fn with_keyed_circuit_breaker<K, F, C, H>(
        self,
        layer: impl Into<crate::circuit_breaker::KeyedCircuitBreakerLayer<K, F, C, H>>,
    ) -> With<crate::circuit_breaker::KeyedCircuitBreakerLayer<K, F, C, H>, L> {
        self.layer(layer.into())
    }

    #[cfg(feature = "bulkhead")]
    fn with_bulkhead<C, K>(
        self,
        layer: impl Into<crate::bulkhead::BulkheadLayer<C, K>>,
    ) -> With<crate::bulkhead::BulkheadLayer<C, K>, L> {
        self.layer(layer.into())
    }

    #[cfg(feature = "rate-limit")]
    fn with_rate_limit<K>(
        self,
        layer: impl Into<crate::rate_limit::RateLimitLayer<K>>,
    ) -> With<crate::rate_limit::RateLimitLayer<K>, L> {
        self.layer(layer.into())
    }

    #[cfg(feature = "fallback")]
    fn with_fallback<Src, W>(
        self,
        layer: impl Into<crate::fallback::FallbackLayer<Src, W>>,
    ) -> With<crate::fallback::FallbackLayer<Src, W>, L> {
        self.layer(layer.into())
    }

    #[cfg(feature = "health")]
    fn with_health<C>(
        self,
        layer: impl Into<crate::health::HealthLayer<C>>,
    ) -> With<crate::health::HealthLayer<C>, L> {
        self.layer(layer.into())
    }

    #[cfg(feature = "throttle")]
    fn with_throttle<C>(
        self,
        layer: impl Into<crate::throttle::ThrottleLayer<C>>,
    ) -> With<crate::throttle::ThrottleLayer<C>, L> {
        self.layer(layer.into())
    }

    #[cfg(feature = "hedge")]
    fn with_hedge<P>(
        self,
        layer: impl Into<crate::hedge::HedgeLayer<P>>,
    ) -> With<crate::hedge::HedgeLayer<P>, L> {
        self.layer(layer.into())
    }

    #[cfg(feature = "outlier")]
    fn with_outlier<K, C, P>(
        self,
        layer: impl Into<crate::outlier::OutlierLayer<K, C, P>>,
    ) -> With<crate::outlier::OutlierLayer<K, C, P>, L> {
        self.layer(layer.into())
    }

    #[cfg(feature = "chaos")]
    fn with_chaos<T, R>(
        self,
        layer: impl Into<crate::chaos::ChaosLayer<T, R>>,
    ) -> With<crate::chaos::ChaosLayer<T, R>, L> {
        self.layer(layer.into())
    }

    #[cfg(all(
        feature = "timeout",
        feature = "retry",
        feature = "circuit-breaker",
        feature = "bulkhead",
        feature = "rate-limit",
        feature = "throttle",
        feature = "hedge"
    ))]
    fn with_client_stack<P, C>(
        self,
        layer: impl Into<crate::stack::ClientStackLayer<P, C>>,
    ) -> With<crate::stack::ClientStackLayer<P, C>, L> {
        self.layer(layer.into())
    }

    #[cfg(all(
        feature = "timeout",
        feature = "retry",
        feature = "circuit-breaker",
        feature = "bulkhead",
        feature = "rate-limit",
        feature = "throttle",
        feature = "hedge"
    ))]
    fn with_server_stack(
        self,
        layer: impl Into<crate::stack::ServerStackLayer>,
    ) -> With<crate::stack::ServerStackLayer, L> {
        self.layer(layer.into())
    }

    #[cfg(feature = "http")]
    fn with_http_errors(self) -> With<crate::http::ErrorResponseLayer, L> {
        self.layer(crate::http::ErrorResponseLayer::new())
    }

    #[cfg(feature = "grpc")]
    fn with_grpc_errors(self) -> With<crate::grpc::ErrorStatusLayer, L> {
        self.layer(crate::grpc::ErrorStatusLayer::new())
    }
}
