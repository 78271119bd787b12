//! Pipelined replication (`raft_pipeline`) on a three-member loopback cluster: while an
//! AppendEntries is in flight the leader sends the next entries at once, and answers openraft's
//! later request for them with the follower's answer. Producers whose records are acknowledged
//! that way still find every record at its offset, with its value, on every member.

mod common;

use std::sync::atomic::Ordering::Relaxed;

use anyhow::Result;
use common::*;
use logserver::stats::STATS;
use proglog_proto::v1 as pb;

const PRODUCERS: u64 = 8;
const CALLS: u64 = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn entries_sent_ahead_answer_openraft_and_every_record_lands() -> Result<()> {
    let c = TestCluster::start(3, |cfg| {
        cfg.raft_pipeline = true;
        // NB: a second group in flight is what gets written while an AppendEntries is out.
        cfg.group_commit_depth = 2;
    })
    .await?;
    let leader = c.leader().await?;
    let addr = c.member(leader).addr;
    let answered_before = STATS.append_rpcs_answered_ahead.load(Relaxed);

    // Closed-loop producers of batches, each call its own values.
    let tasks: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            tokio::spawn(async move {
                let mut client = log_client(addr).await?;
                let mut acked = Vec::new();
                for call in 0..CALLS {
                    let first = (p * CALLS + call) * 4;
                    let r = client
                        .produce_batch(pb::ProduceBatchRequest {
                            records: records(first..first + 4),
                            ..Default::default()
                        })
                        .await?;
                    let offsets = r.into_inner().offsets;
                    acked.extend((first..first + 4).zip(offsets));
                }
                anyhow::Ok(acked)
            })
        })
        .collect();
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await??);
    }
    let answered = STATS.append_rpcs_answered_ahead.load(Relaxed) - answered_before;
    assert!(
        answered > 0,
        "no AppendEntries of openraft was answered by one sent ahead"
    );

    // Every acknowledged record is at its offset with its value, on every member.
    let total = PRODUCERS * CALLS * 4;
    assert_eq!(acked.len() as u64, total);
    let next = acked.iter().map(|&(_, o)| o + 1).max().unwrap_or(0);
    for m in c.running() {
        c.wait_next(m.id, next).await?;
        let mut client = log_client(m.addr).await?;
        for &(i, offset) in &acked {
            let r = client
                .consume(pb::ConsumeRequest {
                    offset,
                    ..Default::default()
                })
                .await?
                .into_inner();
            assert_eq!(
                r.record.map(|r| r.value.to_vec()),
                Some(value(i)),
                "member {} offset {offset}",
                m.id
            );
        }
    }
    c.shutdown().await
}

/// The benchmarks' emulated round trip (`peer_delay`): a produce needs a follower's answer, so
/// it takes at least one held peer request.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_emulated_round_trip_holds_every_peer_request() -> Result<()> {
    const DELAY: std::time::Duration = std::time::Duration::from_millis(60);
    let c = TestCluster::start(3, |cfg| cfg.peer_delay = DELAY).await?;
    let leader = c.leader().await?;
    let mut client = log_client(c.member(leader).addr).await?;
    for i in 0..3 {
        let started = std::time::Instant::now();
        produce(&mut client, value(i)).await?;
        let took = started.elapsed();
        assert!(
            took >= DELAY,
            "produce {i} took {took:?}, less than {DELAY:?}"
        );
    }
    c.shutdown().await
}
