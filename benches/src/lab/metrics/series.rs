//! Per-second figures of a run, for the JSON report and the SVG timelines.

use serde::Serialize;

use super::{BreakerState, Percentiles, Trace};

/// Per-second figures of a run, each request in the second it was meant to be sent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    /// Requests meant to be sent in each second.
    pub offered: Vec<u32>,
    /// Attempts that reached the downstream in each second.
    pub attempts: Vec<u32>,
    /// Successes among the requests of each second.
    pub successes: Vec<u32>,
    /// Successes within the deadline among the requests of each second.
    pub goodput: Vec<u32>,
    /// Requests of each second the stack rejected itself.
    pub rejections: Vec<u32>,
    /// Success rate of the requests of each second.
    pub success_rate: Vec<Option<f64>>,
    /// p99 latency of the requests of each second, in milliseconds.
    pub p99_ms: Vec<Option<f64>>,
    /// Share of the requests of each second sent with their breaker open.
    pub breaker_open: Vec<f64>,
    /// Share of the requests of each second sent with their breaker half-open.
    pub breaker_half_open: Vec<f64>,
    /// The longest an attempt reaching the downstream in each second waited in its queue, in
    /// milliseconds: the backlog a queueing downstream had; absent for one without workers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub queue_wait_ms: Vec<f64>,
}

/// The per-second series of `trace`, with successes counted as goodput within `deadline` ns.
pub fn series(trace: &Trace, deadline: u64) -> Series {
    let secs = trace.duration.as_secs().max(1) as usize;
    let mut buckets: Vec<Vec<u64>> = vec![Vec::new(); secs];
    let mut successes = vec![0u32; secs];
    let mut goodput = vec![0u32; secs];
    let mut rejections = vec![0u32; secs];
    let mut open = vec![0u32; secs];
    let mut half = vec![0u32; secs];
    for r in &trace.requests {
        let s = r.at().as_secs() as usize;
        if s >= secs {
            continue;
        }
        buckets[s].push(r.latency);
        successes[s] += u32::from(r.succeeded());
        goodput[s] += u32::from(r.good(deadline));
        rejections[s] += u32::from(r.rejected_locally());
        open[s] += u32::from(r.breaker == BreakerState::Open);
        half[s] += u32::from(r.breaker == BreakerState::HalfOpen);
    }
    let offered: Vec<u32> = buckets.iter().map(|b| b.len() as u32).collect();
    let share = |xs: &[u32]| -> Vec<f64> {
        xs.iter()
            .zip(&offered)
            .map(|(&x, &o)| {
                if o == 0 {
                    0.0
                } else {
                    f64::from(x) / f64::from(o)
                }
            })
            .collect()
    };
    Series {
        success_rate: successes
            .iter()
            .zip(&offered)
            .map(|(&s, &o)| (o > 0).then(|| f64::from(s) / f64::from(o)))
            .collect(),
        p99_ms: buckets
            .iter_mut()
            .map(|b| Percentiles::of(b).map(|p| p.p99_ms))
            .collect(),
        breaker_open: share(&open),
        breaker_half_open: share(&half),
        attempts: trace
            .attempts_per_second
            .iter()
            .take(secs)
            .copied()
            .collect(),
        queue_wait_ms: trace
            .queue_wait_per_second
            .iter()
            .take(secs)
            .map(|&us| us as f64 / 1000.0)
            .collect(),
        offered,
        successes,
        goodput,
        rejections,
    }
}
