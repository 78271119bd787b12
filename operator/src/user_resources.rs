//! What the operator makes for a ProgLogUser, as pure functions (no client, no I/O): its Secret
//! (the CA bundle, certificate and key), the RoleBinding of its ServiceAccounts to the discovery
//! ClusterRole, its grants in the ProgLog's ACL policy (rendered by [`crate::acl::render`]),
//! whether its certificate must be issued again, and its status. [`crate::users`] does the I/O.
//!
//! The subject of a user's certificate is `<namespace>/<name>` ([`names::user_subject`]).

use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::ByteString;
use kube::{Resource, ResourceExt};
use proglog_crds::{ProgLogUser, ProgLogUserStatus, CONDITION_READY};
use proglog_tls::issue::Issued;

use crate::{acl, names, status};

/// The user lacks metadata the objects need (it did not come from the API server).
#[derive(Debug, thiserror::Error)]
#[error("ProgLogUser has no {0} (not read from the API server?)")]
pub struct MissingMetadata(pub &'static str);

/// Builds the objects of one ProgLogUser.
#[derive(Debug, Clone)]
pub struct UserChildren<'a> {
    user: &'a ProgLogUser,
    name: String,
    namespace: String,
    owner: OwnerReference,
}

impl<'a> UserChildren<'a> {
    /// The builder for `user` (which must come from the API server: namespace and uid).
    pub fn new(user: &'a ProgLogUser) -> Result<Self, MissingMetadata> {
        let namespace = user.namespace().ok_or(MissingMetadata("namespace"))?;
        if user.meta().uid.is_none() {
            return Err(MissingMetadata("uid"));
        }
        let owner = user
            .controller_owner_ref(&())
            .ok_or(MissingMetadata("name"))?;
        Ok(UserChildren {
            user,
            name: user.name_any(),
            namespace,
            owner,
        })
    }

    /// The certificate's subject, which the ACL policy names.
    pub fn subject(&self) -> String {
        names::user_subject(&self.namespace, &self.name)
    }

    /// The Secret the certificate goes into.
    pub fn secret_name(&self) -> String {
        self.user.spec.secret(&self.name)
    }

    /// The uid of the user (every object it owns carries it in its owner reference).
    pub fn uid(&self) -> &str {
        &self.owner.uid
    }

    fn meta(&self, name: String) -> ObjectMeta {
        let mut labels = names::labels(&self.user.spec.proglog);
        labels.insert(names::USER_LABEL.to_string(), self.name.clone());
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels),
            owner_references: Some(vec![self.owner.clone()]),
            ..ObjectMeta::default()
        }
    }

    /// The Secret holding `issued` and the CA bundle `ca_pem` that verifies the members.
    /// NB: type `kubernetes.io/tls`, so tools that know TLS Secrets read `tls.crt`/`tls.key`.
    pub fn secret(&self, ca_pem: &str, issued: &Issued) -> Secret {
        let data = [
            (names::USER_CA_KEY, ca_pem),
            (names::USER_CERT_KEY, issued.cert_pem.as_str()),
            (names::USER_KEY_KEY, issued.key_pem.as_str()),
        ];
        Secret {
            metadata: self.meta(self.secret_name()),
            type_: Some("kubernetes.io/tls".to_string()),
            data: Some(
                data.into_iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    /// The RoleBinding of the user's ServiceAccounts to the discovery ClusterRole, in the
    /// namespace (binding nobody when the user lists none).
    pub fn role_binding(&self) -> RoleBinding {
        let mut sas: Vec<&String> = self.user.spec.service_accounts.iter().collect();
        sas.sort();
        sas.dedup();
        RoleBinding {
            metadata: self.meta(names::user_role_binding(&self.name)),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".to_string(),
                kind: "ClusterRole".to_string(),
                name: names::DISCOVERY_CLUSTER_ROLE.to_string(),
            },
            subjects: Some(
                sas.into_iter()
                    .map(|sa| Subject {
                        kind: "ServiceAccount".to_string(),
                        name: sa.clone(),
                        namespace: Some(self.namespace.clone()),
                        ..Subject::default()
                    })
                    .collect(),
            ),
        }
    }
}

/// True when `meta` names `uid` among its owners: the object is this user's to rewrite.
pub fn owned_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references.iter().flatten().any(|o| o.uid == uid)
}

/// The value of `key` in a Secret, as text.
pub fn secret_text<'s>(secret: &'s Secret, key: &str) -> Option<&'s str> {
    let b = secret.data.as_ref()?.get(key)?;
    std::str::from_utf8(&b.0).ok()
}

