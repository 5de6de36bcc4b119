//! The caller's deadline: the instant by which the caller stops waiting for an answer.
//!
//! Work done for a caller that has given up only adds load, and a call rejected because its
//! caller's time ran out says nothing about the downstream. So every layer that waits on a
//! caller's behalf — a bulkhead's queue, a rate limiter in wait mode, a timeout — reads the
//! [`Deadline`] and never waits past it, and a call that outlives it ends as
//! [`DeadlineExceeded`](crate::RejectionKind::DeadlineExceeded), which no breaker, health
//! check or retry counts against the downstream.
//!
//! The deadline is stamped once, when the request arrives (a server stack's outermost layer
//! reads `grpc-timeout`), and travels two ways: as a request extension, for requests handed
//! between tasks, and as the [current](Deadline::current) deadline (set on the thread around
//! each call and poll of the layers below, as a task-local would be), so that layers generic
//! over any request type read it too. It lives here, in seawall-core, because those layers
//! depend on nothing else.
//!
//! ```
//! use std::time::Duration;
//! use seawall_core::Deadline;
//! use tokio::time::Instant;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let deadline = Deadline(Instant::now() + Duration::from_millis(300));
//! assert_eq!(Deadline::current(), None);
//! let left = deadline.scope(|| Deadline::current().map(|d| d.remaining()));
//! assert_eq!(left, Some(Duration::from_millis(300)));
//! tokio::time::advance(Duration::from_secs(1)).await;
//! assert!(deadline.has_passed());
//! # }
//! ```

use std::time::Duration;

use tokio::time::Instant;

/// The instant by which a request must be answered, kept in the request's extensions and made
/// [current](Self::current) while the layers below its stamp are called and polled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(pub Instant);

std::thread_local! {
    // Set only by `scope`, around a call or a poll: see `crate::current`.
    static CURRENT: std::cell::Cell<Option<Deadline>> = const { std::cell::Cell::new(None) };
}

impl Deadline {
    /// The time left until the deadline, zero once it has passed.
    pub fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// Whether the deadline has passed: nothing is left of the caller's time.
    pub fn has_passed(&self) -> bool {
        self.0 <= Instant::now()
    }

    /// The deadline of the call being served, when code runs inside a call under a layer
    /// that stamps or propagates deadlines.
    #[inline]
    pub fn current() -> Option<Self> {
        crate::current::get(&CURRENT)
    }

    /// Runs `f` with `self` as the [current](Self::current) deadline.
    #[inline]
    pub fn scope<R>(self, f: impl FnOnce() -> R) -> R {
        crate::current::scope(&CURRENT, self, f)
    }

    /// Runs `f` with `deadline` as the [current](Self::current) deadline when there is one,
    /// and with the current one left as it is when there is none.
    #[inline]
    pub fn scope_if<R>(deadline: Option<Self>, f: impl FnOnce() -> R) -> R {
        crate::current::scope_if(&CURRENT, deadline, f)
    }

    /// `wait`, cut to what is left of the [current](Self::current) deadline, if any.
    pub fn bound(wait: Duration) -> Duration {
        Self::current().map_or(wait, |deadline| wait.min(deadline.remaining()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn current_only_inside_a_scope() {
        let deadline = Deadline(Instant::now() + Duration::from_secs(2));
        assert_eq!(Deadline::current(), None);
        assert_eq!(deadline.scope(Deadline::current), Some(deadline));
        let inner = Deadline(Instant::now() + Duration::from_secs(1));
        assert_eq!(
            deadline.scope(|| inner.scope(Deadline::current)),
            Some(inner),
            "the innermost scope wins"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn bound_cuts_a_wait_to_the_time_left() {
        let wait = Duration::from_secs(5);
        assert_eq!(Deadline::bound(wait), wait, "no deadline, no bound");
        let deadline = Deadline(Instant::now() + Duration::from_millis(300));
        assert_eq!(
            deadline.scope(|| Deadline::bound(wait)),
            Duration::from_millis(300)
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(deadline.has_passed());
        assert_eq!(deadline.scope(|| Deadline::bound(wait)), Duration::ZERO);
    }
}
