//! Behaviour of the storage engine on real files: appends, reads, rollover, reopen,
//! truncations, durability settings and configuration errors.

use std::path::{Path, PathBuf};

use logserver::storage::{Durability, Entry, Error, Log, LogConfig, NewEntry};

fn payload(i: u64) -> Vec<u8> {
    format!("record-{i}-{}", "x".repeat((i % 37) as usize)).into_bytes()
}

fn small(dir: &Path) -> LogConfig {
    LogConfig {
        max_store_bytes: 512,
        max_index_bytes: 24 + 12 * 16,
        ..LogConfig::new(dir)
    }
}

/// Appends entries `0..n` one by one with term `i / 10` and kind `i % 3`.
fn fill(log: &mut Log, n: u64) {
    fill_from(log, 0, n)
}

/// Appends entries `from..to` like [`fill`].
fn fill_from(log: &mut Log, from: u64, to: u64) {
    for i in from..to {
        let p = payload(i);
        let off = log
            .append(NewEntry {
                term: i / 10,
                kind: (i % 3) as u8,
                payload: &p,
            })
            .unwrap();
        assert_eq!(off, log.next_offset() - 1);
    }
}

fn check_entry(log: &Log, base: u64, i: u64) {
    let e = log.read(base + i).unwrap();
    let want = Entry {
        offset: base + i,
        term: i / 10,
        kind: (i % 3) as u8,
        payload: payload(i),
    };
    assert_eq!(e, want);
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

#[test]
fn empty_log_reports_its_range_and_refuses_reads() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(LogConfig {
        initial_offset: 7,
        ..LogConfig::new(dir.path())
    })
    .unwrap();
    assert_eq!((log.first_offset(), log.next_offset()), (7, 7));
    assert_eq!(log.last_entry_id(), None);
    assert!(matches!(
        log.read(7),
        Err(Error::OutOfRange {
            offset: 7,
            first: 7,
            next: 7
        })
    ));
    assert_eq!(log.reader(7).count(), 0);
    assert_eq!(files(dir.path(), "store").len(), 1);
}

#[test]
fn append_read_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(LogConfig::new(dir.path())).unwrap();
    fill(&mut log, 100);
    assert_eq!(log.last_entry_id(), Some((99, 9)));
    for i in 0..100 {
        check_entry(&log, 0, i);
    }
    log.close().unwrap();
    let log = Log::open(LogConfig::new(dir.path())).unwrap();
    assert_eq!((log.first_offset(), log.next_offset()), (0, 100));
    assert_eq!(log.last_entry_id(), Some((99, 9)));
    for i in 0..100 {
        check_entry(&log, 0, i);
    }
    let err = log.read(100).unwrap_err();
    assert!(err.to_string().contains("[0, 100)"), "{err}");
}

#[test]
fn empty_payloads_and_initial_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(LogConfig {
        initial_offset: 1000,
        ..small(dir.path())
    })
    .unwrap();
    for _ in 0..50 {
        log.append(NewEntry {
            term: 1,
            kind: 0,
            payload: &[],
        })
        .unwrap();
    }
    assert_eq!((log.first_offset(), log.next_offset()), (1000, 1050));
    assert!(log.read(1049).unwrap().payload.is_empty());
    drop(log);
    let log = Log::open(small(dir.path())).unwrap();
    assert_eq!((log.first_offset(), log.next_offset()), (1000, 1050));
}

