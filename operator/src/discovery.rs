//! Discovery: follows each tracked cluster's leader and writes its `<name>-leader` and
//! `<name>-followers` EndpointSlices, the ones the client's resolver (and plain Service DNS)
//! route by.
//!
//! One task per cluster keeps a `WatchStatus` stream open to one member (a ready follower when
//! it can: it outlives a leader that dies) and moves to another member, with back-off, when the
//! stream ends. Every status message and every pod change from [`Discovery::track`] updates a
//! [`View`] (leader, term, voters) and rewrites the slices by server-side apply when their content
//! changed, then pushes the ProgLog into the trigger stream so the controller refreshes status.
//! A stream that reports no leader for a while, and a slow periodic probe of every member,
//! catch a watched member that is cut off and would otherwise report a stale leader.
//!
//! NB: the last known leader is kept through errors and elections: the leader slice is never
//! emptied because a member blinked. [`build_slices`] and [`View`] are pure and unit-tested;
//! this module does not decide membership (see [`crate::membership`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use proglog_crds::ProgLog;
use proglog_proto::v1 as pb;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::admin::{AdminPool, ClusterAuth};
use crate::membership::{pod_addr, PodInfo};
use crate::names;

/// Every member is asked for its status this often, to catch a watched member that is cut off.
pub const PROBE_EVERY: Duration = Duration::from_secs(5);
/// A watched member that knows no leader this long makes the task probe the others.
pub const NO_LEADER_GRACE: Duration = Duration::from_secs(1);
/// First back-off after every member failed; doubles up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest back-off between rounds of reconnects or slice writes.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// One cluster discovery follows.
#[derive(Clone, Debug, PartialEq)]
pub struct Tracked {
    /// Namespace of the ProgLog.
    pub namespace: String,
    /// Name of the ProgLog.
    pub name: String,
    /// Owner reference (the ProgLog, controller=true) put on the slices.
    pub owner: OwnerReference,
    /// The members' gRPC port.
    pub port: i32,
    /// The pods of the StatefulSet.
    pub pods: Vec<PodInfo>,
    /// How to call the members' admin API.
    pub auth: ClusterAuth,
}

/// What discovery knows of a cluster's Raft state: node ids.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    /// The last known leader (kept while no leader is known).
    pub leader: Option<u64>,
    /// The term the leader was seen leading in.
    pub term: u64,
    /// The voters of the last membership seen.
    pub voters: BTreeSet<u64>,
}

impl View {
    /// Folds in one member's status; true when the view changed. Only a status that names a
    /// leader counts, and only when its term is not older than the known leader's (a member that
    /// was cut off reports a stale leader, and a lone candidate keeps raising its term without
    /// ever leading). "No leader" keeps the last known one.
    pub fn apply(&mut self, s: &pb::ClusterStatus) -> bool {
        let Some(leader) = s.leader_id.filter(|&l| l != 0) else {
            return false;
        };
        if s.term < self.term {
            return false;
        }
        let before = self.clone();
        self.term = s.term;
        self.leader = Some(leader);
        let voters: BTreeSet<u64> = s
            .members
            .iter()
            .filter(|m| m.voter)
            .map(|m| m.node_id)
            .collect();
        if !voters.is_empty() {
            self.voters = voters;
        }
        *self != before
    }
}

/// The slices to write; `None` leaves a slice as it is.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DesiredSlices {
    /// `<name>-leader`: the leader alone. None while the leader or its pod address is unknown.
    pub leader: Option<EndpointSlice>,
    /// `<name>-followers`: the other voters whose pod is ready. None while voters are unknown.
    pub followers: Option<EndpointSlice>,
}

/// The slices for `view` of the cluster `t`. Pure.
pub fn build_slices(t: &Tracked, view: &View) -> DesiredSlices {
    let pod_of: BTreeMap<u64, &PodInfo> = t
        .pods
        .iter()
        .map(|p| (names::node_id(p.ordinal), p))
        .collect();
    let leader_pod = view
        .leader
        .and_then(|l| pod_of.get(&l).copied())
        .filter(|p| p.ip.is_some());
    let leader = leader_pod.map(|p| slice(t, names::ROLE_LEADER, &[p]));
    let followers = (!view.voters.is_empty()).then(|| {
        let pods: Vec<&PodInfo> = view
            .voters
            .iter()
            .filter(|&&v| Some(v) != view.leader)
            .filter_map(|v| pod_of.get(v).copied())
            .filter(|p| p.ip.is_some() && p.ready && !p.terminating)
            .collect();
        slice(t, names::ROLE_FOLLOWERS, &pods)
    });
    DesiredSlices { leader, followers }
}

fn is_ipv6(ip: &str) -> bool {
    ip.contains(':')
}

