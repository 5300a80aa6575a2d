//! The forwarding seam: one meshwork client stack per upstream, built by [`build`] from the
//! upstream's configuration.
//!
//! Everything the proxy knows about an upstream goes through two things:
//! - [`Upstream::service`], a `Service<Request<ProxyBody>, Response = Response<ProxyBody>, Error =
//!   BoxError>` that is cheap to clone (one clone per request);
//! - [`Upstream::view`], an [`EndpointsView`] the admin listener reads for `/endpoints` and `/ready`.
//!
//! The service is the library's client stack ([`meshwork::client`]), the same one a Rust service
//! gets from `HttpClientBuilder`:
//!
//! ```text
//!  deadline (timeouts.total; a shorter meshwork-timeout-ms / grpc-timeout from the caller wins)
//!  retry    (retry.*: budget, jittered backoff, body replay up to replay_limit_bytes)
//!  P2C      (balancer.*: peak EWMA or least in flight, fed by discovery in the background)
//!  ├─ per endpoint
//!  │ breaker        (breaker.*: gate mode, an open endpoint is skipped)
//!  │ per-try timeout (timeouts.per_try)
//!  │ Instrument      (the sidecar's per-endpoint metrics, below)
//!  │ deadline header (the time left when this try is sent)
//!  │ first frame     (the try ends at the first body frame: the load sees real latency)
//!  │ hyper-util pool (http_version)
//! ```
//!
//! The stack is composed with [`ClientBuilder`] rather than `HttpClientBuilder` for one reason:
//! the sidecar puts its own [`Instrument`] layer at the bottom of each endpoint, so that
//! `/metrics` counts every try per endpoint by outcome class, with its latency, and `/endpoints`
//! shows in-flight requests until their response body ends. Otherwise it is exactly what
//! `HttpClient` builds: HTTP classification ([`HttpClassify`]), idempotency-aware replay
//! ([`HttpReplay`]) and request bodies wrapped in a bounded [`ReplayBody`].

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use meshwork::backoff::Backoff;
use meshwork::balance::load::{LeastInFlight, PeakEwma};
use meshwork::breaker::{BreakerConfig, State};
use meshwork::classify::{Classify, HttpClassify};
use meshwork::client::{Client, ClientBuilder};
use meshwork::discover::{BoxDiscover, Endpoint, Static};
use meshwork::http::{
    ConnectConfig, FirstFrame, FirstFrameLayer, HttpEndpoint, HttpReplay, PropagateDeadline,
    PropagateDeadlineLayer, ReplayBody,
};
use meshwork::retry::{RetryBudget, RetryPolicy};
use meshwork::telemetry::MetricLabels;
use meshwork::{BoxError, ConfigError, balance};
use pin_project_lite::pin_project;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt};

use crate::access::Tries;
use crate::config::{Bound, Discovery, FieldError, HttpVersion, LoadMetric, UpstreamConfig};
use crate::limits::{Pending, UpstreamLimits};
use crate::live_metrics::{EndpointMetrics, Live, Registry};

/// The body type on both sides of the proxy: streamed, never buffered whole.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// The forwarding service of one upstream.
pub type UpstreamService = BoxCloneSyncService<Request<ProxyBody>, Response<ProxyBody>, BoxError>;

/// The request body as the stack sees it: the proxy's body, kept for replay up to the limit.
type TryBody = ReplayBody<ProxyBody>;

/// The connection service of one endpoint.
type Connection = Instrument<PropagateDeadline<FirstFrame<HttpEndpoint<TryBody>>>>;

/// The client stack of one upstream.
type UpstreamClient = Client<Connection, HttpClassify, HttpReplay>;

/// What `/endpoints` shows about one endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointStatus {
    /// The endpoint's address.
    pub addr: SocketAddr,
    /// Requests in flight (until their response body ends).
    pub in_flight: u64,
    /// The balancer's load estimate (the cost P2C compares).
    pub load: Option<f64>,
    /// The breaker's state (`closed`, `open`, `half_open`, `forced_open`, `forced_closed`), when
    /// breakers are on.
    pub breaker: Option<&'static str>,
}

