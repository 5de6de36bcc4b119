//! Durations as the `u64` nanoseconds that lock-free state keeps in an atomic word.

use std::time::Duration;

/// `d` in nanoseconds, saturating at `u64::MAX` (about 584 years).
#[inline]
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nanos_saturate_beyond_u64() {
        assert_eq!(nanos(Duration::from_millis(3)), 3_000_000);
        assert_eq!(nanos(Duration::MAX), u64::MAX);
    }
}
