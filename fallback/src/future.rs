//! The response future of [`Fallback`](crate::Fallback).

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use seawall_core::BoxError;

use crate::source::Source;
use crate::state::Shared;
use crate::trigger::{Failed, Trigger};

pin_project! {
    /// The inner call, then the fallback's answer if the call failed.
    pub struct ResponseFuture<F, K, G, Src, W, Req> {
        #[pin]
        state: State<F, K, G>,
        shared: Arc<Shared<Src, W>>,
        _request: PhantomData<fn(Req)>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, K, G> {
        Primary { #[pin] call: F, kept: Option<K> },
        Fallback { #[pin] answer: G },
    }
}

impl<F, K, G, Src, W, Req> ResponseFuture<F, K, G, Src, W, Req> {
    pub(crate) fn new(call: F, kept: K, shared: Arc<Shared<Src, W>>) -> Self {
        Self {
            state: State::Primary {
                call,
                kept: Some(kept),
            },
            shared,
            _request: PhantomData,
        }
    }
}

impl<F, K, G, Src, W, Req> fmt::Debug for ResponseFuture<F, K, G, Src, W, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Primary { .. } => "primary",
            State::Fallback { .. } => "fallback",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<F, K, G, Src, W, Req, Res, E> Future for ResponseFuture<F, K, G, Src, W, Req>
where
    F: Future<Output = Result<Res, E>>,
    E: Into<BoxError>,
    Src: Source<Req, Res, Kept = K, Future = G>,
    G: Future<Output = Result<Res, BoxError>>,
    W: Trigger<Res>,
{
    type Output = Result<Res, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Primary { call, kept } => {
                    let result = ready!(call.poll(cx)).map_err(Into::into);
                    let Some(cause) = this.shared.trigger.fires(result.as_ref()) else {
                        return Poll::Ready(result);
                    };
                    this.shared.fired(cause);
                    let failed = match result {
                        Ok(response) => Failed::Response(response),
                        Err(err) => Failed::Error(err),
                    };
                    let kept = kept.take().expect("kept until the primary call ends");
                    let answer = this.shared.source.answer(kept, failed);
                    this.state.set(State::Fallback { answer });
                }
                StateProj::Fallback { answer } => return answer.poll(cx),
            }
        }
    }
}
