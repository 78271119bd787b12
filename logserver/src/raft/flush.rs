//! The leader's fsync off openraft's path, and the gates that keep it safe.
//!
//! openraft 0.9's core awaits the `LogFlushed` callback of each `append` before it sends the
//! entries to the followers, so a leader that fsyncs inside `append` puts its own fsync in
//! series with the followers' (two fsyncs per commit). Instead the leader writes its own
//! entries without fsync, reports them flushed at once (openraft replicates right away), and
//! this module's flusher thread fsyncs them in the background, many appends per fsync.
//!
//! openraft then counts the leader toward the quorum before its fsync, which Raft only allows if
//! nothing depends on the entry until the leader's copy is durable too. Three gates ensure that
//! an entry becomes visible only once a quorum *including the leader* holds it on disk:
//! - the state machine applies an entry only once it is durable here
//!   ([`FlushQueue::wait_durable`]), so neither a Consume on the leader nor the client's
//!   acknowledgement (sent after apply) sees it earlier;
//! - the commit index sent to followers is capped at the leader's durable entry
//!   ([`FlushQueue::cap`]), so no follower applies (and serves) it earlier;
//! - the commit index persisted on disk is capped the same way.
//!
//! Followers (and every entry that is not the leader's own normal entry of its term, such as
//! membership changes) are still fsynced inside `append`: a follower's answer counts as a
//! durable copy. Truncations sync what remains, so they clear any pending state.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};

use tokio::sync::{watch, Notify};

use super::log_store::LogShared;
use super::LogId;

/// Shared between the log store, the flusher thread and the gates.
#[derive(Debug)]
pub struct FlushQueue {
    state: Mutex<State>,
    wake: Condvar,
    /// The first index that may not be durable (`u64::MAX`: everything written is), and
    /// whether a background fsync failed.
    visible: watch::Sender<(u64, bool)>,
    /// A commit index sent to followers was capped since the last [`FlushQueue::take_capped`].
    capped: AtomicBool,
    /// Notified when everything written is durable and a commit index was capped meanwhile.
    caught_up: Notify,
}

#[derive(Debug, Default)]
struct State {
    /// The last entry written.
    last_written: Option<LogId>,
    /// The last entry known durable; meaningful while `pending`.
    durable: Option<LogId>,
    /// Entries after `durable` await the flusher.
    pending: bool,
    /// The flusher should sync.
    want: bool,
    /// Bumped by truncations: a sync started before one does not count.
    generation: u64,
    failed: bool,
    stop: bool,
    /// Tests hold the flusher to look at the pending state.
    paused: bool,
}

impl Default for FlushQueue {
    fn default() -> Self {
        FlushQueue {
            state: Mutex::default(),
            wake: Condvar::new(),
            visible: watch::channel((u64::MAX, false)).0,
            capped: AtomicBool::new(false),
            caught_up: Notify::new(),
        }
    }
}

