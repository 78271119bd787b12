//! The Kubernetes resolver: a kube-runtime watcher on the EndpointSlices the operator publishes
//! for one ProgLog (label `proglog.dev/cluster=<name>`). Slices with `proglog.dev/role=leader`
//! name the leader, `followers` the rest; a Service may have several slices. Only ready endpoints
//! count. Endpoints are pod IPs; each one that names its pod (`targetRef`, or `hostname`) carries
//! the pod's DNS name under the headless Service as the name its TLS certificate is verified
//! under ([`proglog_crds::names::member_server_name`]), so a client dials the IP and still checks
//! that the member is who the operator says. The watcher relists and reconnects with back-off on its own; errors never change the
//! published set, so a flaky API server does not leave the client without addresses.
//! [`members_from_slices`] is the pure part and is unit-tested without a cluster.

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Endpoint, Members, Resolver};
use proglog_crds::names;

/// The `managed-by` value the operator sets on its slices.
pub use proglog_crds::names::MANAGER as MANAGED_BY;
/// The labels the operator writes on its slices (the naming contract, `proglog_crds::names`):
/// the ProgLog's name, and whether a slice lists the leader or the followers.
pub use proglog_crds::names::{CLUSTER_LABEL, ROLE_FOLLOWERS, ROLE_LABEL, ROLE_LEADER};

/// Settings of the Kubernetes resolver.
#[derive(Clone)]
pub struct KubernetesConfig {
    /// The API client (in a pod: `kube::Client::try_default()`).
    pub client: Client,
    /// Namespace of the ProgLog.
    pub namespace: String,
    /// Name of the ProgLog.
    pub cluster: String,
    /// Name of the slice port clients dial; the first port when no port has this name.
    /// Default `"grpc"`.
    pub port_name: String,
}

impl KubernetesConfig {
    /// Defaults for ProgLog `cluster` in `namespace`.
    pub fn new(client: Client, namespace: impl Into<String>, cluster: impl Into<String>) -> Self {
        KubernetesConfig {
            client,
            namespace: namespace.into(),
            cluster: cluster.into(),
            port_name: proglog_crds::names::GRPC_PORT_NAME.into(),
        }
    }
}

/// Resolves the member set from EndpointSlices (see the module docs).
pub struct KubernetesResolver {
    tx: watch::Sender<Members>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for KubernetesResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesResolver")
            .field("members", &*self.tx.borrow())
            .finish()
    }
}

impl Drop for KubernetesResolver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Resolver for KubernetesResolver {
    fn subscribe(&self) -> watch::Receiver<Members> {
        self.tx.subscribe()
    }

    /// A no-op: the watch already delivers every change.
    fn resolve_now(&self) {}
}

impl KubernetesResolver {
    /// Starts watching in the background.
    pub fn start(cfg: KubernetesConfig) -> Self {
        let tx = watch::Sender::new(Members::default());
        let task = tokio::spawn(run(cfg, tx.clone()));
        KubernetesResolver { tx, task }
    }
}

async fn run(cfg: KubernetesConfig, tx: watch::Sender<Members>) {
    let api: Api<EndpointSlice> = Api::namespaced(cfg.client.clone(), &cfg.namespace);
    let wc = watcher::Config::default().labels(&format!("{CLUSTER_LABEL}={}", cfg.cluster));
    let mut events = watcher::watcher(api, wc).default_backoff().boxed();
    let mut slices: BTreeMap<String, EndpointSlice> = BTreeMap::new();
    // NB: a relist fills `relisting` and swaps it in at InitDone, so that subscribers never see
    // the half-listed set.
    let mut relisting: Option<BTreeMap<String, EndpointSlice>> = None;
    while let Some(ev) = events.next().await {
        match ev {
            Ok(Event::Init) => relisting = Some(BTreeMap::new()),
            Ok(Event::InitApply(s)) => {
                relisting
                    .get_or_insert_with(BTreeMap::new)
                    .insert(s.name_any(), s);
                continue;
            }
            Ok(Event::InitDone) => {
                if let Some(r) = relisting.take() {
                    slices = r;
                }
            }
            Ok(Event::Apply(s)) => {
                slices.insert(s.name_any(), s);
            }
            Ok(Event::Delete(s)) => {
                slices.remove(&s.name_any());
            }
            Err(e) => {
                // The watcher backs off and relists; keep serving the last known set.
                tracing::warn!(cluster = %cfg.cluster, "EndpointSlice watch: {e}");
                continue;
            }
        }
        if relisting.is_some() {
            continue;
        }
        let m = members_from_slices(slices.values(), &cfg.port_name);
        tx.send_if_modified(|cur| {
            if *cur == m {
                return false;
            }
            tracing::debug!(cluster = %cfg.cluster, members = ?m, "member set changed");
            *cur = m;
            true
        });
    }
}

