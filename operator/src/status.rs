//! The `status` of a ProgLog, as a pure function of what one reconcile pass observed: the pods,
//! the membership report and the previous status (for the conditions' `lastTransitionTime`).
//!
//! Conditions follow the Kubernetes API conventions: `status` True/False, a CamelCase `reason`, a
//! message for humans, `observedGeneration`, and a `lastTransitionTime` that moves only when the
//! condition's status flips. No I/O here; the controller writes the result with server-side apply.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use proglog_crds::{
    ProgLogStatus, CONDITION_AVAILABLE, CONDITION_DEGRADED, CONDITION_PROGRESSING, CONDITION_READY,
};

use crate::membership::{MembershipReport, PodInfo};
use crate::names;

/// Roles of Raft voters, as `MemberStatus::role` spells them.
const VOTER_ROLES: [&str; 3] = ["Leader", "Follower", "Candidate"];

/// What a status is built from.
#[derive(Debug)]
pub struct Observed<'a> {
    /// Name of the ProgLog.
    pub name: &'a str,
    /// `metadata.generation` of the ProgLog reconciled.
    pub generation: Option<i64>,
    /// `spec.replicas`.
    pub desired: i32,
    /// The pods of the StatefulSet.
    pub pods: &'a [PodInfo],
    /// This pass's membership report.
    pub report: &'a MembershipReport,
    /// The status before this pass.
    pub previous: Option<&'a ProgLogStatus>,
    /// The time to stamp on conditions that flip.
    pub now: Time,
    /// The members' volumes (`None`: no claim yet).
    pub storage: Option<proglog_crds::StorageStatus>,
}

/// The status to write.
pub fn build(o: &Observed) -> ProgLogStatus {
    let r = o.report;
    let ready_pods = o.pods.iter().filter(|p| p.ready && !p.terminating).count() as i32;
    let existing = o.pods.len() as i32;
    let prev = o.previous.map(|s| s.conditions.as_slice()).unwrap_or(&[]);
    let leader_text = match (&r.leader, r.term) {
        (Some(l), Some(t)) => format!("leader {l} (term {t})"),
        (Some(l), None) => format!("leader {l}"),
        _ => "no leader".to_string(),
    };
    let cond = |type_: &str, status: bool, reason: &str, message: String| {
        condition(prev, type_, status, reason, message, o.generation, &o.now)
    };

    let all_ready = r.settled && ready_pods == o.desired && existing == o.desired;
    let ready = if all_ready {
        cond(
            CONDITION_READY,
            true,
            "AllMembersReady",
            format!("{ready_pods} of {} members ready, {leader_text}", o.desired),
        )
    } else {
        let mut msg = if existing > o.desired {
            format!(
                "{ready_pods} pods ready, {} members wanted (scaling down), {leader_text}",
                o.desired
            )
        } else {
            format!("{ready_pods} of {} members ready, {leader_text}", o.desired)
        };
        if let Some(w) = &r.waiting {
            msg.push_str(&format!("; waiting: {w}"));
        }
        cond(CONDITION_READY, false, "MembersNotReady", msg)
    };

    let available = if r.available {
        cond(
            CONDITION_AVAILABLE,
            true,
            "QuorumAvailable",
            format!("{leader_text}, a quorum of voters is healthy"),
        )
    } else if r.leader.is_none() {
        cond(
            CONDITION_AVAILABLE,
            false,
            "NoLeader",
            "no member knows a leader".to_string(),
        )
    } else {
        cond(
            CONDITION_AVAILABLE,
            false,
            "NoQuorum",
            format!("{leader_text}, but fewer than a quorum of voters are healthy"),
        )
    };

    let rolling = r.rollout.as_ref().filter(|ro| ro.updated < ro.replicas);
    let membership_step = r.step.as_ref().filter(|s| !s.is_rollout());
    let progressing = if let (Some(ro), None) = (rolling, membership_step) {
        // NB: the message leads with the count ("restarted 1/3 ..."), then the step or the wait.
        let doing = match (&r.step, &ro.message) {
            (Some(step), _) => step.to_string(),
            (None, Some(m)) => m.clone(),
            (None, None) => "restarting members".to_string(),
        };
        cond(
            CONDITION_PROGRESSING,
            true,
            "RollingUpdate",
            format!(
                "rolling update to revision {}: {}/{} members updated; {doing}",
                ro.revision, ro.updated, ro.replicas
            ),
        )
    } else if r.settled {
        cond(
            CONDITION_PROGRESSING,
            false,
            "Settled",
            format!("the voters are the {} members of the spec", o.desired),
        )
    } else if let Some(step) = &r.step {
        cond(
            CONDITION_PROGRESSING,
            true,
            "MembershipChanging",
            step.to_string(),
        )
    } else if let Some(w) = &r.waiting {
        cond(CONDITION_PROGRESSING, true, "Waiting", w.clone())
    } else {
        cond(
            CONDITION_PROGRESSING,
            true,
            "Reconciling",
            format!("moving toward {} members", o.desired),
        )
    };

    let unhealthy: Vec<&str> = r
        .members
        .iter()
        .filter(|m| VOTER_ROLES.contains(&m.role.as_str()) && !m.healthy)
        .map(|m| m.pod.as_str())
        .collect();
    // A cluster that has had a leader and lost its quorum is degraded; one still being created
    // is merely progressing.
    let had_leader = r.term.is_some() || o.previous.and_then(|s| s.term).is_some();
    let degraded = if !r.available && had_leader {
        cond(
            CONDITION_DEGRADED,
            true,
            "QuorumLost",
            format!("{leader_text}; unhealthy voters: {}", list(&unhealthy)),
        )
    } else if !unhealthy.is_empty() {
        cond(
            CONDITION_DEGRADED,
            true,
            "MembersUnhealthy",
            format!("unhealthy voters: {}", list(&unhealthy)),
        )
    } else {
        cond(
            CONDITION_DEGRADED,
            false,
            "Healthy",
            "every voter is healthy".to_string(),
        )
    };

    ProgLogStatus {
        observed_generation: o.generation,
        replicas: existing,
        ready_replicas: ready_pods,
        leader: r.leader.clone(),
        term: r.term.and_then(|t| i64::try_from(t).ok()),
        members: r.members.clone(),
        conditions: vec![ready, available, progressing, degraded],
        selector: Some(names::selector(o.name)),
        storage: o.storage.clone(),
        rollout: r.rollout.clone(),
    }
}

