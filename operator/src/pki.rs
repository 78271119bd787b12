//! The PKI of one ProgLog, as pure functions of PEM text and the time: its CA (made here, or
//! taken from an issuer Secret the spec names), the members' certificate (one for every member:
//! a wildcard under the headless Service, so scaling up needs no new certificate, plus the
//! `-members`, `-leader` and `-followers` Services), the operator's client certificate (the admin
//! identity), and the renewal decision: re-issue when a certificate is missing, unreadable,
//! signed by another CA, for another subject, or ends within [`Validity::renew_before`].
//!
//! The Secrets that hold all this and when they are written are [`crate::certs`]' business; the
//! Secret and key names are the naming contract's ([`crate::names`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use k8s_openapi::ByteString;
use proglog_tls::issue::{issue_with, Ca};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::names;

pub use crate::names::{MEMBER_SUBJECT, OPERATOR_SUBJECT};

/// How long the CA the operator makes is valid: 10 years (it is not rotated yet).
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a leaf certificate is valid by default: 90 days.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);
/// Renew a leaf by default once less than this is left: 30 days.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// Why a PKI step cannot be done.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The issuer Secret lacks a key or holds something that is not a usable CA.
    #[error("issuer Secret {secret}: {reason}")]
    BadIssuer { secret: String, reason: String },
    /// rcgen or the PEM parser refused.
    #[error(transparent)]
    Tls(#[from] proglog_tls::Error),
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How long leaves live and when they are renewed (operator flags; tests shorten them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// Lifetime of a member or operator certificate. Default [`LEAF_VALIDITY`].
    pub leaf: Duration,
    /// Re-issue once less than this is left. Default [`RENEW_BEFORE`]; must be below `leaf`.
    pub renew_before: Duration,
}

impl Default for Validity {
    fn default() -> Self {
        Validity {
            leaf: LEAF_VALIDITY,
            renew_before: RENEW_BEFORE,
        }
    }
}

impl Validity {
    /// An error naming the flag when the settings cannot work.
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.renew_before.is_zero() || self.renew_before >= self.leaf {
            return Err(format!(
                "--cert-renew-before-secs ({:?}) must be above 0 and below --cert-validity-secs ({:?})",
                self.renew_before, self.leaf
            ));
        }
        Ok(())
    }
}

/// A CA: its certificate and private key, PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaPem {
    pub cert: String,
    pub key: String,
}

/// An identity: the CA bundle to trust, a certificate and its key, PEM (one identity Secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityPem {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

/// Which certificate of a ProgLog.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leaf {
    /// The members' (server and peer client), subject [`MEMBER_SUBJECT`].
    Member,
    /// The operator's (admin client), subject [`OPERATOR_SUBJECT`].
    Operator,
}

impl Leaf {
    /// The subject (CN) it carries.
    pub fn subject(self) -> &'static str {
        match self {
            Leaf::Member => MEMBER_SUBJECT,
            Leaf::Operator => OPERATOR_SUBJECT,
        }
    }
}

/// The DNS names a member certificate of ProgLog `name` in `namespace` covers: each pod under
/// the headless Service (a wildcard), and the three Services, each as `<svc>.<namespace>`
/// (the name kuberesolver and grpc-go verify for `kubernetes:///<svc>.<namespace>:grpc`), and
/// under `svc` and `svc.<cluster_domain>`.
pub fn member_sans(name: &str, namespace: &str, cluster_domain: &str) -> Vec<String> {
    let services = [
        names::headless_service(name),
        names::leader_service(name),
        names::followers_service(name),
    ];
    let mut sans: Vec<String> = services
        .iter()
        .map(|s| format!("{s}.{namespace}"))
        .collect();
    for domain in ["svc".to_string(), format!("svc.{cluster_domain}")] {
        sans.push(format!(
            "*.{}.{namespace}.{domain}",
            names::headless_service(name)
        ));
        for s in &services {
            sans.push(format!("{s}.{namespace}.{domain}"));
        }
    }
    sans
}

