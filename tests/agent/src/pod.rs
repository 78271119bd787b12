//! One pod's life on the node: sandbox (IP, volumes, hosts file), init containers, containers with
//! probes and restart back-off, status reports, and termination (SIGTERM, grace period, SIGKILL, then the
//! pod object is removed).
//!
//! Each container runs as `unshare --mount --uts --propagation private -- devcluster-launch ... -- argv`
//! in its own process group; the group is what gets signalled. Output goes to
//! `logs/<ns>_<pod>_<uid>/<container>.log`; the pid to `pods/<ns>_<pod>_<uid>/<container>.pid` so that
//! `down.sh` can clean up after an agent that died.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::sync::{watch, Notify};
use tracing::{info, warn};

use crate::images::ImageTable;
use crate::ipam::Ipam;
use crate::probe::{self, Settings, Tracker};
use crate::spec::{self, PodFacts};
use crate::status::{self, PodView, State};
use crate::volumes::{self, Mount};
use crate::{Config, Error, Result};

/// What every pod worker shares.
pub struct Runtime {
    /// API client.
    pub client: Client,
    /// Agent settings.
    pub cfg: Config,
    /// Pod IPs.
    pub ipam: Ipam,
}

/// Message to a pod worker: the latest pod object, or `None` when it is gone from the API.
pub type PodUpdate = Option<Pod>;

/// The key pods are tracked by in logs.
fn key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

/// Shared state of one pod between its container tasks and its status reporter.
struct Shared {
    view: Mutex<PodView>,
    dirty: Notify,
}

impl Shared {
    fn update(&self, f: impl FnOnce(&mut PodView)) {
        f(&mut self.view.lock().expect("pod view lock"));
        self.dirty.notify_one();
    }
}

/// Everything needed to start one container.
#[derive(Clone)]
struct Launch {
    name: String,
    spec: Container,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    mounts: Vec<Mount>,
    hostname: String,
    log: PathBuf,
    pid_file: PathBuf,
    ip: String,
}

fn grace_of(pod: &Pod) -> Duration {
    let secs = pod
        .metadata
        .deletion_grace_period_seconds
        .or(pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds))
        .unwrap_or(30);
    Duration::from_secs(secs.max(0) as u64)
}

/// Runs pod `uid` until it is deleted. `rx` carries the latest object.
pub async fn run(rt: Arc<Runtime>, mut rx: watch::Receiver<PodUpdate>) {
    let Some(pod) = rx.borrow().clone() else {
        return;
    };
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = pod.metadata.name.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let pod_dir = rt.cfg.pod_dir(&ns, &name, &uid);
    let mk = |c: &Container| status::Container::new(&c.name, c.image.as_deref().unwrap_or(""));
    let shared = Arc::new(Shared {
        view: Mutex::new(PodView {
            ip: None,
            host_ip: "127.0.0.1".into(),
            start_time: pod
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0)
                .unwrap_or_else(Timestamp::now),
            init: spec.init_containers.iter().flatten().map(mk).collect(),
            containers: spec.containers.iter().map(mk).collect(),
            init_done: spec.init_containers.as_ref().is_none_or(|v| v.is_empty()),
            sandbox_ready: false,
            restart_policy: spec
                .restart_policy
                .clone()
                .unwrap_or_else(|| "Always".into()),
        }),
        dirty: Notify::new(),
    });
    info!(pod = %key(&pod), %uid, "taking pod on");
    let reporter = tokio::spawn(report(rt.client.clone(), rx.clone(), shared.clone()));
    let (stop_tx, stop_rx) = watch::channel::<Option<Duration>>(None);
    let containers = tokio::spawn(lifecycle(rt.clone(), pod.clone(), shared.clone(), stop_rx));
    let mut containers = Some(containers);

    // Wait for deletion: graceful (deletionTimestamp) or the object vanishing.
    let gone;
    loop {
        let current = rx.borrow_and_update().clone();
        match current {
            None => {
                gone = true;
                let _ = stop_tx.send(Some(Duration::from_secs(2)));
                break;
            }
            Some(p) if p.metadata.deletion_timestamp.is_some() => {
                gone = false;
                let _ = stop_tx.send(Some(grace_of(&p)));
                break;
            }
            Some(_) => {}
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { gone = true; let _ = stop_tx.send(Some(grace_of(&pod))); break; },
            _ = async { containers.as_mut().expect("lifecycle task").await }, if containers.is_some() => { containers = None; }
        }
    }
    if let Some(c) = containers {
        let _ = c.await;
    }
    shared.update(|v| {
        for c in v.containers.iter_mut() {
            c.ready = false;
        }
    });
    reporter.abort();
    if !gone {
        let api = Api::<Pod>::namespaced(rt.client.clone(), &ns);
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => info!(pod = %format!("{ns}/{name}"), "pod terminated and removed"),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => warn!(pod = %format!("{ns}/{name}"), "removing the pod object: {e}"),
        }
    }
    rt.ipam.release(&uid);
    if let Err(e) = std::fs::remove_dir_all(&pod_dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            warn!("removing {}: {e}", pod_dir.display());
        }
    }
}

