//! Connections to the members' admin API (`proglog.v1.Cluster`, and `proglog.v1.Acl` for the
//! policy push).
//!
//! [`AdminPool`] keeps one long-lived HTTP/2 channel per member address (`ip:port`), shared by
//! every reconcile and every discovery task, so a pass costs no TCP or HTTP/2 handshakes.
//! Channels connect lazily and reconnect on their own; a channel nobody used for
//! [`IDLE_CHANNEL`] is dropped (pod IPs change when pods are recreated).
//! [`AdminClient`] wraps each RPC: it authenticates ([`Auth`]: mutual TLS as the operator's
//! identity, verifying the member under its DNS name while dialing its pod IP; or, for
//! plaintext members, the bearer token), bounds the call in time and turns a failure into an
//! [`Error`] that keeps the gRPC code, so callers can tell "refused" from "not answering". This
//! module knows nothing of Kubernetes or of membership rules.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proglog_proto::v1 as pb;
use proglog_proto::v1::acl_client::AclClient;
use proglog_proto::v1::cluster_client::ClusterClient;
use proglog_tls::ClientTls;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Streaming};

/// How long a connection attempt to a member may take. Default of [`AdminPool::new`].
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a unary admin call may take (Status, Initialize, ChangeMembership, RemoveMember).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long TransferLeadership may take: the member waits for the target to catch up, lets the
/// leader lease lapse and retries a few times.
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(45);
/// A channel unused this long is dropped from the pool.
pub const IDLE_CHANNEL: Duration = Duration::from_secs(600);

/// Errors of admin calls.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The address cannot be dialed (not `host:port`).
    #[error("bad member address {addr:?}: {reason}")]
    BadAddress { addr: String, reason: String },
    /// The token cannot be sent as gRPC metadata.
    #[error("the admin token is not a valid header value")]
    BadToken,
    /// The name to verify a member under is not a DNS name.
    #[error("bad server name {0:?}: {1}")]
    BadServerName(String, String),
    /// The member answered with a gRPC error (or could not be reached: `UNAVAILABLE`).
    #[error("{addr}: {code:?}: {message}")]
    Rpc {
        addr: String,
        code: Code,
        message: String,
        /// The leader's address when a follower refused a leader-only call.
        leader_hint: Option<String>,
    },
    /// The member did not answer in time.
    #[error("{addr}: no answer within {after:?}")]
    Timeout { addr: String, after: Duration },
}

/// Result with the admin [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The gRPC code: the member's, `DEADLINE_EXCEEDED` for a timeout, `INVALID_ARGUMENT` for a
    /// bad address or token.
    pub fn code(&self) -> Code {
        match self {
            Error::BadAddress { .. } | Error::BadToken | Error::BadServerName(..) => {
                Code::InvalidArgument
            }
            Error::Rpc { code, .. } => *code,
            Error::Timeout { .. } => Code::DeadlineExceeded,
        }
    }

    /// True when the member could not be reached or did not answer (as opposed to refusing).
    pub fn is_unreachable(&self) -> bool {
        matches!(self.code(), Code::Unavailable | Code::DeadlineExceeded)
            && !matches!(
                self,
                Error::Rpc {
                    leader_hint: Some(_),
                    ..
                }
            )
    }

    fn rpc(addr: &str, s: tonic::Status) -> Error {
        let leader_hint = s
            .metadata()
            .get(proglog_proto::LEADER_METADATA_KEY)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Error::Rpc {
            addr: addr.to_string(),
            code: s.code(),
            message: s.message().to_string(),
            leader_hint,
        }
    }
}

/// How the operator proves who it is to the members of one ProgLog.
#[derive(Clone, Debug)]
pub enum ClusterAuth {
    /// Plaintext members (`spec.tls.enabled: false`): the admin API's bearer token.
    Token(String),
    /// Mutual TLS as the operator's identity for this ProgLog (its client certificate, renewed
    /// in place); each member is verified under its DNS name ([`crate::names::member_server_name`]).
    Tls {
        tls: ClientTls,
        name: String,
        namespace: String,
    },
}

impl ClusterAuth {
    /// How to call the member of ordinal `ordinal`.
    pub fn member(&self, ordinal: u32) -> Result<Auth> {
        Ok(match self {
            ClusterAuth::Token(t) => Auth::Token(t.clone()),
            ClusterAuth::Tls {
                tls,
                name,
                namespace,
            } => {
                let server_name = crate::names::member_server_name(name, namespace, ordinal);
                let tls = tls
                    .clone()
                    .with_server_name(&server_name)
                    .map_err(|e| Error::BadServerName(server_name.clone(), e.to_string()))?;
                Auth::Tls { tls, server_name }
            }
        })
    }
}

/// NB: equal when they would call the same way: the same token, or the same ProgLog's
/// identity (which is renewed in place, so it never needs replacing).
impl PartialEq for ClusterAuth {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (ClusterAuth::Token(a), ClusterAuth::Token(b)) => a == b,
            (
                ClusterAuth::Tls {
                    name: a,
                    namespace: an,
                    ..
                },
                ClusterAuth::Tls {
                    name: b,
                    namespace: bn,
                    ..
                },
            ) => a == b && an == bn,
            _ => false,
        }
    }
}

