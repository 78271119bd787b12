//! Raft replication: openraft over the storage engine.
//!
//! This module owns the openraft type configuration (declared once, here; every other file uses
//! the aliases below and never spells out openraft generics), the log store, the state machine,
//! the peer network client and the on-disk Raft metadata.
//!
//! # One write path
//! The Raft log *is* the commit log. [`log_store::LogStore`] implements openraft's
//! `RaftLogStorage` over [`crate::storage::Log`] with Raft log index == storage offset; the entry
//! header carries the term and the entry kind (see [`codec`]). A `ProduceBatch` becomes one Raft
//! entry holding many records. Records are written and fsynced once, in the group commit that
//! openraft's leader forms from whatever client writes are queued.
//!
//! # Record offsets
//! The state machine ([`state_machine::StateMachine`]) assigns record offsets densely, 0, 1, 2, ...
//! over the records of normal entries in log order. It keeps an in-memory, run-length encoded
//! [`index::RecordIndex`] (one 32-byte run per stretch of consecutive entries with the same
//! record count), enough to find any record inside its Raft entry without a second copy of the
//! data. It is rebuilt on start by scanning the retained log up to the snapshot cut (NB: the scan
//! reads every retained entry once); openraft re-applies the rest.
//!
//! # Snapshots
//! The data of a commit log is the log itself, so a snapshot is not a copy of "state" but a
//! cut: `(last log id, membership, next record offset)` - a few bytes, persisted by
//! [`meta::SnapshotFile`] when openraft builds a snapshot. openraft's `purge` only records that
//! Raft no longer needs entries up to some id ([`meta::RaftMeta`]); nothing is deleted then.
//!
//! - Without retention (`retain_entries = 0`, the default) openraft is told to keep every entry
//!   (`max_in_snapshot_log_to_keep = u64::MAX`), so it never purges and never sends a snapshot:
//!   a member that fell behind, however far, catches up by normal replication from the log.
//! - With retention, openraft purges entries older than the retained window, and retention
//!   ([`state_machine::SmShared::apply_retention`]) then drops whole segments, never past the
//!   purged id. A member behind the purged id gets a snapshot whose transferred form
//!   ([`codec::SnapshotData`]) carries the cut plus the raw Raft entries the leader still holds
//!   just before it - the records themselves, capped at
//!   [`state_machine::SNAPSHOT_MAX_BYTES`] - so the member installs them into its own log (same
//!   indexes, same terms) and serves those records too; replication continues after the cut.
//!
//! # Idempotent producers
//! Records may carry a producer claim `(id, epoch, first sequence)`; the state machine keeps a
//! [`producer::ProducerTable`] and decides in `apply` whether a batch is new, a duplicate (no
//! offsets; the caller gets the original ones) or refused. Such skipped entries stay in the Raft
//! log; the snapshot cut lists the retained ones so the index rebuilt on open skips them, and
//! carries the producer table, so every member deduplicates identically. Group commit puts the
//! claims of several calls into one entry ([`codec::Body::Parts`]); each part is decided as if it
//! were an entry of its own, and an entry only some of whose parts got offsets is listed with
//! the parts that did not.
//!
//! # Commit index to followers
//! openraft sends a follower an empty AppendEntries after every commit just to carry the new
//! commit index; [`notice`] answers those on the leader and lets the next AppendEntries with
//! entries carry it (or a heartbeat within a few ms once the leader goes idle).
//!
//! NB: the transferred form is materialised in memory when openraft asks for it (openraft 0.9
//! wants `Cursor<Vec<u8>>`-like snapshot data); the byte cap bounds it.

// NB: openraft's `StorageError` is large and its traits dictate it; boxing it only here would
// not help.
#![allow(clippy::result_large_err)]

pub mod codec;
pub mod election;
pub mod flush;
pub mod index;
pub mod log_store;
pub mod meta;
pub mod network;
pub mod notice;
pub mod producer;
pub mod state_machine;

use std::io::Cursor;

use serde::{Deserialize, Serialize};

/// The node id of a member.
pub type NodeId = u64;

/// What openraft knows of a member: where to dial it and a human name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// `host:port` peers and clients dial.
    pub addr: String,
    /// Pod name under the operator; empty otherwise.
    pub name: String,
}

impl std::fmt::Display for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.name.is_empty() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}@{}", self.name, self.addr)
        }
    }
}

/// The application data of a normal Raft entry: a batch of records, already encoded with
/// [`codec::encode_records`] so that it is written to disk and sent to peers as one byte string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordBatch(pub bytes::Bytes);

/// What applying a normal entry returns: the offset of its first record and how many it holds,
/// and what became of it. An entry of several calls' parts (group commit) says it per part in
/// `parts` (then `outcome` is `Appended` and `first_offset` the next offset before the entry).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub first_offset: u64,
    pub count: u32,
    pub outcome: Outcome,
    pub parts: Vec<PartApplied>,
}

