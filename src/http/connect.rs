use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::{Authority, Scheme, Uri};
use http::{HeaderValue, Request, Response, header::HOST};
use hyper::body::Incoming;
use hyper_util::client::legacy::{Client, ResponseFuture as HyperFuture, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::{BoxError, ConfigError};

/// The transport under hyper: TCP, and with the `tls` feature TCP then TLS when configured.
#[cfg(not(feature = "tls"))]
type Connector = HttpConnector;
#[cfg(feature = "tls")]
type Connector = crate::tls::connect::Connector;

/// An `https` request to an endpoint that has no TLS configured: it is refused rather than sent in
/// cleartext.
///
/// TLS needs the `tls` feature and a [`ClientTls`](crate::tls::ClientTls) on the client
/// ([`HttpClientBuilder::tls`](crate::client::HttpClientBuilder::tls)). Classified as ignorable
/// (a mistake of the caller, not a failure of the endpoint) and never retried.
///
/// ```
/// use meshwork::http::TlsNotConfigured;
///
/// assert!(TlsNotConfigured::new().to_string().contains("cleartext"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsNotConfigured(());

impl TlsNotConfigured {
    /// The error.
    #[must_use]
    pub const fn new() -> Self {
        Self(())
    }
}

impl std::fmt::Display for TlsNotConfigured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "`https` URI but this client has no TLS configured (feature `tls`, \
             `HttpClientBuilder::tls`): refusing to send it in cleartext",
        )
    }
}

impl std::error::Error for TlsNotConfigured {}

/// Which HTTP version to speak to an endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum HttpVersion {
    /// HTTP/1.1, with a pool of keep-alive connections per endpoint.
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge (h2c): one multiplexed connection per endpoint.
    Http2,
}

/// How the HTTP client connects to each endpoint.
///
/// | setting | default | why |
/// |---|---|---|
/// | `version` | HTTP/1.1 | what every server speaks |
/// | `connect_timeout` | 1 s | Linkerd's default; a try's own timeout bounds the rest |
/// | `pool_idle_timeout` | 90 s | hyper-util's default |
/// | `max_idle_per_endpoint` | 64 | bounds idle sockets per endpoint |
/// | `nodelay` | on | request/response traffic: no Nagle delay |
///
/// ```
/// use std::time::Duration;
/// use meshwork::http::{ConnectConfig, HttpVersion};
///
/// let config = ConnectConfig::new()
///     .version(HttpVersion::Http2)
///     .connect_timeout(Duration::from_millis(500));
/// assert_eq!(config.get_version(), HttpVersion::Http2);
/// let zero = ConnectConfig::new().connect_timeout(Duration::ZERO);
/// assert_eq!(zero.validate().unwrap_err().field(), "connect_timeout");
/// # Ok::<(), meshwork::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct ConnectConfig {
    version: HttpVersion,
    connect_timeout: Duration,
    pool_idle_timeout: Duration,
    max_idle_per_endpoint: usize,
    nodelay: bool,
}