/// A new CA for ProgLog `name` in `namespace`.
pub fn new_ca(name: &str, namespace: &str) -> Result<CaPem> {
    let ca = Ca::new(&format!("proglog {namespace}/{name} CA"), CA_VALIDITY)?;
    Ok(CaPem {
        cert: ca.cert_pem(),
        key: ca.key_pem(),
    })
}

fn text(data: &BTreeMap<String, ByteString>, key: &str) -> Option<String> {
    data.get(key)
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
        .filter(|s| !s.trim().is_empty())
}

/// The CA in a Secret's data: `ca.pem` + `ca-key.pem` (ours), or `tls.crt` + `tls.key` (a
/// `kubernetes.io/tls` Secret, as cert-manager writes a CA). Checked: it must be able to sign.
pub fn ca_from_secret(secret: &str, data: &BTreeMap<String, ByteString>) -> Result<CaPem> {
    let pair = |c: &str, k: &str| Some((text(data, c)?, text(data, k)?));
    let (cert, key) = pair(names::CA_CERT_KEY, names::CA_KEY_KEY)
        .or_else(|| pair("tls.crt", "tls.key"))
        .ok_or_else(|| Error::BadIssuer {
            secret: secret.to_string(),
            reason: format!(
                "needs keys {} and {} (or tls.crt and tls.key) with PEM text",
                names::CA_CERT_KEY,
                names::CA_KEY_KEY
            ),
        })?;
    let ca = CaPem { cert, key };
    signs(&ca).map_err(|reason| Error::BadIssuer {
        secret: secret.to_string(),
        reason: format!("not a CA certificate and its key: {reason}"),
    })?;
    Ok(ca)
}

/// Ok when `ca` can sign a leaf that verifies against its certificate (it is a CA, and the key
/// is the certificate's). NB: rcgen takes any certificate as an issuer without a check; a
/// throw-away leaf verified by webpki is the check.
fn signs(ca: &CaPem) -> std::result::Result<(), String> {
    use rustls::client::danger::ServerCertVerifier;
    const PROBE: &str = "issuer-check.invalid";
    let issuer = Ca::issuer_from_pem(&ca.cert, &ca.key).map_err(|e| e.to_string())?;
    let now = SystemTime::now();
    let probe = issue_with(
        &issuer,
        "issuer check",
        &[PROBE],
        now - Duration::from_secs(60),
        now + Duration::from_secs(60),
    )
    .map_err(|e| e.to_string())?;
    let mut roots = rustls::RootCertStore::empty();
    let ca_der = CertificateDer::from_pem_slice(ca.cert.as_bytes()).map_err(|e| e.to_string())?;
    roots.add(ca_der).map_err(|e| e.to_string())?;
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        roots.into(),
        proglog_tls::provider(),
    )
    .build()
    .map_err(|e| e.to_string())?;
    let leaf =
        CertificateDer::from_pem_slice(probe.cert_pem.as_bytes()).map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::try_from(PROBE).map_err(|e| e.to_string())?;
    verifier
        .verify_server_cert(&leaf, &[], &name, &[], rustls_pki_types::UnixTime::now())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The DNS names certificate `leaf` of ProgLog `name` carries (none for the operator's).
pub fn leaf_sans(leaf: Leaf, name: &str, namespace: &str, cluster_domain: &str) -> Vec<String> {
    match leaf {
        Leaf::Member => member_sans(name, namespace, cluster_domain),
        Leaf::Operator => Vec::new(),
    }
}

/// A fresh certificate `leaf` of ProgLog `name`, signed by `ca`, valid from a minute ago for
/// `validity.leaf`.
pub fn issue(
    ca: &CaPem,
    leaf: Leaf,
    name: &str,
    namespace: &str,
    cluster_domain: &str,
    validity: &Validity,
) -> Result<IdentityPem> {
    let issuer = Ca::issuer_from_pem(&ca.cert, &ca.key)?;
    let sans = leaf_sans(leaf, name, namespace, cluster_domain);
    let sans: Vec<&str> = sans.iter().map(String::as_str).collect();
    let now = SystemTime::now();
    let issued = issue_with(
        &issuer,
        leaf.subject(),
        &sans,
        now - Duration::from_secs(60),
        now + validity.leaf,
    )?;
    Ok(IdentityPem {
        ca: ca.cert.clone(),
        cert: issued.cert_pem,
        key: issued.key_pem,
    })
}

/// The identity in an identity Secret's data, when all three keys hold text.
pub fn identity_from_secret(data: &BTreeMap<String, ByteString>) -> Option<IdentityPem> {
    Some(IdentityPem {
        ca: text(data, names::CA_CERT_KEY)?,
        cert: text(data, names::TLS_CERT_KEY)?,
        key: text(data, names::TLS_KEY_KEY)?,
    })
}

/// What to do with an identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// Keep it; renew at this time.
    Keep { renew_at: SystemTime },
    /// Issue a new one, for this reason.
    Issue(&'static str),
}

/// The subject, DNS names and end of validity of the leaf in `pem`.
fn leaf_info(pem: &str) -> Option<(String, BTreeSet<String>, SystemTime)> {
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).ok()?;
    let (subject, not_after) = proglog_tls::identity::describe(&der).ok()?;
    let dns = proglog_tls::identity::dns_names(&der).into_iter().collect();
    let secs = u64::try_from(not_after.timestamp()).ok()?;
    Some((
        subject,
        dns,
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
    ))
}