/// The live state of an upstream's endpoints, as the forwarding stack knows it.
pub trait EndpointsView: Send + Sync + 'static {
    /// Every current endpoint.
    fn endpoints(&self) -> Vec<EndpointStatus>;

    /// Every current endpoint with its live metrics, for `/metrics` (see `live_metrics`).
    fn live(&self) -> Vec<Live>;
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
    /// Its request limits.
    pub limits: Arc<UpstreamLimits>,
}

/// The library settings of one upstream, checked without starting anything (`--check` uses it).
pub struct Plan {
    stack: ClientBuilder<HttpClassify, HttpReplay>,
    connect: ConnectConfig,
    replay_limit: usize,
    version: Version,
}

/// Turns the library's `ConfigError` into a sidecar field error under `prefix`, renaming the
/// library's field to the configuration's where they differ.
fn field(
    prefix: String,
    rename: &'static [(&'static str, &'static str)],
) -> impl FnOnce(ConfigError) -> FieldError {
    move |e| {
        let name = rename
            .iter()
            .find(|(lib, _)| *lib == e.field())
            .map_or(e.field(), |(_, ours)| ours);
        FieldError::new(format!("{prefix}.{name}"), e.reason())
    }
}

/// The outcome classification of an upstream: the library's HTTP classification, with the
/// upstream's `count_429_as_failure`.
fn classify(config: &UpstreamConfig) -> HttpClassify {
    HttpClassify::new().count_429_as_failure(config.count_429_as_failure)
}

/// Builds the library configuration of upstream `name`: every value goes through the library's
/// own builders, so whatever they reject is reported with the configuration's field path.
pub fn plan(name: &str, config: &UpstreamConfig) -> Result<Plan, FieldError> {
    let p = format!("upstreams.{name}");
    let labels = MetricLabels::new().with("upstream", name.to_owned());

    let t = &config.timeouts;
    // No per-endpoint labels on the library's series (they would outlive removed endpoints): the
    // admin listener renders each current endpoint's breaker state itself (`live_metrics`).
    let mut stack = match t.total.get() {
        Some(total) => ClientBuilder::new().total_timeout(total),
        None => ClientBuilder::new().no_total_timeout(),
    };
    match t.per_try.map(Bound::get) {
        Some(Some(per_try)) => stack = stack.per_try_timeout(per_try),
        Some(None) => stack = stack.no_per_try_timeout(),
        None => {}
    }
    stack.validate().map_err(field(
        format!("{p}.timeouts"),
        &[("total_timeout", "total"), ("per_try_timeout", "per_try")],
    ))?;

    let b = &config.balancer;
    let load: balance::load::Load = match b.load {
        LoadMetric::PeakEwma => {
            let ewma = PeakEwma::default().with_decay(b.decay.0);
            ewma.validate()
                .map_err(field(format!("{p}.balancer"), &[]))?;
            ewma.into()
        }
        LoadMetric::LeastInFlight => LeastInFlight.into(),
    };
    stack = stack.balance(balance::Builder::new().load(load).max_wait(b.max_wait.0));

    let br = &config.breaker;
    stack = if br.enabled {
        let backoff = Backoff::equal_jitter(br.backoff_base.0, br.backoff_max.0).map_err(field(
            format!("{p}.breaker"),
            &[("base", "backoff_base"), ("max", "backoff_max")],
        ))?;
        let breaker = BreakerConfig::builder()
            .consecutive_failures(br.consecutive_failures)
            .success_rate(br.min_success_rate, br.window.0, br.min_requests)
            .backoff(backoff)
            .build()
            .map_err(field(format!("{p}.breaker"), &[]))?;
        stack.breaker(breaker)
    } else {
        stack.no_breaker()
    };

    let r = &config.retry;
    stack = if r.enabled {
        let budget = RetryBudget::builder()
            .retry_ratio(r.budget_percent / 100.0)
            .min_retries_per_sec(r.min_per_second)
            .ttl(r.budget_window.0)
            .build()
            .map_err(field(
                format!("{p}.retry"),
                &[
                    ("retry_ratio", "budget_percent"),
                    ("min_retries_per_sec", "min_per_second"),
                    ("ttl", "budget_window"),
                ],
            ))?;
        let backoff = Backoff::full_jitter(r.backoff_base.0, r.backoff_max.0).map_err(field(
            format!("{p}.retry"),
            &[("base", "backoff_base"), ("max", "backoff_max")],
        ))?;
        stack.retry(
            RetryPolicy::new()
                .max_retries(r.max_retries)
                .backoff(backoff)
                .budget(budget),
        )
    } else {
        stack.no_retries()
    };
    let stack = stack
        .labels(labels)
        .classify(classify(config))
        .replay(HttpReplay::new());

    let (connect, version) = match config.http_version {
        HttpVersion::Http1 => (
            ConnectConfig::new().version(meshwork::http::HttpVersion::Http1),
            Version::HTTP_11,
        ),
        HttpVersion::Http2 => (
            ConnectConfig::new().version(meshwork::http::HttpVersion::Http2),
            Version::HTTP_2,
        ),
    };
    let replay_limit = usize::try_from(r.replay_limit_bytes).unwrap_or(usize::MAX);
    Ok(Plan {
        stack,
        connect,
        replay_limit,
        version,
    })
}

