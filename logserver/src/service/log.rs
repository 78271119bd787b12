//! The client `proglog.v1.Log` service: Produce (through Raft, acknowledged after quorum commit),
//! Consume (from this member's applied records), their streaming forms, GetServers, and
//! InitProducer (the idempotent producer: its id comes from the log, see [`crate::raft::producer`]).
//!
//! Idempotent writes and InitProducer carry the leader's wall clock (the log time that expires
//! idle producers). An idempotent batch is checked in `apply`, on every member alike; the leader
//! only answers a retry it has already applied at once, without writing anything.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use proglog_proto::v1 as pb;
use proglog_proto::v1::log_server::Log;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::group::{self, GroupCommit};
use super::{not_leader, quorum_lost, read_status, refusal_status, write_status, Ctx};
use crate::raft::codec;
use crate::raft::index::OutOfRange;
use crate::raft::producer::{ProducerKey, IDLE_EXPIRY_MS};
use crate::raft::{state_machine, Applied, Outcome, RecordBatch};
use crate::stats;

/// Produce calls a stream keeps in flight at once.
const STREAM_PIPELINE: usize = 64;
/// Records read per step of ConsumeStream (at most; a step ends with its Raft entry).
const CONSUME_STEP: usize = 4096;

/// The Log service of one member.
#[derive(Debug, Clone)]
pub struct LogService {
    ctx: Ctx,
    /// `None`: every produce call is its own Raft entry.
    group: Option<Arc<GroupCommit>>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

impl LogService {
    /// A service whose produce calls share Raft entries (see [`GroupCommit`]), with the
    /// default depth and group size.
    pub fn new(ctx: Ctx) -> Self {
        Self::with_group_commit(
            ctx,
            group::DEFAULT_DEPTH,
            group::MAX_GROUP_BYTES,
            group::DEFAULT_WAIT,
        )
    }

    /// A service with up to `depth` groups in flight (0: no grouping) of up to `max_bytes` of
    /// values each, whose freed slots wait up to `wait` for the callers they answered.
    pub fn with_group_commit(ctx: Ctx, depth: usize, max_bytes: usize, wait: Duration) -> Self {
        LogService {
            ctx,
            group: (depth > 0).then(|| GroupCommit::new(depth, max_bytes, wait)),
        }
    }

    /// Appends records; returns the first offset and whether the batch was a duplicate of an
    /// idempotent batch already committed (then nothing was appended). Calls share Raft entries
    /// with concurrent calls (group commit), with or without a producer claim; without group
    /// commit each call is an entry of its own.
    async fn append(
        &self,
        values: Vec<bytes::Bytes>,
        producer: Option<ProducerKey>,
    ) -> Result<(u64, bool), Status> {
        if values.is_empty() {
            return Err(Status::invalid_argument("no records to produce"));
        }
        for (i, v) in values.iter().enumerate() {
            if v.len() > self.ctx.max_record_bytes {
                return Err(Status::invalid_argument(format!(
                    "record {i} is {} bytes; the limit is {} bytes",
                    v.len(),
                    self.ctx.max_record_bytes
                )));
            }
        }
        if !self.ctx.is_leader() {
            return Err(not_leader(self.ctx.leader()));
        }
        stats::add(&stats::STATS.produce_calls, 1);
        if let Some(key) = producer {
            if let Some(first) = self.ctx.sm.duplicate_of(key, values.len() as u32) {
                return Ok((first, true));
            }
        }
        if let Some(g) = &self.group {
            return g.append(&self.ctx, values, producer).await;
        }
        let Some(key) = producer else {
            let first = group::append_alone(&self.ctx, values).await?;
            return Ok((first, false));
        };
        let body = codec::encode_produce(now_ms(), Some(key), values.iter().map(|v| v.as_ref()));
        let applied = self.write(body).await?;
        match applied.outcome {
            Outcome::Appended => Ok((applied.first_offset, false)),
            Outcome::Duplicate => Ok((applied.first_offset, true)),
            Outcome::Refused(r) => Err(refusal_status(r)),
            Outcome::ProducerReady { .. } => Err(Status::internal("a produce created a producer")),
        }
    }

