//! How Raft entries and record batches are laid out as bytes: in a storage entry (kind byte +
//! payload), in a `RecordBatch`, and in the transferred form of a snapshot. Pure functions, no I/O.
//!
//! Storage entry payload: `leader node id (u64 LE)` then the body. The storage header already
//! holds the Raft index (the offset) and the term; the leader's node id completes openraft's
//! `LogId`. Bodies by kind: blank = empty; normal = a record batch; membership = JSON.
//!
//! Record batch: `count (u32 LE)`, then per record `len (u32 LE)` and the bytes.
//!
//! A normal entry's body is either a bare record batch (version 1, written before the idempotent
//! producer) or an extended body: `0xFFFF_FFFF (u32)` - a count no batch can have - then
//! `version (u8) = 2`, `op (u8)`, `flags (u8)`, the leader's wall clock when it proposed the entry
//! (`timestamp ms, u64 LE`), then by op:
//! - [`OP_RECORDS`]: if `flags & 1`, the producer `id (u64) epoch (u32) first sequence (u64)`;
//!   then a record batch;
//! - [`OP_INIT_PRODUCER`]: the producer id asked for (`u64`, 0 = a new one); no records;
//! - [`OP_CLAIMS`] (group commit of idempotent calls): `n (u32)`, then `n` parts, each
//!   `id (u64) epoch (u32) first sequence (u64) count (u32)` (`id` 0: records without a
//!   producer), then one record batch holding the parts' records in order (their counts add up
//!   to the batch's count). `apply` decides on each part as it would on an entry of its own.

use serde::{Deserialize, Serialize};

use super::producer::{ProducerKey, ProducerTable, Skipped};
use super::{Entry, EntryPayload, LogId, Membership, RecordBatch};
use crate::storage;

/// The first four bytes of an extended body.
const EXT_MARKER: [u8; 4] = [0xFF; 4];
/// Version of the extended body.
const EXT_VERSION: u8 = 2;
/// Extended body op: a record batch (with or without a producer).
pub const OP_RECORDS: u8 = 0;
/// Extended body op: initialise a producer.
pub const OP_INIT_PRODUCER: u8 = 1;
/// Extended body op: records of several calls, each with its own producer claim (or none).
pub const OP_CLAIMS: u8 = 2;
/// Bytes of one part in an [`OP_CLAIMS`] body.
pub const PART_BYTES: usize = 8 + 4 + 8 + 4;
const FLAG_PRODUCER: u8 = 1;
/// marker + version + op + flags + timestamp.
const EXT_HEAD: usize = 4 + 3 + 8;

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

/// A normal entry's body, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body<'a> {
    /// Records; `timestamp_ms` is `None` in a version 1 body.
    Records {
        timestamp_ms: Option<u64>,
        producer: Option<ProducerKey>,
        batch: &'a [u8],
    },
    /// Initialise a producer (`requested` = 0: a new one).
    InitProducer { timestamp_ms: u64, requested: u64 },
    /// Records of several calls, each part with its own claim (group commit).
    Parts {
        timestamp_ms: u64,
        parts: Parts<'a>,
        batch: &'a [u8],
    },
}

/// One call's share of an [`OP_CLAIMS`] body: its producer claim (if any) and record count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    pub producer: Option<ProducerKey>,
    pub count: u32,
}

/// The encoded parts of an [`OP_CLAIMS`] body (length checked on decode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts<'a>(&'a [u8]);

impl<'a> Parts<'a> {
    /// The number of parts.
    pub fn len(&self) -> usize {
        self.0.len() / PART_BYTES
    }

    /// True when there is no part.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The parts in order.
    pub fn iter(&self) -> impl Iterator<Item = Part> + 'a {
        self.0.chunks_exact(PART_BYTES).map(|c| {
            let id = u64::from_le_bytes(c[..8].try_into().expect("8 bytes"));
            let epoch = u32::from_le_bytes(c[8..12].try_into().expect("4 bytes"));
            let first_seq = u64::from_le_bytes(c[12..20].try_into().expect("8 bytes"));
            let count = u32::from_le_bytes(c[20..24].try_into().expect("4 bytes"));
            Part {
                producer: (id != 0).then_some(ProducerKey {
                    id,
                    epoch,
                    first_seq,
                }),
                count,
            }
        })
    }
}

fn u64_at(b: &[u8], at: usize) -> Result<u64> {
    b.get(at..at + 8)
        .map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")))
        .ok_or(Error::BadBatch("extended header cut short"))
}

