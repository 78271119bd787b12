//! A ProgLogUser's identity for the client: its Secret (`ca.pem`, `tls.crt`, `tls.key`), read
//! through the Kubernetes API with the caller's own credentials and turned into mutual-TLS
//! settings, which is what `proglog --cluster demo --user alice` uses instead of
//! `--ca/--cert/--key`. The user is checked first (it exists, belongs to that ProgLog, is Ready),
//! so a wrong name or a user the operator has not served yet says so instead of failing at the
//! handshake. [`check`] and [`tls_from_secret`] are the pure parts, tested without a cluster.
//!
//! NB: the key stays in memory; nothing is written to disk.

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt};
use proglog_crds::{names, ProgLogUser, CONDITION_READY};
use proglog_tls::{ClientTls, Reloading, TlsFiles};

use crate::{Error, Result};

/// The TLS settings of ProgLogUser `user` of ProgLog `cluster` in `namespace`.
pub async fn tls(client: &Client, namespace: &str, cluster: &str, user: &str) -> Result<ClientTls> {
    let err = |reason: String| Error::User {
        namespace: namespace.into(),
        name: user.into(),
        reason,
    };
    let forbidden = |what: &str, e: &kube::core::Status| {
        err(format!(
            "cannot read {what}: {} (your Kubernetes identity needs `get` on proglogusers and secrets in {namespace})",
            e.message
        ))
    };
    let users: Api<ProgLogUser> = Api::namespaced(client.clone(), namespace);
    let u = match users.get_opt(user).await {
        Ok(Some(u)) => u,
        Ok(None) => {
            return Err(err(format!(
                "not found: check --user and --namespace (`kubectl get pluser -n {namespace}`), or create it (manifests/samples/proglog-user.yaml)"
            )))
        }
        Err(kube::Error::Api(s)) if s.code == 403 => return Err(forbidden("the ProgLogUser", &s)),
        Err(e) => return Err(e.into()),
    };
    let secret_name = check(&u, cluster).map_err(err)?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = match secrets.get_opt(&secret_name).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return Err(err(format!(
                "its Secret {secret_name} does not exist; the operator writes it (`kubectl describe pluser -n {namespace} {user}`)"
            )))
        }
        Err(kube::Error::Api(s)) if s.code == 403 => {
            return Err(forbidden(&format!("Secret {secret_name}"), &s))
        }
        Err(e) => return Err(e.into()),
    };
    tls_from_secret(namespace, &secret).map_err(err)
}

/// The Secret holding `user`'s certificate, or why it cannot be used with ProgLog `cluster`.
pub fn check(user: &ProgLogUser, cluster: &str) -> Result<String, String> {
    let spec = &user.spec;
    if spec.proglog != cluster {
        return Err(format!(
            "it is a user of ProgLog {}, not {cluster}: pass --cluster {}, or a user of {cluster}",
            spec.proglog, spec.proglog
        ));
    }
    if user.metadata.deletion_timestamp.is_some() {
        return Err("it is being deleted".into());
    }
    let status = user.status.as_ref();
    let ready = status.and_then(|s| s.conditions.iter().find(|c| c.type_ == CONDITION_READY));
    match ready {
        None => Err(format!(
            "not Ready yet: the operator has not issued its certificate (is the operator running? `kubectl describe pluser {}`)",
            user.name_any()
        )),
        Some(c) if c.status != "True" => Err(format!("not Ready ({}): {}", c.reason, c.message)),
        Some(_) => Ok(status
            .and_then(|s| s.secret_name.clone())
            .unwrap_or_else(|| spec.secret(&user.name_any()))),
    }
}

