//! The ProgLog controller: watches ProgLogs and what they own, and runs one reconcile pass per
//! trigger: finalizer -> children (server-side apply) -> observe pods and membership -> one
//! membership step -> StatefulSet -> discovery -> status -> Events -> requeue. Under TLS the
//! children include the PKI ([`crate::certs`]) and the ACL ConfigMap, and the requeue comes no
//! later than the next certificate renewal.
//!
//! Owns the I/O of a pass and the Controller's wiring. The objects come from [`crate::resources`],
//! the status from [`crate::status`], the Raft steps from [`crate::membership`]; the
//! EndpointSlices are discovery's, never written here.

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    ConfigMap, ObjectReference, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{predicates, watcher, Controller, Predicate, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use proglog_crds::{ProgLog, ProgLogStatus, StorageStatus};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::{debug, info, instrument, warn};

use crate::admin::{AdminPool, ClusterAuth};
use crate::certs::{self, Certs};
use crate::discovery::{Discovery, Tracked};
use crate::membership::{self, MembershipInput, MembershipReport, PodInfo};
use crate::metrics::Metrics;
use crate::resources::{self, Children};
use crate::step::Taken;
use crate::{acl, names, pki, rollout, status, volumes};

/// Requeue delay after a membership step: the next step (if any) can usually follow at once.
pub const REQUEUE_AFTER_STEP: Duration = Duration::from_millis(250);
/// Requeue delay while the cluster is not settled (members joining, leaving, or unhealthy).
pub const REQUEUE_UNSETTLED: Duration = Duration::from_secs(2);
/// Requeue delay of a settled cluster (a safety net; watches and discovery trigger passes).
pub const REQUEUE_SETTLED: Duration = Duration::from_secs(30);
/// First retry delay after a failed pass; doubles per consecutive failure up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest retry delay after failed passes.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Retry delay after a transient error ([`Error::is_transient`]).
pub const TRANSIENT_DELAY: Duration = Duration::from_millis(500);
/// Consecutive transient errors retried quietly before they count as failures.
pub const TRANSIENT_RETRIES: u32 = 5;
/// Triggers arriving within this window are folded into one pass.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// What a reconcile pass failed on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("{verb} {what}: {source}")]
    Kube {
        /// What was being done (`apply`, `get`, ...).
        verb: &'static str,
        /// The object (`StatefulSet ns/name`).
        what: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The children could not be built.
    #[error(transparent)]
    Build(#[from] resources::Error),
    /// The membership pass failed.
    #[error("membership: {0}")]
    Membership(#[from] membership::Error),
    /// The CA or a certificate could not be kept.
    #[error("certificates: {0}")]
    Pki(#[from] certs::Error),
    /// The admin Secret exists but has no usable token.
    #[error(
        "Secret {0} has no `token` key with a non-empty UTF-8 value; delete it to get a new one"
    )]
    BadSecret(String),
    /// The finalizer's bookkeeping failed (wraps the pass's own error).
    #[error(transparent)]
    Finalizer(#[from] Box<finalizer::Error<Error>>),
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error the next pass most likely does not see: the API server's RBAC cache has not yet
    /// seen the ClusterRole created a moment ago, so the RoleBinding naming it is refused as
    /// "not found" or forbidden. Retried soon, without a Warning Event.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Kube {
                verb: "apply",
                what,
                source: kube::Error::Api(s),
            } => what.starts_with("RoleBinding ") && matches!(s.code, 403 | 404),
            _ => false,
        }
    }

    /// The `error` label of the reconcile error metric: a small, fixed set.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kube",
            Error::Build(_) => "build",
            Error::Membership(_) => "membership",
            Error::Pki(_) => "pki",
            Error::BadSecret(_) => "secret",
            Error::Finalizer(e) => match e.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => {
                    e.metric_label()
                }
                _ => "finalizer",
            },
        }
    }
}

fn kube_err(verb: &'static str, what: String) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Kube { verb, what, source }
}

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Watch only this namespace (`None`: all namespaces).
    pub namespace: Option<String>,
    /// DNS domain of the cluster (`cluster.local`), for the addresses members advertise.
    pub cluster_domain: String,
    /// How long the certificates the operator issues live, and when they are renewed.
    pub validity: pki::Validity,
}

/// What every pass shares.
pub struct Context {
    client: Client,
    pool: AdminPool,
    discovery: Discovery,
    certs: Certs,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    cluster_domain: String,
    /// Consecutive failures per ProgLog (`ns/name`), for the back-off.
    failures: Mutex<HashMap<String, u32>>,
}

