//! What answers when a fallback fires.
//!
//! A source keeps from each request only what it needs to answer ([`Source::keep`]): nothing
//! for a fixed value or a closure of the error, a part of the request for
//! [`WithRequest`], the whole request (a clone) only for [`Failover`].

use std::future::{Future, Ready, ready};
use std::marker::PhantomData;

use seawall_core::BoxError;
use tower::util::{MapErr, Oneshot};
use tower::{Service, ServiceExt};

use crate::trigger::Failed;

/// Answers a call in place of the inner service.
pub trait Source<Req, Res>: Send + Sync + 'static {
    /// What is kept from each request, in case the fallback fires.
    type Kept;
    /// The fallback's answer.
    type Future: Future<Output = Result<Res, BoxError>>;

    /// Takes what the fallback needs from `req`, before the inner service gets it.
    fn keep(&self, req: &Req) -> Self::Kept;

    /// Answers in place of the failed call.
    fn answer(&self, kept: Self::Kept, failed: Failed<Res>) -> Self::Future;
}

/// Answers with a clone of a fixed value.
#[derive(Debug, Clone)]
pub struct Value<Res>(pub(crate) Res);

impl<Req, Res> Source<Req, Res> for Value<Res>
where
    Res: Clone + Send + Sync + 'static,
{
    type Kept = ();
    type Future = Ready<Result<Res, BoxError>>;

    fn keep(&self, _req: &Req) {}

    fn answer(&self, (): (), _failed: Failed<Res>) -> Self::Future {
        ready(Ok(self.0.clone()))
    }
}

/// Answers with a closure of the failure.
#[derive(Debug, Clone)]
pub struct FromFailure<F>(pub(crate) F);

impl<Req, Res, F> Source<Req, Res> for FromFailure<F>
where
    F: Fn(Failed<Res>) -> Res + Send + Sync + 'static,
{
    type Kept = ();
    type Future = Ready<Result<Res, BoxError>>;

    fn keep(&self, _req: &Req) {}

    fn answer(&self, (): (), failed: Failed<Res>) -> Self::Future {
        ready(Ok((self.0)(failed)))
    }
}

/// Answers with an async closure of the failure, which may itself fail.
#[derive(Debug, Clone)]
pub struct FromFailureAsync<F>(pub(crate) F);

impl<Req, Res, F, Fut> Source<Req, Res> for FromFailureAsync<F>
where
    F: Fn(Failed<Res>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Res, BoxError>>,
{
    type Kept = ();
    type Future = Fut;

    fn keep(&self, _req: &Req) {}

    fn answer(&self, (): (), failed: Failed<Res>) -> Fut {
        (self.0)(failed)
    }
}

/// Answers with an async closure of a part of the request (taken by `keep`) and the failure.
pub struct WithRequest<K, F, T> {
    pub(crate) keep: K,
    pub(crate) answer: F,
    pub(crate) _kept: PhantomData<fn() -> T>,
}

impl<K: Clone, F: Clone, T> Clone for WithRequest<K, F, T> {
    fn clone(&self) -> Self {
        Self {
            keep: self.keep.clone(),
            answer: self.answer.clone(),
            _kept: PhantomData,
        }
    }
}

impl<K, F, T> std::fmt::Debug for WithRequest<K, F, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WithRequest").finish_non_exhaustive()
    }
}

impl<Req, Res, K, F, T, Fut> Source<Req, Res> for WithRequest<K, F, T>
where
    K: Fn(&Req) -> T + Send + Sync + 'static,
    F: Fn(T, Failed<Res>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Res, BoxError>>,
    T: 'static,
{
    type Kept = T;
    type Future = Fut;

    fn keep(&self, req: &Req) -> T {
        (self.keep)(req)
    }

    fn answer(&self, kept: T, failed: Failed<Res>) -> Fut {
        (self.answer)(kept, failed)
    }
}

/// Sends the request to another service (a replica, a cache, a degraded path).
///
/// The request is cloned before the inner service gets it, so it needs `Req: Clone`.
#[derive(Debug, Clone)]
pub struct Failover<S>(pub(crate) S);

type ToBoxError<E> = fn(E) -> BoxError;

impl<Req, Res, S> Source<Req, Res> for Failover<S>
where
    S: Service<Req, Response = Res> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    Req: Clone,
{
    type Kept = Req;
    type Future = Oneshot<MapErr<S, ToBoxError<S::Error>>, Req>;

    fn keep(&self, req: &Req) -> Req {
        req.clone()
    }

    fn answer(&self, kept: Req, _failed: Failed<Res>) -> Self::Future {
        let to_box: ToBoxError<S::Error> = Into::into;
        self.0.clone().map_err(to_box).oneshot(kept)
    }
}