/// Builds the forwarding service of upstream `name` from its configuration.
///
/// Must be called inside a tokio runtime: the balancer's discovery task is spawned here. Fails
/// when the configuration is invalid or its discovery source cannot start, naming the field.
///
/// `seed`: the seed of the stack's random choices (mixed with the upstream's name, so that two
/// upstreams do not make the same choices); `None` takes it from the OS.
pub async fn build(
    name: &str,
    config: &UpstreamConfig,
    seed: Option<u64>,
) -> Result<Upstream, BoxError> {
    let Plan {
        mut stack,
        connect,
        replay_limit,
        version,
    } = plan(name, config)?;
    if let Some(seed) = seed {
        // FNV-1a of the name, mixed into the seed.
        let mixed = name.bytes().fold(seed ^ 0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        stack = stack.seed(meshwork::rng::SeedSource::from_seed(mixed));
    }
    let source = discovery(name, &config.discovery).await?;
    let upstream: Arc<str> = Arc::from(name);
    let registry = Arc::new(Registry::default());
    let make_registry = registry.clone();
    let classifier = classify(config);
    let client: UpstreamClient = stack
        .build(source, move |ep: &Endpoint| {
            let connection = PropagateDeadlineLayer::new()
                .layer(FirstFrameLayer::new().layer(connect.endpoint::<TryBody>(ep.addr())));
            Instrument::new(
                connection,
                ep.addr(),
                make_registry.make(ep.addr()),
                classifier,
            )
        })
        .map_err(|e| format!("upstreams.{name}: {e}"))?;
    let view = Arc::new(View {
        client: client.clone(),
        upstream: upstream.clone(),
        registry,
    });
    let service = client.map_request(move |mut req: Request<ProxyBody>| {
        *req.version_mut() = version;
        req.map(|body| ReplayBody::with_limit(body, replay_limit))
    });
    Ok(Upstream {
        name: upstream,
        service: BoxCloneSyncService::new(service),
        view,
        limits: UpstreamLimits::new(name, config.limits.max_requests, config.limits.max_pending),
    })
}

/// The discovery source of upstream `name`.
async fn discovery(name: &str, config: &Discovery) -> Result<BoxDiscover, BoxError> {
    let p = || format!("upstreams.{name}.discovery");
    #[cfg_attr(
        not(any(
            feature = "dns",
            feature = "file",
            feature = "etcd",
            feature = "zookeeper"
        )),
        allow(unused_variables)
    )]
    let labels = || MetricLabels::new().with("upstream", name.to_owned());
    match config {
        Discovery::Static { endpoints } => Ok(Box::pin(Static::new(
            endpoints.iter().copied().map(Endpoint::new),
        ))),
        #[cfg(feature = "dns")]
        Discovery::Dns {
            name: host,
            port,
            refresh,
        } => {
            let dns = meshwork::discover::Dns::host(host.clone(), *port)
                .min_refresh(refresh.0)
                .max_refresh(refresh.0)
                .labels(labels())
                .build()
                .map_err(field(
                    p(),
                    &[("min_refresh", "refresh"), ("max_refresh", "refresh")],
                ))?;
            Ok(Box::pin(dns))
        }
        #[cfg(feature = "file")]
        Discovery::File { path } => {
            let file = meshwork::discover::WatchFile::builder(path.clone())
                .labels(labels())
                .build()
                .map_err(field(p(), &[]))?;
            Ok(Box::pin(file))
        }
        #[cfg(feature = "etcd")]
        Discovery::Etcd {
            endpoints,
            prefix,
            request_timeout,
            connect_timeout,
            keep_alive,
        } => {
            use meshwork::discover::etcd::EtcdDiscover;
            let source = EtcdDiscover::builder(prefix.clone())
                .map_err(field(p(), &[]))?
                .request_timeout(request_timeout.0)
                .labels(labels());
            // The connection is lazy: this fails only on a malformed URL, never because etcd is
            // down; the source then reports errors and retries with its backoff.
            let options = etcd_client::ConnectOptions::new()
                .with_connect_timeout(connect_timeout.0)
                .with_keep_alive(keep_alive.0, std::time::Duration::from_secs(3));
            let client = etcd_client::Client::connect(endpoints.clone(), Some(options))
                .await
                .map_err(|e| format!("{}.endpoints: cannot use {endpoints:?}: {e}", p()))?;
            Ok(Box::pin(source.build(client).map_err(field(p(), &[]))?))
        }
        #[cfg(feature = "zookeeper")]
        Discovery::Zookeeper {
            servers,
            path,
            format,
            endpoint_name,
            session_timeout,
            request_timeout,
        } => {
            use meshwork::discover::zookeeper::{Ensemble, Format, ZkDiscover};
            let format = match (format, endpoint_name) {
                (crate::config::ZkFormat::Nerve, _) => Format::Nerve,
                (crate::config::ZkFormat::Serverset, None) => Format::default(),
                (crate::config::ZkFormat::Serverset, Some(name)) => {
                    Format::server_set_endpoint(name.clone()).map_err(field(p(), &[]))?
                }
            };
            // Sessions are made when the source is first polled: ZooKeeper being down is no
            // error here; the source reports it and retries with its backoff.
            let ensemble = Ensemble::new(servers)
                .map_err(field(p(), &[]))?
                .session_timeout(session_timeout.0);
            let source = ZkDiscover::builder(path, format)
                .map_err(field(p(), &[]))?
                .request_timeout(request_timeout.0)
                .labels(labels())
                .build(ensemble)
                .map_err(field(
                    p(),
                    &[("ensemble.session_timeout", "session_timeout")],
                ))?;
            Ok(Box::pin(source))
        }
        #[allow(unreachable_patterns)]
        other => {
            let kind = match other {
                Discovery::Dns { .. } => "dns",
                Discovery::File { .. } => "file",
                Discovery::Zookeeper { .. } => "zookeeper",
                _ => "etcd",
            };
            Err(format!(
                "{}.kind: `{kind}` discovery needs the `{kind}` feature: rebuild with \
                 `--features {kind}`",
                p()
            )
            .into())
        }
    }
}

