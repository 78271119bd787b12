//! `dev-cluster-down` puts the host back exactly as it was before `dev-cluster-up`: the test takes the
//! devcluster down, snapshots the host (the devcluster's processes, interfaces, addresses, routes,
//! mounts, iptables chains and rules, sysctls, the fixed paths the node writes, its cgroups), brings the
//! cluster up and runs a pod that uses what leaves traces (a Service, so kube-proxy rules; Secret and
//! emptyDir volumes, so mounts; a pod network namespace and veth), checks that the snapshot sees the
//! cluster, takes it down and compares. Runs only against the devcluster this test run manages
//! (KUBECONFIG unset). It is its own test binary (cargo runs test binaries one after another), so it
//! never pulls the cluster from under the other devcluster tests; a later test binary brings it up again.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use e2e::devcluster::{self, wait_for};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Patch, PatchParams};
use kube::Api;
use serde_json::json;

/// Paths the node writes outside its own directory, whatever it is told (tests/devcluster/host.sh).
const FIXED_PATHS: &[&str] = &[
    "/run/containerd",
    "/var/lib/cni",
    "/var/log/containers",
    "/var/log/pods",
    "/var/lib/kubelet",
    "/var/lib/containerd",
    "/etc/containerd",
    "/opt/containerd",
    "/run/netns",
    "/etc/cni",
    "/opt/cni",
    "/run/runc",
    "/run/nri",
    "/etc/kubernetes",
];

/// Sysctls that change on their own.
fn volatile(key: &str) -> bool {
    matches!(
        key,
        "fs.dentry-state"
            | "fs.file-nr"
            | "fs.inode-nr"
            | "fs.inode-state"
            | "kernel.ns_last_pid"
            | "net.netfilter.nf_conntrack_count"
    ) || key.starts_with("kernel.random.")
        || key.starts_with("fs.quota.")
}

fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// iptables-save without comments and counters: tables, chains with policies, rules.
fn iptables(program: &str) -> Result<Vec<String>> {
    Ok(run(program, &[])?
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            if l.starts_with(':') {
                // ":CHAIN POLICY [packets:bytes]"
                l.rsplit_once(' ').map(|(a, _)| a).unwrap_or(l).to_string()
            } else {
                l.to_string()
            }
        })
        .collect())
}

/// Processes of the devcluster: a binary of its build, runc, or a command line naming its directory,
/// or a process in its cgroup.
fn devcluster_processes(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().to_string();
    let cache = dir
        .rsplit_once('/')
        .map(|(a, _)| a.to_string())
        .unwrap_or_default();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let exe = std::fs::read_link(e.path().join("exe"))
            .map(|p| p.to_string_lossy().to_string())
            .unwrap_or_default();
        let cmd = std::fs::read(e.path().join("cmdline"))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .unwrap_or_default();
        let cgroup = std::fs::read_to_string(e.path().join("cgroup")).unwrap_or_default();
        let ours = (exe.starts_with(&cache) && exe.contains("/k8s-"))
            || exe.ends_with("/runc")
            || cmd.contains(&dir)
            || cgroup.lines().any(|l| l.contains(":/devcluster"));
        if ours && pid != std::process::id() {
            found.push(format!("{pid} {exe} {cmd}"));
        }
    }
    found
}

