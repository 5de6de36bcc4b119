use std::ops::RangeInclusive;

use http::{Response, StatusCode};

use super::{Classified, Classify, EndpointFault, Outcome, Report, discard};

/// Classifies HTTP responses by status code; any error is a failure.
///
/// By default every 5xx status but `503` is a failure, `429 Too Many Requests` and `503
/// Service Unavailable` are [`Outcome::Overload`] (with or without a `Retry-After`), and
/// everything else is a success. A `429` says the caller is over its quota and a `503` that
/// the server sheds load (RFC 9110 §15.6.4): the downstream is up and asks for less, which
/// throttling and backoff answer and a circuit breaker should not. Each status can be moved
/// to any class: [`with_failure`](Self::with_failure), [`with_overload`](Self::with_overload),
/// [`with_success`](Self::with_success), [`ignoring`](Self::ignoring).
///
/// ```
/// use http::{Response, StatusCode};
/// use seawall_core::classify::{Classified, Classify, HttpStatus, Outcome};
///
/// let classify = HttpStatus::server_errors().ignoring(StatusCode::NOT_IMPLEMENTED);
/// let outcome = |code: u16| {
///     let res = Response::builder().status(code).body(()).unwrap();
///     Classify::<_, ()>::classify(&classify, Ok(&res))
/// };
/// assert_eq!(outcome(502), Classified::Now(Outcome::Failure));
/// assert_eq!(outcome(503), Classified::Now(Outcome::Overload));
/// assert_eq!(outcome(429), Classified::Now(Outcome::Overload));
///
/// // A proxy whose 503 means "no upstream left": count it as a failure.
/// let strict = HttpStatus::server_errors().with_failure(StatusCode::SERVICE_UNAVAILABLE);
/// assert_eq!(strict.outcome(StatusCode::SERVICE_UNAVAILABLE), Outcome::Failure);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpStatus {
    failures: StatusSet,
    overload: StatusSet,
    ignored: StatusSet,
}

impl Default for HttpStatus {
    fn default() -> Self {
        Self::server_errors()
    }
}

impl HttpStatus {
    /// Every 5xx status but `503` is a failure; `429` and `503` are overload.
    pub fn server_errors() -> Self {
        let overload = StatusSet::EMPTY.with_range(429..=429).with_range(503..=503);
        Self {
            failures: StatusSet::EMPTY.with_range(500..=599).without_set(overload),
            overload,
            ignored: StatusSet::EMPTY,
        }
    }

    /// Counts `429 Too Many Requests` as a failure.
    #[must_use]
    pub fn with_too_many_requests(self) -> Self {
        self.with_failure(StatusCode::TOO_MANY_REQUESTS)
    }

    /// Counts `status` as a failure.
    #[must_use]
    pub fn with_failure(self, status: StatusCode) -> Self {
        let code = status.as_u16();
        self.with_failure_range(code..=code)
    }

    /// Counts every status in `range` as a failure.
    #[must_use]
    pub fn with_failure_range(mut self, range: RangeInclusive<u16>) -> Self {
        let set = StatusSet::EMPTY.with_range(range);
        self.failures = self.failures.with_set(set);
        self.overload = self.overload.without_set(set);
        self.ignored = self.ignored.without_set(set);
        self
    }

    /// Counts `status` as [`Outcome::Overload`]: the downstream asks for less load.
    #[must_use]
    pub fn with_overload(mut self, status: StatusCode) -> Self {
        let code = status.as_u16();
        self.overload = self.overload.with_range(code..=code);
        self.failures = self.failures.without(code);
        self.ignored = self.ignored.without(code);
        self
    }

    /// Counts `status` as a success.
    #[must_use]
    pub fn with_success(mut self, status: StatusCode) -> Self {
        let code = status.as_u16();
        self.failures = self.failures.without(code);
        self.overload = self.overload.without(code);
        self.ignored = self.ignored.without(code);
        self
    }

    /// Counts `status` as neither success nor failure.
    #[must_use]
    pub fn ignoring(mut self, status: StatusCode) -> Self {
        let code = status.as_u16();
        self.ignored = self.ignored.with_range(code..=code);
        self.failures = self.failures.without(code);
        self.overload = self.overload.without(code);
        self
    }

    /// The outcome of a response with `status`.
    pub fn outcome(&self, status: StatusCode) -> Outcome {
        let code = status.as_u16();
        if self.failures.contains(code) {
            Outcome::Failure
        } else if self.overload.contains(code) {
            Outcome::Overload
        } else if self.ignored.contains(code) {
            Outcome::Ignored
        } else {
            Outcome::Success
        }
    }
}

impl<B, E> Classify<Response<B>, E> for HttpStatus
where
    B: 'static,
    E: 'static,
{
    type Response<R: Report> = Response<B>;

    fn classify(&self, result: Result<&Response<B>, &E>) -> Classified {
        Classified::Now(match result {
            Ok(response) => self.outcome(response.status()),
            Err(_) => Outcome::Failure,
        })
    }

    #[inline(always)]
    fn watch<R: Report>(&self, response: Response<B>, report: Option<R>) -> Response<B> {
        discard(report);
        response
    }

    fn mark_endpoint_fault(&self, response: &mut Response<B>) {
        mark_endpoint_fault(response);
    }

    fn has_endpoint_fault(&self, response: &Response<B>) -> bool {
        has_endpoint_fault(response)
    }
}

