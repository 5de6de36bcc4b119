//! The retry budget: retries as a share of recent requests, for one client and for a fleet.
//!
//! Max attempts alone multiply load exactly when a downstream can least take it: with three
//! attempts, a failing downstream gets three times the traffic that broke it. A budget caps
//! retries at a share, `ratio`, of the requests seen lately, so that while the downstream
//! fails the extra load stays at the ratio however many attempts each call may make (the SRE
//! book, "Handling Overload": retries under 10 % of requests).
//!
//! **Why not Finagle's and tower's budget.** Theirs is the ratio of the last 10 s plus a floor
//! of 10 retries a second for each client. Both parts break the bound where it matters:
//!
//! - *The floor multiplies with the fleet.* 1000 replicas of a caller sharing 1000 requests a
//!   second (one each a second) get 10 000 retries a second between them: every failure is
//!   retried twice, and an outage gets three times the load.
//! - *The window stores credit.* After 10 s of healthy traffic a client holds `ratio × 10 s` of
//!   retries, which it spends as soon as failures start: over a fault of `D` seconds, retries
//!   reach `ratio × (1 + 10 s / D)` of requests, 20 % over a 10 s outage for a 10 % ratio.
//!
//! **This budget.** Each request earns `ratio` of a retry; a retry spends one. Credit counts
//! for a short `quiet_ttl` (1 s by default) while retries are rarely wanted: credit older than
//! that expires. Once retries are wanted for at least `ratio` of the requests of the last `ttl`
//! (10 s) — failures frequent enough to use every bit of credit — credit earned since that
//! episode began (and in the `quiet_ttl` before it) counts too, up to `ttl`, so that a client
//! that calls once a second and fails every third call does not lose its credit before its
//! next failure. A retry is granted when the credit reaches a threshold drawn from `(0, 1]`
//! after each grant, and costs a whole retry: the part it lacked is lent against the next
//! requests, so the debt stays under one retry, and the part a fault's end leaves unspent is as
//! likely under the threshold as over it. Waiting for a whole retry instead would lose that
//! part, half a retry on average: 0.5 % of the requests of a client that sends 100 in a fault.
//! A client too slow to earn a whole retry in its window at all gets a draw instead: the retry
//! is granted with the probability of the part it holds, which is spent either way. So any
//! client retries what its requests earn on average, a busy one within one retry of it, and a
//! slow one no more (a part spent on a draw that lost is gone, so the same credit never buys
//! two draws) while still retrying some failures. There is no floor unless configured.
//!
//! So a client holds at most `ratio × rate × quiet_ttl` of stored credit when a fault begins,
//! in proportion to its own rate, and a fleet of any size holds `ratio × total rate × quiet_ttl`
//! between them. Over a fault of `D` seconds hitting every client, the fleet's retries are at
//! most (in expectation) `ratio × (1 + quiet_ttl / D)` of its requests: 9.9 % with the defaults
//! (`ratio` 0.09) for any fault of 10 s or more, at any rate and any number of clients.
//!
//! The price: a client too slow to earn a whole retry in `quiet_ttl` cannot be sure to retry a
//! lone transient error. That is arithmetic, not a choice: a fleet of `N` clients sharing `λ`
//! requests a second sends each of them `λ·D/N` requests during a fault of `D` seconds, and
//! any rule that lets each client retry its first failure for sure adds `N / (λ·D)` to the
//! fleet's amplification (+100 % for 1000 clients at 100 requests a second during a 10 s
//! outage), while a client cannot tell its first failure of a fleet-wide fault from a
//! transient error. A client may retry it with the probability of its credit; a floor
//! (`min_per_second`) gives single low-rate clients their certainty back, for deployments that
//! know they are not a fleet.
//!
//! Requests and retries wanted are counted in slots of a tenth of `quiet_ttl` (at most a
//! thousand over `ttl`), one word per slot tagged with its number, so that a request costs one
//! compare-and-swap and no lock, and memory stays fixed. The credit itself is kept by the
//! retries, under a lock taken only by a call that wants a retry.
//!
//! Several layers (one per downstream host, say) can share one budget:
//!
//! ```
//! use std::time::Duration;
//! use seawall_retry::{BudgetConfig, RetryBudget, RetryLayer};
//!
//! # fn main() -> Result<(), seawall_core::config::ConfigError> {
//! let budget = RetryBudget::new(BudgetConfig::new(0.1, 0, Duration::from_secs(10))?);
//! let orders = RetryLayer::builder().name("orders").build()?.with_budget(budget.clone());
//! let stock = RetryLayer::builder().name("stock").build()?.with_budget(budget);
//! # drop((orders, stock));
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use seawall_core::sync::atomic::{AtomicU64, Ordering};
use seawall_core::sync::{Mutex, MutexGuard};
use tokio::time::Instant;

use seawall_core::config::ConfigError;

