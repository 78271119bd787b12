//! The admin (`proglog.v1.Cluster`) API for clusters run without the operator: form a cluster,
//! add a member (as learner, then voter once caught up), remove one, move leadership, read the
//! Raft status, set the voter set, wait until a member serves. Calls that only the leader serves
//! are sent to the leader, found through the member the caller named. In plaintext every call
//! carries the bearer token (except the health check of [`wait_serving`]); under TLS the
//! client's certificate (the operator's identity) is what the members check.

use std::time::Duration;

use proglog_proto::v1 as pb;
use proglog_proto::v1::cluster_client::ClusterClient;
use tonic::transport::Channel;

use crate::conn::{lazy_channel, with_token};
use crate::error::{leader_hint, Error, Result};

/// An admin client entering the cluster through one member.
#[derive(Debug, Clone)]
pub struct Admin {
    addr: String,
    token: String,
    timeout: Duration,
    tls: Option<proglog_tls::ClientTls>,
}

impl Admin {
    /// The member this client enters the cluster through.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// An admin client that talks to `addr` (and to the leader it names).
    pub fn new(addr: impl Into<String>, token: impl Into<String>) -> Result<Admin> {
        let addr = addr.into();
        lazy_channel(&addr, Duration::from_secs(1), Duration::from_secs(20), None)?;
        Ok(Admin {
            addr,
            token: token.into(),
            timeout: Duration::from_secs(30),
            tls: None,
        })
    }

    /// Talks to the members over `tls` (its certificate must be the operator's identity).
    pub fn with_tls(mut self, tls: proglog_tls::ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets the timeout of each call (default 30 s; AddLearner waits for the catch-up in it).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn client(&self, addr: &str) -> Result<ClusterClient<Channel>> {
        Ok(ClusterClient::new(lazy_channel(
            addr,
            Duration::from_secs(2),
            Duration::from_secs(20),
            self.tls.as_ref(),
        )?))
    }

    fn req<T>(&self, msg: T) -> Result<tonic::Request<T>> {
        let mut r = with_token(msg, &self.token)?;
        r.set_timeout(self.timeout);
        Ok(r)
    }

    /// The Raft status as member `addr` sees it.
    pub async fn status_of(&self, addr: &str) -> Result<pb::ClusterStatus> {
        self.client(addr)?
            .status(self.req(pb::StatusRequest {})?)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| Error::from_status(addr, &s, None))
    }

    /// The Raft status as the leader sees it (with every member's lag), or as the entry member
    /// sees it when no leader is known.
    pub async fn status(&self) -> Result<pb::ClusterStatus> {
        let st = self.status_of(&self.addr).await?;
        if st.role == pb::Role::Leader as i32 || st.leader_addr.is_empty() {
            return Ok(st);
        }
        match self.status_of(&st.leader_addr).await {
            Ok(l) => Ok(l),
            Err(_) => Ok(st),
        }
    }

    /// The leader's address, found through the entry member.
    pub async fn leader(&self) -> Result<String> {
        let st = self.status_of(&self.addr).await?;
        if st.leader_addr.is_empty() {
            return Err(Error::NoLeader);
        }
        Ok(st.leader_addr)
    }

    /// Makes `members` (or the entry member alone, when empty) the first voters. Returns false
    /// when the cluster was initialized already.
    pub async fn init(&self, members: Vec<pb::Member>) -> Result<bool> {
        let r = self
            .client(&self.addr)?
            .initialize(self.req(pb::InitializeRequest { members })?)
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(false),
            Err(s) => Err(Error::from_status(&self.addr, &s, None)),
        }
    }

    /// Runs `op` at the leader; when a member refuses because it does not lead, once more at
    /// the leader it names.
    async fn at_leader<T, F, Fut>(&self, mut op: F) -> Result<T>
    where
        F: FnMut(ClusterClient<Channel>, String) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let mut addr = self.leader().await?;
        for _ in 0..3 {
            match op(self.client(&addr)?, addr.clone()).await {
                Ok(v) => return Ok(v),
                Err(s) => match leader_hint(&s) {
                    Some(l) if l != addr => addr = l,
                    _ => return Err(Error::from_status(&addr, &s, None)),
                },
            }
        }
        Err(Error::NoLeader)
    }

    /// Adds `member` as a learner, reporting its catch-up through `progress`; then, when
    /// `promote`, makes it a voter. Returns the leader's status afterwards.
    pub async fn add(
        &self,
        member: pb::Member,
        promote: bool,
        mut progress: impl FnMut(&pb::AddLearnerProgress),
    ) -> Result<pb::ClusterStatus> {
        let id = member.node_id;
        let mut addr = self.leader().await?;
        let mut redirects = 0;
        loop {
            let req = self.req(pb::AddLearnerRequest {
                member: Some(member.clone()),
            })?;
            let res = async {
                let mut s = self.client(&addr)?.add_learner(req).await?.into_inner();
                let mut caught_up = false;
                while let Some(p) = s.message().await? {
                    progress(&p);
                    caught_up |= p.caught_up;
                }
                Ok::<bool, AddError>(caught_up)
            }
            .await;
            match res {
                Ok(true) => break,
                Ok(false) => {
                    return Err(Error::Rpc {
                        addr,
                        code: tonic::Code::DeadlineExceeded,
                        message: "the learner did not catch up before the stream ended; run `proglog admin add` again".into(),
                        leader_hint: None,
                    })
                }
                Err(AddError::Client(e)) => return Err(e),
                Err(AddError::Status(s)) => match leader_hint(&s) {
                    Some(l) if l != addr && redirects < 3 => {
                        redirects += 1;
                        addr = l;
                    }
                    _ => return Err(Error::from_status(&addr, &s, None)),
                },
            }
        }
        if !promote {
            return self.status().await;
        }
        let st = self.status().await?;
        let mut voters: Vec<u64> = st
            .members
            .iter()
            .filter(|m| m.voter)
            .map(|m| m.node_id)
            .collect();
        if !voters.contains(&id) {
            voters.push(id);
        }
        self.at_leader(|mut c, _| {
            let req = self.req(pb::ChangeMembershipRequest {
                voters: voters.clone(),
                retain_as_learners: false,
            });
            async move {
                let req = req.map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
                c.change_membership(req).await.map(|r| r.into_inner())
            }
        })
        .await
        .map(|r| r.status.unwrap_or_default())
    }

    /// Removes member `id` (voter or learner). The leader cannot remove itself: transfer first.
    pub async fn remove(&self, id: u64) -> Result<pb::ClusterStatus> {
        self.at_leader(|mut c, _| {
            let req = self.req(pb::RemoveMemberRequest { node_id: id });
            async move {
                let req = req.map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
                c.remove_member(req).await.map(|r| r.into_inner())
            }
        })
        .await
        .map(|r| r.status.unwrap_or_default())
    }

    /// Moves leadership to voter `id`; returns the new leader's id.
    pub async fn transfer(&self, id: u64) -> Result<u64> {
        self.at_leader(|mut c, _| {
            let req = self.req(pb::TransferLeadershipRequest { node_id: id });
            async move {
                let req = req.map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
                c.transfer_leadership(req)
                    .await
                    .map(|r| r.into_inner().leader_id)
            }
        })
        .await
    }
}

