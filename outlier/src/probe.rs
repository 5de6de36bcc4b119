//! The request an ejected endpoint must answer before it comes back in, if any.

use std::fmt;
use std::sync::Arc;

/// Makes the request that checks an ejected endpoint whose time is up; the endpoint returns
/// when the classifier calls the answer a success, and is ejected again (for longer) when it
/// does not.
pub trait Probe<K, Req>: Send + Sync + 'static {
    /// The probe for the endpoint `key`; `None` to let it back in without one.
    fn request(&self, key: &K) -> Option<Req>;
}

/// No probe: an endpoint comes back in when its ejection time is up. The default.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProbe;

impl<K, Req> Probe<K, Req> for NoProbe {
    fn request(&self, _: &K) -> Option<Req> {
        None
    }
}

/// A probe made by a closure of the endpoint's key.
pub struct ProbeFn<F> {
    f: Arc<F>,
}

impl<F> ProbeFn<F> {
    /// Probes with the requests `f` makes.
    pub fn new(f: F) -> Self {
        Self { f: Arc::new(f) }
    }
}

impl<F> Clone for ProbeFn<F> {
    fn clone(&self) -> Self {
        Self { f: self.f.clone() }
    }
}

impl<F> fmt::Debug for ProbeFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProbeFn").finish_non_exhaustive()
    }
}

impl<K, Req, F> Probe<K, Req> for ProbeFn<F>
where
    F: Fn(&K) -> Req + Send + Sync + 'static,
{
    fn request(&self, key: &K) -> Option<Req> {
        Some((self.f)(key))
    }
}
