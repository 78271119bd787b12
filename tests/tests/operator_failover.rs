//! Operator HA on the real node: two operator replicas with `--leader-election` share a
//! `coordination.k8s.io` Lease; one reconciles. The active one is killed (grace 0) right after a
//! ProgLog is scaled from 3 to 5: the standby takes the Lease (within 15 s), the scale-up
//! completes, and at no sample do two replicas report `proglog_operator_leader 1`.
//! Prints the takeover time and the scale-up's apply-to-Ready.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use e2e::devcluster::wait_for;
use e2e::operator::{healthy_voters, is_ready, sample_proglog, wait_proglog, OperatorEnv};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams};
use kube::Api;

const NAME: &str = "ha";
const LEASE: &str = "proglog-operator";
const OPERATOR_LABEL: &str = "app.kubernetes.io/name=proglog-operator";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_standby_operator_finishes_a_scale_up_when_the_active_one_dies() -> Result<()> {
    // NB: manifests/operator.yaml runs every replica with --leader-election and the Lease in the
    // pod's own namespace; the test only asks for two replicas.
    let env = OperatorEnv::start_with("e2e-op-ha", 2, &[]).await?;
    let result = scenario(&env).await;
    env.finish(result).await
}

/// The Lease's holder, if any.
async fn holder(leases: &Api<Lease>) -> Result<Option<String>> {
    Ok(leases
        .get_opt(LEASE)
        .await?
        .and_then(|l| l.spec?.holder_identity))
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
        leading == [first.clone()],
        "the Lease names {first}, the gauges {leading:?}"
    );

    let body = sample_proglog(NAME, &env.ns, 3, "Delete")?;
    env.kubectl_ok(&["apply", "-f", "-"], Some(&body.to_string()))?;
    wait_proglog(
        &env.proglogs(),
        NAME,
        "Ready with 3 voters",
        Duration::from_secs(180),
        |p| is_ready(p) && healthy_voters(p).len() == 3,
    )
    .await?;

    // Scale up, then kill the active operator while it works on it.
    let t_scale = Instant::now();
    env.kubectl_ok(
        &[
            "patch",
            "proglog",
            NAME,
            "--type=merge",
            "-p",
            r#"{"spec":{"replicas":5}}"#,
        ],
        None,
    )?;
    wait_for("the scale-up to start", Duration::from_secs(30), || async {
        let pods = Api::<Pod>::namespaced(env.client.clone(), &env.ns)
            .list(&ListParams::default().labels(&e2e::names::selector(NAME)))
            .await?;
        Ok((pods.items.len() > 3).then_some(()))
    })
    .await?;
    let t_kill = Instant::now();
    Api::<Pod>::namespaced(env.client.clone(), &env.ns)
        .delete(&first, &DeleteParams::default().grace_period(0))
        .await?;

    // Sample the gauges until another replica holds the Lease and leads: never two at once.
    let mut takeover = None;
    while takeover.is_none() {
        let leading = leading_pods(env).await?;
        if leading.len() > 1 {
            bail!("two operators lead at once: {leading:?}");
        }
        let h = holder(&leases).await?;
        if let (Some(h), [l]) = (&h, leading.as_slice()) {
            if *h != first && h == l {
                takeover = Some((h.clone(), t_kill.elapsed()));
            }
        }
        if t_kill.elapsed() > Duration::from_secs(60) {
            bail!("no takeover 60 s after {first} died (holder {h:?}, leading {leading:?})");
        }
    }
    let (second, took) = takeover.context("takeover")?;
    eprintln!("[timing] {second} took over {took:.2?} after {first} was killed");
    ensure!(
        took <= Duration::from_secs(15),
        "takeover took {took:.2?} (> 15 s)"
    );

    wait_proglog(
        &env.proglogs(),
        NAME,
        "Ready with 5 voters",
        Duration::from_secs(240),
        |p| is_ready(p) && healthy_voters(p).len() == 5,
    )
    .await?;
    eprintln!(
        "[timing] scale 3 -> 5 Ready {:.1?} after the patch (operator killed during it)",
        t_scale.elapsed()
    );
    let leading = leading_pods(env).await?;
    ensure!(
        leading.len() <= 1,
        "two operators lead at once: {leading:?}"
    );
    Ok(())
}
