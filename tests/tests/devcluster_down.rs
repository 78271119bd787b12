//! `dev-cluster-down` leaves no process behind: every component and every pod process the devcluster
//! started is gone afterwards. Runs only against the devcluster this test run manages (KUBECONFIG unset).
//! It is its own test binary (cargo runs test binaries one after another), so it never pulls the cluster
//! from under the other devcluster tests; a later test binary brings the cluster up again if it needs it.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use e2e::devcluster::{self, wait_for};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::Api;
use serde_json::json;

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

fn pids_in(dir: &Path) -> Vec<i32> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok()?.trim().parse().ok())
        .collect()
}

/// Pids recorded by the devcluster: components, then pod processes.
fn recorded_pids(dir: &Path) -> (Vec<i32>, Vec<i32>) {
    let components = pids_in(&dir.join("run"));
    let pods = std::fs::read_dir(dir.join("agent").join("pods"))
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|d| pids_in(&d.path()))
        .collect();
    (components, pods)
}

/// Live processes whose command line mentions the devcluster's state directory.
fn processes_mentioning(dir: &Path) -> Vec<(i32, String)> {
    let needle = dir.to_string_lossy().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            (cmd.contains(&needle) && alive(pid)).then_some((pid, cmd))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_cluster_down_leaves_no_process() -> Result<()> {
    if std::env::var_os("KUBECONFIG").is_some_and(|k| !k.is_empty()) {
        eprintln!("KUBECONFIG is set: not taking down a cluster this test did not start");
        return Ok(());
    }
    let (dc, client) = devcluster::client().await?;
    // A running pod, so that down has pod processes to stop too. It ends by itself after five minutes
    // (restartPolicy Never), so the object left behind in the stopped cluster runs no more when the
    // cluster comes back; those of earlier runs are removed here.
    let pods = Api::<Pod>::namespaced(client.clone(), "default");
    let lp = kube::api::ListParams::default().labels("e2e.proglog.dev/down-check=true");
    for old in pods.list(&lp).await?.items {
        let _ = pods
            .delete(
                old.metadata.name.as_deref().unwrap_or(""),
                &Default::default(),
            )
            .await;
    }
    let name = format!("down-check-{}", std::process::id());
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"e2e.proglog.dev/down-check": "true"}},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 2,
            "containers": [{"name": "sleeper", "image": "busybox", "command": ["sh", "-c",
                "trap 'exit 0' TERM; i=0; while [ $i -lt 300 ]; do sleep 1; i=$((i+1)); done"]}]}});
    pods.patch(
        &name,
        &PatchParams::apply("e2e-devcluster").force(),
        &Patch::Apply(&pod),
    )
    .await?;
    let dir = dc.dir.clone();
    let (components, pod_pids) =
        wait_for("the down-check pod to run", Duration::from_secs(60), || {
            let (pods, dir, name) = (pods.clone(), dir.clone(), name.clone());
            async move {
                let p = pods.get(&name).await?;
                let running = p.status.and_then(|s| s.phase).as_deref() == Some("Running");
                let (c, p) = recorded_pids(&dir);
                Ok((running && !p.is_empty()).then_some((c, p)))
            }
        })
        .await?;
    assert_eq!(
        components.len(),
        5,
        "expected 5 components, found pids {components:?}"
    );
    let all: Vec<i32> = components.iter().chain(&pod_pids).copied().collect();
    assert!(
        all.iter().all(|p| alive(*p)),
        "a recorded process is not running: {all:?}"
    );

    tokio::task::spawn_blocking(devcluster::down).await??;

    let left: Vec<i32> = all.into_iter().filter(|p| alive(*p)).collect();
    assert!(
        left.is_empty(),
        "processes still running after down: {left:?}"
    );
    let mentioning = processes_mentioning(&dc.dir);
    assert!(
        mentioning.is_empty(),
        "processes still using the devcluster dir: {mentioning:?}"
    );
    Ok(())
}
