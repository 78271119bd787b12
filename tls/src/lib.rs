//! Mutual TLS for ProgLog, over rustls (ring) as tonic uses it.
//!
//! - [`Reloading`]: a CA bundle, a certificate chain and its key read from PEM files and read
//!   again when the files change (a renewed Secret), with no restart: the rustls configs built
//!   here ask it for the current certificate and roots on every handshake, so new connections
//!   use the new files and open ones go on undisturbed.
//! - [`server`]: a rustls `ServerConfig` whose client certificate is optional at the handshake
//!   (each gRPC plane decides whether it needs one) and an accept loop for tonic.
//! - [`client`]: a rustls `ClientConfig` and a connector for tonic channels.
//! - [`identity`]: the subject (CN) and expiry of a certificate.
//! - [`issue`] (feature `issue`): a CA and leaf certificates with rcgen.
//!
//! Nothing here knows about ProgLog's services or policy; that lives with the servers.

#![forbid(unsafe_code)]

pub mod client;
pub mod identity;
#[cfg(feature = "issue")]
pub mod issue;
mod material;
pub mod server;

pub use client::ClientTls;
pub use material::{Reloading, TlsFiles, DEFAULT_RELOAD_EVERY};

use std::path::PathBuf;

/// Errors loading certificates or setting TLS up; each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("{path}: certificate expired at {not_after} (renew it)")]
    Expired { path: PathBuf, not_after: String },
    #[error("the key in {key} does not match the certificate in {cert}: {reason}")]
    KeyMismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("CA bundle {path}: {reason}")]
    Roots { path: PathBuf, reason: String },
    #[error("bad server name {0:?}")]
    ServerName(String),
    #[cfg(feature = "issue")]
    #[error("issuing a certificate: {0}")]
    Issue(#[from] rcgen::Error),
    #[cfg(feature = "issue")]
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Result with the TLS [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The crypto provider every config here uses. NB: named explicitly rather than the process
/// default, because the workspace may link both ring and aws-lc-rs (kube's rustls), and then
/// rustls refuses to guess.
pub fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}
