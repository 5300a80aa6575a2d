//! Starting and stopping a sidecar inside a running tokio runtime: [`start`] binds both listeners,
//! spawns the accept loops and returns a [`Running`] handle once they listen; [`Running::shutdown`]
//! fails `/ready` at once, keeps serving for `drain_delay`, then stops accepting and drains
//! in-flight requests within `shutdown_drain_timeout`.
//!
//! The binary (`main.rs`) calls these around its signal handling; the demo (`examples/demo.rs`)
//! includes this module with `#[path]` to run a sidecar in its own process.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use meshwork::BoxError;
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::{admin, proxy, upstream};

/// Latency buckets from 1 ms to 10 s: Prometheus histograms, not summaries, so they aggregate.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A running sidecar.
pub struct Running {
    /// The bound proxy listener address (useful when the configuration asked for port 0).
    pub listen: SocketAddr,
    /// The bound admin listener address.
    pub admin: SocketAddr,
    stop: watch::Sender<bool>,
    proxy_task: JoinHandle<()>,
    admin_task: JoinHandle<()>,
    upkeep_task: JoinHandle<()>,
    connections: Arc<Semaphore>,
    max_connections: usize,
    drain: Duration,
    drain_delay: Duration,
    state: Arc<admin::AdminState>,
}

impl Running {
    /// Fails `/ready` at once (so that the orchestrator stops sending new clients), keeps
    /// accepting and serving for `drain_delay` (the application's own calls during its shutdown
    /// still work), then stops accepting on both listeners (new connections are refused) and
    /// waits until every open proxy connection has closed or `shutdown_drain_timeout` has passed,
    /// whichever comes first. Connections still open after that are left to be dropped with the
    /// runtime.
    pub async fn shutdown(self) {
        self.state.listening.store(false, Ordering::Release);
        tracing::info!(drain_delay = ?self.drain_delay, "shutting down: /ready fails; still serving for drain_delay");
        tokio::time::sleep(self.drain_delay).await;
        tracing::info!("no new connections; draining in-flight requests");
        let _ = self.stop.send(true);
        // The accept loops return at once and drop their listeners.
        let _ = self.proxy_task.await;
        let _ = self.admin_task.await;
        self.upkeep_task.abort();
        let all =
            u32::try_from(self.max_connections).expect("validated: max_connections fits in u32");
        match tokio::time::timeout(self.drain, self.connections.acquire_many(all)).await {
            Ok(_) => tracing::info!("drained"),
            Err(_) => tracing::warn!(
                open = self.max_connections - self.connections.available_permits(),
                drain = ?self.drain,
                "drain timeout passed; closing the remaining connections"
            ),
        }
    }
}

/// Static endpoint lists are applied by the balancers' discovery tasks, in the background: give
/// them a moment, so that the sidecar is ready when it says it listens. Bounded: a source that
/// does not deliver in a second is not waited for (requests then wait for it, up to `max_wait`).
async fn wait_for_static(config: &Config, upstreams: &[upstream::Upstream]) {
    let statics: Vec<&upstream::Upstream> = upstreams
        .iter()
        .filter(|u| {
            matches!(
                config.upstreams[&*u.name].discovery,
                crate::config::Discovery::Static { .. }
            )
        })
        .collect();
    let all_known = || statics.iter().all(|u| !u.view.endpoints().is_empty());
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while !all_known() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
}

/// Starts the sidecar: binds, spawns the accept loops, returns once listening.
///
/// `install_recorder`: install the Prometheus recorder as the global `metrics` recorder. Pass
/// `false` when the process already installed one (only one global recorder can exist), or when
/// the sidecar runs beside other code whose metrics should not be mixed in; `/metrics` then
/// renders an empty page, because metrics go to whichever recorder is global.
///
/// Must be called inside a multi-threaded tokio runtime with time and I/O enabled. Fails when a
/// listener cannot bind or an upstream cannot be built, with a message naming the field.
pub async fn start(config: Config, install_recorder: bool) -> Result<Running, BoxError> {
    let recorder = PrometheusBuilder::new()
        .set_buckets(BUCKETS)?
        .build_recorder();
    let handle = recorder.handle();
    if install_recorder {
        // Before the upstreams are built: their metric handles are made at construction.
        metrics::set_global_recorder(recorder)?;
        // HELP lines for every library family, whether or not a layer has made its handles yet.
        meshwork::telemetry::describe();
    }
    let upkeep = handle.clone();
    let upkeep_task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });

    let started = async {
        let mut upstreams = Vec::with_capacity(config.upstreams.len());
        for (name, u) in &config.upstreams {
            upstreams.push(upstream::build(name, u, config.seed).await?);
        }
        wait_for_static(&config, &upstreams).await;
        let proxy = Arc::new(proxy::Proxy::new(&config, upstreams));

        let listener = TcpListener::bind(config.listener.address)
            .await
            .map_err(|e| {
                format!(
                    "listener.address: cannot bind {}: {e}",
                    config.listener.address
                )
            })?;
        let admin_listener = TcpListener::bind(config.admin)
            .await
            .map_err(|e| format!("admin: cannot bind {}: {e}", config.admin))?;
        Ok::<_, BoxError>((proxy, listener, admin_listener))
    }
    .await;
    let (proxy, listener, admin_listener) = match started {
        Ok(parts) => parts,
        Err(e) => {
            upkeep_task.abort();
            return Err(e);
        }
    };
    let listen = listener.local_addr()?;
    let admin = admin_listener.local_addr()?;

    let (stop, stop_rx) = watch::channel(false);
    let state = Arc::new(admin::AdminState {
        metrics: handle,
        upstreams: proxy.upstreams().to_vec(),
        listening: false.into(),
    });
    let admin_task = tokio::spawn(admin::serve(
        admin_listener,
        state.clone(),
        config.admin_limits.clone(),
        stop_rx.clone(),
    ));
    let max_connections = config.listener.max_connections;
    let connections = Arc::new(Semaphore::new(max_connections));
    let proxy_task = tokio::spawn(proxy::serve(
        listener,
        proxy,
        config.listener.clone(),
        connections.clone(),
        stop_rx,
    ));
    state.listening.store(true, Ordering::Release);
    tracing::info!(%listen, %admin, upstreams = config.upstreams.len(), "sidecar started");
    Ok(Running {
        listen,
        admin,
        stop,
        proxy_task,
        admin_task,
        upkeep_task,
        connections,
        max_connections,
        drain: config.shutdown_drain_timeout.0,
        drain_delay: config.drain_delay.0,
        state,
    })
}
