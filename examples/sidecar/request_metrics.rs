//! Request metrics of the proxy, with bounded label sets:
//!
//! - `meshwork_sidecar_route_requests_total{upstream, route, class}`: every answered request by the
//!   route it matched (its index in `routes`, `-` when none did), that route's upstream (`-`
//!   likewise), and the status class (`1xx` … `5xx`);
//! - `meshwork_sidecar_local_errors_total{status, reason}`: the answers the sidecar made itself,
//!   by status and reason (the one-line reason of the response body: a fixed set of texts).
//!
//! The route counters are made once at start (routes × 5 classes); a request only increments.

use std::sync::Arc;

/// The five status classes.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Counters of one route (or of requests that matched none).
struct ByClass([metrics::Counter; 5]);

impl ByClass {
    fn new(upstream: &str, route: &str) -> Self {
        Self(CLASSES.map(|class| {
            metrics::counter!(
                "meshwork_sidecar_route_requests_total",
                "upstream" => upstream.to_owned(),
                "route" => route.to_owned(),
                "class" => class
            )
        }))
    }

    fn count(&self, status: u16) {
        let i = usize::from((status / 100).clamp(1, 5)) - 1;
        self.0[i].increment(1);
    }
}

/// The proxy's request counters.
pub struct RequestMetrics {
    routes: Vec<ByClass>,
    unrouted: ByClass,
}

impl RequestMetrics {
    /// Counters for routes whose upstreams are `upstreams` (in route order).
    pub fn new<'a>(upstreams: impl IntoIterator<Item = &'a Arc<str>>) -> Self {
        // Not `meshwork_sidecar_requests_total`: that family is the per-endpoint one rendered by
        // `live_metrics`, and one name must not be two families on `/metrics`.
        metrics::describe_counter!(
            "meshwork_sidecar_route_requests_total",
            metrics::Unit::Count,
            "Requests answered, by the route they matched, its upstream and the status class."
        );
        metrics::describe_counter!(
            "meshwork_sidecar_local_errors_total",
            metrics::Unit::Count,
            "Answers the sidecar made itself, by status and reason."
        );
        Self {
            routes: upstreams
                .into_iter()
                .enumerate()
                .map(|(i, u)| ByClass::new(u, &i.to_string()))
                .collect(),
            unrouted: ByClass::new("-", "-"),
        }
    }

    /// Counts one answered request.
    pub fn count(&self, route: Option<usize>, status: u16, local: Option<&'static str>) {
        match route.and_then(|r| self.routes.get(r)) {
            Some(c) => c.count(status),
            None => self.unrouted.count(status),
        }
        if let Some(reason) = local {
            metrics::counter!(
                "meshwork_sidecar_local_errors_total",
                "status" => status.to_string(),
                "reason" => reason
            )
            .increment(1);
        }
    }
}
