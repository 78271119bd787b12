//! Storage engine benchmarks (`cargo bench -p logserver --bench storage`, or `make bench`).
//!
//! - `append/log/<value>B/batch<n>`: `Log::append_batch` of n values, one fsync per batch
//!   (`Durability::EveryBatch`), beside `append/raw/...`: the same payload bytes written with one
//!   plain `std::fs::File::write_all` and one `sync_data` per batch, into a file on the same disk.
//! - `read/sequential`: a `Reader` over 256 B entries.
//! - `read/random/<n>entries`: `Log::read` at seeded random offsets in two log sizes; the cost
//!   should not grow with the log (one index lookup, one positional read).
//!
//! Files go under `PROGLOG_BENCH_DIR`, else Cargo's `CARGO_TARGET_TMPDIR` (inside the target
//! directory, on a real disk here; not tmpfs, or fsync would be free). At the end a table gives
//! entries/s, MB/s and the log/raw ratio from a paired run (log and raw batches alternating, so
//! drifting fsync latency hits both alike), then the read figures.

use std::collections::BTreeMap;
use std::fs::File;
use std::hint::black_box;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use logserver::storage::{Durability, Log, LogConfig, NewEntry};
use rand::{rngs::StdRng, Rng, SeedableRng};

const VALUE_SIZES: [usize; 4] = [64, 256, 1024, 16 * 1024];
const BATCHES: [usize; 3] = [1, 16, 256];
const RANDOM_LOG_SIZES: [u64; 2] = [100_000, 400_000];

/// Measured (iterations, time) per read benchmark id, for the summary.
static MEASURED: Mutex<BTreeMap<String, (u64, Duration)>> = Mutex::new(BTreeMap::new());

fn record(id: &str, iters: u64, took: Duration) {
    let mut m = MEASURED.lock().unwrap();
    let e = m.entry(id.to_string()).or_default();
    e.0 += iters;
    e.1 += took;
}

fn bench_dir() -> tempfile::TempDir {
    let root = std::env::var_os("PROGLOG_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&root).unwrap();
    tempfile::Builder::new()
        .prefix("proglog-bench-")
        .tempdir_in(root)
        .unwrap()
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(1000))
        .without_plots()
        .configure_from_args()
}

fn values(size: usize, n: usize) -> Vec<Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(7);
    (0..n)
        .map(|_| (0..size).map(|_| rng.random()).collect())
        .collect()
}

fn append(c: &mut Criterion) {
    let mut g = c.benchmark_group("append");
    for size in VALUE_SIZES {
        for batch in BATCHES {
            let vals = values(size, batch);
            g.throughput(Throughput::Bytes((size * batch) as u64));
            let param = format!("{size}B/batch{batch}");

            let dir = bench_dir();
            let mut log = Log::open(LogConfig {
                durability: Durability::EveryBatch,
                ..LogConfig::new(dir.path())
            })
            .unwrap();
            g.bench_function(BenchmarkId::new("log", &param), |b| {
                b.iter(|| {
                    let entries = vals.iter().map(|v| NewEntry {
                        term: 1,
                        kind: 0,
                        payload: v,
                    });
                    black_box(log.append_batch(entries).unwrap())
                })
            });
            log.close().unwrap();
            drop(dir);

            let dir = bench_dir();
            let mut file = File::create(dir.path().join("raw")).unwrap();
            let bytes: Vec<u8> = vals.concat();
            g.bench_function(BenchmarkId::new("raw", &param), |b| {
                b.iter(|| {
                    file.write_all(&bytes).unwrap();
                    file.sync_data().unwrap();
                })
            });
        }
    }
    g.finish();
}

/// A synced log of `n` 256 B entries in 8 MiB segments.
fn filled_log(n: u64) -> (tempfile::TempDir, Log) {
    let dir = bench_dir();
    let mut log = Log::open(LogConfig {
        max_store_bytes: 8 << 20,
        durability: Durability::Never,
        ..LogConfig::new(dir.path())
    })
    .unwrap();
    let vals = values(256, 1024);
    while log.next_offset() < n {
        let k = (n - log.next_offset()).min(1024) as usize;
        log.append_batch(vals[..k].iter().map(|v| NewEntry {
            term: 1,
            kind: 0,
            payload: v,
        }))
        .unwrap();
    }
    log.sync().unwrap();
    (dir, log)
}

