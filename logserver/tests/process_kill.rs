//! Three `logserver` processes on loopback: the leader gets SIGKILL during concurrent produce;
//! the survivors elect a new leader and every acknowledged record is still there, at its offset,
//! with its value. SIGTERM stops a member gracefully with exit code 0; a leader hands leadership
//! over before it exits.

mod common;

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use common::*;
use proglog_proto::v1 as pb;

struct Proc {
    id: u64,
    addr: SocketAddr,
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn spawn(
    id: u64,
    addr: SocketAddr,
    dir: &std::path::Path,
    token: &std::path::Path,
) -> Result<Proc> {
    let child = Command::new(env!("CARGO_BIN_EXE_logserver"))
        .args(["--id", &id.to_string(), "--listen", &addr.to_string()])
        .args(["--advertise", &addr.to_string()])
        .arg("--data-dir")
        .arg(dir.join(format!("m{id}")))
        .arg("--admin-token-file")
        .arg(token)
        .args(["--heartbeat-ms", "100", "--election-timeout-ms", "800"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("spawning logserver")?;
    Ok(Proc { id, addr, child })
}

async fn leader_of(addrs: &[SocketAddr]) -> Option<SocketAddr> {
    for a in addrs {
        let Ok(mut c) = log_client(*a).await else {
            continue;
        };
        let Ok(r) = c.get_servers(pb::GetServersRequest {}).await else {
            continue;
        };
        if let Some(s) = r.into_inner().servers.into_iter().find(|s| s.is_leader) {
            return s.rpc_addr.parse().ok();
        }
    }
    None
}

/// Starts three members in `dir` and forms the cluster; returns them and the leader's address.
async fn start_three(dir: &std::path::Path) -> Result<(Vec<Proc>, SocketAddr)> {
    let token = dir.join("token");
    std::fs::write(&token, TOKEN)?;
    let mut procs = Vec::new();
    for id in 1..=3 {
        procs.push(spawn(id, free_addr()?, dir, &token)?);
    }
    let addrs: Vec<SocketAddr> = procs.iter().map(|p| p.addr).collect();
    let mut admin = eventually("member 1 to listen", DEADLINE, || async {
        admin_client(addrs[0]).await.ok()
    })
    .await?;
    for a in &addrs[1..] {
        eventually("members to listen", DEADLINE, || async {
            log_client(*a).await.ok()
        })
        .await?;
    }
    let members = procs
        .iter()
        .map(|p| pb::Member {
            node_id: p.id,
            addr: p.addr.to_string(),
            name: String::new(),
        })
        .collect();
    admin
        .initialize(with_token(pb::InitializeRequest { members }))
        .await?;
    let leader = eventually("a leader", DEADLINE, || leader_of(&addrs)).await?;
    Ok((procs, leader))
}

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
