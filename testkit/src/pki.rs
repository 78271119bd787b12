//! Certificates for tests: a throw-away development PKI (CA, members, operator, users) in a
//! temporary directory, the book's ACL plus a `reader` who may only consume, and TLS client
//! settings for each identity.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use proglog_tls::issue::{dev_pki, Ca};
use proglog_tls::{ClientTls, TlsFiles};
use tonic::transport::{Channel, Endpoint};

/// The users of a [`TestPki`]: `root` may produce and consume, `reader` may consume, `nobody`
/// may do nothing.
pub const USERS: &[&str] = &["root", "reader", "nobody"];

/// A development PKI in a temporary directory.
pub struct TestPki {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
}

impl TestPki {
    /// CA, `member` (SANs 127.0.0.1 and localhost), `operator`, [`USERS`], `model.conf` and
    /// `policy.csv`.
    pub fn new() -> Result<TestPki> {
        let dir = tempfile::tempdir()?;
        let ca = dev_pki(dir.path(), &["127.0.0.1", "localhost"], USERS)?;
        std::fs::write(
            dir.path().join("model.conf"),
            include_str!("../../logserver/acl/model.conf"),
        )?;
        let policy = format!(
            "{}p, reader, *, consume\n",
            include_str!("../../logserver/acl/policy.csv")
        );
        std::fs::write(dir.path().join("policy.csv"), policy)?;
        Ok(TestPki { dir, ca })
    }

    /// The files of identity `name` (`member`, `operator` or a user).
    pub fn files(&self, name: &str) -> TlsFiles {
        TlsFiles::in_dir(self.dir.path(), name)
    }

    pub fn model(&self) -> PathBuf {
        self.dir.path().join("model.conf")
    }

    pub fn policy(&self) -> PathBuf {
        self.dir.path().join("policy.csv")
    }

    /// Issues (or renews) identity `name` with `sans`, valid for `valid_for`, into this PKI's
    /// directory.
    pub fn issue(&self, name: &str, cn: &str, sans: &[&str], valid_for: Duration) -> Result<()> {
        self.ca
            .issue(cn, sans, valid_for)?
            .write(self.dir.path(), name, &self.ca.cert_pem())?;
        Ok(())
    }

    /// Mutual TLS as identity `name`.
    pub fn client(&self, name: &str) -> Result<ClientTls> {
        Ok(ClientTls::from_files(self.files(name))?)
    }

    /// TLS with no client certificate.
    pub fn anonymous(&self) -> Result<ClientTls> {
        Ok(ClientTls::ca_only(&self.dir.path().join("ca.pem"))?)
    }
}

/// A lazy channel to `addr` over `tls`, or plaintext when `tls` is `None`.
pub fn channel(tls: Option<&ClientTls>, addr: &str) -> Result<Channel> {
    let ep = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10));
    Ok(match tls {
        Some(t) => t.channel(ep),
        None => ep.connect_lazy(),
    })
}