/// Runs the controller until `shutdown` completes (in-flight passes finish first). Marks
/// `metrics` ready once the ProgLog cache has synced.
pub async fn run(
    client: Client,
    opts: Options,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let pool = AdminPool::new();
    let (discovery, discovery_triggers) = Discovery::new(client.clone(), pool.clone());
    let reporter = Reporter {
        controller: names::MANAGER.to_string(),
        instance: std::env::var("HOSTNAME").ok(),
    };
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client: client.clone(),
        pool,
        discovery,
        certs: Certs::new(opts.validity, &opts.cluster_domain),
        metrics: metrics.clone(),
        cluster_domain: opts.cluster_domain,
        failures: Mutex::new(HashMap::new()),
    });

    let ns = opts.namespace.as_deref();
    let proglogs: Api<ProgLog> = api(&client, ns);
    // Children carry names::labels, so one selector keeps the watches to our own objects.
    let ours = watcher::Config::default()
        .labels(&format!("app.kubernetes.io/managed-by={}", names::MANAGER));
    let pods = watcher::Config::default().labels(names::CLUSTER_LABEL);

    // NB: status writes bump resourceVersion, not generation: passing only generation and
    // finalizer changes keeps a status write from triggering a pass of its own.
    let (reader, writer) = reflector::store();
    let main = watcher(proglogs, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(
            predicates::generation.combine(predicates::finalizers),
            Default::default(),
        );
    let ready = reader.clone();
    let ready_metrics = metrics.clone();
    tokio::spawn(async move {
        // NB: the store's readiness is a oneshot that wakes only its latest waiter, and the
        // Controller waits on it too: poll afresh until it is set (it is memoized once set).
        loop {
            let wait = tokio::time::timeout(Duration::from_millis(200), ready.wait_until_ready());
            match wait.await {
                Ok(Ok(())) => break,
                Ok(Err(_)) => return,
                Err(_) => continue,
            }
        }
        info!("ProgLog cache synced");
        ready_metrics.set_ready();
    });

    Controller::for_stream(main, reader)
        .with_config(kube::runtime::Config::default().debounce(DEBOUNCE))
        .owns(api::<StatefulSet>(&client, ns), ours.clone())
        .owns(api::<Service>(&client, ns), ours.clone())
        .owns(api::<Secret>(&client, ns), ours.clone())
        .owns(api::<ConfigMap>(&client, ns), ours.clone())
        .owns(api::<ServiceAccount>(&client, ns), ours.clone())
        .owns(api::<RoleBinding>(&client, ns), ours.clone())
        .owns(api::<PodDisruptionBudget>(&client, ns), ours)
        .watches(api::<Pod>(&client, ns), pods, |pod| {
            let cluster = pod.labels().get(names::CLUSTER_LABEL).cloned();
            let ns = pod.namespace();
            cluster.map(|c| {
                let r = ObjectRef::<ProgLog>::new(&c);
                match ns {
                    Some(ns) => r.within(&ns),
                    None => r,
                }
            })
        })
        .reconcile_on(discovery_triggers)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, action)) => debug!(%obj, ?action, "reconciled"),
                Err(kube::runtime::controller::Error::ObjectNotFound(obj)) => {
                    debug!(%obj, "object gone before its pass")
                }
                Err(e) => warn!(error = %e, "reconcile failed"),
            }
        })
        .await;
    info!("controller stopped");
}