/// `/endpoints` and the per-endpoint part of `/metrics` from the balancer's own view: load,
/// breaker state, in-flight count, and the endpoint's live metrics.
struct View {
    client: UpstreamClient,
    upstream: Arc<str>,
    registry: Arc<Registry>,
}

impl EndpointsView for View {
    fn live(&self) -> Vec<Live> {
        let mut list: Vec<Live> = self
            .client
            .endpoints()
            .into_iter()
            .filter_map(|e| {
                let addr = e.endpoint?.addr();
                Some(Live {
                    upstream: self.upstream.clone(),
                    addr,
                    breaker: e.breaker.map(State::gauge_value),
                    metrics: self.registry.get(addr)?,
                })
            })
            .collect();
        list.sort_by_key(|l| l.addr);
        list
    }

    fn endpoints(&self) -> Vec<EndpointStatus> {
        let mut list: Vec<EndpointStatus> = self
            .client
            .endpoints()
            .into_iter()
            .filter_map(|e| {
                Some(EndpointStatus {
                    addr: e.endpoint?.addr(),
                    in_flight: e.in_flight,
                    load: Some(e.cost),
                    breaker: e.breaker.map(state_name),
                })
            })
            .collect();
        list.sort_by_key(|e| e.addr);
        list
    }
}

