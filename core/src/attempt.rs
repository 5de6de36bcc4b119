//! Which attempt of a call is being made, and whether another may follow it.
//!
//! A retry layer makes the attempts; the layers below it (an attempt timeout, above all)
//! behave better when they know which one they serve. An attempt timeout cuts an attempt early
//! so that a retry has time left; when no retry can follow (attempts used up, the retry
//! budget spent, a request that may not be sent twice), cutting it early only turns a slow
//! answer into a failure, and the attempt may as well use what is left of the caller's
//! [`Deadline`](crate::Deadline).
//!
//! The retry layer makes the [`Attempt`] current (on the thread, as the deadline is)
//! while it calls the layers below, so layers generic over any request type read it, with no
//! request extension and no allocation.
//!
//! ```
//! use seawall_core::Attempt;
//!
//! assert_eq!(Attempt::current(), None);
//! let last = Attempt { number: 3, last: true };
//! assert_eq!(last.scope(Attempt::current), Some(last));
//! ```

std::thread_local! {
    // Set only by `scope`, around a call: see `crate::current`.
    static CURRENT: std::cell::Cell<Option<Attempt>> = const { std::cell::Cell::new(None) };
}

/// One attempt of a call: its number (1 for the first) and whether it is the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Attempt {
    /// 1 for the first attempt, 2 for the first retry, and so on.
    pub number: u32,
    /// No retry can follow this attempt, as far as the retry layer can tell when it starts.
    pub last: bool,
}

impl Attempt {
    /// The attempt being made, when called from inside a retry layer's `call` of the layers
    /// below.
    #[inline]
    pub fn current() -> Option<Self> {
        crate::current::get(&CURRENT)
    }

    /// Runs `f` (the call of the layers below) with `self` as the [current](Self::current)
    /// attempt.
    #[inline]
    pub fn scope<R>(self, f: impl FnOnce() -> R) -> R {
        crate::current::scope(&CURRENT, self, f)
    }
}
