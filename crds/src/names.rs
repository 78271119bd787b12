//! The naming contract of a ProgLog's objects: names, labels, ports and addresses that the
//! operator builds, the client's resolver watches and the tests look for. One place, shared by
//! all three (`proglog_operator::names`, `proglog_client::resolver` and the e2e crate re-export
//! it), so the objects the operator builds, the pods it dials and the slices it writes always
//! match what the others expect. Strings only; no Kubernetes types.

/// Label naming the ProgLog an object belongs to (the client's resolver selects on it).
pub const CLUSTER_LABEL: &str = "proglog.dev/cluster";
/// Label on the discovery Services and EndpointSlices: `leader` or `followers`.
pub const ROLE_LABEL: &str = "proglog.dev/role";
/// [`ROLE_LABEL`] value of the leader's Service and slice.
pub const ROLE_LEADER: &str = "leader";
/// [`ROLE_LABEL`] value of the followers' Service and slice.
pub const ROLE_FOLLOWERS: &str = "followers";
/// The field manager of every server-side apply, and the `managed-by` of the slices.
pub const MANAGER: &str = "proglog-operator";
/// Label a slice's controller is named by (the EndpointSlice controller skips slices it does not own).
pub const SLICE_MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// Label linking a slice to its Service.
pub const SLICE_SERVICE_LABEL: &str = "kubernetes.io/service-name";
/// Finalizer that removes what owner references cannot (the cluster-scoped ClusterRole).
pub const FINALIZER: &str = "proglog.dev/cleanup";
/// Name of the gRPC port, on the pods and on every Service and slice.
pub const GRPC_PORT_NAME: &str = "grpc";
/// Name of the metrics (Prometheus, HTTP) port, on the pods and on the metrics Service.
pub const METRICS_PORT_NAME: &str = "metrics";
/// [`ROLE_LABEL`] value of the metrics Service (the PodMonitors in `manifests/` select pods, not it).
pub const ROLE_METRICS: &str = "metrics";
/// Key of the admin token in the admin Secret.
pub const ADMIN_TOKEN_KEY: &str = "token";
/// Where the admin token is mounted in a member's container.
pub const ADMIN_TOKEN_DIR: &str = "/var/run/proglog/admin";
/// Where a member's volume is mounted.
pub const DATA_DIR: &str = "/var/lib/proglog";
/// Name of the logserver container.
pub const CONTAINER: &str = "logserver";
/// Name of the volume claim template.
pub const DATA_VOLUME: &str = "data";

/// Subject (certificate CN) of every member of a ProgLog: the only one the Raft peer plane
/// accepts. Reserved: no user may be called this.
pub const MEMBER_SUBJECT: &str = "proglog-member";
/// Subject (certificate CN) of the operator: the only one the admin plane accepts. Reserved: no
/// user may be called this.
pub const OPERATOR_SUBJECT: &str = "proglog-operator";
/// Key of the CA certificate (PEM) in the CA Secret ([`ca_secret`]); also the key of the CA
/// bundle in every identity Secret (member, operator, users).
pub const CA_CERT_KEY: &str = "ca.pem";
/// Key of the CA's private key (PEM, PKCS#8) in the CA Secret. Only the operator reads it.
pub const CA_KEY_KEY: &str = "ca-key.pem";
/// Key of the certificate (PEM, leaf first) in an identity Secret ([`member_tls_secret`],
/// [`operator_tls_secret`]; a user's is [`USER_CERT_KEY`]).
pub const TLS_CERT_KEY: &str = "cert.pem";
/// Key of the private key (PEM) in an identity Secret.
pub const TLS_KEY_KEY: &str = "key.pem";
/// Key of the casbin model in the ACL ConfigMap ([`acl_config_map`]).
pub const ACL_MODEL_KEY: &str = "model.conf";
/// Key of the casbin policy in the ACL ConfigMap. The operator owns it whole and renders it
/// from the ProgLogUsers (`proglog_operator::acl::render`); never edit it by hand.
pub const ACL_POLICY_KEY: &str = "policy.csv";
/// Where a member's identity Secret ([`member_tls_secret`]) is mounted (read-only).
pub const TLS_DIR: &str = "/var/run/proglog/tls";
/// Where the ACL ConfigMap is mounted in a member (read-only).
pub const ACL_DIR: &str = "/var/run/proglog/acl";