/// Publishes the pod status whenever the view changes.
async fn report(client: Client, rx: watch::Receiver<PodUpdate>, shared: Arc<Shared>) {
    let mut last: Option<serde_json::Value> = None;
    loop {
        shared.dirty.notified().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let Some(pod) = rx.borrow().clone() else {
            return;
        };
        let view = shared.view.lock().expect("pod view lock").clone();
        let body = status::patch(&pod, &view, Timestamp::now());
        if last.as_ref() == Some(&body) {
            continue;
        }
        let api = Api::<Pod>::namespaced(
            client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        match api
            .patch_status(
                pod.metadata.name.as_deref().unwrap_or(""),
                &PatchParams::default(),
                &Patch::Merge(&body),
            )
            .await
        {
            Ok(_) => last = Some(body),
            Err(e) => {
                warn!(pod = %key(&pod), "status update failed (retrying): {e}");
                shared.dirty.notify_one();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Sets up the sandbox, then runs init containers and containers until stopped.
async fn lifecycle(
    rt: Arc<Runtime>,
    pod: Pod,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<Option<Duration>>,
) {
    let (launches, init_launches) = loop {
        match setup(&rt, &pod, &shared).await {
            Ok(l) => break l,
            Err((reason, msg)) => {
                warn!(pod = %key(&pod), "{reason}: {msg}");
                shared.update(|v| {
                    for c in v.init.iter_mut().chain(v.containers.iter_mut()) {
                        c.state = State::waiting(&reason, msg.clone());
                    }
                });
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(3)) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    };
    let policy = shared
        .view
        .lock()
        .expect("pod view lock")
        .restart_policy
        .clone();
    for (i, l) in init_launches.into_iter().enumerate() {
        loop {
            let code = run_container(&rt, &pod, &shared, Slot::Init(i), &l, stop.clone()).await;
            match code {
                None => return,
                Some(0) => break,
                Some(_) if policy == "Never" => return,
                Some(_) => {}
            }
        }
    }
    shared.update(|v| v.init_done = true);
    let mut tasks = Vec::new();
    for (i, l) in launches.into_iter().enumerate() {
        let (rt, pod, shared, stop) = (rt.clone(), pod.clone(), shared.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            run_container(&rt, &pod, &shared, Slot::App(i), &l, stop).await;
        }));
    }
    // Refresh tokens and Secret/ConfigMap volumes now and then while running.
    let refresher = {
        let (rt, pod, shared) = (rt.clone(), pod.clone(), shared.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(300)).await;
                let ip = shared
                    .view
                    .lock()
                    .expect("pod view lock")
                    .ip
                    .clone()
                    .unwrap_or_default();
                let facts = facts(&rt, &ip);
                let dir = rt.cfg.pod_dir(
                    pod.metadata.namespace.as_deref().unwrap_or(""),
                    pod.metadata.name.as_deref().unwrap_or(""),
                    pod.metadata.uid.as_deref().unwrap_or(""),
                );
                if let Err(e) = volumes::prepare(&rt.client, &rt.cfg, &pod, &dir, &facts).await {
                    warn!(pod = %key(&pod), "refreshing volumes: {e}");
                }
            }
        })
    };
    for t in tasks {
        let _ = t.await;
    }
    refresher.abort();
}

fn facts(rt: &Runtime, ip: &str) -> PodFacts {
    PodFacts {
        pod_ip: ip.into(),
        host_ip: "127.0.0.1".into(),
        api_host: rt.cfg.api_host.clone(),
        api_port: rt.cfg.api_port,
    }
}

type SetupError = (String, String);

/// IP, images, volumes, env and argv for every container; errors carry a waiting reason.
async fn setup(
    rt: &Runtime,
    pod: &Pod,
    shared: &Shared,
) -> std::result::Result<(Vec<Launch>, Vec<Launch>), SetupError> {
    let cfg = &rt.cfg;
    let (ns, name, uid) = (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
        pod.metadata.uid.clone().unwrap_or_default(),
    );
    let spec = pod.spec.clone().unwrap_or_default();
    let config_err = |e: Error| ("CreateContainerConfigError".to_string(), e.to_string());
    let ip = rt
        .ipam
        .allocate(&uid)
        .ok_or_else(|| {
            (
                "ContainerCreating".to_string(),
                "no free pod IP".to_string(),
            )
        })?
        .to_string();
    let images = ImageTable::load(&cfg.images_file).map_err(config_err)?;
    let mut binaries = BTreeMap::new();
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
    {
        let image = c.image.clone().unwrap_or_default();
        let bin = images
            .resolve(&image, &cfg.bin_dir)
            .map_err(|m| ("ErrImagePull".to_string(), m))?;
        binaries.insert(c.name.clone(), bin);
    }
    let pod_dir = cfg.pod_dir(&ns, &name, &uid);
    let facts = facts(rt, &ip);
    let vols = volumes::prepare(&rt.client, cfg, pod, &pod_dir, &facts)
        .await
        .map_err(|e| match e {
            Error::Kube(_) => ("ContainerCreating".to_string(), e.to_string()),
            e => config_err(e),
        })?;
    let sources = volumes::fetch_sources(&rt.client, pod)
        .await
        .map_err(config_err)?;
    let hosts = cfg.hosts_dir().join(format!("ns-{ns}"));
    std::fs::create_dir_all(cfg.hosts_dir())
        .map_err(|e| config_err(Error::io("creating the hosts dir")(e)))?;
    if !hosts.exists() {
        // A namespace the hosts loop has not seen yet: start from the cluster-wide names; its short
        // names follow within a second (the file is rewritten in place, so the pod sees them).
        let all = std::fs::read_to_string(cfg.hosts_dir().join("all"))
            .unwrap_or_else(|_| "127.0.0.1 localhost\n".into());
        crate::hosts::write_in_place(&hosts, &all).map_err(config_err)?;
    }
    let hostname = spec.hostname.clone().unwrap_or_else(|| name.clone());
    let build = |c: &Container| -> std::result::Result<Launch, SetupError> {
        let bin = &binaries[&c.name];
        let env = spec::environment(pod, c, &sources, &facts)
            .map_err(|m| ("CreateContainerConfigError".to_string(), m))?;
        let argv =
            spec::argv(c, bin, &env).map_err(|m| ("CreateContainerConfigError".to_string(), m))?;
        let mut mounts = volumes::mounts(c, &vols).map_err(config_err)?;
        mounts.push(Mount {
            source: hosts.clone(),
            target: "/etc/hosts".into(),
            read_only: true,
        });
        Ok(Launch {
            name: c.name.clone(),
            spec: c.clone(),
            argv,
            env,
            mounts,
            hostname: hostname.clone(),
            log: cfg.log_file(&ns, &name, &uid, &c.name),
            pid_file: pod_dir.join(format!("{}.pid", c.name)),
            ip: ip.clone(),
        })
    };
    let launches = spec
        .containers
        .iter()
        .map(build)
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let inits = spec
        .init_containers
        .iter()
        .flatten()
        .map(build)
        .collect::<std::result::Result<Vec<_>, _>>()?;
    shared.update(|v| {
        v.ip = Some(ip.clone());
        v.sandbox_ready = true;
        for c in v.init.iter_mut().chain(v.containers.iter_mut()) {
            c.binary = binaries
                .get(&c.name)
                .map(|b| b.display().to_string())
                .unwrap_or_default();
        }
    });
    Ok((launches, inits))
}

#[derive(Clone, Copy)]
enum Slot {
    Init(usize),
    App(usize),
}

fn with_container(shared: &Shared, slot: Slot, f: impl FnOnce(&mut status::Container)) {
    shared.update(|v| match slot {
        Slot::Init(i) => f(&mut v.init[i]),
        Slot::App(i) => f(&mut v.containers[i]),
    })
}

fn spawn(rt: &Runtime, l: &Launch) -> Result<tokio::process::Child> {
    if let Some(dir) = l.log.parent() {
        std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&l.log)
        .map_err(Error::io(format!("opening {}", l.log.display())))?;
    let err = log
        .try_clone()
        .map_err(Error::io("duplicating the log file"))?;
    let mut cmd = tokio::process::Command::new("unshare");
    cmd.args(["--mount", "--uts", "--propagation", "private", "--"])
        .arg(&rt.cfg.launcher);
    cmd.args(["--hostname", &l.hostname]);
    for m in &l.mounts {
        cmd.arg(if m.read_only { "--bind-ro" } else { "--bind" })
            .arg(&m.source)
            .arg(&m.target);
    }
    if let Some(w) = &l.spec.working_dir {
        cmd.args(["--workdir", w]);
    }
    cmd.arg("--").args(&l.argv);
    cmd.env_clear().envs(l.env.iter().cloned());
    cmd.stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(err)
        .process_group(0);
    let child = cmd
        .spawn()
        .map_err(Error::io("starting the container (unshare)"))?;
    if let Some(pid) = child.id() {
        let _ = std::fs::write(&l.pid_file, pid.to_string());
    }
    Ok(child)
}

fn signal_group(pid: u32, sig: Signal) {
    let _ = killpg(Pid::from_raw(pid as i32), sig);
}

/// Runs one container, restarting it per the restart policy. Returns its last exit code for init
/// containers, or `None` when stopped.
async fn run_container(
    rt: &Runtime,
    pod: &Pod,
    shared: &Arc<Shared>,
    slot: Slot,
    l: &Launch,
    mut stop: watch::Receiver<Option<Duration>>,
) -> Option<i32> {
    let policy = shared
        .view
        .lock()
        .expect("pod view lock")
        .restart_policy
        .clone();
    let is_init = matches!(slot, Slot::Init(_));
    let mut backoff = Duration::from_secs(10);
    loop {
        if stop.borrow().is_some() {
            return None;
        }
        let started = Instant::now();
        let started_at = Timestamp::now();
        let mut child = match spawn(rt, l) {
            Ok(c) => c,
            Err(e) => {
                with_container(shared, slot, |c| {
                    c.state = State::waiting("RunContainerError", e.to_string())
                });
                tokio::select! { _ = tokio::time::sleep(backoff) => continue, _ = stop.changed() => return None }
            }
        };
        let pid = child.id().unwrap_or(0);
        info!(pod = %key(pod), container = %l.name, pid, "container started");
        let has_startup = l.spec.startup_probe.is_some();
        let has_readiness = l.spec.readiness_probe.is_some();
        with_container(shared, slot, |c| {
            c.state = State::Running { started_at };
            c.started = !has_startup;
            c.ready = !has_readiness && !has_startup && !is_init;
        });
        let (kill_tx, mut kill_rx) = tokio::sync::mpsc::channel::<String>(1);
        let probes = (!is_init)
            .then(|| tokio::spawn(probe_loop(shared.clone(), slot, l.clone(), pid, kill_tx)));
        let outcome = tokio::select! {
            s = child.wait() => Ok(s),
            Some(why) = kill_rx.recv() => Err(Some(why)),
            _ = stop.changed() => Err(None),
        };
        if let Some(p) = probes {
            p.abort();
        }
        let (status, reason, message) = match outcome {
            Ok(s) => (s.ok(), None, String::new()),
            Err(why) => {
                let grace = stop.borrow().unwrap_or(grace_of(pod));
                let status = terminate(&mut child, pid, grace).await;
                match why {
                    Some(w) => {
                        info!(pod = %key(pod), container = %l.name, "liveness probe failed, restarting: {w}");
                        (status, Some("Error"), w)
                    }
                    None => {
                        signal_group(pid, Signal::SIGKILL);
                        let _ = std::fs::remove_file(&l.pid_file);
                        return None;
                    }
                }
            }
        };
        // Whatever the main process left in its group goes with it.
        signal_group(pid, Signal::SIGKILL);
        let _ = std::fs::remove_file(&l.pid_file);
        use std::os::unix::process::ExitStatusExt;
        let code = status
            .map(|s| s.code().unwrap_or(128 + s.signal().unwrap_or(9)))
            .unwrap_or(-1);
        let reason = reason.unwrap_or(if code == 0 { "Completed" } else { "Error" });
        info!(pod = %key(pod), container = %l.name, code, "container exited");
        let terminated = State::Terminated {
            exit_code: code,
            reason: reason.into(),
            message,
            started_at,
            finished_at: Timestamp::now(),
        };
        let restart = match policy.as_str() {
            "Never" => false,
            "OnFailure" => code != 0,
            _ => !is_init || code != 0,
        };
        if is_init && (code == 0 || !restart) {
            with_container(shared, slot, |c| {
                c.state = terminated.clone();
                c.ready = code == 0;
            });
            return Some(code);
        }
        if !restart {
            with_container(shared, slot, |c| {
                c.state = terminated;
                c.ready = false;
            });
            return Some(code);
        }
        if started.elapsed() > Duration::from_secs(600) {
            backoff = Duration::from_secs(10);
        }
        with_container(shared, slot, |c| {
            c.last = Some(terminated.clone());
            c.restart_count += 1;
            c.ready = false;
            c.state = State::waiting(
                "CrashLoopBackOff",
                format!(
                    "back-off {}s restarting failed container={} pod={}",
                    backoff.as_secs(),
                    l.name,
                    pod.metadata.name.as_deref().unwrap_or("")
                ),
            );
        });
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return None,
        }
        backoff = (backoff * 2).min(Duration::from_secs(300));
    }
}

