//! The forwarding seam: one `tower::Service` per upstream, built by [`build`] from the upstream's
//! configuration.
//!
//! Everything the proxy knows about an upstream goes through two things:
//! - [`Upstream::service`], a `Service<Request<ProxyBody>, Response = Response<ProxyBody>, Error =
//!   BoxError>` that is cheap to clone (one clone per request);
//! - [`Upstream::view`], an [`EndpointsView`] the admin listener reads for `/endpoints` and `/ready`.
//!
//! Today the service is: total deadline ([`DeadlineLayer`], honouring a shorter incoming
//! `meshwork-timeout-ms`/`grpc-timeout`) → per-try timeout ([`TimeoutLayer`]) → deadline
//! propagation ([`PropagateDeadlineLayer`]) → round robin over the upstream's endpoints → a
//! hyper-util pooled client (HTTP/1.1 keep-alive, or HTTP/2 prior knowledge). Responses are
//! classified with [`HttpClassify`] for the per-endpoint metrics. When the client builder lands,
//! only [`build`] changes: it composes deadline → retry → P2C → per endpoint [breaker → load →
//! per-try timeout → connection], and the balancer's endpoint handles implement [`EndpointsView`]
//! with their load and breaker state.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use http::{Request, Response, Uri, Version};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use meshwork::BoxError;
use meshwork::classify::{Class, Classify, HttpClassify};
use meshwork::discover::{BoxDiscover, Endpoint, Update};
use meshwork::http::PropagateDeadlineLayer;
use meshwork::timeout::{DeadlineLayer, TimeoutLayer};
use metrics::{Counter, Gauge, Histogram};
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder};

use crate::config::{Discovery, HttpVersion, UpstreamConfig};

/// The body type on both sides of the proxy: streamed, never buffered whole.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// The forwarding service of one upstream.
pub type UpstreamService = BoxCloneSyncService<Request<ProxyBody>, Response<ProxyBody>, BoxError>;

/// No endpoint of the upstream can take the request (maps to 503).
///
/// The balancer's `NoEndpoints` replaces it when the client builder lands.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEndpoints;

impl fmt::Display for NoEndpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no endpoint available")
    }
}

impl std::error::Error for NoEndpoints {}

/// What `/endpoints` shows about one endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointStatus {
    /// The endpoint's address.
    pub addr: SocketAddr,
    /// Requests in flight (until their response body ends).
    pub in_flight: u64,
    /// The balancer's load estimate, when there is a balancer.
    pub load: Option<f64>,
    /// The breaker's state (`closed`, `open`, `half_open`), when there is a breaker.
    pub breaker: Option<&'static str>,
}

/// The live state of an upstream's endpoints, as the forwarding stack knows it.
pub trait EndpointsView: Send + Sync + 'static {
    /// Every current endpoint.
    fn endpoints(&self) -> Vec<EndpointStatus>;
}

/// One configured upstream, ready to forward to.
#[derive(Clone)]
pub struct Upstream {
    /// Its name in the configuration.
    pub name: Arc<str>,
    /// The forwarding service.
    pub service: UpstreamService,
    /// Its endpoints, for the admin listener.
    pub view: Arc<dyn EndpointsView>,
}

/// Builds the forwarding service of upstream `name` from its configuration.
///
/// Must be called inside a tokio runtime. Fails when the configuration asks for something this
/// build cannot do (a discovery source that is not wired yet), naming the field.
pub fn build(name: &str, config: &UpstreamConfig) -> Result<Upstream, BoxError> {
    let source = discovery(name, &config.discovery)?;
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(config.timeouts.total.0));
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new());
    let version = match config.http_version {
        HttpVersion::Http1 => Version::HTTP_11,
        HttpVersion::Http2 => {
            builder.http2_only(true);
            Version::HTTP_2
        }
    };
    let client = builder.build(http);

    let labels_name: Arc<str> = Arc::from(name);
    let shared = Arc::new(Shared {
        name: labels_name.clone(),
        endpoints: ArcSwap::from_pointee(Vec::new()),
        endpoint_count: metrics::gauge!("meshwork_sidecar_endpoints", "upstream" => name.to_owned()),
        discovery_errors: metrics::counter!(
            "meshwork_sidecar_discovery_errors_total",
            "upstream" => name.to_owned()
        ),
        next: AtomicUsize::new(0),
        client,
        version,
    });
    match source {
        // A static list is applied before the listener opens: ready from the first request.
        Source::Static(addrs) => shared.apply(Update::Reset(
            addrs.into_iter().map(Endpoint::new).collect(),
        )),
        Source::Stream(stream) => {
            tokio::spawn(drive(Arc::downgrade(&shared), stream));
        }
    }

    let total = DeadlineLayer::new(config.timeouts.total.0)?;
    let per_try = config
        .timeouts
        .per_try
        .map(|d| TimeoutLayer::new(d.0))
        .transpose()?;
    let service = ServiceBuilder::new()
        .layer(total)
        .option_layer(per_try)
        .layer(PropagateDeadlineLayer::new())
        .service(RoundRobin {
            shared: shared.clone(),
        });
    Ok(Upstream {
        name: labels_name,
        service: BoxCloneSyncService::new(service),
        view: shared,
    })
}

