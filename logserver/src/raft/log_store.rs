//! openraft's `RaftLogStorage` over [`crate::storage::Log`]: Raft index == storage offset.
//!
//! [`LogShared`] owns the open storage log and the Raft metadata; the log store, its readers and
//! the state machine all hold an `Arc` of it. openraft's `purge` only records the purged log id:
//! the entries stay on disk for Consume until retention ([`LogShared::truncate_before`]) drops
//! them, never past the purged id. Reads below the purged id are refused to openraft, as its
//! contract expects.
//!
//! The newest appended entries are also kept in memory ([`Recent`], up to [`RECENT_MAX_BYTES`]),
//! so that replication and apply, which read what was just appended, neither read the disk nor
//! hand their worker thread over (`blocking`) to do so. Any change to the log other than an
//! append (truncation, snapshot install, retention) goes through [`LogShared::write`], which
//! forgets them.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{RaftLogReader, StorageIOError};

use super::codec;
use super::flush::FlushQueue;
use super::meta::{self, RaftMeta};
use super::{store_err, Entry, LogId, LogState, StorageError, TypeConfig, Vote};
use crate::stats;
use crate::storage::{self, LogConfig, NewEntry};

/// How often a changed `committed` id is written to disk at most.
const COMMITTED_PERSIST_EVERY: Duration = Duration::from_millis(500);
/// Bytes of entry payloads [`Recent`] keeps at most (and at least the last append).
pub const RECENT_MAX_BYTES: usize = 32 << 20;

/// The newest entries of the log as openraft entries: a contiguous run ending at the log's last
/// entry, exactly as stored (or empty).
#[derive(Debug, Default)]
struct Recent {
    entries: VecDeque<Entry>,
    bytes: usize,
}

impl Recent {
    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Adds entries just stored after the last one (or after a gap: then only they are kept).
    fn push(&mut self, entries: Vec<Entry>) {
        let Some(first) = entries.first().map(|e| e.log_id.index) else {
            return;
        };
        if self.entries.back().map(|e| e.log_id.index + 1) != Some(first) {
            self.clear();
        }
        for e in entries {
            self.bytes += payload_bytes(&e);
            self.entries.push_back(e);
        }
        while self.bytes > RECENT_MAX_BYTES && self.entries.len() > 1 {
            let e = self.entries.pop_front().expect("not empty");
            self.bytes -= payload_bytes(&e);
        }
    }

    /// Entries `[from, end)` if all are held.
    fn get(&self, from: u64, end: u64) -> Option<Vec<Entry>> {
        let first = self.entries.front()?.log_id.index;
        let next = first + self.entries.len() as u64;
        if from < first || end > next {
            return None;
        }
        Some(
            self.entries
                .range((from - first) as usize..(end - first) as usize)
                .cloned()
                .collect(),
        )
    }
}

fn payload_bytes(e: &Entry) -> usize {
    match &e.payload {
        super::EntryPayload::Normal(b) => b.0.len(),
        _ => 64,
    }
}

/// The open storage log and Raft metadata of one member.
#[derive(Debug)]
pub struct LogShared {
    log: RwLock<storage::Log>,
    dir: PathBuf,
    meta: Mutex<MetaState>,
    /// The leader's background fsync (see [`super::flush`]).
    flush: Arc<FlushQueue>,
    /// This member's node id once known (0: unknown, every append fsyncs inline).
    local_id: AtomicU64,
    /// The newest entries (locked after `log`).
    recent: Mutex<Recent>,
}

impl Drop for LogShared {
    fn drop(&mut self) {
        self.flush.stop();
    }
}

#[derive(Debug)]
struct MetaState {
    meta: RaftMeta,
    persisted_at: Instant,
    dirty: bool,
}

