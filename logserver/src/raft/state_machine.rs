//! openraft's `RaftStateMachine`: assigns record offsets and serves record reads.
//!
//! The state is the [`RecordIndex`] (record offset -> Raft entry), the last applied log id and the
//! membership; the records themselves stay in the Raft log ([`LogShared`]). Snapshots are cuts
//! ([`SnapshotFile`]); their transferred form carries the leader's retained entries up to the cut
//! (see the [module docs](super)). Reads never go past the last applied entry, because the index
//! only holds applied entries.
//!
//! It also owns the idempotent [`ProducerTable`]: `apply` decides per batch whether it is new, a
//! duplicate or refused (see [`super::producer`]); the entries of duplicates and refusals get no
//! record offsets and are remembered (`skipped`) so that an index rebuilt from the log skips them.

use std::io::Cursor;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::storage::RaftStateMachine;
use openraft::{RaftSnapshotBuilder, StorageIOError};
use tokio::sync::watch;

use super::codec::{self, Body, RawEntry, SnapshotData, KIND_NORMAL};
use super::index::{OutOfRange, RecordIndex};
use super::log_store::LogShared;
use super::meta::{self, SnapshotFile, SNAPSHOT_VERSION};
use super::producer::{Check, ProducerKey, ProducerTable, Skipped};
use super::{
    store_err, Applied, Entry, EntryPayload, LogId, Outcome, PartApplied, Snapshot, SnapshotMeta,
    StorageError, StoredMembership, TypeConfig,
};
use crate::storage::{self, NewEntry};

const SNAPSHOT_FILE: &str = "snapshot.json";

/// The most entry bytes a transferred snapshot carries. A member restored by snapshot serves the
/// records of the newest this-many bytes before the cut (and everything after it); older ones
/// are OUT_OF_RANGE there (they are still served by the members that kept them).
pub const SNAPSHOT_MAX_BYTES: usize = 256 << 20;

