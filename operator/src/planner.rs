//! The membership planner: what every member answered in, ONE [`Step`] (or none, with the reason)
//! out. Pure, unit-tested with plain values (`membership_tests.rs`).
//!
//! [`plan`] runs in phases, each a function of its own: sort the answers (trust only a node id
//! that matches the pod's ordinal), find the leader (the highest-term claim), read the membership
//! as the leader sees it, report every member, then choose the step - the first phase that has
//! one wins: a leader that left its voters, a voter that lost its data, scale-down (leadership
//! first, then the highest ordinal), promote a caught-up learner, add the lowest missing ordinal
//! - and finally say whether the cluster is settled. Without a leader: initialize or wait.

use std::collections::{BTreeMap, BTreeSet};

use proglog_crds::MemberStatus;
use proglog_proto::v1 as pb;

use crate::membership::{Observation, Observations, PodInfo, PROMOTE_MAX_LAG};
use crate::names;
use crate::step::{Handover, RemoveReason, Step};

/// The outcome of [`plan`].
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The step to take, if any (see [`Plan::waiting`] when none).
    pub action: Option<Step>,
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
    /// Voters are exactly ordinals 0..desired, all healthy, a leader is known.
    pub settled: bool,
    /// A leader is known and a quorum of voters is healthy.
    pub available: bool,
    /// Ordinals in the membership (voters and learners) as the leader sees it.
    pub member_ordinals: BTreeSet<u32>,
    /// The voters among them.
    pub voters: BTreeSet<u32>,
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
    let answers = sort_answers(name, observed);
    let claim = find_leader(&answers.answered);
    let Some((leader, status)) = claim.leader else {
        return plan_without_leader(name, desired, sts_replicas, &pod_of, &answers, &claim);
    };
    let c = Cluster {
        name,
        desired,
        pod_of,
        answers,
        view: leader_view(status, leader),
    };
    let sts = statefulset_replicas(desired, sts_replicas, Some(&c.view.ordinals));
    let mut waiting = Vec::new();
    let action = choose_step(&c, &mut waiting);
    let settled = settle(&c, action.is_some(), sts, sts_replicas, &mut waiting);
    let healthy_voters = c.view.voters.iter().filter(|&&o| c.healthy(o)).count();
    Plan {
        action,
        statefulset_replicas: sts,
        leader: Some(leader),
        term: Some(status.term),
        members: member_statuses(&c),
        waiting: (!waiting.is_empty()).then(|| waiting.join("; ")),
        settled,
        available: healthy_voters > c.view.voters.len() / 2,
        member_ordinals: c.view.ordinals.clone(),
        voters: c.view.voters.clone(),
    }
}

/// Answers by ordinal, split into those to trust and the problems of the others.
struct Answers<'a> {
    answered: BTreeMap<u32, &'a pb::ClusterStatus>,
    problems: BTreeMap<u32, String>,
}

/// Phase 1: trust an answer only from the node id that matches the pod's ordinal (anything else
/// is a member we must not trust: a reused IP, a misconfigured pod).
fn sort_answers<'a>(name: &str, observed: &'a Observations) -> Answers<'a> {
    let mut a = Answers {
        answered: BTreeMap::new(),
        problems: BTreeMap::new(),
    };
    for (&o, obs) in observed {
        let pod = names::pod(name, o);
        match obs {
            Observation::Answered(s) if s.node_id == names::node_id(o) => {
                a.answered.insert(o, s);
            }
            Observation::Answered(s) => {
                let want = names::node_id(o);
                let why = format!("{pod} answers as node {}, expected {want}", s.node_id);
                a.problems.insert(o, why);
            }
            Observation::Failed(e) => {
                a.problems.insert(o, format!("{pod} does not answer: {e}"));
            }
        }
    }
    a
}

/// Who leads, as far as the answers tell.
struct LeaderClaim<'a> {
    /// The one claim with the highest term (a deposed leader may still claim an older one).
    leader: Option<(u32, &'a pb::ClusterStatus)>,
    /// Two members claim the highest term.
    tied_term: Option<u64>,
    /// The leader the answers with the highest term name, and that term (for the report when
    /// the leader itself is mute).
    reported: Option<(u32, u64)>,
}

