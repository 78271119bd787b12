//! Elections on a three-member loopback cluster: a member back from a partition does not depose
//! a leader that a quorum still follows (pre-vote), and a leader cut off from its quorum refuses
//! writes at once with UNAVAILABLE instead of holding them until the fault heals (fail fast).

mod common;

use std::time::Duration;

use anyhow::{Context, Result};
use common::*;
use logserver::config::Config;
use proglog_proto::v1 as pb;

/// The lease of these tests (election timeout): short, so that a partition of a few leases
/// costs little time.
const LEASE: Duration = Duration::from_millis(400);

fn short_lease(c: &mut Config) {
    c.election_timeout = LEASE;
}

fn term_of(c: &TestCluster, id: u64) -> u64 {
    c.node(id).raft().metrics().borrow().current_term
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_back_from_a_partition_does_not_depose_the_leader() -> Result<()> {
    let c = TestCluster::start(3, short_lease).await?;
    let leader = c.leader().await?;
    let term = term_of(&c, leader);
    let lonely = (1..=3).find(|&m| m != leader).unwrap();
    let addrs = c.members.iter().map(|m| m.addr).collect();
    let mut prod = Producer::new(addrs);
    prod.produce(b"before".to_vec()).await?;

    for m in (1..=3).filter(|&m| m != lonely) {
        c.filter.cut(lonely, m);
    }
    // Cut off for several leases: it loses its leader and would campaign on its own timer.
    let cut_at = tokio::time::Instant::now();
    let mut during = 0;
    while cut_at.elapsed() < LEASE * 4 {
        prod.produce(format!("during-{during}").into_bytes())
            .await?;
        during += 1;
    }
    for m in (1..=3).filter(|&m| m != lonely) {
        let l = c.node(m).raft().metrics().borrow().current_leader;
        assert_eq!(l, Some(leader), "member {m} lost the leader");
    }
    c.filter.heal();

    // Back: it catches up from the same leader, in the same term.
    let last = prod.produce(b"after".to_vec()).await?;
    c.wait_next(lonely, last + 1).await?;
    for m in 1..=3 {
        let metrics = c.node(m).raft().metrics().borrow().clone();
        assert_eq!(
            metrics.current_leader,
            Some(leader),
            "member {m} follows another leader after the heal"
        );
        assert_eq!(
            metrics.current_term, term,
            "member {m} is in another term: the returning member forced an election"
        );
    }
    assert!(during > 0);
    c.shutdown().await
}

fn outcome(s: &tonic::Status) -> Option<String> {
    s.metadata()
        .get(proglog_proto::WRITE_OUTCOME_METADATA_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_cut_off_from_its_quorum_fails_fast() -> Result<()> {
    let c = TestCluster::start(3, short_lease).await?;
    let old = c.leader().await?;
    let mut old_client = log_client(c.member(old).addr).await?;
    produce(&mut old_client, b"before".to_vec()).await?;
    for m in (1..=3).filter(|&m| m != old) {
        c.filter.cut(old, m);
    }

    // A write that reaches the leader right after the cut is proposed and cannot commit: it is
    // answered UNAVAILABLE, outcome unknown, while the partition still holds.
    let mut mc = old_client.clone();
    let in_flight = tokio::spawn(async move { produce(&mut mc, b"in-flight".to_vec()).await });
    let status = tokio::time::timeout(DEADLINE, in_flight)
        .await
        .context("the cut-off leader held the write")??
        .expect_err("a cut-off leader acknowledged a write");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(
        outcome(&status).as_deref(),
        Some(proglog_proto::OUTCOME_UNKNOWN)
    );

    // Later writes are refused at once, as never proposed.
    let status = produce(&mut old_client, b"refused".to_vec())
        .await
        .expect_err("a cut-off leader acknowledged a write");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(
        outcome(&status).as_deref(),
        Some(proglog_proto::NOT_COMMITTED)
    );

    // The majority elects a leader and commits; after the heal the refused value is nowhere.
    let others: Vec<u64> = (1..=3).filter(|&m| m != old).collect();
    let new = eventually("a majority leader", DEADLINE, || {
        let raft = c.node(others[0]).raft().clone();
        async move {
            let l = raft.metrics().borrow().current_leader?;
            (l != old).then_some(l)
        }
    })
    .await?;
    let mut new_client = log_client(c.member(new).addr).await?;
    let majority = produce(&mut new_client, b"majority".to_vec()).await?;
    c.filter.heal();
    c.leader().await?;
    for m in 1..=3 {
        c.wait_next(m, majority + 1).await?;
        let sm = c.node(m).records().clone();
        let (first, next) = sm.range();
        for off in first..next {
            assert_ne!(
                &sm.read(off)?.value[..],
                b"refused",
                "member {m} offset {off}"
            );
        }
    }
    let servers = new_client
        .get_servers(pb::GetServersRequest {})
        .await?
        .into_inner();
    assert!(servers.servers.iter().any(|s| s.is_leader));
    c.shutdown().await
}
