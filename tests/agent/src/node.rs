//! The Node object, its Lease heartbeat, and the default StorageClass the agent provisions for.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use tracing::warn;

use crate::{Config, Result};

/// Field manager of everything the agent applies.
pub const MANAGER: &str = "devcluster-agent";
/// The provisioner name of the default StorageClass (see [`crate::provisioner`]).
pub const PROVISIONER: &str = "devcluster.proglog.dev/hostpath";

/// Creates (or updates) the Node and reports it Ready.
pub async fn register(client: &Client, cfg: &Config) -> Result<()> {
    let nodes = Api::<Node>::all(client.clone());
    let node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": cfg.node_name, "labels": {
            "kubernetes.io/hostname": cfg.node_name, "kubernetes.io/os": "linux",
            "kubernetes.io/arch": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
            "devcluster.proglog.dev/agent": "true"}},
    });
    nodes
        .patch(
            &cfg.node_name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&node),
        )
        .await?;
    report_status(client, cfg).await
}

/// Writes the node status: Ready, addresses, capacity.
pub async fn report_status(client: &Client, cfg: &Config) -> Result<()> {
    let nodes = Api::<Node>::all(client.clone());
    let now = Timestamp::now().to_string();
    let version = client
        .apiserver_version()
        .await
        .map(|v| v.git_version)
        .unwrap_or_else(|_| "v1.35.0".into());
    let old = nodes.get_opt(&cfg.node_name).await?;
    let since = |t: &str, s: &str| {
        old.as_ref()
            .and_then(|n| n.status.as_ref())
            .and_then(|st| st.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == t && c.status == s))
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| t.0.to_string())
            .unwrap_or_else(|| now.clone())
    };
    let cond = |t: &str, s: &str, reason: &str, msg: &str| {
        json!({"type": t, "status": s, "reason": reason,
        "message": msg, "lastHeartbeatTime": now, "lastTransitionTime": since(t, s)})
    };
    let resources =
        json!({"cpu": "16", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"});
    let status = json!({"status": {
        "conditions": [
            cond("Ready", "True", "KubeletReady", "devcluster-agent is posting ready status"),
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "no memory pressure"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "no disk pressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "sufficient PID available"),
        ],
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": cfg.node_name}],
        "capacity": resources, "allocatable": resources,
        "daemonEndpoints": {"kubeletEndpoint": {"Port": cfg.kubelet_port}},
        "nodeInfo": {"machineID": "devcluster", "systemUUID": "devcluster", "bootID": "devcluster",
            "kernelVersion": "", "osImage": "devcluster (pods are local processes)",
            "containerRuntimeVersion": concat!("devcluster://", env!("CARGO_PKG_VERSION")),
            "kubeletVersion": version, "kubeProxyVersion": "", "operatingSystem": "linux",
            "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64")},
    }});
    nodes
        .patch_status(
            &cfg.node_name,
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await?;
    Ok(())
}

/// Renews the node Lease every 10 s and the node status every 30 s, forever.
pub async fn heartbeat(client: Client, cfg: Config) {
    let leases = Api::<Lease>::namespaced(client.clone(), "kube-node-lease");
    let mut tick = 0u64;
    loop {
        let uid = Api::<Node>::all(client.clone())
            .get_opt(&cfg.node_name)
            .await
            .ok()
            .flatten()
            .and_then(|n| n.metadata.uid);
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(cfg.node_name.clone()),
                namespace: Some("kube-node-lease".into()),
                owner_references: uid.map(|uid| {
                    vec![OwnerReference {
                        api_version: "v1".into(),
                        kind: "Node".into(),
                        name: cfg.node_name.clone(),
                        uid,
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(cfg.node_name.clone()),
                lease_duration_seconds: Some(40),
                renew_time: Some(MicroTime(Timestamp::now())),
                ..Default::default()
            }),
        };
        let mut body = serde_json::to_value(&lease).unwrap_or_default();
        body["apiVersion"] = json!("coordination.k8s.io/v1");
        body["kind"] = json!("Lease");
        if let Err(e) = leases
            .patch(
                &cfg.node_name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await
        {
            warn!("renewing the node lease: {e}");
        }
        if tick.is_multiple_of(3) {
            if let Err(e) = report_status(&client, &cfg).await {
                warn!("updating the node status: {e}");
            }
        }
        tick += 1;
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

/// Makes `standard` the default StorageClass, provisioned by this agent.
pub async fn ensure_storage_class(client: &Client) -> Result<()> {
    let sc = json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "standard", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": PROVISIONER, "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate",
    });
    Api::<StorageClass>::all(client.clone())
        .patch(
            "standard",
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&sc),
        )
        .await?;
    Ok(())
}
