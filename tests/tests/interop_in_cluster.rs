//! A Go application inside the cluster routes by role with stock tools: the test binary of
//! `tests/interop/incluster` (kuberesolver on `<name>-leader`, grpc-go `round_robin` over
//! `<name>-followers`, each call's answering peer checked against `status.leader`, then a leader
//! change) runs as a pod in the test namespace with a ServiceAccount that may read the
//! EndpointSlices. The ProgLog runs as the sample has it (mutual TLS and the ACL): the Go
//! application is a ProgLogUser and dials with grpc-go's own TLS credentials from the user's
//! Secret, verifying the members under the Services' names. The image is built by `tests/interop/image.sh` (no Docker) and imported into
//! the devcluster node; on another cluster `INTEROP_IMAGE` names one already loaded there.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use e2e::devcluster::{self, wait_for};
use e2e::operator::{
    healthy_voters, is_ready, sample_proglog_tls, wait_proglog, workspace_root, OperatorEnv,
};
use serde_json::json;

const NAME: &str = "interop";
const SA: &str = "interop-go";
const POD: &str = "interop-go";
const USER: &str = "interop-go";

/// The image of the Go test binary: `INTEROP_IMAGE`, else built and imported into the devcluster.
fn interop_image() -> Result<String> {
    if let Ok(i) = std::env::var("INTEROP_IMAGE") {
        return Ok(i);
    }
    let script = workspace_root().join("tests/interop/image.sh");
    let out = devcluster::run_checkout_script(std::process::Command::new(&script), &script)?;
    let get = |key: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_string)
            .with_context(|| format!("{} printed no {key}=:\n{out}", script.display()))
    };
    let archive = get("INTEROP_ARCHIVE")?;
    devcluster::load_images(&[std::path::Path::new(&archive)])?;
    get("INTEROP_IMAGE")
}

/// What the pod may do: read the EndpointSlices (kuberesolver), the ProgLog's status and the
/// pods (to know which IP leads), and delete a pod (the leader change).
fn rbac(ns: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SA, "namespace": ns}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": SA, "namespace": ns},
         "rules": [
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["proglog.dev"], "resources": ["proglogs"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "delete"]},
         ]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": SA, "namespace": ns},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": SA},
         "subjects": [{"kind": "ServiceAccount", "name": SA, "namespace": ns}]},
    ]})
}

/// The ProgLogUser the Go application runs as: its certificate in a Secret the pod mounts.
fn user(ns: &str) -> serde_json::Value {
    json!({"apiVersion": "proglog.dev/v1alpha1", "kind": "ProgLogUser",
           "metadata": {"name": USER, "namespace": ns},
           "spec": {"proglog": NAME, "actions": ["produce", "consume"], "serviceAccounts": [SA]}})
}

/// The pod that runs the Go test once (Pod Security `restricted`, as the namespace enforces),
/// with the user's Secret at /tls.
fn pod(ns: &str, image: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": POD, "namespace": ns},
    "spec": {
        "serviceAccountName": SA,
        "restartPolicy": "Never",
        "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": "go",
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "args": ["-test.v", "-test.count=1", "-test.timeout=5m"],
            "env": [
                {"name": "PROGLOG_NAME", "value": NAME},
                {"name": "PROGLOG_NAMESPACE", "value": ns},
                {"name": "PROGLOG_TLS_DIR", "value": "/tls"},
            ],
            "volumeMounts": [{"name": "tls", "mountPath": "/tls", "readOnly": true}],
            "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                "capabilities": {"drop": ["ALL"]}},
        }],
        "volumes": [{"name": "tls", "secret": {"secretName": format!("{USER}-proglog-tls")}}],
    }})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_go_client_with_kuberesolver_follows_the_leader() -> Result<()> {
    let env = OperatorEnv::start("e2e-interop").await?;
    let result = scenario(&env).await;
    env.finish(result).await
}

async fn scenario(env: &OperatorEnv) -> Result<()> {
    let ns = env.ns.as_str();
    let body = sample_proglog_tls(NAME, ns, 3, "Delete")?;
    env.kubectl_ok(&["apply", "-f", "-"], Some(&body.to_string()))?;
    let t = Instant::now();
    let image = tokio::task::spawn_blocking(interop_image).await??;
    eprintln!("[{ns}] interop image {image} ready in {:.1?}", t.elapsed());
    wait_proglog(
        &env.proglogs(),
        NAME,
        "Ready with 3 voters",
        Duration::from_secs(180),
        |p| is_ready(p) && healthy_voters(p).len() == 3,
    )
    .await?;
    env.kubectl_ok(&["apply", "-f", "-"], Some(&rbac(ns).to_string()))?;
    env.kubectl_ok(&["apply", "-f", "-"], Some(&user(ns).to_string()))?;
    wait_for(
        "the ProgLogUser's certificate",
        Duration::from_secs(60),
        || async {
            Ok(proglog_client::kube_user::tls(&env.client, ns, NAME, USER)
                .await
                .ok())
        },
    )
    .await?;
    env.kubectl_ok(&["apply", "-f", "-"], Some(&pod(ns, &image).to_string()))?;

    let t = Instant::now();
    let phase = wait_for(
        "the Go test pod to finish",
        Duration::from_secs(360),
        || async {
            let out = env.kubectl(&["get", "pod", POD, "-o", "jsonpath={.status.phase}"], None)?;
            let phase = out.stdout.trim().to_string();
            Ok(matches!(phase.as_str(), "Succeeded" | "Failed").then_some(phase))
        },
    )
    .await?;
    let log = env
        .kubectl(&["logs", POD], None)
        .map(|o| o.stdout + &o.stderr)
        .unwrap_or_else(|e| format!("(no log: {e:#})"));
    eprintln!(
        "[{ns}] Go test pod {phase} after {:.1?}:\n{log}",
        t.elapsed()
    );
    ensure!(
        phase == "Succeeded",
        "the in-cluster Go test failed ({phase})"
    );
    ensure!(
        log.contains("--- PASS: TestKuberesolverRoutesByRole"),
        "the in-cluster Go test did not run (skipped?):\n{log}"
    );
    Ok(())
}
