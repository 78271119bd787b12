//! The controller against a real API server (the devcluster): a 3-member ProgLog (mutual TLS, the
//! default) gets every child object (its CA, certificates and ACL among them), its members join
//! one Raft cluster through the operator's certificate, status and Events tell so, the operator's
//! endpoints report it; deleting the ProgLog removes the ClusterRole and the finalizer, and the children go
//! with their owner. A pass that fails shows as Degraded, and is retried until it succeeds.

mod controller_common;

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use controller_common::{wait_condition, wait_for, Operator};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use proglog_crds::ProgLog;
use proglog_operator::names;

const NAME: &str = "life";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proglog_gets_its_children_joins_reports_and_cleans_up() -> Result<()> {
    let client = controller_common::client().await?;
    let ns = controller_common::namespace(&client, "opcore-life").await?;
    let op = Operator::start(&client, &ns).await?;
    let res = scenario(&client, &ns, &op).await;
    let stopped = op.stop().await;
    controller_common::delete_namespace(&client, &ns).await;
    res.and(stopped)
}

async fn scenario(client: &Client, ns: &str, op: &Operator) -> Result<()> {
    wait_for("/readyz", Duration::from_secs(20), || async {
        Ok((controller_common::http_get(op.metrics_addr, "/readyz")
            .await?
            .0
            == 200)
            .then_some(()))
    })
    .await?;

    let plogs: Api<ProgLog> = Api::namespaced(client.clone(), ns);
    let pl: ProgLog = serde_json::from_value(serde_json::json!({
        "apiVersion": "proglog.dev/v1alpha1",
        "kind": "ProgLog",
        "metadata": {"name": NAME},
        "spec": {"replicas": 3, "storage": {"onDelete": "Delete"}, "ports": {"grpc": 8401}}
    }))?;
    let started = Instant::now();
    let created = plogs.create(&PostParams::default(), &pl).await?;
    let uid = created.uid().context("no uid")?;

    let pl = wait_condition(&plogs, NAME, "Ready", "True", Duration::from_secs(120)).await?;
    eprintln!("ProgLog created -> Ready in {:?}", started.elapsed());

    // Status: the three members are voters, one leads, the counts and selector are there.
    let st = pl.status.clone().context("no status")?;
    assert_eq!((st.replicas, st.ready_replicas), (3, 3));
    let leader = st.leader.clone().context("no leader in status")?;
    assert!(st.term.is_some_and(|t| t >= 1));
    let roles: Vec<(&str, &str, bool)> = st
        .members
        .iter()
        .map(|m| (m.pod.as_str(), m.role.as_str(), m.healthy))
        .collect();
    assert_eq!(roles.len(), 3, "{roles:?}");
    for (i, m) in st.members.iter().enumerate() {
        assert_eq!(m.pod, names::pod(NAME, i as u32));
        assert_eq!(m.raft_id, i as i64 + 1);
        assert!(m.healthy, "{roles:?}");
        let want = if m.pod == leader {
            "Leader"
        } else {
            "Follower"
        };
        assert_eq!(m.role, want, "{roles:?}");
    }
    assert_eq!(st.selector.as_deref(), Some(names::selector(NAME).as_str()));
    for (ty, want) in [
        ("Ready", "True"),
        ("Available", "True"),
        ("Progressing", "False"),
        ("Degraded", "False"),
    ] {
        let c = st.conditions.iter().find(|c| c.type_ == ty).context(ty)?;
        assert_eq!(c.status, want, "{ty}: {}", c.message);
        assert_eq!(c.observed_generation, pl.metadata.generation);
    }
    // The scale subresource's selector finds the pods.
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let listed = pods
        .list(&ListParams::default().labels(st.selector.as_deref().unwrap_or_default()))
        .await?;
    assert_eq!(listed.items.len(), 3);

    // Children: names, owner, labels; the StatefulSet follows the spec.
    let owned = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        let ok = meta.owner_references.as_ref().is_some_and(|o| {
            o.iter()
                .any(|o| o.uid == uid && o.controller == Some(true) && o.kind == "ProgLog")
        });
        let labelled = meta
            .labels
            .as_ref()
            .is_some_and(|l| l.get(names::CLUSTER_LABEL).map(String::as_str) == Some(NAME));
        ok && labelled
    };
    let sts = Api::<StatefulSet>::namespaced(client.clone(), ns)
        .get(&names::statefulset(NAME))
        .await?;
    ensure!(owned(&sts.metadata), "StatefulSet not owned/labelled");
    assert_eq!(sts.spec.as_ref().and_then(|s| s.replicas), Some(3));
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    for svc in [
        names::headless_service(NAME),
        names::leader_service(NAME),
        names::followers_service(NAME),
    ] {
        let s = services.get(&svc).await?;
        ensure!(owned(&s.metadata), "Service {svc} not owned/labelled");
        let port = &s.spec.and_then(|s| s.ports).unwrap_or_default()[0];
        assert_eq!((port.name.as_deref(), port.port), (Some("grpc"), 8401));
    }
    let sa = Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .get(&names::service_account(NAME))
        .await?;
    ensure!(owned(&sa.metadata), "ServiceAccount not owned");
    let rb = Api::<RoleBinding>::namespaced(client.clone(), ns)
        .get(&names::service_account(NAME))
        .await?;
    ensure!(owned(&rb.metadata), "RoleBinding not owned");
    let pdb = Api::<PodDisruptionBudget>::namespaced(client.clone(), ns)
        .get(&names::pdb(NAME))
        .await?;
    ensure!(owned(&pdb.metadata), "PDB not owned");
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let role_name = names::cluster_role(ns, NAME);
    roles.get(&role_name).await.context("ClusterRole")?;
    // TLS by default: the CA, the members' and the operator's certificates, the ACL; no token.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let pki_secrets = [
        names::ca_secret(NAME),
        names::member_tls_secret(NAME),
        names::operator_tls_secret(NAME),
    ];
    let mut pem = Vec::new();
    for s in &pki_secrets {
        let secret = secrets.get(s).await?;
        ensure!(owned(&secret.metadata), "Secret {s} not owned");
        pem.push(secret.data.unwrap_or_default());
    }
    ensure!(
        pem[0].contains_key(names::CA_KEY_KEY),
        "the CA Secret holds its key"
    );
    ensure!(
        pem[1].contains_key(names::TLS_CERT_KEY) && !pem[1].contains_key(names::CA_KEY_KEY),
        "the members' Secret holds a certificate, not the CA's key"
    );
    ensure!(
        secrets.get_opt(&names::admin_secret(NAME)).await?.is_none(),
        "no admin token under TLS"
    );
    let acl = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get(&names::acl_config_map(NAME))
        .await?;
    ensure!(owned(&acl.metadata), "ACL ConfigMap not owned");

    // Discovery (tracked by each pass) names the leader in its EndpointSlice.
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let leader_ip = pods.get(&leader).await?.status.and_then(|s| s.pod_ip);
    wait_for(
        "the leader EndpointSlice",
        Duration::from_secs(10),
        || async {
            let Some(s) = slices.get_opt(&names::leader_service(NAME)).await? else {
                return Ok(None);
            };
            let addrs: Vec<String> = s
                .endpoints
                .iter()
                .flat_map(|e| e.addresses.clone())
                .collect();
            Ok((addrs.len() == 1 && Some(&addrs[0]) == leader_ip.as_ref()).then_some(()))
        },
    )
    .await?;

    // Pods run the members: bound to their pod IP, the token mounted.
    let pod0 = pods.get(&names::pod(NAME, 0)).await?;
    let args = pod0.spec.as_ref().unwrap().containers[0]
        .args
        .clone()
        .unwrap_or_default();
    assert!(args.windows(2).any(|w| w == ["--listen", "$(POD_IP):8401"]));
    assert!(
        args.windows(2)
            .any(|w| w == ["--tls-cert", "/var/run/proglog/tls/cert.pem"]),
        "{args:?}"
    );

    // Events: the membership steps, on the ProgLog.
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let reasons: Vec<String> = events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(NAME))
        .filter_map(|e| e.reason)
        .collect();
    for want in ["ClusterInitialized", "LearnerAdded", "MemberPromoted"] {
        ensure!(
            reasons.iter().any(|r| r == want),
            "no {want} Event: {reasons:?}"
        );
    }

    // Metrics: passes and steps were counted.
    let (code, body) = controller_common::http_get(op.metrics_addr, "/metrics").await?;
    assert_eq!(code, 200);
    ensure!(
        body.contains("proglog_operator_membership_steps_total{kind=\"promote\"} 2"),
        "{body}"
    );
    ensure!(
        !body.contains("proglog_operator_reconciles_total 0"),
        "{body}"
    );

    // The certificates are not re-issued by another pass (only when due).
    let svc = names::leader_service(NAME);
    services.delete(&svc, &DeleteParams::default()).await?;
    wait_for(
        "the leader Service to be re-created",
        Duration::from_secs(30),
        || async {
            Ok(services
                .get_opt(&svc)
                .await?
                .filter(|s| s.meta().deletion_timestamp.is_none()))
        },
    )
    .await?;
    for (s, before) in pki_secrets.iter().zip(&pem) {
        let again = secrets.get(s).await?.data.unwrap_or_default();
        ensure!(&again == before, "Secret {s} was rewritten by a pass");
    }

    eprintln!("checks done at {:?}", started.elapsed());
    // Delete: finalizer runs (ClusterRole gone), the ProgLog goes, children are collected.
    let started = Instant::now();
    plogs.delete(NAME, &DeleteParams::default()).await?;
    wait_for(
        "the ProgLog to be gone",
        Duration::from_secs(60),
        || async { Ok(plogs.get_opt(NAME).await?.is_none().then_some(())) },
    )
    .await?;
    eprintln!("delete -> ProgLog gone in {:?}", started.elapsed());
    ensure!(
        roles.get_opt(&role_name).await?.is_none(),
        "ClusterRole {role_name} left behind"
    );
    wait_for(
        "the children to be collected",
        Duration::from_secs(60),
        || async {
            let sts = Api::<StatefulSet>::namespaced(client.clone(), ns)
                .get_opt(&names::statefulset(NAME))
                .await?;
            let secret = secrets.get_opt(&names::ca_secret(NAME)).await?;
            let svcs = services.list(&ListParams::default()).await?.items.len();
            Ok((sts.is_none() && secret.is_none() && svcs == 0).then_some(()))
        },
    )
    .await?;
    eprintln!("delete -> children collected in {:?}", started.elapsed());
    Ok(())
}

