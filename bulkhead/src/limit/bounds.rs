//! Where an adaptive limit starts and the range it moves in, the same for every algorithm.

use seawall_core::config::{self, ConfigError, Raw};

/// The largest limit any bulkhead accepts.
pub(crate) const MAX_LIMIT: usize = 1_000_000;
/// The range of every limit, for a value that is no count at all.
const LIMITS: &str = "[1, 1000000]";

/// The initial, smallest and largest limit of an adaptive algorithm.
///
/// Each algorithm's spec writes the three fields itself: serde's `flatten` cannot share them,
/// as it does not work with the specs' `deny_unknown_fields`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bounds {
    pub(crate) initial: usize,
    pub(crate) min: usize,
    pub(crate) max: usize,
}

impl Bounds {
    pub(crate) const fn new(initial: usize, min: usize, max: usize) -> Self {
        Self { initial, min, max }
    }

    /// The bounds as an algorithm's spec writes them: `initial`, `min`, `max`.
    pub(crate) fn to_spec(self) -> [Raw<usize>; 3] {
        [self.initial.into(), self.min.into(), self.max.into()]
    }

    /// The bounds read from the spec of `algorithm` (`aimd`); errors name
    /// `<algorithm>.<field>`.
    pub(crate) fn from_spec(
        algorithm: &str,
        [initial, min, max]: [Raw<usize>; 3],
    ) -> Result<Self, ConfigError> {
        let read = || {
            Ok(Self {
                initial: initial.value("initial", LIMITS)?,
                min: min.value("min", LIMITS)?,
                max: max.value("max", LIMITS)?,
            })
        };
        read().map_err(|e: ConfigError| e.within(algorithm))
    }

    /// Checks `1 ≤ min ≤ initial ≤ max ≤ MAX_LIMIT`.
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        config::count_in("min", self.min, 1..=MAX_LIMIT)?;
        config::count_in("max", self.max, self.min..=MAX_LIMIT)?;
        config::count_in("initial", self.initial, self.min..=self.max)?;
        Ok(())
    }
}

/// The `initial`, `min` and `max` setters of an algorithm's configuration, whose `bounds`
/// field is a [`Bounds`].
macro_rules! bounds_setters {
    () => {
        /// The limit to start from.
        #[must_use]
        pub fn initial(mut self, initial: usize) -> Self {
            self.bounds.initial = initial;
            self
        }

        /// The smallest limit, at least 1.
        #[must_use]
        pub fn min(mut self, min: usize) -> Self {
            self.bounds.min = min;
            self
        }

        /// The largest limit.
        #[must_use]
        pub fn max(mut self, max: usize) -> Self {
            self.bounds.max = max;
            self
        }
    };
}
pub(crate) use bounds_setters;
