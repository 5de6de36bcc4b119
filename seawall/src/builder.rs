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
/// ```
/// use std::time::Duration;
/// use seawall::ServiceBuilderExt;
/// use seawall::timeout::TimeoutLayer;
/// use tower::ServiceBuilder;
///
/// # fn main() -> Result<(), seawall::config::ConfigError> {
/// let stack = ServiceBuilder::new()
///     .with_http_errors()
///     .with_timeout(TimeoutLayer::builder().timeout(Duration::from_secs(2)).build()?);
/// # let _ = stack;
/// # Ok(())
/// # }
/// ```
pub trait ServiceBuilderExt<L>: sealed::Sealed + Sized {
    /// Adds a per-call timeout.
    #[cfg(feature = "timeout")]
    fn with_timeout<D>(
        self,
        layer: crate::timeout::TimeoutLayer<D>,
    ) -> With<crate::timeout::TimeoutLayer<D>, L>;

    /// Adds retries.
    #[cfg(feature = "retry")]
    fn with_retry<P>(
        self,
        layer: crate::retry::RetryLayer<P>,
    ) -> With<crate::retry::RetryLayer<P>, L>;

    /// Adds a circuit breaker.
    #[cfg(feature = "circuit-breaker")]
    fn with_circuit_breaker<C, H>(
        self,
        layer: crate::circuit_breaker::CircuitBreakerLayer<C, H>,
    ) -> With<crate::circuit_breaker::CircuitBreakerLayer<C, H>, L>;

    /// Adds a bulkhead.
    #[cfg(feature = "bulkhead")]
    fn with_bulkhead<C, K>(
        self,
        layer: crate::bulkhead::BulkheadLayer<C, K>,
    ) -> With<crate::bulkhead::BulkheadLayer<C, K>, L>;

    /// Adds a rate limit.
    #[cfg(feature = "rate-limit")]
    fn with_rate_limit<K>(
        self,
        layer: crate::rate_limit::RateLimitLayer<K>,
    ) -> With<crate::rate_limit::RateLimitLayer<K>, L>;

    /// Adds a fallback.
    #[cfg(feature = "fallback")]
    fn with_fallback<Src, W>(
        self,
        layer: crate::fallback::FallbackLayer<Src, W>,
    ) -> With<crate::fallback::FallbackLayer<Src, W>, L>;

    /// Adds a health layer reporting the error rate and latency of calls.
    #[cfg(feature = "health")]
    fn with_health<C>(
        self,
        layer: crate::health::HealthLayer<C>,
    ) -> With<crate::health::HealthLayer<C>, L>;

    /// Adds client-side adaptive throttling (inside retry, outside the circuit breaker).
    #[cfg(feature = "throttle")]
    fn with_throttle<C>(
        self,
        layer: crate::throttle::ThrottleLayer<C>,
    ) -> With<crate::throttle::ThrottleLayer<C>, L>;

    /// Adds hedging.
    #[cfg(feature = "hedge")]
    fn with_hedge<P>(
        self,
        layer: crate::hedge::HedgeLayer<P>,
    ) -> With<crate::hedge::HedgeLayer<P>, L>;

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
        layer: crate::timeout::TimeoutLayer<D>,
    ) -> With<crate::timeout::TimeoutLayer<D>, L> {
        self.layer(layer)
    }

    #[cfg(feature = "retry")]
    fn with_retry<P>(
        self,
        layer: crate::retry::RetryLayer<P>,
    ) -> With<crate::retry::RetryLayer<P>, L> {
        self.layer(layer)
    }

    #[cfg(feature = "circuit-breaker")]
    fn with_circuit_breaker<C, H>(
        self,
        layer: crate::circuit_breaker::CircuitBreakerLayer<C, H>,
    ) -> With<crate::circuit_breaker::CircuitBreakerLayer<C, H>, L> {
        self.layer(layer)
    }

    #[cfg(feature = "bulkhead")]
    fn with_bulkhead<C, K>(
        self,
        layer: crate::bulkhead::BulkheadLayer<C, K>,
    ) -> With<crate::bulkhead::BulkheadLayer<C, K>, L> {
        self.layer(layer)
    }

    #[cfg(feature = "rate-limit")]
    fn with_rate_limit<K>(
        self,
        layer: crate::rate_limit::RateLimitLayer<K>,
    ) -> With<crate::rate_limit::RateLimitLayer<K>, L> {
        self.layer(layer)
    }

    #[cfg(feature = "fallback")]
    fn with_fallback<Src, W>(
        self,
        layer: crate::fallback::FallbackLayer<Src, W>,
    ) -> With<crate::fallback::FallbackLayer<Src, W>, L> {
        self.layer(layer)
    }

    #[cfg(feature = "health")]
    fn with_health<C>(
        self,
        layer: crate::health::HealthLayer<C>,
    ) -> With<crate::health::HealthLayer<C>, L> {
        self.layer(layer)
    }

    #[cfg(feature = "throttle")]
    fn with_throttle<C>(
        self,
        layer: crate::throttle::ThrottleLayer<C>,
    ) -> With<crate::throttle::ThrottleLayer<C>, L> {
        self.layer(layer)
    }

    #[cfg(feature = "hedge")]
    fn with_hedge<P>(
        self,
        layer: crate::hedge::HedgeLayer<P>,
    ) -> With<crate::hedge::HedgeLayer<P>, L> {
        self.layer(layer)
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
