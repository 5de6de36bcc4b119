//! What `HedgeLayer::builder().build()` hedges: only requests that say they may be sent twice.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use seawall_core::BoxError;
use seawall_hedge::HedgeLayer;
use tower::{Layer, Service, ServiceExt, service_fn};

/// A downstream whose attempts take the times queued (1 ms once the queue is empty), and that
/// counts the attempts it was sent.
#[derive(Clone, Default)]
struct Downstream {
    delays: Arc<Mutex<VecDeque<u64>>>,
    attempts: Arc<Mutex<u32>>,
}

impl Downstream {
    fn service<Req: Send + 'static>(
        &self,
    ) -> impl Service<Req, Response = (), Error = BoxError, Future: Send> + Clone + Send + 'static
    {
        let this = self.clone();
        service_fn(move |_: Req| {
            *this.attempts.lock().unwrap() += 1;
            let delay = this.delays.lock().unwrap().pop_front().unwrap_or(1);
            async move {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                Ok::<_, BoxError>(())
            }
        })
    }

    /// Slows the next attempt down to a second; a hedge after it would answer in 1 ms.
    fn slow_next(&self) {
        self.delays.lock().unwrap().push_back(1000);
    }

    fn attempts(&self) -> u32 {
        *self.attempts.lock().unwrap()
    }
}

/// How many attempts one slow call of `req` makes through the default policy, after 20 quick
/// calls that earn the budget its hedges.
async fn attempts_of_a_slow_call<Req>(req: impl Fn() -> Req) -> u32
where
    Req: Clone + seawall_hedge::Idempotent + Send + 'static,
{
    let layer = HedgeLayer::builder()
        .delay(Duration::from_millis(50))
        .build()
        .unwrap();
    let downstream = Downstream::default();
    let svc = layer.layer(downstream.service::<Req>());
    for _ in 0..20 {
        svc.clone().oneshot(req()).await.unwrap();
    }
    let before = downstream.attempts();
    downstream.slow_next();
    svc.oneshot(req()).await.unwrap();
    downstream.attempts() - before
}

#[tokio::test(start_paused = true)]
async fn a_post_with_a_clone_body_is_sent_once() {
    let post = || Request::post("/orders").body(Full::new(Bytes::from_static(b"{}")));
    assert_eq!(attempts_of_a_slow_call(|| post().unwrap()).await, 1);
    let patch = || {
        Request::patch("/orders/7")
            .body(String::from("{}"))
            .unwrap()
    };
    assert_eq!(attempts_of_a_slow_call(patch).await, 1);
}

#[tokio::test(start_paused = true)]
async fn a_get_is_hedged() {
    let get = || {
        Request::get("/orders/7")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    assert_eq!(attempts_of_a_slow_call(get).await, 2);
    let put = || Request::put("/orders/7").body(String::from("{}")).unwrap();
    assert_eq!(attempts_of_a_slow_call(put).await, 2);
}

#[tokio::test(start_paused = true)]
async fn plain_types_are_hedged() {
    assert_eq!(attempts_of_a_slow_call(|| 7u64).await, 2);
    assert_eq!(attempts_of_a_slow_call(|| String::from("q")).await, 2);
}

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Read(u64),
    Write(u64),
}

impl seawall_hedge::Idempotent for Op {
    fn is_idempotent(&self) -> bool {
        matches!(self, Op::Read(_))
    }
}

#[tokio::test(start_paused = true)]
async fn a_user_type_that_opts_in_is_hedged_as_it_says() {
    assert_eq!(attempts_of_a_slow_call(|| Op::Read(7)).await, 2);
    assert_eq!(attempts_of_a_slow_call(|| Op::Write(7)).await, 1);
}