/// The member set that a group of slices describes: ready endpoints only; an endpoint in a
/// leader slice leads. Slices whose role label is missing or unknown are ignored.
pub fn members_from_slices<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    port_name: &str,
) -> Members {
    let mut out = Vec::new();
    for s in slices {
        let is_leader = match s.labels().get(ROLE_LABEL).map(String::as_str) {
            Some(ROLE_LEADER) => true,
            Some(ROLE_FOLLOWERS) => false,
            _ => continue,
        };
        let ports = s.ports.as_deref().unwrap_or_default();
        let port = ports
            .iter()
            .find(|p| p.name.as_deref() == Some(port_name))
            .or_else(|| ports.first())
            .and_then(|p| p.port);
        let Some(port) = port else { continue };
        let cluster = s.labels().get(CLUSTER_LABEL).cloned().unwrap_or_default();
        for e in &s.endpoints {
            // NB: per the EndpointSlice API, an unknown readiness (None) means ready.
            let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if !ready {
                continue;
            }
            let name = e
                .target_ref
                .as_ref()
                .and_then(|t| t.name.clone())
                .or_else(|| e.hostname.clone())
                .unwrap_or_default();
            let namespace = e
                .target_ref
                .as_ref()
                .and_then(|t| t.namespace.clone())
                .or_else(|| s.namespace());
            let server_name = match (names::ordinal(&cluster, &name), namespace) {
                (Some(o), Some(ns)) => Some(names::member_server_name(&cluster, &ns, o)),
                _ => None,
            };
            for ip in &e.addresses {
                let host = if ip.contains(':') {
                    format!("[{ip}]")
                } else {
                    ip.clone()
                };
                out.push(Endpoint {
                    addr: format!("{host}:{port}"),
                    name: name.clone(),
                    is_leader,
                    ready: true,
                    server_name: server_name.clone(),
                });
            }
        }
    }
    Members::new(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::{
        Endpoint as K8sEndpoint, EndpointConditions, EndpointPort,
    };
    use kube::api::ObjectMeta;

    fn slice(name: &str, role: &str, eps: &[(&str, Option<bool>)]) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    [
                        (CLUSTER_LABEL.to_string(), "plog".to_string()),
                        (ROLE_LABEL.to_string(), role.to_string()),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: eps
                .iter()
                .map(|(ip, ready)| K8sEndpoint {
                    addresses: vec![ip.to_string()],
                    conditions: Some(EndpointConditions {
                        ready: *ready,
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
            ports: Some(vec![
                EndpointPort {
                    name: Some("metrics".into()),
                    port: Some(9000),
                    ..Default::default()
                },
                EndpointPort {
                    name: Some("grpc".into()),
                    port: Some(8400),
                    ..Default::default()
                },
            ]),
        }
    }

    #[test]
    fn leader_and_followers_from_several_slices_ready_only() {
        let slices = [
            slice("l", ROLE_LEADER, &[("10.0.0.1", Some(true))]),
            slice("f1", ROLE_FOLLOWERS, &[("10.0.0.2", None)]),
            slice(
                "f2",
                ROLE_FOLLOWERS,
                &[("10.0.0.3", Some(true)), ("10.0.0.4", Some(false))],
            ),
            slice("x", "something-else", &[("10.0.0.9", Some(true))]),
        ];
        let m = members_from_slices(&slices, "grpc");
        assert_eq!(m.leader().unwrap().addr, "10.0.0.1:8400");
        let f: Vec<_> = m.ready_followers().map(|e| e.addr.clone()).collect();
        assert_eq!(f, ["10.0.0.2:8400", "10.0.0.3:8400"]);
        assert_eq!(m.endpoints.len(), 3);
    }

    #[test]
    fn no_leader_while_the_leader_slice_is_empty() {
        let slices = [
            slice("l", ROLE_LEADER, &[]),
            slice("f", ROLE_FOLLOWERS, &[("10.0.0.2", Some(true))]),
        ];
        let m = members_from_slices(&slices, "grpc");
        assert!(m.leader().is_none());
        assert_eq!(m.endpoints.len(), 1);
    }

    #[test]
    fn first_port_when_none_is_named_and_ipv6_in_brackets() {
        let mut s = slice("l", ROLE_LEADER, &[("fd00::1", Some(true))]);
        s.ports.as_mut().unwrap().remove(0);
        let m = members_from_slices([&s], "nope");
        assert_eq!(m.leader().unwrap().addr, "[fd00::1]:8400");
    }

    #[test]
    fn each_pod_is_verified_under_its_dns_name() {
        let mut s = slice(
            "l",
            ROLE_LEADER,
            &[
                ("10.0.0.1", Some(true)),
                ("10.0.0.2", Some(true)),
                ("10.0.0.3", Some(true)),
            ],
        );
        s.metadata.namespace = Some("logs".into());
        let eps = &mut s.endpoints;
        eps[0].target_ref = Some(k8s_openapi::api::core::v1::ObjectReference {
            kind: Some("Pod".into()),
            name: Some("plog-1".into()),
            namespace: Some("logs".into()),
            ..Default::default()
        });
        eps[1].hostname = Some("plog-2".into());
        eps[2].hostname = Some("other-0".into());
        let m = members_from_slices([&s], "grpc");
        let names: Vec<Option<&str>> = m
            .endpoints
            .iter()
            .map(|e| e.server_name.as_deref())
            .collect();
        assert_eq!(
            names,
            [
                Some("plog-1.plog-members.logs.svc"),
                Some("plog-2.plog-members.logs.svc"),
                None
            ],
            "a pod of another cluster is not given this cluster's name"
        );
    }
}
