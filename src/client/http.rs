use std::task::{Context, Poll};

use bytes::Bytes;
use futures_core::Stream;
use http::{Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use tower_layer::Layer;
use tower_service::Service;

use super::{Client, ClientBuilder, EndpointInfo};
use crate::classify::HttpClassify;
use crate::discover::{Endpoint, Update};
use crate::http::{
    ConnectConfig, DEFAULT_REPLAY_LIMIT, FirstFrame, FirstFrameBody, FirstFrameLayer, HttpEndpoint,
    HttpReplay, PropagateDeadline, PropagateDeadlineLayer, ReplayBody,
};
use crate::{BoxError, ConfigError};

/// The connection service of one endpoint: deadline header, time to first body frame, hyper pool.
pub type HttpConnection<B> = PropagateDeadline<FirstFrame<HttpEndpoint<ReplayBody<B>>>>;

/// What an [`HttpClient`] answers with: the response, its body streaming (the first frame already
/// received).
pub type HttpResponse = Response<FirstFrameBody<Incoming>>;

/// Builds an [`HttpClient`]: the [`ClientBuilder`] stack with HTTP classification, idempotency-aware
/// retries and requeues, body replay, deadline propagation, and one hyper-util connection pool per
/// endpoint.
///
/// ```
/// use std::time::Duration;
/// use meshwork::client::{ClientBuilder, HttpClientBuilder};
/// use meshwork::http::{ConnectConfig, HttpVersion};
///
/// let builder = HttpClientBuilder::with_stack(
///     ClientBuilder::new().per_try_timeout(Duration::from_millis(500)),
/// )
/// .connect(ConnectConfig::new().version(HttpVersion::Http2))
/// .replay_limit(128 * 1024);
/// assert_eq!(builder.get_replay_limit(), 128 * 1024);
/// ```
#[derive(Clone, Debug)]
pub struct HttpClientBuilder {
    stack: ClientBuilder<HttpClassify, HttpReplay>,
    connect: ConnectConfig,
    replay_limit: usize,
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::ClientTls>,
}

impl Default for HttpClientBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClientBuilder {
    /// Every default (see the [module docs](super)).
    #[must_use]
    pub fn new() -> Self {
        Self::with_stack(ClientBuilder::new())
    }

    /// Starts from a configured generic stack; the HTTP classifier and replay are added.
    #[must_use]
    pub fn with_stack(stack: ClientBuilder) -> Self {
        Self {
            stack: stack
                .classify(HttpClassify::new())
                .replay(HttpReplay::new()),
            connect: ConnectConfig::new(),
            replay_limit: DEFAULT_REPLAY_LIMIT,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Sets the HTTP classifier (for example to retry every 5xx).
    #[must_use]
    pub fn classify(mut self, classify: HttpClassify) -> Self {
        self.stack = self.stack.classify(classify);
        self
    }

    /// How to connect to each endpoint.
    #[must_use]
    pub fn connect(mut self, connect: ConnectConfig) -> Self {
        self.connect = connect;
        self
    }

    /// The largest request body kept for replay (default 64 KiB); a larger body is sent once and
    /// never retried.
    #[must_use]
    pub fn replay_limit(mut self, limit: usize) -> Self {
        self.replay_limit = limit;
        self
    }

    /// Connects to every endpoint over TLS (feature `tls`): `tls`'s trust bundle, client
    /// certificate (mutual TLS) and expected server identity, ALPN after the connect config's
    /// HTTP version. `https` URIs are refused without it. See [`crate::tls`].
    #[cfg(feature = "tls")]
    #[must_use]
    pub fn tls(mut self, tls: crate::tls::ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The TLS settings, if connections are TLS (feature `tls`).
    #[cfg(feature = "tls")]
    #[must_use]
    pub fn get_tls(&self) -> Option<&crate::tls::ClientTls> {
        self.tls.as_ref()
    }

    /// The body replay limit.
    #[must_use]
    pub fn get_replay_limit(&self) -> usize {
        self.replay_limit
    }

    /// The connection settings.
    #[must_use]
    pub fn get_connect(&self) -> &ConnectConfig {
        &self.connect
    }

    /// The generic stack's settings.
    #[must_use]
    pub fn get_stack(&self) -> &ClientBuilder<HttpClassify, HttpReplay> {
        &self.stack
    }

    /// Builds the client over a discovery source of addresses, for requests with a
    /// `Full<Bytes>` body (the [`HttpClient`] default). Must run within a tokio runtime.
    ///
    /// ```
    /// use meshwork::client::HttpClientBuilder;
    /// use meshwork::discover::{Endpoint, Static};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), meshwork::BoxError> {
    /// let client = HttpClientBuilder::new()
    ///     .build(Static::new([Endpoint::new("127.0.0.1:8080".parse()?)]))?;
    /// # let _ = client;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid setting: a `connect.*` field
    /// (see [`ConnectConfig::validate`](crate::http::ConnectConfig::validate)) or one of the stack's
    /// (see [`ClientBuilder::validate`](crate::client::ClientBuilder::validate)).
    pub fn build<D, E>(self, discover: D) -> Result<HttpClient, ConfigError>
    where
        D: Stream<Item = Result<Update, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.build_with_body(discover)
    }

    /// Builds the client for requests with another body type `B` (for example a streaming body):
    /// `.build_with_body::<MyBody, _, _>(discover)`. Must run within a tokio runtime.
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build): a [`ConfigError`] naming a `connect.*` field or one of the stack's.
    pub fn build_with_body<B, D, E>(self, discover: D) -> Result<HttpClient<B>, ConfigError>
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
        D: Stream<Item = Result<Update, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.connect.validate().map_err(|e| e.within("connect"))?;
        let connect = self.connect;
        #[cfg(feature = "tls")]
        let tls = self.tls;
        let client = self.stack.build(discover, move |ep: &Endpoint| {
            #[cfg(feature = "tls")]
            let endpoint = match &tls {
                Some(tls) => connect.tls_endpoint::<ReplayBody<B>>(ep.addr(), tls),
                None => connect.endpoint::<ReplayBody<B>>(ep.addr()),
            };
            #[cfg(not(feature = "tls"))]
            let endpoint = connect.endpoint::<ReplayBody<B>>(ep.addr());
            PropagateDeadlineLayer::new().layer(FirstFrameLayer::new().layer(endpoint))
        })?;
        Ok(HttpClient {
            client,
            replay_limit: self.replay_limit,
        })
    }
}

/// The meshwork HTTP client: a `tower::Service<http::Request<B>>` over the whole stack, with a
/// short API for the common calls.
///
/// The request's URI names the logical service (`http://users/list`, or just `/list` with a `Host`
/// header); the balancer picks the endpoint, and the request goes to its address with the `Host`
/// kept. Cloning is cheap; clones share endpoints, loads, breakers and the retry budget.
///
/// ```no_run
/// use meshwork::client::HttpClientBuilder;
/// use meshwork::discover::{Endpoint, Static};
///
/// # async fn run() -> Result<(), meshwork::BoxError> {
/// let users = HttpClientBuilder::new()
///     .build(Static::new(vec![Endpoint::new("127.0.0.1:8080".parse()?)]))?;
/// let res = users.get("http://users/list".parse()?).await?;
/// println!("{}", res.status());
/// # Ok(())
/// # }
/// ```
pub struct HttpClient<B = Full<Bytes>> {
    client: Client<HttpConnection<B>, HttpClassify, HttpReplay>,
    replay_limit: usize,
}

impl<B> Clone for HttpClient<B>
where
    Client<HttpConnection<B>, HttpClassify, HttpReplay>: Clone,
{
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            replay_limit: self.replay_limit,
        }
    }
}