#[test]
fn rolls_over_at_store_and_index_limits() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(small(dir.path())).unwrap();
    fill(&mut log, 200);
    let stores = files(dir.path(), "store");
    assert!(stores.len() > 10, "only {} segments", stores.len());
    // Sealed segments end with their last frame; the active one is preallocated beyond.
    let (active, sealed) = stores.split_last().unwrap();
    for s in sealed {
        assert!(
            std::fs::metadata(s).unwrap().len() <= 512,
            "{} too big",
            s.display()
        );
    }
    assert!(std::fs::metadata(active).unwrap().len() > 512);
    // Index-bound rollover: tiny entries, at most 16 per segment.
    let dir2 = tempfile::tempdir().unwrap();
    let mut log2 = Log::open(small(dir2.path())).unwrap();
    let batch = vec![
        NewEntry {
            term: 1,
            kind: 0,
            payload: b"",
        };
        64
    ];
    assert_eq!(log2.append_batch(batch).unwrap(), 0..64);
    assert_eq!(files(dir2.path(), "store").len(), 4);
    log.close().unwrap();
    let log = Log::open(small(dir.path())).unwrap();
    assert_eq!(log.next_offset(), 200);
    for i in 0..200 {
        check_entry(&log, 0, i);
    }
    // The segment file names carry the base offsets, in order.
    let names: Vec<String> = files(dir.path(), "store")
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names[0], "00000000000000000000.store");
}

#[test]
fn batches_span_segments_and_return_their_range() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(small(dir.path())).unwrap();
    let payloads: Vec<Vec<u8>> = (0..100).map(payload).collect();
    let range = log
        .append_batch(payloads.iter().enumerate().map(|(i, p)| NewEntry {
            term: i as u64 / 10,
            kind: (i % 3) as u8,
            payload: p,
        }))
        .unwrap();
    assert_eq!(range, 0..100);
    assert_eq!(log.append_batch([]).unwrap(), 100..100);
    drop(log);
    let log = Log::open(small(dir.path())).unwrap();
    for i in 0..100 {
        check_entry(&log, 0, i);
    }
}

#[test]
fn an_entry_larger_than_a_segment_gets_a_segment_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(small(dir.path())).unwrap();
    fill(&mut log, 3);
    let big = vec![0xab; 5000];
    let off = log
        .append(NewEntry {
            term: 9,
            kind: 1,
            payload: &big,
        })
        .unwrap();
    fill(&mut log, 1);
    let stores = files(dir.path(), "store");
    assert_eq!(stores.len(), 3);
    assert!(std::fs::metadata(&stores[1]).unwrap().len() > 5000);
    drop(log);
    let log = Log::open(small(dir.path())).unwrap();
    assert_eq!(log.read(off).unwrap().payload, big);
    assert_eq!(log.read(off + 1).unwrap().payload, payload(0));
    // Larger than the reader's read-ahead chunk, too.
    let mut log = log;
    let huge = vec![0xcd; 600 << 10];
    let off = log
        .append(NewEntry {
            term: 9,
            kind: 1,
            payload: &huge,
        })
        .unwrap();
    let read: Vec<_> = log.reader(0).map(|e| e.unwrap()).collect();
    assert_eq!(read.len() as u64, off + 1);
    assert_eq!(read[off as usize].payload, huge);
    assert_eq!(read[3].payload, big);
}

#[test]
fn reader_iterates_to_the_end_and_can_resume() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(small(dir.path())).unwrap();
    fill(&mut log, 60);
    let got: Vec<u64> = log.reader(25).map(|e| e.unwrap().offset).collect();
    assert_eq!(got, (25..60).collect::<Vec<_>>());
    let mut r = log.reader(55);
    assert_eq!(r.by_ref().count(), 5);
    assert_eq!(r.position(), 60);
    // A tailing consumer comes back later from where it stopped.
    let p = payload(60);
    log.append(NewEntry {
        term: 6,
        kind: 0,
        payload: &p,
    })
    .unwrap();
    assert_eq!(log.reader(60).next().unwrap().unwrap().payload, p);
    assert!(log.reader(61).next().is_none());
}

