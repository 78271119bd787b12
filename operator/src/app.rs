//! The operator process: its flags, logging, signal handling, and the wiring of the controller
//! with the metrics server. `main.rs` only parses [`Args`] and calls [`run`].

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use futures::FutureExt;
use tracing::info;

use crate::controller::{self, Options};
use crate::leader;
use crate::metrics::{self, Metrics};
use crate::pki;
use crate::users;

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
    /// Reconcile only while holding the Lease `--lease-name` in `--lease-namespace` (run several
    /// replicas; the others stand by). Off: reconcile at once (one replica only).
    #[arg(long, env = "PROGLOG_OPERATOR_LEADER_ELECTION")]
    pub leader_election: bool,
    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "PROGLOG_OPERATOR_LEASE_NAME",
        default_value = "proglog-operator"
    )]
    pub lease_name: String,
    /// Namespace of the Lease (in a pod: its own, from the downward API).
    #[arg(
        long,
        env = "PROGLOG_OPERATOR_LEASE_NAMESPACE",
        default_value = "proglog-system"
    )]
    pub lease_namespace: String,
    /// This process's identity in the Lease. Default: `$HOSTNAME_<8 random hex digits>` (the
    /// pod name and a suffix new at every start).
    #[arg(long, env = "PROGLOG_OPERATOR_IDENTITY")]
    pub identity: Option<String>,
    /// Seconds a Lease stays valid after its last renewal; a standby takes over at most this
    /// long (plus one renewal attempt) after the leader dies.
    #[arg(long, env = "PROGLOG_OPERATOR_LEASE_SECONDS", default_value_t = 10)]
    pub lease_seconds: u64,
    /// Lifetime of the member and operator certificates the operator issues, in seconds.
    /// Default 90 days.
    #[arg(long, env = "PROGLOG_OPERATOR_CERT_VALIDITY_SECS", default_value_t = pki::LEAF_VALIDITY.as_secs())]
    pub cert_validity_secs: u64,
    /// Re-issue a certificate once less than this is left of it, in seconds (below
    /// --cert-validity-secs). Default 30 days.
    #[arg(long, env = "PROGLOG_OPERATOR_CERT_RENEW_BEFORE_SECS", default_value_t = pki::RENEW_BEFORE.as_secs())]
    pub cert_renew_before_secs: u64,
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
    let validity = pki::Validity {
        leaf: std::time::Duration::from_secs(args.cert_validity_secs),
        renew_before: std::time::Duration::from_secs(args.cert_renew_before_secs),
    };
    validity.check().map_err(anyhow::Error::msg)?;
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
        namespace: args.namespace.clone(),
        cluster_domain: args.cluster_domain.clone(),
        validity,
    };
    let mut lost = None;
    match election(&args)? {
        None => {
            metrics.set_leader(true);
            reconcilers(client, opts, metrics, shutdown).await
        }
        Some(e) => {
            // NB: a standby is ready (healthy, waiting); it reconciles only once it leads.
            metrics.set_ready();
            let work = reconcilers(client.clone(), opts, metrics.clone(), shutdown.clone());
            let on_lead = || metrics.set_leader(true);
            if let leader::Ended::Lost(why) =
                leader::lead(client, &e, shutdown, on_lead, work).await?
            {
                lost = Some(why);
            }
        }
    }
    let _ = stop_server.send(());
    server.await?.context("metrics server")?;
    if let Some(why) = lost {
        // Exit so that this replica stops acting at once; it restarts as a standby.
        anyhow::bail!("lost the leader-election lease ({why})");
    }
    info!("proglog-operator stopped");
    Ok(())
}

/// What reconciles, until `shutdown`: the ProgLog controller and the ProgLogUser controller.
async fn reconcilers<S>(client: kube::Client, opts: Options, metrics: Arc<Metrics>, shutdown: S)
where
    S: std::future::Future<Output = ()> + Clone + Send + Sync + 'static,
{
    let users = users::run(client.clone(), opts.clone(), shutdown.clone());
    futures::join!(controller::run(client, opts, metrics, shutdown), users);
}

/// The election settings, when `--leader-election` is on.
fn election(args: &Args) -> anyhow::Result<Option<leader::Election>> {
    if !args.leader_election {
        return Ok(None);
    }
    let identity = match &args.identity {
        Some(i) => i.clone(),
        None => {
            let host =
                std::env::var("HOSTNAME").context("--identity not given and no $HOSTNAME")?;
            // NB: one identity per process, not per pod. A container restarted after a crash
            // would otherwise find the Lease naming it and act at once, before the Lease ran
            // out: the Lease would then no longer fence off a predecessor that is not quite
            // gone. A new process stands by like any other replica.
            format!("{host}_{:08x}", rand::random::<u32>())
        }
    };
    anyhow::ensure!(
        args.lease_seconds >= 3,
        "--lease-seconds must be at least 3 (a third of it is the renewal margin)"
    );
    Ok(Some(leader::Election {
        namespace: args.lease_namespace.clone(),
        lease: args.lease_name.clone(),
        identity,
        duration_secs: args.lease_seconds,
        grace_secs: (args.lease_seconds / 3).max(1),
    }))
}
