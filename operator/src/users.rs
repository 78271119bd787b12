//! The ProgLogUser controller: for each user, a client certificate signed by its ProgLog's CA
//! (in a Secret, renewed [`pki::RENEW_BEFORE`] before it ends), its actions in the ProgLog's
//! ACL policy (the `policy.csv` of the `<name>-acl` ConfigMap the members mount and reload), and
//! a RoleBinding of its ServiceAccounts to the discovery ClusterRole. A finalizer takes all of it
//! away when the user is deleted, the policy first (that is the revocation: members reload the
//! policy; the certificate alone grants nothing).
//!
//! Runs next to the ProgLog controller, only while this replica leads ([`crate::app`]). The
//! objects come from [`crate::user_resources`]; this module does the I/O.
//!
//! NB: the policy of a ProgLog is rendered from all its users, listed afresh from the API server
//! under one lock, so two users reconciled at once cannot write a policy that misses either.

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{predicates, watcher, Controller, Predicate, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use proglog_crds::user::{
    REASON_CA_NOT_READY, REASON_FAILED, REASON_ISSUED, REASON_PROGLOG_NOT_FOUND,
    REASON_SECRET_CONFLICT,
};
use proglog_crds::{ProgLog, ProgLogUser};
use proglog_tls::issue::{issue_with, Ca};
/// The issuer `proglog_tls::issue` signs with.
type Issuer = rcgen::Issuer<'static, rcgen::KeyPair>;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::{debug, info, instrument, warn};

use crate::user_resources::{self as build, MissingMetadata, Outcome, UserChildren};
use crate::{names, pki};

/// Field manager of the users controller's writes. NB: not [`names::MANAGER`]: the ProgLog
/// controller applies the same ACL ConfigMap (its `model.conf`), and server-side apply drops the
/// fields a manager stops sending; two managers each keep their own key.
pub const USERS_MANAGER: &str = "proglog-operator-users";
/// Requeue delay while the ProgLog or its CA is missing (their watches usually come first).
pub const REQUEUE_WAITING: Duration = Duration::from_secs(30);
/// Longest wait between two passes of a ready user (renewal is usually much further off).
pub const REQUEUE_MAX: Duration = Duration::from_secs(3600);
/// First retry delay after a failed pass; doubles per failure up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest retry delay after failed passes.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// What a pass failed on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("{verb} {what}: {source}")]
    Kube {
        verb: &'static str,
        what: String,
        #[source]
        source: kube::Error,
    },
    /// The user cannot be built on.
    #[error(transparent)]
    Metadata(#[from] MissingMetadata),
    /// Issuing the certificate failed.
    #[error("issuing the certificate of {subject}: {source}")]
    Issue {
        subject: String,
        #[source]
        source: proglog_tls::Error,
    },
    /// The finalizer's bookkeeping failed (wraps the pass's own error).
    #[error(transparent)]
    Finalizer(#[from] Box<finalizer::Error<Error>>),
}

type Result<T, E = Error> = std::result::Result<T, E>;

fn kube_err(verb: &'static str, what: String) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Kube { verb, what, source }
}

struct Context {
    client: Client,
    recorder: Recorder,
    /// Held while a ProgLog's policy is listed, rendered and written.
    policy: tokio::sync::Mutex<()>,
    failures: Mutex<HashMap<String, u32>>,
}

/// Runs the ProgLogUser controller until `shutdown` completes; `namespace` limits it to one.
pub async fn run(
    client: Client,
    namespace: Option<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let ns = namespace.as_deref();
    let reporter = Reporter {
        controller: names::MANAGER.to_string(),
        instance: std::env::var("HOSTNAME").ok(),
    };
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client: client.clone(),
        policy: tokio::sync::Mutex::new(()),
        failures: Mutex::new(HashMap::new()),
    });
    let (reader, writer) = reflector::store();
    let main = watcher(api::<ProgLogUser>(&client, ns), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(
            predicates::generation.combine(predicates::finalizers),
            Default::default(),
        );
    let owned = watcher::Config::default().labels(names::USER_LABEL);
    let of_cluster = watcher::Config::default().labels(names::CLUSTER_LABEL);
    // A ProgLog created (or deleted) after its users: they wait on it.
    let proglogs = watcher(api::<ProgLog>(&client, ns), watcher::Config::default())
        .default_backoff()
        .touched_objects()
        .predicate_filter(predicates::generation, Default::default());
    let (s1, s2, s3) = (reader.clone(), reader.clone(), reader.clone());
    Controller::for_stream(main, reader)
        .owns(api::<Secret>(&client, ns), owned.clone())
        .owns(api::<RoleBinding>(&client, ns), owned)
        .watches_stream(proglogs, move |pl: ProgLog| {
            users_of(&s1, pl.namespace(), &pl.name_any())
        })
        // The CA (created or rotated): issue again. The ACL ConfigMap (written by the ProgLog
        // controller too): render again, so the users' lines are back at once.
        .watches(api::<Secret>(&client, ns), of_cluster.clone(), move |s| {
            named(&s2, &s, names::ca_secret)
        })
        .watches(api::<ConfigMap>(&client, ns), of_cluster, move |cm| {
            named(&s3, &cm, names::acl_config_map)
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => debug!(%obj, "user reconciled"),
                Err(kube::runtime::controller::Error::ObjectNotFound(obj)) => {
                    debug!(%obj, "user gone before its pass")
                }
                Err(e) => warn!(error = %e, "user reconcile failed"),
            }
        })
        .await;
    info!("users controller stopped");
}

