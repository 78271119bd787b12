//! The bytes members exchange and the metadata files they keep, checked against fixtures in
//! `tests/golden/`.
//!
//! During a rolling update (the operator replaces one pod at a time) members of two versions
//! replicate to each other and read each other's files, so an encoding may only change on
//! purpose. Each message is checked both ways: this version writes the fixture's bytes, and
//! reads them back into a value that writes the same bytes again (no field dropped). The
//! fixtures are also what a future openraft (0.10) port must still read (`docs/openraft-0.10.md`).
//!
//! To accept a deliberate change, rewrite the fixtures and review their diff:
//! `PROGLOG_BLESS=1 cargo test -p logserver --test wire_compat`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;

use logserver::raft::codec::{self, Part};
use logserver::raft::election::{Campaign, PreVoteRequest, PreVoteResponse};
use logserver::raft::meta::{RaftMeta, SnapshotFile, SNAPSHOT_VERSION};
use logserver::raft::network::{decode, encode};
use logserver::raft::producer::{ProducerKey, ProducerTable, Skipped};
use logserver::raft::{
    AppendEntriesRequest, AppendEntriesResponse, Entry, EntryPayload, InstallSnapshotRequest,
    InstallSnapshotResponse, LogId, Member, Membership, RaftError, RecordBatch, SnapshotMeta,
    StoredMembership, Vote, VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

fn bless() -> bool {
    std::env::var_os("PROGLOG_BLESS").is_some_and(|v| v == "1")
}

fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::new();
    for line in bytes.chunks(32) {
        for b in line {
            write!(s, "{b:02x}").expect("writing to a String");
        }
        s.push('\n');
    }
    s
}

fn from_hex(name: &str, text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(
        digits.len().is_multiple_of(2),
        "{name}: odd number of hex digits"
    );
    digits
        .chunks(2)
        .map(|p| {
            let s = std::str::from_utf8(p).expect("ASCII");
            u8::from_str_radix(s, 16).unwrap_or_else(|_| panic!("{name}: bad hex {s:?}"))
        })
        .collect()
}

/// Reads a fixture, or writes `fresh` to it when blessing; `None` when it was just written.
fn fixture(name: &str, fresh: &str) -> Option<String> {
    let path = golden(name);
    if bless() {
        std::fs::create_dir_all(path.parent().expect("has a parent")).expect("golden dir");
        std::fs::write(&path, fresh).expect("write fixture");
        return None;
    }
    Some(std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (create it with PROGLOG_BLESS=1 and review it)",
            path.display()
        )
    }))
}

/// A peer message (bincode, as `network::encode` sends it) against `tests/golden/<name>.hex`.
fn check_message<T: Serialize + DeserializeOwned>(name: &str, value: &T) {
    let bytes = encode(value);
    let Some(text) = fixture(&format!("{name}.hex"), &to_hex(&bytes)) else {
        return;
    };
    let want = from_hex(name, &text);
    assert_eq!(
        to_hex(&bytes),
        to_hex(&want),
        "{name}: this version encodes it differently than the fixture; members of both \
         versions would not understand each other"
    );
    let back: T = decode(&want).unwrap_or_else(|e| panic!("{name}: fixture does not decode: {e}"));
    assert_eq!(
        to_hex(&encode(&back)),
        to_hex(&want),
        "{name}: decoding the fixture lost something"
    );
}

/// A metadata file (JSON) against `tests/golden/<name>`, compared as JSON values.
fn check_file<T: Serialize + DeserializeOwned>(name: &str, value: &T) {
    let fresh = serde_json::to_string_pretty(value).expect("serializes") + "\n";
    let Some(text) = fixture(name, &fresh) else {
        return;
    };
    let want: serde_json::Value = serde_json::from_str(&text).expect("fixture is JSON");
    let got: serde_json::Value = serde_json::from_str(&fresh).expect("JSON");
    assert_eq!(
        got, want,
        "{name}: this version writes the file differently"
    );
    let back: T = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{name}: this version cannot read the fixture: {e}"));
    assert_eq!(
        serde_json::to_value(&back).expect("serializes"),
        want,
        "{name}: reading the fixture lost something"
    );
}

fn log_id(term: u64, node: u64, index: u64) -> LogId {
    openraft::LogId::new(openraft::CommittedLeaderId::new(term, node), index)
}

fn members() -> Membership {
    let voters: BTreeSet<u64> = [1, 2, 3].into();
    let nodes: BTreeMap<u64, Member> = (1..=4)
        .map(|i| {
            let m = Member {
                addr: format!("plg-{i}.plg.ns.svc:8400"),
                name: format!("plg-{i}"),
            };
            (i, m)
        })
        .collect();
    Membership::new(vec![voters], nodes)
}

fn snapshot_meta() -> SnapshotMeta {
    SnapshotMeta {
        last_log_id: Some(log_id(3, 1, 500)),
        last_membership: StoredMembership::new(Some(log_id(2, 1, 7)), members()),
        snapshot_id: "3-1-500".into(),
    }
}

