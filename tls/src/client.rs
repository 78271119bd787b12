//! The client side: a rustls `ClientConfig` over [`Reloading`] material (or a CA bundle alone)
//! and a connector that gives tonic channels TLS. The server's certificate is verified against
//! the CA bundle under the name the channel dials (a DNS name or an IP address SAN), unless a
//! fixed name is set.
//!
//! NB: channels keep the `http://` scheme: the TLS is the connector's, so tonic must not try to
//! add its own (it refuses `https://` without its static `ClientTlsConfig`, which cannot reload).

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::sign::CertifiedKey;
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore,
    SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

use crate::{material, provider, Error, Reloading, Result, TlsFiles};

#[derive(Debug)]
struct Identity(Arc<Reloading>);

impl ResolvesClientCert for Identity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current().key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Delegates to a verifier built from the current CA bundle.
#[derive(Debug)]
struct Verifier(Arc<Reloading>);

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0.current().server_verifier.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .current()
            .server_verifier
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .current()
            .server_verifier
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.current().server_verifier.supported_verify_schemes()
    }
}

/// TLS settings of a client: whom to trust and, for mutual TLS, who it is.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    material: Option<Arc<Reloading>>,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("material", &self.material)
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl ClientTls {
    /// Mutual TLS with the (reloading) `material`: its certificate is presented, its CA bundle
    /// verifies servers.
    pub fn mutual(material: Arc<Reloading>) -> Result<ClientTls> {
        let mut c = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .dangerous() // NB: not dangerous: the verifier is webpki's over our CA bundle.
            .with_custom_certificate_verifier(Arc::new(Verifier(material.clone())))
            .with_client_cert_resolver(Arc::new(Identity(material.clone())));
        c.alpn_protocols = vec![b"h2".to_vec()];
        // NB: no session resumption: a resumed session carries the identity of the certificate
        // that was presented when it was first made, so after a renewal (or a swap to another
        // identity) new connections would go on as the old one. Connections are long-lived;
        // a full handshake each costs nothing that matters.
        c.resumption = rustls::client::Resumption::disabled();
        Ok(ClientTls {
            config: Arc::new(c),
            material: Some(material),
            server_name: None,
        })
    }

    /// Mutual TLS from files, reloaded when they change (see [`Reloading::spawn_watch`]; needs
    /// a Tokio runtime).
    pub fn from_files(files: TlsFiles) -> Result<ClientTls> {
        let m = Reloading::load(files)?;
        m.spawn_watch(crate::DEFAULT_RELOAD_EVERY);
        ClientTls::mutual(m)
    }

    /// Server-authenticated TLS only: servers are verified against the bundle in `ca`, no
    /// certificate is presented (enough for health checks and reflection).
    pub fn ca_only(ca: &Path) -> Result<ClientTls> {
        let pem = std::fs::read(ca).map_err(|source| Error::Read {
            path: ca.to_path_buf(),
            source,
        })?;
        let mut roots = RootCertStore::empty();
        for c in material::certs(ca, &pem)? {
            roots.add(c).map_err(|e| Error::Roots {
                path: ca.to_path_buf(),
                reason: e.to_string(),
            })?;
        }
        let mut c = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        c.alpn_protocols = vec![b"h2".to_vec()];
        Ok(ClientTls {
            config: Arc::new(c),
            material: None,
            server_name: None,
        })
    }

    /// Verifies every server under `name` instead of the host dialed (e.g. when dialing pods
    /// by IP address).
    pub fn with_server_name(mut self, name: &str) -> Result<ClientTls> {
        let n =
            ServerName::try_from(name.to_string()).map_err(|_| Error::ServerName(name.into()))?;
        self.server_name = Some(n);
        Ok(self)
    }

    /// The subject (CN) this client presents, if any.
    pub fn subject(&self) -> Option<String> {
        self.material.as_ref().map(|m| m.subject())
    }

    /// A lazily connecting channel to `endpoint` (an `http://host:port` URI with the caller's
    /// timeouts and keep-alive) over TLS.
    pub fn channel(&self, endpoint: Endpoint) -> Channel {
        endpoint.connect_with_connector_lazy(self.connector())
    }

    /// The connector tonic calls for each new connection.
    pub fn connector(&self) -> Connector {
        Connector {
            tls: TlsConnector::from(self.config.clone()),
            server_name: self.server_name.clone(),
        }
    }
}

/// TCP (no Nagle) + TLS to the URI's host and port.
#[derive(Clone)]
pub struct Connector {
    tls: TlsConnector,
    server_name: Option<ServerName<'static>>,
}

type ConnectFuture = Pin<
    Box<
        dyn Future<Output = io::Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>> + Send,
    >,
>;

impl tower_service::Service<http::Uri> for Connector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let tls = self.tls.clone();
        let fixed = self.server_name.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::other(format!("no host in {uri}")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let name = match fixed {
                Some(n) => n,
                None => ServerName::try_from(host.clone())
                    .map_err(|_| io::Error::other(format!("bad server name {host:?}")))?,
            };
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            let tls = tls.connect(name, tcp).await.map_err(|e| {
                io::Error::new(e.kind(), format!("TLS with {host}:{port}: {}", explain(&e)))
            })?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// A TLS failure said so that the reader knows what to fix.
pub fn explain(e: &io::Error) -> String {
    let Some(r) = e.get_ref().and_then(|r| r.downcast_ref::<rustls::Error>()) else {
        return e.to_string();
    };
    use rustls::Error as R;
    match r {
        // NB: BadSignature: a CA of the same name but another key (two development PKIs).
        R::InvalidCertificate(CertificateError::UnknownIssuer)
        | R::InvalidCertificate(CertificateError::BadSignature) => {
            "the server's certificate is not signed by a CA in our CA bundle (wrong --ca?)".into()
        }
        R::InvalidCertificate(CertificateError::Expired)
        | R::InvalidCertificate(CertificateError::ExpiredContext { .. }) => {
            "the server's certificate has expired".into()
        }
        R::InvalidCertificate(CertificateError::NotValidForName)
        | R::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => {
            format!("the server's certificate is not valid for the name dialed ({r})")
        }
        R::AlertReceived(AlertDescription::CertificateExpired) => {
            "the server refused our certificate: it has expired".into()
        }
        R::AlertReceived(AlertDescription::UnknownCA)
        | R::AlertReceived(AlertDescription::BadCertificate) => {
            "the server refused our certificate: not signed by a CA it trusts".into()
        }
        R::InvalidMessage(_) => "the server did not answer TLS (a plaintext server?)".into(),
        other => other.to_string(),
    }
}
