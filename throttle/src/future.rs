//! The response future of [`Throttle`](crate::Throttle), and the report that carries an
//! outcome known only at the end of a response body back to the throttle.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use seawall_core::classify::{Classified, Classify, Outcome, Report};
use seawall_core::{BoxError, rejected};

use crate::state::{Shared, State};

/// Counts one call's outcome when its response body ends (a gRPC status in trailers);
/// dropped unreported, it counts nothing.
pub struct CallReport {
    state: Arc<State>,
}

impl Report for CallReport {
    fn report(self, outcome: Outcome) {
        self.state.record(outcome);
    }
}

impl fmt::Debug for CallReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallReport")
            .field("name", &self.state.name)
            .finish()
    }
}

pin_project! {
    /// The inner call, whose outcome the throttle counts when it completes; or the throttle's
    /// rejection, ready at once.
    pub struct ResponseFuture<F, C> {
        #[pin]
        call: Call<F, C>,
    }
}

pin_project! {
    #[project = CallProj]
    enum Call<F, C> {
        Called {
            #[pin]
            inner: F,
            shared: Option<Arc<Shared<C>>>,
        },
        Rejected {
            error: Option<BoxError>,
        },
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn called(inner: F, shared: Arc<Shared<C>>) -> Self {
        Self {
            call: Call::Called {
                inner,
                shared: Some(shared),
            },
        }
    }

    pub(crate) fn rejected(error: BoxError) -> Self {
        Self {
            call: Call::Rejected { error: Some(error) },
        }
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let call = match &self.call {
            Call::Called { .. } => "called",
            Call::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("call", &call)
            .finish()
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, BoxError>,
{
    type Output = Result<C::Response<CallReport>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().call.project() {
            CallProj::Called { inner, shared } => {
                let result = ready!(inner.poll(cx)).map_err(Into::into);
                let shared = shared
                    .take()
                    .expect("ResponseFuture polled after completion");
                Poll::Ready(complete(&shared, result))
            }
            CallProj::Rejected { error } => Poll::Ready(Err(error
                .take()
                .expect("ResponseFuture polled after completion"))),
        }
    }
}

/// Counts the call's outcome (now, or through a [`CallReport`] at the end of its body) and
/// hands its result on.
fn complete<C, T>(
    shared: &Shared<C>,
    result: Result<T, BoxError>,
) -> Result<C::Response<CallReport>, BoxError>
where
    C: Classify<T, BoxError>,
{
    let result = match result {
        // Stopped further in (an open circuit, a full bulkhead, another throttle) before it
        // reached the downstream: neither a request the downstream saw nor an accept.
        Err(err) if rejected(&*err).is_some_and(|r| !r.kind().is_downstream_failure()) => {
            shared.state.record(Outcome::Ignored);
            return Err(err);
        }
        result => result,
    };
    match (shared.classify.classify(result.as_ref()), result) {
        (Classified::Now(outcome), result) => {
            shared.state.record(outcome);
            result.map(|res| shared.classify.watch(res, None))
        }
        (Classified::AtEndOfStream, Ok(res)) => {
            let report = CallReport {
                state: shared.state.clone(),
            };
            Ok(shared.classify.watch(res, Some(report)))
        }
        (Classified::AtEndOfStream, Err(err)) => {
            shared.state.record(Outcome::Failure);
            Err(err)
        }
    }
}
