//! Raft membership of one ProgLog: observe the members, plan ONE step toward the spec, take it.
//!
//! (API committed first so the controller can build against it; the planner is being filled in.)

use std::collections::BTreeMap;
use std::time::Duration;

use proglog_crds::MemberStatus;
use proglog_proto::v1 as pb;

use crate::admin::{self, AdminPool};
use crate::names;

/// How long observing every member may take in all.
pub const OBSERVE_TIMEOUT: Duration = Duration::from_secs(3);

/// Errors of a membership pass.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The admin token cannot be sent.
    #[error(transparent)]
    Admin(#[from] admin::Error),
}

/// Result with the membership [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One pod of the StatefulSet, as the controller sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    /// Pod name (`<name>-<ordinal>`).
    pub name: String,
    /// Its ordinal.
    pub ordinal: u32,
    /// Pod IP, once it has one.
    pub ip: Option<String>,
    /// The Ready condition.
    pub ready: bool,
    /// `metadata.deletionTimestamp` is set.
    pub terminating: bool,
}

/// What one membership pass works from.
#[derive(Clone, Debug)]
pub struct MembershipInput {
    /// Namespace of the ProgLog.
    pub namespace: String,
    /// Name of the ProgLog.
    pub name: String,
    /// `spec.replicas`.
    pub desired: u32,
    /// `spec.replicas` of the StatefulSet now (None: no StatefulSet yet).
    pub sts_replicas: Option<u32>,
    /// The pods of the StatefulSet.
    pub pods: Vec<PodInfo>,
    /// The members' gRPC port.
    pub port: i32,
    /// The cluster DNS domain (`cluster.local`), for the addresses members advertise.
    pub cluster_domain: String,
    /// The admin API's bearer token.
    pub token: String,
}

/// What a pass found and did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MembershipReport {
    /// What the StatefulSet's `spec.replicas` must be now.
    pub statefulset_replicas: i32,
    /// Pod name of the leader.
    pub leader: Option<String>,
    /// The leader's term.
    pub term: Option<u64>,
    /// Every member and pod, in ordinal order.
    pub members: Vec<MemberStatus>,
    /// What was done this pass, for an Event ("added demo-2 as a learner").
    pub step: Option<String>,
    /// Why nothing could be done ("demo-1 has no pod IP yet"), or why the step failed.
    pub waiting: Option<String>,
    /// Voters are exactly ordinals 0..desired, all healthy, a leader is known.
    pub settled: bool,
    /// A leader is known and a quorum of voters is healthy.
    pub available: bool,
}

/// What one member answered (or not).
#[derive(Clone, Debug, PartialEq)]
pub enum Observation {
    /// Its Status.
    Answered(pb::ClusterStatus),
    /// The call failed (not reachable, refused, timed out).
    Failed(String),
}

/// Observations by ordinal (pods with an IP only).
pub type Observations = BTreeMap<u32, Observation>;

/// Asks every pod with an IP for its Status, all at once, bounded by [`OBSERVE_TIMEOUT`].
pub async fn observe(pool: &AdminPool, input: &MembershipInput) -> Result<Observations> {
    let mut calls = Vec::new();
    for p in &input.pods {
        let Some(ip) = &p.ip else { continue };
        let client = pool.client(&pod_addr(ip, input.port), &input.token)?;
        let ordinal = p.ordinal;
        calls.push(async move {
            let o = match tokio::time::timeout(OBSERVE_TIMEOUT, client.status()).await {
                Ok(Ok(s)) => Observation::Answered(s),
                Ok(Err(e)) => Observation::Failed(e.to_string()),
                Err(_) => Observation::Failed(format!("no answer within {OBSERVE_TIMEOUT:?}")),
            };
            (ordinal, o)
        });
    }
    Ok(futures::future::join_all(calls).await.into_iter().collect())
}

/// `ip:port` (IPv6 in brackets).
pub fn pod_addr(ip: &str, port: i32) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// Observes the members and takes at most one step toward `input.desired` voters.
pub async fn reconcile(pool: &AdminPool, input: &MembershipInput) -> Result<MembershipReport> {
    let ns = input.namespace.clone();
    let name = input.name.clone();
    let domain = input.cluster_domain.clone();
    let port = input.port;
    reconcile_with(pool, input, move |ordinal| {
        names::member_address(&name, &ns, ordinal, &domain, port)
    })
    .await
}

/// [`reconcile`] with the address members advertise given by `member_addr(ordinal)` (tests on
/// loopback use `ip:port`; in Kubernetes it is [`names::member_address`]).
pub async fn reconcile_with(
    pool: &AdminPool,
    input: &MembershipInput,
    member_addr: impl Fn(u32) -> String,
) -> Result<MembershipReport> {
    let _ = &member_addr;
    let _obs = observe(pool, input).await?;
    let current = input.sts_replicas.unwrap_or(0);
    Ok(MembershipReport {
        statefulset_replicas: input.desired.max(current) as i32,
        waiting: Some("the membership planner is being written".into()),
        ..Default::default()
    })
}
