//! The proxy listener: HTTP/1.1 and HTTP/2 (h2c prior knowledge) on one port, routing by Host and
//! path prefix to configured upstreams only, with listener limits and graceful shutdown.
//!
//! Never an open proxy: the destination always comes from the configuration. A request is
//! forwarded only when a route matches its Host (or HTTP/2 `:authority`) and path. `CONNECT` is
//! refused (405); an HTTP/1 absolute-form request (`GET http://host/ HTTP/1.1`, the form a forward
//! proxy receives) is refused with 421 unless its authority is the host of a configured route; a
//! request whose absolute-form authority and Host header disagree is refused with 400.
//!
//! A route may also require exact header values (`headers`), and may send another Host to the
//! upstream (`host_rewrite`). A path prefix matches as a string prefix of the path as sent (like Envoy's `prefix`; `/users`
//! also matches `/usersettings`, so write `/users/` when that matters), without normalisation: use
//! routes for routing, not for access control. WebSocket (HTTP/1.1 `GET` with `Upgrade:
//! websocket`) is proxied end to end: routed, balanced and counted like any request, then, once
//! the upstream answers 101, both upgraded connections are tunnelled. Other upgrades (the HTTP/2
//! `Upgrade: h2c` dance) are not proxied: `Upgrade` is hop-by-hop and removed.
//!
//! Local answers, each with a one-line text body:
//!
//! | status | when |
//! |---|---|
//! | 400 | malformed request line or head (hyper), absolute-form authority ≠ Host, more than one `Host`, an HTTP/1.1 request without `Host`, HTTP/2 `:authority` ≠ `Host`; the client's request body failed (aborted upload, malformed chunked encoding, connection closed mid-body): the caller's doing, never counted against the endpoint (when the client is gone, nothing is answered) |
//! | 404 | no route for this Host and path |
//! | 405 | `CONNECT` |
//! | 413 | `Content-Length` over `listener.max_body_bytes` (a longer streamed body is cut off) |
//! | 421 | absolute-form request for a host no route names |
//! | 431 | request head over `listener.max_header_bytes` or `listener.max_headers` (hyper for HTTP/1 and the HTTP/2 header-list size; the proxy for the HTTP/2 field count) |
//! | 502 | the upstream failed (connection refused or reset, protocol error) |
//! | 503 | no endpoint of the upstream is available (none discovered, or every breaker open) within `balancer.max_wait` |
//! | 503 + `x-meshwork-overloaded: true` | the upstream's `limits.max_requests` or `limits.max_pending` is reached (at once, nothing queued) |
//! | 504 | the deadline passed (total, or one try's timeout) before the upstream answered |
//! | 508 | the request's `Via` already names this sidecar instance: a forwarding loop, stopped at the first repeat |

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use meshwork::BoxError;
use meshwork::balance::NoEndpoints;
use meshwork::timeout::{DeadlineExceeded, Elapsed};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt;

use crate::access::{Entry, Format, LocalReason, Tries, new_request_id};
use crate::client_body::{BodyStatus, ClientBody};
use crate::config::{Config, ListenerConfig};
use crate::conn::{self, Activity, Watched};
use crate::headers;
use crate::limits::{Active, Overloaded};
use crate::request_metrics::RequestMetrics;
use crate::stream_idle::IdleBody;
use crate::upstream::{ProxyBody, Upstream};

/// A compiled route.
struct Route {
    host: Option<String>,
    path_prefix: String,
    headers: Vec<(http::HeaderName, HeaderValue)>,
    host_rewrite: Option<HeaderValue>,
    /// The route's total timeout, as a caller's budget.
    timeout: Option<Duration>,
    upstream: usize,
}

/// The request handler shared by every connection.
pub struct Proxy {
    routes: Vec<Route>,
    upstreams: Vec<Upstream>,
    max_body_bytes: u64,
    max_headers: usize,
    /// `listener.stream_idle_timeout`.
    stream_idle: Duration,
    /// The access log's format, when it is on.
    access_log: Option<Format>,
    /// `None`: trust every client's forwarding headers; else only these peers'.
    trusted_peers: Option<Vec<std::net::IpAddr>>,
    refused: Refused,
    requests: Arc<RequestMetrics>,
}

