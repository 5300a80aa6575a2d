//! The sidecar's configuration: a TOML file (`--config FILE`) or the simple command line
//! (`--listen ADDR --upstream ADDR[,ADDR...]`), validated in full before anything starts.
//!
//! Every table rejects unknown fields, and every value is checked at start: a mistake fails with a
//! message naming the field path, for example
//! `upstreams.users.retry.budget_percent: must be between 0 and 100`.
//!
//! Durations are strings with a unit: `"250ms"`, `"2s"`, `"5m"`, `"1h"` (also `us`), at most 365
//! days. A value of the wrong type or form is reported with its path and position too:
//! `upstreams.users.timeouts.total: `5x` has an unknown unit (use us, ms, s, m or h) (line 9, column 38)`.
//!
//! ```toml
//! admin = "127.0.0.1:9990"          # admin listener (metrics, ready, live, endpoints)
//! drain_delay = "3s"                # after SIGTERM: /ready fails at once, requests are still served this long
//! shutdown_drain_timeout = "30s"    # then accepting stops; how long in-flight requests may finish
//! access_log = false                # one structured line per request on stderr
//! access_log_format = "logfmt"      # or "json"
//! # seed = 42                       # seeds P2C picks and jitter, for reproducible runs
//!
//! [listener]
//! address = "127.0.0.1:4140"
//! max_header_bytes = 65536          # a request head over this gets 431 (at least 8192)
//! max_headers = 100                 # more header fields than this gets 431
//! max_body_bytes = 10485760         # 413 on a larger Content-Length; a longer stream is cut off
//! header_read_timeout = "10s"       # a request head must be complete this long after its first byte
//! idle_timeout = "60s"              # a kept-alive connection idle this long after its last request is closed
//! max_connections = 10000           # beyond this, accepting waits (the kernel backlog holds them)
//! stream_idle_timeout = "5m"        # no body byte either way for this long ends the request on both sides
//! x_forwarded_for = "append"        # or "replace": a client's X-Forwarded-For/Forwarded are dropped unless it is trusted
//! trusted_peers = []                # client IPs whose forwarding headers "replace" keeps
//! h2_max_concurrent_streams = 100   # streams per HTTP/2 connection (a rapid-reset flood gets GOAWAY)
//!
//! [admin_limits]                    # the admin listener's own limits
//! header_read_timeout = "5s"
//! idle_timeout = "30s"
//! max_connections = 64
//!
//! [[routes]]                        # first match wins; a request that matches none is refused
//! host = "users.internal"           # optional: Host (or HTTP/2 :authority), port ignored
//! path_prefix = "/"                 # optional, default "/"
//! upstream = "users"
//! # headers = { x-canary = "1" }    # optional: exact header values the request must carry
//! # host_rewrite = "users.svc"      # optional: the Host sent to the upstream
//! # timeout = "2s"                  # optional: a shorter total timeout for this route
//!
//! [upstreams.users]
//! http_version = "http1"            # or "http2" (prior knowledge)
//! count_429_as_failure = false      # true: a 429 counts against the endpoint's breaker and load
//! discovery = { kind = "static", endpoints = ["127.0.0.1:8081", "127.0.0.1:8082"] }
//! # discovery = { kind = "dns", name = "users.internal", port = 8080, refresh = "30s" }   (feature dns)
//! # discovery = { kind = "file", path = "users.toml" }                                  (feature file)
//! # discovery = { kind = "etcd", endpoints = ["http://127.0.0.1:2379"], prefix = "services/users" } (feature etcd;
//! #   optional: request_timeout = "5s", connect_timeout = "1s", keep_alive = "10s")
//! # discovery = { kind = "zookeeper", servers = ["127.0.0.1:2181"], path = "/services/users", format = "serverset", endpoint_name = "http" }
//! #   (feature zookeeper; format "serverset" (default) or "nerve"; endpoint_name only for server sets;
//! #   optional: session_timeout = "10s", request_timeout = "5s")
//! timeouts = { per_try = "2s", total = "15s" }   # "none" turns either off (streaming upstreams)
//! balancer = { load = "peak_ewma", decay = "10s", max_wait = "1s" }   # or load = "least_in_flight"
//! breaker = { consecutive_failures = 5, min_success_rate = 0.8, window = "10s", min_requests = 5, backoff_base = "1s", backoff_max = "60s" }
//! retry = { max_retries = 2, budget_percent = 20, min_per_second = 10, budget_window = "10s", backoff_base = "25ms", backoff_max = "250ms", replay_limit_bytes = 65536 }
//! limits = { max_requests = 1024, max_pending = 1024 }   # Envoy's defaults; past them 503 + x-meshwork-overloaded
//! # breaker = { enabled = false }   retry = { enabled = false }   turn a layer off
//! ```
//!
//! Each upstream becomes one meshwork client stack (see `upstream.rs`): `timeouts`, `retry`,
//! `balancer` and `breaker` configure its layers; every value is also checked by the library's own
//! builders at start (and by `--check`).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// A configuration mistake: the field path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `upstreams.users.retry.budget_percent`.
    pub field: String,
    /// What the value must be.
    pub message: String,
}

impl FieldError {
    /// A mistake in `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for FieldError {}

/// A duration written as a string with a unit (`"250ms"`, `"2s"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl Dur {
    /// The longest duration accepted anywhere in the configuration: 365 days. Anything longer is
    /// a mistake, and a duration near `Duration::MAX` would overflow `Instant` arithmetic later.
    pub const MAX: Duration = Duration::from_secs(365 * 24 * 3600);

