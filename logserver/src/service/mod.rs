//! gRPC adapters: the client `Log` service ([`log`]) and the book's `log.v1.Log` over it ([`book`]), the admin `Cluster` service ([`cluster`])
//! and the peer `Raft` service ([`peer`]), plus leadership [`transfer`] (used by the admin call and
//! by a leader's graceful stop). This file holds what they share: the member context, the
//! protobuf <-> domain conversions and the one mapping of errors to gRPC status codes.
//! Nothing here touches files directly: reads and writes go through [`crate::raft`].

// NB: `tonic::Status` is large and tonic's generated traits dictate it.
#![allow(clippy::result_large_err)]

pub mod acl;
pub mod acl_admin;
pub mod book;
pub mod cluster;
pub mod group;
pub mod guard;
pub mod log;
pub mod peer;
pub mod transfer;

use std::sync::Arc;

use proglog_proto::v1 as pb;
use tokio::sync::watch;
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

use crate::raft::index::OutOfRange;
use crate::raft::network::NetFilter;
use crate::raft::producer::Refusal;
use crate::raft::state_machine::{self, SmShared, StoredRecord};
use crate::raft::{ClientWriteError, NodeId, Raft, RaftError, RaftMetrics, ServerState};

/// What every service of one member needs.
#[derive(Clone)]
pub struct Ctx {
    pub id: NodeId,
    /// This member as peers know it (advertised address, name).
    pub me: crate::raft::Member,
    pub raft: Raft,
    pub sm: Arc<SmShared>,
    pub max_record_bytes: usize,
    pub admin_token: Option<String>,
    /// Under TLS the admin API is authenticated by the operator's certificate ([`guard`]), not
    /// by the token.
    pub admin_by_certificate: bool,
    /// How this member dials its peers.
    pub dialer: crate::raft::network::Dialer,
    pub election_timeout_max: std::time::Duration,
    /// When a leader was last heard; on a leader, when a quorum last acknowledged it.
    pub liveness: Arc<crate::raft::election::Liveness>,
    pub filter: Arc<NetFilter>,
    /// Flips to true when the member shuts down; long-lived streams end on it.
    pub shutdown: watch::Receiver<bool>,
    /// Writes hold it shared; a leadership transfer holds it exclusively while the followers'
    /// leader lease lapses, since every replicated write would renew that lease and make them
    /// refuse the target's vote.
    pub writes: Arc<tokio::sync::RwLock<()>>,
    /// Set when this member handed leadership over: (its term then, the new leader, its
    /// address). Until this member's own metrics move past that term it may still believe it
    /// leads (the new leader may be unable to reach it); it answers as a follower of the new one.
    pub handed_over: Arc<std::sync::Mutex<Option<(u64, NodeId, String)>>>,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("id", &self.id)
            .field("me", &self.me)
            .finish()
    }
}

impl Ctx {
    /// The current Raft metrics.
    pub fn metrics(&self) -> RaftMetrics {
        self.raft.metrics().borrow().clone()
    }

    /// The leader's node id and address, when one is known.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        if let Some((_, id, addr)) = self.handed_over_in(m.current_term) {
            return Some((id, addr));
        }
        let id = m.current_leader?;
        let addr = m
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
            .unwrap_or_default();
        Some((id, addr))
    }

    /// True when this member currently leads.
    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader
            && m.current_leader == Some(self.id)
            && self.handed_over_in(m.current_term).is_none()
    }

    /// The hand-over recorded in `term`, if this member handed leadership over in that term.
    fn handed_over_in(&self, term: u64) -> Option<(u64, NodeId, String)> {
        let h = self.handed_over.lock().unwrap_or_else(|p| p.into_inner());
        h.clone().filter(|(t, _, _)| *t == term)
    }
}

/// `UNAVAILABLE` naming the leader, with its address in `proglog-leader` metadata; the write
/// was not proposed here (`proglog-write-outcome: not-committed`).
pub fn not_leader(leader: Option<(NodeId, String)>) -> Status {
    let mut md = MetadataMap::new();
    md.insert(
        proglog_proto::WRITE_OUTCOME_METADATA_KEY,
        proglog_proto::NOT_COMMITTED.parse().expect("ascii"),
    );
    match leader {
        Some((id, addr)) if !addr.is_empty() => {
            if let Ok(v) = addr.parse() {
                md.insert(proglog_proto::LEADER_METADATA_KEY, v);
            }
            Status::with_metadata(
                Code::Unavailable,
                format!("not the leader; the leader is member {id} at {addr}"),
                md,
            )
        }
        _ => Status::with_metadata(
            Code::Unavailable,
            "not the leader, and no leader is known yet; retry",
            md,
        ),
    }
}

/// `UNAVAILABLE` from a leader that has not heard from a quorum for `silent`: it may have been
/// replaced. `proposed` says whether this write was proposed (then it may still commit).
pub fn quorum_lost(silent: std::time::Duration, proposed: bool) -> Status {
    let mut md = MetadataMap::new();
    let outcome = if proposed {
        proglog_proto::OUTCOME_UNKNOWN
    } else {
        proglog_proto::NOT_COMMITTED
    };
    md.insert(
        proglog_proto::WRITE_OUTCOME_METADATA_KEY,
        outcome.parse().expect("ascii"),
    );
    let what = if proposed {
        "the write was proposed and may still commit"
    } else {
        "the write was not committed"
    };
    Status::with_metadata(
        Code::Unavailable,
        format!(
            "this member led but has not heard from a quorum for {} ms (partitioned?); {what}; \
             retry at the current leader",
            silent.as_millis()
        ),
        md,
    )
}

