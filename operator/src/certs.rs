//! The PKI of each ProgLog in the API server: keeps the CA Secret (`<name>-ca`: made once, or a
//! copy of `spec.tls.issuerSecret`), the members' and the operator's identity Secrets (issued,
//! and re-issued before they end), and the operator's own client identity in memory for the
//! admin calls of that ProgLog (swapped in place on renewal, so pooled channels pick it up on
//! their next connection without being rebuilt).
//!
//! Every decision is [`crate::pki`]'s (pure); this module only reads and writes Secrets. It
//! never touches a Secret it does not own except to read the issuer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use proglog_tls::{ClientTls, Reloading, TlsFiles};
use tracing::info;

use crate::admin::ClusterAuth;
use crate::names;
use crate::pki::{self, CaPem, IdentityPem, Leaf, Renewal, Validity};
use crate::resources::Children;

/// Why the PKI of a ProgLog could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("{verb} Secret {secret}: {source}")]
    Kube {
        verb: &'static str,
        secret: String,
        #[source]
        source: kube::Error,
    },
    /// `spec.tls.issuerSecret` names a Secret that does not exist.
    #[error("spec.tls.issuerSecret: Secret {0} not found in the ProgLog's namespace")]
    NoIssuer(String),
    /// A CA Secret holds no usable CA, or a certificate could not be made.
    #[error(transparent)]
    Pki(#[from] pki::Error),
    /// The operator's identity does not load (it was just issued: a bug, or a broken Secret).
    #[error("the operator's identity for {0}: {1}")]
    Identity(String, proglog_tls::Error),
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn kube_err<'a>(verb: &'static str, secret: &'a str) -> impl FnOnce(kube::Error) -> Error + 'a {
    move |source| Error::Kube {
        verb,
        secret: secret.to_string(),
        source,
    }
}

/// What keeping a ProgLog's PKI found and did.
#[derive(Debug)]
pub struct Kept {
    /// How the operator calls the members (mutual TLS as its identity of this ProgLog).
    pub auth: ClusterAuth,
    /// The earliest time a certificate needs renewing (requeue by then).
    pub renew_at: SystemTime,
    /// Certificates issued in this pass, with why (for Events): `("<secret>", "missing")`.
    pub issued: Vec<(String, &'static str)>,
}

/// The operator's PKI work, shared by every pass.
#[derive(Debug)]
pub struct Certs {
    validity: Validity,
    cluster_domain: String,
    /// The operator's client identity per ProgLog (`ns/name`).
    identities: Mutex<HashMap<String, (Arc<Reloading>, ClientTls)>>,
}

impl Certs {
    /// Certificates valid for `validity`, member SANs under `cluster_domain`.
    pub fn new(validity: Validity, cluster_domain: &str) -> Self {
        Certs {
            validity,
            cluster_domain: cluster_domain.to_string(),
            identities: Mutex::new(HashMap::new()),
        }
    }

    /// Forgets the operator's identity for a deleted ProgLog.
    pub fn forget(&self, namespace: &str, name: &str) {
        self.lock().remove(&format!("{namespace}/{name}"));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Arc<Reloading>, ClientTls)>> {
        self.identities.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps the CA, the members' and the operator's certificates of the ProgLog `children`
    /// builds for (which must have `spec.tls.enabled`).
    pub async fn keep(
        &self,
        client: &Client,
        children: &Children<'_>,
        issuer: Option<&str>,
    ) -> Result<Kept> {
        let (ns, name) = (children.namespace(), children.name());
        let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
        let ca = self.keep_ca(&secrets, children, issuer).await?;
        let now = SystemTime::now();
        let mut issued = Vec::new();
        let mut renew_at = now + self.validity.leaf;
        let mut operator = None;
        for (leaf, secret) in [
            (Leaf::Member, names::member_tls_secret(name)),
            (Leaf::Operator, names::operator_tls_secret(name)),
        ] {
            let found = secrets
                .get_opt(&secret)
                .await
                .map_err(kube_err("get", &secret))?;
            let current = found
                .as_ref()
                .and_then(|s| s.data.as_ref())
                .and_then(pki::identity_from_secret);
            let sans = pki::leaf_sans(leaf, name, ns, &self.cluster_domain);
            let id = match pki::renewal(
                current.as_ref(),
                &ca,
                leaf,
                &sans,
                now,
                self.validity.renew_before,
            ) {
                Renewal::Keep { renew_at: at } => {
                    renew_at = renew_at.min(at);
                    current.expect("kept identities exist")
                }
                Renewal::Issue(why) => {
                    let id = pki::issue(&ca, leaf, name, ns, &self.cluster_domain, &self.validity)?;
                    apply(&secrets, children.identity_secret(secret.clone(), &id)).await?;
                    info!(secret = %secret, why, "issued a {:?} certificate", leaf);
                    renew_at = renew_at.min(now + self.validity.leaf - self.validity.renew_before);
                    issued.push((secret, why));
                    id
                }
            };
            if leaf == Leaf::Operator {
                operator = Some(id);
            }
        }
        let tls = self.client_tls(ns, name, &operator.expect("the operator's identity"))?;
        Ok(Kept {
            auth: ClusterAuth::Tls {
                tls,
                name: name.to_string(),
                namespace: ns.to_string(),
            },
            renew_at,
            issued,
        })
    }

    /// How to call the members of ProgLog `ns/name` as the operator, from its identity Secret
    /// as the ProgLog controller keeps it (read, not issued: `None` until it exists).
    pub async fn operator_auth(
        &self,
        client: &Client,
        ns: &str,
        name: &str,
    ) -> Result<Option<ClusterAuth>> {
        let secret = names::operator_tls_secret(name);
        let found = Api::<Secret>::namespaced(client.clone(), ns)
            .get_opt(&secret)
            .await
            .map_err(kube_err("get", &secret))?;
        let Some(id) = found
            .as_ref()
            .and_then(|s| s.data.as_ref())
            .and_then(pki::identity_from_secret)
        else {
            return Ok(None);
        };
        Ok(Some(ClusterAuth::Tls {
            tls: self.client_tls(ns, name, &id)?,
            name: name.to_string(),
            namespace: ns.to_string(),
        }))
    }

    /// The CA: a copy of the issuer's when one is named (rewritten when the issuer changes),
    /// else the one in `<name>-ca`, made once.
    async fn keep_ca(
        &self,
        secrets: &Api<Secret>,
        children: &Children<'_>,
        issuer: Option<&str>,
    ) -> Result<CaPem> {
        let (ns, name) = (children.namespace(), children.name());
        let own = names::ca_secret(name);
        let found = secrets.get_opt(&own).await.map_err(kube_err("get", &own))?;
        if let Some(issuer) = issuer {
            let s = secrets
                .get_opt(issuer)
                .await
                .map_err(kube_err("get", issuer))?
                .ok_or_else(|| Error::NoIssuer(issuer.to_string()))?;
            let ca = pki::ca_from_secret(issuer, &s.data.unwrap_or_default())?;
            let copy = found
                .and_then(|s| s.data)
                .and_then(|d| pki::ca_from_secret(&own, &d).ok());
            if copy.as_ref() != Some(&ca) {
                apply(secrets, children.ca_secret(&ca)).await?;
                info!(issuer, secret = %own, "copied the issuer's CA");
            }
            return Ok(ca);
        }
        if let Some(s) = found {
            return Ok(pki::ca_from_secret(&own, &s.data.unwrap_or_default())?);
        }
        let ca = pki::new_ca(name, ns)?;
        // NB: create, not apply: two operators (or a retry) must not each make a CA; the
        // second one's create fails and it reads the first one's.
        match secrets
            .create(&PostParams::default(), &children.ca_secret(&ca))
            .await
        {
            Ok(_) => {
                info!(secret = %own, "made a CA");
                Ok(ca)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let s = secrets.get(&own).await.map_err(kube_err("get", &own))?;
                Ok(pki::ca_from_secret(&own, &s.data.unwrap_or_default())?)
            }
            Err(e) => Err(kube_err("create", &own)(e)),
        }
    }

    /// The operator's client TLS for ProgLog `ns/name`, made once and updated in place.
    fn client_tls(&self, ns: &str, name: &str, id: &IdentityPem) -> Result<ClientTls> {
        let key = format!("{ns}/{name}");
        let raw = [
            id.ca.as_bytes().to_vec(),
            id.cert.as_bytes().to_vec(),
            id.key.as_bytes().to_vec(),
        ];
        let bad = |e| Error::Identity(key.clone(), e);
        let mut map = self.lock();
        if let Some((material, tls)) = map.get(&key) {
            if material.update(raw).map_err(bad)? {
                info!(proglog = %key, "the operator's certificate was renewed");
            }
            return Ok(tls.clone());
        }
        let secret = names::operator_tls_secret(name);
        let origin = TlsFiles {
            ca: format!("Secret {ns}/{secret} {}", names::CA_CERT_KEY).into(),
            cert: format!("Secret {ns}/{secret} {}", names::TLS_CERT_KEY).into(),
            key: format!("Secret {ns}/{secret} {}", names::TLS_KEY_KEY).into(),
        };
        let material = Reloading::from_pem(origin, raw).map_err(bad)?;
        let tls = ClientTls::mutual(material.clone()).map_err(bad)?;
        map.insert(key, (material, tls.clone()));
        Ok(tls)
    }
}

/// Server-side apply of a Secret this operator owns.
async fn apply(secrets: &Api<Secret>, s: Secret) -> Result<()> {
    let name = s.metadata.name.clone().unwrap_or_default();
    secrets
        .patch(
            &name,
            &PatchParams::apply(names::MANAGER).force(),
            &Patch::Apply(&s),
        )
        .await
        .map_err(kube_err("apply", &name))?;
    Ok(())
}

/// How long until `at`, at least `floor` (a requeue delay).
pub fn until(at: SystemTime, floor: Duration) -> Duration {
    at.duration_since(SystemTime::now())
        .unwrap_or_default()
        .max(floor)
}
