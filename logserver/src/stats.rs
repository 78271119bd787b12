//! Process-wide counters of the write path, for profiling group commit: fsyncs and their time,
//! log-store appends (entries and records per call), Raft writes, AppendEntries received, and
//! client produce calls. A member logs their rates every [`REPORT_EVERY`] while it writes
//! ([`report`]). Counters only; nothing here changes behaviour.
//!
//! NB: process-wide, so members started in one test process share them; a `logserver` process
//! runs one member and its figures are that member's.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// How often [`report`] logs.
pub const REPORT_EVERY: Duration = Duration::from_secs(5);

/// One counter set.
#[derive(Debug, Default)]
pub struct Counters {
    /// fsyncs of appended data.
    pub fsyncs: AtomicU64,
    /// Time spent in those fsyncs, microseconds.
    pub fsync_us: AtomicU64,
    /// `append` calls on the Raft log store.
    pub appends: AtomicU64,
    /// Raft entries stored by those calls.
    pub entries: AtomicU64,
    /// Records (of normal entries) stored by those calls.
    pub records: AtomicU64,
    /// Raft writes submitted by the leader (one Raft entry each).
    pub raft_writes: AtomicU64,
    /// AppendEntries RPCs received from a leader (with entries).
    pub append_rpcs: AtomicU64,
    /// AppendEntries RPCs received without entries (heartbeats, commit index updates).
    pub empty_append_rpcs: AtomicU64,
    /// Client produce calls (Produce, ProduceBatch, each ProduceStream message).
    pub produce_calls: AtomicU64,
    /// Empty AppendEntries the leader answered itself (commit notices, see `raft::notice`).
    pub answered_locally: AtomicU64,
    /// Heartbeats sent because the leader's fsync caught up after a capped commit index.
    pub capped_resends: AtomicU64,
    /// AppendEntries with entries this member sent as leader, and their round trips in
    /// microseconds (send to answer, all followers together).
    pub append_rpcs_sent: AtomicU64,
    pub append_rpc_us: AtomicU64,
    /// Time this member spent handling AppendEntries with entries (decode to answer), us.
    pub append_handle_us: AtomicU64,
    /// AppendEntries sent ahead of openraft (pipelining), and openraft's requests answered
    /// from them.
    pub append_rpcs_ahead: AtomicU64,
    pub append_rpcs_answered_ahead: AtomicU64,
    pub append_rpcs_trimmed_ahead: AtomicU64,
}

/// The counters of this process.
pub static STATS: Counters = Counters {
    fsyncs: AtomicU64::new(0),
    fsync_us: AtomicU64::new(0),
    appends: AtomicU64::new(0),
    entries: AtomicU64::new(0),
    records: AtomicU64::new(0),
    raft_writes: AtomicU64::new(0),
    append_rpcs: AtomicU64::new(0),
    empty_append_rpcs: AtomicU64::new(0),
    produce_calls: AtomicU64::new(0),
    answered_locally: AtomicU64::new(0),
    capped_resends: AtomicU64::new(0),
    append_rpcs_sent: AtomicU64::new(0),
    append_rpc_us: AtomicU64::new(0),
    append_handle_us: AtomicU64::new(0),
    append_rpcs_ahead: AtomicU64::new(0),
    append_rpcs_answered_ahead: AtomicU64::new(0),
    append_rpcs_trimmed_ahead: AtomicU64::new(0),
};

/// Adds `n` to a counter.
pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Relaxed);
}

/// Runs `f` (an fsync) and counts it.
pub fn timed_fsync<T>(f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let r = f();
    let took = started.elapsed();
    add(&STATS.fsyncs, 1);
    add(&STATS.fsync_us, took.as_micros() as u64);
    crate::metrics::observe_fsync(took.as_secs_f64());
    r
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Snap([u64; 17]);

fn snap() -> Snap {
    let s = &STATS;
    Snap(
        [
            &s.fsyncs,
            &s.fsync_us,
            &s.appends,
            &s.entries,
            &s.records,
            &s.raft_writes,
            &s.append_rpcs,
            &s.empty_append_rpcs,
            &s.produce_calls,
            &s.answered_locally,
            &s.capped_resends,
            &s.append_rpcs_sent,
            &s.append_rpc_us,
            &s.append_handle_us,
            &s.append_rpcs_ahead,
            &s.append_rpcs_answered_ahead,
            &s.append_rpcs_trimmed_ahead,
        ]
        .map(|c| c.load(Relaxed)),
    )
}

/// Logs the rates of the counters every [`REPORT_EVERY`] in which something was written, until
/// `shutdown` flips.
pub async fn report(mut shutdown: watch::Receiver<bool>) {
    let mut last = snap();
    let mut at = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(REPORT_EVERY) => {}
            _ = shutdown.wait_for(|&s| s) => return,
        }
        let now = snap();
        let secs = at.elapsed().as_secs_f64();
        let d: Vec<u64> = now.0.iter().zip(last.0).map(|(a, b)| a - b).collect();
        (last, at) = (now, Instant::now());
        let [fsyncs, fsync_us, appends, entries, records, writes, rpcs, empty_rpcs, produces, answered, capped, sent, sent_us, handle_us, ahead, answered_ahead, trimmed_ahead] =
            d[..].try_into().expect("17 counters");
        if fsyncs == 0 && appends == 0 {
            continue;
        }
        let per = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        tracing::info!(
            fsyncs_per_sec = (fsyncs as f64 / secs).round(),
            fsync_avg_us = per(fsync_us, fsyncs).round(),
            fsync_busy = format!("{:.0}%", 100.0 * fsync_us as f64 / 1e6 / secs),
            records_per_sec = (records as f64 / secs).round(),
            records_per_fsync = format!("{:.1}", per(records, fsyncs)),
            entries_per_append = format!("{:.1}", per(entries, appends)),
            raft_writes_per_sec = (writes as f64 / secs).round(),
            produce_calls_per_raft_write = format!("{:.1}", per(produces, writes)),
            append_rpcs_per_sec = (rpcs as f64 / secs).round(),
            records_per_append_rpc = format!("{:.1}", per(records, rpcs)),
            empty_append_rpcs_per_sec = (empty_rpcs as f64 / secs).round(),
            empty_append_rpcs_answered_locally_per_sec = (answered as f64 / secs).round(),
            capped_commit_resends_per_sec = (capped as f64 / secs).round(),
            append_rpcs_sent_per_sec = (sent as f64 / secs).round(),
            append_rpc_round_trip_avg_us = per(sent_us, sent).round(),
            append_rpc_handling_avg_us = per(handle_us, rpcs).round(),
            append_rpcs_ahead_per_sec = (ahead as f64 / secs).round(),
            append_rpcs_answered_ahead_per_sec = (answered_ahead as f64 / secs).round(),
            append_rpcs_trimmed_ahead_per_sec = (trimmed_ahead as f64 / secs).round(),
            "write path"
        );
    }
}
