//! The [`Log`]: an ordered, contiguous list of segments whose last one is active (takes appends).
//! Owns offset assignment, rollover, the durability policy and the crash-safe order of file
//! operations for truncations. Bytes on disk are the business of `segment`, `store` and `index`.

use std::collections::VecDeque;
use std::ops::Range;
use std::time::Instant;

use super::config::{Durability, LogConfig};
use super::error::{Error, Result};
use super::format::{encode_frame, frame_len, MAX_PAYLOAD};
use super::recovery::{recover, sync_dir};
use super::segment::Segment;
use super::{Entry, NewEntry};

/// The segmented log. One `Log` per directory, enforced by an exclusive lock on `<dir>/LOCK`
/// (a second open fails with [`Error::Locked`]). Writes take `&mut self`, reads `&self`; share it
/// behind a lock for concurrent readers.
#[derive(Debug)]
pub struct Log {
    cfg: LogConfig,
    /// Never empty; contiguous; the last one is active.
    segments: Vec<Segment>,
    /// Term of the last entry, if any.
    last_term: Option<u64>,
    last_sync: Instant,
    /// Scratch space for encoding frames and their positions.
    buf: Vec<u8>,
    positions: Vec<u64>,
    /// Holds the directory's advisory lock for the life of the `Log`; released when dropped.
    _lock: std::fs::File,
}

impl Log {
    /// Opens the log in `cfg.dir` (created if missing) and recovers it: a torn tail is cut off,
    /// missing or wrong indexes are rebuilt, corruption is an [`Error::Corrupt`].
    pub fn open(cfg: LogConfig) -> Result<Log> {
        cfg.validate()?;
        let lock = lock_dir(&cfg.dir)?;
        let segments = recover(&cfg)?;
        let mut log = Log {
            cfg,
            segments,
            last_term: None,
            last_sync: Instant::now(),
            buf: Vec::new(),
            positions: Vec::new(),
            _lock: lock,
        };
        log.last_term = log.term_before(log.next_offset())?;
        log.arm_active()?;
        Ok(log)
    }

    /// Appends one entry and returns its offset.
    pub fn append(&mut self, e: NewEntry<'_>) -> Result<u64> {
        Ok(self.append_batch([e])?.start)
    }

