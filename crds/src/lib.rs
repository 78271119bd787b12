//! The `ProgLog` custom resource (`proglog.dev/v1alpha1`, short name `plog`): its spec, its status
//! and the CRD generated from them.
//!
//! The schema carries the checks the API server runs at admission: ranges on numbers, enums on
//! policies, and CEL rules for what crosses fields (the election timeout against the heartbeat) or
//! cannot change (the volume size and class, which a StatefulSet cannot change either). Each rule
//! has a message that says what to fix. The committed YAML (`proglog.dev_proglogs.yaml`) is written
//! by `crdgen`; a test fails when it drifts from these types. [`names`] is the naming contract of
//! the objects the operator makes for a ProgLog. [`user`] is the `ProgLogUser` resource (an
//! application's certificate, actions and discovery access), with its own CRD YAML.

pub mod names;
pub mod user;

pub use user::{ProgLogUser, ProgLogUserSpec, ProgLogUserStatus, UserAction};

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// API group of the resource.
pub const GROUP: &str = "proglog.dev";
/// API version of the resource.
pub const VERSION: &str = "v1alpha1";
/// Kind of the resource.
pub const KIND: &str = "ProgLog";
/// The committed CRD YAML, as `crdgen` wrote it.
pub const CRD_YAML: &str = include_str!("../proglog.dev_proglogs.yaml");
/// The copy `crdgen` writes into `manifests/crd/` (kustomize reads only files below its root).
pub const MANIFEST_CRD_YAML: &str = include_str!("../../manifests/crd/proglog.dev_proglogs.yaml");
/// Where `crdgen` writes the CRD, relative to the workspace root.
pub const CRD_PATHS: [&str; 2] = [
    "crds/proglog.dev_proglogs.yaml",
    "manifests/crd/proglog.dev_proglogs.yaml",
];
/// The committed ProgLogUser CRD YAML, as `crdgen` wrote it.
pub const USER_CRD_YAML: &str = include_str!("../proglog.dev_proglogusers.yaml");
/// Its copy under `manifests/crd/`.
pub const MANIFEST_USER_CRD_YAML: &str =
    include_str!("../../manifests/crd/proglog.dev_proglogusers.yaml");
/// Where `crdgen` writes the ProgLogUser CRD, relative to the workspace root.
pub const USER_CRD_PATHS: [&str; 2] = [
    "crds/proglog.dev_proglogusers.yaml",
    "manifests/crd/proglog.dev_proglogusers.yaml",
];
/// CEL transition rule of `spec.storage.size`: it may grow, never shrink.
pub const SIZE_NEVER_SHRINKS: &str = "self == null || oldSelf == null \
     || !isQuantity(string(self)) || !isQuantity(string(oldSelf)) \
     || quantity(string(self)).compareTo(quantity(string(oldSelf))) >= 0";
/// The message of [`SIZE_NEVER_SHRINKS`]: what to do instead.
pub const SIZE_SHRINK_MESSAGE: &str =
    "storage.size cannot be lowered: volumes only grow. Keep the \
     current size (or raise it); for smaller volumes create a new ProgLog and move the data";
/// Default number of members.
pub const DEFAULT_REPLICAS: i32 = 3;
/// Default container image of a member (the tag follows the crate version).
pub const DEFAULT_IMAGE: &str = concat!("proglog/logserver:", env!("CARGO_PKG_VERSION"));
/// Default gRPC port of a member (Log, Cluster, Raft, health and reflection).
pub const DEFAULT_GRPC_PORT: i32 = 8400;
/// Default metrics port of a member (Prometheus `/metrics`).
pub const DEFAULT_METRICS_PORT: i32 = 9400;

/// Condition type: every member is ready, a leader is known and the membership matches the spec.
pub const CONDITION_READY: &str = "Ready";
/// Condition type: a leader is known and a quorum of voters is healthy, so Produce succeeds.
pub const CONDITION_AVAILABLE: &str = "Available";
/// Condition type: the operator is moving the cluster toward the spec (adding, promoting, removing).
pub const CONDITION_PROGRESSING: &str = "Progressing";
/// Condition type: some member is unhealthy or lagging, or the operator cannot make progress.
pub const CONDITION_DEGRADED: &str = "Degraded";

