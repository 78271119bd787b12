//! Exactly-once produce across a leader's death between commit and reply, on three `logserver`
//! processes: a record is sent, the leader is SIGKILLed as soon as a follower has applied it
//! (so it is committed, and the producer never sees an answer), and the producer sends it again
//! to the new leader with the same producer id, epoch and sequence. With the idempotent producer
//! the retry gets the original offset and the record is in the log once, on every member - the
//! restarted old leader included. Without a producer id (at least once, the behaviour of a
//! client that sends none) the same retry appends the record a second time.

mod common;

use std::net::SocketAddr;

use anyhow::{Context, Result};
use common::*;
use proglog_proto::v1 as pb;
use proglog_testkit::procs::{leader_of, Cluster};
use tonic::Code;

/// The values of `[0, next)` on the member at `addr`, once it has applied `at_least` records.
async fn values_on(addr: SocketAddr, at_least: usize) -> Result<Vec<String>> {
    let off = at_least.checked_sub(1).context("at least one record")? as u64;
    let mut c = eventually("the member to apply the records", DEADLINE, || async {
        let mut c = log_client(addr).await.ok()?;
        c.consume(pb::ConsumeRequest {
            offset: off,
            ..Default::default()
        })
        .await
        .ok()?;
        Some(c)
    })
    .await?;
    let mut out = Vec::new();
    loop {
        let off = out.len() as u64;
        match c
            .consume(pb::ConsumeRequest {
                offset: off,
                ..Default::default()
            })
            .await
        {
            Ok(r) => out.push(String::from_utf8(
                r.into_inner().record.context("no record")?.value.to_vec(),
            )?),
            Err(s) if s.code() == Code::OutOfRange => return Ok(out),
            Err(s) => return Err(s.into()),
        }
    }
}

fn req(p: Option<&pb::InitProducerResponse>, seq: u64, v: &str) -> pb::ProduceRequest {
    pb::ProduceRequest {
        record: Some(pb::Record {
            value: v.as_bytes().to_vec().into(),
            ..Default::default()
        }),
        producer_id: p.map_or(0, |p| p.producer_id),
        producer_epoch: p.map_or(0, |p| p.producer_epoch),
        sequence: seq,
    }
}

/// Runs the scenario; returns the log as a survivor serves it and the retry's answer.
async fn leader_dies_between_commit_and_reply(
    idempotent: bool,
) -> Result<(Vec<String>, pb::ProduceResponse, u64)> {
    let mut cluster = Cluster::start(3, procs::options()).await?;
    let leader_id = cluster.wait_leader().await?;
    let leader = cluster.member(leader_id).addr;
    let mut lc = log_client(leader).await?;
    let producer = match idempotent {
        true => Some(
            lc.init_producer(pb::InitProducerRequest::default())
                .await?
                .into_inner(),
        ),
        false => None,
    };
    let p = producer.as_ref();
    for s in 0..3u64 {
        lc.produce(req(p, s, &format!("r{s}"))).await?;
    }

    // The record whose reply is lost. It is committed once a follower has applied it.
    let first = req(p, 3, "the record");
    let mut sender = lc.clone();
    let in_flight = tokio::spawn(async move { sender.produce(first).await });
    let followers: Vec<SocketAddr> = cluster
        .members
        .iter()
        .map(|m| m.addr)
        .filter(|a| *a != leader)
        .collect();
    let follower_addrs: Vec<String> = followers.iter().map(|a| a.to_string()).collect();
    let committed_at = eventually("a follower to apply the record", DEADLINE, || async {
        for f in &followers {
            let mut c = log_client(*f).await.ok()?;
            if let Ok(r) = c
                .consume(pb::ConsumeRequest {
                    offset: 3,
                    ..Default::default()
                })
                .await
            {
                return Some(r.into_inner().record?.offset);
            }
        }
        None
    })
    .await?;
    cluster.kill(leader_id)?; // SIGKILL
                              // Whatever the leader managed to send, the producer saw no answer.
    in_flight.abort();

    // The retry: same producer, epoch and sequence, to the new leader.
    let retry = eventually("the retry to be acknowledged", DEADLINE, || async {
        let l = leader_of(&follower_addrs).await?.parse().ok()?;
        let mut c = log_client(l).await.ok()?;
        c.produce(req(p, 3, "the record")).await.ok()
    })
    .await?
    .into_inner();
    let l = leader_of(&follower_addrs).await.context("no leader")?;
    log_client(l.parse()?)
        .await?
        .produce(req(p, 4, "the next record"))
        .await?;
    let want = if idempotent { 5 } else { 6 };
    let log = values_on(followers[0], want).await?;
    assert_eq!(values_on(followers[1], want).await?, log, "members differ");

    // The old leader comes back from its data dir and holds the same log.
    cluster.restart(leader_id).await?;
    assert_eq!(values_on(leader, want).await?, log, "the restarted member");
    Ok((log, retry, committed_at))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_after_the_leader_died_between_commit_and_reply_is_written_once() -> Result<()> {
    let (log, retry, committed_at) = leader_dies_between_commit_and_reply(true).await?;
    assert_eq!(
        log,
        ["r0", "r1", "r2", "the record", "the next record"],
        "the record is in the log exactly once"
    );
    assert_eq!(
        retry.offset, committed_at,
        "the retry gets the original offset"
    );
    assert!(retry.duplicate);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_producer_id_the_same_retry_is_written_twice() -> Result<()> {
    let (log, retry, _) = leader_dies_between_commit_and_reply(false).await?;
    assert_eq!(
        log,
        [
            "r0",
            "r1",
            "r2",
            "the record",
            "the record",
            "the next record"
        ],
        "at least once: the retry appended a second copy"
    );
    assert!(!retry.duplicate);
    Ok(())
}
