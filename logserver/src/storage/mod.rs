//! The segmented on-disk log. Knows nothing of Raft, gRPC or tokio.
//!
//! A [`Log`] is a directory of segments; each segment is a store file of CRC-checked entry frames
//! and a memory-mapped index file (relative offset -> store position). Entries get dense offsets
//! from [`Log::append`]. Recovery on [`Log::open`] cuts a torn tail, rebuilds a missing or wrong
//! index and refuses to serve corrupt bytes. The on-disk format is described in `FORMAT.md`.

mod config;
mod error;
mod format;
mod index;
mod log;
mod prealloc;
mod recovery;
mod segment;
mod store;

pub use config::{Durability, LogConfig};
pub use error::{Error, Result};
pub use log::{Log, Reader, SyncHandle};

/// An entry as stored. `kind` is opaque to storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Position of the entry in the log.
    pub offset: u64,
    /// Raft term (opaque here).
    pub term: u64,
    /// Entry kind (opaque here; the Raft adapter tells normal/blank/membership apart).
    pub kind: u8,
    /// The record bytes.
    pub payload: Vec<u8>,
}

/// An entry to append; the log assigns its offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewEntry<'a> {
    /// Raft term (opaque here).
    pub term: u64,
    /// Entry kind (opaque here).
    pub kind: u8,
    /// The record bytes.
    pub payload: &'a [u8],
}