    /// Writes one normal entry through Raft; returns what applying it did.
    async fn write(&self, body: Vec<u8>) -> Result<Applied, Status> {
        if !self.ctx.is_leader() {
            return Err(not_leader(self.ctx.leader()));
        }
        // NB: waits while a leadership transfer runs; afterwards this member may no longer lead.
        let _writing = self.ctx.writes.read().await;
        if !self.ctx.is_leader() {
            return Err(not_leader(self.ctx.leader()));
        }
        // Fail fast: a leader cut off from its quorum would hold the write until the fault
        // heals (and then refuse it); say so now, so the client looks for the new leader.
        if let Some(silent) = self.ctx.liveness.quorum_lost() {
            return Err(quorum_lost(silent, false));
        }
        let write = self.ctx.raft.client_write(RecordBatch(body.into()));
        let resp = tokio::select! {
            r = write => r.map_err(|e| write_status(e, &self.ctx))?,
            silent = self.ctx.liveness.until_quorum_lost() => {
                return Err(quorum_lost(silent, true));
            }
        };
        Ok(resp.data)
    }
}

/// The leader's wall clock in ms since the Unix epoch (written into each entry as log time).
pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The producer claim of a request: `None` without a producer id (at least once, as before).
fn claim(id: u64, epoch: u32, first_seq: u64, count: usize) -> Result<Option<ProducerKey>, Status> {
    if id == 0 {
        return Ok(None);
    }
    if first_seq.checked_add(count as u64).is_none() {
        return Err(Status::invalid_argument(format!(
            "sequence {first_seq} + {count} records overflows; initialise a new producer"
        )));
    }
    Ok(Some(ProducerKey {
        id,
        epoch,
        first_seq,
    }))
}

fn value_of(r: Option<pb::Record>) -> Result<bytes::Bytes, Status> {
    r.map(|r| r.value)
        .ok_or_else(|| Status::invalid_argument("record is missing"))
}

#[tonic::async_trait]
impl Log for LogService {
    #[tracing::instrument(skip_all, level = "debug")]
    async fn produce(
        &self,
        req: Request<pb::ProduceRequest>,
    ) -> Result<Response<pb::ProduceResponse>, Status> {
        let req = req.into_inner();
        let producer = claim(req.producer_id, req.producer_epoch, req.sequence, 1)?;
        let value = value_of(req.record)?;
        let (offset, duplicate) = self.append(vec![value], producer).await?;
        Ok(Response::new(pb::ProduceResponse { offset, duplicate }))
    }

    #[tracing::instrument(skip_all, level = "debug")]
    async fn produce_batch(
        &self,
        req: Request<pb::ProduceBatchRequest>,
    ) -> Result<Response<pb::ProduceBatchResponse>, Status> {
        let req = req.into_inner();
        let producer = claim(
            req.producer_id,
            req.producer_epoch,
            req.first_sequence,
            req.records.len(),
        )?;
        let values: Vec<bytes::Bytes> = req.records.into_iter().map(|r| r.value).collect();
        let n = values.len() as u64;
        let (first, duplicate) = self.append(values, producer).await?;
        Ok(Response::new(pb::ProduceBatchResponse {
            offsets: (first..first + n).collect(),
            duplicate,
        }))
    }

    #[tracing::instrument(skip_all, level = "debug")]
    async fn consume(
        &self,
        req: Request<pb::ConsumeRequest>,
    ) -> Result<Response<pb::ConsumeResponse>, Status> {
        let offset = req.into_inner().offset;
        let rec = self.ctx.sm.read(offset).map_err(read_status)?;
        Ok(Response::new(pb::ConsumeResponse {
            record: Some(rec.into()),
        }))
    }

    type ProduceStreamStream = BoxStream<pb::ProduceResponse>;

    async fn produce_stream(
        &self,
        req: Request<Streaming<pb::ProduceRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        let this = self.clone();
        let mut shutdown = self.ctx.shutdown.clone();
        let out = req
            .into_inner()
            .take_until(async move {
                let _ = shutdown.wait_for(|&s| s).await;
            })
            .map(move |r| {
                let this = this.clone();
                async move {
                    let r = r?;
                    let producer = claim(r.producer_id, r.producer_epoch, r.sequence, 1)?;
                    let value = value_of(r.record)?;
                    let (offset, duplicate) = this.append(vec![value], producer).await?;
                    Ok(pb::ProduceResponse { offset, duplicate })
                }
            })
            .buffered(STREAM_PIPELINE);
        Ok(Response::new(Box::pin(out)))
    }

