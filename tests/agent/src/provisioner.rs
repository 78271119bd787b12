//! PersistentVolumes for claims: a directory per claim under `volumes/`, kept until the claim is gone.
//!
//! Every Pending claim without a volume gets a hostPath PersistentVolume pre-bound to it (the controller
//! manager's PV controller completes the binding). When the claim is deleted the volume is Released;
//! the agent then removes the directory and the PersistentVolume.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tracing::{info, warn};

use crate::node::PROVISIONER;
use crate::{Config, Error, Result};

const LABEL: &str = "devcluster.proglog.dev/provisioned";

/// The PersistentVolume for `pvc` (pure).
pub fn volume_for(pvc: &PersistentVolumeClaim, cfg: &Config) -> Result<PersistentVolume> {
    let ns = pvc.metadata.namespace.clone().unwrap_or_default();
    let name = pvc.metadata.name.clone().unwrap_or_default();
    let uid = pvc.metadata.uid.clone().unwrap_or_default();
    let spec = pvc.spec.clone().unwrap_or_default();
    let size = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage").cloned())
        .unwrap_or(Quantity("1Gi".into()));
    let path = cfg.volumes_dir().join(&ns).join(format!("{name}-{uid}"));
    let pv = json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": format!("pvc-{uid}"), "labels": {LABEL: "true"},
            "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": spec.access_modes.unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
            "hostPath": {"path": path, "type": "DirectoryOrCreate"},
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": ns, "name": name, "uid": uid},
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": spec.storage_class_name.unwrap_or_default(),
            "volumeMode": "Filesystem",
        },
    });
    serde_json::from_value(pv)
        .map_err(|e| Error::Config(format!("building a PersistentVolume: {e}")))
}

async fn pass(client: &Client, cfg: &Config) -> Result<()> {
    let pvs = Api::<PersistentVolume>::all(client.clone());
    let claims = Api::<PersistentVolumeClaim>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    let existing: BTreeMap<String, PersistentVolume> = pvs
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|pv| (pv.metadata.name.clone().unwrap_or_default(), pv))
        .collect();
    for pvc in &claims.items {
        let pending = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending");
        let unbound = pvc
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_ref())
            .is_none();
        let name = format!("pvc-{}", pvc.metadata.uid.as_deref().unwrap_or(""));
        if pending
            && unbound
            && pvc.metadata.deletion_timestamp.is_none()
            && !existing.contains_key(&name)
        {
            let pv = volume_for(pvc, cfg)?;
            if let Some(path) = pv
                .spec
                .as_ref()
                .and_then(|s| s.host_path.as_ref())
                .map(|h| h.path.clone())
            {
                std::fs::create_dir_all(&path).map_err(Error::io(format!("creating {path}")))?;
            }
            match pvs.create(&PostParams::default(), &pv).await {
                Ok(_) => {
                    info!(claim = %format!("{}/{}", pvc.metadata.namespace.as_deref().unwrap_or(""), pvc.metadata.name.as_deref().unwrap_or("")), volume = %name, "provisioned")
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    for (name, pv) in existing {
        let ours = pv
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL))
            .is_some();
        let phase = pv
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        if ours && (phase == "Released" || phase == "Failed") {
            if let Some(path) = pv
                .spec
                .as_ref()
                .and_then(|s| s.host_path.as_ref())
                .map(|h| h.path.clone())
            {
                if path.starts_with(&*cfg.volumes_dir().to_string_lossy()) {
                    if let Err(e) = std::fs::remove_dir_all(&path) {
                        if e.kind() != std::io::ErrorKind::NotFound {
                            warn!("removing {path}: {e}");
                        }
                    }
                }
            }
            match pvs.delete(&name, &DeleteParams::default()).await {
                Ok(_) => info!(volume = %name, "claim gone: volume and its directory removed"),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// Provisions and reclaims, every second, forever.
pub async fn run(client: Client, cfg: Config) {
    loop {
        if let Err(e) = pass(&client, &cfg).await {
            warn!("volume provisioner: {e}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_is_prebound_and_under_the_state_dir() {
        let cfg = Config {
            node_name: "n".into(),
            state_dir: "/s".into(),
            bin_dir: "/b".into(),
            images_file: "/i".into(),
            launcher: "/l".into(),
            api_host: "127.0.0.1".into(),
            api_port: 1,
            ca_file: "/ca".into(),
            kubelet_port: 0,
            kubelet_tls: None,
        };
        let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": "data-web-0", "namespace": "ns", "uid": "u1"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "standard",
                     "resources": {"requests": {"storage": "2Gi"}}}}))
        .unwrap();
        let pv = volume_for(&pvc, &cfg).unwrap();
        assert_eq!(pv.metadata.name.as_deref(), Some("pvc-u1"));
        let spec = pv.spec.unwrap();
        assert_eq!(spec.host_path.unwrap().path, "/s/volumes/ns/data-web-0-u1");
        assert_eq!(spec.claim_ref.unwrap().uid.as_deref(), Some("u1"));
        assert_eq!(spec.capacity.unwrap()["storage"].0, "2Gi");
        assert_eq!(spec.storage_class_name.as_deref(), Some("standard"));
    }
}
