//! Leadership transfer, shared by the admin `TransferLeadership` call and by a leader's graceful
//! stop ([`crate::node::Node::step_down`]). It only moves leadership; it never changes membership.
//!
//! openraft 0.9 has no transfer API. We do what it allows: the leader holds new writes, waits
//! until the target holds its whole log, pauses its own heartbeats so the followers' leader lease
//! lapses, then asks the target (peer RPC `TriggerElection`) to start an election, and waits for a
//! new leader. The other voters are first asked (the same RPC, payload `Campaign::Hold`) not to
//! campaign for three leases: their own election driver would otherwise start as soon as the
//! lease lapses, just before the target. Another follower may win the race instead; [`transfer`] retries a few times while
//! this member still leads.

use std::time::Duration;

use futures::FutureExt as _;
use proglog_proto::raft::v1::raft_client::RaftClient;
use proglog_proto::raft::v1::RaftRequest;
use proglog_proto::v1::log_client::LogClient;
use proglog_proto::v1::GetServersRequest;
use tonic::Status;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::Ctx;
use crate::raft::election::Campaign;
use crate::raft::network::{encode, Dialer};
use crate::raft::{NodeId, RaftMetrics};

/// How long a transfer waits for the target to catch up.
const CATCH_UP_WAIT: Duration = Duration::from_secs(10);
/// Attempts at moving leadership.
const TRANSFER_ATTEMPTS: usize = 3;

/// Why leadership did not move to the target.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("member is shutting down")]
    ShuttingDown,
    #[error("member {id} did not catch up within {timeout:?}")]
    NotCaughtUp { id: NodeId, timeout: Duration },
    #[error("bad target address: {0}")]
    BadAddress(#[from] tonic::transport::Error),
    #[error("TriggerElection: {0}")]
    TriggerElection(Box<Status>),
    #[error("no new leader was elected")]
    NoNewLeader,
    #[error("member {other} won the election instead of {target}")]
    OtherWon { other: NodeId, target: NodeId },
}

/// Result with the transfer [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Moves leadership from this member (the leader) to voter `target` at `addr`: up to
/// [`TRANSFER_ATTEMPTS`] attempts while this member still leads. Returns the new leader.
///
/// Cancel-safe: dropping the future releases held writes and resumes heartbeats.
pub async fn transfer(ctx: &Ctx, target: NodeId, addr: &str) -> Result<NodeId> {
    let mut attempt = 1;
    loop {
        let err = match transfer_once(ctx, target, addr).await {
            Ok(leader) if leader == target => return Ok(leader),
            Ok(other) => Error::OtherWon { other, target },
            Err(e) => e,
        };
        // Only the leader can try again; stop when it is not us any more.
        if attempt == TRANSFER_ATTEMPTS || !ctx.is_leader() {
            return Err(err);
        }
        attempt += 1;
    }
}

/// The voters other than `me`, with their addresses, those holding the most of the leader's log
/// first (lowest id first on a tie); empty when this member does not lead.
pub fn successors(m: &RaftMetrics, me: NodeId) -> Vec<(NodeId, String)> {
    let Some(replication) = m.replication.as_ref() else {
        return Vec::new();
    };
    let membership = m.membership_config.membership();
    let mut ranked: Vec<_> = membership
        .voter_ids()
        .filter(|&id| id != me)
        .map(|id| {
            (
                std::cmp::Reverse(replication.get(&id).copied().flatten()),
                id,
            )
        })
        .collect();
    ranked.sort();
    ranked
        .into_iter()
        .filter_map(|(_, id)| Some((id, membership.get_node(&id)?.addr.clone())))
        .collect()
}

/// True when the member at `addr` answers a health check within `timeout`.
pub async fn answers(dialer: &Dialer, addr: &str, timeout: Duration) -> bool {
    let Ok(chan) = dialer.channel(addr) else {
        return false;
    };
    let mut client = HealthClient::new(chan);
    let check = client.check(HealthCheckRequest::default());
    matches!(tokio::time::timeout(timeout, check).await, Ok(Ok(_)))
}

