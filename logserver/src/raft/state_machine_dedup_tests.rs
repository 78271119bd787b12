//! Tests of idempotent producers in the state machine: duplicates and refusals get no offsets,
//! on every member alike, across snapshot build + reopen, snapshot install and a leader change.

use super::*;
use crate::raft::producer::{ProducerKey, Refusal, IDLE_EXPIRY_MS};
use crate::raft::{Membership, RecordBatch};
use crate::storage::LogConfig;

fn log_id(term: u64, index: u64) -> LogId {
    openraft::LogId::new(openraft::CommittedLeaderId::new(term, 1), index)
}

/// Builds entries one after another, as a leader would write them.
struct Writer {
    entries: Vec<Entry>,
    term: u64,
    now_ms: u64,
}

impl Writer {
    fn new() -> Writer {
        let first = Entry {
            log_id: log_id(1, 0),
            payload: EntryPayload::Membership(Membership::new(vec![[1u64].into()], None)),
        };
        Writer {
            entries: vec![first],
            term: 1,
            now_ms: 1_000,
        }
    }

    fn push(&mut self, body: Vec<u8>) -> Entry {
        let e = Entry {
            log_id: log_id(self.term, self.entries.len() as u64),
            payload: EntryPayload::Normal(RecordBatch(body.into())),
        };
        self.entries.push(e.clone());
        e
    }

    fn init(&mut self, requested: u64) -> Entry {
        self.push(codec::encode_init_producer(self.now_ms, requested))
    }

    /// One entry of several calls' parts (group commit): `(producer id or 0, first_seq, values)`.
    fn parts(&mut self, calls: &[(u64, u64, &[&str])]) -> Entry {
        let parts: Vec<codec::Part> = calls
            .iter()
            .map(|&(id, first_seq, vs)| codec::Part {
                producer: (id != 0).then_some(ProducerKey {
                    id,
                    epoch: 0,
                    first_seq,
                }),
                count: vs.len() as u32,
            })
            .collect();
        let recs: Vec<&[u8]> = calls
            .iter()
            .flat_map(|c| c.2.iter().map(|v| v.as_bytes()))
            .collect();
        self.push(codec::encode_parts(self.now_ms, &parts, recs))
    }

    fn produce(&mut self, id: u64, epoch: u32, first_seq: u64, values: &[&str]) -> Entry {
        let key = ProducerKey {
            id,
            epoch,
            first_seq,
        };
        let recs: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
        self.push(codec::encode_produce(self.now_ms, Some(key), recs))
    }
}

fn open(dir: &std::path::Path) -> (Arc<LogShared>, StateMachine) {
    let log = LogShared::open(LogConfig::new(dir)).unwrap();
    let sm = StateMachine::open(log.clone()).unwrap();
    (log, sm)
}

/// Stores `es` in the member's log (as replication does) and applies them.
async fn commit(log: &LogShared, sm: &mut StateMachine, es: &[Entry]) -> Vec<Applied> {
    let enc: Vec<_> = es.iter().map(codec::encode_entry).collect();
    log.write()
        .append_batch(es.iter().zip(&enc).map(|(e, (kind, p))| NewEntry {
            term: e.log_id.leader_id.term,
            kind: *kind,
            payload: p,
        }))
        .unwrap();
    sm.apply(es.to_vec()).await.unwrap()
}

fn values(sm: &StateMachine) -> Vec<String> {
    let (first, next) = sm.shared().range();
    (first..next)
        .map(|o| String::from_utf8(sm.shared().read(o).unwrap().value.to_vec()).unwrap())
        .collect()
}

/// The log as a stream reads it: as many records per read as the entries give.
fn streamed(sm: &StateMachine) -> Vec<String> {
    let (mut at, next) = sm.shared().range();
    let mut out = Vec::new();
    while at < next {
        for r in sm.shared().read_from(at, 1000).unwrap() {
            assert_eq!(r.offset, at);
            out.push(String::from_utf8(r.value.to_vec()).unwrap());
            at += 1;
        }
    }
    out
}

fn appended(first_offset: u64, count: u32) -> Applied {
    Applied {
        first_offset,
        count,
        outcome: Outcome::Appended,
        parts: Vec::new(),
    }
}