/// How to call one member.
#[derive(Clone, Debug)]
pub enum Auth {
    /// Plaintext with `authorization: Bearer <token>`.
    Token(String),
    /// Mutual TLS; the member's certificate must be valid for `server_name`.
    Tls { tls: ClientTls, server_name: String },
}

/// One lazily connected channel per member address, shared by every caller. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AdminPool {
    inner: Arc<PoolInner>,
}

#[derive(Debug)]
struct PoolInner {
    channels: Mutex<HashMap<String, (Channel, Instant)>>,
    connect_timeout: Duration,
    request_timeout: Duration,
}

impl Default for AdminPool {
    fn default() -> Self {
        Self::new()
    }
}

impl AdminPool {
    /// A pool with the default timeouts ([`CONNECT_TIMEOUT`], [`REQUEST_TIMEOUT`]).
    pub fn new() -> Self {
        Self::with_timeouts(CONNECT_TIMEOUT, REQUEST_TIMEOUT)
    }

    /// A pool with the given connect and unary-request timeouts.
    pub fn with_timeouts(connect_timeout: Duration, request_timeout: Duration) -> Self {
        AdminPool {
            inner: Arc::new(PoolInner {
                channels: Mutex::new(HashMap::new()),
                connect_timeout,
                request_timeout,
            }),
        }
    }

    /// A client for the member at `addr` (`host:port`) that authenticates with `auth`. Reuses
    /// the pooled channel; never dials here (the first call does).
    pub fn client(&self, addr: &str, auth: &Auth) -> Result<AdminClient> {
        let (token, channel) = match auth {
            Auth::Token(t) => {
                let token: MetadataValue<_> =
                    format!("Bearer {t}").parse().map_err(|_| Error::BadToken)?;
                (Some(token), self.channel(addr, None)?)
            }
            Auth::Tls { tls, server_name } => (None, self.channel(addr, Some((tls, server_name)))?),
        };
        Ok(AdminClient {
            addr: addr.to_string(),
            client: ClusterClient::new(channel.clone()),
            acl: AclClient::new(channel),
            token,
            request_timeout: self.inner.request_timeout,
        })
    }

    /// Number of pooled channels.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no channel is pooled.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops the channels to `addr` (the next call dials again).
    pub fn forget(&self, addr: &str) {
        let tls = format!("{addr} tls:");
        self.lock().retain(|k, _| k != addr && !k.starts_with(&tls));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Channel, Instant)>> {
        // NB: the map stays consistent even if a holder panicked; keep using it.
        self.inner
            .channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// NB: a TLS channel is pooled under the address and the name it verifies, so that a pod
    /// IP taken over by another member (or another ProgLog) never reuses a channel that
    /// verified someone else.
    fn channel(&self, addr: &str, tls: Option<(&ClientTls, &String)>) -> Result<Channel> {
        let key = match tls {
            None => addr.to_string(),
            Some((_, name)) => format!("{addr} tls:{name}"),
        };
        let now = Instant::now();
        let mut map = self.lock();
        map.retain(|_, (_, used)| now.duration_since(*used) < IDLE_CHANNEL);
        if let Some((ch, used)) = map.get_mut(&key) {
            *used = now;
            return Ok(ch.clone());
        }
        let bad = |reason: String| Error::BadAddress {
            addr: addr.to_string(),
            reason,
        };
        if addr.is_empty() || addr.contains('/') {
            return Err(bad("want host:port".into()));
        }
        let ep = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(self.inner.connect_timeout)
            .tcp_nodelay(true)
            // NB: keep-alives notice a member that vanished while a WatchStatus stream is open.
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true);
        let ch = match tls {
            None => ep.connect_lazy(),
            Some((tls, _)) => tls.channel(ep),
        };
        map.insert(key, (ch.clone(), now));
        Ok(ch)
    }
}

/// The admin API of one member (see [`AdminPool::client`]).
#[derive(Clone, Debug)]
pub struct AdminClient {
    addr: String,
    client: ClusterClient<Channel>,
    acl: AclClient<Channel>,
    /// The bearer token (plaintext members only).
    token: Option<MetadataValue<tonic::metadata::Ascii>>,
    request_timeout: Duration,
}

