//! A view of an endpoint set from outside its calls.

use std::fmt;
use std::sync::Arc;

use tokio::time::Instant;

use crate::event::{EjectionReason, EndpointStatus};
use crate::state::SetState;

/// Lists an endpoint set's endpoints, and ejects or returns them by hand.
///
/// Every handle and every endpoint of one layer share the same set.
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
