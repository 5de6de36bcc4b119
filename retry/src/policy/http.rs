use std::time::{Duration, SystemTime};

use http::header::RETRY_AFTER;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use seawall_core::BoxError;
pub use seawall_core::body::clone_http_request;
use seawall_core::body::{IDEMPOTENT_METHODS, TryCloneBody, is_idempotent_method};
use seawall_core::classify::{HttpStatus, Outcome};

use super::{DefaultPolicy, RetryPolicy, Verdict, rejection_verdict};

/// Retries idempotent HTTP requests on server errors, `429` and transport errors, honouring
/// `Retry-After`.
///
/// By default only `GET`, `HEAD`, `OPTIONS`, `PUT` and `DELETE` are retried (a `POST` may
/// have taken effect before it failed), on every 5xx but `501 Not Implemented` and
/// `505`, on `429 Too Many Requests`, and on errors (a refused connection, a reset). A
/// `Retry-After` on a `429` or `503`, in seconds or as an HTTP-date, is the shortest wait
/// before the retry; one longer than the layer's `max_delay` ends the retries at once. A `429`
/// or `503` is an overload refusal ([`Verdict::Overloaded`]): its retry waits a random part of
/// half the time the call has left, not only the backoff.
///
/// The request body must be replayable ([`TryCloneBody`]): wrap bodies of any type with
/// [`ReplayBodyLayer`](crate::ReplayBodyLayer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpPolicy {
    retried: HttpStatus,
    methods: u16,
}

const METHODS: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::OPTIONS,
    Method::PUT,
    Method::DELETE,
    Method::TRACE,
    Method::POST,
    Method::PATCH,
    Method::CONNECT,
];

fn method_bit(method: &Method) -> u16 {
    METHODS
        .iter()
        .position(|m| m == method)
        .map_or(0, |i| 1 << i)
}

impl Default for HttpPolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpPolicy {
    /// Idempotent methods on 5xx (but 501 and 505), 429 and errors.
    pub fn new() -> Self {
        Self {
            retried: HttpStatus::server_errors()
                .ignoring(StatusCode::NOT_IMPLEMENTED)
                .ignoring(StatusCode::HTTP_VERSION_NOT_SUPPORTED),
            methods: IDEMPOTENT_METHODS
                .iter()
                .fold(0, |bits, m| bits | method_bit(m)),
        }
    }

    /// Retries the statuses `statuses` calls failures or overload instead (overload as
    /// [`Verdict::Overloaded`]).
    #[must_use]
    pub fn retrying(mut self, statuses: HttpStatus) -> Self {
        self.retried = statuses;
        self
    }

    /// Also retries requests with `method`, for a `POST` made safe by an idempotency key,
    /// say. Only the standard methods can be added.
    #[must_use]
    pub fn with_method(mut self, method: Method) -> Self {
        self.methods |= method_bit(&method);
        self
    }

    /// Whether a request with `method` may be retried.
    pub fn retries_method(&self, method: &Method) -> bool {
        self.methods & method_bit(method) != 0
    }

    /// The verdict on a response with `status` and `headers`.
    pub fn judge_response(&self, status: StatusCode, headers: &HeaderMap) -> Verdict {
        verdict(self.retried.outcome(status), status, headers)
    }
}

/// The verdict on a response with `status` and `headers`, by the outcome its status has.
fn verdict(outcome: Outcome, status: StatusCode, headers: &HeaderMap) -> Verdict {
    let not_before = || match status {
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
            headers.get(RETRY_AFTER).and_then(parse_retry_after)
        }
        _ => None,
    };
    if outcome == Outcome::Overload {
        Verdict::Overloaded {
            not_before: not_before(),
        }
    } else if outcome == Outcome::Failure {
        Verdict::Retry {
            not_before: not_before(),
        }
    } else if status.is_server_error() {
        Verdict::Failure
    } else {
        Verdict::Success
    }
}

/// The outcome `HttpPolicy::new()` gives `status`, without building its status set per call.
fn outcome_by_default(status: StatusCode) -> Outcome {
    match status {
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => Outcome::Overload,
        StatusCode::NOT_IMPLEMENTED | StatusCode::HTTP_VERSION_NOT_SUPPORTED => Outcome::Success,
        _ if status.is_server_error() => Outcome::Failure,
        _ => Outcome::Success,
    }
}

/// For HTTP the default policy is `HttpPolicy::new()`: a `POST` or `PATCH` is never sent twice.
impl<B, ResB> RetryPolicy<Request<B>, Response<ResB>> for DefaultPolicy
where
    B: TryCloneBody,
{
    fn clone_request(&self, req: &Request<B>) -> Option<Request<B>> {
        if !is_idempotent_method(req.method()) {
            return None;
        }
        clone_http_request(req)
    }

    fn judge(&self, result: Result<&Response<ResB>, &BoxError>) -> Verdict {
        match result {
            Ok(res) => verdict(
                outcome_by_default(res.status()),
                res.status(),
                res.headers(),
            ),
            Err(err) => rejection_verdict(err).unwrap_or(Verdict::RETRY),
        }
    }

    fn authority<'a>(&self, req: &'a Request<B>) -> Option<&'a str> {
        authority(req)
    }
}