/// A producer's history with a retry, a gap and a fresh batch; what the log must hold after it.
async fn history(w: &mut Writer, log: &LogShared, sm: &mut StateMachine) {
    let first = w.entries.clone();
    commit(log, sm, &first).await;
    let init = w.init(0);
    let a = commit(log, sm, &[init]).await;
    assert_eq!(a[0].outcome, Outcome::ProducerReady { id: 1, epoch: 0 });
    let es = vec![
        w.produce(1, 0, 0, &["a", "b"]),
        w.produce(1, 0, 2, &["c"]),
        w.produce(1, 0, 0, &["a", "b"]), // a retry whose first attempt committed
        w.produce(1, 0, 9, &["gap"]),
        w.produce(1, 0, 3, &["d"]),
    ];
    let a = commit(log, sm, &es).await;
    assert_eq!(a[0], appended(0, 2));
    assert_eq!(a[1], appended(2, 1));
    assert_eq!(
        a[2],
        Applied {
            first_offset: 0,
            count: 2,
            outcome: Outcome::Duplicate,
            parts: Vec::new(),
        }
    );
    assert_eq!(
        a[3].outcome,
        Outcome::Refused(Refusal::OutOfOrder {
            id: 1,
            epoch: 0,
            got: 9,
            expected: 3
        })
    );
    assert_eq!(a[4], appended(3, 1));
    assert_eq!(values(sm), ["a", "b", "c", "d"]);
}

#[tokio::test]
async fn a_retry_gets_the_original_offsets_and_reopen_keeps_it_so() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut sm) = open(dir.path());
    let mut w = Writer::new();
    history(&mut w, &log, &mut sm).await;
    sm.build_snapshot().await.unwrap();
    drop((log, sm));

    // The index rebuilt from the log skips the duplicate and the refused entry; the producer
    // table comes back from the snapshot cut.
    let (log, mut sm) = open(dir.path());
    assert_eq!(values(&sm), ["a", "b", "c", "d"]);
    let key = |first_seq| ProducerKey {
        id: 1,
        epoch: 0,
        first_seq,
    };
    assert_eq!(sm.shared().duplicate_of(key(2), 1), Some(2));
    let retry = w.produce(1, 0, 3, &["d"]);
    let next = w.produce(1, 0, 4, &["e"]);
    let a = commit(&log, &mut sm, &[retry, next]).await;
    assert_eq!(a[0].outcome, Outcome::Duplicate);
    assert_eq!(a[0].first_offset, 3);
    assert_eq!(a[1], appended(4, 1));
    assert_eq!(values(&sm), ["a", "b", "c", "d", "e"]);
}

#[tokio::test]
async fn a_restart_without_snapshot_replays_the_same_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut sm) = open(dir.path());
    let mut w = Writer::new();
    history(&mut w, &log, &mut sm).await;
    drop((log, sm));
    // No snapshot: openraft re-applies the whole log, which decides exactly as before.
    let (_log, mut sm) = open(dir.path());
    assert_eq!(sm.shared().range(), (0, 0));
    let a = sm.apply(w.entries.clone()).await.unwrap();
    assert_eq!(a[4].outcome, Outcome::Duplicate);
    assert_eq!(values(&sm), ["a", "b", "c", "d"]);
}

#[tokio::test]
async fn a_member_restored_by_snapshot_deduplicates_after_a_leader_change() {
    let ldir = tempfile::tempdir().unwrap();
    let (llog, mut lsm) = open(ldir.path());
    let mut w = Writer::new();
    history(&mut w, &llog, &mut lsm).await;
    lsm.build_snapshot().await.unwrap();
    let snap = lsm.get_current_snapshot().await.unwrap().unwrap();

    let fdir = tempfile::tempdir().unwrap();
    let (flog, mut fsm) = open(fdir.path());
    fsm.install_snapshot(&snap.meta, snap.snapshot)
        .await
        .unwrap();
    assert_eq!(values(&fsm), ["a", "b", "c", "d"]);

    // The follower now leads (term 2): the producer's retry of its last batch, whose reply the
    // old leader never sent, and its next batch.
    w.term = 2;
    let es = vec![w.produce(1, 0, 3, &["d"]), w.produce(1, 0, 4, &["e"])];
    let on_new_leader = commit(&flog, &mut fsm, &es).await;
    assert_eq!(on_new_leader[0].outcome, Outcome::Duplicate);
    assert_eq!(on_new_leader[0].first_offset, 3);
    // The old leader, now a follower, replicates the same entries and decides the same.
    assert_eq!(commit(&llog, &mut lsm, &es).await, on_new_leader);
    assert_eq!(values(&lsm), values(&fsm));

    drop((flog, fsm));
    let (_flog, fsm) = open(fdir.path());
    assert_eq!(values(&fsm), ["a", "b", "c", "d"]);
}

