//! Deciding whether a call succeeded, failed, or should count for nothing.
//!
//! Every layer that learns from results (the circuit breaker, retry, adaptive bulkheads,
//! fallback) asks a [`Classify`]. Most results are classified the moment the response future
//! completes. A gRPC response that streams its status in trailers is only known when its body
//! ends: such a classifier wraps the response body and hands the outcome to a [`Report`]
//! exactly once, at the end of the stream or when the body is dropped. Every such body is a
//! `ReportBody` (feature `http`), which sees the end of a body as hyper does: a server stops
//! polling and drops the body as soon as `is_end_stream()` is true.
//!
//! Built-ins: [`AnyError`] (the default), [`ClassifyFn`] for a closure, `HttpStatus` (feature
//! `http`), `GrpcCodes` (feature `grpc`) and [`DefaultClassify`], which judges an
//! `http::Response` by its status and any other response as `AnyError` does.
//!
//! Overload is not failure. A downstream that answers `429 Too Many Requests`, `503 Service
//! Unavailable` (RFC 9110 §15.6.4: "temporary overload or scheduled maintenance") or gRPC
//! `RESOURCE_EXHAUSTED` is up and asks for less load; the classifiers call that
//! [`Outcome::Overload`] by default, and every layer that learns from outcomes treats it as
//! such (see the table on [`Outcome`]). Each classifier lets you say which statuses or codes
//! are failures, overload, successes or nothing:
//!
//! | classifier | failure | overload | ignored |
//! |---|---|---|---|
//! | `AnyError` | every error | — | — |
//! | `HttpStatus` | 5xx but 503, errors | 429, 503 (with or without `Retry-After`) | — |
//! | `GrpcCodes` | `UNKNOWN`, `DEADLINE_EXCEEDED`, `INTERNAL`, `UNAVAILABLE`, `DATA_LOSS`, a non-200 HTTP status, errors | `RESOURCE_EXHAUSTED`; `UNAVAILABLE` with `grpc-retry-pushback-ms` | `CANCELLED` |
//!
//! One endpoint's failure is not its dependency's. An outlier set under a load balancer marks
//! a failure as its endpoint's own while another endpoint of the set succeeds: an
//! [`EndpointFault`] in an `http::Response`'s extensions, an [`EndpointFaultError`] around an
//! error. Classifiers still call it a failure (retry retries it, the outlier set counts it);
//! the circuit breaker counts it for nothing by default, as it does overload: four endpoints
//! of five failing leave the dependency up, and a breaker for the whole set that opened on
//! them would cut off the fifth. Once every endpoint fails, nothing is marked and the breaker
//! sees the outage. [`Classify::mark_endpoint_fault`] and
//! [`Classify::has_endpoint_fault`] put and find the mark for the response types that can carry
//! it (`http::Response` for the built-in classifiers).

#[cfg(feature = "http")]
mod body;
#[cfg(feature = "grpc")]
mod codes;
mod fault;
#[cfg(feature = "grpc")]
mod grpc;
#[cfg(feature = "http")]
mod http;

#[cfg(feature = "http")]
pub use self::body::ReportBody;
#[cfg(feature = "grpc")]
pub use self::codes::GrpcCodes;
pub use self::fault::{EndpointFault, EndpointFaultError, is_endpoint_fault};
#[cfg(feature = "grpc")]
#[allow(deprecated)]
pub use self::grpc::GrpcBody;
#[cfg(feature = "http")]
pub use self::http::HttpStatus;

use std::fmt;
use std::marker::PhantomData;

use crate::BoxError;

/// What a call's result means to a layer that learns from results.
///
/// | outcome | circuit breaker | adaptive bulkhead | throttle | health | fallback `on_failure` |
/// |---|---|---|---|---|---|
/// | `Success` | success | sample | accept | success | — |
/// | `Failure` | failure | drop | accept (configurable) | failure | fires |
/// | `Overload` | nothing (configurable: failure) | drop | refusal | nothing | fires when asked |
/// | `Ignored` | nothing | nothing | nothing | nothing | — |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The call worked.
    Success,
    /// The call failed in a way that says something about the downstream's health.
    Failure,
    /// The downstream refused the call because it has more load than it can take (`429`,
    /// `503`, `RESOURCE_EXHAUSTED`): it is up, and asks for less. Overload feeds throttling,
    /// backoff and concurrency limits, not a circuit breaker: opening on it would turn a
    /// downstream's shedding into an outage.
    Overload,
    /// The call counts for nothing (a client error, a cancellation).
    Ignored,
}

