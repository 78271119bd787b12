//! The part of the kubelet API that `kubectl logs` needs: `GET /containerLogs/<ns>/<pod>/<container>`
//! over HTTPS, for kube-apiserver only (a client certificate signed by the cluster CA is required).
//!
//! Query parameters `tailLines`, `limitBytes` and `follow` are honoured (`follow` streams the log file
//! as it grows until the client goes away); `previous` is accepted and ignored: a container's runs share
//! one log file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use crate::{Config, Error, Result};

/// TLS material of the endpoint.
#[derive(Debug, Clone)]
pub struct Tls {
    /// Serving certificate (PEM).
    pub cert: PathBuf,
    /// Its key (PEM).
    pub key: PathBuf,
    /// CA that client certificates must chain to (PEM).
    pub client_ca: PathBuf,
}

fn tls_config(tls: &Tls) -> Result<ServerConfig> {
    let bad =
        |what: &str, e: &dyn std::fmt::Display| Error::Config(format!("kubelet TLS {what}: {e}"));
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&tls.client_ca).map_err(|e| bad("client CA", &e))? {
        roots
            .add(c.map_err(|e| bad("client CA", &e))?)
            .map_err(|e| bad("client CA", &e))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| bad("client verifier", &e))?;
    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .map_err(|e| bad("certificate", &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("certificate", &e))?;
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| bad("key", &e))?;
    ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("protocols", &e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| bad("certificate", &e))
}

/// A parsed `/containerLogs` request.
#[derive(Debug, PartialEq, Eq)]
pub struct LogRequest {
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Container name.
    pub container: String,
    /// Keep streaming.
    pub follow: bool,
    /// Only the last N lines.
    pub tail_lines: Option<usize>,
    /// At most this many bytes.
    pub limit_bytes: Option<usize>,
}

/// Parses the request target (`/containerLogs/ns/pod/container?follow=true&tailLines=10`).
pub fn parse_target(target: &str) -> Option<LogRequest> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut parts = path.strip_prefix("/containerLogs/")?.split('/');
    let (namespace, pod, container) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || [namespace, pod, container]
            .iter()
            .any(|s| s.is_empty() || s.contains(".."))
    {
        return None;
    }
    let mut req = LogRequest {
        namespace: namespace.into(),
        pod: pod.into(),
        container: container.into(),
        follow: false,
        tail_lines: None,
        limit_bytes: None,
    };
    for kv in query.split('&') {
        match kv.split_once('=') {
            Some(("follow", v)) => req.follow = v == "true" || v == "1",
            Some(("tailLines", v)) => req.tail_lines = v.parse().ok(),
            Some(("limitBytes", v)) => req.limit_bytes = v.parse().ok(),
            _ => {}
        }
    }
    Some(req)
}

/// The newest log file of the container (pods of the same name differ by UID).
fn log_file(cfg: &Config, r: &LogRequest) -> Option<PathBuf> {
    let prefix = format!("{}_{}_", r.namespace, r.pod);
    std::fs::read_dir(cfg.state_dir.join("logs"))
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path().join(format!("{}.log", r.container)))
        .filter(|p| p.is_file())
        .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
}

/// The bytes to send first: the whole file, or its last `tail` lines, cut to `limit`.
pub fn initial_chunk(data: &[u8], tail: Option<usize>, limit: Option<usize>) -> &[u8] {
    let mut start = 0;
    if let Some(n) = tail {
        let body = data.strip_suffix(b"\n").unwrap_or(data);
        let mut seen = 0;
        start = data.len();
        if n == 0 {
            return &[];
        }
        for (i, b) in body.iter().enumerate().rev() {
            if *b == b'\n' {
                seen += 1;
                if seen == n {
                    start = i + 1;
                    break;
                }
            }
        }
        if seen < n {
            start = 0;
        }
    }
    let end = limit
        .map(|l| (start + l).min(data.len()))
        .unwrap_or(data.len());
    &data[start..end]
}

async fn respond<S: AsyncRead + AsyncWrite + Unpin>(cfg: &Config, mut s: S) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16384 {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let mut first = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    let found = (method == "GET")
        .then(|| parse_target(target))
        .flatten()
        .and_then(|r| log_file(cfg, &r).map(|f| (r, f)));
    let Some((req, file)) = found else {
        let msg = "not found: only GET /containerLogs/<namespace>/<pod>/<container> is served\n";
        let resp = format!("HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{msg}", msg.len());
        return s.write_all(resp.as_bytes()).await;
    };
    stream_log(&mut s, &file, &req).await
}

async fn stream_log<S: AsyncWrite + Unpin>(
    s: &mut S,
    file: &Path,
    req: &LogRequest,
) -> std::io::Result<()> {
    s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n")
        .await?;
    let data = tokio::fs::read(file).await?;
    let chunk = initial_chunk(&data, req.tail_lines, req.limit_bytes);
    s.write_all(chunk).await?;
    let mut sent = chunk.len();
    if !req.follow {
        return s.flush().await;
    }
    let mut f = tokio::fs::File::open(file).await?;
    f.seek(std::io::SeekFrom::Start(data.len() as u64)).await?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            s.flush().await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let n = req
            .limit_bytes
            .map(|l| n.min(l.saturating_sub(sent)))
            .unwrap_or(n);
        s.write_all(&buf[..n]).await?;
        sent += n;
        if req.limit_bytes.is_some_and(|l| sent >= l) {
            return s.flush().await;
        }
    }
}

/// Serves the endpoint on `127.0.0.1:port` forever.
pub async fn serve(cfg: Config, tls: Tls, port: u16) -> Result<()> {
    let acceptor = TlsAcceptor::from(Arc::new(tls_config(&tls)?));
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(Error::io(format!(
            "binding the kubelet port 127.0.0.1:{port}"
        )))?;
    info!(port, "serving container logs (kubelet API subset)");
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!("kubelet endpoint accept: {e}");
                continue;
            }
        };
        let (acceptor, cfg) = (acceptor.clone(), cfg.clone());
        tokio::spawn(async move {
            match acceptor.accept(tcp).await {
                Ok(tls) => {
                    if let Err(e) = respond(&cfg, tls).await {
                        if e.kind() != std::io::ErrorKind::BrokenPipe {
                            warn!("kubelet endpoint: {e}");
                        }
                    }
                }
                Err(e) => warn!("kubelet endpoint TLS: {e}"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let r = parse_target("/containerLogs/ns/web-0/main?follow=true&tailLines=5&limitBytes=10")
            .unwrap();
        assert_eq!(
            (r.namespace.as_str(), r.pod.as_str(), r.container.as_str()),
            ("ns", "web-0", "main")
        );
        assert!(r.follow);
        assert_eq!((r.tail_lines, r.limit_bytes), (Some(5), Some(10)));
        assert!(parse_target("/containerLogs/ns/pod").is_none());
        assert!(parse_target("/containerLogs/ns/../x").is_none());
        assert!(parse_target("/pods").is_none());
    }

    #[test]
    fn tail_and_limit() {
        let d = b"a\nb\nc\n";
        assert_eq!(initial_chunk(d, None, None), d);
        assert_eq!(initial_chunk(d, Some(2), None), b"b\nc\n");
        assert_eq!(initial_chunk(d, Some(9), None), d);
        assert_eq!(initial_chunk(d, Some(0), None), b"");
        assert_eq!(initial_chunk(d, Some(1), Some(1)), b"c");
        assert_eq!(initial_chunk(b"x\ny", Some(1), None), b"y");
    }
}
