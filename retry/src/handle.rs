//! A handle on a retry layer: read its settings and reload them while calls flow.

use std::fmt;
use std::sync::Arc;

use seawall_core::config::ConfigError;

use crate::config::RetryConfig;
use crate::fleet::LayerBudget;
use crate::state::Settings;

/// Reads and reloads one retry layer's settings; cheap to clone, and shared with every service
/// of the layer it came from.
///
/// From [`RetryLayer::handle`](crate::RetryLayer::handle) or
/// [`RetryLayer::pair`](crate::RetryLayer::pair).
#[derive(Clone)]
pub struct RetryHandle {
    name: Arc<str>,
    settings: Arc<Settings>,
    budget: Option<LayerBudget>,
}

impl RetryHandle {
    pub(crate) fn new(
        name: Arc<str>,
        settings: Arc<Settings>,
        budget: Option<LayerBudget>,
    ) -> Self {
        Self {
            name,
            settings,
            budget,
        }
    }

    /// The layer instance's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The configuration the layer retries by now: the one it was built with, or the last one
    /// [`reload`](Self::reload) took; its budget is the one the layer draws from, when the
    /// layer has one of its own.
    pub fn config(&self) -> RetryConfig {
        let mut config = self.settings.config().clone();
        if let Some(LayerBudget::Own(budget)) = &self.budget {
            config.budget = Some(budget.config());
        }
        config
    }

    /// Retries by `config` from now on, without a restart: `max_attempts`, the backoff,
    /// `max_delay`, `max_elapsed`, and the budget's `ratio` and `min_per_second`.
    ///
    /// Calls in flight go on and are never failed by a reload; each takes the new settings at
    /// its next decision to retry. The budget keeps the requests it counted and the credit it
    /// holds (see [`RetryBudget::reload`](crate::RetryBudget::reload)); a budget shared by
    /// other layers follows the reload for all of them, and a fleet budget
    /// ([`with_shared_budget`](crate::RetryLayer::with_shared_budget)) keeps its own
    /// configuration. A `config` with another name or seed, with a budget where the layer has
    /// none or none where it has one, or with another budget `ttl` or `quiet_ttl`, is refused
    /// with a [`ConfigError`] that names the field (`budget.ttl`), and the layer goes on with
    /// the configuration it had.
    ///
    /// ```
    /// use seawall_retry::{RetryConfig, RetryLayer};
    ///
    /// # fn main() -> Result<(), seawall_core::config::ConfigError> {
    /// let (_layer, handle) = RetryLayer::builder().name("db").build()?.pair();
    /// handle.reload(RetryConfig::builder().name("db").max_attempts(2).build()?)?;
    /// assert_eq!(handle.config().max_attempts(), 2);
    ///
    /// let other = RetryConfig::builder().name("cache").build()?;
    /// assert_eq!(handle.reload(other).unwrap_err().field(), "name");
    /// assert_eq!(handle.config().max_attempts(), 2);
    /// # Ok(())
    /// # }
    /// ```
    pub fn reload(&self, config: RetryConfig) -> Result<(), ConfigError> {
        self.check_reload(&config)?;
        if let (Some(LayerBudget::Own(budget)), Some(next)) = (&self.budget, config.budget) {
            budget.reload(next).map_err(|e| e.within("budget"))?;
        }
        tracing::info!(
            name = %self.name,
            max_attempts = config.max_attempts,
            "retry settings reloaded"
        );
        self.settings.set(config);
        Ok(())
    }

    /// Whether [`reload`](Self::reload) would take `config`, changing nothing: a stack checks
    /// every layer's new configuration before it reloads any.
    pub fn check_reload(&self, config: &RetryConfig) -> Result<(), ConfigError> {
        let live = self.settings.config();
        ConfigError::same_name(&config.name, &live.name)?;
        if config.seed != live.seed {
            return Err(ConfigError::needs_restart(
                "seed",
                format_args!("{:?}", config.seed),
                format_args!("{:?}", live.seed),
            ));
        }
        match (&self.budget, &config.budget) {
            (Some(LayerBudget::Own(budget)), Some(next)) => {
                budget.check_reload(next).map_err(|e| e.within("budget"))
            }
            (Some(LayerBudget::Own(_)), None) => {
                Err(ConfigError::needs_restart("budget", "\"off\"", "a budget"))
            }
            (None, Some(_)) => Err(ConfigError::needs_restart("budget", "a budget", "\"off\"")),
            (None, None) | (Some(LayerBudget::Shared(_)), _) => Ok(()),
        }
    }
}

impl fmt::Debug for RetryHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryHandle")
            .field("name", &self.name)
            .field("max_attempts", &self.settings.max_attempts())
            .field("budget", &self.budget)
            .finish()
    }
}