/// Per-endpoint state and metric handles, created once per endpoint.
struct EndpointState {
    addr: SocketAddr,
    authority: http::uri::Authority,
    in_flight: AtomicU64,
    in_flight_gauge: Gauge,
    by_class: [Counter; 4],
    latency: Histogram,
}

impl EndpointState {
    fn new(upstream: &str, addr: SocketAddr) -> Self {
        let labels = |class: &'static str| {
            [
                ("upstream", upstream.to_owned()),
                ("endpoint", addr.to_string()),
                ("class", class.to_owned()),
            ]
        };
        let ep = [
            ("upstream", upstream.to_owned()),
            ("endpoint", addr.to_string()),
        ];
        Self {
            addr,
            authority: addr
                .to_string()
                .parse()
                .expect("a socket address is an authority"),
            in_flight: AtomicU64::new(0),
            in_flight_gauge: metrics::gauge!("meshwork_sidecar_endpoint_in_flight", &ep),
            by_class: [
                metrics::counter!("meshwork_sidecar_requests_total", &labels("success")),
                metrics::counter!("meshwork_sidecar_requests_total", &labels("retryable")),
                metrics::counter!("meshwork_sidecar_requests_total", &labels("non_retryable")),
                metrics::counter!("meshwork_sidecar_requests_total", &labels("ignorable")),
            ],
            latency: metrics::histogram!("meshwork_sidecar_request_duration_seconds", &ep),
        }
    }

    fn record(&self, class: Class) {
        let i = match class {
            Class::Success => 0,
            Class::Retryable => 1,
            Class::NonRetryable => 2,
            Class::Ignorable => 3,
        };
        self.by_class[i].increment(1);
    }
}

/// Counts a request in flight until dropped (with the response body, or the failed future).
struct InFlight(Arc<EndpointState>);

impl InFlight {
    fn start(ep: Arc<EndpointState>) -> Self {
        ep.in_flight.fetch_add(1, Ordering::Relaxed);
        ep.in_flight_gauge.increment(1.0);
        Self(ep)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.in_flight_gauge.decrement(1.0);
    }
}

struct Shared {
    name: Arc<str>,
    endpoints: ArcSwap<Vec<Arc<EndpointState>>>,
    endpoint_count: Gauge,
    discovery_errors: Counter,
    next: AtomicUsize,
    client: Client<HttpConnector, ProxyBody>,
    version: Version,
}

impl Shared {
    /// Applies a discovery update. Endpoints that stay keep their state (in-flight count, metric
    /// handles); the set is swapped atomically, so requests never see a half-applied update.
    fn apply(&self, update: Update) {
        let current = self.endpoints.load_full();
        let mut next: Vec<Arc<EndpointState>> = match &update {
            Update::Reset(list) => {
                let mut addrs: Vec<SocketAddr> = list.iter().map(Endpoint::addr).collect();
                addrs.sort();
                addrs.dedup();
                addrs
                    .into_iter()
                    .map(|addr| {
                        current
                            .iter()
                            .find(|ep| ep.addr == addr)
                            .cloned()
                            .unwrap_or_else(|| Arc::new(EndpointState::new(&self.name, addr)))
                    })
                    .collect()
            }
            Update::Insert(ep) => {
                let mut v = (*current).clone();
                if !v.iter().any(|e| e.addr == ep.addr()) {
                    v.push(Arc::new(EndpointState::new(&self.name, ep.addr())));
                }
                v
            }
            Update::Remove(addr) => current
                .iter()
                .filter(|e| e.addr != *addr)
                .cloned()
                .collect(),
        };
        next.sort_by_key(|e| e.addr);
        for ep in next
            .iter()
            .filter(|e| !current.iter().any(|c| c.addr == e.addr))
        {
            tracing::info!(upstream = %self.name, endpoint = %ep.addr, "endpoint added");
        }
        for ep in current
            .iter()
            .filter(|c| !next.iter().any(|e| e.addr == c.addr))
        {
            tracing::info!(upstream = %self.name, endpoint = %ep.addr, "endpoint removed");
        }
        self.endpoint_count.set(next.len() as f64);
        self.endpoints.store(Arc::new(next));
    }
}

