//! The ProgLogUser controller: for each user, a client certificate signed by its ProgLog's CA
//! (in a Secret, renewed as the operator's `--cert-*` flags say, as the members' are), its actions
//! in the ProgLog's ACL policy (the `policy.csv` of the `<name>-acl` ConfigMap the members mount
//! and reload; rendered by [`crate::acl::render`], the same as the ProgLog controller writes), and
//! a RoleBinding of its ServiceAccounts to the discovery ClusterRole. A finalizer takes all of it
//! away when the user is deleted, the policy first (that is the revocation; the certificate alone
//! grants nothing). Every write of the policy is pushed to the members at once ([`acl_push`]),
//! so a grant or a revocation is in force within a second, not when the kubelet refreshes the
//! ConfigMap volume; the status message and the Events say on how many members it is.
//!
//! Runs next to the ProgLog controller, only while this replica leads ([`crate::app`]). The
//! objects come from [`crate::user_resources`]; this module does the I/O.
//!
//! NB: the policy of a ProgLog is rendered from all its users, listed afresh from the API server
//! under one lock ([`acl_push::POLICY`], which the ProgLog controller holds too), so two users
//! reconciled at once cannot write a policy that misses either. The ProgLog controller renders
//! the same list ([`grants_of`]); a write of either that raced a change triggers this controller
//! again (it watches the ConfigMap), which writes (and pushes) the fresh one.

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
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
    REASON_SECRET_CONFLICT, REASON_TLS_DISABLED,
};
use proglog_crds::{ProgLog, ProgLogUser};
use proglog_tls::issue::{issue_with, Ca};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::{debug, info, instrument, warn};

use crate::acl_push::{self, Pushed};
use crate::admin::AdminPool;
use crate::certs::Certs;
use crate::controller::Options;
use crate::resources::Children;
use crate::user_resources::{self as build, MissingMetadata, Outcome, UserChildren};
use crate::{acl, names, pki};

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
    /// The ProgLog's ACL ConfigMap cannot be built.
    #[error(transparent)]
    Build(#[from] crate::resources::Error),
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
    cluster_domain: String,
    validity: pki::Validity,
    /// Channels to the members, for the policy push.
    pool: AdminPool,
    /// The operator's identity per ProgLog (read from the Secret the ProgLog controller keeps).
    certs: Certs,
    failures: Mutex<HashMap<String, u32>>,
}

