//! A quota for a fleet in the lab (`benches/scenarios/shared-quota.toml`): three replicas,
//! each a rate limit in front of the simulated downstream, on the paused clock. A limit of the
//! quota in each replica admits three times the quota; one kept in a store the replicas share
//! holds it, within the lease overshoot `Fleet` documents.
//!
//! The shared store is `MemoryStore`, the in-process implementation of the same `QuotaStore`
//! seam as `RedisStore`: one bucket per name for every replica given a clone of it, GCRA on
//! tokio's clock, each round trip taking the latency it is made with. The lab has no sockets,
//! so this is how a fleet sharing a Redis runs in it.

use std::time::Duration;

use seawall_bench::lab::metrics::{Failure, Outcome, Trace};
use seawall_bench::lab::run_stack;
use seawall_bench::lab::scenario::Scenario;
use seawall_bench::lab::sim::{Downstream, Request, Response};
use seawall_bench::lab::stacks::{self, Built};
use seawall_core::BoxError;
use seawall_rate_limit::store::{MemoryStore, OnStoreFailure};
use seawall_rate_limit::{FleetConfig, Quota, RateLimitConfig, RateLimitLayer};
use tower::{Layer, Service, ServiceExt};

const RATE: u64 = 100;
const BURST: u32 = 10;
const LEASE: u32 = 10;
const REPLICAS: u64 = 3;

fn scenario() -> Scenario {
    Scenario::parse(
        "benches/scenarios/shared-quota.toml",
        include_str!("../scenarios/shared-quota.toml"),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn config() -> RateLimitConfig {
    RateLimitConfig::builder()
        .name("api")
        .quota(Quota::per_second(RATE as u32).with_burst(BURST))
        .fleet(
            FleetConfig::builder()
                .lease(LEASE)
                .on_failure(OnStoreFailure::FailClosed)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap()
}

fn built<S>(service: S) -> Built<impl Service<Request, Response = Response, Error = Failure>>
where
    S: Service<Request, Response = Response, Error = BoxError>,
{
    Built {
        service: service.map_err(stacks::classify as fn(BoxError) -> Failure),
        breaker: None,
        keyed_breaker: false,
        ejected: None,
    }
}

/// (admitted, limited) over the run.
fn count(trace: &Trace) -> (u64, u64) {
    let mut counts = (0, 0);
    for r in &trace.requests {
        match r.outcome {
            Outcome::Success => counts.0 += 1,
            Outcome::Failed(Failure::BulkheadFull) => counts.1 += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    counts
}

/// Calls offered over the run.
fn trace_len(scenario: &Scenario) -> u64 {
    (scenario.workload.rate * scenario.duration.as_secs_f64()) as u64
}

fn per_replica(
    ds: Downstream,
) -> Built<impl Service<Request, Response = Response, Error = Failure>> {
    built(RateLimitLayer::new(config()).layer(ds))
}

#[test]
fn a_limit_per_replica_admits_the_quota_times_the_replicas_and_a_shared_one_holds_it() {
    let scenario = scenario();
    let quota = u64::from(BURST) + RATE * scenario.duration.as_secs();

    let (admitted, limited) = count(&run_stack(&scenario, 1, |ds, _, _| per_replica(ds)));
    // Each replica admits its burst and 100/s, less the cells its last calls, a few ms
    // before the end, leave unclaimed.
    assert!(
        (REPLICAS * (quota - 5)..=REPLICAS * quota).contains(&admitted),
        "{admitted} admitted, about 3 × {quota} ({limited} limited)"
    );

    let store = MemoryStore::with_latency(Duration::from_millis(1));
    let (admitted, limited) = count(&run_stack(&scenario, 1, |ds, _, _| {
        built(
            RateLimitLayer::new(config())
                .with_store(store.clone())
                .unwrap()
                .layer(ds),
        )
    }));
    // At most burst + rate × t + N × (L − 1) + 1; at least the quota less the cells leased
    // but not spent when the run ends.
    let held = REPLICAS * u64::from(LEASE - 1);
    eprintln!(
        "shared: {admitted} admitted, {limited} limited, {} round trips",
        store.round_trips()
    );
    assert!(
        admitted <= quota + held + 1,
        "{admitted} admitted, bound {}",
        quota + held + 1
    );
    assert!(admitted + held >= quota, "{admitted} admitted of {quota}");
    // Refused, a replica asks again once the next cell is free (every 10 ms at 100/s);
    // admitted, it takes cells 10 at a time: round trips stay under what was offered.
    let bound = REPLICAS * RATE * scenario.duration.as_secs() + admitted;
    assert!(
        store.round_trips() <= bound,
        "{} round trips, bound {bound}",
        store.round_trips()
    );
    assert!(store.round_trips() < trace_len(&scenario));
}
