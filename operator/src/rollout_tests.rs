//! Unit tests of the rollout planner: plain values in, at most one step out. No cluster.

use std::collections::{BTreeMap, BTreeSet};

use proglog_crds::MemberStatus;

use super::*;

const NAME: &str = "demo";
const NEW: &str = "demo-new";
const OLD: &str = "demo-old";

/// A cluster of `n` healthy members led by `leader`, each follower `lag` entries behind.
struct Fixture {
    pods: Vec<PodInfo>,
    revisions: BTreeMap<u32, PodRevision>,
    report: MembershipReport,
    sts_replicas: Option<u32>,
    desired: u32,
}

impl Fixture {
    fn new(n: u32, leader: u32, old: &[u32]) -> Fixture {
        let all: BTreeSet<u32> = (0..n).collect();
        Fixture {
            pods: (0..n)
                .map(|o| PodInfo {
                    name: names::pod(NAME, o),
                    ordinal: o,
                    ip: Some(format!("10.0.0.{o}")),
                    ready: true,
                    terminating: false,
                })
                .collect(),
            revisions: (0..n)
                .map(|o| {
                    let rev = if old.contains(&o) { OLD } else { NEW };
                    let r = PodRevision {
                        revision: Some(rev.to_string()),
                        uid: Some(format!("uid-{o}")),
                    };
                    (o, r)
                })
                .collect(),
            report: MembershipReport {
                statefulset_replicas: n as i32,
                leader: Some(names::pod(NAME, leader)),
                leader_ordinal: Some(leader),
                voters: all.clone(),
                member_ordinals: all,
                members: (0..n)
                    .map(|o| MemberStatus {
                        pod: names::pod(NAME, o),
                        raft_id: o as i64 + 1,
                        role: if o == leader { "Leader" } else { "Follower" }.into(),
                        healthy: true,
                        lag: Some(0),
                        address: None,
                    })
                    .collect(),
                settled: true,
                available: true,
                ..MembershipReport::default()
            },
            sts_replicas: Some(n),
            desired: n,
        }
    }

    fn lag(mut self, o: u32, lag: Option<i64>) -> Self {
        self.report.members[o as usize].lag = lag;
        self
    }

    fn plan(&self) -> RolloutPlan {
        plan(&Observed {
            name: NAME,
            desired: self.desired,
            sts_replicas: self.sts_replicas,
            revision: Some(NEW),
            pods: &self.pods,
            revisions: &self.revisions,
            report: &self.report,
        })
    }
}

fn restart(ordinal: u32, nth: u32, of: u32) -> Option<Step> {
    Some(Step::Restart { ordinal, nth, of })
}

#[test]
fn followers_go_first_highest_ordinal_first() {
    let p = Fixture::new(3, 0, &[0, 1, 2]).plan();
    assert_eq!(p.action, restart(2, 1, 3));
    let st = p.status.as_ref().unwrap();
    assert_eq!((st.revision.as_str(), st.updated, st.replicas), (NEW, 0, 3));
    assert_eq!(st.message.as_deref(), Some("restarting demo-2"));
    assert!(p.in_progress() && p.waiting.is_none());

    // The leader is demo-2: demo-1 first, then demo-0.
    assert_eq!(
        Fixture::new(3, 2, &[0, 1, 2]).plan().action,
        restart(1, 1, 3)
    );
    assert_eq!(Fixture::new(3, 2, &[0]).plan().action, restart(0, 3, 3));
}

#[test]
fn the_leader_goes_last_after_handing_over_to_an_updated_follower() {
    // Only the leader is left: move leadership to the updated voter least behind.
    let p = Fixture::new(3, 0, &[0])
        .lag(1, Some(7))
        .lag(2, Some(3))
        .plan();
    assert_eq!(
        p.action,
        Some(Step::TransferLeadership {
            leader: 0,
            to: 2,
            why: Handover::Restart { nth: 3, of: 3 },
        })
    );
    // Never to a voter still on the old revision: demo-1 is behind no one, but outdated.
    let p = Fixture::new(3, 0, &[0, 1]).lag(2, Some(5)).plan();
    assert_eq!(p.action, restart(1, 2, 3), "the outdated follower first");
    // Once leadership moved to demo-2, the old leader is a follower: restart it.
    let p = Fixture::new(3, 2, &[0]).plan();
    assert_eq!(p.action, restart(0, 3, 3));
    // A one-member cluster has nobody to hand over to.
    assert_eq!(Fixture::new(1, 0, &[0]).plan().action, restart(0, 1, 1));
}

