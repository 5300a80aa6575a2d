use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::ConfigError;

/// One instance of a service: an address, a weight, and metadata labels.
///
/// Endpoints are identified by address: two endpoints with the same address are the same endpoint
/// (an update with a new weight or new labels replaces the old one).
///
/// ```
/// use meshwork::discover::Endpoint;
///
/// let ep = Endpoint::new("127.0.0.1:8080".parse().unwrap())
///     .with_weight(3)?
///     .with_label("zone", "a");
/// assert_eq!(ep.weight(), 3);
/// assert_eq!(ep.label("zone"), Some("a"));
/// assert_eq!(Endpoint::new(ep.addr()).with_weight(0).unwrap_err().field(), "weight");
/// # Ok::<(), meshwork::ConfigError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    addr: SocketAddr,
    weight: u32,
    labels: Arc<BTreeMap<String, String>>,
}

impl Endpoint {
    /// An endpoint at `addr` with weight 1 and no labels.
    #[must_use]
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            weight: 1,
            labels: Arc::default(),
        }
    }

    /// Sets the weight: an endpoint of weight 3 gets three times the traffic of one of weight 1, at
    /// equal load. Zero is rejected (remove the endpoint instead).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `weight` when `weight` is zero.
    pub fn with_weight(mut self, weight: u32) -> Result<Self, ConfigError> {
        if weight == 0 {
            return Err(ConfigError::new("weight", "must be at least 1"));
        }
        self.weight = weight;
        Ok(self)
    }

    /// Adds a metadata label.
    #[must_use]
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.labels).insert(key.into(), value.into());
        self
    }

    /// The address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The weight (at least 1).
    #[must_use]
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// All labels.
    #[must_use]
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }

    /// One label's value.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Self {
        Self::new(addr)
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Endpoint");
        d.field("addr", &self.addr);
        if self.weight != 1 {
            d.field("weight", &self.weight);
        }
        if !self.labels.is_empty() {
            d.field("labels", &self.labels);
        }
        d.finish()
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.addr, f)
    }
}
