//! The retry policies as hedge policies (feature `hedge`): a hedge sends a request a second
//! time just as a retry does, so what a policy lets be retried it lets be hedged, with the
//! same copy. One decision of what may be sent twice, for both layers of a client stack.

use seawall_hedge::HedgePolicy;

use super::{DefaultPolicy, Idempotent, PolicyFn, RetryOn, RetryPolicy};

impl<Req: Clone + Idempotent> HedgePolicy<Req> for DefaultPolicy {
    fn clone_request(&self, req: &Req) -> Option<Req> {
        RetryPolicy::<Req, ()>::clone_request(self, req)
    }
}

impl<Req: Clone, C: Send + Sync + 'static> HedgePolicy<Req> for RetryOn<C> {
    fn clone_request(&self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

impl<Req, Res, F> HedgePolicy<Req> for PolicyFn<F, Res>
where
    Req: Clone,
    Res: 'static,
    F: Send + Sync + 'static,
{
    fn clone_request(&self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

#[cfg(feature = "http")]
mod over_http {
    use ::http::{Request, Response};
    use seawall_core::body::TryCloneBody;
    use seawall_hedge::HedgePolicy;

    use crate::policy::{DefaultPolicy, HttpPolicy, RetryPolicy};

    impl<B: TryCloneBody + 'static> HedgePolicy<Request<B>> for DefaultPolicy {
        fn clone_request(&self, req: &Request<B>) -> Option<Request<B>> {
            RetryPolicy::<Request<B>, Response<()>>::clone_request(self, req)
        }
    }

    impl<B: TryCloneBody + 'static> HedgePolicy<Request<B>> for HttpPolicy {
        fn clone_request(&self, req: &Request<B>) -> Option<Request<B>> {
            RetryPolicy::<Request<B>, Response<()>>::clone_request(self, req)
        }
    }

    #[cfg(feature = "grpc")]
    impl<B: TryCloneBody + 'static> HedgePolicy<Request<B>> for crate::policy::GrpcPolicy {
        fn clone_request(&self, req: &Request<B>) -> Option<Request<B>> {
            RetryPolicy::<Request<B>, Response<()>>::clone_request(self, req)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    enum Op {
        Get,
        Create,
    }

    impl Idempotent for Op {
        fn is_idempotent(&self) -> bool {
            *self == Op::Get
        }
    }

    #[test]
    fn default_policy_hedges_what_it_retries() {
        assert_eq!(
            HedgePolicy::clone_request(&DefaultPolicy, &Op::Get),
            Some(Op::Get)
        );
        assert_eq!(
            HedgePolicy::clone_request(&DefaultPolicy, &Op::Create),
            None
        );
    }

    #[cfg(feature = "http")]
    #[test]
    fn http_policies_hedge_only_idempotent_methods() {
        use ::http::{Method, Request};

        use crate::policy::HttpPolicy;

        let get = Request::get("/").body(()).unwrap();
        let post = Request::post("/").body(()).unwrap();
        assert!(HedgePolicy::clone_request(&DefaultPolicy, &get).is_some());
        assert!(HedgePolicy::clone_request(&DefaultPolicy, &post).is_none());
        assert!(HedgePolicy::clone_request(&HttpPolicy::new(), &post).is_none());
        let keyed = HttpPolicy::new().with_method(Method::POST);
        assert!(HedgePolicy::clone_request(&keyed, &post).is_some());
    }
}
