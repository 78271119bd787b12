//! Recovery on open: finds the segments in the directory, verifies each index against its store,
//! rebuilds indexes that are missing, short, long or wrong, cuts a torn tail off the last segment
//! (logged with `tracing::warn!`) and refuses corruption anywhere else with [`Error::Corrupt`].
//!
//! Policy (see FORMAT.md): only the last segment can have a torn tail, because a segment is made
//! durable before the next one is created. A bad frame in the last segment is a torn tail when
//! it runs past the end of the file (and no valid later frame follows it), when it is the last
//! frame of the file, when everything from it to the end is zero, or, in a preallocated store,
//! when it holds a zero header or a zero sector. Anything else is corruption.

use std::collections::BTreeSet;
use std::path::Path;

use tracing::{info, warn};

use super::config::LogConfig;
use super::error::{Error, Result};
use super::format::{
    check_frame, parse_segment_name, segment_path, FrameHeader, FRAME_HEADER_LEN, INDEX_EXT,
    STORE_EXT, STORE_HEADER_LEN,
};
use super::index::{index_bytes, Index};
use super::prealloc::ZERO_GUARD;
use super::segment::Segment;
use super::store::Store;

/// Opens every segment of `cfg.dir` (creating the directory and a first segment if needed).
/// The result is non-empty, contiguous and ends with the active segment.
pub fn recover(cfg: &LogConfig) -> Result<Vec<Segment>> {
    let dir = &cfg.dir;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let (stores, indexes) = list_segment_files(dir)?;
    for base in indexes.difference(&stores) {
        let path = segment_path(dir, *base, INDEX_EXT);
        warn!(path = %path.display(), "removing an index file that has no store file");
        std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
    }
    let mut segments = Vec::with_capacity(stores.len());
    let last = stores.last().copied();
    for &base in &stores {
        segments.push(if Some(base) == last {
            open_active(dir, base, cfg.max_index_bytes)?
        } else {
            open_sealed(dir, base)?
        });
    }
    if segments.is_empty() {
        segments.push(Segment::create(
            dir,
            cfg.initial_offset,
            cfg.max_index_bytes,
        )?);
    }
    check_contiguous(&mut segments)?;
    sync_dir(dir)?;
    Ok(segments)
}

/// fsyncs a directory, making file creations and removals in it durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Base offsets of the store files and of the index files in `dir`; other files are ignored.
fn list_segment_files(dir: &Path) -> Result<(BTreeSet<u64>, BTreeSet<u64>)> {
    let (mut stores, mut indexes) = (BTreeSet::new(), BTreeSet::new());
    for item in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let item = item.map_err(|e| Error::io(dir, e))?;
        let name = item.file_name();
        match name.to_str().and_then(parse_segment_name) {
            Some((base, STORE_EXT)) => stores.insert(base),
            Some((base, _)) => indexes.insert(base),
            None => false,
        };
    }
    Ok((stores, indexes))
}

/// Opens a sealed segment: a light check of the index (monotonic, within the store, the last
/// frame complete and ending the file); a full scan rebuilds it when that fails. A sealed
/// segment has no tail to forgive: every bad frame is corruption.
fn open_sealed(dir: &Path, base: u64) -> Result<Segment> {
    let store_path = segment_path(dir, base, STORE_EXT);
    let store = Store::open(store_path.clone(), base)?;
    if store.len() < STORE_HEADER_LEN {
        return Err(Error::corrupt(
            &store_path,
            0,
            "sealed segment's store has no complete header",
        ));
    }
    let index_path = segment_path(dir, base, INDEX_EXT);
    let checked = Index::open(index_path.clone(), base).and_then(|mut index| {
        let count = check_sealed_index(&store, &index, base)?;
        index.set_count(count);
        Ok(index)
    });
    let index = match checked {
        Ok(index) => index,
        Err(reason) => {
            warn!(path = %index_path.display(), %reason, "rebuilding index from its store");
            let scan = scan(&store, base, false)?;
            Index::write_fresh(index_path, base, &scan.positions, 0)?
        }
    };
    Ok(Segment::from_parts(base, store, index))
}

/// Checks a sealed segment's index without reading the whole store; returns its entry count.
fn check_sealed_index(store: &Store, index: &Index, base: u64) -> Result<u64, String> {
    let (slots, trailing) = index.slots_in_file();
    if trailing {
        return Err("length is not a whole number of entries".into());
    }
    let mut expected_pos = STORE_HEADER_LEN;
    for slot in 0..slots {
        let (rel, pos) = index.entry(slot);
        let in_order = if slot == 0 {
            pos == expected_pos
        } else {
            pos > expected_pos
        };
        if u64::from(rel) != slot || !in_order || pos >= store.len() {
            return Err(format!(
                "entry {slot} ({rel}, {pos}) does not fit the store"
            ));
        }
        expected_pos = pos;
    }
    if slots == 0 {
        return match store.len() == STORE_HEADER_LEN {
            true => Ok(0),
            false => Err("empty, but the store holds frames".into()),
        };
    }
    // The last frame must be whole and end the store: then no entry is missing at the end.
    let len = store.len() - expected_pos;
    let mut frame = vec![0u8; len as usize];
    store
        .read_exact_at(&mut frame, expected_pos)
        .map_err(|e| e.to_string())?;
    check_frame(&frame, base + slots - 1)
        .map_err(|reason| format!("last entry does not end the store: {reason}"))?;
    Ok(slots)
}

