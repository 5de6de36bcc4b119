//! Durations as the `u64` nanoseconds that lock-free state keeps in an atomic word, the
//! whole seconds since an instant that per-second buckets are indexed by, and one clock
//! reading shared by the layers a call goes through.

use std::cell::Cell;
use std::time::Duration;

use tokio::time::Instant;

/// `d` in nanoseconds, saturating at `u64::MAX` (about 584 years).
#[inline]
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A second this thread found: `second` whole seconds after `epoch`, from `start` until `end`.
#[derive(Clone, Copy)]
struct Found {
    epoch: Instant,
    start: Instant,
    end: Instant,
    second: u64,
}

std::thread_local! {
    static FOUND: Cell<Option<Found>> = const { Cell::new(None) };
}

/// Whole seconds from `epoch` to `now`, zero when `now` is earlier: the bucket of a
/// per-second window (a time-window breaker's) that a call at `now` falls in.
///
/// An `Instant` subtraction is a call into std and a `Duration` built, about 55 instructions,
/// as much as the rest of a time-window breaker's bookkeeping. Calls come many to a second, so
/// this thread keeps the last second it found, with the instants it runs between: a call in
/// the same second compares instants instead, and gets the same answer.
#[inline]
pub fn seconds_since(epoch: Instant, now: Instant) -> u64 {
    match FOUND.get() {
        Some(found) if found.epoch == epoch && found.start <= now && now < found.end => {
            found.second
        }
        _ => find_second(epoch, now),
    }
}

#[cold]
#[inline(never)]
fn find_second(epoch: Instant, now: Instant) -> u64 {
    let second = now.saturating_duration_since(epoch).as_secs();
    let start = epoch.checked_add(Duration::from_secs(second));
    if let Some(start) = start.filter(|start| *start <= now)
        && let Some(end) = start.checked_add(Duration::from_secs(1))
    {
        FOUND.set(Some(Found {
            epoch,
            start,
            end,
            second,
        }));
    }
    second
}

std::thread_local! {
    // `Some` while a `CallScope` is open, holding the reading its first `call_now`
    // took, if one did.
    static CALL_NOW: Cell<Option<Option<Instant>>> = const { Cell::new(None) };
}

/// Kept by a layer while its `call` runs (calling the layers below it), so that every
/// [`call_now`] until it is dropped gives the same clock reading, taken by the first: a stack
/// whose layers each read the clock when called (a total timeout's deadline, retry's budget,
/// an adaptive attempt timeout) reads it once. Opened within another, it changes nothing, so
/// the outermost layer's holds.
///
/// It covers a `call`, never a poll: a retry's later attempt, made in a poll, reads its own
/// time. A call runs without yielding, so on tokio's paused clock the shared reading is the
/// one each layer would have taken.
///
/// A guard rather than a closure: a response future returned through a closure was copied
/// once more (in the client stack, 111 instructions of `memcpy` a call).
#[derive(Debug)]
#[must_use = "the scope ends when the guard is dropped"]
pub struct CallScope {
    opened: bool,
}

impl CallScope {
    /// Opens a scope, unless one is open on this thread already.
    #[inline]
    pub fn open() -> Self {
        let opened = CALL_NOW.get().is_none();
        if opened {
            CALL_NOW.set(Some(None));
        }
        Self { opened }
    }
}

impl Drop for CallScope {
    #[inline]
    fn drop(&mut self) {
        if self.opened {
            CALL_NOW.set(None);
        }
    }
}

/// Now, for a layer being called: within a [`CallScope`], the reading the scope's first
/// `call_now` took; outside one, a fresh reading.
#[inline]
pub fn call_now() -> Instant {
    match CALL_NOW.get() {
        Some(Some(now)) => now,
        Some(None) => {
            let now = Instant::now();
            CALL_NOW.set(Some(Some(now)));
            now
        }
        None => Instant::now(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Against the subtraction, with the clock crossing second boundaries between calls,
        /// going back (another runtime's clock), and several epochs in turn.
        #[test]
        fn seconds_since_is_the_whole_seconds_of_the_difference(
            steps in proptest::collection::vec((0usize..3, -1_500_000_000i64..1_500_000_000), 1..200),
        ) {
            let base = Instant::now();
            let epochs = [
                base,
                base + Duration::from_nanos(999_999_999),
                base + Duration::from_secs(5),
            ];
            let mut at = base + Duration::from_secs(10);
            for (epoch, step) in steps {
                at = if step >= 0 {
                    at + Duration::from_nanos(step.unsigned_abs())
                } else {
                    at.checked_sub(Duration::from_nanos(step.unsigned_abs())).unwrap_or(base)
                };
                let epoch = epochs[epoch];
                prop_assert_eq!(
                    seconds_since(epoch, at),
                    at.saturating_duration_since(epoch).as_secs()
                );
            }
        }
    }

    #[test]
    fn seconds_since_at_the_edges_of_a_second() {
        let epoch = Instant::now();
        let second = Duration::from_secs(1);
        let nano = Duration::from_nanos(1);
        for (at, expected) in [
            (epoch + second - nano, 0),
            (epoch + second, 1),
            (epoch + second - nano, 0),
            (epoch + 2 * second - nano, 1),
            (epoch + 2 * second, 2),
            (epoch, 0),
        ] {
            assert_eq!(seconds_since(epoch, at), expected, "{:?}", at - epoch);
        }
        let earlier = epoch.checked_sub(second).unwrap_or(epoch);
        assert_eq!(seconds_since(epoch, earlier), 0, "before the epoch");
    }

    // A current-thread runtime: the scope is this thread's, held across the awaits below as
    // a layer's `call` would never do, only to let the paused clock move within it.
    #[tokio::test(start_paused = true)]
    async fn a_call_scope_shares_its_first_reading_and_ends_with_the_call() {
        let ms = Duration::from_millis(1);
        let (first, nested, later) = {
            let _call = CallScope::open();
            let first = call_now();
            tokio::time::advance(ms).await;
            let nested = {
                let _nested = CallScope::open();
                call_now()
            };
            tokio::time::advance(ms).await;
            (first, nested, call_now())
        };
        assert_eq!(
            (nested, later),
            (first, first),
            "one reading for the whole call"
        );
        let after = call_now();
        assert_eq!(after, first + 2 * ms, "the scope ended with the call");
        tokio::time::advance(ms).await;
        assert_eq!(
            call_now(),
            after + ms,
            "outside a scope, a fresh reading each time"
        );
        let _call = CallScope::open();
        assert_eq!(call_now(), after + ms, "a new call, a new reading");
    }

    #[test]
    fn a_call_scope_without_a_reading_takes_none() {
        {
            let _call = CallScope::open();
            assert_eq!(CALL_NOW.get(), Some(None));
        }
        assert_eq!(CALL_NOW.get(), None);
    }

    #[test]
    fn nanos_saturate_beyond_u64() {
        assert_eq!(nanos(Duration::from_millis(3)), 3_000_000);
        assert_eq!(nanos(Duration::MAX), u64::MAX);
    }
}