use crate::config::BudgetConfig;
use seawall_core::time::nanos;

const COUNT_MASK: u64 = u32::MAX as u64;
/// Below this count a slot word takes a plain add: half the count's range is left for the adds
/// of callers that read the word below it before it got there.
const FAST_COUNTS: u64 = COUNT_MASK / 2;
/// Slots per `quiet_ttl`.
const SLOTS_PER_QUIET: u64 = 10;
/// The most slots over `ttl`.
const MAX_SLOTS: u64 = 1000;

/// A retry budget shared by every clone of the layers it is given to.
///
/// Cloning it is cheap and shares the same counts.
#[derive(Clone)]
pub struct RetryBudget {
    state: Arc<BudgetState>,
}

struct BudgetState {
    start: Instant,
    slot_nanos: u64,
    quiet_slots: u64,
    ttl_slots: u64,
    deposits: Box<[AtomicU64]>,
    wants: Box<[AtomicU64]>,
    /// The slot of the latest refused withdrawal, plus one; 0 before any.
    refused: AtomicU64,
    ledger: Mutex<Ledger>,
}

/// The credit, as the withdrawals have left it, and the ratio and floor it is earned by
/// (which a reload may change).
#[derive(Debug)]
struct Ledger {
    config: BudgetConfig,
    /// `min_per_second` in retries per slot.
    floor_per_slot: f64,
    /// Retries of credit.
    credit: f64,
    /// The latest slot whose requests the credit has taken in, and how many of them.
    seen_slot: u64,
    seen: u64,
    /// The slot an episode of frequent failures began in, if one is on.
    episode: Option<u64>,
    /// What the credit must reach for the next retry where the window holds a whole one:
    /// drawn from `(0, 1]` when first needed after each grant, so that on average a retry is
    /// granted for each retry of credit, the last part included.
    threshold: Option<f64>,
    /// The stream partial retries and thresholds are drawn from.
    seed: u64,
    draws: u64,
}

impl RetryBudget {
    /// A budget as `config` says, empty but for its floor's share of `quiet_ttl`, whose partial
    /// retries are drawn
    /// from a random seed.
    pub fn new(config: BudgetConfig) -> Self {
        Self::seeded(config, RandomState::new().hash_one(0u8))
    }

    /// A budget as `config` says whose partial retries are drawn from `seed`, so that runs
    /// repeat.
    pub fn seeded(config: BudgetConfig, seed: u64) -> Self {
        let quiet = nanos(config.quiet_ttl);
        let ttl = nanos(config.ttl);
        let slot_nanos = (quiet / SLOTS_PER_QUIET)
            .max(ttl.div_ceil(MAX_SLOTS))
            .max(1);
        let ttl_slots = ttl.div_ceil(slot_nanos);
        let quiet_slots = quiet.div_ceil(slot_nanos).clamp(1, ttl_slots);
        // One more than the window, for the slot being filled.
        let len = ttl_slots + 1;
        let slots = || (0..len).map(|_| AtomicU64::new(0)).collect();
        let floor_per_slot = floor_per_slot(&config, slot_nanos);
        Self {
            state: Arc::new(BudgetState {
                start: Instant::now(),
                slot_nanos,
                quiet_slots,
                ttl_slots,
                deposits: slots(),
                wants: slots(),
                refused: AtomicU64::new(0),
                ledger: Mutex::new(Ledger {
                    config,
                    floor_per_slot,
                    // The floor's share of the window from the start: a new client may retry.
                    credit: floor_per_slot * quiet_slots as f64,
                    seen_slot: 0,
                    seen: 0,
                    episode: None,
                    threshold: None,
                    seed,
                    draws: 0,
                }),
            }),
        }
    }

    /// The budget's configuration: the one it was made with, or the last one
    /// [`reload`](Self::reload) took.
    pub fn config(&self) -> BudgetConfig {
        self.state.ledger().config
    }

    /// Earns credit by `config`'s `ratio` and `min_per_second` from now on, without a restart;
    /// every layer given this budget follows it.
    ///
    /// The budget keeps the requests it counted and the credit it holds (at most what the new
    /// ratio allows over its window, from the next withdrawal on). Its windows stay: a
    /// `config` with another `ttl` or `quiet_ttl` is refused with a [`ConfigError`] naming the
    /// field, and the budget goes on as it was.
    pub fn reload(&self, config: BudgetConfig) -> Result<(), ConfigError> {
        let s = &*self.state;
        let mut ledger = s.ledger();
        check_reload(&ledger.config, &config)?;
        // Credit earned so far is settled under the old ratio before the new one applies.
        let slot = s.slot(Instant::now()).max(ledger.seen_slot);
        let (credit, _, _) = s.settle(&mut ledger, slot, true);
        ledger.credit = credit;
        ledger.floor_per_slot = floor_per_slot(&config, s.slot_nanos);
        ledger.config = config;
        Ok(())
    }