impl<B> std::fmt::Debug for HttpClient<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("client", &self.client)
            .field("replay_limit", &self.replay_limit)
            .finish()
    }
}

impl<B> Service<Request<B>> for HttpClient<B>
where
    B: http_body::Body + Unpin,
    Client<HttpConnection<B>, HttpClassify, HttpReplay>:
        Service<Request<ReplayBody<B>>, Response = HttpResponse, Error = BoxError>,
{
    type Response = HttpResponse;
    type Error = BoxError;
    type Future = <Client<HttpConnection<B>, HttpClassify, HttpReplay> as Service<
        Request<ReplayBody<B>>,
    >>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.client.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let limit = self.replay_limit;
        self.client
            .call(req.map(|body| ReplayBody::with_limit(body, limit)))
    }
}

impl<B> HttpClient<B>
where
    B: http_body::Body + Unpin,
    Self: Service<Request<B>, Response = HttpResponse, Error = BoxError> + Clone,
{
    /// Sends one request through the stack.
    ///
    /// # Errors
    ///
    /// The stack's error, boxed: for example [`DeadlineExceeded`](crate::timeout::DeadlineExceeded)
    /// or [`Elapsed`](crate::timeout::Elapsed) when the total or per-try timeout passes, [`NoEndpoints`](crate::balance::NoEndpoints) when no endpoint is available, or the
    /// transport's error after retries are spent. Walk it with [`is_caused_by`](crate::is_caused_by).
    pub async fn request(&self, req: Request<B>) -> Result<HttpResponse, BoxError> {
        let mut svc = self.clone();
        std::future::poll_fn(|cx| svc.poll_ready(cx)).await?;
        svc.call(req).await
    }

    /// `GET uri`.
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request); also when `uri` cannot make a valid request (an
    /// [`http::Error`](::http::Error)).
    pub async fn get(&self, uri: Uri) -> Result<HttpResponse, BoxError>
    where
        B: Default,
    {
        let req = Request::get(uri).body(B::default())?;
        self.request(req).await
    }

    /// `POST uri` with `body`.
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request); also when `uri` cannot make a valid request (an
    /// [`http::Error`](::http::Error)).
    pub async fn post(&self, uri: Uri, body: impl Into<B>) -> Result<HttpResponse, BoxError> {
        let req = Request::post(uri).body(body.into())?;
        self.request(req).await
    }
}

impl<B> HttpClient<B> {
    /// The endpoints, with load and breaker state (see [`Client::endpoints`]).
    pub fn endpoints(&self) -> Vec<EndpointInfo> {
        self.client.endpoints()
    }

    /// The retry budget, when retries are on.
    pub fn retry_budget(&self) -> Option<&dyn crate::retry::Budget> {
        self.client.retry_budget()
    }
}
