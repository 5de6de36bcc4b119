use std::ops::RangeInclusive;

use http::{Response, StatusCode};

use super::{Classified, Classify, Outcome, Report};

/// Classifies HTTP responses by status code; any error is a failure.
///
/// By default every 5xx status is a failure and everything else a success. `429 Too Many
/// Requests` says the caller is over its quota, not that the downstream is sick, so it counts
/// only when asked for with [`with_too_many_requests`](Self::with_too_many_requests).
///
/// ```
/// use http::{Response, StatusCode};
/// use seawall_core::classify::{Classified, Classify, HttpStatus, Outcome};
///
/// let classify = HttpStatus::server_errors().ignoring(StatusCode::NOT_IMPLEMENTED);
/// let res = Response::builder().status(503).body(()).unwrap();
/// assert_eq!(Classify::<_, ()>::classify(&classify, Ok(&res)), Classified::Now(Outcome::Failure));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpStatus {
    failures: StatusSet,
    ignored: StatusSet,
}

impl Default for HttpStatus {
    fn default() -> Self {
        Self::server_errors()
    }
}

impl HttpStatus {
    /// Every 5xx status is a failure.
    pub fn server_errors() -> Self {
        Self {
            failures: StatusSet::EMPTY.with_range(500..=599),
            ignored: StatusSet::EMPTY,
        }
    }

    /// Also counts `429 Too Many Requests` as a failure.
    #[must_use]
    pub fn with_too_many_requests(self) -> Self {
        self.with_failure(StatusCode::TOO_MANY_REQUESTS)
    }

    /// Also counts `status` as a failure.
    #[must_use]
    pub fn with_failure(mut self, status: StatusCode) -> Self {
        let code = status.as_u16();
        self.failures = self.failures.with_range(code..=code);
        self.ignored = self.ignored.without(code);
        self
    }

    /// Counts every status in `range` as a failure.
    #[must_use]
    pub fn with_failure_range(mut self, range: RangeInclusive<u16>) -> Self {
        self.failures = self.failures.with_range(range);
        self
    }

    /// Counts `status` as neither success nor failure.
    #[must_use]
    pub fn ignoring(mut self, status: StatusCode) -> Self {
        let code = status.as_u16();
        self.ignored = self.ignored.with_range(code..=code);
        self.failures = self.failures.without(code);
        self
    }

    /// The outcome of a response with `status`.
    pub fn outcome(&self, status: StatusCode) -> Outcome {
        let code = status.as_u16();
        if self.failures.contains(code) {
            Outcome::Failure
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

    fn watch<R: Report>(&self, response: Response<B>, _report: Option<R>) -> Response<B> {
        response
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
        assert_eq!(outcome(&c, 599), Outcome::Failure);
        assert_eq!(outcome(&c, 200), Outcome::Success);
        assert_eq!(outcome(&c, 404), Outcome::Success);
        assert_eq!(outcome(&c, 429), Outcome::Success);
    }

    #[test]
    fn too_many_requests_counts_when_asked() {
        assert_eq!(
            outcome(&HttpStatus::default().with_too_many_requests(), 429),
            Outcome::Failure
        );
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
