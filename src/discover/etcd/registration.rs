//! Self-registration: a key under a lease, kept alive in the background.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use etcd_client::{Client, PutOptions};
use tokio::task::JoinHandle;

use super::source::{DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_MAX};
use super::value;
use crate::backoff::{Backoff, BackoffSeq};
use crate::discover::Endpoint;
use crate::rng::{SeedSource, SmallRng};
use crate::timeout::Elapsed;
use crate::{BoxError, ConfigError};

/// Default lease time-to-live of a [`Registration`].
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

/// A service's own endpoint, registered under an etcd prefix with a lease and kept alive in the
/// background, so that meshwork can be both sides of discovery.
///
/// The key is `<prefix>/<addr>` and the value is etcd's endpoint-manager JSON
/// (`{"Addr":"ip:port","Metadata":{..}}`), which [`EtcdDiscover`](super::EtcdDiscover) and Go's
/// `naming/endpoints` resolver both understand.
///
/// - A background task renews the lease every third of its TTL. If etcd is unreachable it retries
///   with backoff; if the lease expired meanwhile, it grants a new one and writes the key again.
/// - [`deregister`](Self::deregister) revokes the lease: the key disappears at once.
/// - Dropping the registration stops the keep-alive and, inside a tokio runtime, revokes the lease
///   in a spawned task (best effort).
/// - If the process dies, nothing renews the lease and etcd deletes the key when the TTL expires.
///   [`abandon`](Self::abandon) does the same on purpose (stop renewing, do not revoke).
///
/// ```no_run
/// use meshwork::discover::Endpoint;
/// use meshwork::discover::etcd::Registration;
///
/// # async fn run() -> Result<(), meshwork::BoxError> {
/// let client = etcd_client::Client::connect(["http://127.0.0.1:2379"], None).await?;
/// let me = Endpoint::new("127.0.0.1:8080".parse()?).with_label("zone", "a");
/// let registration = Registration::register(client, "services/users", me).await?;
/// assert_eq!(registration.key(), "services/users/127.0.0.1:8080");
/// // ... serve ...
/// registration.deregister().await?;
/// # Ok(()) }
/// ```
pub struct Registration {
    key: String,
    lease: Arc<AtomicI64>,
    client: Client,
    task: Option<JoinHandle<()>>,
}

/// Builds a [`Registration`].
///
/// ```
/// use std::time::Duration;
/// use meshwork::discover::Endpoint;
/// use meshwork::discover::etcd::Registration;
///
/// let ep = Endpoint::new("127.0.0.1:8080".parse().unwrap());
/// let builder = Registration::builder("services/users", ep.clone())?.ttl(Duration::from_secs(5));
/// assert_eq!(builder.key(), "services/users/127.0.0.1:8080");
/// let err = Registration::builder("services/users", ep)?
///     .ttl(Duration::from_millis(1500))
///     .validate()
///     .unwrap_err();
/// assert_eq!(err.field(), "ttl");
/// # Ok::<(), meshwork::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct RegistrationBuilder {
    key: String,
    value: String,
    ttl: Duration,
    backoff: Backoff,
    seeds: Option<SeedSource>,
}

impl Registration {
    /// Registers `endpoint` under `prefix` with the default TTL ([`DEFAULT_TTL`]).
    ///
    /// # Errors
    ///
    /// As [`RegistrationBuilder::register`]; also a [`ConfigError`] naming `prefix` when `prefix`
    /// is empty or `/`.
    pub async fn register(
        client: Client,
        prefix: &str,
        endpoint: Endpoint,
    ) -> Result<Self, BoxError> {
        Self::builder(prefix, endpoint)?.register(client).await
    }

