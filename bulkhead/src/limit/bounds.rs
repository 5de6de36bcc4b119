//! Where an adaptive limit starts and the range it moves in, the same for every algorithm.

use seawall_core::config::{self, ConfigError, Raw};

/// The largest limit any bulkhead accepts.
pub(crate) const MAX_LIMIT: usize = 1_000_000;
/// The range of every limit, for a value that is no count at all.
const LIMITS: &str = "[1, 1000000]";

/// The initial, smallest and largest limit of an adaptive algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bounds {
    pub(crate) initial: usize,
    pub(crate) min: usize,
    pub(crate) max: usize,
}

impl Bounds {
    /// The bounds read from a spec; errors name `fields` (initial, min, max).
    pub(crate) fn from_spec(
        fields: [&'static str; 3],
        initial: Raw<usize>,
        min: Raw<usize>,
        max: Raw<usize>,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            initial: initial.value(fields[0], LIMITS)?,
            min: min.value(fields[1], LIMITS)?,
            max: max.value(fields[2], LIMITS)?,
        })
    }

    /// Checks `1 ≤ min ≤ initial ≤ max ≤ MAX_LIMIT`.
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        config::count_in("min", self.min, 1..=MAX_LIMIT)?;
        config::count_in("max", self.max, self.min..=MAX_LIMIT)?;
        config::count_in("initial", self.initial, self.min..=self.max)?;
        Ok(())
    }
}
