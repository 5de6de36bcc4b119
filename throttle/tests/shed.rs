//! The shed on latency on the paused clock: a fleet's queue shed and released, a slower
//! downstream adopted after one probe, a long-tailed downstream never probed, and a tail or a
//! hang cut by an attempt timeout never shed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use seawall_core::{BoxError, Rejected, RejectionKind, rejected};
use seawall_throttle::{ShedChange, ShedConfig, ThrottleLayer};
use tokio::time::{Instant, sleep, sleep_until};
use tower::util::BoxCloneService;
use tower::{Layer, ServiceExt, service_fn};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn layer(seed: u64) -> ThrottleLayer {
    ThrottleLayer::builder()
        .name("dep")
        .seed(seed)
        .shed(ShedConfig::default())
        .build()
        .unwrap()
}

fn is_shed(result: &Result<(), BoxError>) -> bool {
    matches!(result, Err(err) if rejected(&**err).map(Rejected::kind) == Some(RejectionKind::Throttled))
}

/// The changes one layer's shed reported.
fn changes(layer: ThrottleLayer) -> (ThrottleLayer, Arc<Mutex<Vec<ShedChange>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let push = seen.clone();
    let layer = layer.on_shed(move |e| push.lock().unwrap().push(e.change));
    (layer, seen)
}

/// A FIFO server with `workers` workers, each call taking 8–12 ms of one: a call waits for the
/// first worker free.
struct Server {
    free_at: Vec<Instant>,
    rng: ChaCha8Rng,
}

impl Server {
    fn new(workers: usize) -> Arc<Mutex<Self>> {
        Arc::new(Mutex::new(Self {
            free_at: vec![Instant::now(); workers],
            rng: ChaCha8Rng::seed_from_u64(1),
        }))
    }

    /// When a call that arrives now is answered.
    fn admit(&mut self) -> Instant {
        let now = Instant::now();
        let service = ms(8) + Duration::from_micros(self.rng.random_range(0..4000));
        let worker = (0..self.free_at.len())
            .min_by_key(|&i| self.free_at[i])
            .unwrap();
        let end = self.free_at[worker].max(now) + service;
        self.free_at[worker] = end;
        end
    }
}

/// Phases of a fleet's offered load: `(calls a second per client, how long)`.
type Phases = [(u64, Duration)];

/// What a fleet's calls saw, per second since the start: calls shed, and the mean latency of
/// the calls answered.
#[derive(Debug, Default, Clone, Copy)]
struct Second {
    shed: u32,
    answered: u32,
    latency: Duration,
}

