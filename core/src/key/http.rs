//! Keys of HTTP requests: the client's address, a header, the route.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::extract::{ConnectInfo, MatchedPath};
use http::{HeaderName, Request};

use super::{ExtractKey, Fingerprint, KeyExtractor};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Groups calls by the client's IP address.
///
/// The address comes from the connection (axum's `ConnectInfo<SocketAddr>`, present when the
/// app is served with `into_make_service_with_connect_info::<SocketAddr>()`) or from
/// `X-Forwarded-For`, as chosen:
///
/// - [`peer`](Self::peer): the connection's address. Right when clients connect directly;
///   behind a proxy every client shares the proxy's address.
/// - [`forwarded_for(n)`](Self::forwarded_for): behind `n` reverse proxies of your own, the
///   `n`-th address from the right of `X-Forwarded-For`, the right-most one that no proxy of
///   yours vouches for. Each proxy appends the address it was called from, so everything to the
///   left of that entry was written by the client and may be forged, while the entry itself was
///   written by your outermost proxy. Get `n` wrong and the key is wrong: too small and every
///   client shares a proxy's address, too large and clients choose their own key.
/// - [`forwarded_for_first`](Self::forwarded_for_first): the left-most address, the one the
///   client claims. Only safe when your edge proxy overwrites the header instead of appending
///   to it; otherwise any client evades the limit by sending a new address with each request.
///
/// When the header is missing, too short or malformed at the chosen place, the connection's
/// address is used; with neither, the key is `None`, one bucket shared by all such calls.
///
/// IPv6 addresses are grouped by their `/64` network by default
/// ([`with_ipv6_prefix`](Self::with_ipv6_prefix) changes it): one subscriber usually holds a
/// whole `/64` and could otherwise take a fresh quota with every address in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp {
    source: Source,
    ipv6_prefix: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Peer,
    ForwardedFor { trusted_proxies: usize },
    ForwardedForFirst,
}

impl ClientIp {
    /// The connection's address.
    pub const fn peer() -> Self {
        Self {
            source: Source::Peer,
            ipv6_prefix: 64,
        }
    }

    /// Behind `trusted_proxies` reverse proxies, the right-most address of `X-Forwarded-For`
    /// that they did not add; with zero proxies, the connection's address.
    pub const fn forwarded_for(trusted_proxies: usize) -> Self {
        Self {
            source: Source::ForwardedFor { trusted_proxies },
            ipv6_prefix: 64,
        }
    }

    /// The left-most address of `X-Forwarded-For`, as the client states it; see the type's
    /// docs for when this is safe.
    pub const fn forwarded_for_first() -> Self {
        Self {
            source: Source::ForwardedForFirst,
            ipv6_prefix: 64,
        }
    }

    /// Groups IPv6 addresses by their first `bits` bits (capped at 128; default 64).
    #[must_use]
    pub const fn with_ipv6_prefix(mut self, bits: u8) -> Self {
        self.ipv6_prefix = if bits > 128 { 128 } else { bits };
        self
    }

    fn group(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let bits = u32::from(self.ipv6_prefix);
                    let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                    IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
                }
            },
            v4 => v4,
        }
    }
}

impl KeyExtractor for ClientIp {
    type Key = Option<IpAddr>;
}

impl<B> ExtractKey<Request<B>> for ClientIp {
    fn extract(&self, req: &Request<B>) -> Option<IpAddr> {
        let forwarded = match self.source {
            Source::Peer | Source::ForwardedFor { trusted_proxies: 0 } => None,
            Source::ForwardedFor { trusted_proxies } => forwarded_entries(req)
                .rev()
                .nth(trusted_proxies - 1)
                .and_then(parse_ip),
            Source::ForwardedForFirst => forwarded_entries(req).next().and_then(parse_ip),
        };
        forwarded
            .or_else(|| {
                req.extensions()
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|info| info.0.ip())
            })
            .map(|ip| self.group(ip))
    }
}

/// Every entry of every `X-Forwarded-For` line, left to right.
fn forwarded_entries<B>(req: &Request<B>) -> impl DoubleEndedIterator<Item = &[u8]> {
    req.headers()
        .get_all(X_FORWARDED_FOR)
        .iter()
        .flat_map(|line| line.as_bytes().split(|&b| b == b','))
}

fn parse_ip(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry.trim_ascii()).ok()?;
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|addr| addr.ip()))
}

/// Groups calls by the value of a header, such as an API key; calls without it share the key
/// `None`.
///
/// The value is kept as a [`Fingerprint`], so a long token costs no more memory than a short
/// one and nothing is allocated per call; a stable one, so that every replica of a fleet-wide
/// limit finds the same bucket.
#[derive(Debug, Clone)]
pub struct Header {
    name: HeaderName,
}

impl Header {
    /// Groups calls by the first value of the header `name`.
    pub fn new(name: HeaderName) -> Self {
        Self { name }
    }

    /// The key of the calls whose header has `value`, to name them (a chaos target, say).
    pub fn key(value: impl AsRef<[u8]>) -> Option<Fingerprint> {
        Some(Fingerprint::stable(value.as_ref()))
    }
}

impl KeyExtractor for Header {
    type Key = Option<Fingerprint>;
}

impl<B> ExtractKey<Request<B>> for Header {
    fn extract(&self, req: &Request<B>) -> Option<Fingerprint> {
        req.headers()
            .get(&self.name)
            .map(|value| Fingerprint::stable(value.as_bytes()))
    }
}