/// Counters of requests the proxy answered itself, by status; handles made once.
struct Refused([(StatusCode, metrics::Counter); 7]);

impl Refused {
    fn new() -> Self {
        metrics::describe_counter!(
            "meshwork_sidecar_refused_total",
            metrics::Unit::Count,
            "Requests the sidecar refused itself (never forwarded), by status."
        );
        Self([400, 404, 405, 413, 421, 431, 508].map(|code| {
            let status = StatusCode::from_u16(code).expect("a valid status");
            let counter =
                metrics::counter!("meshwork_sidecar_refused_total", "status" => code.to_string());
            (status, counter)
        }))
    }

    fn count(&self, status: StatusCode) {
        if let Some((_, c)) = self.0.iter().find(|(s, _)| *s == status) {
            c.increment(1);
        }
    }
}

impl Proxy {
    /// Compiles the routes against the built upstreams.
    pub fn new(config: &Config, upstreams: Vec<Upstream>) -> Self {
        let routes: Vec<Route> = config
            .routes
            .iter()
            .map(|r| Route {
                host: r.host.as_ref().map(|h| h.to_ascii_lowercase()),
                path_prefix: r.path_prefix.clone(),
                headers: r
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            http::HeaderName::from_bytes(k.as_bytes()).expect("validated"),
                            HeaderValue::from_str(v).expect("validated"),
                        )
                    })
                    .collect(),
                timeout: r.timeout.map(|t| t.0),
                host_rewrite: r
                    .host_rewrite
                    .as_ref()
                    .map(|h| HeaderValue::from_str(h).expect("validated")),
                upstream: upstreams
                    .iter()
                    .position(|u| *u.name == *r.upstream)
                    .expect("validated: every route names an upstream"),
            })
            .collect();
        let requests = Arc::new(RequestMetrics::new(
            routes.iter().map(|r: &Route| &upstreams[r.upstream].name),
        ));
        Self {
            routes,
            upstreams,
            max_body_bytes: config.listener.max_body_bytes,
            max_headers: config.listener.max_headers,
            stream_idle: config.listener.stream_idle_timeout.0,
            trusted_peers: (config.listener.x_forwarded_for == crate::config::XffMode::Replace)
                .then(|| config.listener.trusted_peers.clone()),
            access_log: config.access_log.then_some(config.access_log_format),
            refused: Refused::new(),
            requests,
        }
    }

    /// The configured upstreams.
    pub fn upstreams(&self) -> &[Upstream] {
        &self.upstreams
    }

    fn route(
        &self,
        host: Option<&str>,
        path: &str,
        headers: &http::HeaderMap,
    ) -> Option<(usize, &Route)> {
        self.routes.iter().enumerate().find(|(_, r)| {
            let host_ok = match (&r.host, host) {
                (None, _) => true,
                (Some(want), Some(got)) => want.eq_ignore_ascii_case(got),
                (Some(_), None) => false,
            };
            host_ok
                && path.starts_with(r.path_prefix.as_str())
                && r.headers
                    .iter()
                    .all(|(name, want)| headers.get_all(name).iter().any(|v| v == want))
        })
    }

    /// Whether some route names `host` explicitly.
    fn names_host(&self, host: &str) -> bool {
        self.routes.iter().any(|r| {
            r.host
                .as_deref()
                .is_some_and(|h| h.eq_ignore_ascii_case(host))
        })
    }

    /// Handles one request from `client`. Never fails: every problem becomes a response. A
    /// forwarded request comes back with its upstream's [`Active`] slot: keep it until the
    /// response body ends.
    ///
    /// Routing happens before the returned future is polled; the future only waits for the
    /// upstream (and owns everything it needs).
    pub fn handle(
        &self,
        mut req: Request<Incoming>,
        client: SocketAddr,
    ) -> impl Future<Output = (Response<ProxyBody>, Option<Active>)> + Send + 'static {
        let mut entry = self
            .access_log
            .map(|format| access_entry(format, &mut req, client));
        let next = self.route_request(req, client, entry.as_ref().map(|e| &e.tries));
        if let Next::Local(res) = &next {
            self.refused.count(res.status());
        }
        let idle = self.stream_idle;
        let requests = self.requests.clone();
        async move {
            let (res, active, request_body, route) = match next {
                Next::Local(res) => (res, None, None, None),
                Next::Forward(f) => {
                    let outcome = match f.timeout {
                        // The route's own bound, also where the upstream has none.
                        Some(t) => tokio::time::timeout(t, f.call)
                            .await
                            .unwrap_or_else(|_| Err(Box::new(DeadlineExceeded::new()))),
                        None => f.call.await,
                    };
                    let res = match outcome {
                        Ok(mut res) => {
                            let switching = res.status() == StatusCode::SWITCHING_PROTOCOLS;
                            let upgrade = res.headers().get(header::UPGRADE).cloned();
                            headers::remove_hop_by_hop(res.headers_mut());
                            headers::add_via(res.headers_mut());
                            if let (Some(client), true, Some(upgrade)) =
                                (f.upgrade, switching, upgrade)
                            {
                                // A WebSocket accepted by the upstream: tunnel both upgraded
                                // connections once the 101 has reached the client.
                                res.headers_mut().insert(header::UPGRADE, upgrade);
                                res.headers_mut().insert(
                                    header::CONNECTION,
                                    HeaderValue::from_static("upgrade"),
                                );
                                tokio::spawn(tunnel(client, hyper::upgrade::on(&mut res)));
                            }
                            res
                        }
                        Err(e) => {
                            tracing::debug!(upstream = %f.upstream, error = %e, "upstream request failed");
                            if f.body.failed() {
                                local(StatusCode::BAD_REQUEST, "the request body failed")
                            } else {
                                error_response(&e)
                            }
                        }
                    };
                    if let Some(entry) = &mut entry {
                        entry.route = Some(f.route);
                        entry.upstream = Some(f.upstream);
                        entry.bytes_in = Some(f.body.clone());
                    }
                    (res, Some(f.active), Some(f.body), Some(f.route))
                }
            };
            let local = res.extensions().get::<LocalReason>().map(|r| r.0);
            requests.count(route, res.status().as_u16(), local);
            let res = res.map(|body| IdleBody::new(body, idle, request_body).boxed());
            let Some(mut entry) = entry else {
                return (res, active);
            };
            // The line is written when the response body ends (or is dropped): see `access`.
            entry.status = res.status().as_u16();
            entry.error = local;
            let res = res.map(|body| {
                body.map_frame(move |frame| {
                    if let Some(data) = frame.data_ref() {
                        entry.sent(data.len());
                    }
                    frame
                })
                .boxed()
            });
            (res, active)
        }
    }

    fn route_request(
        &self,
        req: Request<Incoming>,
        client: SocketAddr,
        tries: Option<&Tries>,
    ) -> Next {
        if req.method() == Method::CONNECT {
            return Next::Local(local(
                StatusCode::METHOD_NOT_ALLOWED,
                "CONNECT is not supported",
            ));
        }
        if headers::has_our_via(req.headers()) {
            return Next::Local(local(
                StatusCode::LOOP_DETECTED,
                "loop detected: this request has already passed this sidecar",
            ));
        }
        // hyper counts HTTP/1 header fields itself (431); HTTP/2 gets the same bound here.
        if req.version() == Version::HTTP_2 && req.headers().len() > self.max_headers {
            return Next::Local(local(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "too many header fields",
            ));
        }
        // RFC 9112 §3.2: more than one Host, or none in HTTP/1.1, is a 400. In HTTP/2, Host is
        // optional, but must name the same host as `:authority` (RFC 9113 §8.3.1).
        let mut hosts = req.headers().get_all(header::HOST).iter();
        let (first, second) = (hosts.next(), hosts.next());
        if second.is_some() {
            return Next::Local(local(StatusCode::BAD_REQUEST, "more than one Host header"));
        }
        if first.is_none() && req.version() == Version::HTTP_11 {
            return Next::Local(local(
                StatusCode::BAD_REQUEST,
                "an HTTP/1.1 request needs a Host header",
            ));
        }
        let host_header = first.and_then(|v| v.to_str().ok()).map(strip_port);
        if req.version() == Version::HTTP_2
            && let (Some(authority), Some(h)) = (req.uri().host(), host_header)
            && !authority.eq_ignore_ascii_case(h)
        {
            return Next::Local(local(
                StatusCode::BAD_REQUEST,
                ":authority and Host header disagree",
            ));
        }
        let absolute_form = req.version() < Version::HTTP_2 && req.uri().authority().is_some();
        let host = match (req.uri().host(), host_header) {
            (Some(authority), Some(h)) if absolute_form && !authority.eq_ignore_ascii_case(h) => {
                return Next::Local(local(
                    StatusCode::BAD_REQUEST,
                    "request target and Host header disagree",
                ));
            }
            (Some(authority), _) => Some(authority),
            (None, h) => h,
        };
        if absolute_form && !host.is_some_and(|h| self.names_host(h)) {
            return Next::Local(local(
                StatusCode::MISDIRECTED_REQUEST,
                "this is not a forward proxy: destination not configured",
            ));
        }
        let Some((route_index, route)) = self.route(host, req.uri().path(), req.headers()) else {
            return Next::Local(local(
                StatusCode::NOT_FOUND,
                "no route for this host and path",
            ));
        };
        let upstream = &self.upstreams[route.upstream];
        let content_length = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if content_length.is_some_and(|n| n > self.max_body_bytes) {
            return Next::Local(local(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large",
            ));
        }

        let admitted = match upstream.limits.admit() {
            Ok(admitted) => admitted,
            Err(over) => return Next::Local(overloaded(over)),
        };

        let mut req = req;
        let ws = websocket(&req);
        let upgrade = ws.as_ref().map(|_| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        parts.extensions.insert(admitted.pending);
        if let Some(tries) = tries {
            parts.extensions.insert(tries.clone());
        }
        // The upstream seam sets scheme and authority; keep the Host the request was routed by:
        // the URI's authority when there is one (HTTP/2 `:authority`, which wins over a Host
        // header; an absolute-form target, checked equal above), else the Host header.
        let host = match parts.uri.authority() {
            Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
            None => parts.headers.get(header::HOST).cloned(),
        };
        let path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        parts.uri = Uri::from(path_and_query);
        headers::remove_hop_by_hop_request(&mut parts.headers);
        if let Some(ws) = ws {
            // The one upgrade proxied: WebSocket, end to end (other upgrades are dropped).
            parts.headers.insert(header::UPGRADE, ws);
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        // `Connection: host` must not remove the Host the request was routed by; a route's
        // `host_rewrite` replaces it.
        if let Some(host) = route.host_rewrite.clone().or(host) {
            parts.headers.insert(header::HOST, host);
        }
        let trust = self
            .trusted_peers
            .as_ref()
            .is_none_or(|peers| peers.contains(&client.ip()));
        headers::add_forwarded(&mut parts.headers, client, "http", trust);
        if let Some(timeout) = route.timeout {
            set_budget(&mut parts.headers, timeout);
        }
        let limit = usize::try_from(self.max_body_bytes).unwrap_or(usize::MAX);
        let (body, body_status) = ClientBody::new(body);
        let body: ProxyBody = BodyExt::boxed(Limited::new(body, limit));
        let req = Request::from_parts(parts, body);
        Next::Forward(Forward {
            call: Box::pin(upstream.service.clone().oneshot(req)),
            upstream: upstream.name.clone(),
            route: route_index,
            timeout: route.timeout,
            body: body_status,
            active: admitted.active,
            upgrade,
        })
    }
}

/// Lowers the caller's `meshwork-timeout-ms` budget to `timeout`, so that the upstream's deadline
/// layer (when it has a total) and the endpoint see the route's bound; a shorter budget the caller
/// sent stays. The proxy enforces the route's bound itself as well.
fn set_budget(headers: &mut http::HeaderMap, timeout: Duration) {
    const BUDGET: &str = "meshwork-timeout-ms";
    let ms = u64::try_from(timeout.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    let theirs = headers
        .get(BUDGET)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if theirs.is_none_or(|t| t > ms) {
        headers.insert(http::HeaderName::from_static(BUDGET), HeaderValue::from(ms));
    }
}

/// What to do with a request: answer it here, or forward it.
enum Next {
    Local(Response<ProxyBody>),
    Forward(Forward),
}

/// A request on its way to an upstream.
struct Forward {
    // Boxed: naming `Oneshot<UpstreamService, _>` inside an async block trips rustc's
    // higher-ranked `Send` check on the boxed error's `dyn` lifetime.
    call: BoxFuture<'static, Result<Response<ProxyBody>, BoxError>>,
    upstream: Arc<str>,
    /// The index of the route that matched.
    route: usize,
    /// The route's total timeout.
    timeout: Option<Duration>,
    /// The client's request body: whether it failed, its size.
    body: BodyStatus,
    /// The request's slot in its upstream's limits.
    active: Active,
    /// The client's side of a WebSocket upgrade.
    upgrade: Option<hyper::upgrade::OnUpgrade>,
}

/// Copies both ways between the client's and the upstream's upgraded connections until either
/// side closes.
async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(error = %e, "websocket upgrade failed");
            return;
        }
    };
    let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(error = %e, "websocket tunnel ended with an error");
    }
}

