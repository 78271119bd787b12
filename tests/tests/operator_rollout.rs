//! A leader-last rolling update under load, as an operator of the cluster meets it: a 3-member
//! ProgLog as the sample has it (mutual TLS and the ACL on; the producer is a ProgLogUser) whose
//! leader is moved to the highest ordinal first (where a StatefulSet's own rollout,
//! highest ordinal first, would restart it first), a producer running, then a spec change that
//! touches the pod template (`log.snapshotEvery`). The StatefulSet is `OnDelete` (one set to
//! `RollingUpdate` behind the operator's back is switched back first): the operator
//! restarts the members itself, one at a time, followers first, moves leadership to an updated
//! follower, and restarts the old leader last.
//! Checks: the order of the pod restarts (each old pod's uid followed as it goes) ends with the
//! leader's pod; a `LeadershipTransferred` Event off the old leader comes before its
//! `MemberRestarted`; every pod runs the new template; the ProgLog is Ready with 3 voters; no
//! produce failed (with the client's retries); no acknowledged record is lost or acknowledged
//! twice. Prints the rollout time, the order and the longest gap between acknowledgements.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use e2e::devcluster::wait_for;
use e2e::names;
use e2e::operator::{healthy_voters, is_ready, sample_proglog_tls, wait_proglog, OperatorEnv};
use e2e::records::{check_all, through_faults, BackgroundProducer, Produced};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::ListParams;
use kube::Api;
use proglog_client::Client;
use proglog_proto::v1 as pb;
use proglog_proto::v1::cluster_client::ClusterClient;
use proglog_testkit::pki::channel;
use tokio::sync::oneshot;

const NAME: &str = "roll";
const MEMBERS: u32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_update_restarts_the_leader_last_without_failing_a_produce() -> Result<()> {
    let env = OperatorEnv::start("e2e-op-roll").await?;
    let result = scenario(&env).await;
    env.finish(result).await
}

/// Watches the pods with the uids in `old` (by ordinal) and returns the ordinals in the order
/// their old pod started to go (deletion requested, replaced, or gone), once `stop` fires.
async fn restart_order(
    pods: Api<Pod>,
    old: BTreeMap<u32, String>,
    mut stop: oneshot::Receiver<()>,
) -> Vec<u32> {
    use futures::StreamExt;
    use kube::runtime::watcher;
    let mut order = Vec::new();
    let cfg = watcher::Config::default().labels(&names::selector(NAME));
    let mut events = std::pin::pin!(watcher::watcher(pods, cfg));
    loop {
        let ev = tokio::select! {
            _ = &mut stop => return order,
            ev = events.next() => ev,
        };
        let (pod, deleted) = match ev {
            Some(Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p))) => (p, false),
            Some(Ok(watcher::Event::Delete(p))) => (p, true),
            Some(_) => continue,
            None => return order,
        };
        let Some((&ord, uid)) = old
            .iter()
            .find(|(&o, _)| pod.metadata.name.as_deref() == Some(names::pod(NAME, o).as_str()))
        else {
            continue;
        };
        let going = deleted
            || pod.metadata.uid.as_ref() != Some(uid)
            || pod.metadata.deletion_timestamp.is_some();
        if going && !order.contains(&ord) {
            order.push(ord);
        }
    }
}

