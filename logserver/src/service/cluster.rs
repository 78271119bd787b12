//! The admin `proglog.v1.Cluster` service: initialize, learners, membership, leadership transfer
//! and status. Under TLS only the operator's certificate may call it (see [`super::guard`]);
//! in plaintext every call needs `authorization: Bearer <token>` (checked by [`check_token`]).
//!
//! Leadership transfer itself lives in [`super::transfer`]; if another follower wins the race
//! every time, the call reports FAILED_PRECONDITION with the leader that won.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;

use futures::Stream;
use openraft::ChangeMembers;
use proglog_proto::v1 as pb;
use proglog_proto::v1::cluster_server::Cluster;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{cluster_status, not_leader, transfer, write_status, Ctx};
use crate::raft::{InitializeError, Member, NodeId, RaftError, ServerState};

/// Checks `authorization: Bearer <token>` against the configured token.
pub fn check_token<T>(token: Option<&str>, req: &Request<T>) -> Result<(), Status> {
    let Some(token) = token else {
        return Err(Status::unauthenticated(
            "the admin API is disabled: the member has no --admin-token-file",
        ));
    };
    let given = req
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err(Status::unauthenticated("bad admin token")),
        None => Err(Status::unauthenticated(
            "missing `authorization: Bearer <token>` metadata",
        )),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The Cluster service of one member.
#[derive(Debug, Clone)]
pub struct ClusterService {
    ctx: Ctx,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

impl ClusterService {
    pub fn new(ctx: Ctx) -> Self {
        ClusterService { ctx }
    }

    fn auth<T>(&self, req: &Request<T>) -> Result<(), Status> {
        if self.ctx.admin_by_certificate {
            return Ok(()); // NB: the guard layer checked the operator's certificate.
        }
        check_token(self.ctx.admin_token.as_deref(), req)
    }

    fn require_leader(&self) -> Result<(), Status> {
        if self.ctx.is_leader() {
            Ok(())
        } else {
            Err(not_leader(self.ctx.leader()))
        }
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    #[tracing::instrument(skip_all)]
    async fn initialize(
        &self,
        req: Request<pb::InitializeRequest>,
    ) -> Result<Response<pb::InitializeResponse>, Status> {
        self.auth(&req)?;
        let mut members: BTreeMap<NodeId, Member> = req
            .into_inner()
            .members
            .into_iter()
            .map(|m| {
                (
                    m.node_id,
                    Member {
                        addr: m.addr,
                        name: m.name,
                    },
                )
            })
            .collect();
        if members.is_empty() {
            members.insert(self.ctx.id, self.ctx.me.clone());
        }
        if members.keys().any(|&id| id == 0) || members.values().any(|m| m.addr.is_empty()) {
            return Err(Status::invalid_argument(
                "every member needs node_id > 0 and an addr",
            ));
        }
        members.entry(self.ctx.id).or_default();
        if members[&self.ctx.id].addr.is_empty() {
            return Err(Status::invalid_argument(format!(
                "the members must include this member ({})",
                self.ctx.id
            )));
        }
        match self.ctx.raft.initialize(members).await {
            Ok(()) => Ok(Response::new(pb::InitializeResponse {})),
            Err(RaftError::APIError(InitializeError::NotAllowed(e))) => {
                Err(Status::already_exists(e.to_string()))
            }
            Err(e) => Err(Status::failed_precondition(e.to_string())),
        }
    }

    type AddLearnerStream = BoxStream<pb::AddLearnerProgress>;

    #[tracing::instrument(skip_all)]
    async fn add_learner(
        &self,
        req: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<Self::AddLearnerStream>, Status> {
        self.auth(&req)?;
        self.require_leader()?;
        let m = req
            .into_inner()
            .member
            .ok_or_else(|| Status::invalid_argument("member is missing"))?;
        if m.node_id == 0 || m.addr.is_empty() {
            return Err(Status::invalid_argument(
                "member needs node_id > 0 and an addr",
            ));
        }
        let id = m.node_id;
        let node = Member {
            addr: m.addr,
            name: m.name,
        };
        self.ctx
            .raft
            .add_learner(id, node, false)
            .await
            .map_err(|e| write_status(e, &self.ctx))?;
        let target = self.ctx.metrics().last_log_index.unwrap_or(0);
        let (tx, rx) = mpsc::channel(16);
        let mut metrics = self.ctx.raft.metrics();
        let mut shutdown = self.ctx.shutdown.clone();
        tokio::spawn(async move {
            let mut last_sent = None;
            loop {
                let (matched, leader_last) = {
                    let m = metrics.borrow_and_update();
                    let matched = m
                        .replication
                        .as_ref()
                        .and_then(|r| r.get(&id).copied())
                        .flatten()
                        .map(|l| l.index);
                    (matched, m.last_log_index.unwrap_or(0))
                };
                let caught_up = matched >= Some(target);
                let p = pb::AddLearnerProgress {
                    node_id: id,
                    matched_index: matched.unwrap_or(0),
                    leader_last_index: leader_last,
                    caught_up,
                };
                if last_sent.as_ref() != Some(&p) {
                    if tx.send(Ok(p)).await.is_err() {
                        return;
                    }
                    last_sent = Some(p);
                }
                if caught_up {
                    return;
                }
                tokio::select! {
                    r = metrics.changed() => if r.is_err() { return },
                    _ = shutdown.wait_for(|&s| s) => return,
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    #[tracing::instrument(skip_all)]
    async fn change_membership(
        &self,
        req: Request<pb::ChangeMembershipRequest>,
    ) -> Result<Response<pb::ChangeMembershipResponse>, Status> {
        self.auth(&req)?;
        self.require_leader()?;
        let r = req.into_inner();
        let voters: BTreeSet<NodeId> = r.voters.into_iter().collect();
        if voters.is_empty() {
            return Err(Status::invalid_argument("the voter set must not be empty"));
        }
        self.ctx
            .raft
            .change_membership(voters, r.retain_as_learners)
            .await
            .map_err(|e| write_status(e, &self.ctx))?;
        Ok(Response::new(pb::ChangeMembershipResponse {
            status: Some(cluster_status(&self.ctx)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn remove_member(
        &self,
        req: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::RemoveMemberResponse>, Status> {
        self.auth(&req)?;
        self.require_leader()?;
        let id = req.into_inner().node_id;
        let m = self.ctx.metrics();
        let membership = m.membership_config.membership();
        if membership.get_node(&id).is_none() {
            return Err(Status::not_found(format!(
                "member {id} is not in the cluster"
            )));
        }
        if membership.voter_ids().any(|v| v == id) {
            if id == self.ctx.id {
                return Err(Status::failed_precondition(
                    "the leader cannot remove itself: transfer leadership first",
                ));
            }
            let voters: BTreeSet<NodeId> = membership.voter_ids().filter(|&v| v != id).collect();
            self.ctx
                .raft
                .change_membership(voters, false)
                .await
                .map_err(|e| write_status(e, &self.ctx))?;
        } else {
            self.ctx
                .raft
                .change_membership(ChangeMembers::RemoveNodes([id].into()), false)
                .await
                .map_err(|e| write_status(e, &self.ctx))?;
        }
        Ok(Response::new(pb::RemoveMemberResponse {
            status: Some(cluster_status(&self.ctx)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn transfer_leadership(
        &self,
        req: Request<pb::TransferLeadershipRequest>,
    ) -> Result<Response<pb::TransferLeadershipResponse>, Status> {
        self.auth(&req)?;
        let target = req.into_inner().node_id;
        if self.ctx.leader().map(|l| l.0) == Some(target) {
            return Ok(Response::new(pb::TransferLeadershipResponse {
                leader_id: target,
            }));
        }
        self.require_leader()?;
        let m = self.ctx.metrics();
        let membership = m.membership_config.membership();
        if !membership.voter_ids().any(|v| v == target) {
            return Err(Status::failed_precondition(format!(
                "member {target} is not a voter"
            )));
        }
        let addr = membership
            .get_node(&target)
            .map(|n| n.addr.clone())
            .unwrap_or_default();
        // NB: run to completion even if the caller goes away, rather than stop at an arbitrary step.
        let ctx = self.ctx.clone();
        let attempts = tokio::spawn(async move { transfer::transfer(&ctx, target, &addr).await });
        let leader_id = attempts
            .await
            .map_err(|e| Status::internal(format!("transfer task: {e}")))??;
        Ok(Response::new(pb::TransferLeadershipResponse { leader_id }))
    }

    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        self.auth(&req)?;
        Ok(Response::new(cluster_status(&self.ctx)))
    }

    type WatchStatusStream = BoxStream<pb::ClusterStatus>;

    async fn watch_status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<Self::WatchStatusStream>, Status> {
        self.auth(&req)?;
        let ctx = self.ctx.clone();
        let mut metrics = ctx.raft.metrics();
        let mut shutdown = ctx.shutdown.clone();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let mut last_key = None;
            loop {
                let key = {
                    let m = metrics.borrow_and_update();
                    (
                        m.state,
                        m.current_term,
                        m.current_leader,
                        *m.membership_config.log_id(),
                    )
                };
                if last_key != Some(key) {
                    if tx.send(Ok(cluster_status(&ctx))).await.is_err() {
                        return;
                    }
                    last_key = Some(key);
                }
                tokio::select! {
                    r = metrics.changed() => if r.is_err() { return },
                    _ = shutdown.wait_for(|&s| s) => return,
                    _ = tx.closed() => return,
                }
                if key.0 == ServerState::Shutdown {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
