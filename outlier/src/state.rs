//! What one endpoint set shares: its members, how many are ejected, the detectors' settings,
//! metric handles and hooks. Created once, when the layer is built.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::task::AtomicWaker;
use metrics::{Counter, Gauge};
use seawall_core::classify::Outcome;
use seawall_core::config::ConfigError;
use seawall_core::metrics::MetricScope;
use seawall_core::time::nanos;
use tokio::time::Instant;

use crate::config::{OutlierConfig, SuccessRateConfig};
use crate::event::{
    EjectedEvent, EjectionReason, EndpointStatus, Hooks, ReturnedEvent, SkippedEvent,
};
use crate::load::{LoadEstimate, SetLatency};

/// The successes in a row that show an endpoint the cap kept in has recovered, when the
/// consecutive-failures rule (whose run it otherwise is) is off.
const RECOVERY_RUN: u32 = 5;

/// In [`MemberState::latest`]: the endpoint's latest failure or success was a success, while
/// it was in. The set counts its members so marked in [`SetState::succeeding`].
const SUCCEEDING: u8 = 1;
/// In [`MemberState::latest`]: a success since the set last aged its members.
const FRESH: u8 = 2;
/// [`SetState::last_failure`] before the set's first failure.
const NEVER: u64 = u64::MAX;

/// The detectors' settings, in nanoseconds where they are times, and the configuration they
/// come from.
#[derive(Debug)]
struct Settings {
    config: OutlierConfig,
    consecutive_failures: Option<u32>,
    success_rate: Option<SuccessRateConfig>,
    interval: u64,
    base_ejection: u64,
    max_ejection: u64,
    max_ejected_share: f64,
    endpoint_labels: bool,
}

impl Settings {
    fn new(config: &OutlierConfig) -> Self {
        Self {
            config: config.clone(),
            consecutive_failures: config.consecutive_failures,
            success_rate: config.success_rate,
            interval: nanos(config.interval),
            base_ejection: nanos(config.base_ejection_time),
            max_ejection: nanos(config.max_ejection_time),
            max_ejected_share: config.max_ejected_share,
            endpoint_labels: config.endpoint_labels,
        }
    }
}

struct Metrics {
    endpoints: Gauge,
    ejected: Gauge,
    ejections: [Counter; EjectionReason::ALL.len()],
    skipped: Counter,
}

/// One endpoint set.
pub(crate) struct SetState<K> {
    pub(crate) name: Arc<str>,
    /// Replaced whole by a reload; read without a lock, by failures and ejections only.
    settings: ArcSwap<Settings>,
    origin: Instant,
    /// Every endpoint made for the set; an endpoint leaves when its last service is dropped.
    members: Mutex<Vec<Weak<MemberState<K>>>>,
    endpoints: AtomicUsize,
    ejected: AtomicUsize,
    /// When the next success-rate comparison is due, in nanoseconds from `origin`.
    next_evaluation: AtomicU64,
    /// The members in whose [`latest`](MemberState::latest) `SUCCEEDING` is set: while there
    /// is one, a failure elsewhere is that endpoint's own.
    succeeding: AtomicUsize,
    /// When members whose success is older than an interval are next no longer counted as
    /// succeeding, in nanoseconds from `origin`.
    next_aging: AtomicU64,
    /// When the set's latest failure came, in nanoseconds from `origin` ([`NEVER`] before the
    /// first).
    last_failure: AtomicU64,
    /// The detectors' interval in nanoseconds, as `settings` has it, read by every failure.
    interval: AtomicU64,
    /// Whether ejected endpoints return only after a probe.
    pub(crate) probes: AtomicBool,
    /// The members' fastest success, below which the latency of a member the cap holds while
    /// it fails is not read.
    pub(crate) latency: SetLatency,
    pub(crate) hooks: Hooks<K>,
    scope: MetricScope,
    metrics: Metrics,
}