#[test]
fn truncate_prefix_drops_whole_segments_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(small(dir.path())).unwrap();
    fill(&mut log, 200);
    let before = files(dir.path(), "store").len();
    log.truncate_prefix(100).unwrap();
    let first = log.first_offset();
    assert!(first <= 100 && first > 50, "first offset {first}");
    assert!(files(dir.path(), "store").len() < before);
    assert_eq!(
        files(dir.path(), "index").len(),
        files(dir.path(), "store").len()
    );
    match log.read(first - 1) {
        Err(Error::OutOfRange { first: f, next, .. }) => assert_eq!((f, next), (first, 200)),
        other => panic!("read of a purged offset gave {other:?}"),
    }
    for i in first..200 {
        check_entry(&log, 0, i);
    }
    drop(log);
    let mut log = Log::open(small(dir.path())).unwrap();
    assert_eq!((log.first_offset(), log.next_offset()), (first, 200));
    // Below the first offset, or within the active segment: nothing happens.
    log.truncate_prefix(0).unwrap();
    log.truncate_prefix(199).unwrap();
    assert_eq!(log.next_offset(), 200);
    assert!(log.first_offset() <= 199);
}

#[test]
fn truncate_prefix_past_the_end_restarts_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(small(dir.path())).unwrap();
    fill(&mut log, 40);
    log.truncate_prefix(500).unwrap();
    assert_eq!((log.first_offset(), log.next_offset()), (500, 500));
    assert_eq!(log.last_entry_id(), None);
    assert_eq!(files(dir.path(), "store").len(), 1);
    drop(log);
    let mut log = Log::open(small(dir.path())).unwrap();
    assert_eq!((log.first_offset(), log.next_offset()), (500, 500));
    let p = payload(0);
    let off = log
        .append(NewEntry {
            term: 3,
            kind: 0,
            payload: &p,
        })
        .unwrap();
    assert_eq!(off, 500);
    assert_eq!(log.last_entry_id(), Some((500, 3)));
}

#[test]
fn truncate_suffix_removes_the_tail_durably() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(small(dir.path())).unwrap();
    fill(&mut log, 200);
    log.truncate_suffix(150).unwrap();
    assert_eq!(log.next_offset(), 150);
    assert_eq!(log.last_entry_id(), Some((149, 14)));
    assert!(log.read(150).is_err());
    // Within the active segment, then down to a segment boundary, then a no-op.
    log.truncate_suffix(148).unwrap();
    log.truncate_suffix(1000).unwrap();
    assert_eq!(log.next_offset(), 148);
    // Appends continue at the cut, with new contents.
    log.append(NewEntry {
        term: 20,
        kind: 2,
        payload: b"new",
    })
    .unwrap();
    drop(log); // no close: durable on return (`Log` has no `Drop` that syncs)
    let mut log = Log::open(small(dir.path())).unwrap();
    assert_eq!(log.next_offset(), 149);
    assert_eq!(log.read(148).unwrap().payload, b"new");
    assert_eq!(log.last_entry_id(), Some((148, 20)));
    for i in 0..148 {
        check_entry(&log, 0, i);
    }
    log.truncate_suffix(0).unwrap();
    assert_eq!((log.first_offset(), log.next_offset()), (0, 0));
    assert_eq!(log.last_entry_id(), None);
    assert_eq!(files(dir.path(), "store").len(), 1);
    drop(log);
    let log = Log::open(small(dir.path())).unwrap();
    assert_eq!(log.next_offset(), 0);
}

#[test]
fn truncate_suffix_below_the_first_offset_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(small(dir.path())).unwrap();
    fill(&mut log, 100);
    log.truncate_prefix(60).unwrap();
    let first = log.first_offset();
    assert!(matches!(
        log.truncate_suffix(first - 1),
        Err(Error::OutOfRange { .. })
    ));
    assert_eq!(log.next_offset(), 100);
}