fn api<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// One pass over `pl`.
#[instrument(skip_all, fields(proglog = %key(&pl)))]
async fn reconcile(pl: Arc<ProgLog>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let ns = pl.namespace().unwrap_or_default();
    let api: Api<ProgLog> = Api::namespaced(ctx.client.clone(), &ns);
    let res = finalizer(&api, names::FINALIZER, pl.clone(), |event| async {
        match event {
            finalizer::Event::Apply(pl) => apply(&pl, &ctx).await,
            finalizer::Event::Cleanup(pl) => cleanup(&pl, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    if let Err(e) = &res {
        if pl.metadata.deletion_timestamp.is_none() {
            mark_failed(&pl, &ctx, e).await;
        }
    }
    let label = res.as_ref().err().map(Error::metric_label);
    ctx.metrics.record_reconcile(started.elapsed(), label);
    if res.is_ok() {
        ctx.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key(&pl));
    }
    res
}

fn key(pl: &ProgLog) -> String {
    format!("{}/{}", pl.namespace().unwrap_or_default(), pl.name_any())
}

/// After a failed pass: a Warning Event, and a retry with exponential back-off per ProgLog.
fn error_policy(pl: Arc<ProgLog>, err: &Error, ctx: Arc<Context>) -> Action {
    let failures = {
        let mut f = ctx.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = f.entry(key(&pl)).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let delay = BACKOFF_MIN
        .saturating_mul(1u32 << (failures - 1).min(16))
        .min(BACKOFF_MAX);
    if err.is_transient() && failures <= TRANSIENT_RETRIES {
        info!(proglog = %key(&pl), error = %err, "transient error; retrying in {TRANSIENT_DELAY:?}");
        return Action::requeue(TRANSIENT_DELAY);
    }
    warn!(proglog = %key(&pl), error = %err, failures, ?delay, "reconcile failed; retrying");
    let note = format!("{err}");
    tokio::spawn(async move {
        publish(
            &ctx,
            &pl,
            EventType::Warning,
            "ReconcileFailed",
            "Reconcile",
            note,
        )
        .await;
    });
    Action::requeue(delay)
}

async fn publish(
    ctx: &Context,
    pl: &ProgLog,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    // Event notes are limited to 1 kB.
    let note: String = note.chars().take(1000).collect();
    let ev = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: action.to_string(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &pl.object_ref(&())).await {
        warn!(error = %e, reason, "could not publish an Event");
    }
}

/// Server-side apply of `obj` (field manager [`names::MANAGER`], forced).
async fn ssa<K>(api: Api<K>, obj: K) -> Result<K>
where
    K: Resource + Clone + Debug + Serialize + DeserializeOwned,
    K::DynamicType: Default,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let what = format!("{} {name}", K::kind(&K::DynamicType::default()));
    api.patch(
        &name,
        &PatchParams::apply(names::MANAGER).force(),
        &Patch::Apply(&obj),
    )
    .await
    .map_err(kube_err("apply", what))
}

/// The admin token: read from the Secret, or a new Secret created once. Never overwritten.
async fn admin_token(api: &Api<Secret>, children: &Children<'_>, name: &str) -> Result<String> {
    let secret_name = names::admin_secret(name);
    let what = || format!("Secret {secret_name}");
    let secret = match api
        .get_opt(&secret_name)
        .await
        .map_err(kube_err("get", what()))?
    {
        Some(s) => s,
        None => {
            let fresh = children.admin_secret(&resources::new_token());
            match api.create(&PostParams::default(), &fresh).await {
                Ok(s) => s,
                // Someone else created it in between: theirs wins.
                Err(kube::Error::Api(e)) if e.code == 409 => api
                    .get(&secret_name)
                    .await
                    .map_err(kube_err("get", what()))?,
                Err(e) => return Err(kube_err("create", what())(e)),
            }
        }
    };
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(names::ADMIN_TOKEN_KEY))
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Error::BadSecret(secret_name.clone()))
}

fn pod_info(name: &str, pod: &Pod) -> Option<PodInfo> {
    let pod_name = pod.name_any();
    let ordinal = names::ordinal(name, &pod_name)?;
    let status = pod.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    Some(PodInfo {
        name: pod_name,
        ordinal,
        ip: status
            .and_then(|s| s.pod_ip.clone())
            .filter(|ip| !ip.is_empty()),
        ready,
        terminating: pod.metadata.deletion_timestamp.is_some(),
    })
}

/// The pass proper (the finalizer is in place).
async fn apply(pl: &ProgLog, ctx: &Context) -> Result<Action> {
    let name = pl.name_any();
    let ns = pl.namespace().unwrap_or_default();
    let client = &ctx.client;
    let children = Children::new(pl, &ctx.cluster_domain)?;

    // 1. Children that do not depend on the membership.
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let (auth, renew_at) = security(pl, ctx, &children).await?;
    // NB: the ClusterRole first: the API server checks a RoleBinding against the role it binds.
    ssa(
        Api::<ClusterRole>::all(client.clone()),
        children.cluster_role(),
    )
    .await?;
    futures::try_join!(
        ssa(
            Api::namespaced(client.clone(), &ns),
            children.service_account()
        ),
        ssa(
            Api::namespaced(client.clone(), &ns),
            children.role_binding()
        ),
        ssa(services.clone(), children.headless_service()),
        ssa(services.clone(), children.leader_service()),
        ssa(services.clone(), children.followers_service()),
        ssa(services, children.metrics_service()),
        ssa(Api::namespaced(client.clone(), &ns), children.pdb()),
    )?;

    // 2. Observe: the StatefulSet and its pods.
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let sts = sts_api
        .get_opt(&names::statefulset(&name))
        .await
        .map_err(kube_err("get", format!("StatefulSet {name}")))?;
    let sts_replicas = sts
        .as_ref()
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.replicas)
        .and_then(|r| u32::try_from(r).ok());
    let pod_list = Api::<Pod>::namespaced(client.clone(), &ns)
        .list(&ListParams::default().labels(&names::selector(&name)))
        .await
        .map_err(kube_err("list", format!("pods of {name}")))?;
    let mut pods: Vec<PodInfo> = pod_list
        .items
        .iter()
        .filter_map(|p| pod_info(&name, p))
        .collect();
    pods.sort_by_key(|p| p.ordinal);

    // 3. One membership step.
    let input = MembershipInput {
        namespace: ns.clone(),
        name: name.clone(),
        desired: u32::try_from(pl.spec.replicas).unwrap_or(0),
        sts_replicas,
        pods: pods.clone(),
        port: pl.spec.ports.grpc,
        cluster_domain: ctx.cluster_domain.clone(),
        auth: auth.clone(),
    };
    let mut report = membership::reconcile(&ctx.pool, &input).await?;
    // 3b. Or, with no membership step, one step of a rolling update.
    let items = &pod_list.items;
    rollout::reconcile(client, &ctx.pool, &input, &mut report, sts.as_ref(), items).await;
    debug!(?report, "membership");

    // 4. The StatefulSet, sized by the membership step (its claim template keeps the size it
    // was created with), and the claims grown toward spec.storage.size.
    let mut desired_sts = children.statefulset(report.statefulset_replicas);
    volumes::keep_template_size(&mut desired_sts, sts.as_ref());
    rollout::use_on_delete(&sts_api, sts.as_ref())
        .await
        .map_err(kube_err(
            "switch to OnDelete",
            format!("StatefulSet {name}"),
        ))?;
    ssa(sts_api, desired_sts).await?;
    let storage = grow_volumes(client, &ns, &name, &pl.spec.storage.size.0).await?;

    // 5. Discovery follows the leader and writes the slices.
    ctx.discovery.track(Tracked {
        namespace: ns.clone(),
        name: name.clone(),
        owner: children.owner().clone(),
        port: pl.spec.ports.grpc,
        pods: pods.clone(),
        auth,
    });

    // 6. Status.
    write_status(pl, ctx, &pods, &report, storage).await?;

    // 7. Events.
    if let Some(step) = &report.step {
        info!(%step, kind = step.kind().label(), "membership step");
        ctx.metrics.record_step(step.kind());
        step_event(ctx, pl, step).await;
    }

    // 8. Requeue (no later than the next certificate renewal).
    let after = if report.step.is_some() {
        REQUEUE_AFTER_STEP
    } else if report.settled {
        REQUEUE_SETTLED
    } else {
        REQUEUE_UNSETTLED
    };
    Ok(Action::requeue(match renew_at {
        Some(at) => after.min(certs::until(at, REQUEUE_AFTER_STEP)),
        None => after,
    }))
}

