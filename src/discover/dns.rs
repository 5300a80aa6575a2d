use std::error::Error;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name, RData, Record};
use tokio::time::Instant;

use super::report::Reporter;
use super::{BoxDiscover, Endpoint, Update};
use crate::backoff::{Backoff, BackoffSeq};
use crate::rng::{SeedSource, SmallRng};
use crate::telemetry::MetricLabels;
use crate::{BoxError, ConfigError};

/// A discovery source that resolves a DNS name and re-resolves it when its TTL expires.
///
/// Two kinds of name:
///
/// - **[`Dns::host`]`(name, port)`**: A and AAAA records, queried together; every address becomes
///   an endpoint at `port`, weight 1.
/// - **[`Dns::srv`]`(name)`** (for example `_http._tcp.users.example`): SRV records. Only the
///   records of the lowest priority value are used (RFC 2782: higher values are backups); each
///   record's target is resolved (A and AAAA) and every address becomes an endpoint at the record's
///   port, with the record's weight (a weight of 0 becomes 1, since meshwork weights start at 1)
///   and the labels `srv_target` and `srv_priority`.
///
/// # Refresh
///
/// The name is resolved on the first poll, then again when the smallest TTL of the answer expires,
/// clamped between [`min_refresh`](DnsBuilder::min_refresh) (default 1 s) and
/// [`max_refresh`](DnsBuilder::max_refresh) (default 5 min): a TTL of 0 does not cause a query
/// storm, and a day-long TTL does not hide a change for a day. A set is yielded (as an
/// [`Update::Reset`]) only when it differs from the last one. The resolver's own cache is cleared
/// before each refresh: the TTL schedule here *is* the cache.
///
/// # Failures
///
/// A failed resolution (timeout, SERVFAIL, REFUSED, unreachable server, a target of an SRV record
/// that does not resolve) yields an `Err` item ([`DnsError`]), logged at warn and counted; consumers
/// keep the last good set. The next try comes after a jittered, growing delay that starts at
/// about `min_refresh` and is capped at `max_refresh`; the first success resets it.
///
/// A *negative* answer (NXDOMAIN, or the name exists but has no such records) is by default a
/// failure too: a zone pushed with a typo, a split-horizon glitch or a registry that briefly
/// deregisters everything would otherwise drain all traffic at once, and keeping the last set is
/// what a service mesh wants while someone fixes DNS. If NXDOMAIN means "no instances" in your
/// setup, [`empty_on_negative`](DnsBuilder::empty_on_negative) turns a negative answer into a
/// positive empty set.
///
/// ```no_run
/// use futures_util::StreamExt;
/// use meshwork::discover::Dns;
///
/// # async fn run() -> Result<(), meshwork::ConfigError> {
/// let mut source = Dns::host("users.internal", 8080)
///     .name_server("10.0.0.2:53".parse().unwrap())
///     .min_refresh(std::time::Duration::from_secs(5))
///     .build()?;
/// while let Some(update) = source.next().await {
///     println!("{update:?}");
/// }
/// # Ok(()) }
/// ```
pub struct Dns {
    inner: BoxDiscover,
}

impl Dns {
    /// Resolves `host` (A and AAAA) and serves its addresses at `port`.
    pub fn host(host: impl Into<String>, port: u16) -> DnsBuilder {
        DnsBuilder::new(Target::Host(host.into(), port))
    }

    /// Resolves the SRV records of `name`.
    pub fn srv(name: impl Into<String>) -> DnsBuilder {
        DnsBuilder::new(Target::Srv(name.into()))
    }
}

impl Stream for Dns {
    type Item = Result<Update, BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl fmt::Debug for Dns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dns").finish_non_exhaustive()
    }
}

#[derive(Clone, Debug)]
enum Target {
    Host(String, u16),
    Srv(String),
}

/// Configures a [`Dns`] source.
#[derive(Clone, Debug)]
pub struct DnsBuilder {
    target: Target,
    name_servers: Vec<SocketAddr>,
    min_refresh: Duration,
    max_refresh: Duration,
    timeout: Duration,
    empty_on_negative: bool,
    labels: MetricLabels,
    seeds: Option<SeedSource>,
}

