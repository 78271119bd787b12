//! Unit tests of the pure part of discovery: the view and the slices built from it, read back
//! through the client's own resolver code (`members_from_slices`).

use super::*;
use proglog_client::resolver::kubernetes::members_from_slices;

fn tracked(pods: Vec<PodInfo>) -> Tracked {
    Tracked {
        namespace: "ns".into(),
        name: "demo".into(),
        owner: OwnerReference {
            api_version: "proglog.dev/v1alpha1".into(),
            kind: "ProgLog".into(),
            name: "demo".into(),
            uid: "u-1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        },
        port: 8400,
        pods,
        auth: ClusterAuth::Token("t".into()),
    }
}

fn pod(o: u32, ip: Option<&str>, ready: bool) -> PodInfo {
    PodInfo {
        name: names::pod("demo", o),
        ordinal: o,
        ip: ip.map(str::to_string),
        ready,
        terminating: false,
    }
}

fn three() -> Vec<PodInfo> {
    (0..3)
        .map(|o| pod(o, Some(&format!("10.1.0.{}", o + 1)), true))
        .collect()
}

fn status(term: u64, leader: Option<u64>, voters: &[u64], learners: &[u64]) -> pb::ClusterStatus {
    let m = |id: u64, voter| pb::MemberStatus {
        node_id: id,
        voter,
        ..Default::default()
    };
    pb::ClusterStatus {
        term,
        leader_id: leader,
        members: voters
            .iter()
            .map(|&v| m(v, true))
            .chain(learners.iter().map(|&l| m(l, false)))
            .collect(),
        ..Default::default()
    }
}

#[test]
fn the_view_keeps_the_last_leader_and_ignores_stale_terms() {
    let mut v = View::default();
    assert!(v.apply(&status(3, Some(1), &[1, 2, 3], &[])));
    assert!(!v.apply(&status(3, Some(1), &[1, 2, 3], &[])), "no change");
    // An election: no leader known. The last one is kept.
    assert!(!v.apply(&status(4, None, &[1, 2, 3], &[])));
    assert_eq!(v.leader, Some(1));
    // A cut-off old leader still claims term 2: ignored.
    assert!(!v.apply(&status(2, Some(3), &[1, 2, 3], &[])));
    // A lone candidate raising its term does not hide the real leader's later reports.
    assert!(!v.apply(&status(9, None, &[1, 2, 3], &[])));
    assert!(v.apply(&status(4, Some(2), &[1, 2, 3], &[4])));
    assert_eq!(
        v,
        View {
            leader: Some(2),
            term: 4,
            voters: [1, 2, 3].into()
        }
    );
}

#[test]
fn the_leader_slice_names_the_leader_and_the_followers_slice_the_other_ready_voters() {
    let mut pods = three();
    pods.push(pod(3, Some("10.1.0.4"), true)); // a learner: not listed
    let t = tracked(pods);
    let view = View {
        leader: Some(2),
        term: 5,
        voters: [1, 2, 3].into(),
    };
    let s = build_slices(&t, &view);
    let leader = s.leader.clone().unwrap();
    let followers = s.followers.clone().unwrap();

    assert_eq!(leader.metadata.name.as_deref(), Some("demo-leader"));
    assert_eq!(followers.metadata.name.as_deref(), Some("demo-followers"));
    let labels = leader.metadata.labels.clone().unwrap();
    assert_eq!(labels["kubernetes.io/service-name"], "demo-leader");
    assert_eq!(labels["proglog.dev/role"], "leader");
    assert_eq!(labels["proglog.dev/cluster"], "demo");
    assert_eq!(
        labels["endpointslice.kubernetes.io/managed-by"],
        "proglog-operator"
    );
    assert_eq!(
        followers.metadata.labels.as_ref().unwrap()["proglog.dev/role"],
        "followers"
    );
    assert_eq!(leader.metadata.namespace.as_deref(), Some("ns"));
    assert_eq!(
        leader.metadata.owner_references.as_ref().unwrap()[0].uid,
        "u-1"
    );
    assert_eq!(leader.address_type, "IPv4");
    let port = &leader.ports.as_ref().unwrap()[0];
    assert_eq!(
        (port.name.as_deref(), port.port),
        (Some("grpc"), Some(8400))
    );

    assert_eq!(leader.endpoints.len(), 1);
    let e = &leader.endpoints[0];
    assert_eq!(e.addresses, ["10.1.0.2"]);
    assert_eq!(e.hostname.as_deref(), Some("demo-1"));
    let r = e.target_ref.as_ref().unwrap();
    assert_eq!(
        (r.kind.as_deref(), r.name.as_deref(), r.namespace.as_deref()),
        (Some("Pod"), Some("demo-1"), Some("ns"))
    );

    // What the client's resolver makes of them.
    let m = members_from_slices([&leader, &followers], "grpc");
    assert_eq!(m.leader().unwrap().addr, "10.1.0.2:8400");
    assert_eq!(m.leader().unwrap().name, "demo-1");
    let f: Vec<String> = m.ready_followers().map(|e| e.addr.clone()).collect();
    assert_eq!(f, ["10.1.0.1:8400", "10.1.0.3:8400"]);
}

#[test]
fn followers_whose_pod_is_not_ready_are_left_out() {
    let mut pods = three();
    pods[2].ready = false;
    let view = View {
        leader: Some(1),
        term: 1,
        voters: [1, 2, 3].into(),
    };
    let s = build_slices(&tracked(pods), &view);
    let f = s.followers.unwrap();
    let ips: Vec<&str> = f
        .endpoints
        .iter()
        .map(|e| e.addresses[0].as_str())
        .collect();
    assert_eq!(ips, ["10.1.0.2"]);
}

#[test]
fn nothing_is_written_for_what_is_not_known() {
    // No status yet: neither slice.
    let s = build_slices(&tracked(three()), &View::default());
    assert_eq!(s, DesiredSlices::default());

    // The leader's pod has no IP (it was just recreated): keep the leader slice as it is.
    let mut pods = three();
    pods[0].ip = None;
    let view = View {
        leader: Some(1),
        term: 2,
        voters: [1, 2, 3].into(),
    };
    let s = build_slices(&tracked(pods), &view);
    assert!(s.leader.is_none());
    assert_eq!(s.followers.unwrap().endpoints.len(), 2);
}

#[test]
fn a_terminating_leader_is_not_ready_so_clients_stop_using_it() {
    let mut pods = three();
    pods[0].terminating = true;
    let view = View {
        leader: Some(1),
        term: 2,
        voters: [1, 2, 3].into(),
    };
    let s = build_slices(&tracked(pods), &view);
    let l = s.leader.unwrap();
    let c = l.endpoints[0].conditions.clone().unwrap();
    assert_eq!(
        (c.ready, c.serving, c.terminating),
        (Some(false), Some(true), Some(true))
    );
    assert!(members_from_slices([&l], "grpc").leader().is_none());
}

#[test]
fn ipv6_pods_make_an_ipv6_slice() {
    let pods = vec![pod(0, Some("fd00::a"), true)];
    let view = View {
        leader: Some(1),
        term: 1,
        voters: [1].into(),
    };
    let s = build_slices(&tracked(pods), &view);
    let l = s.leader.unwrap();
    assert_eq!(l.address_type, "IPv6");
    assert_eq!(
        members_from_slices([&l], "grpc").leader().unwrap().addr,
        "[fd00::a]:8400"
    );
    assert!(s.followers.unwrap().endpoints.is_empty());
}

#[test]
fn candidates_prefer_ready_followers_then_the_rest() {
    let mut pods = three();
    pods[1].ready = false;
    let view = View {
        leader: Some(1),
        term: 1,
        voters: [1, 2, 3].into(),
    };
    let t = tracked(pods);
    assert_eq!(candidates(&t, &view, None), [2, 0, 1]);
    assert_eq!(candidates(&t, &view, Some(1)), [1, 2, 0]);
}

#[test]
fn a_watched_leader_is_left_for_a_ready_follower_if_there_is_one() {
    let mut pods = three();
    let view = View {
        leader: Some(1),
        term: 1,
        voters: [1, 2, 3].into(),
    };
    pods[1].ready = false;
    assert_eq!(follower_to_watch(&tracked(pods.clone()), &view, 0), Some(2));
    pods[2].ready = false;
    assert_eq!(follower_to_watch(&tracked(pods), &view, 0), None);
    let alone = View {
        leader: Some(1),
        term: 1,
        voters: [1].into(),
    };
    assert_eq!(follower_to_watch(&tracked(three()), &alone, 0), None);
}