/// How the operator calls the members, and when a certificate is next due. Under TLS: the CA,
/// the members' and the operator's certificates (issued or renewed as due, an Event each) and
/// the ACL ConfigMap; else the admin token (read, or made once).
async fn security(
    pl: &ProgLog,
    ctx: &Context,
    children: &Children<'_>,
) -> Result<(ClusterAuth, Option<std::time::SystemTime>)> {
    let client = &ctx.client;
    let ns = children.namespace();
    if !children.tls() {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
        let token = admin_token(&secrets, children, children.name()).await?;
        return Ok((ClusterAuth::Token(token), None));
    }
    let kept = ctx
        .certs
        .keep(client, children, pl.spec.tls.issuer_secret.as_deref())
        .await?;
    for (secret, why) in &kept.issued {
        let note = format!("issued the certificate in Secret {secret} ({why})");
        publish(
            ctx,
            pl,
            EventType::Normal,
            "CertificateIssued",
            "Issue",
            note,
        )
        .await;
    }
    // NB: the users controller writes and pushes the same policy under the same lock.
    let _held = crate::acl_push::POLICY.lock().await;
    let policy = acl::render(&grants(pl, ctx).await?);
    ssa(
        Api::namespaced(client.clone(), ns),
        children.acl_config_map(&policy),
    )
    .await?;
    // A member that missed a push (restarted, unreachable) gets it on this pass.
    let pushed = crate::acl_push::push(client, &ctx.pool, &kept.auth, pl, &policy).await;
    if pushed.changed > 0 {
        info!(proglog = %pl.name_any(), "ACL policy {}", pushed.summary());
    } else if !pushed.everywhere() {
        debug!(proglog = %pl.name_any(), "ACL policy {}", pushed.summary());
    }
    Ok((kept.auth, Some(kept.renew_at)))
}