    /// Parses `"<integer><unit>"`, unit one of `us ms s m h`, at most [`Dur::MAX`].
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("`{s}` has no unit (use us, ms, s, m or h)"))?;
        let (n, unit) = s.split_at(split);
        let n: u64 = n
            .parse()
            .map_err(|_| format!("`{s}` is not a number followed by a unit"))?;
        let too_large = || format!("`{s}` is too large (at most 365 days)");
        let d = match unit {
            "us" => Duration::from_micros(n),
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(too_large)?),
            "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(too_large)?),
            _ => return Err(format!("`{s}` has an unknown unit (use us, ms, s, m or h)")),
        };
        if d > Self::MAX {
            return Err(too_large());
        }
        Ok(Self(d))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Dur::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn secs(n: u64) -> Dur {
    Dur(Duration::from_secs(n))
}

fn millis(n: u64) -> Dur {
    Dur(Duration::from_millis(n))
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Admin listener address (default `127.0.0.1:9990`).
    #[serde(default = "default_admin")]
    pub admin: SocketAddr,
    /// After SIGTERM/SIGINT, how long the sidecar keeps accepting and serving while `/ready`
    /// already fails (default 3 s; `"0s"` stops accepting at once): the application's own calls
    /// during its shutdown still go through.
    #[serde(default = "default_drain_delay")]
    pub drain_delay: Dur,
    /// Time in-flight requests get to finish once the sidecar stops accepting (default 30 s).
    #[serde(default = "default_drain")]
    pub shutdown_drain_timeout: Dur,
    /// One structured line per request on stderr (default off; see `access.rs` for the fields).
    #[serde(default)]
    pub access_log: bool,
    /// `logfmt` (default) or `json`.
    #[serde(default)]
    pub access_log_format: crate::access::Format,
    /// Seed of every random choice the stacks make (P2C picks, backoff jitter), for reproducible
    /// runs such as the demo (default: from the OS).
    #[serde(default)]
    pub seed: Option<u64>,
    /// The proxy listener and its limits.
    #[serde(default)]
    pub listener: ListenerConfig,
    /// The admin listener's limits.
    #[serde(default)]
    pub admin_limits: AdminLimits,
    /// Routing rules, first match wins.
    pub routes: Vec<Route>,
    /// Named upstreams.
    pub upstreams: BTreeMap<String, UpstreamConfig>,
}

fn default_admin() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9990))
}

fn default_drain_delay() -> Dur {
    secs(3)
}

fn default_drain() -> Dur {
    secs(30)
}

/// The proxy listener. Defaults follow Envoy's and hyper's conservative values.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerConfig {
    /// Address to listen on (default `127.0.0.1:4140`, Linkerd's outbound port).
    pub address: SocketAddr,
    /// Largest request head in bytes (default 64 KiB; at least 8192). Larger gets 431.
    pub max_header_bytes: usize,
    /// Most header fields in a request (default 100). More gets 431.
    pub max_headers: usize,
    /// Largest request body in bytes (default 10 MiB). A larger `Content-Length` gets 413; a
    /// streamed body that grows past it is cut off.
    pub max_body_bytes: u64,
    /// Time a client has to send a request head, from its first byte (from the connection's
    /// start for the first request; default 10 s). A slower client is cut off. Does not run while
    /// a kept-alive connection waits for its next request.
    pub header_read_timeout: Dur,
    /// A kept-alive connection with nothing in flight is closed this long after its last request
    /// ended (default 60 s).
    pub idle_timeout: Dur,
    /// A request whose bodies carry no byte in either direction for this long is ended on both
    /// sides (default 5 minutes, Envoy's `stream_idle_timeout`). Starts with the response body.
    pub stream_idle_timeout: Dur,
    /// What happens to the `X-Forwarded-For` and `Forwarded` a client sent (default `append`):
    /// `append` adds the client's address to them; `replace` discards them and starts afresh with
    /// the client's address, unless the client is one of `trusted_peers`.
    pub x_forwarded_for: XffMode,
    /// Client addresses whose forwarding headers are kept in `replace` mode (default none).
    pub trusted_peers: Vec<std::net::IpAddr>,
    /// Most concurrent streams per HTTP/2 client connection (default 100, the value Envoy's edge
    /// best practices give; hyper's own default is 200). A client over it is refused the stream.
    pub h2_max_concurrent_streams: u32,
    /// Most open client connections (default 10,000). Beyond it the proxy stops accepting until
    /// one closes: new connections wait in the kernel's backlog instead of being dropped.
    pub max_connections: usize,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            address: SocketAddr::from(([127, 0, 0, 1], 4140)),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_body_bytes: 10 * 1024 * 1024,
            header_read_timeout: secs(10),
            idle_timeout: secs(60),
            max_connections: 10_000,
            h2_max_concurrent_streams: 100,
            stream_idle_timeout: secs(300),
            x_forwarded_for: XffMode::Append,
            trusted_peers: Vec::new(),
        }
    }
}

/// How the proxy treats the forwarding headers a client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum XffMode {
    /// Trust them: append the client's address (default; the client is the local application).
    #[default]
    Append,
    /// Trust them only from `trusted_peers`; from anyone else, replace them.
    Replace,
}

/// Limits of the admin listener: a scraper or a probe gets what it needs, a stuck or hostile
/// client cannot hold it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminLimits {
    /// Time a client has to send a request head, from its first byte (default 5 s).
    pub header_read_timeout: Dur,
    /// A kept-alive admin connection is closed this long after its last request (default 30 s).
    pub idle_timeout: Dur,
    /// Most open admin connections (default 64); more wait in the kernel's backlog.
    pub max_connections: usize,
}