impl Default for ConnectConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl ConnectConfig {
    /// The defaults in the table above.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            version: HttpVersion::Http1,
            connect_timeout: Duration::from_secs(1),
            pool_idle_timeout: Duration::from_secs(90),
            max_idle_per_endpoint: 64,
            nodelay: true,
        }
    }

    /// Sets the HTTP version.
    #[must_use]
    pub const fn version(mut self, version: HttpVersion) -> Self {
        self.version = version;
        self
    }

    /// Sets the connect timeout (non-zero: checked by [`validate`](Self::validate)).
    #[must_use]
    pub const fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets how long an idle pooled connection is kept (non-zero: checked by
    /// [`validate`](Self::validate)).
    #[must_use]
    pub const fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.pool_idle_timeout = timeout;
        self
    }

    /// Checks the settings: `connect_timeout` and `pool_idle_timeout` must be non-zero.
    /// [`HttpClientBuilder::build`](crate::client::HttpClientBuilder::build) calls it (the field
    /// path is then `connect.connect_timeout`); call it yourself before
    /// [`endpoint`](Self::endpoint) when you use the config alone.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `connect_timeout` or `pool_idle_timeout` when that timeout is zero.
    pub fn validate(&self) -> Result<(), ConfigError> {
        crate::error::non_zero("connect_timeout", self.connect_timeout)?;
        crate::error::non_zero("pool_idle_timeout", self.pool_idle_timeout)?;
        Ok(())
    }

    /// Sets how many idle connections are kept per endpoint (HTTP/1.1).
    #[must_use]
    pub const fn max_idle_per_endpoint(mut self, max: usize) -> Self {
        self.max_idle_per_endpoint = max;
        self
    }

    /// Sets `TCP_NODELAY`.
    #[must_use]
    pub const fn nodelay(mut self, yes: bool) -> Self {
        self.nodelay = yes;
        self
    }

    /// The HTTP version.
    #[must_use]
    pub const fn get_version(&self) -> HttpVersion {
        self.version
    }

    /// The connect timeout.
    #[must_use]
    pub const fn get_connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Builds the connection service for one endpoint: its own connection pool, plain TCP. An
    /// `https` request through it fails with [`TlsNotConfigured`].
    #[must_use]
    pub fn endpoint<B>(&self, addr: SocketAddr) -> HttpEndpoint<B>
    where
        B: http_body::Body + Send + 'static + Unpin,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        self.build_endpoint(
            addr,
            |http| {
                #[cfg(feature = "tls")]
                let http = Connector::new(http, None);
                http
            },
            false,
        )
    }

    /// Builds the connection service for one endpoint over TLS (feature `tls`): every connection
    /// is TLS with `tls`'s trust bundle, client certificate and expected server identity, ALPN
    /// after [`version`](Self::version); the request's scheme does not matter.
    #[cfg(feature = "tls")]
    #[must_use]
    pub fn tls_endpoint<B>(&self, addr: SocketAddr, tls: &crate::tls::ClientTls) -> HttpEndpoint<B>
    where
        B: http_body::Body + Send + 'static + Unpin,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let h2 = self.version == HttpVersion::Http2;
        self.build_endpoint(
            addr,
            |http| Connector::new(http, Some((tls.clone(), addr, h2))),
            true,
        )
    }

    fn build_endpoint<B>(
        &self,
        addr: SocketAddr,
        connector: impl FnOnce(HttpConnector) -> Connector,
        tls: bool,
    ) -> HttpEndpoint<B>
    where
        B: http_body::Body + Send + 'static + Unpin,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(self.connect_timeout));
        http.set_nodelay(self.nodelay);
        http.enforce_http(true);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(self.pool_idle_timeout)
            .pool_max_idle_per_host(self.max_idle_per_endpoint)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_only(self.version == HttpVersion::Http2);
        let authority =
            Authority::try_from(addr.to_string()).expect("a socket address is a valid authority");
        HttpEndpoint {
            client: builder.build(connector(http)),
            authority,
            tls,
        }
    }
}

/// The connection to one endpoint: a hyper-util pooled client that sends every request to that
/// endpoint's address.
///
/// The request keeps its path and query; its scheme and authority are replaced by the endpoint's.
/// The logical destination is kept in the `Host` header: a request for `http://users/list` goes to
/// `http://10.0.0.7:8080/list` with `Host: users` (an existing `Host` header is left as it is).
/// User info (`user:pass@`) is never copied into `Host`. An `https` request fails with
/// [`TlsNotConfigured`] unless the endpoint was built with
/// [`tls_endpoint`](ConnectConfig::tls_endpoint): nothing meant for TLS is sent in cleartext.
/// Errors are boxed; hyper-util's connect errors classify as *unsent* (see
/// [`classify_error`](crate::classify::classify_error)).
#[derive(Debug)]
pub struct HttpEndpoint<B> {
    client: Client<Connector, B>,
    authority: Authority,
    tls: bool,
}

impl<B> Clone for HttpEndpoint<B> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            authority: self.authority.clone(),
            tls: self.tls,
        }
    }
}

impl<B> HttpEndpoint<B> {
    fn rewrite(&self, req: &mut Request<B>) {
        // Take the URI out rather than clone it: it is rebuilt below from its own parts.
        let uri = std::mem::take(req.uri_mut());
        if !req.headers().contains_key(HOST)
            && let Some(host) = uri.authority().and_then(host_without_userinfo)
        {
            req.headers_mut().insert(HOST, host);
        }
        let mut parts = uri.into_parts();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(self.authority.clone());
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        *req.uri_mut() = Uri::from_parts(parts).expect("scheme, authority and path are all set");
    }
}

/// The `Host` value of an authority: `host[:port]`, without any `user:pass@`.
fn host_without_userinfo(authority: &Authority) -> Option<HeaderValue> {
    let s = authority.as_str();
    let host_port = s.rsplit_once('@').map_or(s, |(_, hp)| hp);
    if host_port.is_empty() {
        return None;
    }
    HeaderValue::from_str(host_port).ok()
}

