//! Starts or reuses the devcluster (tests/devcluster/) for a test and hands it a `kube::Client`.
//!
//! With `KUBECONFIG` set, that cluster is used as it is. Without it, `tests/devcluster/up.sh` runs: it
//! builds the Kubernetes binaries, containerd, the CNI plugins and CoreDNS once (cached outside the
//! clone) and starts the control plane and a stock node (kubelet, containerd, kube-proxy, CoreDNS), or
//! does nothing when the cluster already runs. `up.sh` holds a lock, so concurrent tests and test
//! binaries share one cluster.
//!
//! The node is this machine: pod IPs (10.244.0.0/24) are reachable from the host, so a test on the
//! host connects to pods directly; [`DevCluster::resolve`] asks the cluster DNS; container logs are
//! the kubelet's files under the devcluster dir (or `kubectl logs`). Helpers here also wait on
//! conditions with deadlines (no fixed sleeps).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;

/// A running devcluster.
#[derive(Debug, Clone)]
pub struct DevCluster {
    /// Its kubeconfig.
    pub kubeconfig: PathBuf,
    /// Its state directory (`pod-logs/` holds container logs, `volumes/` the local volumes).
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
    if let Some(c) = std::env::var_os("PROGLOG_CACHE").filter(|c| !c.is_empty()) {
        return PathBuf::from(c).join("devcluster");
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
        });
    cache.join("proglog").join("devcluster")
}

fn run_script(name: &str) -> Result<String> {
    run_script_args(name, std::iter::empty())
}

fn run_script_args<'a>(
    name: &str,
    args: impl Iterator<Item = &'a std::ffi::OsStr>,
) -> Result<String> {
    let script = scripts_dir().join(name);
    let mut cmd = Command::new(&script);
    cmd.args(args);
    run_checkout_script(cmd, &script)
}

/// Runs a script of this checkout (`cmd` runs `script`) with the cargo target dir this test was
/// built in, so what it builds lands next to the tests; passes its stderr on, returns its stdout,
/// and fails with its stderr when it fails.
pub fn run_checkout_script(mut cmd: Command, script: &Path) -> Result<String> {
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

/// Builds workspace binaries (e.g. `build_bins(&["logserver"])`) into the target dir this test was
/// built in. A no-op when up to date.
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

/// Imports OCI image archives into the devcluster's containerd (`tests/devcluster/load-image.sh`), where
/// the kubelet finds them at once; returns `name digest` lines. Pods use the names the archives carry.
pub fn load_images(files: &[&Path]) -> Result<String> {
    run_script_args("load-image.sh", files.iter().map(|f| f.as_os_str()))
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

    /// Addresses of a cluster DNS name (`<pod>.<svc>.<ns>.svc.cluster.local`,
    /// `<svc>.<ns>.svc.cluster.local`), as the cluster DNS answers it (empty: no such name, or no
    /// answer).
    pub async fn resolve(&self, name: &str) -> Vec<IpAddr> {
        let name = name.to_string();
        tokio::task::spawn_blocking(move || dns_query_a(CLUSTER_DNS, &name).unwrap_or_default())
            .await
            .unwrap_or_default()
    }

    /// The kubelet's log file of a container's first run (by pod UID); later runs are `1.log`, ...
    /// The lines are in the CRI format (`<time> <stream> <F|P> <text>`): see [`Self::container_output`].
    pub fn container_log(&self, namespace: &str, pod: &str, uid: &str, container: &str) -> PathBuf {
        self.dir
            .join("pod-logs")
            .join(format!("{namespace}_{pod}_{uid}"))
            .join(container)
            .join("0.log")
    }

    /// What a container wrote (stdout and stderr, every run in order), read from the kubelet's files.
    pub fn container_output(
        &self,
        namespace: &str,
        pod: &str,
        uid: &str,
        container: &str,
    ) -> Result<String> {
        let first = self.container_log(namespace, pod, uid, container);
        let dir = first.parent().context("no log dir")?;
        let mut runs: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_str()?.strip_suffix(".log")?.parse().ok()?;
                Some((n, e.path()))
            })
            .collect();
        runs.sort();
        let mut out = String::new();
        for (_, path) in runs {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            out.push_str(&cri_log_text(&text));
        }
        Ok(out)
    }
}

/// The cluster DNS (the `kube-dns` Service of `tests/devcluster/addons/coredns.yaml`).
pub const CLUSTER_DNS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 112, 0, 10)), 53);

/// The text of a CRI-format container log (`<time> <stream> <F|P> <text>` per line; `P` is a part of a
/// line that the next entry continues).
pub fn cri_log_text(log: &str) -> String {
    let mut out = String::new();
    for line in log.lines() {
        let mut parts = line.splitn(4, ' ');
        let (_time, _stream, tag) = (parts.next(), parts.next(), parts.next());
        let text = parts.next().unwrap_or("");
        out.push_str(text);
        if tag != Some("P") {
            out.push('\n');
        }
    }
    out
}

/// One DNS query for the A records of `name` (RFC 1035, over UDP, recursion not asked for).
/// NB: a few lines of our own rather than a resolver crate: the host's resolver must not be used (it
/// does not know the cluster), and this is all the tests need.
pub fn dns_query_a(server: SocketAddr, name: &str) -> Result<Vec<IpAddr>> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let id = (std::process::id() as u16) ^ (nanos as u16);
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]); // no flags, 1 question
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            bail!("bad DNS name {name:?}");
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]); // root, type A, class IN
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    sock.set_read_timeout(Some(Duration::from_secs(2)))?;
    sock.send_to(&q, server)?;
    let mut buf = [0u8; 1500];
    let n = loop {
        let (n, from) = sock.recv_from(&mut buf)?;
        if from == server && n >= 12 && buf[..2] == id.to_be_bytes() {
            break n;
        }
    };
    let r = &buf[..n];
    let rcode = r[3] & 0x0f;
    if rcode == 3 {
        return Ok(Vec::new()); // NXDOMAIN
    }
    if rcode != 0 {
        bail!("DNS answer code {rcode} for {name}");
    }
    let answers = u16::from_be_bytes([r[6], r[7]]);
    // Skip the question: the name we sent, then type and class.
    let mut at = q.len();
    let mut ips = Vec::new();
    for _ in 0..answers {
        // A name: labels, or a pointer (two bytes).
        loop {
            let len = *r.get(at).context("short DNS answer")? as usize;
            if len & 0xc0 == 0xc0 {
                at += 2;
                break;
            }
            at += 1 + len;
            if len == 0 {
                break;
            }
        }
        let head = r.get(at..at + 10).context("short DNS answer")?;
        let (rtype, rdlen) = (
            u16::from_be_bytes([head[0], head[1]]),
            u16::from_be_bytes([head[8], head[9]]) as usize,
        );
        at += 10;
        let data = r.get(at..at + rdlen).context("short DNS answer")?;
        if rtype == 1 && rdlen == 4 {
            ips.push(IpAddr::V4(Ipv4Addr::new(
                data[0], data[1], data[2], data[3],
            )));
        }
        at += rdlen;
    }
    ips.sort();
    Ok(ips)
}

/// Starts or reuses the cluster and returns it with a client.
pub async fn client() -> Result<(DevCluster, Client)> {
    let dc = tokio::task::spawn_blocking(ensure).await??;
    let client = dc.client().await?;
    Ok((dc, client))
}

/// Polls `check` until it returns `Some`, failing with `what` and the last error after a timeout.
pub use proglog_testkit::wait_for;

/// A fresh namespace name with `prefix`.
pub fn unique_namespace(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{:x}", std::process::id(), nanos & 0xffff)
}