impl DnsBuilder {
    fn new(target: Target) -> Self {
        Self {
            target,
            name_servers: Vec::new(),
            min_refresh: Duration::from_secs(1),
            max_refresh: Duration::from_secs(300),
            timeout: Duration::from_secs(2),
            empty_on_negative: false,
            labels: MetricLabels::new(),
            seeds: None,
        }
    }

    /// Queries this name server (UDP, falling back to TCP) instead of the system's. May be called
    /// several times; the servers are then tried in order. Without any, the system configuration
    /// (`/etc/resolv.conf`) is used, search domains included.
    #[must_use]
    pub fn name_server(mut self, addr: SocketAddr) -> Self {
        self.name_servers.push(addr);
        self
    }

    /// The shortest time between two resolutions (default 1 s); also where the retry delay after a
    /// failure starts. Must be greater than zero.
    #[must_use]
    pub fn min_refresh(mut self, d: Duration) -> Self {
        self.min_refresh = d;
        self
    }

    /// The longest time between two resolutions, whatever the TTL (default 5 min); also the cap of
    /// the retry delay. Must be at least `min_refresh`.
    #[must_use]
    pub fn max_refresh(mut self, d: Duration) -> Self {
        self.max_refresh = d;
        self
    }

    /// How long one query may take before it counts as failed (default 2 s). Must be greater than
    /// zero.
    #[must_use]
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// Treats a negative answer (NXDOMAIN, or no records of the type asked) as a positive empty
    /// set instead of a failure (default `false`: keep the last set). See [`Dns`].
    #[must_use]
    pub fn empty_on_negative(mut self, yes: bool) -> Self {
        self.empty_on_negative = yes;
        self
    }

    /// Static labels for the source's metrics.
    #[must_use]
    pub fn labels(mut self, labels: MetricLabels) -> Self {
        self.labels = labels;
        self
    }

    /// The randomness for the retry jitter (default: from entropy).
    #[must_use]
    pub fn seed(mut self, seeds: SeedSource) -> Self {
        self.seeds = Some(seeds);
        self
    }

    /// Builds the source. Fails on invalid durations, an invalid name, or, without explicit name
    /// servers, an unreadable system resolver configuration.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field: `min_refresh` or `timeout` (zero),
    /// `max_refresh` (below `min_refresh`), `name` (not a valid DNS name), or `name_server` when none
    /// is set and the system resolver configuration cannot be read.
    pub fn build(self) -> Result<Dns, ConfigError> {
        let min = crate::error::non_zero("min_refresh", self.min_refresh)?;
        crate::error::non_zero("timeout", self.timeout)?;
        if self.max_refresh < min {
            return Err(ConfigError::new(
                "max_refresh",
                "must be at least min_refresh",
            ));
        }
        let name = match &self.target {
            Target::Host(name, _) | Target::Srv(name) => name,
        };
        let name: Name = name
            .parse()
            .ok()
            .filter(|n: &Name| n.num_labels() > 0)
            .ok_or(ConfigError::new("name", "must be a valid DNS name"))?;
        let backoff = Backoff::equal_jitter(min, self.max_refresh)?;

        let mut opts = ResolverOpts::default();
        opts.timeout = self.timeout;
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        opts.try_tcp_on_error = true;
        let builder = if self.name_servers.is_empty() {
            let mut b = TokioResolver::builder_tokio().map_err(|_| {
                ConfigError::new(
                    "name_server",
                    "is required: the system resolver configuration could not be read",
                )
            })?;
            let system = b.options_mut().clone();
            opts.ndots = system.ndots;
            b.with_options(opts)
        } else {
            let servers = self
                .name_servers
                .iter()
                .map(|addr| {
                    let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                    for c in &mut ns.connections {
                        c.port = addr.port();
                    }
                    ns
                })
                .collect();
            opts.use_hosts_file = ResolveHosts::Never;
            TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, Vec::new(), servers),
                TokioRuntimeProvider::default(),
            )
            .with_options(opts)
        };
        let resolver = builder.build().map_err(|_| {
            ConfigError::new("name_server", "must make a valid resolver configuration")
        })?;

        let (kind, port) = match self.target {
            Target::Host(_, port) => ("host", Some(port)),
            Target::Srv(_) => ("srv", None),
        };
        let state = Resolving {
            resolver,
            name: Arc::new(name),
            port,
            min,
            max: self.max_refresh,
            empty_on_negative: self.empty_on_negative,
            backoff: backoff.sequence(),
            rng: self.seeds.unwrap_or_default().rng(),
            last: None,
            next_at: None,
            reporter: Reporter::new("dns", &self.labels),
        };
        tracing::debug!(name = %state.name, kind, "DNS discovery configured");
        Ok(Dns {
            inner: Box::pin(futures_util::stream::unfold(state, Resolving::next)),
        })
    }
}