#[test]
fn abandoned_without_close_keeps_every_synced_entry() {
    for durability in [
        Durability::EveryBatch,
        Durability::Never,
        Durability::Interval(std::time::Duration::from_millis(1)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            durability,
            ..small(dir.path())
        };
        let mut log = Log::open(cfg.clone()).unwrap();
        fill(&mut log, 150);
        log.sync().unwrap();
        // A crash: no close. `Log` has no `Drop` and its files do not sync on close, so the
        // active index stays preallocated and unsynced, as a killed process leaves it.
        drop(log);
        let log = Log::open(cfg).unwrap();
        assert_eq!(log.next_offset(), 150, "{durability:?}");
        for i in 0..150 {
            check_entry(&log, 0, i);
        }
    }
}

#[test]
fn bad_configs_are_refused_with_the_field_name() {
    let dir = tempfile::tempdir().unwrap();
    for cfg in [
        LogConfig {
            max_store_bytes: 10,
            ..LogConfig::new(dir.path())
        },
        LogConfig {
            max_index_bytes: 30,
            ..LogConfig::new(dir.path())
        },
    ] {
        match Log::open(cfg) {
            Err(Error::Config { field, .. }) => assert!(field.starts_with("max_")),
            other => panic!("expected a config error, got {other:?}"),
        }
    }
}

#[test]
fn log_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Log>();
}

#[test]
fn interrupted_truncate_prefix_is_finished_on_open() {
    // The state a crash leaves in the middle of `truncate_prefix(500)` past the end: the old
    // segments plus the new, empty restart segment.
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(small(dir.path())).unwrap();
    fill(&mut log, 40);
    log.close().unwrap();
    let other = tempfile::tempdir().unwrap();
    let restart = LogConfig {
        initial_offset: 500,
        ..small(other.path())
    };
    Log::open(restart).unwrap().close().unwrap();
    for f in files(other.path(), "store")
        .into_iter()
        .chain(files(other.path(), "index"))
    {
        std::fs::copy(&f, dir.path().join(f.file_name().unwrap())).unwrap();
    }
    let log = Log::open(small(dir.path())).unwrap();
    assert_eq!((log.first_offset(), log.next_offset()), (500, 500));
    assert_eq!(files(dir.path(), "store").len(), 1);
}

#[test]
fn a_missing_middle_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(small(dir.path())).unwrap();
    fill(&mut log, 200);
    log.close().unwrap();
    let stores = files(dir.path(), "store");
    std::fs::remove_file(&stores[2]).unwrap();
    match Log::open(small(dir.path())) {
        Err(Error::Corrupt { path, .. }) => assert_eq!(path, stores[3]),
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn a_second_open_of_one_directory_is_refused_until_the_first_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(LogConfig::new(dir.path())).unwrap();
    match Log::open(LogConfig::new(dir.path())) {
        Err(Error::Locked { path }) => assert_eq!(path, dir.path().join("LOCK")),
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(log);
    Log::open(LogConfig::new(dir.path())).expect("the lock is released with the first Log");
}

/// Waits (polling, with the tests' usual deadline) until `check` holds: work done by a storage
/// thread, which the test cannot wait on directly. Fails with `check`'s last complaint.
fn eventually(what: &str, check: impl Fn() -> Result<(), String>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(proglog_testkit::wait_for(
        what,
        proglog_testkit::DEADLINE,
        || {
            let r = check();
            async move { r.map(Some).map_err(anyhow::Error::msg) }
        },
    ))
    .unwrap();
}

/// Bytes and zero tail of a store file.
fn zero_tail(path: &Path) -> (u64, u64) {
    let bytes = std::fs::read(path).unwrap();
    let zeros = bytes.iter().rev().take_while(|&&b| b == 0).count();
    (bytes.len() as u64, zeros as u64)
}

#[test]
fn the_active_store_is_zero_filled_ahead_and_cut_exactly_when_closed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        prealloc_bytes: 64 << 10,
        ..LogConfig::new(dir.path())
    };
    let mut log = Log::open(cfg.clone()).unwrap();
    let store = files(dir.path(), "store").remove(0);
    for n in [10, 100, 2000] {
        let next = log.next_offset();
        fill_from(&mut log, next, n);
        // Whenever an append returns, the file ends with the guard's zeros at least.
        let (_, zeros) = zero_tail(&store);
        assert!(zeros >= 4096, "{zeros} zero bytes after {n} entries");
    }
    // The thread keeps up to a chunk ahead, in whole chunks.
    eventually("the zero-fill a chunk ahead", || {
        let (len, zeros) = zero_tail(&store);
        (len % (64 << 10) == 0 && zeros >= 32 << 10)
            .then_some(())
            .ok_or_else(|| format!("{len} bytes, {zeros} zeros"))
    });
    log.close().unwrap();
    let (len, zeros) = zero_tail(&store);
    assert_eq!(
        zeros, 0,
        "a closed store ends with its last frame ({len} bytes)"
    );
    // A crash (no close) leaves the zeros; opening cuts them and appends go on where data ends.
    let mut log = Log::open(cfg.clone()).unwrap();
    assert_eq!(log.next_offset(), 2000);
    fill_from(&mut log, 2000, 2010);
    drop(log);
    assert!(zero_tail(&store).1 >= 4096);
    let log = Log::open(cfg).unwrap();
    assert_eq!(log.next_offset(), 2010);
    for i in 0..2010 {
        check_entry(&log, 0, i);
    }
}

