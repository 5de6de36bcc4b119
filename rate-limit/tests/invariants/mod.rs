//! The keyed rate limit's concurrency invariants, written once: the loom models
//! (`tests/loom.rs`, every interleaving of a few threads) and the concurrent tests of
//! `tests/keyed.rs` (many tasks on a multi-thread runtime) both check them.
#![allow(dead_code, unreachable_pub)]

/// Each key's bucket, however many callers race to create it, is one bucket: no more permits
/// than the keys' bursts.
pub fn no_more_than_the_bursts(permitted: u64, keys: u64, burst: u64) {
    assert!(
        permitted <= keys * burst,
        "{permitted} permits for {keys} keys of burst {burst}: a key had two buckets"
    );
}

/// The map never holds more keys than its bound, and the count kept beside it is true.
pub fn key_count_bounded_and_true(tracked: usize, actual: usize, max_keys: usize) {
    assert!(
        tracked <= max_keys,
        "{tracked} keys kept, at most {max_keys}"
    );
    assert_eq!(tracked, actual, "the count of keys drifted from the map");
}
