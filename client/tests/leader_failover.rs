//! The leader is SIGKILLed while four producers run through the client with retries on: no error
//! reaches a caller, produces succeed again once the survivors have elected a new leader, and
//! every acknowledged record is still there at its offset, once (the idempotent producer). Prints the time from the leader's
//! death to the first successful produce, with the resolver following WatchStatus and with the
//! resolver only polling GetServers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use proglog_client::ClientConfig;
use proglog_testkit::procs::{Cluster, Options, TOKEN};
use proglog_testkit::{eventually, DEADLINE};

/// Produces until `stop`, records every acknowledgement with the time it arrived.
type Acks = Arc<Mutex<Vec<(u64, Vec<u8>, Instant)>>>;

async fn run(watch: bool) -> Result<Duration> {
    let mut cluster = Cluster::start(3, Options::default()).await?;
    let leader = cluster.leader_addr().await?;
    let client = cluster.client(watch, ClientConfig::default()).await?;

    let acks: Acks = Arc::default();
    let per_producer = 250u64;
    let mut tasks = Vec::new();
    for p in 0..4u64 {
        let (client, acks) = (client.clone(), acks.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..per_producer {
                let v = format!("p{p}-{i}").into_bytes();
                let off = client
                    .produce(v.clone())
                    .await
                    .with_context(|| format!("producer {p}, record {i}"))?;
                acks.lock().unwrap().push((off, v, Instant::now()));
            }
            anyhow::Ok(())
        }));
    }
    eventually("200 acknowledged records", DEADLINE, || {
        let acks = acks.clone();
        async move { (acks.lock().unwrap().len() >= 200).then_some(()) }
    })
    .await?;
    let killed_at = Instant::now();
    let killed = cluster.id_of(&leader)?;
    cluster.kill(killed)?;
    // Watch the survivors for the new leader, to tell the election apart from the client's part.
    let survivors = cluster.running_addrs();
    let elected = tokio::spawn(async move {
        eventually("a new leader", DEADLINE, || async {
            for a in &survivors {
                let admin = proglog_client::admin::Admin::new(a.clone(), TOKEN).ok()?;
                let st = admin.status_of(a).await.ok()?;
                if st.role == proglog_proto::v1::Role::Leader as i32 {
                    return Some(Instant::now());
                }
            }
            None
        })
        .await
    });
    for t in tasks {
        t.await??; // an error here reached a caller
    }

    let acks = acks.lock().unwrap().clone();
    assert_eq!(acks.len() as u64, 4 * per_producer);
    let new_leader = cluster.leader_addr().await?;
    assert_ne!(new_leader, leader);

    // No acknowledged record lost: each offset is unique and holds its value on the survivors.
    let by_offset: BTreeMap<u64, Vec<u8>> = acks.iter().map(|a| (a.0, a.1.clone())).collect();
    assert_eq!(
        by_offset.len(),
        acks.len(),
        "an offset was acknowledged twice"
    );
    // Exactly once (the idempotent producer is on by default): no value is in the log twice,
    // although calls were retried across the leader's death.
    let next = by_offset.keys().last().map_or(0, |o| o + 1);
    let mut seen = BTreeMap::<Vec<u8>, u64>::new();
    for off in 0..next {
        *seen
            .entry(client.consume(off).await?.value.to_vec())
            .or_default() += 1;
    }
    let twice = seen.values().filter(|&&n| n > 1).count();
    assert_eq!(twice, 0, "values written more than once");
    let mut term_of = BTreeMap::new();
    for (off, v) in &by_offset {
        let r = client.consume(*off).await?;
        assert_eq!(&r.value[..], &v[..], "offset {off}");
        term_of.insert(*off, r.term);
    }
    // NB: acks that were on the wire when the leader died still arrive after the kill; the first
    // produce served by the new leader is the first ack of a record of a later term.
    let old_term = acks
        .iter()
        .filter(|a| a.2 <= killed_at)
        .map(|a| term_of[&a.0])
        .max()
        .context("no ack before the kill")?;
    let first_after = acks
        .iter()
        .filter(|a| term_of[&a.0] > old_term)
        .map(|a| a.2)
        .min()
        .context("no produce succeeded at the new leader")?;
    let recovery = first_after - killed_at;
    let elected = elected.await?? - killed_at;
    let stats = client.stats();
    let retried: u64 = stats.iter().map(|s| s.errors).sum();
    println!(
        "resolver {}: leader (member {killed}) killed; new leader elected after {elected:?}; \
         first produce acknowledged by it {recovery:?} after the kill; {retried} attempts failed \
         and were retried; new leader {new_leader}",
        if watch {
            "following WatchStatus"
        } else {
            "polling GetServers"
        },
    );
    Ok(recovery)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_killed_under_load_no_error_reaches_the_caller_watching() -> Result<()> {
    run(true).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_killed_under_load_no_error_reaches_the_caller_polling() -> Result<()> {
    run(false).await.map(|_| ())
}
