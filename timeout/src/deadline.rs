//! Deadline propagation: never wait longer than the caller will, and tell the callee how long
//! it has.
//!
//! A gRPC client sends its deadline as `grpc-timeout` (`1*8 digits` and a unit: `H`, `M`, `S`,
//! `m`, `u` or `n`). A server that keeps working after its caller gave up only adds load, so an
//! inbound timeout shortens itself to that budget; an outbound one writes the budget left on
//! the request it sends. A malformed value is ignored, never trusted to lengthen anything.
//!
//! When the caller's deadline, not the configured timeout, ends a call, the call fails with
//! [`DeadlineExceeded`](seawall_core::RejectionKind::DeadlineExceeded) rather than `TimedOut`:
//! the caller ran out of time, which says nothing about the downstream, so no breaker counts
//! it and no retry repeats it. A call whose caller's time is already up when it reaches the
//! timeout is rejected at once, without calling the inner service.
//!
//! Within a call under a propagating timeout, [`Deadline::current`] gives the call's deadline
//! (a tokio task-local, set while the inner future is polled). An outbound timeout with
//! propagation in a handler's client stack reads it too, so the caller's deadline flows to
//! the next hop without code in the handler; the [`Deadline`] request extension does the same
//! for requests handed between tasks. [`InboundDeadlineLayer`](crate::InboundDeadlineLayer)
//! stamps the deadline on arrival, before any queue, so that the time a request spends
//! queued counts against its caller's budget.

use std::time::Duration;

use http::header::HeaderValue;
use http::{HeaderMap, HeaderName, Request};
pub use seawall_core::Deadline;
use seawall_core::time;
use tokio::time::Instant;

use crate::config::DeadlineConfig;

/// The header gRPC carries a call's deadline in.
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// The time a call may take, and the deadline its inner call runs under, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// How long the call may take.
    pub timeout: Duration,
    /// The instant the call's timer fires, made [current](Deadline::current) while the inner
    /// call is polled; `None` without propagation (the timer then starts at the first poll).
    pub deadline: Option<Deadline>,
    /// Whether the caller's deadline, not the configured timeout, set `timeout`: the call then
    /// ends as `DeadlineExceeded` rather than `TimedOut`, and at once when nothing is left.
    pub by_caller: bool,
}

/// Adjusts a call's timeout from and onto its request.
pub trait Deadlines<Req>: Clone + Send + Sync + 'static {
    /// The budget of a call whose configured timeout is `timeout`: that, or less when the
    /// request (or the current deadline) says so.
    fn apply(&self, req: &mut Req, timeout: Duration) -> Budget;

    /// Whether `apply` may read the clock: the timeout then opens a
    /// [`CallScope`](seawall_core::time::CallScope), so that the layers it calls share the
    /// reading.
    const READS_CLOCK: bool = true;
}

/// No propagation: every call gets the configured timeout. Works with any request type.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoDeadlines;

impl<Req> Deadlines<Req> for NoDeadlines {
    const READS_CLOCK: bool = false;

    fn apply(&self, _req: &mut Req, timeout: Duration) -> Budget {
        Budget {
            timeout,
            deadline: None,
            by_caller: false,
        }
    }
}

/// Propagation within the process, for any request type: the timeout is cut to the
/// [current](Deadline::current) deadline, and the call's own deadline is made current for the
/// layers below while they are called and polled. No header is read or written.
///
/// A client stack's total timeout uses it, so that its attempts know the time left (an
/// attempt that no retry can follow may use all of it).
#[derive(Debug, Clone, Copy, Default)]
pub struct ScopedDeadlines;

impl<Req> Deadlines<Req> for ScopedDeadlines {
    #[inline]
    fn apply(&self, _req: &mut Req, timeout: Duration) -> Budget {
        let now = time::call_now();
        let caller = Deadline::current().map(|deadline| deadline.0.saturating_duration_since(now));
        let (budget, by_caller) = match caller {
            Some(caller) if caller <= timeout => (caller, true),
            _ => (timeout, false),
        };
        Budget {
            timeout: budget,
            deadline: Some(Deadline(now + budget)),
            by_caller,
        }
    }
}

/// Propagation through HTTP headers and the [`Deadline`] extension.
#[derive(Debug, Clone)]
pub struct HeaderDeadlines {
    config: DeadlineConfig,
    /// An [`InboundDeadlineLayer`](crate::InboundDeadlineLayer) above has read the headers
    /// already and made what it found the current deadline.
    stamped_above: bool,
}

impl HeaderDeadlines {
    pub(crate) fn new(config: DeadlineConfig) -> Self {
        Self {
            config,
            stamped_above: false,
        }
    }