/// Phase 2: the leader.
fn find_leader<'a>(answered: &BTreeMap<u32, &'a pb::ClusterStatus>) -> LeaderClaim<'a> {
    let mut claims: Vec<(u64, u32)> = answered
        .iter()
        .filter(|(_, s)| s.role() == pb::Role::Leader && s.leader_id == Some(s.node_id))
        .map(|(&o, s)| (s.term, o))
        .collect();
    claims.sort();
    let top = claims.last().copied();
    let tied = top.is_some_and(|(t, _)| claims.iter().filter(|(ct, _)| *ct == t).count() > 1);
    let leader = match top {
        Some((_, o)) if !tied => answered.get(&o).map(|s| (o, *s)),
        _ => None,
    };
    let reported = answered
        .values()
        .filter_map(|s| Some((s.term, s.leader_id?)))
        .max()
        .and_then(|(t, id)| Some((names::ordinal_of(id)?, t)));
    LeaderClaim {
        leader,
        tied_term: tied.then(|| top.map_or(0, |t| t.0)),
        reported,
    }
}

/// What the leader says of one member.
#[derive(Clone, Debug)]
struct Seen {
    voter: bool,
    lag: Option<u64>,
    addr: String,
}

/// The membership as the leader sees it.
struct View {
    leader: u32,
    seen: BTreeMap<u32, Seen>,
    voters: BTreeSet<u32>,
    /// Voters and learners.
    ordinals: BTreeSet<u32>,
}

/// Phase 3: read the leader's membership.
fn leader_view(ls: &pb::ClusterStatus, leader: u32) -> View {
    let seen: BTreeMap<u32, Seen> = ls
        .members
        .iter()
        .filter_map(|m| {
            let s = Seen {
                voter: m.voter,
                lag: m.lag,
                addr: m.addr.clone(),
            };
            Some((names::ordinal_of(m.node_id)?, s))
        })
        .collect();
    let voters = seen
        .iter()
        .filter(|(_, s)| s.voter)
        .map(|(&o, _)| o)
        .collect();
    View {
        leader,
        ordinals: seen.keys().copied().collect(),
        seen,
        voters,
    }
}

/// What the phases after the leader is known work from.
struct Cluster<'a> {
    name: &'a str,
    desired: u32,
    pod_of: BTreeMap<u32, &'a PodInfo>,
    answers: Answers<'a>,
    view: View,
}

impl Cluster<'_> {
    fn pod(&self, o: u32) -> String {
        names::pod(self.name, o)
    }

    /// Answered, and its pod is ready and not going away.
    fn healthy(&self, o: u32) -> bool {
        self.answers.answered.contains_key(&o)
            && (self.pod_of.get(&o)).is_some_and(|p| p.ready && !p.terminating)
    }

    /// Why `o` did not answer (its problem, else `fallback`).
    fn problem(&self, o: u32, fallback: impl FnOnce() -> String) -> String {
        self.answers
            .problems
            .get(&o)
            .cloned()
            .unwrap_or_else(fallback)
    }
}

/// Phase 4: every member and pod, in ordinal order.
fn member_statuses(c: &Cluster) -> Vec<MemberStatus> {
    let all: BTreeSet<u32> = c
        .view
        .ordinals
        .iter()
        .chain(c.pod_of.keys())
        .copied()
        .collect();
    all.into_iter()
        .map(|o| {
            let seen = c.view.seen.get(&o);
            let role = match seen {
                Some(_) if !c.answers.answered.contains_key(&o) => "Unknown",
                Some(_) if o == c.view.leader => "Leader",
                Some(s) if s.voter => "Follower",
                Some(_) => "Learner",
                None => "NotMember",
            };
            MemberStatus {
                pod: c.pod(o),
                raft_id: names::node_id(o) as i64,
                role: role.to_string(),
                healthy: c.healthy(o),
                lag: seen
                    .and_then(|s| s.lag)
                    .map(|l| i64::try_from(l).unwrap_or(i64::MAX)),
                address: seen.map(|s| s.addr.clone()),
            }
        })
        .collect()
}

/// What a phase of [`choose_step`] decided.
enum Phase {
    /// Take this step.
    Take(Step),
    /// No step this pass (the reason is in `waiting`).
    Stop,
    /// Nothing for this phase: ask the next one.
    Next,
}

/// Phase 5: the step, from the first phase that has one.
fn choose_step(c: &Cluster, waiting: &mut Vec<String>) -> Option<Step> {
    let phases: [fn(&Cluster, &mut Vec<String>) -> Phase; 5] = [
        leader_left_voters,
        voter_lost_data,
        scale_down,
        promote_learner,
        add_learner,
    ];
    for phase in phases {
        match phase(c, waiting) {
            Phase::Take(step) => return Some(step),
            Phase::Stop => return None,
            Phase::Next => {}
        }
    }
    None
}

