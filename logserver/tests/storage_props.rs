//! Property test: random appends, batches, reads, reader scans, reopens (with and without close),
//! and truncations on real files with tiny segments, checked against an in-memory model.

use std::path::Path;

use logserver::storage::{Durability, Error, Log, LogConfig, NewEntry};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Append {
        len: usize,
        kind: u8,
        new_term: bool,
    },
    Batch(Vec<usize>),
    Read(u16),
    Scan(u16),
    Reopen,
    Crash,
    Sync,
    TruncatePrefix(u16),
    TruncateSuffix(u16),
    /// Close, cut this many bytes off the last store file (a torn write), reopen.
    TearTail(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..150, any::<u8>(), any::<bool>())
            .prop_map(|(len, kind, new_term)| Op::Append { len, kind, new_term }),
        3 => prop::collection::vec(0usize..90, 0..12).prop_map(Op::Batch),
        4 => any::<u16>().prop_map(Op::Read),
        1 => any::<u16>().prop_map(Op::Scan),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
        1 => Just(Op::Sync),
        1 => any::<u16>().prop_map(Op::TruncatePrefix),
        1 => any::<u16>().prop_map(Op::TruncateSuffix),
        1 => (1u16..200).prop_map(Op::TearTail),
    ]
}

fn durability() -> impl Strategy<Value = Durability> {
    prop_oneof![
        Just(Durability::EveryBatch),
        Just(Durability::Never),
        Just(Durability::Interval(std::time::Duration::from_micros(200))),
    ]
}

/// Payload bytes that depend on the offset, so a read of the wrong entry is noticed.
fn payload(offset: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (offset.wrapping_mul(31) as usize + i * 7) as u8)
        .collect()
}

/// The expected log: entries `[first, first + entries.len())` as (term, kind, payload).
#[derive(Debug, Default)]
struct Model {
    first: u64,
    entries: Vec<(u64, u8, Vec<u8>)>,
    term: u64,
}

impl Model {
    fn next(&self) -> u64 {
        self.first + self.entries.len() as u64
    }

    /// An offset from a little below the first to a little past the end.
    fn pick(&self, sel: u16) -> u64 {
        let span = self.entries.len() as u64 + 4;
        (self.first + u64::from(sel) % span).saturating_sub(2)
    }
}

fn check_bounds(log: &Log, m: &Model) {
    assert_eq!((log.first_offset(), log.next_offset()), (m.first, m.next()));
    let last = m.entries.last().map(|(term, _, _)| (m.next() - 1, *term));
    assert_eq!(log.last_entry_id(), last);
}

fn check_read(log: &Log, m: &Model, offset: u64) {
    match log.read(offset) {
        Ok(e) => {
            let (term, kind, ref p) = m.entries[(offset - m.first) as usize];
            assert_eq!(
                (e.offset, e.term, e.kind, &e.payload),
                (offset, term, kind, p)
            );
        }
        Err(Error::OutOfRange { first, next, .. }) => {
            assert!(offset < m.first || offset >= m.next());
            assert_eq!((first, next), (m.first, m.next()));
        }
        Err(e) => panic!("read {offset}: {e}"),
    }
}

/// Cuts up to `cut` bytes (never the header) off the last store file and drops from the model
/// every entry whose frame lost a byte.
fn tear_tail(dir: &Path, m: &mut Model, cut: u64) {
    let last = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "store"))
        .max()
        .unwrap();
    let base: u64 = last.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    let len = std::fs::metadata(&last).unwrap().len();
    let new_len = len - cut.min(len - 24);
    let file = std::fs::OpenOptions::new().write(true).open(&last).unwrap();
    file.set_len(new_len).unwrap();
    let mut end = len;
    while m.next() > base && end > new_len {
        let (_, _, p) = m.entries.pop().unwrap();
        end -= 25 + p.len() as u64;
    }
}

