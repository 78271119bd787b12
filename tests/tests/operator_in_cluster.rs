//! ProgLog as an application inside the cluster meets it, on the real node: cluster DNS, the
//! `<name>-leader` and `<name>-followers` Services carried by kube-proxy, and the pod network.
//!
//! 1. From inside a member's pod, the plain `proglog` CLI of the image (no resolver, no
//!    Kubernetes API: `--addr` with a Service's DNS name) produces through `<name>-leader` and
//!    consumes through `<name>-followers`; the admin status asked through each Service comes from
//!    a member of that role. After the leader's pod is deleted, new calls through the leader
//!    Service reach the new leader. (Plaintext: the CLI uses the admin token mounted in the pod.)
//! 2. A network partition of one member (rules in its pod's network namespace, set from the node)
//!    under a producer: no acknowledged record is lost, and the ProgLog is Ready again with three
//!    healthy voters after the heal. (The sample ProgLog, mutual TLS and the ACL; the producer is
//!    a ProgLogUser.)
//!
//! Both need the node itself (`kubectl exec`, and the partition enters the pod's network
//! namespace from the host), so they run on the devcluster; on another cluster they fail saying so.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use e2e::devcluster::wait_for;
use e2e::names;
use e2e::operator::{
    healthy_voters, is_ready, sample_proglog, sample_proglog_tls, wait_proglog, OperatorEnv,
};
use e2e::records::{check_all, through_faults, BackgroundProducer, Produced};
use proglog_client::Client;
use serde_json::Value;

/// Where the image keeps the CLI, and where the member pods mount the admin token.
const CLI: &str = "/usr/local/bin/proglog";

/// A Ready 3-member ProgLog (`tls`: as the sample has it, else plaintext); returns its leader.
async fn ready_cluster(env: &OperatorEnv, name: &str, tls: bool) -> Result<String> {
    let body = if tls {
        sample_proglog_tls(name, &env.ns, 3, "Delete")?
    } else {
        sample_proglog(name, &env.ns, 3, "Delete")?
    };
    env.kubectl_ok(&["apply", "-f", "-"], Some(&body.to_string()))?;
    let p = wait_proglog(
        &env.proglogs(),
        name,
        "Ready with 3 voters",
        Duration::from_secs(180),
        |p| is_ready(p) && healthy_voters(p).len() == 3,
    )
    .await?;
    p.status
        .and_then(|s| s.leader)
        .context("a Ready ProgLog names its leader")
}

/// `proglog ARGS` run inside `pod` (its logserver container) with `kubectl exec`.
fn exec_cli(env: &OperatorEnv, pod: &str, args: &[&str]) -> Result<String> {
    let mut full = vec!["exec", pod, "-c", names::CONTAINER, "--", CLI];
    full.extend_from_slice(args);
    env.kubectl_ok(&full, None)
}

/// The member that answers the admin status through `service` (its Raft id and role), asked
/// from inside `pod`.
fn member_behind(env: &OperatorEnv, pod: &str, service: &str) -> Result<(u64, String)> {
    let addr = format!("{service}.{}.svc.cluster.local:8400", env.ns);
    let token = format!("{}/{}", names::ADMIN_TOKEN_DIR, names::ADMIN_TOKEN_KEY);
    let out = exec_cli(
        env,
        pod,
        &[
            "--addr",
            &addr,
            "--admin-token-file",
            &token,
            "status",
            "--local",
            "-o",
            "json",
        ],
    )?;
    let v: Value = serde_json::from_str(&out).with_context(|| format!("status JSON: {out}"))?;
    Ok((
        v["node_id"].as_u64().context("node_id")?,
        v["role"].as_str().unwrap_or_default().to_string(),
    ))
}

