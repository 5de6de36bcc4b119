//! PROTOTYPE, not for merge (environment knobs `SEAWALL_SHED_*`, a lock per sample): a shed
//! on the response to shedding (branch `fshed`, issue 12; see benches/RESULTS.md).
//!
//! Off unless `SEAWALL_SHED_ON=1`. The base is a windowed minimum (two buckets of `W`) of
//! successful attempts' latencies; a sample is elevated above `K × base + J × dev` (`dev`: the
//! mean excess over the base of samples that were not, time-weighted over `DEVT` when set). An
//! elevated sample that started before a later call came back fast is a tail and is ignored.
//! - Idle: a fresh elevated success (after `FIRST = 0`: the second in a row) sets the shed
//!   probability `s` to `PROBE`; cuts (attempt timeouts) are ignored.
//! - Probing: the next success sent after that answer decides: not elevated, or lower by more
//!   than `MARGIN` → a queue that answers shedding (Queue); higher → `s += UP`; about as high
//!   → no response to shedding, a slower downstream: it becomes the base and `s` is dropped.
//! - Queue: elevated samples (cuts too) add `UPQ`, others take `DOWN`, and one within
//!   `DEEP × base` multiplies `s` by `REL`; `s` also decays with time constant `TAU`.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

fn knob(name: &str, default: f64) -> f64 {
    std::env::var(format!("SEAWALL_SHED_{name}"))
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Debug, Clone, Copy)]
struct Knobs {
    k: f64,
    j: f64,
    window: Duration,
    up: f64,
    down: f64,
    tau: f64,
    first: bool,
    margin: f64,
    max: f64,
    dev_alpha: f64,
    dev_time: f64,
    adopt_keep: f64,
    probe: f64,
    up_queue: f64,
    overtake: bool,
    hold_probe: bool,
    cuts: u32,
    cut_rises: bool,
    keep_queue: f64,
    deep: f64,
    release: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Idle,
    Probing,
    Queue,
}

#[derive(Debug)]
struct Inner {
    mode: Mode,
    current: f64,
    previous: f64,
    bucket_start: Instant,
    dev: f64,
    dev_at: Instant,
    dev_n: f64,
    s: f64,
    s_at: Instant,
    streak: u32,
    last: f64,
    last_end: Instant,
    fast_end: Instant,
}

/// The prototype's state; `None` unless `SEAWALL_SHED=1`.
#[derive(Debug)]
pub(crate) struct Shed {
    debug: bool,
    knobs: Knobs,
    inner: Mutex<Inner>,
}

impl Shed {
    pub(crate) fn from_env() -> Option<Self> {
        if knob("ON", 0.0) == 0.0 {
            return None;
        }
        let knobs = Knobs {
            k: knob("K", 2.0),
            j: knob("J", 0.0),
            window: Duration::from_secs_f64(knob("W", 2.0)),
            up: knob("UP", 0.3),
            down: knob("DOWN", 0.01),
            tau: knob("TAU", 2.0),
            first: knob("FIRST", 1.0) != 0.0,
            margin: knob("MARGIN", 0.2),
            max: knob("MAX", 0.9),
            dev_alpha: knob("DEVA", 0.125),
            dev_time: knob("DEVT", 0.0),
            adopt_keep: knob("KEEP", 0.0),
            probe: knob("PROBE", 0.5),
            up_queue: knob("UPQ", 0.1),
            overtake: knob("OVERTAKE", 1.0) != 0.0,
            hold_probe: knob("HOLDP", 0.0) != 0.0,
            cuts: knob("CUTS", 2.0) as u32,
            cut_rises: knob("CUTUP", 0.0) != 0.0,
            keep_queue: knob("KEEPQ", 1.0),
            deep: knob("DEEP", 1.25),
            release: knob("REL", 0.5),
        };
        let now = Instant::now();
        static CLAIMED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        let debug =
            knob("DEBUG", 0.0) != 0.0 && !CLAIMED.swap(true, std::sync::atomic::Ordering::Relaxed);
        Some(Self {
            debug,
            knobs,
            inner: Mutex::new(Inner {
                mode: Mode::Idle,
                current: f64::INFINITY,
                previous: f64::INFINITY,
                bucket_start: now,
                dev: 0.0,
                dev_at: now,
                dev_n: 0.0,
                s: 0.0,
                s_at: now,
                streak: 0,
                last: 0.0,
                last_end: now,
                fast_end: now,
            }),
        })
    }