fn list(pods: &[&str]) -> String {
    if pods.is_empty() {
        "none".to_string()
    } else {
        pods.join(", ")
    }
}

/// A condition whose `lastTransitionTime` is the previous one's when its status did not flip.
pub(crate) fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// `previous` with `Degraded` set True because a pass failed with `error` (the operator cannot
/// make progress). The rest stays as last observed; the next successful pass recomputes it all.
pub fn with_failure(
    previous: Option<&ProgLogStatus>,
    name: &str,
    generation: Option<i64>,
    error: &str,
    now: Time,
) -> ProgLogStatus {
    let mut st = previous.cloned().unwrap_or_default();
    let degraded = condition(
        &st.conditions,
        CONDITION_DEGRADED,
        true,
        "ReconcileFailed",
        error.chars().take(1000).collect(),
        generation,
        &now,
    );
    st.conditions.retain(|c| c.type_ != CONDITION_DEGRADED);
    st.conditions.push(degraded);
    st.selector.get_or_insert_with(|| names::selector(name));
    st
}

/// The condition `type_` of `status`, if set.
pub fn find<'a>(status: &'a ProgLogStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;
    use proglog_crds::MemberStatus;

    fn t(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    fn pods(n: u32, ready: u32) -> Vec<PodInfo> {
        (0..n)
            .map(|i| PodInfo {
                name: names::pod("demo", i),
                ordinal: i,
                ip: Some(format!("10.0.0.{i}")),
                ready: i < ready,
                terminating: false,
            })
            .collect()
    }

    fn member(i: u32, role: &str, healthy: bool) -> MemberStatus {
        MemberStatus {
            pod: names::pod("demo", i),
            raft_id: i as i64 + 1,
            role: role.to_string(),
            healthy,
            ..MemberStatus::default()
        }
    }

    fn settled() -> MembershipReport {
        MembershipReport {
            statefulset_replicas: 3,
            leader: Some("demo-0".into()),
            term: Some(2),
            members: vec![
                member(0, "Leader", true),
                member(1, "Follower", true),
                member(2, "Follower", true),
            ],
            settled: true,
            available: true,
            ..MembershipReport::default()
        }
    }

    fn status_of(c: &ProgLogStatus, type_: &str) -> (String, String) {
        let c = find(c, type_).unwrap();
        (c.status.clone(), c.reason.clone())
    }

    #[test]
    fn a_settled_cluster_is_ready_available_and_not_degraded() {
        let (p, r) = (pods(3, 3), settled());
        let s = build(&Observed {
            name: "demo",
            generation: Some(4),
            desired: 3,
            pods: &p,
            report: &r,
            previous: None,
            now: t(100),
            storage: None,
        });
        assert_eq!((s.replicas, s.ready_replicas), (3, 3));
        assert_eq!(s.leader.as_deref(), Some("demo-0"));
        assert_eq!((s.term, s.observed_generation), (Some(2), Some(4)));
        assert_eq!(
            s.selector.as_deref(),
            Some("app.kubernetes.io/name=proglog,proglog.dev/cluster=demo")
        );
        assert_eq!(s.members.len(), 3);
        let types: Vec<&str> = s.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Ready", "Available", "Progressing", "Degraded"]);
        assert_eq!(status_of(&s, "Ready").0, "True");
        assert_eq!(status_of(&s, "Available").0, "True");
        assert_eq!(status_of(&s, "Progressing").0, "False");
        assert_eq!(status_of(&s, "Degraded").0, "False");
        assert!(s
            .conditions
            .iter()
            .all(|c| c.observed_generation == Some(4)));
    }

    #[test]
    fn a_new_cluster_is_progressing_not_degraded() {
        let p = pods(3, 0);
        let r = MembershipReport {
            statefulset_replicas: 3,
            waiting: Some("demo-0 has no pod IP yet".into()),
            ..MembershipReport::default()
        };
        let s = build(&Observed {
            name: "demo",
            generation: Some(1),
            desired: 3,
            pods: &p,
            report: &r,
            previous: None,
            now: t(1),
            storage: None,
        });
        assert_eq!(
            status_of(&s, "Ready"),
            ("False".into(), "MembersNotReady".into())
        );
        assert!(find(&s, "Ready").unwrap().message.contains("no pod IP"));
        assert_eq!(
            status_of(&s, "Available"),
            ("False".into(), "NoLeader".into())
        );
        assert_eq!(
            status_of(&s, "Progressing"),
            ("True".into(), "Waiting".into())
        );
        assert_eq!(status_of(&s, "Degraded").0, "False");
        assert_eq!(s.leader, None);
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let (p, r) = (pods(3, 3), settled());
        let first = build(&Observed {
            name: "demo",
            generation: Some(1),
            desired: 3,
            pods: &p,
            report: &r,
            previous: None,
            now: t(100),
            storage: None,
        });
        // Same statuses later: times stay.
        let second = build(&Observed {
            name: "demo",
            generation: Some(1),
            desired: 3,
            pods: &p,
            report: &r,
            previous: Some(&first),
            now: t(200),
            storage: None,
        });
        assert_eq!(second.conditions, first.conditions);
        // A voter goes down: Ready and Degraded flip (new time), Available stays (old time).
        let mut down = settled();
        down.settled = false;
        down.members[2].healthy = false;
        let p2 = pods(3, 2);
        let third = build(&Observed {
            name: "demo",
            generation: Some(1),
            desired: 3,
            pods: &p2,
            report: &down,
            previous: Some(&second),
            now: t(300),
            storage: None,
        });
        let time = |s: &ProgLogStatus, ty| find(s, ty).unwrap().last_transition_time.clone();
        assert_eq!(time(&third, "Ready"), t(300));
        assert_eq!(time(&third, "Degraded"), t(300));
        assert_eq!(time(&third, "Available"), t(100));
        assert_eq!(
            status_of(&third, "Degraded"),
            ("True".into(), "MembersUnhealthy".into())
        );
        assert!(find(&third, "Degraded").unwrap().message.contains("demo-2"));
    }

    #[test]
    fn a_rolling_update_is_progressing_and_says_how_far() {
        use crate::step::{Handover, Outcome, Step, Taken};
        let p = pods(3, 3);
        let mut r = settled();
        r.settled = false;
        r.rollout = Some(proglog_crds::RolloutStatus {
            revision: "demo-abc".into(),
            updated: 2,
            replicas: 3,
            message: Some("moving leadership from demo-0 to demo-2".into()),
        });
        r.step = Some(Taken {
            cluster: "demo".into(),
            step: Step::TransferLeadership {
                leader: 0,
                to: 2,
                why: Handover::Restart { nth: 3, of: 3 },
            },
            outcome: Outcome::LeadershipMoved { to: Some(2) },
        });
        fn observed<'a>(p: &'a [PodInfo], r: &'a MembershipReport) -> Observed<'a> {
            Observed {
                name: "demo",
                generation: Some(2),
                desired: 3,
                pods: p,
                report: r,
                previous: None,
                now: t(5),
                storage: None,
            }
        }
        let s = build(&observed(&p, &r));
        let c = find(&s, "Progressing").unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "RollingUpdate")
        );
        assert_eq!(
            c.message,
            "rolling update to revision demo-abc: 2/3 members updated; moved leadership from demo-0 to demo-2 ahead of restarting it (rolling update: member 3 of 3)"
        );
        assert_eq!(s.rollout, r.rollout);
        assert_eq!(status_of(&s, "Ready").0, "False");

        // Waiting between restarts: the rollout's own message.
        r.step = None;
        r.rollout.as_mut().unwrap().message = Some("waiting for demo-1".into());
        let s = build(&observed(&p, &r));
        assert!(find(&s, "Progressing")
            .unwrap()
            .message
            .ends_with("2/3 members updated; waiting for demo-1"));

        // A membership step (the rollout paused) is reported as such.
        r.step = Some(Taken {
            cluster: "demo".into(),
            step: Step::Remove {
                leader: 0,
                ordinal: 3,
                reason: crate::step::RemoveReason::ScaleDown,
            },
            outcome: Outcome::Removed,
        });
        let s = build(&observed(&p, &r));
        assert_eq!(status_of(&s, "Progressing").1, "MembershipChanging");

        // Done: settled, the rollout stays in the status with every member updated.
        let mut done = settled();
        done.rollout = Some(proglog_crds::RolloutStatus {
            revision: "demo-abc".into(),
            updated: 3,
            replicas: 3,
            message: None,
        });
        let s = build(&observed(&p, &done));
        assert_eq!(
            status_of(&s, "Progressing"),
            ("False".into(), "Settled".into())
        );
        assert_eq!(s.rollout.unwrap().updated, 3);
    }

    #[test]
    fn losing_the_quorum_after_having_a_leader_is_degraded() {
        let p = pods(3, 1);
        let prev = ProgLogStatus {
            term: Some(3),
            ..ProgLogStatus::default()
        };
        let r = MembershipReport {
            statefulset_replicas: 3,
            members: vec![
                member(0, "Candidate", true),
                member(1, "Unknown", false),
                member(2, "Unknown", false),
            ],
            ..MembershipReport::default()
        };
        let s = build(&Observed {
            name: "demo",
            generation: Some(1),
            desired: 3,
            pods: &p,
            report: &r,
            previous: Some(&prev),
            now: t(5),
            storage: None,
        });
        assert_eq!(
            status_of(&s, "Degraded"),
            ("True".into(), "QuorumLost".into())
        );
        assert_eq!(status_of(&s, "Available").0, "False");
    }

    #[test]
    fn a_failed_pass_marks_degraded_and_keeps_the_rest() {
        let (p, r) = (pods(3, 3), settled());
        let ok = build(&Observed {
            name: "demo",
            generation: Some(1),
            desired: 3,
            pods: &p,
            report: &r,
            previous: None,
            now: t(10),
            storage: None,
        });
        let failed = with_failure(
            Some(&ok),
            "demo",
            Some(2),
            "apply StatefulSet demo: boom",
            t(20),
        );
        assert_eq!(
            status_of(&failed, "Degraded"),
            ("True".into(), "ReconcileFailed".into())
        );
        let d = find(&failed, "Degraded").unwrap();
        assert_eq!(
            (d.last_transition_time.clone(), d.observed_generation),
            (t(20), Some(2))
        );
        assert!(d.message.contains("boom"));
        assert_eq!(status_of(&failed, "Ready"), status_of(&ok, "Ready"));
        assert_eq!(
            (failed.leader.clone(), failed.observed_generation),
            (ok.leader, Some(1))
        );
        assert_eq!(failed.conditions.len(), 4);
        // Failing again keeps the transition time.
        let again = with_failure(Some(&failed), "demo", Some(2), "still boom", t(30));
        assert_eq!(
            find(&again, "Degraded").unwrap().last_transition_time,
            t(20)
        );
        // With no status yet, the selector is still there for the scale subresource.
        let fresh = with_failure(None, "demo", Some(1), "no secret", t(1));
        assert_eq!(fresh.selector, Some(names::selector("demo")));
    }

    #[test]
    fn scaling_is_progressing_with_the_step_and_extra_pods_keep_ready_false() {
        let p = pods(4, 4);
        let mut r = settled();
        r.settled = false;
        r.step = Some(crate::step::Taken {
            cluster: "demo".into(),
            step: crate::step::Step::Remove {
                leader: 0,
                ordinal: 3,
                reason: crate::step::RemoveReason::ScaleDown,
            },
            outcome: crate::step::Outcome::Removed,
        });
        let s = build(&Observed {
            name: "demo",
            generation: Some(2),
            desired: 3,
            pods: &p,
            report: &r,
            previous: None,
            now: t(5),
            storage: None,
        });
        assert_eq!(
            status_of(&s, "Progressing"),
            ("True".into(), "MembershipChanging".into())
        );
        assert_eq!(
            find(&s, "Progressing").unwrap().message,
            "removed demo-3 from the membership (scale-down)"
        );
        assert_eq!(status_of(&s, "Ready").0, "False");
        assert!(find(&s, "Ready").unwrap().message.contains("scaling down"));
        assert_eq!(s.replicas, 4);
    }
}
