//! An endpoint set that follows a `tower::discover::Discover`.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use futures::Stream;
use pin_project_lite::pin_project;
use tower::discover::{Change, Discover};

use crate::future::Binding;
use crate::service::Endpoint;
use crate::state::SetState;

pin_project! {
    /// A `Discover` whose services are the [`Endpoint`]s of one set: each service inserted
    /// becomes an endpoint, which leaves the set when the balancer drops it (after a
    /// `Change::Remove`, or a replacement under the same key). Made by
    /// [`OutlierLayer`](crate::OutlierLayer)'s `layer`.
    pub struct OutlierDiscover<D, K, C, P> {
        #[pin]
        discover: D,
        set: Arc<SetState<K>>,
        classify: Arc<C>,
        probe: P,
    }
}

impl<D, K, C, P> OutlierDiscover<D, K, C, P> {
    pub(crate) fn new(discover: D, set: Arc<SetState<K>>, classify: Arc<C>, probe: P) -> Self {
        Self {
            discover,
            set,
            classify,
            probe,
        }
    }
}

impl<D, K, C, P> Stream for OutlierDiscover<D, K, C, P>
where
    D: Discover<Key = K>,
    K: Clone + fmt::Debug + 'static,
    P: Clone,
{
    type Item = Result<Change<K, Endpoint<D::Service, K, C, P>>, D::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        let change = match ready!(this.discover.poll_discover(cx)) {
            None => return Poll::Ready(None),
            Some(Err(err)) => return Poll::Ready(Some(Err(err))),
            Some(Ok(change)) => change,
        };
        Poll::Ready(Some(Ok(match change {
            Change::Insert(key, svc) => {
                let binding = Arc::new(Binding {
                    member: this.set.register(key.clone()),
                    classify: this.classify.clone(),
                    probe: this.probe.clone(),
                });
                Change::Insert(key, Endpoint::new(svc, binding))
            }
            Change::Remove(key) => Change::Remove(key),
        })))
    }
}

impl<D: fmt::Debug, K, C, P> fmt::Debug for OutlierDiscover<D, K, C, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutlierDiscover")
            .field("discover", &self.discover)
            .field("set", &self.set.name)
            .finish_non_exhaustive()
    }
}