/// Where an upstream's endpoints come from, once built.
enum Source {
    /// A fixed list.
    Static(Vec<SocketAddr>),
    /// A discovery stream, driven in the background.
    #[cfg_attr(not(feature = "dns"), allow(dead_code))]
    Stream(BoxDiscover),
}

/// The discovery source of upstream `name`. Sources the library does not provide yet fail here,
/// naming the field.
fn discovery(name: &str, config: &Discovery) -> Result<Source, BoxError> {
    match config {
        Discovery::Static { endpoints } => Ok(Source::Static(endpoints.clone())),
        #[cfg(feature = "dns")]
        Discovery::Dns {
            name: host,
            port,
            refresh,
        } => Ok(Source::Stream(dns(host.clone(), *port, refresh.0))),
        other => {
            let kind = match other {
                Discovery::Dns { .. } => "dns",
                Discovery::File { .. } => "file",
                _ => "etcd",
            };
            Err(format!(
                "upstreams.{name}.discovery.kind: `{kind}` discovery is validated but not wired \
                 into the sidecar yet; use `static`"
            )
            .into())
        }
    }
}

/// Resolves `host` with the system resolver now and every `refresh`, as `Reset` updates. A failed
/// or empty answer is an error item: the last good set stays.
#[cfg(feature = "dns")]
fn dns(host: String, port: u16, refresh: std::time::Duration) -> BoxDiscover {
    Box::pin(futures_util::stream::unfold(true, move |first| {
        let host = host.clone();
        async move {
            if !first {
                tokio::time::sleep(refresh).await;
            }
            let item = match tokio::net::lookup_host((host.as_str(), port)).await {
                Ok(addrs) => {
                    let list: Vec<Endpoint> = addrs.map(Endpoint::new).collect();
                    if list.is_empty() {
                        Err(format!("{host} resolved to no address").into())
                    } else {
                        Ok(Update::Reset(list))
                    }
                }
                Err(e) => Err(BoxError::from(e)),
            };
            Some((item, false))
        }
    }))
}

/// Applies a discovery stream's updates until the stream ends or the upstream is dropped.
async fn drive(shared: Weak<Shared>, mut source: BoxDiscover) {
    while let Some(item) = source.next().await {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        match item {
            Ok(update) => shared.apply(update),
            Err(e) => {
                shared.discovery_errors.increment(1);
                tracing::warn!(upstream = %shared.name, error = %e, "discovery failed; keeping the last good endpoints");
            }
        }
    }
}

impl EndpointsView for Shared {
    fn endpoints(&self) -> Vec<EndpointStatus> {
        self.endpoints
            .load()
            .iter()
            .map(|ep| EndpointStatus {
                addr: ep.addr,
                in_flight: ep.in_flight.load(Ordering::Relaxed),
                load: None,
                breaker: None,
            })
            .collect()
    }
}

/// Round robin over the current endpoint snapshot; the stand-in for the P2C balancer.
#[derive(Clone)]
struct RoundRobin {
    shared: Arc<Shared>,
}

impl Service<Request<ProxyBody>> for RoundRobin {
    type Response = Response<ProxyBody>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<ProxyBody>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // The pooled client is always ready; an empty endpoint set fails the call fast.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<ProxyBody>) -> Self::Future {
        let snapshot = self.shared.endpoints.load();
        if snapshot.is_empty() {
            return Box::pin(async { Err(NoEndpoints.into()) });
        }
        let i = self.shared.next.fetch_add(1, Ordering::Relaxed) % snapshot.len();
        let ep = snapshot[i].clone();

        let mut parts = std::mem::take(req.uri_mut()).into_parts();
        parts.scheme = Some(http::uri::Scheme::HTTP);
        parts.authority = Some(ep.authority.clone());
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        *req.uri_mut() = match Uri::from_parts(parts) {
            Ok(uri) => uri,
            Err(e) => return Box::pin(async move { Err(e.into()) }),
        };
        *req.version_mut() = self.shared.version;

        let guard = InFlight::start(ep.clone());
        let start = tokio::time::Instant::now();
        let fut = self.shared.client.request(req);
        Box::pin(async move {
            let result = fut.await.map_err(BoxError::from);
            ep.latency.record(start.elapsed().as_secs_f64());
            let class = HttpClassify::new().classify(result.as_ref()).class();
            ep.record(class);
            let res = result?;
            Ok(res.map(|body| {
                body.map_err(BoxError::from)
                    .map_frame(move |frame| {
                        let _keep = &guard;
                        frame
                    })
                    .boxed()
            }))
        })
    }
}