/// A pass that cannot make progress (here: an admin Secret without a token, made by someone
/// else) shows as Degraded with the error, a Warning Event and the error metric; once the cause
/// is gone, the retries (with back-off) bring the cluster up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_pass_is_reported_and_retried() -> Result<()> {
    let client = controller_common::client().await?;
    let ns = controller_common::namespace(&client, "opcore-fail").await?;
    let op = Operator::start(&client, &ns).await?;
    let res = failing(&client, &ns, &op).await;
    let stopped = op.stop().await;
    controller_common::delete_namespace(&client, &ns).await;
    res.and(stopped)
}

async fn failing(client: &Client, ns: &str, op: &Operator) -> Result<()> {
    const BAD: &str = "bad";
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": names::admin_secret(BAD)},
        "stringData": {"not-the-token": "x"}
    }))?;
    secrets.create(&PostParams::default(), &secret).await?;
    let plogs: Api<ProgLog> = Api::namespaced(client.clone(), ns);
    let pl: ProgLog = serde_json::from_value(serde_json::json!({
        "apiVersion": "proglog.dev/v1alpha1",
        "kind": "ProgLog",
        "metadata": {"name": BAD},
        "spec": {"replicas": 1, "storage": {"onDelete": "Delete"}, "tls": {"enabled": false}}
    }))?;
    plogs.create(&PostParams::default(), &pl).await?;

    let pl = wait_for(
        "Degraded=True ReconcileFailed",
        Duration::from_secs(30),
        || async {
            let pl = plogs.get(BAD).await?;
            let hit = pl.status.iter().flat_map(|s| &s.conditions).any(|c| {
                c.type_ == "Degraded" && c.status == "True" && c.reason == "ReconcileFailed"
            });
            Ok(hit.then_some(pl))
        },
    )
    .await?;
    let st = pl.status.context("no status")?;
    let degraded = st
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .context("Degraded")?;
    ensure!(
        degraded.message.contains("bad-admin"),
        "{}",
        degraded.message
    );
    assert_eq!(st.selector.as_deref(), Some(names::selector(BAD).as_str()));

    wait_for(
        "a ReconcileFailed Warning Event",
        Duration::from_secs(10),
        || async {
            let events = Api::<Event>::namespaced(client.clone(), ns)
                .list(&ListParams::default())
                .await?;
            Ok(events
                .items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("ReconcileFailed")
                        && e.type_.as_deref() == Some("Warning")
                })
                .then_some(()))
        },
    )
    .await?;
    let (_, body) = controller_common::http_get(op.metrics_addr, "/metrics").await?;
    ensure!(
        body.contains("proglog_operator_reconcile_errors_total{error=\"secret\"}"),
        "{body}"
    );

    // Remove the cause: the operator makes its own Secret on a retry and the cluster comes up.
    secrets
        .delete(&names::admin_secret(BAD), &DeleteParams::default())
        .await?;
    let pl = wait_condition(&plogs, BAD, "Ready", "True", Duration::from_secs(120)).await?;
    let st = pl.status.context("no status")?;
    let degraded = st
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .context("Degraded")?;
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("False", "Healthy")
    );
    let token = secrets
        .get(&names::admin_secret(BAD))
        .await?
        .data
        .unwrap_or_default();
    assert_eq!(token[names::ADMIN_TOKEN_KEY].0.len(), 64);

    plogs.delete(BAD, &DeleteParams::default()).await?;
    wait_for(
        "the ProgLog to be gone",
        Duration::from_secs(60),
        || async { Ok(plogs.get_opt(BAD).await?.is_none().then_some(())) },
    )
    .await?;
    Ok(())
}
