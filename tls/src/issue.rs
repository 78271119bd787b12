//! Issuing certificates with rcgen: a CA and leaf certificates signed by it, as PEM. Every leaf
//! may act as a TLS server and a TLS client (members are both); its SANs are DNS names or IP
//! addresses, its subject CN names who it is for authorization.

use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

use crate::{Error, Result, TlsFiles};

/// A certificate authority that signs leaf certificates.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    key_pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ca")
    }
}

/// A leaf certificate and its private key, in PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

impl Ca {
    /// A new self-signed CA named `cn`, valid from now for `valid_for`.
    pub fn new(cn: &str, valid_for: Duration) -> Result<Ca> {
        let mut p = CertificateParams::default();
        p.distinguished_name = name(cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        p.not_before = (now - Duration::from_secs(60)).into();
        p.not_after = (now + valid_for).into();
        let key = KeyPair::generate()?;
        let key_pem = key.serialize_pem();
        Ok(Ca {
            issuer: CertifiedIssuer::self_signed(p, key)?,
            key_pem,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// The CA's private key, PEM.
    pub fn key_pem(&self) -> String {
        self.key_pem.clone()
    }

    /// Re-creates an issuer from a CA certificate and key in PEM (e.g. kept in a Secret).
    pub fn issuer_from_pem(cert_pem: &str, key_pem: &str) -> Result<Issuer<'static, KeyPair>> {
        let key = KeyPair::from_pem(key_pem)?;
        Ok(Issuer::from_ca_cert_pem(cert_pem, key)?)
    }

    /// A leaf for subject `cn` with these SANs (DNS names or IP addresses), valid from a
    /// minute ago for `valid_for`.
    pub fn issue(&self, cn: &str, sans: &[&str], valid_for: Duration) -> Result<Issued> {
        let now = SystemTime::now();
        self.issue_between(cn, sans, now - Duration::from_secs(60), now + valid_for)
    }

    /// A leaf valid between `not_before` and `not_after` (tests issue expired ones).
    pub fn issue_between(
        &self,
        cn: &str,
        sans: &[&str],
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<Issued> {
        issue_with(&self.issuer, cn, sans, not_before, not_after)
    }
}

/// A leaf signed by `issuer` (see [`Ca::issue_between`]).
pub fn issue_with(
    issuer: &Issuer<'_, KeyPair>,
    cn: &str,
    sans: &[&str],
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<Issued> {
    let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
    p.distinguished_name = name(cn);
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.use_authority_key_identifier_extension = true;
    p.not_before = not_before.into();
    p.not_after = not_after.into();
    let key = KeyPair::generate()?;
    let cert = p.signed_by(&key, issuer)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn write(path: &Path, contents: &str, private: bool) -> Result<()> {
    let err = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    // NB: write then rename, so a reloading reader never sees half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).map_err(err)?;
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    }
    std::fs::rename(&tmp, path).map_err(err)
}

impl Issued {
    /// Writes `<name>.pem` and `<name>-key.pem` (mode 0600) into `dir`, and `ca.pem` with
    /// `ca_pem`; returns the paths.
    pub fn write(&self, dir: &Path, name: &str, ca_pem: &str) -> Result<TlsFiles> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        let files = TlsFiles::in_dir(dir, name);
        write(&files.ca, ca_pem, false)?;
        write(&files.key, &self.key_pem, true)?;
        write(&files.cert, &self.cert_pem, false)?;
        Ok(files)
    }
}

/// Subject of the members of a development PKI ([`dev_pki`]).
pub const DEV_MEMBER: &str = "proglog-member";
/// Subject of the operator (the admin identity) of a development PKI.
pub const DEV_OPERATOR: &str = "proglog-operator";

/// A development PKI written to a directory: `ca.pem` (+ `ca-key.pem`), and a certificate and
/// key for the members (`member`, CN `proglog-member`, SANs `sans`), the operator
/// (`operator`, CN `proglog-operator`) and each of `users` (`<user>.pem`, CN `<user>`), all
/// valid for a year. Returns the CA to issue more.
pub fn dev_pki(dir: &Path, sans: &[&str], users: &[&str]) -> Result<Ca> {
    const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
    let ca = Ca::new("proglog dev CA", YEAR * 5)?;
    let ca_pem = ca.cert_pem();
    ca.issue(DEV_MEMBER, sans, YEAR)?
        .write(dir, "member", &ca_pem)?;
    ca.issue(DEV_OPERATOR, &[], YEAR)?
        .write(dir, "operator", &ca_pem)?;
    for u in users {
        ca.issue(u, &[], YEAR)?.write(dir, u, &ca_pem)?;
    }
    write(&dir.join("ca-key.pem"), &ca.key_pem(), true)?;
    Ok(ca)
}
