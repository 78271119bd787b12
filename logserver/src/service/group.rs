//! Group commit on the leader: concurrent Produce, ProduceBatch and ProduceStream calls share Raft
//! entries, so they share one append and one fsync on the leader, one AppendEntries and one fsync
//! on each follower.
//!
//! Calls queue their records; a group is submitted to Raft as one entry when fewer than `depth`
//! groups are in flight, so an idle member submits a lone call at once (no added latency) and a
//! busy one forms bigger groups the longer the commits in flight take: the batch grows with the
//! load. Each call gets the offset of its first record inside the entry. Groups go to Raft in
//! queue order through one submitter at a time, so calls queued in order get offsets in order.
//!
//! Idempotent calls share entries too: a group with any producer claim is written as an entry of
//! parts ([`codec::encode_parts`]), one per call with its claim, and `apply` decides on each
//! part as it would on an entry of its own (a duplicate or a refused part gets no offsets, the
//! others do). A group without claims stays a plain record batch.
//!
//! Closed-loop callers (a producer that sends its next call when the last one is answered) come
//! back a moment after their group commits. With `wait` set, a slot freed by a committed group
//! is held until the callers it answered have called again (or `wait` has passed), so they share
//! the next group instead of forming one of their own a round trip later: at 8 such clients, a
//! group of 8 records instead of two groups of 4, half the Raft writes per record. A lone caller
//! waits for nothing (its next call is the one being waited for), and when callers do not come
//! back (the wait runs out), waiting is skipped for a growing number of groups.
//!
//! NB: openraft 0.9 appends each `client_write` as its own entry; without grouping, every record
//! costs one Raft entry, one AppendEntries per follower and one fsync per member. Measured on 2
//! CPUs, one group in flight beats two (8 clients: 4,427 vs 3,667 records/s): a second group
//! only splits the records of the next AppendEntries (openraft sends one at a time per follower)
//! over more entries.
//!
//! This module must not decide what a record is or where it goes: it only batches values (and
//! their claims) and hands them to `Raft::client_write_ff`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use openraft::raft::ClientWriteResponse;
use tokio::sync::{oneshot, OwnedRwLockReadGuard};
use tonic::Status;

use super::{not_leader, quorum_lost, refusal_status, write_status, Ctx};
use crate::raft::codec::{self, encode_records, Part, PART_BYTES};
use crate::raft::producer::ProducerKey;
use crate::raft::{Applied, ClientWriteError, Outcome, RaftError, RecordBatch, TypeConfig};
use crate::stats;

/// Groups in flight (submitted to Raft, not yet applied) at most, by default.
pub const DEFAULT_DEPTH: usize = 1;
/// How long a freed slot waits for the callers its group answered, by default.
pub const DEFAULT_WAIT: Duration = Duration::from_millis(1);
/// Bytes of record values one group holds at most (a single bigger call forms its own group).
/// Well below the peer message limit, which openraft cannot split within one entry.
pub const MAX_GROUP_BYTES: usize = 4 << 20;

/// A call's answer: its first offset, and whether it was a duplicate of a committed batch.
type Reply = oneshot::Sender<Result<(u64, bool), Status>>;
/// What `Raft::client_write_ff` returns (openraft's default responder is a tokio oneshot).
type WriteRx = oneshot::Receiver<Result<ClientWriteResponse<TypeConfig>, ClientWriteError>>;

/// The queue of one member's Log service.
#[derive(Debug)]
pub struct GroupCommit {
    depth: usize,
    max_bytes: usize,
    /// How long a freed slot waits for the callers its group answered; zero: not at all.
    wait: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Group>,
    /// Groups submitted whose results are not back yet.
    inflight: usize,
    /// A submitter task is running (at most one, which keeps the submission order).
    submitting: bool,
    /// Callers answered by the last committed group that have not called again yet; while
    /// `holding`, the queue is not submitted before they have (or the wait ran out).
    awaited: usize,
    holding: bool,
    /// Tells a wait's timer whether the wait it was started for is still on.
    hold_id: u64,
    /// Groups to commit without waiting (after waits that ran out), and the next such number.
    skip: u32,
    backoff: u32,
}

impl State {
    /// Whether the submitter may start: a free slot, work queued, and no wait on (unless a
    /// full group waits behind the first).
    fn may_start(&self, depth: usize) -> bool {
        let held = self.holding && self.awaited > 0 && self.queue.len() < 2;
        !self.submitting && self.inflight < depth && !self.queue.is_empty() && !held
    }
}

#[derive(Debug, Default)]
struct Group {
    values: Vec<Bytes>,
    bytes: usize,
    /// Each call's part (claim and record count) and reply.
    waiters: Vec<(Part, Reply)>,
    /// Some call carries a producer claim: the entry is written as parts.
    claims: bool,
}

