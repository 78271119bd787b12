//! Failures on a three-member loopback cluster: the leader dies under concurrent produce, and a
//! leader cut off from the majority acknowledges nothing. A history check follows each: every
//! acknowledged record is readable at its offset with its value, and no offset was given twice.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_killed_during_concurrent_produce_loses_no_acknowledged_record() -> Result<()> {
    const PRODUCERS: u64 = 4;
    const PER_PRODUCER: u64 = 150;
    let mut c = TestCluster::start(3, |_| {}).await?;
    let old_leader = c.leader().await?;
    let addrs: Vec<SocketAddr> = c.members.iter().map(|m| m.addr).collect();
    let acked = Arc::new(Mutex::new(Vec::<(u64, Vec<u8>)>::new()));
    let count = Arc::new(AtomicU64::new(0));

    let mut tasks = Vec::new();
    for p in 0..PRODUCERS {
        let (addrs, acked, count) = (addrs.clone(), acked.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            let mut prod = Producer::new(addrs);
            for i in 0..PER_PRODUCER {
                let v = format!("p{p}-{i}").into_bytes();
                let off = prod.produce(v.clone()).await?;
                acked.lock().unwrap().push((off, v));
                count.fetch_add(1, Ordering::SeqCst);
            }
            anyhow::Ok(())
        }));
    }
    eventually("some acknowledged records", DEADLINE, || {
        let count = count.clone();
        async move { (count.load(Ordering::SeqCst) >= 100).then_some(()) }
    })
    .await?;
    c.kill(old_leader).await;
    for t in tasks {
        t.await??;
    }

    let new_leader = c.leader().await?;
    assert_ne!(new_leader, old_leader);
    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len() as u64, PRODUCERS * PER_PRODUCER);
    let offsets: HashSet<u64> = acked.iter().map(|(o, _)| *o).collect();
    assert_eq!(offsets.len(), acked.len(), "an offset was handed out twice");
    let max = *offsets.iter().max().unwrap();
    for m in c.running().map(|m| m.id).collect::<Vec<_>>() {
        c.wait_next(m, max + 1).await?;
        for (off, v) in &acked {
            let r = c.node(m).records().read(*off)?;
            assert_eq!(&r.value[..], &v[..], "member {m} offset {off}");
        }
    }
    c.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_cut_off_from_the_majority_acknowledges_nothing() -> Result<()> {
    let c = TestCluster::start(3, |_| {}).await?;
    let old = c.leader().await?;
    let others: Vec<u64> = (1..=3).filter(|&m| m != old).collect();
    let mut old_client = log_client(c.member(old).addr).await?;
    produce(&mut old_client, b"before".to_vec()).await?;
    for &o in &others {
        c.filter.cut(old, o);
    }

    // The minority leader takes the write but must never acknowledge it.
    let minority_value = b"written-to-the-minority".to_vec();
    let mut mc = old_client.clone();
    let mv = minority_value.clone();
    let minority = tokio::spawn(async move { produce(&mut mc, mv).await });

    // The majority elects a leader of its own and commits.
    let new = eventually("a majority leader", DEADLINE, || {
        let raft = c.node(others[0]).raft().clone();
        async move {
            let l = raft.metrics().borrow().current_leader?;
            (l != old).then_some(l)
        }
    })
    .await?;
    let mut new_client = log_client(c.member(new).addr).await?;
    let majority_offset = produce(&mut new_client, b"majority".to_vec()).await?;
    assert!(
        !minority.is_finished() || minority.await?.is_err(),
        "the minority acknowledged a write"
    );

    c.filter.heal();
    c.leader().await?;
    for m in 1..=3 {
        c.wait_next(m, majority_offset + 1).await?;
        let sm = c.node(m).records().clone();
        let (first, next) = sm.range();
        for off in first..next {
            assert_ne!(
                &sm.read(off)?.value[..],
                &minority_value[..],
                "member {m} offset {off}"
            );
        }
        assert_eq!(&sm.read(majority_offset)?.value[..], b"majority");
    }
    c.shutdown().await
}
