//! The peer network: openraft's `RaftNetwork` over the `proglog.raft.v1.Raft` tonic service.
//!
//! openraft requests and responses travel as bincode inside `RaftRequest`/`RaftReply` bytes; a
//! remote `RaftError` comes back in `RaftReply.error`. [`NetFilter`] lets tests cut links between
//! chosen members (both directions) without touching sockets.
//!
//! **Pipelining** (`--raft-pipeline`, [`Network::with_pipelining`]). openraft 0.9 keeps one
//! AppendEntries in flight per follower: entries written meanwhile wait for its answer. With
//! pipelining on, while openraft's AppendEntries is in flight the peer client sends the entries
//! that follow it in this member's log at once ([`AheadPlan`]): same vote, `prev` = the last
//! entry of the one in flight, the same commit index. The follower takes AppendEntries in
//! arrival order (`service::peer`), so it holds the first when the second arrives. When openraft
//! then asks for those entries (same vote and `prev`), the follower's `Success` to the one sent
//! ahead is its answer, and only entries past it go out (`PeerClient::answered_ahead`).
//!
//! NB: why that is safe. A leader's log only grows within its term, so entries after `prev`
//! under one vote are the ones openraft would send; the follower checks them as openraft does
//! (it is openraft's own `append_entries` that answers); and a `Success` used later is a late
//! answer, which Raft allows: the follower acknowledged while holding the entries from this
//! leader, before it could have voted in a later term. Any other answer, a changed vote or
//! `prev`, or a failure drops what was sent ahead and openraft's request goes out whole. The
//! commit index the follower did not get that way is owed to it (`super::notice`).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{NetworkError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use proglog_proto::raft::v1::raft_client::RaftClient;
use proglog_proto::raft::v1::{RaftReply, RaftRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use super::flush::FlushQueue;
use super::log_store::LogShared;
use super::notice::{Follower, Notices, Sending};
use super::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotError, InstallSnapshotRequest,
    InstallSnapshotResponse, LogId, Member, NodeId, RaftError, RpcError, TypeConfig, Vote,
    VoteRequest, VoteResponse,
};
use crate::stats;

/// Approximate encoded size of an entry.
fn entry_size(e: &super::Entry) -> usize {
    match &e.payload {
        super::EntryPayload::Normal(b) => b.0.len() + 64,
        _ => 256,
    }
}

/// Links cut on purpose (tests): traffic between two members in either direction is dropped.
#[derive(Debug, Default)]
pub struct NetFilter {
    cut: Mutex<HashSet<(NodeId, NodeId)>>,
}

impl NetFilter {
    /// Cuts the link between `a` and `b`.
    pub fn cut(&self, a: NodeId, b: NodeId) {
        let mut c = self.cut.lock().unwrap_or_else(|p| p.into_inner());
        c.insert((a, b));
        c.insert((b, a));
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.cut.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// True when traffic from `from` to `to` is dropped.
    pub fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.cut
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&(from, to))
    }
}

/// Serializes a peer message.
pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    bincode::serialize(v).expect("openraft messages serialize")
}

/// Deserializes a peer message.
pub fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, bincode::Error> {
    bincode::deserialize(b)
}

/// How this member dials its peers: plaintext, or mutual TLS with its own (reloading)
/// certificate, verifying each peer against the CA bundle under the host name it dials.
#[derive(Debug, Clone, Default)]
pub struct Dialer {
    tls: Option<proglog_tls::ClientTls>,
}

impl Dialer {
    /// Dials over mutual TLS.
    pub fn tls(tls: proglog_tls::ClientTls) -> Self {
        Dialer { tls: Some(tls) }
    }

    /// A lazily connected channel to `addr` (`host:port`).
    ///
    /// NB: a peer that stalls (paused, partitioned) leaves calls that time out; each is reset
    /// on the connection. Keep-alive pings (also while idle) drop a connection whose peer
    /// stopped answering within a few seconds, so calls after the stall start on a fresh
    /// connection rather than behind a backlog of reset streams. The server side accepts that
    /// many resets too (see `node::PEER_RESET_STREAMS`).
    pub fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let ep = Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(2))
            .keep_alive_timeout(Duration::from_secs(2))
            .keep_alive_while_idle(true);
        Ok(match &self.tls {
            Some(tls) => tls.channel(ep),
            None => ep.connect_lazy(),
        })
    }
}