fn slice(t: &Tracked, role: &str, pods: &[&PodInfo]) -> EndpointSlice {
    let service = if role == names::ROLE_LEADER {
        names::leader_service(&t.name)
    } else {
        names::followers_service(&t.name)
    };
    let mut labels = names::labels(&t.name);
    labels.insert(names::SLICE_SERVICE_LABEL.into(), service.clone());
    labels.insert(names::ROLE_LABEL.into(), role.into());
    labels.insert(names::SLICE_MANAGED_BY_LABEL.into(), names::MANAGER.into());
    // NB: a slice holds one address family; pods have one IP each, so the first decides.
    let v6 = pods
        .iter()
        .find_map(|p| p.ip.as_deref())
        .is_some_and(is_ipv6);
    let endpoints = pods
        .iter()
        .filter_map(|p| {
            let ip = p.ip.clone()?;
            (is_ipv6(&ip) == v6).then(|| Endpoint {
                addresses: vec![ip],
                hostname: Some(p.name.clone()),
                target_ref: Some(ObjectReference {
                    kind: Some("Pod".into()),
                    name: Some(p.name.clone()),
                    namespace: Some(t.namespace.clone()),
                    ..Default::default()
                }),
                conditions: Some(EndpointConditions {
                    ready: Some(p.ready && !p.terminating),
                    serving: Some(p.ready),
                    terminating: Some(p.terminating),
                }),
                ..Default::default()
            })
        })
        .collect();
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(service),
            namespace: Some(t.namespace.clone()),
            labels: Some(labels),
            owner_references: Some(vec![t.owner.clone()]),
            ..Default::default()
        },
        address_type: if v6 { "IPv6" } else { "IPv4" }.into(),
        endpoints,
        ports: Some(vec![EndpointPort {
            name: Some(names::GRPC_PORT_NAME.into()),
            port: Some(t.port),
            protocol: Some("TCP".into()),
            app_protocol: None,
        }]),
    }
}

/// Follows the leader of every tracked cluster. Cheap to clone.
#[derive(Clone)]
pub struct Discovery {
    inner: Arc<Inner>,
}

type Key = (String, String);

struct Inner {
    client: kube::Client,
    pool: AdminPool,
    followers: Mutex<HashMap<Key, Follower>>,
    trigger: mpsc::Sender<ObjectRef<ProgLog>>,
}

struct Follower {
    tracked: watch::Sender<Tracked>,
    task: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let map = self.followers.get_mut().unwrap_or_else(|p| p.into_inner());
        for f in map.values() {
            f.task.abort();
        }
    }
}

impl Discovery {
    /// A discovery with no cluster tracked, and the stream of ProgLogs whose leader or members
    /// changed (feed it to the Controller's `reconcile_on`).
    pub fn new(
        client: kube::Client,
        pool: AdminPool,
    ) -> (
        Self,
        impl Stream<Item = ObjectRef<ProgLog>> + Send + 'static,
    ) {
        let (tx, rx) = mpsc::channel(256);
        let d = Discovery {
            inner: Arc::new(Inner {
                client,
                pool,
                followers: Mutex::new(HashMap::new()),
                trigger: tx,
            }),
        };
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            let r = rx.recv().await?;
            Some((r, rx))
        });
        (d, stream)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Follower>> {
        self.inner
            .followers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Starts following `t`'s cluster, or updates what is known of it (pods, auth). Idempotent.
    /// Must be called within a Tokio runtime.
    pub fn track(&self, t: Tracked) {
        let key = (t.namespace.clone(), t.name.clone());
        let mut map = self.lock();
        if let Some(f) = map.get(&key) {
            if !f.task.is_finished() {
                f.tracked.send_if_modified(|cur| {
                    let changed = *cur != t;
                    if changed {
                        *cur = t.clone();
                    }
                    changed
                });
                return;
            }
        }
        let (tx, rx) = watch::channel(t);
        let task = tokio::spawn(follow(
            self.inner.client.clone(),
            self.inner.pool.clone(),
            self.inner.trigger.clone(),
            rx,
        ));
        map.insert(key, Follower { tracked: tx, task });
    }

    /// Stops following the cluster (it is being deleted; its slices go with their owner).
    pub fn untrack(&self, namespace: &str, name: &str) {
        if let Some(f) = self
            .lock()
            .remove(&(namespace.to_string(), name.to_string()))
        {
            f.task.abort();
        }
    }

    /// The clusters followed now.
    pub fn tracked(&self) -> Vec<(String, String)> {
        let mut v: Vec<Key> = self.lock().keys().cloned().collect();
        v.sort();
        v
    }
}

/// A doubling back-off.
struct Backoff(Duration);

impl Backoff {
    fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
        d
    }
    fn reset(&mut self) {
        self.0 = MIN_BACKOFF;
    }
}