/// One endpoint of a set.
pub(crate) struct MemberState<K> {
    pub(crate) key: K,
    pub(crate) set: Arc<SetState<K>>,
    /// 0 while the endpoint is in; otherwise the end of its ejection, in nanoseconds from the
    /// set's origin. Every change to or from 0 is a compare-and-swap, and whoever makes one
    /// moves the set's ejected count.
    until: AtomicU64,
    /// Set by the service that sends the probe.
    pub(crate) probing: AtomicBool,
    /// Whether a handle ejected it: a peer's recovery does not end that ejection.
    forced: AtomicBool,
    /// 0 unless the cap kept the endpoint in when a detector would have ejected it; then 1
    /// plus its successes in a row since.
    held: AtomicU32,
    /// When it was called back, the end its ejection had then (0 otherwise): ejected again, it
    /// stays out until that end, no longer, and is not called back again.
    resume_until: AtomicU64,
    /// Set while it serves out an ejection resumed so.
    resumed: AtomicBool,
    ejections: AtomicU32,
    /// When it last came back in, for the decay of `ejections`.
    returned_at: AtomicU64,
    consecutive: AtomicU32,
    /// `SUCCEEDING` and `FRESH`; each change of `SUCCEEDING` is a read-modify-write, and
    /// whoever makes one moves the set's `succeeding` count.
    latest: AtomicU8,
    successes: AtomicU64,
    failures: AtomicU64,
    /// The task waiting for the endpoint to come back in.
    pub(crate) waker: AtomicWaker,
    /// What a balancer ranks it by.
    pub(crate) load: LoadEstimate,
    gauge: Option<Gauge>,
}

impl<K> SetState<K> {
    pub(crate) fn new(config: &OutlierConfig) -> Self {
        let scope = MetricScope::new(config.name.clone());
        let metrics = Metrics {
            endpoints: scope.gauge("seawall_outlier_endpoints", &[]),
            ejected: scope.gauge("seawall_outlier_ejected", &[]),
            ejections: scope.counters::<EjectionReason, { EjectionReason::ALL.len() }>(
                "seawall_outlier_ejections_total",
            ),
            skipped: scope.counter("seawall_outlier_ejections_skipped_total", &[]),
        };
        metrics.endpoints.set(0.0);
        metrics.ejected.set(0.0);
        Self {
            name: config.name.clone().into(),
            settings: ArcSwap::from_pointee(Settings::new(config)),
            origin: Instant::now(),
            members: Mutex::default(),
            endpoints: AtomicUsize::new(0),
            ejected: AtomicUsize::new(0),
            next_evaluation: AtomicU64::new(nanos(config.interval)),
            succeeding: AtomicUsize::new(0),
            next_aging: AtomicU64::new(nanos(config.interval)),
            last_failure: AtomicU64::new(NEVER),
            interval: AtomicU64::new(nanos(config.interval)),
            probes: AtomicBool::new(false),
            latency: SetLatency::default(),
            hooks: Hooks::default(),
            scope,
            metrics,
        }
    }

    /// The configuration in force.
    pub(crate) fn config(&self) -> OutlierConfig {
        self.settings.load().config.clone()
    }

    /// Whether `config` can be applied live: the same name, and endpoint labels on or off as
    /// they are (an endpoint's gauge is registered when it joins).
    pub(crate) fn check_reload(&self, config: &OutlierConfig) -> Result<(), ConfigError> {
        let live = &self.settings.load().config;
        ConfigError::same_name(&config.name, &live.name)?;
        if config.endpoint_labels != live.endpoint_labels {
            return Err(ConfigError::needs_restart(
                "endpoint_labels",
                config.endpoint_labels,
                live.endpoint_labels,
            ));
        }
        Ok(())
    }

    /// Judges and ejects by `config` from now on; ejections under way keep the end they were
    /// given, and endpoints ejected over a lowered share cap stay out until their time is up.
    pub(crate) fn reload(&self, config: &OutlierConfig) -> Result<(), ConfigError> {
        self.check_reload(config)?;
        self.settings.store(Arc::new(Settings::new(config)));
        self.interval
            .store(nanos(config.interval), Ordering::Release);
        tracing::info!(name = %self.name, "outlier detection reloaded");
        Ok(())
    }

    pub(crate) fn nanos(&self, now: Instant) -> u64 {
        nanos(now.saturating_duration_since(self.origin))
    }

    pub(crate) fn instant(&self, nanos: u64) -> Instant {
        self.origin + Duration::from_nanos(nanos)
    }

    /// Endpoints in the set now.
    pub(crate) fn endpoints(&self) -> usize {
        self.endpoints.load(Ordering::Acquire)
    }

    /// Endpoints ejected now (an ejection whose time is up counts until the endpoint is next
    /// asked whether it is ready, or a probe passes).
    pub(crate) fn ejected(&self) -> usize {
        self.ejected.load(Ordering::Acquire)
    }