/// Errors of the state machine's own operations (open, reads).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    OutOfRange(#[from] OutOfRange),
    #[error(transparent)]
    Storage(#[from] storage::Error),
    #[error(transparent)]
    Codec(#[from] codec::Error),
    #[error(transparent)]
    Meta(#[from] meta::Error),
    #[error("log does not match the snapshot cut: {0}")]
    Inconsistent(String),
}

/// Result with the state machine [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub offset: u64,
    pub term: u64,
    pub value: bytes::Bytes,
}

#[derive(Debug)]
struct State {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    index: RecordIndex,
    producers: ProducerTable,
    /// Applied entries whose records got no offsets.
    skipped: Skipped,
    snapshot: Option<SnapshotFile>,
    snapshot_seq: u64,
}

/// The state shared by the state machine, its snapshot builder and the gRPC services.
#[derive(Debug)]
pub struct SmShared {
    log: Arc<LogShared>,
    state: RwLock<State>,
    next_tx: watch::Sender<u64>,
}

/// openraft's state machine (and snapshot builder): a handle on [`SmShared`].
#[derive(Debug, Clone)]
pub struct StateMachine {
    shared: Arc<SmShared>,
}

impl StateMachine {
    /// Opens the state machine over `log`: loads the snapshot cut and rebuilds the record index
    /// of the retained entries up to it. openraft then re-applies what follows the cut.
    pub fn open(log: Arc<LogShared>) -> Result<Self> {
        let started = std::time::Instant::now();
        let snapshot: Option<SnapshotFile> = meta::load(&log.dir().join(SNAPSHOT_FILE))?;
        let (last_applied, membership, index, producers, skipped) = match &snapshot {
            None => (
                None,
                StoredMembership::default(),
                RecordIndex::starting_at(0),
                ProducerTable::default(),
                Skipped::default(),
            ),
            Some(s) => {
                let cut = s.meta.last_log_id;
                repair_against_cut(&log, cut)?;
                let skipped = s.skipped.clone();
                let index =
                    rebuild_index(&log, cut.map(|c| c.index), s.next_record_offset, &skipped)?;
                let mut producers = s.producers.clone();
                producers.reindex();
                let m = s.meta.last_membership.clone();
                (cut, m, index, producers, skipped)
            }
        };
        tracing::info!(
            runs = index.runs(),
            records = index.range().1 - index.range().0,
            ms = started.elapsed().as_millis() as u64,
            "record index rebuilt up to the snapshot cut"
        );
        let (next_tx, _) = watch::channel(index.next());
        Ok(StateMachine {
            shared: Arc::new(SmShared {
                log,
                state: RwLock::new(State {
                    last_applied,
                    membership,
                    index,
                    producers,
                    skipped,
                    snapshot,
                    snapshot_seq: 0,
                }),
                next_tx,
            }),
        })
    }

    /// The shared state, for the services.
    pub fn shared(&self) -> Arc<SmShared> {
        self.shared.clone()
    }
}

/// After a crash in the middle of a snapshot install the log may not agree with the cut: then
/// the log is emptied and restarted after the cut (this member loses the records before the cut,
/// which the leader still serves).
fn repair_against_cut(log: &LogShared, cut: Option<LogId>) -> Result<()> {
    let Some(cut) = cut else { return Ok(()) };
    let mut l = log.write();
    if cut.index < l.first_offset() {
        return Ok(());
    }
    let matches = if cut.index < l.next_offset() {
        let e = l.read(cut.index)?;
        codec::stored_log_id(&e)? == cut
    } else {
        false
    };
    if !matches {
        tracing::warn!(cut = %cut, "log does not hold the snapshot cut; restarting it after the cut");
        let first = l.first_offset();
        l.truncate_suffix(first)?;
        l.truncate_prefix(cut.index + 1)?;
    }
    Ok(())
}

/// Builds the index of the stored entries up to `cut` (inclusive), given the offset of the first
/// record after the cut and the entries whose records got no offsets. NB: it starts no lower
/// than `skipped.from`; records before are not served here (the members that applied them do).
fn rebuild_index(
    log: &LogShared,
    cut: Option<u64>,
    next_record_offset: u64,
    skipped: &Skipped,
) -> Result<RecordIndex> {
    let Some(cut) = cut else {
        return Ok(RecordIndex::starting_at(next_record_offset));
    };
    let l = log.read();
    let first = l.first_offset().max(skipped.from);
    // (Raft index, position in the entry, records) of each indexed stretch.
    let mut stretches = Vec::new();
    if first <= cut {
        for e in l.reader(first).take((cut + 1 - first) as usize) {
            let e = e?;
            if e.kind != KIND_NORMAL || skipped.contains(e.offset) {
                continue;
            }
            let body = codec::stored_body(&e);
            match skipped.parts_of(e.offset) {
                None => stretches.push((e.offset, 0, codec::record_count(body)?)),
                Some(gone) => {
                    let Body::Parts { parts, .. } = codec::decode_body(body)? else {
                        return Err(Error::Inconsistent(format!(
                            "entry {} is listed with skipped parts but has none",
                            e.offset
                        )));
                    };
                    let kept = parts
                        .iter()
                        .enumerate()
                        .map(|(k, p)| (p.count, !gone.contains(&(k as u32))));
                    for (position, count) in kept_stretches(kept) {
                        stretches.push((e.offset, position, count));
                    }
                }
            }
        }
    }
    let total: u64 = stretches.iter().map(|&(_, _, c)| u64::from(c)).sum();
    let base = next_record_offset.checked_sub(total).ok_or_else(|| {
        Error::Inconsistent(format!(
            "{total} records up to index {cut} but the cut says {next_record_offset}"
        ))
    })?;
    let mut index = RecordIndex::starting_at(base);
    for (raft_index, position, count) in stretches {
        index.push_at(raft_index, position, count);
    }
    Ok(index)
}

/// The stretches `(position, count)` of kept records, given each part's record count and
/// whether it is kept, in entry order; neighbouring kept parts form one stretch.
fn kept_stretches(parts: impl IntoIterator<Item = (u32, bool)>) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    let mut position = 0u32;
    let mut last_kept_end = None;
    for (count, kept) in parts {
        if kept && count > 0 {
            match out.last_mut() {
                Some(s) if last_kept_end == Some(position) => s.1 += count,
                _ => out.push((position, count)),
            }
            last_kept_end = Some(position + count);
        }
        position += count;
    }
    out
}