/// The desired state of a ProgLog cluster.
// The printcolumn(...) groups repeat `type_ = ...` by design; clippy reads them as one attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "proglog.dev",
    version = "v1alpha1",
    kind = "ProgLog",
    plural = "proglogs",
    shortname = "plog",
    namespaced,
    status = "ProgLogStatus",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "Desired members"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "Members that are ready"
    ),
    printcolumn(
        name = "Leader",
        type_ = "string",
        json_path = ".status.leader",
        description = "Pod of the Raft leader"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ProgLogSpec {
    /// Number of members (Raft voters). Odd numbers tolerate the most failures for their size:
    /// 3 members survive one loss, 5 survive two.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 9))]
    pub replicas: i32,

    /// Container image of the logserver.
    #[serde(default = "default_image")]
    #[x_kube(validation = Rule::new("self != ''").message("image must not be empty"))]
    pub image: String,

    /// Image pull policy of the logserver container.
    #[serde(default)]
    pub image_pull_policy: PullPolicy,

    /// CPU and memory requests and limits of the logserver container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// The persistent volume of each member.
    #[serde(default)]
    pub storage: StorageSpec,

    /// Log and Raft settings of every member.
    #[serde(default)]
    pub log: LogSpec,

    /// Ports the members serve.
    #[serde(default)]
    pub ports: PortsSpec,

    /// Mutual TLS on every plane and the Log service's ACL (on by default).
    #[serde(default)]
    pub tls: TlsSpec,
}

/// Mutual TLS and authorization of the members. On (the default), the operator keeps a CA per
/// ProgLog in the Secret `<name>-ca` (or copies the one `issuerSecret` names), issues the
/// members' certificate (`<name>-member-tls`) and its own (`<name>-operator-tls`), renews them
/// before they expire, and the members accept: Raft only from members, the admin API only from
/// the operator, the Log service by the ACL in the ConfigMap `<name>-acl`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// Off: the members serve plaintext, and anyone who reaches a member may call every plane
    /// (the admin API asks for a bearer token). For tests and local experiments only. Changing
    /// it restarts the members.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// A Secret in the ProgLog's namespace holding the CA to sign with (keys `ca.pem` and
    /// `ca-key.pem`, or `tls.crt` and `tls.key`); the operator copies it into `<name>-ca`.
    /// Unset: the operator makes a CA of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self != ''").message("tls.issuerSecret must not be empty; leave it unset for a CA of the operator's own"))]
    pub issuer_secret: Option<String>,
}

impl Default for TlsSpec {
    fn default() -> Self {
        TlsSpec {
            enabled: true,
            issuer_secret: None,
        }
    }
}

/// When the kubelet pulls the image.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum PullPolicy {
    /// Pull on every container start.
    Always,
    /// Pull when the node lacks the image.
    #[default]
    IfNotPresent,
    /// Never pull; the node must have the image.
    Never,
}

impl PullPolicy {
    /// The policy as Kubernetes spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// The persistent volume of each member.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.storageClassName) == has(oldSelf.storageClassName)").message(
    "storage.storageClassName cannot be set or unset after creation; create a new ProgLog to move the data"
))]
pub struct StorageSpec {
    /// Size of each member's volume, e.g. `10Gi`. Raising it expands the volumes when their
    /// StorageClass allows expansion (`status.storage` tells how far that got); volumes never
    /// shrink: a smaller size is refused at admission.
    // NB: `string(self)`: the schema is int-or-string (a plain byte count is a quantity too).
    // The transition rule compares only what parses; the first rule refuses the rest.
    #[serde(default = "default_storage_size")]
    #[x_kube(
        validation = Rule::new("self == null || isQuantity(string(self))").message(
            "storage.size must be a quantity such as 10Gi or 512Mi"
        ),
        validation = Rule::new(SIZE_NEVER_SHRINKS).message(SIZE_SHRINK_MESSAGE)
    )]
    pub size: Quantity,

    /// StorageClass of the volumes; the cluster's default class when unset. Fixed at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message(
        "storage.storageClassName cannot be changed after creation; create a new ProgLog to move the data"
    ))]
    pub storage_class_name: Option<String>,

    /// What happens to the volumes when the ProgLog is deleted: `Retain` keeps them (the data
    /// survives and a ProgLog of the same name picks it up again), `Delete` deletes them.
    /// A member removed by a scale-down always has its volume deleted, so that a later scale-up
    /// joins a fresh member instead of one with a stale Raft state.
    #[serde(default)]
    pub on_delete: VolumePolicy,
}

impl Default for StorageSpec {
    fn default() -> Self {
        StorageSpec {
            size: default_storage_size(),
            storage_class_name: None,
            on_delete: VolumePolicy::default(),
        }
    }
}