impl Outcome {
    /// A short lowercase label, as used in metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Overload => "overload",
            Self::Ignored => "ignored",
        }
    }
}

/// What a classifier can tell when the response future completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classified {
    /// The outcome is known now.
    Now(Outcome),
    /// Only the end of the response body will tell (a gRPC status in trailers).
    AtEndOfStream,
}

/// Receives the outcome of one call, exactly once.
///
/// A body that reports at its end also says, as it goes, whose turn it is: its reader's (a
/// frame went out, or the head did, and the next is not asked for yet) or its producer's (the
/// next frame is not ready). A bulkhead holding a slot for the body uses this to give back the
/// slot of a body whose reader stopped reading; most reports ignore it.
pub trait Report: Send + 'static {
    /// Takes the outcome.
    fn report(self, outcome: Outcome);

    /// The body handed a frame on and waits for its reader to ask for the next.
    fn waiting_for_reader(&mut self) {}

    /// The body was asked for a frame and waits for its producer to make it.
    fn waiting_for_producer(&mut self) {}
}

/// Decides the [`Outcome`] of a service's results.
///
/// A layer keeps its classifier behind an `Arc`, so any classifier keeps the layer `Clone`.
pub trait Classify<Res, E>: Send + Sync + 'static {
    /// The response as the layer hands it on: `Res` itself for classifiers that always decide
    /// at once, a response with a watched body for those that may wait for the end of a stream.
    type Response<R: Report>;

    /// Classifies a result as far as it shows when the response future completes.
    ///
    /// Errors are always classified now.
    fn classify(&self, result: Result<&Res, &E>) -> Classified;

    /// Hands `response` on; where `report` is given, it receives the outcome when the response
    /// body ends or is dropped.
    fn watch<R: Report>(&self, response: Res, report: Option<R>) -> Self::Response<R>;

    /// Classifies `result` and makes sure `report` receives its outcome exactly once: now, or
    /// at the end of the response body.
    fn report<R: Report>(&self, result: Result<Res, E>, report: R) -> Result<Self::Response<R>, E> {
        self.report_classified(self.classify(result.as_ref()), result, report)
    }

    /// As [`report`](Self::report), with `classified` already made by
    /// [`classify`](Self::classify) (for a layer that looks at a failure before handing it on).
    // Inlined: out of line, it cost the default client stack about 20 instructions a call
    // (callgrind, `benches/callgrind.sh stack-default`).
    #[inline]
    fn report_classified<R: Report>(
        &self,
        classified: Classified,
        result: Result<Res, E>,
        report: R,
    ) -> Result<Self::Response<R>, E> {
        match (classified, result) {
            (Classified::AtEndOfStream, Ok(response)) => Ok(self.watch(response, Some(report))),
            (Classified::Now(outcome), result) => {
                report.report(outcome);
                result.map(|response| self.watch(response, None))
            }
            (Classified::AtEndOfStream, Err(err)) => {
                report.report(Outcome::Failure);
                Err(err)
            }
        }
    }

    /// Marks a failed `response` as its endpoint's own ([`EndpointFault`]), where the response
    /// type can carry the mark (an `http::Response`, in its extensions); by default it cannot,
    /// and nothing is marked.
    fn mark_endpoint_fault(&self, response: &mut Res) {
        let _ = response;
    }

    /// Whether `response` carries [`EndpointFault`]; only asked of failures.
    fn has_endpoint_fault(&self, response: &Res) -> bool {
        let _ = response;
        false
    }
}

/// Whether `result`, a failure by `classify`, is marked as its endpoint's own: a response with
/// [`EndpointFault`] or an error with an [`EndpointFaultError`] in its chain.
pub fn endpoint_fault<Res, C: Classify<Res, BoxError>>(
    classify: &C,
    result: Result<&Res, &BoxError>,
) -> bool {
    match result {
        Ok(response) => classify.has_endpoint_fault(response),
        Err(err) => is_endpoint_fault(&**err),
    }
}

