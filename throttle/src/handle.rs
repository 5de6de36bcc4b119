//! A view of a throttle from outside its calls.

use std::fmt;
use std::sync::Arc;

use tokio::time::Instant;

use crate::state::State;
use crate::window::ThrottleCounts;

/// Reads one throttle's window and rejection probability; cheap to clone, and shared with
/// every service of the layer it came from.
///
/// From [`ThrottleLayer::handle`](crate::ThrottleLayer::handle) or
/// [`ThrottleLayer::pair`](crate::ThrottleLayer::pair). Every figure is decayed to now.
#[derive(Clone)]
pub struct ThrottleHandle {
    state: Arc<State>,
}

impl ThrottleHandle {
    pub(crate) fn new(state: Arc<State>) -> Self {
        Self { state }
    }

    /// The layer instance's name.
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// Requests and accepts in the window now, read together.
    pub fn counts(&self) -> ThrottleCounts {
        self.state.counts_now()
    }

    /// Requests in the window now, local rejections included.
    pub fn requests(&self) -> f64 {
        self.counts().requests
    }

    /// Accepts in the window now.
    pub fn accepts(&self) -> f64 {
        self.counts().accepts
    }

    /// The probability that a call made now is rejected locally:
    /// `max(0, (requests − K × accepts) / (requests + 1))` beyond the noise bound, while a call
    /// let through was refused within the window; 0 otherwise.
    pub fn rejection_probability(&self) -> f64 {
        self.state.probability_at(Instant::now())
    }

    /// K, the multiplier of accepts.
    pub fn multiplier(&self) -> f64 {
        self.state.window.multiplier()
    }

    /// Whether the last call made saw a rejection probability above zero.
    pub fn is_throttling(&self) -> bool {
        self.state.is_throttling()
    }
}

impl fmt::Debug for ThrottleHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThrottleHandle")
            .field("name", &self.name())
            .field("counts", &self.counts())
            .field("rejection_probability", &self.rejection_probability())
            .finish()
    }
}