/// What happens to a volume whose owner goes away.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum VolumePolicy {
    /// Keep the volume and its data.
    #[default]
    Retain,
    /// Delete the volume.
    Delete,
}

impl VolumePolicy {
    /// The policy as a StatefulSet's `persistentVolumeClaimRetentionPolicy` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            VolumePolicy::Retain => "Retain",
            VolumePolicy::Delete => "Delete",
        }
    }
}

/// Log and Raft settings of every member (the logserver's flags of the same names).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.electionTimeoutMs >= 3 * self.heartbeatMs").message(
    "log.electionTimeoutMs must be at least 3 times log.heartbeatMs, or followers start elections while the leader is healthy"
))]
pub struct LogSpec {
    /// Largest size of a segment's store file, in bytes (1 MiB to 64 GiB).
    #[serde(default = "default_segment_bytes")]
    #[schemars(range(min = 1_048_576, max = 68_719_476_736_i64))]
    pub segment_bytes: i64,

    /// Largest size of a segment's index file, in bytes (12 bytes an entry; 4 KiB to 4 GiB).
    #[serde(default = "default_index_bytes")]
    #[schemars(range(min = 4096, max = 4_294_967_296_i64))]
    pub index_bytes: i64,

    /// Largest record value accepted, in bytes (1 B to 64 MiB).
    #[serde(default = "default_max_record_bytes")]
    #[schemars(range(min = 1, max = 67_108_864))]
    pub max_record_bytes: i64,

    /// When appends reach the disk: `EveryBatch` fsyncs before acknowledging (safe), `Interval`
    /// fsyncs every `syncIntervalMs`, `Never` leaves it to the kernel. The last two acknowledge
    /// records before they are on disk.
    #[serde(default)]
    pub durability: Durability,

    /// fsync interval for `durability: Interval`, in milliseconds.
    #[serde(default = "default_sync_interval_ms")]
    #[schemars(range(min = 1, max = 60_000))]
    pub sync_interval_ms: i64,

    /// Raft heartbeat interval, in milliseconds.
    #[serde(default = "default_heartbeat_ms")]
    #[schemars(range(min = 10, max = 10_000))]
    pub heartbeat_ms: i64,

    /// Raft election timeout (the least; the most is twice this), in milliseconds.
    #[serde(default = "default_election_timeout_ms")]
    #[schemars(range(min = 50, max = 60_000))]
    pub election_timeout_ms: i64,

    /// Raft entries between snapshots (a snapshot is a cut of the log).
    #[serde(default = "default_snapshot_every")]
    #[schemars(range(min = 1))]
    pub snapshot_every: i64,

    /// Raft entries kept on disk at least; older whole segments are dropped once a snapshot
    /// covers them. 0 keeps everything (the default: a commit log keeps its records).
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub retain_entries: i64,

    /// Group commit: concurrent produce calls share Raft entries, with at most this many entries
    /// in flight on the leader (0 to 16; 0: one entry per call).
    #[serde(default = "default_group_commit_depth")]
    #[schemars(range(min = 0, max = 16))]
    pub group_commit_depth: i64,

    /// Pipelined replication: the leader sends a follower new entries while an AppendEntries is
    /// in flight instead of after its answer. Meant for many producers and a real network round
    /// trip between the members, with `groupCommitDepth` 2 or more; on one machine it has not
    /// measured faster.
    #[serde(default)]
    pub raft_pipeline: bool,

    /// Bytes of the log kept in the page cache behind the newest record (0 to 64 GiB; 0 leaves
    /// the cache to the kernel). Older records are dropped from it once on disk and read from
    /// the disk again when asked for; tailing consumers and followers read inside the window.
    /// The page cache counts against the pod's memory, so keep this well under
    /// `resources.limits.memory`.
    #[serde(default = "default_cache_window_bytes")]
    #[schemars(range(min = 0, max = 68_719_476_736_i64))]
    pub cache_window_bytes: i64,
}

impl Default for LogSpec {
    fn default() -> Self {
        LogSpec {
            segment_bytes: default_segment_bytes(),
            index_bytes: default_index_bytes(),
            max_record_bytes: default_max_record_bytes(),
            durability: Durability::default(),
            sync_interval_ms: default_sync_interval_ms(),
            heartbeat_ms: default_heartbeat_ms(),
            election_timeout_ms: default_election_timeout_ms(),
            snapshot_every: default_snapshot_every(),
            retain_entries: 0,
            group_commit_depth: default_group_commit_depth(),
            raft_pipeline: false,
            cache_window_bytes: default_cache_window_bytes(),
        }
    }
}

