//! The bootstrap resolver on a real cluster: it finds the members and the leader from one seed,
//! follows a leadership transfer through WatchStatus (printing how long the change took to reach
//! it), and still resolves by polling GetServers when its admin token is refused.

use std::time::Instant;

use anyhow::{Context, Result};
use proglog_client::admin::Admin;
use proglog_client::resolver::{BootstrapConfig, BootstrapResolver, Resolver};
use proglog_testkit::procs::{Cluster, Options, TOKEN};
use proglog_testkit::DEADLINE;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finds_the_cluster_from_one_seed_and_follows_a_transfer() -> Result<()> {
    let cluster = Cluster::start(3, Options::steady()).await?;
    let leader = cluster.leader_addr().await?;
    let seed = cluster
        .addrs()
        .into_iter()
        .find(|a| *a != leader)
        .context("a follower")?;
    let mut cfg = BootstrapConfig::new([seed.clone()]);
    cfg.admin_token = Some(TOKEN.into());
    let r = BootstrapResolver::start(cfg).await?;
    let mut rx = r.subscribe();
    let m = tokio::time::timeout(DEADLINE, rx.wait_for(|m| m.endpoints.len() == 3))
        .await??
        .clone();
    assert_eq!(m.leader().map(|l| l.addr.clone()), Some(leader.clone()));
    assert_eq!(m.ready_followers().count(), 2);

    // Move leadership to the seed; the resolver learns it from the status stream.
    let st = Admin::new(seed.clone(), TOKEN)?.status_of(&seed).await?;
    let start = Instant::now();
    let mut seen = r.subscribe();
    let want = seed.clone();
    let seen = tokio::spawn(async move {
        let ok = seen
            .wait_for(|m| m.leader().map(|l| l.addr.as_str()) == Some(want.as_str()))
            .await
            .is_ok();
        ok.then(Instant::now)
    });
    Admin::new(seed.clone(), TOKEN)?
        .transfer(st.node_id)
        .await?;
    let transferred = start.elapsed();
    let seen_at = tokio::time::timeout(DEADLINE, seen)
        .await??
        .context("resolver gone")?;
    println!(
        "transfer call returned after {transferred:?}; the resolver named the new leader {:?} after the call began",
        seen_at - start
    );

    // A refused token: the resolver still resolves, by GetServers.
    let mut bad = BootstrapConfig::new([leader.clone()]);
    bad.admin_token = Some("wrong".into());
    let r = BootstrapResolver::start(bad).await?;
    let mut rx = r.subscribe();
    tokio::time::timeout(
        DEADLINE,
        rx.wait_for(|m| m.leader().map(|l| l.addr.as_str()) == Some(seed.as_str())),
    )
    .await??;
    Ok(())
}