/// Runs the ProgLogUser controller until `shutdown` completes (`opts` as the ProgLog
/// controller's: the namespace watched, the cluster domain, the certificates' validity).
pub async fn run(
    client: Client,
    opts: Options,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let ns = opts.namespace.as_deref();
    let reporter = Reporter {
        controller: names::MANAGER.to_string(),
        instance: std::env::var("HOSTNAME").ok(),
    };
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client: client.clone(),
        cluster_domain: opts.cluster_domain.clone(),
        validity: opts.validity,
        pool: AdminPool::with_timeouts(crate::admin::CONNECT_TIMEOUT, acl_push::PUSH_TIMEOUT),
        certs: Certs::new(opts.validity, &opts.cluster_domain),
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

/// Server-side apply of `obj` as [`names::MANAGER`], forced.
async fn ssa<K>(api: &Api<K>, obj: &K) -> Result<K>
where
    K: Resource + Clone + Debug + Serialize + DeserializeOwned,
    K::DynamicType: Default,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let what = format!("{} {name}", K::kind(&K::DynamicType::default()));
    api.patch(
        &name,
        &PatchParams::apply(names::MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map_err(kube_err("apply", what))
}

/// The CA of ProgLog `proglog` from its Secret (checked: it signs); `Err` says why it cannot be
/// used yet.
async fn read_ca(
    secrets: &Api<Secret>,
    proglog: &str,
) -> Result<std::result::Result<pki::CaPem, String>> {
    let name = names::ca_secret(proglog);
    let Some(s) = secrets
        .get_opt(&name)
        .await
        .map_err(kube_err("get", format!("Secret {name}")))?
    else {
        return Ok(Err(format!(
            "waiting for the CA of ProgLog {proglog} (Secret {name}), which the operator makes with the ProgLog"
        )));
    };
    Ok(pki::ca_from_secret(&name, &s.data.unwrap_or_default()).map_err(|e| e.to_string()))
}

async fn apply(user: &ProgLogUser, ctx: &Context) -> Result<Action> {
    let c = UserChildren::new(user)?;
    let ns = user.namespace().unwrap_or_default();
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
    if !pl.spec.tls.enabled {
        let msg = format!(
            "ProgLog {ns}/{proglog} runs without TLS (spec.tls.enabled: false): its members take no certificates and check no policy; enable TLS to use ProgLogUsers"
        );
        write_status(user, ctx, &not_ready(REASON_TLS_DISABLED, msg)).await?;
        return Ok(Action::requeue(REQUEUE_WAITING));
    }
    let ca = match read_ca(&secrets, proglog).await? {
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
    let reason = build::reissue_reason(
        current.as_ref(),
        &ca.cert,
        &subject,
        now,
        ctx.validity.renew_before,
    );
    let cert_pem = match reason {
        None => current
            .as_ref()
            .and_then(|s| build::secret_text(s, names::USER_CERT_KEY))
            .unwrap_or_default()
            .to_string(),
        Some(why) => {
            let issuer = Ca::issuer_from_pem(&ca.cert, &ca.key).map_err(|source| Error::Issue {
                subject: subject.clone(),
                source,
            })?;
            let issued = issue_with(
                &issuer,
                &subject,
                &[],
                now - Duration::from_secs(60),
                now + ctx.validity.leaf,
            )
            .map_err(|source| Error::Issue {
                subject: subject.clone(),
                source,
            })?;
            ssa(&secrets, &c.secret(&ca.cert, &issued)).await?;
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
    // NB: applied even with no ServiceAccount (then it binds nobody): the operator holds no
    // delete on RoleBindings, and the binding goes with the user (owner reference).
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), &ns);
    ssa(&bindings, &c.role_binding()).await?;

    // 4. The policy of the ProgLog, with this user's lines, pushed to the members.
    let pushed = write_policy(ctx, &pl).await?;

    // 5. Status.
    let actions: Vec<&str> = user.spec.actions.iter().map(|a| a.as_str()).collect();
    let sas = &user.spec.service_accounts;
    if pushed.changed > 0 {
        let note = format!(
            "the policy granting {subject} {} is {}",
            actions.join(" and "),
            pushed.summary()
        );
        event(ctx, user, "PolicyPushed", note).await;
    }
    let message = format!(
        "{subject} may {} on ProgLog {proglog}; policy {}; certificate in Secret {secret_name}{}",
        actions.join(" and "),
        pushed.summary(),
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
        build::until_renewal(t, now, ctx.validity.renew_before, Duration::from_secs(1))
    });
    // NB: a member the push missed gets it from the next pass (or its ConfigMap volume).
    let wait = if pushed.everywhere() {
        wait
    } else {
        wait.min(REQUEUE_WAITING)
    };
    Ok(Action::requeue(wait.min(REQUEUE_MAX)))
}

/// The grants of ProgLog `pl`'s users, listed afresh: what its `policy.csv` must say (the
/// ProgLog controller renders the same).
pub async fn grants_of(client: &Client, pl: &ProgLog) -> Result<Vec<acl::Grant>, kube::Error> {
    let ns = pl.namespace().unwrap_or_default();
    let users = match Api::<ProgLogUser>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
    {
        Ok(list) => list.items,
        // NB: the ProgLogUser CRD is not installed: nobody is granted anything.
        Err(kube::Error::Api(e)) if e.code == 404 => Vec::new(),
        Err(e) => return Err(e),
    };
    Ok(build::grants(&users, &ns, &pl.name_any()))
}

/// Renders ProgLog `pl`'s policy from all its users, applies the ACL ConfigMap (the same
/// object the ProgLog controller applies) and pushes it to the members.
async fn write_policy(ctx: &Context, pl: &ProgLog) -> Result<Pushed> {
    let ns = pl.namespace().unwrap_or_default();
    let _held = acl_push::POLICY.lock().await;
    let grants = grants_of(&ctx.client, pl)
        .await
        .map_err(kube_err("list", format!("ProgLogUsers in {ns}")))?;
    let text = acl::render(&grants);
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    // NB: always applied: an unchanged policy is a no-op for the API server (no new version, no
    // watch event, no member reload), and the operator needs no `get` on ConfigMaps.
    let children = Children::new(pl, &ctx.cluster_domain)?;
    ssa(&cms, &children.acl_config_map(&text)).await?;
    debug!(proglog = %pl.name_any(), users = grants.len(), "ACL policy applied");
    let name = pl.name_any();
    let pushed = match ctx.certs.operator_auth(&ctx.client, &ns, &name).await {
        Ok(Some(auth)) => acl_push::push(&ctx.client, &ctx.pool, &auth, pl, &text).await,
        Ok(None) => Pushed::not_pushed(format!(
            "the operator's identity for {name} is not issued yet"
        )),
        Err(e) => Pushed::not_pushed(e.to_string()),
    };
    if !pushed.everywhere() {
        info!(proglog = %name, "ACL policy {}", pushed.summary());
    }
    Ok(pushed)
}

/// The user is being deleted: its lines leave the policy. Its Secret and RoleBinding carry its
/// owner reference, so Kubernetes deletes them once it is gone.
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
    let pushed = match pl.filter(|p| p.metadata.deletion_timestamp.is_none() && p.spec.tls.enabled)
    {
        Some(pl) => Some(write_policy(ctx, &pl).await?),
        None => None,
    };
    let force = pushed.map_or(String::new(), |p| format!(" (policy {})", p.summary()));
    info!(subject = %c.subject(), "user revoked: out of the policy{force}; its Secret and binding go with it");
    event(
        ctx,
        user,
        "Revoked",
        format!(
            "{} removed from the policy of ProgLog {}{force}; its Secret and binding go with it",
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
    crate::controller::apply_status_of(&ctx.client, user, &st)
        .await
        .map_err(kube_err(
            "apply status of",
            format!("ProgLogUser {}", user.name_any()),
        ))
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