    /// Whether [`reload`](Self::reload) would take `config`, changing nothing.
    pub fn check_reload(&self, config: &BudgetConfig) -> Result<(), ConfigError> {
        check_reload(&self.state.ledger().config, config)
    }

    /// Counts one request, which earns the budget `ratio` of a retry.
    pub fn deposit(&self) {
        self.deposit_at(Instant::now());
    }

    /// Takes one retry from the budget; `false` when none is left (or, when only part of one
    /// is, with the probability of what is missing).
    pub fn withdraw(&self) -> bool {
        self.withdraw_at(Instant::now())
    }

    /// Whole retries left now.
    pub fn available(&self) -> u64 {
        let s = &*self.state;
        let mut ledger = s.ledger();
        let slot = s.slot(Instant::now()).max(ledger.seen_slot);
        let (credit, _, _) = s.settle(&mut ledger, slot, false);
        credit.max(0.0) as u64
    }

    /// Whether a withdrawal was refused within the last `quiet_ttl`: a retry is unlikely to be
    /// granted now, so an attempt is likely the last of its call.
    pub fn recently_refused(&self) -> bool {
        self.recently_refused_at(Instant::now())
    }

    pub(crate) fn recently_refused_at(&self, now: Instant) -> bool {
        let s = &*self.state;
        match s.refused.load(Ordering::Relaxed) {
            0 => false,
            after => s.slot(now) < after - 1 + s.quiet_slots,
        }
    }

    pub(crate) fn deposit_at(&self, now: Instant) {
        let s = &*self.state;
        let slot = s.slot(now);
        increment(s.at(&s.deposits, slot), slot);
    }

    /// Counts one request in `slot`, the slot of the clock reading it came at.
    #[inline]
    pub(crate) fn deposit_in(&self, slot: Slot) {
        let s = &*self.state;
        // The index is `slot.number` modulo the length, found when the slot was.
        increment(&s.deposits[slot.index], slot.number);
    }

    /// [`recently_refused_at`](Self::recently_refused_at) a reading in `slot`.
    #[inline]
    pub(crate) fn recently_refused_in(&self, slot: Slot) -> bool {
        let s = &*self.state;
        match s.refused.load(Ordering::Relaxed) {
            0 => false,
            after => slot.number < after - 1 + s.quiet_slots,
        }
    }

    /// The slot `now` falls in, through `cache`: the same answer as the subtraction from the
    /// budget's start, which a reading within the cached slot skips.
    #[inline]
    pub(crate) fn slot_of(&self, cache: &mut SlotCache, now: Instant) -> Slot {
        if cache.start <= now && now < cache.end {
            cache.slot
        } else {
            self.find_slot(cache, now)
        }
    }

    #[cold]
    #[inline(never)]
    fn find_slot(&self, cache: &mut SlotCache, now: Instant) -> Slot {
        let s = &*self.state;
        let number = s.slot(now);
        let slot = Slot {
            number,
            index: (number % s.deposits.len() as u64) as usize,
        };
        let slot_start = number
            .checked_mul(s.slot_nanos)
            .and_then(|from| s.start.checked_add(Duration::from_nanos(from)));
        // A reading before the budget's start falls in slot 0 too, but not between these
        // bounds: it is not cached.
        if let Some(start) = slot_start.filter(|start| *start <= now)
            && let Some(end) = start.checked_add(Duration::from_nanos(s.slot_nanos))
        {
            *cache = SlotCache { start, end, slot };
        }
        slot
    }

    pub(crate) fn withdraw_at(&self, now: Instant) -> bool {
        let s = &*self.state;
        let slot = s.slot(now);
        increment(s.at(&s.wants, slot), slot);
        let mut ledger = s.ledger();
        // A caller whose clock read came before another's, but took the lock after, settles
        // at the other's slot: the ledger never goes back, so no request is earned twice.
        let slot = slot.max(ledger.seen_slot);
        let (credit, cap, frequent) = s.settle(&mut ledger, slot, true);
        // Float dust from summing parts is no reason to refuse a retry the credit reached, nor
        // to draw on a part where the window holds a whole one.
        let (granted, left) = if cap >= 1.0 - 1e-9 {
            // A retry costs a whole one, lent against the next requests when the credit
            // reached only the threshold: the debt stays under one retry, and the credit a
            // fault's end leaves unspent is as likely under the threshold as over it, so the
            // retries granted are what the requests earned, on average and within one.
            let threshold = match ledger.threshold {
                Some(threshold) => threshold,
                // Drawn only here, so a client that never holds a whole retry draws as before.
                None => {
                    let threshold = 1.0 - draw(&mut ledger);
                    ledger.threshold = Some(threshold);
                    threshold
                }
            };
            if credit >= threshold - 1e-9 {
                ledger.threshold = None;
                (true, credit - 1.0)
            } else {
                (false, credit)
            }
        } else if credit > 0.0 {
            // The window cannot hold a whole retry: only a draw lets this client retry at all.
            // Part of a retry buys that chance of one, and is spent whatever the draw.
            (draw(&mut ledger) < credit, 0.0)
        } else {
            (false, credit)
        };
        ledger.credit = left;
        drop(ledger);
        if !granted {
            s.refused.fetch_max(slot + 1, Ordering::Relaxed);
        }
        tracing::trace!(granted, credit, frequent, "retry budget");
        granted
    }
}

