//! One running member: opens the storage, starts Raft and the gRPC server (Log, Cluster, Raft,
//! Health, reflection) on one port, keeps health and retention up to date, and shuts it all down
//! in order (stop accepting, finish in-flight calls, stop Raft, sync the log). A leader that stops
//! gracefully first hands leadership to another voter ([`Node::step_down`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use proglog_proto::raft::v1::raft_server::RaftServer;
use proglog_proto::v1::acl_server::AclServer;
use proglog_proto::v1::cluster_server::ClusterServer;
use proglog_proto::v1::log_server::LogServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt as _;
use tonic_health::ServingStatus;

use crate::config::Config;
use crate::metrics::{self, Metrics};
use crate::raft::election::{self, Liveness};
use crate::raft::network::{Dialer, NetFilter, Network};
use crate::raft::notice::{self, Notices};
use crate::raft::state_machine::SmShared;
use crate::raft::{open_storage, Member, NodeId, Raft};
use crate::service::acl::Acl;
use crate::service::acl_admin::AclService;
use crate::service::book::BookServer;
use crate::service::cluster::ClusterService;
use crate::service::guard::{Authz, GuardLayer, Rules};
use crate::service::log::LogService;
use crate::service::peer::PeerService;
use crate::service::{transfer, Ctx};

/// How long shutdown waits for in-flight calls to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long a graceful stop may spend handing leadership over, in leader leases
/// (`election_timeout_max`): one transfer takes about 1.2 leases plus an election.
const STEP_DOWN_LEASES: u32 = 4;
/// Streams a client may reset before this member accepted them, per connection, before the
/// connection is refused with GOAWAY (h2 defaults to 20). NB: a peer whose calls to a stalled
/// member time out resets every one of them; when the member resumes it reads them all at once,
/// and with the default the leader's connection was torn down with RESOURCE_EXHAUSTED.
const PEER_RESET_STREAMS: usize = 4096;
/// The largest HTTP/2 DATA frame this member accepts (h2 defaults to 16 KiB). NB: an
/// AppendEntries of a few hundred KiB (a ProduceBatch group) otherwise arrives as dozens of
/// frames, each a write on the sender and a wake-up of the reader on this side; measured on
/// loopback its transfer took longer than the follower's fsync.
const MAX_FRAME_BYTES: u32 = 1 << 20;
/// The gRPC services named in the call metrics' labels (other paths count as `unknown`).
const SERVICES: [&str; 7] = [
    <LogServer<LogService> as tonic::server::NamedService>::NAME,
    <ClusterServer<ClusterService> as tonic::server::NamedService>::NAME,
    <AclServer<AclService> as tonic::server::NamedService>::NAME,
    <RaftServer<PeerService> as tonic::server::NamedService>::NAME,
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];
/// How long a graceful stop waits for a voter to answer before it skips that voter.
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);