/// Creates [`PeerClient`]s for openraft.
#[derive(Debug, Clone)]
pub struct Network {
    id: NodeId,
    dialer: Dialer,
    filter: Arc<NetFilter>,
    max_message_bytes: usize,
    commit_cap: Option<Arc<FlushQueue>>,
    notices: Option<Arc<Notices>>,
    /// Pipelining: this member's log, to send new entries ahead of openraft.
    log: Option<Arc<LogShared>>,
}

impl Network {
    /// `max_message_bytes`: the largest peer message members accept.
    pub fn new(id: NodeId, filter: Arc<NetFilter>, max_message_bytes: usize) -> Self {
        Network {
            id,
            dialer: Dialer::default(),
            filter,
            max_message_bytes,
            commit_cap: None,
            notices: None,
            log: None,
        }
    }

    /// Sends entries written while an AppendEntries is in flight right away, ahead of openraft
    /// (see the module docs).
    pub fn with_pipelining(mut self, log: Arc<LogShared>) -> Self {
        self.log = Some(log);
        self
    }

    /// Dials peers with `dialer` (TLS).
    pub fn with_dialer(mut self, dialer: Dialer) -> Self {
        self.dialer = dialer;
        self
    }

    /// Caps the commit index sent to followers at what is durable on this member (see
    /// [`super::flush`]).
    pub fn with_commit_cap(mut self, flush: Arc<FlushQueue>) -> Self {
        self.commit_cap = Some(flush);
        self
    }

