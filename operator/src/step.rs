//! A step as a type, from the plan to the Event, the metric and the status (Raft membership
//! steps, and the restarts of a rolling update):
//! [`Step`] is what the planner chose, [`Outcome`] what executing it did, and [`Taken`] both,
//! which says its own [`StepKind`] (the metric label), Event reason, pod and message. Nothing
//! downstream parses a description: a leadership transfer that failed and fell back to removing
//! the leader from the voters is [`Outcome::LeaderRemovedFromVoters`], not a transfer.
//!
//! Pure: no I/O. `membership` plans and executes; `controller` and `status` only read these.

use std::fmt;

use crate::names;

/// Why a member is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoveReason {
    /// Its ordinal is >= spec.replicas.
    ScaleDown,
    /// It answers as a fresh member while the leader counts it as a voter: its data is gone.
    /// Removed, it rejoins as a learner and votes again only once it holds the log.
    LostData,
}

/// Why leadership moves off a member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handover {
    /// It leaves the membership (scale-down). Should the transfer fail while it still leads, it
    /// is removed from the voters instead (the voter set becomes `without_leader`, node ids): it
    /// steps down once that is committed and the others elect a leader among themselves.
    Leaving { without_leader: Vec<u64> },
    /// It restarts next, the last member of a rolling update (`nth` of `of`). A failed transfer
    /// is only reported: a later pass tries again, the member keeps leading meanwhile.
    Restart { nth: u32, of: u32 },
}

/// The one step a pass takes. Ordinals name pods; `leader` is the ordinal to call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
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
    /// Move leadership from `leader` to the voter `to`, for the reason `why`.
    TransferLeadership { leader: u32, to: u32, why: Handover },
    /// Remove member `ordinal` (voter or learner).
    Remove {
        leader: u32,
        ordinal: u32,
        reason: RemoveReason,
    },
    /// Restart member `ordinal` (a follower) on the StatefulSet's new revision: its pod is
    /// deleted and the StatefulSet makes it again. It is the `nth` of the `of` members of the
    /// rolling update.
    Restart { ordinal: u32, nth: u32, of: u32 },
}

impl Step {
    /// The ordinal of the pod the step acts on (a transfer acts on the leader it moves off).
    pub fn ordinal(&self) -> u32 {
        match *self {
            Step::Initialize { ordinal }
            | Step::AddLearner { ordinal, .. }
            | Step::Promote { ordinal, .. }
            | Step::Remove { ordinal, .. }
            | Step::Restart { ordinal, .. } => ordinal,
            Step::TransferLeadership { leader, .. } => leader,
        }
    }

    /// The step as an intention ("adding demo-2 as a learner"), for a step that failed.
    pub fn describe(&self, name: &str) -> String {
        let pod = |o: u32| names::pod(name, o);
        match *self {
            Step::Initialize { ordinal } => format!("initializing {}", pod(ordinal)),
            Step::AddLearner { ordinal, .. } => format!("adding {} as a learner", pod(ordinal)),
            Step::Promote { ordinal, .. } => format!("promoting {} to voter", pod(ordinal)),
            Step::TransferLeadership { leader, to, .. } => {
                format!("moving leadership from {} to {}", pod(leader), pod(to))
            }
            Step::Remove { ordinal, .. } => format!("removing {}", pod(ordinal)),
            Step::Restart { ordinal, .. } => format!("restarting {}", pod(ordinal)),
        }
    }
}

/// What executing a [`Step`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A new cluster was initialized.
    Initialized,
    /// The member was initialized already (an earlier pass did it).
    AlreadyInitialized,
    /// The learner was added and has caught up.
    LearnerCaughtUp,
    /// The learner was added and holds `matched` of the leader's `of` entries.
    LearnerHolds { matched: u64, of: u64 },
    /// The learner was added and is catching up (no progress reported in time).
    LearnerCatchingUp,
    /// The learner is a voter now.
    Promoted,
    /// Leadership moved; `to` is the ordinal of the new leader when it names one of ours.
    LeadershipMoved { to: Option<u32> },
    /// The transfer reported `error`, yet the old leader leads no more.
    LeadershipLeft { error: String },
    /// The transfer failed with `error`; the leader was removed from the voters instead and
    /// steps down, and the others elect a leader.
    LeaderRemovedFromVoters { error: String },
    /// The member was removed from the membership.
    Removed,
    /// The member's pod was deleted; the StatefulSet makes it again on the new revision.
    Restarted,
}

/// The kind of a step taken: the `kind` label of `proglog_operator_membership_steps_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StepKind {
    Initialize,
    AddLearner,
    Promote,
    TransferLeadership,
    /// A failed transfer's fallback: the leader left the voters.
    RemoveLeader,
    Remove,
    /// A member restarted by a rolling update.
    Restart,
}