    pub(crate) fn stamped_above(mut self) -> Self {
        self.stamped_above = true;
        self
    }
}

impl HeaderDeadlines {
    /// The caller's deadline for `req`: the earliest of its `grpc-timeout` (and configured
    /// header) counted from now, its [`Deadline`] extension and the current deadline. The clock
    /// is read only when a header holds a budget.
    pub(crate) fn callers<B>(&self, req: &Request<B>) -> Option<Deadline> {
        if self.stamped_above {
            // The layer above made the earliest of all three current.
            return Deadline::current();
        }
        // A budget too large to add to `now` is no deadline at all.
        let from_headers = self
            .budget(req.headers())
            .and_then(|b| Instant::now().checked_add(b))
            .map(Deadline);
        [
            from_headers,
            req.extensions().get::<Deadline>().copied(),
            Deadline::current(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The smaller budget of `grpc-timeout` and the configured header. On a request with a
    /// few names, a name is looked up only once a pass over them has seen it: a lookup hashes
    /// the custom name (≈ 140 instructions), a pass costs ≈ 11 a name, and most requests carry
    /// neither.
    fn budget(&self, headers: &HeaderMap) -> Option<Duration> {
        const SCANNED: usize = 8;
        let carries = |wanted: &HeaderName| {
            headers.keys_len() > SCANNED || headers.keys().any(|name| name == wanted)
        };
        let header = self.config.header.as_ref();
        let grpc = carries(&GRPC_TIMEOUT);
        let configured = header.is_some_and(carries);
        let mut budget: Option<Duration> = None;
        if grpc && let Some(value) = headers.get(&GRPC_TIMEOUT) {
            match parse_grpc_timeout(value.as_bytes()) {
                Some(caller) => budget = Some(caller),
                None => tracing::debug!(?value, "ignoring malformed grpc-timeout"),
            }
        }
        if configured
            && let Some(name) = header
            && let Some(value) = headers.get(name)
        {
            match parse_millis(value.as_bytes()) {
                Some(caller) => budget = Some(budget.map_or(caller, |b| b.min(caller))),
                None => {
                    tracing::debug!(header = %name, ?value, "ignoring malformed deadline header")
                }
            }
        }
        budget
    }
}

impl<B> Deadlines<Request<B>> for HeaderDeadlines
where
    B: 'static,
{
    fn apply(&self, req: &mut Request<B>, timeout: Duration) -> Budget {
        let caller = self.callers(req);
        let now = Instant::now();
        let caller = caller.map(|deadline| deadline.0.saturating_duration_since(now));
        let (budget, by_caller) = match caller {
            Some(caller) if caller <= timeout => (caller, true),
            _ => (timeout, false),
        };
        let deadline = Deadline(now + budget);
        // A request with a `Deadline` extension has a caller's deadline: the stamp then goes in
        // place, where an insert would box it again.
        match caller.and_then(|_| req.extensions_mut().get_mut::<Deadline>()) {
            Some(stamp) => *stamp = deadline,
            None => {
                req.extensions_mut().insert(deadline);
            }
        }
        if self.config.write {
            let headers = req.headers_mut();
            headers.insert(GRPC_TIMEOUT, encode_grpc_timeout(budget));
            if let Some(name) = &self.config.header {
                let millis = u64::try_from(budget.as_millis()).unwrap_or(u64::MAX);
                headers.insert(name.clone(), HeaderValue::from(millis));
            }
        }
        Budget {
            timeout: budget,
            deadline: Some(deadline),
            by_caller,
        }
    }
}

/// Parses a `grpc-timeout` value; `None` when it is malformed.
pub fn parse_grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Parses a budget in whole milliseconds; `None` when it is malformed.
pub fn parse_millis(value: &[u8]) -> Option<Duration> {
    if value.is_empty() || value.len() > 12 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(Duration::from_millis(n))
}

/// Writes `budget` as a `grpc-timeout` value in the finest unit that fits eight digits,
/// rounding down so the callee never believes it has more time than it does.
pub fn encode_grpc_timeout(budget: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let nanos = budget.as_nanos();
    let (n, unit) = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ]
    .into_iter()
    .map(|(per, unit)| (nanos / per, unit))
    .find(|(n, _)| *n <= MAX)
    .unwrap_or((MAX, 'H'));
    let mut buf = [0u8; 9];
    let len = write_digits(&mut buf, n as u64);
    buf[len] = unit as u8;
    HeaderValue::from_bytes(&buf[..=len])
        .expect("digits and a unit letter are a valid header value")
}

fn write_digits(buf: &mut [u8; 9], mut n: u64) -> usize {
    let mut digits = [0u8; 8];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for (i, d) in digits[..len].iter().rev().enumerate() {
        buf[i] = *d;
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_every_unit() {
        let cases: [(&[u8], Duration); 6] = [
            (b"2H", Duration::from_secs(7200)),
            (b"3M", Duration::from_secs(180)),
            (b"10S", Duration::from_secs(10)),
            (b"250m", Duration::from_millis(250)),
            (b"99999999u", Duration::from_micros(99_999_999)),
            (b"7n", Duration::from_nanos(7)),
        ];
        for (value, expected) in cases {
            assert_eq!(parse_grpc_timeout(value), Some(expected));
        }
    }

    #[test]
    fn rejects_malformed_values() {
        for value in [
            &b""[..],
            b"m",
            b"100",
            b"123456789m",
            b"-1m",
            b"1.5S",
            b"10s",
            b" 10S",
            b"\xff\xfeS",
        ] {
            assert_eq!(parse_grpc_timeout(value), None, "{value:?}");
        }
        assert_eq!(parse_millis(b"1500"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_millis(b"15.5"), None);
        assert_eq!(parse_millis(b""), None);
        assert_eq!(parse_millis(b"9999999999999"), None);
    }

    #[test]
    fn encodes_in_the_finest_unit_that_fits() {
        let encode = |d| encode_grpc_timeout(d).to_str().unwrap().to_owned();
        assert_eq!(encode(Duration::from_nanos(5)), "5n");
        assert_eq!(encode(Duration::from_millis(250)), "250000u");
        assert_eq!(encode(Duration::from_secs(5)), "5000000u");
        assert_eq!(encode(Duration::from_secs(1000)), "1000000m");
        assert_eq!(encode(Duration::from_secs(1_000_000)), "1000000S");
        assert_eq!(encode(Duration::ZERO), "0n");
        assert_eq!(encode(Duration::MAX), "99999999H");
    }

    /// The budget as it was read before the pass over the names: one lookup a name.
    fn looked_up(config: &DeadlineConfig, headers: &HeaderMap) -> Option<Duration> {
        let grpc = headers
            .get(&GRPC_TIMEOUT)
            .and_then(|v| parse_grpc_timeout(v.as_bytes()));
        let millis = config
            .header
            .as_ref()
            .and_then(|name| headers.get(name))
            .and_then(|v| parse_millis(v.as_bytes()));
        match (grpc, millis) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn header_sets() -> impl Strategy<Value = Vec<(&'static str, &'static str)>> {
        let name = prop::sample::select(vec![
            "grpc-timeout",
            "x-request-timeout",
            "host",
            "accept",
            "content-type",
            "x-request-id",
            "grpc-timeou",
        ]);
        let value = prop::sample::select(vec!["250m", "1S", "100", "7", "abc", "", "99999999H"]);
        proptest::collection::vec((name, value), 0..20)
    }

    proptest! {
        #[test]
        fn the_budget_is_what_looking_each_name_up_finds(
            headers in header_sets(),
            configured in prop::sample::select(vec![
                None,
                Some("x-request-timeout"),
                Some("grpc-timeout"),
                Some("accept"),
            ]),
        ) {
            let mut map = HeaderMap::new();
            for (name, value) in headers {
                map.append(HeaderName::from_static(name), HeaderValue::from_static(value));
            }
            let config = match configured {
                Some(name) => DeadlineConfig::inbound().with_header(HeaderName::from_static(name)),
                None => DeadlineConfig::inbound(),
            };
            let expected = looked_up(&config, &map);
            prop_assert_eq!(HeaderDeadlines::new(config).budget(&map), expected);
        }

        #[test]
        fn parser_never_panics_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            let _ = parse_grpc_timeout(&bytes);
            let _ = parse_millis(&bytes);
        }

        #[test]
        fn parsed_values_stay_within_what_eight_digits_can_say(
            digits in "[0-9]{1,8}",
            unit in prop::sample::select(vec!['H', 'M', 'S', 'm', 'u', 'n']),
        ) {
            let value = format!("{digits}{unit}");
            let parsed = parse_grpc_timeout(value.as_bytes()).unwrap();
            prop_assert!(parsed <= Duration::from_secs(99_999_999 * 3600));
        }

        #[test]
        fn encoding_rounds_down_and_parses_back(nanos in 0u64..u64::MAX) {
            let budget = Duration::from_nanos(nanos);
            let encoded = encode_grpc_timeout(budget);
            let parsed = parse_grpc_timeout(encoded.as_bytes()).unwrap();
            prop_assert!(parsed <= budget, "{parsed:?} > {budget:?}");
            // A coarser unit is only chosen once the value is at least 100000 of it.
            prop_assert!((budget - parsed).as_nanos() * 100_000 <= budget.as_nanos());
        }
    }
}