impl SmShared {
    fn state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn state_mut(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The readable record range `[first, next)` on this member.
    pub fn range(&self) -> (u64, u64) {
        self.state().index.range()
    }

    /// Watches the next record offset (it moves when entries are applied).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.next_tx.subscribe()
    }

    /// The last applied log id.
    pub fn last_applied(&self) -> Option<LogId> {
        self.state().last_applied
    }

    /// The original first offset of an idempotent batch already applied here, if it is one;
    /// `None` says nothing (it may be new, refused, or committed but not applied yet).
    pub fn duplicate_of(&self, key: ProducerKey, count: u32) -> Option<u64> {
        match self.state().producers.check(key, count) {
            Check::Duplicate { first_offset } => Some(first_offset),
            _ => None,
        }
    }

    /// The number of idempotent producers held.
    pub fn producer_count(&self) -> usize {
        self.state().producers.len()
    }

    /// The Raft entry-level storage shared with the log store.
    pub fn log(&self) -> &Arc<LogShared> {
        &self.log
    }

    /// Reads the record at `offset`.
    pub fn read(&self, offset: u64) -> Result<StoredRecord> {
        let mut v = self.read_from(offset, 1)?;
        Ok(v.remove(0))
    }

    /// Reads up to `max` (>= 1) records from `offset`, stopping at the end of the Raft entry that
    /// holds `offset`, or before, where a part of it that got no offsets begins (a duplicate's
    /// records stay in the entry but are not in the log).
    pub fn read_from(&self, offset: u64, max: usize) -> Result<Vec<StoredRecord>> {
        let loc = self.state().index.locate(offset)?;
        let entry = match self.log.read().read(loc.raft_index) {
            Ok(e) => e,
            // Dropped by retention between the lookup and the read.
            Err(storage::Error::OutOfRange { .. }) => {
                let (first, next) = self.range();
                return Err(OutOfRange {
                    offset,
                    first,
                    next,
                }
                .into());
            }
            Err(e) => return Err(e.into()),
        };
        let records = codec::records(codec::stored_body(&entry))?;
        let pos = loc.position as usize;
        Ok(records[pos..]
            .iter()
            .take(max.max(1).min(loc.stretch as usize))
            .enumerate()
            .map(|(i, r)| StoredRecord {
                offset: offset + i as u64,
                term: entry.term,
                value: bytes::Bytes::copy_from_slice(r),
            })
            .collect())
    }

    /// Drops whole segments below Raft index `below` (never past the purged id) and forgets their
    /// records. Returns the first record offset still readable.
    pub fn apply_retention(&self, below: u64) -> Result<u64> {
        let first = self.log.truncate_before(below)?;
        let mut st = self.state_mut();
        st.index.drop_below(first);
        Ok(st.index.range().0)
    }

    fn publish(&self, next: u64) {
        self.next_tx.send_replace(next);
    }

    /// The transferred form of the current snapshot: the newest stored entries up to the cut,
    /// at most [`SNAPSHOT_MAX_BYTES`] of them (always at least the cut itself, if stored).
    fn materialize(&self, snap: &SnapshotFile) -> Result<SnapshotData> {
        let mut entries = Vec::new();
        if let Some(cut) = snap.meta.last_log_id {
            let l = self.log.read();
            let first = l.first_offset();
            if first <= cut.index && cut.index < l.next_offset() {
                let mut bytes = 0usize;
                let mut i = cut.index;
                loop {
                    let e = l.read(i)?;
                    bytes += e.payload.len();
                    if bytes > SNAPSHOT_MAX_BYTES && !entries.is_empty() {
                        break;
                    }
                    entries.push(RawEntry {
                        index: e.offset,
                        term: e.term,
                        kind: e.kind,
                        payload: e.payload,
                    });
                    if i == first {
                        break;
                    }
                    i -= 1;
                }
                entries.reverse();
            }
        }
        let mut skipped = snap.skipped.clone();
        let cut_next = snap.meta.last_log_id.map_or(0, |c| c.index + 1);
        skipped.prune_below(entries.first().map_or(cut_next, |e| e.index));
        Ok(SnapshotData {
            next_record_offset: snap.next_record_offset,
            entries,
            producers: snap.producers.clone(),
            skipped,
        })
    }