/// Errors starting or stopping a member.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] crate::config::Error),
    #[error("opening the log: {0}")]
    Open(#[from] crate::raft::OpenError),
    #[error("raft config: {0}")]
    RaftConfig(#[from] openraft::ConfigError),
    #[error("starting raft: {0}")]
    Raft(String),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("gRPC server: {0}")]
    Server(#[from] tonic::transport::Error),
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("binding the metrics listener {addr}: {source}")]
    MetricsBind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("syncing the log: {0}")]
    Sync(#[from] crate::raft::log_store::Error),
    #[error("TLS: {0}")]
    Tls(#[from] proglog_tls::Error),
    #[error(transparent)]
    Acl(#[from] crate::service::acl::Error),
}

/// Result with the node [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What [`Node::step_down`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepDown {
    /// This member did not lead: nothing to hand over.
    NotLeader,
    /// This member is the only voter: nobody to hand over to.
    NoOtherVoter,
    /// Leadership moved to this member.
    HandedOver(NodeId),
    /// Leadership did not move, for this reason.
    Failed(String),
}

/// A running member.
pub struct Node {
    id: NodeId,
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    ctx: Ctx,
    raft: Raft,
    sm: Arc<SmShared>,
    notices: Arc<Notices>,
    shutdown_tx: watch::Sender<bool>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Node {
    /// Starts a member with its own (empty) network filter.
    pub async fn start(cfg: Config) -> Result<Node> {
        Self::start_with_filter(cfg, Arc::new(NetFilter::default())).await
    }

    /// Starts a member whose peer traffic goes through `filter` (tests cut links with it).
    pub async fn start_with_filter(cfg: Config, filter: Arc<NetFilter>) -> Result<Node> {
        cfg.validate()?;
        let listener = TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: cfg.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: cfg.listen,
            source,
        })?;
        let advertise = if !cfg.advertise.is_empty() {
            cfg.advertise.clone()
        } else if addr.ip().is_unspecified() {
            tracing::warn!("no --advertise given and listening on {addr}; advertising 127.0.0.1");
            format!("127.0.0.1:{}", addr.port())
        } else {
            addr.to_string()
        };

        let mut tasks = Vec::new();
        let tls = match &cfg.tls {
            None => {
                tracing::warn!(
                    "serving PLAINTEXT: no TLS flags given; anyone who reaches {addr} may \
                     produce, consume and talk Raft (use --tls-ca/--tls-cert/--tls-key)"
                );
                None
            }
            Some(t) => {
                let material = proglog_tls::Reloading::load(t.files.clone())?;
                tasks.push(material.spawn_watch(t.reload_every));
                let acl = Acl::load(&t.acl_model, &t.acl_policy).await?;
                tasks.push(acl.spawn_watch(t.reload_every));
                let authz = Authz {
                    rules: Rules::proglog(),
                    acl,
                    member_identity: t
                        .member_identity
                        .clone()
                        .unwrap_or_else(|| material.subject()),
                    admin_identity: t.admin_identity.clone(),
                };
                tracing::info!(
                    subject = %material.subject(),
                    member_identity = %authz.member_identity,
                    admin_identity = %authz.admin_identity,
                    "mutual TLS on every plane"
                );
                Some((
                    proglog_tls::server::config(&material)?,
                    Dialer::tls(proglog_tls::ClientTls::mutual(material)?),
                    Arc::new(authz),
                ))
            }
        };
        let dialer = tls.as_ref().map(|t| t.1.clone()).unwrap_or_default();

        let mut log_cfg = cfg.log.clone();
        log_cfg.dir = cfg.data_dir.clone();
        let (log_store, sm) = open_storage(log_cfg)?;
        let sm_shared = sm.shared();
        sm_shared.log().set_local_id(cfg.id);
        let raft_cfg = openraft::Config {
            cluster_name: "proglog".into(),
            heartbeat_interval: cfg.heartbeat.as_millis() as u64,
            // NB: openraft's own election timer is off: `raft::election` campaigns, after a
            // pre-vote. openraft still uses `election_timeout_max` as the leader lease (a
            // follower refuses votes for that long after its leader's last message) and
            // `election_timeout_min` as the timeout of a vote RPC.
            enable_elect: false,
            election_timeout_min: cfg.election_timeout.as_millis() as u64 / 2,
            election_timeout_max: cfg.election_timeout.as_millis() as u64,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshot_every),
            // NB: without retention openraft never purges, so a member that fell behind always
            // catches up from the log itself; with it, openraft may forget entries older than the
            // retained window, and retention may then drop them from disk.
            max_in_snapshot_log_to_keep: if cfg.retain_entries == 0 {
                u64::MAX
            } else {
                cfg.retain_entries
            },
            install_snapshot_timeout: 10_000,
            max_payload_entries: 256,
            ..Default::default()
        }
        .validate()?;
        let election_timeout_max = Duration::from_millis(raft_cfg.election_timeout_max);
        let notices = Notices::new(cfg.commit_notice_delay, cfg.heartbeat);
        let network = Network::new(cfg.id, filter.clone(), cfg.max_peer_message_bytes)
            .with_dialer(dialer.clone())
            .with_commit_cap(sm_shared.log().flush_queue().clone())
            .with_notices(notices.clone());
        let network = if cfg.raft_pipeline {
            network.with_pipelining(sm_shared.log().clone())
        } else {
            network
        };
        let raft = Raft::new(cfg.id, Arc::new(raft_cfg), network, log_store, sm)
            .await
            .map_err(|e| Error::Raft(e.to_string()))?;

        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let metrics = Arc::new(Metrics::new(
            raft.clone(),
            sm_shared.clone(),
            cfg.data_dir.clone(),
            &SERVICES,
        ));
        // What the health service says of the Log service, for the metrics listener's /readyz.
        let (serving_tx, serving_rx) = watch::channel(false);
        let (metrics_addr, metrics_task) = match cfg.metrics_listen {
            Some(a) => {
                let (bound, task) =
                    metrics::serve(a, metrics.clone(), serving_rx, shutdown_rx.clone())
                        .await
                        .map_err(|source| Error::MetricsBind { addr: a, source })?;
                (Some(bound), Some(task))
            }
            None => (None, None),
        };
        let liveness = Arc::new(Liveness::new(election_timeout_max));
        let ctx = Ctx {
            id: cfg.id,
            me: Member {
                addr: advertise,
                name: cfg.name.clone(),
            },
            raft: raft.clone(),
            sm: sm_shared.clone(),
            max_record_bytes: cfg.max_record_bytes,
            admin_token: cfg.admin_token.clone(),
            admin_by_certificate: tls.is_some(),
            dialer: dialer.clone(),
            election_timeout_max,
            liveness: liveness.clone(),
            filter: filter.clone(),
            shutdown: shutdown_rx.clone(),
            writes: Arc::default(),
            handed_over: Arc::default(),
        };

        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        health.set_not_serving::<LogServer<LogService>>().await;
        health.set_not_serving::<BookServer>().await;
        // Both reflection versions: older grpcurl releases only speak v1alpha.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(proglog_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;

        tasks.push(tokio::spawn(keep_health(
            raft.clone(),
            health,
            serving_tx,
            shutdown_rx.clone(),
        )));
        tasks.extend(metrics_task);
        tasks.push(tokio::spawn(keep_liveness(
            raft.clone(),
            liveness.clone(),
            metrics_throttle(election_timeout_max),
            shutdown_rx.clone(),
        )));
        let driver = election::Driver {
            raft: raft.clone(),
            heartbeat: cfg.heartbeat,
            me: cfg.id,
            liveness,
            filter,
            timing: election::Timing::new(election_timeout_max),
            dialer,
        };
        tasks.push(tokio::spawn(election::run(driver, shutdown_rx.clone())));
        tasks.push(tokio::spawn(crate::stats::report(shutdown_rx.clone())));
        tasks.push(tokio::spawn(notice::run(
            notices.clone(),
            raft.clone(),
            shutdown_rx.clone(),
        )));
        tasks.push(tokio::spawn(resend_capped_commits(
            raft.clone(),
            sm_shared.log().flush_queue().clone(),
            notices.clone(),
            shutdown_rx.clone(),
        )));
        if cfg.retain_entries > 0 {
            tasks.push(tokio::spawn(keep_retention(
                raft.clone(),
                sm_shared.clone(),
                cfg.retain_entries,
                metrics_throttle(election_timeout_max),
                shutdown_rx.clone(),
            )));
        }

        // One Log service (one group commit queue) behind both APIs, ours and the book's.
        let log_service = LogService::with_group_commit(
            ctx.clone(),
            cfg.group_commit_depth,
            cfg.max_request_bytes(),
            cfg.group_commit_wait,
        );
        let mut stop = shutdown_rx.clone();
        let stop = async move {
            let _ = stop.wait_for(|&s| s).await;
        };
        let router = tonic::transport::Server::builder()
            .http2_max_pending_accept_reset_streams(Some(PEER_RESET_STREAMS))
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(5)))
            .max_frame_size(MAX_FRAME_BYTES)
            .layer(metrics.layer())
            .layer(GuardLayer::new(tls.as_ref().map(|t| t.2.clone())))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(
                LogServer::new(log_service.clone())
                    .max_decoding_message_size(cfg.max_request_bytes()),
            )
            .add_service(BookServer::new(
                log_service,
                shutdown_rx.clone(),
                cfg.max_request_bytes(),
            ))
            .add_service(ClusterServer::new(ClusterService::new(ctx.clone())))
            .add_service(AclServer::new(AclService::new(
                tls.as_ref().map(|t| t.2.acl.clone()),
                cfg.admin_token.clone(),
            )))
            .add_service(
                RaftServer::new(PeerService::new(ctx.clone()).with_delay(cfg.peer_delay))
                    .max_decoding_message_size(cfg.max_peer_message_bytes)
                    .max_encoding_message_size(cfg.max_peer_message_bytes),
            );
        let server = match tls {
            Some((server_config, _, _)) => tokio::spawn(router.serve_with_incoming_shutdown(
                proglog_tls::server::incoming(listener, server_config),
                stop,
            )),
            None => {
                // NB: small unary replies must not wait for Nagle + delayed ACK (40 ms each).
                let incoming = TcpListenerStream::new(listener).map(|s| {
                    if let Ok(s) = &s {
                        let _ = s.set_nodelay(true);
                    }
                    s
                });
                tokio::spawn(router.serve_with_incoming_shutdown(incoming, stop))
            }
        };
        tracing::info!(id = cfg.id, %addr, metrics = ?metrics_addr, "member started");
        Ok(Node {
            id: cfg.id,
            addr,
            metrics_addr,
            ctx,
            raft,
            sm: sm_shared,
            notices,
            shutdown_tx,
            server,
            tasks,
        })
    }

    /// The member's node id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The address the server is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of the metrics listener (`/metrics`), if `metrics_listen` was set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The Raft handle.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Leader liveness as the election driver sees it (tests turn the pre-vote off with it).
    pub fn liveness(&self) -> &Arc<Liveness> {
        &self.ctx.liveness
    }

    /// How this member, as a leader, tells followers its commit index (counters for tests).
    pub fn commit_notices(&self) -> &Arc<Notices> {
        &self.notices
    }

    /// The state machine (record reads, readable range).
    pub fn records(&self) -> &Arc<SmShared> {
        &self.sm
    }

    /// Drops whole segments below Raft index `below` (never entries Raft still needs); returns
    /// the first readable record offset.
    pub fn apply_retention(&self, below: u64) -> Result<u64, crate::raft::state_machine::Error> {
        self.sm.apply_retention(below)
    }

    /// How long [`Node::step_down`] may take when this member stops gracefully.
    pub fn step_down_deadline(&self) -> Duration {
        self.ctx.election_timeout_max * STEP_DOWN_LEASES
    }

    /// Before a graceful stop: if this member leads and another voter exists, hands leadership to
    /// the voter holding the most of the log (new writes wait meanwhile, then get the new
    /// leader's hint), so clients see a short handoff instead of an election timeout. Gives up
    /// after `deadline`; the member is left running either way, to be shut down.
    pub async fn step_down(&self, deadline: Duration) -> StepDown {
        if !self.ctx.is_leader() {
            return StepDown::NotLeader;
        }
        let started = tokio::time::Instant::now();
        let candidates = transfer::successors(&self.ctx.metrics(), self.id);
        if candidates.is_empty() {
            tracing::info!("stopping the only voter: no leadership to hand over");
            return StepDown::NoOtherVoter;
        }
        // NB: a voter that stopped answering looks as caught up as a live one when the log is
        // idle; hand over to the first one that answers.
        let mut target = None;
        for (id, addr) in candidates {
            if transfer::answers(&self.ctx.dialer, &addr, PROBE_TIMEOUT).await {
                target = Some((id, addr));
                break;
            }
            tracing::info!(id, "voter does not answer; not handing leadership to it");
        }
        let Some((target, addr)) = target else {
            tracing::warn!("no other voter answers; stopping without handing leadership over");
            return StepDown::Failed("no other voter answers".into());
        };
        tracing::info!(target, "stopping the leader: handing leadership over first");
        let left = deadline.saturating_sub(started.elapsed());
        let moved = tokio::time::timeout(left, transfer::transfer(&self.ctx, target, &addr));
        let outcome = match moved.await {
            Ok(Ok(leader)) | Ok(Err(transfer::Error::OtherWon { other: leader, .. })) => {
                StepDown::HandedOver(leader)
            }
            Ok(Err(e)) => StepDown::Failed(e.to_string()),
            Err(_) => StepDown::Failed(format!("not done within {deadline:?}")),
        };
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match &outcome {
            StepDown::HandedOver(leader) => {
                tracing::info!(leader, elapsed_ms, "leadership handed over")
            }
            StepDown::Failed(why) => tracing::warn!(
                elapsed_ms,
                "leadership not handed over ({why}); stopping anyway"
            ),
            StepDown::NotLeader | StepDown::NoOtherVoter => {}
        }
        outcome
    }

    /// Graceful shutdown: stop accepting, finish in-flight calls, end streams, stop Raft, sync.
    pub async fn shutdown(self) -> Result<()> {
        self.shutdown_tx.send_replace(true);
        let mut server = self.server;
        let served = match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!(
                    "in-flight calls did not finish within {SHUTDOWN_GRACE:?}; dropping them"
                );
                server.abort();
                Ok(Ok(()))
            }
        };
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
        for t in self.tasks {
            t.abort();
        }
        self.sm.log().sync()?;
        tracing::info!(id = self.id, "member stopped");
        match served {
            Ok(r) => r.map_err(Error::from),
            Err(e) => Err(Error::Raft(format!("server task: {e}"))),
        }
    }

    /// Stops the member abruptly (tests: a crash without a final sync of metadata).
    pub async fn kill(self) {
        self.shutdown_tx.send_replace(true);
        self.server.abort();
        let _ = self.raft.shutdown().await;
        for t in self.tasks {
            t.abort();
        }
    }
}