fn state_name(state: State) -> &'static str {
    match state {
        State::Closed => "closed",
        State::Open => "open",
        State::HalfOpen => "half_open",
        State::ForcedOpen => "forced_open",
        State::ForcedClosed => "forced_closed",
    }
}

/// Counts a request in flight until dropped (with the response body, or the failed future).
struct InFlight(Arc<EndpointMetrics>);

impl InFlight {
    fn start(m: Arc<EndpointMetrics>) -> Self {
        m.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(m)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The sidecar's per-endpoint, per-try metrics around an endpoint's connection: the outcome class
/// (by [`HttpClassify`]), the time to the first body frame, and the in-flight count until the
/// response body ends. The response body becomes a [`ProxyBody`].
#[derive(Clone)]
pub struct Instrument<S> {
    inner: S,
    addr: SocketAddr,
    metrics: Arc<EndpointMetrics>,
    classify: HttpClassify,
}

impl<S> Instrument<S> {
    fn new(
        inner: S,
        addr: SocketAddr,
        metrics: Arc<EndpointMetrics>,
        classify: HttpClassify,
    ) -> Self {
        Self {
            inner,
            addr,
            metrics,
            classify,
        }
    }
}

impl<S, ReqBody, B> Service<Request<ReqBody>> for Instrument<S>
where
    S: Service<Request<ReqBody>, Response = Response<B>, Error = BoxError>,
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ProxyBody>;
    type Error = BoxError;
    type Future = InstrumentFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // The request reached an endpoint: no longer pending (see `limits`).
        if let Some(pending) = req.extensions().get::<Pending>() {
            pending.release();
        }
        if let Some(tries) = req.extensions().get::<Tries>() {
            tries.record(self.addr);
        }
        InstrumentFuture {
            inner: self.inner.call(req),
            guard: Some(InFlight::start(self.metrics.clone())),
            start: tokio::time::Instant::now(),
            classify: self.classify,
        }
    }
}

pin_project! {
    /// The response future of [`Instrument`].
    pub struct InstrumentFuture<F> {
        #[pin]
        inner: F,
        guard: Option<InFlight>,
        start: tokio::time::Instant,
        classify: HttpClassify,
    }
}

impl<F, B> Future for InstrumentFuture<F>
where
    F: Future<Output = Result<Response<B>, BoxError>>,
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<ProxyBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        let guard = this.guard.take().expect("polled after completion");
        let m = &guard.0;
        m.observe(this.start.elapsed());
        m.record(this.classify.classify(result.as_ref()).class());
        Poll::Ready(result.map(|res| {
            res.map(|body| {
                body.map_err(Into::into)
                    .map_frame(move |frame| {
                        let _keep = &guard;
                        frame
                    })
                    .boxed()
            })
        }))
    }
}