/// Who may produce and consume on this ProgLog's Log service (rendered into `policy.csv`): its
/// ProgLogUsers, listed afresh ([`crate::users::grants_of`], what the users controller writes
/// too). The members' and the operator's identities need no grant.
async fn grants(pl: &ProgLog, ctx: &Context) -> Result<Vec<acl::Grant>> {
    crate::users::grants_of(&ctx.client, pl)
        .await
        .map_err(kube_err(
            "list",
            format!("ProgLogUsers of {}", pl.name_any()),
        ))
}

/// A Normal Event for a membership step, related to the pod it acted on (so two steps of the
/// same kind on different pods stay two Events instead of one series).
async fn step_event(ctx: &Context, pl: &ProgLog, step: &Taken) {
    let ev = Event {
        type_: EventType::Normal,
        reason: step.kind().event_reason().to_string(),
        note: Some(step.to_string().chars().take(1000).collect()),
        action: if step.is_rollout() {
            "RollingUpdate"
        } else {
            "ChangeMembership"
        }
        .to_string(),
        secondary: Some(ObjectReference {
            api_version: Some("v1".to_string()),
            kind: Some("Pod".to_string()),
            namespace: pl.namespace(),
            name: Some(step.pod()),
            ..ObjectReference::default()
        }),
    };
    if let Err(e) = ctx.recorder.publish(&ev, &pl.object_ref(&())).await {
        warn!(error = %e, "could not publish an Event");
    }
}

/// Degraded=True with the error, the rest of the status as it was. Best effort: a failure here
/// is logged, the pass's own error is what counts.
async fn mark_failed(pl: &ProgLog, ctx: &Context, err: &Error) {
    let name = pl.name_any();
    let st = status::with_failure(
        pl.status.as_ref(),
        &name,
        pl.metadata.generation,
        &err.to_string(),
        Time(Timestamp::now()),
    );
    if let Err(e) = apply_status(pl, ctx, st).await {
        warn!(error = %e, "could not mark the ProgLog degraded");
    }
}

async fn write_status(
    pl: &ProgLog,
    ctx: &Context,
    pods: &[PodInfo],
    report: &MembershipReport,
    storage: Option<StorageStatus>,
) -> Result<()> {
    let name = pl.name_any();
    let st = status::build(&status::Observed {
        name: &name,
        storage,
        generation: pl.metadata.generation,
        desired: pl.spec.replicas,
        pods,
        report,
        previous: pl.status.as_ref(),
        now: Time(Timestamp::now()),
    });
    if pl.status.as_ref() == Some(&st) {
        return Ok(());
    }
    apply_status(pl, ctx, st).await
}

/// Grows the members' volume claims toward `size` where their StorageClass allows it
/// ([`volumes::plan`]); returns what the status says of them (`None` before any claim exists).
async fn grow_volumes(
    client: &Client,
    ns: &str,
    name: &str,
    size: &str,
) -> Result<Option<StorageStatus>> {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let list = pvcs
        .list(&ListParams::default().labels(&names::selector(name)))
        .await
        .map_err(kube_err("list", format!("volume claims of {name}")))?;
    let mut claims = Vec::new();
    let mut class = None;
    for pvc in &list.items {
        let claim = pvc.name_any();
        let is_member = (claim.strip_prefix(names::DATA_VOLUME))
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|pod| names::ordinal(name, pod).is_some());
        if !is_member {
            continue;
        }
        let storage = |m: Option<&std::collections::BTreeMap<String, Quantity>>| {
            m.and_then(|m| m.get("storage")).map(|q| q.0.clone())
        };
        let spec = pvc.spec.as_ref();
        class = class.or_else(|| spec.and_then(|s| s.storage_class_name.clone()));
        claims.push(volumes::Claim {
            name: claim,
            requested: storage(spec.and_then(|s| s.resources.as_ref()?.requests.as_ref()))
                .unwrap_or_default(),
            capacity: storage(pvc.status.as_ref().and_then(|s| s.capacity.as_ref())),
        });
    }
    if claims.is_empty() {
        return Ok(None);
    }
    claims.sort_by(|a, b| a.name.cmp(&b.name));
    let expandable = match &class {
        Some(c) => Api::<StorageClass>::all(client.clone())
            .get_opt(c)
            .await
            .ok()
            .flatten()
            .map(|sc| sc.allow_volume_expansion == Some(true)),
        None => None,
    };
    let plan = volumes::plan(size, &claims, expandable);
    for claim in &plan.expand {
        let patch = serde_json::json!({"spec": {"resources": {"requests": {"storage": size}}}});
        pvcs.patch(claim, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(kube_err("expand", format!("volume claim {claim}")))?;
        info!(claim, size, "expanding volume claim");
    }
    Ok(Some(plan.status))
}

