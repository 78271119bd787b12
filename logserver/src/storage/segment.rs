//! A segment: one store file and its index, covering the offsets `[base, base + count)`.
//! Owns appending frames to both files, reading one entry by offset, sealing (the end of a
//! segment's active life), cutting entries off its end and deleting its files.

use std::collections::VecDeque;
use std::path::Path;

use super::error::{Error, Result};
use super::format::{check_frame, segment_path, FRAME_HEADER_LEN, INDEX_EXT, STORE_EXT};
use super::index::{index_bytes, Index};
use super::store::Store;
use super::Entry;

/// One segment of the log.
#[derive(Debug)]
pub struct Segment {
    base: u64,
    store: Store,
    index: Index,
}

impl Segment {
    /// Creates an empty segment at `base` in `dir`: the store first, then the index (a store
    /// without an index is repaired on open; the reverse is an orphan and is removed). The
    /// caller fsyncs the directory.
    pub fn create(dir: &Path, base: u64, index_capacity: u64) -> Result<Segment> {
        let store = Store::create(segment_path(dir, base, STORE_EXT), base)?;
        let index = Index::write_fresh(
            segment_path(dir, base, INDEX_EXT),
            base,
            &[],
            index_capacity,
        )?;
        Ok(Segment { base, store, index })
    }

    /// Joins a recovered store and index.
    pub(super) fn from_parts(base: u64, store: Store, index: Index) -> Segment {
        Segment { base, store, index }
    }

    /// First offset of the segment.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Entries in the segment.
    pub fn count(&self) -> u64 {
        self.index.count()
    }

    /// One past the segment's last offset.
    pub fn next_offset(&self) -> u64 {
        self.base + self.count()
    }

    /// Bytes in the store file.
    pub fn store_len(&self) -> u64 {
        self.store.len()
    }

    /// The store file's path.
    pub fn store_path(&self) -> &Path {
        self.store.path()
    }

    /// Whether the index has room for `n` more entries.
    pub fn index_has_room(&self, n: u64) -> bool {
        self.index.free_slots() >= n
    }

    /// Appends frames already encoded in `frames`; `positions` are their store positions
    /// (starting at `store_len()`). One write to the store; the index is updated in memory.
    pub fn append(&mut self, frames: &[u8], positions: &[u64]) -> Result<()> {
        debug_assert_eq!(positions.first().copied(), Some(self.store.len()));
        self.store.append(frames)?;
        for &pos in positions {
            self.index.push(pos);
        }
        Ok(())
    }

    /// Store position and length of the frame of `offset` (in this segment).
    fn frame_extent(&self, offset: u64) -> (u64, u64) {
        let slot = offset - self.base;
        let start = self.index.position(slot);
        let end = if slot + 1 < self.count() {
            self.index.position(slot + 1)
        } else {
            self.store.len()
        };
        (start, end.saturating_sub(start))
    }

    /// Reads and checks the entry at `offset` (in `[base, next_offset)`): one index lookup and one
    /// positional read.
    pub fn read(&self, offset: u64) -> Result<Entry> {
        let (pos, len) = self.frame_extent(offset);
        if len < FRAME_HEADER_LEN || pos + len > self.store.len() {
            return Err(Error::corrupt(
                self.store.path(),
                pos,
                format!("index gives a frame of {len} bytes for offset {offset}"),
            ));
        }
        let mut frame = vec![0u8; len as usize];
        self.store.read_exact_at(&mut frame, pos)?;
        let h =
            check_frame(&frame, offset).map_err(|r| Error::corrupt(self.store.path(), pos, r))?;
        frame.drain(..FRAME_HEADER_LEN as usize);
        Ok(Entry {
            offset,
            term: h.term,
            kind: h.kind,
            payload: frame,
        })
    }

