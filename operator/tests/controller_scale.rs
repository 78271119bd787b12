//! Scaling through the scale subresource (what `kubectl scale plog/x` does), against the devcluster:
//! 1 -> 3 members joins two voters; 3 -> 1 removes the Raft members before the StatefulSet
//! shrinks, and the removed members' volumes are deleted.

mod controller_common;

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use controller_common::{wait_condition, wait_for, Operator};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use proglog_crds::ProgLog;
use proglog_operator::names;

const NAME: &str = "grow";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_up_joins_voters_and_scale_down_removes_them_first() -> Result<()> {
    let client = controller_common::client().await?;
    let ns = controller_common::namespace(&client, "opcore-scale").await?;
    let op = Operator::start(&client, &ns).await?;
    let res = scenario(&client, &ns).await;
    let stopped = op.stop().await;
    controller_common::delete_namespace(&client, &ns).await;
    res.and(stopped)
}

fn voters(pl: &ProgLog) -> Vec<String> {
    pl.status
        .iter()
        .flat_map(|s| &s.members)
        .filter(|m| m.role == "Leader" || m.role == "Follower")
        .map(|m| m.pod.clone())
        .collect()
}

async fn scale(plogs: &Api<ProgLog>, replicas: i32) -> Result<()> {
    plogs
        .patch_scale(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": replicas}})),
        )
        .await
        .with_context(|| format!("scaling to {replicas}"))?;
    Ok(())
}

async fn scenario(client: &Client, ns: &str) -> Result<()> {
    let plogs: Api<ProgLog> = Api::namespaced(client.clone(), ns);
    let pl: ProgLog = serde_json::from_value(serde_json::json!({
        "apiVersion": "proglog.dev/v1alpha1",
        "kind": "ProgLog",
        "metadata": {"name": NAME},
        "spec": {"replicas": 1, "storage": {"onDelete": "Delete"}}
    }))?;
    plogs.create(&PostParams::default(), &pl).await?;
    let pl = wait_condition(&plogs, NAME, "Ready", "True", Duration::from_secs(90)).await?;
    assert_eq!(voters(&pl), ["grow-0"]);

    // The scale subresource reads back what the status says.
    let s = plogs.get_scale(NAME).await?;
    assert_eq!(s.status.as_ref().map(|s| s.replicas), Some(1));
    assert_eq!(
        s.status.and_then(|s| s.selector).as_deref(),
        Some(names::selector(NAME).as_str())
    );

    let started = Instant::now();
    scale(&plogs, 3).await?;
    let pl = wait_condition(&plogs, NAME, "Ready", "True", Duration::from_secs(120)).await?;
    eprintln!("1 -> 3 members Ready in {:?}", started.elapsed());
    let mut v = voters(&pl);
    v.sort();
    assert_eq!(v, ["grow-0", "grow-1", "grow-2"]);
    assert_eq!(pl.status.as_ref().map(|s| s.ready_replicas), Some(3));

    let started = Instant::now();
    scale(&plogs, 1).await?;
    let pl = wait_condition(&plogs, NAME, "Ready", "True", Duration::from_secs(120)).await?;
    eprintln!("3 -> 1 member Ready in {:?}", started.elapsed());
    assert_eq!(voters(&pl), ["grow-0"]);
    let sts = Api::<StatefulSet>::namespaced(client.clone(), ns)
        .get(&names::statefulset(NAME))
        .await?;
    assert_eq!(sts.spec.and_then(|s| s.replicas), Some(1));

    // The removed members' pods and volumes go (whenScaled: Delete).
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    wait_for(
        "pods and volumes of grow-1, grow-2 to go",
        Duration::from_secs(60),
        || async {
            let p = pods
                .list(&ListParams::default().labels(&names::selector(NAME)))
                .await?
                .items
                .len();
            let live_claims = pvcs
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .filter(|c| c.metadata.deletion_timestamp.is_none())
                .count();
            Ok((p == 1 && live_claims == 1).then_some(()))
        },
    )
    .await?;

    // Each removal was a step with an Event, before the StatefulSet shrank.
    let removed: Vec<String> = Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("MemberRemoved"))
        .filter_map(|e| e.related.and_then(|r| r.name))
        .collect();
    for pod in ["grow-1", "grow-2"] {
        ensure!(
            removed.iter().any(|p| p == pod),
            "no MemberRemoved Event for {pod}: {removed:?}"
        );
    }

    plogs.delete(NAME, &DeleteParams::default()).await?;
    wait_for(
        "the ProgLog to be gone",
        Duration::from_secs(60),
        || async { Ok(plogs.get_opt(NAME).await?.is_none().then_some(())) },
    )
    .await?;
    Ok(())
}
