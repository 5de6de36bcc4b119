//! Ready-made stacks: the layers in the order that works, each stack one layer built from one
//! config struct that loads from TOML, JSON or the environment through serde.
//!
//! # The client stack
//!
//! For calls to a dependency, outermost first:
//!
//! 1. **Total timeout** — how long the caller will wait for an answer, retries included. It sits
//!    outside retry so that retries can never outlast the caller's patience.
//! 2. **Retry** — with backoff, jitter and a retry budget. It sits outside the circuit breaker:
//!    every attempt is judged by the breaker, so a dependency that keeps failing trips it; and
//!    once it is open, retry sees a `CircuitOpen` rejection with its `retry_after` and gives up
//!    at once instead of hammering.
//! 3. **Hedging**, off unless the config has a `hedge` section — a call that has not answered
//!    after the hedge delay is sent again, and the first answer wins. It sits inside the total
//!    timeout, which bounds the call and all its hedges, and inside retry: retry is for calls
//!    that failed, hedging for calls that are slow, and retry sees one attempt however many
//!    hedges it took. It sits outside the throttle, the breaker, the per-attempt timeout and the bulkhead, so
//!    each hedge is an attempt of its own to them, and the loser, dropped, is a cancellation
//!    the breaker does not count. What may be hedged is the retry policy's decision (the same
//!    copy a retry would send: a `POST` is never hedged by default). The two extra-load
//!    bounds add up: hedges are at most the hedge budget's ratio of requests (10 % by
//!    default) and retries the retry budget's, so with both on at their defaults a client
//!    sends at most 1.2 attempts per request, plus the retry budget's floor.
//! 4. **Client-side throttle** — when the dependency refuses more of its load than it accepts
//!    (`429`, `503`: overload, not failure), rejects a share of calls locally before they cost
//!    it anything (the SRE book's `requests − K × accepts` rule). Inside retry, so retries are
//!    throttled too and a local rejection is never retried; outside the breaker, whose own
//!    rejections then count for nothing in its window. It rejects only while a call it let
//!    through was refused within its window, so the clients of a fleet stop within 500 ms of
//!    the overload's end.
//! 5. **Circuit breaker** — fails fast while the dependency is down.
//! 6. **Per-attempt timeout** — a hung attempt becomes a failure the breaker counts, and retry
//!    can still try again within the total budget. Learned from latency, at most half the
//!    total so that a retry fits; where that ceiling is no bound the dependency was seen to
//!    keep (too few calls seen, or calls cut there and none answered within it since), an
//!    attempt may wait for what the total leaves, so a dependency uniformly slower than half
//!    the total is waited for, not failed on every attempt.
//! 7. **Bulkhead** — bounds the attempts in flight to the dependency, so a slow dependency
//!    cannot take every task and connection of the caller.
//!
//! A fallback, when wanted, goes outside all of it with
//! [`ServiceBuilderExt::with_fallback`](crate::ServiceBuilderExt::with_fallback): it answers
//! for the total timeout, the retries and an open breaker alike.
//!
//! # The server stack
//!
//! For a service's own inbound calls, outermost first: the **caller's deadline**, read from
//! `grpc-timeout` and stamped as the request arrives, so that time spent in the queues below
//! counts against it; **rate limit** (the cheapest rejection, before any work is spent);
//! **bulkhead** (bounds the work admitted at once); **timeout** (bounds each admitted call,
//! shortened to the caller's deadline). A request whose deadline passes while it waits for a
//! permit or a slot leaves the queue, and one that reaches the timeout with no time left is
//! rejected without running: both as `DeadlineExceeded` (504, `DEADLINE_EXCEEDED`), never
//! with a fresh budget.
//! Put [`with_http_errors`](crate::ServiceBuilderExt::with_http_errors) or
//! `with_grpc_errors` (feature `grpc`) in front so that
//! rejections become 429, 503 and 504 answers.

mod client;
mod server;

pub use self::client::{
    BreakerKey, Breakers, ClientStack, ClientStackConfig, ClientStackConfigBuilder,
    ClientStackLayer, Hedged,
};
pub use self::server::{
    FleetLimiter, ServerStack, ServerStackConfig, ServerStackConfigBuilder, ServerStackLayer,
};
