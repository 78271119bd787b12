//! Starts or reuses the devcluster (tests/devcluster/) for a test and hands it a `kube::Client`.
//!
//! With `KUBECONFIG` set, that cluster is used as it is. Without it, `tests/devcluster/up.sh` runs: it
//! builds the Kubernetes binaries once (cached outside the clone), the node agent and the binaries
//! images map to, and starts everything, or does nothing when the cluster already runs. `up.sh` holds a
//! lock, so concurrent tests and test binaries share one cluster.
//!
//! Helpers here also wait on conditions with deadlines (no fixed sleeps), resolve cluster DNS names
//! through the agent's hosts file, and find container logs.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;

/// A running devcluster.
#[derive(Debug, Clone)]
pub struct DevCluster {
    /// Its kubeconfig.
    pub kubeconfig: PathBuf,
    /// Its state directory (`agent/` holds pod logs, volumes and hosts files).
    pub dir: PathBuf,
    /// Whether this process started it (false: `KUBECONFIG` named an existing cluster).
    pub managed: bool,
}

/// `tests/devcluster/` in this checkout.
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("devcluster")
}

/// The devcluster's state directory (same rule as `tests/devcluster/lib.sh`).
pub fn state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DEVCLUSTER_DIR") {
        return d.into();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
        });
    cache.join("proglog").join("devcluster")
}

fn run_script(name: &str) -> Result<String> {
    let script = scripts_dir().join(name);
    let mut cmd = Command::new(&script);
    // The agent and the image binaries go to the target dir this test was built in.
    if std::env::var_os("CARGO_TARGET_DIR").is_none() {
        if let Some(target) = std::env::current_exe()?.ancestors().nth(3) {
            cmd.env("CARGO_TARGET_DIR", target);
        }
    }
    let out = cmd
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprint!("{stderr}");
    if !out.status.success() {
        bail!("{} failed ({}):\n{stderr}", script.display(), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Builds workspace binaries that pod images map to (`tests/devcluster/images.txt`), e.g.
/// `build_bins(&["logserver"])`, into the target dir the agent looks in. A no-op when up to date.
pub fn build_bins(bins: &[&str]) -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("no workspace root")?;
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root).arg("build").arg("-q");
    for b in bins {
        cmd.args(["--bin", b]);
    }
    if std::env::var_os("CARGO_TARGET_DIR").is_none() {
        if let Some(target) = std::env::current_exe()?.ancestors().nth(3) {
            cmd.env("CARGO_TARGET_DIR", target);
        }
    }
    let status = cmd.status().context("running cargo build")?;
    if !status.success() {
        bail!("cargo build of {bins:?} failed ({status})");
    }
    Ok(())
}

/// Makes sure a cluster is there: the one `KUBECONFIG` names, or the devcluster (started if needed).
pub fn ensure() -> Result<DevCluster> {
    if let Some(k) = std::env::var_os("KUBECONFIG").filter(|k| !k.is_empty()) {
        return Ok(DevCluster {
            kubeconfig: k.into(),
            dir: state_dir(),
            managed: false,
        });
    }
    let out = run_script("up.sh")?;
    let kubeconfig = out
        .lines()
        .last()
        .context("up.sh printed no kubeconfig path")?
        .trim()
        .into();
    Ok(DevCluster {
        kubeconfig,
        dir: state_dir(),
        managed: true,
    })
}

/// Stops the devcluster (`down.sh`).
pub fn down() -> Result<()> {
    run_script("down.sh").map(|_| ())
}

impl DevCluster {
    /// A client for the cluster.
    pub async fn client(&self) -> Result<Client> {
        let kc = Kubeconfig::read_from(&self.kubeconfig)
            .with_context(|| format!("reading {}", self.kubeconfig.display()))?;
        let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
        Ok(Client::try_from(cfg)?)
    }

    /// The hosts file with the cluster's DNS names (for the host side).
    pub fn hosts_file(&self) -> PathBuf {
        self.dir.join("agent").join("hosts").join("all")
    }

    /// Addresses of a cluster DNS name (`<pod>.<svc>.<ns>.svc.cluster.local`, `<svc>.<ns>.svc.cluster.local`).
    pub fn resolve(&self, name: &str) -> Vec<IpAddr> {
        let text = std::fs::read_to_string(self.hosts_file()).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let mut parts = l.split_whitespace();
                let ip = parts.next()?.parse().ok()?;
                parts.any(|n| n == name).then_some(ip)
            })
            .collect()
    }

    /// The log file of a container of a pod (by pod UID).
    pub fn container_log(&self, namespace: &str, pod: &str, uid: &str, container: &str) -> PathBuf {
        self.dir
            .join("agent")
            .join("logs")
            .join(format!("{namespace}_{pod}_{uid}"))
            .join(format!("{container}.log"))
    }
}

/// Starts or reuses the cluster and returns it with a client.
pub async fn client() -> Result<(DevCluster, Client)> {
    let dc = tokio::task::spawn_blocking(ensure).await??;
    let client = dc.client().await?;
    Ok((dc, client))
}

/// Polls `check` until it returns `Some`, failing with `what` and the last observation after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no observation");
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what} (last error: {last})");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A fresh namespace name with `prefix`.
pub fn unique_namespace(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{:x}", std::process::id(), nanos & 0xffff)
}
