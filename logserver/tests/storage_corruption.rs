//! Recovery tests on real files: each one damages files the way a crash or a bad disk would,
//! reopens the log, and checks that a torn tail is cut, an index is rebuilt, and corruption is
//! reported (naming file and position) and never served.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use logserver::storage::{Error, Log, LogConfig, NewEntry};

const HEADER: u64 = 24;
const FRAME_HEADER: u64 = 25;

fn payload(i: u64) -> Vec<u8> {
    format!("entry {i} {}", "p".repeat(20 + (i % 13) as usize)).into_bytes()
}

fn single(dir: &Path) -> LogConfig {
    LogConfig::new(dir)
}

fn small(dir: &Path) -> LogConfig {
    LogConfig {
        max_store_bytes: 600,
        ..LogConfig::new(dir)
    }
}

/// A closed log of `n` entries in a fresh directory.
fn make(cfg: impl Fn(&Path) -> LogConfig, n: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(cfg(dir.path())).unwrap();
    for i in 0..n {
        let p = payload(i);
        log.append(NewEntry {
            term: 1,
            kind: 0,
            payload: &p,
        })
        .unwrap();
    }
    log.close().unwrap();
    dir
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

/// `(position, length)` of every frame of a store file, read with the documented framing, up to
/// the first zero length field: the start of the zeros an open log preallocates (every entry
/// here has a payload). A dropped log's file ends at whatever size its zero-filling thread
/// reached, so the zeros are not walked as frames.
fn frames(store: &Path) -> Vec<(u64, u64)> {
    let bytes = std::fs::read(store).unwrap();
    let mut out = Vec::new();
    let mut pos = HEADER;
    while pos + FRAME_HEADER <= bytes.len() as u64 {
        let p = pos as usize;
        let len = u32::from_le_bytes(bytes[p..p + 4].try_into().unwrap()) as u64;
        if len == 0 {
            break;
        }
        out.push((pos, FRAME_HEADER + len));
        pos += FRAME_HEADER + len;
    }
    out
}

/// The base offset in a segment file's name.
fn base_of(path: &Path) -> u64 {
    path.file_stem().unwrap().to_str().unwrap().parse().unwrap()
}

fn set_len(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

fn patch(path: &Path, at: u64, f: impl FnOnce(&mut [u8])) {
    let mut bytes = std::fs::read(path).unwrap();
    f(&mut bytes[at as usize..]);
    std::fs::write(path, bytes).unwrap();
}

/// The store holds nothing past `pos` any more: the file ends there, or what follows is the
/// zeros the open log preallocates.
fn assert_cut_at(store: &Path, pos: u64) {
    let bytes = std::fs::read(store).unwrap();
    assert!(
        bytes.len() as u64 >= pos,
        "{} bytes, cut at {pos}",
        bytes.len()
    );
    let rest = &bytes[pos as usize..];
    assert!(
        rest.iter().all(|&b| b == 0),
        "bytes past {pos} are not cut off"
    );
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

fn assert_entries(log: &Log, range: std::ops::Range<u64>) {
    for i in range {
        assert_eq!(log.read(i).unwrap().payload, payload(i), "entry {i}");
    }
}

fn expect_corrupt(r: Result<Log, Error>) -> (PathBuf, u64) {
    match r {
        Err(Error::Corrupt { path, position, .. }) => (path, position),
        Err(e) => panic!("expected a corruption error, got {e}"),
        Ok(log) => panic!(
            "corrupt log opened: [{}, {})",
            log.first_offset(),
            log.next_offset()
        ),
    }
}

#[test]
fn tail_cut_mid_entry_is_dropped_and_the_log_goes_on() {
    for cut_into_frame in [3, 10, FRAME_HEADER + 4] {
        let dir = make(single, 20);
        let store = &files(dir.path(), "store")[0];
        let (last_pos, _) = frames(store)[19];
        set_len(store, last_pos + cut_into_frame);
        let mut log = Log::open(single(dir.path())).unwrap();
        assert_eq!(
            log.next_offset(),
            19,
            "cut {cut_into_frame} bytes into the frame"
        );
        assert_entries(&log, 0..19);
        assert_cut_at(store, last_pos);
        let p = payload(19);
        log.append(NewEntry {
            term: 2,
            kind: 0,
            payload: &p,
        })
        .unwrap();
        drop(log);
        let log = Log::open(single(dir.path())).unwrap();
        assert_eq!(log.last_entry_id(), Some((19, 2)));
        assert_entries(&log, 0..20);
    }
}

#[test]
fn a_flipped_byte_in_the_middle_of_the_store_is_corruption() {
    let dir = make(single, 20);
    let store = files(dir.path(), "store")[0].clone();
    let (pos, len) = frames(&store)[10];
    patch(&store, pos + len / 2 + FRAME_HEADER / 2, |b| b[0] ^= 0x01);
    let (path, position) = expect_corrupt(Log::open(single(dir.path())));
    assert_eq!((path, position), (store, pos));
}

#[test]
fn a_flipped_length_field_in_the_middle_is_not_taken_for_a_torn_tail() {
    let dir = make(single, 20);
    let store = files(dir.path(), "store")[0].clone();
    let (pos, _) = frames(&store)[10];
    // The frame now claims to run past the end of the file, as a torn write would.
    patch(&store, pos + 2, |b| b[0] ^= 0x40);
    let (path, position) = expect_corrupt(Log::open(single(dir.path())));
    assert_eq!((path, position), (store, pos));
}

#[test]
fn corruption_in_a_sealed_segment_is_never_served() {
    let dir = make(small, 200);
    let store = files(dir.path(), "store")[1].clone();
    let (pos, len) = frames(&store)[2];
    patch(&store, pos + len - 1, |b| b[0] ^= 0x80);
    let log = Log::open(small(dir.path())).unwrap();
    let bad = base_of(&store) + 2;
    match log.read(bad) {
        Err(Error::Corrupt { path, position, .. }) => assert_eq!((path, position), (store, pos)),
        other => panic!("corrupt entry served: {other:?}"),
    }
    assert_entries(&log, 0..bad);
    assert_entries(&log, bad + 1..200);
    let from_reader: Vec<_> = log.reader(bad - 1).collect();
    assert_eq!(
        from_reader.len(),
        2,
        "the reader stops at the corrupt entry"
    );
    assert!(matches!(from_reader[1], Err(Error::Corrupt { .. })));
}

#[test]
fn corruption_of_a_sealed_segments_last_entry_fails_the_open() {
    let dir = make(small, 200);
    let store = files(dir.path(), "store")[1].clone();
    let &(pos, len) = frames(&store).last().unwrap();
    patch(&store, pos + len - 1, |b| b[0] ^= 0x80);
    let (path, position) = expect_corrupt(Log::open(small(dir.path())));
    assert_eq!((path, position), (store, pos));
}

#[test]
fn a_deleted_index_is_rebuilt() {
    let dir = make(small, 200);
    let indexes = files(dir.path(), "index");
    let counts: Vec<u64> = files(dir.path(), "store")
        .iter()
        .map(|s| frames(s).len() as u64)
        .collect();
    std::fs::remove_file(&indexes[0]).unwrap();
    std::fs::remove_file(indexes.last().unwrap()).unwrap();
    let log = Log::open(small(dir.path())).unwrap();
    assert_eq!((log.first_offset(), log.next_offset()), (0, 200));
    assert_entries(&log, 0..200);
    assert_eq!(file_len(&indexes[0]), HEADER + 12 * counts[0]);
    log.close().unwrap();
    assert_eq!(
        file_len(indexes.last().unwrap()),
        HEADER + 12 * counts.last().unwrap()
    );
}

#[test]
fn a_zero_filled_tail_is_a_torn_tail() {
    let dir = make(single, 20);
    let store = files(dir.path(), "store")[0].clone();
    let len = file_len(&store);
    // Space the file system allocated but the crash never filled.
    OpenOptions::new()
        .append(true)
        .open(&store)
        .unwrap()
        .write_all(&[0u8; 4096])
        .unwrap();
    let log = Log::open(single(dir.path())).unwrap();
    assert_eq!(log.next_offset(), 20);
    assert_entries(&log, 0..20);
    assert_cut_at(&store, len);
    drop(log);
    // The last entry's bytes zeroed in place (file size already updated, data never written).
    let (pos, flen) = frames(&store)[19];
    patch(&store, pos, |b| b[..flen as usize].fill(0));
    let log = Log::open(single(dir.path())).unwrap();
    assert_eq!(log.next_offset(), 19);
    assert_cut_at(&store, pos);
}

#[test]
fn an_index_longer_than_the_store_is_repaired() {
    // Active segment: the store lost its last 3 entries, the index still lists them.
    let dir = make(single, 20);
    let store = files(dir.path(), "store")[0].clone();
    let index = files(dir.path(), "index")[0].clone();
    set_len(&store, frames(&store)[17].0);
    assert_eq!(file_len(&index), HEADER + 12 * 20);
    let mut log = Log::open(single(dir.path())).unwrap();
    assert_eq!(log.next_offset(), 17);
    assert_entries(&log, 0..17);
    assert!(log.read(17).is_err());
    log.append(NewEntry {
        term: 3,
        kind: 0,
        payload: b"after",
    })
    .unwrap();
    log.close().unwrap();
    assert_eq!(file_len(&index), HEADER + 12 * 18);

    // Sealed segment: extra entries appended to its index.
    let dir = make(small, 200);
    let index = files(dir.path(), "index")[0].clone();
    let len = file_len(&index);
    let mut extra = Vec::new();
    for k in 0..5u64 {
        extra.extend_from_slice(&(100 + k as u32).to_le_bytes());
        extra.extend_from_slice(&(5000 + k * 40).to_le_bytes());
    }
    OpenOptions::new()
        .append(true)
        .open(&index)
        .unwrap()
        .write_all(&extra)
        .unwrap();
    let log = Log::open(small(dir.path())).unwrap();
    assert_eq!(log.next_offset(), 200);
    assert_entries(&log, 0..200);
    assert_eq!(
        file_len(&index),
        len,
        "the index was rebuilt to its exact length"
    );
}

#[test]
fn a_short_or_scrambled_index_is_rebuilt() {
    let dir = make(small, 200);
    let indexes = files(dir.path(), "index");
    let half = HEADER + (file_len(&indexes[0]) - HEADER) / 24 * 12;
    set_len(&indexes[0], half);
    // Swap two entries of another sealed index.
    patch(&indexes[1], HEADER, |b| {
        let (a, rest) = b.split_at_mut(12);
        a.swap_with_slice(&mut rest[..12]);
    });
    // A bad header on the active segment's index.
    patch(indexes.last().unwrap(), 0, |b| b[0] = b'X');
    let log = Log::open(small(dir.path())).unwrap();
    assert_eq!(log.next_offset(), 200);
    assert_entries(&log, 0..200);
}

#[test]
fn a_bad_store_header_is_corruption() {
    let dir = make(small, 200);
    let store = files(dir.path(), "store")[1].clone();
    patch(&store, 0, |b| b[..8].copy_from_slice(b"NOTALOG!"));
    let (path, position) = expect_corrupt(Log::open(small(dir.path())));
    assert_eq!((path, position), (store, 0));
}

#[test]
fn an_interrupted_segment_creation_is_repaired() {
    let dir = make(small, 200);
    let stores = files(dir.path(), "store");
    let last = stores.last().unwrap();
    let prev_count = frames(&stores[stores.len() - 2]).len() as u64;
    let last_base = base_of(last);
    // The crash hit after the store file was created, before its header was written.
    set_len(last, 10);
    std::fs::remove_file(files(dir.path(), "index").last().unwrap()).unwrap();
    let mut log = Log::open(small(dir.path())).unwrap();
    assert_eq!(log.next_offset(), last_base);
    assert_eq!(last_base - prev_count, base_of(&stores[stores.len() - 2]));
    assert_entries(&log, 0..last_base);
    let off = log
        .append(NewEntry {
            term: 1,
            kind: 0,
            payload: b"x",
        })
        .unwrap();
    assert_eq!(off, last_base);
}

#[test]
fn an_orphan_index_is_removed() {
    let dir = make(single, 5);
    let orphan = dir.path().join("00000000000000000999.index");
    std::fs::write(&orphan, b"junk").unwrap();
    let log = Log::open(single(dir.path())).unwrap();
    assert_eq!(log.next_offset(), 5);
    assert!(!orphan.exists());
}

/// A log of `n` entries of 2 KB each, left as a crash leaves it (no close): with preallocation on,
/// its store ends in zeros.
fn crashed_with_big_entries(prealloc_bytes: u64, n: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(LogConfig {
        prealloc_bytes,
        ..single(dir.path())
    })
    .unwrap();
    for i in 0..n {
        let p = big_payload(i);
        log.append(NewEntry {
            term: 1,
            kind: 0,
            payload: &p,
        })
        .unwrap();
    }
    drop(log);
    dir
}

fn big_payload(i: u64) -> Vec<u8> {
    format!("entry {i} ").repeat(200).into_bytes()
}

/// Zeroes the first whole 512-byte sector inside frame `i`, as a crash that wrote the frame's
/// other sectors but not this one would leave it.
fn zero_a_sector_of_frame(store: &Path, i: usize) -> u64 {
    let (pos, len) = frames(store)[i];
    let sector = pos.div_ceil(512) * 512;
    assert!(sector + 512 <= pos + len);
    patch(store, sector, |b| b[..512].fill(0));
    pos
}

#[test]
fn a_torn_write_in_preallocated_space_is_cut_with_what_follows_it() {
    let dir = crashed_with_big_entries(1 << 20, 20);
    let store = files(dir.path(), "store")[0].clone();
    let pos = zero_a_sector_of_frame(&store, 15);
    let log = Log::open(single(dir.path())).unwrap();
    assert_eq!(
        log.next_offset(),
        15,
        "frames 16.. were written after the torn one"
    );
    for i in 0..15 {
        assert_eq!(log.read(i).unwrap().payload, big_payload(i));
    }
    assert_cut_at(&store, pos);
}

#[test]
fn a_never_written_frame_header_in_preallocated_space_is_a_torn_tail() {
    let dir = crashed_with_big_entries(1 << 20, 20);
    let store = files(dir.path(), "store")[0].clone();
    let (pos, _) = frames(&store)[12];
    patch(&store, pos, |b| b[..FRAME_HEADER as usize].fill(0));
    let log = Log::open(single(dir.path())).unwrap();
    assert_eq!(log.next_offset(), 12);
    assert_cut_at(&store, pos);
}

#[test]
fn a_zero_sector_is_corruption_in_a_store_that_was_not_preallocated() {
    let dir = crashed_with_big_entries(0, 20);
    let store = files(dir.path(), "store")[0].clone();
    let pos = zero_a_sector_of_frame(&store, 15);
    let (path, position) = expect_corrupt(Log::open(single(dir.path())));
    assert_eq!((path, position), (store, pos));
}

#[test]
fn a_flipped_byte_in_preallocated_space_is_still_corruption() {
    let dir = crashed_with_big_entries(1 << 20, 20);
    let store = files(dir.path(), "store")[0].clone();
    let (pos, len) = frames(&store)[15];
    patch(&store, pos + len / 2, |b| b[0] ^= 0x01);
    let (path, position) = expect_corrupt(Log::open(single(dir.path())));
    assert_eq!((path, position), (store, pos));
}
