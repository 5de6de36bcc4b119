//! How long to wait before the next attempt: a backoff curve, a cap and jitter.
//!
//! Without jitter, clients that failed together retry together and hit a recovering
//! downstream in waves; jitter spreads them out. [`Jitter::Full`] spreads the most and is the
//! usual choice; [`Jitter::Decorrelated`] grows from the previous delay rather than the attempt
//! number (both from the AWS Architecture Blog's "Exponential Backoff And Jitter").
//!
//! ```
//! use std::time::Duration;
//! use rand::{SeedableRng, rngs::SmallRng};
//! use seawall_core::backoff::{Backoff, Jitter};
//!
//! let backoff = Backoff::exponential(Duration::from_millis(100))
//!     .cap(Duration::from_secs(2))
//!     .jitter(Jitter::Full)
//!     .build()?;
//! let mut rng = SmallRng::seed_from_u64(7);
//! let mut previous = backoff.base();
//! for attempt in 1..=6 {
//!     let delay = backoff.delay(attempt, previous, &mut rng);
//!     assert!(delay <= Duration::from_secs(2));
//!     previous = delay;
//! }
//! # Ok::<(), seawall_core::config::ConfigError>(())
//! ```

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::config::{self, ConfigError, Raw};
use crate::time::nanos;

const MAX_BASE: Duration = Duration::from_secs(3600);
const MAX_CAP: Duration = config::MAX_DURATION;
const MAX_FACTOR: f64 = 100.0;

/// How the un-jittered delay grows with the attempt number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackoffKind {
    /// The same delay every time.
    Constant,
    /// `base + step × (attempt − 1)`.
    Linear,
    /// `base × factor^(attempt − 1)`.
    Exponential,
}

/// How the delay is randomised.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Jitter {
    /// The delay as the curve gives it.
    None,
    /// Uniform in `[0, delay]`.
    #[default]
    Full,
    /// Uniform in `[delay / 2, delay]`.
    Equal,
    /// Uniform in `[base, 3 × previous delay]`, capped.
    Decorrelated,
}

/// A validated backoff: a curve, a cap and a jitter.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "BackoffSpec", into = "BackoffSpec")]
pub struct Backoff {
    kind: BackoffKind,
    base: Duration,
    step: Duration,
    factor: f64,
    cap: Duration,
    jitter: Jitter,
}

impl Backoff {
    /// A builder for a constant `delay`.
    pub fn constant(delay: Duration) -> BackoffBuilder {
        BackoffBuilder::new(BackoffKind::Constant, delay)
    }

    /// A builder for a delay that grows by `base` each attempt (set another step with
    /// [`BackoffBuilder::step`]).
    pub fn linear(base: Duration) -> BackoffBuilder {
        BackoffBuilder::new(BackoffKind::Linear, base)
    }

    /// A builder for a delay that doubles each attempt (set another factor with
    /// [`BackoffBuilder::factor`]).
    pub fn exponential(base: Duration) -> BackoffBuilder {
        BackoffBuilder::new(BackoffKind::Exponential, base)
    }

    /// The first delay before jitter.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The longest delay ever returned.
    pub fn max_delay(&self) -> Duration {
        self.cap
    }

    /// The jitter applied.
    pub fn jitter_kind(&self) -> Jitter {
        self.jitter
    }

    /// The delay before retry number `attempt` (1 for the first retry), before jitter.
    pub fn curve(&self, attempt: u32) -> Duration {
        let n = attempt.max(1) - 1;
        let delay = match self.kind {
            BackoffKind::Constant => self.base,
            BackoffKind::Linear => self.base.saturating_add(self.step.saturating_mul(n)),
            BackoffKind::Exponential => {
                let secs =
                    self.base.as_secs_f64() * self.factor.powi(n.min(i32::MAX as u32) as i32);
                Duration::try_from_secs_f64(secs).unwrap_or(self.cap)
            }
        };
        delay.min(self.cap)
    }

