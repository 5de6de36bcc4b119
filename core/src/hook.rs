//! One hook type for every layer's events.
//!
//! Every layer tells its caller what it decides through `on_*` methods taking a closure over
//! a borrowed event (`.on_rejected(|e| …)`): the event borrows the layer's name and the call's
//! details, so firing a hook allocates nothing. [`Hook<E>`] is where a layer keeps such a
//! closure; [`Event`] names the event type for every lifetime it is borrowed for.
//!
//! One rule for all of them: a hook lives in the layer's shared state, so it is the same for
//! every clone of the layer, every service it made and every handle, whenever they were made.
//! Setting it again replaces it (copy on write: the new closure is swapped in whole), and a
//! call that fires it reads it without a lock.
//!
//! ```
//! use seawall_core::hook::{Event, Hook};
//!
//! /// What a layer tells its hook when it rejects a call.
//! pub struct RejectedEvent<'a> {
//!     pub name: &'a str,
//! }
//!
//! impl Event for RejectedEvent<'_> {
//!     type Of<'a> = RejectedEvent<'a>;
//! }
//!
//! let on_rejected = Hook::<RejectedEvent<'static>>::default();
//! // What a layer's `.on_rejected(|e| …)` does with the user's closure:
//! on_rejected.set(|e| assert_eq!(e.name, "db"));
//! let name = String::from("db");
//! on_rejected.call(RejectedEvent { name: &name });
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
// Plain std atomics: a hook is set while a layer is built and read when an event fires, which
// no loom model explores.
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwapOption;

/// An event type, for every lifetime of the data it borrows.
///
/// Implemented by each event struct as `impl Event for XEvent<'_> { type Of<'a> = XEvent<'a>; }`.
pub trait Event {
    /// The event borrowing for `'a`.
    type Of<'a>;
}

/// A closure over the events of type `E`, as a trait object whose type needs no bound on `E`.
trait Call<E>: Send + Sync {
    fn call(&self, event: E::Of<'_>)
    where
        E: Event;
}

impl<E: Event, F> Call<E> for F
where
    F: for<'a> Fn(E::Of<'a>) + Send + Sync,
{
    fn call(&self, event: E::Of<'_>) {
        self(event)
    }
}

/// The closure a layer calls with each event of type `E`, or nothing.
///
/// Written `Hook<XEvent<'static>>`: the lifetime only names the type, and each call borrows for
/// its own.
///
/// A clone is the same hook: setting one sets all, which is how a layer's clones, its services
/// and its handles share it.
pub struct Hook<E> {
    slot: Arc<Slot<E>>,
}

struct Slot<E> {
    hook: ArcSwapOption<Box<dyn Call<E>>>,
    // Lets a call with no hook skip even arc-swap's lock-free load.
    set: AtomicBool,
    event: PhantomData<fn(E)>,
}

impl<E: Event> Hook<E> {
    /// Calls `hook` with every event from now on, in place of the hook set before.
    pub fn set<F>(&self, hook: F)
    where
        F: for<'a> Fn(E::Of<'a>) + Send + Sync + 'static,
    {
        let hook: Box<dyn Call<E>> = Box::new(hook);
        self.slot.hook.store(Some(hook.into()));
        self.slot.set.store(true, Ordering::Release);
    }

    /// Calls the hook, if one is set, with `event`.
    pub fn call(&self, event: E::Of<'_>) {
        if !self.is_set() {
            return;
        }
        if let Some(hook) = &*self.slot.hook.load() {
            hook.call(event);
        }
    }
}

impl<E> Hook<E> {
    /// Whether a hook is set.
    pub fn is_set(&self) -> bool {
        self.slot.set.load(Ordering::Acquire)
    }
}

impl<E> Default for Hook<E> {
    fn default() -> Self {
        Self {
            slot: Arc::new(Slot {
                hook: ArcSwapOption::empty(),
                set: AtomicBool::new(false),
                event: PhantomData,
            }),
        }
    }
}

impl<E> Clone for Hook<E> {
    fn clone(&self) -> Self {
        Self {
            slot: self.slot.clone(),
        }
    }
}

impl<E> fmt::Debug for Hook<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hook").field("set", &self.is_set()).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    struct Seen<'a>(&'a str);

    impl Event for Seen<'_> {
        type Of<'a> = Seen<'a>;
    }

    #[test]
    fn an_empty_hook_calls_nothing_and_a_set_one_is_replaced_whole_in_every_clone() {
        let hook = Hook::<Seen<'static>>::default();
        hook.call(Seen("before"));
        assert!(!hook.is_set());
        let clone = hook.clone();

        let first = Arc::new(AtomicUsize::new(0));
        let counted = first.clone();
        hook.set(move |e| {
            assert_eq!(e.0, "call");
            counted.fetch_add(1, Ordering::Relaxed);
        });
        let name = String::from("call");
        hook.call(Seen(&name));
        assert_eq!(first.load(Ordering::Relaxed), 1);

        let second = Arc::new(AtomicUsize::new(0));
        let counted = second.clone();
        clone.set(move |_| {
            counted.fetch_add(1, Ordering::Relaxed);
        });
        hook.call(Seen(&name));
        assert_eq!(
            (
                first.load(Ordering::Relaxed),
                second.load(Ordering::Relaxed)
            ),
            (1, 1)
        );
    }
}
