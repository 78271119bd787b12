//! Pod volumes on the node: directories the launcher bind-mounts at the containers' mount paths.
//!
//! emptyDir lives in the pod directory (gone with the pod); a PVC is the directory of its bound
//! PersistentVolume (kept until the claim goes, see [`crate::provisioner`]); Secret, ConfigMap,
//! downwardAPI and projected volumes (service-account token included) are written as files, atomically
//! (write then rename), so a refresh never shows a half-written token.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, PersistentVolume,
    PersistentVolumeClaim, Pod, Secret, ServiceAccount, Volume,
};
use kube::api::PostParams;
use kube::{Api, Client};

use crate::spec::{field_value, PodFacts, Sources};
use crate::{Config, Error, Result};

/// One bind mount for the launcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Directory or file on the node.
    pub source: PathBuf,
    /// Path the container sees.
    pub target: String,
    /// Mounted read-only.
    pub read_only: bool,
}

fn pod_err(msg: impl Into<String>) -> Error {
    Error::Pod(msg.into())
}

/// Writes `data` to `dir/rel` atomically with `mode`.
fn write_file(dir: &Path, rel: &str, data: &[u8], mode: u32) -> Result<()> {
    if rel.split('/').any(|c| c == "..") || rel.starts_with('/') {
        return Err(pod_err(format!(
            "volume item path {rel:?} must be relative, without .."
        )));
    }
    let path = dir.join(rel);
    let parent = path.parent().unwrap_or(dir);
    std::fs::create_dir_all(parent).map_err(Error::io(format!("creating {}", parent.display())))?;
    let tmp = parent.join(format!(
        ".tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("f")
    ));
    std::fs::write(&tmp, data).map_err(Error::io(format!("writing {}", tmp.display())))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .map_err(Error::io(format!("chmod {}", tmp.display())))?;
    std::fs::rename(&tmp, &path).map_err(Error::io(format!("renaming to {}", path.display())))
}

/// Writes the keys of `data` (all, or the listed `items`) into `dir`.
fn write_keys(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: u32,
    what: &str,
) -> Result<()> {
    match items {
        None => {
            for (k, v) in data {
                write_file(dir, k, v, default_mode)?;
            }
        }
        Some(items) => {
            for it in items {
                let v = data
                    .get(&it.key)
                    .ok_or_else(|| pod_err(format!("{what} has no key {:?}", it.key)))?;
                write_file(
                    dir,
                    &it.path,
                    v,
                    it.mode.map(|m| m as u32).unwrap_or(default_mode),
                )?;
            }
        }
    }
    Ok(())
}

async fn secret_data(
    client: &Client,
    ns: &str,
    name: &str,
    optional: bool,
) -> Result<Option<BTreeMap<String, Vec<u8>>>> {
    match Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await?
    {
        Some(s) => Ok(Some(
            s.data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect(),
        )),
        None if optional => Ok(None),
        None => Err(pod_err(format!("Secret {name:?} not found"))),
    }
}

async fn config_map_data(
    client: &Client,
    ns: &str,
    name: &str,
    optional: bool,
) -> Result<Option<BTreeMap<String, Vec<u8>>>> {
    match Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await?
    {
        Some(c) => {
            let mut m: BTreeMap<String, Vec<u8>> = c
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            m.extend(
                c.binary_data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0)),
            );
            Ok(Some(m))
        }
        None if optional => Ok(None),
        None => Err(pod_err(format!("ConfigMap {name:?} not found"))),
    }
}

fn write_downward(
    dir: &Path,
    pod: &Pod,
    facts: &PodFacts,
    items: &[DownwardAPIVolumeFile],
    mode: u32,
) -> Result<()> {
    for it in items {
        let value = match &it.field_ref {
            Some(f) => field_value(pod, facts, &f.field_path).map_err(pod_err)?,
            None => {
                return Err(pod_err(format!(
                    "downwardAPI item {:?}: only fieldRef is supported",
                    it.path
                )))
            }
        };
        write_file(
            dir,
            &it.path,
            value.as_bytes(),
            it.mode.map(|m| m as u32).unwrap_or(mode),
        )?;
    }
    Ok(())
}

async fn token(
    client: &Client,
    pod: &Pod,
    audience: Option<String>,
    expiration: Option<i64>,
) -> Result<String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audience.into_iter().collect(),
            expiration_seconds: Some(expiration.unwrap_or(3607)),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..Default::default()
    };
    let resp = Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create_token_request(&sa, &PostParams::default(), &req)
        .await?;
    resp.status.map(|s| s.token).ok_or_else(|| {
        pod_err(format!(
            "no token in the TokenRequest answer for ServiceAccount {sa:?}"
        ))
    })
}

/// Materialises every volume of `pod` under `pod_dir` and returns volume name -> node directory.
/// Called again to refresh tokens and Secret/ConfigMap contents.
pub async fn prepare(
    client: &Client,
    cfg: &Config,
    pod: &Pod,
    pod_dir: &Path,
    facts: &PodFacts,
) -> Result<BTreeMap<String, PathBuf>> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut out = BTreeMap::new();
    for vol in pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
    {
        let dir = pod_dir.join("volumes").join(&vol.name);
        let path = prepare_one(client, cfg, pod, ns, vol, &dir, facts).await?;
        out.insert(vol.name.clone(), path);
    }
    Ok(out)
}

