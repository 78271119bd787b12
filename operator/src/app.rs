//! The operator process: its flags, logging, signal handling, and the wiring of the controller
//! with the metrics server. `main.rs` only parses [`Args`] and calls [`run`].

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use futures::FutureExt;
use tracing::info;

use crate::controller::{self, Options};
use crate::metrics::{self, Metrics};

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Flags of `proglog-operator` (each also read from a `PROGLOG_OPERATOR_*` variable).
#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "proglog-operator",
    version,
    about = "Kubernetes operator for ProgLog clusters (proglog.dev/v1alpha1 ProgLog)"
)]
pub struct Args {
    /// Watch only this namespace. Default: all namespaces.
    #[arg(long, env = "PROGLOG_OPERATOR_NAMESPACE")]
    pub namespace: Option<String>,
    /// DNS domain of the cluster; members advertise `<pod>.<name>-members.<ns>.svc.<domain>`.
    #[arg(
        long,
        env = "PROGLOG_OPERATOR_CLUSTER_DOMAIN",
        default_value = "cluster.local"
    )]
    pub cluster_domain: String,
    /// Address of the HTTP server for /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "PROGLOG_OPERATOR_METRICS_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub metrics_addr: SocketAddr,
    /// Log format. Default: text on a terminal, json otherwise. Filter with RUST_LOG.
    #[arg(long, env = "PROGLOG_OPERATOR_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
}

/// Sets up logging: `RUST_LOG` filter (default `info`), text or JSON lines on stderr.
pub fn init_tracing(format: Option<LogFormat>) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let format = format.unwrap_or(if std::io::stderr().is_terminal() {
        LogFormat::Text
    } else {
        LogFormat::Json
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => futures::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT: shutting down"),
    }
}

/// Runs the operator until SIGTERM/SIGINT: the controller (in or out of the cluster: in-cluster
/// config, else `KUBECONFIG`) and the metrics server. In-flight passes finish before it returns.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes client: neither in-cluster config nor KUBECONFIG works")?;
    let metrics = Arc::new(Metrics::new());
    let listener = metrics::bind(args.metrics_addr)
        .await
        .with_context(|| format!("binding --metrics-addr {}", args.metrics_addr))?;
    info!(
        metrics = %listener.local_addr()?,
        namespace = args.namespace.as_deref().unwrap_or("(all)"),
        cluster_domain = %args.cluster_domain,
        "proglog-operator starting"
    );
    let shutdown = shutdown_signal().boxed().shared();
    // The metrics server stops after the controller (so /metrics covers the last passes).
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(metrics::serve(listener, metrics.clone(), async {
        let _ = server_stopped.await;
    }));
    let opts = Options {
        namespace: args.namespace,
        cluster_domain: args.cluster_domain,
    };
    controller::run(client, opts, metrics, shutdown).await;
    let _ = stop_server.send(());
    server.await?.context("metrics server")?;
    info!("proglog-operator stopped");
    Ok(())
}