    /// Appends entries in order and returns their offsets. One write and, by the durability
    /// setting, at most one fsync per segment touched (a batch that fills the active segment also
    /// pays for sealing it). Checks every size first, so a too-large entry appends nothing. On an
    /// I/O error a prefix of the batch may be stored; `next_offset` says how much.
    pub fn append_batch<'a>(
        &mut self,
        es: impl IntoIterator<Item = NewEntry<'a>>,
    ) -> Result<Range<u64>> {
        self.append_inner(es, true)
    }

    /// Like [`Log::append_batch`] but never fsyncs, whatever the durability setting: the caller
    /// makes the entries durable later with a [`SyncHandle`] (or `sync`). Sealing a full segment
    /// on the way still syncs that segment.
    pub fn append_batch_unsynced<'a>(
        &mut self,
        es: impl IntoIterator<Item = NewEntry<'a>>,
    ) -> Result<Range<u64>> {
        self.append_inner(es, false)
    }

    /// A handle that fsyncs the entries appended so far without holding the log: every entry
    /// below [`SyncHandle::upto`] is durable once [`SyncHandle::sync`] returns (entries of older
    /// segments already are: a segment is synced when it is sealed).
    pub fn sync_handle(&self) -> Result<SyncHandle> {
        Ok(SyncHandle {
            file: self.active().store_file()?,
            upto: self.next_offset(),
        })
    }

    fn append_inner<'a>(
        &mut self,
        es: impl IntoIterator<Item = NewEntry<'a>>,
        may_sync: bool,
    ) -> Result<Range<u64>> {
        let es: Vec<NewEntry<'a>> = es.into_iter().collect();
        if let Some(e) = es.iter().find(|e| e.payload.len() as u64 > MAX_PAYLOAD) {
            return Err(Error::TooLarge {
                size: e.payload.len() as u64,
                max: MAX_PAYLOAD,
            });
        }
        let start = self.next_offset();
        if let Err(e) = self.write_batch(&es) {
            // A prefix may have reached the files: make `last_entry_id` match what is there.
            self.buf.clear();
            self.positions.clear();
            self.last_term = self.term_before(self.next_offset()).unwrap_or(None);
            return Err(e);
        }
        if let Some(e) = es.last() {
            self.last_term = Some(e.term);
            match self.cfg.durability {
                _ if !may_sync => {}
                Durability::EveryBatch => self.sync()?,
                Durability::Interval(every) if self.last_sync.elapsed() >= every => self.sync()?,
                Durability::Interval(_) | Durability::Never => {}
            }
        }
        Ok(start..self.next_offset())
    }

    /// Encodes and writes `es`, rolling over where the active segment is full.
    fn write_batch(&mut self, es: &[NewEntry<'_>]) -> Result<()> {
        self.buf.clear();
        self.positions.clear();
        for e in es {
            let active = self.active();
            let at = active.store_len() + self.buf.len() as u64;
            let pending = self.positions.len() as u64;
            let holds_any = active.count() + pending > 0;
            let full = at + frame_len(e.payload.len()) > self.cfg.max_store_bytes
                || !active.index_has_room(pending + 1);
            if full && holds_any {
                self.flush_pending()?;
                self.roll()?;
            }
            let offset = self.next_offset() + self.positions.len() as u64;
            let at = self.active().store_len() + self.buf.len() as u64;
            self.positions.push(at);
            encode_frame(&mut self.buf, offset, e.term, e.kind, e.payload);
        }
        self.flush_pending()
    }

    /// Writes the encoded frames to the active segment.
    fn flush_pending(&mut self) -> Result<()> {
        if !self.positions.is_empty() {
            let active = self.segments.last_mut().expect("never empty");
            active.append(&self.buf, &self.positions)?;
            self.buf.clear();
            self.positions.clear();
        }
        Ok(())
    }

    /// Seals the active segment and starts a new one at `next_offset`. Order: the old segment is
    /// durable (data and exact index) before the new files exist, then the directory is synced.
    fn roll(&mut self) -> Result<()> {
        let base = self.next_offset();
        self.segments.last_mut().expect("never empty").seal()?;
        let seg = Segment::create(&self.cfg.dir, base, self.cfg.max_index_bytes)?;
        self.segments.push(seg);
        sync_dir(&self.cfg.dir)?;
        self.arm_active()?;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Turns preallocation on for the active segment (a new one, or a sealed one active again).
    fn arm_active(&mut self) -> Result<()> {
        let (chunk, limit) = (self.cfg.prealloc_bytes, self.cfg.max_store_bytes);
        let window = self.cfg.cache_window_bytes;
        let active = self.segments.last_mut().expect("never empty");
        active.set_prealloc(chunk, limit, window)
    }

    /// Reads the entry at `offset`: one index lookup and one read. Outside `[first, next)`,
    /// including offsets dropped by `truncate_prefix`, it is [`Error::OutOfRange`].
    pub fn read(&self, offset: u64) -> Result<Entry> {
        self.segment_of(offset)?.read(offset)
    }

    /// The segment holding `offset`.
    fn segment_of(&self, offset: u64) -> Result<&Segment> {
        if offset < self.first_offset() || offset >= self.next_offset() {
            return Err(Error::OutOfRange {
                offset,
                first: self.first_offset(),
                next: self.next_offset(),
            });
        }
        let i = self.segments.partition_point(|s| s.base() <= offset) - 1;
        Ok(&self.segments[i])
    }

    /// Iterates over the entries from `from` to the end of the log. Starting below the first
    /// offset yields one [`Error::OutOfRange`]; starting at or past the end yields nothing.
    pub fn reader(&self, from: u64) -> Reader<'_> {
        Reader {
            log: self,
            next: from,
            ahead: VecDeque::new(),
            failed: None,
        }
    }

    /// Drops every segment whose entries are all below `below` (retention). The active segment
    /// stays unless `below >= next_offset`: then the log becomes empty and restarts at `below`.
    /// Segments go oldest first, so a crash leaves a contiguous log.
    pub fn truncate_prefix(&mut self, below: u64) -> Result<()> {
        if below >= self.next_offset() {
            let active = self.active();
            if self.segments.len() == 1 && active.count() == 0 && active.base() == below {
                return Ok(());
            }
            if !(active.count() == 0 && active.base() == below) {
                // NB: the restart segment is durable before the old ones go; recovery removes
                // leftovers older than an empty last segment that follows a gap.
                self.segments.last_mut().expect("never empty").seal()?;
                let seg = Segment::create(&self.cfg.dir, below, self.cfg.max_index_bytes)?;
                self.segments.push(seg);
                sync_dir(&self.cfg.dir)?;
                self.arm_active()?;
            }
            self.last_term = None;
        }
        let drop = self
            .segments
            .iter()
            .skip(1)
            .take_while(|s| s.base() <= below)
            .count();
        for seg in self.segments.drain(..drop) {
            seg.remove()?;
        }
        if drop > 0 {
            sync_dir(&self.cfg.dir)?;
        }
        Ok(())
    }

    /// Removes every entry at or after `from` (a Raft log conflict); durable on return. Below the
    /// first offset it is [`Error::OutOfRange`]: purged entries cannot come back. Segments go
    /// newest first, so a crash leaves a prefix of the old log.
    pub fn truncate_suffix(&mut self, from: u64) -> Result<()> {
        if from >= self.next_offset() {
            return Ok(());
        }
        if from < self.first_offset() {
            return Err(Error::OutOfRange {
                offset: from,
                first: self.first_offset(),
                next: self.next_offset(),
            });
        }
        // Keep the segment holding `from` (even if it becomes empty) so the log never loses
        // its first offset.
        let keep = self.segments.partition_point(|s| s.base() <= from).max(1);
        let removed = self.segments.len() > keep;
        while self.segments.len() > keep {
            self.segments.pop().expect("len > keep").remove()?;
        }
        let active = self.segments.last_mut().expect("never empty");
        active.truncate_from(from)?;
        if removed {
            active.activate(self.cfg.max_index_bytes)?;
            sync_dir(&self.cfg.dir)?;
            self.arm_active()?;
        }
        self.last_term = self.term_before(from)?;
        Ok(())
    }

    /// Term of the entry just before `offset`, if the log holds it.
    fn term_before(&self, offset: u64) -> Result<Option<u64>> {
        if offset > self.first_offset() && offset <= self.next_offset() {
            Ok(Some(self.read(offset - 1)?.term))
        } else {
            Ok(None)
        }
    }

    fn active(&self) -> &Segment {
        self.segments.last().expect("never empty")
    }

    /// Offset of the first entry (equals `next_offset` when the log is empty).
    pub fn first_offset(&self) -> u64 {
        self.segments[0].base()
    }

    /// One past the last entry: the offset the next append gets.
    pub fn next_offset(&self) -> u64 {
        self.active().next_offset()
    }

    /// `(offset, term)` of the last entry, if any.
    pub fn last_entry_id(&self) -> Option<(u64, u64)> {
        self.last_term.map(|t| (self.next_offset() - 1, t))
    }

    /// The configuration the log was opened with.
    pub fn config(&self) -> &LogConfig {
        &self.cfg
    }

    /// Makes every appended entry durable.
    pub fn sync(&mut self) -> Result<()> {
        crate::stats::timed_fsync(|| self.active().sync())?;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Syncs and releases the log. Dropping a `Log` without `close` is safe (a crash is too):
    /// the next `open` recovers whatever reached the disk.
    pub fn close(self) -> Result<()> {
        for seg in self.segments {
            seg.close()?;
        }
        Ok(())
    }
}

/// Makes appended entries durable outside the log's lock (see [`Log::sync_handle`]).
#[derive(Debug)]
pub struct SyncHandle {
    file: std::fs::File,
    upto: u64,
}

impl SyncHandle {
    /// Entries below this offset are durable after [`SyncHandle::sync`].
    pub fn upto(&self) -> u64 {
        self.upto
    }

    /// fsyncs the active segment's store as it was when the handle was taken.
    pub fn sync(&self) -> std::io::Result<()> {
        crate::stats::timed_fsync(|| self.file.sync_data())
    }
}

/// Bytes of frames a [`Reader`] fetches with one read.
const READ_CHUNK: u64 = 256 << 10;

/// Iterator over entries from an offset to the end of the log, for streaming consumers and
/// snapshots. It reads ahead in chunks of up to 256 KiB of frames (one read each), and ends at the
/// end of the log; a tailing consumer reads again later from where it stopped (`position`).
#[derive(Debug)]
pub struct Reader<'a> {
    log: &'a Log,
    next: u64,
    ahead: VecDeque<Entry>,
    failed: Option<Error>,
}

impl Reader<'_> {
    /// The offset the next call to `next` returns.
    pub fn position(&self) -> u64 {
        self.next
    }
}

impl Iterator for Reader<'_> {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(e) = self.ahead.pop_front() {
                self.next = e.offset + 1;
                return Some(Ok(e));
            }
            if let Some(e) = self.failed.take() {
                // The reader ends after an error: a corrupt entry is never skipped silently.
                self.next = u64::MAX;
                return Some(Err(e));
            }
            if self.next >= self.log.next_offset() {
                return None;
            }
            // Entries before a bad one in the chunk are still delivered, then the error.
            self.failed = self
                .log
                .segment_of(self.next)
                .and_then(|seg| seg.read_chunk(self.next, READ_CHUNK, &mut self.ahead))
                .err();
        }
    }
}

/// Name of the lock file in a log directory; recovery ignores it.
const LOCK_FILE: &str = "LOCK";

/// Creates `dir` if needed and takes an exclusive advisory lock on `dir/LOCK`, so two `Log`s (or
/// two processes) never write one directory. NB: `flock`-style locks vanish with the process, so
/// a crash leaves nothing to clean up.
fn lock_dir(dir: &std::path::Path) -> Result<std::fs::File> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked { path }),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
    }
}
