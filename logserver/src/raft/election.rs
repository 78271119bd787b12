//! Elections driven by ProgLog instead of openraft's own timer, with a pre-vote round.
//!
//! openraft 0.9 has no pre-vote: a member whose timer fires raises its term, and the raised term
//! reaches the leader through replication and deposes it, even when a quorum still follows that
//! leader (a member back from a pause or a partition does exactly this). Its timer is also drawn
//! once per process, so two members that drew close values keep splitting the vote, and a member
//! that once saw a longer log keeps a penalty that can keep the best candidate from campaigning.
//!
//! So openraft's timer is off (`Config::enable_elect = false`) and [`run`] decides when this
//! member campaigns:
//! - it waits until it has not heard from a leader for the lease ([`Timing::lease`], which is
//!   also openraft's `election_timeout_max`, the time a follower refuses votes after the last
//!   message from its leader), plus a stagger by rank (the voters other than the last leader, in
//!   id order) so that two survivors do not campaign at once, plus a little jitter;
//! - it asks the other voters `PreVote` ([`PreVoteRequest`]): a voter says yes only when it has
//!   not heard from a leader within the lease itself (a leader: when no quorum acknowledged it
//!   within the lease) and the candidate's log is at least as up to date as its own ([`decide`]).
//!   Nothing changes on the voter;
//! - with a yes from a quorum it calls `raft.trigger().elect()`; otherwise it tries again after a
//!   random pause. No state carries over from one attempt to the next.
//!
//! [`Liveness`] is what the rest of the member tells this module: when a leader was last heard
//! (the peer service marks every AppendEntries and InstallSnapshot openraft accepted), and, on a
//! leader, when a quorum last acknowledged it (from openraft's `millis_since_quorum_ack`); the
//! Log service refuses writes on a leader that lost its quorum (fail fast).
//!
//! This module must not decide anything openraft decides: the real vote, terms and log checks
//! stay openraft's. A yes to a pre-vote is advice; a wrong one costs an election, never safety.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use proglog_proto::raft::v1::raft_client::RaftClient;
use proglog_proto::raft::v1::RaftRequest;
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::transport::Channel;

use super::network::{decode, encode, Dialer, NetFilter};
use super::{LogId, NodeId, Raft, RaftMetrics, ServerState};

/// The timings of the election driver, all derived from the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a member follows a silent leader before it campaigns; also openraft's leader
    /// lease (`election_timeout_max`) and how long a leader keeps taking writes without a quorum.
    pub lease: Duration,
    /// Extra wait per rank: the rank-0 survivor campaigns first, rank 1 this much later.
    pub stagger: Duration,
    /// Slack over the lease before the first attempt (heartbeats reach voters a little apart).
    pub margin: Duration,
    /// How long to wait for pre-vote answers.
    pub rpc_timeout: Duration,
}

impl Timing {
    /// Timings for a lease.
    pub fn new(lease: Duration) -> Self {
        Timing {
            lease,
            stagger: lease / 4,
            margin: (lease / 20).max(Duration::from_millis(5)),
            rpc_timeout: (lease / 2).min(Duration::from_millis(200)),
        }
    }
}

/// What the rest of the member reports about leaders (see the module docs).
#[derive(Debug)]
pub struct Liveness {
    lease: Duration,
    /// Follower: when an AppendEntries or InstallSnapshot was last accepted.
    leader_seen: Mutex<Instant>,
    /// Leader: when a quorum last acknowledged it (its election counts); `None` when not leading.
    quorum_acked: Mutex<Option<Instant>>,
    /// When on, the driver asks before campaigning and this member refuses pre-votes while it
    /// hears a leader; tests switch it off to show what the pre-vote prevents.
    pre_vote: std::sync::atomic::AtomicBool,
    /// The driver does not campaign before this (a leadership transfer to another member).
    hold_until: Mutex<Option<Instant>>,
    /// The driver sends no heartbeats while on (a leadership transfer lets the lease lapse).
    quiet: std::sync::atomic::AtomicBool,
}