    fn decayed(&self, inner: &Inner, now: Instant) -> f64 {
        if inner.s <= 0.0 {
            return 0.0;
        }
        if inner.mode == Mode::Probing && self.knobs.hold_probe {
            return inner.s;
        }
        let dt = now.saturating_duration_since(inner.s_at).as_secs_f64();
        inner.s * (-dt / self.knobs.tau).exp()
    }

    pub(crate) fn probability(&self, now: Instant) -> f64 {
        let inner = self.inner.lock().unwrap();
        self.decayed(&inner, now)
    }

    /// One attempt that reached the downstream: `latency` seconds, answered or cut.
    pub(crate) fn sample(&self, latency: f64, answered: bool, now: Instant) {
        if self.debug {
            let g = self.inner.lock().unwrap();
            eprintln!(
                "SHED {:?} L={:.1}ms ans={} base={:.1} dev={:.1} s={:.2} streak={} {:?}",
                now,
                latency * 1e3,
                answered,
                g.current.min(g.previous) * 1e3,
                g.dev * 1e3,
                self.decayed(&g, now),
                g.streak,
                g.mode
            );
        }
        let k = self.knobs;
        if !answered && k.cuts == 0 {
            return;
        }
        let mut g = self.inner.lock().unwrap();
        let age = now.saturating_duration_since(g.bucket_start);
        if age >= k.window {
            g.previous = if age >= 2 * k.window {
                f64::INFINITY
            } else {
                g.current
            };
            g.current = f64::INFINITY;
            g.bucket_start = now;
        }
        let base = g.current.min(g.previous);
        g.s = self.decayed(&g, now);
        g.s_at = now;
        let elevated = base.is_finite() && latency > k.k * base + k.j * g.dev;
        if !answered && (!elevated || (k.cuts == 2 && g.mode == Mode::Idle)) {
            return;
        }
        if !elevated {
            if base.is_finite() {
                let excess = (latency - base).max(0.0);
                let dt = now.saturating_duration_since(g.dev_at).as_secs_f64();
                g.dev_at = now;
                g.dev_n += 1.0;
                let alpha = if k.dev_time > 0.0 {
                    (dt / k.dev_time).max(1.0 / g.dev_n).min(1.0)
                } else {
                    k.dev_alpha
                };
                g.dev += alpha * (excess - g.dev);
            }
            g.current = g.current.min(latency);
            g.fast_end = now;
            g.streak = 0;
            g.s = (g.s - k.down).max(0.0);
            if latency <= k.deep * base {
                // No queue at all: whatever was shed is no longer needed.
                g.s *= k.release;
                if g.s < 0.01 {
                    g.s = 0.0;
                }
            }
            g.mode = match g.mode {
                Mode::Probing => {
                    g.s *= k.keep_queue;
                    Mode::Queue
                }
                _ if g.s <= 0.0 => Mode::Idle,
                mode => mode,
            };
            return;
        }
        let started = now - Duration::from_secs_f64(latency);
        if k.overtake && started < g.fast_end {
            // A later call came back fast: this one met a tail, not a queue.
            return;
        }
        let fresh = started >= g.last_end;
        match g.mode {
            Mode::Idle => {
                if !fresh {
                    return;
                }
                g.last_end = now;
                if g.streak == 0 && !k.first {
                    g.streak = 1;
                    g.last = latency;
                    return;
                }
                g.s = g.s.max(k.probe);
                g.mode = Mode::Probing;
                g.last = latency;
            }
            Mode::Probing => {
                if !fresh {
                    return;
                }
                g.last_end = now;
                if !answered {
                    if k.cut_rises {
                        g.s = (g.s + k.up).min(k.max);
                    }
                    return;
                }
                let ratio = latency / g.last;
                if ratio > 1.0 + k.margin {
                    g.s = (g.s + k.up).min(k.max);
                    g.last = latency;
                } else if ratio < 1.0 - k.margin {
                    g.mode = Mode::Queue;
                } else {
                    // As slow again after a shed: no queue of ours; the new latency is the base.
                    let adopted = latency.min(g.last);
                    g.current = adopted;
                    g.previous = adopted;
                    g.bucket_start = now;
                    g.s *= k.adopt_keep;
                    g.streak = 0;
                    g.mode = Mode::Idle;
                }
            }
            Mode::Queue => {
                g.s = (g.s + k.up_queue).min(k.max);
            }
        }
    }
}
