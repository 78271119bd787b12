//! Operator HA on the real node: two operator replicas with `--leader-election` share a
//! `coordination.k8s.io` Lease; one reconciles. Two failures of the active one, each right after
//! a ProgLog scale-up started:
//! 1. 1 -> 3: its pod is deleted (grace 0): the process gets SIGTERM and releases the Lease, so
//!    the standby takes over at once;
//! 2. 3 -> 5: its process is killed with SIGKILL from the node (found through its container's
//!    cgroup in /proc): no release, the Lease runs out (10 s) first. The killed container
//!    restarts as a new process, a standby too (the Lease names processes, not pods).
//!
//! Each time another process takes over within 15 s and the scale-up completes, and at no sample
//! do two replicas report `proglog_operator_leader 1`. Prints both takeover times and the
//! scale-ups' apply-to-Ready.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use e2e::devcluster::wait_for;
use e2e::operator::{healthy_voters, is_ready, sample_proglog_tls, wait_proglog, OperatorEnv};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams};
use kube::Api;

const NAME: &str = "ha";
const LEASE: &str = "proglog-operator";
const OPERATOR_LABEL: &str = "app.kubernetes.io/name=proglog-operator";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_standby_operator_finishes_a_scale_up_when_the_active_one_dies_or_crashes() -> Result<()>
{
    // NB: manifests/operator.yaml runs every replica with --leader-election and the Lease in the
    // pod's own namespace; the test only asks for two replicas.
    let env = OperatorEnv::start_with("e2e-op-ha", 2, &[]).await?;
    let result = scenario(&env).await;
    env.finish(result).await
}

/// How the active operator goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Death {
    /// Its pod is deleted with grace 0: SIGTERM, the Lease is released.
    PodDeleted,
    /// Its process gets SIGKILL: nothing is released.
    Sigkill,
}

/// The Lease's holder identity, if any.
async fn holder(leases: &Api<Lease>) -> Result<Option<String>> {
    Ok(leases
        .get_opt(LEASE)
        .await?
        .and_then(|l| l.spec?.holder_identity))
}

/// The pod of a holder identity (`<pod>_<suffix>`: one identity per process).
fn pod_of(identity: &str) -> &str {
    identity.split('_').next().unwrap_or(identity)
}

/// Running operator pods that report `proglog_operator_leader 1` (scraped through the API
/// server's pod proxy; a pod that does not answer counts as not leading).
async fn leading_pods(env: &OperatorEnv) -> Result<Vec<String>> {
    let pods = Api::<Pod>::namespaced(env.client.clone(), &env.ns)
        .list(&ListParams::default().labels(OPERATOR_LABEL))
        .await?;
    let mut leading = Vec::new();
    for p in pods.items {
        let name = p.metadata.name.unwrap_or_default();
        let path = format!(
            // NB: the port number (manifests/operator.yaml): the pod proxy fails on a port name.
            "/api/v1/namespaces/{}/pods/http:{name}:8080/proxy/metrics",
            env.ns
        );
        let Ok(out) = env.kubectl(&["get", "--raw", &path], None) else {
            continue;
        };
        if out.ok
            && out
                .stdout
                .lines()
                .any(|l| l.trim() == "proglog_operator_leader 1")
        {
            leading.push(name);
        }
    }
    Ok(leading)
}

/// Host PIDs of the processes of container `id` (the node runs on this machine; cgroupfs puts
/// the container id in every cgroup path of its processes).
fn container_pids(id: &str) -> Result<Vec<u32>> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cgroups) = std::fs::read_to_string(entry.path().join("cgroup")) else {
            continue;
        };
        if cgroups
            .lines()
            .any(|l| l.ends_with(id) || l.contains(&format!("{id}/")))
        {
            pids.push(pid);
        }
    }
    Ok(pids)
}