impl Default for AdminLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: secs(5),
            idle_timeout: secs(30),
            max_connections: 64,
        }
    }
}

/// A routing rule: requests for `host` (any host if absent) whose path starts with `path_prefix`
/// go to `upstream`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Host name to match (case-insensitive, without port). Absent: any Host.
    #[serde(default)]
    pub host: Option<String>,
    /// Path prefix to match (default `/`).
    #[serde(default = "default_prefix")]
    pub path_prefix: String,
    /// Name of the upstream in `[upstreams]`.
    pub upstream: String,
    /// A total timeout for this route's requests, shorter than its upstream's (default: the
    /// upstream's `timeouts.total`). Applied as the caller's budget: a shorter one the caller
    /// sends still wins.
    #[serde(default)]
    pub timeout: Option<Dur>,
    /// Headers the request must carry, each with exactly this value (names case-insensitive;
    /// default none), e.g. `headers = { x-canary = "1" }`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The Host sent to the upstream instead of the client's (default: the client's).
    #[serde(default)]
    pub host_rewrite: Option<String>,
}

fn default_prefix() -> String {
    "/".to_owned()
}

/// HTTP version used toward an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HttpVersion {
    /// HTTP/1.1 with a keep-alive pool (default).
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge (h2c), multiplexed.
    Http2,
}

/// One upstream: where its endpoints come from and how requests to it are made.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Discovery source.
    pub discovery: Discovery,
    /// HTTP version toward the endpoints (default `http1`).
    #[serde(default)]
    pub http_version: HttpVersion,
    /// Timeouts.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Balancer.
    #[serde(default)]
    pub balancer: Balancer,
    /// Circuit breaker per endpoint.
    #[serde(default)]
    pub breaker: Breaker,
    /// Retries.
    #[serde(default)]
    pub retry: Retry,
    /// Limits on what is sent to the upstream.
    #[serde(default)]
    pub limits: Limits,
    /// Whether a 429 (Too Many Requests) counts as the endpoint's failure for its breaker and its
    /// load (default false: a 429 says the caller is over its quota, not that the endpoint is
    /// broken; Envoy's outlier detection counts 5xx only). A 429 is retried either way.
    #[serde(default)]
    pub count_429_as_failure: bool,
}

/// Per-upstream limits, as Envoy's circuit-breaker thresholds, with Envoy's defaults (1024 each,
/// `envoy.config.cluster.v3.CircuitBreakers.Thresholds`). Past a limit a request is answered at
/// once with 503 and `x-meshwork-overloaded: true`, and counted in
/// `meshwork_sidecar_overloaded_total{upstream, limit}`; nothing queues for a slot.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Requests in flight to the upstream, until their response body ends (default 1024).
    pub max_requests: usize,
    /// Requests waiting for an available endpoint, not yet sent to one (default 1024).
    pub max_pending: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_requests: 1024,
            max_pending: 1024,
        }
    }
}

/// Where an upstream's endpoints come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Discovery {
    /// A fixed list of addresses.
    Static {
        /// `ip:port` addresses.
        endpoints: Vec<SocketAddr>,
    },
    /// DNS A/AAAA records of `name`, on `port`, re-resolved every `refresh` (feature `dns`).
    Dns {
        /// Name to resolve.
        name: String,
        /// Port of every endpoint.
        port: u16,
        /// Re-resolution period (default 30 s).
        #[serde(default = "default_refresh")]
        refresh: Dur,
    },
    /// A watched file listing endpoints (feature `file`).
    File {
        /// Path of the file.
        path: PathBuf,
    },
    /// etcd v3 keys under `prefix` (feature `etcd`): one key per endpoint, the value JSON in etcd's
    /// endpoint-manager form `{"Addr":"ip:port",...}` or meshwork's `{"addr":"ip:port",...}` (see
    /// `meshwork::discover::etcd`).
    ///
    /// The sidecar starts even when etcd is unreachable: the upstream has no endpoint (503) until
    /// the first read succeeds, and the source retries with a jittered backoff; once it has read
    /// a set, a lost connection keeps that set. Only a malformed URL fails at start.
    Etcd {
        /// etcd client URLs (`http://host:port`).
        endpoints: Vec<String>,
        /// Key prefix (a `/` is appended if missing).
        prefix: String,
        /// Bound on one range read or watch creation (default 5 s).
        #[serde(default = "default_etcd_request_timeout")]
        request_timeout: Dur,
        /// Bound on establishing a connection to etcd (default 1 s).
        #[serde(default = "default_etcd_connect_timeout")]
        connect_timeout: Dur,
        /// gRPC keep-alive ping interval, to notice a silently dead connection (default 10 s; at
        /// least 5 s, etcd's `--grpc-keepalive-min-time`: etcd closes connections that ping faster).
        #[serde(default = "default_etcd_keep_alive")]
        keep_alive: Dur,
    },
    /// The children of a ZooKeeper path (feature `zookeeper`), in Finagle server-set or Nerve
    /// JSON (see `meshwork::discover::zookeeper`), followed through watches.
    ///
    /// The sidecar starts even when ZooKeeper is unreachable: the upstream has no endpoint (503)
    /// until the first read succeeds; once it has read a set, a lost connection or session keeps
    /// that set. Only a malformed server or path fails at start.
    Zookeeper {
        /// ZooKeeper servers, each `host:port`.
        servers: Vec<String>,
        /// The service's path, such as `/services/users`.
        path: String,
        /// `serverset` (default) or `nerve`.
        #[serde(default)]
        format: ZkFormat,
        /// Server sets only: the entry of `additionalEndpoints` to use instead of
        /// `serviceEndpoint` (such as `http`).
        #[serde(default)]
        endpoint_name: Option<String>,
        /// The session timeout asked of ZooKeeper (default 10 s).
        #[serde(default = "default_zk_session_timeout")]
        session_timeout: Dur,
        /// Bound on one read of the path (default 5 s).
        #[serde(default = "default_etcd_request_timeout")]
        request_timeout: Dur,
    },
}