/// Server-side apply of the whole status (this manager owns every status field).
async fn apply_status(pl: &ProgLog, ctx: &Context, st: ProgLogStatus) -> Result<()> {
    apply_status_of(&ctx.client, pl, &st)
        .await
        .map_err(kube_err(
            "apply status of",
            format!("ProgLog {}", pl.name_any()),
        ))
}

/// Server-side apply of `status` as the whole status of `obj` (a namespaced custom resource of
/// ours), as [`names::MANAGER`], forcing: the operator owns every status field.
pub(crate) async fn apply_status_of<K>(
    client: &Client,
    obj: &K,
    status: &impl serde::Serialize,
) -> kube::Result<()>
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), &obj.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(names::MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// The ProgLog is being deleted: remove what owner references cannot, stop following it.
async fn cleanup(pl: &ProgLog, ctx: &Context) -> Result<Action> {
    let name = pl.name_any();
    let ns = pl.namespace().unwrap_or_default();
    ctx.discovery.untrack(&ns, &name);
    ctx.certs.forget(&ns, &name);
    let role = names::cluster_role(&ns, &name);
    let roles: Api<ClusterRole> = Api::all(ctx.client.clone());
    match roles.delete(&role, &Default::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(kube_err("delete", format!("ClusterRole {role}"))(e)),
    }
    info!("cleaned up: ClusterRole {role} deleted, discovery stopped");
    publish(
        ctx,
        pl,
        EventType::Normal,
        "CleanedUp",
        "Delete",
        format!("deleted ClusterRole {role}; the other children go with their owner"),
    )
    .await;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> kube::Error {
        let status: kube::core::Status =
            serde_json::from_value(serde_json::json!({"code": code, "message": "m"})).unwrap();
        kube::Error::Api(Box::new(status))
    }

    #[test]
    fn only_a_refused_role_binding_is_transient() {
        let apply = |what: &str, code| kube_err("apply", what.to_string())(api_error(code));
        assert!(apply("RoleBinding demo-logserver", 404).is_transient());
        assert!(apply("RoleBinding demo-logserver", 403).is_transient());
        assert!(!apply("RoleBinding demo-logserver", 422).is_transient());
        assert!(!apply("StatefulSet demo", 404).is_transient());
        assert!(!Error::BadSecret("demo-admin".into()).is_transient());
    }

    #[test]
    fn pod_info_reads_ordinal_ip_readiness_and_deletion() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "demo-2", "deletionTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"podIP": "127.10.0.5", "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
        let p = pod_info("demo", &pod).unwrap();
        assert_eq!(
            p,
            PodInfo {
                name: "demo-2".into(),
                ordinal: 2,
                ip: Some("127.10.0.5".into()),
                ready: true,
                terminating: true,
            }
        );
        let other: Pod =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "demox-1"}})).unwrap();
        assert!(pod_info("demo", &other).is_none());
        let pending: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "demo-0"}, "status": {"podIP": ""}
        }))
        .unwrap();
        let p = pod_info("demo", &pending).unwrap();
        assert_eq!((p.ip, p.ready, p.terminating), (None, false, false));
    }

    #[test]
    fn errors_map_to_few_metric_labels() {
        let e = Error::BadSecret("x".into());
        assert_eq!(e.metric_label(), "secret");
        let wrapped = Error::Finalizer(Box::new(finalizer::Error::ApplyFailed(e)));
        assert_eq!(wrapped.metric_label(), "secret");
        let fin = Error::Finalizer(Box::new(finalizer::Error::UnnamedObject));
        assert_eq!(fin.metric_label(), "finalizer");
    }
}