impl GroupCommit {
    /// A queue that keeps up to `depth` (>= 1) groups in flight, each of at most `max_bytes` of
    /// values (more only when one call brings more); a freed slot waits up to `wait` for the
    /// callers its group answered to call again.
    pub fn new(depth: usize, max_bytes: usize, wait: Duration) -> Arc<Self> {
        Arc::new(GroupCommit {
            depth: depth.max(1),
            max_bytes: max_bytes.min(MAX_GROUP_BYTES),
            wait,
            state: Mutex::default(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `values` (not empty) under `producer`'s claim (if any) in some group; returns the
    /// offset of the first one once the group is committed and applied, and whether the claim
    /// was a duplicate (then the offset is the original one and nothing was appended).
    pub async fn append(
        self: &Arc<Self>,
        ctx: &Ctx,
        values: Vec<Bytes>,
        producer: Option<ProducerKey>,
    ) -> Result<(u64, bool), Status> {
        let (tx, rx) = oneshot::channel();
        let bytes: usize = PART_BYTES + values.iter().map(|v| v.len() + 4).sum::<usize>();
        let start = {
            let mut st = self.state();
            let fits = st
                .queue
                .back()
                .is_some_and(|g| g.bytes + bytes <= self.max_bytes);
            if !fits {
                st.queue.push_back(Group::default());
            }
            let g = st.queue.back_mut().expect("just ensured");
            g.bytes += bytes;
            g.claims |= producer.is_some();
            let part = Part {
                producer,
                count: values.len() as u32,
            };
            g.waiters.push((part, tx));
            g.values.extend(values);
            if st.holding {
                st.awaited = st.awaited.saturating_sub(1);
                if st.awaited == 0 {
                    // Every caller came back in time: waiting pays.
                    (st.holding, st.backoff) = (false, 0);
                }
            }
            let start = st.may_start(self.depth);
            st.submitting |= start;
            start
        };
        if start {
            // NB: submitting only hands groups to Raft (no waiting for results), so the caller
            // does it itself rather than waking another task.
            self.clone().submit(ctx.clone()).await;
        }
        rx.await
            .unwrap_or_else(|_| Err(Status::unavailable("the write did not complete; retry")))
    }

    /// Submits queued groups in order while fewer than `depth` are in flight. Cancel-safe: if
    /// the call that runs it goes away midway, a task takes over (the group being handed over
    /// then fails with a retryable error).
    async fn submit(self: Arc<Self>, ctx: Ctx) {
        let mut guard = TakeOver {
            queue: self.clone(),
            ctx: ctx.clone(),
            holds_slot: false,
            finished: false,
        };
        loop {
            let group = {
                let mut st = self.state();
                if st.inflight >= self.depth || st.queue.is_empty() {
                    // NB: a wait only delays the first group after a commit, not the loop.
                    st.submitting = false;
                    guard.finished = true;
                    return;
                }
                st.inflight += 1;
                st.queue.pop_front().expect("not empty")
            };
            guard.holds_slot = true;
            let sent = Self::send(&ctx, &group).await;
            guard.holds_slot = false;
            match sent {
                Ok((rx, writing)) => {
                    let (this, ctx) = (self.clone(), ctx.clone());
                    tokio::spawn(async move {
                        let res = outcome(&ctx, rx).await;
                        drop(writing);
                        let answered = if res.is_ok() { group.waiters.len() } else { 0 };
                        deliver(group, res);
                        this.done(ctx, answered);
                    });
                }
                Err(status) => {
                    deliver(group, Err(status));
                    self.state().inflight -= 1;
                }
            }
        }
    }

    /// Hands one group to Raft; holds the member's write permit until its result is back (a
    /// leadership transfer waits for it).
    async fn send(ctx: &Ctx, group: &Group) -> Result<(WriteRx, OwnedRwLockReadGuard<()>), Status> {
        if !ctx.is_leader() {
            return Err(not_leader(ctx.leader()));
        }
        // NB: waits while a leadership transfer runs; afterwards this member may no longer lead.
        let writing = ctx.writes.clone().read_owned().await;
        if !ctx.is_leader() {
            return Err(not_leader(ctx.leader()));
        }
        // Fail fast: a leader cut off from its quorum would hold the write until the fault heals
        // (and then refuse it); say so now, so the client looks for the new leader.
        if let Some(silent) = ctx.liveness.quorum_lost() {
            return Err(quorum_lost(silent, false));
        }
        let values = group.values.iter().map(|v| v.as_ref());
        let body = if group.claims {
            let parts: Vec<Part> = group.waiters.iter().map(|(p, _)| *p).collect();
            codec::encode_parts(super::log::now_ms(), &parts, values)
        } else {
            encode_records(values)
        };
        let batch = RecordBatch(body.into());
        stats::add(&stats::STATS.raft_writes, 1);
        let rx = ctx
            .raft
            .client_write_ff(batch)
            .await
            .map_err(|e| write_status(RaftError::Fatal(e), ctx))?;
        Ok((rx, writing))
    }

    /// A group's result is back (`answered` callers got theirs): frees its slot, and restarts
    /// the submitter if work waits, at once or once those callers have called again.
    fn done(self: Arc<Self>, ctx: Ctx, answered: usize) {
        let (start, hold) = {
            let mut st = self.state();
            st.inflight -= 1;
            // NB: no wait when the queue already holds as many calls as the group answered (many
            // callers: the next group is big anyway).
            let queued: usize = st.queue.iter().map(|g| g.waiters.len()).sum();
            let hold = !self.wait.is_zero() && answered >= queued.max(1) && st.skip == 0;
            st.skip = st.skip.saturating_sub(1);
            st.holding = hold;
            st.awaited = if hold { answered } else { 0 };
            st.hold_id += u64::from(hold);
            let start = st.may_start(self.depth);
            st.submitting |= start;
            // A full group goes at once; the wait (and its timer) is then moot.
            st.holding &= !start;
            (start, hold.then_some(st.hold_id))
        };
        if start {
            tokio::spawn(self.submit(ctx));
        } else if let Some(id) = hold {
            tokio::spawn(async move {
                tokio::time::sleep(self.wait).await;
                self.wait_over(ctx, id);
            });
        }
    }

    /// A wait ran out: submits what is queued; the callers that did not come back make the
    /// following groups skip waiting (1, 2, 4 ... up to 1024 groups while that repeats).
    fn wait_over(self: Arc<Self>, ctx: Ctx, id: u64) {
        let start = {
            let mut st = self.state();
            if !st.holding || st.hold_id != id {
                return;
            }
            st.holding = false;
            st.backoff = (st.backoff * 2).clamp(1, 1024);
            st.skip = st.backoff;
            let start = st.may_start(self.depth);
            st.submitting |= start;
            start
        };
        if start {
            tokio::spawn(self.submit(ctx));
        }
    }
}

/// Restarts submission in a task when the call running [`GroupCommit::submit`] is dropped
/// before it finished.
struct TakeOver {
    queue: Arc<GroupCommit>,
    ctx: Ctx,
    holds_slot: bool,
    finished: bool,
}

impl Drop for TakeOver {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let restart = {
            let mut st = self.queue.state();
            if self.holds_slot {
                st.inflight -= 1;
            }
            st.submitting = false;
            let restart = st.may_start(self.queue.depth);
            st.submitting = restart;
            restart
        };
        if restart {
            tokio::spawn(self.queue.clone().submit(self.ctx.clone()));
        }
    }
}

/// Appends `values` as a Raft entry of their own (no grouping); returns the first offset.
pub async fn append_alone(ctx: &Ctx, values: Vec<Bytes>) -> Result<u64, Status> {
    let group = Group {
        values,
        ..Group::default()
    };
    let (rx, writing) = GroupCommit::send(ctx, &group).await?;
    let res = outcome(ctx, rx).await;
    drop(writing);
    res.map(|a| a.first_offset)
}

/// Waits for a submitted entry: what applying it did, or why it failed; fails fast when the
/// leader loses its quorum meanwhile (the entry may still commit: the status says unknown).
async fn outcome(ctx: &Ctx, rx: WriteRx) -> Result<Applied, Status> {
    tokio::select! {
        r = rx => match r {
            Ok(Ok(r)) => Ok(r.data),
            Ok(Err(e)) => Err(write_status(RaftError::APIError(e), ctx)),
            Err(_) => Err(Status::unavailable("member is shutting down; retry")),
        },
        silent = ctx.liveness.until_quorum_lost() => Err(quorum_lost(silent, true)),
    }
}

/// Answers every call of a group: its first record's offset (and whether it was a duplicate),
/// its refusal, or the group's error.
fn deliver(group: Group, res: Result<Applied, Status>) {
    match res {
        Ok(applied) if group.claims => {
            if applied.parts.len() != group.waiters.len() {
                let s = Status::internal(format!(
                    "an entry of {} parts was applied as {} parts",
                    group.waiters.len(),
                    applied.parts.len()
                ));
                return deliver(group, Err(s));
            }
            for ((_, tx), part) in group.waiters.into_iter().zip(applied.parts) {
                let answer = match part.outcome {
                    Outcome::Appended => Ok((part.first_offset, false)),
                    Outcome::Duplicate => Ok((part.first_offset, true)),
                    Outcome::Refused(r) => Err(refusal_status(r)),
                    o => Err(Status::internal(format!("a produce was applied as {o:?}"))),
                };
                let _ = tx.send(answer);
            }
        }
        Ok(applied) => {
            let mut next = applied.first_offset;
            for (part, tx) in group.waiters {
                let _ = tx.send(Ok((next, false)));
                next += u64::from(part.count);
            }
        }
        Err(s) => {
            for (_, tx) in group.waiters {
                let _ = tx.send(Err(s.clone()));
            }
        }
    }
}
