//! How long an injected delay lasts: the distributions a configuration names, and drawing one
//! delay from them.

use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use seawall_core::config::{self, ConfigError, DURATIONS, MAX_DURATION, Raw};
use serde::{Deserialize, Serialize};

/// How long an injected delay lasts, drawn afresh for every call.
///
/// Deserializes from `{ kind = "fixed", value = "10ms" }`, `{ kind = "uniform", min = "8ms",
/// max = "12ms" }` or `{ kind = "long_tail", median = "10ms", p99 = "80ms" }`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "LatencySpec", into = "LatencySpec")]
pub enum Latency {
    /// Always the same delay.
    Fixed {
        /// The delay.
        value: Duration,
    },
    /// Any delay in `[min, max]`, all equally likely.
    Uniform {
        /// The shortest delay.
        min: Duration,
        /// The longest delay.
        max: Duration,
    },
    /// A log-normal delay with the given median and 99th percentile: most calls near the
    /// median, a long tail of slow ones, as real services show.
    LongTail {
        /// Half of the calls are faster than this.
        median: Duration,
        /// 99% of the calls are faster than this.
        p99: Duration,
    },
}

/// A latency as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum LatencySpec {
    Fixed {
        value: Raw<Duration>,
    },
    Uniform {
        min: Raw<Duration>,
        max: Raw<Duration>,
    },
    LongTail {
        median: Raw<Duration>,
        p99: Raw<Duration>,
    },
}

impl TryFrom<LatencySpec> for Latency {
    type Error = ConfigError;

    fn try_from(spec: LatencySpec) -> Result<Self, ConfigError> {
        Ok(match spec {
            LatencySpec::Fixed { value } => Self::Fixed {
                value: value.value("value", DURATIONS)?,
            },
            LatencySpec::Uniform { min, max } => Self::Uniform {
                min: min.value("min", DURATIONS)?,
                max: max.value("max", DURATIONS)?,
            },
            LatencySpec::LongTail { median, p99 } => Self::LongTail {
                median: median.value("median", DURATIONS)?,
                p99: p99.value("p99", DURATIONS)?,
            },
        })
    }
}

impl From<Latency> for LatencySpec {
    fn from(latency: Latency) -> Self {
        match latency {
            Latency::Fixed { value } => Self::Fixed {
                value: value.into(),
            },
            Latency::Uniform { min, max } => Self::Uniform {
                min: min.into(),
                max: max.into(),
            },
            Latency::LongTail { median, p99 } => Self::LongTail {
                median: median.into(),
                p99: p99.into(),
            },
        }
    }
}

impl Latency {
    /// The mean delay, used to size a capacity model.
    pub fn mean(&self) -> Duration {
        match *self {
            Self::Fixed { value } => value,
            Self::Uniform { min, max } => (min + max) / 2,
            Self::LongTail { median, p99 } => {
                let sigma = sigma(median, p99);
                median.mul_f64((sigma * sigma / 2.0).exp())
            }
        }
    }

    pub(crate) fn validate(&self, field: &'static str) -> Result<(), ConfigError> {
        match *self {
            Self::Fixed { value } => {
                config::duration_in(field, value, Duration::ZERO..=MAX_DURATION)?;
            }
            Self::Uniform { min, max } => {
                config::duration_in(field, max, Duration::ZERO..=MAX_DURATION)?;
                if min > max {
                    return Err(ConfigError::new(
                        field,
                        format_args!("min {min:?} > max {max:?}"),
                        "min <= max",
                    ));
                }
            }
            Self::LongTail { median, p99 } => {
                config::positive_duration(field, median, MAX_DURATION)?;
                config::duration_in(field, p99, median..=MAX_DURATION)?;
            }
        }
        Ok(())
    }
}

/// The spread of a log-normal distribution with this median and 99th percentile.
pub(crate) fn sigma(median: Duration, p99: Duration) -> f64 {
    // z of the 99th percentile of the standard normal distribution.
    const Z99: f64 = 2.326_347_874_040_841;
    (p99.as_secs_f64() / median.as_secs_f64()).ln() / Z99
}

const MAX_DELAY: f64 = 24.0 * 3600.0;

/// Draws one delay from `latency`.
pub(crate) fn sample(latency: &Latency, rng: &mut ChaCha8Rng) -> Duration {
    match *latency {
        Latency::Fixed { value } => value,
        Latency::Uniform { min, max } => min + (max - min).mul_f64(rng.random::<f64>()),
        Latency::LongTail { median, p99 } => {
            let sigma = sigma(median, p99);
            // Box-Muller: a standard normal from two uniforms; `1 - u` keeps the log finite.
            let u1 = 1.0 - rng.random::<f64>();
            let u2: f64 = rng.random();
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            let secs = median.as_secs_f64() * (sigma * z).exp();
            Duration::from_secs_f64(secs.min(MAX_DELAY))
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn long_tail_samples_have_the_asked_median_and_p99() {
        let latency = Latency::LongTail {
            median: Duration::from_millis(10),
            p99: Duration::from_millis(100),
        };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut xs: Vec<_> = (0..20_000).map(|_| sample(&latency, &mut rng)).collect();
        xs.sort();
        let median = xs[10_000].as_secs_f64() * 1e3;
        let p99 = xs[19_800].as_secs_f64() * 1e3;
        assert!((9.0..11.0).contains(&median), "{median}");
        assert!((85.0..115.0).contains(&p99), "{p99}");
    }

    #[test]
    fn uniform_samples_stay_in_range() {
        let latency = Latency::Uniform {
            min: Duration::from_millis(8),
            max: Duration::from_millis(12),
        };
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for _ in 0..1000 {
            let d = sample(&latency, &mut rng);
            assert!(d >= Duration::from_millis(8) && d <= Duration::from_millis(12));
        }
    }
}