/// The one mapping of write errors to status codes.
pub fn write_status(e: RaftError<ClientWriteError>, ctx: &Ctx) -> Status {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => not_leader(
            f.leader_id
                .map(|id| (id, f.leader_node.map(|n| n.addr).unwrap_or_default()))
                .or_else(|| ctx.leader()),
        ),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            Status::failed_precondition(e.to_string())
        }
        RaftError::Fatal(e) => Status::unavailable(format!("member is shutting down: {e}")),
    }
}

/// The one mapping of idempotent producer refusals to status codes, with the reason in
/// `proglog-producer-error` metadata: a sequence gap is `ABORTED` (the client starts a new
/// producer epoch and sends again), an unknown producer or a stale epoch `FAILED_PRECONDITION`
/// (initialise again), a sequence committed beyond the window `ALREADY_EXISTS`, a sequence
/// reused for other records `INVALID_ARGUMENT`.
pub fn refusal_status(r: Refusal) -> Status {
    let code = match r {
        Refusal::OutOfOrder { .. } => Code::Aborted,
        Refusal::UnknownProducer { .. } | Refusal::StaleEpoch { .. } => Code::FailedPrecondition,
        Refusal::TooOld { .. } => Code::AlreadyExists,
        Refusal::Reused { .. } => Code::InvalidArgument,
    };
    let mut md = MetadataMap::new();
    md.insert(
        proglog_proto::PRODUCER_ERROR_METADATA_KEY,
        tonic::metadata::MetadataValue::from_static(r.reason()),
    );
    Status::with_metadata(code, r.to_string(), md)
}

/// The one mapping of leadership transfer errors to status codes.
impl From<transfer::Error> for Status {
    fn from(e: transfer::Error) -> Status {
        use transfer::Error as E;
        match e {
            E::ShuttingDown => Status::unavailable(e.to_string()),
            E::NotCaughtUp { .. } | E::NoNewLeader => Status::deadline_exceeded(e.to_string()),
            E::BadAddress(e) => Status::invalid_argument(e.to_string()),
            E::TriggerElection(s) => *s,
            E::OtherWon { .. } => Status::failed_precondition(e.to_string()),
        }
    }
}

/// The one mapping of read errors to status codes.
pub fn read_status(e: state_machine::Error) -> Status {
    match e {
        state_machine::Error::OutOfRange(OutOfRange {
            offset,
            first,
            next,
        }) => Status::out_of_range(format!(
            "offset {offset} is out of range: this member serves offsets [{first}, {next})"
        )),
        e => Status::internal(e.to_string()),
    }
}

impl From<StoredRecord> for pb::Record {
    fn from(r: StoredRecord) -> Self {
        pb::Record {
            value: r.value,
            offset: r.offset,
            term: r.term,
        }
    }
}

/// The protobuf role of a Raft server state.
pub fn role(s: ServerState) -> pb::Role {
    {
        match s {
            ServerState::Leader => pb::Role::Leader,
            ServerState::Follower => pb::Role::Follower,
            ServerState::Candidate => pb::Role::Candidate,
            ServerState::Learner => pb::Role::Learner,
            ServerState::Shutdown => pb::Role::Shutdown,
        }
    }
}

/// The Raft status of this member (and of its followers when it leads).
pub fn cluster_status(ctx: &Ctx) -> pb::ClusterStatus {
    let m = ctx.metrics();
    let membership = m.membership_config.membership();
    let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
    let leader_addr = m
        .current_leader
        .and_then(|l| membership.get_node(&l))
        .map(|n| n.addr.clone())
        .unwrap_or_default();
    let last = m.last_log_index;
    let members = membership
        .nodes()
        .map(|(id, node)| {
            let matched = m
                .replication
                .as_ref()
                .and_then(|r| r.get(id))
                .map(|l| l.map_or(0, |l| l.index));
            let matched = if *id == ctx.id && m.state == ServerState::Leader {
                last
            } else {
                matched
            };
            let role = if Some(*id) == m.current_leader {
                pb::Role::Leader
            } else if voters.contains(id) {
                pb::Role::Follower
            } else {
                pb::Role::Learner
            };
            pb::MemberStatus {
                node_id: *id,
                addr: node.addr.clone(),
                name: node.name.clone(),
                role: role as i32,
                voter: voters.contains(id),
                matched_index: matched,
                lag: matched.map(|mi| last.unwrap_or(0).saturating_sub(mi)),
            }
        })
        .collect();
    let (first, next) = ctx.sm.range();
    pb::ClusterStatus {
        node_id: ctx.id,
        role: role(m.state) as i32,
        term: m.current_term,
        leader_id: m.current_leader,
        leader_addr,
        last_log_index: m.last_log_index,
        commit_index: m.last_applied.map(|l| l.index),
        applied_index: m.last_applied.map(|l| l.index),
        snapshot_index: m.snapshot.map(|l| l.index),
        members,
        first_offset: first,
        next_offset: next,
    }
}
