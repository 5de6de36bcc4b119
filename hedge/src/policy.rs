//! Which requests may be hedged: a hedge sends the request a second time, so it must be safe
//! to send twice and it must be copied before the first attempt takes it.
//!
//! Built-ins: [`DefaultPolicy`] (any `Clone` request), [`PolicyFn`] (a closure) and
//! `HttpPolicy` (feature `http`: idempotent methods only, with replayable bodies).

use std::fmt;
use std::marker::PhantomData;

/// Decides which requests may be hedged, and makes the copy a hedge sends.
pub trait HedgePolicy<Req>: Send + Sync + 'static {
    /// The copy of `req` a hedge would send, or `None` when `req` must be sent only once.
    ///
    /// Called when the call is made (the first attempt takes the request), once per call
    /// that may be hedged.
    fn clone_request(&self, req: &Req) -> Option<Req>;
}

/// Hedges any request that is `Clone`.
///
/// That includes an `http::Request` whose body is `Clone`, whatever its method, a `POST`
/// too: HTTP calls take [`HttpPolicy`](crate::HttpPolicy) (feature `http`), which hedges only
/// idempotent methods (the `seawall` client stack hedges with its retry policy, which does the
/// same).
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultPolicy;

impl<Req: Clone> HedgePolicy<Req> for DefaultPolicy {
    fn clone_request(&self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

/// A policy made from a closure that copies the requests it lets be hedged.
///
/// ```
/// use seawall_hedge::{HedgePolicy, PolicyFn};
///
/// // Reads may be hedged, writes not.
/// let policy = PolicyFn::new(|req: &(bool, u32)| (!req.0).then_some(*req));
/// assert_eq!(policy.clone_request(&(false, 7)), Some((false, 7)));
/// assert_eq!(policy.clone_request(&(true, 7)), None);
/// ```
pub struct PolicyFn<F, Req> {
    f: F,
    _req: PhantomData<fn(&Req)>,
}

impl<F, Req> PolicyFn<F, Req>
where
    F: Fn(&Req) -> Option<Req>,
{
    /// Copies requests with `f`.
    pub fn new(f: F) -> Self {
        Self {
            f,
            _req: PhantomData,
        }
    }
}

impl<F: Clone, Req> Clone for PolicyFn<F, Req> {
    fn clone(&self) -> Self {
        Self {
            f: self.f.clone(),
            _req: PhantomData,
        }
    }
}

impl<F, Req> fmt::Debug for PolicyFn<F, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyFn").finish_non_exhaustive()
    }
}

impl<F, Req> HedgePolicy<Req> for PolicyFn<F, Req>
where
    F: Fn(&Req) -> Option<Req> + Send + Sync + 'static,
    Req: 'static,
{
    fn clone_request(&self, req: &Req) -> Option<Req> {
        (self.f)(req)
    }
}

#[cfg(feature = "http")]
pub use self::http::HttpPolicy;

#[cfg(feature = "http")]
mod http {
    use http::{Method, Request};
    use seawall_core::body::{TryCloneBody, clone_http_request};

    use super::HedgePolicy;

    /// Hedges HTTP requests with idempotent methods and replayable bodies.
    ///
    /// By default `GET`, `HEAD`, `OPTIONS`, `PUT` and `DELETE` (a `POST` sent twice may take
    /// effect twice). The body must be copyable ([`TryCloneBody`]): put seawall-core's
    /// [`ReplayBodyLayer`](seawall_core::body::ReplayBodyLayer) above the hedge layer for bodies
    /// of any type; a body it could not hold is sent once, unhedged.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct HttpPolicy {
        extra: Vec<Method>,
    }

    impl Default for HttpPolicy {
        fn default() -> Self {
            Self::new()
        }
    }

    impl HttpPolicy {
        /// Idempotent methods only.
        pub fn new() -> Self {
            Self { extra: Vec::new() }
        }

        /// Also hedges requests with `method`, for a `POST` made safe by an idempotency key,
        /// say.
        #[must_use]
        pub fn with_method(mut self, method: Method) -> Self {
            self.extra.push(method);
            self
        }

        /// Whether a request with `method` may be hedged.
        pub fn hedges_method(&self, method: &Method) -> bool {
            matches!(
                *method,
                Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
            ) || self.extra.contains(method)
        }
    }

    impl<B: TryCloneBody + 'static> HedgePolicy<Request<B>> for HttpPolicy {
        fn clone_request(&self, req: &Request<B>) -> Option<Request<B>> {
            if !self.hedges_method(req.method()) {
                return None;
            }
            clone_http_request(req)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn idempotent_methods_only_unless_added() {
            let policy = HttpPolicy::new();
            for method in [
                Method::GET,
                Method::HEAD,
                Method::OPTIONS,
                Method::PUT,
                Method::DELETE,
            ] {
                assert!(policy.hedges_method(&method), "{method}");
            }
            for method in [Method::POST, Method::PATCH, Method::CONNECT] {
                assert!(!policy.hedges_method(&method), "{method}");
            }
            let post = policy.with_method(Method::POST);
            assert!(post.hedges_method(&Method::POST));
            let req = Request::post("/orders").body(()).unwrap();
            assert!(HttpPolicy::new().clone_request(&req).is_none());
            assert!(post.clone_request(&req).is_some());
        }
    }
}
