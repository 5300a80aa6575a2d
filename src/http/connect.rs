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
///     .connect_timeout(Duration::from_millis(500))?;
/// assert_eq!(config.get_version(), HttpVersion::Http2);
/// assert_eq!(ConnectConfig::new().connect_timeout(Duration::ZERO).unwrap_err().field(), "connect_timeout");
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
    pub const fn version(mut self, version: HttpVersion) -> Self {
        self.version = version;
        self
    }

    /// Sets the connect timeout (non-zero).
    pub const fn connect_timeout(mut self, timeout: Duration) -> Result<Self, ConfigError> {
        match crate::error::non_zero("connect_timeout", timeout) {
            Ok(t) => {
                self.connect_timeout = t;
                Ok(self)
            }
            Err(e) => Err(e),
        }
    }

    /// Sets how long an idle pooled connection is kept (non-zero).
    pub const fn pool_idle_timeout(mut self, timeout: Duration) -> Result<Self, ConfigError> {
        match crate::error::non_zero("pool_idle_timeout", timeout) {
            Ok(t) => {
                self.pool_idle_timeout = t;
                Ok(self)
            }
            Err(e) => Err(e),
        }
    }

    /// Sets how many idle connections are kept per endpoint (HTTP/1.1).
    pub const fn max_idle_per_endpoint(mut self, max: usize) -> Self {
        self.max_idle_per_endpoint = max;
        self
    }

    /// Sets `TCP_NODELAY`.
    pub const fn nodelay(mut self, yes: bool) -> Self {
        self.nodelay = yes;
        self
    }

    /// The HTTP version.
    pub const fn get_version(&self) -> HttpVersion {
        self.version
    }

    /// The connect timeout.
    pub const fn get_connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Builds the connection service for one endpoint: its own connection pool.
    pub fn endpoint<B>(&self, addr: SocketAddr) -> HttpEndpoint<B>
    where
        B: http_body::Body + Send + 'static + Unpin,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(self.connect_timeout));
        connector.set_nodelay(self.nodelay);
        connector.enforce_http(true);
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
            client: builder.build(connector),
            authority,
        }
    }
}

/// The connection to one endpoint: a hyper-util pooled client that sends every request to that
/// endpoint's address.
///
/// The request keeps its path and query; its scheme and authority are replaced by the endpoint's.
/// The logical destination is kept in the `Host` header: a request for `http://users/list` goes to
/// `http://10.0.0.7:8080/list` with `Host: users` (an existing `Host` header is left as it is).
/// Errors are boxed; hyper-util's connect errors classify as *unsent* (see
/// [`classify_error`](crate::classify::classify_error)).
#[derive(Debug)]
pub struct HttpEndpoint<B> {
    client: Client<HttpConnector, B>,
    authority: Authority,
}

impl<B> Clone for HttpEndpoint<B> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            authority: self.authority.clone(),
        }
    }
}

impl<B> HttpEndpoint<B> {
    fn rewrite(&self, req: &mut Request<B>) {
        // Take the URI out rather than clone it: it is rebuilt below from its own parts.
        let uri = std::mem::take(req.uri_mut());
        if !req.headers().contains_key(HOST)
            && let Some(host) = uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
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
        self.rewrite(&mut req);
        EndpointFuture {
            inner: self.client.request(req),
        }
    }
}

pin_project! {
    /// The response future of [`HttpEndpoint`].
    #[derive(Debug)]
    pub struct EndpointFuture {
        #[pin]
        inner: HyperFuture,
    }
}

impl Future for EndpointFuture {
    type Output = Result<Response<Incoming>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx).map_err(Into::into)
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