    /// Installs a received snapshot: makes the log hold the leader's entries up to the cut
    /// (keeping the local log when it already holds the cut) and rebuilds the index.
    fn install(&self, meta: &SnapshotMeta, data: SnapshotData) -> Result<()> {
        let file = SnapshotFile {
            meta: meta.clone(),
            next_record_offset: data.next_record_offset,
            version: SNAPSHOT_VERSION,
            producers: data.producers.clone(),
            skipped: data.skipped.clone(),
        };
        // NB: the cut is written before the log changes; `repair_against_cut` on open handles a
        // crash in between.
        meta::store(&self.log.dir().join(SNAPSHOT_FILE), &file)?;
        let cut = meta.last_log_id;
        if let Some(cut) = cut {
            let mut l = self.log.write();
            let holds_cut = cut.index >= l.first_offset()
                && cut.index < l.next_offset()
                && codec::stored_log_id(&l.read(cut.index)?)? == cut;
            if !holds_cut {
                let first = l.first_offset();
                l.truncate_suffix(first)?;
                let ends_at_cut = data.entries.last().is_some_and(|e| e.index == cut.index);
                if ends_at_cut {
                    let start = data.entries[0].index;
                    if start > l.next_offset() {
                        l.truncate_prefix(start)?;
                    }
                    let next = l.next_offset();
                    l.append_batch(data.entries.iter().filter(|e| e.index >= next).map(|e| {
                        NewEntry {
                            term: e.term,
                            kind: e.kind,
                            payload: &e.payload,
                        }
                    }))?;
                } else {
                    l.truncate_prefix(cut.index + 1)?;
                }
                l.sync()?;
                if l.next_offset() != cut.index + 1 {
                    return Err(Error::Inconsistent(format!(
                        "after install the log ends at {}, the cut is {}",
                        l.next_offset(),
                        cut.index
                    )));
                }
            }
        }
        let skipped = data.skipped.clone();
        let index = rebuild_index(
            &self.log,
            cut.map(|c| c.index),
            data.next_record_offset,
            &skipped,
        )?;
        let next = index.next();
        let mut producers = data.producers;
        producers.reindex();
        {
            let mut st = self.state_mut();
            st.last_applied = cut;
            st.membership = meta.last_membership.clone();
            st.index = index;
            st.producers = producers;
            st.skipped = skipped;
            st.snapshot = Some(file);
        }
        self.publish(next);
        Ok(())
    }
}