fn default_zk_session_timeout() -> Dur {
    secs(10)
}

/// The JSON of the children of a ZooKeeper path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ZkFormat {
    /// Finagle/Aurora server sets (`member_…` children, `serviceEndpoint`, status `ALIVE`).
    #[default]
    Serverset,
    /// Airbnb Nerve registrations (`host`, `port`, `name`, `weight`).
    Nerve,
}

fn default_etcd_request_timeout() -> Dur {
    secs(5)
}

fn default_etcd_connect_timeout() -> Dur {
    secs(1)
}

fn default_etcd_keep_alive() -> Dur {
    secs(10)
}

fn default_refresh() -> Dur {
    secs(30)
}

/// A timeout that may be turned off: a duration, or `"none"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// Bounded by this duration.
    Of(Dur),
    /// No bound (`"none"`): for streaming upstreams (SSE, long-poll, gRPC streams).
    None,
}

impl Bound {
    /// The duration, if bounded.
    pub fn get(self) -> Option<Duration> {
        match self {
            Self::Of(d) => Some(d.0),
            Self::None => None,
        }
    }
}

impl<'de> Deserialize<'de> for Bound {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.trim() == "none" {
            return Ok(Self::None);
        }
        Dur::parse(&s)
            .map(Self::Of)
            .map_err(|e| serde::de::Error::custom(format!("{e}, or \"none\"")))
    }
}

/// Timeouts of an upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// One try's bound, until the response head and first body frame (default: a third of
    /// `total`, so that a try and two retries fit; none when `total` is `"none"`). `"none"`: no
    /// bound.
    pub per_try: Option<Bound>,
    /// The whole request's bound, all tries included (default 15 s, Envoy's route timeout). A
    /// shorter budget in the caller's `meshwork-timeout-ms` or `grpc-timeout` header, or a
    /// route's `timeout`, wins. `"none"`: no bound, for streaming upstreams (give `per_try =
    /// "none"` too when the first event may take longer than a try's bound).
    pub total: Bound,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            per_try: None,
            total: Bound::Of(secs(15)),
        }
    }
}

/// Load metric of the P2C balancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LoadMetric {
    /// Peak EWMA of latency times in-flight requests (default; Finagle, Linkerd).
    #[default]
    PeakEwma,
    /// In-flight requests only.
    LeastInFlight,
}

/// Balancer of an upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Balancer {
    /// Load metric (default `peak_ewma`).
    pub load: LoadMetric,
    /// Peak EWMA decay (default 10 s, Linkerd's).
    pub decay: Dur,
    /// How long a request waits for an available endpoint (all open or none discovered) before
    /// it fails with 503 (default 1 s; `"0s"` fails at once).
    pub max_wait: Dur,
}

impl Default for Balancer {
    fn default() -> Self {
        Self {
            load: LoadMetric::PeakEwma,
            decay: secs(10),
            max_wait: secs(1),
        }
    }
}

/// Circuit breaker (failure accrual) per endpoint, in gate mode: an open endpoint is skipped by the
/// balancer. Defaults are the library's (`BreakerConfig::default()`: Finagle's and Linkerd's).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Breaker {
    /// Whether endpoints have a breaker (default true).
    pub enabled: bool,
    /// Trip after this many consecutive failures (default 5).
    pub consecutive_failures: u32,
    /// Trip when the success rate over `window` falls below this (default 0.8).
    pub min_success_rate: f64,
    /// Success-rate window (default 10 s).
    pub window: Dur,
    /// Requests needed in the window before the success rate counts (default 5).
    pub min_requests: u32,
    /// First wait before a probe (default 1 s; equal jitter, doubling).
    pub backoff_base: Dur,
    /// Longest wait before a probe (default 60 s).
    pub backoff_max: Dur,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            enabled: true,
            consecutive_failures: 5,
            min_success_rate: 0.8,
            window: secs(10),
            min_requests: 5,
            backoff_base: secs(1),
            backoff_max: secs(60),
        }
    }
}

/// Retries of an upstream. Defaults are the library's: Linkerd's and Finagle's budget, Envoy's
/// backoff. Only what is safe is retried: idempotent methods after a retryable failure (502, 503,
/// 504, 429, a reset connection), any request that provably never reached the endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retry {
    /// Whether failed requests are retried (default true).
    pub enabled: bool,
    /// Most retries of one request (default 2).
    pub max_retries: u32,
    /// Retries allowed as a percentage of requests (default 20).
    pub budget_percent: f64,
    /// Retries always allowed per second (default 10).
    pub min_per_second: u32,
    /// Budget window (default 10 s).
    pub budget_window: Dur,
    /// First retry backoff (default 25 ms).
    pub backoff_base: Dur,
    /// Longest retry backoff (default 250 ms; full jitter, doubling).
    pub backoff_max: Dur,
    /// Largest request body kept for replay (default 64 KiB); a longer body is not retried.
    pub replay_limit_bytes: u64,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            enabled: true,
            max_retries: 2,
            budget_percent: 20.0,
            min_per_second: 10,
            budget_window: secs(10),
            backoff_base: millis(25),
            backoff_max: millis(250),
            replay_limit_bytes: 64 * 1024,
        }
    }
}

