//! A leader stopped gracefully (what `logserver` does on SIGTERM: `Node::step_down`, then
//! `Node::shutdown`) hands leadership to another voter first, under a steady writer: a new leader
//! is in place before the old one stops, takes writes, and no acknowledged record is lost. The
//! same run with the leader killed instead prints both handoff times (never asserted: the machine
//! is shared). Followers and a lone leader just stop.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Result};
use common::*;
use logserver::node::StepDown;
use logserver::raft::ServerState;
use tokio::time::Instant;

/// An acknowledged record: offset, value, when, and which member acknowledged it.
type Ack = (u64, Vec<u8>, Instant, SocketAddr);

#[derive(Debug, Clone, Copy)]
enum Stop {
    Graceful,
    Kill,
}

/// Stops the leader of a fresh three-member cluster the `how` way while a writer produces;
/// checks the survivors and returns the time from the stop to the first write acknowledged by
/// another member.
async fn stop_the_leader_under_writes(how: Stop) -> Result<Duration> {
    let mut c = TestCluster::start(3, |_| {}).await?;
    let old = c.leader().await?;
    let old_addr = c.member(old).addr;
    let addrs: Vec<SocketAddr> = c.members.iter().map(|m| m.addr).collect();
    let acked = Arc::new(Mutex::new(Vec::<Ack>::new()));
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, done) = (acked.clone(), done.clone());
        tokio::spawn(async move {
            let mut p = Producer::new(addrs);
            let mut i = 0;
            while !done.load(Ordering::Relaxed) {
                let off = p.produce(value(i)).await?;
                acked
                    .lock()
                    .unwrap()
                    .push((off, value(i), Instant::now(), p.current()));
                i += 1;
            }
            anyhow::Ok(())
        })
    };
    eventually("writes flowing", DEADLINE, || {
        let acked = acked.clone();
        async move { (acked.lock().unwrap().len() >= 50).then_some(()) }
    })
    .await?;

    let stopped_at = Instant::now();
    match how {
        Stop::Graceful => {
            let node = c.members[(old - 1) as usize].node.take().unwrap();
            let outcome = node.step_down(node.step_down_deadline()).await;
            eprintln!("step_down: {outcome:?} after {:?}", stopped_at.elapsed());
            // Leadership moved before the old leader stopped: the new one already leads.
            let StepDown::HandedOver(new) = outcome else {
                anyhow::bail!("the leader did not hand over: {outcome:?}");
            };
            ensure!(new != old, "handed over to itself");
            let state = c.node(new).raft().metrics().borrow().state;
            ensure!(state == ServerState::Leader, "member {new} is {state:?}");
            node.shutdown().await?;
        }
        Stop::Kill => c.kill(old).await,
    }
    let after = |acked: &[Ack]| -> Vec<Instant> {
        acked
            .iter()
            .filter(|(_, _, at, by)| *at >= stopped_at && *by != old_addr)
            .map(|a| a.2)
            .collect()
    };
    eventually("50 writes acknowledged by another member", DEADLINE, || {
        let acked = acked.clone();
        async move { (after(&acked.lock().unwrap()).len() >= 50).then_some(()) }
    })
    .await?;
    let handoff = after(&acked.lock().unwrap())[0] - stopped_at;
    done.store(true, Ordering::Relaxed);
    writer.await??;

    // A new leader among the others, and the stopped member is gone.
    let new = c.leader().await?;
    ensure!(new != old, "member {old} still leads");
    ensure!(
        tokio::net::TcpStream::connect(old_addr).await.is_err(),
        "member {old} still listens"
    );
    // The new leader takes writes.
    let mut lc = log_client(c.member(new).addr).await?;
    let last = produce(&mut lc, b"after the stop".to_vec()).await?;
    // No acknowledged record is lost, and no offset was given twice.
    let acked = acked.lock().unwrap().clone();
    let offsets: HashSet<u64> = acked.iter().map(|a| a.0).collect();
    ensure!(
        offsets.len() == acked.len(),
        "an offset was handed out twice"
    );
    for m in c.running().map(|m| m.id).collect::<Vec<_>>() {
        c.wait_next(m, last + 1).await?;
        for (off, v, _, _) in &acked {
            let r = c.node(m).records().read(*off)?;
            ensure!(r.value[..] == v[..], "member {m} offset {off}");
        }
    }
    eprintln!(
        "{how:?} stop of leader {old}: member {new} acknowledged a write {handoff:?} later \
         ({} records acknowledged in all)",
        acked.len()
    );
    c.shutdown().await?;
    Ok(handoff)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_stopping_gracefully_hands_leadership_over_first() -> Result<()> {
    let graceful = stop_the_leader_under_writes(Stop::Graceful).await?;
    let killed = stop_the_leader_under_writes(Stop::Kill).await?;
    eprintln!(
        "writes resumed at a new leader after: graceful stop {graceful:?}, kill {killed:?} \
         (heartbeat 100 ms, election timeout 800-1600 ms)"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_or_a_lone_leader_just_stops() -> Result<()> {
    let c = TestCluster::start(3, |_| {}).await?;
    let leader = c.leader().await?;
    let follower = (1..=3).find(|&m| m != leader).unwrap();
    let node = c.node(follower);
    assert_eq!(
        node.step_down(node.step_down_deadline()).await,
        StepDown::NotLeader
    );
    assert_eq!(c.leader().await?, leader);
    c.shutdown().await?;

    let c = TestCluster::start(1, |_| {}).await?;
    let node = c.node(1);
    assert_eq!(
        node.step_down(node.step_down_deadline()).await,
        StepDown::NoOtherVoter
    );
    c.shutdown().await
}