/// Mutual-TLS settings from a user's Secret (errors name the Secret and the key at fault).
pub fn tls_from_secret(namespace: &str, secret: &Secret) -> Result<ClientTls, String> {
    let name = secret.name_any();
    let get = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| b.0.as_slice())
            .ok_or_else(|| format!("its Secret {name} has no {key}"))
    };
    let (ca, cert, key) = (
        get(names::USER_CA_KEY)?,
        get(names::USER_CERT_KEY)?,
        get(names::USER_KEY_KEY)?,
    );
    let label = |key: &str| format!("Secret {namespace}/{name}: {key}").into();
    let labels = TlsFiles {
        ca: label(names::USER_CA_KEY),
        cert: label(names::USER_CERT_KEY),
        key: label(names::USER_KEY_KEY),
    };
    Reloading::from_pem(labels, [ca.to_vec(), cert.to_vec(), key.to_vec()])
        .and_then(ClientTls::mutual)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::time::{Duration, SystemTime};

    fn user(proglog: &str, status: serde_json::Value) -> ProgLogUser {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "proglog.dev/v1alpha1", "kind": "ProgLogUser",
            "metadata": {"name": "alice", "namespace": "logs"},
            "spec": {"proglog": proglog, "actions": ["produce"]},
            "status": status,
        }))
        .unwrap()
    }

    fn ready(status: &str, reason: &str, secret: Option<&str>) -> serde_json::Value {
        serde_json::json!({
            "conditions": [{"type": "Ready", "status": status, "reason": reason,
                            "message": "the ProgLog does not exist", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
            "secretName": secret,
        })
    }

    #[test]
    fn only_a_ready_user_of_the_cluster_gives_its_secret() {
        let ok = user("demo", ready("True", "Issued", Some("alice-certs")));
        assert_eq!(check(&ok, "demo").unwrap(), "alice-certs");
        let default = user("demo", ready("True", "Issued", None));
        assert_eq!(check(&default, "demo").unwrap(), "alice-proglog-tls");
        let other = check(&ok, "prod").unwrap_err();
        assert!(other.contains("user of ProgLog demo, not prod"), "{other}");
        let down = user("demo", ready("False", "ProgLogNotFound", None));
        let e = check(&down, "demo").unwrap_err();
        assert!(
            e.contains("not Ready (ProgLogNotFound): the ProgLog does not exist"),
            "{e}"
        );
        let fresh = user("demo", serde_json::json!({}));
        assert!(check(&fresh, "demo").unwrap_err().contains("not Ready yet"));
    }

    fn secret(data: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: kube::api::ObjectMeta {
                name: Some("alice-proglog-tls".into()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn a_secret_becomes_mutual_tls_with_its_subject_or_a_clear_error() {
        let ca = proglog_tls::issue::Ca::new("ca", Duration::from_secs(3600)).unwrap();
        let leaf = ca
            .issue("logs/alice", &[], Duration::from_secs(3600))
            .unwrap();
        let ca_pem = ca.cert_pem();
        let good = [
            ("ca.pem", ca_pem.as_str()),
            ("tls.crt", leaf.cert_pem.as_str()),
            ("tls.key", leaf.key_pem.as_str()),
        ];
        let tls = tls_from_secret("logs", &secret(&good)).unwrap();
        assert_eq!(tls.subject().as_deref(), Some("logs/alice"));

        let e = tls_from_secret("logs", &secret(&good[..2])).unwrap_err();
        assert_eq!(e, "its Secret alice-proglog-tls has no tls.key");
        let now = SystemTime::now();
        let old = ca
            .issue_between(
                "logs/alice",
                &[],
                now - Duration::from_secs(7200),
                now - Duration::from_secs(3600),
            )
            .unwrap();
        let expired = [
            ("ca.pem", ca_pem.as_str()),
            ("tls.crt", old.cert_pem.as_str()),
            ("tls.key", old.key_pem.as_str()),
        ];
        let e = tls_from_secret("logs", &secret(&expired)).unwrap_err();
        assert!(
            e.contains("Secret logs/alice-proglog-tls: tls.crt") && e.contains("expired"),
            "{e}"
        );
    }
}