async fn prepare_one(
    client: &Client,
    cfg: &Config,
    pod: &Pod,
    ns: &str,
    vol: &Volume,
    dir: &Path,
    facts: &PodFacts,
) -> Result<PathBuf> {
    let mkdir = |d: &Path| {
        std::fs::create_dir_all(d).map_err(Error::io(format!("creating {}", d.display())))
    };
    if vol.empty_dir.is_some() {
        mkdir(dir)?;
    } else if let Some(c) = &vol.persistent_volume_claim {
        let pvc = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
            .get_opt(&c.claim_name)
            .await?
            .ok_or_else(|| {
                pod_err(format!(
                    "PersistentVolumeClaim {:?} not found",
                    c.claim_name
                ))
            })?;
        let pv_name = pvc
            .spec
            .and_then(|s| s.volume_name)
            .filter(|_| pvc.status.and_then(|s| s.phase).as_deref() == Some("Bound"))
            .ok_or_else(|| {
                pod_err(format!(
                    "PersistentVolumeClaim {:?} is not bound yet",
                    c.claim_name
                ))
            })?;
        let pv = Api::<PersistentVolume>::all(client.clone())
            .get(&pv_name)
            .await?;
        let spec = pv.spec.unwrap_or_default();
        let path = spec
            .host_path
            .map(|h| h.path)
            .or(spec.local.map(|l| l.path))
            .ok_or_else(|| {
                pod_err(format!(
                    "PersistentVolume {pv_name:?} is neither hostPath nor local"
                ))
            })?;
        mkdir(Path::new(&path))?;
        return Ok(PathBuf::from(path));
    } else if let Some(h) = &vol.host_path {
        if matches!(h.type_.as_deref(), Some("DirectoryOrCreate")) {
            mkdir(Path::new(&h.path))?;
        }
        return Ok(PathBuf::from(&h.path));
    } else if let Some(s) = &vol.secret {
        mkdir(dir)?;
        let name = s.secret_name.clone().unwrap_or_default();
        if let Some(data) = secret_data(client, ns, &name, s.optional.unwrap_or(false)).await? {
            write_keys(
                dir,
                &data,
                s.items.as_ref(),
                s.default_mode.unwrap_or(0o644) as u32,
                &format!("Secret {name:?}"),
            )?;
        }
    } else if let Some(c) = &vol.config_map {
        mkdir(dir)?;
        if let Some(data) =
            config_map_data(client, ns, &c.name, c.optional.unwrap_or(false)).await?
        {
            write_keys(
                dir,
                &data,
                c.items.as_ref(),
                c.default_mode.unwrap_or(0o644) as u32,
                &format!("ConfigMap {:?}", c.name),
            )?;
        }
    } else if let Some(d) = &vol.downward_api {
        mkdir(dir)?;
        write_downward(
            dir,
            pod,
            facts,
            d.items.as_deref().unwrap_or_default(),
            d.default_mode.unwrap_or(0o644) as u32,
        )?;
    } else if let Some(p) = &vol.projected {
        mkdir(dir)?;
        let mode = p.default_mode.unwrap_or(0o644) as u32;
        for src in p.sources.iter().flatten() {
            if let Some(t) = &src.service_account_token {
                let tok = token(client, pod, t.audience.clone(), t.expiration_seconds).await?;
                write_file(dir, &t.path, tok.as_bytes(), mode)?;
            } else if let Some(c) = &src.config_map {
                let data = match config_map_data(client, ns, &c.name, c.optional.unwrap_or(false))
                    .await
                {
                    // NB: kube-root-ca.crt is published by the controller manager shortly after a
                    // namespace appears; fall back to the CA file the agent was given.
                    Err(_) if c.name == "kube-root-ca.crt" => Some(BTreeMap::from([(
                        "ca.crt".to_string(),
                        std::fs::read(&cfg.ca_file).map_err(Error::io("reading the CA file"))?,
                    )])),
                    r => r?,
                };
                if let Some(data) = data {
                    write_keys(
                        dir,
                        &data,
                        c.items.as_ref(),
                        mode,
                        &format!("ConfigMap {:?}", c.name),
                    )?;
                }
            } else if let Some(s) = &src.secret {
                if let Some(data) =
                    secret_data(client, ns, &s.name, s.optional.unwrap_or(false)).await?
                {
                    write_keys(
                        dir,
                        &data,
                        s.items.as_ref(),
                        mode,
                        &format!("Secret {:?}", s.name),
                    )?;
                }
            } else if let Some(d) = &src.downward_api {
                write_downward(
                    dir,
                    pod,
                    facts,
                    d.items.as_deref().unwrap_or_default(),
                    mode,
                )?;
            } else {
                return Err(pod_err(format!(
                    "volume {:?}: unsupported projected source",
                    vol.name
                )));
            }
        }
    } else {
        return Err(pod_err(format!(
            "volume {:?}: unsupported volume type on devcluster",
            vol.name
        )));
    }
    Ok(dir.to_path_buf())
}

