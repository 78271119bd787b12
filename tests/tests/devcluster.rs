//! devcluster end to end, on its stock node: a StatefulSet of busybox web servers (non-root, fsGroup) reaches
//! 3/3 Ready with pod IPs from the pod CIDR that the host reaches directly, its EndpointSlice lists them,
//! cluster DNS answers for pods and Services, a ClusterIP Service with our own EndpointSlice carries
//! traffic through kube-proxy, a deleted pod comes back with its dynamically provisioned volume's data;
//! a pod using in-cluster config (kubectl) gets exactly what its Role allows; probes, restarts, an image
//! that is not there; volumes, env and init containers; `kubectl exec`. Brings the devcluster up when
//! KUBECONFIG is unset.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result};
use e2e::devcluster::{self, wait_for, DevCluster};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use std::net::IpAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MANAGER: &str = "e2e-devcluster";

async fn apply<K>(api: &Api<K>, body: serde_json::Value) -> Result<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = body["metadata"]["name"]
        .as_str()
        .context("object without a name")?
        .to_string();
    Ok(api
        .patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?)
}

async fn namespace(client: &Client, prefix: &str) -> Result<String> {
    let ns = devcluster::unique_namespace(prefix);
    apply(
        &Api::<Namespace>::all(client.clone()),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
    )
    .await?;
    // Pods need the namespace's default ServiceAccount, which the controller manager creates.
    let sa = Api::<ServiceAccount>::namespaced(client.clone(), &ns);
    wait_for(
        "the default ServiceAccount",
        Duration::from_secs(60),
        || async { Ok(sa.get_opt("default").await?) },
    )
    .await?;
    Ok(ns)
}

async fn cleanup(client: &Client, ns: &str) {
    let _ = Api::<Namespace>::all(client.clone())
        .delete(ns, &DeleteParams::default())
        .await;
}

/// GET / from a web server at `ip:port`.
async fn http_get(ip: &str, port: u16) -> Result<String> {
    let mut s = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect((ip, port)),
    )
    .await
    .with_context(|| format!("connecting to {ip}:{port}: timed out"))?
    .with_context(|| format!("connecting to {ip}:{port}"))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").await?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .context("reading the answer: timed out")??;
    Ok(out
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .trim()
        .to_string())
}

fn field(body: &str, key: &str) -> String {
    body.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or_default()
        .to_string()
}

async fn ready_pod(pods: &Api<Pod>, name: &str) -> Result<Option<Pod>> {
    let Some(p) = pods.get_opt(name).await? else {
        return Ok(None);
    };
    let ready = p
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    Ok((ready && p.metadata.deletion_timestamp.is_none()).then_some(p))
}

fn pod_ip(p: &Pod) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_default()
}

fn in_pod_cidr(ip: &str) -> bool {
    ip.parse::<std::net::Ipv4Addr>()
        .is_ok_and(|a| a.octets()[..3] == [10, 244, 0])
}

/// Waits until `name` resolves to exactly `want` through the cluster DNS.
async fn wait_resolves(dc: &DevCluster, name: &str, want: &BTreeSet<String>) -> Result<()> {
    wait_for(
        &format!("{name} to resolve to {want:?}"),
        Duration::from_secs(30),
        || async {
            let found: BTreeSet<String> = dc
                .resolve(name)
                .await
                .iter()
                .map(IpAddr::to_string)
                .collect();
            Ok((&found == want).then_some(()))
        },
    )
    .await
}

const BUSYBOX: &str = "busybox:1.35.0";
const KUBECTL: &str = "proglog.dev/devcluster/kubectl:v1.35.4";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_ready_with_endpoints_dns_services_and_pvc_data_surviving_pod_deletion(
) -> Result<()> {
    let (dc, client) = devcluster::client().await?;
    let ns = namespace(&client, "dc-sts").await?;
    let result = statefulset_scenario(&dc, &client, &ns).await;
    cleanup(&client, &ns).await;
    result
}

async fn statefulset_scenario(dc: &DevCluster, client: &Client, ns: &str) -> Result<()> {
    let labels = json!({"app": "echo"});
    apply(
        &Api::<Service>::namespaced(client.clone(), ns),
        json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo"},
        "spec": {"clusterIP": "None", "selector": labels, "ports": [{"name": "http", "port": 8080}]}}),
    )
    .await?;
    // Each boot counts itself on the claim's volume and serves what it found: the volume must be
    // writable by a non-root user through fsGroup.
    let script = r#"set -e
