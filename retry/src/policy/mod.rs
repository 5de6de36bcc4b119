//! What is retried: which requests may be sent again, and which results call for it.
//!
//! A [`RetryPolicy`] answers two questions. Before the first attempt, [`clone_request`]
//! makes the copy a retry would send, or refuses (a `POST`, a body too large to replay): a
//! request that cannot be retried is never copied. After each attempt, [`judge`] gives the
//! [`Verdict`]: a success, a failure to hand back as it is, or a failure worth another try,
//! perhaps not before a time the downstream named.
//!
//! Whatever the policy, an open circuit is never retried: the breaker decides when the
//! dependency is probed again, and retries would only take its probe slots and make the caller
//! wait for a failure. A [`Rejected`](seawall_core::Rejected) from an inner bulkhead or rate
//! limiter is retried only when it names a `retry_after`, and not before it: without one it
//! is load being shed, and a retry would only queue it in disguise. [`rejection_verdict`] gives
//! these rules to custom policies.
//!
//! Built-ins: [`DefaultPolicy`] (for `http::Request`s, what `HttpPolicy` does; for other
//! requests, any error of an [`Idempotent`] one), [`RetryOn`] (a [`Classify`] from
//! seawall-core decides), [`PolicyFn`] (a closure), `HttpPolicy` (feature `http`) and
//! `GrpcPolicy` (feature `grpc`).
//!
//! Nothing that may not be sent twice is retried by default. [`DefaultPolicy`], the policy of
//! a `RetryLayer` and of the facade's client stack unless another is chosen, copies an HTTP
//! request only when its method is idempotent (a `POST` or `PATCH` that timed out after the
//! server acted on it is never sent again), and a request of any other type only when the type
//! says it may be sent again, by implementing [`Idempotent`]. [`RetryOn`] and [`PolicyFn`]
//! copy any `Clone` request: choosing one says every request through the layer is safe to
//! repeat.
//!
//! [`clone_request`]: RetryPolicy::clone_request
//! [`judge`]: RetryPolicy::judge

#[cfg(feature = "grpc")]
mod grpc;
#[cfg(feature = "hedge")]
mod hedge;
#[cfg(feature = "http")]
mod http;

#[cfg(feature = "grpc")]
pub use self::grpc::GrpcPolicy;
#[cfg(feature = "http")]
pub use self::http::{HttpPolicy, clone_http_request, parse_retry_after};

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use seawall_core::classify::{Classified, Classify, Outcome};
use seawall_core::{BoxError, RejectionKind, rejected};

/// What one attempt's result means to the retry layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The attempt worked: hand its result back.
    Success,
    /// The attempt failed and must not be retried: hand its result back.
    Failure,
    /// The attempt failed and may be retried, not before `not_before` when the downstream or
    /// an inner layer named a time.
    Retry {
        /// The shortest wait before the retry; a longer backoff delay still applies.
        not_before: Option<Duration>,
    },
    /// The downstream refused the attempt for load (a `429`, a `503`, `RESOURCE_EXHAUSTED`):
    /// retried as [`Retry`](Self::Retry) is, after a wait spread over the time the call has
    /// left (see [`RetryLayer`](crate::RetryLayer)).
    Overloaded {
        /// The shortest wait before the retry, when the downstream named one.
        not_before: Option<Duration>,
    },
}

impl Verdict {
    /// A retry after the backoff delay alone.
    pub const RETRY: Self = Self::Retry { not_before: None };

    /// A retry of an overload refusal that named no wait.
    pub const OVERLOADED: Self = Self::Overloaded { not_before: None };
}

/// Decides which requests may be retried and which results call for a retry.
pub trait RetryPolicy<Req, Res>: Send + Sync + 'static {
    /// The copy of `req` a retry would send, or `None` when `req` must be sent only once.
    fn clone_request(&self, req: &Req) -> Option<Req>;

    /// What the result of one attempt means.
    fn judge(&self, result: Result<&Res, &BoxError>) -> Verdict;

    /// The authority (`host:port`) `req` goes to: a `Retry-After` it gets holds back the
    /// retries to that authority only. `None` (the default) for a request that names none,
    /// whose hints hold back the retries of every such request of the layer.
    fn authority<'a>(&self, req: &'a Req) -> Option<&'a str> {
        let _ = req;
        None
    }
}