impl StepKind {
    /// Every kind, for metrics that start at 0.
    pub const ALL: [StepKind; 7] = [
        StepKind::Initialize,
        StepKind::AddLearner,
        StepKind::Promote,
        StepKind::TransferLeadership,
        StepKind::RemoveLeader,
        StepKind::Remove,
        StepKind::Restart,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            StepKind::Initialize => "initialize",
            StepKind::AddLearner => "add_learner",
            StepKind::Promote => "promote",
            StepKind::TransferLeadership => "transfer_leadership",
            StepKind::RemoveLeader => "remove_leader",
            StepKind::Remove => "remove",
            StepKind::Restart => "restart",
        }
    }

    /// The reason of the Event (CamelCase, per the API conventions).
    pub fn event_reason(self) -> &'static str {
        match self {
            StepKind::Initialize => "ClusterInitialized",
            StepKind::AddLearner => "LearnerAdded",
            StepKind::Promote => "MemberPromoted",
            StepKind::TransferLeadership => "LeadershipTransferred",
            StepKind::RemoveLeader => "LeaderRemovedFromVoters",
            StepKind::Remove => "MemberRemoved",
            StepKind::Restart => "MemberRestarted",
        }
    }
}

/// A step taken on ProgLog `cluster`, and what it did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taken {
    /// Name of the ProgLog (pods are `<cluster>-<ordinal>`).
    pub cluster: String,
    pub step: Step,
    pub outcome: Outcome,
}

impl Taken {
    /// Its kind, from what it did (a transfer that fell back is [`StepKind::RemoveLeader`]).
    pub fn kind(&self) -> StepKind {
        match (&self.step, &self.outcome) {
            (Step::Initialize { .. }, _) => StepKind::Initialize,
            (Step::AddLearner { .. }, _) => StepKind::AddLearner,
            (Step::Promote { .. }, _) => StepKind::Promote,
            (Step::TransferLeadership { .. }, Outcome::LeaderRemovedFromVoters { .. }) => {
                StepKind::RemoveLeader
            }
            (Step::TransferLeadership { .. }, _) => StepKind::TransferLeadership,
            (Step::Remove { .. }, _) => StepKind::Remove,
            (Step::Restart { .. }, _) => StepKind::Restart,
        }
    }

    /// A step of a rolling update (a restart, or the hand-over before the leader's).
    pub fn is_rollout(&self) -> bool {
        matches!(
            self.step,
            Step::Restart { .. }
                | Step::TransferLeadership {
                    why: Handover::Restart { .. },
                    ..
                }
        )
    }

    /// The pod the step acted on (the Event's related object).
    pub fn pod(&self) -> String {
        names::pod(&self.cluster, self.step.ordinal())
    }
}

