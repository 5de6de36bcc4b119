//! How a timeout with a deadline learns that a timer below it will wake the call in time, so
//! that it need not arm one of its own.
//!
//! A client stack has two timeouts: the total, outside retry, and the attempt's, inside it.
//! While an attempt waits, its timer usually fires before the total's (an attempt is shorter
//! than the total), and a second armed timer is a second entry in tokio's timer wheel: about
//! 500 instructions of the 4 000 a call through the client stack takes when it waits once.
//! So a timeout with a deadline listens while it polls the layers below, and a timeout below
//! that returns `Pending` with a timer armed reports when that timer fires. A report no later
//! than the listener's deadline covers it: the listener leaves its own timer unarmed for this
//! poll. When the timer below fires, the call is polled again and the listener looks again:
//! the attempt's error answers, or a retry waits on a backoff timer that reports nothing (the
//! listener then arms its own), or a new attempt reports its own timer. Its own timer, once
//! armed, stays armed.
//!
//! A report is only good while its timer is: a timeout future that reported and is dropped
//! withdraws the reports of the poll, so that a layer between that abandons a waiting attempt
//! never leaves the listener without a timer. Reports live in a thread-local cell set around
//! the poll, as the current deadline does: only the layers polled below, on this thread,
//! within this poll, can report.

use std::cell::Cell;

use tokio::time::Instant;

std::thread_local! {
    // The earliest timer reported since the innermost listener started listening.
    static EARLIEST: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// A poll of the layers below, listening for the timers they arm.
pub(crate) struct Listening {
    outer: Option<Instant>,
}

/// Listens for the timers armed below until [`Listening::covers`].
#[inline]
pub(crate) fn listen() -> Listening {
    Listening {
        outer: EARLIEST.replace(None),
    }
}

impl Listening {
    /// Stops listening: whether a timer reported since [`listen`] fires no later than
    /// `deadline`.
    #[inline]
    pub(crate) fn covers(self, deadline: Instant) -> bool {
        let earliest = EARLIEST.replace(self.outer);
        std::mem::forget(self);
        earliest.is_some_and(|at| at <= deadline)
    }
}

impl Drop for Listening {
    // Only when the poll below panicked: `covers` puts the outer listener's back otherwise.
    fn drop(&mut self) {
        EARLIEST.set(self.outer);
    }
}

/// Tells the timeout listening above, if any, that a timer armed for this call fires at `at`.
#[inline]
pub(crate) fn report(at: Instant) {
    let earliest = match EARLIEST.get() {
        Some(earlier) if earlier <= at => earlier,
        _ => at,
    };
    EARLIEST.set(Some(earliest));
}

/// Withdraws the reports made to the timeout listening above: a timer reported may be gone.
/// A timer reported after this, in the same poll, is armed.
#[inline]
pub(crate) fn withdraw() {
    EARLIEST.set(None);
}