#[test]
fn preallocation_off_writes_no_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(LogConfig {
        prealloc_bytes: 0,
        ..LogConfig::new(dir.path())
    })
    .unwrap();
    fill(&mut log, 10);
    let store = files(dir.path(), "store").remove(0);
    assert_eq!(zero_tail(&store).1, 0);
}

/// Bytes of `path` in the page cache (`fincore` of util-linux).
fn cached_bytes(path: &Path) -> u64 {
    let out = std::process::Command::new("fincore")
        .args(["--bytes", "--noheadings", "--raw", "--output", "RES"])
        .arg(path)
        .output()
        .expect("fincore (util-linux) runs");
    assert!(
        out.status.success(),
        "fincore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let res = String::from_utf8_lossy(&out.stdout);
    res.trim()
        .parse()
        .unwrap_or_else(|_| panic!("fincore printed {res:?}"))
}

#[test]
fn frames_far_behind_the_writer_leave_the_page_cache() {
    // NB: on a real disk (Cargo's target directory): tmpfs pages cannot leave the cache.
    let root = env!("CARGO_TARGET_TMPDIR");
    let value = vec![7u8; 64 << 10];
    for window in [8u64 << 20, 0] {
        let dir = tempfile::Builder::new()
            .prefix("cache-window")
            .tempdir_in(root)
            .unwrap();
        let mut log = Log::open(LogConfig {
            prealloc_bytes: 1 << 20,
            cache_window_bytes: window,
            ..LogConfig::new(dir.path())
        })
        .unwrap();
        // 48 MiB in 768 appends, each fsynced (the default durability).
        for i in 0..768u64 {
            log.append(NewEntry {
                term: 1,
                kind: 0,
                payload: &value,
            })
            .unwrap();
            assert_eq!(log.next_offset(), i + 1);
        }
        let store = files(dir.path(), "store").remove(0);
        if window == 0 {
            // The control: without a window the kernel keeps what was written.
            let cached = cached_bytes(&store);
            assert!(cached >= 40 << 20, "{cached} bytes cached with no window");
        } else {
            // The preallocation thread drops in 4 MiB steps, behind the writer's back.
            let limit = window + (8 << 20);
            eventually("frames to leave the page cache", || {
                let cached = cached_bytes(&store);
                (cached <= limit).then_some(()).ok_or_else(|| {
                    format!("{cached} bytes of 48 MiB still cached with an 8 MiB window")
                })
            });
        }
        // Frames out of the cache read back from the disk.
        for offset in [0, 383, 767] {
            assert_eq!(log.read(offset).unwrap().payload, value, "offset {offset}");
        }
        log.close().unwrap();
    }
}