fn read(c: &mut Criterion) {
    let mut g = c.benchmark_group("read");
    let (_dir, log) = filled_log(100_000);
    const SCAN: u64 = 10_000;
    g.throughput(Throughput::Bytes(SCAN * 256));
    g.bench_function("sequential/256B", |b| {
        let mut from = 0;
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                for e in log.reader(from).take(SCAN as usize) {
                    black_box(e.unwrap());
                }
                from = (from + SCAN) % (100_000 - SCAN);
            }
            let took = start.elapsed();
            record("read/sequential/256B", iters * SCAN, took);
            took
        })
    });
    drop(log);

    g.throughput(Throughput::Elements(1));
    for n in RANDOM_LOG_SIZES {
        let (_dir, log) = filled_log(n);
        let mut rng = StdRng::seed_from_u64(n);
        let id = format!("read/random/{n}entries");
        g.bench_function(BenchmarkId::new("random", format!("{n}entries")), |b| {
            b.iter_custom(|iters| {
                let offsets: Vec<u64> = (0..iters).map(|_| rng.random_range(0..n)).collect();
                let start = Instant::now();
                for &o in &offsets {
                    black_box(log.read(o).unwrap());
                }
                let took = start.elapsed();
                record(&id, iters, took);
                took
            })
        });
    }
    g.finish();
}

/// Log and raw reference measured in alternation, one batch each in turn, so both see the same
/// disk (fsync latency drifts with whatever else the machine does). Returns seconds per batch.
fn paired(size: usize, batch: usize, budget: Duration) -> (f64, f64) {
    let vals = values(size, batch);
    let bytes = vals.concat();
    let dir = bench_dir();
    let mut log = Log::open(LogConfig::new(dir.path().join("log"))).unwrap();
    let mut raw = File::create(dir.path().join("raw")).unwrap();
    let (mut t_log, mut t_raw, mut rounds) = (Duration::ZERO, Duration::ZERO, 0u32);
    let deadline = Instant::now() + budget;
    while Instant::now() < deadline || rounds < 5 {
        // Alternate who goes first, so neither always follows the other's fsync.
        for log_turn in [rounds % 2 == 0, rounds % 2 == 1] {
            let start = Instant::now();
            if log_turn {
                log.append_batch(vals.iter().map(|v| NewEntry {
                    term: 1,
                    kind: 0,
                    payload: v,
                }))
                .unwrap();
                t_log += start.elapsed();
            } else {
                raw.write_all(&bytes).unwrap();
                raw.sync_data().unwrap();
                t_raw += start.elapsed();
            }
        }
        rounds += 1;
    }
    log.close().unwrap();
    let n = f64::from(rounds);
    (t_log.as_secs_f64() / n, t_raw.as_secs_f64() / n)
}

fn summary() {
    println!(
        "\nstorage summary: append with one fsync per batch, log and raw reference alternating"
    );
    println!(
        "{:<18} {:>13} {:>10} {:>13} {:>10} {:>8}",
        "value/batch", "log entries/s", "log MB/s", "raw entries/s", "raw MB/s", "log/raw"
    );
    for size in VALUE_SIZES {
        for batch in BATCHES {
            // The target case (256 B values in batches of 256) gets a longer run.
            let budget = if (size, batch) == (256, 256) {
                3000
            } else {
                700
            };
            let (log, raw) = paired(size, batch, Duration::from_millis(budget));
            let mb = |t: f64| (size * batch) as f64 / t / 1e6;
            let eps = |t: f64| batch as f64 / t;
            println!(
                "{:<18} {:>13.0} {:>10.1} {:>13.0} {:>10.1} {:>7.0}%",
                format!("{size}B/batch{batch}"),
                eps(log),
                mb(log),
                eps(raw),
                mb(raw),
                100.0 * mb(log) / mb(raw)
            );
        }
    }
    let m = MEASURED.lock().unwrap();
    let per_iter = |id: &str| m.get(id).map(|(n, d)| d.as_secs_f64() / *n as f64);
    if let Some(t) = per_iter("read/sequential/256B") {
        println!(
            "read/sequential/256B: {:.0} entries/s, {:.1} MB/s",
            1.0 / t,
            256.0 / t / 1e6
        );
    }
    for n in RANDOM_LOG_SIZES {
        if let Some(t) = per_iter(&format!("read/random/{n}entries")) {
            println!("read/random over {n} entries: {:.2} us per read", t * 1e6);
        }
    }
}

fn main() {
    let mut c = config();
    append(&mut c);
    read(&mut c);
    c.final_summary();
    summary();
}