    /// A builder, to set the TTL and the retry backoff.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `prefix` when `prefix` is empty or `/`.
    pub fn builder(prefix: &str, endpoint: Endpoint) -> Result<RegistrationBuilder, ConfigError> {
        let prefix = prefix.trim_end_matches('/');
        if prefix.is_empty() {
            return Err(ConfigError::new(
                "prefix",
                "must name a service (not empty, not `/`)",
            ));
        }
        Ok(RegistrationBuilder {
            key: format!("{prefix}/{}", endpoint.addr()),
            value: value::encode(&endpoint),
            ttl: DEFAULT_TTL,
            backoff: Backoff::full_jitter(DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_MAX)?,
            seeds: None,
        })
    }

    /// The registered key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The current lease id (it changes if the lease expired during an outage and was granted
    /// again).
    pub fn lease_id(&self) -> i64 {
        self.lease.load(Ordering::Acquire)
    }

    /// Stops the keep-alive and revokes the lease: the key is deleted now.
    ///
    /// # Errors
    ///
    /// The etcd client's error when the lease cannot be revoked (etcd unreachable, or the lease
    /// already gone); the keep-alive is stopped either way, so the key expires with its TTL.
    pub async fn deregister(mut self) -> Result<(), BoxError> {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        let id = self.lease_id();
        self.client.lease_revoke(id).await?;
        tracing::info!(key = %self.key, "etcd registration: deregistered");
        Ok(())
    }

    /// Stops the keep-alive without revoking the lease, as if the process had been killed: etcd
    /// deletes the key when the lease's TTL runs out.
    pub fn abandon(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        tracing::info!(key = %self.key, "etcd registration: abandoned; the key expires with its lease");
    }
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("key", &self.key)
            .field("lease_id", &self.lease_id())
            .finish_non_exhaustive()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let Some(task) = self.task.take() else {
            return;
        };
        task.abort();
        let id = self.lease_id();
        let mut client = self.client.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = client.lease_revoke(id).await;
            });
        }
    }
}

impl RegistrationBuilder {
    /// The lease time-to-live (default [`DEFAULT_TTL`]): how long the key outlives a dead process.
    /// etcd counts whole seconds: anything else, or less than one second, is rejected. etcd may
    /// raise a very short TTL to its own minimum (about 2 s with default settings).
    ///
    /// Checked by [`register`](Self::register).
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Checks the settings, as [`register`](Self::register) does: the TTL must be a whole number
    /// of seconds, at least 1.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `ttl` when the TTL is zero or not a whole number of seconds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.ttl_secs().map(drop)
    }

    /// The TTL in whole seconds, or the error naming `ttl`.
    fn ttl_secs(&self) -> Result<i64, ConfigError> {
        let ttl = self.ttl;
        if ttl.subsec_nanos() != 0 || ttl.as_secs() == 0 || ttl.as_secs() > i64::MAX as u64 {
            return Err(ConfigError::new(
                "ttl",
                "must be a whole number of seconds, at least 1",
            ));
        }
        Ok(ttl.as_secs() as i64)
    }

    /// The delays between keep-alive or re-registration attempts after a failure.
    #[must_use]
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The randomness for the backoff jitter (default: from entropy).
    #[must_use]
    pub fn seed(mut self, seeds: SeedSource) -> Self {
        self.seeds = Some(seeds);
        self
    }

    /// The key that will be written.
    #[must_use]
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Grants the lease, writes the key, and starts the keep-alive task (on the current tokio
    /// runtime). Fails if a setting is invalid (a [`ConfigError`] naming `ttl`) or etcd cannot be
    /// reached now.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `ttl` (see [`validate`](Self::validate)), or the etcd client's error
    /// when the lease cannot be granted or the key written.
    pub async fn register(self, mut client: Client) -> Result<Registration, BoxError> {
        let ttl_secs = self.ttl_secs()?;
        let lease = Arc::new(AtomicI64::new(0));
        grant_and_put(&mut client, &self.key, &self.value, ttl_secs, &lease).await?;
        tracing::info!(key = %self.key, lease = lease.load(Ordering::Acquire), ttl_secs, "etcd registration: registered");
        let keeper = Keeper {
            client: client.clone(),
            key: self.key.clone(),
            value: self.value,
            ttl_secs,
            lease: lease.clone(),
            backoff: self.backoff.sequence(),
            rng: self.seeds.unwrap_or_default().rng(),
        };
        Ok(Registration {
            key: self.key,
            lease,
            client,
            task: Some(tokio::spawn(keeper.run())),
        })
    }
}

