//! How the client dials a member: one place that turns `host:port` into a tonic endpoint with the
//! configured timeouts and HTTP/2 keep-alive. Channels are lazy: they connect on first use and
//! reconnect by themselves after a failure.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result};

/// A lazily connecting channel to `addr` (`host:port`, or a full `http://` URI).
pub fn lazy_channel(
    addr: &str,
    connect_timeout: Duration,
    keep_alive: Duration,
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
    Ok(ep
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(keep_alive)
        .keep_alive_timeout(keep_alive)
        .keep_alive_while_idle(true)
        .connect_lazy())
}

/// Adds `authorization: Bearer <token>` to a request.
pub fn with_token<T>(msg: T, token: &str) -> Result<tonic::Request<T>> {
    let mut r = tonic::Request::new(msg);
    let v = format!("Bearer {token}")
        .parse()
        .map_err(|_| Error::Config {
            field: "admin_token",
            reason: "not a valid header value (printable ASCII only)".into(),
        })?;
    r.metadata_mut().insert("authorization", v);
    Ok(r)
}
