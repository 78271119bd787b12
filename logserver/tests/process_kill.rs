//! Three `logserver` processes on loopback: the leader gets SIGKILL during concurrent produce;
//! the survivors elect a new leader and every acknowledged record is still there, at its offset,
//! with its value. SIGTERM stops a member gracefully with exit code 0; a leader hands leadership
//! over before it exits.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use common::*;
use proglog_proto::v1 as pb;
use proglog_testkit::procs::{leader_of, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_the_leader_under_load_loses_no_acknowledged_record() -> Result<()> {
    let mut cluster = Cluster::start(3, procs::options()).await?;
    let leader = cluster.wait_leader().await?;
    let addrs = cluster.addrs();

    // Four producers, each following the leader; the leader is killed once 100 records are in.
    let acked = Arc::new(Mutex::new(Vec::<(u64, Vec<u8>)>::new()));
    let mut tasks = Vec::new();
    for p in 0..4u64 {
        let (addrs, acked) = (addrs.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..100u64 {
                let v = format!("p{p}-{i}").into_bytes();
                let off = eventually("an acknowledgement", DEADLINE, || {
                    let (addrs, v) = (addrs.clone(), v.clone());
                    async move {
                        let l = leader_of(&addrs).await?.parse().ok()?;
                        let mut c = log_client(l).await.ok()?;
                        produce(&mut c, v).await.ok()
                    }
                })
                .await?;
                acked.lock().unwrap().push((off, v));
            }
            anyhow::Ok(())
        }));
    }
    eventually("100 acknowledged records", DEADLINE, || {
        let acked = acked.clone();
        async move { (acked.lock().unwrap().len() >= 100).then_some(()) }
    })
    .await?;
    cluster.kill(leader)?; // SIGKILL
    for t in tasks {
        t.await??;
    }

    let survivors = cluster.running_addrs();
    let new_leader = eventually("a new leader", DEADLINE, || leader_of(&survivors)).await?;
    assert_ne!(new_leader, cluster.member(leader).addr.to_string());
    let acked = acked.lock().unwrap().clone();
    let offsets: HashSet<u64> = acked.iter().map(|(o, _)| *o).collect();
    assert_eq!(offsets.len(), 400, "an offset was handed out twice");
    for a in &survivors {
        let mut c = log_client(a.parse()?).await?;
        for (off, v) in &acked {
            let r = eventually("the record on every survivor", DEADLINE, || {
                let mut c = c.clone();
                async move {
                    c.consume(pb::ConsumeRequest {
                        offset: *off,
                        ..Default::default()
                    })
                    .await
                    .ok()
                }
            })
            .await?;
            assert_eq!(
                &r.into_inner().record.unwrap().value[..],
                &v[..],
                "{a} offset {off}"
            );
        }
        c.get_servers(pb::GetServersRequest {}).await?;
    }

    // SIGTERM: graceful, exit code 0.
    for m in (1..=3).filter(|&m| m != leader) {
        let code = cluster.stop(m).await?.context("not running")?;
        assert!(code.success(), "member {m} exited with {code}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_of_the_leader_hands_leadership_over_before_it_exits() -> Result<()> {
    let mut cluster = Cluster::start(3, procs::options()).await?;
    let leader_id = cluster.wait_leader().await?;
    let leader = cluster.member(leader_id).addr;
    let mut lc = log_client(leader).await?;
    let before = produce(&mut lc, b"before the stop".to_vec()).await?;
    let survivors: Vec<SocketAddr> = (1..=3)
        .filter(|&m| m != leader_id)
        .map(|m| cluster.member(m).addr)
        .collect();

    let sent = tokio::time::Instant::now();
    let code = cluster.stop(leader_id).await?.context("not running")?;
    let exited = sent.elapsed();
    assert!(code.success(), "the old leader exited with {code}");
    // Right as it exits, a survivor already leads: without the handoff the survivors would still
    // follow the old leader for a whole leader lease.
    let mut new = None;
    for a in &survivors {
        let mut c = log_client(*a).await?;
        let servers = c.get_servers(pb::GetServersRequest {}).await?.into_inner();
        let leads = servers
            .servers
            .iter()
            .find(|s| s.is_leader && s.rpc_addr == a.to_string());
        if leads.is_some() {
            new = Some(*a);
        }
    }
    let new = new.expect("no survivor led when the old leader exited");
    eprintln!("SIGTERM of the leader: {new} leads; the old leader exited {exited:?} after");

    let mut nc = log_client(new).await?;
    let after = produce(&mut nc, b"after the stop".to_vec()).await?;
    assert!(after > before);
    let r = nc
        .consume(pb::ConsumeRequest {
            offset: before,
            ..Default::default()
        })
        .await?;
    assert_eq!(
        &r.into_inner().record.unwrap().value[..],
        b"before the stop"
    );
    Ok(())
}
