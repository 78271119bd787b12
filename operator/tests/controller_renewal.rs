//! Certificate renewal on the devcluster with short-lived certificates (5 minutes, renewed
//! with 4 left, so every minute or so): the operator re-issues the members' and its own
//! certificates before they end, the kubelet refreshes the members' Secret volume, and each
//! member serves the new certificate with no restart (same pod, no container restart); the
//! operator keeps calling the members with its renewed identity (the members stay healthy in
//! the status, the ProgLog Ready).

mod controller_common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use controller_common::{wait_condition, wait_for, Operator};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client, ResourceExt};
use proglog_crds::ProgLog;
use proglog_operator::names;
use proglog_operator::pki::Validity;

const NAME: &str = "renew";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_and_operator_take_renewed_certificates_without_a_restart() -> Result<()> {
    let client = controller_common::client().await?;
    let ns = controller_common::namespace(&client, "opcore-renew").await?;
    let validity = Validity {
        leaf: Duration::from_secs(300),
        renew_before: Duration::from_secs(240),
    };
    let op = Operator::start_with(&client, &ns, validity).await?;
    let res = scenario(&client, &ns).await;
    let stopped = op.stop().await;
    controller_common::delete_namespace(&client, &ns).await;
    res.and(stopped)
}

async fn cert_of(secrets: &Api<Secret>, secret: &str) -> Result<String> {
    let s = secrets.get(secret).await?;
    let b = s.data.unwrap_or_default()[names::TLS_CERT_KEY].clone();
    Ok(String::from_utf8(b.0)?)
}

/// The leaf certificate (PEM) the member at `addr` presents.
fn served_cert(addr: &str) -> Result<String> {
    let out = std::process::Command::new("openssl")
        .args(["s_client", "-connect", addr])
        .stdin(std::process::Stdio::null())
        .output()
        .context("running openssl s_client")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let begin = text
        .find("-----BEGIN CERTIFICATE-----")
        .context("no certificate")?;
    let end = text[begin..]
        .find("-----END CERTIFICATE-----")
        .context("no certificate end")?
        + begin
        + "-----END CERTIFICATE-----".len();
    Ok(text[begin..end].to_string())
}

fn same_pem(a: &str, b: &str) -> bool {
    let strip = |s: &str| s.split_whitespace().collect::<String>();
    strip(a) == strip(b)
}

async fn scenario(client: &Client, ns: &str) -> Result<()> {
    let plogs: Api<ProgLog> = Api::namespaced(client.clone(), ns);
    let pl: ProgLog = serde_json::from_value(serde_json::json!({
        "apiVersion": "proglog.dev/v1alpha1",
        "kind": "ProgLog",
        "metadata": {"name": NAME},
        "spec": {"replicas": 3, "storage": {"onDelete": "Delete"}, "ports": {"grpc": 8402, "metrics": 9402}}
    }))?;
    plogs.create(&PostParams::default(), &pl).await?;
    wait_condition(&plogs, NAME, "Ready", "True", Duration::from_secs(120)).await?;

    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut before = BTreeMap::new();
    for o in 0..3 {
        let p = pods.get(&names::pod(NAME, o)).await?;
        let ip = p
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .context("pod IP")?;
        before.insert(o, (p.uid().context("uid")?, ip));
    }
    let member_secret = names::member_tls_secret(NAME);
    let operator_secret = names::operator_tls_secret(NAME);
    let (member0, operator0) = (
        cert_of(&secrets, &member_secret).await?,
        cert_of(&secrets, &operator_secret).await?,
    );

    // The operator re-issues both about a minute after they were issued.
    let started = Instant::now();
    let renewed = wait_for(
        "the operator to renew the members' and its own certificates",
        Duration::from_secs(150),
        || async {
            let (m, o) = (
                cert_of(&secrets, &member_secret).await?,
                cert_of(&secrets, &operator_secret).await?,
            );
            Ok((m != member0 && o != operator0).then_some(m))
        },
    )
    .await?;
    eprintln!("renewed after {:?}", started.elapsed());

    // Every member serves a certificate issued after the first one (the kubelet refreshed the
    // volume, the member reloaded it), from the same pod, never restarted.
    for (o, (uid, ip)) in &before {
        let addr = format!("{ip}:8402");
        wait_for(
            &format!("member {o} to serve a renewed certificate"),
            Duration::from_secs(180),
            || async {
                let now = cert_of(&secrets, &member_secret).await?;
                let served = served_cert(&addr)?;
                Ok((!same_pem(&served, &member0)
                    && (same_pem(&served, &now) || same_pem(&served, &renewed)))
                .then_some(()))
            },
        )
        .await?;
        let p = pods.get(&names::pod(NAME, *o)).await?;
        ensure!(p.uid().as_ref() == Some(uid), "pod {o} was replaced");
        let restarts: i32 = p
            .status
            .and_then(|s| s.container_statuses)
            .unwrap_or_default()
            .iter()
            .map(|c| c.restart_count)
            .sum();
        ensure!(restarts == 0, "pod {o} restarted {restarts} times");
    }
    eprintln!(
        "every member serves a renewed certificate after {:?}",
        started.elapsed()
    );

    // Meanwhile the operator made its passes with its renewed identity (renewed before the
    // members' volumes were): had its calls failed, the members would show unhealthy.
    let pl = wait_condition(&plogs, NAME, "Ready", "True", Duration::from_secs(30)).await?;
    let st = pl.status.context("no status")?;
    ensure!(
        st.members.iter().filter(|m| m.healthy).count() == 3,
        "{:?}",
        st.members
    );
    // Deleted while the operator runs, so that its finalizer lets the namespace go.
    plogs.delete(NAME, &DeleteParams::default()).await?;
    wait_for(
        "the ProgLog to be gone",
        Duration::from_secs(60),
        || async { Ok(plogs.get_opt(NAME).await?.is_none().then_some(())) },
    )
    .await?;
    Ok(())
}
