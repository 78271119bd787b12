//! Raft membership of one ProgLog: observe every member, plan ONE step toward the spec, take it.
//!
//! The rules are etcd operator's: a cluster starts as pod-0 alone; a member joins as a learner
//! and becomes a voter only once it has caught up; on scale-down leadership moves off the
//! members that go, then the highest ordinal is removed from the membership, and only then does
//! the StatefulSet shrink. One step per pass keeps every change small and observable (an Event
//! each), and the next pass starts from a fresh observation.
//!
//! [`plan`] is pure (observations in, one [`Action`] out) and unit-tested without gRPC;
//! [`observe`] and [`reconcile`] do the I/O through [`AdminPool`]. Nothing here talks to the
//! Kubernetes API: the controller passes the pods in and applies the StatefulSet size it gets.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use proglog_crds::MemberStatus;
use proglog_proto::v1 as pb;
use tonic::Code;

use crate::admin::{self, AdminPool};
use crate::names;

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
    /// The admin API's bearer token.
    pub token: String,
}

/// What a pass found and did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MembershipReport {
    /// What the StatefulSet's `spec.replicas` must be now.
    pub statefulset_replicas: i32,
    /// Pod name of the leader.
    pub leader: Option<String>,
    /// The leader's term.
    pub term: Option<u64>,
    /// Every member and pod, in ordinal order.
    pub members: Vec<MemberStatus>,
    /// What was done this pass, for an Event ("added demo-2 as a learner").
    pub step: Option<String>,
    /// Why nothing could be done ("demo-1 has no pod IP yet"), or why the step failed.
    pub waiting: Option<String>,
    /// Voters are exactly ordinals 0..desired, all healthy, a leader is known.
    pub settled: bool,
    /// A leader is known and a quorum of voters is healthy.
    pub available: bool,
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

/// Why a member is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoveReason {
    /// Its ordinal is >= spec.replicas.
    ScaleDown,
    /// It answers as a fresh member while the leader counts it as a voter: its data is gone.
    /// Removed, it rejoins as a learner and votes again only once it holds the log.
    LostData,
}

/// The one step a pass takes. Ordinals name pods; `leader` is the ordinal to call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing to do (settled, or waiting: see [`Plan::waiting`]).
    None,
    /// Make pod `ordinal` the only voter of a new cluster.
    Initialize { ordinal: u32 },
    /// Add pod `ordinal` as a learner.
    AddLearner { leader: u32, ordinal: u32 },
    /// Make the caught-up learner `ordinal` a voter: the new voter set is `voters` (node ids).
    Promote {
        leader: u32,
        ordinal: u32,
        voters: Vec<u64>,
    },
    /// Move leadership from `leader` (which is leaving) to the voter `to`. Should the transfer
    /// fail while `leader` still leads, `leader` is removed from the voters instead (the voter set
    /// becomes `without_leader`, node ids): it steps down once that is committed and the others
    /// elect a leader among themselves.
    TransferLeadership {
        leader: u32,
        to: u32,
        without_leader: Vec<u64>,
    },
    /// Remove member `ordinal` (voter or learner).
    Remove {
        leader: u32,
        ordinal: u32,
        reason: RemoveReason,
    },
}

/// The outcome of [`plan`].
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The step to take.
    pub action: Action,
    /// The StatefulSet size now (before the step).
    pub statefulset_replicas: i32,
    /// Ordinal of the leader, as the members with the highest term report it.
    pub leader: Option<u32>,
    /// The leader's term.
    pub term: Option<u64>,
    /// Every member and pod, in ordinal order.
    pub members: Vec<MemberStatus>,
    /// Why no step (or why not settled).
    pub waiting: Option<String>,
    /// See [`MembershipReport::settled`].
    pub settled: bool,
    /// See [`MembershipReport::available`].
    pub available: bool,
    /// Ordinals in the membership (voters and learners) as the leader sees it.
    pub member_ordinals: BTreeSet<u32>,
}