/// What became of one part of an entry of several parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartApplied {
    /// Where its records are: appended here, or the original offset of a duplicate.
    pub first_offset: u64,
    pub outcome: Outcome,
}

/// What applying an entry did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Its records (if any) were appended at `first_offset`.
    #[default]
    Appended,
    /// An idempotent batch committed before: nothing appended; `first_offset` is the original.
    Duplicate,
    /// An idempotent batch refused: nothing appended.
    Refused(producer::Refusal),
    /// An `InitProducer` entry: the producer id and epoch to use.
    ProducerReady { id: u64, epoch: u32 },
}

openraft::declare_raft_types!(
    /// The openraft type configuration of ProgLog.
    pub TypeConfig:
        D = RecordBatch,
        R = Applied,
        NodeId = NodeId,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft handle.
pub type Raft = openraft::Raft<TypeConfig>;
/// A Raft log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// The payload of a Raft log entry.
pub type EntryPayload = openraft::EntryPayload<TypeConfig>;
/// A Raft log id (leader id + index).
pub type LogId = openraft::LogId<NodeId>;
/// A vote.
pub type Vote = openraft::Vote<NodeId>;
/// Membership config.
pub type Membership = openraft::Membership<NodeId, Member>;
/// Membership config and the log id that set it.
pub type StoredMembership = openraft::StoredMembership<NodeId, Member>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Member>;
/// A snapshot (meta + data).
pub type Snapshot = openraft::Snapshot<TypeConfig>;
/// The storage error openraft expects from stores.
pub type StorageError = openraft::StorageError<NodeId>;
/// Raft metrics.
pub type RaftMetrics = openraft::RaftMetrics<NodeId, Member>;
/// Log state as openraft expects it.
pub type LogState = openraft::storage::LogState<TypeConfig>;
/// AppendEntries request.
pub type AppendEntriesRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;
/// AppendEntries response.
pub type AppendEntriesResponse = openraft::raft::AppendEntriesResponse<NodeId>;
/// Vote request.
pub type VoteRequest = openraft::raft::VoteRequest<NodeId>;
/// Vote response.
pub type VoteResponse = openraft::raft::VoteResponse<NodeId>;
/// InstallSnapshot request (one chunk).
pub type InstallSnapshotRequest = openraft::raft::InstallSnapshotRequest<TypeConfig>;
/// InstallSnapshot response.
pub type InstallSnapshotResponse = openraft::raft::InstallSnapshotResponse<NodeId>;
/// A Raft error with an API-specific inner error.
pub type RaftError<E = openraft::error::Infallible> = openraft::error::RaftError<NodeId, E>;
/// The error of `client_write`.
pub type ClientWriteError = openraft::error::ClientWriteError<NodeId, Member>;
/// The error of membership calls.
pub type ChangeMembershipError = openraft::error::ChangeMembershipError<NodeId>;
/// The error of `initialize`.
pub type InitializeError = openraft::error::InitializeError<NodeId, Member>;
/// An RPC error as the network returns it.
pub type RpcError<E = openraft::error::Infallible> =
    openraft::error::RPCError<NodeId, Member, RaftError<E>>;
/// The error of InstallSnapshot.
pub type InstallSnapshotError = openraft::error::InstallSnapshotError;
/// Server state (role).
pub type ServerState = openraft::ServerState;

/// Wraps any error as openraft's storage error, built by one of `StorageIOError`'s constructors
/// (`StorageIOError::write_logs`, `::read_logs`, ...).
pub(crate) fn store_err(
    make: impl FnOnce(openraft::AnyError) -> openraft::StorageIOError<NodeId>,
    e: &(impl std::error::Error + 'static),
) -> StorageError {
    make(openraft::AnyError::new(e)).into()
}

/// Runs blocking file I/O from async code: on a multi-threaded runtime the worker hands its other
/// tasks to the rest of the pool first (`block_in_place`), so an fsync, or a reader waiting for
/// one, does not stall the gRPC and Raft tasks queued behind it. Elsewhere it just runs `f`.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Errors opening a member's Raft storage.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Log(#[from] log_store::Error),
    #[error(transparent)]
    StateMachine(#[from] state_machine::Error),
}

/// Opens the log store and the state machine of a member whose data lives in `cfg.dir`
/// (the storage log goes to `cfg.dir/log`).
pub fn open_storage(
    cfg: crate::storage::LogConfig,
) -> Result<(log_store::LogStore, state_machine::StateMachine), OpenError> {
    let shared = log_store::LogShared::open(cfg)?;
    let sm = state_machine::StateMachine::open(shared.clone())?;
    Ok((log_store::LogStore::new(shared), sm))
}