/// `clients` clients, each with its own throttle, send open-loop calls to one server.
async fn fleet(clients: u64, shed: bool, workers: usize, phases: &Phases) -> Vec<Second> {
    let server = Server::new(workers);
    let total: Duration = phases.iter().map(|(_, span)| *span).sum();
    let seconds = Arc::new(Mutex::new(vec![
        Second::default();
        total.as_secs() as usize
    ]));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..clients {
        let layer = if shed {
            layer(client)
        } else {
            ThrottleLayer::builder().seed(client).build().unwrap()
        };
        let server = server.clone();
        let svc: BoxCloneService<(), (), BoxError> =
            BoxCloneService::new(layer.layer(service_fn(move |()| {
                let end = server.lock().unwrap().admit();
                async move {
                    sleep_until(end).await;
                    Ok::<_, BoxError>(())
                }
            })));
        let seconds = seconds.clone();
        let phases = phases.to_vec();
        tasks.push(tokio::spawn(async move {
            // The fleet's calls evenly spaced at first.
            let mut at =
                start + Duration::from_nanos(1_000_000_000 / phases[0].0 * client / clients);
            let mut phase_start = start;
            for (rate, span) in phases {
                let gap = Duration::from_nanos(1_000_000_000 / rate);
                while at < phase_start + span {
                    sleep_until(at).await;
                    let (svc, seconds) = (svc.clone(), seconds.clone());
                    tokio::spawn(async move {
                        let sent = Instant::now();
                        let result = svc.oneshot(()).await;
                        let second = (sent - start).as_secs() as usize;
                        let mut seconds = seconds.lock().unwrap();
                        let Some(s) = seconds.get_mut(second) else {
                            return;
                        };
                        if is_shed(&result) {
                            s.shed += 1;
                        } else {
                            s.answered += 1;
                            s.latency += sent.elapsed();
                        }
                    });
                    at += gap;
                }
                phase_start += span;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    sleep(Duration::from_secs(5)).await;
    let seconds = seconds.lock().unwrap().clone();
    seconds
        .into_iter()
        .map(|s| Second {
            latency: s.latency / s.answered.max(1),
            ..s
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_queue_at_100_clients_is_shed_and_released() {
    // 11 workers at 10 ms serve 1100 calls a second; 100 clients offer 1000, then 1500 for
    // 10 s, then 1000 again.
    let phases = [(10, ms(10_000)), (15, ms(10_000)), (10, ms(20_000))];
    let seconds = fleet(100, true, 11, &phases).await;
    let overload = &seconds[10..20];
    let shed: u32 = overload.iter().map(|s| s.shed).sum();
    let worst = overload.iter().map(|s| s.latency).max().unwrap();
    // An unshed queue grows by 400 calls a second: 3.6 s of waiting after 10 s.
    assert!(
        worst < ms(40),
        "the fleet's shed holds the queue: mean latency at most {worst:?} a second"
    );
    assert!(
        shed > 2000,
        "about a third of 15 000 calls shed, not {shed}"
    );
    let after = &seconds[30..40];
    assert!(
        after.iter().all(|s| s.shed == 0),
        "released within 10 s of the overload's end: {after:?}"
    );
    assert!(
        seconds[..10].iter().all(|s| s.shed == 0),
        "nothing shed before the overload"
    );
}

/// A downstream answering with the latency `latency` gives for each call (`None`: cut by an
/// attempt timeout after 100 ms), called `rate` times a second for `span`; returns the calls
/// shed.
async fn drive(
    layer: ThrottleLayer,
    rate: u64,
    span: Duration,
    latency: impl FnMut(Duration) -> Option<Duration> + Send + 'static,
) -> usize {
    let start = Instant::now();
    let latency = Arc::new(Mutex::new(latency));
    let svc = layer.layer(service_fn(move |()| {
        let answer = latency.lock().unwrap()(start.elapsed());
        async move {
            match answer {
                Some(latency) => {
                    sleep(latency).await;
                    Ok::<_, BoxError>(())
                }
                None => {
                    sleep(ms(100)).await;
                    Err(Rejected::new(RejectionKind::TimedOut, "attempt").into())
                }
            }
        }
    }));
    let gap = Duration::from_nanos(1_000_000_000 / rate);
    let mut calls = Vec::new();
    let mut at = start;
    while at < start + span {
        sleep_until(at).await;
        let svc: BoxCloneService<(), (), BoxError> = BoxCloneService::new(svc.clone());
        calls.push(tokio::spawn(svc.oneshot(())));
        at += gap;
    }
    let mut shed = 0;
    for call in calls {
        shed += usize::from(is_shed(&call.await.unwrap()));
    }
    shed
}

fn healthy(rng: &mut ChaCha8Rng) -> Duration {
    ms(8) + Duration::from_micros(rng.random_range(0..4000))
}

#[tokio::test(start_paused = true)]
async fn a_step_to_a_uniformly_slower_downstream_is_adopted_after_one_probe() {
    for (rate, slow) in [(1000u64, 200u64), (10, 200), (10, 45), (100, 600)] {
        let (layer, seen) = changes(layer(7));
        let mut rng = ChaCha8Rng::seed_from_u64(rate);
        let shed = drive(layer, rate, ms(20_000), move |t| {
            let healthy = healthy(&mut rng);
            Some(if t < ms(10_000) {
                healthy
            } else {
                healthy * slow as u32 / 10
            })
        })
        .await;
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            [ShedChange::Probed, ShedChange::Adopted],
            "{rate}/s, 10 → {slow} ms"
        );
        // The probe sheds half the calls sent before the answer to the first slow call, and
        // half those sent before the next one's: about `rate × slow` calls.
        let bound = (rate * slow / 1000).max(2) as usize;
        assert!(shed <= bound, "{rate}/s, 10 → {slow} ms: {shed} shed");
    }
}

#[tokio::test(start_paused = true)]
async fn a_long_tailed_downstream_is_never_probed() {
    for rate in [10, 100, 1000] {
        let (layer, seen) = changes(layer(7));
        let mut rng = ChaCha8Rng::seed_from_u64(rate);
        // Log-normal: a median of 10 ms, and one call in 20 above 5 × the median.
        let shed = drive(layer, rate, ms(30_000), move |_| {
            let normal: f64 = (0..12).map(|_| rng.random::<f64>()).sum::<f64>() - 6.0;
            Some(Duration::from_secs_f64(0.010 * (normal * 1.0).exp()))
        })
        .await;
        assert_eq!(shed, 0, "{rate}/s");
        assert!(seen.lock().unwrap().is_empty(), "{rate}/s: {seen:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_tail_or_a_hang_cut_by_an_attempt_timeout_sheds_nothing() {
    // The cut calls' retries queue a little: a call sent within 50 ms of a cut (100 ms after
    // the call it cut) waits 10–14 ms more.
    for (rate, cut) in [(10, 0.05), (10, 0.10), (4, 0.10), (100, 0.05)] {
        let (layer, seen) = changes(layer(7));
        let mut rng = ChaCha8Rng::seed_from_u64(rate);
        let mut last_cut = None;
        let shed = drive(layer, rate, ms(30_000), move |t| {
            let healthy = healthy(&mut rng);
            if t < ms(10_000) {
                return Some(healthy);
            }
            if rng.random::<f64>() < cut {
                last_cut = Some(t + ms(100));
                return None;
            }
            let retried = last_cut.is_some_and(|cut| t >= cut && t < cut + ms(50));
            Some(if retried {
                healthy + healthy + ms(2)
            } else {
                healthy
            })
        })
        .await;
        assert_eq!(shed, 0, "{rate}/s, {cut} cut: {seen:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_queue_past_the_attempt_timeout_probes_on_its_run_of_cuts() {
    for rate in [3, 10, 100] {
        let (layer, seen) = changes(layer(7));
        let mut rng = ChaCha8Rng::seed_from_u64(rate);
        // From 10 s on every attempt is cut: the queue is past the attempt timeout at once.
        let shed = drive(layer, rate, ms(20_000), move |t| {
            (t < ms(10_000)).then(|| healthy(&mut rng))
        })
        .await;
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.first(), Some(&ShedChange::Probed), "{rate}/s");
        assert!(shed > 0, "{rate}/s");
    }
}