/// When appended records are fsynced.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum Durability {
    /// fsync every append batch before acknowledging it.
    #[default]
    EveryBatch,
    /// fsync at most every `syncIntervalMs`.
    Interval,
    /// Never fsync appends.
    Never,
}

impl Durability {
    /// The value of the logserver's `--durability` flag.
    pub fn flag(self) -> &'static str {
        match self {
            Durability::EveryBatch => "every-batch",
            Durability::Interval => "interval",
            Durability::Never => "never",
        }
    }
}

/// Ports the members serve.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.metrics != self.grpc").message(
    "ports.metrics must differ from ports.grpc: the members serve gRPC and metrics on separate listeners"
))]
pub struct PortsSpec {
    /// The one gRPC port: Log, Cluster (admin), Raft, health and reflection. Fixed at creation:
    /// the members' Raft addresses carry it.
    #[serde(default = "default_grpc_port")]
    #[x_kube(validation = Rule::new("self == oldSelf").message(
        "ports.grpc cannot be changed after creation: the members' Raft addresses carry it; create a new ProgLog to move ports"
    ))]
    #[schemars(range(min = 1, max = 65535))]
    pub grpc: i32,
    /// The HTTP port of the members' Prometheus metrics (`/metrics`), also served by the
    /// `<name>-metrics` Service. Changing it restarts the members.
    #[serde(default = "default_metrics_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub metrics: i32,
}

impl Default for PortsSpec {
    fn default() -> Self {
        PortsSpec {
            grpc: default_grpc_port(),
            metrics: default_metrics_port(),
        }
    }
}

/// What the operator observed of a ProgLog.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProgLogStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Members that exist (pods of the StatefulSet).
    #[serde(default)]
    pub replicas: i32,
    /// Members whose pod is ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Pod name of the Raft leader, when one is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// Raft term the leader leads in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<i64>,
    /// Every member, in ordinal order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberStatus>,
    /// Ready, Available, Progressing, Degraded (Kubernetes API conventions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Label selector of the member pods (for the scale subresource and `kubectl scale`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The members' volumes against `spec.storage.size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageStatus>,
    /// The members against the StatefulSet's pod template: how far a rolling update got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
}

/// A rolling update: the operator restarts the members one at a time onto the StatefulSet's
/// current pod template, followers first, the leader last (after handing leadership over).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// The StatefulSet revision (`status.updateRevision`) the members move to.
    pub revision: String,
    /// Members whose pod runs that revision.
    pub updated: i32,
    /// Members in all (`spec.replicas`).
    pub replicas: i32,
    /// What the rolling update does or waits for; absent once every member runs the revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The members' volumes, as the operator grows them toward `spec.storage.size`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageStatus {
    /// `spec.storage.size` as last seen.
    pub size: String,
    /// Each member's volume claim.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeStatus>,
    /// What is under way or refused (expanding, waiting for the volume, cannot shrink, class does
    /// not allow expansion); absent when every volume has the size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One member's volume claim.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeStatus {
    /// Name of the PersistentVolumeClaim.
    pub claim: String,
    /// Its requested size.
    pub requested: String,
    /// Its capacity, once bound (smaller than requested while it is being expanded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<String>,
}

/// One member as the operator sees it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// Pod name.
    pub pod: String,
    /// Raft node id (the pod's ordinal + 1).
    pub raft_id: i64,
    /// Leader, Follower, Learner, Candidate, or Unknown when the member did not answer.
    pub role: String,
    /// The pod is ready and the member answers its admin API.
    pub healthy: bool,
    /// Raft entries this member is behind the leader, when the leader reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<i64>,
    /// Address peers and clients use (`host:port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

fn default_true() -> bool {
    true
}
fn default_replicas() -> i32 {
    DEFAULT_REPLICAS
}
fn default_image() -> String {
    DEFAULT_IMAGE.to_string()
}
fn default_storage_size() -> Quantity {
    Quantity("1Gi".to_string())
}
fn default_segment_bytes() -> i64 {
    1 << 30
}
fn default_index_bytes() -> i64 {
    10 << 20
}
fn default_max_record_bytes() -> i64 {
    1 << 20
}
fn default_sync_interval_ms() -> i64 {
    10
}
fn default_heartbeat_ms() -> i64 {
    100
}
fn default_election_timeout_ms() -> i64 {
    500
}
fn default_snapshot_every() -> i64 {
    10_000
}
fn default_group_commit_depth() -> i64 {
    1
}
/// The logserver's `--segment-cache-window-bytes` default (256 MiB).
pub fn default_cache_window_bytes() -> i64 {
    256 << 20
}
fn default_grpc_port() -> i32 {
    DEFAULT_GRPC_PORT
}
fn default_metrics_port() -> i32 {
    DEFAULT_METRICS_PORT
}