fn raft_id(name: &str, pod: &str) -> Result<u64> {
    let ordinal = names::ordinal(name, pod).with_context(|| format!("{pod} is no member"))?;
    Ok(names::node_id(ordinal))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pod_reaches_the_leader_and_the_followers_through_their_services() -> Result<()> {
    let env = OperatorEnv::start("e2e-op-svc").await?;
    let result = services_scenario(&env).await;
    env.finish(result).await
}

async fn services_scenario(env: &OperatorEnv) -> Result<()> {
    const NAME: &str = "svc";
    // NB: plaintext: the CLI in a member pod has the admin token, no user certificate.
    let leader = ready_cluster(env, NAME, false).await?;
    let (leader_svc, followers_svc) = (names::leader_service(NAME), names::followers_service(NAME));
    let ns = env.ns.as_str();
    let from = (0..3)
        .map(|o| names::pod(NAME, o))
        .find(|p| *p != leader)
        .context("a follower pod")?;

    // Produce through the leader Service by its DNS name, from inside a pod.
    let leader_addr = format!("{leader_svc}.{ns}.svc.cluster.local:8400");
    let t = Instant::now();
    let out = exec_cli(
        env,
        &from,
        &["--addr", &leader_addr, "produce", "in-pod-1", "in-pod-2"],
    )?;
    eprintln!(
        "[timing] produce through {leader_svc} from {from}: {:.2?}: {out}",
        t.elapsed()
    );
    let (id, role) = member_behind(env, &from, &leader_svc)?;
    ensure!(
        role == "leader" && id == raft_id(NAME, &leader)?,
        "{leader_svc} reached member {id} ({role}), not the leader {leader}"
    );

    // Consume through the followers Service; the status through it comes from a follower.
    let followers_addr = format!("{followers_svc}.{ns}.svc.cluster.local:8400");
    let read = wait_for(
        "the followers Service to serve both records",
        Duration::from_secs(30),
        || async {
            let out = exec_cli(
                env,
                &from,
                &["--addr", &followers_addr, "consume", "--from", "0"],
            )?;
            Ok((out.contains("in-pod-1") && out.contains("in-pod-2")).then_some(out))
        },
    )
    .await?;
    eprintln!("consumed through {followers_svc}: {}", read.trim());
    let (id, role) = member_behind(env, &from, &followers_svc)?;
    ensure!(
        role == "follower" && id != raft_id(NAME, &leader)?,
        "{followers_svc} reached member {id} ({role}), not a follower"
    );

    // The leader's pod goes; new calls through the leader Service reach the new leader.
    let t = Instant::now();
    env.kubectl_ok(&["delete", "pod", &leader, "--wait=false"], None)?;
    let plogs = env.proglogs();
    let p = wait_proglog(&plogs, NAME, "a new leader", Duration::from_secs(60), |p| {
        p.status
            .as_ref()
            .and_then(|s| s.leader.as_deref())
            .is_some_and(|l| l != leader)
    })
    .await?;
    let new_leader = p.status.and_then(|s| s.leader).context("new leader")?;
    let new_id = raft_id(NAME, &new_leader)?;
    // NB: ask from a pod that stays up (the old leader's pod restarts meanwhile).
    let from = (0..3)
        .map(|o| names::pod(NAME, o))
        .find(|p| *p != leader)
        .context("a surviving pod")?;
    let reached = wait_for(
        "calls through the leader Service to reach the new leader",
        Duration::from_secs(60),
        || async {
            let (id, role) = member_behind(env, &from, &leader_svc)?;
            if id != new_id || role != "leader" {
                return Ok(None);
            }
            exec_cli(
                env,
                &from,
                &["--addr", &leader_addr, "produce", "after-failover"],
            )?;
            Ok(Some(()))
        },
    )
    .await;
    reached?;
    eprintln!(
        "[timing] leader pod {leader} deleted -> a produce through {leader_svc} answered by the new \
         leader {new_leader}: {:.2?}",
        t.elapsed()
    );
    Ok(())
}

/// The pid of a process of `pod` in `ns` on this node, found by the environment the operator gives
/// every member (`POD_NAME`, `POD_NAMESPACE`).
fn member_pid(ns: &str, pod: &str) -> Result<u32> {
    let want = [format!("POD_NAME={pod}"), format!("POD_NAMESPACE={ns}")];
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let vars: Vec<&[u8]> = env.split(|b| *b == 0).collect();
        if want.iter().all(|w| vars.contains(&w.as_bytes())) {
            return Ok(pid);
        }
    }
    bail!(
        "no process of pod {ns}/{pod} on this machine: the partition test enters the pod's network \
         namespace from the node, so it runs on the devcluster only"
    )
}

