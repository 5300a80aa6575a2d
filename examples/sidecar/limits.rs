//! Per-upstream limits, as Envoy's circuit-breaker thresholds: nothing is queued or sent toward
//! an upstream without bound.
//!
//! - `max_requests`: requests in flight to the upstream, from admission until the response body
//!   ends (Envoy's `max_requests`, default 1024).
//! - `max_pending`: admitted requests that have not reached an endpoint yet: waiting for an
//!   available endpoint in the balancer (every breaker open, or none discovered, for up to
//!   `balancer.max_wait`) (Envoy's `max_pending_requests`, default 1024). A request stops being
//!   pending when its first try is handed to an endpoint's connection.
//!
//! Past either, the request is answered at once with 503 and `x-meshwork-overloaded: true`, and
//! counted in `meshwork_sidecar_overloaded_total{upstream, limit}`. Nothing waits for a slot:
//! an overloaded upstream sheds load instead of queueing it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The limit a refused request hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overloaded {
    /// `limits.max_requests`.
    MaxRequests,
    /// `limits.max_pending`.
    MaxPending,
}

impl Overloaded {
    /// The reason in the response body.
    pub fn reason(self) -> &'static str {
        match self {
            Self::MaxRequests => "upstream overloaded: limits.max_requests reached",
            Self::MaxPending => "upstream overloaded: limits.max_pending reached",
        }
    }
}

/// The counters and bounds of one upstream.
pub struct UpstreamLimits {
    active: AtomicUsize,
    pending: AtomicUsize,
    max_requests: usize,
    max_pending: usize,
    over_requests: metrics::Counter,
    over_pending: metrics::Counter,
}

impl UpstreamLimits {
    /// Limits of upstream `name`.
    pub fn new(name: &str, max_requests: usize, max_pending: usize) -> Arc<Self> {
        metrics::describe_counter!(
            "meshwork_sidecar_overloaded_total",
            metrics::Unit::Count,
            "Requests refused at once with 503 because an upstream limit was reached, by limit."
        );
        let counter = |limit: &'static str| {
            metrics::counter!(
                "meshwork_sidecar_overloaded_total",
                "upstream" => name.to_owned(),
                "limit" => limit
            )
        };
        Arc::new(Self {
            active: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            max_requests,
            max_pending,
            over_requests: counter("max_requests"),
            over_pending: counter("max_pending"),
        })
    }

    /// Admits one request, or says which limit it hit (and counts it).
    pub fn admit(self: &Arc<Self>) -> Result<Admitted, Overloaded> {
        if self.active.fetch_add(1, Ordering::AcqRel) >= self.max_requests {
            self.active.fetch_sub(1, Ordering::AcqRel);
            self.over_requests.increment(1);
            return Err(Overloaded::MaxRequests);
        }
        let active = Active(self.clone());
        if self.pending.fetch_add(1, Ordering::AcqRel) >= self.max_pending {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            self.over_pending.increment(1);
            return Err(Overloaded::MaxPending);
        }
        let pending = Pending(Arc::new(PendingInner {
            released: AtomicBool::new(false),
            limits: self.clone(),
        }));
        Ok(Admitted { active, pending })
    }

    /// Requests in flight and pending now.
    pub fn counts(&self) -> (usize, usize) {
        (
            self.active.load(Ordering::Acquire),
            self.pending.load(Ordering::Acquire),
        )
    }
}

/// An admitted request: active until [`Admitted::active`] is dropped (keep it with the response
/// body), pending until [`Pending::release`] (or until every clone of it is dropped).
pub struct Admitted {
    /// Held until the response body ends.
    pub active: Active,
    /// Put in the request's extensions; released by the first try that reaches an endpoint.
    pub pending: Pending,
}

/// One request in flight, until dropped.
pub struct Active(Arc<UpstreamLimits>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One request waiting for an endpoint. Cloned with the request (every try carries it).
#[derive(Clone)]
pub struct Pending(Arc<PendingInner>);

struct PendingInner {
    released: AtomicBool,
    limits: Arc<UpstreamLimits>,
}

impl Pending {
    /// The request reached an endpoint: no longer pending (idempotent).
    pub fn release(&self) {
        self.0.release();
    }
}

impl PendingInner {
    fn release(&self) {
        if !self.released.swap(true, Ordering::AcqRel) {
            self.limits.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for PendingInner {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_pending_are_bounded_and_released() {
        let limits = UpstreamLimits::new("u", 3, 2);
        let a = limits.admit().unwrap();
        let b = limits.admit().unwrap();
        assert_eq!(limits.admit().err(), Some(Overloaded::MaxPending));
        assert_eq!(limits.counts(), (2, 2), "a refused request holds nothing");
        a.pending.release();
        a.pending.clone().release();
        assert_eq!(limits.counts(), (2, 1), "released once");
        let c = limits.admit().unwrap();
        assert_eq!(limits.admit().err(), Some(Overloaded::MaxRequests));
        assert_eq!(limits.counts(), (3, 2));
        drop(b);
        assert_eq!(
            limits.counts(),
            (2, 1),
            "dropped: neither active nor pending"
        );
        drop((a, c));
        assert_eq!(limits.counts(), (0, 0));
    }
}
