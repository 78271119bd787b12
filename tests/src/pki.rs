//! Client identities for tests that talk to the members of a ProgLog that runs with mutual TLS:
//! one signed by the ProgLog's CA (read from `<name>-ca`, as an application's certificate would
//! be) for any subject, or the operator's own (`<name>-operator-tls`), and the CA to trust.
//! Read through the API; nothing is written to the cluster.

use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use proglog_crds::ProgLogUser;
use proglog_tls::issue::{issue_with, Ca};
use proglog_tls::{ClientTls, Reloading, TlsFiles};

use crate::names;

/// The PEM text under `key` of Secret `name`.
async fn secret_text(client: &Client, ns: &str, name: &str, key: &str) -> Result<String> {
    let s = Api::<Secret>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .with_context(|| format!("reading Secret {ns}/{name}"))?;
    let bytes = s
        .data
        .and_then(|mut d| d.remove(key))
        .with_context(|| format!("Secret {ns}/{name} has no {key}"))?;
    Ok(String::from_utf8(bytes.0)?)
}

/// The CA certificate (PEM) of ProgLog `name`.
pub async fn ca_pem(client: &Client, ns: &str, name: &str) -> Result<String> {
    secret_text(client, ns, &names::ca_secret(name), names::CA_CERT_KEY).await
}

fn mutual(origin: &str, ca: &str, cert: &str, key: &str) -> Result<ClientTls> {
    let files = TlsFiles {
        ca: format!("{origin} ca").into(),
        cert: format!("{origin} cert").into(),
        key: format!("{origin} key").into(),
    };
    let raw = [ca.into(), cert.into(), key.into()];
    Ok(ClientTls::mutual(Reloading::from_pem(files, raw)?)?)
}

/// Mutual TLS as `subject`, with a certificate (valid for an hour) signed by ProgLog `name`'s CA.
pub async fn identity(client: &Client, ns: &str, name: &str, subject: &str) -> Result<ClientTls> {
    let ca_secret = names::ca_secret(name);
    let ca = ca_pem(client, ns, name).await?;
    let ca_key = secret_text(client, ns, &ca_secret, names::CA_KEY_KEY).await?;
    let issuer = Ca::issuer_from_pem(&ca, &ca_key)?;
    let now = SystemTime::now();
    let leaf = issue_with(
        &issuer,
        subject,
        &[],
        now - Duration::from_secs(60),
        now + Duration::from_secs(3600),
    )?;
    mutual(
        &format!("test identity {subject}"),
        &ca,
        &leaf.cert_pem,
        &leaf.key_pem,
    )
}

/// Mutual TLS as the operator of ProgLog `name` (its certificate from `<name>-operator-tls`).
pub async fn operator_identity(client: &Client, ns: &str, name: &str) -> Result<ClientTls> {
    let s = names::operator_tls_secret(name);
    let ca = secret_text(client, ns, &s, names::CA_CERT_KEY).await?;
    let cert = secret_text(client, ns, &s, names::TLS_CERT_KEY).await?;
    let key = secret_text(client, ns, &s, names::TLS_KEY_KEY).await?;
    mutual(&format!("Secret {ns}/{s}"), &ca, &cert, &key)
}

/// TLS with no client certificate, trusting ProgLog `name`'s CA.
pub async fn anonymous(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<(ClientTls, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, ca_pem(client, ns, name).await?)?;
    Ok((ClientTls::ca_only(&path)?, dir))
}

/// The identity of ProgLogUser `user` of ProgLog `name`, allowed to produce and consume: the
/// user is applied (server-side, as the test's field manager), and once the operator has issued
/// its certificate its Secret is read as `proglog --user` reads it. The grant reaches the members
/// a little later (with their ACL): wait for it with [`wait_granted`].
pub async fn user(client: &Client, ns: &str, name: &str, user: &str) -> Result<ClientTls> {
    let users: Api<ProgLogUser> = Api::namespaced(client.clone(), ns);
    let body = serde_json::json!({
        "apiVersion": "proglog.dev/v1alpha1", "kind": "ProgLogUser",
        "metadata": {"name": user, "namespace": ns},
        "spec": {"proglog": name, "actions": ["produce", "consume"]}
    });
    users
        .patch(
            user,
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(&body),
        )
        .await
        .with_context(|| format!("applying ProgLogUser {ns}/{user}"))?;
    crate::devcluster::wait_for(
        &format!("ProgLogUser {ns}/{user} to be Ready with its Secret"),
        Duration::from_secs(60),
        || async {
            Ok(proglog_client::kube_user::tls(client, ns, name, user)
                .await
                .ok())
        },
    )
    .await
}

/// Waits until the members let `client` produce (a ProgLogUser's grant is in their ACL); one
/// record `value` is written.
pub async fn wait_granted(client: &proglog_client::Client, value: &str) -> Result<u64> {
    crate::devcluster::wait_for(
        "the members to grant the user produce",
        Duration::from_secs(120),
        || async {
            match client.produce(value.as_bytes().to_vec()).await {
                Ok(offset) => Ok(Some(offset)),
                // NB: refused until the member's ACL has the user; any other error is kept as
                // the last one and polled again too.
                Err(e) => Err(anyhow::Error::new(e)),
            }
        },
    )
    .await
}