n=$(cat /data/boots 2>/dev/null || echo 0); n=$((n + 1)); echo $n > /data/boots
[ -s /data/first-boot ] || echo "$(hostname)@$RANDOM$RANDOM" > /data/first-boot
echo "host=$(hostname) first-boot=$(cat /data/first-boot) boots=$n uid=$(id -u)" > /www/index.html
exec httpd -f -p 8080 -h /www"#;
    let sts_api = Api::<StatefulSet>::namespaced(client.clone(), ns);
    apply(&sts_api, json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "echo"},
        "spec": {
            "serviceName": "echo", "replicas": 3, "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {
                "terminationGracePeriodSeconds": 2,
                "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
                                    "fsGroup": 65532},
                "containers": [{
                    "name": "echo", "image": BUSYBOX, "command": ["sh", "-c", script],
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                    "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
                    "livenessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 2},
                    "volumeMounts": [{"name": "data", "mountPath": "/data"},
                                     {"name": "www", "mountPath": "/www"}]}],
                "volumes": [{"name": "www", "emptyDir": {}}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "16Mi"}}}}]}}))
    .await?;

    wait_for("3/3 ready replicas", Duration::from_secs(180), || async {
        let s = sts_api.get("echo").await?;
        Ok((s.status.and_then(|s| s.ready_replicas) == Some(3)).then_some(()))
    })
    .await?;

    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let mut ips = BTreeSet::new();
    for i in 0..3 {
        let name = format!("echo-{i}");
        let p = pods.get(&name).await?;
        let ip = pod_ip(&p);
        assert!(in_pod_cidr(&ip), "pod {name} has IP {ip:?}");
        // From the host, straight to the pod.
        let body = http_get(&ip, 8080).await?;
        assert_eq!(field(&body, "host"), name, "pod {name} answered {body:?}");
        assert_eq!(field(&body, "uid"), "65532", "pod {name} answered {body:?}");
        ips.insert(ip);
    }
    assert_eq!(ips.len(), 3, "pod IPs must be distinct: {ips:?}");

    let slices = Api::<EndpointSlice>::namespaced(client.clone(), ns);
    wait_for(
        "the EndpointSlice to list the 3 ready pod IPs",
        Duration::from_secs(60),
        || async {
            let lp = ListParams::default().labels("kubernetes.io/service-name=echo");
            let ready: BTreeSet<String> = slices
                .list(&lp)
                .await?
                .items
                .into_iter()
                .flat_map(|s| s.endpoints)
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
                .flat_map(|e| e.addresses)
                .collect();
            Ok((ready == ips).then_some(()))
        },
    )
    .await?;

    // Cluster DNS: a StatefulSet pod's name, and a headless Service's ready pods.
    let ip0 = pod_ip(&pods.get("echo-0").await?);
    let fqdn = format!("echo-0.echo.{ns}.svc.cluster.local");
    wait_resolves(dc, &fqdn, &BTreeSet::from([ip0.clone()])).await?;
    wait_resolves(dc, &format!("echo.{ns}.svc.cluster.local"), &ips).await?;

    // A ClusterIP Service without a selector, whose EndpointSlice a controller of ours writes (as the
    // operator does for `<name>-leader`): its name resolves to its ClusterIP, and kube-proxy carries a
    // connection to that address to the pod the slice names.
    let leader_svc = apply(
        &Api::<Service>::namespaced(client.clone(), ns),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo-leader"},
               "spec": {"ports": [{"name": "http", "port": 8080}]}}),
    )
    .await?;
    let cluster_ip = leader_svc
        .spec
        .and_then(|s| s.cluster_ip)
        .context("no clusterIP")?;
    apply(&slices, json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "echo-leader",
            "labels": {"kubernetes.io/service-name": "echo-leader", "endpointslice.kubernetes.io/managed-by": "e2e"}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
        "endpoints": [{"addresses": [ip0.clone()], "conditions": {"ready": true}}]}))
    .await?;
    let leader = format!("echo-leader.{ns}.svc.cluster.local");
    wait_resolves(dc, &leader, &BTreeSet::from([cluster_ip.clone()])).await?;
    let via_service = wait_for(
        "the ClusterIP to reach echo-0",
        Duration::from_secs(30),
        || async { Ok(http_get(&cluster_ip, 8080).await.ok()) },
    )
    .await?;
    assert_eq!(field(&via_service, "host"), "echo-0", "{via_service:?}");

    // Delete a pod: the StatefulSet makes a new one, which finds the data of the old one.
    let old = pods.get("echo-1").await?;
    let before = http_get(&pod_ip(&old), 8080).await?;
    let old_uid = old.metadata.uid.unwrap_or_default();
    let first_boot = field(&before, "first-boot");
    assert!(
        first_boot.starts_with("echo-1@"),
        "unexpected first answer {before:?}"
    );
    pods.delete("echo-1", &DeleteParams::default()).await?;
    let new = wait_for(
        "echo-1 to come back Ready",
        Duration::from_secs(120),
        || async {
            Ok(ready_pod(&pods, "echo-1")
                .await?
                .filter(|p| p.metadata.uid.as_deref() != Some(old_uid.as_str())))
        },
    )
    .await?;
    let after = http_get(&pod_ip(&new), 8080).await?;
    assert_eq!(
        field(&after, "first-boot"),
        first_boot,
        "the PVC data did not survive: {after:?}"
    );
    assert_eq!(
        field(&after, "boots"),
        "2",
        "expected a second boot on the same volume: {after:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_cluster_config_gets_what_its_role_allows_and_no_more() -> Result<()> {
    let (dc, client) = devcluster::client().await?;
    let ns = namespace(&client, "dc-rbac").await?;
    let result = rbac_scenario(&dc, &client, &ns).await;
    cleanup(&client, &ns).await;
    result
}

