//! `manifests/` as a user installs it: `kubectl kustomize manifests/` renders the CRD, the
//! namespace, the operator's ServiceAccount, ClusterRole, ClusterRoleBinding and Deployment, and
//! the API server accepts all of it (`kubectl apply --dry-run=server`). The rendered objects are
//! moved into a test namespace first, since a dry run cannot create `proglog-system` and then use
//! it; nothing is written to the cluster. The sample ProgLog passes admission too.

use std::collections::BTreeSet;

use anyhow::{ensure, Result};
use e2e::operator::OperatorEnv;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifests_render_and_the_api_server_accepts_them() -> Result<()> {
    let env = OperatorEnv::without_operator("e2e-op-manifests").await?;
    let result = scenario(&env);
    env.cleanup(result.is_err()).await;
    result
}

fn scenario(env: &OperatorEnv) -> Result<()> {
    let root = e2e::operator::workspace_root();
    let dir = root.join("manifests");
    let rendered = env.kubectl_ok(&["kustomize", &dir.to_string_lossy()], None)?;
    let mut kinds = BTreeSet::new();
    for doc in rendered.split("\n---\n") {
        if let Some(kind) = doc.lines().find_map(|l| l.strip_prefix("kind: ")) {
            kinds.insert(kind.trim().to_string());
        }
    }
    let want: BTreeSet<String> = [
        "CustomResourceDefinition",
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    ensure!(kinds == want, "kustomize rendered {kinds:?}, want {want:?}");
    ensure!(
        rendered.contains("image: proglog/operator:0.1.0")
            && rendered.contains("--metrics-addr=$(POD_IP):8080"),
        "the Deployment runs proglog/operator:0.1.0 on $(POD_IP):8080"
    );

    let moved = rendered.replace(
        "namespace: proglog-system",
        &format!("namespace: {}", env.ns),
    );
    let out = env.kubectl_ok(&["apply", "--dry-run=server", "-f", "-"], Some(&moved))?;
    eprintln!("{out}");
    for what in [
        "customresourcedefinition.apiextensions.k8s.io/proglogs.proglog.dev",
        "serviceaccount/proglog-operator",
        "clusterrole.rbac.authorization.k8s.io/proglog-operator",
        "clusterrolebinding.rbac.authorization.k8s.io/proglog-operator",
        "deployment.apps/proglog-operator",
    ] {
        ensure!(
            out.contains(what),
            "the dry run did not accept {what}:\n{out}"
        );
    }

    let sample = root.join("manifests/samples/proglog.yaml");
    let out = env.kubectl_ok(
        &["apply", "--dry-run=server", "-f", &sample.to_string_lossy()],
        None,
    )?;
    ensure!(out.contains("proglog.proglog.dev/demo"), "{out}");
    Ok(())
}
