//! A live rate limit takes a new quota through its handle without failing a call in flight.

use std::time::Duration;

use seawall_core::store::OnStoreFailure;
use seawall_core::{BoxError, RejectionKind, rejected};
use seawall_rate_limit::{FleetConfig, Quota, RateLimitConfig, RateLimitLayer, key_fn};
use tokio::time::advance;
use tower::{Layer, Service, ServiceExt, service_fn};

fn config(quota: Quota) -> RateLimitConfig {
    RateLimitConfig::builder()
        .name("api")
        .quota(quota)
        .build()
        .unwrap()
}

fn echo() -> impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone {
    service_fn(|n: u32| async move { Ok::<_, BoxError>(n) })
}

/// How many of `n` calls at once are admitted.
async fn admitted<S>(svc: &S, n: u32) -> u32
where
    S: Service<u32, Response = u32, Error = BoxError> + Clone,
{
    let mut admitted = 0;
    for i in 0..n {
        match svc.clone().oneshot(i).await {
            Ok(_) => admitted += 1,
            Err(err) => assert_eq!(
                rejected(&*err).map(|r| r.kind()),
                Some(RejectionKind::RateLimited),
                "{err}"
            ),
        }
    }
    admitted
}

#[tokio::test(start_paused = true)]
async fn the_same_quota_keeps_the_bucket_and_a_new_max_wait_applies_at_once() {
    let (layer, handle) = RateLimitLayer::new(config(Quota::per_second(2))).pair();
    let svc = layer.layer(echo());
    assert_eq!(admitted(&svc, 3).await, 2);

    let waiting = RateLimitConfig::builder()
        .name("api")
        .quota(Quota::per_second(2))
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap();
    handle.reload(waiting).unwrap();
    assert_eq!(handle.config().max_wait(), Some(Duration::from_secs(1)));
    let call = tokio::spawn(svc.clone().oneshot(7));
    tokio::task::yield_now().await;
    assert!(
        !call.is_finished(),
        "the bucket kept its calls: this one waits"
    );
    advance(Duration::from_millis(500)).await;
    assert_eq!(call.await.unwrap().unwrap(), 7);
}

#[tokio::test(start_paused = true)]
async fn a_new_quota_starts_a_full_bucket_at_the_new_rate() {
    let (layer, handle) = RateLimitLayer::new(config(Quota::per_second(1))).pair();
    let svc = layer.layer(echo());
    assert_eq!(admitted(&svc, 2).await, 1);

    handle
        .set_quota(Quota::per_second(10).with_burst(5))
        .unwrap();
    assert_eq!(handle.quota(), Quota::per_second(10).with_burst(5));
    assert_eq!(admitted(&svc, 6).await, 5, "the new burst");
    let err = svc.clone().oneshot(1).await.unwrap_err();
    assert_eq!(
        rejected(&*err).unwrap().retry_after(),
        Some(Duration::from_millis(100)),
        "the new rate"
    );
    advance(Duration::from_millis(100)).await;
    assert_eq!(admitted(&svc, 2).await, 1);
}

#[tokio::test(start_paused = true)]
async fn every_key_of_a_keyed_limit_takes_the_new_quota() {
    let (layer, handle) = RateLimitLayer::new(config(Quota::per_minute(1)))
        .keyed(key_fn(|n: &u32| *n % 2))
        .pair();
    let svc = layer.layer(echo());
    assert_eq!(admitted(&svc, 4).await, 2, "one for each of two keys");
    handle.set_quota(Quota::per_minute(3)).unwrap();
    assert_eq!(admitted(&svc, 8).await, 6, "three for each key");
    assert_eq!(layer.tracked_keys(), 2);
}

/// How many of `n` calls in a row through this very service (no clone) are admitted.
async fn admitted_by<S>(svc: &mut S, n: u32) -> u32
where
    S: Service<u32, Response = u32, Error = BoxError>,
{
    let mut admitted = 0;
    for i in 0..n {
        match svc.ready().await.unwrap().call(i).await {
            Ok(_) => admitted += 1,
            Err(err) => assert_eq!(
                rejected(&*err).map(|r| r.kind()),
                Some(RejectionKind::RateLimited),
                "{err}"
            ),
        }
    }
    admitted
}

#[tokio::test(start_paused = true)]
async fn a_service_made_before_a_reload_admits_by_the_new_quota() {
    let (layer, handle) = RateLimitLayer::new(config(Quota::per_minute(1))).pair();
    let mut early = layer.layer(echo());
    let mut early_clone = early.clone();
    assert_eq!(admitted_by(&mut early, 2).await, 1);

    handle.set_quota(Quota::per_minute(3)).unwrap();
    assert_eq!(
        admitted_by(&mut early, 4).await,
        3,
        "the new burst, through the service that called before the reload"
    );
    handle.set_quota(Quota::per_minute(2)).unwrap();
    assert_eq!(
        admitted_by(&mut early_clone, 3).await,
        2,
        "the newest quota, through a clone made before both reloads"
    );
}

#[tokio::test(start_paused = true)]
async fn a_keyed_service_made_before_a_reload_admits_by_the_new_quota() {
    let (layer, handle) = RateLimitLayer::new(config(Quota::per_minute(1)))
        .keyed(key_fn(|n: &u32| *n % 2))
        .pair();
    let mut early = layer.layer(echo());
    assert_eq!(
        admitted_by(&mut early, 4).await,
        2,
        "one for each of two keys"
    );

    handle.set_quota(Quota::per_minute(3)).unwrap();
    assert_eq!(
        admitted_by(&mut early, 8).await,
        6,
        "three for each key, through the service that called before the reload"
    );
}

#[tokio::test(start_paused = true)]
async fn a_reload_that_would_change_what_cannot_change_is_refused_and_the_old_quota_stays() {
    let (layer, handle) = RateLimitLayer::new(config(Quota::per_second(1))).pair();
    let svc = layer.layer(echo());
    assert_eq!(admitted(&svc, 1).await, 1);

    let named = config(Quota::per_second(5)).named("web").unwrap();
    assert_eq!(handle.reload(named).unwrap_err().field(), "name");
    let keys = RateLimitConfig::builder()
        .name("api")
        .quota(Quota::per_second(5))
        .max_keys(10)
        .build()
        .unwrap();
    assert_eq!(handle.reload(keys).unwrap_err().field(), "max_keys");
    let fleet = RateLimitConfig::builder()
        .name("api")
        .quota(Quota::per_second(5))
        .fleet(
            FleetConfig::builder()
                .on_failure(OnStoreFailure::FailOpen)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    assert_eq!(handle.reload(fleet).unwrap_err().field(), "fleet");
    let err = handle.set_quota(Quota::per_second(0)).unwrap_err();
    assert_eq!(err.field(), "quota.per_second");

    assert_eq!(handle.config(), config(Quota::per_second(1)));
    assert_eq!(admitted(&svc, 1).await, 0, "the bucket is as it was");
}

/// Reloads racing calls on many threads: every call is admitted or rate limited, by one
/// quota or the other; none fails for the reload itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reloads_racing_calls_lose_no_call() {
    let (layer, handle) = RateLimitLayer::new(config(Quota::per_second(1000))).pair();
    let svc = layer.layer(echo());
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move { admitted(&svc, 200).await }));
    }
    for i in 0..100 {
        let rate = if i % 2 == 0 { 500 } else { 2000 };
        handle.set_quota(Quota::per_second(rate)).unwrap();
        tokio::task::yield_now().await;
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    assert!(total > 0);
}
