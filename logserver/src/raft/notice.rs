//! Commit notices: followers learn the leader's commit index from the next AppendEntries that
//! carries entries, not from an empty one sent after every commit.
//!
//! openraft 0.9's replication task sends an AppendEntries without entries whenever the leader's
//! commit index moves and nothing else waits for that follower, only to carry the new index. At
//! one client that is one extra round trip per record per follower, and the next record's
//! entries wait behind it (openraft keeps one AppendEntries in flight per follower). openraft
//! cannot be told not to, so the peer client ([`super::network::PeerClient`]) decides, through
//! [`Follower::answer_locally`]:
//! - an empty AppendEntries that only moves the commit index is answered `Success` on the leader
//!   without being sent, when this client saw the follower answer `Success` for the same vote
//!   and the same last log id less than `fresh` ago: that is exactly what the follower would
//!   answer (it holds that log id; its log cannot shrink within one leader's term). The commit
//!   index is then *owed* to that follower;
//! - openraft puts its current commit index on every AppendEntries, so the next one with entries
//!   pays what is owed; if none leaves within `delay`, [`run`] asks openraft for a heartbeat, and
//!   the peer client sends that one.
//!
//! Everything else goes out as before: AppendEntries with entries, heartbeats that carry no new
//! commit index (they keep the follower's lease as they did), and whatever a client that has
//! not seen a `Success` yet sends (a new replication session, openraft's leadership check).
//!
//! Durability and commits are unchanged: the leader decides a commit from the answers to
//! AppendEntries *with* entries, which always go out. What changes: a follower applies (and
//! serves) an entry when the next entries or the heartbeat arrive (within `delay` when the
//! leader goes idle), and a local answer moves openraft's clock of that follower (only used for
//! `millis_since_quorum_ack`, the leader's fail-fast) by at most `fresh` beyond its last real
//! answer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

use super::{AppendEntriesRequest, AppendEntriesResponse, LogId, NodeId, Raft, Vote};

/// The commit notices of one member (as a leader): what each follower is owed, and the courier
/// task ([`run`]) that makes sure it arrives within `delay`.
#[derive(Debug)]
pub struct Notices {
    delay: Duration,
    fresh: Duration,
    state: Mutex<State>,
    wake: Notify,
    answered: AtomicU64,
    sent_empty: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    owed: HashMap<NodeId, Owed>,
    /// The courier sleeps until a deadline (it need not be woken for a later one).
    armed: bool,
}

#[derive(Debug, Clone, Copy)]
struct Owed {
    /// Since when the follower is owed a commit index (the oldest one not yet sent).
    since: Instant,
    /// The commit index owed (as the follower would apply it).
    commit: Option<LogId>,
    /// The courier asked openraft for a heartbeat: the next empty AppendEntries goes out.
    due: bool,
}