struct Resolving {
    resolver: TokioResolver,
    name: Arc<Name>,
    /// `Some(port)` for a host lookup, `None` for SRV.
    port: Option<u16>,
    min: Duration,
    max: Duration,
    empty_on_negative: bool,
    backoff: BackoffSeq,
    rng: SmallRng,
    last: Option<Vec<Endpoint>>,
    next_at: Option<Instant>,
    reporter: Reporter,
}

impl Resolving {
    async fn next(mut self) -> Option<(Result<Update, BoxError>, Self)> {
        loop {
            if let Some(at) = self.next_at {
                tokio::time::sleep_until(at).await;
            }
            self.resolver.clear_cache();
            let outcome = match self.port {
                Some(port) => self.resolve_host(port).await,
                None => self.resolve_srv().await,
            };
            let now = Instant::now();
            let set = match outcome {
                Ok((set, ttl)) => {
                    self.backoff.reset();
                    self.next_at = Some(crate::util::deadline_after(
                        now,
                        ttl.clamp(self.min, self.max),
                    ));
                    set
                }
                Err(e) if e.is_negative() && self.empty_on_negative => {
                    self.backoff.reset();
                    self.next_at = Some(crate::util::deadline_after(now, self.min));
                    Vec::new()
                }
                Err(e) => {
                    self.next_at = Some(crate::util::deadline_after(
                        now,
                        self.backoff.next_delay(&mut self.rng),
                    ));
                    self.reporter.error(&e);
                    return Some((Err(Box::new(e)), self));
                }
            };
            if self.last.as_ref() != Some(&set) {
                self.reporter.reset(set.len());
                self.last = Some(set.clone());
                return Some((Ok(Update::Reset(set)), self));
            }
        }
    }

    /// The addresses of `name`, with the smallest TTL of the answer.
    async fn lookup_ips(&self, name: &Name) -> Result<(Vec<IpAddr>, u32), DnsError> {
        let lookup = self
            .resolver
            .lookup_ip(name.clone())
            .await
            .map_err(|e| DnsError::lookup(name, e))?;
        let mut ttl = u32::MAX;
        let mut ips = Vec::new();
        for record in lookup.as_lookup().answers() {
            if let Some(ip) = ip_of(record) {
                ttl = ttl.min(record.ttl);
                ips.push(ip);
            }
        }
        if ips.is_empty() {
            return Err(DnsError::no_addresses(name));
        }
        Ok((ips, ttl))
    }

    async fn resolve_host(&self, port: u16) -> Result<(Vec<Endpoint>, Duration), DnsError> {
        let (ips, ttl) = self.lookup_ips(&self.name).await?;
        let set = ips
            .into_iter()
            .map(|ip| Endpoint::new(SocketAddr::new(ip, port)))
            .collect();
        Ok((normalize(set), Duration::from_secs(ttl.into())))
    }