/// SIGTERM to the group, then SIGKILL after `grace`.
async fn terminate(
    child: &mut tokio::process::Child,
    pid: u32,
    grace: Duration,
) -> Option<std::process::ExitStatus> {
    signal_group(pid, Signal::SIGTERM);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(s) => s.ok(),
        Err(_) => {
            signal_group(pid, Signal::SIGKILL);
            child.wait().await.ok()
        }
    }
}

/// Runs the container's startup, readiness and liveness probes while it runs; asks for a restart
/// (through `kill`) when the startup or liveness probe fails.
async fn probe_loop(
    shared: Arc<Shared>,
    slot: Slot,
    l: Launch,
    pid: u32,
    kill: tokio::sync::mpsc::Sender<String>,
) {
    let c = &l.spec;
    if let Some(p) = &c.startup_probe {
        let s = Settings::of(p);
        tokio::time::sleep(s.initial_delay).await;
        let mut failures = 0;
        loop {
            match probe::run(p, c, &l.ip, Some(pid), &l.env).await {
                Ok(()) => break,
                Err(e) => {
                    failures += 1;
                    if failures >= s.failure_threshold {
                        let _ = kill.send(format!("Startup probe failed: {e}")).await;
                        return;
                    }
                }
            }
            tokio::time::sleep(s.period).await;
        }
        let readiness = c.readiness_probe.is_some();
        with_container(&shared, slot, |c| {
            c.started = true;
            c.ready = !readiness;
        });
    }
    let readiness = async {
        let Some(p) = &c.readiness_probe else {
            return std::future::pending::<()>().await;
        };
        let s = Settings::of(p);
        tokio::time::sleep(s.initial_delay).await;
        let mut t = Tracker::new(s, false);
        loop {
            let ok = probe::run(p, c, &l.ip, Some(pid), &l.env).await.is_ok();
            let ready = t.record(ok);
            let changed = {
                let v = shared.view.lock().expect("pod view lock");
                let cur = match slot {
                    Slot::Init(i) => v.init[i].ready,
                    Slot::App(i) => v.containers[i].ready,
                };
                cur != ready
            };
            if changed {
                with_container(&shared, slot, |c| c.ready = ready);
            }
            tokio::time::sleep(s.period).await;
        }
    };
    let liveness = async {
        let Some(p) = &c.liveness_probe else {
            return std::future::pending::<()>().await;
        };
        let s = Settings::of(p);
        tokio::time::sleep(s.initial_delay).await;
        let mut t = Tracker::new(s, true);
        loop {
            let r = probe::run(p, c, &l.ip, Some(pid), &l.env).await;
            if !t.record(r.is_ok()) {
                let _ = kill
                    .send(format!(
                        "Liveness probe failed: {}",
                        r.err().unwrap_or_default()
                    ))
                    .await;
                return;
            }
            tokio::time::sleep(s.period).await;
        }
    };
    tokio::select! {
        _ = readiness => {}
        _ = liveness => {}
    }
}
