use std::fmt;

use http::HeaderMap;
use tonic::Code;

use super::Outcome;
use crate::grpc::RETRY_PUSHBACK_MS;

/// Classifies gRPC responses by status code, from the headers of a trailers-only response or
/// from the trailers at the end of the stream.
///
/// By default `UNKNOWN`, `DEADLINE_EXCEEDED`, `INTERNAL`, `UNAVAILABLE` and `DATA_LOSS` are
/// failures, `CANCELLED` counts for nothing and the other codes (the caller's own mistakes,
/// such as `NOT_FOUND` or `INVALID_ARGUMENT`) are successes: they say nothing bad about the
/// server. A non-200 HTTP status or an error is a failure.
///
/// Overload is not failure: `RESOURCE_EXHAUSTED` (a quota, a full queue) and an `UNAVAILABLE`
/// that carries `grpc-retry-pushback-ms` (the server names when to come back, as gRPC's
/// retry design A6 has it) are [`Outcome::Overload`] by default. Any code can be moved to any
/// class with [`with_failure`](Self::with_failure), [`with_overload`](Self::with_overload),
/// [`with_overload_on_pushback`](Self::with_overload_on_pushback),
/// [`with_success`](Self::with_success) and [`ignoring`](Self::ignoring).
///
/// A stream that ends without a `grpc-status` (a proxy or load balancer cut it short), or with
/// one that is not a number, ends as tonic's client reports it: `UNKNOWN`, a failure by default.
///
/// When the status comes in trailers, the response body is wrapped in a [`ReportBody`](super::ReportBody) that
/// reports the outcome once, when the trailers arrive or the stream ends; a body dropped before
/// its end reports [`Outcome::Ignored`].
///
/// ```
/// use seawall_core::classify::{GrpcCodes, Outcome};
/// use tonic::Code;
///
/// let codes = GrpcCodes::new();
/// assert_eq!(codes.outcome(Code::ResourceExhausted), Outcome::Overload);
/// assert_eq!(codes.outcome(Code::Unavailable), Outcome::Failure);
/// assert_eq!(codes.outcome_with_pushback(Code::Unavailable), Outcome::Overload);
/// assert_eq!(
///     codes.with_failure(Code::ResourceExhausted).outcome(Code::ResourceExhausted),
///     Outcome::Failure
/// );
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct GrpcCodes {
    failures: u32,
    overload: u32,
    /// Codes that are overload when they carry a retry pushback, whatever their class.
    pushback: u32,
    ignored: u32,
}

impl Default for GrpcCodes {
    fn default() -> Self {
        Self::new()
    }
}

const fn bit(code: Code) -> u32 {
    1 << (code as i32 as u32)
}

impl GrpcCodes {
    /// The default failure, overload and ignored sets.
    pub const fn new() -> Self {
        Self {
            failures: bit(Code::Unknown)
                | bit(Code::DeadlineExceeded)
                | bit(Code::Internal)
                | bit(Code::Unavailable)
                | bit(Code::DataLoss),
            overload: bit(Code::ResourceExhausted),
            pushback: bit(Code::Unavailable),
            ignored: bit(Code::Cancelled),
        }
    }

    /// Counts `code` as a failure, with or without a retry pushback.
    #[must_use]
    pub const fn with_failure(mut self, code: Code) -> Self {
        self = self.with_success(code);
        self.failures |= bit(code);
        self
    }

    /// Counts `code` as [`Outcome::Overload`]: the server asks for less load.
    #[must_use]
    pub const fn with_overload(mut self, code: Code) -> Self {
        self = self.with_success(code);
        self.overload |= bit(code);
        self
    }

    /// Counts `code` as [`Outcome::Overload`] when it carries `grpc-retry-pushback-ms`, and as
    /// its class says otherwise.
    #[must_use]
    pub const fn with_overload_on_pushback(mut self, code: Code) -> Self {
        self.pushback |= bit(code);
        self
    }

    /// Counts `code` as neither success nor failure.
    #[must_use]
    pub const fn ignoring(mut self, code: Code) -> Self {
        self = self.with_success(code);
        self.ignored |= bit(code);
        self
    }

    /// Counts `code` as a success.
    #[must_use]
    pub const fn with_success(mut self, code: Code) -> Self {
        let b = bit(code);
        self.failures &= !b;
        self.overload &= !b;
        self.pushback &= !b;
        self.ignored &= !b;
        self
    }

    /// The outcome of a call that ended with `code` and no retry pushback.
    pub fn outcome(&self, code: Code) -> Outcome {
        let b = bit(code);
        if self.failures & b != 0 {
            Outcome::Failure
        } else if self.overload & b != 0 {
            Outcome::Overload
        } else if self.ignored & b != 0 {
            Outcome::Ignored
        } else {
            Outcome::Success
        }
    }

    /// The outcome of a call that ended with `code` and a `grpc-retry-pushback-ms`.
    pub fn outcome_with_pushback(&self, code: Code) -> Outcome {
        if self.pushback & bit(code) != 0 {
            Outcome::Overload
        } else {
            self.outcome(code)
        }
    }

    /// The outcome of a call whose status is in `metadata`, if it is there.
    pub(crate) fn outcome_of(&self, metadata: &HeaderMap) -> Option<Outcome> {
        let code = status_of(metadata)?;
        Some(if metadata.contains_key(RETRY_PUSHBACK_MS) {
            self.outcome_with_pushback(code)
        } else {
            self.outcome(code)
        })
    }

    /// The outcome of a stream that ended with `trailers`.
    pub(crate) fn at_end(&self, trailers: Option<&HeaderMap>) -> Outcome {
        trailers
            .and_then(|trailers| self.outcome_of(trailers))
            .unwrap_or_else(|| self.outcome(Code::Unknown))
    }
}

/// The `grpc-status` in `headers`, read as tonic reads it (anything but a known code is
/// `UNKNOWN`).
fn status_of(headers: &HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .map(|status| Code::from_bytes(status.as_bytes()))
}

impl fmt::Debug for GrpcCodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |mask: u32| {
            (0..=16)
                .map(Code::from_i32)
                .filter(move |code| mask & bit(*code) != 0)
        };
        f.debug_struct("GrpcCodes")
            .field("failures", &set(self.failures).collect::<Vec<_>>())
            .field("overload", &set(self.overload).collect::<Vec<_>>())
            .field(
                "overload_on_pushback",
                &set(self.pushback).collect::<Vec<_>>(),
            )
            .field("ignored", &set(self.ignored).collect::<Vec<_>>())
            .finish()
    }
}