impl Config {
    /// Parses and validates a TOML document.
    ///
    /// Every error names the field path: a value of the wrong type or form is reported as
    /// `upstreams.users.timeouts.total: ... (line 9, column 29)`; a value the checks reject as
    /// `upstreams.users.retry.budget_percent: must be between 0 and 100`. Only a TOML syntax error
    /// (no document to find a field in) is reported with TOML's own message and position.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let config: Config = toml::from_str(text).map_err(|e| describe(text, &e))?;
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    /// The simple case: one catch-all route to one static upstream named `default`.
    pub fn simple(listen: SocketAddr, upstream: Vec<SocketAddr>) -> Result<Self, FieldError> {
        let mut upstreams = BTreeMap::new();
        upstreams.insert(
            "default".to_owned(),
            UpstreamConfig {
                discovery: Discovery::Static {
                    endpoints: upstream,
                },
                http_version: HttpVersion::default(),
                timeouts: Timeouts::default(),
                balancer: Balancer::default(),
                breaker: Breaker::default(),
                retry: Retry::default(),
                limits: Limits::default(),
                count_429_as_failure: false,
            },
        );
        let config = Config {
            admin: default_admin(),
            drain_delay: default_drain_delay(),
            shutdown_drain_timeout: default_drain(),
            access_log: false,
            access_log_format: crate::access::Format::default(),
            seed: None,
            listener: ListenerConfig {
                address: listen,
                ..ListenerConfig::default()
            },
            admin_limits: AdminLimits::default(),
            routes: vec![Route {
                host: None,
                path_prefix: default_prefix(),
                upstream: "default".to_owned(),
                headers: BTreeMap::new(),
                host_rewrite: None,
                timeout: None,
            }],
            upstreams,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks every value; the first mistake is returned with its field path.
    pub fn validate(&self) -> Result<(), FieldError> {
        non_zero("shutdown_drain_timeout", self.shutdown_drain_timeout)?;
        let l = &self.listener;
        if l.max_header_bytes < 8192 {
            return Err(FieldError::new(
                "listener.max_header_bytes",
                "must be at least 8192",
            ));
        }
        if l.max_headers == 0 {
            return Err(FieldError::new(
                "listener.max_headers",
                "must be at least 1",
            ));
        }
        if l.max_body_bytes == 0 {
            return Err(FieldError::new(
                "listener.max_body_bytes",
                "must be at least 1",
            ));
        }
        non_zero("listener.header_read_timeout", l.header_read_timeout)?;
        non_zero("listener.idle_timeout", l.idle_timeout)?;
        non_zero("listener.stream_idle_timeout", l.stream_idle_timeout)?;
        if l.h2_max_concurrent_streams == 0 {
            return Err(FieldError::new(
                "listener.h2_max_concurrent_streams",
                "must be at least 1",
            ));
        }
        if l.max_connections == 0 || l.max_connections > (u32::MAX >> 3) as usize {
            return Err(FieldError::new(
                "listener.max_connections",
                "must be between 1 and 536870911",
            ));
        }
        let a = &self.admin_limits;
        non_zero("admin_limits.header_read_timeout", a.header_read_timeout)?;
        non_zero("admin_limits.idle_timeout", a.idle_timeout)?;
        if a.max_connections == 0 || a.max_connections > 10_000 {
            return Err(FieldError::new(
                "admin_limits.max_connections",
                "must be between 1 and 10000",
            ));
        }
        if self.routes.is_empty() {
            return Err(FieldError::new("routes", "must have at least one route"));
        }
        for (i, r) in self.routes.iter().enumerate() {
            if !self.upstreams.contains_key(&r.upstream) {
                return Err(FieldError::new(
                    format!("routes[{i}].upstream"),
                    format!("names no upstream: `{}` is not in [upstreams]", r.upstream),
                ));
            }
            if !r.path_prefix.starts_with('/') {
                return Err(FieldError::new(
                    format!("routes[{i}].path_prefix"),
                    "must start with `/`",
                ));
            }
            for (name, value) in &r.headers {
                if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    return Err(FieldError::new(
                        format!("routes[{i}].headers.{name}"),
                        "is not a valid header name",
                    ));
                }
                if http::HeaderValue::from_str(value).is_err() {
                    return Err(FieldError::new(
                        format!("routes[{i}].headers.{name}"),
                        "is not a valid header value",
                    ));
                }
            }
            if let Some(t) = r.timeout {
                non_zero(&format!("routes[{i}].timeout"), t)?;
            }
            if let Some(h) = &r.host_rewrite
                && (h.is_empty()
                    || http::HeaderValue::from_str(h).is_err()
                    || h.contains(['/', ' ']))
            {
                return Err(FieldError::new(
                    format!("routes[{i}].host_rewrite"),
                    "must be a host name, with an optional port",
                ));
            }
            if let Some(h) = &r.host
                && (h.is_empty() || h.contains([':', '/', ' ']))
            {
                return Err(FieldError::new(
                    format!("routes[{i}].host"),
                    "must be a host name without port or path",
                ));
            }
        }
        if self.upstreams.is_empty() {
            return Err(FieldError::new(
                "upstreams",
                "must have at least one upstream",
            ));
        }
        for (name, u) in &self.upstreams {
            u.validate(&format!("upstreams.{name}"))?;
        }
        Ok(())
    }
}

/// A TOML deserialization error as `field.path: message (line L, column C)`, the path found from
/// the error's position in the document.
fn describe(text: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else {
        return e.to_string();
    };
    let Ok(root) = toml::de::DeTable::parse(text) else {
        // A syntax error: TOML's own message shows the line.
        return e.to_string();
    };
    let mut path = String::new();
    if !locate_in_table(root.get_ref(), span.start, &mut path) || path.is_empty() {
        return e.to_string();
    }
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    format!(
        "{path}: {} (line {line}, column {column})",
        e.message().trim_end()
    )
}

/// Appends to `path` the deepest key of `table` whose key or value holds byte `pos`.
fn locate_in_table(table: &toml::de::DeTable<'_>, pos: usize, path: &mut String) -> bool {
    for (key, value) in table.iter() {
        let len = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key.get_ref());
        if key.span().contains(&pos) || locate_in_value(value, pos, path) {
            return true;
        }
        path.truncate(len);
    }
    false
}

