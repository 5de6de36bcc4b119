//! Logs and request tracing for the examples, the shape log stores such as Loki ingest.
//!
//! - `RUST_LOG` filters what is logged (tracing-subscriber's env filter; `info` when unset).
//!   Each seawall crate logs under its own target, so `RUST_LOG=info,seawall=debug` shows every
//!   layer's rejections, and `RUST_LOG=info,seawall_circuit_breaker=debug` only the breaker's.
//!   State changes log at `info`, rejections and retries at `debug`, per-call detail at
//!   `trace`.
//! - `LOG_FORMAT=json` writes one JSON object a line, with the fields of the request's span
//!   (its `request_id` among them) under `span`.
//! - [`traced`] gives every request an id (the caller's `x-request-id`, or a new UUID), sent
//!   back on the response, and a span named `request` that carries it: what the layers log
//!   while serving the request (which layer rejected it, and why) is logged inside it.

use axum::Router;
use http::{HeaderName, Request};
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnFailure, MakeSpan, TraceLayer};
use tracing::{Level, Span, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// The header that carries a request's id.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Installs the process's subscriber as `RUST_LOG` and `LOG_FORMAT` say, writing to stderr.
pub fn init() {
    let json = std::env::var("LOG_FORMAT").is_ok_and(|format| format == "json");
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing::subscriber::set_global_default(subscriber(json, filter, std::io::stderr));
}

/// A subscriber that writes what `filter` lets through to `writer`, as JSON lines when `json`.
pub fn subscriber<W>(json: bool, filter: EnvFilter, writer: W) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    if json {
        Box::new(builder.json().with_current_span(true).finish())
    } else {
        Box::new(builder.finish())
    }
}

/// `router` with request ids and a span per request (see the module docs).
pub fn traced(router: Router) -> Router {
    router.layer(
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(RequestSpan)
                    // A 5xx answered on purpose (a dependency down) is not an error of ours.
                    .on_failure(DefaultOnFailure::new().level(Level::WARN)),
            )
            .layer(PropagateRequestIdLayer::new(REQUEST_ID)),
    )
}

/// Makes the `request` span: method, path and request id.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestSpan;

impl<B> MakeSpan<B> for RequestSpan {
    fn make_span(&mut self, request: &Request<B>) -> Span {
        let id = request
            .headers()
            .get(&REQUEST_ID)
            .and_then(|id| id.to_str().ok())
            .unwrap_or_default();
        tracing::info_span!(
            "request",
            method = %request.method(),
            path = request.uri().path(),
            request_id = id,
        )
    }
}