    /// The delay before retry number `attempt` (1 for the first retry), jittered with `rng`.
    ///
    /// `previous` is the delay before the previous retry (use [`base`](Self::base) for the
    /// first); only [`Jitter::Decorrelated`] reads it. The result never exceeds the cap.
    pub fn delay<R: Rng + ?Sized>(
        &self,
        attempt: u32,
        previous: Duration,
        rng: &mut R,
    ) -> Duration {
        let delay = match self.jitter {
            Jitter::None => self.curve(attempt),
            Jitter::Full => uniform(rng, Duration::ZERO, self.curve(attempt)),
            Jitter::Equal => {
                let d = self.curve(attempt);
                uniform(rng, d / 2, d)
            }
            Jitter::Decorrelated => {
                let high = previous.max(self.base).saturating_mul(3).min(self.cap);
                uniform(rng, self.base.min(high), high)
            }
        };
        delay.min(self.cap)
    }
}

fn uniform<R: Rng + ?Sized>(rng: &mut R, low: Duration, high: Duration) -> Duration {
    let (low, high) = (nanos(low), nanos(high));
    if low >= high {
        return Duration::from_nanos(low);
    }
    Duration::from_nanos(rng.random_range(low..=high))
}

/// Builds a [`Backoff`], checking every value.
#[derive(Debug, Clone, Copy)]
pub struct BackoffBuilder {
    spec: BackoffParts,
}

impl BackoffBuilder {
    fn new(kind: BackoffKind, base: Duration) -> Self {
        Self {
            spec: BackoffParts {
                kind,
                base,
                step: None,
                factor: None,
                cap: None,
                jitter: Jitter::default(),
            },
        }
    }

    /// The growth per attempt of a linear backoff (default: the base).
    pub fn step(mut self, step: Duration) -> Self {
        self.spec.step = Some(step);
        self
    }

    /// The growth factor of an exponential backoff, in `[1, 100]` (default 2).
    pub fn factor(mut self, factor: f64) -> Self {
        self.spec.factor = Some(factor);
        self
    }

    /// The longest delay, in `[base, 1 day]` (default: 30 s, or the base if that is longer).
    pub fn cap(mut self, cap: Duration) -> Self {
        self.spec.cap = Some(cap);
        self
    }

    /// The jitter (default [`Jitter::Full`]).
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.spec.jitter = jitter;
        self
    }

    /// Checks the values and builds the backoff.
    pub fn build(self) -> Result<Backoff, ConfigError> {
        let parts = self.spec;
        Backoff::try_from(BackoffSpec {
            kind: parts.kind,
            base: parts.base.into(),
            step: parts.step.map(Raw::from),
            factor: parts.factor.map(Raw::from),
            cap: parts.cap.map(Raw::from),
            jitter: parts.jitter,
        })
    }
}

/// A backoff as a builder holds it, before validation.
#[derive(Debug, Clone, Copy)]
struct BackoffParts {
    kind: BackoffKind,
    base: Duration,
    step: Option<Duration>,
    factor: Option<f64>,
    cap: Option<Duration>,
    jitter: Jitter,
}

/// A backoff as written in a configuration file, before validation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackoffSpec {
    kind: BackoffKind,
    base: Raw<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    step: Option<Raw<Duration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    factor: Option<Raw<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cap: Option<Raw<Duration>>,
    #[serde(default)]
    jitter: Jitter,
}

impl TryFrom<BackoffSpec> for Backoff {
    type Error = ConfigError;