/// The users of the ProgLog `obj` belongs to, when `obj` is that ProgLog's `name_of` object.
fn named<K: Resource>(
    store: &Store<ProgLogUser>,
    obj: &K,
    name_of: fn(&str) -> String,
) -> Vec<ObjectRef<ProgLogUser>> {
    let Some(cluster) = obj.labels().get(names::CLUSTER_LABEL) else {
        return Vec::new();
    };
    if obj.meta().name.as_deref() != Some(name_of(cluster).as_str()) {
        return Vec::new();
    }
    users_of(store, obj.meta().namespace.clone(), cluster)
}

fn users_of(
    store: &Store<ProgLogUser>,
    ns: Option<String>,
    proglog: &str,
) -> Vec<ObjectRef<ProgLogUser>> {
    store
        .state()
        .iter()
        .filter(|u| u.namespace() == ns && u.spec.proglog == proglog)
        .map(|u| ObjectRef::from_obj(u.as_ref()))
        .collect()
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

fn key(u: &ProgLogUser) -> String {
    format!("{}/{}", u.namespace().unwrap_or_default(), u.name_any())
}

#[instrument(skip_all, fields(user = %key(&user)))]
async fn reconcile(user: Arc<ProgLogUser>, ctx: Arc<Context>) -> Result<Action> {
    let ns = user.namespace().unwrap_or_default();
    let api: Api<ProgLogUser> = Api::namespaced(ctx.client.clone(), &ns);
    let res = finalizer(&api, names::USER_FINALIZER, user.clone(), |event| async {
        match event {
            finalizer::Event::Apply(u) => apply(&u, &ctx).await,
            finalizer::Event::Cleanup(u) => cleanup(&u, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    match &res {
        Ok(_) => {
            ctx.failures
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key(&user));
        }
        Err(e) if user.metadata.deletion_timestamp.is_none() => {
            let outcome = Outcome {
                ready: false,
                reason: REASON_FAILED,
                message: e.to_string(),
                not_after: None,
            };
            if let Err(e) = write_status(&user, &ctx, &outcome).await {
                warn!(error = %e, "could not write the failure to the status");
            }
        }
        Err(_) => {}
    }
    res
}

fn error_policy(user: Arc<ProgLogUser>, err: &Error, ctx: Arc<Context>) -> Action {
    let failures = {
        let mut f = ctx.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = f.entry(key(&user)).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let delay = BACKOFF_MIN
        .saturating_mul(1u32 << (failures - 1).min(16))
        .min(BACKOFF_MAX);
    warn!(user = %key(&user), error = %err, failures, ?delay, "user reconcile failed; retrying");
    Action::requeue(delay)
}

/// Server-side apply of `obj` as [`USERS_MANAGER`], forced.
async fn ssa<K>(api: &Api<K>, obj: &K) -> Result<K>
where
    K: Resource + Clone + Debug + Serialize + DeserializeOwned,
    K::DynamicType: Default,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let what = format!("{} {name}", K::kind(&K::DynamicType::default()));
    api.patch(
        &name,
        &PatchParams::apply(USERS_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map_err(kube_err("apply", what))
}

/// Deletes `name` if it exists and `uid` owns it (someone else's object of that name stays).
async fn delete_owned<K>(api: &Api<K>, name: &str, uid: &str) -> Result<bool>
where
    K: Resource + Clone + Debug + DeserializeOwned,
    K::DynamicType: Default,
{
    let what = || format!("{} {name}", K::kind(&K::DynamicType::default()));
    let Some(obj) = api.get_opt(name).await.map_err(kube_err("get", what()))? else {
        return Ok(false);
    };
    if !build::owned_by(obj.meta(), uid) {
        return Ok(false);
    }
    match api.delete(name, &Default::default()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(e) => Err(kube_err("delete", what())(e)),
    }
}

/// The CA of ProgLog `proglog` from its Secret: its certificate (PEM, what users trust) and the
/// issuer; `Err` says why it cannot be used yet.
async fn read_ca(
    secrets: &Api<Secret>,
    proglog: &str,
) -> Result<std::result::Result<(String, Issuer), String>> {
    let name = names::ca_secret(proglog);
    let Some(s) = secrets
        .get_opt(&name)
        .await
        .map_err(kube_err("get", format!("Secret {name}")))?
    else {
        return Ok(Err(format!(
            "waiting for the CA of ProgLog {proglog} (Secret {name}), which the operator creates with the ProgLog"
        )));
    };
    let (Some(cert), Some(key)) = (
        build::secret_text(&s, names::CA_CERT_KEY),
        build::secret_text(&s, names::CA_KEY_KEY),
    ) else {
        return Ok(Err(format!(
            "Secret {name} lacks {} or {}",
            names::CA_CERT_KEY,
            names::CA_KEY_KEY
        )));
    };
    Ok(Ca::issuer_from_pem(cert, key)
        .map(|i| (cert.to_string(), i))
        .map_err(|e| format!("the CA in Secret {name} does not load: {e}")))
}

async fn apply(user: &ProgLogUser, ctx: &Context) -> Result<Action> {
    let c = UserChildren::new(user)?;
    let ns = user.namespace().unwrap_or_default();
    let name = user.name_any();
    let proglog = &user.spec.proglog;
    let client = &ctx.client;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let not_ready = |reason, message: String| Outcome {
        ready: false,
        reason,
        message,
        not_after: None,
    };

    // 1. The ProgLog and its CA.
    let pls: Api<ProgLog> = Api::namespaced(client.clone(), &ns);
    let Some(pl) = pls
        .get_opt(proglog)
        .await
        .map_err(kube_err("get", format!("ProgLog {proglog}")))?
    else {
        let msg = format!(
            "ProgLog {ns}/{proglog} does not exist: create it, or fix spec.proglog (`kubectl get plog -n {ns}`)"
        );
        write_status(user, ctx, &not_ready(REASON_PROGLOG_NOT_FOUND, msg)).await?;
        return Ok(Action::requeue(REQUEUE_WAITING));
    };
    let (ca_pem, issuer) = match read_ca(&secrets, proglog).await? {
        Ok(ca) => ca,
        Err(why) => {
            write_status(user, ctx, &not_ready(REASON_CA_NOT_READY, why)).await?;
            return Ok(Action::requeue(REQUEUE_WAITING));
        }
    };

    // 2. The certificate: kept while it is good, else issued into the Secret.
    let secret_name = c.secret_name();
    let current = secrets
        .get_opt(&secret_name)
        .await
        .map_err(kube_err("get", format!("Secret {secret_name}")))?;
    if let Some(s) = &current {
        if !build::owned_by(&s.metadata, c.uid()) {
            let msg = format!(
                "Secret {secret_name} exists and is not this ProgLogUser's: delete it, or create the user again with another spec.secretName"
            );
            write_status(user, ctx, &not_ready(REASON_SECRET_CONFLICT, msg)).await?;
            return Ok(Action::requeue(REQUEUE_WAITING));
        }
    }
    let subject = c.subject();
    let now = SystemTime::now();
    let reason = build::reissue_reason(current.as_ref(), &ca_pem, &subject, now, pki::RENEW_BEFORE);
    let cert_pem = match reason {
        None => current
            .as_ref()
            .and_then(|s| build::secret_text(s, names::USER_CERT_KEY))
            .unwrap_or_default()
            .to_string(),
        Some(why) => {
            let issued = issue_with(
                &issuer,
                &subject,
                &[],
                now - Duration::from_secs(60),
                now + pki::LEAF_VALIDITY,
            )
            .map_err(|source| Error::Issue {
                subject: subject.clone(),
                source,
            })?;
            ssa(&secrets, &c.secret(&ca_pem, &issued)).await?;
            info!(%subject, secret = %secret_name, why, "issued a user certificate");
            let verb = if current.is_some() {
                "Renewed"
            } else {
                "Issued"
            };
            event(
                ctx,
                user,
                verb,
                format!("certificate for {subject} in Secret {secret_name} ({why})"),
            )
            .await;
            issued.cert_pem
        }
    };
    let not_after = build::describe(&cert_pem).map(|(_, t)| t);

    // 3. Discovery for the ServiceAccounts.
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), &ns);
    match c.role_binding() {
        Some(rb) => {
            ssa(&bindings, &rb).await?;
        }
        None => {
            delete_owned(&bindings, &names::user_role_binding(&name), c.uid()).await?;
        }
    }

    // 4. The policy of the ProgLog, with this user's lines.
    write_policy(ctx, &pl).await?;

    // 5. Status.
    let actions: Vec<&str> = user.spec.actions.iter().map(|a| a.as_str()).collect();
    let sas = &user.spec.service_accounts;
    let message = format!(
        "{subject} may {} on ProgLog {proglog}; certificate in Secret {secret_name}{}",
        actions.join(" and "),
        if sas.is_empty() {
            String::new()
        } else {
            format!(
                "; ServiceAccounts {} may read its discovery objects",
                sas.join(", ")
            )
        }
    );
    let outcome = Outcome {
        ready: true,
        reason: REASON_ISSUED,
        message,
        not_after,
    };
    write_status(user, ctx, &outcome).await?;
    let wait = not_after.map_or(REQUEUE_WAITING, |t| {
        build::until_renewal(t, now, pki::RENEW_BEFORE, Duration::from_secs(60))
    });
    Ok(Action::requeue(wait.min(REQUEUE_MAX)))
}

/// Renders ProgLog `pl`'s policy from all its users and writes it when it changed.
async fn write_policy(ctx: &Context, pl: &ProgLog) -> Result<()> {
    let ns = pl.namespace().unwrap_or_default();
    let name = pl.name_any();
    let _held = ctx.policy.lock().await;
    let users = Api::<ProgLogUser>::namespaced(ctx.client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .map_err(kube_err("list", format!("ProgLogUsers in {ns}")))?;
    let text = build::render_policy(&name, &build::grants(&users.items, &ns, &name));
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let cm_name = names::acl_config_map(&name);
    let current = cms
        .get_opt(&cm_name)
        .await
        .map_err(kube_err("get", format!("ConfigMap {cm_name}")))?;
    let written = current
        .as_ref()
        .and_then(|c| c.data.as_ref()?.get(names::ACL_POLICY_KEY));
    if written == Some(&text) {
        return Ok(());
    }
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(cm_name.clone()),
            namespace: Some(ns.clone()),
            labels: Some(names::labels(&name)),
            owner_references: pl.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        data: Some([(names::ACL_POLICY_KEY.to_string(), text)].into()),
        ..ConfigMap::default()
    };
    ssa(&cms, &cm).await?;
    info!(configmap = %cm_name, "ACL policy written");
    Ok(())
}

/// The user is being deleted: its lines leave the policy first, then its Secret and binding.
async fn cleanup(user: &ProgLogUser, ctx: &Context) -> Result<Action> {
    let c = UserChildren::new(user)?;
    let ns = user.namespace().unwrap_or_default();
    let client = &ctx.client;
    let pls: Api<ProgLog> = Api::namespaced(client.clone(), &ns);
    let pl = pls
        .get_opt(&user.spec.proglog)
        .await
        .map_err(kube_err("get", format!("ProgLog {}", user.spec.proglog)))?;
    // NB: a ProgLog being deleted takes its ConfigMap along; writing it would recreate it.
    if let Some(pl) = pl.filter(|p| p.metadata.deletion_timestamp.is_none()) {
        write_policy(ctx, &pl).await?;
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    delete_owned(&secrets, &c.secret_name(), c.uid()).await?;
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), &ns);
    delete_owned(
        &bindings,
        &names::user_role_binding(&user.name_any()),
        c.uid(),
    )
    .await?;
    info!(subject = %c.subject(), "user revoked: policy lines, Secret and binding removed");
    event(
        ctx,
        user,
        "Revoked",
        format!(
            "{} removed from the policy of ProgLog {}; Secret and binding deleted",
            c.subject(),
            user.spec.proglog
        ),
    )
    .await;
    Ok(Action::await_change())
}

async fn write_status(user: &ProgLogUser, ctx: &Context, outcome: &Outcome) -> Result<()> {
    let st = build::user_status(user, outcome, Time(Timestamp::now()))?;
    if user.status.as_ref() == Some(&st) {
        return Ok(());
    }
    let name = user.name_any();
    let api: Api<ProgLogUser> =
        Api::namespaced(ctx.client.clone(), &user.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": ProgLogUser::api_version(&()),
        "kind": ProgLogUser::kind(&()),
        "status": st,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(USERS_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(kube_err("apply status of", format!("ProgLogUser {name}")))?;
    Ok(())
}

async fn event(ctx: &Context, user: &ProgLogUser, reason: &str, note: String) {
    let ev = Event {
        type_: EventType::Normal,
        reason: reason.to_string(),
        note: Some(note.chars().take(1000).collect()),
        action: "Certificate".to_string(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &user.object_ref(&())).await {
        warn!(error = %e, reason, "could not publish an Event");
    }
}
