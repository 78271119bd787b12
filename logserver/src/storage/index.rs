//! A segment's index file, memory-mapped: the file header, then one fixed-width entry per stored
//! entry (relative offset, store position). This is the only module with `unsafe` code: mapping a
//! file. It trusts nothing it reads; `recovery` verifies entries against the store.
//!
//! NB: the index of the active segment is preallocated to its capacity (zero-filled) so appends
//! only write to memory; the index of a sealed segment is cut to its exact length. The entry count
//! lives in memory; on disk it is implied by the store, which recovery scans.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use memmap2::MmapMut;

use super::error::{Error, Result};
use super::format::{
    check_file_header, decode_index_entry, encode_file_header, encode_index_entry, INDEX_ENTRY_LEN,
    INDEX_HEADER_LEN, INDEX_MAGIC,
};

/// An open, mapped index file.
#[derive(Debug)]
pub struct Index {
    path: PathBuf,
    file: File,
    map: MmapMut,
    /// Entries in use (the rest of the map is spare capacity).
    count: u64,
}

/// Bytes of an index file holding `count` entries.
pub fn index_bytes(count: u64) -> u64 {
    INDEX_HEADER_LEN + count * INDEX_ENTRY_LEN
}

impl Index {
    /// Writes a new index file (replacing any file at `path`) holding `positions`, sized to hold
    /// `capacity` bytes (at least its entries), fsyncs it and maps it.
    pub fn write_fresh(
        path: PathBuf,
        base: u64,
        positions: &[u64],
        capacity: u64,
    ) -> Result<Index> {
        let io = |e| Error::io(&path, e);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(io)?;
        let mut buf = Vec::with_capacity(index_bytes(positions.len() as u64) as usize);
        buf.extend_from_slice(&encode_file_header(INDEX_MAGIC, base));
        for (slot, &pos) in positions.iter().enumerate() {
            buf.extend_from_slice(&encode_index_entry(slot as u32, pos));
        }
        file.write_all(&buf).map_err(io)?;
        file.set_len(capacity.max(buf.len() as u64)).map_err(io)?;
        file.sync_all().map_err(io)?;
        let map = map_file(&path, &file)?;
        Ok(Index {
            path,
            file,
            map,
            count: positions.len() as u64,
        })
    }

    /// Opens and maps an existing index file with a valid header. The count starts at zero: the
    /// caller checks the entries (`slots_in_file`, `entry`) and then calls `set_count`.
    /// `Err` is the reason the file cannot be used (missing, short, bad header).
    pub fn open(path: PathBuf, base: u64) -> Result<Index, String> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| format!("cannot open: {e}"))?;
        let len = file
            .metadata()
            .map_err(|e| format!("cannot stat: {e}"))?
            .len();
        if len < INDEX_HEADER_LEN {
            return Err(format!("{len} bytes, shorter than its header"));
        }
        let map = map_file(&path, &file).map_err(|e| e.to_string())?;
        check_file_header(&map[..INDEX_HEADER_LEN as usize], INDEX_MAGIC, base)?;
        Ok(Index {
            path,
            file,
            map,
            count: 0,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of whole entry slots in the file (used or not), and whether bytes trail the last.
    pub fn slots_in_file(&self) -> (u64, bool) {
        let body = self.map.len() as u64 - INDEX_HEADER_LEN;
        (
            body / INDEX_ENTRY_LEN,
            !body.is_multiple_of(INDEX_ENTRY_LEN),
        )
    }

    /// `(relative offset, position)` in slot `slot` (< `slots_in_file`).
    pub fn entry(&self, slot: u64) -> (u32, u64) {
        let at = index_bytes(slot) as usize;
        decode_index_entry(&self.map[at..at + INDEX_ENTRY_LEN as usize])
    }

    /// Sets how many entries are in use (<= `slots_in_file`).
    pub fn set_count(&mut self, count: u64) {
        debug_assert!(count <= self.slots_in_file().0);
        self.count = count;
    }

    /// Entries in use.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Store position of entry `slot` (< `count`).
    pub fn position(&self, slot: u64) -> u64 {
        debug_assert!(slot < self.count);
        self.entry(slot).1
    }

    /// Free entry slots left.
    pub fn free_slots(&self) -> u64 {
        self.slots_in_file().0 - self.count
    }

    /// Records the next entry's store position. The caller checks `is_full` first.
    pub fn push(&mut self, position: u64) {
        let at = index_bytes(self.count) as usize;
        let rel = u32::try_from(self.count).expect("index capacity is below 2^32 entries");
        self.map[at..at + INDEX_ENTRY_LEN as usize]
            .copy_from_slice(&encode_index_entry(rel, position));
        self.count += 1;
    }

    /// Forgets entries from `count` on and zeroes their slots.
    pub fn truncate(&mut self, count: u64) {
        if count < self.count {
            let from = index_bytes(count) as usize;
            let to = index_bytes(self.count) as usize;
            self.map[from..to].fill(0);
            self.count = count;
        }
    }

    /// Resizes the file to `bytes` (at least the entries in use), fsyncs and remaps it.
    pub fn resize(&mut self, bytes: u64) -> Result<()> {
        let bytes = bytes.max(index_bytes(self.count));
        if bytes == self.map.len() as u64 {
            return self.flush();
        }
        self.map.flush().map_err(|e| Error::io(&self.path, e))?;
        self.file
            .set_len(bytes)
            .map_err(|e| Error::io(&self.path, e))?;
        self.file.sync_all().map_err(|e| Error::io(&self.path, e))?;
        // NB: the old map is replaced before anything reads it again (it may now extend past
        // the end of the file).
        self.map = map_file(&self.path, &self.file)?;
        Ok(())
    }

    /// Cuts the file to exactly its entries and makes it durable (sealing a segment).
    pub fn seal(&mut self) -> Result<()> {
        self.resize(index_bytes(self.count))
    }

    /// Writes dirty pages of the map to disk.
    pub fn flush(&self) -> Result<()> {
        self.map.flush().map_err(|e| Error::io(&self.path, e))
    }
}

/// Maps the whole of `file` read-write.
fn map_file(path: &Path, file: &File) -> Result<MmapMut> {
    // SAFETY: the mapping is only sound while no one else changes or truncates the file. The log
    // owns its directory (one `Log` per directory, documented on `Log::open`), this process only
    // changes the file's length through `Index::resize`, which replaces the map right after, and
    // every access is bounds-checked against the map's length, which equals the file's length
    // at the time of mapping.
    unsafe { MmapMut::map_mut(file) }.map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_truncate_seal_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i");
        let mut idx = Index::write_fresh(path.clone(), 5, &[24, 40], index_bytes(4)).unwrap();
        assert_eq!((idx.count(), idx.free_slots()), (2, 2));
        idx.push(70);
        assert_eq!(idx.entry(2), (2, 70));
        idx.truncate(1);
        assert_eq!((idx.count(), idx.entry(1)), (1, (0, 0)));
        idx.push(41);
        idx.seal().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), index_bytes(2));
        assert_eq!(idx.free_slots(), 0);
        drop(idx);
        let idx = Index::open(path.clone(), 5).unwrap();
        assert_eq!(idx.slots_in_file(), (2, false));
        assert_eq!((idx.entry(0), idx.entry(1)), ((0, 24), (1, 41)));
        assert!(Index::open(path, 6).unwrap_err().contains("base offset"));
    }
}