#[test]
fn the_next_restart_waits_until_every_member_is_back_ready_and_caught_up() {
    // demo-2 was restarted: it is stopping, then back but not ready, then not answering, then
    // ready but behind, then of unknown progress. No step through all of them.
    let mut f = Fixture::new(3, 0, &[0, 1]);
    f.pods[2].terminating = true;
    let p = f.plan();
    assert_eq!(p.action, None);
    let w = p.waiting.clone().unwrap();
    assert!(
        w.starts_with("rolling update: waiting for every member to be back"),
        "{w}"
    );
    assert!(w.contains("demo-2 is stopping"), "{w}");
    assert_eq!(
        p.status
            .unwrap()
            .message
            .map(|m| format!("rolling update: {m}")),
        p.waiting
    );

    f.pods[2].terminating = false;
    f.pods[2].ready = false;
    assert!(f.plan().waiting.unwrap().contains("demo-2 is not ready"));

    f.pods[2].ready = true;
    f.report.members[2].healthy = false;
    assert!(f.plan().waiting.unwrap().contains("demo-2 does not answer"));

    f.report.members[2].healthy = true;
    let f = f.lag(2, Some(500));
    let p = f.plan();
    assert_eq!(p.action, None);
    assert!(p
        .waiting
        .unwrap()
        .contains("demo-2 is catching up (500 entries behind)"));
    let f = f.lag(2, None);
    assert!(f
        .plan()
        .waiting
        .unwrap()
        .contains("demo-2's progress is not known yet"));

    // Caught up (within the bound): the next one goes.
    let f = f.lag(2, Some(ROLLOUT_MAX_LAG as i64));
    assert_eq!(f.plan().action, restart(1, 2, 3));

    // A pod the StatefulSet has not made again yet is waited for (and counts as updated).
    let mut f = Fixture::new(3, 0, &[0, 1, 2]);
    f.pods.retain(|p| p.ordinal != 2);
    f.revisions.remove(&2);
    let p = f.plan();
    assert_eq!(p.action, None);
    assert!(p.waiting.unwrap().contains("demo-2 does not exist yet"));
    assert_eq!(p.status.unwrap().updated, 1);
}

#[test]
fn nothing_restarts_while_the_membership_changes() {
    // A membership step was taken this pass.
    let mut f = Fixture::new(3, 0, &[0, 1, 2]);
    f.report.step = Some(Taken {
        cluster: NAME.into(),
        step: Step::Promote {
            leader: 0,
            ordinal: 2,
            voters: vec![1, 2, 3],
        },
        outcome: Outcome::Promoted,
    });
    let p = f.plan();
    assert_eq!(p.action, None);
    assert!(
        p.waiting
            .unwrap()
            .contains("paused while the membership changes (promoted demo-2"),
        "the waiting says why"
    );

    // A learner (demo-2 not a voter yet).
    let mut f = Fixture::new(3, 0, &[0, 1, 2]);
    f.report.voters.remove(&2);
    assert_eq!(f.plan().action, None);

    // Scaling down: demo-3 is still a member, the spec wants 3.
    let mut f = Fixture::new(3, 0, &[0, 1, 2]);
    f.report.member_ordinals.insert(3);
    f.report.voters.insert(3);
    assert_eq!(f.plan().action, None);

    // The StatefulSet is being resized.
    let mut f = Fixture::new(3, 0, &[0, 1, 2]);
    f.sts_replicas = Some(5);
    assert!(f.plan().waiting.unwrap().contains("resized"));

    // No leader.
    let mut f = Fixture::new(3, 0, &[0, 1, 2]);
    f.report.leader_ordinal = None;
    assert!(f.plan().waiting.unwrap().contains("no leader"));
}

#[test]
fn an_updated_cluster_has_nothing_to_do() {
    let p = Fixture::new(3, 1, &[]).plan();
    assert_eq!(p.action, None);
    assert_eq!(p.waiting, None);
    assert!(!p.in_progress());
    let st = p.status.unwrap();
    assert_eq!((st.updated, st.replicas, st.message), (3, 3, None));

    // Before the StatefulSet has a revision there is no rollout to speak of.
    let f = Fixture::new(3, 1, &[0]);
    let p = plan(&Observed {
        name: NAME,
        desired: 3,
        sts_replicas: Some(3),
        revision: None,
        pods: &f.pods,
        revisions: &f.revisions,
        report: &f.report,
    });
    assert_eq!((p.action, p.status), (None, None));
}

#[test]
fn revisions_and_the_update_strategy_are_read_from_the_objects() {
    let pod = |name: &str, rev: Option<&str>| -> Pod {
        let mut labels = serde_json::Map::new();
        if let Some(r) = rev {
            labels.insert(REVISION_LABEL.into(), r.into());
        }
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "uid": format!("u-{name}"), "labels": labels}
        }))
        .unwrap()
    };
    let r = revisions(
        NAME,
        &[
            pod("demo-0", Some(NEW)),
            pod("demo-1", None),
            pod("other-0", Some(NEW)),
        ],
    );
    assert_eq!(r.len(), 2);
    assert_eq!(r[&0].revision.as_deref(), Some(NEW));
    assert_eq!(r[&0].uid.as_deref(), Some("u-demo-0"));
    assert_eq!(r[&1].revision, None, "no label: outdated");

    let sts = |strategy: serde_json::Value| -> StatefulSet {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "demo"},
            "spec": {"selector": {}, "template": {}, "serviceName": "x", "updateStrategy": strategy},
            "status": {"replicas": 3, "updateRevision": NEW}
        }))
        .unwrap()
    };
    assert!(needs_on_delete(&sts(serde_json::json!({
        "type": "RollingUpdate", "rollingUpdate": {"partition": 0}
    }))));
    assert!(needs_on_delete(&sts(serde_json::json!(null))));
    let on_delete = sts(serde_json::json!({"type": "OnDelete"}));
    assert!(!needs_on_delete(&on_delete));
    assert_eq!(update_revision(&on_delete), Some(NEW));
}
