//! Self-registration: an ephemeral sequential server-set member, registered again after its
//! session is lost.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use zookeeper_client::{Acls, Client, CreateMode, SessionInfo};

use super::ensemble::{Ensemble, check_path};
use super::serverset;
use super::source::{DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_MAX, DEFAULT_REQUEST_TIMEOUT};
use crate::backoff::{Backoff, BackoffSeq};
use crate::rng::{SeedSource, SmallRng};
use crate::timeout::Elapsed;
use crate::{BoxError, ConfigError};

/// A service's own endpoint, registered as a Finagle server-set member under a ZooKeeper path,
/// so that meshwork can be both sides of discovery.
///
/// The member is an *ephemeral sequential* znode `<path>/member_<sequence>` holding server-set
/// JSON with status `ALIVE` (see the [module docs](crate::discover::zookeeper)), which
/// [`ZkDiscover`](super::ZkDiscover) and Finagle's resolvers read. The path's missing parents are
/// created (persistent, open ACL).
///
/// - The member belongs to the registration's own session: it disappears when the registration
///   is dropped or [deregistered](Self::deregister), and, if the process dies, when ZooKeeper
///   expires the session (after the session timeout).
/// - A background task watches the session. If it is lost (expired while ZooKeeper could not be
///   reached, closed by another client), the task makes a new session and creates a new member,
///   retrying with backoff until it succeeds; [`znode`](Self::znode) then names the new one.
///
/// ```no_run
/// use meshwork::discover::zookeeper::{Ensemble, Registration};
///
/// # async fn run() -> Result<(), meshwork::BoxError> {
/// let zk = Ensemble::new(["127.0.0.1:2181"])?;
/// let registration = Registration::builder("/services/users", "127.0.0.1:8080".parse()?)?
///     .additional_endpoint("http", "127.0.0.1:8081".parse()?)
///     .shard(0)
///     .register(&zk)
///     .await?;
/// assert!(registration.znode().starts_with("/services/users/member_"));
/// // ... serve ...
/// registration.deregister().await?;
/// # Ok(()) }
/// ```
pub struct Registration {
    current: watch::Receiver<Registered>,
    task: Option<JoinHandle<()>>,
}

/// The member as it is now.
#[derive(Clone)]
struct Registered {
    znode: String,
    client: Client,
    count: u64,
}

impl Registration {
    /// Registers `addr` as the `serviceEndpoint` of a member under `path`, with the defaults.
    pub async fn register(
        ensemble: &Ensemble,
        path: &str,
        addr: SocketAddr,
    ) -> Result<Self, BoxError> {
        Self::builder(path, addr)?.register(ensemble).await
    }

    /// A builder, to add named endpoints and a shard, and to set the backoff.
    pub fn builder(path: &str, addr: SocketAddr) -> Result<RegistrationBuilder, ConfigError> {
        check_path(path)?;
        Ok(RegistrationBuilder {
            path: path.to_owned(),
            service: addr,
            additional: BTreeMap::new(),
            shard: None,
            backoff: Backoff::full_jitter(DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_MAX)?,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            seeds: None,
        })
    }

    /// The member's znode now (`<path>/member_<sequence>`); it changes when the member is
    /// registered again after a lost session.
    pub fn znode(&self) -> String {
        self.current.borrow().znode.clone()
    }

    /// How many times the member has been created: 1, plus one per registration after a lost
    /// session.
    pub fn registrations(&self) -> u64 {
        self.current.borrow().count
    }

    /// The session that holds the member now.
    pub fn session(&self) -> SessionInfo {
        self.current.borrow().client.session().clone()
    }

    /// Stops watching the session, deletes the member and closes the session: the member is
    /// gone when this returns `Ok`.
    pub async fn deregister(mut self) -> Result<(), BoxError> {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        let now = self.current.borrow().clone();
        match now.client.delete(&now.znode, None).await {
            Ok(()) | Err(zookeeper_client::Error::NoNode) => {}
            Err(e) => return Err(e.into()),
        }
        tracing::info!(znode = %now.znode, "zookeeper registration: deregistered");
        Ok(())
    }
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let now = self.current.borrow();
        f.debug_struct("Registration")
            .field("znode", &now.znode)
            .field("registrations", &now.count)
            .finish_non_exhaustive()
    }
}

impl Drop for Registration {
    /// Stops the background task; the session closes with the last handle to it, which removes
    /// the member (inside a running tokio runtime; otherwise ZooKeeper expires it).
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Builds a [`Registration`].
///
/// ```
/// use meshwork::discover::zookeeper::Registration;
///
/// let builder = Registration::builder("/services/users", "127.0.0.1:8080".parse().unwrap())?
///     .additional_endpoint("admin", "127.0.0.1:9990".parse().unwrap())
///     .shard(3);
/// assert_eq!(
///     builder.member_json(),
///     r#"{"additionalEndpoints":{"admin":{"host":"127.0.0.1","port":9990}},"serviceEndpoint":{"host":"127.0.0.1","port":8080},"shard":3,"status":"ALIVE"}"#
/// );
/// let err = Registration::builder("services", "127.0.0.1:1".parse().unwrap()).unwrap_err();
/// assert_eq!(err.field(), "path");
/// # Ok::<(), meshwork::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct RegistrationBuilder {
    path: String,
    service: SocketAddr,
    additional: BTreeMap<String, SocketAddr>,
    shard: Option<i32>,
    backoff: Backoff,
    request_timeout: Duration,
    seeds: Option<SeedSource>,
}

