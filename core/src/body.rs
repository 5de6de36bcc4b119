//! Replayable HTTP request bodies.
//!
//! An `http::Request` body is a stream: once sent, it is gone, so a retry or a hedge needs a
//! copy made before the first attempt. [`ReplayBodyLayer`] goes above the retry (or hedge)
//! layer and reads each request body into memory up to a limit, so the layer can send it
//! again. A body it cannot hold is passed through untouched, and its request is sent once:
//!
//! - a body whose length is known (a `Content-Length`, a `Full` body) and within the limit is
//!   read to its end, waiting for it if need be;
//! - a body of unknown length (chunked, or a tonic request stream) is read only as far as it
//!   is already there: a unary gRPC request, encoded in one go, is held whole, while a stream
//!   that would make the call wait is passed on as it is, after whatever was read already;
//! - a body over the limit, or known to be, is passed on as it is.
//!
//! It works with any [`http_body::Body`]: hyper's and axum's bodies, `tonic::body::Body`, and
//! `http-body-util`'s. A service below that takes one body type only, such as a tonic
//! `Channel`, gets it back with `.map_request(|req: Request<ReplayBody<Body>>|
//! req.map(tonic::body::Body::new))` under the retry layer.
//!
//! seawall-retry re-exports this module as `seawall_retry::body`.

use std::fmt;
use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::request::Parts;
use http::{HeaderMap, Method, Request};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::BoxError;

/// The default buffering limit: 64 KiB.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// A request body a retry or a hedge can copy, or `None` when it cannot be sent twice.
pub trait TryCloneBody: Sized {
    /// A copy of the body as it was before it was read; `None` when it cannot be copied.
    fn try_clone_body(&self) -> Option<Self>;
}

impl TryCloneBody for () {
    fn try_clone_body(&self) -> Option<Self> {
        Some(())
    }
}

impl TryCloneBody for String {
    fn try_clone_body(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl TryCloneBody for Bytes {
    fn try_clone_body(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl<D: Clone> TryCloneBody for http_body_util::Full<D> {
    fn try_clone_body(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl<D> TryCloneBody for http_body_util::Empty<D> {
    fn try_clone_body(&self) -> Option<Self> {
        Some(http_body_util::Empty::new())
    }
}

impl<B> TryCloneBody for ReplayBody<B> {
    fn try_clone_body(&self) -> Option<Self> {
        match &self.kind {
            Kind::Buffered { data, trailers } => Some(ReplayBody {
                kind: Kind::Buffered {
                    data: data.clone(),
                    trailers: trailers.clone(),
                },
            }),
            Kind::Streaming { .. } => None,
        }
    }
}

/// A copy of `req` with the same method, URI, version, headers, extensions and a copy of the
/// body; `None` when the body cannot be copied.
pub fn clone_http_request<B: TryCloneBody>(req: &Request<B>) -> Option<Request<B>> {
    let body = req.body().try_clone_body()?;
    let mut copy = Request::new(body);
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    *copy.extensions_mut() = req.extensions().clone();
    Some(copy)
}

/// The methods whose requests the retry and hedge policies send twice by default: `GET`,
/// `HEAD`, `OPTIONS`, `PUT` and `DELETE`. A `POST` or `PATCH` that timed out may have taken
/// effect, so it is sent once unless a policy is told otherwise.
pub const IDEMPOTENT_METHODS: [Method; 5] = [
    Method::GET,
    Method::HEAD,
    Method::OPTIONS,
    Method::PUT,
    Method::DELETE,
];

/// Whether `method` is one of [`IDEMPOTENT_METHODS`].
pub fn is_idempotent_method(method: &Method) -> bool {
    IDEMPOTENT_METHODS.contains(method)
}

pin_project! {
    /// A request body held in memory, which retries can send again, or one passed through as
    /// a stream, which is sent once.
    pub struct ReplayBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Buffered {
            data: Option<Bytes>,
            trailers: Option<HeaderMap>,
        },
        Streaming {
            prefix: Option<Bytes>,
            #[pin]
            rest: B,
        },
    }
}

impl<B> ReplayBody<B> {
    /// A body held in memory.
    pub fn buffered(data: Bytes) -> Self {
        Self::held(data, None)
    }

    /// A body passed through as a stream; a request with it is never sent twice.
    pub fn streaming(body: B) -> Self {
        Self::after(Bytes::new(), body)
    }

    fn held(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        Self {
            kind: Kind::Buffered {
                data: (!data.is_empty()).then_some(data),
                trailers,
            },
        }
    }

    fn after(prefix: Bytes, rest: B) -> Self {
        Self {
            kind: Kind::Streaming {
                prefix: (!prefix.is_empty()).then_some(prefix),
                rest,
            },
        }
    }

    /// Whether the body is held in memory and so can be sent again.
    pub fn is_replayable(&self) -> bool {
        matches!(self.kind, Kind::Buffered { .. })
    }
}

impl<B: Body> Body for ReplayBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Buffered { data, trailers } => Poll::Ready(
                data.take()
                    .map(Frame::data)
                    .or_else(|| trailers.take().map(Frame::trailers))
                    .map(Ok),
            ),
            KindProj::Streaming { prefix, rest } => {
                if let Some(prefix) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(prefix))));
                }
                let frame = ready!(rest.poll_frame(cx));
                Poll::Ready(frame.map(|frame| {
                    frame.map(|frame| frame.map_data(|mut d| d.copy_to_bytes(d.remaining())))
                }))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Buffered { data, trailers } => data.is_none() && trailers.is_none(),
            Kind::Streaming { prefix, rest } => prefix.is_none() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Buffered { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Streaming { prefix, rest } => {
                let extra = prefix.as_ref().map_or(0, |d| d.len() as u64);
                let hint = rest.size_hint();
                let mut total = SizeHint::new();
                total.set_lower(hint.lower() + extra);
                if let Some(upper) = hint.upper() {
                    total.set_upper(upper + extra);
                }
                total
            }
        }
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayBody")
            .field("replayable", &self.is_replayable())
            .finish_non_exhaustive()
    }
}

