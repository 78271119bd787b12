//! Configuration of a [`Log`](super::Log): where it lives, how big segments grow, and when writes
//! reach the disk. Validated once when the log is opened.

use std::path::PathBuf;
use std::time::Duration;

use super::error::{Error, Result};
use super::format::{INDEX_ENTRY_LEN, INDEX_HEADER_LEN, STORE_HEADER_LEN};

/// Settings of a [`Log`](super::Log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Directory holding the segment files. Created if missing. No default.
    pub dir: PathBuf,
    /// Max bytes of a segment's store file before it rolls over. Default 1 GiB.
    /// An entry larger than this is written alone in a segment of its own.
    pub max_store_bytes: u64,
    /// Max bytes of a segment's index file (12 bytes per entry plus a 24-byte header) before it
    /// rolls over. Default 10 MiB.
    pub max_index_bytes: u64,
    /// When appended entries are fsynced. Default [`Durability::EveryBatch`].
    pub durability: Durability,
    /// Offset of the first entry when the directory is empty. Default 0.
    pub initial_offset: u64,
    /// Bytes of zeros written at a time ahead of the active segment's last frame, so appends
    /// overwrite allocated blocks and their fsync has no metadata to journal. Cut off when a
    /// segment is sealed or closed. Default 1 MiB; 0 turns preallocation off.
    pub prealloc_bytes: u64,
    /// Bytes of the active segment's store kept in the page cache behind its last frame; older
    /// frames are dropped from it (once synced) by the preallocation thread, so the page cache
    /// does not grow with the log. Reads of older frames go to the disk and are cached again by
    /// the kernel. Default 256 MiB; 0 leaves the page cache to the kernel. Needs preallocation
    /// on (with `prealloc_bytes` 0 nothing is dropped).
    pub cache_window_bytes: u64,
}

/// When appends reach stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// fsync before `append`/`append_batch` returns: one fsync per call (per segment touched).
    #[default]
    EveryBatch,
    /// fsync on an append when the last sync is older than the interval. There is no background
    /// thread: an idle log stays unsynced until the next append, `sync` or `close`.
    Interval(Duration),
    /// Never fsync appends; only `sync`, `close`, rollover and truncations sync.
    Never,
}

impl LogConfig {
    /// A config for `dir` with the documented defaults.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LogConfig {
            dir: dir.into(),
            max_store_bytes: 1 << 30,
            max_index_bytes: 10 << 20,
            durability: Durability::EveryBatch,
            initial_offset: 0,
            prealloc_bytes: 1 << 20,
            cache_window_bytes: 256 << 20,
        }
    }

    /// Checks that segments can hold at least one entry.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.max_store_bytes <= STORE_HEADER_LEN {
            return Err(Error::Config {
                field: "max_store_bytes",
                reason: format!("must exceed the {STORE_HEADER_LEN}-byte store header"),
            });
        }
        if self.max_index_bytes < INDEX_HEADER_LEN + INDEX_ENTRY_LEN {
            return Err(Error::Config {
                field: "max_index_bytes",
                reason: format!(
                    "must hold the {INDEX_HEADER_LEN}-byte header and one {INDEX_ENTRY_LEN}-byte entry"
                ),
            });
        }
        if self.max_index_bytes > u64::from(u32::MAX) {
            return Err(Error::Config {
                field: "max_index_bytes",
                reason: "must not exceed 4 GiB (relative offsets are 32-bit)".into(),
            });
        }
        Ok(())
    }
}
