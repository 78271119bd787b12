//! Group commit on a three-member loopback cluster: concurrent Produce calls share Raft entries
//! (fewer entries than calls), each call still gets its own dense offset and reads back its own
//! value; with `group_commit_depth = 0` every call is an entry of its own.

mod common;

use anyhow::Result;
use common::*;
use proglog_proto::v1 as pb;

const CALLS: u64 = 64;

/// Sends `CALLS` Produce calls at once to the leader; returns the Raft entries they used.
async fn concurrent_produces(c: &TestCluster) -> Result<u64> {
    let leader = c.leader().await?;
    let client = log_client(c.member(leader).addr).await?;
    let raft = c.node(leader).raft().clone();
    let before = raft.metrics().borrow().last_log_index.unwrap_or(0);
    let calls: Vec<_> = (0..CALLS)
        .map(|i| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let r = client
                    .produce(pb::ProduceRequest {
                        record: Some(pb::Record {
                            value: value(i).into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .await?;
                anyhow::Ok((i, r.into_inner().offset))
            })
        })
        .collect();
    let mut acked = Vec::new();
    for call in calls {
        acked.push(call.await??);
    }
    let after = raft.metrics().borrow().last_log_index.unwrap_or(0);

    // Dense and unique, and every offset holds the value of the call it was given to.
    let mut offsets: Vec<u64> = acked.iter().map(|&(_, o)| o).collect();
    offsets.sort_unstable();
    assert_eq!(
        offsets,
        (offsets[0]..offsets[0] + CALLS).collect::<Vec<_>>()
    );
    let mut reader = log_client(c.member(leader).addr).await?;
    for (i, offset) in acked {
        let r = reader
            .consume(pb::ConsumeRequest {
                offset,
                ..Default::default()
            })
            .await?
            .into_inner();
        assert_eq!(r.record.unwrap().value, value(i), "offset {offset}");
    }
    Ok(after - before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_produces_share_raft_entries() -> Result<()> {
    let c = TestCluster::start(3, |_| {}).await?;
    let entries = concurrent_produces(&c).await?;
    assert!(
        entries < CALLS,
        "{CALLS} concurrent calls used {entries} Raft entries"
    );
    c.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_group_commit_every_call_is_an_entry() -> Result<()> {
    let c = TestCluster::start(3, |cfg| cfg.group_commit_depth = 0).await?;
    let entries = concurrent_produces(&c).await?;
    assert_eq!(entries, CALLS);
    c.shutdown().await
}