/// Decodes the header of a normal entry's body (the records stay undecoded).
pub fn decode_body(body: &[u8]) -> Result<Body<'_>> {
    if body.get(..4) != Some(&EXT_MARKER[..]) {
        return Ok(Body::Records {
            timestamp_ms: None,
            producer: None,
            batch: body,
        });
    }
    let head = body
        .get(..EXT_HEAD)
        .ok_or(Error::BadBatch("extended header cut short"))?;
    if head[4] != EXT_VERSION {
        return Err(Error::BadBatch("unknown extended body version"));
    }
    let (op, flags) = (head[5], head[6]);
    let timestamp_ms = u64_at(body, 7)?;
    match op {
        OP_RECORDS if flags & FLAG_PRODUCER != 0 => {
            let id = u64_at(body, EXT_HEAD)?;
            let epoch = body
                .get(EXT_HEAD + 8..EXT_HEAD + 12)
                .map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")))
                .ok_or(Error::BadBatch("extended header cut short"))?;
            let first_seq = u64_at(body, EXT_HEAD + 12)?;
            Ok(Body::Records {
                timestamp_ms: Some(timestamp_ms),
                producer: Some(ProducerKey {
                    id,
                    epoch,
                    first_seq,
                }),
                batch: &body[EXT_HEAD + 20..],
            })
        }
        OP_RECORDS => Ok(Body::Records {
            timestamp_ms: Some(timestamp_ms),
            producer: None,
            batch: &body[EXT_HEAD..],
        }),
        OP_INIT_PRODUCER => Ok(Body::InitProducer {
            timestamp_ms,
            requested: u64_at(body, EXT_HEAD)?,
        }),
        OP_CLAIMS => {
            let n = body
                .get(EXT_HEAD..EXT_HEAD + 4)
                .map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")) as usize)
                .ok_or(Error::BadBatch("extended header cut short"))?;
            let start = EXT_HEAD + 4;
            let end = n
                .checked_mul(PART_BYTES)
                .and_then(|b| b.checked_add(start))
                .filter(|&end| end <= body.len())
                .ok_or(Error::BadBatch("parts cut short"))?;
            Ok(Body::Parts {
                timestamp_ms,
                parts: Parts(&body[start..end]),
                batch: &body[end..],
            })
        }
        _ => Err(Error::BadBatch("unknown extended body op")),
    }
}

fn ext_head(out: &mut Vec<u8>, op: u8, flags: u8, timestamp_ms: u64) {
    out.extend_from_slice(&EXT_MARKER);
    out.extend_from_slice(&[EXT_VERSION, op, flags]);
    out.extend_from_slice(&timestamp_ms.to_le_bytes());
}

/// Encodes records as an extended body stamped with the leader's clock, with the producer
/// claim of an idempotent Produce if any.
pub fn encode_produce<'a>(
    timestamp_ms: u64,
    producer: Option<ProducerKey>,
    records: impl IntoIterator<Item = &'a [u8]>,
) -> Vec<u8> {
    let batch = encode_records(records);
    let mut out = Vec::with_capacity(EXT_HEAD + 20 + batch.len());
    let flags = if producer.is_some() { FLAG_PRODUCER } else { 0 };
    ext_head(&mut out, OP_RECORDS, flags, timestamp_ms);
    if let Some(p) = producer {
        out.extend_from_slice(&p.id.to_le_bytes());
        out.extend_from_slice(&p.epoch.to_le_bytes());
        out.extend_from_slice(&p.first_seq.to_le_bytes());
    }
    out.extend_from_slice(&batch);
    out
}

/// Encodes the records of several calls as one [`OP_CLAIMS`] body stamped with the leader's
/// clock: `parts` say, in order, how many of `records` each call brought and under which claim.
pub fn encode_parts<'a>(
    timestamp_ms: u64,
    parts: &[Part],
    records: impl IntoIterator<Item = &'a [u8]>,
) -> Vec<u8> {
    let batch = encode_records(records);
    let mut out = Vec::with_capacity(EXT_HEAD + 4 + parts.len() * PART_BYTES + batch.len());
    ext_head(&mut out, OP_CLAIMS, 0, timestamp_ms);
    out.extend_from_slice(&(parts.len() as u32).to_le_bytes());
    for p in parts {
        let k = p.producer.unwrap_or(ProducerKey {
            id: 0,
            epoch: 0,
            first_seq: 0,
        });
        out.extend_from_slice(&k.id.to_le_bytes());
        out.extend_from_slice(&k.epoch.to_le_bytes());
        out.extend_from_slice(&k.first_seq.to_le_bytes());
        out.extend_from_slice(&p.count.to_le_bytes());
    }
    out.extend_from_slice(&batch);
    out
}