/// What the leader says of one member.
#[derive(Clone, Debug)]
struct Seen {
    voter: bool,
    lag: Option<u64>,
    addr: String,
}

/// An answer is from a member that belongs to some cluster.
fn initialized(s: &pb::ClusterStatus) -> bool {
    !s.members.is_empty()
}

fn role_name(r: pb::Role) -> &'static str {
    match r {
        pb::Role::Leader => "Leader",
        pb::Role::Follower => "Follower",
        pb::Role::Candidate => "Candidate",
        pb::Role::Learner => "Learner",
        pb::Role::Shutdown | pb::Role::Unspecified => "Unknown",
    }
}

/// The StatefulSet size: never below the spec, never below a member still in the membership
/// (scale-down shrinks only after removal), never shrinking when the membership is unknown.
pub fn statefulset_replicas(
    desired: u32,
    current: Option<u32>,
    members: Option<&BTreeSet<u32>>,
) -> i32 {
    let n = match members {
        Some(m) => desired.max(m.iter().next_back().map_or(0, |o| o + 1)),
        None => desired.max(current.unwrap_or(desired)),
    };
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Plans one step from what the members answered. Pure.
pub fn plan(
    name: &str,
    desired: u32,
    sts_replicas: Option<u32>,
    pods: &[PodInfo],
    observed: &Observations,
) -> Plan {
    let pod_of: BTreeMap<u32, &PodInfo> = pods.iter().map(|p| (p.ordinal, p)).collect();
    // Answers whose node id matches the pod's ordinal (anything else is a member we must not
    // trust: a reused IP, a misconfigured pod).
    let mut answered: BTreeMap<u32, &pb::ClusterStatus> = BTreeMap::new();
    let mut problems: BTreeMap<u32, String> = BTreeMap::new();
    for (&o, obs) in observed {
        match obs {
            Observation::Answered(s) if s.node_id == names::node_id(o) => {
                answered.insert(o, s);
            }
            Observation::Answered(s) => {
                problems.insert(
                    o,
                    format!(
                        "{} answers as node {}, expected {}",
                        names::pod(name, o),
                        s.node_id,
                        names::node_id(o)
                    ),
                );
            }
            Observation::Failed(e) => {
                problems.insert(o, format!("{} does not answer: {e}", names::pod(name, o)));
            }
        }
    }

    // The leader: the claim with the highest term (a deposed leader may still claim an older one).
    let mut claims: Vec<(u64, u32)> = answered
        .iter()
        .filter(|(_, s)| s.role() == pb::Role::Leader && s.leader_id == Some(s.node_id))
        .map(|(&o, s)| (s.term, o))
        .collect();
    claims.sort();
    let top = claims.last().copied();
    let tied = top.is_some_and(|(t, _)| claims.iter().filter(|(ct, _)| *ct == t).count() > 1);
    let leader_status = match top {
        Some((_, o)) if !tied => answered.get(&o).map(|s| (o, *s)),
        _ => None,
    };
    // What the followers with the highest term believe, for the report when the leader is mute.
    let reported_leader = answered
        .values()
        .filter_map(|s| Some((s.term, s.leader_id?)))
        .max()
        .and_then(|(t, id)| Some((names::ordinal_of(id)?, t)));

    let healthy = |o: u32| {
        answered.contains_key(&o) && pod_of.get(&o).is_some_and(|p| p.ready && !p.terminating)
    };

    let Some((lo, ls)) = leader_status else {
        return plan_without_leader(
            name,
            desired,
            sts_replicas,
            &pod_of,
            &answered,
            &problems,
            tied.then_some(top.map(|t| t.0).unwrap_or(0)),
            reported_leader,
        );
    };

    // The membership as the leader sees it.
    let seen: BTreeMap<u32, Seen> = ls
        .members
        .iter()
        .filter_map(|m| {
            Some((
                names::ordinal_of(m.node_id)?,
                Seen {
                    voter: m.voter,
                    lag: m.lag,
                    addr: m.addr.clone(),
                },
            ))
        })
        .collect();
    let member_ordinals: BTreeSet<u32> = seen.keys().copied().collect();
    let voters: BTreeSet<u32> = seen
        .iter()
        .filter(|(_, s)| s.voter)
        .map(|(&o, _)| o)
        .collect();
    let sts = statefulset_replicas(desired, sts_replicas, Some(&member_ordinals));

    let mut members = Vec::new();
    let all: BTreeSet<u32> = member_ordinals
        .iter()
        .copied()
        .chain(pod_of.keys().copied())
        .collect();
    for &o in &all {
        let role = match seen.get(&o) {
            Some(_) if o == lo => "Leader",
            Some(s) if s.voter => "Follower",
            Some(_) => "Learner",
            None => "NotMember",
        };
        let role = if answered.contains_key(&o) || !seen.contains_key(&o) {
            role
        } else {
            "Unknown"
        };
        members.push(MemberStatus {
            pod: names::pod(name, o),
            raft_id: names::node_id(o) as i64,
            role: role.to_string(),
            healthy: healthy(o),
            lag: seen
                .get(&o)
                .and_then(|s| s.lag)
                .map(|l| i64::try_from(l).unwrap_or(i64::MAX)),
            address: seen.get(&o).map(|s| s.addr.clone()),
        });
    }

    let healthy_voters = voters.iter().filter(|&&o| healthy(o)).count();
    let available = healthy_voters > voters.len() / 2;
    let pod = |o: u32| names::pod(name, o);

    let mut waiting: Vec<String> = Vec::new();
    let action = 'step: {
        // 0. A leader outside its own voter set has removed itself and is about to step down.
        if !voters.contains(&lo) {
            waiting.push(format!(
                "the leader {} is no voter any more and steps down; waiting for the next leader",
                pod(lo)
            ));
            break 'step Action::None;
        }
        // 1. A voter that lost its data must not vote: remove it; it rejoins as a learner.
        for &o in &voters {
            if o == lo {
                continue;
            }
            if let Some(s) = answered.get(&o) {
                if !initialized(s) {
                    break 'step Action::Remove {
                        leader: lo,
                        ordinal: o,
                        reason: RemoveReason::LostData,
                    };
                }
            }
        }
        // 2. Scale-down: leadership first, then the highest ordinal.
        let leaving: Vec<u32> = member_ordinals
            .iter()
            .copied()
            .filter(|&o| o >= desired)
            .collect();
        if !leaving.is_empty() {
            if lo >= desired {
                let target = voters
                    .iter()
                    .copied()
                    .filter(|&o| o < desired && healthy(o))
                    .min_by_key(|&o| (seen[&o].lag.unwrap_or(u64::MAX), o));
                match target {
                    Some(to) => {
                        break 'step Action::TransferLeadership {
                            leader: lo,
                            to,
                            without_leader: voters
                                .iter()
                                .filter(|&&v| v != lo)
                                .map(|&v| names::node_id(v))
                                .collect(),
                        }
                    }
                    None => {
                        waiting.push(format!(
                            "no healthy voter below ordinal {desired} to move leadership to"
                        ));
                        break 'step Action::None;
                    }
                }
            }
            let o = *leaving.last().expect("not empty");
            break 'step Action::Remove {
                leader: lo,
                ordinal: o,
                reason: RemoveReason::ScaleDown,
            };
        }
        // 3. Promote a caught-up learner.
        let learners: Vec<u32> = seen
            .iter()
            .filter(|(&o, s)| !s.voter && o < desired)
            .map(|(&o, _)| o)
            .collect();
        for &o in &learners {
            match (answered.contains_key(&o), seen[&o].lag) {
                (true, Some(lag)) if lag <= PROMOTE_MAX_LAG => {
                    let mut ids: Vec<u64> = voters.iter().map(|&v| names::node_id(v)).collect();
                    ids.push(names::node_id(o));
                    ids.sort_unstable();
                    break 'step Action::Promote {
                        leader: lo,
                        ordinal: o,
                        voters: ids,
                    };
                }
                (true, lag) => waiting.push(format!(
                    "learner {} is catching up ({} entries behind)",
                    pod(o),
                    lag.map_or("unknown".into(), |l| l.to_string())
                )),
                (false, _) => waiting.push(
                    problems
                        .get(&o)
                        .cloned()
                        .unwrap_or_else(|| format!("learner {} does not answer", pod(o))),
                ),
            }
        }
        // 4. Add the lowest missing ordinal as a learner.
        if let Some(o) = (0..desired).find(|o| !member_ordinals.contains(o)) {
            match pod_of.get(&o) {
                None => waiting.push(format!("{} does not exist yet", pod(o))),
                Some(p) if p.terminating => waiting.push(format!("{} is terminating", pod(o))),
                Some(p) if p.ip.is_none() => waiting.push(format!("{} has no pod IP yet", pod(o))),
                Some(_) if !answered.contains_key(&o) => waiting.push(
                    problems
                        .get(&o)
                        .cloned()
                        .unwrap_or_else(|| format!("{} does not answer", pod(o))),
                ),
                Some(_) => {
                    break 'step Action::AddLearner {
                        leader: lo,
                        ordinal: o,
                    }
                }
            }
        }
        Action::None
    };

    let unhealthy: Vec<String> = voters
        .iter()
        .filter(|&&o| !healthy(o))
        .map(|&o| match (problems.get(&o), pod_of.get(&o)) {
            (Some(why), _) => why.clone(),
            (None, None) => format!("{} has no pod", pod(o)),
            (None, Some(p)) if p.terminating => format!("{} is terminating", pod(o)),
            (None, Some(p)) if p.ip.is_none() => format!("{} has no pod IP", pod(o)),
            (None, Some(_)) => format!("{} is not ready", pod(o)),
        })
        .collect();
    let exact = voters == (0..desired).collect::<BTreeSet<u32>>() && member_ordinals == voters;
    let settled = action == Action::None
        && exact
        && unhealthy.is_empty()
        && sts == desired as i32
        && sts_replicas == Some(desired);
    if action == Action::None && !settled {
        if !unhealthy.is_empty() {
            waiting.push(format!("not healthy: {}", unhealthy.join("; ")));
        }
        if exact && sts_replicas != Some(desired) {
            waiting.push(format!("the StatefulSet is being resized to {sts}"));
        }
    }
    Plan {
        action,
        statefulset_replicas: sts,
        leader: Some(lo),
        term: Some(ls.term),
        members,
        waiting: (!waiting.is_empty()).then(|| waiting.join("; ")),
        settled,
        available,
        member_ordinals,
    }
}

