//! The meshwork sidecar: an HTTP proxy that runs beside a service, in any language, and gives its
//! outbound calls timeouts, deadlines, balancing, breaking and retries, built from meshwork's layers.
//!
//! ```text
//! # the simple case: every request to 127.0.0.1:4140 goes to one of two instances
//! cargo run --example sidecar -- --listen 127.0.0.1:4140 --upstream 127.0.0.1:8081,127.0.0.1:8082
//!
//! # routes and upstreams from a file (see config.rs for the schema), validated first
//! cargo run --example sidecar -- --config sidecar.toml --check
//! cargo run --example sidecar -- --config sidecar.toml
//! ```
//!
//! At start it prints one line on stdout, `listening on ADDR admin ADDR`, with the bound addresses
//! (useful with port 0). Logs go to stderr through `tracing`, filtered by `RUST_LOG` (default
//! `info`); `--access-log` (or `access_log = true`) adds one line per request under the target
//! `meshwork::access`. SIGTERM or SIGINT stops accepting at once, lets in-flight requests finish
//! within `shutdown_drain_timeout`, and exits 0.
//!
//! Modules: [`config`] (schema and validation), [`proxy`] (listener, routing, error statuses),
//! [`headers`] (hop-by-hop and forwarding headers), [`upstream`] (the forwarding seam, one tower
//! service per upstream), [`admin`] (metrics, readiness, endpoints).

mod admin;
mod config;
mod headers;
mod proxy;
mod upstream;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Parser;
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tracing_subscriber::EnvFilter;

use crate::config::Config;

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "sidecar",
    about = "meshwork sidecar: an HTTP proxy with deadlines, balancing, breaking and retries"
)]
struct Cli {
    /// Proxy listener address (overrides `listener.address` of a config file).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Upstream endpoints for the simple case (no config file): ADDR[,ADDR...].
    #[arg(
        long,
        value_name = "ADDR[,ADDR...]",
        value_delimiter = ',',
        conflicts_with = "config"
    )]
    upstream: Vec<SocketAddr>,
    /// Admin listener address (overrides `admin`; default 127.0.0.1:9990).
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Validate the configuration and exit (0 when valid).
    #[arg(long)]
    check: bool,
    /// Log one line per request (target `meshwork::access`).
    #[arg(long)]
    access_log: bool,
}

fn load(cli: &Cli) -> Result<Config, String> {
    let mut config = match &cli.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            Config::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => {
            if cli.upstream.is_empty() {
                return Err("give --upstream ADDR[,ADDR...] or --config FILE".to_owned());
            }
            let listen = cli
                .listen
                .unwrap_or(config::ListenerConfig::default().address);
            Config::simple(listen, cli.upstream.clone()).map_err(|e| e.to_string())?
        }
    };
    if let Some(listen) = cli.listen {
        config.listener.address = listen;
    }
    if let Some(admin) = cli.admin {
        config.admin = admin;
    }
    config.access_log |= cli.access_log;
    Ok(config)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.check {
        println!("configuration ok");
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), meshwork::BoxError> {
    // Latency buckets from 1 ms to 10 s: Prometheus histograms, not summaries, so they aggregate.
    let recorder = PrometheusBuilder::new()
        .set_buckets(&[
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ])?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });

    let upstreams = config
        .upstreams
        .iter()
        .map(|(name, u)| upstream::build(name, u))
        .collect::<Result<Vec<_>, _>>()?;
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
    let proxy_addr = listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let state = Arc::new(admin::AdminState {
        metrics: handle,
        upstreams: proxy.upstreams().to_vec(),
        listening: false.into(),
    });
    let admin_task = tokio::spawn(admin::serve(admin_listener, state.clone(), stop_rx.clone()));
    let max = config.listener.max_connections;
    let connections = Arc::new(Semaphore::new(max));
    let proxy_task = tokio::spawn(proxy::serve(
        listener,
        proxy,
        config.listener.clone(),
        connections.clone(),
        stop_rx,
    ));
    state.listening.store(true, Ordering::Release);
    tracing::info!(%proxy_addr, %admin_addr, upstreams = config.upstreams.len(), "sidecar started");
    println!("listening on {proxy_addr} admin {admin_addr}");
    use std::io::Write as _;
    let _ = std::io::stdout().flush();

    wait_for_signal().await?;
    tracing::info!("shutting down: no new connections; draining in-flight requests");
    let _ = stop_tx.send(true);
    // The accept loops return at once and drop their listeners: new connections are refused.
    let _ = proxy_task.await;
    let _ = admin_task.await;
    let drain = config.shutdown_drain_timeout.0;
    let all = u32::try_from(max).expect("validated: max_connections fits in u32");
    match tokio::time::timeout(drain, connections.acquire_many(all)).await {
        Ok(_) => tracing::info!("drained; bye"),
        Err(_) => tracing::warn!(
            open = max - connections.available_permits(),
            ?drain,
            "drain timeout passed; closing the remaining connections"
        ),
    }
    Ok(())
}

async fn wait_for_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