/// The message of the Event and of the Progressing condition.
impl fmt::Display for Taken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pod = |o: u32| names::pod(&self.cluster, o);
        let me = self.pod();
        match (&self.step, &self.outcome) {
            (_, Outcome::Initialized) => write!(f, "initialized a new cluster with {me}"),
            (_, Outcome::AlreadyInitialized) => write!(f, "{me} was initialized already"),
            (_, Outcome::LearnerCaughtUp) => write!(f, "added {me} as a learner; it has caught up"),
            (_, Outcome::LearnerHolds { matched, of }) => write!(
                f,
                "added {me} as a learner; it holds {matched} of {of} entries"
            ),
            (_, Outcome::LearnerCatchingUp) => {
                write!(f, "added {me} as a learner; it is catching up")
            }
            (_, Outcome::Promoted) => write!(f, "promoted {me} to voter"),
            (Step::TransferLeadership { why, .. }, Outcome::LeadershipMoved { to }) => {
                let to = to.map_or_else(|| "?".into(), pod);
                match why {
                    Handover::Leaving { .. } => {
                        write!(f, "moved leadership from {me} to {to} ahead of removing it")
                    }
                    Handover::Restart { nth, of } => write!(
                        f,
                        "moved leadership from {me} to {to} ahead of restarting it (rolling update: member {nth} of {of})"
                    ),
                }
            }
            (_, Outcome::LeadershipMoved { to }) => write!(
                f,
                "moved leadership from {me} to {}",
                to.map_or_else(|| "?".into(), pod)
            ),
            (_, Outcome::LeadershipLeft { error }) => write!(
                f,
                "leadership moved off {me} (transfer reported: {error})"
            ),
            (_, Outcome::LeaderRemovedFromVoters { error }) => write!(
                f,
                "removed {me} (the leader) from the voters after leadership transfer failed ({error}); it steps down and the others elect a leader"
            ),
            (Step::Remove { reason: RemoveReason::LostData, .. }, Outcome::Removed) => write!(
                f,
                "removed {me} from the membership: it lost its data; it rejoins as a learner"
            ),
            (_, Outcome::Removed) => write!(f, "removed {me} from the membership (scale-down)"),
            (Step::Restart { nth, of, .. }, Outcome::Restarted) => write!(
                f,
                "restarted {me} on the new pod template (rolling update: member {nth} of {of})"
            ),
            (_, Outcome::Restarted) => write!(f, "restarted {me}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(step: Step, outcome: Outcome) -> Taken {
        Taken {
            cluster: "demo".into(),
            step,
            outcome,
        }
    }

    fn transfer() -> Step {
        Step::TransferLeadership {
            leader: 4,
            to: 0,
            why: Handover::Leaving {
                without_leader: vec![1, 2, 3, 4],
            },
        }
    }

    #[test]
    fn a_failed_transfer_is_no_transfer() {
        let moved = taken(transfer(), Outcome::LeadershipMoved { to: Some(0) });
        assert_eq!(moved.kind(), StepKind::TransferLeadership);
        assert_eq!(moved.kind().event_reason(), "LeadershipTransferred");
        assert_eq!(moved.pod(), "demo-4");
        assert_eq!(
            moved.to_string(),
            "moved leadership from demo-4 to demo-0 ahead of removing it"
        );
        let fell_back = taken(
            transfer(),
            Outcome::LeaderRemovedFromVoters {
                error: "the lease never lapsed".into(),
            },
        );
        assert_eq!(fell_back.kind(), StepKind::RemoveLeader);
        assert_eq!(fell_back.kind().event_reason(), "LeaderRemovedFromVoters");
        assert_eq!(fell_back.kind().label(), "remove_leader");
        assert!(fell_back.to_string().contains("the lease never lapsed"));
        let left = taken(transfer(), Outcome::LeadershipLeft { error: "x".into() });
        assert_eq!(left.kind(), StepKind::TransferLeadership);
    }

    #[test]
    fn a_rolling_update_says_which_member_of_how_many() {
        let restart = taken(
            Step::Restart {
                ordinal: 2,
                nth: 1,
                of: 3,
            },
            Outcome::Restarted,
        );
        assert_eq!(
            (
                restart.pod().as_str(),
                restart.kind().label(),
                restart.kind().event_reason()
            ),
            ("demo-2", "restart", "MemberRestarted")
        );
        assert_eq!(
            restart.to_string(),
            "restarted demo-2 on the new pod template (rolling update: member 1 of 3)"
        );
        let handover = taken(
            Step::TransferLeadership {
                leader: 0,
                to: 2,
                why: Handover::Restart { nth: 3, of: 3 },
            },
            Outcome::LeadershipMoved { to: Some(2) },
        );
        assert_eq!(handover.kind(), StepKind::TransferLeadership);
        assert_eq!(handover.pod(), "demo-0");
        assert_eq!(
            handover.to_string(),
            "moved leadership from demo-0 to demo-2 ahead of restarting it (rolling update: member 3 of 3)"
        );
        assert_eq!(restart.step.describe("demo"), "restarting demo-2");
    }

    #[test]
    fn every_step_names_its_pod_kind_reason_and_message() {
        let cases = [
            (
                taken(Step::Initialize { ordinal: 0 }, Outcome::Initialized),
                (
                    "demo-0",
                    "initialize",
                    "ClusterInitialized",
                    "initialized a new cluster with demo-0",
                ),
            ),
            (
                taken(
                    Step::AddLearner {
                        leader: 0,
                        ordinal: 2,
                    },
                    Outcome::LearnerHolds { matched: 5, of: 9 },
                ),
                (
                    "demo-2",
                    "add_learner",
                    "LearnerAdded",
                    "added demo-2 as a learner; it holds 5 of 9 entries",
                ),
            ),
            (
                taken(
                    Step::Promote {
                        leader: 0,
                        ordinal: 2,
                        voters: vec![1, 2, 3],
                    },
                    Outcome::Promoted,
                ),
                (
                    "demo-2",
                    "promote",
                    "MemberPromoted",
                    "promoted demo-2 to voter",
                ),
            ),
            (
                taken(
                    Step::Remove {
                        leader: 0,
                        ordinal: 3,
                        reason: RemoveReason::ScaleDown,
                    },
                    Outcome::Removed,
                ),
                (
                    "demo-3",
                    "remove",
                    "MemberRemoved",
                    "removed demo-3 from the membership (scale-down)",
                ),
            ),
            (
                taken(
                    Step::Remove {
                        leader: 0,
                        ordinal: 1,
                        reason: RemoveReason::LostData,
                    },
                    Outcome::Removed,
                ),
                (
                    "demo-1",
                    "remove",
                    "MemberRemoved",
                    "removed demo-1 from the membership: it lost its data; it rejoins as a learner",
                ),
            ),
        ];
        for (t, (pod, label, reason, msg)) in cases {
            assert_eq!(
                (
                    t.pod().as_str(),
                    t.kind().label(),
                    t.kind().event_reason(),
                    t.to_string().as_str()
                ),
                (pod, label, reason, msg)
            );
        }
        let labels: std::collections::BTreeSet<_> =
            StepKind::ALL.iter().map(|k| k.label()).collect();
        assert_eq!(labels.len(), StepKind::ALL.len(), "labels are distinct");
        assert_eq!(
            transfer().describe("demo"),
            "moving leadership from demo-4 to demo-0"
        );
    }
}