/// Any error is a failure, any response a success. The default classifier.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnyError;

impl<Res, E> Classify<Res, E> for AnyError {
    type Response<R: Report> = Res;

    #[inline]
    fn classify(&self, result: Result<&Res, &E>) -> Classified {
        Classified::Now(match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        })
    }

    #[inline(always)]
    fn watch<R: Report>(&self, response: Res, report: Option<R>) -> Res {
        discard(report);
        response
    }
}

/// Drops the report of a classifier that judges a response at once. In a branch, so that the
/// `None` every such call passes costs nothing once inlined: dropping the `Option` whole calls
/// its drop glue, which LLVM leaves out of line (7 to 12 instructions a call through the
/// bulkhead, `benches/callgrind.sh bulkhead`).
#[inline(always)]
pub(crate) fn discard<R>(report: Option<R>) {
    if let Some(report) = report {
        drop(report);
    }
}

/// A response type with no outcome of its own: any value is a success and only an error fails.
///
/// [`DefaultClassify`] judges such responses as [`AnyError`] does, and `http::Response`s by
/// their status. It is implemented for the standard library's plain types; implement it for
/// your own response type (one line, as for the retry crate's `Idempotent`), or give the
/// layer [`AnyError`] or a classifier of your own:
///
/// ```
/// use seawall_core::classify::{Classified, Classify, DefaultClassify, Outcome, PlainResponse};
///
/// struct Stock(u32);
/// impl PlainResponse for Stock {}
///
/// let outcome = Classify::<Stock, ()>::classify(&DefaultClassify, Ok(&Stock(7)));
/// assert_eq!(outcome, Classified::Now(Outcome::Success));
/// ```
pub trait PlainResponse {}

crate::impl_for_plain_types!(PlainResponse);

impl<T> PlainResponse for Vec<T> {}
impl<T: ?Sized> PlainResponse for Box<T> {}
impl<T> PlainResponse for Option<T> {}
impl<A, B> PlainResponse for (A, B) {}

/// The classifier that is safe without configuration: an `http::Response` (feature `http`)
/// is judged by its status as `HttpStatus::server_errors()` does
/// (5xx but 503 a failure, 429 and 503 overload), any other response that is a
/// [`PlainResponse`] as [`AnyError`] does (every error a failure, every response a success).
///
/// `AnyError` over HTTP would count a `500` answer as a success: a breaker would never open
/// on a failing HTTP dependency, and a throttle would never see its `429`s. The facade's
/// client stack classifies with this by default.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultClassify;

impl<Res: PlainResponse, E> Classify<Res, E> for DefaultClassify {
    type Response<R: Report> = Res;

    fn classify(&self, result: Result<&Res, &E>) -> Classified {
        Classify::<Res, E>::classify(&AnyError, result)
    }

    #[inline(always)]
    fn watch<R: Report>(&self, response: Res, report: Option<R>) -> Res {
        discard(report);
        response
    }
}

#[cfg(feature = "http")]
impl<B: 'static, E: 'static> Classify<::http::Response<B>, E> for DefaultClassify {
    type Response<R: Report> = ::http::Response<B>;

    fn classify(&self, result: Result<&::http::Response<B>, &E>) -> Classified {
        Classified::Now(match result {
            Ok(response) => http::server_error_outcome(response.status()),
            Err(_) => Outcome::Failure,
        })
    }

    #[inline(always)]
    fn watch<R: Report>(
        &self,
        response: ::http::Response<B>,
        report: Option<R>,
    ) -> Self::Response<R> {
        discard(report);
        response
    }

    fn mark_endpoint_fault(&self, response: &mut ::http::Response<B>) {
        http::mark_endpoint_fault(response);
    }

    fn has_endpoint_fault(&self, response: &::http::Response<B>) -> bool {
        http::has_endpoint_fault(response)
    }
}

