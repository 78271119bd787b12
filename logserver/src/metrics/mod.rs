//! The member's Prometheus metrics (prefix `proglog_`) and the HTTP listener that serves them
//! (`/metrics`, OpenMetrics text; `/healthz`). Owns every metric name; the rest of the member only
//! calls [`observe_fsync`] and [`snapshot_built`] / [`snapshot_installed`], and the server is
//! wrapped in [`rpc::RpcLayer`].
//!
//! - gRPC calls (rate, errors, latency per service, method and code): [`rpc`].
//! - Raft (term, last log, commit and applied index, snapshot, per-follower lag) and the log on
//!   disk (segments, bytes, record range): read from openraft's metrics and the data directory
//!   at each scrape ([`MemberCollector`]), so they are never stale and cost nothing between scrapes.
//! - fsync latency and snapshots: process-wide (NB: members started in one test process share
//!   them; a `logserver` process runs one member).

pub mod rpc;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::raft::state_machine::SmShared;
use crate::raft::{Raft, ServerState};

/// fsyncs of appended log data: 50 us .. ~52 s.
static FSYNC_SECONDS: LazyLock<Histogram> =
    LazyLock::new(|| Histogram::new(exponential_buckets(5e-5, 2.0, 21)));
static SNAPSHOTS_BUILT: LazyLock<Counter> = LazyLock::new(Counter::default);
static SNAPSHOTS_INSTALLED: LazyLock<Counter> = LazyLock::new(Counter::default);

/// Records one fsync of log data that took `secs`.
pub fn observe_fsync(secs: f64) {
    FSYNC_SECONDS.observe(secs);
}

/// Counts a snapshot built by this process's state machine.
pub fn snapshot_built() {
    SNAPSHOTS_BUILT.inc();
}

/// Counts a snapshot received from a leader and installed.
pub fn snapshot_installed() {
    SNAPSHOTS_INSTALLED.inc();
}

/// One member's metrics registry.
pub struct Metrics {
    registry: Registry,
    rpc: rpc::RpcMetrics,
}

impl Metrics {
    /// The registry of a member whose Raft is `raft`, state machine `sm`, data in `dir`; gRPC
    /// calls to the services in `services` are labelled by name.
    pub fn new(raft: Raft, sm: Arc<SmShared>, dir: PathBuf, services: &[&'static str]) -> Self {
        let mut registry = Registry::with_prefix("proglog");
        let rpc = rpc::RpcMetrics::register(&mut registry, services);
        registry.register(
            "fsync_seconds",
            "Time of each fsync of appended log data",
            FSYNC_SECONDS.clone(),
        );
        registry.register(
            "snapshots_built",
            "Snapshots (cuts of the log) built by this member",
            SNAPSHOTS_BUILT.clone(),
        );
        registry.register(
            "snapshots_installed",
            "Snapshots received from a leader and installed",
            SNAPSHOTS_INSTALLED.clone(),
        );
        registry.register_collector(Box::new(MemberCollector { raft, sm, dir }));
        Metrics { registry, rpc }
    }

    /// The layer that records gRPC calls into these metrics.
    pub fn layer(&self) -> rpc::RpcLayer {
        rpc::RpcLayer::new(self.rpc.clone())
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Label of a follower in the leader's replication metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    /// Raft node id.
    peer_id: String,
    /// Member name (the pod name under the operator).
    peer: String,
}

/// Reads Raft's metrics and the data directory at each scrape.
struct MemberCollector {
    raft: Raft,
    sm: Arc<SmShared>,
    dir: PathBuf,
}

impl std::fmt::Debug for MemberCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberCollector")
            .field("dir", &self.dir)
            .finish()
    }
}

impl MemberCollector {
    fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> std::fmt::Result {
        let g = ConstGauge::new(v);
        g.encode(e.encode_descriptor(name, help, None, MetricType::Gauge)?)
    }
}

