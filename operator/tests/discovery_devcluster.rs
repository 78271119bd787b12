//! Discovery against the devcluster's real API server, with a real 3-member cluster on host-local
//! addresses (no pods: the PodInfos point at the in-process members; a stock API server refuses
//! loopback addresses in EndpointSlices, so they come from the range the devcluster makes local). Checks that the client's own
//! Kubernetes resolver sees the leader and followers the operator writes, follows leadership
//! transfers, and drops a follower whose pod turns not ready. Prints the time from a new
//! leader's election to the resolver seeing it (never asserted: content is, with deadlines).

#[path = "membership_common/mod.rs"]
mod membership_common;

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::Resource;
use logserver::raft::ServerState;
use membership_common::{init_tracing, Sim, NAME, TOKEN};
use proglog_client::resolver::kubernetes::{KubernetesConfig, KubernetesResolver};
use proglog_client::{Members, Resolver};
use proglog_crds::ProgLog;
use proglog_operator::discovery::{Discovery, Tracked};
use tokio::sync::watch;

const DEADLINE: Duration = Duration::from_secs(30);

async fn wait_members(
    rx: &mut watch::Receiver<Members>,
    what: &str,
    f: impl Fn(&Members) -> bool,
) -> Result<Instant> {
    let waited = tokio::time::timeout(DEADLINE, rx.wait_for(|m| f(m)))
        .await
        .map(|r| r.map(|_| ()));
    match waited {
        Ok(Ok(())) => Ok(Instant::now()),
        Ok(Err(e)) => bail!("resolver gone: {e}"),
        Err(_) => bail!("timed out waiting for {what}; members: {:?}", *rx.borrow()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn discovery_writes_the_slices_the_client_resolves_and_follows_the_leader() -> Result<()> {
    init_tracing();
    let (_dc, kube) = e2e::devcluster::client().await?;
    let ns = e2e::devcluster::unique_namespace("raft-disc");
    let namespaces: Api<Namespace> = Api::all(kube.clone());
    namespaces
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(ns.clone()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await?;
    let result = run(kube.clone(), &ns).await;
    if let Err(e) = namespaces.delete(&ns, &DeleteParams::default()).await {
        eprintln!("deleting namespace {ns}: {e}");
    }
    result
}

async fn run(kube: kube::Client, ns: &str) -> Result<()> {
    // The owner of the slices: a ProgLog no operator acts on (operators here watch their own
    // namespaces); it keeps the garbage collector off the slices.
    let plog = Api::<ProgLog>::namespaced(kube.clone(), ns)
        .create(
            &PostParams::default(),
            &ProgLog::new(NAME, serde_json::from_value(serde_json::json!({}))?),
        )
        .await?;
    let owner = plog.controller_owner_ref(&()).context("owner ref")?;

    let mut sim = Sim::new_devcluster()?;
    sim.drive(3, Duration::from_secs(90)).await?;
    let tracked = |sim: &Sim, pods| Tracked {
        namespace: ns.to_string(),
        name: NAME.into(),
        owner: owner.clone(),
        port: i32::from(sim.port),
        pods,
        auth: proglog_operator::admin::ClusterAuth::Token(TOKEN.into()),
    };
    let (discovery, triggers) = Discovery::new(kube.clone(), sim.pool.clone());
    let mut triggers = Box::pin(triggers);
    discovery.track(tracked(&sim, sim.pods()));
    discovery.track(tracked(&sim, sim.pods())); // idempotent
    assert_eq!(discovery.tracked().len(), 1);

    let resolver = KubernetesResolver::start(KubernetesConfig::new(kube.clone(), ns, NAME));
    let mut rx = resolver.subscribe();
    let (leader, _, _) = sim.membership().await?;
    let leader_addr = sim.addr(leader).to_string();
    wait_members(&mut rx, "the leader and two followers", |m| {
        m.leader().is_some_and(|l| l.addr == leader_addr) && m.ready_followers().count() == 2
    })
    .await?;
    let r = tokio::time::timeout(DEADLINE, triggers.next())
        .await?
        .context("trigger stream ended")?;
    assert_eq!((r.name.as_str(), r.namespace.as_deref()), (NAME, Some(ns)));

    // Leadership moves: the slices follow. Time from election to the resolver seeing it.
    let mut latencies = Vec::new();
    for round in 0..4 {
        let (leader, _, _) = sim.membership().await?;
        let to = (leader + 1 + round % 2) % 3;
        let mut metrics = sim.nodes[&to].raft().metrics();
        let elected = tokio::spawn(async move {
            let _ = metrics.wait_for(|m| m.state == ServerState::Leader).await;
            Instant::now()
        });
        sim.pool
            .client(
                &sim.addr(leader).to_string(),
                &proglog_operator::admin::Auth::Token(TOKEN.into()),
            )?
            .transfer_leadership(proglog_operator::names::node_id(to))
            .await?;
        let to_addr = sim.addr(to).to_string();
        let seen = wait_members(&mut rx, "the new leader", |m| {
            m.leader().is_some_and(|l| l.addr == to_addr) && m.ready_followers().count() == 2
        })
        .await?;
        let elected = elected.await?;
        let ms = seen.saturating_duration_since(elected).as_secs_f64() * 1e3;
        eprintln!("round {round}: demo-{leader} -> demo-{to}: election to resolver {ms:.1} ms");
        latencies.push(ms);
        let followers: Vec<String> = rx
            .borrow()
            .ready_followers()
            .map(|e| e.name.clone())
            .collect();
        assert!(!followers.contains(&format!("demo-{to}")), "{followers:?}");
    }
    latencies.sort_by(f64::total_cmp);
    eprintln!(
        "leader change -> resolver: min {:.1} ms, median {:.1} ms, max {:.1} ms over {} transfers",
        latencies[0],
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1],
        latencies.len()
    );

    // A follower's pod turns not ready: it leaves the followers slice.
    let (leader, _, _) = sim.membership().await?;
    let follower = (0..3).find(|&o| o != leader).unwrap();
    let mut pods = sim.pods();
    pods[follower as usize].ready = false;
    discovery.track(tracked(&sim, pods));
    let gone = format!("demo-{follower}");
    wait_members(&mut rx, "the not-ready follower to be dropped", |m| {
        m.ready_followers().count() == 1 && m.ready_followers().all(|e| e.name != gone)
    })
    .await?;

    // Back to ready; then the leader dies (no transfer): the followers elect one of themselves
    // and the slices follow. The dead member's pod is still listed (the kubelet has not noticed).
    discovery.track(tracked(&sim, sim.pods()));
    wait_members(&mut rx, "both followers back", |m| {
        m.ready_followers().count() == 2
    })
    .await?;
    let (leader, _, _) = sim.membership().await?;
    let rest: Vec<u32> = (0..3).filter(|&o| o != leader).collect();
    let mut watches: Vec<_> = rest.iter().map(|o| sim.nodes[o].raft().metrics()).collect();
    let elected = tokio::spawn(async move {
        let (mut a, mut b) = (watches.remove(0), watches.remove(0));
        tokio::select! {
            _ = a.wait_for(|m| m.state == ServerState::Leader) => {}
            _ = b.wait_for(|m| m.state == ServerState::Leader) => {}
        }
        Instant::now()
    });
    let killed = Instant::now();
    sim.stop(leader).await?;
    let old = sim.addr(leader).to_string();
    let rest_addrs: Vec<String> = rest.iter().map(|&o| sim.addr(o).to_string()).collect();
    let seen = wait_members(&mut rx, "a new leader after the old one died", |m| {
        m.leader()
            .is_some_and(|l| l.addr != old && rest_addrs.contains(&l.addr))
    })
    .await?;
    let elected = elected.await?;
    eprintln!(
        "leader demo-{leader} stopped: new leader elected after {:.0} ms, resolver saw it {:.1} ms after the election",
        elected.saturating_duration_since(killed).as_secs_f64() * 1e3,
        seen.saturating_duration_since(elected).as_secs_f64() * 1e3
    );

    // Untracked: the task stops (its slices stay with their owner).
    discovery.untrack(ns, NAME);
    assert!(discovery.tracked().is_empty());
    drop(resolver);
    sim.shutdown().await
}