impl LogShared {
    /// Opens the storage log in `cfg.dir/log` and the metadata in `cfg.dir`.
    pub fn open(mut cfg: LogConfig) -> Result<Arc<Self>, Error> {
        let dir = cfg.dir.clone();
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        cfg.dir = dir.join("log");
        let mut log = storage::Log::open(cfg)?;
        // What recovery found counts as durable from here on.
        log.sync()?;
        let meta = meta::load::<RaftMeta>(&dir.join("raft-meta.json"))?.unwrap_or_default();
        let shared = Arc::new(LogShared {
            log: RwLock::new(log),
            dir: dir.clone(),
            meta: Mutex::new(MetaState {
                meta,
                persisted_at: Instant::now(),
                dirty: false,
            }),
            flush: Arc::default(),
            local_id: AtomicU64::new(0),
            recent: Mutex::default(),
        });
        let last = shared.last_stored_log_id().map_err(|e| Error::Io {
            path: dir.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        shared.flush.written_synced(last);
        shared
            .flush
            .start(Arc::downgrade(&shared))
            .map_err(|source| Error::Io { path: dir, source })?;
        Ok(shared)
    }

    /// Tells the store which member it belongs to: from then on this member's own entries as
    /// leader are fsynced in the background (see [`super::flush`]).
    pub fn set_local_id(&self, id: super::NodeId) {
        self.local_id.store(id, Ordering::Relaxed);
    }

    /// The leader's background fsync and its gates.
    pub fn flush_queue(&self) -> &Arc<FlushQueue> {
        &self.flush
    }

    /// True when `entries` are this member's own normal (or blank) entries of the term it leads
    /// in, and may be fsynced in the background.
    fn own_leader_entries(&self, entries: &[Entry]) -> bool {
        let me = self.local_id.load(Ordering::Relaxed);
        if me == 0 || self.read().config().durability != storage::Durability::EveryBatch {
            return false;
        }
        let Some(vote) = self.meta().meta.vote else {
            return false;
        };
        vote.leader_id.node_id == me
            && entries.iter().all(|e| {
                e.log_id.leader_id == vote.leader_id
                    && !matches!(e.payload, super::EntryPayload::Membership(_))
            })
    }

    /// The member's data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Shared access to the storage log.
    pub fn read(&self) -> RwLockReadGuard<'_, storage::Log> {
        self.log.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Exclusive access to the storage log, to change it other than by an append: forgets the
    /// entries kept in memory.
    pub fn write(&self) -> RwLockWriteGuard<'_, storage::Log> {
        let log = self.write_log();
        self.recent().clear();
        log
    }

    /// Exclusive access to the storage log that keeps the entries in memory (appends and syncs).
    fn write_log(&self) -> RwLockWriteGuard<'_, storage::Log> {
        self.log.write().unwrap_or_else(|p| p.into_inner())
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The id up to which openraft no longer needs entries.
    pub fn purged(&self) -> Option<LogId> {
        self.meta().meta.purged
    }

    fn meta(&self) -> std::sync::MutexGuard<'_, MetaState> {
        self.meta.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn persist(&self, m: &mut MetaState) -> Result<(), meta::Error> {
        meta::store(&self.dir.join("raft-meta.json"), &m.meta)?;
        m.persisted_at = Instant::now();
        m.dirty = false;
        Ok(())
    }

    /// Physically drops whole segments below `below`, but never an entry openraft still needs
    /// (above the purged id). Returns the log's first offset afterwards.
    pub fn truncate_before(&self, below: u64) -> Result<u64, storage::Error> {
        let limit = self.purged().map_or(0, |p| p.index + 1);
        let mut log = self.write();
        let below = below.min(limit).min(log.next_offset());
        if below > log.first_offset() {
            log.truncate_prefix(below)?;
        }
        Ok(log.first_offset())
    }

    /// Flushes the log and writes pending metadata.
    pub fn sync(&self) -> Result<(), Error> {
        self.write_log().sync()?;
        if let Ok(last) = self.last_stored_log_id() {
            self.flush.written_synced(last);
        }
        let mut m = self.meta();
        if m.dirty {
            self.persist(&mut m)?;
        }
        Ok(())
    }

    /// Stores `entries` for openraft's `append`: written and fsynced before it returns, except
    /// the leader's own entries (see [`super::flush`]), which the flusher fsyncs afterwards.
    pub fn append_entries(&self, entries: Vec<Entry>) -> Result<(), storage::Error> {
        let purged_next = self.purged().map_or(0, |p| p.index + 1);
        let background = self.own_leader_entries(&entries);
        let last_id = entries.last().map(|e| e.log_id);
        // Entries at or below the purged id are not needed by openraft any more (it never sends
        // them; the conformance suite does) and would not fit the contiguous log.
        let entries: Vec<Entry> = entries
            .into_iter()
            .filter(|e| e.log_id.index >= purged_next)
            .collect();
        let encoded: Vec<(u64, u64, u8, Vec<u8>)> = entries
            .iter()
            .map(|e| {
                let (kind, payload) = codec::encode_entry(e);
                (e.log_id.index, e.log_id.leader_id.term, kind, payload)
            })
            .collect();
        let records: u64 = encoded
            .iter()
            .filter(|(_, _, kind, _)| *kind == codec::KIND_NORMAL)
            // The payload is the leader's node id, then the record batch.
            .map(|(.., p)| u64::from(codec::record_count(p.get(8..).unwrap_or(&[])).unwrap_or(0)))
            .sum();
        stats::add(&stats::STATS.appends, 1);
        stats::add(&stats::STATS.entries, encoded.len() as u64);
        stats::add(&stats::STATS.records, records);
        let Some(&(first, ..)) = encoded.first() else {
            return Ok(());
        };
        let mut log = self.write_log();
        if first != log.next_offset() {
            // A gap is legal only when nothing openraft still needs is stored: an empty log, or
            // right after a purge past everything stored.
            let empty = log.first_offset() == log.next_offset();
            let stored_all_purged = log.next_offset() <= purged_next;
            if first < log.next_offset() || !(empty || stored_all_purged) {
                return Err(storage::Error::OutOfRange {
                    offset: first,
                    first: log.first_offset(),
                    next: log.next_offset(),
                });
            }
            self.recent().clear();
            log.truncate_prefix(first)?;
        }
        let es = encoded.iter().map(|(_, term, kind, payload)| NewEntry {
            term: *term,
            kind: *kind,
            payload,
        });
        let stored = if background {
            log.append_batch_unsynced(es)
        } else {
            log.append_batch(es)
        };
        if let Err(e) = stored {
            // NB: what was stored of the batch is not known here.
            self.recent().clear();
            return Err(e);
        }
        self.recent().push(entries);
        // NB: told while the log is still locked, so the flusher's sync covers these entries.
        match last_id {
            Some(last) if background => self.flush.written_unsynced(last),
            _ => self.flush.written_synced(last_id),
        }
        Ok(())
    }

    /// The stored entries `[from, to]` if they are all kept in memory (see [`Recent`]).
    fn recent_entries(&self, from: u64, to_inclusive: u64) -> Option<Vec<Entry>> {
        let log = self.read();
        let from = from.max(log.first_offset());
        let end = (to_inclusive.saturating_add(1)).min(log.next_offset());
        if from >= end {
            return Some(Vec::new());
        }
        let recent = self.recent().get(from, end);
        recent
    }

    /// The entries written after `prev` (at most `max`), if `prev` is the entry before them in
    /// this log and they are all still in memory (speculative replication, `super::network`).
    pub fn entries_after(&self, prev: LogId, max: usize) -> Option<Vec<Entry>> {
        let log = self.read();
        let from = prev.index + 1;
        let end = log.next_offset().min(from + max as u64);
        if from >= end {
            return None;
        }
        let recent = self.recent();
        let at_prev = recent.get(prev.index, prev.index + 1)?;
        if at_prev.first().map(|e| e.log_id) != Some(prev) {
            return None;
        }
        recent.get(from, end)
    }

    /// The stored entries `[from, to]` as openraft entries (fewer if the log ends earlier).
    fn entries(&self, from: u64, to_inclusive: u64) -> Result<Vec<Entry>, StorageError> {
        let log = self.read();
        let from = from.max(log.first_offset());
        let end = (to_inclusive.saturating_add(1)).min(log.next_offset());
        if from >= end {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity((end - from) as usize);
        for e in log.reader(from).take((end - from) as usize) {
            let e = e.map_err(|e| store_err(StorageIOError::read_logs, &e))?;
            out.push(
                codec::decode_entry(&e).map_err(|e| store_err(StorageIOError::read_logs, &e))?,
            );
        }
        Ok(out)
    }

    /// The log id of the last stored entry.
    pub fn last_stored_log_id(&self) -> Result<Option<LogId>, StorageError> {
        let log = self.read();
        match log.last_entry_id() {
            None => Ok(None),
            Some((offset, _)) => {
                let e = log
                    .read(offset)
                    .map_err(|e| store_err(StorageIOError::read_logs, &e))?;
                Ok(Some(
                    codec::stored_log_id(&e)
                        .map_err(|e| store_err(StorageIOError::read_logs, &e))?,
                ))
            }
        }
    }
}

/// Errors opening the log store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Storage(#[from] storage::Error),
    #[error(transparent)]
    Meta(#[from] meta::Error),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// openraft's log store and log reader.
#[derive(Debug, Clone)]
pub struct LogStore {
    shared: Arc<LogShared>,
}

impl LogStore {
    pub fn new(shared: Arc<LogShared>) -> Self {
        LogStore { shared }
    }
}

fn bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let from = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s + 1,
        Bound::Unbounded => 0,
    };
    let to = match range.end_bound() {
        Bound::Included(&e) => e,
        Bound::Excluded(&0) => return (1, 0),
        Bound::Excluded(&e) => e - 1,
        Bound::Unbounded => u64::MAX - 1,
    };
    (from, to)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (from, to) = bounds(&range);
        let from = from.max(self.shared.purged().map_or(0, |p| p.index + 1));
        if from > to {
            return Ok(Vec::new());
        }
        if let Some(entries) = self.shared.recent_entries(from, to) {
            return Ok(entries);
        }
        super::blocking(|| self.shared.entries(from, to))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState, StorageError> {
        let purged = self.shared.purged();
        let last = self.shared.last_stored_log_id()?;
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last.max(purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let mut m = self.shared.meta();
        m.meta.vote = Some(*vote);
        self.shared
            .persist(&mut m)
            .map_err(|e| store_err(StorageIOError::write_vote, &e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.shared.meta().meta.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // NB: never past what is durable here: on restart openraft re-applies up to it.
        let committed = self.shared.flush.cap(committed);
        let mut m = self.shared.meta();
        m.meta.committed = committed;
        m.dirty = true;
        if m.persisted_at.elapsed() >= COMMITTED_PERSIST_EVERY {
            self.shared
                .persist(&mut m)
                .map_err(|e| store_err(StorageIOError::write, &e))?;
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.shared.meta().meta.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        // NB: the leader's own entries are only written here (no fsync): not worth handing the
        // worker thread over (`blocking`) for one write.
        let res = if self.shared.own_leader_entries(&entries) {
            self.shared.append_entries(entries)
        } else {
            super::blocking(|| self.shared.append_entries(entries))
        };
        match res {
            Ok(()) => {
                // NB: for the leader's own entries "flushed" is reported before the fsync, which
                // the flusher does in the background; the gates of `super::flush` keep the
                // entries invisible until it is done.
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(store_err(StorageIOError::write_logs, &e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        super::blocking(|| {
            let mut log = self.shared.write();
            if log_id.index < log.next_offset() {
                let from = log_id.index.max(log.first_offset());
                log.truncate_suffix(from)
                    .map_err(|e| store_err(StorageIOError::write_logs, &e))?;
            }
            Ok::<_, StorageError>(())
        })?;
        self.shared
            .flush
            .truncated(self.shared.last_stored_log_id()?);
        Ok(())
    }
    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // NB: nothing is deleted here. A purge past everything stored (a follower installing a
        // snapshot; openraft may run it before the install itself) leaves the log as it is; the
        // install or the next append restarts it where needed.
        let mut m = self.shared.meta();
        if m.meta.purged >= Some(log_id) {
            return Ok(());
        }
        m.meta.purged = Some(log_id);
        self.shared
            .persist(&mut m)
            .map_err(|e| store_err(StorageIOError::write_logs, &e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{EntryPayload, RecordBatch};

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(RecordBatch(
                codec::encode_records([format!("t{term}i{index}").as_bytes()]).into(),
            )),
        }
    }

    /// What openraft reads: from memory when held, and always what the disk holds.
    fn read(shared: &LogShared, from: u64, to: u64) -> (bool, Vec<Entry>) {
        let disk = shared.entries(from, to).unwrap();
        match shared.recent_entries(from, to) {
            Some(mem) => {
                assert_eq!(mem, disk, "[{from}, {to}] in memory differs from disk");
                (true, mem)
            }
            None => (false, disk),
        }
    }

    #[test]
    fn entries_kept_in_memory_are_what_the_disk_holds() {
        let dir = tempfile::tempdir().unwrap();
        let shared = LogShared::open(LogConfig::new(dir.path())).unwrap();
        shared
            .append_entries((0..10).map(|i| entry(1, i)).collect())
            .unwrap();
        assert_eq!(
            read(&shared, 3, 9),
            (true, (3..10).map(|i| entry(1, i)).collect())
        );
        // A truncation (a new leader overwrote the tail) forgets them; appends refill.
        {
            let mut log = shared.write();
            log.truncate_suffix(6).unwrap();
        }
        assert!(!read(&shared, 3, 5).0);
        shared
            .append_entries((6..8).map(|i| entry(2, i)).collect())
            .unwrap();
        assert_eq!(read(&shared, 6, 7), (true, vec![entry(2, 6), entry(2, 7)]));
        assert_eq!(read(&shared, 6, 100).1.len(), 2);
        assert!(
            !read(&shared, 5, 7).0,
            "entries before the refill come from disk"
        );
        assert_eq!(read(&shared, 5, 7).1[0], entry(1, 5));
    }
}
