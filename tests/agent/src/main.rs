//! `devcluster-agent`: the devcluster's node agent (see the library docs).
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// Registers a Node and runs the pods bound to it as local processes.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// kubeconfig with the credentials the agent uses.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Name of the Node to register.
    #[arg(long, env = "DEVCLUSTER_NODE_NAME", default_value = "devcluster-node")]
    node_name: String,
    /// State directory (pods, logs, volumes, hosts files).
    #[arg(long)]
    state_dir: PathBuf,
    /// Directory of the binaries that images map to.
    #[arg(long)]
    bin_dir: PathBuf,
    /// The image table (IMAGE BINARY lines).
    #[arg(long)]
    images: PathBuf,
    /// The devcluster-launch helper; default: next to this binary.
    #[arg(long)]
    launcher: Option<PathBuf>,
    /// Address pods use for the API server.
    #[arg(long, default_value = "127.0.0.1")]
    api_host: String,
    /// Port pods use for the API server.
    #[arg(long)]
    api_port: u16,
    /// Cluster CA certificate (PEM); client certificates of the kubelet endpoint must chain to it.
    #[arg(long)]
    ca_file: PathBuf,
    /// Port of the kubelet-style endpoint serving container logs.
    #[arg(long, default_value_t = 10250)]
    kubelet_port: u16,
    /// Serving certificate of that endpoint (PEM); without it the endpoint is off.
    #[arg(long, requires = "kubelet_key")]
    kubelet_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, requires = "kubelet_cert")]
    kubelet_key: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let filter =
        || tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let fmt = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter());
    // Human-readable on a terminal, JSON lines in log files.
    if std::io::stderr().is_terminal() {
        fmt.init();
    } else {
        fmt.json().init();
    }
    let a = Args::parse();
    let launcher = match a.launcher {
        Some(l) => l,
        None => std::env::current_exe()?.with_file_name("devcluster-launch"),
    };
    let kc = Kubeconfig::read_from(&a.kubeconfig)
        .with_context(|| format!("reading {}", a.kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    let client = kube::Client::try_from(config)?;
    let cfg = devcluster_agent::Config {
        node_name: a.node_name,
        state_dir: a.state_dir,
        bin_dir: a.bin_dir,
        images_file: a.images,
        launcher,
        api_host: a.api_host,
        api_port: a.api_port,
        kubelet_tls: a.kubelet_cert.zip(a.kubelet_key).map(|(cert, key)| {
            devcluster_agent::kubelet::Tls {
                cert,
                key,
                client_ca: a.ca_file.clone(),
            }
        }),
        ca_file: a.ca_file,
        kubelet_port: a.kubelet_port,
    };
    devcluster_agent::agent::run(client, cfg).await?;
    Ok(())
}