impl Collector for MemberCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let m = self.raft.metrics().borrow().clone();
        let idx = |l: Option<u64>| l.map_or(-1, |i| i as i64);
        let leads = m.state == ServerState::Leader;
        let membership = m.membership_config.membership();
        let voters = membership.voter_ids().count() as i64;
        let members = membership.nodes().count() as i64;
        let applied = idx(m.last_applied.map(|l| l.index));
        for (name, help, v) in [
            ("raft_term", "Current Raft term", m.current_term as i64),
            ("raft_is_leader", "1 when this member leads", leads as i64),
            (
                "raft_has_leader",
                "1 when this member knows a leader",
                m.current_leader.is_some() as i64,
            ),
            (
                "raft_voters",
                "Voters in the membership this member holds",
                voters,
            ),
            (
                "raft_learners",
                "Learners in the membership this member holds",
                members - voters,
            ),
            (
                "raft_last_log_index",
                "Index of the last entry in this member's log (-1: none)",
                idx(m.last_log_index),
            ),
            // NB: openraft 0.9 publishes no commit index; entries are applied as soon as they
            // are committed (and, on the leader, durable), so it equals the applied index, as
            // in Cluster.Status.
            (
                "raft_commit_index",
                "Highest index known committed here (= applied index)",
                applied,
            ),
            (
                "raft_applied_index",
                "Highest index applied to the state machine (-1: none)",
                applied,
            ),
            (
                "raft_snapshot_index",
                "Last index covered by the current snapshot (-1: none)",
                idx(m.snapshot.map(|l| l.index)),
            ),
            (
                "raft_purged_index",
                "Last index purged from the log (-1: none)",
                idx(m.purged.map(|l| l.index)),
            ),
        ] {
            Self::gauge(&mut e, name, help, v)?;
        }
        if let Some(repl) = m.replication.as_ref().filter(|_| leads) {
            // Entries held: last index + 1 (indexes start at 0).
            let held = |i: Option<u64>| i.map_or(0, |i| i + 1);
            let last = held(m.last_log_index);
            let peers: Vec<_> = repl
                .iter()
                .filter(|(id, _)| **id != m.id)
                .map(|(id, matched)| {
                    let name = membership
                        .get_node(id)
                        .map(|n| n.name.clone())
                        .unwrap_or_default();
                    let labels = PeerLabels {
                        peer_id: id.to_string(),
                        peer: name,
                    };
                    (labels, matched.map(|l| l.index))
                })
                .collect();
            for (name, help, lag) in [
                (
                    "raft_follower_matched_index",
                    "Leader only: last index known replicated to a follower (-1: none)",
                    false,
                ),
                (
                    "raft_follower_lag_entries",
                    "Leader only: entries a follower is behind the leader's last log index",
                    true,
                ),
            ] {
                let mut fam = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
                for (labels, matched) in &peers {
                    let v = match (lag, matched) {
                        (true, m) => last.saturating_sub(held(*m)) as i64,
                        (false, m) => idx(*m),
                    };
                    ConstGauge::new(v).encode(fam.encode_family(labels)?)?;
                }
            }
        }
        let (first, next) = self.sm.range();
        Self::gauge(
            &mut e,
            "log_first_offset",
            "First record offset this member serves",
            first as i64,
        )?;
        Self::gauge(
            &mut e,
            "log_next_offset",
            "Offset the next record appended will get",
            next as i64,
        )?;
        let (segments, bytes) = disk_use(&self.dir);
        Self::gauge(
            &mut e,
            "log_segments",
            "Segments of the log on disk",
            segments as i64,
        )?;
        Self::gauge(
            &mut e,
            "log_disk_bytes",
            "Disk space taken by the files of the data directory, in bytes",
            bytes as i64,
        )?;
        let quorum_ack = m.millis_since_quorum_ack.filter(|_| leads);
        let age = quorum_ack.map_or(-1.0, |ms| ms as f64 / 1e3);
        ConstGauge::new(age).encode(e.encode_descriptor(
            "raft_quorum_ack_age_seconds",
            "Leader only: time since a quorum last acknowledged it (-1: not leader)",
            None,
            MetricType::Gauge,
        )?)?;
        Ok(())
    }
}

/// (segments, bytes) under the data directory (the log lives in `<dir>/log`): `*.store` files,
/// and the disk space every regular file takes, a few directory levels deep.
fn disk_use(dir: &std::path::Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt as _;
    fn walk(dir: &std::path::Path, depth: u32, acc: &mut (u64, u64)) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in rd.flatten() {
            let Ok(md) = entry.metadata() else { continue };
            if md.is_dir() && depth > 0 {
                walk(&entry.path(), depth - 1, acc);
            } else if md.is_file() {
                // NB: allocated blocks, as `du` counts: index files are preallocated sparse.
                acc.1 += md.blocks() * 512;
                if entry.file_name().to_string_lossy().ends_with(".store") {
                    acc.0 += 1;
                }
            }
        }
    }
    let mut acc = (0, 0);
    walk(dir, 2, &mut acc);
    acc
}

/// Binds `addr` and serves `/metrics`, `/healthz` (the process answers) and `/readyz` (200 while
/// `serving` is true: the gRPC health service's SERVING, 503 otherwise) until `shutdown` flips;
/// returns the bound address. NB: `/readyz` is the kubelet's readiness probe under TLS, which
/// its gRPC probe cannot speak.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    serving: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    use axum::http::{header, StatusCode};
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let body = metrics.encode();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        body,
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = *serving.borrow();
                async move {
                    if ready {
                        (StatusCode::OK, "serving\n")
                    } else {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "not serving: no leader known\n",
                        )
                    }
                }
            }),
        );
    let task = tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown.wait_for(|&s| s).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::warn!("metrics server: {e}");
        }
    });
    Ok((bound, task))
}