/// The bind mounts of `container`, given the prepared volume directories, shallowest target first.
pub fn mounts(container: &Container, volumes: &BTreeMap<String, PathBuf>) -> Result<Vec<Mount>> {
    let mut out = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        let mut source = volumes.get(&m.name).cloned().ok_or_else(|| {
            pod_err(format!(
                "volumeMount {:?} names no volume of the pod",
                m.name
            ))
        })?;
        if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            if sub.split('/').any(|c| c == "..") || sub.starts_with('/') {
                return Err(pod_err(format!(
                    "subPath {sub:?} must be relative, without .."
                )));
            }
            source = source.join(sub);
            if !source.exists() {
                std::fs::create_dir_all(&source)
                    .map_err(Error::io(format!("creating {}", source.display())))?;
            }
        }
        out.push(Mount {
            source,
            target: m.mount_path.clone(),
            read_only: m.read_only.unwrap_or(false),
        });
    }
    out.sort_by_key(|m| m.target.matches('/').count());
    Ok(out)
}

/// Fetches the Secrets and ConfigMaps that the containers' `env` and `envFrom` name.
pub async fn fetch_sources(client: &Client, pod: &Pod) -> Result<Sources> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut secrets = std::collections::BTreeSet::new();
    let mut cms = std::collections::BTreeSet::new();
    let spec = pod.spec.as_ref();
    let containers = spec.iter().flat_map(|s| {
        s.init_containers
            .iter()
            .flatten()
            .chain(s.containers.iter())
    });
    for c in containers {
        for e in c.env.iter().flatten().filter_map(|e| e.value_from.as_ref()) {
            if let Some(s) = &e.secret_key_ref {
                secrets.insert(s.name.clone());
            }
            if let Some(m) = &e.config_map_key_ref {
                cms.insert(m.name.clone());
            }
        }
        for f in c.env_from.iter().flatten() {
            if let Some(s) = &f.secret_ref {
                secrets.insert(s.name.clone());
            }
            if let Some(m) = &f.config_map_ref {
                cms.insert(m.name.clone());
            }
        }
    }
    let text = |m: BTreeMap<String, Vec<u8>>| -> BTreeMap<String, String> {
        m.into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect()
    };
    let mut sources = Sources::default();
    for s in secrets {
        if let Some(d) = secret_data(client, ns, &s, true).await? {
            sources.secrets.insert(s, text(d));
        }
    }
    for c in cms {
        if let Some(d) = config_map_data(client, ns, &c, true).await? {
            sources.config_maps.insert(c, text(d));
        }
    }
    Ok(sources)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::VolumeMount;

    #[test]
    fn items_modes_and_atomic_files() {
        let dir = tempfile::tempdir().unwrap();
        let data = BTreeMap::from([
            ("a".to_string(), b"1".to_vec()),
            ("b".to_string(), b"2".to_vec()),
        ]);
        write_keys(dir.path(), &data, None, 0o600, "x").unwrap();
        assert_eq!(std::fs::read(dir.path().join("a")).unwrap(), b"1");
        let mode = std::fs::metadata(dir.path().join("b"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let items = vec![KeyToPath {
            key: "b".into(),
            path: "sub/renamed".into(),
            mode: Some(0o400),
        }];
        write_keys(dir.path(), &data, Some(&items), 0o644, "x").unwrap();
        assert_eq!(std::fs::read(dir.path().join("sub/renamed")).unwrap(), b"2");
        let bad = vec![KeyToPath {
            key: "zz".into(),
            path: "p".into(),
            mode: None,
        }];
        assert!(write_keys(dir.path(), &data, Some(&bad), 0o644, "x").is_err());
        assert!(write_file(dir.path(), "../escape", b"x", 0o644).is_err());
    }

    #[test]
    fn mounts_sorted_with_subpath() {
        let dir = tempfile::tempdir().unwrap();
        let vols = BTreeMap::from([("data".to_string(), dir.path().to_path_buf())]);
        let c = Container {
            name: "c".into(),
            volume_mounts: Some(vec![
                VolumeMount {
                    name: "data".into(),
                    mount_path: "/a/b/c".into(),
                    sub_path: Some("s".into()),
                    ..Default::default()
                },
                VolumeMount {
                    name: "data".into(),
                    mount_path: "/a".into(),
                    read_only: Some(true),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        let m = mounts(&c, &vols).unwrap();
        assert_eq!(m[0].target, "/a");
        assert!(m[0].read_only);
        assert_eq!(m[1].source, dir.path().join("s"));
        assert!(dir.path().join("s").is_dir());
        let c = Container {
            name: "c".into(),
            volume_mounts: Some(vec![VolumeMount {
                name: "nope".into(),
                mount_path: "/x".into(),
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert!(mounts(&c, &vols).is_err());
    }
}