impl Admin {
    /// Makes `voters` (ids of current members) the complete voter set; voters left out are
    /// dropped, or kept as learners with `retain_as_learners`.
    pub async fn set_voters(
        &self,
        voters: Vec<u64>,
        retain_as_learners: bool,
    ) -> Result<pb::ClusterStatus> {
        self.at_leader(|mut c, _| {
            let req = self.req(pb::ChangeMembershipRequest {
                voters: voters.clone(),
                retain_as_learners,
            });
            async move {
                let req = req.map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
                c.change_membership(req).await.map(|r| r.into_inner())
            }
        })
        .await
        .map(|r| r.status.unwrap_or_default())
    }
}

/// Waits until the member at `addr` reports SERVING on `grpc.health.v1.Health` (it has joined a
/// cluster that has a leader), polling every 100 ms for at most `timeout`. Needs no token.
pub async fn wait_serving(
    addr: &str,
    timeout: Duration,
    tls: Option<&proglog_tls::ClientTls>,
) -> Result<()> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let end = tokio::time::Instant::now() + timeout;
    let mut client = HealthClient::new(lazy_channel(
        addr,
        Duration::from_secs(1),
        Duration::from_secs(20),
        tls,
    )?);
    loop {
        let mut req = tonic::Request::new(HealthCheckRequest {
            service: String::new(),
        });
        req.set_timeout(Duration::from_secs(1));
        let serving = client
            .check(req)
            .await
            .is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32);
        if serving {
            return Ok(());
        }
        if tokio::time::Instant::now() >= end {
            return Err(Error::Rpc {
                addr: addr.to_string(),
                code: tonic::Code::DeadlineExceeded,
                message: format!("not SERVING after {timeout:?}"),
                leader_hint: None,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A failure of the AddLearner stream: ours, or the server's.
enum AddError {
    Client(Error),
    Status(tonic::Status),
}

impl From<Error> for AddError {
    fn from(e: Error) -> Self {
        AddError::Client(e)
    }
}

impl From<tonic::Status> for AddError {
    fn from(s: tonic::Status) -> Self {
        AddError::Status(s)
    }
}

/// Parses `id=host:port` (or `id=name@host:port`) into a member.
pub fn parse_member(s: &str) -> Result<pb::Member, String> {
    let (id, rest) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected id=host:port"))?;
    let node_id: u64 = id
        .parse()
        .map_err(|e| format!("{s:?}: bad id {id:?}: {e}"))?;
    if node_id == 0 {
        return Err(format!("{s:?}: ids start at 1"));
    }
    let (name, addr) = match rest.split_once('@') {
        Some((n, a)) => (n.to_string(), a.to_string()),
        None => (String::new(), rest.to_string()),
    };
    if !addr.contains(':') {
        return Err(format!("{s:?}: {addr:?} has no port"));
    }
    Ok(pb::Member {
        node_id,
        addr,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_parse() {
        let m = parse_member("2=m2@127.0.0.1:8401").unwrap();
        assert_eq!(
            (m.node_id, &m.name[..], &m.addr[..]),
            (2, "m2", "127.0.0.1:8401")
        );
        assert!(parse_member("0=a:1").is_err());
        assert!(parse_member("x=a:1").is_err());
        assert!(parse_member("1=nohost").is_err());
    }
}
