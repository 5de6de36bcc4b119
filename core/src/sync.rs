//! The synchronisation primitives of seawall's lock-free state, checkable by loom.
//!
//! Every crate with hand-written lock-free state (the breaker's state word and probe slots,
//! the bulkhead's semaphore, the keyed maps, the retry budget) imports its atomics and locks
//! from here. A normal build re-exports the standard library's types, so this costs nothing.
//! Built with `RUSTFLAGS="--cfg loom"`, the same names are [loom]'s, whose model checker runs
//! a test under every interleaving of its threads (within a preemption bound) and every
//! reordering the memory model allows: the kind of race a stress test meets once in millions
//! of runs.
//!
//! What is not here, and why:
//! - `Weak` and `Arc::new_cyclic`, and `Arc<dyn Trait>`: loom's `Arc` has neither, so code
//!   that needs them keeps `std::sync::Arc`, which loom threads share all the same (loom's
//!   `Arc` only adds a leak check).
//! - time: library code reads `tokio::time::Instant` (tokio's types are not loom-aware), and
//!   each execution of a model enters a current-thread runtime with a paused clock (see the
//!   crates' `tests/loom.rs`); loom runs all of a model's threads on the test's own thread, so
//!   they all read that clock. Paused, it moves only when the model advances it, so every
//!   interleaving reads the same times, as loom needs: the seam is tokio's own test clock, and
//!   the library carries none.
//!
//! ```
//! use seawall_core::sync::atomic::{AtomicU64, Ordering};
//!
//! // std's `AtomicU64` here; loom's, explored under every interleaving, in a model.
//! let calls = AtomicU64::new(0);
//! calls.fetch_add(1, Ordering::Relaxed);
//! assert_eq!(calls.load(Ordering::Relaxed), 1);
//! ```
//!
//! [loom]: https://docs.rs/loom

#[cfg(not(loom))]
pub use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
#[cfg(not(loom))]
pub use std::thread;

#[cfg(loom)]
pub use loom::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
#[cfg(loom)]
pub use loom::thread;

/// Atomic integers and booleans: the standard library's, or loom's under `--cfg loom`.
pub mod atomic {
    #[cfg(not(loom))]
    pub use std::sync::atomic::{
        AtomicBool, AtomicI64, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering,
    };

    #[cfg(loom)]
    pub use self::seq_cst::{AtomicBool, AtomicI64, AtomicU8, AtomicU32, AtomicU64, AtomicUsize};
    #[cfg(loom)]
    pub use std::sync::atomic::Ordering;

    /// loom's atomics with `SeqCst` accesses as the memory model has them.
    ///
    /// loom treats a `SeqCst` load, store or read-modify-write as `AcqRel` (its README says so),
    /// which drops the single total order `SeqCst` promises: a store-then-load hand-off such as
    /// the bulkhead's (a releaser decrements in-flight then reads the queue length, a waiter
    /// increments the queue length then reads in-flight) then fails a model that real hardware
    /// never fails. loom does model `fence(SeqCst)`, so here a `SeqCst` access is fenced on both
    /// sides, which restores the total order among `SeqCst` accesses; other orderings pass
    /// through untouched. Only models pay for it.
    #[cfg(loom)]
    mod seq_cst {
        use std::sync::atomic::Ordering::{self, SeqCst};

        use loom::sync::atomic as inner;

        #[inline]
        fn fenced<R>(order: Ordering, op: impl FnOnce() -> R) -> R {
            if order == SeqCst {
                inner::fence(SeqCst);
            }
            let result = op();
            if order == SeqCst {
                inner::fence(SeqCst);
            }
            result
        }

        macro_rules! atomic {
            ($name:ident, $t:ty $(, $int:ident)?) => {
                #[doc = concat!("loom's `", stringify!($name), "`, `SeqCst` accesses fenced.")]
                #[derive(Debug, Default)]
                pub struct $name(inner::$name);

                impl $name {
                    #[doc = concat!("A new `", stringify!($name), "`.")]
                    #[track_caller]
                    pub fn new(value: $t) -> Self {
                        Self(inner::$name::new(value))
                    }

                    /// The value, from an atomic no one else can see.
                    pub fn into_inner(self) -> $t {
                        self.0.into_inner()
                    }

                    /// Loads the value.
                    #[track_caller]
                    pub fn load(&self, order: Ordering) -> $t {
                        fenced(order, || self.0.load(order))
                    }

                    /// Stores `value`.
                    #[track_caller]
                    pub fn store(&self, value: $t, order: Ordering) {
                        fenced(order, || self.0.store(value, order))
                    }

                    /// Stores `value`, returning the previous value.
                    #[track_caller]
                    pub fn swap(&self, value: $t, order: Ordering) -> $t {
                        fenced(order, || self.0.swap(value, order))
                    }

                    /// Stores `new` if the value is `current`.
                    #[track_caller]
                    pub fn compare_exchange(
                        &self,
                        current: $t,
                        new: $t,
                        success: Ordering,
                        failure: Ordering,
                    ) -> Result<$t, $t> {
                        fenced(success, || self.0.compare_exchange(current, new, success, failure))
                    }

                    /// Stores `new` if the value is `current`; may fail spuriously.
                    #[track_caller]
                    pub fn compare_exchange_weak(
                        &self,
                        current: $t,
                        new: $t,
                        success: Ordering,
                        failure: Ordering,
                    ) -> Result<$t, $t> {
                        fenced(success, || {
                            self.0.compare_exchange_weak(current, new, success, failure)
                        })
                    }

                    /// Applies `f` until it returns `None` or the value is swapped in.
                    #[track_caller]
                    pub fn fetch_update<F>(
                        &self,
                        set: Ordering,
                        fetch: Ordering,
                        f: F,
                    ) -> Result<$t, $t>
                    where
                        F: FnMut($t) -> Option<$t>,
                    {
                        fenced(set, || self.0.fetch_update(set, fetch, f))
                    }
                }

                $(
                    atomic!(@$int $name, $t);
                )?
            };
            (@int $name:ident, $t:ty) => {
                impl $name {
                    /// Adds `value`, returning the previous value.
                    #[track_caller]
                    pub fn fetch_add(&self, value: $t, order: Ordering) -> $t {
                        fenced(order, || self.0.fetch_add(value, order))
                    }

                    /// Subtracts `value`, returning the previous value.
                    #[track_caller]
                    pub fn fetch_sub(&self, value: $t, order: Ordering) -> $t {
                        fenced(order, || self.0.fetch_sub(value, order))
                    }

                    /// Stores the maximum of the value and `value`, returning the previous value.
                    #[track_caller]
                    pub fn fetch_max(&self, value: $t, order: Ordering) -> $t {
                        fenced(order, || self.0.fetch_max(value, order))
                    }

                    /// Stores the minimum of the value and `value`, returning the previous value.
                    #[track_caller]
                    pub fn fetch_min(&self, value: $t, order: Ordering) -> $t {
                        fenced(order, || self.0.fetch_min(value, order))
                    }

                    /// Stores the bitwise or of the value and `value`, returning the previous
                    /// value.
                    #[track_caller]
                    pub fn fetch_or(&self, value: $t, order: Ordering) -> $t {
                        fenced(order, || self.0.fetch_or(value, order))
                    }
                }
            };
        }

        atomic!(AtomicBool, bool);
        atomic!(AtomicU8, u8, int);
        atomic!(AtomicU32, u32, int);
        atomic!(AtomicU64, u64, int);
        atomic!(AtomicI64, i64, int);
        atomic!(AtomicUsize, usize, int);
    }
}
