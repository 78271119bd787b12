//! The certificate material of one process (CA bundle, certificate chain, key), read from PEM
//! files and read again when they change.
//!
//! NB: change is found by polling the files' bytes (a few KiB, once a second) rather than by
//! file-system events: a Kubernetes Secret volume swaps a symlink to a new directory, and a
//! poll of what the path resolves to sees that the same way as an in-place write. A half-written
//! update (the new certificate with the old key) does not load; the old material stays in use
//! and the next poll tries again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::{identity, provider, Error, Result};

/// How often [`Reloading::spawn_watch`] looks at the files by default: 1 s.
pub const DEFAULT_RELOAD_EVERY: Duration = Duration::from_secs(1);

/// Where the PEM files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA bundle: the certificates peers' certificates must chain to (several during a CA
    /// rotation).
    pub ca: PathBuf,
    /// This process's certificate chain, leaf first.
    pub cert: PathBuf,
    /// The leaf's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl TlsFiles {
    /// `ca.pem`, `<name>.pem` and `<name>-key.pem` in `dir`.
    pub fn in_dir(dir: &Path, name: &str) -> Self {
        TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}-key.pem")),
        }
    }
}

/// One loaded version of the files.
pub(crate) struct Material {
    pub key: Arc<CertifiedKey>,
    pub server_verifier: Arc<dyn ServerCertVerifier>,
    pub client_verifier: Arc<dyn ClientCertVerifier>,
    pub subject: String,
    raw: [Vec<u8>; 3],
}

/// The current material, swapped when the files change. Configs built by [`crate::server`] and
/// [`crate::client`] read it on every handshake.
pub struct Reloading {
    files: TlsFiles,
    current: RwLock<Arc<Material>>,
}

impl std::fmt::Debug for Reloading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading")
            .field("files", &self.files)
            .field("subject", &self.subject())
            .finish()
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn pem_err(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Pem {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// The certificates in a PEM file; an error when there are none.
pub(crate) fn certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(path, e))?;
    if certs.is_empty() {
        return Err(pem_err(path, "no CERTIFICATE in it"));
    }
    Ok(certs)
}

impl Material {
    fn load(files: &TlsFiles) -> Result<Material> {
        let raw = [read(&files.ca)?, read(&files.cert)?, read(&files.key)?];
        Material::parse(files, raw)
    }

    fn parse(files: &TlsFiles, raw: [Vec<u8>; 3]) -> Result<Material> {
        let provider = provider();
        let mut roots = RootCertStore::empty();
        for ca in certs(&files.ca, &raw[0])? {
            roots.add(ca).map_err(|e| Error::Roots {
                path: files.ca.clone(),
                reason: e.to_string(),
            })?;
        }
        let roots = Arc::new(roots);
        let chain = certs(&files.cert, &raw[1])?;
        let (subject, not_after) =
            identity::describe(&chain[0]).map_err(|e| pem_err(&files.cert, e))?;
        if identity::expired(not_after) {
            return Err(Error::Expired {
                path: files.cert.clone(),
                not_after: identity::rfc3339(not_after),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(&raw[2]).map_err(|e| pem_err(&files.key, e))?;
        let key =
            CertifiedKey::from_der(chain, key, &provider).map_err(|e| Error::KeyMismatch {
                cert: files.cert.clone(),
                key: files.key.clone(),
                reason: e.to_string(),
            })?;
        let server_verifier =
            WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| Error::Roots {
                    path: files.ca.clone(),
                    reason: e.to_string(),
                })?;
        // NB: a client certificate is optional at the handshake: health checks and the
        // reflection service need none, and a call without one is better refused as
        // UNAUTHENTICATED (naming what is missing) than with a bare handshake failure.
        let client_verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
            .allow_unauthenticated()
            .build()
            .map_err(|e| Error::Roots {
                path: files.ca.clone(),
                reason: e.to_string(),
            })?;
        Ok(Material {
            key: Arc::new(key),
            server_verifier,
            client_verifier,
            subject,
            raw,
        })
    }
}

impl Reloading {
    /// Reads the files once; an error names the file at fault.
    pub fn load(files: TlsFiles) -> Result<Arc<Reloading>> {
        let m = Material::load(&files)?;
        Ok(Arc::new(Reloading {
            files,
            current: RwLock::new(Arc::new(m)),
        }))
    }

    /// Material from PEM bytes held in memory (e.g. read from a Kubernetes Secret) instead of
    /// files: `raw` is the CA bundle, the certificate chain and the key; `origin` names where
    /// each came from, for error messages only (nothing is read from those paths). Swap in new
    /// bytes with [`Reloading::update`]; [`Reloading::reload`] and [`Reloading::spawn_watch`]
    /// are for file-backed material and must not be used on it.
    pub fn from_pem(origin: TlsFiles, raw: [Vec<u8>; 3]) -> Result<Arc<Reloading>> {
        let m = Material::parse(&origin, raw)?;
        Ok(Arc::new(Reloading {
            files: origin,
            current: RwLock::new(Arc::new(m)),
        }))
    }

    /// Swaps in new PEM bytes (see [`Reloading::from_pem`]) when they differ from the current
    /// ones; Ok(true) when it swapped. On an error the old material stays in use.
    pub fn update(&self, raw: [Vec<u8>; 3]) -> Result<bool> {
        if self.current().raw == raw {
            return Ok(false);
        }
        let m = Material::parse(&self.files, raw)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(m);
        Ok(true)
    }

    /// The files this material comes from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The subject (CN) of the current certificate.
    pub fn subject(&self) -> String {
        self.current().subject.clone()
    }

    pub(crate) fn current(&self) -> Arc<Material> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reads the files again; swaps in the new material when they changed and load. Ok(true)
    /// when it swapped. On an error the old material stays in use.
    pub fn reload(&self) -> Result<bool> {
        let raw = [
            read(&self.files.ca)?,
            read(&self.files.cert)?,
            read(&self.files.key)?,
        ];
        if self.current().raw == raw {
            return Ok(false);
        }
        let m = Material::parse(&self.files, raw)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(m);
        Ok(true)
    }

    /// Polls the files every `every` and reloads them when they change, for as long as this
    /// material is in use (the task ends when the last `Arc` is dropped).
    pub fn spawn_watch(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Reloading> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                tokio::time::sleep(every).await;
                let Some(me) = weak.upgrade() else { return };
                match me.reload() {
                    Ok(true) => {
                        failing = false;
                        tracing::info!(subject = %me.subject(), cert = %me.files.cert.display(),
                            "TLS certificate reloaded");
                    }
                    Ok(false) => failing = false,
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(
                            "TLS files changed but do not load (keeping the old ones): {e}"
                        );
                    }
                    Err(_) => {}
                }
            }
        })
    }
}