impl AdminClient {
    /// The member's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn request<T>(&self, msg: T, timeout: Option<Duration>) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Some(t) = &self.token {
            r.metadata_mut().insert("authorization", t.clone());
        }
        if let Some(t) = timeout {
            r.set_timeout(t);
        }
        r
    }

    async fn bounded<T, F>(&self, timeout: Duration, f: F) -> Result<T>
    where
        F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        match tokio::time::timeout(timeout, f).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(Error::rpc(&self.addr, s)),
            Err(_) => Err(Error::Timeout {
                addr: self.addr.clone(),
                after: timeout,
            }),
        }
    }

    /// The member's Raft status (and its followers' when it leads).
    pub async fn status(&self) -> Result<pb::ClusterStatus> {
        let t = self.request_timeout;
        let req = self.request(pb::StatusRequest {}, Some(t));
        self.bounded(t, self.client.clone().status(req)).await
    }

    /// A stream of the member's status: now, and on every change of role, term, leader or
    /// membership. Only opening the stream is bounded in time; the stream lasts until the member
    /// or the connection goes away.
    pub async fn watch_status(&self) -> Result<Streaming<pb::ClusterStatus>> {
        let req = self.request(pb::StatusRequest {}, None);
        self.bounded(self.request_timeout, self.client.clone().watch_status(req))
            .await
    }

    /// Makes the given members (or, when empty, this member alone) the first voters.
    /// `ALREADY_EXISTS` when the member was initialized already.
    pub async fn initialize(&self, members: Vec<pb::Member>) -> Result<()> {
        let t = self.request_timeout;
        let req = self.request(pb::InitializeRequest { members }, Some(t));
        self.bounded(t, self.client.clone().initialize(req))
            .await
            .map(|_| ())
    }

    /// Adds a learner (call the leader); the stream reports its progress until it caught up.
    /// Only opening the stream is bounded in time.
    pub async fn add_learner(
        &self,
        member: pb::Member,
    ) -> Result<Streaming<pb::AddLearnerProgress>> {
        let req = self.request(
            pb::AddLearnerRequest {
                member: Some(member),
            },
            None,
        );
        self.bounded(self.request_timeout, self.client.clone().add_learner(req))
            .await
    }

    /// Sets the complete voter set (call the leader); returns the leader's status after it.
    pub async fn change_membership(
        &self,
        voters: Vec<u64>,
        retain_as_learners: bool,
    ) -> Result<pb::ClusterStatus> {
        let t = self.request_timeout;
        let req = self.request(
            pb::ChangeMembershipRequest {
                voters,
                retain_as_learners,
            },
            Some(t),
        );
        let r = self
            .bounded(t, self.client.clone().change_membership(req))
            .await?;
        Ok(r.status.unwrap_or_default())
    }

    /// Removes a voter or learner (call the leader; the leader cannot remove itself).
    pub async fn remove_member(&self, node_id: u64) -> Result<pb::ClusterStatus> {
        let t = self.request_timeout;
        let req = self.request(pb::RemoveMemberRequest { node_id }, Some(t));
        let r = self
            .bounded(t, self.client.clone().remove_member(req))
            .await?;
        Ok(r.status.unwrap_or_default())
    }

    /// Moves leadership to voter `node_id` (call the leader); returns the leader afterwards.
    pub async fn transfer_leadership(&self, node_id: u64) -> Result<u64> {
        let t = TRANSFER_TIMEOUT;
        let req = self.request(pb::TransferLeadershipRequest { node_id }, Some(t));
        let r = self
            .bounded(t, self.client.clone().transfer_leadership(req))
            .await?;
        Ok(r.leader_id)
    }

    /// Puts the ACL `model` and `policy` in force on the member at once (`Acl.SetPolicy`);
    /// Ok(true) when that changed its policy. `FAILED_PRECONDITION` from a member without TLS.
    pub async fn set_policy(&self, model: &str, policy: &str) -> Result<bool> {
        let t = self.request_timeout;
        let msg = pb::SetPolicyRequest {
            model: model.to_string(),
            policy: policy.to_string(),
        };
        let req = self.request(msg, Some(t));
        let r = self.bounded(t, self.acl.clone().set_policy(req)).await?;
        Ok(r.changed)
    }
}

/// Maps a stream item's error the same way as the calls do.
pub fn stream_error(addr: &str, s: tonic::Status) -> Error {
    Error::rpc(addr, s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_channel_per_address_and_bad_input_is_refused() {
        let pool = AdminPool::new();
        let tok = |t: &str| Auth::Token(t.into());
        let a = pool.client("127.0.0.1:1", &tok("t")).unwrap();
        let _b = pool.client("127.0.0.1:1", &tok("other")).unwrap();
        let _c = pool.client("127.0.0.1:2", &tok("t")).unwrap();
        assert_eq!(pool.len(), 2);
        assert_eq!(a.addr(), "127.0.0.1:1");
        assert!(matches!(
            pool.client("127.0.0.1:1", &tok("bad\ntoken")),
            Err(Error::BadToken)
        ));
        assert!(matches!(
            pool.client("http://x:1", &tok("t")),
            Err(Error::BadAddress { .. })
        ));
        pool.forget("127.0.0.1:1");
        assert_eq!(pool.len(), 1);
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable_not_refused() {
        // Bind then drop: the port is (almost certainly) closed for the call.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pool = AdminPool::with_timeouts(Duration::from_millis(500), Duration::from_secs(1));
        let e = pool
            .client(&format!("127.0.0.1:{port}"), &Auth::Token("t".into()))
            .unwrap()
            .status()
            .await
            .unwrap_err();
        assert!(e.is_unreachable(), "{e:?}");
        assert_eq!(e.code(), Code::Unavailable);
    }
}