/// Encodes an `InitProducer` body.
pub fn encode_init_producer(timestamp_ms: u64, requested: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(EXT_HEAD + 8);
    ext_head(&mut out, OP_INIT_PRODUCER, 0, timestamp_ms);
    out.extend_from_slice(&requested.to_le_bytes());
    out
}

/// The record batch inside a body (empty for a body that holds no records).
fn batch_of(body: &[u8]) -> Result<&[u8]> {
    match decode_body(body)? {
        Body::Records { batch, .. } | Body::Parts { batch, .. } => Ok(batch),
        Body::InitProducer { .. } => Ok(&[0, 0, 0, 0]),
    }
}

/// The number of records in a normal entry's body (reads only the headers).
pub fn record_count(body: &[u8]) -> Result<u32> {
    let batch = batch_of(body)?;
    let head = batch
        .get(..4)
        .ok_or(Error::BadBatch("shorter than its header"))?;
    Ok(u32::from_le_bytes(head.try_into().expect("4 bytes")))
}

/// The records of a normal entry's body.
pub fn records(body: &[u8]) -> Result<Vec<&[u8]>> {
    let batch = batch_of(body)?;
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

/// The transferred form of a snapshot: the cut plus the leader's retained entries up to it, and
/// the idempotent producer state at the cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotData {
    /// The record offset the first record after the cut gets.
    pub next_record_offset: u64,
    /// Contiguous stored entries ending at the cut (may be empty).
    pub entries: Vec<RawEntry>,
    /// The producer table at the cut (empty from a version 1 sender).
    pub producers: ProducerTable,
    /// The entries whose records got no offsets (duplicates, refusals), known from an index at
    /// or below the first of `entries`.
    pub skipped: Skipped,
}

/// Marks the version 2 trailer of transferred snapshot data.
const SNAPSHOT_V2_MAGIC: &[u8; 8] = b"PLSNAPv2";
/// Marks the version 3 trailer (after the version 2 one): the partly skipped entries.
const SNAPSHOT_V3_MAGIC: &[u8; 8] = b"PLSNAPv3";

/// What version 2 adds after the version 1 data.
#[derive(Serialize, Deserialize)]
struct SnapshotExt {
    producers: ProducerTable,
    skipped_from: u64,
    skipped_entries: std::collections::BTreeSet<u64>,
}

/// Encodes snapshot data for transfer: the version 1 form (`next_record_offset`, `entries`,
/// bincode), then `PLSNAPv2` and the producer state (bincode), then `PLSNAPv3` and the entries
/// only some of whose parts were skipped (bincode). NB: bincode 1 ignores trailing bytes, so a
/// version 1 member decodes the first part and ignores the rest (and so on).
pub fn encode_snapshot(s: &SnapshotData) -> Vec<u8> {
    let mut out =
        bincode::serialize(&(s.next_record_offset, &s.entries)).expect("snapshot data serializes");
    out.extend_from_slice(SNAPSHOT_V2_MAGIC);
    let ext = SnapshotExt {
        producers: s.producers.clone(),
        skipped_from: s.skipped.from,
        skipped_entries: s.skipped.entries.clone(),
    };
    bincode::serialize_into(&mut out, &ext).expect("snapshot data serializes");
    out.extend_from_slice(SNAPSHOT_V3_MAGIC);
    bincode::serialize_into(&mut out, &s.skipped.parts).expect("snapshot data serializes");
    out
}

