//! How the client dials a member: one place that turns `host:port` into a tonic endpoint with the
//! configured timeouts, HTTP/2 keep-alive and TLS. Channels are lazy: they connect on first use
//! and reconnect by themselves after a failure.

use std::time::Duration;

use proglog_tls::ClientTls;
use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result};

/// A lazily connecting channel to `addr` (`host:port`, or a full `http://` URI), over `tls`
/// when given (the member is verified under the host name dialed).
pub fn lazy_channel(
    addr: &str,
    connect_timeout: Duration,
    keep_alive: Duration,
    tls: Option<&ClientTls>,
) -> Result<Channel> {
    let uri = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let ep = Endpoint::from_shared(uri).map_err(|e| Error::BadAddress {
        addr: addr.to_string(),
        reason: e.to_string(),
    })?;
    if ep.uri().port_u16().is_none() {
        return Err(Error::BadAddress {
            addr: addr.to_string(),
            reason: "no port".into(),
        });
    }
    let ep = ep
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(keep_alive)
        .keep_alive_timeout(keep_alive)
        .keep_alive_while_idle(true);
    Ok(match tls {
        Some(t) => t.channel(ep),
        None => ep.connect_lazy(),
    })
}

/// TLS settings from PEM files: the CA bundle that verifies members, and for mutual TLS this
/// client's certificate and key (reloaded when the files change). Errors name the file and
/// what is wrong with it (unreadable, no certificate, expired, key not matching).
pub fn tls_from_files(
    ca: &std::path::Path,
    identity: Option<(&std::path::Path, &std::path::Path)>,
) -> Result<ClientTls> {
    let r = match identity {
        Some((cert, key)) => ClientTls::from_files(proglog_tls::TlsFiles {
            ca: ca.to_path_buf(),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        }),
        None => ClientTls::ca_only(ca),
    };
    r.map_err(|e| Error::Tls(e.to_string()))
}

/// Adds `authorization: Bearer <token>` to a request (nothing when `token` is empty: under TLS
/// the admin API authenticates the certificate instead).
pub fn with_token<T>(msg: T, token: &str) -> Result<tonic::Request<T>> {
    let mut r = tonic::Request::new(msg);
    if token.is_empty() {
        return Ok(r);
    }
    let v = format!("Bearer {token}")
        .parse()
        .map_err(|_| Error::Config {
            field: "admin_token",
            reason: "not a valid header value (printable ASCII only)".into(),
        })?;
    r.metadata_mut().insert("authorization", v);
    Ok(r)
}