/// Groups calls by route: axum's `MatchedPath` (`/users/{id}`) when routing has run, the
/// request's path otherwise.
///
/// Under `Router::layer` axum has already matched the route, so every user shares the
/// route's quota; outside a router, the raw path is used.
#[derive(Debug, Clone, Default)]
pub struct Route {
    _private: (),
}

impl Route {
    /// Groups calls by route.
    pub fn new() -> Self {
        Self::default()
    }

    /// The key of the calls to `route` (`/users/{id}` under a router), to name them (a chaos
    /// target, say).
    pub fn key(route: &str) -> Fingerprint {
        Fingerprint::stable(route.as_bytes())
    }
}

impl KeyExtractor for Route {
    type Key = Fingerprint;
}

impl<B> ExtractKey<Request<B>> for Route {
    fn extract(&self, req: &Request<B>) -> Fingerprint {
        let path = match req.extensions().get::<MatchedPath>() {
            Some(matched) => matched.as_str(),
            None => req.uri().path(),
        };
        Fingerprint::stable(path.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(forwarded: &[&'static str], peer: Option<&str>) -> Request<()> {
        let mut req = Request::new(());
        for line in forwarded {
            req.headers_mut()
                .append(X_FORWARDED_FOR, http::HeaderValue::from_static(line));
        }
        if let Some(peer) = peer {
            req.extensions_mut()
                .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        }
        req
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn peer_reads_the_connection() {
        let req = request(&["1.1.1.1"], Some("10.0.0.1:5000"));
        assert_eq!(ClientIp::peer().extract(&req), ip("10.0.0.1"));
        assert_eq!(ClientIp::peer().extract(&request(&[], None)), None);
    }

    #[test]
    fn forwarded_for_counts_trusted_proxies_from_the_right() {
        // Forged by the client, then the client as seen by proxy 1, then proxy 1 by proxy 2.
        let req = request(&["6.6.6.6, 203.0.113.7", "10.0.0.2"], Some("10.0.0.3:443"));
        assert_eq!(ClientIp::forwarded_for(1).extract(&req), ip("10.0.0.2"));
        assert_eq!(ClientIp::forwarded_for(2).extract(&req), ip("203.0.113.7"));
        assert_eq!(ClientIp::forwarded_for(3).extract(&req), ip("6.6.6.6"));
        assert_eq!(ClientIp::forwarded_for(0).extract(&req), ip("10.0.0.3"));
        assert_eq!(
            ClientIp::forwarded_for(4).extract(&req),
            ip("10.0.0.3"),
            "too few entries: the connection's address"
        );
        assert_eq!(ClientIp::forwarded_for_first().extract(&req), ip("6.6.6.6"));
    }

    #[test]
    fn malformed_entries_fall_back_to_the_connection() {
        let req = request(&["203.0.113.7, garbage"], Some("10.0.0.3:443"));
        assert_eq!(ClientIp::forwarded_for(1).extract(&req), ip("10.0.0.3"));
        assert_eq!(ClientIp::forwarded_for(2).extract(&req), ip("203.0.113.7"));
        let none = request(&["unknown"], None);
        assert_eq!(ClientIp::forwarded_for(1).extract(&none), None);
    }

    #[test]
    fn entries_with_ports_and_brackets_parse() {
        let req = request(&["203.0.113.7:1234 , [2001:db8::1]:443"], None);
        assert_eq!(ClientIp::forwarded_for(2).extract(&req), ip("203.0.113.7"));
        assert_eq!(
            ClientIp::forwarded_for(1)
                .with_ipv6_prefix(128)
                .extract(&req),
            ip("2001:db8::1")
        );
    }

    #[test]
    fn ipv6_is_grouped_by_prefix() {
        let a = request(&["2001:db8:1:2:aaaa::1"], None);
        let b = request(&["2001:db8:1:2:bbbb::2"], None);
        let by64 = ClientIp::forwarded_for(1);
        assert_eq!(by64.extract(&a), by64.extract(&b));
        assert_eq!(by64.extract(&a), ip("2001:db8:1:2::"));
        let exact = by64.with_ipv6_prefix(200);
        assert_ne!(exact.extract(&a), exact.extract(&b));
        assert_eq!(
            ClientIp::forwarded_for(1).with_ipv6_prefix(0).extract(&a),
            ip("::")
        );
        let mapped = request(&["::ffff:192.0.2.1"], None);
        assert_eq!(by64.extract(&mapped), ip("192.0.2.1"));
    }

    #[test]
    fn header_keys_by_value_and_shares_none_without_it() {
        let header = Header::new(HeaderName::from_static("x-api-key"));
        let with = |v: &'static str| {
            let mut req = Request::new(());
            req.headers_mut()
                .insert("x-api-key", http::HeaderValue::from_static(v));
            header.extract(&req)
        };
        assert_eq!(with("alice"), with("alice"));
        assert_ne!(with("alice"), with("bob"));
        assert!(with("alice").is_some());
        assert_eq!(with("alice"), Header::key("alice"));
        assert_eq!(header.extract(&Request::new(())), None);
    }

    #[test]
    fn route_prefers_the_matched_path() {
        let route = Route::new();
        let path = |p: &str| Request::builder().uri(p).body(()).unwrap();
        assert_eq!(route.extract(&path("/a")), route.extract(&path("/a")));
        assert_ne!(route.extract(&path("/a")), route.extract(&path("/b")));
        assert_eq!(route.extract(&path("/a")), Route::key("/a"));
    }
}
