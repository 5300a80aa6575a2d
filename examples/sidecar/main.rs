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
//! `info`); `--access-log` (or `access_log = true`) adds one structured line per request on stderr
//! (logfmt or JSON, `access_log_format`; fields in `access.rs`). SIGTERM or SIGINT fails `/ready` at once, keeps serving for `drain_delay`,
//! then stops accepting, lets in-flight requests finish within `shutdown_drain_timeout`, and exits 0.
//!
//! Modules: [`app`] (start and stop), [`config`] (schema and validation), [`client_body`] (a
//! failed request body is the caller's 400), [`conn`] (a connection's header-read and idle timers), [`limits`] (per-upstream request limits), [`proxy`] (listener, routing, error statuses),
//! [`headers`] (hop-by-hop and forwarding headers), [`upstream`] (the forwarding seam, one tower
//! service per upstream), [`admin`] (metrics, readiness, endpoints).

mod access;
mod admin;
mod app;
mod client_body;
mod config;
mod conn;
mod headers;
mod limits;
mod live_metrics;
mod proxy;
mod request_metrics;
mod stream_idle;
mod upstream;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
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
    /// Log one structured line per request on stderr (see `access_log_format`).
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
    // Handlers first: a SIGTERM right after the `listening` line must drain, not kill.
    let signal = shutdown_signal()?;
    let running = app::start(config, true).await?;
    println!("listening on {} admin {}", running.listen, running.admin);
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    signal.await;
    running.shutdown().await;
    tracing::info!("bye");
    Ok(())
}

/// Installs the SIGTERM and SIGINT handlers now; the future resolves on the first signal.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}