/// The verdict on an error that holds a [`Rejected`](seawall_core::Rejected), if it does.
///
/// An open circuit is never retried, nor is a retry layer's own `BudgetExhausted` (retrying
/// it would multiply the retries it refused), nor the caller's own `DeadlineExceeded` (no
/// retry can finish in time). A timeout or an injected failure is the downstream's and is
/// retried as any error. Another rejection (a full bulkhead, a rate limit) is retried only
/// when it names a `retry_after`, and not before it.
pub fn rejection_verdict(err: &BoxError) -> Option<Verdict> {
    let rejection = rejected(&**err)?;
    Some(match (rejection.kind(), rejection.retry_after()) {
        (
            RejectionKind::CircuitOpen
            | RejectionKind::BudgetExhausted
            | RejectionKind::DeadlineExceeded,
            _,
        ) => Verdict::Failure,
        (kind, None) if !kind.is_downstream_failure() => Verdict::Failure,
        (_, after) => Verdict::Retry { not_before: after },
    })
}

/// A request type whose requests may be sent more than once: all of them (the default), or
/// those for which [`is_idempotent`](Self::is_idempotent) says so.
///
/// [`DefaultPolicy`] retries only requests of such types (and, with the `http` feature,
/// `http::Request`s with an idempotent method). Implement it for your own request type to
/// say which requests are safe to repeat:
///
/// ```
/// use seawall_retry::Idempotent;
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
pub trait Idempotent {
    /// Whether this request may be sent again after an attempt that may have taken effect.
    fn is_idempotent(&self) -> bool {
        true
    }
}

seawall_core::impl_for_plain_types!(Idempotent);

/// The default policy: nothing that may not be sent twice is retried.
///
/// For an `http::Request` (feature `http`) it does what `HttpPolicy::new()` does: only `GET`,
/// `HEAD`, `OPTIONS`, `PUT` and `DELETE` are retried, on 5xx (but 501 and 505), 429 and
/// errors, honouring `Retry-After`. For any other request it retries any error of a `Clone`
/// request whose type is [`Idempotent`] (and says so for this request); every response is a
/// success.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultPolicy;

impl<Req: Clone + Idempotent, Res> RetryPolicy<Req, Res> for DefaultPolicy {
    fn clone_request(&self, req: &Req) -> Option<Req> {
        req.is_idempotent().then(|| req.clone())
    }

    fn judge(&self, result: Result<&Res, &BoxError>) -> Verdict {
        match result {
            Ok(_) => Verdict::Success,
            Err(err) => rejection_verdict(err).unwrap_or(Verdict::RETRY),
        }
    }
}

/// Retries the results a seawall-core [`Classify`] calls failures or overload, for any
/// `Clone` request (the budget and the backoff keep overload retries in check).
///
/// A result known only at the end of its stream (a gRPC status in trailers) is already on
/// its way to the caller and counts as a success here.
///
/// ```
/// use http::Response;
/// use seawall_core::classify::HttpStatus;
/// use seawall_retry::{RetryOn, RetryPolicy, Verdict};
///
/// let policy = RetryOn::new(HttpStatus::server_errors());
/// let res = Response::builder().status(502).body(()).unwrap();
/// assert_eq!(RetryPolicy::<(), _>::judge(&policy, Ok(&res)), Verdict::RETRY);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct RetryOn<C> {
    classify: C,
}

impl<C> RetryOn<C> {
    /// Retries what `classify` calls a failure.
    pub fn new(classify: C) -> Self {
        Self { classify }
    }
}

impl<Req, Res, C> RetryPolicy<Req, Res> for RetryOn<C>
where
    Req: Clone,
    C: Classify<Res, BoxError>,
{
    fn clone_request(&self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }

    fn judge(&self, result: Result<&Res, &BoxError>) -> Verdict {
        if let Err(err) = result
            && let Some(verdict) = rejection_verdict(err)
        {
            return verdict;
        }
        match self.classify.classify(result) {
            Classified::Now(Outcome::Failure) => Verdict::RETRY,
            Classified::Now(Outcome::Overload) => Verdict::OVERLOADED,
            Classified::Now(_) | Classified::AtEndOfStream => Verdict::Success,
        }
    }
}

/// A policy from a closure that judges results, for any `Clone` request.
///
/// ```
/// use seawall_retry::{PolicyFn, RetryPolicy, Verdict, rejection_verdict};
///
/// // Retry errors and empty answers.
/// let policy = PolicyFn::new(|result: Result<&Option<u32>, &seawall_core::BoxError>| match result {
///     Ok(Some(_)) => Verdict::Success,
///     Ok(None) => Verdict::RETRY,
///     Err(err) => rejection_verdict(err).unwrap_or(Verdict::RETRY),
/// });
/// assert_eq!(RetryPolicy::<u8, _>::judge(&policy, Ok(&None)), Verdict::RETRY);
/// ```
pub struct PolicyFn<F, Res> {
    f: F,
    _types: PhantomData<fn(&Res)>,
}

