//! The agent's settings, given on its command line by `tests/devcluster/up.sh`.

use std::path::PathBuf;

/// Settings of one agent (one node).
#[derive(Debug, Clone)]
pub struct Config {
    /// Name of the Node object this agent registers.
    pub node_name: String,
    /// Directory for pod directories, logs, volumes and hosts files.
    pub state_dir: PathBuf,
    /// Directory holding the binaries that images map to (the cargo target dir, `debug/`).
    pub bin_dir: PathBuf,
    /// The image table file (see [`crate::images`]).
    pub images_file: PathBuf,
    /// The `devcluster-launch` helper that enters a pod's namespaces; default: next to the agent.
    pub launcher: PathBuf,
    /// Address pods use to reach kube-apiserver (`KUBERNETES_SERVICE_HOST`).
    pub api_host: String,
    /// Port pods use to reach kube-apiserver (`KUBERNETES_SERVICE_PORT`).
    pub api_port: u16,
    /// The cluster CA certificate (PEM), given to pods as `ca.crt` when no ConfigMap provides it.
    pub ca_file: PathBuf,
    /// Port of the kubelet-style HTTPS endpoint (`kubectl logs`), published in the Node status.
    pub kubelet_port: u16,
    /// Its TLS material; `None` serves no endpoint.
    pub kubelet_tls: Option<crate::kubelet::Tls>,
}

impl Config {
    /// Where pod `ns/name` with `uid` keeps its volumes.
    pub fn pod_dir(&self, ns: &str, name: &str, uid: &str) -> PathBuf {
        self.state_dir
            .join("pods")
            .join(format!("{ns}_{name}_{uid}"))
    }

    /// Where the output of container `container` of pod `ns/name` with `uid` goes.
    pub fn log_file(&self, ns: &str, name: &str, uid: &str, container: &str) -> PathBuf {
        self.state_dir
            .join("logs")
            .join(format!("{ns}_{name}_{uid}"))
            .join(format!("{container}.log"))
    }

    /// Directory of the hosts files.
    pub fn hosts_dir(&self) -> PathBuf {
        self.state_dir.join("hosts")
    }

    /// Directory that holds provisioned PersistentVolumes.
    pub fn volumes_dir(&self) -> PathBuf {
        self.state_dir.join("volumes")
    }
}
