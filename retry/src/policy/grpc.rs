use std::error::Error;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Request, Response, StatusCode};
use seawall_core::grpc::RETRY_PUSHBACK_MS;
use seawall_core::{BoxError, RejectionKind, rejected};
use tonic::{Code, ConnectError, Status};

use super::http::clone_http_request;
use super::{RetryPolicy, Verdict, rejection_verdict};
use seawall_core::body::TryCloneBody;

/// Retries the gRPC methods you mark idempotent when they end with chosen codes
/// (`UNAVAILABLE` by default), honouring `grpc-retry-pushback-ms`.
///
/// Every gRPC call is a `POST`, so nothing in a request says whether sending it twice is safe:
/// no method is retried until it is marked, by its full path
/// ([`with_method`](Self::with_method)`("/shop.Catalog/GetProduct")`) or by a predicate on
/// the path ([`with_methods`](Self::with_methods)). A call to an unmarked method is sent once
/// and its request never copied.
///
/// The code is read from the headers of a trailers-only response, from a `tonic::Status` in
/// an error's source chain, or from the HTTP status of a proxy's answer (`429`, `502`, `503`
/// and `504` mean `UNAVAILABLE`, as in gRPC's HTTP mapping). An attempt that timed out may
/// have run: it counts as `DEADLINE_EXCEEDED`, retried only when that code is listed. Any
/// other error is a transport failure, retried (as `UNAVAILABLE`) only when the call provably
/// never left: the connection was never made (a `tonic::ConnectError` or a refused TCP
/// connection in the source chain), or the server refused the stream before processing it
/// (an HTTP/2 `REFUSED_STREAM`). A reset or a dropped connection mid-call is not retried. A
/// response whose status comes in trailers has begun streaming to the caller and is not
/// retried.
///
/// As gRPC's retry design (A6) says, a pushback of `n ≥ 0` milliseconds is the shortest wait
/// before the retry, and a negative or malformed one means the server asks for no retry.
///
/// ```
/// use seawall_retry::GrpcPolicy;
/// use tonic::Code;
///
/// let policy = GrpcPolicy::new()
///     .with_method("/shop.Catalog/GetProduct")
///     .with_methods(|path| path.starts_with("/shop.Catalog/List"))
///     .with_code(Code::DeadlineExceeded);
/// assert!(policy.retries_method("/shop.Catalog/ListProducts"));
/// assert!(!policy.retries_method("/shop.Orders/PlaceOrder"));
/// ```
#[derive(Clone)]
pub struct GrpcPolicy {
    codes: u32,
    methods: Vec<Box<str>>,
    predicate: Option<MethodPredicate>,
}

type MethodPredicate = Arc<dyn Fn(&str) -> bool + Send + Sync>;

const fn bit(code: Code) -> u32 {
    1 << (code as i32 as u32)
}

impl Default for GrpcPolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl GrpcPolicy {
    /// Retries `UNAVAILABLE`, for the methods marked idempotent (none yet).
    pub const fn new() -> Self {
        Self {
            codes: bit(Code::Unavailable),
            methods: Vec::new(),
            predicate: None,
        }
    }

    /// Retries exactly the codes in `codes`, for the methods marked idempotent (none yet).
    pub fn codes(codes: impl IntoIterator<Item = Code>) -> Self {
        Self {
            codes: codes.into_iter().fold(0, |bits, code| bits | bit(code)),
            methods: Vec::new(),
            predicate: None,
        }
    }

    /// Also retries `code`.
    #[must_use]
    pub fn with_code(mut self, code: Code) -> Self {
        self.codes |= bit(code);
        self
    }

    /// Marks the method at `path` (`/package.Service/Method`) idempotent: its calls may be
    /// retried.
    #[must_use]
    pub fn with_method(mut self, path: impl Into<String>) -> Self {
        self.methods.push(path.into().into_boxed_str());
        self
    }

