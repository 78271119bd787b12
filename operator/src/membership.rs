//! Raft membership of one ProgLog: observe every member, plan ONE step toward the spec, take it.
//!
//! The rules are etcd operator's: a cluster starts as pod-0 alone; a member joins as a learner
//! and becomes a voter only once it has caught up; on scale-down leadership moves off the
//! members that go, then the highest ordinal is removed from the membership, and only then does
//! the StatefulSet shrink. One step per pass keeps every change small and observable (an Event
//! each), and the next pass starts from a fresh observation.
//!
//! [`plan`] (in `planner`) is pure (observations in, one [`Step`] out) and unit-tested without
//! gRPC; [`observe`] and [`reconcile`] do the I/O through [`AdminPool`] and report the step taken
//! as a typed [`Taken`] (`step`). Nothing here talks to the
//! Kubernetes API: the controller passes the pods in and applies the StatefulSet size it gets.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use proglog_crds::{MemberStatus, RolloutStatus};
use proglog_proto::v1 as pb;
use tonic::Code;

use crate::admin::{self, AdminPool, ClusterAuth};
use crate::names;
pub use crate::planner::{plan, statefulset_replicas, Plan};
pub use crate::step::{Handover, Outcome, RemoveReason, Step, Taken};

/// How long observing every member may take in all.
pub const OBSERVE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a pass waits for a new learner to catch up before it returns (the learner keeps
/// catching up; a later pass promotes it).
pub const ADD_LEARNER_WAIT: Duration = Duration::from_secs(10);
/// A learner at most this many entries behind the leader is promoted.
pub const PROMOTE_MAX_LAG: u64 = 64;

/// Errors of a membership pass. A failed step is not an error: it is reported in
/// [`MembershipReport::waiting`] and the next pass starts over.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The admin token cannot be sent, or a pod address is malformed.
    #[error(transparent)]
    Admin(#[from] admin::Error),
}

/// Result with the membership [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One pod of the StatefulSet, as the controller sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    /// Pod name (`<name>-<ordinal>`).
    pub name: String,
    /// Its ordinal.
    pub ordinal: u32,
    /// Pod IP, once it has one.
    pub ip: Option<String>,
    /// The Ready condition.
    pub ready: bool,
    /// `metadata.deletionTimestamp` is set.
    pub terminating: bool,
}

/// What one membership pass works from.
#[derive(Clone, Debug)]
pub struct MembershipInput {
    /// Namespace of the ProgLog.
    pub namespace: String,
    /// Name of the ProgLog.
    pub name: String,
    /// `spec.replicas`.
    pub desired: u32,
    /// `spec.replicas` of the StatefulSet now (None: no StatefulSet yet).
    pub sts_replicas: Option<u32>,
    /// The pods of the StatefulSet.
    pub pods: Vec<PodInfo>,
    /// The members' gRPC port.
    pub port: i32,
    /// The cluster DNS domain (`cluster.local`), for the addresses members advertise.
    pub cluster_domain: String,
    /// How to call the members' admin API.
    pub auth: ClusterAuth,
}

/// What a pass found and did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MembershipReport {
    /// What the StatefulSet's `spec.replicas` must be now.
    pub statefulset_replicas: i32,
    /// Pod name of the leader.
    pub leader: Option<String>,
    /// Ordinal of the leader.
    pub leader_ordinal: Option<u32>,
    /// Ordinals of the voters, as the leader sees them (empty without a leader).
    pub voters: BTreeSet<u32>,
    /// Ordinals of every member (voters and learners), as the leader sees them.
    pub member_ordinals: BTreeSet<u32>,
    /// The leader's term.
    pub term: Option<u64>,
    /// Every member and pod, in ordinal order.
    pub members: Vec<MemberStatus>,
    /// The step taken this pass and what it did (for the Event, the metric and the status).
    pub step: Option<Taken>,
    /// Why nothing could be done ("demo-1 has no pod IP yet"), or why the step failed.
    pub waiting: Option<String>,
    /// Voters are exactly ordinals 0..desired, all healthy, a leader is known.
    pub settled: bool,
    /// A leader is known and a quorum of voters is healthy.
    pub available: bool,
    /// The rolling update, once the StatefulSet has a revision (set by `rollout`).
    pub rollout: Option<RolloutStatus>,
}

/// What one member answered (or not).
#[derive(Clone, Debug, PartialEq)]
pub enum Observation {
    /// Its Status.
    Answered(pb::ClusterStatus),
    /// The call failed (not reachable, refused, timed out).
    Failed(String),
}

