//! A ProgLog as the sample has it (mutual TLS and the ACL on by default) on the real node: the
//! operator makes the CA, the members' and its own certificates and the ACL ConfigMap, the
//! members come up Ready (readiness through `/readyz`, which the kubelet can reach without
//! TLS), and each plane of a member, dialed at its pod IP from the node, accepts only its own:
//! - plaintext: refused on the gRPC port (no TLS, no answer);
//! - TLS with no client certificate: the Log service says UNAUTHENTICATED;
//! - a certificate of the ProgLog's CA for a subject the ACL grants nothing: PERMISSION_DENIED
//!   naming the subject and the action, on Produce and Consume; GetServers (any verified
//!   certificate) answers; the admin and Raft planes refuse it by name;
//! - the operator's certificate: the admin API answers;
//! - a certificate of another CA: the handshake fails;
//! - `openssl s_client` from the node shows the chain (member certificate, the ProgLog's CA) and
//!   verifies it under the pod's DNS name.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use e2e::names;
use e2e::operator::{healthy_voters, is_ready, sample_proglog_tls, wait_proglog, OperatorEnv};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::Api;
use proglog_proto::raft::v1::raft_client::RaftClient;
use proglog_proto::v1 as pb;
use proglog_proto::v1::cluster_client::ClusterClient;
use proglog_proto::v1::log_client::LogClient;
use proglog_testkit::pki::channel;
use tonic::Code;

const NAME: &str = "sec";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_default_proglog_runs_mutual_tls_on_every_plane() -> Result<()> {
    let env = OperatorEnv::start("e2e-op-tls").await?;
    let result = scenario(&env).await;
    if let Err(e) = &result {
        eprintln!("FAILED: {e:#}");
    }
    env.cleanup(result.is_err()).await;
    result
}

fn refused(
    r: Result<impl std::fmt::Debug, tonic::Status>,
    code: Code,
    words: &[&str],
) -> Result<()> {
    let s = match r {
        Ok(v) => anyhow::bail!("expected {code:?}, got an answer: {v:?}"),
        Err(s) => s,
    };
    ensure!(s.code() == code, "expected {code:?}, got {s:?}");
    for w in words {
        ensure!(
            s.message().contains(w),
            "{:?} does not name {w}",
            s.message()
        );
    }
    Ok(())
}