impl Liveness {
    /// Starts as if a leader had just been heard: a starting member waits a lease first.
    pub fn new(lease: Duration) -> Self {
        Liveness {
            lease,
            leader_seen: Mutex::new(Instant::now()),
            quorum_acked: Mutex::new(None),
            pre_vote: std::sync::atomic::AtomicBool::new(true),
            hold_until: Mutex::new(None),
            quiet: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The lease.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Keeps the driver from campaigning for `d` (the leader hands leadership to another
    /// member; this one would only get in the way).
    pub fn hold(&self, d: Duration) {
        *self.hold_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + d);
    }

    fn held_until(&self) -> Option<Instant> {
        let h = *self.hold_until.lock().unwrap_or_else(|p| p.into_inner());
        h.filter(|&t| t > Instant::now())
    }

    /// Stops (or resumes) the heartbeats the driver adds on a leader.
    pub fn set_quiet(&self, quiet: bool) {
        self.quiet
            .store(quiet, std::sync::atomic::Ordering::Relaxed);
    }

    /// Marks a message from the leader, accepted by openraft.
    pub fn leader_seen(&self) {
        *self.leader_seen.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    /// When a leader was last heard (as a follower).
    pub fn leader_seen_at(&self) -> Instant {
        *self.leader_seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Time since a leader was last heard (as a follower).
    pub fn since_leader(&self) -> Duration {
        self.leader_seen_at().elapsed()
    }

    /// Takes in the latest metrics: tracks when a quorum last acknowledged this leader.
    pub fn observe(&self, m: &RaftMetrics) {
        let mut acked = self.quorum_acked.lock().unwrap_or_else(|p| p.into_inner());
        if m.state != ServerState::Leader {
            if acked.take().is_some() {
                // A leader that steps down follows whoever deposed it: a lease before it may
                // campaign, as for any follower.
                self.leader_seen();
            }
            return;
        }
        let now = Instant::now();
        // NB: a new leader was just voted in by a quorum; that counts as an acknowledgement.
        let seen = m
            .millis_since_quorum_ack
            .map(|ms| now.checked_sub(Duration::from_millis(ms)).unwrap_or(now));
        *acked = match (*acked, seen) {
            (None, s) => Some(s.unwrap_or(now)),
            (Some(a), Some(s)) => Some(a.max(s)),
            (Some(a), None) => Some(a),
        };
    }

    /// On a leader: how long ago a quorum last acknowledged it, when that is more than a lease
    /// ago (it has lost its quorum as far as it can tell). `None` otherwise.
    pub fn quorum_lost(&self) -> Option<Duration> {
        let acked = *self.quorum_acked.lock().unwrap_or_else(|p| p.into_inner());
        let age = acked?.elapsed();
        (age > self.lease).then_some(age)
    }

    /// Returns once this member leads without a quorum ([`Liveness::quorum_lost`]), with how
    /// long it has been; never while it does not lead.
    pub async fn until_quorum_lost(&self) -> Duration {
        loop {
            let acked = *self.quorum_acked.lock().unwrap_or_else(|p| p.into_inner());
            match acked {
                Some(a) if a.elapsed() > self.lease => return a.elapsed(),
                // NB: polls at the lease's granularity; acknowledgements only move it later.
                Some(a) => {
                    tokio::time::sleep_until(a + self.lease + Duration::from_millis(1)).await
                }
                None => tokio::time::sleep(self.lease).await,
            }
        }
    }

    /// True when this member heard from a leader within the lease, or leads with a quorum.
    pub fn leader_recent(&self, m: &RaftMetrics) -> bool {
        if m.state == ServerState::Leader {
            return self.quorum_lost().is_none();
        }
        self.since_leader() < self.lease
    }

    /// Turns the pre-vote off (tests): the driver then campaigns without asking and this member
    /// grants every pre-vote, which is how openraft's own timer behaves.
    pub fn set_pre_vote(&self, on: bool) {
        self.pre_vote
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    fn pre_vote_on(&self) -> bool {
        self.pre_vote.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The payload of the `TriggerElection` peer RPC. An empty payload means [`Campaign::Now`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Campaign {
    /// Start an election now (the chosen successor of a leadership transfer).
    Now,
    /// Do not campaign for this many milliseconds (the other voters during a transfer).
    Hold { millis: u64 },
}

/// `PreVote` request: the candidate and the last log id it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreVoteRequest {
    pub candidate: NodeId,
    pub term: u64,
    pub last_log_id: Option<LogId>,
}

/// `PreVote` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreVoteResponse {
    pub granted: bool,
    /// The voter's term and last log id (a candidate behind it learns so).
    pub term: u64,
    pub last_log_id: Option<LogId>,
    /// True when the voter refused because it still hears from a leader.
    pub leader_recent: bool,
}

/// The voter's side of a pre-vote: yes when it has lost its leader and the candidate's log is
/// at least as up to date as its own (openraft's own vote rule compares last log ids the same way).
pub fn decide(
    req: &PreVoteRequest,
    leader_recent: bool,
    term: u64,
    last_log_id: Option<LogId>,
) -> PreVoteResponse {
    PreVoteResponse {
        granted: !leader_recent && req.last_log_id >= last_log_id,
        term,
        last_log_id,
        leader_recent,
    }
}

/// Answers a pre-vote on this member.
pub fn answer(raft: &Raft, liveness: &Liveness, req: &PreVoteRequest) -> PreVoteResponse {
    let m = raft.metrics().borrow().clone();
    let recent = liveness.pre_vote_on() && liveness.leader_recent(&m);
    decide(req, recent, m.current_term, last_log_id(raft))
}

/// This member's last log id (openraft's `RaftMetrics` 0.9 has only the index).
fn last_log_id(raft: &Raft) -> Option<LogId> {
    raft.data_metrics().borrow().last_log
}

/// The rank of `me` among the voters that may campaign: the other voters but the last known
/// leader, in id order. Rank 0 campaigns first.
pub fn rank(voters: &BTreeSet<NodeId>, me: NodeId, last_leader: Option<NodeId>) -> u32 {
    voters
        .iter()
        .filter(|&&v| v < me && Some(v) != last_leader)
        .count() as u32
}

/// True when `granted` (voters that said yes, this member included) holds a majority of every
/// voter set of the (possibly joint) configuration.
pub fn is_quorum(configs: &[BTreeSet<NodeId>], granted: &BTreeSet<NodeId>) -> bool {
    !configs.is_empty()
        && configs
            .iter()
            .all(|c| c.iter().filter(|v| granted.contains(v)).count() * 2 > c.len())
}

/// What the election driver needs.
pub struct Driver {
    pub raft: Raft,
    /// The heartbeat interval: a leader asks openraft for a heartbeat this often.
    pub heartbeat: Duration,
    pub me: NodeId,
    pub liveness: Arc<Liveness>,
    pub filter: Arc<NetFilter>,
    pub timing: Timing,
    /// How peers are dialed (TLS or not).
    pub dialer: Dialer,
}

/// Runs the election driver until `shutdown` turns true (see the module docs).
pub async fn run(d: Driver, mut shutdown: watch::Receiver<bool>) {
    let mut channels: HashMap<String, Channel> = HashMap::new();
    // After an attempt that did not make this member lead: (when it ran, when to try again).
    let mut retry: Option<(Instant, Instant)> = None;
    let t = d.timing;
    loop {
        let m = d.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let idle = m.state == ServerState::Leader
            || m.state == ServerState::Shutdown
            || !voters.contains(&d.me);
        let seen = d.liveness.leader_seen_at();
        if retry.is_some_and(|(at, _)| seen > at) {
            retry = None; // a leader was heard since the last attempt
        }
        let due = match (retry, d.liveness.held_until()) {
            (_, Some(held)) => held,
            (Some((_, at)), None) => at,
            (None, None) => {
                let jitter = rand::rng().random_range(0..=t.margin.as_micros() as u64);
                seen + t.lease
                    + t.margin
                    + t.stagger * rank(&voters, d.me, m.current_leader)
                    + Duration::from_micros(jitter)
            }
        };
        let now = Instant::now();
        if m.state == ServerState::Leader {
            // NB: openraft 0.9 checks for a due heartbeat only on its tick, every 1.5 heartbeat
            // intervals, so followers hear from an idle leader every 150 ms, not 100; a steady
            // beat lets the lease stay short without followers losing the leader under load.
            if !d.liveness.quiet.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = d.raft.trigger().heartbeat().await;
            }
            tokio::select! {
                _ = tokio::time::sleep(d.heartbeat) => continue,
                _ = shutdown.wait_for(|&s| s) => return,
            }
        }
        if idle || now < due {
            let wake = if idle { now + t.lease / 2 } else { due };
            tokio::select! {
                _ = tokio::time::sleep_until(wake.min(now + t.lease)) => continue,
                _ = shutdown.wait_for(|&s| s) => return,
            }
        }
        let configs = membership.get_joint_config().clone();
        let peers: Vec<(NodeId, String)> = voters
            .iter()
            .filter(|&&v| v != d.me)
            .filter_map(|&v| Some((v, membership.get_node(&v)?.addr.clone())))
            .collect();
        let since = d.liveness.since_leader();
        let req = PreVoteRequest {
            candidate: d.me,
            term: m.current_term,
            last_log_id: last_log_id(&d.raft),
        };
        let granted =
            !d.liveness.pre_vote_on() || pre_vote(&d, &mut channels, &req, &peers, &configs).await;
        if granted {
            tracing::info!(
                term = m.current_term,
                silent_ms = since.as_millis() as u64,
                "no leader heard and a quorum agrees: campaigning"
            );
            if d.raft.trigger().elect().await.is_err() {
                return; // Raft stopped
            }
        } else {
            tracing::debug!(
                silent_ms = since.as_millis() as u64,
                "pre-vote refused; not campaigning"
            );
        }
        let pause = rand::rng()
            .random_range(t.stagger.as_micros() as u64 / 2..=t.stagger.as_micros() as u64 * 3 / 2);
        let at = Instant::now();
        retry = Some((at, at + Duration::from_micros(pause)));
    }
}

/// Asks the other voters; true once a quorum (this member included) says yes.
async fn pre_vote(
    d: &Driver,
    channels: &mut HashMap<String, Channel>,
    req: &PreVoteRequest,
    peers: &[(NodeId, String)],
    configs: &[BTreeSet<NodeId>],
) -> bool {
    let mut granted = BTreeSet::from([d.me]);
    if is_quorum(configs, &granted) {
        return true;
    }
    let payload: bytes::Bytes = encode(req).into();
    let mut calls = FuturesUnordered::new();
    for (id, addr) in peers {
        if d.filter.is_cut(d.me, *id) {
            continue;
        }
        let ch = match channels.get(addr) {
            Some(c) => c.clone(),
            None => match d.dialer.channel(addr) {
                Ok(c) => {
                    channels.insert(addr.clone(), c.clone());
                    c
                }
                Err(_) => continue,
            },
        };
        let mut r = tonic::Request::new(RaftRequest {
            payload: payload.clone(),
        });
        r.metadata_mut()
            .insert("proglog-from", d.me.to_string().parse().expect("digits"));
        let timeout = d.timing.rpc_timeout;
        let id = *id;
        calls.push(async move {
            let reply = tokio::time::timeout(timeout, RaftClient::new(ch).pre_vote(r)).await;
            let resp = match reply {
                Ok(Ok(r)) => decode::<PreVoteResponse>(&r.into_inner().payload).ok(),
                _ => None,
            };
            (id, resp)
        });
    }
    while let Some((id, resp)) = calls.next().await {
        match resp {
            Some(r) if r.granted => {
                granted.insert(id);
                if is_quorum(configs, &granted) {
                    return true;
                }
            }
            Some(r) => tracing::debug!(
                voter = id,
                leader_recent = r.leader_recent,
                "pre-vote refused"
            ),
            None => tracing::debug!(voter = id, "no pre-vote answer"),
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use openraft::testing::log_id;

    use super::*;

    fn req(last: Option<LogId>) -> PreVoteRequest {
        PreVoteRequest {
            candidate: 2,
            term: 3,
            last_log_id: last,
        }
    }

    #[test]
    fn a_voter_that_hears_its_leader_refuses() {
        let r = decide(
            &req(Some(log_id(3, 1, 10))),
            true,
            3,
            Some(log_id(3, 1, 10)),
        );
        assert!(!r.granted);
        assert!(r.leader_recent);
    }

    #[test]
    fn a_voter_that_lost_its_leader_grants_an_up_to_date_candidate_only() {
        let mine = Some(log_id(3, 1, 10));
        assert!(decide(&req(mine), false, 3, mine).granted);
        assert!(decide(&req(Some(log_id(4, 2, 2))), false, 3, mine).granted);
        assert!(!decide(&req(Some(log_id(3, 1, 9))), false, 3, mine).granted);
        assert!(!decide(&req(Some(log_id(2, 1, 50))), false, 3, mine).granted);
        assert!(!decide(&req(None), false, 3, mine).granted);
        assert!(decide(&req(None), false, 0, None).granted);
    }

    #[test]
    fn ranks_skip_the_last_leader() {
        let voters = BTreeSet::from([1, 2, 3]);
        assert_eq!(rank(&voters, 2, Some(1)), 0);
        assert_eq!(rank(&voters, 3, Some(1)), 1);
        assert_eq!(rank(&voters, 1, Some(3)), 0);
        assert_eq!(rank(&voters, 2, Some(3)), 1);
        assert_eq!(rank(&voters, 3, None), 2);
    }

    #[test]
    fn a_quorum_needs_a_majority_of_every_config() {
        let c = vec![BTreeSet::from([1, 2, 3])];
        assert!(!is_quorum(&c, &BTreeSet::from([1])));
        assert!(is_quorum(&c, &BTreeSet::from([1, 3])));
        let joint = vec![BTreeSet::from([1, 2, 3]), BTreeSet::from([3, 4, 5])];
        assert!(!is_quorum(&joint, &BTreeSet::from([1, 2])));
        assert!(is_quorum(&joint, &BTreeSet::from([1, 3, 4])));
        assert!(is_quorum(&[BTreeSet::from([7])], &BTreeSet::from([7])));
    }

    #[tokio::test]
    async fn a_leader_loses_its_quorum_a_lease_after_the_last_ack() {
        let l = Liveness::new(Duration::from_millis(50));
        let mut m = RaftMetrics::new_initial(1);
        m.state = ServerState::Leader;
        l.observe(&m);
        assert_eq!(l.quorum_lost(), None);
        m.millis_since_quorum_ack = Some(60);
        l.observe(&m);
        // The election still counts as the latest acknowledgement.
        assert_eq!(l.quorum_lost(), None);
        // First seen as a leader whose last quorum ack is older than the lease: lost.
        let l = Liveness::new(Duration::from_millis(50));
        l.observe(&m);
        assert!(l.quorum_lost().is_some());
        m.millis_since_quorum_ack = Some(10);
        l.observe(&m);
        assert!(l.quorum_lost().is_none());
        *l.quorum_acked.lock().unwrap() = Some(Instant::now() - Duration::from_millis(80));
        assert!(l.quorum_lost().is_some());
        m.state = ServerState::Follower;
        l.observe(&m);
        assert_eq!(l.quorum_lost(), None);
    }
}