/// SIGKILLs the operator process of pod `pod` from the node; returns the container's restart
/// count before the kill.
async fn sigkill(env: &OperatorEnv, pod: &str) -> Result<i32> {
    let p = Api::<Pod>::namespaced(env.client.clone(), &env.ns)
        .get(pod)
        .await?;
    let cs = (p.status.and_then(|s| s.container_statuses))
        .and_then(|c| c.into_iter().next())
        .context("no container status")?;
    let id = (cs.container_id.as_deref())
        .and_then(|c| c.split("://").nth(1))
        .with_context(|| format!("no container id in {:?}", cs.container_id))?
        .to_string();
    let pids = container_pids(&id)?;
    ensure!(!pids.is_empty(), "no process of container {id} in /proc");
    for pid in &pids {
        let out = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .output()?;
        ensure!(
            out.status.success(),
            "kill -KILL {pid}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprintln!("SIGKILL to {pod} (container {id}, pids {pids:?})");
    Ok(cs.restart_count)
}

/// Scales the ProgLog to `to` members, lets the active operator die as `death` once the new pods
/// appear, and checks that another process takes over in time (never two at once) and the
/// scale-up completes.
async fn scale_and_lose_the_operator(
    env: &OperatorEnv,
    leases: &Api<Lease>,
    from: usize,
    to: usize,
    death: Death,
) -> Result<()> {
    let first = holder(leases).await?.context("nobody holds the Lease")?;
    let first_pod = pod_of(&first).to_string();
    let t_scale = Instant::now();
    let patch = format!(r#"{{"spec":{{"replicas":{to}}}}}"#);
    env.kubectl_ok(
        &["patch", "proglog", NAME, "--type=merge", "-p", &patch],
        None,
    )?;
    wait_for("the scale-up to start", Duration::from_secs(30), || async {
        let pods = Api::<Pod>::namespaced(env.client.clone(), &env.ns)
            .list(&ListParams::default().labels(&e2e::names::selector(NAME)))
            .await?;
        Ok((pods.items.len() > from).then_some(()))
    })
    .await?;
    let t_kill = Instant::now();
    let restarts = match death {
        Death::PodDeleted => {
            Api::<Pod>::namespaced(env.client.clone(), &env.ns)
                .delete(&first_pod, &DeleteParams::default().grace_period(0))
                .await?;
            None
        }
        Death::Sigkill => Some(sigkill(env, &first_pod).await?),
    };

    // Sample the gauges until another process holds the Lease and leads: never two at once.
    let mut takeover = None;
    while takeover.is_none() {
        let leading = leading_pods(env).await?;
        if leading.len() > 1 {
            bail!("two operators lead at once: {leading:?}");
        }
        let h = holder(leases).await?;
        if let (Some(h), [l]) = (&h, leading.as_slice()) {
            if *h != first && pod_of(h) == l {
                takeover = Some((h.clone(), t_kill.elapsed()));
            }
        }
        if t_kill.elapsed() > Duration::from_secs(60) {
            bail!("no takeover 60 s after {first} died (holder {h:?}, leading {leading:?})");
        }
    }
    let (second, took) = takeover.context("takeover")?;
    let who = if pod_of(&second) == first_pod {
        "a new process in the killed pod"
    } else {
        "the standby"
    };
    eprintln!("[timing] {death:?}: {second} ({who}) took over {took:.2?} after {first} died");
    ensure!(
        took <= Duration::from_secs(15),
        "takeover took {took:.2?} (> 15 s)"
    );
    if let Some(before) = restarts {
        // The kill really went to the container (not to a pod that was replaced).
        let p = Api::<Pod>::namespaced(env.client.clone(), &env.ns)
            .get(&first_pod)
            .await?;
        let after = (p.status.and_then(|s| s.container_statuses))
            .and_then(|c| c.into_iter().next())
            .map_or(before, |c| c.restart_count);
        ensure!(after > before, "{first_pod}'s container did not restart");
    }

    wait_proglog(
        &env.proglogs(),
        NAME,
        &format!("Ready with {to} voters"),
        Duration::from_secs(240),
        |p| is_ready(p) && healthy_voters(p).len() == to,
    )
    .await?;
    eprintln!(
        "[timing] scale {from} -> {to} Ready {:.1?} after the patch (operator {death:?} during it)",
        t_scale.elapsed()
    );
    let leading = leading_pods(env).await?;
    ensure!(
        leading.len() <= 1,
        "two operators lead at once: {leading:?}"
    );
    Ok(())
}

async fn scenario(env: &OperatorEnv) -> Result<()> {
    let leases = Api::<Lease>::namespaced(env.client.clone(), &env.ns);
    let first = wait_for(
        "an operator to hold the Lease",
        Duration::from_secs(60),
        || async { holder(&leases).await },
    )
    .await?;
    let leading = wait_for(
        "the holder's leader gauge",
        Duration::from_secs(30),
        || async {
            let l = leading_pods(env).await?;
            Ok((!l.is_empty()).then_some(l))
        },
    )
    .await?;
    ensure!(
        leading == [pod_of(&first)],
        "the Lease names {first}, the gauges {leading:?}"
    );

    let body = sample_proglog_tls(NAME, &env.ns, 1, "Delete")?;
    env.kubectl_ok(&["apply", "-f", "-"], Some(&body.to_string()))?;
    wait_proglog(
        &env.proglogs(),
        NAME,
        "Ready with 1 voter",
        Duration::from_secs(180),
        |p| is_ready(p) && healthy_voters(p).len() == 1,
    )
    .await?;

    scale_and_lose_the_operator(env, &leases, 1, 3, Death::PodDeleted).await?;
    scale_and_lose_the_operator(env, &leases, 3, 5, Death::Sigkill).await
}