/// The budget slot a caller's latest clock reading fell in, with the instants it runs between.
///
/// Finding a reading's slot is an `Instant` subtraction, a `u128` conversion and a division:
/// 123 of the retry layer's 448 instructions a call, where tower's `TpsBudget` pays 55 for its
/// subtraction (callgrind, `benches/callgrind.sh retry`). Calls come many to a slot (a tenth
/// of `quiet_ttl`, 100 ms by default), so each service keeps the last slot it found, and a
/// reading within it costs two comparisons.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SlotCache {
    start: Instant,
    end: Instant,
    slot: Slot,
}

/// A budget slot: its number, and its index in the slot words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    number: u64,
    index: usize,
}

impl SlotCache {
    /// A cache that holds no slot yet.
    pub(crate) fn new() -> Self {
        let now = Instant::now();
        Self {
            start: now,
            end: now,
            slot: Slot {
                number: 0,
                index: 0,
            },
        }
    }
}

impl BudgetState {
    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn slot(&self, now: Instant) -> u64 {
        nanos(now.saturating_duration_since(self.start)) / self.slot_nanos
    }

    fn at<'a>(&self, slots: &'a [AtomicU64], slot: u64) -> &'a AtomicU64 {
        &slots[(slot % slots.len() as u64) as usize]
    }

    /// The credit at `slot`: what the ledger held, plus what the requests since earned, with
    /// credit older than the window expired; the most the window allows; and whether failures
    /// are frequent. With `commit`, the ledger takes the requests and the episode in.
    fn settle(&self, ledger: &mut Ledger, slot: u64, commit: bool) -> (f64, f64, bool) {
        let ratio = ledger.config.ratio;
        let floor_per_slot = ledger.floor_per_slot;
        let ttl_from = (slot + 1).saturating_sub(self.ttl_slots);
        let requests = sum(&self.deposits, ttl_from, slot);
        let wanted = sum(&self.wants, ttl_from, slot);
        // Retries wanted for at least `ratio` of requests: failures use every bit of credit.
        let frequent = wanted > 0 && wanted as f64 >= ratio * requests as f64;
        let episode = match (frequent, ledger.episode) {
            (false, _) => None,
            (true, None) => Some(slot),
            (true, Some(began)) => Some(began.min(slot)),
        };
        // The window credit may come from, and its length in slots whether or not the budget
        // has lived that long.
        let length = match episode {
            None => self.quiet_slots,
            Some(began) => self.ttl_slots.min(slot - began + self.quiet_slots),
        };
        let from = (slot + 1).saturating_sub(length);
        // Requests since the ledger last looked (those of its slot it had not seen yet).
        let (fresh, seen) = if slot > ledger.seen_slot {
            let older = sum(
                &self.deposits,
                ledger.seen_slot.max(ttl_from),
                ledger.seen_slot,
            );
            let newer = sum(&self.deposits, (ledger.seen_slot + 1).max(ttl_from), slot);
            let now = sum(&self.deposits, slot, slot);
            (older.saturating_sub(ledger.seen) + newer, now)
        } else {
            let now = sum(&self.deposits, slot, slot);
            (now.saturating_sub(ledger.seen), now)
        };
        let elapsed = slot.saturating_sub(ledger.seen_slot) as f64;
        let earned = ratio * fresh as f64 + floor_per_slot * elapsed;
        let cap = ratio * sum(&self.deposits, from, slot) as f64 + floor_per_slot * length as f64;
        let credit = (ledger.credit + earned).min(cap);
        if commit {
            ledger.episode = episode;
            ledger.seen_slot = slot;
            ledger.seen = seen;
        }
        (credit, cap, frequent)
    }
}

/// `min_per_second` in retries per slot.
fn floor_per_slot(config: &BudgetConfig, slot_nanos: u64) -> f64 {
    f64::from(config.min_per_second) * slot_nanos as f64 / 1e9
}

/// Checks that `config` may replace `live`: the windows stay as they are.
fn check_reload(live: &BudgetConfig, config: &BudgetConfig) -> Result<(), ConfigError> {
    if config.ttl != live.ttl {
        return Err(ConfigError::needs_restart(
            "ttl",
            format_args!("{:?}", config.ttl),
            format_args!("{:?}", live.ttl),
        ));
    }
    if config.quiet_ttl != live.quiet_ttl {
        return Err(ConfigError::needs_restart(
            "quiet_ttl",
            format_args!("{:?}", config.quiet_ttl),
            format_args!("{:?}", live.quiet_ttl),
        ));
    }
    Ok(())
}