/// What the devcluster may change on the host, by kind.
fn snapshot(dir: &Path) -> Result<BTreeMap<&'static str, Vec<String>>> {
    let mut s = BTreeMap::new();
    s.insert("processes", devcluster_processes(dir));
    let names = |text: String| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect()
    };
    s.insert("interfaces", names(run("ip", &["-o", "link", "show"])?));
    s.insert(
        "addresses",
        run("ip", &["-o", "addr", "show"])?
            .lines()
            .map(|l| l.split_whitespace().take(4).collect::<Vec<_>>().join(" "))
            .collect(),
    );
    let mut routes: Vec<String> = run("ip", &["-4", "route", "show", "table", "all"])?
        .lines()
        .map(String::from)
        .collect();
    routes.extend(
        run("ip", &["-6", "route", "show", "table", "all"])?
            .lines()
            .map(String::from),
    );
    s.insert("routes", routes);
    s.insert(
        "mounts",
        std::fs::read_to_string("/proc/self/mountinfo")?
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let fstype = l.split(" - ").nth(1).unwrap_or("");
                format!("{} {}", f.get(4).unwrap_or(&""), fstype)
            })
            .collect(),
    );
    s.insert("iptables", iptables("iptables-save")?);
    s.insert("ip6tables", iptables("ip6tables-save")?);
    s.insert(
        "sysctls",
        run("sysctl", &["-a"])?
            .lines()
            .filter(|l| !volatile(l.split(" = ").next().unwrap_or("")))
            .map(String::from)
            .collect(),
    );
    s.insert(
        "paths",
        FIXED_PATHS
            .iter()
            .filter(|p| Path::new(p).exists())
            .map(|p| p.to_string())
            .collect(),
    );
    let mut cgroups = Vec::new();
    for h in std::fs::read_dir("/sys/fs/cgroup")?.flatten() {
        if h.path().join("devcluster").is_dir() {
            cgroups.push(h.path().join("devcluster").to_string_lossy().to_string());
        }
    }
    s.insert("cgroups", cgroups);
    for v in s.values_mut() {
        v.sort();
    }
    Ok(s)
}

/// Lines only in `a` (-) and only in `b` (+), per kind that differs.
fn differences(
    a: &BTreeMap<&'static str, Vec<String>>,
    b: &BTreeMap<&'static str, Vec<String>>,
) -> BTreeMap<&'static str, Vec<String>> {
    let mut d = BTreeMap::new();
    for (k, av) in a {
        let bv = &b[k];
        let mut lines: Vec<String> = av
            .iter()
            .filter(|l| !bv.contains(l))
            .map(|l| format!("- {l}"))
            .collect();
        lines.extend(
            bv.iter()
                .filter(|l| !av.contains(l))
                .map(|l| format!("+ {l}")),
        );
        if !lines.is_empty() {
            d.insert(*k, lines);
        }
    }
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_cluster_down_restores_the_host() -> Result<()> {
    if std::env::var_os("KUBECONFIG").is_some_and(|k| !k.is_empty()) {
        eprintln!("KUBECONFIG is set: not taking down a cluster this test did not start");
        return Ok(());
    }
    let dir = devcluster::state_dir();
    tokio::task::spawn_blocking(devcluster::down).await??;
    let before = snapshot(&dir)?;
    assert!(
        before["processes"].is_empty(),
        "devcluster processes run after down: {:?}",
        before["processes"]
    );

    let (_dc, client) = devcluster::client().await?;
    let ns = "default";
    let name = format!("down-check-{}", std::process::id());
    let labels = json!({"e2e.proglog.dev/down-check": name});
    Api::<Service>::namespaced(client.clone(), ns)
        .patch(
            &name,
            &PatchParams::apply("e2e-devcluster").force(),
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                "spec": {"selector": labels, "ports": [{"port": 80}]}}),
            ),
        )
        .await?;
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    pods.patch(
        &name,
        &PatchParams::apply("e2e-devcluster").force(),
        &Patch::Apply(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels},
            "spec": {"terminationGracePeriodSeconds": 2, "automountServiceAccountToken": true,
                "volumes": [{"name": "scratch", "emptyDir": {"medium": "Memory"}}],
                "containers": [{"name": "sleeper", "image": "busybox:1.35.0",
                    "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"],
                    "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]}]}})),
    )
    .await?;
    wait_for(
        "the down-check pod to run",
        Duration::from_secs(120),
        || {
            let pods = pods.clone();
            let name = name.clone();
            async move {
                let p = pods.get(&name).await?;
                Ok((p.status.and_then(|s| s.phase).as_deref() == Some("Running")).then_some(()))
            }
        },
    )
    .await?;
    let during = snapshot(&dir)?;
    let changed = differences(&before, &during);
    // The snapshot must see the cluster, or comparing it proves nothing.
    for kind in [
        "processes",
        "interfaces",
        "routes",
        "mounts",
        "iptables",
        "cgroups",
    ] {
        assert!(
            changed.contains_key(kind),
            "the running cluster left no trace in {kind}; changes seen: {changed:#?}"
        );
    }

    tokio::task::spawn_blocking(devcluster::down).await??;
    let after = snapshot(&dir)?;
    let left = differences(&before, &after);
    assert!(
        left.is_empty(),
        "the host differs after down (- before, + after): {left:#?}"
    );
    Ok(())
}
