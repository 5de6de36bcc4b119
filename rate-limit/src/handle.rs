//! A handle on a rate limit: read its configuration and reload its quota while calls flow.

use std::fmt;
use std::sync::Arc;

use seawall_core::config::ConfigError;
use seawall_core::store::redacted;

use crate::config::{Quota, RateLimitConfig};
use crate::fleet::config::FleetConfig;
use crate::limiter::SetQuota;
use crate::state::Live;

/// Reads and reloads one rate limit's quota and `max_wait`; cheap to clone, and shared with
/// every service of the layer it came from.
///
/// From [`RateLimitLayer::handle`](crate::RateLimitLayer::handle) or
/// [`RateLimitLayer::pair`](crate::RateLimitLayer::pair), for a limit kept in the process
/// (one bucket, or one per key) or in the fleet's store ([`Fleet`](crate::Fleet),
/// [`FleetKeyed`](crate::FleetKeyed)).
#[derive(Clone)]
pub struct RateLimitHandle {
    live: Arc<Live>,
    limiter: Arc<dyn SetQuota>,
}

impl RateLimitHandle {
    pub(crate) fn new(live: Arc<Live>, limiter: Arc<dyn SetQuota>) -> Self {
        Self { live, limiter }
    }

    /// The layer instance's name.
    pub fn name(&self) -> &str {
        self.live.name()
    }

    /// The configuration the limit admits by now: the one it was built with, or the last one
    /// [`reload`](Self::reload) took.
    pub fn config(&self) -> RateLimitConfig {
        self.live.config()
    }

    /// The quota in force.
    pub fn quota(&self) -> Quota {
        self.live.config().quota
    }

    /// Admits by `config`'s quota and `max_wait` from now on, without a restart.
    ///
    /// The same quota keeps every bucket as it is: the calls it admitted stay spent. **A new
    /// quota starts every bucket kept in the process afresh and full**: up to its burst
    /// passes at once, then calls at the new rate (governor's buckets are fixed to their
    /// quota, and a bucket's state read by another quota would mean another thing). A bucket
    /// kept in the fleet's store keeps its state instead, read by the new quota as the share
    /// of its window spent, and cells leased under the old quota are spent; see
    /// [`Fleet`](crate::Fleet). A new `max_wait` applies to the next call that finds no
    /// permit; a call waiting already keeps the wait it was given, and no call in flight is
    /// failed by a reload. A `config` with another name, `max_keys`, `sweep_interval`, or
    /// any other `fleet` section or field of it (`fleet.redis_url`, `fleet.key_prefix`,
    /// `fleet.lease`, ...) is refused with a [`ConfigError`] that names the field, and the
    /// limit goes on with the configuration it had.
    ///
    /// ```
    /// use seawall_rate_limit::{Quota, RateLimitConfig, RateLimitLayer};
    ///
    /// # fn main() -> Result<(), seawall_core::config::ConfigError> {
    /// let (_layer, handle) = RateLimitLayer::builder()
    ///     .name("api")
    ///     .quota(Quota::per_second(100))
    ///     .build()?
    ///     .pair();
    /// let slower = RateLimitConfig::builder().name("api").quota(Quota::per_second(10)).build()?;
    /// handle.reload(slower)?;
    /// assert_eq!(handle.quota(), Quota::per_second(10));
    ///
    /// let other = RateLimitConfig::builder().name("web").quota(Quota::per_second(1)).build()?;
    /// assert_eq!(handle.reload(other).unwrap_err().field(), "name");
    /// # Ok(())
    /// # }
    /// ```
    pub fn reload(&self, config: RateLimitConfig) -> Result<(), ConfigError> {
        let mut live = self.live.lock();
        check_reload(&live, &config)?;
        if config.quota != live.quota {
            self.limiter.set_quota(config.quota);
            tracing::info!(name = %live.name, from = %live.quota, to = %config.quota, "rate limit quota reloaded");
        }
        self.live.set_max_wait(config.max_wait);
        *live = config;
        Ok(())
    }

    /// Admits by `quota` from now on, the rest of the configuration kept; as
    /// [`reload`](Self::reload) does. A `ConfigError` for `quota.<field>` when the quota is out
    /// of range.
    pub fn set_quota(&self, quota: Quota) -> Result<(), ConfigError> {
        self.reload(self.live.config().with_quota(quota)?)
    }

    /// Whether [`reload`](Self::reload) would take `config`, changing nothing.
    pub fn check_reload(&self, config: &RateLimitConfig) -> Result<(), ConfigError> {
        check_reload(&self.live.lock(), config)
    }
}

/// Checks that `config` may replace `live`: only the quota and `max_wait` change.
fn check_reload(live: &RateLimitConfig, config: &RateLimitConfig) -> Result<(), ConfigError> {
    ConfigError::same_name(&config.name, &live.name)?;
    if config.max_keys != live.max_keys {
        return Err(ConfigError::needs_restart(
            "max_keys",
            format_args!("{}", config.max_keys),
            format_args!("{}", live.max_keys),
        ));
    }
    if config.sweep_interval != live.sweep_interval {
        return Err(ConfigError::needs_restart(
            "sweep_interval",
            format_args!("{:?}", config.sweep_interval),
            format_args!("{:?}", live.sweep_interval),
        ));
    }
    match (&live.fleet, &config.fleet) {
        (Some(live), Some(config)) => check_fleet(live, config).map_err(|e| e.within("fleet")),
        (None, None) => Ok(()),
        (live, config) => Err(ConfigError::needs_restart(
            "fleet",
            describe(config.as_ref()),
            describe(live.as_ref()),
        )),
    }
}

fn describe(fleet: Option<&FleetConfig>) -> &'static str {
    match fleet {
        Some(_) => "a fleet section",
        None => "none",
    }
}

/// Checks that a fleet section may replace the live one: where the buckets are, how they are
/// leased and guarded is fixed when the layer is built (its store connection, bucket names
/// and breaker are made then).
fn check_fleet(live: &FleetConfig, config: &FleetConfig) -> Result<(), ConfigError> {
    let url = |fleet: &FleetConfig| fleet.redis_url().map_or_else(|| "none".into(), redacted);
    if config.redis_url() != live.redis_url() {
        return Err(ConfigError::needs_restart(
            "redis_url",
            url(config),
            url(live),
        ));
    }
    let fields = [
        (
            "key_prefix",
            format!("{:?}", config.key_prefix()),
            format!("{:?}", live.key_prefix()),
        ),
        (
            "lease",
            config.lease().to_string(),
            live.lease().to_string(),
        ),
        (
            "on_failure",
            format!("{:?}", config.on_failure()),
            format!("{:?}", live.on_failure()),
        ),
        (
            "expected_replicas",
            format!("{:?}", config.expected_replicas()),
            format!("{:?}", live.expected_replicas()),
        ),
        (
            "timeout",
            format!("{:?}", config.guard().timeout()),
            format!("{:?}", live.guard().timeout()),
        ),
        (
            "failures",
            config.guard().failures().to_string(),
            live.guard().failures().to_string(),
        ),
        (
            "open_for",
            format!("{:?}", config.guard().open_for()),
            format!("{:?}", live.guard().open_for()),
        ),
    ];
    for (field, given, was) in fields {
        if given != was {
            return Err(ConfigError::needs_restart(field, given, was));
        }
    }
    Ok(())
}

impl fmt::Debug for RateLimitHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = self.live.config();
        f.debug_struct("RateLimitHandle")
            .field("name", &config.name)
            .field("quota", &config.quota)
            .field("max_wait", &config.max_wait)
            .finish()
    }
}