/// Decodes snapshot data (version 1, 2 or 3).
pub fn decode_snapshot(b: &[u8]) -> Result<SnapshotData> {
    let bad = |e: bincode::Error| Error::BadSnapshot(e.to_string());
    let mut cursor = std::io::Cursor::new(b);
    let (next_record_offset, entries): (u64, Vec<RawEntry>) =
        bincode::deserialize_from(&mut cursor).map_err(bad)?;
    let rest = &b[cursor.position() as usize..];
    let (mut producers, skipped) = match rest.strip_prefix(&SNAPSHOT_V2_MAGIC[..]) {
        Some(ext) => {
            let mut cursor = std::io::Cursor::new(ext);
            let v2: SnapshotExt = bincode::deserialize_from(&mut cursor).map_err(bad)?;
            let rest = &ext[cursor.position() as usize..];
            let parts = match rest.strip_prefix(&SNAPSHOT_V3_MAGIC[..]) {
                Some(v3) => bincode::deserialize(v3).map_err(bad)?,
                None if rest.is_empty() => Default::default(),
                None => return Err(Error::BadSnapshot("unknown trailing bytes".into())),
            };
            let skipped = Skipped {
                from: v2.skipped_from,
                entries: v2.skipped_entries,
                parts,
            };
            (v2.producers, skipped)
        }
        None if rest.is_empty() => (ProducerTable::default(), Skipped::default()),
        None => return Err(Error::BadSnapshot("unknown trailing bytes".into())),
    };
    producers.reindex();
    Ok(SnapshotData {
        next_record_offset,
        entries,
        producers,
        skipped,
    })
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
    fn extended_bodies_round_trip_and_version_1_bodies_still_read() {
        let p = ProducerKey {
            id: 9,
            epoch: 2,
            first_seq: 40,
        };
        let recs = [b"a".as_slice(), b"bc"];
        for producer in [None, Some(p)] {
            let b = encode_produce(1234, producer, recs);
            assert_eq!(
                decode_body(&b).unwrap(),
                Body::Records {
                    timestamp_ms: Some(1234),
                    producer,
                    batch: &encode_records(recs)[..],
                }
            );
            assert_eq!(record_count(&b).unwrap(), 2);
            assert_eq!(records(&b).unwrap(), recs.to_vec());
        }
        let v1 = encode_records(recs);
        assert_eq!(records(&v1).unwrap(), recs.to_vec());
        let init = encode_init_producer(77, 5);
        assert_eq!(
            decode_body(&init).unwrap(),
            Body::InitProducer {
                timestamp_ms: 77,
                requested: 5
            }
        );
        assert_eq!(record_count(&init).unwrap(), 0);
        assert!(records(&init).unwrap().is_empty());
        assert!(decode_body(&encode_produce(1, Some(p), recs)[..20]).is_err());
    }

    #[test]
    fn bodies_of_several_parts_round_trip() {
        let p = ProducerKey {
            id: 9,
            epoch: 2,
            first_seq: 40,
        };
        let parts = [
            Part {
                producer: Some(p),
                count: 2,
            },
            Part {
                producer: None,
                count: 1,
            },
        ];
        let recs = [b"a".as_slice(), b"bc", b"d"];
        let b = encode_parts(55, &parts, recs);
        let Body::Parts {
            timestamp_ms,
            parts: got,
            batch,
        } = decode_body(&b).unwrap()
        else {
            panic!("not a parts body");
        };
        assert_eq!(timestamp_ms, 55);
        assert_eq!(got.len(), 2);
        assert_eq!(got.iter().collect::<Vec<_>>(), parts.to_vec());
        assert_eq!(batch, &encode_records(recs)[..]);
        assert_eq!(record_count(&b).unwrap(), 3);
        assert_eq!(records(&b).unwrap(), recs.to_vec());
        // The part list cut short is an error, not a misread.
        assert!(decode_body(&b[..EXT_HEAD + 4 + PART_BYTES]).is_err());
    }

    #[test]
    fn snapshot_data_v3_is_readable_as_v1_and_v2_and_they_as_v3() {
        /// The version 1 form, as a version 1 member decodes it.
        #[derive(Deserialize)]
        struct V1 {
            next_record_offset: u64,
            entries: Vec<RawEntry>,
        }
        let mut producers = ProducerTable::default();
        producers.advance(5);
        producers.init(3, 0);
        let data = SnapshotData {
            next_record_offset: 42,
            entries: vec![RawEntry {
                index: 7,
                term: 1,
                kind: KIND_NORMAL,
                payload: vec![1, 2, 3],
            }],
            producers,
            skipped: Skipped {
                from: 7,
                entries: [7].into(),
                parts: [(8, [1u32, 3].into())].into(),
            },
        };
        let enc = encode_snapshot(&data);
        assert_eq!(decode_snapshot(&enc).unwrap(), data);
        let old: V1 = bincode::deserialize(&enc).unwrap();
        assert_eq!(old.next_record_offset, 42);
        assert_eq!(old.entries, data.entries);
        // A version 2 sender's data: everything up to the v3 trailer.
        let v3_at = enc
            .windows(8)
            .rposition(|w| w == SNAPSHOT_V3_MAGIC)
            .unwrap();
        let v2 = decode_snapshot(&enc[..v3_at]).unwrap();
        assert_eq!(v2.producers, data.producers);
        assert_eq!(v2.skipped.entries, data.skipped.entries);
        assert!(v2.skipped.parts.is_empty());
        let v1 = bincode::serialize(&(42u64, &data.entries)).unwrap();
        let back = decode_snapshot(&v1).unwrap();
        assert!(back.producers.is_empty() && back.skipped == Skipped::default());
        assert_eq!(back.entries, data.entries);
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
