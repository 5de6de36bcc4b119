use std::fmt;
use std::time::Duration;

use http::{HeaderMap, Request, Response, StatusCode};
use seawall_core::BoxError;
use seawall_core::grpc::RETRY_PUSHBACK_MS;
use tonic::{Code, Status};

use super::http::clone_http_request;
use super::{RetryPolicy, Verdict, rejection_verdict};
use seawall_core::body::TryCloneBody;

/// Retries gRPC calls that end with chosen codes (`UNAVAILABLE` by default), honouring
/// `grpc-retry-pushback-ms`.
///
/// The code is read from the headers of a trailers-only response, from a `tonic::Status` in
/// an error's source chain, or from the HTTP status of a proxy's answer (`429`, `502`, `503`
/// and `504` mean `UNAVAILABLE`, as in gRPC's HTTP mapping); any other error is a transport
/// failure and counts as `UNAVAILABLE`. A response whose status comes in trailers has begun
/// streaming to the caller and is not retried.
///
/// As gRPC's retry design (A6) says, a pushback of `n ≥ 0` milliseconds is the shortest wait
/// before the retry, and a negative or malformed one means the server asks for no retry.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct GrpcPolicy {
    codes: u32,
}

const fn bit(code: Code) -> u32 {
    1 << (code as i32 as u32)
}

impl Default for GrpcPolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl GrpcPolicy {
    /// Retries `UNAVAILABLE`.
    pub const fn new() -> Self {
        Self {
            codes: bit(Code::Unavailable),
        }
    }

    /// Retries exactly the codes in `codes`.
    pub fn codes(codes: impl IntoIterator<Item = Code>) -> Self {
        Self {
            codes: codes.into_iter().fold(0, |bits, code| bits | bit(code)),
        }
    }

    /// Also retries `code`.
    #[must_use]
    pub const fn with_code(mut self, code: Code) -> Self {
        self.codes |= bit(code);
        self
    }

    /// Whether a call that ended with `code` is retried.
    pub const fn retries(&self, code: Code) -> bool {
        self.codes & bit(code) != 0
    }

    fn verdict(&self, code: Code, metadata: &HeaderMap) -> Verdict {
        if code == Code::Ok {
            return Verdict::Success;
        }
        if !self.retries(code) {
            return Verdict::Failure;
        }
        match metadata.get(RETRY_PUSHBACK_MS) {
            None => Verdict::RETRY,
            Some(value) => match parse_pushback(value.as_bytes()) {
                Some(ms) => Verdict::Retry {
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

    fn judge_error(&self, err: &BoxError) -> Verdict {
        if let Some(verdict) = rejection_verdict(err) {
            return verdict;
        }
        match find_status(err) {
            Some(status) => self.verdict(status.code(), status.metadata().as_ref()),
            None => self.verdict(Code::Unavailable, &HeaderMap::new()),
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

fn find_status(err: &BoxError) -> Option<&Status> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(&**err);
    while let Some(err) = next {
        if let Some(status) = err.downcast_ref::<Status>() {
            return Some(status);
        }
        next = err.source();
    }
    None
}

impl<B, ResB> RetryPolicy<Request<B>, Response<ResB>> for GrpcPolicy
where
    B: TryCloneBody,
    ResB: 'static,
{
    fn clone_request(&self, req: &Request<B>) -> Option<Request<B>> {
        clone_http_request(req)
    }

    fn judge(&self, result: Result<&Response<ResB>, &BoxError>) -> Verdict {
        match result {
            Ok(res) => self.judge_response(res.status(), res.headers()),
            Err(err) => self.judge_error(err),
        }
    }
}

impl fmt::Debug for GrpcPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let codes: Vec<Code> = (0..=16)
            .map(Code::from_i32)
            .filter(|code| self.retries(*code))
            .collect();
        f.debug_struct("GrpcPolicy").field("codes", &codes).finish()
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
            Verdict::Retry {
                not_before: Some(Duration::from_millis(250))
            }
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
        assert!(!policy.retries(Code::Unavailable));
        assert!(
            GrpcPolicy::new()
                .with_code(Code::Aborted)
                .retries(Code::Aborted)
        );
    }

    #[test]
    fn errors_are_judged_by_their_status() {
        let policy = GrpcPolicy::new();
        let unavailable: BoxError = Box::new(Status::unavailable("down"));
        assert_eq!(policy.judge_error(&unavailable), Verdict::RETRY);
        let not_found: BoxError = Box::new(Status::not_found("nope"));
        assert_eq!(policy.judge_error(&not_found), Verdict::Failure);
        let transport: BoxError = "connection refused".into();
        assert_eq!(policy.judge_error(&transport), Verdict::RETRY);
    }
}
