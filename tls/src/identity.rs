//! Who a certificate names and until when: the subject's common name (CN), which is the
//! subject of authorization, as in the book's proglog, and the end of its validity.

use rustls_pki_types::CertificateDer;
use x509_parser::time::ASN1Time;

/// The CN of the subject of `cert` (its first one), if it parses and has one.
pub fn subject(cert: &CertificateDer<'_>) -> Option<String> {
    describe(cert)
        .ok()
        .map(|(s, _)| s)
        .filter(|s| !s.is_empty())
}

/// The subject CN (empty when there is none) and the end of validity of `cert`.
pub fn describe(cert: &CertificateDer<'_>) -> Result<(String, ASN1Time), String> {
    let (_, c) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let cn = c
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_string();
    Ok((cn, c.validity().not_after))
}

/// The DNS names among the subject alternative names of `cert` (empty when it has none or
/// does not parse).
pub fn dns_names(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, c)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(san)) = c.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect()
}

/// True when `not_after` has passed.
pub fn expired(not_after: ASN1Time) -> bool {
    ASN1Time::now() > not_after
}

/// `not_after` for a human.
pub fn rfc3339(t: ASN1Time) -> String {
    t.to_string()
}