/// Opens the last (active) segment: scans its whole store, cuts a torn tail, and keeps the index
/// only if it matches the scan exactly (else rewrites it). The index regains spare capacity.
fn open_active(dir: &Path, base: u64, index_capacity: u64) -> Result<Segment> {
    let store_path = segment_path(dir, base, STORE_EXT);
    let mut store = Store::open(store_path.clone(), base)?;
    if store.len() < STORE_HEADER_LEN {
        warn!(path = %store_path.display(), len = store.len(),
            "store of the last segment has no complete header (interrupted creation); rewriting it");
        store.write_header(base)?;
    }
    let scan = scan(&store, base, true)?;
    match &scan.torn {
        Some((position, Tail::Zeros)) => {
            info!(path = %store_path.display(), position, zero_bytes = store.len() - position,
                "cutting preallocated (zero) space off the end of the log");
            store.truncate(*position)?;
        }
        Some((position, Tail::Torn(reason))) => {
            warn!(path = %store_path.display(), position, dropped_bytes = store.len() - position,
                %reason, "cutting a torn tail off the log");
            store.truncate(*position)?;
        }
        None => {}
    }
    let index_path = segment_path(dir, base, INDEX_EXT);
    let capacity = index_capacity.max(index_bytes(scan.positions.len() as u64));
    let checked = Index::open(index_path.clone(), base).and_then(|mut index| {
        match_index(&index, &scan.positions)?;
        index.set_count(scan.positions.len() as u64);
        Ok(index)
    });
    let index = match checked {
        Ok(mut index) => {
            index.resize(capacity)?;
            index
        }
        Err(reason) => {
            warn!(path = %index_path.display(), %reason, "rebuilding index from its store");
            Index::write_fresh(index_path, base, &scan.positions, capacity)?
        }
    };
    Ok(Segment::from_parts(base, store, index))
}

/// Whether `index` holds exactly `positions` (spare slots after them must be zero).
fn match_index(index: &Index, positions: &[u64]) -> Result<(), String> {
    let (slots, _) = index.slots_in_file();
    if slots < positions.len() as u64 {
        return Err(format!(
            "short: {slots} entries for {} in the store",
            positions.len()
        ));
    }
    for (slot, &pos) in positions.iter().enumerate() {
        if index.entry(slot as u64) != (slot as u32, pos) {
            return Err(format!("entry {slot} does not match the store"));
        }
    }
    if (positions.len() as u64..slots).any(|slot| index.entry(slot) != (0, 0)) {
        return Err(format!(
            "long: entries past the {} in the store",
            positions.len()
        ));
    }
    Ok(())
}

/// Segments must follow each other without gaps. One gap is expected: an empty last segment
/// after a gap is the restart point of an interrupted `truncate_prefix` past the end, and the
/// segments before it are its leftovers.
fn check_contiguous(segments: &mut Vec<Segment>) -> Result<()> {
    for i in 1..segments.len() {
        let (prev_end, seg) = (segments[i - 1].next_offset(), &segments[i]);
        if seg.base() == prev_end {
            continue;
        }
        if i == segments.len() - 1 && seg.count() == 0 && seg.base() > prev_end {
            info!(
                restart = seg.base(),
                "finishing an interrupted truncate_prefix"
            );
            let last = segments.pop().expect("non-empty");
            for old in segments.drain(..) {
                old.remove()?;
            }
            segments.push(last);
            return Ok(());
        }
        return Err(Error::corrupt(
            seg.store_path(),
            0,
            format!(
                "segment starts at offset {} but the one before ends at {prev_end}",
                seg.base()
            ),
        ));
    }
    Ok(())
}

/// What a scan of a store found.
struct Scan {
    /// Store position of each valid frame, in order.
    positions: Vec<u64>,
    /// Where the tail to cut starts and what it is, if there is one.
    torn: Option<(u64, Tail)>,
}

/// What follows the last valid frame of the last segment.
enum Tail {
    /// Only zeros: preallocated space, or space the file system allocated and a crash never
    /// filled.
    Zeros,
    /// A frame a crash interrupted, and why it is taken for one.
    Torn(String),
}