/// The state of one cluster's follower task.
struct Task {
    api: Api<EndpointSlice>,
    pool: AdminPool,
    trigger: mpsc::Sender<ObjectRef<ProgLog>>,
    view: View,
    written: DesiredSlices,
    /// When the slices must be written again after a failed write.
    retry_write: Option<Instant>,
    write_backoff: Backoff,
}

impl Task {
    /// Writes what changed; on failure schedules a retry (the view is kept).
    async fn sync(&mut self, t: &Tracked) {
        let want = build_slices(t, &self.view);
        let params = PatchParams::apply(names::MANAGER).force();
        for (want, written) in [
            (&want.leader, &mut self.written.leader),
            (&want.followers, &mut self.written.followers),
        ] {
            let Some(s) = want else { continue };
            if written.as_ref() == Some(s) {
                continue;
            }
            let name = s.metadata.name.clone().unwrap_or_default();
            match self.api.patch(&name, &params, &Patch::Apply(s)).await {
                Ok(_) => {
                    tracing::debug!(slice = %name, "EndpointSlice written");
                    *written = Some(s.clone());
                }
                Err(e) => {
                    tracing::warn!(slice = %name, "writing the EndpointSlice: {e}");
                    self.retry_write = Some(Instant::now() + self.write_backoff.next());
                    return;
                }
            }
        }
        self.retry_write = None;
        self.write_backoff.reset();
    }

    /// Folds a status in; when the view changed, writes and tells the controller.
    async fn apply(&mut self, t: &Tracked, s: &pb::ClusterStatus) {
        if self.view.apply(s) {
            tracing::info!(
                ns = %t.namespace, name = %t.name, leader = ?self.view.leader,
                term = self.view.term, voters = ?self.view.voters, "cluster view changed"
            );
            self.sync(t).await;
            let _ = self
                .trigger
                .try_send(ObjectRef::new(&t.name).within(&t.namespace));
        }
    }

    /// Asks every member for its status; folds them all in. Returns the ordinal of the member
    /// that reports the leader in the highest term.
    async fn probe(&mut self, t: &Tracked) -> Option<u32> {
        let calls = t.pods.iter().filter_map(|p| {
            let c = self
                .pool
                .client(
                    &pod_addr(p.ip.as_deref()?, t.port),
                    &t.auth.member(p.ordinal).ok()?,
                )
                .ok()?;
            let o = p.ordinal;
            Some(async move { (o, c.status().await) })
        });
        // NB: each answer counts as it comes: a member cut off holds only its own answer up.
        let mut answers: futures::stream::FuturesUnordered<_> = calls.collect();
        let mut best: Option<(u64, u32)> = None;
        while let Some((o, r)) = futures::StreamExt::next(&mut answers).await {
            let Ok(s) = r else { continue };
            if s.leader_id.is_some_and(|l| l != 0) && best.is_none_or(|(t, _)| s.term > t) {
                best = Some((s.term, o));
            }
            self.apply(t, &s).await;
        }
        best.map(|(_, o)| o)
    }
}

/// The members to try, best first: ready followers (they outlive a leader that dies), then the
/// rest with an IP; `prefer` first when given.
fn candidates(t: &Tracked, view: &View, prefer: Option<u32>) -> Vec<u32> {
    let mut c: Vec<&PodInfo> = t
        .pods
        .iter()
        .filter(|p| p.ip.is_some() && !p.terminating)
        .collect();
    c.sort_by_key(|p| {
        let id = names::node_id(p.ordinal);
        (
            Some(p.ordinal) != prefer,
            !(p.ready && view.voters.contains(&id)),
            view.leader == Some(id),
            p.ordinal,
        )
    });
    c.into_iter().map(|p| p.ordinal).collect()
}

/// A ready voter other than `o` that does not lead, to watch instead of `o` once `o` leads: a
/// leader cut off from the others goes silent, while a follower reports the election at once.
fn follower_to_watch(t: &Tracked, view: &View, o: u32) -> Option<u32> {
    candidates(t, view, None).into_iter().find(|&c| {
        let id = names::node_id(c);
        c != o
            && view.leader != Some(id)
            && view.voters.contains(&id)
            && t.pods.iter().any(|p| p.ordinal == c && p.ready)
    })
}

/// Why the watch on one member ended.
enum Ended {
    /// The stream could not be opened, failed or ended; `opened` when it had worked.
    Failed { opened: bool },
    /// A probe found a member that knows a newer leader: watch that one.
    Switch(u32),
    /// The cluster is no longer tracked.
    Untracked,
}

