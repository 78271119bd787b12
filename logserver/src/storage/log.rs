//! The [`Log`]: an ordered set of segments with one active segment at the end.
//! (Placeholder body: in memory only. The on-disk engine replaces it behind the same API.)

use std::ops::Range;

use super::config::LogConfig;
use super::error::{Error, Result};
use super::{Entry, NewEntry};

/// The segmented log.
#[derive(Debug)]
pub struct Log {
    first: u64,
    entries: Vec<Entry>,
}

impl Log {
    /// Opens (and recovers) the log in `cfg.dir`, creating it if needed.
    pub fn open(cfg: LogConfig) -> Result<Log> {
        cfg.validate()?;
        Ok(Log {
            first: cfg.initial_offset,
            entries: Vec::new(),
        })
    }

    /// Appends one entry and returns its offset.
    pub fn append(&mut self, e: NewEntry<'_>) -> Result<u64> {
        Ok(self.append_batch([e])?.start)
    }

    /// Appends entries with one write and at most one fsync per segment touched.
    pub fn append_batch<'a>(
        &mut self,
        es: impl IntoIterator<Item = NewEntry<'a>>,
    ) -> Result<Range<u64>> {
        let start = self.next_offset();
        for e in es {
            let offset = self.next_offset();
            self.entries.push(Entry {
                offset,
                term: e.term,
                kind: e.kind,
                payload: e.payload.to_vec(),
            });
        }
        Ok(start..self.next_offset())
    }

    /// Reads the entry at `offset`.
    pub fn read(&self, offset: u64) -> Result<Entry> {
        if offset < self.first || offset >= self.next_offset() {
            return Err(Error::OutOfRange {
                offset,
                first: self.first,
                next: self.next_offset(),
            });
        }
        Ok(self.entries[(offset - self.first) as usize].clone())
    }

    /// Iterates from `from` to the current end.
    pub fn reader(&self, from: u64) -> Reader<'_> {
        Reader {
            log: self,
            next: from,
        }
    }

    /// Drops whole segments below `below`.
    pub fn truncate_prefix(&mut self, below: u64) -> Result<()> {
        if below >= self.next_offset() {
            self.entries.clear();
            self.first = below;
        }
        Ok(())
    }

    /// Removes every entry at or after `from`.
    pub fn truncate_suffix(&mut self, from: u64) -> Result<()> {
        if from < self.first {
            return Err(Error::OutOfRange {
                offset: from,
                first: self.first,
                next: self.next_offset(),
            });
        }
        let keep = ((from - self.first) as usize).min(self.entries.len());
        self.entries.truncate(keep);
        Ok(())
    }

    /// Offset of the first entry (equals `next_offset` when empty).
    pub fn first_offset(&self) -> u64 {
        self.first
    }

    /// One past the last entry.
    pub fn next_offset(&self) -> u64 {
        self.first + self.entries.len() as u64
    }

    /// `(offset, term)` of the last entry.
    pub fn last_entry_id(&self) -> Option<(u64, u64)> {
        self.entries.last().map(|e| (e.offset, e.term))
    }

    /// Makes every appended entry durable.
    pub fn sync(&mut self) -> Result<()> {
        Ok(())
    }

    /// Syncs and releases the log.
    pub fn close(mut self) -> Result<()> {
        self.sync()
    }
}

/// Iterator over entries from an offset to the end of the log as it was when each entry is read.
#[derive(Debug)]
pub struct Reader<'a> {
    log: &'a Log,
    next: u64,
}

impl Iterator for Reader<'_> {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.log.next_offset() {
            return None;
        }
        let r = self.log.read(self.next);
        self.next += 1;
        Some(r)
    }
}
