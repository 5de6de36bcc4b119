//! The mark of a failure that is one endpoint's own, not its dependency's.
//!
//! A circuit breaker above a load balancer judges the whole set of endpoints, yet sees each
//! call's result alone: when four of five endpoints fail every call, four calls in five fail
//! and the breaker opens, although one endpoint still serves and a retry would land on it. Only
//! the outlier set under the balancer knows whether another endpoint is still succeeding. When
//! it is, the set marks the failure as its endpoint's own: an `http::Response` carries
//! [`EndpointFault`] in its extensions, an error is wrapped in [`EndpointFaultError`]. A
//! breaker counts a marked failure for nothing by default (see the circuit breaker's
//! `endpoint_fault_is_failure`); retry still retries it, since another endpoint likely serves
//! it. Nothing is marked once every endpoint fails (that is an outage, for the breaker to see),
//! nor in a stack without an outlier set or over one endpoint.

use std::error::Error;
use std::fmt;

use crate::BoxError;

/// The extension an outlier set puts on a failed `http::Response` whose endpoint failed while
/// another endpoint of its set was succeeding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct EndpointFault;

/// The error of a call that failed on its endpoint while another endpoint of its set was
/// succeeding; its source is the endpoint's own error.
///
/// Its message carries none of the source's text (a client may see it).
pub struct EndpointFaultError {
    source: BoxError,
}

impl EndpointFaultError {
    /// Marks `source` as its endpoint's own failure.
    pub fn new(source: BoxError) -> Self {
        Self { source }
    }

    /// The endpoint's own error.
    pub fn get_ref(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.source
    }

    /// The endpoint's own error, unwrapped.
    pub fn into_inner(self) -> BoxError {
        self.source
    }
}

impl fmt::Debug for EndpointFaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("EndpointFaultError")
            .field(&self.source)
            .finish()
    }
}

impl fmt::Display for EndpointFaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("endpoint failed while others of its set succeed")
    }
}

impl Error for EndpointFaultError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.source)
    }
}

/// Whether `err`, or an error in its source chain, is an [`EndpointFaultError`].
///
/// ```
/// use seawall_core::BoxError;
/// use seawall_core::classify::{EndpointFaultError, is_endpoint_fault};
///
/// let err: BoxError = EndpointFaultError::new("connection reset".into()).into();
/// assert!(is_endpoint_fault(&*err));
/// assert!(!is_endpoint_fault(&*BoxError::from("connection reset")));
/// ```
pub fn is_endpoint_fault(err: &(dyn Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(err) = next {
        if err.is::<EndpointFaultError>() {
            return true;
        }
        next = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Reset;

    impl fmt::Display for Reset {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("connection reset by 10.0.0.7:8443")
        }
    }

    impl Error for Reset {}

    #[test]
    fn the_error_keeps_its_source_and_shows_none_of_its_text() {
        let err = EndpointFaultError::new(Box::new(Reset));
        assert_eq!(
            err.to_string(),
            "endpoint failed while others of its set succeed"
        );
        assert!(!err.to_string().contains("10.0.0.7"));
        assert!(err.source().unwrap().is::<Reset>());
        assert!(err.get_ref().is::<Reset>());
        assert!(err.into_inner().is::<Reset>());
    }

    #[test]
    fn the_mark_is_found_through_the_source_chain() {
        #[derive(Debug)]
        struct Outer(EndpointFaultError);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("outer")
            }
        }
        impl Error for Outer {
            fn source(&self) -> Option<&(dyn Error + 'static)> {
                Some(&self.0)
            }
        }
        let outer = Outer(EndpointFaultError::new(Box::new(Reset)));
        assert!(is_endpoint_fault(&outer));
        assert!(!is_endpoint_fault(&Reset));
    }
}
