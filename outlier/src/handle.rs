//! A view of an endpoint set from outside its calls.

use std::fmt;
use std::sync::Arc;

use seawall_core::config::ConfigError;
use tokio::time::Instant;

use crate::config::OutlierConfig;
use crate::event::{EjectionReason, EndpointStatus};
use crate::state::SetState;

/// Lists an endpoint set's endpoints, ejects or returns them by hand, and reloads the set's
/// configuration.
///
/// Every handle and every endpoint of one layer share the same set: a reload applies to every
/// endpoint, those made before it included.
pub struct OutlierHandle<K> {
    set: Arc<SetState<K>>,
}

impl<K> OutlierHandle<K> {
    pub(crate) fn new(set: Arc<SetState<K>>) -> Self {
        Self { set }
    }

    /// The set's name.
    pub fn name(&self) -> &str {
        &self.set.name
    }

    /// Endpoints in the set now.
    pub fn len(&self) -> usize {
        self.set.endpoints()
    }

    /// Whether the set has no endpoint.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Endpoints ejected now.
    pub fn ejected(&self) -> usize {
        self.set.ejected()
    }

    /// How many endpoints may be ejected at once with the set as it is now.
    pub fn max_ejected(&self) -> usize {
        self.set.allowed(self.len())
    }

    /// The configuration in force.
    pub fn config(&self) -> OutlierConfig {
        self.set.config()
    }

    /// Applies `config` (already validated by its builder or deserializer) to the next call's
    /// result on, for every endpoint of the set, keeping each endpoint's counts and ejections:
    /// an ejection under way keeps its end, and endpoints ejected over a lowered share cap
    /// stay out until their time is up. Refused, with nothing changed, when it names another
    /// set or turns endpoint labels on or off (an endpoint's gauge is registered when it
    /// joins; a restart changes them).
    ///
    /// ```
    /// use seawall_outlier::{OutlierConfig, OutlierLayer};
    ///
    /// # fn main() -> Result<(), seawall_core::config::ConfigError> {
    /// let (_layer, handle) = OutlierLayer::<usize>::builder().name("backends").build()?.pair();
    /// let stricter = OutlierConfig::builder()
    ///     .name("backends")
    ///     .consecutive_failures(3)
    ///     .build()?;
    /// handle.reload(stricter)?;
    /// assert_eq!(handle.config().consecutive_failures(), Some(3));
    ///
    /// let labelled = OutlierConfig::builder().name("backends").endpoint_labels(true).build()?;
    /// assert_eq!(handle.reload(labelled).unwrap_err().field(), "endpoint_labels");
    /// # Ok(())
    /// # }
    /// ```
    pub fn reload(&self, config: OutlierConfig) -> Result<(), ConfigError> {
        self.set.reload(&config)
    }

    /// Whether [`reload`](Self::reload) would take `config`, changing nothing: a stack checks
    /// every layer's new configuration before it reloads any.
    pub fn check_reload(&self, config: &OutlierConfig) -> Result<(), ConfigError> {
        self.set.check_reload(config)
    }
}

impl<K: Clone + PartialEq + fmt::Debug + 'static> OutlierHandle<K> {
    /// Every endpoint with its state, in the order they joined.
    pub fn endpoints(&self) -> Vec<EndpointStatus<K>> {
        self.set.statuses()
    }

    /// Ejects the endpoint `key` now, as its detectors would (for the base ejection time,
    /// times its ejections in a row), whatever the share cap says; `false` when there is no
    /// such endpoint or it is ejected already.
    pub fn eject(&self, key: &K) -> bool {
        let now = Instant::now();
        let mut any = false;
        for member in self.set.find(key) {
            any |= self.set.eject(&member, EjectionReason::Forced, now);
        }
        any
    }

    /// Brings the endpoint `key` back in now, without a probe; `false` when there is no such
    /// endpoint or it is in already.
    pub fn restore(&self, key: &K) -> bool {
        let now = Instant::now();
        let mut any = false;
        for member in self.set.find(key) {
            any |= self.set.restore(&member, member.until(), now, false);
        }
        any
    }
}

impl<K> Clone for OutlierHandle<K> {
    fn clone(&self) -> Self {
        Self {
            set: self.set.clone(),
        }
    }
}

impl<K> fmt::Debug for OutlierHandle<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutlierHandle")
            .field("set", &self.set)
            .finish()
    }
}