    /// Lets followers learn the commit index lazily (see [`super::notice`]).
    pub fn with_notices(mut self, notices: Arc<Notices>) -> Self {
        self.notices = Some(notices);
        self
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> PeerClient {
        PeerClient {
            id: self.id,
            target,
            node: node.clone(),
            client: self.dialer.channel(&node.addr).ok().map(|c| {
                RaftClient::new(c)
                    .max_decoding_message_size(self.max_message_bytes)
                    .max_encoding_message_size(self.max_message_bytes)
            }),
            filter: self.filter.clone(),
            max_message_bytes: self.max_message_bytes,
            commit_cap: self.commit_cap.clone(),
            notices: self.notices.clone(),
            follower: Follower::default(),
            log: self.log.clone(),
            ahead: None,
        }
    }
}

/// One peer, as openraft talks to it.
#[derive(Debug)]
pub struct PeerClient {
    id: NodeId,
    target: NodeId,
    node: Member,
    client: Option<RaftClient<Channel>>,
    filter: Arc<NetFilter>,
    max_message_bytes: usize,
    commit_cap: Option<Arc<FlushQueue>>,
    notices: Option<Arc<Notices>>,
    /// What this client (one replication session) knows of its follower.
    follower: Follower,
    log: Option<Arc<LogShared>>,
    /// The AppendEntries sent ahead of openraft, if any.
    ahead: Option<Ahead>,
}

/// An AppendEntries sent ahead of openraft: the entries after `prev` up to `last`.
#[derive(Debug)]
struct Ahead {
    vote: Vote,
    prev: LogId,
    last: LogId,
    commit: Option<LogId>,
    sent_at: std::time::Instant,
    answer: tokio::task::JoinHandle<Option<AppendEntriesResponse>>,
}

/// What sending ahead needs, owned (it runs beside the call openraft made).
struct AheadPlan {
    log: Arc<LogShared>,
    client: RaftClient<Channel>,
    filter: Arc<NetFilter>,
    from: NodeId,
    to: NodeId,
    vote: Vote,
    prev: LogId,
    commit: Option<LogId>,
    max_bytes: usize,
    ttl: Duration,
}

/// A peer request carrying `req`, marked as coming from member `from` (for [`NetFilter`]).
fn peer_request(from: NodeId, req: &impl Serialize) -> tonic::Request<RaftRequest> {
    let mut request = tonic::Request::new(RaftRequest {
        payload: encode(req).into(),
    });
    request
        .metadata_mut()
        .insert("proglog-from", from.to_string().parse().expect("digits"));
    request
}

/// Sends one AppendEntries ahead of openraft; `None` on any failure (openraft's own goes out).
async fn send_ahead(
    mut client: RaftClient<Channel>,
    from: NodeId,
    rpc: AppendEntriesRequest,
    ttl: Duration,
) -> Option<AppendEntriesResponse> {
    let request = peer_request(from, &rpc);
    let reply = tokio::time::timeout(ttl, client.append_entries(request))
        .await
        .ok()?
        .ok()?
        .into_inner();
    if !reply.error.is_empty() {
        return None;
    }
    decode(&reply.payload).ok()
}

impl AheadPlan {
    /// Waits until entries follow `prev` in this member's log, then sends them (in a task) and
    /// returns; `None` if the log closes first.
    async fn run(self) -> Option<Ahead> {
        let mut written = self.log.flush_queue().subscribe();
        loop {
            if let Some(mut entries) = self.log.entries_after(self.prev, 256) {
                let mut bytes = 0;
                let keep = entries
                    .iter()
                    .take_while(|e| {
                        bytes += entry_size(e);
                        bytes <= self.max_bytes
                    })
                    .count()
                    .max(1);
                entries.truncate(keep);
                if self.filter.is_cut(self.from, self.to) {
                    return None;
                }
                let last = entries.last().expect("not empty").log_id;
                let rpc = AppendEntriesRequest {
                    vote: self.vote,
                    prev_log_id: Some(self.prev),
                    entries,
                    leader_commit: self.commit,
                };
                stats::add(&stats::STATS.append_rpcs_ahead, 1);
                return Some(Ahead {
                    vote: self.vote,
                    prev: self.prev,
                    last,
                    commit: self.commit,
                    sent_at: std::time::Instant::now(),
                    answer: tokio::spawn(send_ahead(self.client, self.from, rpc, self.ttl)),
                });
            }
            written.changed().await.ok()?;
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Msg(String);

impl PeerClient {
    /// What to send ahead while `rpc` (with entries) is in flight: the entries that follow it.
    fn plan_ahead(&self, rpc: &AppendEntriesRequest, option: &RPCOption) -> Option<AheadPlan> {
        let log = self.log.clone()?;
        let last = rpc.entries.last()?.log_id;
        Some(AheadPlan {
            log,
            client: self.client.clone()?,
            filter: self.filter.clone(),
            from: self.id,
            to: self.target,
            vote: rpc.vote,
            prev: last,
            commit: rpc.leader_commit,
            max_bytes: self.max_message_bytes / 2,
            ttl: option.hard_ttl(),
        })
    }

    /// The follower's answer to the AppendEntries sent ahead, when `rpc` asks for nothing more
    /// than it did: openraft's request then need not go out. Safe as a late answer: the follower
    /// holds those entries from this leader, exactly as if it had answered `rpc` itself.
    async fn answered_ahead(
        &mut self,
        rpc: &mut AppendEntriesRequest,
    ) -> Option<AppendEntriesResponse> {
        // NB: a heartbeat leaves what was sent ahead in place for the next entries.
        let last = rpc.entries.last().map(|e| e.log_id)?;
        let ahead = self.ahead.take()?;
        if ahead.vote != rpc.vote || rpc.prev_log_id != Some(ahead.prev) {
            ahead.answer.abort();
            return None;
        }
        match ahead.answer.await {
            Ok(Some(AppendEntriesResponse::Success)) => {}
            _ => return None,
        }
        if last.index > ahead.last.index {
            // The follower holds the entries up to `ahead.last`: send only the rest.
            rpc.entries.retain(|e| e.log_id.index > ahead.last.index);
            rpc.prev_log_id = Some(ahead.last);
            stats::add(&stats::STATS.append_rpcs_trimmed_ahead, 1);
            return None;
        }
        stats::add(&stats::STATS.append_rpcs_answered_ahead, 1);
        if let Some(notices) = self.notices.clone() {
            let s = Sending::speculated(ahead.vote, Some(last), ahead.commit, ahead.sent_at);
            self.follower.sent::<()>(
                &notices,
                self.target,
                s,
                &Ok(AppendEntriesResponse::Success),
            );
            if rpc.leader_commit > ahead.commit {
                notices.owe_commit(self.target, rpc.leader_commit);
            }
        }
        Some(AppendEntriesResponse::Success)
    }

    async fn call<Req, Resp, E>(
        &mut self,
        kind: RPCTypes,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RpcError<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        if self.filter.is_cut(self.id, self.target) {
            return Err(RpcError::Unreachable(Unreachable::new(&Msg(format!(
                "link {} -> {} is cut",
                self.id, self.target
            )))));
        }
        let Some(client) = self.client.as_mut() else {
            return Err(RpcError::Unreachable(Unreachable::new(&Msg(format!(
                "bad address {:?}",
                self.node.addr
            )))));
        };
        let request = peer_request(self.id, req);
        let ttl = option.hard_ttl();
        let fut = async {
            match kind {
                RPCTypes::AppendEntries => client.append_entries(request).await,
                RPCTypes::Vote => client.vote(request).await,
                RPCTypes::InstallSnapshot => client.install_snapshot(request).await,
            }
        };
        let reply: RaftReply = match tokio::time::timeout(ttl, fut).await {
            Err(_) => {
                return Err(RpcError::Timeout(openraft::error::Timeout {
                    action: kind,
                    id: self.id,
                    target: self.target,
                    timeout: ttl,
                }))
            }
            Ok(Err(status)) => {
                return Err(match status.code() {
                    tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled => {
                        RpcError::Unreachable(Unreachable::new(&status))
                    }
                    _ => RpcError::Network(NetworkError::new(&status)),
                })
            }
            Ok(Ok(r)) => r.into_inner(),
        };
        if !reply.error.is_empty() {
            let err: RaftError<E> =
                decode(&reply.error).map_err(|e| RpcError::Network(NetworkError::new(&e)))?;
            return Err(RpcError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                err,
            )));
        }
        decode(&reply.payload).map_err(|e| RpcError::Network(NetworkError::new(&e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse, RpcError> {
        let committed = rpc.leader_commit;
        if let Some(cap) = &self.commit_cap {
            rpc.leader_commit = cap.cap(rpc.leader_commit);
        }
        // openraft bounds AppendEntries by entry count only; big record batches could exceed what
        // a peer accepts. Ask openraft to send fewer entries instead (it retries with the hint).
        let n = rpc.entries.len();
        if n > 1 {
            let bytes: usize = rpc.entries.iter().map(entry_size).sum();
            // Half the peer's limit: room for framing and the estimate's error.
            let max = self.max_message_bytes / 2;
            if bytes > max {
                let hint = (n as u64 * max as u64 / bytes as u64).clamp(1, n as u64 - 1);
                return Err(RpcError::PayloadTooLarge(
                    openraft::error::PayloadTooLarge::new_entries_hint(hint),
                ));
            }
        }
        let Some(notices) = self.notices.clone() else {
            return self.call(RPCTypes::AppendEntries, &rpc, &option).await;
        };
        let sending = match self
            .follower
            .answer_locally(&notices, self.target, &rpc, committed)
        {
            Ok(answer) => return Ok(answer),
            Err(sending) => sending,
        };
        if let Some(answer) = self.answered_ahead(&mut rpc).await {
            return Ok(answer);
        }
        let started = (!rpc.entries.is_empty()).then(std::time::Instant::now);
        let plan = self.plan_ahead(&rpc, &option);
        let answer = match plan {
            None => self.call(RPCTypes::AppendEntries, &rpc, &option).await,
            Some(plan) => {
                let (answer, ahead) = {
                    let call = self.call(RPCTypes::AppendEntries, &rpc, &option);
                    let ahead = plan.run();
                    tokio::pin!(call);
                    tokio::pin!(ahead);
                    let mut sent = None;
                    let mut waiting = true;
                    let answer = loop {
                        tokio::select! {
                            biased;
                            a = &mut call => break a,
                            s = &mut ahead, if waiting => {
                                sent = s;
                                waiting = false;
                            }
                        }
                    };
                    (answer, sent)
                };
                self.ahead = ahead;
                answer
            }
        };
        if let Some(started) = started {
            stats::add(&stats::STATS.append_rpcs_sent, 1);
            stats::add(
                &stats::STATS.append_rpc_us,
                started.elapsed().as_micros() as u64,
            );
        }
        self.follower.sent(&notices, self.target, sending, &answer);
        answer
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse, RpcError<InstallSnapshotError>> {
        self.call(RPCTypes::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest,
        option: RPCOption,
    ) -> Result<VoteResponse, RpcError> {
        self.call(RPCTypes::Vote, &rpc, &option).await
    }

    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}
