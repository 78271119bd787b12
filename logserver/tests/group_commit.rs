//! Group commit on a three-member loopback cluster: concurrent Produce calls share Raft entries
//! (fewer entries than calls), each call still gets its own dense offset and reads back its own
//! value; with `group_commit_depth = 0` every call is an entry of its own. Idempotent calls
//! (each with its own producer claim) share entries too, and a group mixing retries of committed
//! attempts of a call with new calls appends each call's records once. Closed-loop callers share
//! one group per round when the next group waits for the callers the last one answered.

mod common;

use anyhow::Result;
use common::*;
use proglog_proto::v1 as pb;
use proglog_proto::v1::log_client::LogClient;
use tonic::transport::Channel;

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

/// `callers` closed-loop producers (each sends its next call when the last is answered), `rounds`
/// calls each; returns the Raft entries they used.
async fn closed_loop(c: &TestCluster, callers: u64, rounds: u64) -> Result<u64> {
    let leader = c.leader().await?;
    let client = log_client(c.member(leader).addr).await?;
    let raft = c.node(leader).raft().clone();
    let before = raft.metrics().borrow().last_log_index.unwrap_or(0);
    let tasks: Vec<_> = (0..callers)
        .map(|i| {
            let mut client = client.clone();
            tokio::spawn(async move {
                for r in 0..rounds {
                    let record = pb::Record {
                        value: value(i * rounds + r).into(),
                        ..Default::default()
                    };
                    client
                        .produce(pb::ProduceRequest {
                            record: Some(record),
                            ..Default::default()
                        })
                        .await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok(raft.metrics().borrow().last_log_index.unwrap_or(0) - before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn closed_loop_callers_share_the_next_group_when_it_waits_for_them() -> Result<()> {
    // Without the wait, 4 callers settle into groups of about 2 (~100 entries for 200 calls):
    // those answered come back while the others' group is in flight.
    let (callers, rounds) = (4, 50);
    let c = TestCluster::start(3, |cfg| {
        cfg.group_commit_wait = std::time::Duration::from_secs(1)
    })
    .await?;
    let entries = closed_loop(&c, callers, rounds).await?;
    assert!(
        entries <= rounds + 10,
        "{callers} callers x {rounds} calls used {entries} Raft entries"
    );
    c.shutdown().await
}

/// One Produce per producer at once (`(producer id, epoch, sequence, value)`); returns each
/// call's (offset, duplicate).
async fn produce_all(
    client: &LogClient<Channel>,
    calls: &[(u64, u32, u64, u64)],
) -> Result<Vec<(u64, bool)>> {
    let tasks: Vec<_> = calls
        .iter()
        .map(|&(id, epoch, seq, v)| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let r = client
                    .produce(pb::ProduceRequest {
                        record: Some(pb::Record {
                            value: value(v).into(),
                            ..Default::default()
                        }),
                        producer_id: id,
                        producer_epoch: epoch,
                        sequence: seq,
                    })
                    .await?
                    .into_inner();
                anyhow::Ok((r.offset, r.duplicate))
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await??);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotent_produces_share_entries_and_retries_in_a_group_append_nothing() -> Result<()> {
    let c = TestCluster::start(3, |_| {}).await?;
    let leader = c.leader().await?;
    let client = log_client(c.member(leader).addr).await?;
    let mut producers = Vec::new();
    for _ in 0..CALLS {
        let r = client
            .clone()
            .init_producer(pb::InitProducerRequest::default())
            .await?
            .into_inner();
        producers.push((r.producer_id, r.producer_epoch));
    }
    let raft = c.node(leader).raft().clone();
    let last_index = || raft.metrics().borrow().last_log_index.unwrap_or(0);

    // Round 1: every producer's first record, all at once.
    let before = last_index();
    let first: Vec<_> = producers
        .iter()
        .enumerate()
        .map(|(i, &(id, epoch))| (id, epoch, 0, i as u64))
        .collect();
    let acked = produce_all(&client, &first).await?;
    let entries = last_index() - before;
    assert!(
        entries < CALLS,
        "{CALLS} concurrent idempotent calls used {entries} Raft entries"
    );
    let mut offsets: Vec<u64> = acked
        .iter()
        .map(|&(o, dup)| {
            assert!(!dup);
            o
        })
        .collect();
    offsets.sort_unstable();
    assert_eq!(offsets, (0..CALLS).collect::<Vec<_>>());

    // Round 2, all at once: every producer sends its second record twice (a retry racing its
    // first attempt, so both reach the leader before either is applied and the groups hold
    // duplicates), and even producers retry their committed first record too.
    let mut second = Vec::new();
    for (i, &(id, epoch)) in producers.iter().enumerate() {
        let i = i as u64;
        second.push((id, epoch, 1, CALLS + i));
        second.push((id, epoch, 1, CALLS + i));
        if i.is_multiple_of(2) {
            second.push((id, epoch, 0, i));
        }
    }
    let answers = produce_all(&client, &second).await?;
    let mut new_offsets = Vec::new();
    let mut second_of = vec![0; CALLS as usize];
    let mut k = 0;
    for i in 0..CALLS as usize {
        let (a, b) = (answers[k], answers[k + 1]);
        k += 2;
        assert_eq!(a.0, b.0, "producer {i}: both attempts get the same offset");
        assert!(
            a.1 != b.1,
            "producer {i}: exactly one attempt appends: {a:?} {b:?}"
        );
        new_offsets.push(a.0);
        second_of[i] = a.0;
        if i.is_multiple_of(2) {
            assert_eq!(
                answers[k],
                (acked[i].0, true),
                "producer {i}: retry of the first"
            );
            k += 1;
        }
    }
    new_offsets.sort_unstable();
    assert_eq!(new_offsets, (CALLS..2 * CALLS).collect::<Vec<_>>());

    // Every member holds each value once, at the offset its call was given.
    let mut want = vec![Vec::new(); 2 * CALLS as usize];
    for (i, &(o, _)) in acked.iter().enumerate() {
        want[o as usize] = value(i as u64);
    }
    for (i, &o) in second_of.iter().enumerate() {
        want[o as usize] = value(CALLS + i as u64);
    }
    for m in 1..=3 {
        let records = c.node(m).records().clone();
        let n = want.len() as u64;
        eventually("the member applies every record", DEADLINE, || {
            let records = records.clone();
            async move { (records.range().1 >= n).then_some(()) }
        })
        .await?;
        assert_eq!(records.range(), (0, n), "member {m}: each record once");
        for (o, v) in want.iter().enumerate() {
            assert_eq!(
                &records.read(o as u64)?.value[..],
                &v[..],
                "member {m} offset {o}"
            );
        }
    }
    c.shutdown().await
}
