//! Which calls a chaos layer touches, and what it answers in place of the inner service.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use seawall_core::key::{ExtractKey, KeyExtractor};

/// Picks the calls a chaos layer may inject faults into; the others pass untouched.
pub trait Target<Req>: Clone {
    /// Whether faults may be injected into this call.
    fn matches(&self, req: &Req) -> bool;
}

/// Every call is a target (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct Everything;

impl<Req> Target<Req> for Everything {
    fn matches(&self, _req: &Req) -> bool {
        true
    }
}

/// Targets the calls for which a closure returns `true`.
pub struct TargetFn<F>(pub(crate) Arc<F>);

impl<F> Clone for TargetFn<F> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<F> fmt::Debug for TargetFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("TargetFn")
    }
}

impl<F, Req> Target<Req> for TargetFn<F>
where
    F: Fn(&Req) -> bool,
{
    fn matches(&self, req: &Req) -> bool {
        (self.0)(req)
    }
}

/// Targets the calls whose key, read by core's one key trait, is one of a fixed set; made by
/// [`ChaosLayer::target_keys`](crate::ChaosLayer::target_keys).
pub struct TargetKeys<X: KeyExtractor>(Arc<(X, HashSet<X::Key>)>);

impl<X: KeyExtractor> Clone for TargetKeys<X> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<X: KeyExtractor + fmt::Debug> fmt::Debug for TargetKeys<X> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TargetKeys")
            .field("extract", &self.0.0)
            .field("keys", &self.0.1.len())
            .finish()
    }
}

impl<X: KeyExtractor> TargetKeys<X> {
    pub(crate) fn new(extract: X, keys: impl IntoIterator<Item = X::Key>) -> Self {
        Self(Arc::new((extract, keys.into_iter().collect())))
    }
}

impl<X: ExtractKey<Req>, Req> Target<Req> for TargetKeys<X> {
    fn matches(&self, req: &Req) -> bool {
        let (extract, keys) = &*self.0;
        keys.contains(&extract.extract(req))
    }
}

/// Makes the chosen response a `response` fault answers with.
pub trait Respond<Req, Res>: Clone {
    /// The response to `req`, or `None` to let the call through.
    fn respond(&self, req: &Req) -> Option<Res>;
}

/// No chosen responses (the default): a `response` fault lets the call through.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoResponse;

impl<Req, Res> Respond<Req, Res> for NoResponse {
    fn respond(&self, _req: &Req) -> Option<Res> {
        None
    }
}

/// Answers with what a closure makes of the request.
pub struct RespondFn<F>(pub(crate) Arc<F>);

impl<F> Clone for RespondFn<F> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<F> fmt::Debug for RespondFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("RespondFn")
    }
}

impl<F, Req, Res> Respond<Req, Res> for RespondFn<F>
where
    F: Fn(&Req) -> Res,
{
    fn respond(&self, req: &Req) -> Option<Res> {
        Some((self.0)(req))
    }
}