    fn try_from(spec: BackoffSpec) -> Result<Self, ConfigError> {
        let base = match spec.kind {
            BackoffKind::Constant => {
                config::duration_in("base", spec.base, Duration::ZERO..=MAX_BASE)?
            }
            _ => config::positive_duration("base", spec.base, MAX_BASE)?,
        };
        let cap = spec
            .cap
            .unwrap_or_else(|| Duration::from_secs(30).max(base).into());
        let cap = config::duration_in("cap", cap, base..=MAX_CAP)?;
        let step = config::duration_in(
            "step",
            spec.step.unwrap_or_else(|| base.into()),
            Duration::ZERO..=MAX_BASE,
        )?;
        let factor = match spec.factor {
            Some(factor) => factor.value("factor", "[1, 100]")?,
            None => 2.0,
        };
        if !(1.0..=MAX_FACTOR).contains(&factor) {
            return Err(ConfigError::new("factor", factor, "[1, 100]"));
        }
        Ok(Self {
            kind: spec.kind,
            base,
            step,
            factor,
            cap,
            jitter: spec.jitter,
        })
    }
}

impl From<Backoff> for BackoffSpec {
    fn from(b: Backoff) -> Self {
        Self {
            kind: b.kind,
            base: b.base.into(),
            step: Some(b.step.into()),
            factor: Some(b.factor.into()),
            cap: Some(b.cap.into()),
            jitter: b.jitter,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn curves_grow_as_named_and_stop_at_the_cap() {
        let exp = Backoff::exponential(ms(100))
            .cap(ms(1000))
            .jitter(Jitter::None)
            .build()
            .unwrap();
        let delays: Vec<_> = (1..=6).map(|n| exp.curve(n)).collect();
        assert_eq!(
            delays,
            [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );

        let lin = Backoff::linear(ms(100))
            .step(ms(50))
            .jitter(Jitter::None)
            .build()
            .unwrap();
        assert_eq!(
            (1..=3).map(|n| lin.curve(n)).collect::<Vec<_>>(),
            [ms(100), ms(150), ms(200)]
        );

        let constant = Backoff::constant(ms(70))
            .jitter(Jitter::None)
            .build()
            .unwrap();
        assert_eq!(constant.curve(9), ms(70));
    }

    #[test]
    fn exponential_never_overflows() {
        let exp = Backoff::exponential(ms(100))
            .factor(100.0)
            .cap(MAX_CAP)
            .build()
            .unwrap();
        assert_eq!(exp.curve(u32::MAX), MAX_CAP);
    }

    #[test]
    fn bad_values_name_their_field() {
        let zero = Backoff::exponential(Duration::ZERO).build().unwrap_err();
        assert_eq!(zero.field(), "base");
        let low_cap = Backoff::exponential(ms(100))
            .cap(ms(10))
            .build()
            .unwrap_err();
        assert_eq!(low_cap.field(), "cap");
        let factor = Backoff::exponential(ms(100))
            .factor(0.5)
            .build()
            .unwrap_err();
        assert_eq!(factor.field(), "factor");
        assert!(Backoff::constant(Duration::ZERO).build().is_ok());
    }

    #[test]
    fn deserializes_from_human_durations_and_validates() {
        let b: Backoff = serde_json::from_str(
            r#"{"kind": "exponential", "base": "100ms", "cap": "2s", "jitter": "equal"}"#,
        )
        .unwrap();
        assert_eq!(b.base(), ms(100));
        assert_eq!(b.max_delay(), ms(2000));
        assert_eq!(b.jitter_kind(), Jitter::Equal);

        let err =
            serde_json::from_str::<Backoff>(r#"{"kind": "linear", "base": "0s"}"#).unwrap_err();
        assert!(err.to_string().contains("`base`"), "{err}");
        let unknown =
            serde_json::from_str::<Backoff>(r#"{"kind": "linear", "base": "1s", "bsae": 1}"#);
        assert!(unknown.is_err());
    }

    #[test]
    fn errors_name_the_field_and_its_range_in_toml_and_json() {
        crate::testing::config::assert_errors::<Backoff>(&[
            (
                r#"kind = "exponential"
                   base = "-5s""#,
                r#"invalid `base`: "-5s" is outside the allowed range (0s, 3600s]"#,
            ),
            (
                r#"kind = "linear"
                   base = 100"#,
                "invalid `base`: 100 is outside the allowed range (0s, 3600s]",
            ),
            (
                r#"kind = "constant"
                   base = "1s"
                   step = "soon""#,
                r#"invalid `step`: "soon" is outside the allowed range [0ns, 3600s]"#,
            ),
            (
                r#"kind = "exponential"
                   base = "1s"
                   factor = -1"#,
                "invalid `factor`: -1 is outside the allowed range [1, 100]",
            ),
            (
                r#"kind = "exponential"
                   base = "1s"
                   factor = "fast""#,
                r#"invalid `factor`: "fast" is outside the allowed range [1, 100]"#,
            ),
            (
                r#"kind = "exponential"
                   base = "1s"
                   cap = "100ms""#,
                "invalid `cap`: 100ms is outside the allowed range [1s, 86400s]",
            ),
        ]);
    }

    #[test]
    fn serializes_round_trip() {
        let b = Backoff::linear(ms(20)).cap(ms(300)).build().unwrap();
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(serde_json::from_str::<Backoff>(&json).unwrap(), b);
    }

    fn any_backoff() -> impl Strategy<Value = Backoff> {
        let kind = prop_oneof![
            Just(BackoffKind::Constant),
            Just(BackoffKind::Linear),
            Just(BackoffKind::Exponential)
        ];
        let jitter = prop_oneof![
            Just(Jitter::None),
            Just(Jitter::Full),
            Just(Jitter::Equal),
            Just(Jitter::Decorrelated)
        ];
        (kind, 1u64..5_000, 0u64..100_000, 1.0f64..10.0, jitter).prop_map(
            |(kind, base, extra, factor, jitter)| {
                BackoffBuilder::new(kind, ms(base))
                    .cap(ms(base + extra))
                    .factor(factor)
                    .jitter(jitter)
                    .build()
                    .unwrap()
            },
        )
    }

    proptest! {
        #[test]
        fn every_delay_is_within_zero_and_cap(b in any_backoff(), seed: u64, attempts in 1u32..64) {
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut previous = b.base();
            for attempt in 1..=attempts {
                let d = b.delay(attempt, previous, &mut rng);
                prop_assert!(d <= b.max_delay());
                previous = d;
            }
        }

        #[test]
        fn full_jitter_never_exceeds_the_curve(b in any_backoff(), seed: u64, attempt in 1u32..64) {
            let b = Backoff { jitter: Jitter::Full, ..b };
            let mut rng = SmallRng::seed_from_u64(seed);
            prop_assert!(b.delay(attempt, b.base(), &mut rng) <= b.curve(attempt));
        }

        #[test]
        fn equal_jitter_keeps_at_least_half(b in any_backoff(), seed: u64, attempt in 1u32..64) {
            let b = Backoff { jitter: Jitter::Equal, ..b };
            let mut rng = SmallRng::seed_from_u64(seed);
            let d = b.delay(attempt, b.base(), &mut rng);
            prop_assert!(d >= b.curve(attempt) / 2 && d <= b.curve(attempt));
        }

        #[test]
        fn decorrelated_stays_within_base_and_three_times_previous(
            b in any_backoff(), seed: u64, attempts in 1u32..64,
        ) {
            let b = Backoff { jitter: Jitter::Decorrelated, ..b };
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut previous = b.base();
            for attempt in 1..=attempts {
                let d = b.delay(attempt, previous, &mut rng);
                let high = b.max_delay().min(previous * 3);
                prop_assert!(d >= b.base().min(high) && d <= high, "{d:?} outside [{:?}, {high:?}]", b.base());
                previous = d;
            }
        }

        #[test]
        fn same_seed_same_delays(b in any_backoff(), seed: u64) {
            let run = |seed| {
                let mut rng = SmallRng::seed_from_u64(seed);
                (1..10).map(|n| b.delay(n, b.base(), &mut rng)).collect::<Vec<_>>()
            };
            prop_assert_eq!(run(seed), run(seed));
        }
    }
}