/// A leader outside its own voter set has removed itself and is about to step down.
fn leader_left_voters(c: &Cluster, waiting: &mut Vec<String>) -> Phase {
    if c.view.voters.contains(&c.view.leader) {
        return Phase::Next;
    }
    waiting.push(format!(
        "the leader {} is no voter any more and steps down; waiting for the next leader",
        c.pod(c.view.leader)
    ));
    Phase::Stop
}

/// A voter that answers as fresh lost its data and must not vote: remove it (it rejoins as a
/// learner).
fn voter_lost_data(c: &Cluster, _: &mut Vec<String>) -> Phase {
    let lost = (c.view.voters.iter().copied())
        .filter(|&o| o != c.view.leader)
        .find(|o| {
            c.answers
                .answered
                .get(o)
                .is_some_and(|s| s.members.is_empty())
        });
    match lost {
        Some(ordinal) => Phase::Take(Step::Remove {
            leader: c.view.leader,
            ordinal,
            reason: RemoveReason::LostData,
        }),
        None => Phase::Next,
    }
}

/// Scale-down: leadership off a leaving leader first, then remove the highest ordinal.
fn scale_down(c: &Cluster, waiting: &mut Vec<String>) -> Phase {
    let (lo, desired) = (c.view.leader, c.desired);
    let Some(&highest) = c.view.ordinals.iter().rfind(|&&o| o >= desired) else {
        return Phase::Next;
    };
    if lo < desired {
        return Phase::Take(Step::Remove {
            leader: lo,
            ordinal: highest,
            reason: RemoveReason::ScaleDown,
        });
    }
    let target = (c.view.voters.iter().copied())
        .filter(|&o| o < desired && c.healthy(o))
        .min_by_key(|&o| (c.view.seen[&o].lag.unwrap_or(u64::MAX), o));
    let Some(to) = target else {
        waiting.push(format!(
            "no healthy voter below ordinal {desired} to move leadership to"
        ));
        return Phase::Stop;
    };
    let without_leader = (c.view.voters.iter())
        .filter(|&&v| v != lo)
        .map(|&v| names::node_id(v))
        .collect();
    Phase::Take(Step::TransferLeadership {
        leader: lo,
        to,
        why: Handover::Leaving { without_leader },
    })
}

/// Promote the first learner (below the spec) that has caught up; say why the others wait.
fn promote_learner(c: &Cluster, waiting: &mut Vec<String>) -> Phase {
    let learners = (c.view.seen.iter()).filter(|(&o, s)| !s.voter && o < c.desired);
    for (&o, seen) in learners {
        match (c.answers.answered.contains_key(&o), seen.lag) {
            (true, Some(lag)) if lag <= PROMOTE_MAX_LAG => {
                let mut voters: Vec<u64> =
                    c.view.voters.iter().map(|&v| names::node_id(v)).collect();
                voters.push(names::node_id(o));
                voters.sort_unstable();
                return Phase::Take(Step::Promote {
                    leader: c.view.leader,
                    ordinal: o,
                    voters,
                });
            }
            (true, lag) => waiting.push(format!(
                "learner {} is catching up ({} entries behind)",
                c.pod(o),
                lag.map_or("unknown".into(), |l| l.to_string())
            )),
            (false, _) => {
                waiting.push(c.problem(o, || format!("learner {} does not answer", c.pod(o))))
            }
        }
    }
    Phase::Next
}

/// Add the lowest missing ordinal as a learner, once its pod answers.
fn add_learner(c: &Cluster, waiting: &mut Vec<String>) -> Phase {
    let Some(o) = (0..c.desired).find(|o| !c.view.ordinals.contains(o)) else {
        return Phase::Next;
    };
    let pod = c.pod(o);
    match c.pod_of.get(&o) {
        None => waiting.push(format!("{pod} does not exist yet")),
        Some(p) if p.terminating => waiting.push(format!("{pod} is terminating")),
        Some(p) if p.ip.is_none() => waiting.push(format!("{pod} has no pod IP yet")),
        Some(_) if !c.answers.answered.contains_key(&o) => {
            waiting.push(c.problem(o, || format!("{pod} does not answer")))
        }
        Some(_) => {
            return Phase::Take(Step::AddLearner {
                leader: c.view.leader,
                ordinal: o,
            })
        }
    }
    Phase::Next
}

