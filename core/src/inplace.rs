//! A layer's `call` that builds its inner call's response future where its own future keeps
//! it, rather than copying it there.
//!
//! A layer's response future holds the future of the layer below, so in a stack each `call`
//! returns a future that the `call` above moves into its own: in the client stack those
//! copies were 346 instructions of a call's 2552 (`memcpy` of 200 to 824 bytes at five
//! levels). LLVM writes a callee's result straight into its final place (its "call slot"
//! optimisation) only when:
//! - the value comes from one call, not from a `match` over two (tower's `Either`, a deadline
//!   set or not), and that call is not inlined (an inlined `call` builds its future from
//!   parts, and each part is copied);
//! - nothing between the call and the move branches or may unwind into a clean-up: an `Arc`
//!   cloned after the call (its overflow check is a branch), or a value with a destructor
//!   alive across the call (the call then has an unwinding edge), keeps the copy;
//! - the callee's return pointer is known not to be captured, which LLVM infers only for a
//!   callee in the caller's own codegen unit. Which unit an instance of a generic `call` lands
//!   in is the compiler's choice and moves with unrelated code: under the default release
//!   profile (16 units) the client stack's copies come and go with changes to other crates
//!   (`memcpy` 58 to 134 instructions a call, the breaker's `call` and the throttle's,
//!   `FUNCTIONS=1 benches/callgrind.sh stack-pending`); built with `codegen-units = 1`, none.
//!
//! So a layer whose inner future is large makes its whole `call` with [`build`], clones what
//! its future needs before calling the layer below ([`EarlyClone`]: no destructor is pending
//! across the call, so a panic in the inner `call` leaks that count), and makes the inner call
//! once, with [`call`], a thread-local scope inside it. Over a small inner future each of these
//! is the plain code: the layer's `call` inlined, its clones after the inner call.

use std::mem::{ManuallyDrop, size_of};

/// The size, in bytes, from which a future is made out of line: above the futures of the
/// services a single layer wraps (a client's call, a few words), below the futures of a
/// stack's inner layers (392 bytes and up in the client stack). Moving 256 bytes costs about
/// 30 instructions; a call out of line about 5.
const LARGE: usize = 256;

/// `f()`, the inner service's `call` whose future `R` is, made out of line when that future
/// is large, so that the future is written where the caller stores it instead of being
/// copied there.
#[inline(always)]
pub fn call<R>(f: impl FnOnce() -> R) -> R {
    build::<R, R>(f)
}

/// `f()`, a layer's whole `call` over an inner service whose future is `Inner`, made out of
/// line when that future is large: the layer's future is then built where its caller keeps
/// it, and the inner future made with [`call`] written into it in place.
#[inline(always)]
pub fn build<Inner, R>(f: impl FnOnce() -> R) -> R {
    if const { size_of::<Inner>() >= LARGE } {
        out_of_line(f)
    } else {
        f()
    }
}

#[inline(never)]
fn out_of_line<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// A clone a layer's future needs, taken before the inner call when the inner future is large
/// (so that nothing branches or holds a destructor between that call and the move of its
/// future), after it otherwise.
#[derive(Debug)]
pub struct EarlyClone<T>(Option<ManuallyDrop<T>>);

impl<T: Clone> EarlyClone<T> {
    /// Clones `value` now when the inner future `Inner` is large.
    #[inline(always)]
    pub fn new<Inner>(value: &T) -> Self {
        Self(if const { size_of::<Inner>() >= LARGE } {
            Some(ManuallyDrop::new(value.clone()))
        } else {
            None
        })
    }

    /// The clone taken early, or one of `value` taken now.
    #[inline(always)]
    pub fn get(self, value: &T) -> T {
        match self.0 {
            Some(early) => ManuallyDrop::into_inner(early),
            None => value.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_and_build_return_what_the_closure_makes_small_or_large() {
        assert_eq!(call(|| 7u8), 7);
        assert_eq!(build::<[u8; LARGE], _>(|| 7u8), 7);
        let large = call(|| [3u64; LARGE]);
        assert!(large.iter().all(|&x| x == 3));
        let mut calls = 0;
        let built = build::<[u8; LARGE], _>(|| {
            calls += 1;
            [calls; LARGE]
        });
        assert_eq!((calls, built[LARGE - 1]), (1, 1));
    }

    #[test]
    fn an_early_clone_is_taken_before_the_call_only_for_a_large_future() {
        let shared = std::sync::Arc::new(());
        let early = EarlyClone::new::<[u8; LARGE]>(&shared);
        assert_eq!(std::sync::Arc::strong_count(&shared), 2);
        assert_eq!(std::sync::Arc::strong_count(&early.get(&shared)), 2);
        let late = EarlyClone::new::<u8>(&shared);
        assert_eq!(std::sync::Arc::strong_count(&shared), 1);
        let clone = late.get(&shared);
        assert_eq!(std::sync::Arc::strong_count(&clone), 2);
    }
}