/// Cuts (or, with `heal`, restores) a pod's network: every packet in or out of its eth0 is dropped,
/// by rules in the pod's own network namespace.
fn partition(pid: u32, heal: bool) -> Result<()> {
    let op = if heal { "-D" } else { "-I" };
    for (chain, dir) in [("INPUT", "-i"), ("OUTPUT", "-o")] {
        let out = std::process::Command::new("nsenter")
            .args([
                "-t",
                &pid.to_string(),
                "-n",
                "iptables",
                "-w",
                op,
                chain,
                dir,
                "eth0",
                "-j",
                "DROP",
            ])
            .output()
            .context("running nsenter iptables (util-linux and iptables on the node)")?;
        ensure!(
            out.status.success(),
            "iptables {op} {chain} in the network namespace of pid {pid}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partitioned_member_loses_no_acknowledged_record_and_rejoins() -> Result<()> {
    let env = OperatorEnv::start("e2e-op-part").await?;
    let result = partition_scenario(&env).await;
    env.finish(result).await
}

async fn partition_scenario(env: &OperatorEnv) -> Result<()> {
    const NAME: &str = "part";
    let leader = ready_cluster(env, NAME, true).await?;
    let config = proglog_client::ClientConfig {
        tls: Some(e2e::pki::user(&env.client, &env.ns, NAME, "producer").await?),
        ..through_faults()
    };
    let client = Client::in_kubernetes(env.client.clone(), &env.ns, NAME, config)?;
    client.wait_for_leader(Duration::from_secs(30)).await?;
    e2e::pki::wait_granted(&client, "granted").await?;
    let producer = BackgroundProducer::start(&client, "part");
    producer.wait_for_more(20, Duration::from_secs(20)).await?;

    // Cut the leader off: the other two must elect and take writes while it is away.
    let pid = member_pid(&env.ns, &leader)?;
    let t = Instant::now();
    partition(pid, false)?;
    let cut = async {
        let plogs = env.proglogs();
        wait_proglog(
            &plogs,
            NAME,
            "a leader other than the cut-off member",
            Duration::from_secs(60),
            |p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.leader.as_deref())
                    .is_some_and(|l| l != leader)
            },
        )
        .await?;
        eprintln!(
            "[timing] {leader} cut off: status.leader names another member after {:.2?}",
            t.elapsed()
        );
        producer.wait_for_more(20, Duration::from_secs(60)).await
    }
    .await;
    let during = t.elapsed();
    // Heal whatever happened, then judge.
    partition(pid, true)?;
    cut?;
    eprintln!("[timing] {leader} cut off: a new leader and 20 more writes after {during:.2?}");

    wait_proglog(
        &env.proglogs(),
        NAME,
        "Ready with 3 healthy voters after the heal",
        Duration::from_secs(120),
        |p| is_ready(p) && healthy_voters(p).len() == 3,
    )
    .await?;
    producer.wait_for_more(20, Duration::from_secs(30)).await?;
    let Produced {
        acked,
        longest_gap,
        errors,
    } = producer.stop().await?;
    eprintln!(
        "[timing] partition of the leader: {} records acknowledged, {} produces failed after \
         retries, longest gap between acknowledgements {longest_gap:.2?}",
        acked.len(),
        errors.len()
    );
    check_all(&client, &acked).await?;
    Ok(())
}