async fn scenario(env: &OperatorEnv) -> Result<()> {
    let (ns, c) = (env.ns.as_str(), &env.client);
    let body = sample_proglog_tls(NAME, ns, 3, "Delete")?;
    env.kubectl_ok(&["apply", "-f", "-"], Some(&body.to_string()))?;
    wait_proglog(
        &env.proglogs(),
        NAME,
        "Ready with 3 voters under TLS",
        Duration::from_secs(180),
        |p| is_ready(p) && healthy_voters(p).len() == 3,
    )
    .await?;

    // The operator's PKI and ACL; no admin token.
    let secrets: Api<Secret> = Api::namespaced(c.clone(), ns);
    for s in [
        names::ca_secret(NAME),
        names::member_tls_secret(NAME),
        names::operator_tls_secret(NAME),
    ] {
        secrets
            .get(&s)
            .await
            .with_context(|| format!("Secret {s}"))?;
    }
    ensure!(
        secrets.get_opt(&names::admin_secret(NAME)).await?.is_none(),
        "no admin token under TLS"
    );
    let acl = Api::<ConfigMap>::namespaced(c.clone(), ns)
        .get(&names::acl_config_map(NAME))
        .await?;
    let policy = acl.data.unwrap_or_default()[names::ACL_POLICY_KEY].clone();
    ensure!(
        !policy.contains("p,"),
        "nobody is granted anything yet: {policy}"
    );

    let pod = Api::<Pod>::namespaced(c.clone(), ns)
        .get(&names::pod(NAME, 0))
        .await?;
    let ip = pod
        .status
        .and_then(|s| s.pod_ip)
        .context("pod 0 has no IP")?;
    let addr = format!("{ip}:8400");
    let server_name = names::member_server_name(NAME, ns, 0);

    // Plaintext: the port speaks TLS only.
    let plain = LogClient::new(channel(None, &addr)?)
        .get_servers(pb::GetServersRequest {})
        .await;
    ensure!(plain.is_err(), "a plaintext call got an answer: {plain:?}");

    // TLS, no client certificate: the Log service asks for one.
    let (anon, _dir) = e2e::pki::anonymous(c, ns, NAME).await?;
    let anon = anon.with_server_name(&server_name)?;
    let r = LogClient::new(channel(Some(&anon), &addr)?)
        .consume(pb::ConsumeRequest {
            offset: 0,
            ..Default::default()
        })
        .await;
    refused(r, Code::Unauthenticated, &["client certificate"])?;

    // A certificate of this ProgLog's CA, subject "e2e-app", granted nothing by the ACL.
    let app = e2e::pki::identity(c, ns, NAME, "e2e-app")
        .await?
        .with_server_name(&server_name)?;
    let ch = channel(Some(&app), &addr)?;
    let mut log = LogClient::new(ch.clone());
    let servers = log
        .get_servers(pb::GetServersRequest {})
        .await?
        .into_inner();
    ensure!(servers.servers.len() == 3, "{servers:?}");
    let r = log
        .produce(pb::ProduceRequest {
            record: Some(pb::Record {
                value: b"x".to_vec().into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await;
    refused(r, Code::PermissionDenied, &["e2e-app", "produce"])?;
    let r = log
        .consume(pb::ConsumeRequest {
            offset: 0,
            ..Default::default()
        })
        .await;
    refused(r, Code::PermissionDenied, &["e2e-app", "consume"])?;
    let r = ClusterClient::new(ch.clone())
        .status(pb::StatusRequest {})
        .await;
    refused(
        r,
        Code::PermissionDenied,
        &["e2e-app", names::OPERATOR_SUBJECT],
    )?;
    let r = RaftClient::new(ch)
        .vote(proglog_proto::raft::v1::RaftRequest::default())
        .await;
    refused(
        r,
        Code::PermissionDenied,
        &["e2e-app", names::MEMBER_SUBJECT],
    )?;

    // The operator's identity: the admin API answers.
    let op = e2e::pki::operator_identity(c, ns, NAME)
        .await?
        .with_server_name(&server_name)?;
    let st = ClusterClient::new(channel(Some(&op), &addr)?)
        .status(pb::StatusRequest {})
        .await?
        .into_inner();
    ensure!(st.node_id == names::node_id(0), "{st:?}");

    // A certificate of another CA: no handshake.
    let stranger = proglog_testkit::pki::TestPki::new()?
        .client("root")?
        .with_server_name(&server_name)?;
    let r = LogClient::new(channel(Some(&stranger), &addr)?)
        .get_servers(pb::GetServersRequest {})
        .await;
    ensure!(
        r.is_err(),
        "a certificate of another CA got an answer: {r:?}"
    );

    // openssl from the node: the chain, verified against the CA under the pod's DNS name.
    let dir = tempfile::tempdir()?;
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, e2e::pki::ca_pem(c, ns, NAME).await?)?;
    let out = std::process::Command::new("openssl")
        .args(["s_client", "-connect", &addr, "-showcerts", "-servername"])
        .arg(&server_name)
        .arg("-verify_hostname")
        .arg(&server_name)
        .arg("-CAfile")
        .arg(&ca)
        .stdin(std::process::Stdio::null())
        .output()
        .context("running openssl s_client")?;
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "openssl s_client:\n{}",
        text.lines()
            .filter(|l| l.contains("s:") || l.contains("i:") || l.contains("Verify"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    ensure!(
        text.contains(&format!("CN = {}", names::MEMBER_SUBJECT))
            && text.contains(&format!("proglog {ns}/{NAME} CA"))
            && text.contains("Verify return code: 0 (ok)"),
        "openssl s_client did not show a verified chain:\n{text}"
    );
    Ok(())
}