/// Why the certificate in `secret` must be issued again (missing, for another subject or CA,
/// ending within `renew_before` of `now`, unreadable), or `None` to keep it.
pub fn reissue_reason(
    secret: Option<&Secret>,
    ca_pem: &str,
    subject: &str,
    now: SystemTime,
    renew_before: Duration,
) -> Option<&'static str> {
    let Some(secret) = secret else {
        return Some("no certificate yet");
    };
    let (Some(ca), Some(cert), Some(_key)) = (
        secret_text(secret, names::USER_CA_KEY),
        secret_text(secret, names::USER_CERT_KEY),
        secret_text(secret, names::USER_KEY_KEY),
    ) else {
        return Some("the Secret lacks a key");
    };
    if ca != ca_pem {
        return Some("the ProgLog's CA changed");
    }
    let now_s = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    match describe(cert) {
        None => Some("the certificate does not parse"),
        Some((cn, _)) if cn != subject => Some("the certificate names another subject"),
        Some((_, not_after)) if not_after - renew_before.as_secs() as i64 <= now_s => {
            Some("the certificate expires soon")
        }
        Some(_) => None,
    }
}

/// The subject CN and the end of validity (seconds since the epoch) of a PEM certificate.
pub fn describe(cert_pem: &str) -> Option<(String, i64)> {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes()).ok()?;
    let (cn, not_after) = proglog_tls::identity::describe(&der).ok()?;
    Some((cn, not_after.timestamp()))
}

/// The grants of the users of ProgLog `proglog` in `namespace` among `users`: every user that
/// names it and is not being deleted, sorted by subject ([`crate::acl::render`] writes them).
pub fn grants(users: &[ProgLogUser], namespace: &str, proglog: &str) -> Vec<acl::Grant> {
    let mut out: Vec<acl::Grant> = users
        .iter()
        .filter(|u| u.spec.proglog == proglog && u.namespace().as_deref() == Some(namespace))
        .filter(|u| u.metadata.deletion_timestamp.is_none())
        .map(|u| acl::Grant {
            subject: names::user_subject(namespace, &u.name_any()),
            actions: u
                .spec
                .actions
                .iter()
                .map(|a| a.as_str().to_string())
                .collect(),
        })
        .collect();
    out.sort_by(|a, b| a.subject.cmp(&b.subject));
    out
}

/// What one pass found, for the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Ready or not.
    pub ready: bool,
    /// CamelCase reason (`proglog_crds::user::REASON_*`).
    pub reason: &'static str,
    /// What happened or what to do, for people.
    pub message: String,
    /// The certificate's end, seconds since the epoch, once issued.
    pub not_after: Option<i64>,
}

/// The status to write after a pass with `outcome` (the Ready condition's transition time kept
/// while its status stays).
pub fn user_status(
    user: &ProgLogUser,
    outcome: &Outcome,
    now: Time,
) -> Result<ProgLogUserStatus, MissingMetadata> {
    let c = UserChildren::new(user)?;
    let prev = user.status.as_ref().map(|s| s.conditions.as_slice());
    let not_after = outcome
        .not_after
        .and_then(|s| k8s_openapi::jiff::Timestamp::from_second(s).ok())
        .map(|t| t.to_string());
    Ok(ProgLogUserStatus {
        observed_generation: user.metadata.generation,
        conditions: vec![status::condition(
            prev.unwrap_or(&[]),
            CONDITION_READY,
            outcome.ready,
            outcome.reason,
            outcome.message.clone(),
            user.metadata.generation,
            &now,
        )],
        subject: Some(c.subject()),
        secret_name: Some(c.secret_name()),
        // NB: kept from the last status while the certificate cannot be checked (no CA).
        not_after: not_after.or_else(|| user.status.as_ref()?.not_after.clone()),
    })
}

/// How long until the certificate ending at `not_after` (seconds since the epoch) is due for
/// renewal, at least `floor` (so a clock far off does not spin the controller).
pub fn until_renewal(
    not_after: i64,
    now: SystemTime,
    renew_before: Duration,
    floor: Duration,
) -> Duration {
    let now_s = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let due = not_after - renew_before.as_secs() as i64;
    Duration::from_secs(u64::try_from(due - now_s).unwrap_or(0)).max(floor)
}

#[cfg(test)]
#[path = "user_resources_tests.rs"]
mod tests;
