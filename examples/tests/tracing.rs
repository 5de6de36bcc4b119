//! What the layers record on the request's span, seen by a capturing subscriber: a rejection
//! says which layer rejected the call and why, inside the request's span; retries run in child
//! spans carrying the attempt number.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use seawall::BoxError;
use seawall::backoff::{Backoff, Jitter};
use seawall::bulkhead::BulkheadLayer;
use seawall::circuit_breaker::CircuitBreakerLayer;
use seawall::rate_limit::{Quota, RateLimitLayer};
use seawall::retry::RetryLayer;
use seawall::throttle::ThrottleLayer;
use seawall::timeout::TimeoutLayer;
use tower::{Layer, Service, ServiceExt, service_fn};
use tracing::field::{Field, Visit};
use tracing::{Instrument, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

#[derive(Debug, Clone, Default)]
struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

/// One event: its target, its fields and its spans, innermost first.
#[derive(Debug)]
struct Captured {
    target: String,
    fields: Fields,
    spans: Vec<(String, Fields)>,
}

impl Captured {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.0.get(name).map(String::as_str)
    }

    fn span_names(&self) -> Vec<&str> {
        self.spans.iter().map(|(name, _)| name.as_str()).collect()
    }
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Captured>>>);

impl Capture {
    fn take(&self) -> Vec<Captured> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl<S> tracing_subscriber::Layer<S> for Capture
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        ctx.span(id).unwrap().extensions_mut().insert(fields);
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let spans = ctx
            .event_scope(event)
            .map(|scope| {
                scope
                    .map(|span| {
                        let fields = span.extensions().get::<Fields>().cloned();
                        (span.name().to_owned(), fields.unwrap_or_default())
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.0.lock().unwrap().push(Captured {
            target: event.metadata().target().to_owned(),
            fields,
            spans,
        });
    }
}

/// Captures every event on this thread until the guard drops.
fn capture() -> (Capture, tracing::subscriber::DefaultGuard) {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    (capture, tracing::subscriber::set_default(subscriber))
}

fn request_span() -> tracing::Span {
    tracing::info_span!("request", request_id = "req-7")
}

/// The one event that names `layer` as the rejecting layer.
fn rejection_by<'a>(events: &'a [Captured], layer: &str) -> &'a Captured {
    let found: Vec<_> = events
        .iter()
        .filter(|e| e.field("rejected_by") == Some(layer))
        .collect();
    assert_eq!(found.len(), 1, "{events:#?}");
    found[0]
}

fn assert_in_request_span(event: &Captured) {
    let (name, fields) = event.spans.first().expect("inside a span");
    assert_eq!(name, "request", "{event:#?}");
    assert_eq!(fields.0["request_id"], "req-7");
}

fn downstream() -> impl Service<u64, Response = u64, Error = BoxError, Future: Send> + Clone {
    service_fn(|ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, BoxError>(ms)
    })
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_says_in_the_request_span_that_it_rejected_the_call() {
    let (capture, _guard) = capture();
    let (layer, handle) = CircuitBreakerLayer::builder()
        .name("inventory")
        .build()
        .unwrap()
        .pair();
    handle.force_open();
    let result = layer
        .layer(downstream())
        .oneshot(1)
        .instrument(request_span())
        .await;
    assert!(result.is_err());
    let events = capture.take();
    let event = rejection_by(&events, "inventory");
    assert_eq!(event.field("rejection"), Some("circuit_open"));
    assert_eq!(event.field("state"), Some("forced_open"));
    assert!(
        event.target.starts_with("seawall_circuit_breaker"),
        "{event:?}"
    );
    assert_in_request_span(event);
}

#[tokio::test(start_paused = true)]
async fn a_full_bulkhead_a_rate_limit_and_a_timeout_say_which_layer_and_why() {
    let (capture, _guard) = capture();
    let request = request_span();

    let bulkhead = BulkheadLayer::builder()
        .name("pool")
        .max_concurrent(1)
        .build()
        .unwrap();
    let mut pool = bulkhead.layer(downstream());
    let _holding = request.in_scope(|| pool.call(1000));
    // As tower-http's `TraceLayer` does: the call inside the span, and its future in it.
    let _ = request
        .in_scope(|| pool.call(1))
        .instrument(request.clone())
        .await;

    let limit = RateLimitLayer::builder()
        .name("api")
        .quota(Quota::per_second(1).with_burst(1))
        .build()
        .unwrap();
    let mut api = limit.layer(downstream());
    for _ in 0..2 {
        let api = api.ready().await.unwrap();
        let _ = request
            .in_scope(|| api.call(0))
            .instrument(request.clone())
            .await;
    }

    let timeout = TimeoutLayer::builder()
        .name("db")
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let _ = timeout
        .layer(downstream())
        .oneshot(1000)
        .instrument(request.clone())
        .await;

    let events = capture.take();
    for (layer, rejection, target) in [
        ("pool", "bulkhead_full", "seawall_bulkhead"),
        ("api", "rate_limited", "seawall_rate_limit"),
        ("db", "timed_out", "seawall_timeout"),
    ] {
        let event = rejection_by(&events, layer);
        assert_eq!(event.field("rejection"), Some(rejection), "{event:?}");
        assert!(event.target.starts_with(target), "{event:?}");
        assert_in_request_span(event);
    }
    assert!(rejection_by(&events, "pool").field("reason").is_some());
    assert!(rejection_by(&events, "api").field("retry_after").is_some());
}

#[tokio::test(start_paused = true)]
async fn a_throttle_says_that_it_rejected_the_call() {
    let (capture, _guard) = capture();
    let layer = ThrottleLayer::builder()
        .name("search")
        .accept_failures(false)
        .seed(7)
        .build()
        .unwrap();
    let refusing = service_fn(|_: u64| async { Err::<u64, BoxError>("refused".into()) });
    let svc = layer.layer(refusing);
    for _ in 0..100 {
        let _ = svc.clone().oneshot(0).instrument(request_span()).await;
    }
    let events = capture.take();
    let event = events
        .iter()
        .find(|e| e.field("rejected_by") == Some("search"))
        .unwrap_or_else(|| panic!("no rejection by the throttle: {events:#?}"));
    assert_eq!(event.field("rejection"), Some("throttled"), "{event:?}");
    assert!(event.target.starts_with("seawall_throttle"), "{event:?}");
    assert_in_request_span(event);
}

#[tokio::test(start_paused = true)]
async fn retries_run_in_child_spans_carrying_the_attempt_number() {
    let (capture, _guard) = capture();
    let layer = RetryLayer::builder()
        .name("inventory")
        .max_attempts(3)
        .backoff(
            Backoff::constant(Duration::from_millis(10))
                .jitter(Jitter::None)
                .build()
                .unwrap(),
        )
        .no_budget()
        .build()
        .unwrap();
    let attempts = Arc::new(Mutex::new(0));
    let flaky = service_fn(move |_: u64| {
        let attempt = {
            let mut n = attempts.lock().unwrap();
            *n += 1;
            *n
        };
        async move {
            tracing::info!(target: "downstream", attempt, "called");
            if attempt < 3 {
                Err::<u64, BoxError>("boom".into())
            } else {
                Ok(7)
            }
        }
    });
    let answer = layer
        .layer(flaky)
        .oneshot(1)
        .instrument(request_span())
        .await
        .unwrap();
    assert_eq!(answer, 7);
    let events = capture.take();
    let calls: Vec<_> = events.iter().filter(|e| e.target == "downstream").collect();
    assert_eq!(calls.len(), 3, "{events:#?}");
    assert_eq!(calls[0].span_names(), ["request"]);
    for (call, attempt) in calls[1..].iter().zip(["2", "3"]) {
        assert_eq!(call.span_names(), ["retry", "request"], "{call:?}");
        let retry = &call.spans[0].1;
        assert_eq!(retry.0["attempt"], attempt);
        assert_eq!(retry.0["name"], "inventory");
    }
}