/// Observations by ordinal (pods with an IP only).
pub type Observations = BTreeMap<u32, Observation>;

/// Asks every pod with an IP for its Status, all at once, bounded by [`OBSERVE_TIMEOUT`].
pub async fn observe(pool: &AdminPool, input: &MembershipInput) -> Result<Observations> {
    let mut calls = Vec::new();
    for p in &input.pods {
        let Some(ip) = &p.ip else { continue };
        let client = pool.client(&pod_addr(ip, input.port), &input.auth.member(p.ordinal)?)?;
        let ordinal = p.ordinal;
        calls.push(async move {
            let o = match tokio::time::timeout(OBSERVE_TIMEOUT, client.status()).await {
                Ok(Ok(s)) => Observation::Answered(s),
                Ok(Err(e)) => Observation::Failed(e.to_string()),
                Err(_) => Observation::Failed(format!("no answer within {OBSERVE_TIMEOUT:?}")),
            };
            (ordinal, o)
        });
    }
    Ok(futures::future::join_all(calls).await.into_iter().collect())
}

/// `ip:port` (IPv6 in brackets).
pub fn pod_addr(ip: &str, port: i32) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// Observes the members and takes at most one step toward `input.desired` voters.
#[tracing::instrument(skip_all, fields(ns = %input.namespace, name = %input.name))]
pub async fn reconcile(pool: &AdminPool, input: &MembershipInput) -> Result<MembershipReport> {
    let ns = input.namespace.clone();
    let name = input.name.clone();
    let domain = input.cluster_domain.clone();
    let port = input.port;
    reconcile_with(pool, input, move |ordinal| {
        names::member_address(&name, &ns, ordinal, &domain, port)
    })
    .await
}

/// [`reconcile`] with the address a member is added under given by `member_addr(ordinal)`
/// (tests on loopback use `ip:port`; in Kubernetes it is [`names::member_address`]).
pub async fn reconcile_with(
    pool: &AdminPool,
    input: &MembershipInput,
    member_addr: impl Fn(u32) -> String,
) -> Result<MembershipReport> {
    let observed = observe(pool, input).await?;
    let p = plan(
        &input.name,
        input.desired,
        input.sts_replicas,
        &input.pods,
        &observed,
    );
    let mut report = MembershipReport {
        statefulset_replicas: p.statefulset_replicas,
        leader: p.leader.map(|o| names::pod(&input.name, o)),
        leader_ordinal: p.leader,
        voters: p.voters.clone(),
        member_ordinals: p.member_ordinals.clone(),
        term: p.term,
        members: p.members.clone(),
        step: None,
        waiting: p.waiting.clone(),
        settled: p.settled,
        available: p.available,
        rollout: None,
    };
    let Some(step) = p.action.clone() else {
        return Ok(report);
    };
    tracing::info!(?step, "membership step");
    match execute(pool, input, &step, &member_addr).await {
        Ok(outcome) => {
            if let Step::Remove { ordinal, .. } = step {
                let mut left = p.member_ordinals.clone();
                left.remove(&ordinal);
                report.statefulset_replicas =
                    statefulset_replicas(input.desired, input.sts_replicas, Some(&left));
            }
            report.step = Some(Taken {
                cluster: input.name.clone(),
                step,
                outcome,
            });
            report.waiting = None;
            report.settled = false;
        }
        Err(e) => {
            tracing::warn!(?step, "membership step failed: {e}");
            report.waiting = Some(format!("{}: {e}", step.describe(&input.name)));
        }
    }
    Ok(report)
}

