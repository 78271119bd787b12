//! The `proglog.raft.v1.Raft` service: receives openraft RPCs from peers and hands them to the
//! local Raft. Payloads are bincode-encoded openraft types (see [`crate::raft::network`]).

use proglog_proto::raft::v1::raft_server::Raft as RaftRpc;
use proglog_proto::raft::v1::{RaftReply, RaftRequest};
use serde::Serialize;
use tonic::{Request, Response, Status};

use super::Ctx;
use crate::raft::network::{decode, encode};
use crate::raft::{AppendEntriesRequest, RaftError};
use crate::stats;

/// The peer service of one member.
#[derive(Debug, Clone)]
pub struct PeerService {
    ctx: Ctx,
}

impl PeerService {
    pub fn new(ctx: Ctx) -> Self {
        PeerService { ctx }
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
        self.refuse_cut(&req)?;
        let rpc: AppendEntriesRequest = decode(&req.into_inner().payload).map_err(bad_payload)?;
        if !rpc.entries.is_empty() {
            stats::add(&stats::STATS.append_rpcs, 1);
        }
        reply(self.ctx.raft.append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        self.refuse_cut(&req)?;
        let rpc = decode(&req.into_inner().payload).map_err(bad_payload)?;
        reply(self.ctx.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        req: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        self.refuse_cut(&req)?;
        let rpc = decode(&req.into_inner().payload).map_err(bad_payload)?;
        reply(self.ctx.raft.install_snapshot(rpc).await)
    }

    async fn trigger_election(
        &self,
        req: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        self.refuse_cut(&req)?;
        let r = self
            .ctx
            .raft
            .trigger()
            .elect()
            .await
            .map_err(RaftError::<openraft::error::Infallible>::Fatal);
        reply(r)
    }
}