    /// How many of `endpoints` may be ejected at once: the share, rounded down, and never
    /// the last one in.
    pub(crate) fn allowed(&self, endpoints: usize) -> usize {
        let share = (self.settings.load().max_ejected_share * endpoints as f64).floor() as usize;
        share.min(endpoints.saturating_sub(1))
    }

    /// Whether a run of consecutive failures ejects an endpoint now: the rule is on and the
    /// share cap has room.
    pub(crate) fn ejects_a_run(&self) -> bool {
        self.settings.load().consecutive_failures.is_some()
            && self.ejected() < self.allowed(self.endpoints())
    }

    /// The live members.
    fn members(&self) -> Vec<Arc<MemberState<K>>> {
        let mut members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
        members.retain(|m| m.strong_count() > 0);
        members.iter().filter_map(Weak::upgrade).collect()
    }

    fn publish_ejected(&self) {
        self.metrics.ejected.set(self.ejected() as f64);
    }

    /// Takes a place under the share cap.
    fn reserve(&self) -> bool {
        self.ejected
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |ejected| {
                (ejected < self.allowed(self.endpoints())).then_some(ejected + 1)
            })
            .is_ok()
    }
}

impl<K: fmt::Debug + 'static> SetState<K> {
    /// Brings back the endpoints whose ejection time is up, when no probe decides.
    fn sweep(&self, now: Instant) {
        if self.probes.load(Ordering::Acquire) {
            return;
        }
        let at = self.nanos(now);
        for member in self.members() {
            let until = member.until.load(Ordering::Acquire);
            if until != 0 && until <= at {
                self.restore(&member, until, now, false);
            }
        }
    }

    /// A new endpoint of the set.
    pub(crate) fn register(self: &Arc<Self>, key: K) -> Arc<MemberState<K>> {
        let gauge = self.settings.load().endpoint_labels.then(|| {
            let gauge = self.scope.gauge(
                "seawall_outlier_endpoint_ejected",
                &[("endpoint", &format!("{key:?}"))],
            );
            gauge.set(0.0);
            gauge
        });
        let member = Arc::new(MemberState {
            key,
            set: self.clone(),
            until: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            forced: AtomicBool::new(false),
            held: AtomicU32::new(0),
            resume_until: AtomicU64::new(0),
            resumed: AtomicBool::new(false),
            ejections: AtomicU32::new(0),
            returned_at: AtomicU64::new(0),
            consecutive: AtomicU32::new(0),
            latest: AtomicU8::new(0),
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            waker: AtomicWaker::new(),
            load: LoadEstimate::default(),
            gauge,
        });
        let mut members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
        members.retain(|m| m.strong_count() > 0);
        members.push(Arc::downgrade(&member));
        drop(members);
        let endpoints = self.endpoints.fetch_add(1, Ordering::AcqRel) + 1;
        self.metrics.endpoints.set(endpoints as f64);
        member
    }

    /// Counts one call's outcome for `member`, and ejects it or others as the detectors say;
    /// `true` for a failure that is the endpoint's own (see [`own_failure`](Self::own_failure)).
    pub(crate) fn record(&self, member: &MemberState<K>, outcome: Outcome) -> bool {
        match outcome {
            Outcome::Success => {
                member.successes.fetch_add(1, Ordering::Relaxed);
                if member.consecutive.load(Ordering::Relaxed) != 0 {
                    member.consecutive.store(0, Ordering::Relaxed);
                }
                if member.latest.load(Ordering::Relaxed) != SUCCEEDING | FRESH {
                    self.succeeded(member);
                }
                let held = member.held.load(Ordering::Relaxed);
                if held != 0 {
                    self.held_success(member, held);
                }
                false
            }
            Outcome::Failure => {
                member.failures.fetch_add(1, Ordering::Relaxed);
                if member.held.load(Ordering::Relaxed) > 1 {
                    member.held.store(1, Ordering::Relaxed);
                }
                let failures = member.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
                let now = Instant::now();
                let at = self.nanos(now);
                let own = self.own_failure(member, at);
                if self
                    .settings
                    .load()
                    .consecutive_failures
                    .is_some_and(|threshold| failures >= threshold)
                {
                    self.eject(member, EjectionReason::ConsecutiveFailures, now);
                }
                self.evaluate_if_due(now, at);
                own
            }
            Outcome::Overload | Outcome::Ignored => false,
        }
    }

    /// Whether a failure of `member` is its own: another endpoint, in the set, has a success as
    /// its latest outcome, and a success since the aging before the last. The failure ends
    /// `member`'s own standing first, so once every endpoint fails the set stops marking after
    /// about one failure of each.
    ///
    /// The first failure after a spell of an interval with none (or the set's first) ends every
    /// endpoint's standing: it may be the onset of a fault of every endpoint, and the successes
    /// before it say nothing of that. Marks resume with the next success of another endpoint,
    /// so a breaker above sees an outage of every endpoint as soon as it would without marks,
    /// even at a few calls a second, where one failure of each endpoint would take a second.
    fn own_failure(&self, member: &MemberState<K>, at: u64) -> bool {
        if member.latest.load(Ordering::Relaxed) & SUCCEEDING != 0 {
            self.not_succeeding(member);
        }
        let last = self.last_failure.swap(at, Ordering::AcqRel);
        if last == NEVER || at.saturating_sub(last) > self.interval.load(Ordering::Acquire) {
            self.forget_successes();
            return false;
        }
        self.age_if_due(at);
        self.succeeding.load(Ordering::Acquire) > 0
    }

    /// No member counts as succeeding until it succeeds again.
    #[cold]
    fn forget_successes(&self) {
        for member in self.members() {
            self.not_succeeding(&member);
        }
    }

    /// A success of `member`: it counts as succeeding unless it is ejected (a call that was
    /// in flight when it was ejected says nothing of the set now).
    #[cold]
    fn succeeded(&self, member: &MemberState<K>) {
        if member.until() != 0 {
            return;
        }
        if member.latest.fetch_or(SUCCEEDING | FRESH, Ordering::AcqRel) & SUCCEEDING == 0 {
            self.succeeding.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// `member` no longer counts as succeeding.
    fn not_succeeding(&self, member: &MemberState<K>) {
        if member.latest.fetch_and(!SUCCEEDING, Ordering::AcqRel) & SUCCEEDING != 0 {
            self.succeeding.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Once an interval, on a failure: a member with no success since the last time no longer
    /// counts as succeeding (an endpoint no call reaches any more, say), nor one ejected since
    /// it succeeded.
    fn age_if_due(&self, at: u64) {
        if at < self.next_aging.load(Ordering::Acquire)
            || take_due(&self.next_aging, at, self.settings.load().interval).is_none()
        {
            return;
        }
        for member in self.members() {
            let latest = member.latest.fetch_and(!FRESH, Ordering::AcqRel);
            if latest & SUCCEEDING != 0 && (latest & FRESH == 0 || member.until() != 0) {
                self.not_succeeding(&member);
            }
        }
    }

    /// Ejects `member`, within the share cap unless a handle forces it; `false` when it was
    /// ejected already or the cap refused.
    pub(crate) fn eject(
        &self,
        member: &MemberState<K>,
        reason: EjectionReason,
        now: Instant,
    ) -> bool {
        if member.until.load(Ordering::Acquire) != 0 {
            return false;
        }
        let forced = reason == EjectionReason::Forced;
        if forced {
            self.ejected.fetch_add(1, Ordering::AcqRel);
        } else if !self.reserve() {
            // Endpoints whose time is up may still hold places.
            self.sweep(now);
            if !self.reserve() {
                self.skipped(member, reason);
                return false;
            }
        }
        let at = self.nanos(now);
        let resume = if forced {
            0
        } else {
            member.resume_until.swap(0, Ordering::AcqRel)
        };
        let resumed = resume > at;
        let (ejections, until) = self.ejection_end(member, at, resume);
        if member
            .until
            .compare_exchange(0, until, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // Ejected meanwhile by another call.
            member.resume_until.store(resume, Ordering::Release);
            self.ejected.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        let duration = until - at;
        member.ejections.store(ejections, Ordering::Release);
        member.resumed.store(resumed, Ordering::Release);
        member.forced.store(forced, Ordering::Release);
        member.held.store(0, Ordering::Relaxed);
        member.consecutive.store(0, Ordering::Relaxed);
        self.not_succeeding(member);
        self.ejected_now(member, reason, ejections, duration);
        true
    }

    /// One more success in a row of `member`, which the cap kept in (`held` is 1 plus its
    /// successes in a row before this one); at the run that the consecutive-failures rule asks
    /// for (or [`RECOVERY_RUN`] without that rule), the fault was wider than the cap and has
    /// ended: every endpoint a detector ejected is called back.
    fn held_success(&self, member: &MemberState<K>, held: u32) {
        let run = self
            .settings
            .load()
            .consecutive_failures
            .unwrap_or(RECOVERY_RUN);
        if held < run {
            member.held.store(held + 1, Ordering::Relaxed);
            return;
        }
        member.held.store(0, Ordering::Relaxed);
        self.call_back(Instant::now());
    }

    /// Ends every ejection a detector made: each endpoint is back in now, or, with probes,
    /// sends its probe the next time it is asked whether it is ready. One still failing is
    /// ejected again until the end its ejection had, no later (a wrong guess costs its run of
    /// failures, not a longer ejection), and is not called back again before that end.
    fn call_back(&self, now: Instant) {
        let probes = self.probes.load(Ordering::Acquire);
        let at = self.nanos(now).max(1);
        let mut called = 0usize;
        for member in self.members() {
            let until = member.until.load(Ordering::Acquire);
            if until <= at
                || member.forced.load(Ordering::Acquire)
                || member.resumed.load(Ordering::Acquire)
            {
                continue;
            }
            let ended = if probes {
                member.resume_until.store(until, Ordering::Release);
                let ended = member
                    .until
                    .compare_exchange(until, at, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok();
                member.waker.wake();
                ended
            } else {
                let ended = self.restore(&member, until, now, false);
                if ended {
                    member.resume_until.store(until, Ordering::Release);
                }
                ended
            };
            called += usize::from(ended);
        }
        if called > 0 {
            tracing::info!(
                name = %self.name,
                endpoints = called,
                "ejections ended early: an endpoint the share cap kept in has recovered"
            );
        }
    }

    /// Ejects `member` again after its probe failed: it keeps its place under the cap.
    pub(crate) fn reject_probe(&self, member: &MemberState<K>, now: Instant) {
        let until = member.until.load(Ordering::Acquire);
        if until == 0 {
            return;
        }
        let at = self.nanos(now);
        let resume = member.resume_until.swap(0, Ordering::AcqRel);
        let resumed = resume > at;
        let (ejections, next) = self.ejection_end(member, at, resume);
        if member
            .until
            .compare_exchange(until, next, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            member.ejections.store(ejections, Ordering::Release);
            member.resumed.store(resumed, Ordering::Release);
            self.ejected_now(member, EjectionReason::ProbeFailed, ejections, next - at);
        }
    }

    /// The ejections in a row `member` is at and the end of an ejection from `at`: the end it
    /// had when it was called back (`resume`) while that is ahead, since the call back was a
    /// mistake, and otherwise the next ejection's.
    fn ejection_end(&self, member: &MemberState<K>, at: u64, resume: u64) -> (u32, u64) {
        if resume > at {
            return (member.ejections.load(Ordering::Acquire), resume);
        }
        let (ejections, duration) = self.ejection_time(member, at);
        (ejections, at.saturating_add(duration).max(1))
    }

    /// The ejections in a row `member` is at with one more, and how long that one lasts:
    /// each interval spent in since its last return takes one off.
    fn ejection_time(&self, member: &MemberState<K>, at: u64) -> (u32, u64) {
        let s = self.settings.load();
        let before = member.ejections.load(Ordering::Acquire);
        let returned = member.returned_at.load(Ordering::Acquire);
        let in_for = at.saturating_sub(returned) / s.interval.max(1);
        let kept = if member.until.load(Ordering::Acquire) != 0 {
            before
        } else {
            before.saturating_sub(u32::try_from(in_for).unwrap_or(u32::MAX))
        };
        let ejections = kept.saturating_add(1);
        let duration = s
            .base_ejection
            .saturating_mul(u64::from(ejections))
            .min(s.max_ejection);
        (ejections, duration)
    }

    fn ejected_now(
        &self,
        member: &MemberState<K>,
        reason: EjectionReason,
        ejections: u32,
        duration: u64,
    ) {
        self.metrics.ejections[reason.index()].increment(1);
        self.publish_ejected();
        if let Some(gauge) = &member.gauge {
            gauge.set(1.0);
        }
        let duration = Duration::from_nanos(duration);
        tracing::info!(
            name = %self.name,
            endpoint = ?member.key,
            reason = reason.as_str(),
            ?duration,
            ejections,
            "endpoint ejected"
        );
        self.hooks.on_ejected.call(EjectedEvent {
            name: &self.name,
            key: &member.key,
            reason,
            duration,
            ejections,
        });
    }

    fn skipped(&self, member: &MemberState<K>, reason: EjectionReason) {
        self.metrics.skipped.increment(1);
        member.held.store(1, Ordering::Relaxed);
        tracing::debug!(
            name = %self.name,
            endpoint = ?member.key,
            reason = reason.as_str(),
            "ejection skipped: the share of endpoints ejected is at its cap"
        );
        self.hooks.on_skipped.call(SkippedEvent {
            name: &self.name,
            key: &member.key,
            reason,
        });
    }

    /// Brings `member` back in if it is still ejected until `until`; `false` when something
    /// else changed it first.
    pub(crate) fn restore(
        &self,
        member: &MemberState<K>,
        until: u64,
        now: Instant,
        probed: bool,
    ) -> bool {
        if until == 0
            || member
                .until
                .compare_exchange(until, 0, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return false;
        }
        self.ejected.fetch_sub(1, Ordering::AcqRel);
        member.forced.store(false, Ordering::Release);
        member.resumed.store(false, Ordering::Release);
        member.resume_until.store(0, Ordering::Release);
        member.returned_at.store(self.nanos(now), Ordering::Release);
        member.consecutive.store(0, Ordering::Relaxed);
        self.publish_ejected();
        if let Some(gauge) = &member.gauge {
            gauge.set(0.0);
        }
        tracing::info!(name = %self.name, endpoint = ?member.key, probed, "endpoint returned");
        self.hooks.on_returned.call(ReturnedEvent {
            name: &self.name,
            key: &member.key,
            probed,
        });
        member.waker.wake();
        true
    }

    /// Compares success rates when an interval is over.
    ///
    /// It runs on a failure (a set whose calls all succeed has no outlier by success rate),
    /// so the set needs no timer of its own. Counts older than two intervals (a quiet spell
    /// with no failure) say nothing of now and are dropped instead of compared.
    fn evaluate_if_due(&self, now: Instant, at: u64) {
        let settings = self.settings.load();
        let Some(config) = settings.success_rate else {
            return;
        };
        let interval = settings.interval;
        let Some(due) = take_due(&self.next_evaluation, at, interval) else {
            return;
        };
        let members = self.members();
        let counts: Vec<(u64, u64)> = members
            .iter()
            .map(|m| {
                (
                    m.successes.swap(0, Ordering::Relaxed),
                    m.failures.swap(0, Ordering::Relaxed),
                )
            })
            .collect();
        if at - due > interval {
            return;
        }
        for index in success_rate_outliers(&counts, &config) {
            self.eject(&members[index], EjectionReason::SuccessRate, now);
        }
    }

    /// The status of every endpoint.
    pub(crate) fn statuses(&self) -> Vec<EndpointStatus<K>>
    where
        K: Clone,
    {
        let now = Instant::now();
        self.sweep(now);
        let at = self.nanos(now);
        self.members()
            .iter()
            .map(|m| {
                let until = m.until.load(Ordering::Acquire);
                EndpointStatus {
                    key: m.key.clone(),
                    ejected_for: (until != 0)
                        .then(|| Duration::from_nanos(until.saturating_sub(at))),
                    ejections: m.ejections.load(Ordering::Acquire),
                    consecutive_failures: m.consecutive.load(Ordering::Relaxed),
                    successes: m.successes.load(Ordering::Relaxed),
                    failures: m.failures.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// The live members whose key is `key`.
    pub(crate) fn find(&self, key: &K) -> Vec<Arc<MemberState<K>>>
    where
        K: PartialEq,
    {
        self.members()
            .into_iter()
            .filter(|m| &m.key == key)
            .collect()
    }
}

impl<K> fmt::Debug for SetState<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SetState")
            .field("name", &self.name)
            .field("endpoints", &self.endpoints())
            .field("ejected", &self.ejected())
            .finish_non_exhaustive()
    }
}

/// The indexes of the endpoints whose success rate (from `(successes, failures)`) lies more
/// than `stdev_factor` standard deviations below the mean of those with enough calls, worst
/// first; none when fewer than `minimum_hosts` have enough calls.
pub(crate) fn success_rate_outliers(
    counts: &[(u64, u64)],
    config: &SuccessRateConfig,
) -> Vec<usize> {
    let rates: Vec<(usize, f64)> = counts
        .iter()
        .enumerate()
        .filter(|(_, (s, f))| s + f >= u64::from(config.request_volume))
        .map(|(i, &(s, f))| (i, s as f64 / (s + f) as f64))
        .collect();
    if rates.len() < config.minimum_hosts as usize {
        return Vec::new();
    }
    let n = rates.len() as f64;
    let mean = rates.iter().map(|(_, r)| r).sum::<f64>() / n;
    let variance = rates.iter().map(|(_, r)| (r - mean).powi(2)).sum::<f64>() / n;
    let threshold = mean - config.stdev_factor * variance.sqrt();
    let mut outliers: Vec<(usize, f64)> =
        rates.into_iter().filter(|&(_, r)| r < threshold).collect();
    outliers.sort_by(|a, b| a.1.total_cmp(&b.1));
    outliers.into_iter().map(|(i, _)| i).collect()
}

impl<K> MemberState<K> {
    /// The end of its ejection, in nanoseconds from the set's origin, or 0 while it is in.
    #[inline]
    pub(crate) fn until(&self) -> u64 {
        self.until.load(Ordering::Acquire)
    }

    /// Whether the cap kept the endpoint in when a detector would have ejected it, and it has
    /// not succeeded since (nor since its latest failure).
    pub(crate) fn held_failing(&self) -> bool {
        self.held.load(Ordering::Relaxed) == 1
    }
}

impl<K> Drop for MemberState<K> {
    fn drop(&mut self) {
        let set = &self.set;
        if self.until.swap(0, Ordering::AcqRel) != 0 {
            set.ejected.fetch_sub(1, Ordering::AcqRel);
            set.publish_ejected();
        }
        if *self.latest.get_mut() & SUCCEEDING != 0 {
            set.succeeding.fetch_sub(1, Ordering::AcqRel);
        }
        let endpoints = set.endpoints.fetch_sub(1, Ordering::AcqRel) - 1;
        set.metrics.endpoints.set(endpoints as f64);
    }
}

impl<K: fmt::Debug> fmt::Debug for MemberState<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemberState")
            .field("key", &self.key)
            .field("until", &self.until())
            .finish_non_exhaustive()
    }
}

/// The time at `next` (nanoseconds from the set's origin) when this caller does the work due
/// then: `at` has reached it and no other caller took it first. The one that takes it moves
/// `next` to an `interval` after `at`.
fn take_due(next: &AtomicU64, at: u64, interval: u64) -> Option<u64> {
    let due = next.load(Ordering::Acquire);
    (at >= due
        && next
            .compare_exchange(
                due,
                at.saturating_add(interval),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok())
    .then_some(due)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outlier_is_the_endpoint_far_below_the_mean() {
        let config = SuccessRateConfig::new();
        // Five endpoints at 99–100 % and one at 50 %, each with 200 calls.
        let mut counts = vec![(200, 0), (199, 1), (198, 2), (200, 0), (199, 1), (100, 100)];
        assert_eq!(success_rate_outliers(&counts, &config), [5]);
        // Too few calls at the bad endpoint: it is not compared.
        counts[5] = (40, 40);
        assert!(success_rate_outliers(&counts, &config).is_empty());
        // Fewer than five endpoints with enough calls: no comparison.
        let few = [(200, 0), (200, 0), (200, 0), (100, 100)];
        assert!(success_rate_outliers(&few, &config).is_empty());
        // All alike: no outlier.
        assert!(success_rate_outliers(&[(150, 50); 6], &config).is_empty());
    }

    #[test]
    fn the_cap_rounds_down_and_keeps_one_endpoint_in() {
        let set = SetState::<u32>::new(&OutlierConfig::default());
        assert_eq!(
            (0..=6).map(|n| set.allowed(n)).collect::<Vec<_>>(),
            [0, 0, 1, 1, 2, 2, 3]
        );
        let all = OutlierConfig::builder()
            .max_ejected_share(1.0)
            .build()
            .unwrap();
        let set = SetState::<u32>::new(&all);
        assert_eq!(set.allowed(5), 4);
    }
}
