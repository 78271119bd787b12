//! Unit tests of the membership planner: plain values in, one step out. No gRPC, no cluster.

use super::*;
use std::collections::BTreeSet;

const NAME: &str = "demo";

fn pods(n: u32) -> Vec<PodInfo> {
    (0..n)
        .map(|o| PodInfo {
            name: names::pod(NAME, o),
            ordinal: o,
            ip: Some(format!("10.0.0.{}", o + 1)),
            ready: true,
            terminating: false,
        })
        .collect()
}

/// A member that belongs to no cluster yet.
fn fresh(o: u32) -> Observation {
    Observation::Answered(pb::ClusterStatus {
        node_id: names::node_id(o),
        role: pb::Role::Learner as i32,
        ..Default::default()
    })
}

/// Member `o` in `term`, following `leader`, with the membership `members`: (ordinal, voter, lag).
/// Lags are only reported by the leader itself.
fn member(o: u32, term: u64, leader: Option<u32>, members: &[(u32, bool, u64)]) -> Observation {
    let leads = leader == Some(o);
    Observation::Answered(pb::ClusterStatus {
        node_id: names::node_id(o),
        role: if leads {
            pb::Role::Leader
        } else if members.iter().any(|&(m, v, _)| m == o && v) {
            pb::Role::Follower
        } else {
            pb::Role::Learner
        } as i32,
        term,
        leader_id: leader.map(names::node_id),
        members: members
            .iter()
            .map(|&(m, voter, lag)| pb::MemberStatus {
                node_id: names::node_id(m),
                addr: format!("{}:8400", names::pod(NAME, m)),
                name: names::pod(NAME, m),
                voter,
                lag: leads.then_some(lag),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    })
}

/// Every pod in `0..n` answers; `leader` leads the membership `members` in term 2.
fn cluster(n: u32, leader: u32, members: &[(u32, bool, u64)]) -> Observations {
    (0..n)
        .map(|o| {
            let in_it = members.iter().any(|&(m, _, _)| m == o);
            (
                o,
                if in_it {
                    member(o, 2, Some(leader), members)
                } else {
                    fresh(o)
                },
            )
        })
        .collect()
}

fn voters(ords: &[u32]) -> Vec<(u32, bool, u64)> {
    ords.iter().map(|&o| (o, true, 0)).collect()
}

#[test]
fn a_fresh_cluster_initializes_pod_0_once_every_pod_answers() {
    // No StatefulSet yet: create it at the desired size, do nothing else.
    let p = plan(NAME, 3, None, &[], &Observations::new());
    assert_eq!(p.action, None);
    assert_eq!(p.statefulset_replicas, 3);
    assert!(p.waiting.unwrap().contains("being created"));

    // One pod has no IP yet: wait for it (it might hold the cluster's state).
    let mut ps = pods(3);
    ps[2].ip = None;
    let obs: Observations = (0..2).map(|o| (o, fresh(o))).collect();
    let p = plan(NAME, 3, Some(3), &ps, &obs);
    assert_eq!(p.action, None);
    assert!(p.waiting.unwrap().contains("demo-2 has no pod IP yet"));
    assert!(!p.available && !p.settled);

    // Every pod answers as fresh: pod 0 alone becomes the cluster.
    let obs: Observations = (0..3).map(|o| (o, fresh(o))).collect();
    let p = plan(NAME, 3, Some(3), &pods(3), &obs);
    assert_eq!(p.action, Some(Step::Initialize { ordinal: 0 }));
    assert_eq!(p.statefulset_replicas, 3);
    assert!(p.members.iter().all(|m| m.role == "NotMember"));
}

#[test]
fn an_initialized_member_without_leader_is_never_initialized_over() {
    // demo-1 holds state but knows no leader (election): never start a second cluster.
    let mut obs: Observations = (0..3).map(|o| (o, fresh(o))).collect();
    obs.insert(1, member(1, 4, None, &voters(&[0, 1, 2])));
    let p = plan(NAME, 3, Some(3), &pods(3), &obs);
    assert_eq!(p.action, None);
    assert!(p.waiting.unwrap().contains("election"), "must wait");
}

#[test]
fn scale_up_adds_learners_one_by_one_and_promotes_them_when_caught_up() {
    // 1 voter, 3 wanted: add demo-1 first.
    let obs = cluster(3, 0, &voters(&[0]));
    let p = plan(NAME, 3, Some(3), &pods(3), &obs);
    assert_eq!(
        p.action,
        Some(Step::AddLearner {
            leader: 0,
            ordinal: 1
        })
    );
    assert_eq!(p.leader, Some(0));
    assert_eq!(p.term, Some(2));

    // demo-1 is a learner far behind: do not promote it, add demo-2 meanwhile.
    let obs = cluster(3, 0, &[(0, true, 0), (1, false, 5000)]);
    let p = plan(NAME, 3, Some(3), &pods(3), &obs);
    assert_eq!(
        p.action,
        Some(Step::AddLearner {
            leader: 0,
            ordinal: 2
        })
    );
    assert!(p
        .waiting
        .unwrap()
        .contains("catching up (5000 entries behind)"));

    // demo-1 has caught up: promote it (the full new voter set).
    let obs = cluster(3, 0, &[(0, true, 0), (1, false, 3), (2, false, 900)]);
    let p = plan(NAME, 3, Some(3), &pods(3), &obs);
    assert_eq!(
        p.action,
        Some(Step::Promote {
            leader: 0,
            ordinal: 1,
            voters: vec![1, 2]
        })
    );

    // Then demo-2.
    let obs = cluster(3, 0, &[(0, true, 0), (1, true, 0), (2, false, 0)]);
    let p = plan(NAME, 3, Some(3), &pods(3), &obs);
    assert_eq!(
        p.action,
        Some(Step::Promote {
            leader: 0,
            ordinal: 2,
            voters: vec![1, 2, 3]
        })
    );
    assert!(!p.settled);
}

#[test]
fn a_learner_not_caught_up_is_waited_for() {
    let obs = cluster(3, 0, &[(0, true, 0), (1, true, 0), (2, false, 70)]);
    let p = plan(NAME, 3, Some(3), &pods(3), &obs);
    assert_eq!(p.action, None);
    assert!(!p.settled);
    assert!(p.available);
    assert!(p
        .waiting
        .unwrap()
        .contains("learner demo-2 is catching up (70"));
    let m = &p.members[2];
    assert_eq!((m.role.as_str(), m.lag), ("Learner", Some(70)));
}

#[test]
fn scale_up_sizes_the_statefulset_at_once() {
    let obs = cluster(3, 0, &voters(&[0, 1, 2]));
    let p = plan(NAME, 5, Some(3), &pods(3), &obs);
    assert_eq!(p.statefulset_replicas, 5);
    assert!(p.waiting.unwrap().contains("demo-3 does not exist yet"));
}

#[test]
fn scale_down_moves_leadership_first_then_removes_the_highest_ordinal() {
    let five = voters(&[0, 1, 2, 3, 4]);
    // The leader is demo-4 and it goes: move leadership to the healthy voter with the least lag.
    let mut obs = cluster(
        5,
        4,
        &[
            (0, true, 9),
            (1, true, 2),
            (2, true, 2),
            (3, true, 0),
            (4, true, 0),
        ],
    );
    let p = plan(NAME, 3, Some(5), &pods(5), &obs);
    assert_eq!(
        p.action,
        Some(Step::TransferLeadership {
            leader: 4,
            to: 1,
            why: Handover::Leaving {
                without_leader: vec![1, 2, 3, 4]
            }
        })
    );
    assert_eq!(p.statefulset_replicas, 5, "never shrink before removal");

    // Not to a voter that is not healthy.
    obs.insert(1, Observation::Failed("connection refused".into()));
    let p = plan(NAME, 3, Some(5), &pods(5), &obs);
    assert!(matches!(
        p.action,
        Some(Step::TransferLeadership {
            leader: 4,
            to: 2,
            ..
        })
    ));

    // demo-1 leads now: remove demo-4, then demo-3.
    let obs = cluster(5, 1, &five);
    let p = plan(NAME, 3, Some(5), &pods(5), &obs);
    assert_eq!(
        p.action,
        Some(Step::Remove {
            leader: 1,
            ordinal: 4,
            reason: RemoveReason::ScaleDown
        })
    );
    assert_eq!(p.statefulset_replicas, 5);

    // demo-4 removed (its pod still runs): the StatefulSet shrinks to 4, demo-3 goes next.
    let mut obs = cluster(5, 1, &voters(&[0, 1, 2, 3]));
    obs.insert(4, member(4, 2, Some(1), &five));
    let p = plan(NAME, 3, Some(5), &pods(5), &obs);
    assert_eq!(p.statefulset_replicas, 4);
    assert_eq!(
        p.action,
        Some(Step::Remove {
            leader: 1,
            ordinal: 3,
            reason: RemoveReason::ScaleDown
        })
    );
    let m4 = p.members.iter().find(|m| m.pod == "demo-4").unwrap();
    assert_eq!(m4.role, "NotMember");
}

#[test]
fn a_leader_that_removed_itself_is_left_to_step_down() {
    // The fallback of a failed transfer: demo-4 still leads a membership without itself.
    let mut obs = cluster(5, 4, &voters(&[0, 1, 2, 3]));
    obs.insert(4, member(4, 2, Some(4), &voters(&[0, 1, 2, 3])));
    let p = plan(NAME, 3, Some(5), &pods(5), &obs);
    assert_eq!(p.action, None);
    assert_eq!(p.leader, Some(4));
    assert!(p
        .waiting
        .unwrap()
        .contains("the leader demo-4 is no voter any more"));
    assert_eq!(p.statefulset_replicas, 4, "demo-4 is out of the membership");
}

#[test]
fn scale_down_without_a_healthy_target_waits() {
    let mut obs = cluster(2, 1, &voters(&[0, 1]));
    obs.insert(0, Observation::Failed("timeout".into()));
    let p = plan(NAME, 1, Some(2), &pods(2), &obs);
    assert_eq!(p.action, None);
    assert!(p.waiting.unwrap().contains("no healthy voter"));
}

#[test]
fn a_member_that_does_not_answer_is_unknown_and_blocks_settling() {
    let mut obs = cluster(3, 0, &voters(&[0, 1, 2]));
    obs.insert(2, Observation::Failed("deadline exceeded".into()));
    let p = plan(NAME, 3, Some(3), &pods(3), &obs);
    assert_eq!(p.action, None);
    assert!(p.available, "2 of 3 voters is a quorum");
    assert!(!p.settled);
    assert_eq!(p.members[2].role, "Unknown");
    assert!(!p.members[2].healthy);
    assert!(p
        .waiting
        .unwrap()
        .contains("not healthy: demo-2 does not answer: deadline exceeded"));

    // Two of three silent: no quorum.
    obs.insert(1, Observation::Failed("deadline exceeded".into()));
    let p = plan(NAME, 3, Some(3), &pods(3), &obs);
    assert!(!p.available);
}

#[test]
fn a_silent_leader_is_reported_from_the_followers_but_nothing_is_done() {
    let mut obs = cluster(3, 0, &voters(&[0, 1, 2]));
    obs.insert(0, Observation::Failed("connection refused".into()));
    let p = plan(NAME, 5, Some(3), &pods(3), &obs);
    assert_eq!(p.action, None);
    assert_eq!(p.leader, Some(0));
    assert!(!p.available);
    assert!(p
        .waiting
        .unwrap()
        .contains("the leader demo-0 (term 2) does not answer"));
    assert_eq!(p.statefulset_replicas, 5, "scale-up needs no leader");

    // It answers, but no longer as leader (it stepped down): an election is due.
    obs.insert(0, member(0, 2, None, &voters(&[0, 1, 2])));
    let p = plan(NAME, 3, Some(3), &pods(3), &obs);
    assert_eq!(p.action, None);
    assert!(p
        .waiting
        .unwrap()
        .contains("demo-0 led term 2 and no longer does"));
}

#[test]
fn of_two_leaders_the_one_in_the_higher_term_counts() {
    // demo-0 was cut off and still believes it leads term 2; demo-1 leads term 3.
    let mut obs = cluster(3, 1, &voters(&[0, 1, 2]));
    for o in 1..3 {
        obs.insert(o, member(o, 3, Some(1), &voters(&[0, 1, 2])));
    }
    obs.insert(0, member(0, 2, Some(0), &voters(&[0, 1, 2])));
    let p = plan(NAME, 3, Some(3), &pods(3), &obs);
    assert_eq!(p.leader, Some(1));
    assert_eq!(p.term, Some(3));
    assert_eq!(p.action, None);
    let roles: Vec<&str> = p.members.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(roles, ["Follower", "Leader", "Follower"]);

    // Same term twice cannot be trusted: wait.
    obs.insert(0, member(0, 3, Some(0), &voters(&[0, 1, 2])));
    let p = plan(NAME, 3, Some(3), &pods(3), &obs);
    assert_eq!(p.action, None);
    assert!(p
        .waiting
        .unwrap()
        .contains("two members claim to lead term 3"));
}

#[test]
fn a_pod_whose_member_is_not_in_the_membership() {
    // demo-1 holds state of some other membership (e.g. removed earlier): it is re-added as a
    // learner, never trusted as a voter.
    let mut obs = cluster(3, 0, &voters(&[0, 2]));
    obs.insert(1, member(1, 1, None, &voters(&[1])));
    let p = plan(NAME, 3, Some(3), &pods(3), &obs);
    assert_eq!(
        p.action,
        Some(Step::AddLearner {
            leader: 0,
            ordinal: 1
        })
    );

    // A leftover pod above the spec that is no member: nothing to remove, the StatefulSet shrinks.
    let obs = cluster(4, 0, &voters(&[0, 1, 2]));
    let p = plan(NAME, 3, Some(4), &pods(4), &obs);
    assert_eq!(p.action, None);
    assert_eq!(p.statefulset_replicas, 3);
    assert!(!p.settled, "the StatefulSet is still 4");
}

#[test]
fn an_answer_from_the_wrong_node_id_is_not_trusted() {
    let mut obs = cluster(3, 0, &voters(&[0, 1, 2]));
    obs.insert(2, member(1, 2, Some(0), &voters(&[0, 1, 2])));
    let p = plan(NAME, 3, Some(3), &pods(3), &obs);
    assert!(!p.members[2].healthy);
    assert!(p.waiting.unwrap().contains("answers as node 2, expected 3"));
}

#[test]
fn nothing_to_do_when_settled() {
    let obs = cluster(3, 1, &voters(&[0, 1, 2]));
    let p = plan(NAME, 3, Some(3), &pods(3), &obs);
    assert_eq!(p.action, None);
    assert!(p.settled && p.available);
    assert_eq!(p.waiting, None);
    assert_eq!(p.leader, Some(1));
    assert_eq!(p.statefulset_replicas, 3);
    assert_eq!(p.members.len(), 3);
    assert!(p.members.iter().all(|m| m.healthy));
    assert_eq!(p.members[0].address.as_deref(), Some("demo-0:8400"));

    // A pod that is not ready is not healthy: not settled.
    let mut ps = pods(3);
    ps[0].ready = false;
    let p = plan(NAME, 3, Some(3), &ps, &obs);
    assert!(!p.settled && p.available);
}

#[test]
fn a_voter_that_lost_its_disk_is_removed_then_rejoins_as_a_learner() {
    // demo-2 answers as a fresh member while the leader still counts it as a voter.
    let mut obs = cluster(3, 0, &voters(&[0, 1, 2]));
    obs.insert(2, fresh(2));
    let p = plan(NAME, 3, Some(3), &pods(3), &obs);
    assert_eq!(
        p.action,
        Some(Step::Remove {
            leader: 0,
            ordinal: 2,
            reason: RemoveReason::LostData
        })
    );
    assert_eq!(p.statefulset_replicas, 3, "its pod stays");

    // Next pass: it is out, still fresh: added as a learner; promoted only once caught up.
    let obs = cluster(3, 0, &voters(&[0, 1]));
    let p = plan(NAME, 3, Some(3), &pods(3), &obs);
    assert_eq!(
        p.action,
        Some(Step::AddLearner {
            leader: 0,
            ordinal: 2
        })
    );
}

#[test]
fn the_statefulset_never_shrinks_below_a_member_or_without_a_membership() {
    let m = |o: &[u32]| o.iter().copied().collect::<BTreeSet<u32>>();
    assert_eq!(
        statefulset_replicas(3, Some(5), Some(&m(&[0, 1, 2, 3, 4]))),
        5
    );
    assert_eq!(statefulset_replicas(3, Some(5), Some(&m(&[0, 1, 2, 3]))), 4);
    assert_eq!(statefulset_replicas(3, Some(5), Some(&m(&[0, 1, 2]))), 3);
    assert_eq!(statefulset_replicas(3, Some(5), None), 5);
    assert_eq!(statefulset_replicas(5, Some(3), None), 5);
    assert_eq!(statefulset_replicas(3, None, None), 3);
}