/// The plan when no member answers as leader: initialize a fresh cluster, or wait.
#[allow(clippy::too_many_arguments)]
fn plan_without_leader(
    name: &str,
    desired: u32,
    sts_replicas: Option<u32>,
    pod_of: &BTreeMap<u32, &PodInfo>,
    answered: &BTreeMap<u32, &pb::ClusterStatus>,
    problems: &BTreeMap<u32, String>,
    tied_term: Option<u64>,
    reported_leader: Option<(u32, u64)>,
) -> Plan {
    let sts = statefulset_replicas(desired, sts_replicas, None);
    let members = pod_of
        .values()
        .map(|p| {
            let s = answered.get(&p.ordinal);
            MemberStatus {
                pod: p.name.clone(),
                raft_id: names::node_id(p.ordinal) as i64,
                role: match s {
                    Some(s) if initialized(s) => role_name(s.role()),
                    Some(_) => "NotMember",
                    None => "Unknown",
                }
                .to_string(),
                healthy: s.is_some() && p.ready && !p.terminating,
                lag: None,
                address: None,
            }
        })
        .collect();
    let any_initialized = answered.values().any(|s| initialized(s));
    let mut action = Action::None;
    let waiting = if let Some(t) = tied_term {
        format!("two members claim to lead term {t}; waiting for Raft to settle it")
    } else if any_initialized {
        match reported_leader {
            Some((o, t)) if answered.contains_key(&o) => format!(
                "{} led term {t} and no longer does; waiting for an election",
                names::pod(name, o)
            ),
            Some((o, t)) => format!(
                "the leader {} (term {t}) does not answer",
                names::pod(name, o)
            ),
            None => "no leader: an election is under way".to_string(),
        }
    } else {
        // NB: initialize only when every pod the StatefulSet should have answered as fresh, so
        // that a member holding the cluster's state that is merely slow never sees a second
        // cluster started beside it.
        match sts_replicas {
            None => "the StatefulSet is being created".to_string(),
            Some(n) => {
                let missing: Vec<String> = (0..n.max(1))
                    .filter(|o| !answered.contains_key(o))
                    .map(|o| match (pod_of.get(&o), problems.get(&o)) {
                        (_, Some(p)) => p.clone(),
                        (None, None) => format!("{} does not exist yet", names::pod(name, o)),
                        (Some(p), None) if p.ip.is_none() => {
                            format!("{} has no pod IP yet", p.name)
                        }
                        (Some(p), None) => format!("{} does not answer", p.name),
                    })
                    .collect();
                if missing.is_empty() {
                    action = Action::Initialize { ordinal: 0 };
                    String::new()
                } else {
                    format!("before initializing: {}", missing.join("; "))
                }
            }
        }
    };
    Plan {
        action,
        statefulset_replicas: sts,
        leader: reported_leader.map(|(o, _)| o),
        term: reported_leader.map(|(_, t)| t),
        members,
        waiting: (!waiting.is_empty()).then_some(waiting),
        settled: false,
        available: false,
        member_ordinals: BTreeSet::new(),
    }
}