/// Applies a normal entry at Raft index `index`: records get offsets unless the producer table
/// finds them duplicate or refuses them; `InitProducer` creates (or bumps) a producer.
fn apply_normal(st: &mut State, index: u64, body: &[u8]) -> Result<Applied, codec::Error> {
    let next = st.index.next();
    match codec::decode_body(body)? {
        Body::InitProducer {
            timestamp_ms,
            requested,
        } => {
            st.producers.advance(timestamp_ms);
            let (id, epoch) = st.producers.init(index, requested);
            Ok(Applied {
                first_offset: next,
                count: 0,
                outcome: Outcome::ProducerReady { id, epoch },
                parts: Vec::new(),
            })
        }
        Body::Records {
            timestamp_ms,
            producer,
            batch,
        } => {
            let count = codec::record_count(batch)?;
            if let Some(ts) = timestamp_ms {
                st.producers.advance(ts);
            }
            let (first_offset, outcome) = decide(st, producer, count, next);
            if outcome == Outcome::Appended {
                st.index.push(index, count);
            } else if count > 0 {
                st.skipped.insert(index);
            }
            Ok(Applied {
                first_offset,
                count,
                outcome,
                parts: Vec::new(),
            })
        }
        Body::Parts {
            timestamp_ms,
            parts,
            batch,
        } => {
            let count = codec::record_count(batch)?;
            if parts.iter().map(|p| u64::from(p.count)).sum::<u64>() != u64::from(count) {
                return Err(codec::Error::BadBatch("parts do not add up to the batch"));
            }
            st.producers.advance(timestamp_ms);
            // Each part is decided in order, as an entry of its own would be; the offsets of
            // the parts appended follow one another.
            let mut out = Vec::with_capacity(parts.len());
            let mut kept = Vec::with_capacity(parts.len());
            let mut gone = std::collections::BTreeSet::new();
            let mut at = next;
            for (k, p) in parts.iter().enumerate() {
                let (first_offset, outcome) = decide(st, p.producer, p.count, at);
                let appended = outcome == Outcome::Appended;
                if appended {
                    at += u64::from(p.count);
                } else if p.count > 0 {
                    gone.insert(k as u32);
                }
                kept.push((p.count, appended));
                out.push(PartApplied {
                    first_offset,
                    outcome,
                });
            }
            if gone.is_empty() {
                st.index.push(index, count);
            } else {
                let stretches = kept_stretches(kept);
                if stretches.is_empty() {
                    st.skipped.insert(index);
                } else {
                    for (position, n) in stretches {
                        st.index.push_at(index, position, n);
                    }
                    st.skipped.insert_parts(index, gone);
                }
            }
            Ok(Applied {
                first_offset: next,
                count,
                outcome: Outcome::Appended,
                parts: out,
            })
        }
    }
}

