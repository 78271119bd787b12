//! The ProgLog member: a segmented on-disk commit log ([`storage`]), replicated with Raft
//! ([`raft`]) and served over gRPC ([`service`]). [`node`] wires them into one running member;
//! [`config`] holds its settings; [`metrics`] its Prometheus metrics; [`run`] is what the `logserver` binary does.
#![deny(unsafe_code)] // NB: allowed only in storage::index, which maps the index file.

pub mod config;
pub mod metrics;
pub mod node;
pub mod raft;
pub mod service;
pub mod stats;
pub mod storage;

use std::io::IsTerminal;

/// Logs to stdout: human-readable on a terminal, JSON lines otherwise. `RUST_LOG` filters
/// (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = if std::io::stdout().is_terminal() {
        builder.try_init()
    } else {
        builder.json().flatten_event(true).try_init()
    };
}

/// Runs a member until SIGTERM or Ctrl-C, then shuts it down gracefully: a leader first hands
/// leadership to another voter (a second signal skips that).
pub async fn run(args: config::Args) -> anyhow::Result<()> {
    let cfg = config::Config::try_from(args)?;
    let node = node::Node::start(cfg).await?;
    wait_for_signal().await?;
    tracing::info!("shutting down");
    tokio::select! {
        _ = node.step_down(node.step_down_deadline()) => {}
        r = wait_for_signal() => {
            r?;
            tracing::warn!("second signal: stopping without handing leadership over");
        }
    }
    node.shutdown().await?;
    Ok(())
}

async fn wait_for_signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        r = tokio::signal::ctrl_c() => r?,
    }
    Ok(())
}
