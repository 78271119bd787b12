//! Volume growth on the real node. The devcluster's volumes come from local-path, which cannot
//! resize a volume, so this checks what the operator decides and asks for:
//!
//! 1. On the default class (no `allowVolumeExpansion`), raising `spec.storage.size` is refused
//!    in `status.storage.message` and the claims keep their size.
//! 2. On a class of the same provisioner with `allowVolumeExpansion: true` (made by the test),
//!    the operator raises every claim's requested size and `status.storage` reports it, waiting
//!    for the capacity. NB: the capacity never follows here - a real resize needs a provisioner
//!    that can expand (a CSI driver with the `EXPAND_VOLUME` capability and the external-resizer
//!    sidecar, plus node expansion of the filesystem); local-path has neither.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use e2e::operator::{healthy_voters, is_ready, sample_proglog_tls, wait_proglog, OperatorEnv};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::ListParams;
use kube::Api;
use proglog_crds::ProgLog;
use serde_json::json;

const FROM: &str = "64Mi";
const TO: &str = "128Mi";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn growing_storage_is_refused_without_expansion_and_asked_of_the_claims_with_it() -> Result<()>
{
    let env = OperatorEnv::start("e2e-op-vol").await?;
    let class = format!("{}-expandable", env.ns);
    let result = scenario(&env, &class).await;
    let _ = env.kubectl(
        &["delete", "storageclass", &class, "--ignore-not-found"],
        None,
    );
    env.finish(result).await
}

/// The requested sizes of the claims of ProgLog `name`.
async fn requested(env: &OperatorEnv, name: &str) -> Result<Vec<String>> {
    let prefix = format!("{}-", e2e::names::DATA_VOLUME);
    let claims = Api::<PersistentVolumeClaim>::namespaced(env.client.clone(), &env.ns)
        .list(&ListParams::default())
        .await?;
    claims
        .items
        .iter()
        .filter(|c| {
            (c.metadata.name.as_deref())
                .and_then(|n| n.strip_prefix(&prefix))
                .is_some_and(|pod| e2e::names::ordinal(name, pod).is_some())
        })
        .map(|c| {
            let q = c
                .spec
                .as_ref()?
                .resources
                .as_ref()?
                .requests
                .as_ref()?
                .get("storage")?;
            Some(q.0.clone())
        })
        .collect::<Option<Vec<_>>>()
        .context("a claim without a requested size")
}

async fn ready(env: &OperatorEnv, name: &str, class: Option<&str>) -> Result<()> {
    let mut body = sample_proglog_tls(name, &env.ns, 1, "Delete")?;
    body["spec"]["storage"]["size"] = json!(FROM);
    if let Some(c) = class {
        body["spec"]["storage"]["storageClassName"] = json!(c);
    }
    env.kubectl_ok(&["apply", "-f", "-"], Some(&body.to_string()))?;
    wait_proglog(
        &env.proglogs(),
        name,
        "Ready",
        Duration::from_secs(180),
        |p| is_ready(p) && healthy_voters(p).len() == 1,
    )
    .await?;
    let sizes = requested(env, name).await?;
    ensure!(
        sizes == [FROM],
        "{name}'s claims ask for {sizes:?}, not {FROM}"
    );
    let grow = json!({"spec": {"storage": {"size": TO}}}).to_string();
    env.kubectl_ok(
        &["patch", "proglog", name, "--type=merge", "-p", &grow],
        None,
    )?;
    Ok(())
}

fn storage_message(p: &ProgLog) -> String {
    (p.status.as_ref())
        .and_then(|s| s.storage.as_ref()?.message.clone())
        .unwrap_or_default()
}

async fn scenario(env: &OperatorEnv, class: &str) -> Result<()> {
    // 1. The default class cannot expand: refused, with the reason.
    ready(env, "fixed", None).await?;
    let p = wait_proglog(
        &env.proglogs(),
        "fixed",
        "the refusal in status.storage",
        Duration::from_secs(60),
        |p| storage_message(p).contains("does not allow expansion"),
    )
    .await?;
    eprintln!("[volumes] fixed: {}", storage_message(&p));
    let sizes = requested(env, "fixed").await?;
    ensure!(
        sizes == [FROM],
        "the claims of a class without expansion grew: {sizes:?}"
    );

    // 2. A class that allows expansion: the claims ask for the new size.
    let sc = json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": class},
        "provisioner": "rancher.io/local-path",
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
        "allowVolumeExpansion": true,
    });
    env.kubectl_ok(&["apply", "-f", "-"], Some(&sc.to_string()))?;
    ready(env, "grows", Some(class)).await?;
    let p = wait_proglog(
        &env.proglogs(),
        "grows",
        "status.storage reporting the new size",
        Duration::from_secs(60),
        |p| {
            let Some(s) = p.status.as_ref().and_then(|s| s.storage.as_ref()) else {
                return false;
            };
            s.size == TO && !s.volumes.is_empty() && s.volumes.iter().all(|v| v.requested == TO)
        },
    )
    .await?;
    eprintln!("[volumes] grows: {:?}", p.status.and_then(|s| s.storage));
    let sizes = requested(env, "grows").await?;
    ensure!(sizes == [TO], "the claims ask for {sizes:?}, not {TO}");
    Ok(())
}
