//! A value made current on this thread while a closure runs: how a layer hands the layers
//! below it the caller's [`Deadline`](crate::Deadline) or the [`Attempt`](crate::Attempt)
//! without a request extension.
//!
//! A layer makes the value current around each `call` and each poll of the layers below, so it
//! follows the call from task to task as a tokio task-local would. tokio's
//! `LocalKey::sync_scope` does the same but is not inlined, and returns the closure's result
//! (a response future, hundreds of bytes in a stack) through a `Result`, which costs copies of
//! it: in the client stack, 424 instructions a call of 4 304 went to those copies. A
//! thread-local `Cell` with a guard that restores the previous value, inlined, moves the
//! result once.

use std::cell::Cell;
use std::thread::LocalKey;

/// Runs `f` with `value` in `key`, and puts back what was there before, even if `f` panics.
#[inline]
pub(crate) fn scope<T: Copy + 'static, R>(
    key: &'static LocalKey<Cell<Option<T>>>,
    value: T,
    f: impl FnOnce() -> R,
) -> R {
    let _restore = Restore {
        key,
        previous: key.replace(Some(value)),
    };
    f()
}

/// [`scope`] when `value` is `Some`; otherwise runs `f` with `key` as it is. One call of `f`
/// either way, so that what `f` returns is built where the caller keeps it (see
/// [`inplace`](crate::inplace)).
#[inline]
pub(crate) fn scope_if<T: Copy + 'static, R>(
    key: &'static LocalKey<Cell<Option<T>>>,
    value: Option<T>,
    f: impl FnOnce() -> R,
) -> R {
    let _restore = value.map(|value| Restore {
        key,
        previous: key.replace(Some(value)),
    });
    f()
}

/// Puts `previous` back in `key` when dropped.
struct Restore<T: Copy + 'static> {
    key: &'static LocalKey<Cell<Option<T>>>,
    previous: Option<T>,
}

impl<T: Copy + 'static> Drop for Restore<T> {
    #[inline]
    fn drop(&mut self) {
        self.key.set(self.previous);
    }
}

/// The value in `key`, if a [`scope`] around this code put one there.
#[inline]
pub(crate) fn get<T: Copy + 'static>(key: &'static LocalKey<Cell<Option<T>>>) -> Option<T> {
    key.get()
}

#[cfg(test)]
mod tests {
    use super::*;

    std::thread_local! {
        static KEY: Cell<Option<u32>> = const { Cell::new(None) };
    }

    #[test]
    fn a_scope_puts_back_the_value_before_it_even_on_panic() {
        assert_eq!(get(&KEY), None);
        let inner = scope(&KEY, 1, || {
            (get(&KEY), scope(&KEY, 2, || get(&KEY)), get(&KEY))
        });
        assert_eq!(inner, (Some(1), Some(2), Some(1)));
        assert_eq!(get(&KEY), None);
        let panicked = std::panic::catch_unwind(|| scope(&KEY, 3, || panic!("in the scope")));
        assert!(panicked.is_err());
        assert_eq!(get(&KEY), None, "restored while unwinding");
    }

    #[test]
    fn a_scope_if_sets_a_value_puts_back_the_one_before_and_leaves_it_without_one() {
        assert_eq!(scope_if(&KEY, None, || get(&KEY)), None);
        scope(&KEY, 1, || {
            assert_eq!(scope_if(&KEY, None, || get(&KEY)), Some(1));
            assert_eq!(scope_if(&KEY, Some(2), || get(&KEY)), Some(2));
            assert_eq!(get(&KEY), Some(1));
        });
        assert_eq!(get(&KEY), None);
        let panicked = std::panic::catch_unwind(|| scope_if(&KEY, Some(3), || panic!("in it")));
        assert!(panicked.is_err());
        assert_eq!(get(&KEY), None, "restored while unwinding");
    }
}