/// Sends a heartbeat when the leader's background fsync has caught up after a commit index sent
/// to the followers was capped (see [`crate::raft::flush`]): they learn the full commit index
/// now instead of with the next write or periodic heartbeat. With commit notices on, the capped
/// index stays owed to them and arrives as any other (see [`crate::raft::notice`]).
async fn resend_capped_commits(
    raft: Raft,
    flush: Arc<crate::raft::flush::FlushQueue>,
    notices: Arc<Notices>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = flush.caught_up() => {}
            _ = shutdown.wait_for(|&s| s) => return,
        }
        if flush.take_capped() && !notices.enabled() {
            crate::stats::add(&crate::stats::STATS.capped_resends, 1);
            let _ = raft.trigger().heartbeat().await;
        }
    }
}

/// The book's service name, `log.v1.Log`.
const BOOK_LOG: &str = <BookServer as tonic::server::NamedService>::NAME;

/// SERVING while a leader is known (the log is open for as long as the member runs).
async fn keep_health(
    raft: Raft,
    health: tonic_health::server::HealthReporter,
    serving_tx: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    // NB: the server metrics change only with the role, the leader or the membership; the full
    // metrics change several times per write.
    let mut metrics = raft.server_metrics();
    let mut serving = None;
    loop {
        let ok = metrics.borrow_and_update().current_leader.is_some();
        if serving != Some(ok) {
            let status = if ok {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            health.set_service_status("", status).await;
            health.set_service_status("proglog.v1.Log", status).await;
            health.set_service_status(BOOK_LOG, status).await;
            serving_tx.send_replace(ok);
            serving = Some(ok);
        }
        tokio::select! {
            r = metrics.changed() => if r.is_err() { break },
            _ = shutdown.wait_for(|&s| s) => break,
        }
    }
    serving_tx.send_replace(false);
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    health
        .set_service_status("proglog.v1.Log", ServingStatus::NotServing)
        .await;
    health
        .set_service_status(BOOK_LOG, ServingStatus::NotServing)
        .await;
}

/// How often at most the tasks that follow openraft's full metrics look at them: they change
/// several times per write, and a wake-up per change costs context switches per record.
fn metrics_throttle(lease: Duration) -> Duration {
    (lease / 16).clamp(Duration::from_millis(1), Duration::from_millis(50))
}

/// Waits for the next change of `rx`, but returns no sooner than `every` from now; false when
/// the sender is gone.
async fn next_change<T>(rx: &mut watch::Receiver<T>, every: Duration) -> bool {
    tokio::time::sleep(every).await;
    rx.changed().await.is_ok()
}

/// Feeds metrics updates to [`Liveness::observe`] (a leader's last quorum acknowledgement), at
/// most one per `every`.
///
/// NB: `observe` then sees a role change up to `every` late, and its quorum acknowledgement time
/// is up to `every` old (`quorum_lost` errs that much early): a small part of the lease.
async fn keep_liveness(
    raft: Raft,
    liveness: Arc<Liveness>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut metrics = raft.metrics();
    loop {
        liveness.observe(&metrics.borrow_and_update());
        tokio::select! {
            r = next_change(&mut metrics, every) => if !r { break },
            _ = shutdown.wait_for(|&s| s) => break,
        }
    }
}

/// Drops old segments so that about `keep` entries stay, after each snapshot (looking at most
/// once per `every`).
async fn keep_retention(
    raft: Raft,
    sm: Arc<SmShared>,
    keep: u64,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut metrics = raft.metrics();
    let mut last_snapshot = None;
    loop {
        let (snap, last) = {
            let m = metrics.borrow_and_update();
            (m.snapshot, m.last_log_index)
        };
        if snap != last_snapshot {
            last_snapshot = snap;
            if let Some(last) = last {
                let below = (last + 1).saturating_sub(keep);
                if let Err(e) = sm.apply_retention(below) {
                    tracing::warn!("retention: {e}");
                }
            }
        }
        tokio::select! {
            r = next_change(&mut metrics, every) => if !r { break },
            _ = shutdown.wait_for(|&s| s) => break,
        }
    }
}
