//! The response future of [`Endpoint`](crate::Endpoint) and the report that carries a call's
//! outcome to its endpoint's detectors.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use seawall_core::classify::{Classified, Classify, EndpointFaultError, Outcome, Report};
use seawall_core::{BoxError, rejected};
use tokio::time::Instant;

use crate::load::Sample;
use crate::state::MemberState;

/// What an endpoint's calls need: its member of the set, the classifier and the probe. One
/// `Arc` per endpoint, cloned once per call.
pub(crate) struct Binding<K, C, P> {
    pub(crate) member: Arc<MemberState<K>>,
    pub(crate) classify: Arc<C>,
    pub(crate) probe: P,
}

/// Hands one call's outcome to its endpoint, at most once; dropped unreported (the call was
/// cancelled, or its body dropped before its end), it records nothing.
pub struct EndpointReport<K> {
    member: Arc<MemberState<K>>,
}

impl<K: fmt::Debug + Send + Sync + 'static> Report for EndpointReport<K> {
    fn report(self, outcome: Outcome) {
        let member = &self.member;
        let failed = match outcome {
            Outcome::Success => Some(false),
            Outcome::Failure | Outcome::Overload => Some(true),
            Outcome::Ignored => None,
        };
        if let Some(failed) = failed {
            let at = member.set.nanos(Instant::now());
            member.load.concluded(at, failed);
        }
        member.set.record(member, outcome);
    }
}

impl<K: fmt::Debug> fmt::Debug for EndpointReport<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointReport")
            .field("endpoint", &self.member.key)
            .finish()
    }
}

pin_project! {
    /// The inner call, whose outcome goes to the endpoint's detectors when it completes (or,
    /// with a classifier that watches the response body, when the body ends), and whose time
    /// goes to the endpoint's load when it completes or is dropped.
    pub struct ResponseFuture<F, K, C, P> {
        #[pin]
        inner: F,
        binding: Option<Arc<Binding<K, C, P>>>,
        // When the call was sent, in nanoseconds from the set's origin.
        sent: u64,
    }

    impl<F, K, C, P> PinnedDrop for ResponseFuture<F, K, C, P> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(binding) = this.binding.take() {
                let member = &binding.member;
                let at = member.set.nanos(Instant::now());
                member
                    .load
                    .finished(&member.set.latency, *this.sent, at, Sample::Cancelled);
            }
        }
    }
}

impl<F, K, C, P> ResponseFuture<F, K, C, P> {
    pub(crate) fn new(inner: F, binding: Arc<Binding<K, C, P>>, sent: u64) -> Self {
        Self {
            inner,
            binding: Some(binding),
            sent,
        }
    }
}

impl<F, K: fmt::Debug, C, P> fmt::Debug for ResponseFuture<F, K, C, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("endpoint", &self.binding.as_ref().map(|b| &b.member.key))
            .finish_non_exhaustive()
    }
}

impl<F, K, C, P, T, E> Future for ResponseFuture<F, K, C, P>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    K: fmt::Debug + Send + Sync + 'static,
    C: Classify<T, BoxError>,
{
    type Output = Result<C::Response<EndpointReport<K>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx)).map_err(Into::into);
        let binding = this
            .binding
            .take()
            .expect("ResponseFuture polled after completion");
        let member = &binding.member;
        let classify = &binding.classify;
        let classified = match &result {
            // Stopped further in before it reached the endpoint: no evidence about it.
            Err(err) if rejected(&**err).is_some_and(|r| !r.kind().is_downstream_failure()) => {
                Classified::Now(Outcome::Ignored)
            }
            result => classify.classify(result.as_ref()),
        };
        let sample = match classified {
            Classified::Now(Outcome::Success) => Sample::Success,
            Classified::Now(Outcome::Failure | Outcome::Overload) => Sample::Failure,
            Classified::Now(Outcome::Ignored) => Sample::Cancelled,
            Classified::AtEndOfStream => Sample::Answered,
        };
        let at = member.set.nanos(Instant::now());
        member
            .load
            .finished(&member.set.latency, *this.sent, at, sample);
        let Classified::Now(outcome) = classified else {
            // Known at the end of the body, when the head has gone on: never marked.
            let report = EndpointReport {
                member: member.clone(),
            };
            return Poll::Ready(classify.report_classified(classified, result, report));
        };
        // A failure while another endpoint succeeds is this endpoint's own: marked, so that a
        // breaker above the balancer does not count it against the whole set.
        let own = member.set.record(member, outcome);
        Poll::Ready(match result {
            Ok(mut response) => {
                if own {
                    classify.mark_endpoint_fault(&mut response);
                }
                Ok(classify.watch(response, None::<EndpointReport<K>>))
            }
            Err(err) if own => Err(EndpointFaultError::new(err).into()),
            Err(err) => Err(err),
        })
    }
}
