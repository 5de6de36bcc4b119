//! Which requests may be hedged: a hedge sends the request a second time, so it must be safe
//! to send twice and it must be copied before the first attempt takes it.
//!
//! Nothing that may not be sent twice is hedged by default. Built-ins: [`DefaultPolicy`] (an
//! [`Idempotent`] request: an `http::Request` with an idempotent method, a plain type, or a
//! type of yours that says so), [`PolicyFn`] (a closure) and `HttpPolicy` (feature `http`:
//! idempotent methods only, with replayable bodies).

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

/// A request type whose requests may be sent more than once: all of them (the default), or
/// those for which [`is_idempotent`](Self::is_idempotent) says so.
///
/// [`DefaultPolicy`] hedges only requests of such types. The standard library's plain types
/// (the integers and floats, `bool`, `char`, `()`, `String`, `&str`) are, and an
/// `http::Request` (feature `http`) is when its method is idempotent (`GET`, `HEAD`,
/// `OPTIONS`, `PUT`, `DELETE`). Implement it for your own request type to say which requests
/// are safe to send twice:
///
/// ```
/// use seawall_hedge::Idempotent;
///
/// #[derive(Clone)]
/// enum Op {
///     Get(u64),
///     Create(String),
/// }
///
/// impl Idempotent for Op {
///     fn is_idempotent(&self) -> bool {
///         matches!(self, Op::Get(_))
///     }
/// }
/// ```
///
/// It says what seawall-retry's `Idempotent` says, for the hedge layer: a type used with both
/// layers' default policies implements both (the two become one trait in seawall-core when
/// the retry policy's HTTP judging no longer needs a trait of its own crate).
pub trait Idempotent {
    /// Whether this request may be sent again while an attempt that may take effect is in
    /// flight.
    fn is_idempotent(&self) -> bool {
        true
    }
}

seawall_core::impl_for_plain_types!(Idempotent);

/// For `http::Request`s: whether the method is idempotent.
#[cfg(feature = "http")]
impl<B> Idempotent for ::http::Request<B> {
    fn is_idempotent(&self) -> bool {
        seawall_core::body::is_idempotent_method(self.method())
    }
}

/// The default policy: nothing that may not be sent twice is hedged.
///
/// Hedges a `Clone` request whose type is [`Idempotent`] and says so for this request: an
/// `http::Request` with a `Clone` body only when its method is idempotent (a `POST` or
/// `PATCH` is sent once), a plain type always. For HTTP bodies that are not `Clone` (a
/// streaming body behind seawall-core's `ReplayBodyLayer`), use `HttpPolicy` (feature
/// `http`).
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultPolicy;

impl<Req: Clone + Idempotent> HedgePolicy<Req> for DefaultPolicy {
    fn clone_request(&self, req: &Req) -> Option<Req> {
        req.is_idempotent().then(|| req.clone())
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
    use seawall_core::body::{TryCloneBody, clone_http_request, is_idempotent_method};

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
            is_idempotent_method(method) || self.extra.contains(method)
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