impl Notices {
    /// Notices of a member with this heartbeat interval; `delay` zero turns them off (every
    /// empty AppendEntries goes out, as openraft sends them). `delay` is at most half the
    /// heartbeat interval.
    pub fn new(delay: Duration, heartbeat: Duration) -> Arc<Self> {
        Arc::new(Notices {
            delay: delay.min(heartbeat / 2),
            // NB: bounds how far a local answer moves openraft's clock of the follower.
            fresh: heartbeat / 2,
            state: Mutex::default(),
            wake: Notify::new(),
            answered: AtomicU64::new(0),
            sent_empty: AtomicU64::new(0),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Empty AppendEntries answered on the leader (not sent) so far.
    pub fn answered_locally(&self) -> u64 {
        self.answered.load(Relaxed)
    }

    /// Empty AppendEntries sent to followers so far.
    pub fn sent_empty(&self) -> u64 {
        self.sent_empty.load(Relaxed)
    }

    /// Whether notices are on (a zero `delay` turns them off).
    pub fn enabled(&self) -> bool {
        !self.delay.is_zero()
    }

    /// `target` is owed `commit` (it keeps the older `since`).
    fn owe(&self, target: NodeId, commit: Option<LogId>) {
        let mut st = self.state();
        let o = st.owed.entry(target).or_insert(Owed {
            since: Instant::now(),
            commit,
            due: false,
        });
        o.commit = o.commit.max(commit);
        if !st.armed {
            drop(st);
            self.wake.notify_one();
        }
    }

    /// Whether `target`'s notice is due (the courier asked for a heartbeat): then the caller
    /// sends it.
    fn is_due(&self, target: NodeId) -> bool {
        self.state().owed.get(&target).is_some_and(|o| o.due)
    }

    /// `target` now knows `commit`: what was owed up to it is paid. A due notice that went out
    /// short of the debt (its commit index capped: the leader's fsync was behind) is owed anew,
    /// so the courier sends another one after `delay` rather than never.
    fn paid(&self, target: NodeId, commit: Option<LogId>) {
        let mut st = self.state();
        let Some(o) = st.owed.get_mut(&target) else {
            return;
        };
        if o.commit <= commit {
            st.owed.remove(&target);
        } else if o.due {
            // NB: the courier sweeps only notices not yet due; without this one stayed due
            // and unsent until the next write or the periodic heartbeat (a test with
            // heartbeats a minute apart waited for it in vain on a loaded machine).
            o.due = false;
            o.since = Instant::now();
            if !st.armed {
                drop(st);
                self.wake.notify_one();
            }
        }
    }

    /// Marks the notices owed for `delay` as due; returns whether any became due, and when the
    /// next one will be.
    fn sweep(&self, now: Instant) -> (bool, Option<Instant>) {
        let mut st = self.state();
        let mut fired = false;
        let mut next: Option<Instant> = None;
        for o in st.owed.values_mut().filter(|o| !o.due) {
            let at = o.since + self.delay;
            if at <= now {
                o.due = true;
                fired = true;
            } else {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        st.armed = next.is_some();
        (fired, next)
    }
}

/// The courier: asks openraft for a heartbeat when a follower has been owed a commit index for
/// `delay` (the leader went idle), so that it learns it without waiting for the next write or
/// the periodic heartbeat. Ends with `shutdown`.
pub async fn run(notices: Arc<Notices>, raft: Raft, mut shutdown: watch::Receiver<bool>) {
    if notices.delay.is_zero() {
        return;
    }
    loop {
        let (fired, next) = notices.sweep(Instant::now());
        if fired {
            let _ = raft.trigger().heartbeat().await;
        }
        // NB: while armed, new debts do not wake the courier (one wake-up per `delay` under
        // load, not one per commit); it looks again at the earliest deadline.
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = notices.wake.notified() => {}
            _ = sleep => {}
            _ = shutdown.wait_for(|&s| s) => return,
        }
    }
}

/// What one peer client knows of its follower: the last AppendEntries it answered `Success`.
#[derive(Debug, Default)]
pub struct Follower {
    confirmed: Option<Confirmed>,
}

#[derive(Debug, Clone, Copy)]
struct Confirmed {
    vote: Vote,
    /// The follower's last log id as of that answer.
    matching: Option<LogId>,
    /// The commit index it could apply from it.
    commit: Option<LogId>,
    /// When that AppendEntries was sent.
    sent_at: Instant,
}

/// An AppendEntries about to be sent, as [`Follower::sent`] needs it afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sending {
    vote: Vote,
    matching: Option<LogId>,
    commit: Option<LogId>,
    empty: bool,
    sent_at: Instant,
}

impl Sending {
    /// An AppendEntries with entries that went out ahead of openraft (speculative replication,
    /// `super::network`): the follower holds `matching` and learnt `commit`.
    pub fn speculated(
        vote: Vote,
        matching: Option<LogId>,
        commit: Option<LogId>,
        sent_at: Instant,
    ) -> Self {
        Sending {
            vote,
            matching,
            commit: commit.min(matching),
            empty: false,
            sent_at,
        }
    }
}

impl Notices {
    /// `target` did not learn `commit` (an answer came from a speculative AppendEntries that
    /// carried an older one): the courier makes sure it does.
    pub fn owe_commit(&self, target: NodeId, commit: Option<LogId>) {
        self.owe(target, commit)
    }
}

impl Follower {
    /// `Ok(answer)` when `rpc` need not be sent (see the module docs); otherwise what to
    /// remember of it for [`Follower::sent`]. `committed` is the leader's commit index; the one
    /// in `rpc` may be capped at what is durable on the leader (see [`super::flush`]).
    pub fn answer_locally(
        &mut self,
        notices: &Notices,
        target: NodeId,
        rpc: &AppendEntriesRequest,
        committed: Option<LogId>,
    ) -> Result<AppendEntriesResponse, Sending> {
        let matching = rpc.entries.last().map(|e| e.log_id).or(rpc.prev_log_id);
        let sending = Sending {
            vote: rpc.vote,
            matching,
            // NB: a follower applies up to the last log id it holds from this leader.
            commit: rpc.leader_commit.min(matching),
            empty: rpc.entries.is_empty(),
            sent_at: Instant::now(),
        };
        let Some(c) = self.confirmed else {
            return Err(sending);
        };
        let news = committed.min(matching);
        let only_commit =
            sending.empty && c.vote == rpc.vote && c.matching == rpc.prev_log_id && news > c.commit;
        if notices.delay.is_zero()
            || !only_commit
            || c.sent_at.elapsed() >= notices.fresh
            || notices.is_due(target)
        {
            return Err(sending);
        }
        // NB: owed uncapped: an AppendEntries that carries it capped (the leader's fsync is
        // behind) does not pay it, so it stays owed until one carries all of it.
        notices.owe(target, news);
        notices.answered.fetch_add(1, Relaxed);
        crate::stats::add(&crate::stats::STATS.answered_locally, 1);
        Ok(AppendEntriesResponse::Success)
    }

    /// Learns from the follower's answer to an AppendEntries that was sent.
    pub fn sent<E>(
        &mut self,
        notices: &Notices,
        target: NodeId,
        s: Sending,
        answer: &Result<AppendEntriesResponse, E>,
    ) {
        if s.empty {
            notices.sent_empty.fetch_add(1, Relaxed);
        }
        self.confirmed = match answer {
            Ok(AppendEntriesResponse::Success) => {
                notices.paid(target, s.commit);
                Some(Confirmed {
                    vote: s.vote,
                    matching: s.matching,
                    commit: s.commit,
                    sent_at: s.sent_at,
                })
            }
            // NB: after anything else the next AppendEntries goes out, whatever it is.
            _ => None,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{Entry, EntryPayload};

    fn id(index: u64) -> LogId {
        openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index)
    }

    fn ae(prev: u64, entries: u64, commit: u64) -> AppendEntriesRequest {
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: Some(id(prev)),
            entries: (prev + 1..=prev + entries)
                .map(|i| Entry {
                    log_id: id(i),
                    payload: EntryPayload::Blank,
                })
                .collect(),
            leader_commit: Some(id(commit)),
        }
    }

    /// Only an empty AppendEntries that moves the commit index right after a `Success` for the
    /// same log is answered locally; the next one with entries pays it, else the courier's
    /// sweep makes it due and it goes out.
    #[test]
    fn only_commit_moves_are_answered_locally_and_stay_owed_until_sent() {
        let n = Notices::new(Duration::from_millis(5), Duration::from_secs(10));
        let mut f = Follower::default();
        let ok = Ok::<_, ()>(AppendEntriesResponse::Success);

        // Nothing confirmed yet: it goes out.
        let s = f
            .answer_locally(&n, 2, &ae(3, 2, 3), Some(id(3)))
            .unwrap_err();
        f.sent(&n, 2, s, &ok);
        // A heartbeat with no new commit index goes out (it keeps the follower's lease).
        assert!(f.answer_locally(&n, 2, &ae(5, 0, 3), Some(id(3))).is_err());
        // The commit moved to 5: answered here, owed.
        assert_eq!(
            f.answer_locally(&n, 2, &ae(5, 0, 5), Some(id(5))),
            Ok(AppendEntriesResponse::Success)
        );
        assert_eq!(n.answered_locally(), 1);
        // A different log (prev not what the follower confirmed) goes out.
        assert!(f.answer_locally(&n, 2, &ae(4, 0, 5), Some(id(5))).is_err());
        // Entries with commit 5 pay the debt.
        let s = f
            .answer_locally(&n, 2, &ae(5, 1, 5), Some(id(5)))
            .unwrap_err();
        f.sent(&n, 2, s, &ok);
        assert!(n.state().owed.is_empty());

        // Owed again; the sweep after `delay` makes it due: the next one goes out.
        assert!(f.answer_locally(&n, 2, &ae(6, 0, 6), Some(id(6))).is_ok());
        let (fired, next) = n.sweep(Instant::now());
        assert!(!fired && next.is_some());
        let (fired, next) = n.sweep(Instant::now() + Duration::from_millis(6));
        assert!(fired && next.is_none());
        let s = f
            .answer_locally(&n, 2, &ae(6, 0, 6), Some(id(6)))
            .unwrap_err();
        f.sent(&n, 2, s, &ok);
        assert!(n.state().owed.is_empty());

        let s = f
            .answer_locally(&n, 2, &ae(6, 1, 6), Some(id(6)))
            .unwrap_err();
        f.sent(&n, 2, s, &ok);

        // Capped (the leader's own fsync is behind): owed in full, so an AppendEntries that
        // carries it capped does not pay it.
        assert!(f.answer_locally(&n, 2, &ae(7, 0, 6), Some(id(7))).is_ok());
        let s = f
            .answer_locally(&n, 2, &ae(7, 1, 6), Some(id(7)))
            .unwrap_err();
        f.sent(&n, 2, s, &ok);
        assert_eq!(n.state().owed[&2].commit, Some(id(7)));
        let s = f
            .answer_locally(&n, 2, &ae(8, 1, 8), Some(id(8)))
            .unwrap_err();
        f.sent(&n, 2, s, &ok);
        assert!(n.state().owed.is_empty());

        // A due notice that goes out capped stays owed and becomes due again after `delay`.
        // (The follower confirmed log 9 with commit 8; the leader committed 9.)
        assert!(f.answer_locally(&n, 2, &ae(9, 0, 8), Some(id(9))).is_ok());
        let (fired, _) = n.sweep(Instant::now() + Duration::from_millis(6));
        assert!(fired);
        let s = f
            .answer_locally(&n, 2, &ae(9, 0, 8), Some(id(9)))
            .unwrap_err();
        f.sent(&n, 2, s, &ok);
        assert_eq!(n.state().owed[&2].commit, Some(id(9)), "still owed");
        let (fired, next) = n.sweep(Instant::now() + Duration::from_millis(6));
        assert!(fired && next.is_none(), "due again after the delay");
        let s = f
            .answer_locally(&n, 2, &ae(9, 0, 9), Some(id(9)))
            .unwrap_err();
        f.sent(&n, 2, s, &ok);
        assert!(n.state().owed.is_empty());

        // After a failure everything goes out until the next Success.
        let s = f
            .answer_locally(&n, 2, &ae(8, 1, 8), Some(id(8)))
            .unwrap_err();
        f.sent(&n, 2, s, &Err::<AppendEntriesResponse, _>(()));
        assert!(f
            .answer_locally(&n, 2, &ae(10, 0, 10), Some(id(10)))
            .is_err());

        // Switched off: everything goes out.
        let off = Notices::new(Duration::ZERO, Duration::from_secs(10));
        let mut f = Follower::default();
        let s = f
            .answer_locally(&off, 2, &ae(3, 2, 3), Some(id(3)))
            .unwrap_err();
        f.sent(&off, 2, s, &ok);
        assert!(f
            .answer_locally(&off, 2, &ae(5, 0, 5), Some(id(5)))
            .is_err());
    }
}