#[test]
fn append_entries_keeps_its_encoding() {
    let producer = ProducerKey {
        id: 9,
        epoch: 2,
        first_seq: 40,
    };
    let parts = [
        Part {
            producer: Some(producer),
            count: 2,
        },
        Part {
            producer: None,
            count: 1,
        },
    ];
    let records: [&[u8]; 3] = [b"alpha", b"", b"gamma"];
    let entry = |index, payload| Entry {
        log_id: log_id(3, 1, index),
        payload,
    };
    let batch = |b: Vec<u8>| EntryPayload::Normal(RecordBatch(b.into()));
    let req = AppendEntriesRequest {
        vote: Vote::new_committed(3, 1),
        prev_log_id: Some(log_id(2, 2, 41)),
        entries: vec![
            entry(42, EntryPayload::Blank),
            entry(43, batch(codec::encode_records(records))),
            entry(
                44,
                batch(codec::encode_parts(1_700_000_000_123, &parts, records)),
            ),
            entry(45, EntryPayload::Membership(members())),
        ],
        leader_commit: Some(log_id(2, 2, 40)),
    };
    check_message("append_entries_request", &req);
    let heartbeat = AppendEntriesRequest {
        entries: Vec::new(),
        ..req
    };
    check_message("append_entries_heartbeat", &heartbeat);
    let answers = [
        ("success", AppendEntriesResponse::Success),
        (
            "partial_success",
            AppendEntriesResponse::PartialSuccess(Some(log_id(3, 1, 43))),
        ),
        ("conflict", AppendEntriesResponse::Conflict),
        (
            "higher_vote",
            AppendEntriesResponse::HigherVote(Vote::new(4, 2)),
        ),
    ];
    for (name, answer) in answers {
        check_message(&format!("append_entries_response_{name}"), &answer);
    }
}

#[test]
fn votes_and_pre_votes_keep_their_encoding() {
    check_message(
        "vote_request",
        &VoteRequest::new(Vote::new(4, 2), Some(log_id(3, 1, 45))),
    );
    check_message(
        "vote_response",
        &VoteResponse::new(Vote::new(4, 2), Some(log_id(3, 1, 44)), true),
    );
    check_message(
        "pre_vote_request",
        &PreVoteRequest {
            candidate: 2,
            term: 4,
            last_log_id: Some(log_id(3, 1, 45)),
        },
    );
    check_message(
        "pre_vote_response",
        &PreVoteResponse {
            granted: false,
            term: 3,
            last_log_id: Some(log_id(3, 1, 46)),
            leader_recent: true,
        },
    );
    check_message("campaign_hold", &Campaign::Hold { millis: 1500 });
    check_message("campaign_now", &Campaign::Now);
    let stopped: RaftError = RaftError::Fatal(openraft::error::Fatal::Stopped);
    check_message("error_fatal_stopped", &stopped);
}

#[test]
fn snapshot_transfer_keeps_its_encoding() {
    let req = InstallSnapshotRequest {
        vote: Vote::new_committed(3, 1),
        meta: snapshot_meta(),
        offset: 1 << 20,
        data: b"snapshot chunk".to_vec(),
        done: false,
    };
    check_message("install_snapshot_request", &req);
    check_message(
        "install_snapshot_response",
        &InstallSnapshotResponse {
            vote: Vote::new_committed(3, 1),
        },
    );
}

#[test]
fn metadata_files_keep_their_format() {
    check_file(
        "raft-meta.json",
        &RaftMeta {
            vote: Some(Vote::new_committed(3, 1)),
            committed: Some(log_id(3, 1, 480)),
            purged: Some(log_id(2, 1, 100)),
        },
    );
    let mut producers = ProducerTable::default();
    producers.advance(1_700_000_000_000);
    let (id, epoch) = producers.init(300, 0);
    producers.record(
        ProducerKey {
            id,
            epoch,
            first_seq: 0,
        },
        5,
        1200,
    );
    let mut skipped = Skipped::default();
    skipped.insert(410);
    skipped.insert_parts(420, [1u32].into());
    check_file(
        "snapshot.json",
        &SnapshotFile {
            meta: snapshot_meta(),
            next_record_offset: 1205,
            version: SNAPSHOT_VERSION,
            producers,
            skipped,
        },
    );
}

/// A snapshot file of the first format (no version, producers or skipped entries) still loads,
/// as version 1 with no producers.
#[test]
fn a_version_1_snapshot_file_still_loads() {
    let text = std::fs::read_to_string(golden("snapshot-v1.json")).expect("fixture");
    let file: SnapshotFile = serde_json::from_str(&text).expect("a version 1 file loads");
    assert_eq!(file.version, 1);
    assert!(file.producers.is_empty());
    assert_eq!(file.next_record_offset, 1205);
    assert_eq!(file.meta, snapshot_meta());
}
