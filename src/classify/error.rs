use std::error::Error;

use super::Classification;

/// Classifies an error by walking its source chain.
///
/// | error in the chain | classification |
/// |---|---|
/// | [`timeout::Elapsed`](crate::timeout::Elapsed) (a per-try timeout) | retryable |
/// | [`timeout::DeadlineExceeded`](crate::timeout::DeadlineExceeded) | non-retryable: no time is left |
/// | [`retry::BudgetExhausted`](crate::retry::BudgetExhausted) | non-retryable: retrying again would overrun the budget |
/// | [`breaker::Open`](crate::breaker::Open) (an open breaker refused the call) | retryable, unsent |
/// | [`balance::NoEndpoints`](crate::balance::NoEndpoints) | non-retryable: the balancer already waited for an endpoint |
/// | [`balance::EndpointRemoved`](crate::balance::EndpointRemoved) | retryable, unsent |
/// | [`std::io::Error`] `ConnectionRefused` | retryable, unsent |
/// | other [`std::io::Error`] connection errors (reset, aborted, broken pipe) | retryable |
/// | (feature `http`) hyper-util connect error, HTTP/2 `REFUSED_STREAM` | retryable, unsent |
/// | anything else | retryable |
///
/// Layers added by later modules (the breaker's `Open`, the retry budget) register their errors in
/// this same function, so that there is one place that knows meshwork's error vocabulary.
///
/// ```
/// use meshwork::classify::{classify_error, Class};
///
/// let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
/// let c = classify_error(&refused);
/// assert_eq!(c.class(), Class::Retryable);
/// assert!(c.is_unsent());
/// ```
pub fn classify_error(err: &(dyn Error + 'static)) -> Classification {
    let mut cur: Option<&(dyn Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(c) = classify_one(e) {
            return c;
        }
        cur = e.source();
    }
    Classification::retryable()
}

fn classify_one(e: &(dyn Error + 'static)) -> Option<Classification> {
    use crate::timeout::{DeadlineExceeded, Elapsed};
    if e.is::<Elapsed>() {
        return Some(Classification::retryable());
    }
    if e.is::<DeadlineExceeded>() {
        return Some(Classification::non_retryable());
    }
    if e.is::<crate::retry::BudgetExhausted>() {
        return Some(Classification::non_retryable());
    }
    if e.is::<crate::breaker::Open>() {
        // Refused by an open breaker before the inner service was touched.
        return Some(Classification::retryable().unsent());
    }
    if e.is::<crate::limit::Nacked>() || e.is::<crate::admission::Rejected>() {
        // Refused before any work was done: a nack.
        return Some(Classification::nack());
    }
    if e.is::<crate::balance::NoEndpoints>() {
        return Some(Classification::non_retryable());
    }
    if e.is::<crate::balance::EndpointRemoved>() {
        // Failed in `call` before anything was sent: requeue elsewhere.
        return Some(Classification::retryable().unsent());
    }
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        use std::io::ErrorKind::*;
        return match io.kind() {
            ConnectionRefused => Some(Classification::retryable().unsent()),
            ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof | NotConnected => {
                Some(Classification::retryable())
            }
            // Keep walking: an io::Error may wrap a more specific cause.
            _ => None,
        };
    }
    #[cfg(feature = "http")]
    {
        if let Some(c) = super::http::classify_http_error(e) {
            return Some(c);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BoxError;
    use crate::classify::Class;
    use crate::timeout::{DeadlineExceeded, Elapsed};

    #[test]
    fn our_errors() {
        let e: BoxError = Box::new(Elapsed::new());
        assert_eq!(classify_error(&*e).class(), Class::Retryable);
        let e: BoxError = Box::new(DeadlineExceeded::new());
        assert_eq!(classify_error(&*e).class(), Class::NonRetryable);
    }

    #[test]
    fn budget_exhausted_is_not_retryable() {
        let e: BoxError = Box::new(crate::retry::BudgetExhausted::new());
        assert_eq!(classify_error(&*e).class(), Class::NonRetryable);
    }

    #[test]
    fn breaker_open_is_retryable_and_unsent() {
        let e: BoxError = Box::new(crate::breaker::Open::new());
        let c = classify_error(&*e);
        assert_eq!(c.class(), Class::Retryable);
        assert!(c.is_unsent());
    }

    #[test]
    fn no_endpoints_is_not_retryable() {
        let e: BoxError = Box::new(crate::balance::NoEndpoints::new());
        assert_eq!(classify_error(&*e).class(), Class::NonRetryable);
    }

    #[test]
    fn io_errors() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(classify_error(&refused).is_unsent());
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let c = classify_error(&reset);
        assert_eq!(c.class(), Class::Retryable);
        assert!(!c.is_unsent());
    }

    #[test]
    fn walks_the_source_chain() {
        #[derive(Debug)]
        struct Wrapper(std::io::Error);
        impl std::fmt::Display for Wrapper {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("wrapped")
            }
        }
        impl Error for Wrapper {
            fn source(&self) -> Option<&(dyn Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Wrapper(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(classify_error(&e).is_unsent());
        let other: BoxError = "opaque".into();
        assert_eq!(classify_error(&*other).class(), Class::Retryable);
    }
}