fn locate_in_value(
    value: &toml::Spanned<toml::de::DeValue<'_>>,
    pos: usize,
    path: &mut String,
) -> bool {
    use toml::de::DeValue;
    let inside = match value.get_ref() {
        DeValue::Table(t) => locate_in_table(t, pos, path),
        DeValue::Array(items) => items.iter().enumerate().any(|(i, item)| {
            let len = path.len();
            path.push_str(&format!("[{i}]"));
            let found = locate_in_value(item, pos, path);
            if !found {
                path.truncate(len);
            }
            found
        }),
        _ => false,
    };
    inside || value.span().contains(&pos)
}

fn non_zero(field: &str, d: Dur) -> Result<(), FieldError> {
    if d.0.is_zero() {
        Err(FieldError::new(field, "must be greater than zero"))
    } else {
        Ok(())
    }
}

fn feature_off(field: String, feature: &str) -> FieldError {
    FieldError::new(
        field,
        format!("needs the `{feature}` feature: rebuild with `--features {feature}`"),
    )
}

impl UpstreamConfig {
    fn validate(&self, p: &str) -> Result<(), FieldError> {
        let d = format!("{p}.discovery");
        match &self.discovery {
            Discovery::Static { endpoints } => {
                if endpoints.is_empty() {
                    return Err(FieldError::new(
                        format!("{d}.endpoints"),
                        "must list at least one address",
                    ));
                }
            }
            Discovery::Dns {
                name,
                port,
                refresh,
            } => {
                if !cfg!(feature = "dns") {
                    return Err(feature_off(format!("{d}.kind"), "dns"));
                }
                if name.is_empty() {
                    return Err(FieldError::new(format!("{d}.name"), "must not be empty"));
                }
                if *port == 0 {
                    return Err(FieldError::new(format!("{d}.port"), "must not be 0"));
                }
                non_zero(&format!("{d}.refresh"), *refresh)?;
            }
            Discovery::File { path } => {
                if !cfg!(feature = "file") {
                    return Err(feature_off(format!("{d}.kind"), "file"));
                }
                if path.as_os_str().is_empty() {
                    return Err(FieldError::new(format!("{d}.path"), "must not be empty"));
                }
            }
            Discovery::Etcd {
                endpoints,
                prefix,
                request_timeout,
                connect_timeout,
                keep_alive,
            } => {
                if !cfg!(feature = "etcd") {
                    return Err(feature_off(format!("{d}.kind"), "etcd"));
                }
                if endpoints.is_empty() {
                    return Err(FieldError::new(
                        format!("{d}.endpoints"),
                        "must list at least one etcd URL",
                    ));
                }
                if prefix.is_empty() {
                    return Err(FieldError::new(format!("{d}.prefix"), "must not be empty"));
                }
                if let Some(url) = endpoints
                    .iter()
                    .find(|u| !(u.starts_with("http://") || u.starts_with("https://")))
                {
                    return Err(FieldError::new(
                        format!("{d}.endpoints"),
                        format!("`{url}` is not an http:// or https:// URL"),
                    ));
                }
                non_zero(&format!("{d}.request_timeout"), *request_timeout)?;
                non_zero(&format!("{d}.connect_timeout"), *connect_timeout)?;
                if keep_alive.0 < Duration::from_secs(5) {
                    return Err(FieldError::new(
                        format!("{d}.keep_alive"),
                        "must be at least 5s (etcd closes connections that ping more often)",
                    ));
                }
            }
            Discovery::Zookeeper {
                servers,
                path,
                format,
                endpoint_name,
                session_timeout,
                request_timeout,
            } => {
                if !cfg!(feature = "zookeeper") {
                    return Err(feature_off(format!("{d}.kind"), "zookeeper"));
                }
                if servers.is_empty() {
                    return Err(FieldError::new(
                        format!("{d}.servers"),
                        "must list at least one ZooKeeper server",
                    ));
                }
                if let Some(bad) = servers.iter().find(|s| {
                    !matches!(s.rsplit_once(':'), Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0))
                }) {
                    return Err(FieldError::new(
                        format!("{d}.servers"),
                        format!("`{bad}` is not `host:port`"),
                    ));
                }
                if !path.starts_with('/') || path.len() < 2 || path.ends_with('/') {
                    return Err(FieldError::new(
                        format!("{d}.path"),
                        "must be an absolute ZooKeeper path such as `/services/users`",
                    ));
                }
                match (format, endpoint_name) {
                    (ZkFormat::Nerve, Some(_)) => {
                        return Err(FieldError::new(
                            format!("{d}.endpoint_name"),
                            "is only for format = \"serverset\"",
                        ));
                    }
                    (_, Some(name)) if name.is_empty() => {
                        return Err(FieldError::new(
                            format!("{d}.endpoint_name"),
                            "must not be empty",
                        ));
                    }
                    _ => {}
                }
                non_zero(&format!("{d}.session_timeout"), *session_timeout)?;
                non_zero(&format!("{d}.request_timeout"), *request_timeout)?;
            }
        }
        for (value, name) in [
            (self.limits.max_requests, "max_requests"),
            (self.limits.max_pending, "max_pending"),
        ] {
            if value == 0 {
                return Err(FieldError::new(
                    format!("{p}.limits.{name}"),
                    "must be at least 1",
                ));
            }
        }
        let t = &self.timeouts;
        if let Bound::Of(total) = t.total {
            non_zero(&format!("{p}.timeouts.total"), total)?;
        }
        if let Some(Bound::Of(per_try)) = t.per_try {
            non_zero(&format!("{p}.timeouts.per_try"), per_try)?;
            if t.total.get().is_some_and(|total| per_try.0 > total) {
                return Err(FieldError::new(
                    format!("{p}.timeouts.per_try"),
                    "must not exceed timeouts.total",
                ));
            }
        }
        non_zero(&format!("{p}.balancer.decay"), self.balancer.decay)?;
        let b = &self.breaker;
        if b.consecutive_failures == 0 {
            return Err(FieldError::new(
                format!("{p}.breaker.consecutive_failures"),
                "must be at least 1",
            ));
        }
        if !(b.min_success_rate > 0.0 && b.min_success_rate <= 1.0) {
            return Err(FieldError::new(
                format!("{p}.breaker.min_success_rate"),
                "must be greater than 0 and at most 1",
            ));
        }
        if b.min_requests == 0 {
            return Err(FieldError::new(
                format!("{p}.breaker.min_requests"),
                "must be at least 1",
            ));
        }
        non_zero(&format!("{p}.breaker.window"), b.window)?;
        non_zero(&format!("{p}.breaker.backoff_base"), b.backoff_base)?;
        if b.backoff_max.0 < b.backoff_base.0 {
            return Err(FieldError::new(
                format!("{p}.breaker.backoff_max"),
                "must be at least breaker.backoff_base",
            ));
        }
        let r = &self.retry;
        if !(0.0..=100.0).contains(&r.budget_percent) {
            return Err(FieldError::new(
                format!("{p}.retry.budget_percent"),
                "must be between 0 and 100",
            ));
        }
        non_zero(&format!("{p}.retry.budget_window"), r.budget_window)?;
        non_zero(&format!("{p}.retry.backoff_base"), r.backoff_base)?;
        if r.backoff_max.0 < r.backoff_base.0 {
            return Err(FieldError::new(
                format!("{p}.retry.backoff_max"),
                "must be at least retry.backoff_base",
            ));
        }
        // Whatever the library's own builders reject, reported with this file's field path.
        crate::upstream::plan(&p["upstreams.".len()..], self)?;
        Ok(())
    }
}

