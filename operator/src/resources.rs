//! The desired child objects of a ProgLog, as pure functions: no client, no I/O, unit-tested with
//! plain values. The controller applies what these build (server-side apply); it never edits an
//! object field by field.
//!
//! Owns: the Secrets (the admin token, built once, see [`new_token`]; the CA and the identity
//! Secrets, from PEM the [`crate::pki`] made), the ACL ConfigMap, ServiceAccount, ClusterRole,
//! RoleBinding, the headless, leader, followers and metrics Services, the StatefulSet and the
//! PodDisruptionBudget. Does not own the EndpointSlices of the leader/followers Services:
//! discovery writes those.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile, Secret,
    SecretVolumeSource, SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec,
    TCPSocketAction, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;
use kube::{Resource, ResourceExt};
use proglog_crds::{ProgLog, ProgLogSpec};

use crate::names;
use crate::pki::{CaPem, IdentityPem};

/// Why the children of a ProgLog cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The ProgLog lacks metadata the children need (it did not come from the API server).
    #[error("ProgLog has no {0} (not read from the API server?)")]
    MissingMetadata(&'static str),
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Name of the pod volume holding the admin token (plaintext members only).
pub const ADMIN_TOKEN_VOLUME: &str = "admin-token";
/// Name of the pod volume holding the members' certificate ([`names::member_tls_secret`]).
pub const TLS_VOLUME: &str = "tls";
/// Name of the pod volume holding the ACL ([`names::acl_config_map`]).
pub const ACL_VOLUME: &str = "acl";
/// The path of the members' readiness endpoint on the metrics port (see [`Children::statefulset`]).
pub const READY_PATH: &str = "/readyz";
/// Name of the environment variables the member's arguments refer to.
pub const ENV_POD_IP: &str = "POD_IP";
/// See [`ENV_POD_IP`].
pub const ENV_POD_NAME: &str = "POD_NAME";
/// See [`ENV_POD_IP`].
pub const ENV_POD_NAMESPACE: &str = "POD_NAMESPACE";
/// Smallest peer (Raft) message limit the members get, in bytes (the logserver's default).
const MIN_PEER_MESSAGE_BYTES: i64 = 64 << 20;
/// The non-root user and group of the logserver image (`images/Dockerfile`); the pods' fsGroup.
pub const NONROOT_ID: i64 = 65532;

/// Builds the children of one ProgLog. Holds what every child shares: names, labels, owner.
#[derive(Debug, Clone)]
pub struct Children<'a> {
    spec: &'a ProgLogSpec,
    name: String,
    namespace: String,
    owner: OwnerReference,
    cluster_domain: String,
}

impl<'a> Children<'a> {
    /// The builder for `pl` (which must come from the API server: it needs a namespace and a uid).
    /// `cluster_domain` is the DNS domain members advertise under (`cluster.local`).
    pub fn new(pl: &'a ProgLog, cluster_domain: &str) -> Result<Self> {
        let namespace = pl.namespace().ok_or(Error::MissingMetadata("namespace"))?;
        if pl.meta().uid.is_none() {
            return Err(Error::MissingMetadata("uid"));
        }
        let owner = pl
            .controller_owner_ref(&())
            .ok_or(Error::MissingMetadata("name"))?;
        Ok(Children {
            spec: &pl.spec,
            name: pl.name_any(),
            namespace,
            owner,
            cluster_domain: cluster_domain.to_string(),
        })
    }

    /// The ProgLog's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The ProgLog's namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The owner reference (controller) every namespaced child carries.
    pub fn owner(&self) -> &OwnerReference {
        &self.owner
    }