fn run(dir: &Path, cfg: LogConfig, ops: Vec<Op>) {
    let mut log = Some(Log::open(cfg.clone()).unwrap());
    let mut m = Model {
        first: cfg.initial_offset,
        ..Model::default()
    };
    for op in ops {
        let l = log.as_mut().unwrap();
        match op {
            Op::Append {
                len,
                kind,
                new_term,
            } => {
                m.term += u64::from(new_term);
                let p = payload(m.next(), len);
                let off = l
                    .append(NewEntry {
                        term: m.term,
                        kind,
                        payload: &p,
                    })
                    .unwrap();
                assert_eq!(off, m.next());
                m.entries.push((m.term, kind, p));
            }
            Op::Batch(lens) => {
                let start = m.next();
                let ps: Vec<Vec<u8>> = lens
                    .iter()
                    .enumerate()
                    .map(|(i, &len)| payload(start + i as u64, len))
                    .collect();
                let term = m.term;
                let range = l
                    .append_batch(ps.iter().map(|p| NewEntry {
                        term,
                        kind: 7,
                        payload: p,
                    }))
                    .unwrap();
                assert_eq!(range, start..start + ps.len() as u64);
                m.entries.extend(ps.into_iter().map(|p| (term, 7, p)));
            }
            Op::Read(sel) => check_read(l, &m, m.pick(sel)),
            Op::Scan(sel) => {
                let from = m.pick(sel);
                let got: Vec<_> = l.reader(from).collect();
                if from < m.first {
                    assert!(matches!(got[..], [Err(Error::OutOfRange { .. })]));
                } else {
                    assert_eq!(got.len() as u64, m.next().saturating_sub(from));
                    for (i, e) in got.into_iter().enumerate() {
                        let e = e.unwrap();
                        assert_eq!(e.offset, from + i as u64);
                        assert_eq!(e.payload, m.entries[(e.offset - m.first) as usize].2);
                    }
                }
            }
            Op::Reopen => {
                log.take().unwrap().close().unwrap();
                log = Some(Log::open(cfg.clone()).unwrap());
            }
            Op::Crash => {
                let mut l = log.take().unwrap();
                l.sync().unwrap();
                // NB: `Log` has no `Drop` and none of its files sync on close, so dropping it
                // leaves what a killed process leaves; unlike `mem::forget` it frees the lock.
                drop(l);
                log = Some(Log::open(cfg.clone()).unwrap());
            }
            Op::Sync => l.sync().unwrap(),
            Op::TearTail(cut) => {
                log.take().unwrap().close().unwrap();
                tear_tail(dir, &mut m, u64::from(cut));
                log = Some(Log::open(cfg.clone()).unwrap());
            }
            Op::TruncatePrefix(sel) => {
                let below = m.pick(sel);
                l.truncate_prefix(below).unwrap();
                if below >= m.next() {
                    m.entries.clear();
                    m.first = below;
                } else {
                    // Whole segments only: the new first offset is between the old and `below`.
                    let first = l.first_offset();
                    assert!(first >= m.first.min(below) && first <= below.max(m.first));
                    m.entries.drain(..(first - m.first) as usize);
                    m.first = first;
                }
            }
            Op::TruncateSuffix(sel) => {
                let from = m.pick(sel);
                let r = l.truncate_suffix(from);
                if from < m.first {
                    assert!(matches!(r, Err(Error::OutOfRange { .. })), "{r:?}");
                } else {
                    r.unwrap();
                    m.entries.truncate((from - m.first) as usize);
                }
            }
        }
        check_bounds(log.as_ref().unwrap(), &m);
    }
    // Finally every entry must read back, after one more reopen.
    log.take().unwrap().close().unwrap();
    let log = Log::open(cfg).unwrap();
    check_bounds(&log, &m);
    for offset in m.first..m.next() {
        check_read(&log, &m, offset);
    }
    let _ = dir;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model(
        ops in prop::collection::vec(op(), 1..80),
        max_store_bytes in 60u64..500,
        index_slots in 1u64..8,
        initial_offset in 0u64..3,
        durability in durability(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            max_store_bytes,
            max_index_bytes: 24 + 12 * index_slots,
            durability,
            initial_offset,
            ..LogConfig::new(dir.path())
        };
        run(dir.path(), cfg, ops);
    }
}