    /// Reads the entries from `offset` (in `[base, next_offset)`) on, as many as fit in
    /// `max_bytes` of frames but at least one, with one positional read; each is checked.
    pub fn read_chunk(&self, offset: u64, max_bytes: u64, out: &mut VecDeque<Entry>) -> Result<()> {
        let first = offset - self.base;
        let frame_end = |slot: u64| match slot + 1 < self.count() {
            true => self.index.position(slot + 1),
            false => self.store.len(),
        };
        let start = self.index.position(first);
        let mut end_slot = first + 1;
        while end_slot < self.count() && frame_end(end_slot) - start <= max_bytes {
            end_slot += 1;
        }
        let end = frame_end(end_slot - 1);
        if end > self.store.len() || end <= start {
            return Err(Error::corrupt(
                self.store.path(),
                start,
                format!("index gives frames [{start}, {end}) for offset {offset}"),
            ));
        }
        let mut buf = vec![0u8; (end - start) as usize];
        self.store.read_exact_at(&mut buf, start)?;
        for slot in first..end_slot {
            let pos = self.index.position(slot);
            let frame = buf
                .get((pos - start) as usize..(frame_end(slot) - start) as usize)
                .filter(|f| f.len() as u64 >= FRAME_HEADER_LEN)
                .ok_or_else(|| Error::corrupt(self.store.path(), pos, "index out of order"))?;
            let h = check_frame(frame, self.base + slot)
                .map_err(|r| Error::corrupt(self.store.path(), pos, r))?;
            out.push_back(Entry {
                offset: self.base + slot,
                term: h.term,
                kind: h.kind,
                payload: frame[FRAME_HEADER_LEN as usize..].to_vec(),
            });
        }
        Ok(())
    }

    /// Keeps the store zero-filled `chunk` bytes ahead and frames more than `window` behind out
    /// of the page cache (see [`Store::set_prealloc`]).
    pub fn set_prealloc(&mut self, chunk: u64, limit: u64, window: u64) -> Result<()> {
        self.store.set_prealloc(chunk, limit, window)
    }

    /// A second handle on the store file (for syncing it outside the log's lock).
    pub fn store_file(&self) -> Result<std::fs::File> {
        self.store.file_clone()
    }

    /// Makes the store's data durable.
    pub fn sync(&self) -> Result<()> {
        self.store.sync()
    }

    /// Ends the segment's active life: store data durable, index cut to its exact length and
    /// durable, so a sealed segment never needs a scan on open.
    pub fn seal(&mut self) -> Result<()> {
        self.store.sync()?;
        self.store.trim()?;
        self.index.seal()
    }

    /// Makes the segment the active one again: the index regains spare capacity.
    pub fn activate(&mut self, index_capacity: u64) -> Result<()> {
        self.index.resize(index_capacity)
    }

    /// Removes the entries from `offset` on (in `[base, next_offset]`); durable on return.
    pub fn truncate_from(&mut self, offset: u64) -> Result<()> {
        let keep = offset - self.base;
        if keep >= self.count() {
            return Ok(());
        }
        let cut = self.index.position(keep);
        self.index.truncate(keep);
        self.index.flush()?;
        self.store.truncate(cut)
    }

    /// Syncs everything and cuts the index to its entries (clean close).
    pub fn close(mut self) -> Result<()> {
        self.store.sync()?;
        self.store.trim()?;
        self.index.resize(index_bytes(self.index.count()))
    }

    /// Deletes the segment's files: the index first, so a crash in between leaves a store whose
    /// index is rebuilt rather than an orphan index. The caller fsyncs the directory.
    pub fn remove(self) -> Result<()> {
        let Segment { store, index, .. } = self;
        let index_path = index.path().to_path_buf();
        let store_path = store.path().to_path_buf();
        drop(index);
        drop(store);
        std::fs::remove_file(&index_path).map_err(|e| Error::io(&index_path, e))?;
        std::fs::remove_file(&store_path).map_err(|e| Error::io(&store_path, e))
    }
}