async fn rbac_scenario(dc: &DevCluster, client: &Client, ns: &str) -> Result<()> {
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    apply(
        &Api::<ServiceAccount>::namespaced(client.clone(), ns),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "checker"}}),
    )
    .await?;
    apply(&Api::<Role>::namespaced(client.clone(), ns), json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "read-configmaps"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]}))
    .await?;
    apply(&Api::<RoleBinding>::namespaced(client.clone(), ns), json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "checker"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-configmaps"},
        "subjects": [{"kind": "ServiceAccount", "name": "checker", "namespace": ns}]}))
    .await?;
    // kubectl in the pod uses in-cluster config: the `kubernetes` Service's ClusterIP and the token.
    let script = r#"kubectl get configmaps >/dev/null && echo "configmaps: allowed"
out=$(kubectl get secrets 2>&1); case "$out" in *Forbidden*|*forbidden*) echo "secrets: forbidden";; esac
echo "$out""#;
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "checker"},
        "spec": {"serviceAccountName": "checker", "restartPolicy": "Never",
                 "containers": [{"name": "main", "image": KUBECTL, "command": ["sh", "-c", script]}]}}))?;
    let uid = pods
        .create(&PostParams::default(), &pod)
        .await?
        .metadata
        .uid
        .unwrap_or_default();
    let done = wait_for(
        "the checker pod to finish",
        Duration::from_secs(120),
        || async {
            let p = pods.get("checker").await?;
            let phase = p
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_default();
            Ok((phase == "Succeeded" || phase == "Failed").then_some(phase))
        },
    )
    .await?;
    let log = dc.container_output(ns, "checker", &uid, "main")?;
    assert_eq!(done, "Succeeded", "checker pod failed; its log:\n{log}");
    assert!(
        log.contains("configmaps: allowed"),
        "the Role allows listing ConfigMaps; log:\n{log}"
    );
    assert!(
        log.contains("secrets: forbidden"),
        "the Role does not allow listing Secrets; log:\n{log}"
    );
    // The same output through the API server (kubectl logs), served by the kubelet.
    let via_api = pods
        .logs(
            "checker",
            &kube::api::LogParams {
                container: Some("main".into()),
                ..Default::default()
            },
        )
        .await?;
    assert_eq!(via_api, log, "pods/log must return the container's output");
    assert!(
        log.contains(&format!("system:serviceaccount:{ns}:checker")),
        "the refusal must name the pod's ServiceAccount; log:\n{log}"
    );
    Ok(())
}

