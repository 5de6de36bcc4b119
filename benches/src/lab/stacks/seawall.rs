//! The seawall stack: `seawall::stack::ClientStackLayer` from a `ClientStackConfig`, exactly
//! what a user gets: its defaults are the HTTP forms an HTTP client needs (`HttpPolicy` for
//! retry, statuses judged as `HttpStatus::server_errors()` does in the throttle, the breaker
//! and the bulkhead), with nothing chosen here.

use std::sync::Arc;

use seawall::circuit_breaker::CircuitState;
use seawall::hedge::HedgeConfig;
use seawall::stack::{BreakerKey, ClientStackLayer};
use seawall_core::BoxError;
use tower::{Layer, Service, ServiceExt};

use super::balance::Spread;
use super::classify;
use super::settings::SeawallSettings;
use crate::lab::metrics::{BreakerState, Failure};
use crate::lab::sim::{self, Request, Response};
use crate::lab::workload::{BreakerProbe, Built, EjectedProbe};

/// One client's seawall stack over the downstream, its jitter seeded from `seed`.
///
/// Outermost first: total timeout, retry (idempotent requests on 5xx, 429 and errors, honouring
/// `Retry-After`, within a retry budget), hedging when asked for, client-side throttle, circuit
/// breaker (one for every key: the stack has no keyed form), attempt timeout, bulkhead; 5xx
/// answers but 503 count as failures, 429 and 503 as overload. See `seawall::stack` for why in
/// this order.
///
/// `hedge` (the scenario's, when the settings have none) adds hedging between retry and the
/// throttle; `ejected` reads the outlier ejection under the balancer, when there is one.
pub fn seawall(
    downstream: Spread,
    settings: &SeawallSettings,
    hedge: Option<&HedgeConfig>,
    breaker_key: Option<BreakerKey>,
    ejected: Option<EjectedProbe>,
    seed: u64,
) -> Built<impl Service<Request, Response = Response, Error = Failure>> {
    let mut config = settings.for_client(seed);
    if let Some(key) = breaker_key
        && config.breaker_key() == BreakerKey::One
    {
        config = config.with_breaker_key(key);
    }
    let keyed = config.breaker_key() != BreakerKey::One;
    if let Some(hedge) = hedge
        && config.hedge().is_none()
    {
        config = config
            .with_hedge(hedge.clone())
            .expect("a valid hedge config");
    }
    let layer = ClientStackLayer::new(config);
    let handles = layer.clone();
    let one = layer.circuit_breaker();
    let authorities: Vec<_> = (0..64).map(sim::authority).collect();
    let probe: BreakerProbe = Arc::new(move |key| {
        let state = if keyed {
            let authority = authorities.get(key as usize).cloned();
            let authority = authority.unwrap_or_else(|| sim::authority(key));
            handles
                .circuit_breaker_for(Some(&authority))
                .map(|h| h.state())
        } else {
            Some(one.state())
        };
        match state {
            Some(CircuitState::Open | CircuitState::ForcedOpen) => BreakerState::Open,
            Some(CircuitState::HalfOpen) => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        }
    });
    Built {
        service: layer
            .layer(downstream)
            .map_err(classify as fn(BoxError) -> Failure),
        breaker: Some(probe),
        keyed_breaker: keyed,
        ejected,
    }
}
