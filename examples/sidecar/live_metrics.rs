//! Per-endpoint metrics that live exactly as long as the endpoint is in its upstream's set.
//!
//! A `metrics` recorder never forgets a series: a per-endpoint counter registered there would stay
//! in `/metrics` after discovery removed the endpoint, and an endpoint churn (autoscaling, rolling
//! deploys) would grow the page without bound. The exporter's idle timeout is no cure: the handles
//! the hot path keeps are not re-registered once their series has been dropped
//! (metrics-rs/metrics#372), so a quiet but live endpoint would vanish for good.
//!
//! So the sidecar keeps its per-endpoint numbers in plain atomics owned by the endpoint's stack,
//! and the admin listener renders them at scrape time for the endpoints of the *current* set
//! only (as Linkerd and Envoy drop the stats of a removed host). A removed endpoint's series
//! disappear with its removal; if it comes back, its counters start again from zero, which
//! Prometheus reads as a counter reset.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use meshwork::classify::Class;

/// Histogram bucket bounds in seconds (Prometheus' default buckets).
pub const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The classes, in the order of [`EndpointMetrics::by_class`].
pub const CLASSES: [&str; 4] = ["success", "retryable", "non_retryable", "ignorable"];

/// The live numbers of one endpoint: tries by class, tries in flight, try durations.
#[derive(Debug, Default)]
pub struct EndpointMetrics {
    pub in_flight: AtomicU64,
    by_class: [AtomicU64; 4],
    /// Cumulative counts per bucket of [`BUCKETS`], then `+Inf`.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl EndpointMetrics {
    /// Counts one try's outcome.
    pub fn record(&self, class: Class) {
        let i = match class {
            Class::Success => 0,
            Class::Retryable => 1,
            Class::NonRetryable => 2,
            Class::Ignorable => 3,
        };
        self.by_class[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Records one try's duration.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// The per-endpoint metrics of one upstream, by address. Holds them weakly: the endpoint's stack
/// owns them, so an endpoint the balancer dropped leaves nothing behind.
#[derive(Debug, Default)]
pub struct Registry {
    endpoints: Mutex<HashMap<SocketAddr, Weak<EndpointMetrics>>>,
}

impl Registry {
    /// Fresh metrics for an endpoint that discovery just added (the balancer makes an endpoint's
    /// stack once, and keeps it while the endpoint stays in the set).
    pub fn make(&self, addr: SocketAddr) -> Arc<EndpointMetrics> {
        let m = Arc::new(EndpointMetrics::default());
        let mut map = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, w| w.strong_count() > 0);
        map.insert(addr, Arc::downgrade(&m));
        m
    }

    /// The metrics of `addr`, if its stack is alive.
    pub fn get(&self, addr: SocketAddr) -> Option<Arc<EndpointMetrics>> {
        let map = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&addr).and_then(Weak::upgrade)
    }

    /// Entries held (live or not yet pruned): bounded by the endpoints made since the last prune.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.endpoints.lock().unwrap().len()
    }
}

/// One endpoint of the current set, as rendered.
pub struct Live {
    pub upstream: Arc<str>,
    pub addr: SocketAddr,
    /// The `meshwork_breaker_state` value of its breaker, when breakers are on.
    pub breaker: Option<f64>,
    pub metrics: Arc<EndpointMetrics>,
}