/// A classifier made from a closure over the result.
///
/// ```
/// use seawall_core::classify::{Classify, ClassifyFn, Classified, Outcome};
///
/// // A `None` answer is a miss, not a failure of the downstream.
/// let classify = ClassifyFn::new(|result: Result<&Option<u32>, &std::io::Error>| match result {
///     Ok(Some(_)) => Outcome::Success,
///     Ok(None) => Outcome::Ignored,
///     Err(_) => Outcome::Failure,
/// });
/// assert_eq!(classify.classify(Ok(&None)), Classified::Now(Outcome::Ignored));
/// ```
pub struct ClassifyFn<F, Res, E> {
    f: F,
    _types: PhantomData<fn(&Res, &E)>,
}

impl<F, Res, E> ClassifyFn<F, Res, E>
where
    F: Fn(Result<&Res, &E>) -> Outcome,
{
    /// Classifies with `f`.
    pub fn new(f: F) -> Self {
        Self {
            f,
            _types: PhantomData,
        }
    }
}

impl<F: Clone, Res, E> Clone for ClassifyFn<F, Res, E> {
    fn clone(&self) -> Self {
        Self {
            f: self.f.clone(),
            _types: PhantomData,
        }
    }
}

impl<F, Res, E> fmt::Debug for ClassifyFn<F, Res, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClassifyFn").finish_non_exhaustive()
    }
}

impl<F, Res, E> Classify<Res, E> for ClassifyFn<F, Res, E>
where
    F: Fn(Result<&Res, &E>) -> Outcome + Send + Sync + 'static,
    Res: 'static,
    E: 'static,
{
    type Response<R: Report> = Res;

    fn classify(&self, result: Result<&Res, &E>) -> Classified {
        Classified::Now((self.f)(result))
    }

    #[inline(always)]
    fn watch<R: Report>(&self, response: Res, report: Option<R>) -> Res {
        discard(report);
        response
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Collects reported outcomes, for tests.
    #[derive(Clone, Default)]
    pub(crate) struct Collect(pub(crate) Arc<Mutex<Vec<Outcome>>>);

    impl Report for Collect {
        fn report(self, outcome: Outcome) {
            self.0.lock().unwrap().push(outcome);
        }
    }

    impl Collect {
        pub(crate) fn outcomes(&self) -> Vec<Outcome> {
            self.0.lock().unwrap().clone()
        }
    }

    #[test]
    fn any_error_reports_failure_for_errors_only() {
        let c = Collect::default();
        let ok: Result<u8, &str> = Ok(1);
        assert_eq!(AnyError.report(ok, c.clone()), Ok(1));
        let err: Result<u8, &str> = Err("boom");
        assert_eq!(AnyError.report(err, c.clone()), Err("boom"));
        assert_eq!(c.outcomes(), [Outcome::Success, Outcome::Failure]);
    }

    #[test]
    fn the_default_judges_plain_responses_as_any_error_does() {
        let c = Collect::default();
        assert_eq!(DefaultClassify.report(Ok::<u32, &str>(1), c.clone()), Ok(1));
        let _ = DefaultClassify.report(Err::<String, _>("boom"), c.clone());
        assert_eq!(c.outcomes(), [Outcome::Success, Outcome::Failure]);
    }

    #[cfg(feature = "http")]
    #[test]
    fn the_default_judges_http_responses_by_status() {
        let outcome = |code: u16| {
            let res = ::http::Response::builder().status(code).body(()).unwrap();
            Classify::<_, ()>::classify(&DefaultClassify, Ok(&res))
        };
        assert_eq!(outcome(200), Classified::Now(Outcome::Success));
        assert_eq!(outcome(500), Classified::Now(Outcome::Failure));
        assert_eq!(outcome(503), Classified::Now(Outcome::Overload));
        assert_eq!(outcome(429), Classified::Now(Outcome::Overload));
    }

    #[test]
    fn closures_decide_all_three_outcomes() {
        let classify = ClassifyFn::new(|r: Result<&i32, &()>| match r {
            Ok(n) if *n < 0 => Outcome::Ignored,
            Ok(_) => Outcome::Success,
            Err(()) => Outcome::Failure,
        });
        let c = Collect::default();
        for result in [Ok(-1), Ok(1), Err(())] {
            let _ = classify.report(result, c.clone());
        }
        assert_eq!(
            c.outcomes(),
            [Outcome::Ignored, Outcome::Success, Outcome::Failure]
        );
    }
}