async fn scenario(env: &OperatorEnv) -> Result<()> {
    let ns = env.ns.as_str();
    let plogs = env.proglogs();
    let body = sample_proglog_tls(NAME, ns, MEMBERS as i32, "Delete")?;
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
    let sts = sts_api.get(&names::statefulset(NAME)).await?;
    let strategy = sts.spec.as_ref().and_then(|s| s.update_strategy.clone());
    ensure!(
        strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("OnDelete"),
        "the operator restarts members itself, so the StatefulSet must be OnDelete: {strategy:?}"
    );
    let old_revision = sts
        .status
        .and_then(|s| s.update_revision)
        .context("the StatefulSet has no revision")?;
    // A StatefulSet left on RollingUpdate (as an older operator made it) is switched back.
    env.kubectl_ok(
        &[
            "patch",
            "statefulset",
            &names::statefulset(NAME),
            "-p",
            r#"{"spec":{"updateStrategy":{"type":"RollingUpdate"}}}"#,
        ],
        None,
    )?;
    wait_for(
        "the operator to switch the StatefulSet back to OnDelete",
        Duration::from_secs(30),
        || async {
            let sts = sts_api.get(&names::statefulset(NAME)).await?;
            let u = sts.spec.and_then(|s| s.update_strategy);
            let back = u.as_ref().and_then(|u| u.type_.as_deref()) == Some("OnDelete");
            Ok((back && u.and_then(|u| u.rolling_update).is_none()).then_some(()))
        },
    )
    .await?;

    // The producer is a ProgLogUser, as an application would be (mutual TLS, the ACL).
    let config = proglog_client::ClientConfig {
        tls: Some(e2e::pki::user(&env.client, ns, NAME, "producer").await?),
        ..through_faults()
    };
    let client = Client::in_kubernetes(env.client.clone(), ns, NAME, config)?;
    client.wait_for_leader(Duration::from_secs(30)).await?;
    e2e::pki::wait_granted(&client, "granted").await?;

    // Leadership on the highest ordinal: the StatefulSet's own order would restart it first.
    let last = MEMBERS - 1;
    let leader_pod = names::pod(NAME, last);
    let status = plogs.get(NAME).await?.status.unwrap_or_default();
    let leader = status.leader.clone().context("no leader in the status")?;
    if leader != leader_pod {
        // NB: by pod IP, verified under the pod's DNS name (which the host cannot resolve), as
        // the operator (the admin API takes only its identity).
        let ip = (Api::<Pod>::namespaced(env.client.clone(), ns)
            .get(&leader)
            .await?)
            .status
            .and_then(|s| s.pod_ip)
            .context("the leader pod has no IP")?;
        let ord = names::ordinal(NAME, &leader).context("the leader's ordinal")?;
        let op = e2e::pki::operator_identity(&env.client, ns, NAME)
            .await?
            .with_server_name(&names::member_server_name(NAME, ns, ord))?;
        ClusterClient::new(channel(Some(&op), &format!("{ip}:8400"))?)
            .transfer_leadership(pb::TransferLeadershipRequest {
                node_id: names::node_id(last),
            })
            .await
            .with_context(|| format!("moving leadership from {leader} to {leader_pod}"))?;
    }
    wait_proglog(
        &plogs,
        NAME,
        "the leader to be the highest ordinal",
        Duration::from_secs(60),
        |p| p.status.as_ref().and_then(|s| s.leader.as_deref()) == Some(&leader_pod),
    )
    .await?;

    // A producer that runs through the whole rollout.
    let producer = BackgroundProducer::start(&client, "roll");
    producer.wait_for_more(20, Duration::from_secs(10)).await?;

    // Follow the pods as they restart.
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    let selector = names::selector(NAME);
    let old: BTreeMap<u32, String> = (pods.list(&ListParams::default().labels(&selector)).await?)
        .items
        .iter()
        .filter_map(|p| {
            let ord = names::ordinal(NAME, p.metadata.name.as_deref()?)?;
            Some((ord, p.metadata.uid.clone()?))
        })
        .collect();
    ensure!(old.len() == MEMBERS as usize, "pods before: {old:?}");
    let (stop, stopped) = oneshot::channel();
    let follower = tokio::spawn(restart_order(pods.clone(), old, stopped));

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
    let _ = stop.send(());
    let order = follower.await?;
    let leader_after = p.status.as_ref().and_then(|s| s.leader.clone());
    let rollout = p.status.as_ref().and_then(|s| s.rollout.clone());
    // Writes acknowledged after the rollout, then stop.
    producer.wait_for_more(20, Duration::from_secs(30)).await?;
    let Produced {
        acked,
        longest_gap: gap,
        errors,
    } = producer.stop().await?;
    let order_pods: Vec<String> = order.iter().map(|&o| names::pod(NAME, o)).collect();
    eprintln!(
        "[timing] leader-last rolling update of 3 members: {took:.2?}; restart order \
         {order_pods:?}; {} records acknowledged, longest gap between acknowledgements \
         {gap:.2?}; leader {leader_pod} -> {leader_after:?}; status.rollout {rollout:?}",
        acked.len()
    );
    ensure!(
        order.len() == MEMBERS as usize && order.last() == Some(&last),
        "the leader {leader_pod} must restart last, after the followers: order {order_pods:?}"
    );
    let r = rollout.context("no status.rollout")?;
    ensure!(
        r.updated == 3 && r.replicas == 3 && r.message.is_none(),
        "status.rollout after the rollout: {r:?}"
    );
    handed_over_first(env, &leader_pod).await?;
    ensure!(
        errors.is_empty(),
        "produces failed during the rollout: {errors:?}"
    );
    check_all(&client, &acked).await?;
    Ok(())
}

/// The operator's Events: leadership moved off `leader` (a `LeadershipTransferred` related to
/// it, for the rolling update) before it was restarted (`MemberRestarted` related to it).
async fn handed_over_first(env: &OperatorEnv, leader: &str) -> Result<()> {
    let events = Api::<Event>::namespaced(env.client.clone(), &env.ns)
        .list(&ListParams::default())
        .await?;
    let at = |reason: &str| {
        events
            .items
            .iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .filter(|e| e.related.as_ref().and_then(|r| r.name.as_deref()) == Some(leader))
            .filter(|e| {
                e.note
                    .as_deref()
                    .is_some_and(|n| n.contains("rolling update"))
            })
            .filter_map(|e| e.event_time.as_ref().map(|t| t.0))
            .min()
    };
    let moved = at("LeadershipTransferred").context("no LeadershipTransferred Event")?;
    let restarted = at("MemberRestarted").context("no MemberRestarted Event for the leader")?;
    ensure!(
        moved < restarted,
        "leadership moved off {leader} at {moved}, after its restart at {restarted}"
    );
    Ok(())
}