async fn transfer_once(ctx: &Ctx, target: NodeId, addr: &str) -> Result<NodeId> {
    let lease = ctx.election_timeout_max;
    let term = ctx.metrics().current_term;
    // Hold new writes (in-flight ones finish first): appends would renew the followers'
    // lease just as heartbeats do. Released on return, whatever the outcome.
    let _no_writes = ctx.writes.write().await;
    wait_caught_up(ctx, target, CATCH_UP_WAIT).await?;
    // The other voters too, as far as they answer: replication still in flight to a lagging one
    // (retries after timeouts, under load) renews its lease as a heartbeat would, and then it
    // refuses the target its vote. A voter that does not catch up within a lease is left as is.
    let _ = tokio::time::timeout(lease, wait_voters_caught_up(ctx)).await;
    // The other voters would campaign themselves once the lease lapses: hold them back.
    hold_others(ctx, target, lease * 3).await;
    let _paused = PauseHeartbeats::new(ctx);
    // NB: a deliberate wait: the followers' leader lease must lapse before any of them grants a
    // vote to the target.
    tokio::time::sleep(lease + lease / 5).await;
    RaftClient::new(ctx.dialer.channel(addr)?)
        .trigger_election(RaftRequest::default())
        .await
        .map_err(|s| Error::TriggerElection(Box::new(s)))?;
    let mut rx = ctx.raft.metrics();
    // Either this member hears of the new leader, or the target says it leads: the new leader
    // may be unable to reach this one (a stopping pod's DNS name can vanish first), and then
    // only the target knows.
    let heard = async {
        rx.wait_for(|m| m.current_leader.is_some() && m.current_leader != Some(ctx.id))
            .await
            .map(|m| m.current_leader.unwrap_or_default())
            .ok()
    };
    let told = async {
        target_leads(&ctx.dialer, addr, target).await;
        Some(target)
    };
    let waited = tokio::time::timeout(lease * 3, async {
        tokio::select! {
            Some(id) = heard => id,
            Some(id) = told => id,
            else => 0,
        }
    })
    .await;
    match waited {
        Ok(id) if id != 0 => {
            // Writes held until now must not land here: refuse them with the new leader's hint.
            let new_addr = if id == target {
                addr.to_string()
            } else {
                ctx.leader().map(|(_, a)| a).unwrap_or_default()
            };
            *ctx.handed_over.lock().unwrap_or_else(|p| p.into_inner()) = Some((term, id, new_addr));
            Ok(id)
        }
        _ => Err(Error::NoNewLeader),
    }
}

/// Asks every voter but this member and `target` not to campaign for `d`, as far as they answer
/// within a tenth of a lease.
async fn hold_others(ctx: &Ctx, target: NodeId, d: Duration) {
    let m = ctx.metrics();
    let membership = m.membership_config.membership();
    let payload: bytes::Bytes = encode(&Campaign::Hold {
        millis: d.as_millis() as u64,
    })
    .into();
    let calls = membership
        .voter_ids()
        .filter(|&v| v != ctx.id && v != target)
        .filter_map(|v| membership.get_node(&v).map(|n| n.addr.clone()))
        .filter_map(|addr| ctx.dialer.channel(&addr).ok())
        .map(|ch| {
            let payload = payload.clone();
            async move {
                let mut client = RaftClient::new(ch);
                let call = client.trigger_election(RaftRequest { payload });
                let _ = tokio::time::timeout(ctx.election_timeout_max / 10, call).await;
            }
        });
    futures::future::join_all(calls).await;
}