/// Whether `req` asks for a WebSocket (HTTP/1.1 `GET` with `Connection: upgrade` and `Upgrade:
/// websocket`); its `Upgrade` value when it does.
fn websocket(req: &Request<Incoming>) -> Option<HeaderValue> {
    let has = |name: header::HeaderName, token: &str| {
        req.headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    (req.version() == Version::HTTP_11
        && req.method() == Method::GET
        && has(header::CONNECTION, "upgrade")
        && has(header::UPGRADE, "websocket"))
    .then(|| req.headers().get(header::UPGRADE).cloned())
    .flatten()
}

/// The access-log entry of a request just arrived; gives it an `x-request-id` when it has none
/// (forwarded to the upstream).
fn access_entry(format: Format, req: &mut Request<Incoming>, client: SocketAddr) -> Entry {
    let request_id = match req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
    {
        Some(id) => id.to_owned(),
        None => {
            let id = new_request_id();
            req.headers_mut().insert(
                http::HeaderName::from_static("x-request-id"),
                HeaderValue::from_str(&id).expect("hex"),
            );
            id
        }
    };
    let authority = req.uri().authority().map(|a| a.to_string()).or_else(|| {
        req.headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    Entry {
        format,
        start: Instant::now(),
        ts: std::time::SystemTime::now(),
        request_id,
        client,
        method: req.method().to_string(),
        authority,
        path: req.uri().path().to_owned(),
        route: None,
        upstream: None,
        tries: Tries::default(),
        bytes_in: None,
        status: 0,
        error: None,
        bytes_out: AtomicU64::new(0),
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return host.split_once(']').map_or(host, |(h, _)| &h[1..]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// The response for a failed forward: 504 when time ran out, 503 when no endpoint was available,
/// 413 when the request body outgrew the limit, 502 for anything else the upstream did.
///
/// The one place where errors of the forwarding stack become statuses. The balancer's
/// [`NoEndpoints`] (every endpoint's breaker open, or none discovered, for `balancer.max_wait`) is
/// 503. A failure the retry layer gave up on (budget exhausted, tries used up) comes back as the
/// last try's outcome: an error here (502, or 504 for a try's timeout), or the upstream's own 5xx
/// response, which is passed through as it is and never reaches this function.
pub fn error_response(e: &BoxError) -> Response<ProxyBody> {
    if meshwork::is_caused_by::<DeadlineExceeded>(&**e) {
        local(
            StatusCode::GATEWAY_TIMEOUT,
            "deadline exceeded before the upstream answered",
        )
    } else if meshwork::is_caused_by::<Elapsed>(&**e) {
        // A try that timed out is the gateway timing out on its upstream: 504, not 502.
        local(StatusCode::GATEWAY_TIMEOUT, "upstream timed out")
    } else if meshwork::is_caused_by::<NoEndpoints>(&**e) {
        local(
            StatusCode::SERVICE_UNAVAILABLE,
            "no endpoint available for this upstream",
        )
    } else if meshwork::is_caused_by::<http_body_util::LengthLimitError>(&**e) {
        local(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
    } else {
        local(StatusCode::BAD_GATEWAY, "upstream request failed")
    }
}

/// The answer past an upstream limit: 503 with `x-meshwork-overloaded: true`, at once.
fn overloaded(over: Overloaded) -> Response<ProxyBody> {
    let mut res = local(StatusCode::SERVICE_UNAVAILABLE, over.reason());
    res.headers_mut().insert(
        http::HeaderName::from_static("x-meshwork-overloaded"),
        HeaderValue::from_static("true"),
    );
    res
}

/// A response made by the proxy itself, with a short text body.
pub fn local(status: StatusCode, why: &'static str) -> Response<ProxyBody> {
    let mut res = Response::new(
        Full::new(Bytes::from(format!("{why}\n")))
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *res.status_mut() = status;
    res.extensions_mut().insert(LocalReason(why));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers::add_via(res.headers_mut());
    res
}

/// Streams a client may reset before the server has served them, on one HTTP/2 connection,
/// before it gets GOAWAY (the h2 crate's default, the rapid-reset guard).
const H2_MAX_PENDING_ACCEPT_RESETS: usize = 20;

/// Streams the server may reset because of the client's protocol errors, on one connection,
/// before it gets GOAWAY (the h2 crate's default).
const H2_MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// Accepts connections until `shutdown` flips, then returns at once (the listener is dropped, so
/// new connections are refused); the open connections finish their requests and close. Each
/// connection holds one permit of `connections` until it closes, so the caller can wait for the
/// drain by acquiring every permit. Each connection's header-read and idle timers are its own
/// task's (see `conn`).
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    limits: ListenerConfig,
    connections: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Off: it would also run while a kept-alive connection idles (`conn` times heads).
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes)
        .max_headers(limits.max_headers)
        .keep_alive(true);
    // HTTP/2 limits, explicit rather than whatever hyper's defaults become: the stream cap, the
    // header-list size (the same bound as HTTP/1's head), and the rapid-reset guard
    // (CVE-2023-44487): a client that resets more than `H2_MAX_PENDING_ACCEPT_RESETS` streams
    // before they are served gets GOAWAY (ENHANCE_YOUR_CALM); a reset stream is never forwarded.
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);
    let idle = limits.idle_timeout.0;
    let header_read = limits.header_read_timeout.0;

    loop {
        let permit = tokio::select! {
            p = connections.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let activity = Activity::new();
            let act = activity.clone();
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let active = act.request();
                let proxy = proxy.clone();
                async move {
                    let (res, slot) = proxy.handle(req, peer).await;
                    // The request stays active (on its connection, and in its upstream's
                    // limits) until its response body is done. Not boxed again: the body is
                    // already a `ProxyBody`.
                    Ok::<_, Infallible>(res.map(|b| {
                        b.map_frame(move |f| {
                            let _keep = (&active, &slot);
                            f
                        })
                    }))
                }
            });
            let io = TokioIo::new(Watched::new(stream, activity.clone()));
            let conn = builder.serve_connection_with_upgrades(io, svc);
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
    fn ports_are_stripped() {
        assert_eq!(strip_port("users.local:8080"), "users.local");
        assert_eq!(strip_port("users.local"), "users.local");
        assert_eq!(strip_port("[::1]:80"), "::1");
    }

    #[test]
    fn errors_map_to_statuses() {
        let cases: [(BoxError, u16); 5] = [
            (Box::new(DeadlineExceeded::new()), 504),
            (Box::new(Elapsed::new()), 504),
            (Box::new(NoEndpoints::new()), 503),
            (Box::new(std::io::Error::other("reset")), 502),
            ("boom".into(), 502),
        ];
        for (e, status) in cases {
            assert_eq!(error_response(&e).status().as_u16(), status, "{e}");
        }
    }
}