async fn grant_and_put(
    client: &mut Client,
    key: &str,
    value: &str,
    ttl_secs: i64,
    lease: &AtomicI64,
) -> Result<(), BoxError> {
    let granted = client.lease_grant(ttl_secs, None).await?;
    // Stored before the put, so that a deregistration racing with a re-registration revokes it.
    lease.store(granted.id(), Ordering::Release);
    client
        .put(key, value, Some(PutOptions::new().with_lease(granted.id())))
        .await?;
    Ok(())
}

struct Keeper {
    client: Client,
    key: String,
    value: String,
    ttl_secs: i64,
    lease: Arc<AtomicI64>,
    backoff: BackoffSeq,
    rng: SmallRng,
}

enum Lost {
    /// etcd answered that the lease no longer exists.
    Expired,
    /// etcd could not be reached, or the stream broke.
    Failed(BoxError),
}

impl Keeper {
    fn interval(&self) -> Duration {
        Duration::from_millis((self.ttl_secs as u64).saturating_mul(1000) / 3)
            .max(Duration::from_millis(100))
    }

    async fn run(mut self) {
        let mut expired = false;
        loop {
            if expired {
                match grant_and_put(
                    &mut self.client,
                    &self.key,
                    &self.value,
                    self.ttl_secs,
                    &self.lease,
                )
                .await
                {
                    Ok(()) => {
                        expired = false;
                        self.backoff.reset();
                        tracing::info!(key = %self.key, lease = self.lease.load(Ordering::Acquire), "etcd registration: lease expired meanwhile; registered again");
                    }
                    Err(e) => {
                        tracing::warn!(key = %self.key, error = %e, "etcd registration: could not register again; retrying");
                        tokio::time::sleep(self.backoff.next_delay(&mut self.rng)).await;
                        continue;
                    }
                }
            }
            match self.keep_alive().await {
                Lost::Expired => {
                    tracing::warn!(key = %self.key, "etcd registration: the lease expired");
                    expired = true;
                }
                Lost::Failed(e) => {
                    tracing::warn!(key = %self.key, error = %e, "etcd registration: keep-alive failed; retrying");
                    tokio::time::sleep(self.backoff.next_delay(&mut self.rng)).await;
                }
            }
        }
    }

    /// Renews the lease every third of its TTL until something goes wrong.
    async fn keep_alive(&mut self) -> Lost {
        let interval = self.interval();
        let id = self.lease.load(Ordering::Acquire);
        let (mut keeper, mut responses) =
            match tokio::time::timeout(interval, self.client.lease_keep_alive(id)).await {
                Ok(Ok(pair)) => pair,
                Ok(Err(e)) => return Lost::Failed(e.into()),
                Err(_) => return Lost::Failed(Elapsed::new().into()),
            };
        loop {
            if let Err(e) = keeper.keep_alive().await {
                return Lost::Failed(e.into());
            }
            match tokio::time::timeout(interval, responses.message()).await {
                Ok(Ok(Some(resp))) if resp.ttl() > 0 => self.backoff.reset(),
                Ok(Ok(Some(_))) => return Lost::Expired,
                Ok(Ok(None)) => return Lost::Failed("the keep-alive stream ended".into()),
                Ok(Err(e)) => return Lost::Failed(e.into()),
                Err(_) => return Lost::Failed(Elapsed::new().into()),
            }
            tokio::time::sleep(interval).await;
        }
    }
}