    type ConsumeStreamStream = BoxStream<pb::ConsumeResponse>;

    async fn consume_stream(
        &self,
        req: Request<pb::ConsumeRequest>,
    ) -> Result<Response<Self::ConsumeStreamStream>, Status> {
        let req = req.into_inner();
        let mut offset = req.offset;
        let sm = self.ctx.sm.clone();
        // Where a bounded stream ends: before `end_offset`, and with `to_end` at the end of the
        // log as this member holds it now (an offset past that end is OUT_OF_RANGE, as for
        // Consume).
        let mut stop = if req.end_offset > 0 {
            req.end_offset
        } else {
            u64::MAX
        };
        if req.to_end {
            let (first, next) = sm.range();
            if offset > next {
                return Err(read_status(state_machine::Error::OutOfRange(OutOfRange {
                    offset,
                    first,
                    next,
                })));
            }
            stop = stop.min(next);
        }
        let mut shutdown = self.ctx.shutdown.clone();
        // NB: records travel to the response stream in batches (one channel send per read),
        // not one by one: the per-record channel hop was a good part of a record's cost.
        let (tx, rx) = mpsc::channel::<Vec<Result<pb::ConsumeResponse, Status>>>(4);
        tokio::spawn(async move {
            let mut next = sm.subscribe();
            loop {
                if offset >= stop {
                    return; // a bounded stream ends here (OK)
                }
                let max = (stop - offset).min(CONSUME_STEP as u64) as usize;
                match sm.read_from(offset, max) {
                    Ok(records) => {
                        if let Some(last) = records.last() {
                            offset = last.offset + 1;
                        }
                        let batch = records
                            .into_iter()
                            .map(|r| {
                                Ok(pb::ConsumeResponse {
                                    record: Some(r.into()),
                                })
                            })
                            .collect();
                        if tx.send(batch).await.is_err() {
                            return; // the client went away
                        }
                    }
                    // At the tail: wait for the next applied record (or shutdown).
                    Err(state_machine::Error::OutOfRange(OutOfRange { next: n, .. }))
                        if offset >= n =>
                    {
                        tokio::select! {
                            changed = next.wait_for(|&n| n > offset) => {
                                if changed.is_err() { return; }
                            }
                            _ = shutdown.wait_for(|&s| s) => return,
                            _ = tx.closed() => return,
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(vec![Err(read_status(e))]).await;
                        return;
                    }
                }
            }
        });
        let out = ReceiverStream::new(rx).flat_map(futures::stream::iter);
        Ok(Response::new(Box::pin(out)))
    }

    #[tracing::instrument(skip_all, level = "debug")]
    async fn init_producer(
        &self,
        req: Request<pb::InitProducerRequest>,
    ) -> Result<Response<pb::InitProducerResponse>, Status> {
        let requested = req.into_inner().producer_id;
        let applied = self
            .write(codec::encode_init_producer(now_ms(), requested))
            .await?;
        match applied.outcome {
            Outcome::ProducerReady { id, epoch } => Ok(Response::new(pb::InitProducerResponse {
                producer_id: id,
                producer_epoch: epoch,
                idle_expiry_ms: IDLE_EXPIRY_MS,
            })),
            o => Err(Status::internal(format!(
                "InitProducer was applied as {o:?}"
            ))),
        }
    }

    async fn get_servers(
        &self,
        _req: Request<pb::GetServersRequest>,
    ) -> Result<Response<pb::GetServersResponse>, Status> {
        let m = self.ctx.metrics();
        let membership = m.membership_config.membership();
        let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
        let servers = membership
            .nodes()
            .map(|(id, n)| pb::Server {
                id: if n.name.is_empty() {
                    id.to_string()
                } else {
                    n.name.clone()
                },
                rpc_addr: n.addr.clone(),
                is_leader: m.current_leader == Some(*id),
                node_id: *id,
                voter: voters.contains(id),
            })
            .collect();
        Ok(Response::new(pb::GetServersResponse { servers }))
    }
}