async fn follow(
    client: kube::Client,
    pool: AdminPool,
    trigger: mpsc::Sender<ObjectRef<ProgLog>>,
    mut tracked: watch::Receiver<Tracked>,
) {
    let ns = tracked.borrow().namespace.clone();
    let mut task = Task {
        api: Api::namespaced(client, &ns),
        pool,
        trigger,
        view: View::default(),
        written: DesiredSlices::default(),
        retry_write: None,
        write_backoff: Backoff(MIN_BACKOFF),
    };
    let mut backoff = Backoff(MIN_BACKOFF);
    let mut prefer: Option<u32> = None;
    let mut tried: BTreeSet<u32> = BTreeSet::new();
    loop {
        let t = tracked.borrow_and_update().clone();
        let next = candidates(&t, &task.view, prefer.take())
            .into_iter()
            .find(|o| !tried.contains(o));
        let Some(o) = next else {
            // Every member failed this round: wait (or for new pods), then start over.
            tried.clear();
            let pause = backoff.next();
            tokio::select! {
                r = tracked.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(pause) => {}
            }
            continue;
        };
        tried.insert(o);
        match watch_one(&mut task, &mut tracked, o).await {
            Ended::Untracked => return,
            Ended::Switch(to) => {
                tried.clear();
                prefer = Some(to);
            }
            Ended::Failed { opened: true } => {
                tried.clear();
                backoff.reset();
            }
            Ended::Failed { opened: false } => {}
        }
    }
}

/// Watches member `o` until its stream ends, the pod goes, or a probe finds a member that knows
/// a newer leader.
async fn watch_one(task: &mut Task, tracked: &mut watch::Receiver<Tracked>, o: u32) -> Ended {
    let mut t = tracked.borrow().clone();
    let Some(ip) = t
        .pods
        .iter()
        .find(|p| p.ordinal == o)
        .and_then(|p| p.ip.clone())
    else {
        return Ended::Failed { opened: false };
    };
    let addr = pod_addr(&ip, t.port);
    let stream = match t
        .auth
        .member(o)
        .and_then(|auth| task.pool.client(&addr, &auth))
    {
        Ok(c) => c.watch_status().await,
        Err(e) => Err(e),
    };
    let mut stream = match stream {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(%addr, "WatchStatus: {e}");
            return Ended::Failed { opened: false };
        }
    };
    tracing::debug!(ns = %t.namespace, name = %t.name, %addr, "following WatchStatus");
    // NB: `follow` may have taken a change of the pods (readiness) between two watches; the first
    // status of this member may leave the view as it was, so write the slices for `t` now (a no-op
    // when they are as written).
    task.sync(&t).await;
    let mut probe_at = Instant::now() + PROBE_EVERY;
    // Since when the watched member knows no leader, and the term it last reported.
    let mut no_leader_since: Option<Instant> = None;
    let mut watched_term = 0;
    loop {
        let no_leader_at = no_leader_since.map(|s| s + NO_LEADER_GRACE);
        let wake = [Some(probe_at), no_leader_at, task.retry_write]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(probe_at);
        tokio::select! {
            msg = stream.message() => match msg {
                Ok(Some(s)) => {
                    if s.leader_id.is_some_and(|l| l != 0) {
                        watched_term = s.term;
                    }
                    no_leader_since = match s.leader_id.filter(|&l| l != 0) {
                        Some(_) => None,
                        None => no_leader_since.or(Some(Instant::now())),
                    };
                    task.apply(&t, &s).await;
                    if s.leader_id == Some(names::node_id(o)) {
                        if let Some(f) = follower_to_watch(&t, &task.view, o) {
                            tracing::debug!(%addr, "the watched member leads; following a follower");
                            return Ended::Switch(f);
                        }
                    }
                }
                Ok(None) => return Ended::Failed { opened: true },
                Err(e) => {
                    tracing::debug!(%addr, "WatchStatus ended: {e}");
                    return Ended::Failed { opened: true };
                }
            },
            r = tracked.changed() => {
                if r.is_err() {
                    return Ended::Untracked;
                }
                t = tracked.borrow_and_update().clone();
                task.sync(&t).await;
                let gone = !t.pods.iter().any(|p| {
                    p.ordinal == o && p.ip.as_deref() == Some(ip.as_str()) && !p.terminating
                });
                if gone {
                    return Ended::Failed { opened: true };
                }
            },
            _ = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                if task.retry_write.is_some_and(|w| w <= now) {
                    task.sync(&t).await;
                }
                let stale = no_leader_at.is_some_and(|w| w <= now);
                if probe_at <= now || stale {
                    probe_at = now + PROBE_EVERY;
                    let best = task.probe(&t).await;
                    // NB: the watched member is cut off if it has known no leader for a while,
                    // or lags the term others report; follow one that knows the leader.
                    let behind = stale || watched_term < task.view.term;
                    if let Some(b) = best.filter(|&b| b != o && behind) {
                        return Ended::Switch(b);
                    }
                    if stale {
                        no_leader_since = Some(now);
                    }
                }
            },
        }
    }
}

#[cfg(test)]
#[path = "discovery_tests.rs"]
mod tests;