impl RegistrationBuilder {
    /// Adds a named entry to `additionalEndpoints` (such as `http` or `admin`). An empty name is
    /// rejected by [`validate`](Self::validate).
    pub fn additional_endpoint(mut self, name: impl Into<String>, addr: SocketAddr) -> Self {
        self.additional.insert(name.into(), addr);
        self
    }

    /// The member's `shard` (absent by default).
    pub fn shard(mut self, shard: i32) -> Self {
        self.shard = Some(shard);
        self
    }

    /// The delays between attempts to register again after a lost session.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The bound on one registration (creating the parents and the member, default
    /// [`DEFAULT_REQUEST_TIMEOUT`]); zero is rejected.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Checks the settings, as [`register`](Self::register) does: no empty additional endpoint
    /// name, a non-zero `request_timeout`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `endpoint_name` or `request_timeout`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.additional.keys().any(String::is_empty) {
            return Err(ConfigError::new("endpoint_name", "must not be empty"));
        }
        crate::error::non_zero("request_timeout", self.request_timeout).map(drop)
    }

    /// The randomness for the backoff jitter (default: from entropy).
    pub fn seed(mut self, seeds: SeedSource) -> Self {
        self.seeds = Some(seeds);
        self
    }

    /// The JSON the member will hold.
    pub fn member_json(&self) -> String {
        serverset::encode(self.service, &self.additional, self.shard)
    }

    /// Makes a session on `ensemble`, creates the member, and starts watching the session (on
    /// the current tokio runtime). Fails if a setting is invalid (a [`ConfigError`]) or
    /// ZooKeeper cannot be reached now.
    pub async fn register(self, ensemble: &Ensemble) -> Result<Registration, BoxError> {
        self.validate()?;
        ensemble.validate().map_err(|e| e.within("ensemble"))?;
        let data = self.member_json();
        let (client, znode) =
            register_once(ensemble, &self.path, &data, self.request_timeout).await?;
        tracing::info!(znode = %znode, session = %client.session_id(), "zookeeper registration: registered");
        let (tx, rx) = watch::channel(Registered {
            znode,
            client: client.clone(),
            count: 1,
        });
        let keeper = Keeper {
            ensemble: ensemble.clone(),
            path: self.path,
            data,
            request_timeout: self.request_timeout,
            backoff: self.backoff.sequence(),
            rng: self.seeds.unwrap_or_default().rng(),
            tx,
        };
        Ok(Registration {
            current: rx,
            task: Some(tokio::spawn(keeper.run(client))),
        })
    }
}

/// A new session, the parents, and the member; bounded by `timeout` after the session is made.
async fn register_once(
    ensemble: &Ensemble,
    path: &str,
    data: &str,
    timeout: Duration,
) -> Result<(Client, String), BoxError> {
    let client = ensemble.connect().await?;
    let create = async {
        let parents = CreateMode::Persistent.with_acls(Acls::anyone_all());
        client.mkdir(path, &parents).await?;
        let member = CreateMode::EphemeralSequential.with_acls(Acls::anyone_all());
        let prefix = format!("{path}/{}", serverset::MEMBER_PREFIX);
        let (_stat, sequence) = client.create(&prefix, data.as_bytes(), &member).await?;
        Ok::<_, zookeeper_client::Error>(format!("{prefix}{sequence}"))
    };
    let znode = tokio::time::timeout(timeout, create)
        .await
        .map_err(|_| Elapsed::new())??;
    Ok((client, znode))
}

struct Keeper {
    ensemble: Ensemble,
    path: String,
    data: String,
    request_timeout: Duration,
    backoff: BackoffSeq,
    rng: SmallRng,
    tx: watch::Sender<Registered>,
}

impl Keeper {
    async fn run(mut self, mut client: Client) {
        loop {
            let state = wait_until_lost(&client).await;
            tracing::warn!(
                path = %self.path,
                ?state,
                "zookeeper registration: the session was lost; registering again"
            );
            drop(client);
            client = loop {
                match register_once(&self.ensemble, &self.path, &self.data, self.request_timeout)
                    .await
                {
                    Ok((client, znode)) => {
                        self.backoff.reset();
                        tracing::info!(znode = %znode, session = %client.session_id(), "zookeeper registration: registered again");
                        let c = client.clone();
                        self.tx.send_modify(move |r| {
                            r.znode = znode;
                            r.client = c;
                            r.count += 1;
                        });
                        break client;
                    }
                    Err(e) => {
                        let delay = self.backoff.next_delay(&mut self.rng);
                        tracing::warn!(path = %self.path, error = %e, ?delay, "zookeeper registration: could not register again; retrying");
                        tokio::time::sleep(delay).await;
                    }
                }
            };
        }
    }
}

/// Waits until the session reaches a final state (expired, closed, authentication failed).
async fn wait_until_lost(client: &Client) -> zookeeper_client::SessionState {
    let mut watcher = client.state_watcher();
    let mut state = client.state();
    while !state.is_terminated() {
        state = watcher.changed().await;
    }
    state
}