/// Labels every object of ProgLog `name` carries (also the pod selector).
pub fn labels(name: &str) -> std::collections::BTreeMap<String, String> {
    [
        ("app.kubernetes.io/name", "proglog"),
        ("app.kubernetes.io/instance", name),
        ("app.kubernetes.io/managed-by", MANAGER),
        (CLUSTER_LABEL, name),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The pod selector of ProgLog `name`, as a label-selector string (`status.selector`).
pub fn selector(name: &str) -> String {
    format!("app.kubernetes.io/name=proglog,{CLUSTER_LABEL}={name}")
}

/// The StatefulSet (its pods are `<name>-<ordinal>`).
pub fn statefulset(name: &str) -> String {
    name.to_string()
}
/// The headless Service that gives each pod a DNS name (publishes not-ready addresses).
pub fn headless_service(name: &str) -> String {
    format!("{name}-members")
}
/// The selectorless Service (and its EndpointSlice) naming the leader.
pub fn leader_service(name: &str) -> String {
    format!("{name}-leader")
}
/// The selectorless Service (and its EndpointSlice) naming the followers.
pub fn followers_service(name: &str) -> String {
    format!("{name}-followers")
}
/// The headless Service that names every member's metrics port (for scrapers that discover
/// Services, such as a ServiceMonitor).
pub fn metrics_service(name: &str) -> String {
    format!("{name}-metrics")
}
/// The Secret holding the admin API's bearer token.
pub fn admin_secret(name: &str) -> String {
    format!("{name}-admin")
}
/// The Secret holding the CA of ProgLog `name` (keys [`CA_CERT_KEY`], [`CA_KEY_KEY`]): made by
/// the operator, or copied by it from the issuer Secret `spec.tls.issuerSecret` names. Every
/// certificate of the cluster (members, operator, users) is signed by this CA.
pub fn ca_secret(name: &str) -> String {
    format!("{name}-ca")
}
/// The members' identity Secret ([`CA_CERT_KEY`], [`TLS_CERT_KEY`], [`TLS_KEY_KEY`]; subject
/// [`MEMBER_SUBJECT`]), mounted at [`TLS_DIR`] in every member.
pub fn member_tls_secret(name: &str) -> String {
    format!("{name}-member-tls")
}
/// The operator's identity Secret for ProgLog `name` (same keys; subject [`OPERATOR_SUBJECT`]):
/// the client certificate of the admin plane.
pub fn operator_tls_secret(name: &str) -> String {
    format!("{name}-operator-tls")
}
/// The ConfigMap holding the Log service's ACL ([`ACL_MODEL_KEY`], [`ACL_POLICY_KEY`]),
/// mounted at [`ACL_DIR`] in every member.
pub fn acl_config_map(name: &str) -> String {
    format!("{name}-acl")
}
/// The members' ServiceAccount (and RoleBinding).
pub fn service_account(name: &str) -> String {
    format!("{name}-logserver")
}
/// The ClusterRole of the members: cluster-scoped, so the name carries the namespace.
pub fn cluster_role(namespace: &str, name: &str) -> String {
    format!("proglog:{namespace}:{name}")
}
/// The PodDisruptionBudget.
pub fn pdb(name: &str) -> String {
    name.to_string()
}
/// Pod `ordinal` of ProgLog `name`.
pub fn pod(name: &str, ordinal: u32) -> String {
    format!("{name}-{ordinal}")
}
/// The ordinal of a pod of ProgLog `name`, if `pod` is one.
pub fn ordinal(name: &str, pod: &str) -> Option<u32> {
    let rest = pod.strip_prefix(name)?.strip_prefix('-')?;
    if rest.starts_with('+') || (rest.len() > 1 && rest.starts_with('0')) {
        return None;
    }
    rest.parse().ok()
}
/// The Raft node id of pod `ordinal` (ids are > 0; the logserver derives the same from its name).
pub fn node_id(ordinal: u32) -> u64 {
    u64::from(ordinal) + 1
}
/// The pod ordinal of Raft node `id`.
pub fn ordinal_of(node_id: u64) -> Option<u32> {
    node_id.checked_sub(1).and_then(|o| u32::try_from(o).ok())
}
/// The stable address a member advertises to its peers: its DNS name under the headless Service.
pub fn member_address(
    name: &str,
    namespace: &str,
    ordinal: u32,
    cluster_domain: &str,
    port: i32,
) -> String {
    format!(
        "{}.{}.{namespace}.svc.{cluster_domain}:{port}",
        pod(name, ordinal),
        headless_service(name)
    )
}

/// The DNS name a member's certificate is verified under (without the cluster domain; the
/// certificate covers both forms): `<pod>.<name>-members.<namespace>.svc`. Clients that dial a
/// pod by IP verify it under this name.
pub fn member_server_name(name: &str, namespace: &str, ordinal: u32) -> String {
    format!(
        "{}.{}.{namespace}.svc",
        pod(name, ordinal),
        headless_service(name)
    )
}

// --- ProgLogUser objects (operator/src/users.rs builds them, the CLI's --user reads them) ---

/// Label naming the ProgLogUser an object belongs to (its Secret and RoleBinding).
pub const USER_LABEL: &str = "proglog.dev/user";
/// Finalizer of a ProgLogUser: its policy lines go before it does.
pub const USER_FINALIZER: &str = "proglog.dev/user-cleanup";
/// The ClusterRole `manifests/discovery_cluster_role.yaml` installs: read EndpointSlices and
/// ProgLogs (what the client's resolver needs). Each user's ServiceAccounts get it in their
/// namespace through a RoleBinding.
pub const DISCOVERY_CLUSTER_ROLE: &str = "proglog-discovery";
/// Key of the CA bundle in a user's Secret (verifies the members): [`CA_CERT_KEY`].
pub const USER_CA_KEY: &str = CA_CERT_KEY;
/// Key of the user's certificate in its Secret. NB: users' Secrets are `kubernetes.io/tls`
/// Secrets, whose keys are `tls.crt`/`tls.key` (not [`TLS_CERT_KEY`]/[`TLS_KEY_KEY`]), so that
/// tools that know TLS Secrets read them.
pub const USER_CERT_KEY: &str = "tls.crt";
/// Key of the user's private key in its Secret.
pub const USER_KEY_KEY: &str = "tls.key";

/// The default Secret of ProgLogUser `user` (its `spec.secretName` may name another).
pub fn user_secret(user: &str) -> String {
    format!("{user}-proglog-tls")
}
/// The subject (certificate CN) of ProgLogUser `user` in `namespace`, as the ACL policy names
/// it. NB: the namespace and the `/` keep a user from ever taking a member's or the operator's
/// subject (`proglog-member`, `proglog-operator`), whatever it is called.
pub fn user_subject(namespace: &str, user: &str) -> String {
    format!("{namespace}/{user}")
}
/// The RoleBinding giving ProgLogUser `user`'s ServiceAccounts [`DISCOVERY_CLUSTER_ROLE`].
pub fn user_role_binding(user: &str) -> String {
    format!("{user}-proglog-discovery")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals_round_trip_and_reject_other_names() {
        assert_eq!(ordinal("demo", &pod("demo", 7)), Some(7));
        assert_eq!(ordinal("demo", "demo-x"), None);
        assert_eq!(ordinal("demo", "demo-01"), None);
        assert_eq!(ordinal("demo", "demox-1"), None);
        assert_eq!(ordinal("demo-a", "demo-a-2"), Some(2));
        assert_eq!(ordinal_of(node_id(4)), Some(4));
        assert_eq!(ordinal_of(0), None);
    }

    #[test]
    fn member_address_is_the_pod_dns_name() {
        assert_eq!(
            member_address("demo", "ns", 2, "cluster.local", 8400),
            "demo-2.demo-members.ns.svc.cluster.local:8400"
        );
        assert_eq!(
            member_server_name("demo", "ns", 2),
            "demo-2.demo-members.ns.svc"
        );
    }
}
