//! Small durable Raft metadata next to the log: the vote, the committed and purged log ids
//! ([`RaftMeta`], file `raft-meta.json`) and the snapshot cut ([`SnapshotFile`], file
//! `snapshot.json`). Every write is write-temp + fsync + rename + fsync(dir), so a crash leaves
//! either the old or the new file, never a torn one.
//!
//! NB: `committed` may lag on disk (it is a hint that lets a restarted member re-apply without
//! waiting for a leader); `vote` and `purged` are always durable before the call returns.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::producer::{ProducerTable, Skipped};
use super::{LogId, SnapshotMeta, Vote};

/// Errors reading or writing metadata files.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bad metadata file {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// Result with the metadata [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Vote, committed and purged log ids.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftMeta {
    pub vote: Option<Vote>,
    pub committed: Option<LogId>,
    pub purged: Option<LogId>,
}

/// The snapshot cut: openraft's snapshot meta plus the record offset after the cut and, from
/// version 2 on, the idempotent producer state at the cut.
///
/// NB: version 1 files have no `version`, `producers` or `skipped` field and load as version 1
/// with no producers; a version 1 binary ignores the fields it does not know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotFile {
    pub meta: SnapshotMeta,
    pub next_record_offset: u64,
    /// Format version: 1 (the cut only) or [`SNAPSHOT_VERSION`].
    #[serde(default = "version_1")]
    pub version: u32,
    /// The producer table at the cut.
    #[serde(default)]
    pub producers: ProducerTable,
    /// Retained entries up to the cut whose records got no offsets (duplicates and refusals of
    /// idempotent producers), so the index rebuilt on open skips them too.
    #[serde(default)]
    pub skipped: Skipped,
}

/// The version of [`SnapshotFile`] this code writes.
pub const SNAPSHOT_VERSION: u32 = 2;

fn version_1() -> u32 {
    1
}

/// Reads a JSON file; `None` when it does not exist.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|source| Error::Parse {
                path: path.to_owned(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Replaces a JSON file durably (write temp, fsync, rename, fsync dir).
pub fn store<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).map_err(io)?;
    f.write_all(&serde_json::to_vec(value).expect("metadata serializes"))
        .map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_then_load_round_trips_and_missing_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("raft-meta.json");
        assert_eq!(load::<RaftMeta>(&p).unwrap(), None);
        let m = RaftMeta {
            vote: Some(Vote::new(3, 1)),
            committed: None,
            purged: Some(openraft::LogId::new(
                openraft::CommittedLeaderId::new(2, 1),
                9,
            )),
        };
        store(&p, &m).unwrap();
        assert_eq!(load::<RaftMeta>(&p).unwrap(), Some(m));
        fs::write(&p, b"{not json").unwrap();
        assert!(matches!(load::<RaftMeta>(&p), Err(Error::Parse { .. })));
    }

    #[test]
    fn a_version_1_snapshot_file_loads_with_no_producers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("snapshot.json");
        // Written by the version before the idempotent producer.
        fs::write(
            &p,
            br#"{"meta":{"last_log_id":null,"last_membership":{"log_id":null,"membership":{"configs":[],"nodes":{}}},"snapshot_id":"s"},"next_record_offset":12}"#,
        )
        .unwrap();
        let f: SnapshotFile = load(&p).unwrap().unwrap();
        assert_eq!((f.version, f.next_record_offset), (1, 12));
        assert!(f.producers.is_empty() && f.skipped == Skipped::default());
    }
}
