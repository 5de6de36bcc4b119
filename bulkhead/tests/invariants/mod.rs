//! The bulkhead's concurrency invariants, written once: the loom models (`tests/loom.rs`, every
//! interleaving of a few threads) and the stress tests (`tests/stress.rs`, many tasks on a
//! multi-thread runtime) both check them.
#![allow(dead_code, unreachable_pub)]

use seawall_bulkhead::BulkheadHandle;

/// Never more calls inside the downstream at once than the bulkhead's limit allowed.
pub fn within_limit(most_inside: usize, limit: usize) {
    assert!(
        most_inside <= limit,
        "{most_inside} calls were inside the downstream at once, the limit is {limit}"
    );
}

/// Once every call has ended, every slot has come back and every waiter has left the queue:
/// none lost, none given twice.
pub fn every_slot_back(handle: &BulkheadHandle) {
    assert_eq!(handle.in_flight(), 0, "a slot did not come back");
    assert_eq!(handle.queued(), 0, "a waiter did not leave the queue");
}