/// Renders the per-endpoint families for `live` in the Prometheus text format (0.0.4), each
/// family once, with its HELP and TYPE lines.
pub fn render(live: &[Live], out: &mut String) {
    if live.is_empty() {
        return;
    }
    let labels = |l: &Live| {
        format!(
            "upstream=\"{}\",endpoint=\"{}\"",
            escape(&l.upstream),
            l.addr
        )
    };

    family(
        out,
        "meshwork_sidecar_requests_total",
        "counter",
        "forwarded tries by outcome class, per endpoint of the current set",
    );
    for l in live {
        for (class, n) in CLASSES.iter().zip(&l.metrics.by_class) {
            let n = n.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "meshwork_sidecar_requests_total{{{},class=\"{class}\"}} {n}",
                labels(l)
            );
        }
    }

    family(
        out,
        "meshwork_sidecar_request_duration_seconds",
        "histogram",
        "one try's time until the first response body frame, per endpoint of the current set",
    );
    for l in live {
        let ls = labels(l);
        let mut cumulative = 0;
        for (i, b) in l.metrics.buckets.iter().enumerate() {
            cumulative += b.load(Ordering::Relaxed);
            let le = BUCKETS.get(i).map_or("+Inf".to_owned(), |b| b.to_string());
            let _ = writeln!(
                out,
                "meshwork_sidecar_request_duration_seconds_bucket{{{ls},le=\"{le}\"}} {cumulative}"
            );
        }
        let sum = l.metrics.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(
            out,
            "meshwork_sidecar_request_duration_seconds_sum{{{ls}}} {sum}"
        );
        let _ = writeln!(
            out,
            "meshwork_sidecar_request_duration_seconds_count{{{ls}}} {cumulative}"
        );
    }

    family(
        out,
        "meshwork_sidecar_endpoint_in_flight",
        "gauge",
        "tries in flight until their response body ends, per endpoint of the current set",
    );
    for l in live {
        let n = l.metrics.in_flight.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "meshwork_sidecar_endpoint_in_flight{{{}}} {n}",
            labels(l)
        );
    }

    if live.iter().any(|l| l.breaker.is_some()) {
        family(
            out,
            "meshwork_sidecar_endpoint_breaker_state",
            "gauge",
            "breaker state per endpoint of the current set: 0 closed, 1 open, 2 half-open, 3 forced open, 4 forced closed",
        );
        for l in live {
            if let Some(state) = l.breaker {
                let _ = writeln!(
                    out,
                    "meshwork_sidecar_endpoint_breaker_state{{{}}} {state}",
                    labels(l)
                );
            }
        }
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value (backslash, quote, newline).
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_endpoint_leaves_the_registry() {
        let reg = Registry::default();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let m = reg.make(addr);
        assert!(reg.get(addr).is_some());
        drop(m);
        assert!(reg.get(addr).is_none());
        // Churn of a thousand endpoints leaves at most the live ones behind.
        let mut keep = Vec::new();
        for port in 0..1000u16 {
            let m = reg.make(SocketAddr::from(([127, 0, 0, 2], port)));
            if port % 100 == 0 {
                keep.push(m);
            }
        }
        assert!(reg.len() <= keep.len() + 1, "{} entries", reg.len());
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_counted_once() {
        let m = Arc::new(EndpointMetrics::default());
        m.observe(Duration::from_millis(3));
        m.observe(Duration::from_millis(30));
        m.observe(Duration::from_secs(60));
        m.record(Class::Success);
        let live = [Live {
            upstream: Arc::from("a\"b"),
            addr: "127.0.0.1:9".parse().unwrap(),
            breaker: Some(0.0),
            metrics: m,
        }];
        let mut out = String::new();
        render(&live, &mut out);
        let ls = "upstream=\"a\\\"b\",endpoint=\"127.0.0.1:9\"";
        for line in [
            format!("meshwork_sidecar_request_duration_seconds_bucket{{{ls},le=\"0.005\"}} 1"),
            format!("meshwork_sidecar_request_duration_seconds_bucket{{{ls},le=\"0.05\"}} 2"),
            format!("meshwork_sidecar_request_duration_seconds_bucket{{{ls},le=\"10\"}} 2"),
            format!("meshwork_sidecar_request_duration_seconds_bucket{{{ls},le=\"+Inf\"}} 3"),
            format!("meshwork_sidecar_request_duration_seconds_count{{{ls}}} 3"),
            format!("meshwork_sidecar_requests_total{{{ls},class=\"success\"}} 1"),
            format!("meshwork_sidecar_endpoint_breaker_state{{{ls}}} 0"),
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line} in\n{out}");
        }
        assert_eq!(out.matches("# TYPE ").count(), 4);
    }
}