/// Puts [`EndpointFault`] in `response`'s extensions (their map is allocated on the first
/// insert: a marked failure costs that allocation, a success nothing).
pub(crate) fn mark_endpoint_fault<B>(response: &mut Response<B>) {
    response.extensions_mut().insert(EndpointFault);
}

/// Whether `response` carries [`EndpointFault`].
pub(crate) fn has_endpoint_fault<B>(response: &Response<B>) -> bool {
    response.extensions().get::<EndpointFault>().is_some()
}

/// What `HttpStatus::server_errors()` says of `status`, without building its sets.
pub(crate) fn server_error_outcome(status: StatusCode) -> Outcome {
    match status.as_u16() {
        429 | 503 => Outcome::Overload,
        500..=599 => Outcome::Failure,
        _ => Outcome::Success,
    }
}

/// A set of status codes 100..=999, one bit each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StatusSet([u64; 15]);

impl StatusSet {
    const EMPTY: Self = Self([0; 15]);

    fn with_range(mut self, range: RangeInclusive<u16>) -> Self {
        for code in range.filter(|c| (100..=999).contains(c)) {
            let bit = usize::from(code - 100);
            self.0[bit / 64] |= 1 << (bit % 64);
        }
        self
    }

    fn with_set(mut self, other: Self) -> Self {
        for (word, bits) in self.0.iter_mut().zip(other.0) {
            *word |= bits;
        }
        self
    }

    fn without_set(mut self, other: Self) -> Self {
        for (word, bits) in self.0.iter_mut().zip(other.0) {
            *word &= !bits;
        }
        self
    }

    fn without(mut self, code: u16) -> Self {
        if (100..=999).contains(&code) {
            let bit = usize::from(code - 100);
            self.0[bit / 64] &= !(1 << (bit % 64));
        }
        self
    }

    fn contains(&self, code: u16) -> bool {
        if !(100..=999).contains(&code) {
            return false;
        }
        let bit = usize::from(code - 100);
        self.0[bit / 64] & (1 << (bit % 64)) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::tests::Collect;

    fn status(code: u16) -> Response<()> {
        Response::builder().status(code).body(()).unwrap()
    }

    fn outcome(c: &HttpStatus, code: u16) -> Outcome {
        let c2 = Collect::default();
        let _ = Classify::<_, ()>::report(c, Ok(status(code)), c2.clone());
        c2.outcomes()[0]
    }

    #[test]
    fn server_errors_fail_and_the_rest_succeed() {
        let c = HttpStatus::default();
        assert_eq!(outcome(&c, 500), Outcome::Failure);
        assert_eq!(outcome(&c, 502), Outcome::Failure);
        assert_eq!(outcome(&c, 599), Outcome::Failure);
        assert_eq!(outcome(&c, 200), Outcome::Success);
        assert_eq!(outcome(&c, 404), Outcome::Success);
    }

    #[test]
    fn too_many_requests_and_service_unavailable_are_overload() {
        let c = HttpStatus::default();
        assert_eq!(outcome(&c, 429), Outcome::Overload);
        assert_eq!(outcome(&c, 503), Outcome::Overload);
        let with_retry_after = Response::builder()
            .status(503)
            .header("retry-after", "2")
            .body(())
            .unwrap();
        assert_eq!(
            Classify::<_, ()>::classify(&c, Ok(&with_retry_after)),
            Classified::Now(Outcome::Overload)
        );
    }

    #[test]
    fn every_status_can_move_to_any_class() {
        let c = HttpStatus::default()
            .with_too_many_requests()
            .with_success(StatusCode::SERVICE_UNAVAILABLE)
            .with_overload(StatusCode::BAD_GATEWAY);
        assert_eq!(outcome(&c, 429), Outcome::Failure);
        assert_eq!(outcome(&c, 503), Outcome::Success);
        assert_eq!(outcome(&c, 502), Outcome::Overload);
        assert_eq!(
            outcome(&c.ignoring(StatusCode::BAD_GATEWAY), 502),
            Outcome::Ignored
        );
        let all_failures = HttpStatus::default().with_failure_range(500..=599);
        assert_eq!(outcome(&all_failures, 503), Outcome::Failure);
        assert_eq!(outcome(&all_failures, 429), Outcome::Overload);
    }

    #[test]
    fn ignored_statuses_count_for_nothing() {
        let c = HttpStatus::default().ignoring(StatusCode::NOT_IMPLEMENTED);
        assert_eq!(outcome(&c, 501), Outcome::Ignored);
        assert_eq!(
            outcome(&c.with_failure(StatusCode::NOT_IMPLEMENTED), 501),
            Outcome::Failure
        );
    }

    #[test]
    fn the_default_outcome_is_server_errors_without_its_sets() {
        let c = HttpStatus::server_errors();
        for code in 100..=999 {
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(server_error_outcome(status), c.outcome(status), "{code}");
        }
    }

    #[test]
    fn errors_are_failures() {
        let c = Collect::default();
        let _ = HttpStatus::default().report(Err::<Response<()>, _>("io"), c.clone());
        assert_eq!(c.outcomes(), [Outcome::Failure]);
    }

    #[test]
    fn ranges_cover_their_ends() {
        let c = HttpStatus::server_errors().with_failure_range(400..=403);
        assert_eq!(outcome(&c, 400), Outcome::Failure);
        assert_eq!(outcome(&c, 403), Outcome::Failure);
        assert_eq!(outcome(&c, 404), Outcome::Success);
    }
}