    /// Marks idempotent every method whose path (`/package.Service/Method`) `idempotent`
    /// accepts, in addition to those marked one by one.
    #[must_use]
    pub fn with_methods(
        mut self,
        idempotent: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.predicate = Some(Arc::new(idempotent));
        self
    }

    /// Whether a call that ended with `code` is retried.
    pub const fn retries(&self, code: Code) -> bool {
        self.codes & bit(code) != 0
    }

    /// Whether calls to the method at `path` may be retried.
    pub fn retries_method(&self, path: &str) -> bool {
        self.methods.iter().any(|method| **method == *path)
            || self
                .predicate
                .as_ref()
                .is_some_and(|idempotent| idempotent(path))
    }

    fn verdict(&self, code: Code, metadata: &HeaderMap) -> Verdict {
        if code == Code::Ok {
            return Verdict::Success;
        }
        if !self.retries(code) {
            return Verdict::Failure;
        }
        // As seawall-core's `GrpcCodes` counts them: `RESOURCE_EXHAUSTED`, and any code with a
        // pushback, are the server asking for less load.
        match metadata.get(RETRY_PUSHBACK_MS) {
            None if code == Code::ResourceExhausted => Verdict::OVERLOADED,
            None => Verdict::RETRY,
            Some(value) => match parse_pushback(value.as_bytes()) {
                Some(ms) => Verdict::Overloaded {
                    not_before: Some(Duration::from_millis(ms)),
                },
                None => Verdict::Failure,
            },
        }
    }

    /// The verdict on a response with `status` and `headers`.
    pub fn judge_response(&self, status: StatusCode, headers: &HeaderMap) -> Verdict {
        if status != StatusCode::OK {
            let code = match status.as_u16() {
                429 | 502 | 503 | 504 => Code::Unavailable,
                _ => Code::Unknown,
            };
            return self.verdict(code, headers);
        }
        match headers.get("grpc-status") {
            Some(value) => {
                let code = std::str::from_utf8(value.as_bytes())
                    .ok()
                    .and_then(|s| s.parse::<i32>().ok())
                    .map_or(Code::Unknown, Code::from_i32);
                self.verdict(code, headers)
            }
            None => Verdict::Success,
        }
    }

    /// The verdict on an attempt that failed with `err`.
    pub fn judge_error(&self, err: &BoxError) -> Verdict {
        if let Some(rejection) = rejected(&**err) {
            return match rejection.kind() {
                // The attempt may have run on the server: the code a client would see.
                RejectionKind::TimedOut => self.verdict(Code::DeadlineExceeded, &HeaderMap::new()),
                // Standing in for a downstream's failure, answered as UNAVAILABLE.
                RejectionKind::Injected => self.verdict(Code::Unavailable, &HeaderMap::new()),
                _ => rejection_verdict(err).unwrap_or(Verdict::Failure),
            };
        }
        if let Some(status) = find::<Status>(err) {
            return self.verdict(status.code(), status.metadata().as_ref());
        }
        if never_sent(err) {
            self.verdict(Code::Unavailable, &HeaderMap::new())
        } else {
            Verdict::Failure
        }
    }
}

