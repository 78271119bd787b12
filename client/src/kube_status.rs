//! Reads a `ProgLog` resource (`proglog.dev/v1alpha1`) through the Kubernetes API with kube's
//! `DynamicObject`, so the client needs no compiled CRD types. Tells "the CRD is not installed"
//! apart from "no such ProgLog". The status fields mirror `proglog_crds::ProgLogStatus` (same
//! JSON names and types; a test in the e2e crate checks them against the operator's types);
//! unknown fields are ignored and missing ones are empty, so an older or newer operator still
//! shows what it reports.

use kube::api::{Api, DynamicObject};
use kube::core::GroupVersionKind;
use kube::Client;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// API group of the ProgLog resource.
pub const GROUP: &str = "proglog.dev";
/// API version of the ProgLog resource.
pub const VERSION: &str = "v1alpha1";
/// Kind of the ProgLog resource.
pub const KIND: &str = "ProgLog";

/// One member as the operator reports it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct MemberStatus {
    /// Pod name.
    pub pod: Option<String>,
    /// Raft node id (the pod's ordinal + 1).
    pub raft_id: Option<i64>,
    /// Leader, Follower, Learner, Candidate or Unknown.
    pub role: Option<String>,
    /// The pod is ready and the member answers its admin API.
    pub healthy: Option<bool>,
    /// Raft entries behind the leader, when the leader reports it.
    pub lag: Option<i64>,
    /// The address peers and clients use (`host:port`; a cluster DNS name under the operator).
    pub address: Option<String>,
}

/// A status condition (Kubernetes API conventions).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: Option<String>,
    pub message: Option<String>,
}

/// The status block of a ProgLog.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ProgLogStatus {
    /// The `metadata.generation` this status describes.
    pub observed_generation: Option<i64>,
    /// Members that exist (pods).
    pub replicas: Option<i64>,
    /// Members whose pod is ready.
    pub ready_replicas: Option<i64>,
    /// Pod name of the Raft leader.
    pub leader: Option<String>,
    /// Raft term the leader leads in.
    pub term: Option<i64>,
    /// Every member, in ordinal order.
    pub members: Vec<MemberStatus>,
    /// Ready, Available, Progressing, Degraded.
    pub conditions: Vec<Condition>,
    /// Label selector of the member pods.
    pub selector: Option<String>,
    /// The members' volumes against `spec.storage.size`.
    pub storage: Option<StorageView>,
    /// How far a rolling update of the members got.
    pub rollout: Option<RolloutView>,
}

/// `status.rollout`: the members moving, one at a time, onto the StatefulSet's pod template.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RolloutView {
    /// The StatefulSet revision the members move to.
    pub revision: Option<String>,
    /// Members whose pod runs that revision.
    pub updated: Option<i64>,
    /// Members in all.
    pub replicas: Option<i64>,
    /// What the rolling update does or waits for; absent once it is done.
    pub message: Option<String>,
}

/// `status.storage`: the volumes and what is under way or refused about their size.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct StorageView {
    pub size: Option<String>,
    pub message: Option<String>,
}

/// A ProgLog as the CLI shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ProgLogView {
    pub namespace: String,
    pub name: String,
    /// `spec.replicas`, when set.
    pub desired_replicas: Option<i64>,
    pub generation: Option<i64>,
    pub status: ProgLogStatus,
    /// The status exactly as stored (for `--output json`).
    pub raw_status: serde_json::Value,
}

/// Reads ProgLog `name` in `namespace`.
pub async fn get(client: &Client, namespace: &str, name: &str) -> Result<ProgLogView> {
    let gvk = GroupVersionKind::gvk(GROUP, VERSION, KIND);
    let (ar, _caps) = match kube::discovery::pinned_kind(client, &gvk).await {
        Ok(found) => found,
        Err(kube::Error::Api(s)) if s.code == 404 => return Err(Error::CrdMissing),
        Err(kube::Error::Discovery(_)) => return Err(Error::CrdMissing),
        Err(e) => return Err(e.into()),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &ar);
    let obj = api.get_opt(name).await?.ok_or_else(|| Error::NotFound {
        namespace: namespace.into(),
        name: name.into(),
    })?;
    Ok(view(namespace, name, &obj))
}

/// The view of a ProgLog object (pure; tested without a cluster).
pub fn view(namespace: &str, name: &str, obj: &DynamicObject) -> ProgLogView {
    let raw_status = obj.data.get("status").cloned().unwrap_or_default();
    let status = serde_json::from_value(raw_status.clone()).unwrap_or_default();
    ProgLogView {
        namespace: namespace.into(),
        name: name.into(),
        desired_replicas: obj.data.pointer("/spec/replicas").and_then(|v| v.as_i64()),
        generation: obj.metadata.generation,
        status,
        raw_status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_reads_the_documented_status_fields() {
        let obj: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "proglog.dev/v1alpha1", "kind": "ProgLog",
            "metadata": {"name": "demo", "namespace": "ns", "generation": 3},
            "spec": {"replicas": 3},
            "status": {
                "observedGeneration": 3, "replicas": 3, "readyReplicas": 2,
                "leader": "demo-0", "term": 4, "selector": "app.kubernetes.io/name=proglog,proglog.dev/cluster=demo",
                "members": [{"pod": "demo-0", "raftId": 1, "role": "Leader", "healthy": true, "lag": 0,
                             "address": "demo-0.demo-members.ns.svc.cluster.local:8400"}],
                "conditions": [{"type": "Ready", "status": "False", "reason": "MemberDown"}],
                "somethingNew": 1
            }
        }))
        .unwrap();
        let v = view("ns", "demo", &obj);
        assert_eq!(v.desired_replicas, Some(3));
        assert_eq!(v.status.ready_replicas, Some(2));
        assert_eq!(v.status.leader.as_deref(), Some("demo-0"));
        assert_eq!(v.status.members[0].raft_id, Some(1));
        assert_eq!(v.status.term, Some(4));
        assert_eq!(
            v.status.members[0].address.as_deref(),
            Some("demo-0.demo-members.ns.svc.cluster.local:8400")
        );
        assert!(v.status.selector.is_some());
        assert_eq!(v.status.conditions[0].type_, "Ready");
        assert_eq!(v.raw_status["somethingNew"], 1);
    }
}