impl<F, Res> PolicyFn<F, Res>
where
    F: Fn(Result<&Res, &BoxError>) -> Verdict,
{
    /// Judges results with `f`.
    pub fn new(f: F) -> Self {
        Self {
            f,
            _types: PhantomData,
        }
    }
}

impl<F: Clone, Res> Clone for PolicyFn<F, Res> {
    fn clone(&self) -> Self {
        Self {
            f: self.f.clone(),
            _types: PhantomData,
        }
    }
}

impl<F, Res> fmt::Debug for PolicyFn<F, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyFn").finish_non_exhaustive()
    }
}

impl<Req, Res, F> RetryPolicy<Req, Res> for PolicyFn<F, Res>
where
    Req: Clone,
    Res: 'static,
    F: Fn(Result<&Res, &BoxError>) -> Verdict + Send + Sync + 'static,
{
    fn clone_request(&self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }

    fn judge(&self, result: Result<&Res, &BoxError>) -> Verdict {
        (self.f)(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use seawall_core::Rejected;

    fn judge(err: BoxError) -> Verdict {
        RetryPolicy::<(), ()>::judge(&DefaultPolicy, Err(&err))
    }

    #[test]
    fn only_requests_that_say_they_are_idempotent_are_copied() {
        #[derive(Debug, Clone, PartialEq)]
        enum Op {
            Read,
            Write,
        }
        impl Idempotent for Op {
            fn is_idempotent(&self) -> bool {
                *self == Op::Read
            }
        }
        let copy = |op: Op| RetryPolicy::<Op, ()>::clone_request(&DefaultPolicy, &op);
        assert_eq!(copy(Op::Read), Some(Op::Read));
        assert_eq!(copy(Op::Write), None);
        assert_eq!(
            RetryPolicy::<u64, ()>::clone_request(&DefaultPolicy, &7),
            Some(7)
        );
    }

    #[cfg(feature = "http")]
    #[test]
    fn the_plain_types_are_idempotent_keyless_and_plain_responses_alike() {
        use seawall_core::classify::PlainResponse;
        use seawall_core::key::HasAuthority;

        fn plain<T: Idempotent + HasAuthority + PlainResponse>(request: T) -> bool {
            request.authority().is_none() && request.is_idempotent()
        }
        let borrowed = String::from("a request");
        assert!(plain(()) && plain(true) && plain('c'));
        assert!(plain(1u8) && plain(1u64) && plain(1usize) && plain(-1i32) && plain(-1isize));
        assert!(plain(1.5f32) && plain(1.5f64));
        assert!(plain(borrowed.clone()) && plain(borrowed.as_str()));
    }

    #[test]
    fn any_error_is_retried_and_any_response_succeeds() {
        assert_eq!(judge("boom".into()), Verdict::RETRY);
        assert_eq!(
            RetryPolicy::<(), ()>::judge(&DefaultPolicy, Ok(&())),
            Verdict::Success
        );
    }

    #[test]
    fn rejections_wait_for_their_retry_after() {
        let limited = Rejected::new(RejectionKind::RateLimited, "db")
            .with_retry_after(Duration::from_secs(2));
        assert_eq!(
            judge(limited.into()),
            Verdict::Retry {
                not_before: Some(Duration::from_secs(2))
            }
        );
        let open = Rejected::new(RejectionKind::CircuitOpen, "db")
            .with_retry_after(Duration::from_millis(1));
        assert_eq!(
            judge(open.into()),
            Verdict::Failure,
            "an open circuit is never retried"
        );
        let full = Rejected::new(RejectionKind::BulkheadFull, "db");
        assert_eq!(
            judge(full.into()),
            Verdict::Failure,
            "shed load without a hint"
        );
        let timed_out = Rejected::new(RejectionKind::TimedOut, "attempt");
        assert_eq!(
            judge(timed_out.into()),
            Verdict::RETRY,
            "the downstream's failure"
        );
        let budget = Rejected::new(RejectionKind::BudgetExhausted, "inner");
        assert_eq!(judge(budget.into()), Verdict::Failure);
    }

    #[test]
    fn the_callers_own_deadline_is_never_retried() {
        let expired = Rejected::new(RejectionKind::DeadlineExceeded, "attempt");
        assert_eq!(judge(expired.clone().into()), Verdict::Failure);
        let hinted = expired.with_retry_after(Duration::from_millis(1));
        assert_eq!(
            judge(hinted.into()),
            Verdict::Failure,
            "not even with a hint"
        );
    }
}