/// Decides on `count` records under `producer` (if any) that would be appended at `at`: where
/// they are and what became of them. Updates the producer table (not the index).
fn decide(st: &mut State, producer: Option<ProducerKey>, count: u32, at: u64) -> (u64, Outcome) {
    let Some(key) = producer else {
        return (at, Outcome::Appended);
    };
    match st.producers.check(key, count) {
        Check::New => {
            st.producers.record(key, count, at);
            (at, Outcome::Appended)
        }
        Check::Duplicate { first_offset } => {
            st.producers.seen(key.id);
            (first_offset, Outcome::Duplicate)
        }
        Check::Refused(r) => (at, Outcome::Refused(r)),
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let first = self.shared.log.read().first_offset();
        let file = {
            let mut st = self.shared.state_mut();
            // Entries below the log's start are never scanned again.
            st.skipped.prune_below(first);
            st.snapshot_seq += 1;
            let snapshot_id = match st.last_applied {
                Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, st.snapshot_seq),
                None => format!("none-{}", st.snapshot_seq),
            };
            SnapshotFile {
                meta: SnapshotMeta {
                    last_log_id: st.last_applied,
                    last_membership: st.membership.clone(),
                    snapshot_id,
                },
                next_record_offset: st.index.next(),
                version: SNAPSHOT_VERSION,
                producers: st.producers.clone(),
                skipped: st.skipped.clone(),
            }
        };
        let sig = Some(file.meta.signature());
        meta::store(&self.shared.log.dir().join(SNAPSHOT_FILE), &file)
            .map_err(|e| store_err(|a| StorageIOError::write_snapshot(sig.clone(), a), &e))?;
        self.shared.state_mut().snapshot = Some(file.clone());
        crate::metrics::snapshot_built();
        // NB: openraft only keeps the meta of a freshly built snapshot; the entries are read from
        // the log when a snapshot is actually sent (`get_current_snapshot`).
        let data = codec::encode_snapshot(&SnapshotData {
            next_record_offset: file.next_record_offset,
            entries: Vec::new(),
            producers: file.producers.clone(),
            skipped: Skipped::default(),
        });
        Ok(Snapshot {
            meta: file.meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let st = self.shared.state();
        Ok((st.last_applied, st.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if let Some(last) = entries.last() {
            // NB: the leader's own entries may still await their fsync (see `super::flush`).
            let id = last.log_id;
            self.shared
                .log
                .flush_queue()
                .wait_durable(id.index)
                .await
                .map_err(|e| store_err(|a| StorageIOError::apply(id, a), &e))?;
        }
        let mut out = Vec::new();
        let next = {
            let mut st = self.shared.state_mut();
            for e in entries {
                st.last_applied = Some(e.log_id);
                let applied = match &e.payload {
                    EntryPayload::Blank => Applied {
                        first_offset: st.index.next(),
                        ..Default::default()
                    },
                    EntryPayload::Normal(batch) => apply_normal(&mut st, e.log_id.index, &batch.0)
                        .map_err(|err| store_err(|a| StorageIOError::apply(e.log_id, a), &err))?,
                    EntryPayload::Membership(m) => {
                        st.membership = StoredMembership::new(Some(e.log_id), m.clone());
                        Applied {
                            first_offset: st.index.next(),
                            ..Default::default()
                        }
                    }
                };
                out.push(applied);
            }
            st.index.next()
        };
        self.shared.publish(next);
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let sig = Some(meta.signature());
        let err = |e: &dyn std::error::Error| {
            StorageError::from(StorageIOError::write_snapshot(
                sig.clone(),
                openraft::AnyError::error(e.to_string()),
            ))
        };
        let data = codec::decode_snapshot(snapshot.get_ref()).map_err(|e| err(&e))?;
        super::blocking(|| self.shared.install(meta, data)).map_err(|e| err(&e))?;
        crate::metrics::snapshot_installed();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let Some(file) = self.shared.state().snapshot.clone() else {
            return Ok(None);
        };
        let sig = Some(file.meta.signature());
        let data = super::blocking(|| self.shared.materialize(&file))
            .map_err(|e| store_err(|a| StorageIOError::read_snapshot(sig.clone(), a), &e))?;
        Ok(Some(Snapshot {
            meta: file.meta,
            snapshot: Box::new(Cursor::new(codec::encode_snapshot(&data))),
        }))
    }
}

#[cfg(test)]
#[path = "state_machine_dedup_tests.rs"]
mod dedup_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::codec::encode_records;
    use crate::raft::{Membership, RecordBatch};
    use crate::storage::LogConfig;

    fn log_id(term: u64, index: u64) -> LogId {
        openraft::LogId::new(openraft::CommittedLeaderId::new(term, 1), index)
    }

    /// Entries 0..n: a membership entry, then normal entries of `per` records each.
    fn entries(n: u64, per: u32) -> Vec<Entry> {
        (0..n)
            .map(|i| {
                let payload = if i == 0 {
                    EntryPayload::Membership(Membership::new(vec![[1u64].into()], None))
                } else {
                    let recs: Vec<Vec<u8>> =
                        (0..per).map(|k| format!("e{i}r{k}").into_bytes()).collect();
                    EntryPayload::Normal(RecordBatch(
                        encode_records(recs.iter().map(|r| r.as_slice())).into(),
                    ))
                };
                Entry {
                    log_id: log_id(1, i),
                    payload,
                }
            })
            .collect()
    }

    fn store(log: &LogShared, es: &[Entry]) {
        let enc: Vec<_> = es.iter().map(codec::encode_entry).collect();
        let mut l = log.write();
        l.append_batch(es.iter().zip(&enc).map(|(e, (kind, p))| NewEntry {
            term: e.log_id.leader_id.term,
            kind: *kind,
            payload: p,
        }))
        .unwrap();
    }

    fn open(dir: &std::path::Path) -> (Arc<LogShared>, StateMachine) {
        let log = LogShared::open(LogConfig::new(dir)).unwrap();
        let sm = StateMachine::open(log.clone()).unwrap();
        (log, sm)
    }

    #[tokio::test]
    async fn reopen_rebuilds_the_index_up_to_the_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (log, mut sm) = open(dir.path());
        let es = entries(11, 3);
        store(&log, &es);
        let applied = sm.apply(es.clone()).await.unwrap();
        assert_eq!(
            applied[1],
            Applied {
                first_offset: 0,
                count: 3,
                outcome: Outcome::Appended,
                parts: Vec::new(),
            }
        );
        assert_eq!(
            applied[10],
            Applied {
                first_offset: 27,
                count: 3,
                outcome: Outcome::Appended,
                parts: Vec::new(),
            }
        );
        sm.build_snapshot().await.unwrap();
        drop((log, sm));

        let (_log, sm) = open(dir.path());
        let shared = sm.shared();
        assert_eq!(shared.range(), (0, 30));
        assert_eq!(shared.last_applied(), Some(log_id(1, 10)));
        assert_eq!(&shared.read(28).unwrap().value[..], b"e10r1");
        assert!(matches!(shared.read(30), Err(Error::OutOfRange(_))));
    }

    #[tokio::test]
    async fn install_writes_the_leaders_entries_and_survives_reopen() {
        // The leader: 11 entries, snapshot at 10, materialised for transfer.
        let ldir = tempfile::tempdir().unwrap();
        let (llog, mut lsm) = open(ldir.path());
        let es = entries(11, 2);
        store(&llog, &es);
        lsm.apply(es).await.unwrap();
        lsm.build_snapshot().await.unwrap();
        let snap = lsm.get_current_snapshot().await.unwrap().unwrap();

        // An empty follower installs it.
        let fdir = tempfile::tempdir().unwrap();
        let (flog, mut fsm) = open(fdir.path());
        fsm.install_snapshot(&snap.meta, snap.snapshot)
            .await
            .unwrap();
        assert_eq!(fsm.shared().range(), (0, 20));
        assert_eq!(&fsm.shared().read(19).unwrap().value[..], b"e10r1");
        assert_eq!(flog.last_stored_log_id().unwrap(), Some(log_id(1, 10)));
        drop((flog, fsm));
        let (_flog, fsm) = open(fdir.path());
        assert_eq!(fsm.shared().range(), (0, 20));
        assert_eq!(&fsm.shared().read(0).unwrap().value[..], b"e1r0");
    }

    #[tokio::test]
    async fn install_keeps_a_local_log_that_holds_the_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (log, mut sm) = open(dir.path());
        let es = entries(13, 1);
        store(&log, &es); // the member holds 0..=12, applied nothing yet
        let meta = SnapshotMeta {
            last_log_id: Some(log_id(1, 10)),
            last_membership: StoredMembership::new(
                Some(log_id(1, 0)),
                Membership::new(vec![[1u64].into()], None),
            ),
            snapshot_id: "t".into(),
        };
        let data = codec::encode_snapshot(&SnapshotData {
            next_record_offset: 10,
            entries: Vec::new(),
            producers: ProducerTable::default(),
            skipped: Skipped::default(),
        });
        sm.install_snapshot(&meta, Box::new(Cursor::new(data)))
            .await
            .unwrap();
        assert_eq!(
            log.read().next_offset(),
            13,
            "entries after the cut are kept"
        );
        assert_eq!(sm.shared().range(), (0, 10));
        // openraft then applies what follows the cut.
        sm.apply(es[11..].to_vec()).await.unwrap();
        assert_eq!(sm.shared().range(), (0, 12));
        assert_eq!(&sm.shared().read(11).unwrap().value[..], b"e12r0");
    }

    #[test]
    fn reopen_repairs_a_log_that_does_not_hold_the_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (log, sm) = open(dir.path());
        store(&log, &entries(5, 1)); // a stale log: 0..=4
        drop((log, sm));
        // A crash after the cut of an install was written, before the log was replaced.
        let cut = SnapshotFile {
            meta: SnapshotMeta {
                last_log_id: Some(log_id(2, 9)),
                last_membership: StoredMembership::default(),
                snapshot_id: "x".into(),
            },
            next_record_offset: 40,
            version: 1,
            producers: ProducerTable::default(),
            skipped: Skipped::default(),
        };
        meta::store(&dir.path().join(SNAPSHOT_FILE), &cut).unwrap();
        let (log, sm) = open(dir.path());
        assert_eq!(
            (log.read().first_offset(), log.read().next_offset()),
            (10, 10)
        );
        assert_eq!(sm.shared().range(), (40, 40));
        assert_eq!(sm.shared().last_applied(), Some(log_id(2, 9)));
    }
}
