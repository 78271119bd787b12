//! How Raft entries and record batches are laid out as bytes: in a storage entry (kind byte +
//! payload), in a `RecordBatch`, and in the transferred form of a snapshot. Pure functions, no I/O.
//!
//! Storage entry payload: `leader node id (u64 LE)` then the body. The storage header already
//! holds the Raft index (the offset) and the term; the leader's node id completes openraft's
//! `LogId`. Bodies by kind: blank = empty; normal = a record batch; membership = JSON.
//!
//! Record batch: `count (u32 LE)`, then per record `len (u32 LE)` and the bytes.

use serde::{Deserialize, Serialize};

use super::{Entry, EntryPayload, LogId, Membership, RecordBatch};
use crate::storage;

/// Entry kind: a blank entry (leader's first entry of a term).
pub const KIND_BLANK: u8 = 0;
/// Entry kind: a normal entry holding a record batch.
pub const KIND_NORMAL: u8 = 1;
/// Entry kind: a membership change.
pub const KIND_MEMBERSHIP: u8 = 2;

/// Errors decoding bytes written by this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("entry {index}: {reason}")]
    BadEntry { index: u64, reason: String },
    #[error("record batch: {0}")]
    BadBatch(&'static str),
    #[error("snapshot data: {0}")]
    BadSnapshot(String),
}

/// Result with the codec [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Encodes records as one batch body.
pub fn encode_records<'a>(records: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let records: Vec<&[u8]> = records.into_iter().collect();
    let size = 4 + records.iter().map(|r| 4 + r.len()).sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    for r in records {
        out.extend_from_slice(&(r.len() as u32).to_le_bytes());
        out.extend_from_slice(r);
    }
    out
}

/// The number of records in a batch body (reads only the header).
pub fn record_count(batch: &[u8]) -> Result<u32> {
    let head = batch
        .get(..4)
        .ok_or(Error::BadBatch("shorter than its header"))?;
    Ok(u32::from_le_bytes(head.try_into().expect("4 bytes")))
}

/// Iterates over the records of a batch body.
pub fn records(batch: &[u8]) -> Result<Vec<&[u8]>> {
    let count = record_count(batch)? as usize;
    let mut out = Vec::with_capacity(count);
    let mut rest = &batch[4..];
    for _ in 0..count {
        let len = rest
            .get(..4)
            .ok_or(Error::BadBatch("record length cut short"))?;
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        let rec = rest
            .get(4..4 + len)
            .ok_or(Error::BadBatch("record cut short"))?;
        out.push(rec);
        rest = &rest[4 + len..];
    }
    if !rest.is_empty() {
        return Err(Error::BadBatch("trailing bytes"));
    }
    Ok(out)
}

/// The kind byte and payload of an openraft entry as it is stored.
pub fn encode_entry(e: &Entry) -> (u8, Vec<u8>) {
    let node = e.log_id.leader_id.node_id.to_le_bytes();
    match &e.payload {
        EntryPayload::Blank => (KIND_BLANK, node.to_vec()),
        EntryPayload::Normal(b) => {
            let mut p = Vec::with_capacity(8 + b.0.len());
            p.extend_from_slice(&node);
            p.extend_from_slice(&b.0);
            (KIND_NORMAL, p)
        }
        EntryPayload::Membership(m) => {
            let mut p = node.to_vec();
            serde_json::to_writer(&mut p, m).expect("membership serializes");
            (KIND_MEMBERSHIP, p)
        }
    }
}

/// The log id of a stored entry (reads only the header and the leader id).
pub fn stored_log_id(e: &storage::Entry) -> Result<LogId> {
    let node = e.payload.get(..8).ok_or_else(|| Error::BadEntry {
        index: e.offset,
        reason: "payload shorter than the leader id".into(),
    })?;
    let node = u64::from_le_bytes(node.try_into().expect("8 bytes"));
    Ok(openraft::LogId::new(
        openraft::CommittedLeaderId::new(e.term, node),
        e.offset,
    ))
}

/// The body of a stored entry (after the leader id).
pub fn stored_body(e: &storage::Entry) -> &[u8] {
    e.payload.get(8..).unwrap_or(&[])
}

/// Rebuilds an openraft entry from a stored one.
pub fn decode_entry(e: &storage::Entry) -> Result<Entry> {
    let log_id = stored_log_id(e)?;
    let body = stored_body(e);
    let payload = match e.kind {
        KIND_BLANK => EntryPayload::Blank,
        KIND_NORMAL => EntryPayload::Normal(RecordBatch(bytes::Bytes::copy_from_slice(body))),
        KIND_MEMBERSHIP => {
            let m: Membership = serde_json::from_slice(body).map_err(|err| Error::BadEntry {
                index: e.offset,
                reason: format!("membership: {err}"),
            })?;
            EntryPayload::Membership(m)
        }
        k => {
            return Err(Error::BadEntry {
                index: e.offset,
                reason: format!("unknown kind {k}"),
            })
        }
    };
    Ok(Entry { log_id, payload })
}

/// One stored entry as carried inside a transferred snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawEntry {
    pub index: u64,
    pub term: u64,
    pub kind: u8,
    #[serde(with = "serde_bytes_vec")]
    pub payload: Vec<u8>,
}

/// The transferred form of a snapshot: the cut plus the leader's retained entries up to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotData {
    /// The record offset the first record after the cut gets.
    pub next_record_offset: u64,
    /// Contiguous stored entries ending at the cut (may be empty).
    pub entries: Vec<RawEntry>,
}

/// Encodes snapshot data for transfer.
pub fn encode_snapshot(s: &SnapshotData) -> Vec<u8> {
    bincode::serialize(s).expect("snapshot data serializes")
}

/// Decodes snapshot data.
pub fn decode_snapshot(b: &[u8]) -> Result<SnapshotData> {
    bincode::deserialize(b).map_err(|e| Error::BadSnapshot(e.to_string()))
}

/// Serializes `Vec<u8>` as one byte string rather than a sequence of numbers.
mod serde_bytes_vec {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        Ok(bytes::Bytes::deserialize(d)?.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_round_trip() {
        let b = encode_records([b"a".as_slice(), b"", b"hello"]);
        assert_eq!(record_count(&b).unwrap(), 3);
        assert_eq!(records(&b).unwrap(), vec![b"a".as_slice(), b"", b"hello"]);
        assert!(records(&b[..b.len() - 1]).is_err());
    }

    #[test]
    fn entry_round_trip_keeps_log_id_and_payload() {
        let log_id = openraft::LogId::new(openraft::CommittedLeaderId::new(7, 3), 42);
        let batch = RecordBatch(encode_records([b"x".as_slice()]).into());
        for payload in [
            EntryPayload::Blank,
            EntryPayload::Normal(batch),
            EntryPayload::Membership(Membership::new(vec![[1u64, 2].into_iter().collect()], None)),
        ] {
            let e = Entry { log_id, payload };
            let (kind, bytes) = encode_entry(&e);
            let stored = storage::Entry {
                offset: 42,
                term: 7,
                kind,
                payload: bytes,
            };
            assert_eq!(decode_entry(&stored).unwrap(), e);
        }
    }
}
