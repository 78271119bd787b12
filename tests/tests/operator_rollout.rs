//! A rolling update under load, as an operator of the cluster meets it: a 3-member ProgLog, a
//! producer running, then a spec change that touches the pod template (`log.snapshotEvery`), so the
//! StatefulSet replaces every pod, one at a time, the leader's included. Each member stops
//! gracefully (SIGTERM: a leader hands leadership over first), comes back on its volume and rejoins.
//! Checks: every pod runs the new template, the ProgLog is Ready with 3 voters, no produce failed
//! (with the client's retries), no acknowledged record is lost or acknowledged twice. Prints the
//! rollout time and the longest gap between acknowledgements.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use e2e::devcluster::wait_for;
use e2e::names;
use e2e::operator::{healthy_voters, is_ready, sample_proglog, wait_proglog, OperatorEnv};
use e2e::records::{check_all, through_faults, BackgroundProducer, Produced};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::Api;
use proglog_client::Client;

const NAME: &str = "roll";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_update_replaces_every_member_without_failing_a_produce() -> Result<()> {
    let env = OperatorEnv::start("e2e-op-roll").await?;
    let result = scenario(&env).await;
    env.finish(result).await
}

async fn scenario(env: &OperatorEnv) -> Result<()> {
    let ns = env.ns.as_str();
    let plogs = env.proglogs();
    let body = sample_proglog(NAME, ns, 3, "Delete")?;
    env.kubectl_ok(&["apply", "-f", "-"], Some(&body.to_string()))?;
    wait_proglog(
        &plogs,
        NAME,
        "Ready with 3 voters",
        Duration::from_secs(120),
        |p| is_ready(p) && healthy_voters(p).len() == 3,
    )
    .await?;
    let sts_api: Api<StatefulSet> = Api::namespaced(env.client.clone(), ns);
    let old_revision = sts_api
        .get(&names::statefulset(NAME))
        .await?
        .status
        .and_then(|s| s.update_revision)
        .context("the StatefulSet has no revision")?;
    let leader_before = plogs.get(NAME).await?.status.and_then(|s| s.leader);

    let client = Client::in_kubernetes(env.client.clone(), ns, NAME, through_faults())?;
    client.wait_for_leader(Duration::from_secs(30)).await?;

    // A producer that runs through the whole rollout.
    let producer = BackgroundProducer::start(&client, "roll");
    producer.wait_for_more(20, Duration::from_secs(10)).await?;

    // A change of the pod template: every member restarts with the new flag.
    let t = Instant::now();
    env.kubectl_ok(
        &[
            "patch",
            "plog",
            NAME,
            "--type=merge",
            "-p",
            r#"{"spec":{"log":{"snapshotEvery":5000}}}"#,
        ],
        None,
    )?;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    let selector = names::selector(NAME);
    wait_for(
        "every pod on the new template",
        Duration::from_secs(180),
        || async {
            let sts = sts_api.get(&names::statefulset(NAME)).await?;
            let st = sts.status.unwrap_or_default();
            let update = st.update_revision.unwrap_or_default();
            if update == old_revision || st.updated_replicas != Some(3) {
                return Ok(None);
            }
            let list = pods.list(&ListParams::default().labels(&selector)).await?;
            let on_new = list
                .items
                .iter()
                .filter(|p| {
                    p.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("controller-revision-hash"))
                        == Some(&update)
                        && e2e::records::pod_ready(p)
                })
                .count();
            Ok((on_new == 3).then_some(()))
        },
    )
    .await?;
    let p = wait_proglog(
        &plogs,
        NAME,
        "Ready with 3 voters after the rollout",
        Duration::from_secs(120),
        |p| is_ready(p) && healthy_voters(p).len() == 3,
    )
    .await?;
    let took = t.elapsed();
    let leader_after = p.status.and_then(|s| s.leader);
    // Writes acknowledged after the rollout, then stop.
    producer.wait_for_more(20, Duration::from_secs(30)).await?;
    let Produced {
        acked,
        longest_gap: gap,
        errors,
    } = producer.stop().await?;
    eprintln!(
        "[timing] rolling update of 3 members: {took:.2?}; {} records acknowledged, longest gap \
         between acknowledgements {gap:.2?}; leader {leader_before:?} -> {leader_after:?}",
        acked.len()
    );
    ensure!(
        errors.is_empty(),
        "produces failed during the rollout: {errors:?}"
    );
    check_all(&client, &acked).await?;
    Ok(())
}