/// Holds request bodies up to a limit in memory, so that a retry or hedge layer below can
/// replay them; see the [module docs](self).
#[derive(Debug, Clone, Copy)]
pub struct ReplayBodyLayer {
    limit: usize,
}

impl Default for ReplayBodyLayer {
    fn default() -> Self {
        Self::new(DEFAULT_BODY_LIMIT)
    }
}

impl ReplayBodyLayer {
    /// Holds bodies of at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self { limit }
    }

    /// The most bytes held per request.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

impl<S> Layer<S> for ReplayBodyLayer {
    type Service = ReplayBodyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ReplayBodyService {
            inner,
            limit: self.limit,
        }
    }
}

/// Hands the inner service requests whose bodies are [`ReplayBody`]s.
///
/// Made by [`ReplayBodyLayer`].
#[derive(Debug, Clone)]
pub struct ReplayBodyService<S> {
    inner: S,
    limit: usize,
}

impl<S> ReplayBodyService<S> {
    crate::define_inner_service_accessors!();
}

impl<S, B> Service<Request<B>> for ReplayBodyService<S>
where
    S: Service<Request<ReplayBody<B>>> + Clone,
    S::Error: Into<BoxError>,
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ReplayBodyFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let fresh = self.inner.clone();
        let mut service = mem::replace(&mut self.inner, fresh);
        let (parts, body) = req.into_parts();
        let hint = body.size_hint();
        let limit = self.limit as u64;
        if body.is_end_stream() {
            let req = Request::from_parts(parts, ReplayBody::buffered(Bytes::new()));
            return ReplayBodyFuture::called(service.call(req));
        }
        if hint.lower() > limit {
            let req = Request::from_parts(parts, ReplayBody::streaming(body));
            return ReplayBodyFuture::called(service.call(req));
        }
        ReplayBodyFuture {
            state: BufferState::Reading {
                reading: Some(Reading {
                    parts,
                    body,
                    data: BytesMut::new(),
                    trailers: None,
                    limit: self.limit,
                    wait: hint.upper().is_some_and(|upper| upper <= limit),
                    service,
                }),
            },
        }
    }
}

struct Reading<S, B> {
    parts: Parts,
    body: B,
    data: BytesMut,
    trailers: Option<HeaderMap>,
    limit: usize,
    /// Whether the body is known to fit, and so is worth waiting for.
    wait: bool,
    service: S,
}

pin_project! {
    /// Reads a request body into memory where it can, then makes the call.
    ///
    /// `F` is the inner service's future, a parameter rather than a bound so that whether
    /// this future is `Send` depends only on what it holds (see `Retry`'s future).
    pub struct ReplayBodyFuture<S, B, F = <S as Service<Request<ReplayBody<B>>>>::Future> {
        #[pin]
        state: BufferState<S, B, F>,
    }
}

pin_project! {
    #[project = BufferProj]
    enum BufferState<S, B, F> {
        Reading {
            reading: Option<Reading<S, B>>,
        },
        Called {
            #[pin]
            future: F,
        },
    }
}

impl<S, B, F> ReplayBodyFuture<S, B, F> {
    fn called(future: F) -> Self {
        Self {
            state: BufferState::Called { future },
        }
    }
}

impl<S, B, F> fmt::Debug for ReplayBodyFuture<S, B, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reading = matches!(self.state, BufferState::Reading { .. });
        f.debug_struct("ReplayBodyFuture")
            .field("reading", &reading)
            .finish_non_exhaustive()
    }
}

impl<S, B> Future for ReplayBodyFuture<S, B>
where
    S: Service<Request<ReplayBody<B>>>,
    S::Error: Into<BoxError>,
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                BufferProj::Called { future } => {
                    return future.poll(cx).map_err(Into::into);
                }
                BufferProj::Reading { reading } => {
                    let r = reading.as_mut().expect("polled after completion");
                    let whole = ready!(read(r, cx))?;
                    let Some(r) = reading.take() else {
                        unreachable!("taken only here");
                    };
                    let data = r.data.freeze();
                    let body = if whole {
                        ReplayBody::held(data, r.trailers)
                    } else {
                        ReplayBody::after(data, r.body)
                    };
                    let mut service = r.service;
                    let future = service.call(Request::from_parts(r.parts, body));
                    this.state.set(BufferState::Called { future });
                }
            }
        }
    }
}

/// Reads what it can of the body: `true` when it was read whole, `false` when what is left
/// must go as a stream.
fn read<S, B>(r: &mut Reading<S, B>, cx: &mut Context<'_>) -> Poll<Result<bool, BoxError>>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    loop {
        match Pin::new(&mut r.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(mut data) => {
                    r.data.put(&mut data);
                    if r.data.len() > r.limit {
                        return Poll::Ready(Ok(false));
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        r.trailers = Some(trailers);
                        return Poll::Ready(Ok(true));
                    }
                }
            },
            Poll::Ready(Some(Err(err))) => return Poll::Ready(Err(err.into())),
            Poll::Ready(None) => return Poll::Ready(Ok(true)),
            Poll::Pending if r.wait => return Poll::Pending,
            Poll::Pending => return Poll::Ready(Ok(false)),
        }
        if r.body.is_end_stream() {
            return Poll::Ready(Ok(true));
        }
    }
}
