//! Open durations set by the result that tripped the breaker.
//!
//! A downstream that answers `503` or `429` with `Retry-After: 30` knows better than any
//! configured open duration when it will take calls again. When such a result trips the
//! breaker (or fails a probe), the breaker stays open for the time it names instead.
//!
//! Within bounds: a `Retry-After: 0` would switch the breaker off and a huge one hold it open
//! for a day, so the time is clamped to
//! [`hinted_open_range`](crate::CircuitBreakerConfig::hinted_open_range), by default at least
//! 1 s and at most the open backoff's cap (or 10 × the fixed open duration).

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

/// Reads, from a call's result, how long the breaker should stay open if that result trips it.
pub trait RetryAfter<Res, E>: Send + Sync + 'static {
    /// The open duration the result asks for, if any.
    fn retry_after(&self, result: Result<&Res, &E>) -> Option<Duration>;
}

/// Never reads an open duration from results: the configured one applies. The default.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRetryAfter;

impl<Res, E> RetryAfter<Res, E> for NoRetryAfter {
    #[inline]
    fn retry_after(&self, _result: Result<&Res, &E>) -> Option<Duration> {
        None
    }
}

/// Reads the open duration with a closure over the result.
///
/// ```
/// use std::time::Duration;
/// use seawall_circuit_breaker::{RetryAfter, RetryAfterFn};
///
/// // An error that says how long the downstream is down for.
/// let read = RetryAfterFn::new(|result: Result<&(), &Duration>| result.err().copied());
/// assert_eq!(read.retry_after(Err(&Duration::from_secs(5))), Some(Duration::from_secs(5)));
/// ```
pub struct RetryAfterFn<F, Res, E> {
    f: F,
    _types: PhantomData<fn(&Res, &E)>,
}

impl<F, Res, E> RetryAfterFn<F, Res, E>
where
    F: Fn(Result<&Res, &E>) -> Option<Duration>,
{
    /// Reads with `f`.
    pub fn new(f: F) -> Self {
        Self {
            f,
            _types: PhantomData,
        }
    }
}

impl<F: Clone, Res, E> Clone for RetryAfterFn<F, Res, E> {
    fn clone(&self) -> Self {
        Self {
            f: self.f.clone(),
            _types: PhantomData,
        }
    }
}

impl<F, Res, E> fmt::Debug for RetryAfterFn<F, Res, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryAfterFn").finish_non_exhaustive()
    }
}

impl<F, Res, E> RetryAfter<Res, E> for RetryAfterFn<F, Res, E>
where
    F: Fn(Result<&Res, &E>) -> Option<Duration> + Send + Sync + 'static,
    Res: 'static,
    E: 'static,
{
    fn retry_after(&self, result: Result<&Res, &E>) -> Option<Duration> {
        (self.f)(result)
    }
}

/// Reads the `Retry-After` header of an HTTP response, in delta-seconds (`Retry-After: 30`).
///
/// An HTTP-date, which would need the wall clock, is ignored and the configured open duration
/// applies.
#[derive(Debug, Clone, Copy, Default)]
pub struct RetryAfterHeader;

impl<B, E> RetryAfter<http::Response<B>, E> for RetryAfterHeader
where
    B: 'static,
    E: 'static,
{
    fn retry_after(&self, result: Result<&http::Response<B>, &E>) -> Option<Duration> {
        let value = result.ok()?.headers().get(http::header::RETRY_AFTER)?;
        let secs = value.to_str().ok()?.trim().parse::<u64>().ok()?;
        Some(Duration::from_secs(secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(retry_after: Option<&'static str>) -> http::Response<()> {
        let mut builder = http::Response::builder().status(503);
        if let Some(value) = retry_after {
            builder = builder.header("retry-after", value);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn reads_delta_seconds_only() {
        let read = |r| RetryAfter::<_, ()>::retry_after(&RetryAfterHeader, Ok(&response(r)));
        assert_eq!(read(Some("30")), Some(Duration::from_secs(30)));
        assert_eq!(read(Some(" 7 ")), Some(Duration::from_secs(7)));
        assert_eq!(read(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(read(Some("-1")), None);
        assert_eq!(read(None), None);
    }
}