#[tokio::test]
async fn idle_producers_expire_by_the_leaders_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut sm) = open(dir.path());
    let mut w = Writer::new();
    let first = w.entries.clone();
    commit(&log, &mut sm, &first).await;
    let (i1, i2) = (w.init(0), w.init(0));
    commit(&log, &mut sm, &[i1, i2]).await;
    w.now_ms += IDLE_EXPIRY_MS / 2;
    let e = w.produce(2, 0, 0, &["x"]);
    commit(&log, &mut sm, &[e]).await;
    w.now_ms += IDLE_EXPIRY_MS / 2 + 1;
    let es = vec![w.produce(1, 0, 0, &["late"]), w.produce(2, 0, 1, &["y"])];
    let a = commit(&log, &mut sm, &es).await;
    assert_eq!(
        a[0].outcome,
        Outcome::Refused(Refusal::UnknownProducer { id: 1 })
    );
    assert_eq!(a[1], appended(1, 1));
    assert_eq!(sm.shared().producer_count(), 1);
    // Re-initialising a forgotten id gives a new one.
    let init = w.init(1);
    let idx = init.log_id.index;
    let a = commit(&log, &mut sm, &[init]).await;
    assert_eq!(a[0].outcome, Outcome::ProducerReady { id: idx, epoch: 0 });
}

/// What became of each part of an applied entry.
fn part_outcomes(a: &Applied) -> Vec<(u64, Outcome)> {
    a.parts
        .iter()
        .map(|p| (p.first_offset, p.outcome))
        .collect()
}

#[tokio::test]
async fn parts_of_one_entry_are_decided_one_by_one_and_reopen_and_install_agree() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut sm) = open(dir.path());
    let mut w = Writer::new();
    history(&mut w, &log, &mut sm).await; // producer 1: a b c d at 0..4, next sequence 4
    let init = w.init(0);
    let p2 = init.log_id.index;
    commit(&log, &mut sm, &[init]).await;

    // One group: a retry of producer 1's committed batch (duplicate), producer 2's first batch,
    // records without a producer, producer 1's next two batches, and a gap (refused).
    let group = w.parts(&[
        (1, 2, &["c"]),
        (p2, 0, &["x", "y"]),
        (0, 0, &["free"]),
        (1, 4, &["e"]),
        (1, 5, &["f", "g"]),
        (1, 9, &["gap"]),
    ]);
    let a = commit(&log, &mut sm, &[group]).await;
    let gap = Refusal::OutOfOrder {
        id: 1,
        epoch: 0,
        got: 9,
        expected: 7,
    };
    assert_eq!(
        part_outcomes(&a[0]),
        vec![
            (2, Outcome::Duplicate),
            (4, Outcome::Appended),
            (6, Outcome::Appended),
            (7, Outcome::Appended),
            (8, Outcome::Appended),
            (10, Outcome::Refused(gap)),
        ]
    );
    let want = ["a", "b", "c", "d", "x", "y", "free", "e", "f", "g"];
    assert_eq!(values(&sm), want);
    // Reads of many records stop where the refused part begins (chaos found them served).
    assert_eq!(streamed(&sm), want);
    // A group whose parts are all duplicates appends nothing.
    let again = w.parts(&[(p2, 0, &["x", "y"]), (1, 5, &["f", "g"])]);
    let a = commit(&log, &mut sm, &[again]).await;
    assert_eq!(
        part_outcomes(&a[0]),
        vec![(4, Outcome::Duplicate), (8, Outcome::Duplicate)]
    );
    assert_eq!(values(&sm), want);
    sm.build_snapshot().await.unwrap();
    let snap = sm.get_current_snapshot().await.unwrap().unwrap();
    drop((log, sm));

    // Reopened: the index rebuilt from the log skips exactly the parts that got no offsets.
    let (log, mut sm) = open(dir.path());
    assert_eq!(values(&sm), want);
    assert_eq!(streamed(&sm), want);
    // A member restored from the snapshot serves the same records.
    let fdir = tempfile::tempdir().unwrap();
    let (flog, mut fsm) = open(fdir.path());
    fsm.install_snapshot(&snap.meta, snap.snapshot)
        .await
        .unwrap();
    assert_eq!(values(&fsm), want);
    assert_eq!(streamed(&fsm), want);
    // And both keep deciding alike afterwards.
    let next = w.parts(&[(1, 7, &["h"]), (p2, 2, &["z"])]);
    let a = commit(&log, &mut sm, std::slice::from_ref(&next)).await;
    assert_eq!(
        part_outcomes(&a[0]),
        vec![(10, Outcome::Appended), (11, Outcome::Appended)]
    );
    assert_eq!(commit(&flog, &mut fsm, &[next]).await, a);
    assert_eq!(values(&sm).last().map(String::as_str), Some("z"));
    assert_eq!(values(&fsm), values(&sm));
}