impl FlushQueue {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, st: &State) {
        let from = match (st.pending, st.durable) {
            (false, _) => u64::MAX,
            (true, Some(d)) => d.index + 1,
            (true, None) => 0,
        };
        self.visible.send_replace((from, st.failed));
    }

    /// Starts the flusher thread of `shared`; it ends when `shared` is dropped.
    pub fn start(self: &Arc<Self>, shared: Weak<LogShared>) -> std::io::Result<()> {
        let queue = self.clone();
        std::thread::Builder::new()
            .name("proglog-flush".into())
            .spawn(move || queue.run(shared))
            .map(|_| ())
    }

    fn run(&self, shared: Weak<LogShared>) {
        loop {
            let (target, generation) = {
                let mut st = self.state();
                while (!st.want || st.paused) && !st.stop {
                    st = self.wake.wait(st).unwrap_or_else(|p| p.into_inner());
                }
                if st.stop {
                    return;
                }
                st.want = false;
                (st.last_written, st.generation)
            };
            let Some(log) = shared.upgrade() else { return };
            // NB: the handle is taken after `target` was written, so it covers it.
            let res = log
                .read()
                .sync_handle()
                .map_err(std::io::Error::other)
                .and_then(|h| h.sync());
            drop(log);
            let mut st = self.state();
            match res {
                Ok(()) if st.generation == generation => {
                    st.durable = target;
                    if st.last_written == target {
                        st.pending = false;
                    }
                }
                Ok(()) => {}
                Err(e) => {
                    tracing::error!(error = %e, "background fsync of the log failed");
                    st.failed = true;
                }
            }
            self.publish(&st);
            // NB: checked under the state lock: `cap` sets the flag only while entries are
            // pending, so a flag set before this sync is seen here, and one set after it is
            // seen at the end of the next one.
            if !st.pending && self.capped.load(Ordering::Relaxed) {
                self.caught_up.notify_one();
            }
        }
    }

    /// Entries up to `last` were written without fsync: the flusher makes them durable.
    pub fn written_unsynced(&self, last: LogId) {
        let mut st = self.state();
        if !st.pending {
            st.durable = st.last_written;
            st.pending = true;
        }
        st.last_written = Some(last);
        st.want = true;
        self.publish(&st);
        self.wake.notify_one();
    }

    /// Entries up to `last` were written and fsynced (which covers every earlier entry).
    pub fn written_synced(&self, last: Option<LogId>) {
        let mut st = self.state();
        st.last_written = last;
        self.all_durable(&mut st);
    }

    /// The log was cut back to `last` (and what remains synced): nothing is pending.
    pub fn truncated(&self, last: Option<LogId>) {
        let mut st = self.state();
        st.generation += 1;
        st.last_written = last;
        self.all_durable(&mut st);
    }

    fn all_durable(&self, st: &mut State) {
        st.pending = false;
        self.publish(st);
        if self.capped.load(Ordering::Relaxed) {
            self.caught_up.notify_one();
        }
    }

    /// `committed` capped at the last entry durable on this member.
    pub fn cap(&self, committed: Option<LogId>) -> Option<LogId> {
        let st = self.state();
        if st.pending && committed > st.durable {
            self.capped.store(true, Ordering::Relaxed);
            st.durable
        } else {
            committed
        }
    }

    /// Whether a commit index was capped since the last call: once everything is durable the
    /// leader should tell the followers the full one (a heartbeat) rather than wait for the
    /// next write.
    pub fn take_capped(&self) -> bool {
        self.capped.swap(false, Ordering::Relaxed)
    }

    /// Waits until everything written is durable after a commit index was capped (then
    /// [`FlushQueue::take_capped`] says so). Wakes only for that, not for every fsync.
    pub async fn caught_up(&self) {
        self.caught_up.notified().await
    }

    /// Watches `(first index that may not be durable, a background fsync failed)`.
    pub fn subscribe(&self) -> watch::Receiver<(u64, bool)> {
        self.visible.subscribe()
    }

    /// Waits until the entry at `index` (and every one before it) is durable here.
    pub async fn wait_durable(&self, index: u64) -> std::io::Result<()> {
        let mut rx = self.visible.subscribe();
        let seen = rx
            .wait_for(|&(from, failed)| failed || index < from)
            .await
            .map(|v| *v);
        match seen {
            Ok((_, true)) => Err(std::io::Error::other(
                "a background fsync of the log failed",
            )),
            Ok(_) => Ok(()),
            Err(_) => Err(std::io::Error::other("the log is closed")),
        }
    }

    /// Holds (or releases) the flusher (tests).
    #[cfg(test)]
    pub(crate) fn pause(&self, paused: bool) {
        self.state().paused = paused;
        self.wake.notify_one();
    }

    /// Stops the flusher thread.
    pub fn stop(&self) {
        self.state().stop = true;
        self.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::codec::encode_records;
    use super::super::{Entry, EntryPayload, RecordBatch, Vote};
    use super::*;
    use crate::storage::LogConfig;

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(RecordBatch(encode_records([&b"r"[..]]).into())),
        }
    }

    async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), f)
            .await
            .expect("within 10 s")
    }

    /// The leader's own entries are written at once but stay invisible (not durable, commit
    /// index capped) until the background fsync; a follower's entries are durable on return.
    #[tokio::test]
    async fn own_leader_entries_are_invisible_until_the_background_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogShared::open(LogConfig::new(dir.path())).unwrap();
        let flush = log.flush_queue().clone();
        let mut store = super::super::log_store::LogStore::new(log.clone());
        use openraft::storage::RaftLogStorage;
        store.save_vote(&Vote::new_committed(1, 1)).await.unwrap();

        // Not yet known as member 1: entries are fsynced inline.
        log.append_entries(vec![entry(0)]).unwrap();
        within(flush.wait_durable(0)).await.unwrap();
        assert_eq!(flush.cap(Some(entry(0).log_id)), Some(entry(0).log_id));

        log.set_local_id(1);
        flush.pause(true);
        log.append_entries(vec![entry(1), entry(2)]).unwrap();
        assert_eq!(log.read().next_offset(), 3, "written before the fsync");
        assert_eq!(
            *flush.subscribe().borrow(),
            (1, false),
            "1 and 2 await the fsync"
        );
        assert_eq!(
            flush.cap(Some(entry(2).log_id)),
            Some(entry(0).log_id),
            "the commit index sent to followers stops at the durable entry"
        );
        assert!(flush.take_capped());
        let waiting = tokio::spawn({
            let flush = flush.clone();
            async move { flush.wait_durable(2).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());

        flush.pause(false);
        within(waiting).await.unwrap().unwrap();
        assert_eq!(*flush.subscribe().borrow(), (u64::MAX, false));
        assert_eq!(flush.cap(Some(entry(2).log_id)), Some(entry(2).log_id));
    }
}