    fn meta(&self, name: String) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(names::labels(&self.name)),
            owner_references: Some(vec![self.owner.clone()]),
            ..ObjectMeta::default()
        }
    }

    fn selector(&self) -> LabelSelector {
        LabelSelector {
            match_labels: Some(names::labels(&self.name)),
            ..LabelSelector::default()
        }
    }

    fn grpc_port(&self) -> ServicePort {
        ServicePort {
            name: Some(names::GRPC_PORT_NAME.to_string()),
            port: self.spec.ports.grpc,
            target_port: Some(IntOrString::Int(self.spec.ports.grpc)),
            protocol: Some("TCP".to_string()),
            ..ServicePort::default()
        }
    }

    /// The admin Secret holding `token` (created once; see [`new_token`]).
    pub fn admin_secret(&self, token: &str) -> Secret {
        Secret {
            metadata: self.meta(names::admin_secret(&self.name)),
            type_: Some("Opaque".to_string()),
            data: Some(BTreeMap::from([(
                names::ADMIN_TOKEN_KEY.to_string(),
                ByteString(token.as_bytes().to_vec()),
            )])),
            ..Secret::default()
        }
    }

    /// The CA Secret ([`names::ca_secret`]) holding `ca`.
    pub fn ca_secret(&self, ca: &CaPem) -> Secret {
        self.pem_secret(
            names::ca_secret(&self.name),
            [(names::CA_CERT_KEY, &ca.cert), (names::CA_KEY_KEY, &ca.key)],
        )
    }

    /// An identity Secret named `secret` (the members' or the operator's) holding `id`.
    pub fn identity_secret(&self, secret: String, id: &IdentityPem) -> Secret {
        self.pem_secret(
            secret,
            [
                (names::CA_CERT_KEY, &id.ca),
                (names::TLS_CERT_KEY, &id.cert),
                (names::TLS_KEY_KEY, &id.key),
            ],
        )
    }

    fn pem_secret<'p>(
        &self,
        secret: String,
        data: impl IntoIterator<Item = (&'p str, &'p String)>,
    ) -> Secret {
        Secret {
            metadata: self.meta(secret),
            type_: Some("Opaque".to_string()),
            data: Some(
                data.into_iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    /// The ACL ConfigMap ([`names::acl_config_map`]): the casbin model and `policy` (rendered
    /// by [`crate::acl::render`]).
    pub fn acl_config_map(&self, policy: &str) -> ConfigMap {
        ConfigMap {
            metadata: self.meta(names::acl_config_map(&self.name)),
            data: Some(BTreeMap::from([
                (
                    names::ACL_MODEL_KEY.to_string(),
                    crate::acl::MODEL.to_string(),
                ),
                (names::ACL_POLICY_KEY.to_string(), policy.to_string()),
            ])),
            ..ConfigMap::default()
        }
    }

    /// True when the members run with mutual TLS and the ACL (`spec.tls.enabled`).
    pub fn tls(&self) -> bool {
        self.spec.tls.enabled
    }

    /// The members' ServiceAccount.
    pub fn service_account(&self) -> ServiceAccount {
        ServiceAccount {
            metadata: self.meta(names::service_account(&self.name)),
            ..ServiceAccount::default()
        }
    }

    /// The members' ClusterRole: read-only access to pods, EndpointSlices and ProgLogs (bound in
    /// the namespace only, by [`Children::role_binding`]). Cluster-scoped, so no owner reference:
    /// the finalizer deletes it.
    pub fn cluster_role(&self) -> ClusterRole {
        let read = || vec!["get".to_string(), "list".to_string(), "watch".to_string()];
        let rule = |group: &str, resource: &str| PolicyRule {
            api_groups: Some(vec![group.to_string()]),
            resources: Some(vec![resource.to_string()]),
            verbs: read(),
            ..PolicyRule::default()
        };
        ClusterRole {
            metadata: ObjectMeta {
                name: Some(names::cluster_role(&self.namespace, &self.name)),
                labels: Some(names::labels(&self.name)),
                ..ObjectMeta::default()
            },
            rules: Some(vec![
                rule("", "pods"),
                rule("discovery.k8s.io", "endpointslices"),
                rule(proglog_crds::GROUP, "proglogs"),
            ]),
            ..ClusterRole::default()
        }
    }

    /// Binds [`Children::cluster_role`] to the members' ServiceAccount in the namespace.
    pub fn role_binding(&self) -> RoleBinding {
        RoleBinding {
            metadata: self.meta(names::service_account(&self.name)),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".to_string(),
                kind: "ClusterRole".to_string(),
                name: names::cluster_role(&self.namespace, &self.name),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".to_string(),
                name: names::service_account(&self.name),
                namespace: Some(self.namespace.clone()),
                ..Subject::default()
            }]),
        }
    }

    /// The headless Service giving each member a stable DNS name, ready or not (members must
    /// resolve each other before they can become ready).
    pub fn headless_service(&self) -> Service {
        Service {
            metadata: self.meta(names::headless_service(&self.name)),
            spec: Some(ServiceSpec {
                cluster_ip: Some("None".to_string()),
                selector: Some(names::labels(&self.name)),
                publish_not_ready_addresses: Some(true),
                ports: Some(vec![self.grpc_port()]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        }
    }

    fn role_service(&self, name: String, role: &str) -> Service {
        let mut meta = self.meta(name);
        meta.labels
            .get_or_insert_with(BTreeMap::new)
            .insert(names::ROLE_LABEL.to_string(), role.to_string());
        Service {
            metadata: meta,
            spec: Some(ServiceSpec {
                // Selectorless: discovery writes the EndpointSlice.
                ports: Some(vec![self.grpc_port()]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        }
    }

    /// The selectorless Service naming the leader.
    pub fn leader_service(&self) -> Service {
        self.role_service(names::leader_service(&self.name), names::ROLE_LEADER)
    }

    /// The selectorless Service naming the followers.
    pub fn followers_service(&self) -> Service {
        self.role_service(names::followers_service(&self.name), names::ROLE_FOLLOWERS)
    }

    /// The headless Service naming every member's metrics port (ready or not: a member that is
    /// not ready is exactly what one wants to see in the metrics).
    pub fn metrics_service(&self) -> Service {
        let mut meta = self.meta(names::metrics_service(&self.name));
        meta.labels.get_or_insert_with(BTreeMap::new).insert(
            names::ROLE_LABEL.to_string(),
            names::ROLE_METRICS.to_string(),
        );
        let port = self.spec.ports.metrics;
        Service {
            metadata: meta,
            spec: Some(ServiceSpec {
                cluster_ip: Some("None".to_string()),
                selector: Some(names::labels(&self.name)),
                publish_not_ready_addresses: Some(true),
                ports: Some(vec![ServicePort {
                    name: Some(names::METRICS_PORT_NAME.to_string()),
                    port,
                    target_port: Some(IntOrString::Int(port)),
                    protocol: Some("TCP".to_string()),
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        }
    }

    /// The PodDisruptionBudget: one member down at a time.
    pub fn pdb(&self) -> PodDisruptionBudget {
        PodDisruptionBudget {
            metadata: self.meta(names::pdb(&self.name)),
            spec: Some(PodDisruptionBudgetSpec {
                max_unavailable: Some(IntOrString::Int(1)),
                selector: Some(self.selector()),
                // NB: a member that is not ready serves nothing; evicting it costs no availability.
                unhealthy_pod_eviction_policy: Some("AlwaysAllow".to_string()),
                ..PodDisruptionBudgetSpec::default()
            }),
            ..PodDisruptionBudget::default()
        }
    }

    /// The logserver's command-line arguments (flags of `logserver --help`).
    pub fn args(&self) -> Vec<String> {
        let port = self.spec.ports.grpc;
        let log = &self.spec.log;
        let advertise = format!(
            "$({ENV_POD_NAME}).{}.{}.svc.{}:{port}",
            names::headless_service(&self.name),
            self.namespace,
            self.cluster_domain
        );
        // NB: one Raft entry can carry a record of max-record-bytes; AppendEntries must fit it.
        let peer_bytes = MIN_PEER_MESSAGE_BYTES.max(2 * (log.max_record_bytes + (1 << 20)));
        let mut args = vec![
            ("--listen", format!("$({ENV_POD_IP}):{port}")),
            (
                "--metrics-listen",
                format!("$({ENV_POD_IP}):{}", self.spec.ports.metrics),
            ),
            ("--advertise", advertise),
            ("--name", format!("$({ENV_POD_NAME})")),
            ("--data-dir", names::DATA_DIR.to_string()),
            ("--segment-bytes", log.segment_bytes.to_string()),
            ("--index-bytes", log.index_bytes.to_string()),
            ("--max-record-bytes", log.max_record_bytes.to_string()),
            ("--durability", log.durability.flag().to_string()),
            ("--sync-interval-ms", log.sync_interval_ms.to_string()),
            ("--heartbeat-ms", log.heartbeat_ms.to_string()),
            ("--election-timeout-ms", log.election_timeout_ms.to_string()),
            ("--snapshot-every", log.snapshot_every.to_string()),
            ("--retain-entries", log.retain_entries.to_string()),
            ("--max-peer-message-bytes", peer_bytes.to_string()),
        ];
        // NB: only when not the logserver's default, so that the pod template (and the members)
        // of an existing ProgLog stay as they were when the operator learns these fields.
        if log.group_commit_depth != 1 {
            args.push(("--group-commit-depth", log.group_commit_depth.to_string()));
        }
        if log.raft_pipeline {
            args.push(("--raft-pipeline", "true".to_string()));
        }
        if log.cache_window_bytes != proglog_crds::default_cache_window_bytes() {
            args.push((
                "--segment-cache-window-bytes",
                log.cache_window_bytes.to_string(),
            ));
        }
        let dir = |d: &str, key: &str| format!("{d}/{key}");
        if self.tls() {
            args.extend([
                ("--tls-ca", dir(names::TLS_DIR, names::CA_CERT_KEY)),
                ("--tls-cert", dir(names::TLS_DIR, names::TLS_CERT_KEY)),
                ("--tls-key", dir(names::TLS_DIR, names::TLS_KEY_KEY)),
                ("--acl-model", dir(names::ACL_DIR, names::ACL_MODEL_KEY)),
                ("--acl-policy", dir(names::ACL_DIR, names::ACL_POLICY_KEY)),
                ("--member-identity", names::MEMBER_SUBJECT.to_string()),
                ("--admin-identity", names::OPERATOR_SUBJECT.to_string()),
            ]);
        } else {
            args.push((
                "--admin-token-file",
                dir(names::ADMIN_TOKEN_DIR, names::ADMIN_TOKEN_KEY),
            ));
        }
        args.drain(..)
            .flat_map(|(k, v)| [k.to_string(), v])
            .collect()
    }

    fn env(&self) -> Vec<EnvVar> {
        let field = |name: &str, path: &str| EnvVar {
            name: name.to_string(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: path.to_string(),
                    ..ObjectFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        };
        vec![
            field(ENV_POD_IP, "status.podIP"),
            field(ENV_POD_NAME, "metadata.name"),
            field(ENV_POD_NAMESPACE, "metadata.namespace"),
        ]
    }

    fn container(&self) -> Container {
        let port = self.spec.ports.grpc;
        Container {
            name: names::CONTAINER.to_string(),
            image: Some(self.spec.image.clone()),
            image_pull_policy: Some(self.spec.image_pull_policy.as_str().to_string()),
            args: Some(self.args()),
            env: Some(self.env()),
            ports: Some(vec![
                ContainerPort {
                    name: Some(names::GRPC_PORT_NAME.to_string()),
                    container_port: port,
                    protocol: Some("TCP".to_string()),
                    ..ContainerPort::default()
                },
                ContainerPort {
                    name: Some(names::METRICS_PORT_NAME.to_string()),
                    container_port: self.spec.ports.metrics,
                    protocol: Some("TCP".to_string()),
                    ..ContainerPort::default()
                },
            ]),
            // Ready = the member knows a leader (it joined): `/readyz` on the metrics port says
            // what the gRPC health service says. NB: not the kubelet's gRPC probe: it cannot
            // speak TLS, and a plaintext health listener beside the TLS port would be one more
            // port to guard; the metrics listener is plaintext HTTP anyway (Prometheus scrapes
            // it) and `/readyz` tells nothing a scraper does not already see.
            readiness_probe: Some(Probe {
                http_get: Some(HTTPGetAction {
                    path: Some(READY_PATH.to_string()),
                    port: IntOrString::Int(self.spec.ports.metrics),
                    scheme: Some("HTTP".to_string()),
                    ..HTTPGetAction::default()
                }),
                // NB: every second: a restarted member is unreachable for clients until it is
                // ready again (the slices list ready pods only).
                period_seconds: Some(1),
                timeout_seconds: Some(1),
                failure_threshold: Some(3),
                ..Probe::default()
            }),
            // Alive = the port accepts connections. Never the health service: a member without a
            // leader (not joined yet, or in an election) is alive and must not be restarted.
            liveness_probe: Some(Probe {
                tcp_socket: Some(TCPSocketAction {
                    port: IntOrString::Int(port),
                    ..TCPSocketAction::default()
                }),
                initial_delay_seconds: Some(10),
                period_seconds: Some(10),
                timeout_seconds: Some(5),
                failure_threshold: Some(6),
                ..Probe::default()
            }),
            volume_mounts: Some(self.volume_mounts()),
            resources: self.spec.resources.clone(),
            // Pod Security Standards `restricted`: nothing but the data volume is writable, no
            // capability, no way to gain privileges.
            security_context: Some(SecurityContext {
                allow_privilege_escalation: Some(false),
                read_only_root_filesystem: Some(true),
                run_as_non_root: Some(true),
                capabilities: Some(Capabilities {
                    drop: Some(vec!["ALL".to_string()]),
                    ..Capabilities::default()
                }),
                ..SecurityContext::default()
            }),
            ..Container::default()
        }
    }

    fn volume_mounts(&self) -> Vec<VolumeMount> {
        let ro = |volume: &str, path: &str| VolumeMount {
            name: volume.to_string(),
            mount_path: path.to_string(),
            read_only: Some(true),
            ..VolumeMount::default()
        };
        let mut mounts = vec![VolumeMount {
            name: names::DATA_VOLUME.to_string(),
            mount_path: names::DATA_DIR.to_string(),
            ..VolumeMount::default()
        }];
        if self.tls() {
            mounts.push(ro(TLS_VOLUME, names::TLS_DIR));
            mounts.push(ro(ACL_VOLUME, names::ACL_DIR));
        } else {
            mounts.push(ro(ADMIN_TOKEN_VOLUME, names::ADMIN_TOKEN_DIR));
        }
        mounts
    }

    /// The pod's volumes besides the data claim. NB: Secret and ConfigMap volumes, never
    /// `subPath` mounts: the kubelet refreshes the former in place (a symlink swap) when the
    /// operator renews a certificate or rewrites the policy, and the members reload the files.
    fn volumes(&self) -> Vec<Volume> {
        let secret = |volume: &str, secret: String| Volume {
            name: volume.to_string(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret),
                default_mode: Some(0o400),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        };
        if !self.tls() {
            return vec![secret(ADMIN_TOKEN_VOLUME, names::admin_secret(&self.name))];
        }
        vec![
            secret(TLS_VOLUME, names::member_tls_secret(&self.name)),
            Volume {
                name: ACL_VOLUME.to_string(),
                config_map: Some(ConfigMapVolumeSource {
                    name: names::acl_config_map(&self.name),
                    default_mode: Some(0o444),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            },
        ]
    }

    fn volume_claim(&self) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(names::DATA_VOLUME.to_string()),
                labels: Some(names::labels(&self.name)),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".to_string()]),
                storage_class_name: self.spec.storage.storage_class_name.clone(),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".to_string(),
                        self.spec.storage.size.clone(),
                    )])),
                    ..VolumeResourceRequirements::default()
                }),
                ..PersistentVolumeClaimSpec::default()
            }),
            ..PersistentVolumeClaim::default()
        }
    }

    /// The StatefulSet with `replicas` pods. NB: `replicas` comes from the membership step, not
    /// from `spec.replicas`: a scale-down removes the Raft member before its pod goes.
    pub fn statefulset(&self, replicas: i32) -> StatefulSet {
        let pod = PodSpec {
            service_account_name: Some(names::service_account(&self.name)),
            containers: vec![self.container()],
            volumes: Some(self.volumes()),
            enable_service_links: Some(false),
            // NB: a member never calls the Kubernetes API, so it gets no token to lose.
            automount_service_account_token: Some(false),
            // The image runs as a non-root user (65532), whatever image the spec names; the
            // volume must be writable for it on any provisioner.
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(NONROOT_ID),
                run_as_group: Some(NONROOT_ID),
                fs_group: Some(NONROOT_ID),
                fs_group_change_policy: Some("OnRootMismatch".to_string()),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".to_string(),
                    ..SeccompProfile::default()
                }),
                ..PodSecurityContext::default()
            }),
            ..PodSpec::default()
        };
        StatefulSet {
            metadata: self.meta(names::statefulset(&self.name)),
            spec: Some(StatefulSetSpec {
                replicas: Some(replicas),
                service_name: Some(names::headless_service(&self.name)),
                pod_management_policy: Some("Parallel".to_string()),
                // NB: the operator restarts the members itself, leader last (`rollout`).
                update_strategy: Some(StatefulSetUpdateStrategy {
                    type_: Some(crate::rollout::ON_DELETE.to_string()),
                    rolling_update: None,
                }),
                selector: self.selector(),
                persistent_volume_claim_retention_policy: Some(
                    StatefulSetPersistentVolumeClaimRetentionPolicy {
                        when_deleted: Some(self.spec.storage.on_delete.as_str().to_string()),
                        when_scaled: Some("Delete".to_string()),
                    },
                ),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(names::labels(&self.name)),
                        // For Prometheus set-ups that discover pods by annotation (the
                        // PodMonitor in manifests/monitoring selects the `metrics` port instead).
                        annotations: Some(BTreeMap::from([
                            ("prometheus.io/scrape".to_string(), "true".to_string()),
                            (
                                "prometheus.io/port".to_string(),
                                self.spec.ports.metrics.to_string(),
                            ),
                            ("prometheus.io/path".to_string(), "/metrics".to_string()),
                        ])),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(pod),
                },
                volume_claim_templates: Some(vec![self.volume_claim()]),
                ..StatefulSetSpec::default()
            }),
            ..StatefulSet::default()
        }
    }
}

/// A fresh admin token: 32 random bytes, hex.
pub fn new_token() -> String {
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
#[path = "resources_tests.rs"]
mod tests;