    async fn resolve_srv(&self) -> Result<(Vec<Endpoint>, Duration), DnsError> {
        let lookup = self
            .resolver
            .srv_lookup(self.name.as_ref().clone())
            .await
            .map_err(|e| DnsError::lookup(&self.name, e))?;
        let srvs: Vec<_> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(srv) => Some((srv, r.ttl)),
                _ => None,
            })
            .collect();
        let Some(best) = srvs.iter().map(|(s, _)| s.priority).min() else {
            return Err(DnsError::no_addresses(&self.name));
        };
        let mut ttl = u32::MAX;
        let mut set = Vec::new();
        let chosen = srvs.iter().filter(|(s, _)| s.priority == best);
        let lookups = chosen.clone().map(|(s, _)| self.lookup_ips(&s.target));
        let targets = futures_util::future::join_all(lookups).await;
        for ((srv, srv_ttl), target) in chosen.zip(targets) {
            let (ips, ip_ttl) = target?;
            ttl = ttl.min(*srv_ttl).min(ip_ttl);
            let weight = u32::from(srv.weight.max(1));
            for ip in ips {
                let ep = Endpoint::new(SocketAddr::new(ip, srv.port))
                    .with_weight(weight)
                    .expect("a weight of at least 1")
                    .with_label("srv_target", srv.target.to_string())
                    .with_label("srv_priority", srv.priority.to_string());
                set.push(ep);
            }
        }
        Ok((normalize(set), Duration::from_secs(ttl.into())))
    }
}

fn ip_of(record: &Record) -> Option<IpAddr> {
    match &record.data {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        RData::AAAA(a) => Some(IpAddr::V6(a.0)),
        _ => None,
    }
}

/// Sorted by address, one endpoint per address (the first seen wins).
fn normalize(mut set: Vec<Endpoint>) -> Vec<Endpoint> {
    set.sort_by_key(Endpoint::addr);
    set.dedup_by_key(|e| e.addr());
    set
}

/// A [`Dns`] source could not resolve its name; the consumer keeps the last good set.
#[derive(Debug)]
pub struct DnsError {
    name: String,
    cause: Option<NetError>,
}

impl DnsError {
    fn lookup(name: &Name, cause: NetError) -> Self {
        Self {
            name: name.to_string(),
            cause: Some(cause),
        }
    }

    fn no_addresses(name: &Name) -> Self {
        Self {
            name: name.to_string(),
            cause: None,
        }
    }

    /// The name that failed to resolve (for SRV, possibly a record's target).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A negative answer: the name does not exist (NXDOMAIN) or has no records of the type asked,
    /// as opposed to a failure to get an answer (timeout, SERVFAIL, REFUSED, network error).
    #[must_use]
    pub fn is_negative(&self) -> bool {
        self.cause
            .as_ref()
            .is_none_or(|e| e.is_nx_domain() || e.is_no_records_found())
    }
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cause {
            Some(e) => write!(f, "DNS resolution of {} failed: {e}", self.name),
            None => write!(f, "DNS resolution of {} returned no addresses", self.name),
        }
    }
}

impl Error for DnsError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.cause.as_ref().map(|e| e as _)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_invalid_configuration() {
        let ns: SocketAddr = "127.0.0.1:53".parse().unwrap();
        let build = |b: DnsBuilder| b.name_server(ns).build().map(|_| ()).unwrap_err();
        let err = build(Dns::host("a.test", 80).min_refresh(Duration::ZERO));
        assert_eq!(err.field(), "min_refresh");
        let err = build(
            Dns::host("a.test", 80)
                .min_refresh(Duration::from_secs(10))
                .max_refresh(Duration::from_secs(5)),
        );
        assert_eq!(err.field(), "max_refresh");
        let err = build(Dns::host("a.test", 80).timeout(Duration::ZERO));
        assert_eq!(err.field(), "timeout");
        let err = build(Dns::srv(format!("{}.test", "a".repeat(64))));
        assert_eq!(err.field(), "name");
        let err = build(Dns::host("", 80));
        assert_eq!(err.field(), "name");
    }

    #[test]
    fn normalize_sorts_and_dedups() {
        let a = Endpoint::new("127.0.0.2:1".parse().unwrap());
        let b = Endpoint::new("127.0.0.1:1".parse().unwrap());
        assert_eq!(normalize(vec![a.clone(), b.clone(), a.clone()]), vec![b, a]);
    }
}
