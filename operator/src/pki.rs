//! The PKI of one ProgLog (groundwork for #10's operator side; not yet wired into reconcile):
//! a CA per ProgLog, one member certificate whose SANs cover every pod (a wildcard under the
//! headless Service, so scaling up needs no new certificate) and the `-members`, `-leader` and
//! `-followers` Services, and the operator's client certificate (the admin identity). Pure
//! functions of the ProgLog's name and namespace plus the time; the Secret that holds the
//! result and its renewal are the controller's.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use proglog_tls::issue::Ca;

use crate::names;

/// Subject of every member of a ProgLog (the peer plane accepts only it).
pub const MEMBER_SUBJECT: &str = "proglog-member";
/// Subject of the operator (the admin plane accepts only it).
pub const OPERATOR_SUBJECT: &str = "proglog-operator";
/// How long the CA is valid: 5 years.
pub const CA_VALIDITY: Duration = Duration::from_secs(5 * 365 * 24 * 3600);
/// How long a leaf certificate is valid: 90 days.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);
/// Renew a leaf once less than this is left: 30 days.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// Keys of the Secret data.
pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca-key.pem";
pub const MEMBER_CERT: &str = "member.pem";
pub const MEMBER_KEY: &str = "member-key.pem";
pub const OPERATOR_CERT: &str = "operator.pem";
pub const OPERATOR_KEY: &str = "operator-key.pem";

/// The DNS names a member certificate of ProgLog `name` in `namespace` covers: each pod under
/// the headless Service (a wildcard), and the three Services, short and fully qualified.
pub fn member_sans(name: &str, namespace: &str) -> Vec<String> {
    let services = [
        names::headless_service(name),
        names::leader_service(name),
        names::followers_service(name),
    ];
    let mut sans = Vec::new();
    for domain in ["svc", "svc.cluster.local"] {
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

/// A fresh PKI for ProgLog `name`: the Secret data (PEM) of the CA, the member certificate and
/// the operator's certificate.
pub fn issue(name: &str, namespace: &str) -> proglog_tls::Result<BTreeMap<String, String>> {
    let ca = Ca::new(&format!("proglog {namespace}/{name} CA"), CA_VALIDITY)?;
    let sans = member_sans(name, namespace);
    let sans: Vec<&str> = sans.iter().map(String::as_str).collect();
    let member = ca.issue(MEMBER_SUBJECT, &sans, LEAF_VALIDITY)?;
    let operator = ca.issue(OPERATOR_SUBJECT, &[], LEAF_VALIDITY)?;
    Ok(BTreeMap::from([
        (CA_CERT.into(), ca.cert_pem()),
        (CA_KEY.into(), ca.key_pem()),
        (MEMBER_CERT.into(), member.cert_pem),
        (MEMBER_KEY.into(), member.key_pem),
        (OPERATOR_CERT.into(), operator.cert_pem),
        (OPERATOR_KEY.into(), operator.key_pem),
    ]))
}

/// True when the leaf certificate in `pem` ends within `before` of `now`, or does not parse.
pub fn needs_renewal(pem: &str, now: SystemTime, before: Duration) -> bool {
    use rustls_pki_types::pem::PemObject;
    let Ok(der) = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()) else {
        return true;
    };
    let Ok((_, not_after)) = proglog_tls::identity::describe(&der) else {
        return true;
    };
    let deadline = (now + before)
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(i64::MAX);
    not_after.timestamp() <= deadline
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

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

    #[test]
    fn the_member_certificate_covers_every_pod_and_service_of_its_cluster_only() {
        let d = issue("demo", "logs").unwrap();
        let (ca, member) = (&d[CA_CERT], &d[MEMBER_CERT]);
        for host in [
            "demo-0.demo-members.logs.svc",
            "demo-7.demo-members.logs.svc.cluster.local",
            "demo-leader.logs.svc",
            "demo-followers.logs.svc.cluster.local",
            "demo-members.logs.svc",
        ] {
            assert!(verifies(ca, member, host), "{host}");
        }
        for host in [
            "demo-0.other-members.logs.svc",
            "demo-leader.other-ns.svc",
            "a.b.demo-members.logs.svc",
        ] {
            assert!(!verifies(ca, member, host), "{host} must not be covered");
        }
        // Another ProgLog's CA does not vouch for this one's members.
        let other = issue("demo", "logs").unwrap();
        assert!(!verifies(&other[CA_CERT], member, "demo-leader.logs.svc"));
    }

    #[test]
    fn leaves_are_renewed_a_month_before_they_end() {
        let d = issue("demo", "logs").unwrap();
        let now = SystemTime::now();
        assert!(!needs_renewal(&d[MEMBER_CERT], now, RENEW_BEFORE));
        assert!(needs_renewal(
            &d[MEMBER_CERT],
            now + LEAF_VALIDITY - RENEW_BEFORE + Duration::from_secs(3600),
            RENEW_BEFORE
        ));
        assert!(needs_renewal("not a certificate", now, RENEW_BEFORE));
    }
}