/// Whether `current` (the identity Secret as found, if any) can stay for certificate `leaf`
/// with DNS names `sans` under `ca` at `now`, and until when. NB: a certificate issued with
/// other names (an older operator's) is replaced at once.
pub fn renewal(
    current: Option<&IdentityPem>,
    ca: &CaPem,
    leaf: Leaf,
    sans: &[String],
    now: SystemTime,
    renew_before: Duration,
) -> Renewal {
    let Some(id) = current else {
        return Renewal::Issue("missing");
    };
    if id.ca.trim() != ca.cert.trim() {
        return Renewal::Issue("signed by another CA");
    }
    let Some((subject, dns, not_after)) = leaf_info(&id.cert) else {
        return Renewal::Issue("the certificate does not parse");
    };
    if subject != leaf.subject() {
        return Renewal::Issue("issued for another subject");
    }
    if dns != sans.iter().cloned().collect::<BTreeSet<_>>() {
        return Renewal::Issue("issued for other DNS names");
    }
    let renew_at = not_after
        .checked_sub(renew_before)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    if renew_at <= now {
        return Renewal::Issue("it ends soon");
    }
    Renewal::Keep { renew_at }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls_pki_types::{ServerName, UnixTime};

    /// Verifies `cert` (PEM) as a server certificate for `host` against `ca` (PEM).
    fn verifies(ca: &str, cert: &str, host: &str) -> bool {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
            .unwrap();
        let v = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots.into(),
            proglog_tls::provider(),
        )
        .build()
        .unwrap();
        let leaf = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        let name = ServerName::try_from(host.to_string()).unwrap();
        v.verify_server_cert(&leaf, &[], &name, &[], UnixTime::now())
            .is_ok()
    }

    fn member(ca: &CaPem) -> IdentityPem {
        issue(
            ca,
            Leaf::Member,
            "demo",
            "logs",
            "cluster.local",
            &Validity::default(),
        )
        .unwrap()
    }

    #[test]
    fn the_member_certificate_covers_every_pod_and_service_of_its_cluster_only() {
        let ca = new_ca("demo", "logs").unwrap();
        let m = member(&ca);
        assert_eq!(m.ca, ca.cert);
        for host in [
            "demo-leader.logs",
            "demo-followers.logs",
            "demo-0.demo-members.logs.svc",
            "demo-7.demo-members.logs.svc.cluster.local",
            "demo-leader.logs.svc",
            "demo-followers.logs.svc.cluster.local",
            "demo-members.logs.svc",
        ] {
            assert!(verifies(&ca.cert, &m.cert, host), "{host}");
        }
        for host in [
            "demo-0.other-members.logs.svc",
            "demo-leader.other-ns.svc",
            "a.b.demo-members.logs.svc",
        ] {
            assert!(
                !verifies(&ca.cert, &m.cert, host),
                "{host} must not be covered"
            );
        }
        // Another ProgLog's CA does not vouch for this one's members.
        let other = new_ca("demo", "logs").unwrap();
        assert!(!verifies(&other.cert, &m.cert, "demo-leader.logs.svc"));
    }

    #[test]
    fn an_issuer_secret_is_read_in_either_layout_and_must_hold_a_ca() {
        let ca = new_ca("x", "y").unwrap();
        let data = |pairs: &[(&str, &str)]| -> BTreeMap<String, ByteString> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect()
        };
        let ours = data(&[("ca.pem", &ca.cert), ("ca-key.pem", &ca.key)]);
        assert_eq!(ca_from_secret("i", &ours).unwrap(), ca);
        let tls = data(&[("tls.crt", &ca.cert), ("tls.key", &ca.key)]);
        assert_eq!(ca_from_secret("i", &tls).unwrap(), ca);
        let e = ca_from_secret("i", &data(&[("ca.pem", &ca.cert)])).unwrap_err();
        assert!(
            e.to_string().contains("needs keys ca.pem and ca-key.pem"),
            "{e}"
        );
        let leaf = member(&ca);
        let e = ca_from_secret(
            "i",
            &data(&[("ca.pem", &leaf.cert), ("ca-key.pem", &ca.key)]),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("issuer Secret i:"), "{e}");
    }

    #[test]
    fn leaves_are_renewed_before_they_end_and_when_the_ca_subject_or_names_changed() {
        let ca = new_ca("demo", "logs").unwrap();
        let v = Validity::default();
        let m = member(&ca);
        let sans = member_sans("demo", "logs", "cluster.local");
        let now = SystemTime::now();
        // An older operator's certificate, without some of today's names.
        assert_eq!(
            renewal(Some(&m), &ca, Leaf::Member, &sans[1..], now, v.renew_before),
            Renewal::Issue("issued for other DNS names")
        );
        let Renewal::Keep { renew_at } =
            renewal(Some(&m), &ca, Leaf::Member, &sans, now, v.renew_before)
        else {
            panic!("a fresh certificate is kept");
        };
        // Renewal is due LEAF_VALIDITY - RENEW_BEFORE from now (give or take a minute).
        let due = now + v.leaf - v.renew_before;
        let off = renew_at
            .duration_since(due)
            .unwrap_or_else(|e| e.duration());
        assert!(
            off < Duration::from_secs(120),
            "renew at {renew_at:?}, want ~{due:?}"
        );
        let later = due + Duration::from_secs(3600);
        assert_eq!(
            renewal(Some(&m), &ca, Leaf::Member, &sans, later, v.renew_before),
            Renewal::Issue("it ends soon")
        );
        assert_eq!(
            renewal(None, &ca, Leaf::Member, &sans, now, v.renew_before),
            Renewal::Issue("missing")
        );
        assert_eq!(
            renewal(Some(&m), &ca, Leaf::Operator, &[], now, v.renew_before),
            Renewal::Issue("issued for another subject")
        );
        let other = new_ca("demo", "logs").unwrap();
        assert_eq!(
            renewal(Some(&m), &other, Leaf::Member, &sans, now, v.renew_before),
            Renewal::Issue("signed by another CA")
        );
        let broken = IdentityPem {
            cert: "not a certificate".into(),
            ..m
        };
        assert_eq!(
            renewal(Some(&broken), &ca, Leaf::Member, &sans, now, v.renew_before),
            Renewal::Issue("the certificate does not parse")
        );
    }

    #[test]
    fn validity_settings_are_checked() {
        assert!(Validity::default().check().is_ok());
        let bad = Validity {
            leaf: Duration::from_secs(60),
            renew_before: Duration::from_secs(60),
        };
        assert!(bad
            .check()
            .unwrap_err()
            .contains("--cert-renew-before-secs"));
    }
}