/// The CRD as YAML, exactly as `crdgen` writes it.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    let body = serde_yaml::to_string(&ProgLog::crd()).expect("the CRD serializes");
    format!("# Generated by `make crds` (crds/src/bin/crdgen.rs) from crds/src/lib.rs. Do not edit.\n---\n{body}")
}

/// The ProgLogUser CRD as YAML, exactly as `crdgen` writes it.
pub fn user_crd_yaml() -> String {
    use kube::CustomResourceExt;
    let body = serde_yaml::to_string(&ProgLogUser::crd()).expect("the CRD serializes");
    format!("# Generated by `make crds` (crds/src/bin/crdgen.rs) from crds/src/user.rs. Do not edit.\n---\n{body}")
}

/// Every CRD: its YAML and the paths `crdgen` writes it to.
pub fn all_crds() -> [(String, [&'static str; 2]); 2] {
    [(crd_yaml(), CRD_PATHS), (user_crd_yaml(), USER_CRD_PATHS)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_spec_takes_every_default() {
        let spec: ProgLogSpec = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(spec.replicas, 3);
        assert_eq!(spec.image, DEFAULT_IMAGE);
        assert_eq!(spec.storage.size.0, "1Gi");
        assert_eq!(spec.storage.on_delete, VolumePolicy::Retain);
        assert_eq!(spec.log, LogSpec::default());
        assert_eq!(spec.ports.grpc, 8400);
        assert!(spec.tls.enabled, "TLS is on unless turned off");
        assert_eq!(spec.tls.issuer_secret, None);
    }

    #[test]
    fn the_committed_yaml_matches_the_types() {
        assert!(
            CRD_YAML == crd_yaml() && MANIFEST_CRD_YAML == crd_yaml(),
            "the committed CRD YAML is stale: run `make crds` and commit the result"
        );
        assert!(
            USER_CRD_YAML == user_crd_yaml() && MANIFEST_USER_CRD_YAML == user_crd_yaml(),
            "the committed ProgLogUser CRD YAML is stale: run `make crds` and commit the result"
        );
    }

    #[test]
    fn the_crd_has_scale_status_columns_and_rules() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(ProgLog::crd()).unwrap();
        let v = &crd["spec"]["versions"][0];
        assert_eq!(
            v["subresources"]["scale"]["labelSelectorPath"],
            ".status.selector"
        );
        assert!(v["subresources"]["status"].is_object());
        let cols: Vec<&str> = v["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(cols, ["Replicas", "Ready", "Leader", "Age"]);
        assert_eq!(crd["spec"]["names"]["shortNames"][0], "plog");
        let text = serde_json::to_string(&crd).unwrap();
        assert!(text.contains("self.electionTimeoutMs >= 3 * self.heartbeatMs"));
        assert!(
            !text.contains("storage.size cannot be changed"),
            "storage.size may grow: the operator expands the volumes"
        );
        assert!(text.contains("storage.storageClassName cannot be changed"));
        // Shrinking is refused at admission with what to do, and only shrinking.
        let size = &v["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["storage"]
            ["properties"]["size"]["x-kubernetes-validations"];
        let rules: Vec<(&str, &str)> = (size.as_array().unwrap().iter())
            .map(|r| (r["rule"].as_str().unwrap(), r["message"].as_str().unwrap()))
            .collect();
        assert!(
            rules.contains(&(SIZE_NEVER_SHRINKS, SIZE_SHRINK_MESSAGE)),
            "{rules:?}"
        );
        assert!(SIZE_NEVER_SHRINKS.contains(">= 0") && SIZE_NEVER_SHRINKS.contains("oldSelf"));
        assert!(SIZE_SHRINK_MESSAGE.contains("create a new ProgLog"));
        let replicas =
            &v["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["replicas"];
        assert_eq!(replicas["minimum"].as_f64(), Some(1.0));
        assert_eq!(replicas["maximum"].as_f64(), Some(9.0));
    }
}