/// Reads every frame of `store`. With `tolerate_tail`, a torn tail ends the scan; otherwise (and
/// for any bad frame that is not a torn tail) the result is [`Error::Corrupt`].
fn scan(store: &Store, base: u64, tolerate_tail: bool) -> Result<Scan> {
    let len = store.len();
    let mut cur = Cursor::new(store);
    // A store that ends in the guard's zeros was preallocated: the batch being written at a
    // crash may then have reached the disk in any order of its sectors, leaving zeros inside it
    // (an append past the end of the file can only lose a suffix).
    let preallocated = tolerate_tail
        && len >= STORE_HEADER_LEN + ZERO_GUARD
        && cur.is_zero(len - ZERO_GUARD, len)?;
    let mut positions = Vec::new();
    let mut pos = STORE_HEADER_LEN;
    while pos < len {
        let expected = base + positions.len() as u64;
        let remaining = len - pos;
        let (reason, incomplete, frame_len) = if remaining < FRAME_HEADER_LEN {
            (
                format!("partial frame header ({remaining} bytes)"),
                true,
                remaining,
            )
        } else {
            let frame_len = FrameHeader::parse(cur.get(pos, FRAME_HEADER_LEN)?).frame_len();
            if frame_len > remaining {
                let why =
                    format!("frame of {frame_len} bytes runs past the end ({remaining} left)");
                (why, true, frame_len)
            } else {
                match check_frame(cur.get(pos, frame_len)?, expected) {
                    Ok(_) => {
                        positions.push(pos);
                        pos += frame_len;
                        continue;
                    }
                    Err(reason) => (reason, false, frame_len),
                }
            }
        };
        if !tolerate_tail {
            return Err(Error::corrupt(store.path(), pos, reason));
        }
        if cur.is_zero(pos, len)? {
            return Ok(Scan {
                positions,
                torn: Some((pos, Tail::Zeros)),
            });
        }
        let torn = (!incomplete && pos + frame_len == len)
            || (incomplete && !cur.frame_follows(pos + 1, expected + 1)?)
            || (preallocated && cur.torn_write(pos, (pos + frame_len).min(len))?);
        if !torn {
            return Err(Error::corrupt(store.path(), pos, reason));
        }
        return Ok(Scan {
            positions,
            torn: Some((pos, Tail::Torn(reason))),
        });
    }
    Ok(Scan {
        positions,
        torn: None,
    })
}

/// Buffered positional reads over a store, for scans.
struct Cursor<'a> {
    store: &'a Store,
    buf: Vec<u8>,
    start: u64,
}

const CHUNK: u64 = 1 << 20;

/// The unit a disk writes whole.
const SECTOR: u64 = 512;

impl<'a> Cursor<'a> {
    fn new(store: &'a Store) -> Self {
        Cursor {
            store,
            buf: Vec::new(),
            start: 0,
        }
    }

    /// `len` bytes at `pos` (which must lie within the store).
    fn get(&mut self, pos: u64, len: u64) -> Result<&[u8]> {
        let end = self.start + self.buf.len() as u64;
        if pos < self.start || pos + len > end {
            let want = len.max(CHUNK).min(self.store.len() - pos);
            self.buf.resize(want as usize, 0);
            self.store.read_exact_at(&mut self.buf, pos)?;
            self.start = pos;
        }
        let at = (pos - self.start) as usize;
        Ok(&self.buf[at..at + len as usize])
    }

    /// Whether bytes `[from, to)` are all zero.
    fn is_zero(&mut self, mut from: u64, to: u64) -> Result<bool> {
        while from < to {
            let n = (to - from).min(CHUNK);
            if self.get(from, n)?.iter().any(|&b| b != 0) {
                return Ok(false);
            }
            from += n;
        }
        Ok(true)
    }

    /// Whether the bad frame in `[from, to)` looks like a write a crash interrupted in preallocated
    /// space: its header never written (all zero), or one of its 512-byte sectors still zero
    /// (sectors reach the disk whole; a zero sector in a frame that fails its check is taken for
    /// one the crash never wrote, as etcd's WAL does).
    fn torn_write(&mut self, from: u64, to: u64) -> Result<bool> {
        if self.is_zero(from, (from + FRAME_HEADER_LEN).min(to))? {
            return Ok(true);
        }
        let mut sector = from.div_ceil(SECTOR) * SECTOR;
        while sector + SECTOR <= to {
            if self.is_zero(sector, sector + SECTOR)? {
                return Ok(true);
            }
            sector += SECTOR;
        }
        Ok(false)
    }

    /// Whether a valid frame holding `offset` starts anywhere at or after `from`: then the bad
    /// frame before it is damage in the middle of the log (say, a flipped length), not a tail.
    fn frame_follows(&mut self, from: u64, offset: u64) -> Result<bool> {
        let len = self.store.len();
        let needle = offset.to_le_bytes();
        let mut at = from;
        while at + FRAME_HEADER_LEN <= len {
            if self.get(at + 8, 8)? == needle {
                let frame_len = FrameHeader::parse(self.get(at, FRAME_HEADER_LEN)?).frame_len();
                if at + frame_len <= len && check_frame(self.get(at, frame_len)?, offset).is_ok() {
                    return Ok(true);
                }
            }
            at += 1;
        }
        Ok(false)
    }
}