/// Returns once member `target` at `addr` reports itself the leader (`Log.GetServers`), polling.
async fn target_leads(dialer: &Dialer, addr: &str, target: NodeId) {
    let Ok(chan) = dialer.channel(addr) else {
        return std::future::pending().await;
    };
    let mut log = LogClient::new(chan);
    loop {
        if let Ok(r) = log.get_servers(GetServersRequest::default()).await {
            let leads = r
                .into_inner()
                .servers
                .iter()
                .any(|s| s.is_leader && s.node_id == target);
            if leads {
                return;
            }
        }
        // NB: a poll interval, not a wait for a fixed outcome.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the leader's replication metrics show `id` holding the leader's whole log.
async fn wait_caught_up(ctx: &Ctx, id: NodeId, timeout: Duration) -> Result<()> {
    let mut rx = ctx.raft.metrics();
    let caught_up = rx.wait_for(|m| {
        let last = m.last_log_index;
        let matched = m
            .replication
            .as_ref()
            .and_then(|r| r.get(&id).copied())
            .flatten()
            .map(|l| l.index);
        last.is_some() && matched >= last
    });
    match tokio::time::timeout(timeout, caught_up.map(|r| r.map(drop))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Error::ShuttingDown),
        Err(_) => Err(Error::NotCaughtUp { id, timeout }),
    }
}

/// Waits until the leader's replication metrics show every other voter holding its whole log.
async fn wait_voters_caught_up(ctx: &Ctx) {
    let mut rx = ctx.raft.metrics();
    let _ = rx
        .wait_for(|m| {
            let Some(last) = m.last_log_index else {
                return true;
            };
            let replication = m.replication.as_ref();
            m.membership_config
                .membership()
                .voter_ids()
                .filter(|&v| v != ctx.id)
                .all(|v| {
                    replication
                        .and_then(|r| r.get(&v).copied())
                        .flatten()
                        .is_some_and(|l| l.index >= last)
                })
        })
        .await;
}

/// Heartbeats (openraft's and the election driver's) stay off while this lives.
struct PauseHeartbeats<'a>(&'a Ctx);

impl<'a> PauseHeartbeats<'a> {
    fn new(ctx: &'a Ctx) -> Self {
        ctx.raft.runtime_config().heartbeat(false);
        ctx.liveness.set_quiet(true);
        PauseHeartbeats(ctx)
    }
}

impl Drop for PauseHeartbeats<'_> {
    fn drop(&mut self) {
        self.0.raft.runtime_config().heartbeat(true);
        self.0.liveness.set_quiet(false);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;

    use openraft::testing::log_id;

    use super::*;
    use crate::raft::{Member, Membership, StoredMembership};

    fn metrics(voters: &[NodeId], learners: &[NodeId], matched: &[(NodeId, u64)]) -> RaftMetrics {
        let mut m = RaftMetrics::new_initial(1);
        let nodes: BTreeMap<NodeId, Member> = voters
            .iter()
            .chain(learners)
            .map(|&id| {
                let addr = format!("m{id}:1");
                (
                    id,
                    Member {
                        addr,
                        name: String::new(),
                    },
                )
            })
            .collect();
        let voters: BTreeSet<NodeId> = voters.iter().copied().collect();
        let membership = Membership::new(vec![voters], nodes);
        m.membership_config = Arc::new(StoredMembership::new(None, membership));
        m.replication = Some(
            matched
                .iter()
                .map(|&(id, i)| (id, (i > 0).then(|| log_id(1, 1, i))))
                .collect(),
        );
        m
    }

    #[test]
    fn successors_are_other_voters_most_caught_up_first() {
        let m = metrics(&[1, 2, 3, 4], &[5], &[(2, 7), (3, 9), (4, 7), (5, 20)]);
        let ids: Vec<NodeId> = successors(&m, 1).into_iter().map(|s| s.0).collect();
        assert_eq!(ids, [3, 2, 4]);
        assert_eq!(successors(&m, 1)[0].1, "m3:1");
        // A voter nothing was replicated to comes last.
        let m = metrics(&[1, 2, 3], &[], &[(2, 0), (3, 1)]);
        let ids: Vec<NodeId> = successors(&m, 1).into_iter().map(|s| s.0).collect();
        assert_eq!(ids, [3, 2]);
    }

    #[test]
    fn no_successors_when_alone_or_not_leading() {
        assert!(successors(&metrics(&[1], &[], &[]), 1).is_empty());
        let mut m = metrics(&[1, 2, 3], &[], &[]);
        m.replication = None;
        assert!(successors(&m, 1).is_empty());
    }
}