/// A pushback in milliseconds; `None` for a negative or malformed one.
fn parse_pushback(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 12 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

fn chain(err: &BoxError) -> impl Iterator<Item = &(dyn Error + 'static)> {
    std::iter::successors(Some(&**err as &(dyn Error + 'static)), |err| {
        (*err).source()
    })
}

fn find<T: Error + 'static>(err: &BoxError) -> Option<&T> {
    chain(err).find_map(|err| err.downcast_ref::<T>())
}

/// Whether `err` shows that the request never reached the server's application: the
/// connection was never made, or the server refused the stream before processing it.
fn never_sent(err: &BoxError) -> bool {
    chain(err).any(|err| {
        err.is::<ConnectError>()
            || err
                .downcast_ref::<h2::Error>()
                .is_some_and(|h2| h2.reason() == Some(h2::Reason::REFUSED_STREAM))
            || err
                .downcast_ref::<io::Error>()
                .is_some_and(|io| io.kind() == io::ErrorKind::ConnectionRefused)
    })
}

impl<B, ResB> RetryPolicy<Request<B>, Response<ResB>> for GrpcPolicy
where
    B: TryCloneBody,
{
    fn clone_request(&self, req: &Request<B>) -> Option<Request<B>> {
        if !self.retries_method(req.uri().path()) {
            return None;
        }
        clone_http_request(req)
    }

    fn judge(&self, result: Result<&Response<ResB>, &BoxError>) -> Verdict {
        match result {
            Ok(res) => self.judge_response(res.status(), res.headers()),
            Err(err) => self.judge_error(err),
        }
    }

    fn authority<'a>(&self, req: &'a Request<B>) -> Option<&'a str> {
        super::http::authority(req)
    }
}

