//! The `proglog.raft.v1.Raft` service: receives openraft RPCs from peers and hands them to the
//! local Raft. Payloads are bincode-encoded openraft types (see [`crate::raft::network`]).

use proglog_proto::raft::v1::raft_server::Raft as RaftRpc;
use proglog_proto::raft::v1::{RaftReply, RaftRequest};
use serde::Serialize;
use tonic::{Request, Response, Status};

use super::Ctx;
use std::sync::Arc;
use std::time::Duration;

use crate::raft::election::{self, Campaign, PreVoteRequest};
use crate::raft::network::{decode, encode};
use crate::raft::{AppendEntriesRequest, AppendEntriesResponse, RaftError};
use crate::stats;

/// The peer service of one member.
#[derive(Debug, Clone)]
pub struct PeerService {
    ctx: Ctx,
    /// AppendEntries reach openraft one at a time, in arrival order (tokio's mutex is fair):
    /// a leader that pipelines (`--raft-pipeline`) sends the next before the last is answered,
    /// and the next only fits after the last. NB: openraft handles them one at a time anyway.
    order: Arc<tokio::sync::Mutex<()>>,
    /// Benchmarks only: how long each request is held first (`--peer-delay-us`).
    delay: Duration,
}

impl PeerService {
    pub fn new(ctx: Ctx) -> Self {
        PeerService {
            ctx,
            order: Arc::new(tokio::sync::Mutex::new(())),
            delay: Duration::ZERO,
        }
    }

    /// Holds every request `delay` before handling it, like a network round trip (benchmarks).
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// What every request goes through first: a cut link refuses it, then the emulated delay.
    async fn arrive(&self, req: &Request<RaftRequest>) -> Result<(), Status> {
        self.refuse_cut(req)?;
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        Ok(())
    }

    fn refuse_cut(&self, req: &Request<RaftRequest>) -> Result<(), Status> {
        // In-process partitions: drop traffic from a peer whose link is cut.
        if let Some(from) = req
            .metadata()
            .get("proglog-from")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
        {
            if self.ctx.filter.is_cut(from, self.ctx.id) {
                return Err(Status::unavailable("link is cut"));
            }
        }
        Ok(())
    }
}

fn reply<T: Serialize, E: Serialize>(
    r: Result<T, RaftError<E>>,
) -> Result<Response<RaftReply>, Status> {
    Ok(Response::new(match r {
        Ok(v) => RaftReply {
            payload: encode(&v).into(),
            error: Default::default(),
        },
        Err(e) => RaftReply {
            payload: Default::default(),
            error: encode(&e).into(),
        },
    }))
}

fn bad_payload(e: bincode::Error) -> Status {
    Status::invalid_argument(format!("undecodable Raft payload: {e}"))
}

#[tonic::async_trait]
impl RaftRpc for PeerService {
    async fn append_entries(
        &self,
        req: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        self.arrive(&req).await?;
        let started = std::time::Instant::now();
        let rpc: AppendEntriesRequest = decode(&req.into_inner().payload).map_err(bad_payload)?;
        let with_entries = !rpc.entries.is_empty();
        if with_entries {
            stats::add(&stats::STATS.append_rpcs, 1);
        } else {
            stats::add(&stats::STATS.empty_append_rpcs, 1);
        }
        let r = {
            let _turn = self.order.lock().await;
            self.ctx.raft.append_entries(rpc).await
        };
        if with_entries {
            stats::add(
                &stats::STATS.append_handle_us,
                started.elapsed().as_micros() as u64,
            );
        }
        // NB: marked after openraft took the message in, so openraft's own lease (which refuses
        // real votes) has always started no later than the one the pre-vote checks.
        if matches!(&r, Ok(resp) if !matches!(resp, AppendEntriesResponse::HigherVote(_))) {
            self.ctx.liveness.leader_seen();
        }
        reply(r)
    }

    async fn vote(&self, req: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        self.arrive(&req).await?;
        let rpc = decode(&req.into_inner().payload).map_err(bad_payload)?;
        let r = self.ctx.raft.vote(rpc).await;
        // As in Raft: granting a vote restarts the wait, so this member does not campaign
        // against the candidate it just voted for while that one's election completes.
        if matches!(&r, Ok(resp) if resp.vote_granted) {
            self.ctx.liveness.leader_seen();
        }
        reply(r)
    }

    async fn install_snapshot(
        &self,
        req: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        self.arrive(&req).await?;
        let rpc: crate::raft::InstallSnapshotRequest =
            decode(&req.into_inner().payload).map_err(bad_payload)?;
        let r = self.ctx.raft.install_snapshot(rpc).await;
        if r.is_ok() {
            self.ctx.liveness.leader_seen();
        }
        reply(r)
    }

    async fn pre_vote(&self, req: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        self.arrive(&req).await?;
        let rpc: PreVoteRequest = decode(&req.into_inner().payload).map_err(bad_payload)?;
        let answer = election::answer(&self.ctx.raft, &self.ctx.liveness, &rpc);
        tracing::debug!(
            candidate = rpc.candidate,
            granted = answer.granted,
            "pre-vote"
        );
        reply::<_, openraft::error::Infallible>(Ok(answer))
    }

    async fn trigger_election(
        &self,
        req: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        self.arrive(&req).await?;
        let payload = req.into_inner().payload;
        let what = if payload.is_empty() {
            Campaign::Now
        } else {
            decode(&payload).map_err(bad_payload)?
        };
        let r = match what {
            Campaign::Now => self.ctx.raft.trigger().elect().await,
            Campaign::Hold { millis } => {
                self.ctx.liveness.hold(Duration::from_millis(millis));
                Ok(())
            }
        };
        reply(r.map_err(RaftError::<openraft::error::Infallible>::Fatal))
    }
}
