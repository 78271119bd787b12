//! Membership through the admin API: a fourth member joins as a learner (progress streamed until
//! it has caught up), is promoted, and is removed again; WatchStatus reports the changes; and
//! ConsumeStream follows the tail as new records commit.

mod common;

use anyhow::Result;
use common::*;
use futures::StreamExt;
use logserver::node::Node;
use proglog_proto::v1 as pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn learner_joins_catches_up_is_promoted_and_removed() -> Result<()> {
    let c = TestCluster::start(3, |_| {}).await?;
    let leader = c.leader().await?;
    let mut lc = log_client(c.member(leader).addr).await?;
    for i in 0..50 {
        produce(&mut lc, value(i)).await?;
    }
    let dir = tempfile::tempdir()?;
    let cfg = config(4, dir.path().join("m4"), "127.0.0.1:0".parse()?, |_| {});
    let n4 = Node::start_with_filter(cfg, c.filter.clone()).await?;
    let mut admin = admin_client(c.member(leader).addr).await?;
    let mut watch = admin
        .watch_status(with_token(pb::StatusRequest {}))
        .await?
        .into_inner();
    let first = watch.next().await.expect("current status")?;
    assert_eq!(first.members.len(), 3);

    let mut progress = admin
        .add_learner(with_token(pb::AddLearnerRequest {
            member: Some(pb::Member {
                node_id: 4,
                addr: n4.addr().to_string(),
                name: "m4".into(),
            }),
        }))
        .await?
        .into_inner();
    let mut last = None;
    while let Some(p) = progress.next().await {
        last = Some(p?);
    }
    let last = last.expect("some progress");
    assert!(last.caught_up && last.matched_index >= 50, "{last:?}");
    // It holds the whole log; it applies it as soon as the next heartbeat carries the commit.
    let sm = n4.records().clone();
    eventually("the learner to apply every record", DEADLINE, || {
        let sm = sm.clone();
        async move { (sm.range() == (0, 50)).then_some(()) }
    })
    .await?;
    assert_eq!(&sm.read(49)?.value[..], &value(49)[..]);

    let st = admin
        .change_membership(with_token(pb::ChangeMembershipRequest {
            voters: vec![1, 2, 3, 4],
            retain_as_learners: false,
        }))
        .await?
        .into_inner()
        .status
        .unwrap();
    assert_eq!(st.members.iter().filter(|m| m.voter).count(), 4);
    // WatchStatus saw the membership grow to four.
    loop {
        let s = watch.next().await.expect("watch stream open")?;
        if s.members.len() == 4 && s.members.iter().all(|m| m.voter) {
            break;
        }
    }

    let st = admin
        .remove_member(with_token(pb::RemoveMemberRequest { node_id: 4 }))
        .await?
        .into_inner()
        .status
        .unwrap();
    assert_eq!(st.members.len(), 3, "{st:?}");
    assert!(st.members.iter().all(|m| m.node_id != 4));
    let e = admin
        .remove_member(with_token(pb::RemoveMemberRequest { node_id: 4 }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    n4.shutdown().await?;
    c.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consume_stream_follows_the_tail_on_a_follower() -> Result<()> {
    let c = TestCluster::start(3, |_| {}).await?;
    let leader = c.leader().await?;
    let follower = (1..=3).find(|&m| m != leader).unwrap();
    let mut lc = log_client(c.member(leader).addr).await?;
    for i in 0..5 {
        produce(&mut lc, value(i)).await?;
    }
    let mut fc = log_client(c.member(follower).addr).await?;
    let mut stream = fc
        .consume_stream(pb::ConsumeRequest {
            offset: 3,
            ..Default::default()
        })
        .await?
        .into_inner();
    for i in 3..5 {
        let r = stream.next().await.expect("open")?.record.unwrap();
        assert_eq!((r.offset, &r.value[..]), (i, &value(i)[..]));
    }
    // Nothing more yet: records produced from now on arrive as they commit.
    for i in 5..25 {
        produce(&mut lc, value(i)).await?;
        let r = stream.next().await.expect("open")?.record.unwrap();
        assert_eq!((r.offset, &r.value[..]), (i, &value(i)[..]));
    }
    c.shutdown().await
}
