//! Three members on loopback: everything produced through the leader reads back identically from
//! every member; a restarted member catches up; an emptied member is restored by snapshot;
//! followers learn commits without an empty AppendEntries per record.

mod common;

use anyhow::Result;
use common::*;
use futures::StreamExt;
use proglog_proto::v1 as pb;

const N: u64 = 10_000;

async fn read_all(addr: std::net::SocketAddr, from: u64, n: u64) -> Result<Vec<pb::Record>> {
    let mut c = log_client(addr).await?;
    let mut s = c
        .consume_stream(pb::ConsumeRequest {
            offset: from,
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut out = Vec::with_capacity(n as usize);
    while (out.len() as u64) < n {
        let r = s.next().await.expect("stream ended early")?;
        out.push(r.record.expect("record"));
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_records_read_back_identically_from_every_member() -> Result<()> {
    let c = TestCluster::start(3, |_| {}).await?;
    let leader = c.leader().await?;
    let mut client = log_client(c.member(leader).addr).await?;

    // Half through ProduceBatch (100 per call), half through a pipelined ProduceStream.
    for chunk in 0..(N / 2 / 100) {
        let r = client
            .produce_batch(pb::ProduceBatchRequest {
                records: records(chunk * 100..chunk * 100 + 100),
                ..Default::default()
            })
            .await?
            .into_inner();
        assert_eq!(
            r.offsets,
            (chunk * 100..chunk * 100 + 100).collect::<Vec<_>>()
        );
    }
    let reqs = futures::stream::iter((N / 2..N).map(|i| pb::ProduceRequest {
        record: Some(pb::Record {
            value: value(i).into(),
            ..Default::default()
        }),
        ..Default::default()
    }));
    let mut acks = client.produce_stream(reqs).await?.into_inner();
    let mut i = N / 2;
    while let Some(ack) = acks.next().await {
        assert_eq!(
            ack?.offset, i,
            "stream acks come back in order with dense offsets"
        );
        i += 1;
    }
    assert_eq!(i, N);

    for m in 1..=3 {
        c.wait_next(m, N).await?;
        let records = read_all(c.member(m).addr, 0, N).await?;
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.offset, i as u64, "member {m}");
            assert_eq!(
                r.value.as_ref(),
                value(i as u64).as_slice(),
                "member {m} offset {i}"
            );
        }
    }
    c.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_member_catches_up_from_its_data_dir() -> Result<()> {
    let mut c = TestCluster::start(3, |_| {}).await?;
    let leader = c.leader().await?;
    let follower = (1..=3).find(|&m| m != leader).unwrap();
    let mut client = log_client(c.member(leader).addr).await?;
    for i in 0..100 {
        produce(&mut client, value(i)).await?;
    }
    c.wait_next(follower, 100).await?;
    c.stop(follower).await?;
    for i in 100..300 {
        produce(&mut client, value(i)).await?;
    }
    c.restart(follower).await?;
    c.wait_next(follower, 300).await?;
    let records = read_all(c.member(follower).addr, 0, 300).await?;
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.value.as_ref(), value(i as u64).as_slice());
    }
    c.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn member_restarted_empty_after_truncation_is_restored_by_snapshot() -> Result<()> {
    let mut c = TestCluster::start(3, |cfg| {
        cfg.snapshot_every = 20;
        cfg.retain_entries = 30;
        cfg.log.max_store_bytes = 2048; // small segments, so retention can drop some
    })
    .await?;
    let leader = c.leader().await?;
    let victim = (1..=3).find(|&m| m != leader).unwrap();
    let mut client = log_client(c.member(leader).addr).await?;
    for i in 0..200 {
        produce(&mut client, value(i)).await?;
    }
    for m in 1..=3 {
        c.wait_next(m, 200).await?;
    }
    // A snapshot everywhere, then drop old segments on every member.
    for m in 1..=3 {
        let raft = c.node(m).raft().clone();
        raft.trigger().snapshot().await?;
        eventually("snapshot and purge", DEADLINE, || {
            let raft = raft.clone();
            async move {
                let m = raft.metrics().borrow().clone();
                (m.snapshot.is_some_and(|s| s.index >= 150) && m.purged.is_some()).then_some(())
            }
        })
        .await?;
        c.node(m).apply_retention(u64::MAX)?;
    }
    let (first, next) = c.node(leader).records().range();
    assert!(
        first > 0,
        "retention dropped the oldest records on the leader"
    );
    assert_eq!(next, 200);
    let e = client
        .consume(pb::ConsumeRequest {
            offset: 0,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::OutOfRange);
    assert!(
        e.message().contains(&format!("[{first}, 200)")),
        "{}",
        e.message()
    );

    // The victim loses its disk.
    c.stop(victim).await?;
    std::fs::remove_dir_all(&c.member(victim).dir)?;
    c.restart(victim).await?;
    c.wait_next(victim, 200).await?;
    let (vfirst, vnext) = c.node(victim).records().range();
    assert_eq!(
        (vfirst, vnext),
        (first, next),
        "the snapshot carried the leader's retained records"
    );
    for off in first..next {
        let r = c.node(victim).records().read(off)?;
        assert_eq!(r.value.as_ref(), value(off).as_slice(), "offset {off}");
    }
    // And it keeps replicating normally after the snapshot.
    produce(&mut client, value(200)).await?;
    c.wait_next(victim, 201).await?;
    assert_eq!(
        c.node(victim).records().read(200)?.value.as_ref(),
        value(200).as_slice()
    );
    c.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn catch_up_splits_append_entries_larger_than_a_peer_accepts() -> Result<()> {
    // Peers accept 128 KiB messages; each entry is a 10 KiB batch, so a catch-up of 40 entries
    // only gets through when AppendEntries are split.
    let mut c = TestCluster::start(3, |cfg| cfg.max_peer_message_bytes = 128 << 10).await?;
    let leader = c.leader().await?;
    let follower = (1..=3).find(|&m| m != leader).unwrap();
    c.stop(follower).await?;
    let mut client = log_client(c.member(leader).addr).await?;
    for b in 0..40u64 {
        let records = (0..10)
            .map(|k| pb::Record {
                value: vec![(b * 10 + k) as u8; 1024].into(),
                ..Default::default()
            })
            .collect();
        client
            .produce_batch(pb::ProduceBatchRequest {
                records,
                ..Default::default()
            })
            .await?;
    }
    c.restart(follower).await?;
    c.wait_next(follower, 400).await?;
    let r = c.node(follower).records().read(399)?;
    assert_eq!(&r.value[..], &[(399u64 % 256) as u8; 1024][..]);
    c.shutdown().await
}

/// Followers learn the commit index from the next entries instead of from an empty
/// AppendEntries after every commit (`raft::notice`), and still apply the last record soon after
/// the leader goes idle: heartbeats a minute apart cannot be what tells them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn followers_learn_commits_without_an_empty_append_entries_per_record() -> Result<()> {
    const RECORDS: u64 = 200;
    let c = TestCluster::start(3, |cfg| {
        cfg.heartbeat = std::time::Duration::from_secs(60);
        cfg.election_timeout = std::time::Duration::from_secs(180);
    })
    .await?;
    let leader = c.leader().await?;
    let mut client = log_client(c.member(leader).addr).await?;
    produce(&mut client, value(0)).await?;
    let notices = c.node(leader).commit_notices().clone();
    let before = notices.sent_empty();
    // One at a time: without notices every commit sends each follower an empty AppendEntries.
    for i in 1..=RECORDS {
        assert_eq!(produce(&mut client, value(i)).await?, i);
    }
    let sent = notices.sent_empty() - before;
    assert!(
        sent < RECORDS / 2,
        "{sent} empty AppendEntries to 2 followers for {RECORDS} records"
    );
    for m in 1..=3 {
        c.wait_next(m, RECORDS + 1).await?;
    }
    c.shutdown().await
}
