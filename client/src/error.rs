//! The client's one error type. Every variant says what went wrong and, where a person can act on
//! it, what to do next; [`Error::from_status`] is the one mapping from gRPC status codes.

use std::time::Duration;

/// Errors of the ProgLog client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The resolver knows no member to send the call to.
    #[error("no ProgLog member is known yet (the resolver found none): check the address or cluster name, and that the members run")]
    NoMembers,
    /// Members are known but none leads (an election is running, or the cluster was never initialized).
    #[error("no leader is known yet: an election may be running, or the cluster is not initialized (run `proglog admin init`)")]
    NoLeader,
    /// The offset is past the end of the log (or before its start, after retention).
    #[error("{message}")]
    OutOfRange {
        /// The offset asked for.
        offset: u64,
        /// The server's message, which names the readable range.
        message: String,
    },
    /// The server refused the request (e.g. a record over the size limit).
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// The member did not know who called: no client certificate under TLS, or a missing or
    /// bad admin token in plaintext.
    #[error("the member refused the call as unauthenticated: {0} (under TLS pass a certificate: --cert/--key; in plaintext the admin token: --admin-token-file)")]
    Unauthenticated(String),
    /// The member knows who called and refused: the ACL does not grant the action, or the
    /// plane accepts another identity.
    #[error("{addr}: permission denied: {message}")]
    PermissionDenied { addr: String, message: String },
    /// TLS settings that cannot be used (unreadable file, expired certificate, key mismatch).
    #[error("TLS: {0}")]
    Tls(String),
    /// The cluster refused an idempotent Produce (`proglog-producer-error` metadata names the
    /// reason). The client recovers from `unknown-producer`, `stale-epoch` and `out-of-order` by
    /// itself (a new producer epoch); this reaches the caller only if that failed too.
    #[error("{addr}: the cluster refused the producer sequence ({reason}): {message}")]
    ProducerRefused {
        addr: String,
        reason: String,
        message: String,
    },
    /// Retries ran out (the last error is kept).
    #[error("gave up after {attempts} attempts in {elapsed:?}")]
    RetriesExhausted {
        attempts: u32,
        elapsed: Duration,
        #[source]
        last: Box<Error>,
    },
    /// Any other gRPC error, with the member that returned it.
    #[error("{addr}: {code:?}: {message}")]
    Rpc {
        addr: String,
        code: tonic::Code,
        message: String,
        /// The leader the member named in `proglog-leader` metadata, if any.
        leader_hint: Option<String>,
    },
    /// An address that cannot be dialled.
    #[error("bad address {addr:?}: {reason} (expected host:port)")]
    BadAddress { addr: String, reason: String },
    /// The settings are inconsistent; names the field.
    #[error("client config: {field}: {reason}")]
    Config { field: &'static str, reason: String },
    /// A Kubernetes API error.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The ProgLog custom resource definition is not installed in the cluster.
    #[error("the ProgLog CRD (proglogs.proglog.dev) is not installed in this cluster: install the operator (kubectl apply -k manifests/) first")]
    CrdMissing,
    /// The named ProgLog does not exist.
    #[error("ProgLog {namespace}/{name} not found: check --cluster and --namespace (kubectl get plog -A)")]
    NotFound { namespace: String, name: String },
    /// The ProgLogUser named by `--user` cannot give a certificate (missing, not Ready, of
    /// another ProgLog, its Secret unreadable); `reason` says which and what to do.
    #[error("ProgLogUser {namespace}/{name}: {reason}")]
    User {
        namespace: String,
        name: String,
        reason: String,
    },
}

/// Result with the client [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Maps a gRPC status from member `addr` to an error. `offset` is the offset a Consume asked for.
    pub fn from_status(addr: &str, status: &tonic::Status, offset: Option<u64>) -> Error {
        if let Some(reason) = metadata(status, proglog_proto::PRODUCER_ERROR_METADATA_KEY) {
            return Error::ProducerRefused {
                addr: addr.to_string(),
                reason,
                message: status.message().to_string(),
            };
        }
        match status.code() {
            tonic::Code::OutOfRange => Error::OutOfRange {
                offset: offset.unwrap_or_default(),
                message: status.message().to_string(),
            },
            tonic::Code::InvalidArgument => Error::InvalidArgument(status.message().to_string()),
            tonic::Code::Unauthenticated => Error::Unauthenticated(status.message().to_string()),
            tonic::Code::PermissionDenied => Error::PermissionDenied {
                addr: addr.to_string(),
                message: status.message().to_string(),
            },
            // NB: tonic reports a connection that broke mid-call as UNKNOWN with the transport
            // error as source; for routing it is the member being unavailable.
            tonic::Code::Unknown if std::error::Error::source(status).is_some() => Error::Rpc {
                addr: addr.to_string(),
                code: tonic::Code::Unavailable,
                message: format!("connection lost: {}", with_sources(status)),
                leader_hint: None,
            },
            // NB: a connection that could not be made (refused, TLS failure) carries the reason
            // in its source chain only; say it.
            tonic::Code::Unavailable if std::error::Error::source(status).is_some() => Error::Rpc {
                addr: addr.to_string(),
                code: tonic::Code::Unavailable,
                message: with_sources(status),
                leader_hint: leader_hint(status),
            },
            code => Error::Rpc {
                addr: addr.to_string(),
                code,
                message: status.message().to_string(),
                leader_hint: leader_hint(status),
            },
        }
    }

    /// True when the call may succeed if tried again (elsewhere or later).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::NoMembers | Error::NoLeader => true,
            Error::Rpc { code, .. } => matches!(
                code,
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
            ),
            _ => false,
        }
    }

    /// The reason the cluster refused an idempotent Produce, if it did.
    pub fn producer_refusal(&self) -> Option<&str> {
        match self {
            Error::ProducerRefused { reason, .. } => Some(reason),
            Error::RetriesExhausted { last, .. } => last.producer_refusal(),
            _ => None,
        }
    }

    /// The leader's address a follower named when it refused a write.
    pub fn leader_hint(&self) -> Option<&str> {
        match self {
            Error::Rpc { leader_hint, .. } => leader_hint.as_deref(),
            _ => None,
        }
    }
}

/// The status message followed by each error in its source chain (a TLS failure is only there).
fn with_sources(status: &tonic::Status) -> String {
    let mut s = status.message().to_string();
    let mut src = std::error::Error::source(status);
    while let Some(e) = src {
        let m = e.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = e.source();
    }
    s
}

/// The `proglog-leader` metadata of a status, when present and not empty.
pub fn leader_hint(status: &tonic::Status) -> Option<String> {
    metadata(status, proglog_proto::LEADER_METADATA_KEY)
}

/// A metadata value of a status, when present and not empty.
fn metadata(status: &tonic::Status, key: &str) -> Option<String> {
    status
        .metadata()
        .get(key)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}