fn container_status<'a>(
    p: &'a Pod,
    name: &str,
) -> Option<&'a k8s_openapi::api::core::v1::ContainerStatus> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_restarts_and_missing_images() -> Result<()> {
    let (_dc, client) = devcluster::client().await?;
    let ns = namespace(&client, "dc-probes").await?;
    let result = probes_scenario(&client, &ns).await;
    cleanup(&client, &ns).await;
    result
}

async fn probes_scenario(client: &Client, ns: &str) -> Result<()> {
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let serve =
        "mkdir -p /tmp/www && echo ok > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www";
    // One pod, one container per probe kind: it is Ready only when all three probes pass. The exec
    // probe looks for the service-account token, which exists only in the container's filesystem.
    let probed: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probed"},
        "spec": {"terminationGracePeriodSeconds": 2, "containers": [
            {"name": "http", "image": BUSYBOX, "command": ["sh", "-c", serve],
             "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}},
            {"name": "tcp", "image": BUSYBOX, "command": ["nc", "-ll", "-p", "9090", "-e", "true"],
             "readinessProbe": {"tcpSocket": {"port": 9090}, "periodSeconds": 1}},
            {"name": "exec", "image": BUSYBOX, "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"],
             "readinessProbe": {"exec": {"command": ["test", "-s", "/var/run/secrets/kubernetes.io/serviceaccount/token"]},
                                "periodSeconds": 1}}]}}))?;
    pods.create(&PostParams::default(), &probed).await?;
    // Liveness fails at once: the container is restarted, with back-off.
    let unhealthy: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "unhealthy"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [
            {"name": "main", "image": BUSYBOX, "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"],
             "livenessProbe": {"exec": {"command": ["false"]}, "periodSeconds": 1, "failureThreshold": 1}}]}}))?;
    pods.create(&PostParams::default(), &unhealthy).await?;
    // An image that was never imported: the pull fails on this machine (every registry is a local
    // port where nothing listens).
    let missing: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "missing-image"},
        "spec": {"containers": [{"name": "main", "image": "nginx:1.27"}]}}))?;
    pods.create(&PostParams::default(), &missing).await?;

    wait_for(
        "the probed pod to be Ready",
        Duration::from_secs(60),
        || async { Ok(ready_pod(&pods, "probed").await?.map(|_| ())) },
    )
    .await?;
    let p = pods.get("probed").await?;
    for c in ["http", "tcp", "exec"] {
        let st = container_status(&p, c).context("no container status")?;
        assert!(st.ready, "container {c} is not ready: {st:?}");
    }

    let restarted = wait_for(
        "the unhealthy container to be restarted",
        Duration::from_secs(60),
        || async {
            let p = pods.get("unhealthy").await?;
            Ok(container_status(&p, "main")
                .filter(|c| c.restart_count >= 1)
                .cloned())
        },
    )
    .await?;
    assert!(
        restarted.last_state.and_then(|s| s.terminated).is_some(),
        "no lastState.terminated after a restart"
    );
    let events = Api::<k8s_openapi::api::core::v1::Event>::namespaced(client.clone(), ns);
    wait_for(
        "the liveness failure event",
        Duration::from_secs(30),
        || async {
            let lp = ListParams::default().fields("involvedObject.name=unhealthy");
            Ok(events
                .list(&lp)
                .await?
                .items
                .into_iter()
                .find(|e| {
                    e.message
                        .as_deref()
                        .is_some_and(|m| m.contains("Liveness probe failed"))
                })
                .map(|_| ()))
        },
    )
    .await?;

    let waiting = wait_for(
        "the missing image to be reported",
        Duration::from_secs(60),
        || async {
            let p = pods.get("missing-image").await?;
            Ok(container_status(&p, "main")
                .and_then(|c| c.state.clone()?.waiting)
                .filter(|w| {
                    matches!(
                        w.reason.as_deref(),
                        Some("ErrImagePull" | "ImagePullBackOff")
                    )
                }))
        },
    )
    .await?;
    assert!(
        waiting.message.unwrap_or_default().contains("nginx"),
        "the message must name the image"
    );
    let phase = pods
        .get("missing-image")
        .await?
        .status
        .and_then(|s| s.phase);
    assert_eq!(phase.as_deref(), Some("Pending"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_env_init_containers_and_exec() -> Result<()> {
    let (dc, client) = devcluster::client().await?;
    let ns = namespace(&client, "dc-vol").await?;
    let result = volumes_scenario(&dc, &client, &ns).await;
    cleanup(&client, &ns).await;
    result
}

async fn volumes_scenario(dc: &DevCluster, client: &Client, ns: &str) -> Result<()> {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    apply(&Api::<Secret>::namespaced(client.clone(), ns), json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"}, "stringData": {"password": "hunter2"}}))
    .await?;
    apply(&Api::<ConfigMap>::namespaced(client.clone(), ns), json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"greeting": "hello"}}))
    .await?;
    // NB: busybox's nslookup prints the server's Address first and the answer's last.
    let script = r#"cat /work/init; echo "env=$PASSWORD/$GREETING/$MY_NS/$ADDR"; echo "file=$(cat /run/devcluster-e2e/config/greeting)/$(cat /run/devcluster-e2e/secret/password)"; echo "hostname=$(hostname)"; echo "dns=$(nslookup kubernetes.default.svc.cluster.local 2>/dev/null | awk '/^Address/ {a = $NF} END {print a}')"; if nslookup example.com >/dev/null 2>&1; then echo outside=resolved; else echo outside=unresolved; fi; trap 'exit 0' TERM; while true; do sleep 1; done"#;
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "vols"},
        "spec": {"terminationGracePeriodSeconds": 1,
            "volumes": [{"name": "work", "emptyDir": {}},
                        {"name": "config", "configMap": {"name": "settings"}},
                        {"name": "secret", "secret": {"secretName": "creds"}}],
            "initContainers": [{"name": "init", "image": BUSYBOX, "command": ["sh", "-c", "echo init-ran > /work/init"],
                                "volumeMounts": [{"name": "work", "mountPath": "/work"}]}],
            "containers": [{"name": "main", "image": BUSYBOX, "command": ["sh", "-c", script],
                "env": [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                        {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "greeting"}}},
                        {"name": "MY_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                        {"name": "ADDR", "value": "$(MY_NS):1"}],
                "volumeMounts": [{"name": "work", "mountPath": "/work"},
                                 {"name": "config", "mountPath": "/run/devcluster-e2e/config"},
                                 {"name": "secret", "mountPath": "/run/devcluster-e2e/secret", "readOnly": true}]}]}}))?;
    let uid = pods
        .create(&PostParams::default(), &pod)
        .await?
        .metadata
        .uid
        .unwrap_or_default();
    let log = wait_for(
        "the vols pod to report",
        Duration::from_secs(60),
        || async {
            let log = dc
                .container_output(ns, "vols", &uid, "main")
                .unwrap_or_default();
            Ok(log.contains("outside=").then_some(log))
        },
    )
    .await?;
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some("init-ran"),
        "the init container must run first; log:\n{log}"
    );
    assert!(
        log.contains(&format!("env=hunter2/hello/{ns}/{ns}:1")),
        "log:\n{log}"
    );
    assert!(log.contains("file=hello/hunter2"), "log:\n{log}");
    assert!(log.contains("hostname=vols"), "log:\n{log}");
    assert!(
        log.contains("dns=10.112.0.1"),
        "cluster names must resolve in pods (to the kubernetes Service); log:\n{log}"
    );
    assert!(
        log.contains("outside=unresolved"),
        "the cluster DNS must not answer for names outside the cluster; log:\n{log}"
    );
    assert!(
        !std::path::Path::new("/work/init").exists(),
        "the emptyDir must be the pod's own"
    );

    // kubectl exec: stdin in, stdout out, the exit code back (through the kubelet and containerd's
    // streaming server).
    let kubectl = e2e::operator::kubectl_program();
    let mut child = std::process::Command::new(&kubectl)
        .env("KUBECONFIG", &dc.kubeconfig)
        .args([
            "-n", ns, "exec", "-i", "vols", "-c", "main", "--", "sh", "-c",
        ])
        .arg("read line; echo \"got $line in $(hostname)\"; exit 3")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", kubectl.display()))?;
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .context("no stdin")?
            .write_all(b"hello\n")?;
    }
    let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await??;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "got hello in vols",
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(3), "the exit code must come back");
    Ok(())
}