impl<B> Service<Request<B>> for HttpEndpoint<B>
where
    B: http_body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = EndpointFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // hyper-util's pool is always ready: it connects (or waits for a pooled connection) per call.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if !self.tls && req.uri().scheme() == Some(&Scheme::HTTPS) {
            return EndpointFuture {
                inner: None,
                refused: Some(TlsNotConfigured::new()),
            };
        }
        self.rewrite(&mut req);
        EndpointFuture {
            inner: Some(self.client.request(req)),
            refused: None,
        }
    }
}

pin_project! {
    /// The response future of [`HttpEndpoint`].
    #[derive(Debug)]
    pub struct EndpointFuture {
        #[pin]
        inner: Option<HyperFuture>,
        refused: Option<TlsNotConfigured>,
    }
}

impl Future for EndpointFuture {
    type Output = Result<Response<Incoming>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.as_pin_mut() {
            Some(inner) => inner.poll(cx).map_err(Into::into),
            None => Poll::Ready(Err(this.refused.take().unwrap_or_default().into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Empty;

    #[test]
    fn rewrites_to_the_endpoint_and_keeps_the_host() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _g = rt.enter();
        let ep: HttpEndpoint<Empty<bytes::Bytes>> =
            ConnectConfig::new().endpoint("127.0.0.1:9".parse().unwrap());
        let mut req = Request::get("http://users/list?x=1")
            .body(Empty::new())
            .unwrap();
        ep.rewrite(&mut req);
        assert_eq!(req.uri(), "http://127.0.0.1:9/list?x=1");
        assert_eq!(req.headers()[HOST], "users");

        let mut req = Request::get("/only/path").body(Empty::new()).unwrap();
        req.headers_mut()
            .insert(HOST, HeaderValue::from_static("svc.local"));
        ep.rewrite(&mut req);
        assert_eq!(req.uri(), "http://127.0.0.1:9/only/path");
        assert_eq!(req.headers()[HOST], "svc.local");
    }

    #[tokio::test]
    async fn regression_12_10_https_is_never_sent_in_cleartext() {
        use crate::classify::{Class, Classify, HttpClassify};
        // A listener that records whether anything at all arrives.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = tokio::spawn(async move {
            tokio::time::timeout(std::time::Duration::from_millis(300), listener.accept())
                .await
                .is_ok()
        });
        let mut ep: HttpEndpoint<Empty<bytes::Bytes>> = ConnectConfig::new().endpoint(addr);
        let req = Request::get("https://users/secret")
            .body(Empty::new())
            .unwrap();
        let err = ep.call(req).await.unwrap_err();
        assert!(err.is::<TlsNotConfigured>(), "{err:?}");
        let c = HttpClassify::new().classify(Err::<&Response<()>, _>(&err));
        assert_eq!(c.class(), Class::Ignorable, "not the endpoint's failure");
        assert!(!accepted.await.unwrap(), "nothing was sent to the endpoint");
    }

    #[test]
    fn regression_12_10_userinfo_is_stripped() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _g = rt.enter();
        let ep: HttpEndpoint<Empty<bytes::Bytes>> =
            ConnectConfig::new().endpoint("127.0.0.1:9".parse().unwrap());
        for (uri, host) in [
            ("http://user:pass@users:8080/list", "users:8080"),
            ("http://user@users/list", "users"),
            ("http://a:b@c@users/list", "users"),
        ] {
            let mut req = Request::get(uri).body(Empty::new()).unwrap();
            ep.rewrite(&mut req);
            assert_eq!(req.headers()[HOST], host, "{uri}");
            assert_eq!(req.uri(), "http://127.0.0.1:9/list", "{uri}");
            assert!(!format!("{:?}", req.headers()).contains("pass"));
        }
    }

    #[tokio::test]
    async fn refused_connection_is_an_unsent_failure() {
        use crate::classify::{Class, Classify, HttpClassify};
        // Bind then drop a listener: the port is closed.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut ep: HttpEndpoint<Empty<bytes::Bytes>> = ConnectConfig::new().endpoint(addr);
        let req = Request::get("http://svc/").body(Empty::new()).unwrap();
        let err = ep.call(req).await.unwrap_err();
        let c = HttpClassify::new().classify(Err::<&Response<()>, _>(&err));
        assert_eq!(c.class(), Class::Retryable);
        assert!(c.is_unsent(), "{err:?}");
    }
}