/// Takes the planned step; returns what it did.
async fn execute(
    pool: &AdminPool,
    input: &MembershipInput,
    step: &Step,
    member_addr: &impl Fn(u32) -> String,
) -> admin::Result<Outcome> {
    let client = |o: u32| -> admin::Result<admin::AdminClient> {
        let ip = input
            .pods
            .iter()
            .find(|p| p.ordinal == o)
            .and_then(|p| p.ip.as_deref())
            .unwrap_or_default();
        pool.client(&pod_addr(ip, input.port), &input.auth.member(o)?)
    };
    match step.clone() {
        Step::Initialize { ordinal } => match client(ordinal)?.initialize(Vec::new()).await {
            Ok(()) => Ok(Outcome::Initialized),
            Err(e) if e.code() == Code::AlreadyExists => Ok(Outcome::AlreadyInitialized),
            Err(e) => Err(e),
        },
        Step::AddLearner { leader, ordinal } => {
            let member = pb::Member {
                node_id: names::node_id(ordinal),
                addr: member_addr(ordinal),
                name: names::pod(&input.name, ordinal),
            };
            add_learner(&client(leader)?, member).await
        }
        Step::Promote { leader, voters, .. } => {
            client(leader)?.change_membership(voters, false).await?;
            Ok(Outcome::Promoted)
        }
        Step::TransferLeadership {
            leader,
            to,
            why: Handover::Leaving { without_leader },
        } => transfer_or_step_down(&client(leader)?, to, without_leader).await,
        Step::TransferLeadership {
            leader,
            to,
            why: Handover::Restart { .. },
        } => hand_over(&client(leader)?, to).await,
        Step::Remove {
            leader, ordinal, ..
        } => {
            client(leader)?
                .remove_member(names::node_id(ordinal))
                .await?;
            Ok(Outcome::Removed)
        }
        // NB: a restart deletes a pod, which is the controller's business (`rollout`); the
        // membership planner never plans one.
        Step::Restart { .. } => Err(admin::Error::Rpc {
            addr: String::new(),
            code: Code::Unimplemented,
            message: "a restart is taken by the rollout, not by the membership".into(),
            leader_hint: None,
        }),
    }
}

/// Takes `step` (a leadership hand-over of a rolling update) the way a pass takes its own.
pub async fn take(
    pool: &AdminPool,
    input: &MembershipInput,
    step: &Step,
) -> admin::Result<Outcome> {
    execute(pool, input, step, &|o| {
        names::member_address(
            &input.name,
            &input.namespace,
            o,
            &input.cluster_domain,
            input.port,
        )
    })
    .await
}

/// Moves leadership from the leader `c` to `to` ahead of restarting the leader. No fallback: a
/// failed transfer is only reported, the leader keeps leading, a later pass tries again.
async fn hand_over(c: &admin::AdminClient, to: u32) -> admin::Result<Outcome> {
    let now = c.transfer_leadership(names::node_id(to)).await?;
    Ok(Outcome::LeadershipMoved {
        to: names::ordinal_of(now),
    })
}

/// Adds `member` as a learner through the leader `c` and waits up to [`ADD_LEARNER_WAIT`] for it
/// to catch up (a later pass promotes it either way).
async fn add_learner(c: &admin::AdminClient, member: pb::Member) -> admin::Result<Outcome> {
    let mut progress = c.add_learner(member).await?;
    let waited = tokio::time::timeout(ADD_LEARNER_WAIT, async {
        let mut last = None;
        loop {
            match progress.message().await {
                Ok(Some(m)) if m.caught_up => return Ok(Some(m)),
                Ok(Some(m)) => last = Some(m),
                Ok(None) => return Ok(last),
                Err(s) => return Err(admin::stream_error(c.addr(), s)),
            }
        }
    })
    .await;
    Ok(match waited {
        Ok(Ok(Some(m))) if m.caught_up => Outcome::LearnerCaughtUp,
        Ok(Ok(Some(m))) => Outcome::LearnerHolds {
            matched: m.matched_index,
            of: m.leader_last_index,
        },
        Ok(Ok(None)) | Err(_) => Outcome::LearnerCatchingUp,
        Ok(Err(e)) => return Err(e),
    })
}

/// Moves leadership from the leader `c` to `to`; should that fail while `c` still leads, takes
/// `c` out of the voters (the voter set becomes `without_leader`).
async fn transfer_or_step_down(
    c: &admin::AdminClient,
    to: u32,
    without_leader: Vec<u64>,
) -> admin::Result<Outcome> {
    let error = match c.transfer_leadership(names::node_id(to)).await {
        Ok(now) => {
            return Ok(Outcome::LeadershipMoved {
                to: names::ordinal_of(now),
            })
        }
        Err(e) => e.to_string(),
    };
    // NB: openraft 0.9 has no transfer of its own; the member's emulation can fail (e.g. under
    // steady writes the followers' leader lease never lapses). Removing the leader from the
    // voters is always possible: it commits the change, steps down, and the remaining voters
    // elect one of themselves after an election timeout.
    if c.status().await?.role() != pb::Role::Leader {
        return Ok(Outcome::LeadershipLeft { error });
    }
    tracing::warn!("leadership transfer failed: {error}; removing the leader instead");
    c.change_membership(without_leader, false).await?;
    Ok(Outcome::LeaderRemovedFromVoters { error })
}

#[cfg(test)]
#[path = "membership_tests.rs"]
mod tests;
