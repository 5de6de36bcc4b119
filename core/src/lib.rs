//! What every seawall layer shares.
//!
//! - [`Rejected`] and [`RejectionKind`]: the one error type a layer uses for what it decides
//!   itself (an open circuit, a full bulkhead, a timeout), and [`rejected`] to find it in any
//!   stack's [`BoxError`].
//! - [`classify`]: whether a result is a success, a failure or neither.
//! - [`attempt`]: which [`Attempt`] of a call a retry layer is making, and whether it is the
//!   last.
//! - [`backoff`]: backoff curves with a cap and jitter.
//! - `body` (feature `http`): request bodies held in memory so a retry or a hedge can send
//!   them again.
//! - [`config`]: [`ConfigError`](config::ConfigError) and the checks builders share; [`Name`],
//!   a layer instance's checked name.
//! - [`deadline`]: the caller's [`Deadline`], which every layer that waits reads.
//! - [`hook`]: [`Hook`], the one type every layer keeps its `on_*` closures in.
//! - [`key`]: what a keyed layer (a breaker per key, a rate limit per key) groups calls by:
//!   [`key::ExtractKey`], [`key::key_fn`] for closures, and with the `axum` feature
//!   `ClientIp`, `Header` and `Route`.
//! - [`latency`]: a lock-free estimate of recent latency percentiles, for hedging and adaptive
//!   timeouts.
//! - [`metrics`](mod@metrics): metric handles registered once per layer instance.
//! - [`store`]: the timeout, breaker and failure policy around calls to a store a fleet
//!   shares (the Redis behind a fleet-wide rate limit or retry budget).
//! - [`sync`]: the atomics and locks of the lock-free cores, loom's under `--cfg loom`.
//! - `http` and `grpc` (features of the same names): adapters that answer rejections with
//!   HTTP responses or gRPC statuses, so a stack's error is `Infallible` and goes straight into
//!   axum and tonic.
//!
//! ```
//! use seawall_core::{BoxError, Rejected, RejectionKind, rejected};
//!
//! fn is_overload(err: &BoxError) -> bool {
//!     matches!(
//!         rejected(&**err).map(Rejected::kind),
//!         Some(RejectionKind::BulkheadFull | RejectionKind::RateLimited)
//!     )
//! }
//! assert!(is_overload(&Rejected::new(RejectionKind::BulkheadFull, "db").into()));
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod attempt;
pub mod backoff;
#[cfg(feature = "http")]
pub mod body;
pub mod classify;
pub mod config;
mod current;
pub mod deadline;
mod error;
pub mod hook;
pub mod inplace;
pub mod key;
pub mod latency;
pub mod metrics;
mod name;
pub mod store;
pub mod sync;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
pub mod time;

#[cfg(feature = "grpc")]
pub mod grpc;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "http")]
pub mod respond;

pub use self::attempt::Attempt;
pub use self::deadline::Deadline;

/// `get_ref`, `get_mut` and `into_inner` for a service wrapping `inner: S`, as every seawall
/// service has them (tower-http's macro of the same name is the precedent): called inside the
/// service's `impl<S, …>` block.
///
/// ```
/// struct Wrapper<S> {
///     inner: S,
/// }
///
/// impl<S> Wrapper<S> {
///     seawall_core::define_inner_service_accessors!();
/// }
///
/// let mut w = Wrapper { inner: 1 };
/// *w.get_mut() += 1;
/// assert_eq!((*w.get_ref(), w.into_inner()), (2, 2));
/// ```
///
/// A service that implements `Drop` cannot move `inner` out: `(ref)` gives it `get_ref` and
/// `get_mut` only.
///
/// ```
/// struct Guarded<S> {
///     inner: S,
/// }
///
/// impl<S> Drop for Guarded<S> {
///     fn drop(&mut self) {}
/// }
///
/// impl<S> Guarded<S> {
///     seawall_core::define_inner_service_accessors!(ref);
/// }
///
/// let mut g = Guarded { inner: 1 };
/// *g.get_mut() += 1;
/// assert_eq!(*g.get_ref(), 2);
/// ```
#[macro_export]
macro_rules! define_inner_service_accessors {
    () => {
        $crate::define_inner_service_accessors!(ref);

        /// Unwraps the inner service.
        pub fn into_inner(self) -> S {
            self.inner
        }
    };
    (ref) => {
        /// The inner service.
        pub fn get_ref(&self) -> &S {
            &self.inner
        }

        /// The inner service, mutably.
        pub fn get_mut(&mut self) -> &mut S {
            &mut self.inner
        }
    };
}

/// Implements a trait whose methods all have defaults for the standard library's plain types:
/// `()`, `bool`, `char`, the integers and floats, `String` and `&str`. It is what makes these
/// types plain requests and responses to seawall (`key::HasAuthority`,
/// [`PlainResponse`](classify::PlainResponse), the retry crate's `Idempotent`), so the three
/// agree on one list.
///
/// ```
/// trait Plain {
///     fn plain(&self) -> bool {
///         true
///     }
/// }
/// seawall_core::impl_for_plain_types!(Plain);
///
/// assert!(7u8.plain() && "x".plain() && ().plain());
/// ```
#[macro_export]
macro_rules! impl_for_plain_types {
    ($trait:path) => {
        $crate::impl_for_plain_types!(@each $trait;
            (), bool, char,
            u8, u16, u32, u64, u128, usize,
            i8, i16, i32, i64, i128, isize,
            f32, f64,
            String, &str,
        );
    };
    (@each $trait:path; $($ty:ty),* $(,)?) => {
        $(impl $trait for $ty {})*
    };
}

pub use self::error::{BoxError, Rejected, RejectionKind, rejected};
pub use self::hook::{Event, Hook};
pub use self::name::Name;