/// Phase 6: settled when no step is due, the voters are exactly the spec's ordinals, all healthy,
/// and the StatefulSet has its size; otherwise say what is still missing.
fn settle(
    c: &Cluster,
    stepping: bool,
    sts: i32,
    sts_replicas: Option<u32>,
    waiting: &mut Vec<String>,
) -> bool {
    let unhealthy: Vec<String> = (c.view.voters.iter().copied())
        .filter(|&o| !c.healthy(o))
        .map(|o| match (c.answers.problems.get(&o), c.pod_of.get(&o)) {
            (Some(why), _) => why.clone(),
            (None, None) => format!("{} has no pod", c.pod(o)),
            (None, Some(p)) if p.terminating => format!("{} is terminating", c.pod(o)),
            (None, Some(p)) if p.ip.is_none() => format!("{} has no pod IP", c.pod(o)),
            (None, Some(_)) => format!("{} is not ready", c.pod(o)),
        })
        .collect();
    let exact = c.view.voters == (0..c.desired).collect::<BTreeSet<u32>>()
        && c.view.ordinals == c.view.voters;
    let sized = sts == c.desired as i32 && sts_replicas == Some(c.desired);
    let settled = !stepping && exact && unhealthy.is_empty() && sized;
    if !stepping && !settled {
        if !unhealthy.is_empty() {
            waiting.push(format!("not healthy: {}", unhealthy.join("; ")));
        }
        if exact && sts_replicas != Some(c.desired) {
            waiting.push(format!("the StatefulSet is being resized to {sts}"));
        }
    }
    settled
}

/// The plan when no member answers as leader: initialize a fresh cluster, or wait.
fn plan_without_leader(
    name: &str,
    desired: u32,
    sts_replicas: Option<u32>,
    pod_of: &BTreeMap<u32, &PodInfo>,
    answers: &Answers,
    claim: &LeaderClaim,
) -> Plan {
    let members = pod_of
        .values()
        .map(|p| {
            let s = answers.answered.get(&p.ordinal);
            MemberStatus {
                pod: p.name.clone(),
                raft_id: names::node_id(p.ordinal) as i64,
                role: match s {
                    Some(s) if !s.members.is_empty() => role_name(s.role()),
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
    let (action, waiting) = without_leader(name, sts_replicas, pod_of, answers, claim);
    Plan {
        action,
        statefulset_replicas: statefulset_replicas(desired, sts_replicas, None),
        leader: claim.reported.map(|(o, _)| o),
        term: claim.reported.map(|(_, t)| t),
        members,
        waiting,
        settled: false,
        available: false,
        member_ordinals: BTreeSet::new(),
        voters: BTreeSet::new(),
    }
}

/// Without a leader: wait for Raft (a tie, an election, a mute leader), or - when every pod the
/// StatefulSet should have answered as fresh - initialize pod-0.
fn without_leader(
    name: &str,
    sts_replicas: Option<u32>,
    pod_of: &BTreeMap<u32, &PodInfo>,
    answers: &Answers,
    claim: &LeaderClaim,
) -> (Option<Step>, Option<String>) {
    let wait = |w: String| (None, Some(w));
    if let Some(t) = claim.tied_term {
        return wait(format!(
            "two members claim to lead term {t}; waiting for Raft to settle it"
        ));
    }
    if answers.answered.values().any(|s| !s.members.is_empty()) {
        return wait(match claim.reported {
            Some((o, t)) if answers.answered.contains_key(&o) => format!(
                "{} led term {t} and no longer does; waiting for an election",
                names::pod(name, o)
            ),
            Some((o, t)) => format!(
                "the leader {} (term {t}) does not answer",
                names::pod(name, o)
            ),
            None => "no leader: an election is under way".to_string(),
        });
    }
    // NB: initialize only when every pod the StatefulSet should have answered as fresh, so that
    // a member holding the cluster's state that is merely slow never sees a second cluster
    // started beside it.
    let Some(n) = sts_replicas else {
        return wait("the StatefulSet is being created".to_string());
    };
    let missing: Vec<String> = (0..n.max(1))
        .filter(|o| !answers.answered.contains_key(o))
        .map(|o| match (pod_of.get(&o), answers.problems.get(&o)) {
            (_, Some(p)) => p.clone(),
            (None, None) => format!("{} does not exist yet", names::pod(name, o)),
            (Some(p), None) if p.ip.is_none() => format!("{} has no pod IP yet", p.name),
            (Some(p), None) => format!("{} does not answer", p.name),
        })
        .collect();
    if missing.is_empty() {
        (Some(Step::Initialize { ordinal: 0 }), None)
    } else {
        wait(format!("before initializing: {}", missing.join("; ")))
    }
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
