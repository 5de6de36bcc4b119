use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use seawall_core::config::ConfigError;
use seawall_core::metrics::MetricScope;
use seawall_core::{BoxError, RejectionKind};
use tower::Layer;

use crate::config::FallbackConfig;
use crate::event::FallbackEvent;
use crate::service::Fallback;
use crate::source::{Failover, FromFailure, FromFailureAsync, Value, WithRequest};
use crate::state::Shared;
use crate::trigger::{Failed, OnFailure, When};

/// Answers failed or rejected calls of the inner service from a fallback source.
pub struct FallbackLayer<Src, W = When> {
    shared: Arc<Shared<Src, W>>,
}

impl FallbackLayer<(), When> {
    /// A builder: choose when the fallback fires, then what answers.
    pub fn builder() -> FallbackLayerBuilder<When> {
        FallbackLayerBuilder::from_config(FallbackConfig::default())
    }
}

impl<Src, W> FallbackLayer<Src, W> {
    /// Calls `hook` each time the fallback answers.
    pub fn on_fallback(self, hook: impl Fn(FallbackEvent<'_>) + Send + Sync + 'static) -> Self {
        self.shared.on_fallback.set(hook);
        self
    }

    /// The layer instance's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }
}

impl<Src, W> Clone for FallbackLayer<Src, W> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<Src, W: fmt::Debug> fmt::Debug for FallbackLayer<Src, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackLayer")
            .field("name", &self.shared.name)
            .field("trigger", &self.shared.trigger)
            .finish_non_exhaustive()
    }
}

impl<S, Src, W> Layer<S> for FallbackLayer<Src, W> {
    type Service = Fallback<S, Src, W>;

    fn layer(&self, inner: S) -> Self::Service {
        Fallback::new(inner, self.shared.clone())
    }
}

/// Builds a [`FallbackLayer`]: when it fires (`on_*`), what answers ([`value`](Self::value),
/// [`with`](Self::with), [`with_async`](Self::with_async), [`with_request`](Self::with_request)
/// or [`failover`](Self::failover)), then [`build`](Self::build).
#[derive(Debug, Clone)]
pub struct FallbackLayerBuilder<W, Src = NoAnswer> {
    name: Arc<str>,
    trigger: W,
    source: Src,
}

/// The source of a builder that has none yet.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAnswer;

impl FallbackLayerBuilder<When> {
    /// A builder with the name and trigger of a configuration.
    pub fn from_config(config: FallbackConfig) -> Self {
        Self {
            name: config.name.into(),
            trigger: config.on,
            source: NoAnswer,
        }
    }
}

impl<Src> FallbackLayerBuilder<When, Src> {
    /// Fires on every error (the default).
    pub fn on_any_error(mut self) -> Self {
        self.trigger = When::AnyError;
        self
    }

    /// Fires only on rejections of these kinds.
    pub fn on_rejections(mut self, kinds: impl IntoIterator<Item = RejectionKind>) -> Self {
        self.trigger = When::Rejections(kinds.into_iter().collect());
        self
    }

    /// Fires on whatever `classifier` calls a failure, answers (a 5xx, say) as well as errors.
    pub fn on_failure<C>(self, classifier: C) -> FallbackLayerBuilder<OnFailure<C>, Src> {
        FallbackLayerBuilder {
            name: self.name,
            trigger: OnFailure::new(classifier),
            source: self.source,
        }
    }
}

impl<C, Src> FallbackLayerBuilder<OnFailure<C>, Src> {
    /// Also fires on what the classifier calls overload (a 429 or 503 with `HttpStatus`),
    /// with the cause `overload`.
    pub fn or_overload(mut self) -> Self {
        self.trigger = self.trigger.or_overload();
        self
    }
}

impl<W, Src> FallbackLayerBuilder<W, Src> {
    /// The layer instance's name (default `"fallback"`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into().into();
        self
    }

    /// Answers with a clone of `value`.
    pub fn value<Res>(self, value: Res) -> FallbackLayerBuilder<W, Value<Res>> {
        self.answer(Value(value))
    }

    /// Answers with `f` of the failure.
    pub fn with<F, Res>(self, f: F) -> FallbackLayerBuilder<W, FromFailure<F>>
    where
        F: Fn(Failed<Res>) -> Res,
    {
        self.answer(FromFailure(f))
    }

    /// Answers with the future `f` makes of the failure; it may fail too.
    pub fn with_async<F, Fut, Res>(self, f: F) -> FallbackLayerBuilder<W, FromFailureAsync<F>>
    where
        F: Fn(Failed<Res>) -> Fut,
        Fut: Future<Output = Result<Res, BoxError>>,
    {
        self.answer(FromFailureAsync(f))
    }

    /// Keeps `keep(&request)` from every request and answers with the future `f` makes of it
    /// and the failure.
    pub fn with_request<K, F, T, Fut, Req, Res>(
        self,
        keep: K,
        f: F,
    ) -> FallbackLayerBuilder<W, WithRequest<K, F, T>>
    where
        K: Fn(&Req) -> T,
        F: Fn(T, Failed<Res>) -> Fut,
        Fut: Future<Output = Result<Res, BoxError>>,
    {
        self.answer(WithRequest {
            keep,
            answer: f,
            _kept: PhantomData,
        })
    }

    /// Sends the request to `service` instead (it is cloned for every call).
    pub fn failover<S>(self, service: S) -> FallbackLayerBuilder<W, Failover<S>> {
        self.answer(Failover(service))
    }

    fn answer<Src2>(self, source: Src2) -> FallbackLayerBuilder<W, Src2> {
        FallbackLayerBuilder {
            name: self.name,
            trigger: self.trigger,
            source,
        }
    }
}

impl<W: Checked, Src: Answer> FallbackLayerBuilder<W, Src> {
    /// The layer, or the first setting out of range.
    pub fn build(self) -> Result<FallbackLayer<Src, W>, ConfigError> {
        seawall_core::config::check_name(&self.name)?;
        self.trigger.check()?;
        let metrics = MetricScope::new(self.name.clone());
        Ok(FallbackLayer {
            shared: Arc::new(Shared::new(self.name, self.source, self.trigger, &metrics)),
        })
    }
}

/// What answers in place of the inner service: the source chosen on the builder, without
/// which it has nothing to build.
pub trait Answer: sealed::Sealed {}

mod sealed {
    pub trait Sealed {}
}

impl<Res> sealed::Sealed for Value<Res> {}
impl<Res> Answer for Value<Res> {}
impl<F> sealed::Sealed for FromFailure<F> {}
impl<F> Answer for FromFailure<F> {}
impl<F> sealed::Sealed for FromFailureAsync<F> {}
impl<F> Answer for FromFailureAsync<F> {}
impl<K, F, T> sealed::Sealed for WithRequest<K, F, T> {}
impl<K, F, T> Answer for WithRequest<K, F, T> {}
impl<S> sealed::Sealed for Failover<S> {}
impl<S> Answer for Failover<S> {}

/// A trigger that can check itself when the layer is built.
pub trait Checked {
    /// An error when the trigger can never fire as configured.
    fn check(&self) -> Result<(), ConfigError>;
}

impl Checked for When {
    fn check(&self) -> Result<(), ConfigError> {
        match self {
            Self::Rejections(kinds) if kinds.is_empty() => Err(ConfigError::new(
                "on.rejections",
                "[]",
                "at least one rejection kind",
            )),
            _ => Ok(()),
        }
    }
}

impl<C> Checked for OnFailure<C> {
    fn check(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}