#[cfg(test)]
#[path = "config/props.rs"]
mod props;

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [[routes]]
        host = "users.local"
        upstream = "users"

        [upstreams.users]
        discovery = { kind = "static", endpoints = ["127.0.0.1:8081"] }
        timeouts = { per_try = "1s", total = "5s" }
        retry = { budget_percent = 10 }
    "#;

    #[test]
    fn parses_with_defaults() {
        let c = Config::from_toml(GOOD).unwrap();
        assert_eq!(c.admin, default_admin());
        assert_eq!(c.routes[0].path_prefix, "/");
        let u = &c.upstreams["users"];
        assert_eq!(u.timeouts.per_try, Some(Bound::Of(secs(1))));
        assert_eq!(u.retry.budget_percent, 10.0);
        assert_eq!(u.retry.max_retries, 2);
        assert_eq!(u.http_version, HttpVersion::Http1);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                GOOD.replace("budget_percent = 10", "budget_percent = 150"),
                "upstreams.users.retry.budget_percent",
            ),
            (
                GOOD.replace("per_try = \"1s\"", "per_try = \"10s\""),
                "upstreams.users.timeouts.per_try",
            ),
            (
                GOOD.replace("upstream = \"users\"", "upstream = \"orders\""),
                "routes[0].upstream",
            ),
            (GOOD.replace("total = \"5s\"", "total = \"5\""), "total"),
            (GOOD.replace("host =", "hots ="), "hots"),
            (
                GOOD.replace(
                    "host =",
                    "headers = { \"bad name\" = \"1\" }\n        host =",
                ),
                "routes[0].headers.bad name: is not a valid header name",
            ),
            (
                GOOD.replace("host =", "host_rewrite = \"a b\"\n        host ="),
                "routes[0].host_rewrite",
            ),
            (
                GOOD.replace("kind = \"static\"", "kind = \"consul\""),
                "consul",
            ),
        ];
        for (text, field) in cases {
            let err = Config::from_toml(&text).unwrap_err();
            assert!(err.contains(field), "{field} not in: {err}");
        }
    }

    #[test]
    fn discovery_kinds_need_their_feature() {
        let static_ = r#"discovery = { kind = "static", endpoints = ["127.0.0.1:8081"] }"#;
        let cases = [
            (
                r#"discovery = { kind = "dns", name = "users", port = 80 }"#,
                "dns",
                cfg!(feature = "dns"),
            ),
            (
                r#"discovery = { kind = "file", path = "users.toml" }"#,
                "file",
                cfg!(feature = "file"),
            ),
            (
                r#"discovery = { kind = "etcd", endpoints = ["http://127.0.0.1:2379"], prefix = "/svc" }"#,
                "etcd",
                cfg!(feature = "etcd"),
            ),
            (
                r#"discovery = { kind = "zookeeper", servers = ["127.0.0.1:2181"], path = "/svc", endpoint_name = "http" }"#,
                "zookeeper",
                cfg!(feature = "zookeeper"),
            ),
        ];
        for (line, feature, enabled) in cases {
            let result = Config::from_toml(&GOOD.replace(static_, line));
            if enabled {
                assert!(result.is_ok(), "{result:?}");
            } else {
                let err = result.unwrap_err();
                assert!(
                    err.contains("upstreams.users.discovery.kind") && err.contains(feature),
                    "{err}"
                );
            }
        }
        if cfg!(feature = "etcd") {
            for (line, field) in [
                (
                    r#"discovery = { kind = "etcd", endpoints = ["http://127.0.0.1:2379"], prefix = "/svc", keep_alive = "1s" }"#,
                    "upstreams.users.discovery.keep_alive",
                ),
                (
                    r#"discovery = { kind = "etcd", endpoints = ["127.0.0.1:2379"], prefix = "/svc" }"#,
                    "upstreams.users.discovery.endpoints",
                ),
            ] {
                let err = Config::from_toml(&GOOD.replace(static_, line)).unwrap_err();
                assert!(err.contains(field), "{field} not in: {err}");
            }
        }
        if cfg!(feature = "zookeeper") {
            for (line, field) in [
                (
                    r#"discovery = { kind = "zookeeper", servers = [], path = "/svc" }"#,
                    "upstreams.users.discovery.servers",
                ),
                (
                    r#"discovery = { kind = "zookeeper", servers = ["127.0.0.1"], path = "/svc" }"#,
                    "upstreams.users.discovery.servers",
                ),
                (
                    r#"discovery = { kind = "zookeeper", servers = ["127.0.0.1:2181"], path = "svc" }"#,
                    "upstreams.users.discovery.path",
                ),
                (
                    r#"discovery = { kind = "zookeeper", servers = ["127.0.0.1:2181"], path = "/svc", format = "nerve", endpoint_name = "http" }"#,
                    "upstreams.users.discovery.endpoint_name",
                ),
                (
                    r#"discovery = { kind = "zookeeper", servers = ["127.0.0.1:2181"], path = "/svc", session_timeout = "0s" }"#,
                    "upstreams.users.discovery.session_timeout",
                ),
            ] {
                let err = Config::from_toml(&GOOD.replace(static_, line)).unwrap_err();
                assert!(err.contains(field), "{field} not in: {err}");
            }
        }
        let err = Config::from_toml(&GOOD.replace(
            static_,
            r#"discovery = { kind = "static", endpoints = [] }"#,
        ))
        .unwrap_err();
        assert!(err.contains("upstreams.users.discovery.endpoints"), "{err}");
    }

    fn toml_block(text: &str) -> &str {
        let start = text.find("```toml\n").expect("a toml block") + 8;
        let end = start + text[start..].find("```").expect("the block ends");
        &text[start..end]
    }

    #[test]
    fn documented_examples_are_valid() {
        let module_docs: String = include_str!("config.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("//!"))
            .map(|l| l.strip_prefix(' ').unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        for (name, text) in [
            ("config.rs", module_docs.as_str()),
            ("README.md", include_str!("../../README.md")),
        ] {
            if let Err(e) = Config::from_toml(toml_block(text)) {
                panic!("the example in {name} is invalid: {e}");
            }
        }
    }

    /// "All defaults on" means the library's defaults: the sidecar's must not drift from them.
    #[test]
    fn defaults_are_the_librarys() {
        use meshwork::breaker::BreakerConfig;
        use meshwork::client::ClientBuilder;
        use meshwork::retry::{RetryBudget, RetryPolicy};

        let lib = BreakerConfig::default();
        let ours = Breaker::default();
        assert_eq!(lib.consecutive_failures(), Some(ours.consecutive_failures));
        assert_eq!(
            lib.success_rate(),
            Some((ours.min_success_rate, ours.window.0, ours.min_requests))
        );
        assert_eq!(lib.backoff().base(), ours.backoff_base.0);
        assert_eq!(lib.backoff().max(), ours.backoff_max.0);

        let budget = RetryBudget::new();
        let policy = RetryPolicy::new();
        let ours = Retry::default();
        assert_eq!(budget.retry_ratio() * 100.0, ours.budget_percent);
        assert_eq!(budget.min_retries_per_sec(), ours.min_per_second);
        assert_eq!(budget.ttl(), ours.budget_window.0);
        assert_eq!(policy.get_max_retries(), ours.max_retries);
        assert_eq!(policy.get_backoff().base(), ours.backoff_base.0);
        assert_eq!(policy.get_backoff().max(), ours.backoff_max.0);
        assert_eq!(
            ours.replay_limit_bytes,
            meshwork::http::DEFAULT_REPLAY_LIMIT as u64
        );

        let stack = ClientBuilder::new();
        assert_eq!(stack.get_total_timeout(), Timeouts::default().total.get());
        assert_eq!(
            stack.get_balance().get_max_wait(),
            Balancer::default().max_wait.0
        );
    }

    #[test]
    fn durations() {
        assert_eq!(Dur::parse("250ms").unwrap(), millis(250));
        assert_eq!(Dur::parse("2m").unwrap(), secs(120));
        assert!(Dur::parse("2").is_err());
        assert!(Dur::parse("2 days").is_err());
        assert!(Dur::parse("ms").is_err());
    }
}
