use std::net::SocketAddr;
use std::pin::Pin;

use futures_core::Stream;

use super::Endpoint;
use crate::BoxError;

/// A change to a service's endpoint set, as a discovery source reports it.
///
/// ```
/// use meshwork::discover::{Endpoint, Update};
///
/// let addr = "127.0.0.1:80".parse().unwrap();
/// let all = Update::Reset(vec![Endpoint::new(addr)]);
/// let gone = Update::Remove(addr);
/// assert_ne!(all, gone);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Update {
    /// The complete set: endpoints not listed are removed. An empty list positively says the
    /// service has no endpoints.
    Reset(Vec<Endpoint>),
    /// Adds an endpoint, or replaces the endpoint with the same address.
    Insert(Endpoint),
    /// Removes the endpoint with this address.
    Remove(SocketAddr),
}

/// A boxed discovery source.
pub type BoxDiscover = Pin<Box<dyn Stream<Item = Result<Update, BoxError>> + Send + 'static>>;
