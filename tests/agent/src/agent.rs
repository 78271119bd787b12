//! The agent's top level: registers the node, starts the heartbeat, provisioner and hosts-file loops,
//! and keeps one worker ([`crate::pod::run`]) per pod bound to this node until the agent is told to stop.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::hosts::{self, PodName, ServiceName};
use crate::ipam::Ipam;
use crate::pod::{self, PodUpdate, Runtime};
use crate::{node, provisioner, Config, Result};

struct Worker {
    tx: watch::Sender<PodUpdate>,
    task: JoinHandle<()>,
}

fn terminal(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Runs the agent until SIGTERM or SIGINT; then stops every pod process (the pod objects stay).
pub async fn run(client: Client, cfg: Config) -> Result<()> {
    reap_leftovers(&cfg);
    node::register(&client, &cfg).await?;
    node::ensure_storage_class(&client).await?;
    info!(node = %cfg.node_name, "node registered");
    let background = [
        tokio::spawn(node::heartbeat(client.clone(), cfg.clone())),
        tokio::spawn(provisioner::run(client.clone(), cfg.clone())),
        tokio::spawn(hosts_loop(client.clone(), cfg.clone())),
    ];
    if let Some(tls) = cfg.kubelet_tls.clone() {
        let (cfg, port) = (cfg.clone(), cfg.kubelet_port);
        tokio::spawn(async move {
            if let Err(e) = crate::kubelet::serve(cfg, tls, port).await {
                warn!("kubelet endpoint (kubectl logs) not available: {e}");
            }
        });
    }
    let rt = Arc::new(Runtime {
        client: client.clone(),
        cfg: cfg.clone(),
        ipam: Ipam::default(),
    });
    let pods = Api::<Pod>::all(client.clone());
    let wc = watcher::Config::default().fields(&format!("spec.nodeName={}", cfg.node_name));
    let mut events = watcher::watcher(pods, wc).default_backoff().boxed();
    let mut workers: BTreeMap<String, Worker> = BTreeMap::new();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(crate::Error::io("installing the SIGTERM handler"))?;
    loop {
        let ev = tokio::select! {
            ev = events.next() => ev,
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        };
        workers.retain(|_, w| !w.task.is_finished());
        match ev {
            Some(Ok(Event::Apply(p) | Event::InitApply(p))) => upsert(&rt, &mut workers, p).await,
            Some(Ok(Event::Delete(p))) => {
                if let Some(w) = workers.get(p.metadata.uid.as_deref().unwrap_or("")) {
                    let _ = w.tx.send(None);
                }
            }
            Some(Ok(Event::Init | Event::InitDone)) => {}
            Some(Err(e)) => warn!("pod watch: {e}"),
            None => break,
        }
    }
    info!("stopping: terminating {} pod(s)", workers.len());
    for w in workers.values() {
        let _ = w.tx.send(None);
    }
    for (_, w) in workers {
        let _ = tokio::time::timeout(Duration::from_secs(30), w.task).await;
    }
    for b in background {
        b.abort();
    }
    Ok(())
}

/// Kills pod processes that an earlier agent left running (it crashed or was SIGKILLed): their pods
/// are started afresh, and they would hold the pods' addresses and ports.
fn reap_leftovers(cfg: &Config) {
    let pods = std::fs::read_dir(cfg.state_dir.join("pods"))
        .into_iter()
        .flatten()
        .flatten();
    for f in pods.flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten()) {
        if f.path().extension().is_some_and(|x| x == "pid") {
            let pid = std::fs::read_to_string(f.path())
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok());
            // NB: only a process that is still one of ours (a stale file may name a reused pid).
            let ours = |pid: i32| {
                let marker = format!("KUBERNETES_SERVICE_PORT={}", cfg.api_port);
                std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()))
            };
            if let Some(pid) = pid.filter(|p| ours(*p)) {
                if nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                )
                .is_ok()
                {
                    warn!(pid, "killed a pod process group left by an earlier agent");
                }
            }
            let _ = std::fs::remove_file(f.path());
        }
    }
}

async fn upsert(rt: &Arc<Runtime>, workers: &mut BTreeMap<String, Worker>, p: Pod) {
    let uid = p.metadata.uid.clone().unwrap_or_default();
    if let Some(w) = workers.get(&uid) {
        let _ = w.tx.send(Some(p));
        return;
    }
    if terminal(&p) {
        // Finished before this agent started: nothing to run; remove it when asked to.
        if p.metadata.deletion_timestamp.is_some() {
            let api = Api::<Pod>::namespaced(
                rt.client.clone(),
                p.metadata.namespace.as_deref().unwrap_or("default"),
            );
            let _ = api
                .delete(
                    p.metadata.name.as_deref().unwrap_or(""),
                    &DeleteParams {
                        grace_period_seconds: Some(0),
                        ..Default::default()
                    },
                )
                .await;
        }
        return;
    }
    let (tx, rx) = watch::channel(Some(p));
    let task = tokio::spawn(pod::run(rt.clone(), rx));
    workers.insert(uid, Worker { tx, task });
}

/// Rewrites the hosts files every second from the pods and Services in the cluster.
async fn hosts_loop(client: Client, cfg: Config) {
    let dir = cfg.hosts_dir();
    loop {
        if let Err(e) = hosts_pass(&client, &cfg, &dir).await {
            warn!("hosts files: {e}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn hosts_pass(client: &Client, cfg: &Config, dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(crate::Error::io(format!("creating {}", dir.display())))?;
    let lp = ListParams::default();
    let pods = Api::<Pod>::all(client.clone()).list(&lp).await?;
    let services = Api::<Service>::all(client.clone()).list(&lp).await?;
    let slices = Api::<EndpointSlice>::all(client.clone()).list(&lp).await?;
    let namespaces: BTreeSet<String> = Api::<Namespace>::all(client.clone())
        .list(&lp)
        .await?
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    let pods: Vec<PodName> = pods
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            let st = p.status.as_ref()?;
            let ip = st.pod_ip.clone()?;
            let spec = p.spec.as_ref()?;
            Some(PodName {
                namespace: p.metadata.namespace.clone()?,
                ip,
                hostname: spec.hostname.clone().or(p.metadata.name.clone())?,
                subdomain: spec.subdomain.clone(),
            })
        })
        .collect();
    // Service name -> ready endpoint addresses, from the EndpointSlices.
    let mut addresses: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for slice in slices.items {
        let (Some(ns), Some(svc)) = (
            slice.metadata.namespace.clone(),
            slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/service-name").cloned()),
        ) else {
            continue;
        };
        let entry = addresses.entry((ns, svc)).or_default();
        for ep in slice.endpoints {
            if ep.conditions.as_ref().and_then(|c| c.ready) != Some(false) {
                entry.extend(ep.addresses);
            }
        }
    }
    let services: Vec<ServiceName> = services
        .items
        .into_iter()
        .filter_map(|s| {
            let key = (s.metadata.namespace?, s.metadata.name?);
            Some(ServiceName {
                addresses: addresses.get(&key).cloned().unwrap_or_default(),
                namespace: key.0,
                name: key.1,
            })
        })
        .collect();
    for (file, text) in hosts::render_all(&pods, &services, &namespaces, &cfg.api_host) {
        hosts::write_in_place(&dir.join(file), &text)?;
    }
    Ok(())
}
