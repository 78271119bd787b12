//! Three `logserver` processes on loopback: the leader gets SIGKILL during concurrent produce;
//! the survivors elect a new leader and every acknowledged record is still there, at its offset,
//! with its value. SIGTERM stops a member gracefully with exit code 0; a leader hands leadership
//! over before it exits.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use common::procs::*;
use common::*;
use proglog_proto::v1 as pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_the_leader_under_load_loses_no_acknowledged_record() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut procs, leader) = start_three(dir.path()).await?;
    let addrs: Vec<SocketAddr> = procs.iter().map(|p| p.addr).collect();

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
                        let l = leader_of(&addrs).await?;
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
    let victim = procs.iter().position(|p| p.addr == leader).unwrap();
    let mut killed = procs.remove(victim);
    killed.child.kill()?; // SIGKILL
    killed.child.wait()?;
    for t in tasks {
        t.await??;
    }

    let survivors: Vec<SocketAddr> = procs.iter().map(|p| p.addr).collect();
    let new_leader = eventually("a new leader", DEADLINE, || leader_of(&survivors)).await?;
    assert_ne!(new_leader, leader);
    let acked = acked.lock().unwrap().clone();
    let offsets: HashSet<u64> = acked.iter().map(|(o, _)| *o).collect();
    assert_eq!(offsets.len(), 400, "an offset was handed out twice");
    for a in &survivors {
        let mut c = log_client(*a).await?;
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
    for p in &mut procs {
        let pid = p.child.id().to_string();
        let st = Command::new("kill").args(["-TERM", &pid]).status()?;
        assert!(st.success());
        let code = tokio::task::block_in_place(|| p.child.wait())?;
        assert!(code.success(), "member {} exited with {code}", p.id);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_of_the_leader_hands_leadership_over_before_it_exits() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut procs, leader) = start_three(dir.path()).await?;
    let mut lc = log_client(leader).await?;
    let before = produce(&mut lc, b"before the stop".to_vec()).await?;
    let victim = procs.iter().position(|p| p.addr == leader).unwrap();
    let mut stopped = procs.remove(victim);
    let survivors: Vec<SocketAddr> = procs.iter().map(|p| p.addr).collect();

    let pid = stopped.child.id().to_string();
    let sent = tokio::time::Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()?
        .success());
    let code = loop {
        if let Some(code) = stopped.child.try_wait()? {
            break code;
        }
        anyhow::ensure!(sent.elapsed() < DEADLINE, "member did not exit");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
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