/// The authority of `req`'s URI, if it names one.
pub(super) fn authority<B>(req: &Request<B>) -> Option<&str> {
    req.uri().authority().map(|a| a.as_str())
}

impl<B, ResB> RetryPolicy<Request<B>, Response<ResB>> for HttpPolicy
where
    B: TryCloneBody,
{
    fn clone_request(&self, req: &Request<B>) -> Option<Request<B>> {
        if !self.retries_method(req.method()) {
            return None;
        }
        clone_http_request(req)
    }

    fn judge(&self, result: Result<&Response<ResB>, &BoxError>) -> Verdict {
        match result {
            Ok(res) => self.judge_response(res.status(), res.headers()),
            Err(err) => rejection_verdict(err).unwrap_or(Verdict::RETRY),
        }
    }

    fn authority<'a>(&self, req: &'a Request<B>) -> Option<&'a str> {
        authority(req)
    }
}

/// Parses a `Retry-After` value: delta-seconds, or an HTTP-date (a date already past is a
/// zero wait). `None` when it is malformed.
pub fn parse_retry_after(value: &HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if !text.is_empty() && text.len() <= 12 && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok().map(Duration::from_secs);
    }
    let date = httpdate::parse_http_date(text).ok()?;
    Some(wall_clock_until(date))
}

/// The one place the retry layer reads wall time: an HTTP-date names a moment on the wall
/// clock, which tokio's clock knows nothing of.
fn wall_clock_until(date: SystemTime) -> Duration {
    date.duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(retry_after: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static(retry_after));
        headers
    }

    #[test]
    fn idempotent_methods_only() {
        let policy = HttpPolicy::new();
        for method in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::PUT,
            Method::DELETE,
        ] {
            assert!(policy.retries_method(&method), "{method}");
        }
        assert!(!policy.retries_method(&Method::POST));
        assert!(!policy.retries_method(&Method::PATCH));
        assert!(!policy.retries_method(&Method::TRACE));
        assert!(
            policy
                .with_method(Method::POST)
                .retries_method(&Method::POST)
        );
        let custom = Method::from_bytes(b"PURGE").unwrap();
        assert!(!policy.with_method(custom.clone()).retries_method(&custom));
    }

    #[test]
    fn the_default_policy_is_http_policy_for_http_requests() {
        let default = DefaultPolicy;
        let http = HttpPolicy::new();
        for method in METHODS
            .iter()
            .cloned()
            .chain([Method::from_bytes(b"PURGE").unwrap()])
        {
            let req = Request::builder()
                .method(method.clone())
                .body(String::from("order"))
                .unwrap();
            let copy = |policy: &dyn RetryPolicy<Request<String>, Response<()>>| {
                policy.clone_request(&req).map(|r| r.into_body())
            };
            assert_eq!(copy(&default), copy(&http), "{method}");
        }
        let post = Request::post("/orders").body(String::new()).unwrap();
        assert!(RetryPolicy::<_, Response<()>>::clone_request(&default, &post).is_none());
        for code in 100..=999 {
            let status = StatusCode::from_u16(code).unwrap();
            for headers in [HeaderMap::new(), headers("2")] {
                let mut res = Response::new(());
                *res.status_mut() = status;
                *res.headers_mut() = headers;
                assert_eq!(
                    RetryPolicy::<Request<String>, _>::judge(&default, Ok(&res)),
                    RetryPolicy::<Request<String>, _>::judge(&http, Ok(&res)),
                    "{code}"
                );
            }
        }
    }

    #[test]
    fn statuses_decide_the_verdict() {
        let policy = HttpPolicy::new();
        let none = HeaderMap::new();
        let judge = |code: u16| policy.judge_response(StatusCode::from_u16(code).unwrap(), &none);
        assert_eq!(judge(200), Verdict::Success);
        assert_eq!(judge(404), Verdict::Success);
        assert_eq!(judge(500), Verdict::RETRY);
        assert_eq!(judge(502), Verdict::RETRY);
        assert_eq!(judge(503), Verdict::OVERLOADED);
        assert_eq!(judge(429), Verdict::OVERLOADED);
        assert_eq!(judge(501), Verdict::Failure);
    }

    #[test]
    fn retry_after_counts_on_429_and_503_only() {
        let policy = HttpPolicy::new();
        let after = Verdict::Overloaded {
            not_before: Some(Duration::from_secs(3)),
        };
        assert_eq!(
            policy.judge_response(StatusCode::SERVICE_UNAVAILABLE, &headers("3")),
            after
        );
        assert_eq!(
            policy.judge_response(StatusCode::TOO_MANY_REQUESTS, &headers("3")),
            after
        );
        assert_eq!(
            policy.judge_response(StatusCode::BAD_GATEWAY, &headers("3")),
            Verdict::RETRY
        );
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        let parse = |s: &str| parse_retry_after(&HeaderValue::from_str(s).unwrap());
        assert_eq!(parse("120"), Some(Duration::from_secs(120)));
        assert_eq!(parse(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        let future = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3600));
        let wait = parse(&future).unwrap();
        assert!(wait > Duration::from_secs(3500) && wait <= Duration::from_secs(3600));
        for bad in ["", "-1", "1.5", "soon", "9999999999999"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
