//! Keys of HTTP requests that need no server: the authority a request goes to.

use super::{ExtractKey, KeyExtractor};

/// Keys a request by its URI's authority (`host:port`, compared without case): a breaker (or
/// a bulkhead partition) per downstream host. Requests without an authority (a client bound to
/// one host, which sends only paths, or a request that is not HTTP) share one key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByAuthority;

impl KeyExtractor for ByAuthority {
    type Key = Option<http::uri::Authority>;
}

impl<Req: HasAuthority> ExtractKey<Req> for ByAuthority {
    fn extract(&self, req: &Req) -> Self::Key {
        req.authority().cloned()
    }
}

/// A request that may name the host it goes to, for [`ByAuthority`]: an `http::Request` names
/// its URI's authority; the plain types name none, as a type of one's own does with an empty
/// `impl HasAuthority for MyRequest {}`.
pub trait HasAuthority {
    /// The authority (`host:port`) the request goes to, if it names one.
    fn authority(&self) -> Option<&http::uri::Authority> {
        None
    }
}

impl<B> HasAuthority for http::Request<B> {
    fn authority(&self) -> Option<&http::uri::Authority> {
        self.uri().authority()
    }
}

crate::impl_for_plain_types!(HasAuthority);