/// Asks every pod with an IP for its Status, all at once, bounded by [`OBSERVE_TIMEOUT`].
pub async fn observe(pool: &AdminPool, input: &MembershipInput) -> Result<Observations> {
    let mut calls = Vec::new();
    for p in &input.pods {
        let Some(ip) = &p.ip else { continue };
        let client = pool.client(&pod_addr(ip, input.port), &input.token)?;
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
        term: p.term,
        members: p.members.clone(),
        step: None,
        waiting: p.waiting.clone(),
        settled: p.settled,
        available: p.available,
    };
    if p.action == Action::None {
        return Ok(report);
    }
    tracing::info!(action = ?p.action, "membership step");
    match execute(pool, input, &p, &member_addr).await {
        Ok(step) => {
            if let Action::Remove { ordinal, .. } = p.action {
                let mut left = p.member_ordinals.clone();
                left.remove(&ordinal);
                report.statefulset_replicas =
                    statefulset_replicas(input.desired, input.sts_replicas, Some(&left));
            }
            report.step = Some(step);
            report.waiting = None;
            report.settled = false;
        }
        Err(e) => {
            tracing::warn!(action = ?p.action, "membership step failed: {e}");
            report.waiting = Some(format!("{}: {e}", describe(&input.name, &p.action)));
        }
    }
    Ok(report)
}

