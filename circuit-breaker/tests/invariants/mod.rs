//! The breaker's concurrency invariants, written once: the loom models (`tests/loom.rs`, every
//! interleaving of a few threads) and the stress tests (`tests/stress.rs`, many tasks on a
//! multi-thread runtime) both check them.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use seawall_circuit_breaker::{CircuitBreakerHandle, CircuitState};
use seawall_core::{BoxError, RejectionKind, rejected};

/// Never more probes reach the downstream at once than half-open admits.
pub fn probes_within_limit(max_in_flight: u64, probes: u32) {
    assert!(
        max_in_flight <= u64::from(probes),
        "{max_in_flight} probes in flight at once, {probes} allowed"
    );
}

/// A call the breaker turned away says so, and never asks to wait longer than the longest
/// open time the configuration allows; the `retry_after` it carries, if any.
pub fn rejection_waits_at_most(err: &BoxError, longest_open: Duration) -> Option<Duration> {
    let rejection = rejected(&**err).expect("the breaker's own rejection");
    assert_eq!(rejection.kind(), RejectionKind::CircuitOpen);
    let after = rejection.retry_after();
    if let Some(after) = after {
        assert!(
            after <= longest_open,
            "a rejection asked to wait {after:?}, the open time is at most {longest_open:?}"
        );
    }
    after
}

/// What a handle reports while open never exceeds the longest open time either.
pub fn open_remaining_at_most(handle: &CircuitBreakerHandle, longest_open: Duration) {
    if let Some(left) = handle.open_remaining() {
        assert!(
            left <= longest_open,
            "open for another {left:?}, the open time is at most {longest_open:?}"
        );
    }
}

/// Every call made was either let through to the downstream or rejected, exactly once.
pub fn every_call_accounted(made: u64, admitted: u64, rejected: u64) {
    assert_eq!(
        admitted + rejected,
        made,
        "{made} calls made, {admitted} admitted and {rejected} rejected"
    );
}

/// Once every call has ended, no probe slot is held: as many successful calls in a row as
/// there are slots, made after the others, all get through and close the breaker.
pub fn no_probe_slot_held(successes: &[Result<(), BoxError>], state: CircuitState) {
    for (i, result) in successes.iter().enumerate() {
        if let Err(err) = result {
            panic!("call {i} after the others was turned away ({err}): a probe slot was lost");
        }
    }
    assert_eq!(state, CircuitState::Closed);
}

/// Subscribers were last told the state the breaker is in.
pub fn announced_state_is_current(handle: &CircuitBreakerHandle) {
    let announced = *handle.subscribe().borrow();
    assert_eq!(
        announced,
        handle.state(),
        "subscribers were told another state"
    );
}