/// A number in `[0, 1)`, the next of the ledger's seeded stream.
fn draw(ledger: &mut Ledger) -> f64 {
    ledger.draws += 1;
    // splitmix64: every draw its own.
    let mut z = ledger
        .seed
        .wrapping_add(ledger.draws.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

fn tag_of(word: u64) -> u64 {
    word >> 32
}

/// Adds one to the slot word for `slot`, starting it afresh when it still holds an older
/// slot.
#[inline]
fn increment(cell: &AtomicU64, slot: u64) {
    let tag = slot & COUNT_MASK;
    let mut current = cell.load(Ordering::Acquire);
    // The usual case, the word already on this slot (or a newer one) and far from its count's
    // limit: one add (7 instructions a call where the loop took 17, callgrind). A word only
    // moves to newer slots, so an add that lands after another caller moved it counts where
    // the loop's retry would have; the margin keeps every add that raced a load below the
    // limit, where the loop saturates.
    if tag_of(current) >= tag && current != 0 && current & COUNT_MASK < FAST_COUNTS {
        cell.fetch_add(1, Ordering::AcqRel);
        return;
    }
    loop {
        let next = if tag_of(current) >= tag && current != 0 {
            // A newer slot (from a caller whose clock read came later) keeps its word.
            let count = (current & COUNT_MASK).saturating_add(1).min(COUNT_MASK);
            (current & !COUNT_MASK) | count
        } else {
            (tag << 32) | 1
        };
        match cell.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return,
            Err(actual) => current = actual,
        }
    }
}

/// The counts of the slot words whose slot lies in `from..=to`.
fn sum(cells: &[AtomicU64], from: u64, to: u64) -> u64 {
    if from > to {
        return 0;
    }
    let (from, to) = (from & COUNT_MASK, to & COUNT_MASK);
    cells
        .iter()
        .map(|cell| cell.load(Ordering::Acquire))
        .filter(|&word| word != 0 && (from..=to).contains(&tag_of(word)))
        .map(|word| word & COUNT_MASK)
        .sum()
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("config", &self.config())
            .field("available", &self.available())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn budget(ratio: f64, min_per_second: u32, ttl: u64) -> RetryBudget {
        RetryBudget::seeded(
            BudgetConfig::new(ratio, min_per_second, Duration::from_secs(ttl)).unwrap(),
            7,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn the_floor_alone_allows_min_per_second_over_the_window() {
        let b = budget(0.0, 2, 3);
        // Quiet: the window is the last second.
        assert_eq!(b.available(), 2);
        assert!(b.withdraw());
        assert!(b.withdraw());
        assert!(!b.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn a_window_holding_a_whole_retry_but_for_float_dust_keeps_its_part() {
        // 0.15 × 6 + 0.01 × 10 sums to just under 1: the window holds a whole retry, so the
        // 0.3 earned waits for its threshold instead of being spent on a draw, and with the 0.7
        // of floor after it buys exactly one retry, lent early or granted late.
        let (mut early, mut late) = (0, 0);
        for seed in 0..64 {
            let b = RetryBudget::seeded(
                BudgetConfig::new(0.15, 2, Duration::from_secs(1))
                    .unwrap()
                    .with_quiet_ttl(ms(50))
                    .unwrap(),
                seed,
            );
            for _ in 0..4 {
                b.deposit();
            }
            b.withdraw();
            b.deposit();
            b.deposit();
            let first = b.withdraw();
            tokio::time::advance(ms(350)).await;
            let second = b.withdraw();
            assert!(first != second, "0.3 and 0.7 make one retry (seed {seed})");
            early += u32::from(first);
            late += u32::from(second);
        }
        assert!(early > 0 && late > 0, "{early} lent, {late} waited");
    }

    #[tokio::test(start_paused = true)]
    async fn requests_earn_their_ratio() {
        let b = budget(0.5, 0, 1);
        b.deposit();
        b.deposit();
        assert_eq!(b.available(), 1);
        assert!(b.withdraw());
        assert_eq!(b.available(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn quiet_credit_lasts_quiet_ttl() {
        let b = budget(1.0, 0, 10);
        b.deposit();
        tokio::time::advance(ms(1000)).await;
        assert_eq!(b.available(), 0, "a request a second old earns nothing now");
        b.deposit();
        tokio::time::advance(ms(900)).await;
        assert!(b.withdraw(), "one 0.9 s old still counts");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_withdrawal_is_not_counted_as_spent() {
        let b = budget(1.0, 0, 10);
        for _ in 0..100 {
            assert!(!b.withdraw());
        }
        b.deposit();
        assert!(b.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_lent_on_part_of_one_is_repaid_before_the_next() {
        let (mut lent, mut waited) = (0, 0);
        for seed in 0..64 {
            let b = RetryBudget::seeded(
                BudgetConfig::new(0.5, 0, Duration::from_secs(10)).unwrap(),
                seed,
            );
            // Three requests: a retry and a half, in a window that holds more than one.
            for _ in 0..3 {
                b.deposit();
            }
            assert!(b.withdraw());
            // The half is granted when it reaches the threshold, lent against the next
            // request; otherwise it waits for the rest. Either way, two retries in all.
            let on_the_half = b.withdraw();
            b.deposit();
            let after = b.withdraw();
            assert!(
                on_the_half != after,
                "the half and the next half make one retry (seed {seed})"
            );
            assert!(!b.withdraw(), "nothing is lent twice (seed {seed})");
            lent += u32::from(on_the_half);
            waited += u32::from(after);
        }
        assert!(lent > 0 && waited > 0, "{lent} lent, {waited} waited");
    }

    #[tokio::test(start_paused = true)]
    async fn frequent_failures_keep_the_credit_of_their_episode() {
        // One request a second, every third wanting a retry: each earns 0.3 of a retry.
        let b = budget(0.3, 0, 10);
        let mut granted = 0;
        for second in 0..30 {
            b.deposit();
            if second % 3 == 2 && b.withdraw() {
                granted += 1;
            }
            tokio::time::advance(ms(1000)).await;
        }
        // 30 requests earn 9 retries; credit one second old would have earned 3 at most.
        assert!(granted >= 7, "{granted}");
        assert!(granted <= 9, "{granted}");
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_are_remembered_for_quiet_ttl() {
        let b = budget(0.0, 0, 10);
        assert!(!b.recently_refused());
        assert!(!b.withdraw());
        assert!(b.recently_refused());
        tokio::time::advance(ms(1000)).await;
        assert!(!b.recently_refused());
    }

    /// A slot word after one more count, as the compare-and-swap loop alone made it before the
    /// plain add took the usual case.
    fn incremented_by_the_loop(word: u64, slot: u64) -> u64 {
        let tag = slot & COUNT_MASK;
        if tag_of(word) >= tag && word != 0 {
            (word & !COUNT_MASK) | (word & COUNT_MASK).saturating_add(1).min(COUNT_MASK)
        } else {
            (tag << 32) | 1
        }
    }

    proptest::proptest! {
        /// Any word (none, an older, the same or a newer slot's; any count, the plain add's
        /// bound and the count's limit among them) ends as the loop left it.
        #[test]
        fn a_slot_word_counts_one_more_as_the_loop_did(
            word_tag in 0u64..6,
            count in proptest::prop_oneof![
                0u64..4,
                FAST_COUNTS - 2..FAST_COUNTS + 2,
                COUNT_MASK - 2..=COUNT_MASK,
            ],
            empty: bool,
            slot in 0u64..6,
        ) {
            let word = if empty { 0 } else { (word_tag << 32) | count };
            let cell = AtomicU64::new(word);
            increment(&cell, slot);
            proptest::prop_assert_eq!(
                cell.load(Ordering::Relaxed),
                incremented_by_the_loop(word, slot)
            );
        }
    }

    proptest::proptest! {
        /// Against the subtraction, with readings crossing slot boundaries, going back
        /// (another runtime's clock), and before the budget's start.
        #[test]
        fn a_cached_slot_is_the_slot_of_the_subtraction(
            quiet_ms in 10u64..2_000,
            steps in proptest::collection::vec(-300_000_000i64..300_000_000, 1..200),
        ) {
            let b = RetryBudget::seeded(
                BudgetConfig::new(0.1, 0, Duration::from_secs(10))
                    .unwrap()
                    .with_quiet_ttl(ms(quiet_ms))
                    .unwrap(),
                7,
            );
            let start = b.state.start;
            let before = start.checked_sub(Duration::from_secs(1)).unwrap_or(start);
            let mut cache = SlotCache::new();
            let mut at = start + Duration::from_secs(1);
            for step in steps {
                at = if step >= 0 {
                    at + Duration::from_nanos(step.unsigned_abs())
                } else {
                    at.checked_sub(Duration::from_nanos(step.unsigned_abs()))
                        .unwrap_or(before)
                        .max(before)
                };
                let slot = b.slot_of(&mut cache, at);
                proptest::prop_assert_eq!(slot.number, b.state.slot(at));
                proptest::prop_assert_eq!(
                    &b.state.deposits[slot.index] as *const AtomicU64,
                    b.state.at(&b.state.deposits, slot.number) as *const AtomicU64
                );
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_cached_slot_ends_at_the_next_slots_first_nanosecond() {
        let b = budget(0.1, 0, 10);
        let (start, slot) = (b.state.start, Duration::from_nanos(b.state.slot_nanos));
        let nano = Duration::from_nanos(1);
        let mut cache = SlotCache::new();
        for (at, expected) in [
            (start, 0),
            (start + slot - nano, 0),
            (start + slot, 1),
            (start + slot - nano, 0),
            (start + 2 * slot - nano, 1),
            (start + 2 * slot, 2),
        ] {
            assert_eq!(
                b.slot_of(&mut cache, at).number,
                expected,
                "{:?}",
                at - start
            );
        }
    }

    #[test]
    fn draws_are_spread_over_zero_to_one() {
        let b = budget(0.1, 0, 10);
        let mut ledger = b.state.ledger();
        let draws: Vec<f64> = (0..10_000).map(|_| draw(&mut ledger)).collect();
        assert!(draws.iter().all(|&d| (0.0..1.0).contains(&d)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
    }

    #[tokio::test(start_paused = true)]
    async fn part_of_a_retry_buys_one_draw_at_its_odds() {
        // Ten requests a second earn 0.9 of a retry in the second credit lasts while quiet.
        let b = budget(0.09, 0, 10);
        let mut granted = 0u32;
        for _ in 0..2000 {
            for _ in 0..10 {
                b.deposit();
                tokio::time::advance(ms(100)).await;
            }
            granted += u32::from(b.withdraw());
        }
        // 20 000 requests earn 1800 retries, about what the draws grant.
        assert!((1700..=1900).contains(&granted), "{granted}");
    }

    mod fleet {
        //! The bound the module promises for a fleet: over a fault of `D` seconds hitting `N`
        //! clients that share `λ` requests a second, retries are at most
        //! `ratio × (1 + quiet_ttl / D)` of the fault's requests (in expectation: the partial
        //! retries granted on draws add a spread, bounded here by four standard deviations).

        use super::*;
        use proptest::prelude::*;
        use rand::rngs::SmallRng;
        use rand::{Rng, SeedableRng};

        /// Retries granted and requests sent during the fault, and draws for partial retries.
        struct Run {
            retries: u64,
            requests: u64,
            retries_wanted: u64,
        }

        /// `clients` clients sharing `rate` requests a second for `healthy` seconds and then a
        /// fault of `fault` seconds in which each attempt fails with probability `p`; a failed
        /// attempt is retried at once, up to two retries per request.
        fn run(clients: u64, rate: f64, healthy: f64, fault: f64, p: f64, seed: u64) -> Run {
            let config = BudgetConfig::default();
            let budgets: Vec<RetryBudget> = (0..clients)
                .map(|c| RetryBudget::seeded(config, seed ^ c))
                .collect();
            let t0 = Instant::now();
            let mut rng = SmallRng::seed_from_u64(seed);
            let per_client = rate / clients as f64;
            let end = healthy + fault;
            // Every request, in time order: (seconds, client).
            let mut arrivals: Vec<(f64, u64)> = Vec::new();
            for c in 0..clients {
                let mut t = rng.random::<f64>() / per_client;
                while t < end {
                    arrivals.push((t, c));
                    t += 1.0 / per_client;
                }
            }
            arrivals.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut run = Run {
                retries: 0,
                requests: 0,
                retries_wanted: 0,
            };
            for (t, c) in arrivals {
                let now = t0 + Duration::from_secs_f64(t);
                let budget = &budgets[c as usize];
                budget.deposit_at(now);
                if t < healthy {
                    continue;
                }
                run.requests += 1;
                let mut attempts = 1;
                while attempts < 3 && rng.random_bool(p) {
                    run.retries_wanted += 1;
                    if !budget.withdraw_at(now) {
                        break;
                    }
                    run.retries += 1;
                    attempts += 1;
                }
            }
            run
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(24))]

            #[test]
            fn a_fleet_retries_at_most_the_ratio_over_any_fault(
                clients in prop_oneof![Just(1u64), 2u64..=10, Just(100), Just(1000)],
                rate in prop_oneof![Just(100.0), Just(1000.0), 100.0f64..=5000.0],
                healthy in 2.0f64..=20.0,
                fault in 10.0f64..=20.0,
                p in prop_oneof![Just(1.0), Just(0.3), 0.05f64..=1.0],
                seed in any::<u64>(),
            ) {
                let run = run(clients, rate, healthy, fault, p, seed);
                let config = BudgetConfig::default();
                let expected = config.ratio()
                    * (1.0 + config.quiet_ttl().as_secs_f64() / fault)
                    * run.requests as f64;
                let spread = 4.0 * (run.retries_wanted as f64 / 4.0).sqrt() + 1.0;
                prop_assert!(
                    (run.retries as f64) <= expected + spread,
                    "{} retries for {} requests: over {:.1} + {:.1}",
                    run.retries, run.requests, expected, spread
                );
                prop_assert!(
                    expected <= 0.1 * run.requests as f64 + 1e-9,
                    "the default keeps the fleet within the SRE book's 10 %"
                );
            }
        }

        /// One client sending `rate` requests a second for `healthy` seconds, then through a
        /// fault of `fault` seconds in which each attempt fails with probability `p` (retried
        /// at once, up to two retries a request): the credit it holds at its first failure plus
        /// what its later requests earn, and the retries it was granted.
        fn one_client(rate: f64, healthy: f64, fault: f64, p: f64, seed: u64) -> (f64, u64) {
            let budget = RetryBudget::seeded(BudgetConfig::default(), seed);
            let ratio = budget.config().ratio();
            let t0 = Instant::now();
            let mut rng = SmallRng::seed_from_u64(seed);
            let (mut earned, mut retries): (Option<f64>, u64) = (None, 0);
            let mut t = rng.random::<f64>() / rate;
            while t < healthy + fault {
                let now = t0 + Duration::from_secs_f64(t);
                budget.deposit_at(now);
                if let Some(earned) = &mut earned {
                    *earned += ratio;
                }
                let mut attempts = 1;
                while t >= healthy && attempts < 3 && rng.random_bool(p) {
                    if earned.is_none() {
                        let s = &*budget.state;
                        let mut ledger = s.ledger();
                        let slot = s.slot(now).max(ledger.seen_slot);
                        earned = Some(s.settle(&mut ledger, slot, false).0);
                    }
                    if !budget.withdraw_at(now) {
                        break;
                    }
                    retries += 1;
                    attempts += 1;
                }
                t += 1.0 / rate;
            }
            (earned.unwrap_or(0.0), retries)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(12))]

            /// Whatever its rate, a client failing at every request retries, on average, the
            /// credit it held when the fault began and what its requests earned since: no part
            /// of a retry is left unspent at the fault's end; and no more than the fleet's
            /// bound.
            #[test]
            fn a_client_at_any_rate_retries_the_credit_it_earns_over_a_fault(
                rate in prop_oneof![Just(1.0), Just(2.0), Just(10.0), Just(1000.0), 1.0f64..=1000.0],
                healthy in 2.0f64..=6.0,
                fault in 10.0f64..=20.0,
                seed in any::<u64>(),
            ) {
                // Enough clients that the mean's noise is small next to half a retry.
                let clients = (1_000.0 / rate).clamp(10.0, 200.0) as u64;
                let runs: Vec<(f64, u64)> = (0..clients)
                    .map(|c| one_client(rate, healthy, fault, 1.0, seed.wrapping_add(c)))
                    .collect();
                let n = clients as f64;
                let short: Vec<f64> = runs.iter().map(|&(e, r)| e - r as f64).collect();
                let mean = short.iter().sum::<f64>() / n;
                let sd = (short.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
                // The credit held at the first failure may include a slot of the quiet window
                // that expires before it is spent (the window is 0.9 to 1 quiet_ttl long, by
                // where the fault begins in a slot): at most one slot's credit, 9 retries at
                // 1000/s (seen: 7.0 with healthy = 3.399 s), 0.018 at 2/s.
                let config = BudgetConfig::default();
                let quiet = config.quiet_ttl().as_secs_f64();
                let slot = config.ratio() * rate * quiet / SLOTS_PER_QUIET as f64;
                prop_assert!(
                    mean.abs() <= 0.1 + slot + 4.0 * sd / n.sqrt(),
                    "at {rate:.1}/s a client retried {mean:.3} fewer than it earned (sd {sd:.3})"
                );
                let requests = (rate * fault).floor();
                let bound = config.ratio() * (1.0 + config.quiet_ttl().as_secs_f64() / fault)
                    * requests;
                let retries = runs.iter().map(|&(_, r)| r as f64).sum::<f64>() / n;
                prop_assert!(
                    retries <= bound + 1.0 + 4.0 * sd / n.sqrt(),
                    "at {rate:.1}/s {retries:.2} retries a client, over the bound {bound:.2}"
                );
            }
        }

        #[test]
        fn a_floor_multiplies_with_the_fleet() {
            // What the bound excludes: Finagle's floor of 10 a second for each of 1000 clients
            // sharing 1000 requests a second lets every failure of an outage be retried twice.
            let config = BudgetConfig::new(0.1, 10, Duration::from_secs(10)).unwrap();
            let budgets: Vec<RetryBudget> =
                (0..1000).map(|c| RetryBudget::seeded(config, c)).collect();
            let t0 = Instant::now();
            let (mut retries, mut requests) = (0, 0);
            for second in 0..10u64 {
                for (c, budget) in budgets.iter().enumerate() {
                    let now = t0 + Duration::from_secs(second) + Duration::from_millis(c as u64);
                    budget.deposit_at(now);
                    requests += 1;
                    retries += u64::from(budget.withdraw_at(now));
                    retries += u64::from(budget.withdraw_at(now));
                }
            }
            assert_eq!((retries, requests), (20_000, 10_000));
        }
    }
}