impl fmt::Debug for GrpcPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let codes: Vec<Code> = (0..=16)
            .map(Code::from_i32)
            .filter(|code| self.retries(*code))
            .collect();
        f.debug_struct("GrpcPolicy")
            .field("codes", &codes)
            .field("methods", &self.methods)
            .field("predicate", &self.predicate.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn trailers_only(code: Code, pushback: Option<&'static str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", HeaderValue::from((code as i32) as u16));
        if let Some(p) = pushback {
            headers.insert(RETRY_PUSHBACK_MS, HeaderValue::from_static(p));
        }
        headers
    }

    #[test]
    fn unavailable_is_retried_by_default() {
        let policy = GrpcPolicy::new();
        let judge =
            |code, pushback| policy.judge_response(StatusCode::OK, &trailers_only(code, pushback));
        assert_eq!(judge(Code::Ok, None), Verdict::Success);
        assert_eq!(judge(Code::Unavailable, None), Verdict::RETRY);
        assert_eq!(judge(Code::Internal, None), Verdict::Failure);
        assert_eq!(
            judge(Code::Unavailable, Some("250")),
            Verdict::Overloaded {
                not_before: Some(Duration::from_millis(250))
            },
            "a pushback asks for less load"
        );
        assert_eq!(judge(Code::Unavailable, Some("-1")), Verdict::Failure);
        assert_eq!(judge(Code::Unavailable, Some("soon")), Verdict::Failure);
        assert_eq!(
            policy.judge_response(StatusCode::OK, &HeaderMap::new()),
            Verdict::Success,
            "a status still to come in trailers"
        );
        assert_eq!(
            policy.judge_response(StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new()),
            Verdict::RETRY
        );
    }

    #[test]
    fn the_code_set_is_configurable() {
        let policy = GrpcPolicy::codes([Code::ResourceExhausted, Code::Aborted]);
        assert!(policy.retries(Code::Aborted));
        let judge = |code| policy.judge_response(StatusCode::OK, &trailers_only(code, None));
        assert_eq!(judge(Code::ResourceExhausted), Verdict::OVERLOADED);
        assert_eq!(judge(Code::Aborted), Verdict::RETRY);
        assert!(!policy.retries(Code::Unavailable));
        assert!(
            GrpcPolicy::new()
                .with_code(Code::Aborted)
                .retries(Code::Aborted)
        );
    }

    #[test]
    fn the_authority_is_the_uris() {
        let req = Request::post("http://catalog:50051/shop.Catalog/GetProduct")
            .body(())
            .unwrap();
        let authority = RetryPolicy::<_, Response<()>>::authority(&GrpcPolicy::new(), &req);
        assert_eq!(authority, Some("catalog:50051"));
    }

    #[test]
    fn no_method_is_retried_until_marked() {
        let get = Request::post("http://shop/shop.Catalog/GetProduct")
            .body(())
            .unwrap();
        let place = Request::post("http://shop/shop.Orders/PlaceOrder")
            .body(())
            .unwrap();
        let clone = |policy: &GrpcPolicy, req: &Request<()>| {
            RetryPolicy::<_, Response<()>>::clone_request(policy, req).is_some()
        };
        assert!(!clone(&GrpcPolicy::new(), &get), "nothing marked");

        let one = GrpcPolicy::new().with_method("/shop.Catalog/GetProduct");
        assert!(clone(&one, &get));
        assert!(!clone(&one, &place));
        assert!(
            !one.retries_method("/shop.Catalog/GetProductX"),
            "exact paths"
        );

        let by_service = GrpcPolicy::new().with_methods(|path| path.starts_with("/shop.Catalog/"));
        assert!(clone(&by_service, &get));
        assert!(!clone(&by_service, &place));
    }

    #[test]
    fn errors_are_judged_by_their_status() {
        let policy = GrpcPolicy::new();
        let unavailable: BoxError = Box::new(Status::unavailable("down"));
        assert_eq!(policy.judge_error(&unavailable), Verdict::RETRY);
        let not_found: BoxError = Box::new(Status::not_found("nope"));
        assert_eq!(policy.judge_error(&not_found), Verdict::Failure);
    }

    #[test]
    fn an_attempt_timeout_is_deadline_exceeded_retried_only_when_listed() {
        let timed_out: BoxError =
            seawall_core::Rejected::new(RejectionKind::TimedOut, "attempt").into();
        assert_eq!(GrpcPolicy::new().judge_error(&timed_out), Verdict::Failure);
        assert_eq!(
            GrpcPolicy::codes([]).judge_error(&timed_out),
            Verdict::Failure
        );
        let listed = GrpcPolicy::new().with_code(Code::DeadlineExceeded);
        assert_eq!(listed.judge_error(&timed_out), Verdict::RETRY);
        let callers: BoxError =
            seawall_core::Rejected::new(RejectionKind::DeadlineExceeded, "attempt").into();
        assert_eq!(
            listed.judge_error(&callers),
            Verdict::Failure,
            "the caller's own deadline never"
        );
    }

    /// An error with `source` as its cause, as transports wrap theirs.
    #[derive(Debug)]
    struct Wrapped(BoxError);

    impl fmt::Display for Wrapped {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("transport error")
        }
    }

    impl Error for Wrapped {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.0)
        }
    }

    #[test]
    fn a_transport_error_is_retried_only_when_the_call_never_left() {
        let policy = GrpcPolicy::new();
        let wrap = |err: BoxError| -> BoxError { Box::new(Wrapped(err)) };
        let judge = |err: BoxError| policy.judge_error(&wrap(err));
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(
            judge(Box::new(ConnectError(Box::new(refused)))),
            Verdict::RETRY
        );
        assert_eq!(
            judge(Box::new(io::Error::from(io::ErrorKind::ConnectionRefused))),
            Verdict::RETRY
        );
        assert_eq!(
            judge(Box::new(h2::Error::from(h2::Reason::REFUSED_STREAM))),
            Verdict::RETRY
        );

        let sent = [
            Box::new(io::Error::from(io::ErrorKind::ConnectionReset)) as BoxError,
            Box::new(h2::Error::from(h2::Reason::CANCEL)),
            Box::new(h2::Error::from(h2::Reason::INTERNAL_ERROR)),
            "connection closed before message completed".into(),
        ];
        for err in sent {
            let shown = err.to_string();
            assert_eq!(judge(err), Verdict::Failure, "{shown}");
        }
        assert_eq!(
            GrpcPolicy::codes([Code::Internal])
                .judge_error(&wrap(Box::new(h2::Error::from(h2::Reason::REFUSED_STREAM)))),
            Verdict::Failure,
            "a call that never left counts as UNAVAILABLE, retried only when listed"
        );
    }
}
