//! The admin listener (default `127.0.0.1:9990`; keep it on loopback).
//!
//! | path | answer |
//! |---|---|
//! | `/metrics` | Prometheus text format: the sidecar's metrics and every `meshwork_` metric the library layers emit |
//! | `/ready` | 200 once the proxy listens and at least one upstream has an endpoint, else 503; 503 from the moment shutdown starts (SIGTERM) |
//! | `/live` | 200 while the process runs |
//! | `/endpoints` | JSON: every upstream's endpoints as the balancer sees them: `address`, `in_flight`, `load` (the cost P2C compares: the peak-EWMA latency estimate × (in-flight + 1), or the in-flight count), `breaker` (`closed`, `open`, `half_open`, …, or `null` when breakers are off) |
//!
//! Metrics the sidecar itself records:
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `meshwork_sidecar_requests_total` | counter | `upstream`, `endpoint`, `class` | forwarded tries (first tries, retries and requeues) by outcome class (`success`, `retryable`, `non_retryable`, `ignorable`, by `HttpClassify`) |
//! | `meshwork_sidecar_request_duration_seconds` | histogram | `upstream`, `endpoint` | one try's time until the first response body frame (or the failure) |
//! | `meshwork_sidecar_endpoint_in_flight` | gauge | `upstream`, `endpoint` | tries in flight, until their response body ends |
//! | `meshwork_sidecar_endpoint_breaker_state` | gauge | `upstream`, `endpoint` | 0 closed, 1 open, 2 half-open, 3 forced open, 4 forced closed |
//!
//! The four per-endpoint families above are rendered at scrape time for the endpoints in the
//! current sets only: a series disappears when discovery removes its endpoint, so endpoint churn
//! never grows the page (see `live_metrics`). Every other series is per upstream or global, a
//! set bounded by the configuration.
//! | `meshwork_sidecar_refused_total` | counter | `status` | requests the proxy refused itself (400, 404, 405, 413, 421), never forwarded |
//!
//! A try cut off by the per-try timeout or the deadline is not counted by class (it has no
//! outcome); the retry layer's counters and the 504s show it.
//!
//! The library's layers add theirs, every one labelled `upstream` (see their module docs for the
//! full tables):
//!
//! | name | labels | meaning |
//! |---|---|---|
//! | `meshwork_retry_retries_total`, `meshwork_retry_requeues_total` | `upstream` | retries after a failure that may have reached the endpoint; requeues of tries that provably never left |
//! | `meshwork_retry_budget_exhausted_total`, `meshwork_retry_body_too_large_total` | `upstream` | retries refused: budget empty; body over `replay_limit_bytes` |
//! | `meshwork_balance_endpoints` | `upstream` | endpoints in the balancer's set |
//! | `meshwork_balance_no_endpoints_total` | `upstream` | requests answered 503: no endpoint available within `balancer.max_wait` |
//! | `meshwork_balance_discovery_errors_total` | `upstream` | failed discovery answers (the last good endpoints stay) |
//! | `meshwork_breaker_open` | `upstream` | endpoints whose breaker is not closed (a removed endpoint no longer counts) |
//! | `meshwork_breaker_trips_total`, `meshwork_breaker_probes_total` | `upstream`, `reason` / `outcome` | breaker openings; half-open probes, over the upstream's endpoints |
//! | `meshwork_discovery_*`, `meshwork_etcd_*`, `meshwork_zookeeper_*` | `upstream` (and `source`, `prefix`; `path`, `format`) | the discovery source's own counters |

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::config::AdminLimits;
use crate::conn::{self, Activity, Watched};

use crate::upstream::Upstream;

/// What the admin endpoints read.
pub struct AdminState {
    /// Renders the Prometheus text.
    pub metrics: PrometheusHandle,
    /// The upstreams.
    pub upstreams: Vec<Upstream>,
    /// Set once the proxy listener is bound and serving; cleared when draining starts (SIGTERM).
    pub listening: AtomicBool,
}

impl AdminState {
    fn ready(&self) -> bool {
        self.listening.load(Ordering::Acquire)
            && self
                .upstreams
                .iter()
                .any(|u| !u.view.endpoints().is_empty())
    }

    fn endpoints_json(&self) -> String {
        let mut out = String::from("{\"upstreams\":[");
        for (i, u) in self.upstreams.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let (active, pending) = u.limits.counts();
            let _ = write!(
                out,
                "{{\"name\":{},\"active\":{active},\"pending\":{pending},\"endpoints\":[",
                json_str(&u.name)
            );
            for (j, ep) in u.view.endpoints().iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                let load = ep
                    .load
                    .filter(|l| l.is_finite())
                    .map_or("null".to_owned(), |l| l.to_string());
                let breaker = ep.breaker.map_or("null".to_owned(), json_str);
                let _ = write!(
                    out,
                    "{{\"address\":{},\"in_flight\":{},\"load\":{load},\"breaker\":{breaker}}}",
                    json_str(&ep.addr.to_string()),
                    ep.in_flight,
                );
            }
            out.push_str("]}");
        }
        out.push_str("]}\n");
        out
    }

    fn respond(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
        }
        match req.uri().path() {
            "/metrics" => {
                let mut page = self.metrics.render();
                // Per-endpoint families, for the endpoints of the current sets only.
                let live: Vec<_> = self.upstreams.iter().flat_map(|u| u.view.live()).collect();
                crate::live_metrics::render(&live, &mut page);
                let mut res = text(StatusCode::OK, page);
                res.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                res
            }
            "/live" => text(StatusCode::OK, "live\n".into()),
            "/ready" if self.ready() => text(StatusCode::OK, "ready\n".into()),
            "/ready" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n".into()),
            "/endpoints" => {
                let mut res = text(StatusCode::OK, self.endpoints_json());
                res.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("application/json"),
                );
                res
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
        }
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// Serves the admin endpoints until `shutdown` flips, with the same kind of limits as the proxy
/// listener (`admin_limits`): at most `max_connections` connections (more wait in the kernel's
/// backlog), a request head due within `header_read_timeout` of its first byte, a kept-alive
/// connection closed after `idle_timeout` without a request.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    limits: AdminLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Off: `conn` times request heads (hyper's timer would also run between requests).
        .header_read_timeout(None)
        .max_buf_size(16 * 1024)
        .max_headers(64);
    let builder = Arc::new(builder);
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let (header_read, idle) = (limits.header_read_timeout.0, limits.idle_timeout.0);
    loop {
        let permit = tokio::select! {
            p = connections.clone().acquire_owned() => p.expect("never closed"),
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let state = state.clone();
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let activity = Activity::new();
            let act = activity.clone();
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                // Admin responses are whole: the request ends with its response.
                let _active = act.request();
                let res = state.respond(&req);
                async move { Ok::<_, Infallible>(res) }
            });
            let io = TokioIo::new(Watched::new(stream, activity.clone()));
            let conn = builder.serve_connection(io, svc);
            tokio::pin!(conn);
            conn::drive(
                conn,
                |c| c.graceful_shutdown(),
                &activity,
                header_read,
                idle,
                shutdown,
                peer,
            )
            .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