fn describe(name: &str, a: &Action) -> String {
    let pod = |o: u32| names::pod(name, o);
    match *a {
        Action::None => "nothing".into(),
        Action::Initialize { ordinal } => format!("initializing {}", pod(ordinal)),
        Action::AddLearner { ordinal, .. } => format!("adding {} as a learner", pod(ordinal)),
        Action::Promote { ordinal, .. } => format!("promoting {} to voter", pod(ordinal)),
        Action::TransferLeadership { leader, to, .. } => {
            format!("moving leadership from {} to {}", pod(leader), pod(to))
        }
        Action::Remove { ordinal, .. } => format!("removing {}", pod(ordinal)),
    }
}

/// Takes the planned step; returns what was done, for an Event.
async fn execute(
    pool: &AdminPool,
    input: &MembershipInput,
    p: &Plan,
    member_addr: &impl Fn(u32) -> String,
) -> admin::Result<String> {
    let name = &input.name;
    let pod = |o: u32| names::pod(name, o);
    let client = |o: u32| -> admin::Result<admin::AdminClient> {
        let ip = input
            .pods
            .iter()
            .find(|p| p.ordinal == o)
            .and_then(|p| p.ip.as_deref())
            .unwrap_or_default();
        pool.client(&pod_addr(ip, input.port), &input.token)
    };
    match p.action.clone() {
        Action::None => Ok("nothing".into()),
        Action::Initialize { ordinal } => match client(ordinal)?.initialize(Vec::new()).await {
            Ok(()) => Ok(format!("initialized a new cluster with {}", pod(ordinal))),
            Err(e) if e.code() == Code::AlreadyExists => {
                Ok(format!("{} was initialized already", pod(ordinal)))
            }
            Err(e) => Err(e),
        },
        Action::AddLearner { leader, ordinal } => {
            let c = client(leader)?;
            let mut progress = c
                .add_learner(pb::Member {
                    node_id: names::node_id(ordinal),
                    addr: member_addr(ordinal),
                    name: pod(ordinal),
                })
                .await?;
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
                Ok(Ok(Some(m))) if m.caught_up => {
                    format!("added {} as a learner; it has caught up", pod(ordinal))
                }
                Ok(Ok(Some(m))) => format!(
                    "added {} as a learner; it holds {} of {} entries",
                    pod(ordinal),
                    m.matched_index,
                    m.leader_last_index
                ),
                Ok(Ok(None)) | Err(_) => {
                    format!("added {} as a learner; it is catching up", pod(ordinal))
                }
                Ok(Err(e)) => return Err(e),
            })
        }
        Action::Promote {
            leader,
            ordinal,
            voters,
        } => {
            client(leader)?.change_membership(voters, false).await?;
            Ok(format!("promoted {} to voter", pod(ordinal)))
        }
        Action::TransferLeadership {
            leader,
            to,
            without_leader,
        } => {
            let c = client(leader)?;
            let failed = match c.transfer_leadership(names::node_id(to)).await {
                Ok(now) => {
                    let now = names::ordinal_of(now).map_or_else(|| "?".into(), pod);
                    return Ok(format!(
                        "moved leadership from {} to {now} ahead of removing it",
                        pod(leader)
                    ));
                }
                Err(e) => e,
            };
            // NB: openraft 0.9 has no transfer of its own; the member's emulation can fail (e.g.
            // under steady writes the followers' leader lease never lapses). Removing the leader
            // from the voters is always possible: it commits the change, steps down, and the
            // remaining voters elect one of themselves after an election timeout.
            if c.status().await?.role() != pb::Role::Leader {
                return Ok(format!(
                    "leadership moved off {} (transfer reported: {failed})",
                    pod(leader)
                ));
            }
            tracing::warn!("leadership transfer failed: {failed}; removing the leader instead");
            c.change_membership(without_leader, false).await?;
            Ok(format!(
                "removed {} (the leader) from the voters after leadership transfer failed ({failed}); it steps down and the others elect a leader",
                pod(leader)
            ))
        }
        Action::Remove {
            leader,
            ordinal,
            reason,
        } => {
            client(leader)?
                .remove_member(names::node_id(ordinal))
                .await?;
            Ok(match reason {
                RemoveReason::ScaleDown => {
                    format!("removed {} from the membership (scale-down)", pod(ordinal))
                }
                RemoveReason::LostData => format!(
                    "removed {} from the membership: it lost its data; it rejoins as a learner",
                    pod(ordinal)
                ),
            })
        }
    }
}

#[cfg(test)]
#[path = "membership_tests.rs"]
mod tests;
