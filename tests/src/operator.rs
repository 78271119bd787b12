//! Helpers for the operator e2e tests (`tests/tests/operator_*.rs`): a namespace per test with
//! its own operator running as a pod (the Deployment, ServiceAccount and RBAC of `manifests/`,
//! read from the files and moved into the test namespace, the operator told `--namespace` so
//! that parallel tests never see each other's ProgLogs), ProgLogs made from
//! `manifests/samples/proglog.yaml`, `kubectl` and the `proglog` CLI as subprocesses, waits on
//! the ProgLog's status with deadlines, and a cleanup that leaves nothing behind (set
//! `E2E_KEEP=1` to keep a failed test's namespace for a look).
//!
//! It must not spell the manifests out again: a change to `manifests/` is what these tests run.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::names;
use anyhow::{bail, Context, Result};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    Namespace, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use proglog_crds::{ProgLog, ProgLogUser};
use serde_json::{json, Value};

use crate::devcluster::{self, wait_for, DevCluster};
use crate::images;

/// Field manager of everything the tests apply.
pub const MANAGER: &str = "proglog-e2e";
/// Name of the operator's Deployment, ServiceAccount and ClusterRole in `manifests/`.
pub const OPERATOR: &str = "proglog-operator";
/// The CRDs under `manifests/`: ProgLog and ProgLogUser.
pub const CRD_FILES: [&str; 2] = [
    "crd/proglog.dev_proglogs.yaml",
    "crd/proglog.dev_proglogusers.yaml",
];

/// The workspace root (the checkout).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The objects of a YAML file under `manifests/` (one per document; empty documents skipped).
pub fn manifest(rel: &str) -> Result<Vec<Value>> {
    let path = workspace_root().join("manifests").join(rel);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc)
            .with_context(|| format!("parsing {}", path.display()))?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// The one object of a YAML file under `manifests/`.
pub fn manifest_one(rel: &str) -> Result<Value> {
    let mut docs = manifest(rel)?;
    if docs.len() != 1 {
        bail!("manifests/{rel} holds {} objects, expected one", docs.len());
    }
    Ok(docs.remove(0))
}

/// The cargo target dir's `debug/` (where `images.sh` builds the binaries).
pub fn bin_dir() -> PathBuf {
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(t).join("debug");
    }
    std::env::current_exe()
        .ok()
        .and_then(|e| e.ancestors().nth(2).map(Path::to_path_buf))
        .unwrap_or_else(|| workspace_root().join("target").join("debug"))
}

/// The `kubectl` to run: `$KUBECTL`, else the devcluster's build, else `kubectl` on PATH.
pub fn kubectl_program() -> PathBuf {
    if let Some(k) = std::env::var_os("KUBECTL") {
        return k.into();
    }
    let cache = devcluster::state_dir();
    if let Some(dir) = cache.parent() {
        if let Ok(entries) = std::fs::read_dir(dir) {
            let mut found: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path().join("bin").join("kubectl"))
                .filter(|p| p.is_file())
                .collect();
            found.sort();
            if let Some(k) = found.pop() {
                return k;
            }
        }
    }
    "kubectl".into()
}

/// The output of a finished subprocess.
#[derive(Debug)]
pub struct Output {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

fn run(mut cmd: Command, stdin: Option<&str>) -> Result<Output> {
    let what = format!("{cmd:?}");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("starting {what}"))?;
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .context("no stdin")?
            .write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    Ok(Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// A test's namespace with its own operator.
pub struct OperatorEnv {
    pub dc: DevCluster,
    pub client: Client,
    pub ns: String,
    /// Whether an operator runs in the namespace.
    pub has_operator: bool,
}

impl OperatorEnv {
    /// Builds the binaries the pods and tests run, makes the namespace, makes sure the CRD is
    /// installed and starts the operator in the namespace; waits until the operator is ready.
    pub async fn start(prefix: &str) -> Result<OperatorEnv> {
        Self::start_with(prefix, 1, &[]).await
    }

    /// [`OperatorEnv::start`] with `replicas` operator pods, `args` appended to the operator's
    /// (`{ns}` in them becomes the namespace); waits until one pod is ready.
    pub async fn start_with(prefix: &str, replicas: i32, args: &[&str]) -> Result<OperatorEnv> {
        let t0 = Instant::now();
        // The images (built from this checkout and loaded on the node) and the `proglog` CLI.
        tokio::task::spawn_blocking(images::images).await??;
        let built = t0.elapsed();
        let mut env = Self::without_operator(prefix).await?;
        env.has_operator = true;
        if let Err(e) = env.refuse_cluster_wide_operator().await {
            env.cleanup(false).await;
            return Err(e);
        }
        let t1 = Instant::now();
        if let Err(e) = env.deploy_operator(replicas, args).await {
            eprintln!("{}", env.operator_log_tail(60).await);
            return Err(e);
        }
        eprintln!(
            "[{}] operator pod ready {:.1?} after its Deployment was applied (cargo build before: {built:.1?})",
            env.ns,
            t1.elapsed()
        );
        Ok(env)
    }

    /// A namespace with the CRD installed and no operator (for what the API server alone
    /// decides, like schema validation).
    pub async fn without_operator(prefix: &str) -> Result<OperatorEnv> {
        let (dc, client) = devcluster::client().await?;
        let ns = devcluster::unique_namespace(prefix);
        let env = OperatorEnv {
            dc,
            client,
            ns,
            has_operator: false,
        };
        env.create_namespace().await?;
        env.ensure_crd().await?;
        Ok(env)
    }

    async fn apply<K>(&self, api: &Api<K>, body: &Value) -> Result<K>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let name = body["metadata"]["name"]
            .as_str()
            .context("object without a name")?;
        api.patch(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(body),
        )
        .await
        .with_context(|| format!("applying {name}"))
    }

    async fn create_namespace(&self) -> Result<()> {
        self.apply(
            &Api::<Namespace>::all(self.client.clone()),
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {
                "name": self.ns,
                // A hardened cluster's namespace: the operator and the members it makes must
                // pass Pod Security Admission `restricted`, or their pods are refused.
                "labels": {
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                },
            }}),
        )
        .await?;
        let sa = Api::<ServiceAccount>::namespaced(self.client.clone(), &self.ns);
        wait_for(
            "the default ServiceAccount",
            Duration::from_secs(60),
            || async { Ok(sa.get_opt("default").await?) },
        )
        .await?;
        Ok(())
    }

    /// Applies `manifests/crd/` (a no-op when the same CRDs are installed; an update when the
    /// cluster's are older than the checkout) and waits until they are established.
    async fn ensure_crd(&self) -> Result<()> {
        let api = Api::<CustomResourceDefinition>::all(self.client.clone());
        for file in CRD_FILES {
            let crd = manifest_one(file)?;
            let name = crd["metadata"]["name"].as_str().unwrap_or_default();
            self.apply(&api, &crd).await?;
            wait_for(
                &format!("the CRD {name}"),
                Duration::from_secs(30),
                || async {
                    let c = api.get(name).await?;
                    let established = c
                        .status
                        .and_then(|s| s.conditions)
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True");
                    Ok(established.then_some(()))
                },
            )
            .await?;
        }
        Ok(())
    }

    /// Fails when an operator that watches every namespace runs (e.g. after `make deploy`): it
    /// would reconcile this test's ProgLogs too, against the test's own operator.
    async fn refuse_cluster_wide_operator(&self) -> Result<()> {
        let lp = ListParams::default().labels(&format!("app.kubernetes.io/name={OPERATOR}"));
        for d in Api::<Deployment>::all(self.client.clone())
            .list(&lp)
            .await?
        {
            let ns = d.namespace().unwrap_or_default();
            let running = d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0) > 0;
            let scoped = d
                .spec
                .as_ref()
                .and_then(|s| s.template.spec.as_ref())
                .is_some_and(|p| {
                    p.containers.iter().any(|c| {
                        let args = c.args.iter().flatten();
                        let env = c.env.iter().flatten().map(|e| &e.name);
                        args.chain(env).any(|a| {
                            a.starts_with("--namespace") || a == "PROGLOG_OPERATOR_NAMESPACE"
                        })
                    })
                });
            if running && !scoped && ns != self.ns {
                bail!(
                    "an operator watching every namespace runs ({ns}/{}); it would reconcile this \
                     test's ProgLogs too. Stop it first: kubectl -n {ns} scale deploy/{} --replicas=0 \
                     (or make undeploy)",
                    d.name_any(),
                    d.name_any()
                );
            }
        }
        Ok(())
    }

    /// The name of this namespace's binding of the operator's ClusterRole.
    fn binding_name(&self) -> String {
        format!("{OPERATOR}:{}", self.ns)
    }

    async fn deploy_operator(&self, replicas: i32, args: &[&str]) -> Result<()> {
        let c = &self.client;
        let mut sa = manifest_one("service_account.yaml")?;
        sa["metadata"]["namespace"] = json!(self.ns);
        self.apply(&Api::<ServiceAccount>::namespaced(c.clone(), &self.ns), &sa)
            .await?;
        // NB: the ClusterRole and its binding are per test namespace (same rules as the file):
        // tests of other checkouts that run at the same time may carry other rules, and a
        // shared role would flip between them under the running operators.
        let mut role = manifest_one("cluster_role.yaml")?;
        role["metadata"]["name"] = json!(self.binding_name());
        self.apply(&Api::<ClusterRole>::all(c.clone()), &role)
            .await?;
        // The ClusterRole the operator binds to ProgLogUsers' ServiceAccounts (shared too).
        let discovery = manifest_one("discovery_cluster_role.yaml")?;
        self.apply(&Api::<ClusterRole>::all(c.clone()), &discovery)
            .await?;
        let mut binding = manifest_one("cluster_role_binding.yaml")?;
        binding["metadata"]["name"] = json!(self.binding_name());
        binding["roleRef"]["name"] = json!(self.binding_name());
        for s in binding["subjects"]
            .as_array_mut()
            .context("binding without subjects")?
        {
            s["namespace"] = json!(self.ns);
        }
        self.apply(&Api::<ClusterRoleBinding>::all(c.clone()), &binding)
            .await?;
        let mut dep = manifest_one("operator.yaml")?;
        dep["metadata"]["namespace"] = json!(self.ns);
        let container = &mut dep["spec"]["template"]["spec"]["containers"][0];
        container["image"] = json!(images::images()?.operator);
        container["args"]
            .as_array_mut()
            .context("operator container without args")?
            .push(json!(format!("--namespace={}", self.ns)));
        for a in args {
            container["args"]
                .as_array_mut()
                .context("operator container without args")?
                .push(json!(a.replace("{ns}", &self.ns)));
        }
        dep["spec"]["replicas"] = json!(replicas);
        let deployments = Api::<Deployment>::namespaced(c.clone(), &self.ns);
        self.apply(&deployments, &dep).await?;
        wait_for(
            "the operator to be ready",
            Duration::from_secs(90),
            || async {
                let d = deployments.get(OPERATOR).await?;
                let ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
                Ok((ready >= 1).then_some(()))
            },
        )
        .await
    }

    /// Ends a test: on failure prints the error and the operator's last 40 log lines, then
    /// cleans up (keeping a failed test's namespace with `E2E_KEEP=1`); returns `result`.
    pub async fn finish(self, result: Result<()>) -> Result<()> {
        if let Err(e) = &result {
            eprintln!("FAILED: {e:#}");
            eprintln!("{}", self.operator_log_tail(40).await);
        }
        self.cleanup(result.is_err()).await;
        result
    }

    /// The last `lines` lines of the operator's log (for failure messages), through
    /// `kubectl logs` (the devcluster serves container logs too).
    pub async fn operator_log_tail(&self, lines: usize) -> String {
        let tail = format!("--tail={lines}");
        let selector = format!("app.kubernetes.io/name={OPERATOR}");
        match self.kubectl(&["logs", "-l", &selector, &tail, "--prefix"], None) {
            Ok(o) => format!(
                "--- operator log (last {lines} lines) ---\n{}{}",
                o.stdout, o.stderr
            ),
            Err(e) => format!("operator log: {e:#}"),
        }
    }

    /// `kubectl` with this cluster's kubeconfig and `-n <ns>`.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<Output> {
        let mut cmd = Command::new(kubectl_program());
        cmd.env("KUBECONFIG", &self.dc.kubeconfig)
            .arg("-n")
            .arg(&self.ns)
            .args(args);
        run(cmd, stdin)
    }

    /// `kubectl` that must succeed; returns its stdout.
    pub fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let out = self.kubectl(args, stdin)?;
        if !out.ok {
            bail!("kubectl {args:?} failed: {}{}", out.stdout, out.stderr);
        }
        Ok(out.stdout)
    }

    /// The `proglog` CLI (built by `start`) with this cluster's kubeconfig.
    pub fn proglog(&self, args: &[&str]) -> Result<Output> {
        let mut cmd = Command::new(bin_dir().join("proglog"));
        cmd.env("KUBECONFIG", &self.dc.kubeconfig)
            .env_remove("PROGLOG_ADDR")
            .env_remove("PROGLOG_CLUSTER")
            .env_remove("PROGLOG_NAMESPACE")
            .env_remove("PROGLOG_OUTPUT")
            .args(args);
        run(cmd, None)
    }

    /// What of ProgLog `name`'s children still exists, as `kind/name` (volume claims aside).
    pub async fn children_left(&self, name: &str) -> Result<Vec<String>> {
        let c = &self.client;
        let ns = self.ns.as_str();
        let sel = ListParams::default().labels(&format!("{}={name}", names::CLUSTER_LABEL));
        let mut left = Vec::new();
        macro_rules! listed {
            ($kind:ty, $label:literal) => {
                for o in Api::<$kind>::namespaced(c.clone(), ns).list(&sel).await? {
                    left.push(format!("{}/{}", $label, o.name_any()));
                }
            };
        }
        macro_rules! named {
            ($api:expr, $obj:expr, $label:literal) => {
                let n = $obj;
                if $api.get_opt(&n).await?.is_some() {
                    left.push(format!("{}/{n}", $label));
                }
            };
        }
        listed!(StatefulSet, "statefulset");
        listed!(Service, "service");
        listed!(EndpointSlice, "endpointslice");
        listed!(Pod, "pod");
        named!(
            Api::<StatefulSet>::namespaced(c.clone(), ns),
            names::statefulset(name),
            "statefulset"
        );
        named!(
            Api::<Secret>::namespaced(c.clone(), ns),
            names::admin_secret(name),
            "secret"
        );
        named!(
            Api::<ServiceAccount>::namespaced(c.clone(), ns),
            names::service_account(name),
            "serviceaccount"
        );
        named!(
            Api::<RoleBinding>::namespaced(c.clone(), ns),
            names::service_account(name),
            "rolebinding"
        );
        named!(
            Api::<PodDisruptionBudget>::namespaced(c.clone(), ns),
            names::pdb(name),
            "poddisruptionbudget"
        );
        named!(
            Api::<ClusterRole>::all(c.clone()),
            names::cluster_role(ns, name),
            "clusterrole"
        );
        left.sort();
        left.dedup();
        Ok(left)
    }

    /// The volume claims of ProgLog `name`'s members (`data-<name>-<ordinal>`), as `pvc/name`.
    pub async fn claims(&self, name: &str) -> Result<Vec<String>> {
        let prefix = format!("{}-", names::DATA_VOLUME);
        let list = Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), &self.ns)
            .list(&ListParams::default())
            .await?;
        Ok(list
            .iter()
            .map(|o| o.name_any())
            .filter(|n| {
                n.strip_prefix(&prefix)
                    .is_some_and(|pod| names::ordinal(name, pod).is_some())
            })
            .map(|n| format!("pvc/{n}"))
            .collect())
    }

    /// The ProgLogs of the namespace.
    pub fn proglogs(&self) -> Api<ProgLog> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Deletes what the test made: ProgLogs first (while the operator runs, so its finalizer
    /// runs), then the namespace and the operator's binding. With `E2E_KEEP=1` and a failed
    /// test, keeps everything and says where it is.
    pub async fn cleanup(self, failed: bool) {
        if failed && self.has_operator {
            eprintln!("{}", self.operator_log_tail(80).await);
        }
        if failed && std::env::var_os("E2E_KEEP").is_some() {
            eprintln!(
                "E2E_KEEP: leaving namespace {} and ClusterRole(Binding) {}",
                self.ns,
                self.binding_name()
            );
            return;
        }
        // Users first: their finalizer rewrites their ProgLog's policy, which must still exist.
        let users = Api::<ProgLogUser>::namespaced(self.client.clone(), &self.ns);
        delete_all(&users, "ProgLogUsers").await;
        delete_all(&self.proglogs(), "ProgLogs").await;
        let roles = Api::<ClusterRole>::all(self.client.clone());
        let prefix = format!("proglog:{}:", self.ns);
        for r in roles
            .list(&ListParams::default())
            .await
            .into_iter()
            .flatten()
        {
            if r.name_any().starts_with(&prefix) {
                let _ = roles.delete(&r.name_any(), &DeleteParams::default()).await;
            }
        }
        let _ = Api::<ClusterRole>::all(self.client.clone())
            .delete(&self.binding_name(), &DeleteParams::default())
            .await;
        let _ = Api::<ClusterRoleBinding>::all(self.client.clone())
            .delete(&self.binding_name(), &DeleteParams::default())
            .await;
        let _ = Api::<Namespace>::all(self.client.clone())
            .delete(&self.ns, &DeleteParams::default())
            .await;
    }
}

/// A ProgLog made from `manifests/samples/proglog.yaml`: its name, namespace, replicas,
/// `storage.onDelete` and image (the one [`images::images`] built) replaced, TLS off, the rest
/// as the sample has it.
pub fn sample_proglog(name: &str, ns: &str, replicas: i32, on_delete: &str) -> Result<Value> {
    let mut p = sample_proglog_tls(name, ns, replicas, on_delete)?;
    // NB: plaintext members: these scenarios produce and consume with no certificate, and the
    // ACL grants nobody anything until a ProgLogUser does. `operator_tls.rs` runs the default.
    p["spec"]["tls"] = json!({"enabled": false});
    Ok(p)
}

/// [`sample_proglog`] as the sample has it: mutual TLS and the ACL on (the default).
pub fn sample_proglog_tls(name: &str, ns: &str, replicas: i32, on_delete: &str) -> Result<Value> {
    let mut p = manifest_one("samples/proglog.yaml")?;
    p["metadata"] = json!({"name": name, "namespace": ns});
    p["spec"]["replicas"] = json!(replicas);
    p["spec"]["image"] = json!(images::images()?.logserver);
    p["spec"]["storage"]["onDelete"] = json!(on_delete);
    // Small volumes: the devcluster's are directories; on kind they are local-path claims.
    p["spec"]["storage"]["size"] = json!("64Mi");
    Ok(p)
}

/// The status of condition `type_` of a ProgLog ("True", "False", "Unknown"), if reported.
pub fn condition(p: &ProgLog, type_: &str) -> Option<String> {
    p.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.clone())
}

/// A one-line summary of a ProgLog's status (for failure messages).
pub fn summary(p: &ProgLog) -> String {
    let Some(s) = &p.status else {
        return "no status".into();
    };
    let conds: BTreeMap<&str, String> = s
        .conditions
        .iter()
        .map(|c| {
            (
                c.type_.as_str(),
                format!("{}({}: {})", c.status, c.reason, c.message),
            )
        })
        .collect();
    let members: Vec<String> = s
        .members
        .iter()
        .map(|m| {
            format!(
                "{}:{}:{}",
                m.pod,
                m.role,
                if m.healthy { "ok" } else { "down" }
            )
        })
        .collect();
    format!(
        "gen {:?}/{:?} replicas {} ready {} leader {:?} term {:?} members {members:?} conditions {conds:?}",
        p.metadata.generation,
        s.observed_generation,
        s.replicas,
        s.ready_replicas,
        s.leader,
        s.term
    )
}

/// Waits until `check` holds for ProgLog `name`; the error names `what` and the last status.
pub async fn wait_proglog(
    api: &Api<ProgLog>,
    name: &str,
    what: &str,
    timeout: Duration,
    check: impl Fn(&ProgLog) -> bool,
) -> Result<ProgLog> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match api.get_opt(name).await {
            Ok(Some(p)) if check(&p) => return Ok(p),
            Ok(Some(p)) => summary(&p),
            Ok(None) => "the ProgLog does not exist".into(),
            Err(e) => format!("{e}"),
        };
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {name}: {what}; last status: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// True when the ProgLog is Ready for its current generation.
pub fn is_ready(p: &ProgLog) -> bool {
    let observed = p.status.as_ref().and_then(|s| s.observed_generation);
    condition(p, proglog_crds::CONDITION_READY).as_deref() == Some("True")
        && observed.is_some()
        && observed == p.metadata.generation
}

/// Voters (Leader or Follower) reported healthy in the status.
pub fn healthy_voters(p: &ProgLog) -> Vec<String> {
    p.status
        .iter()
        .flat_map(|s| &s.members)
        .filter(|m| m.healthy && matches!(m.role.as_str(), "Leader" | "Follower"))
        .map(|m| m.pod.clone())
        .collect()
}

/// Deletes every object of `api`, waits up to 30 s for them to go (their finalizers run while the
/// operator does), then drops the finalizers of any left, so that the namespace can go.
async fn delete_all<K>(api: &Api<K>, what: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let Ok(list) = api.list(&ListParams::default()).await else {
        return;
    };
    for o in &list {
        let _ = api.delete(&o.name_any(), &DeleteParams::default()).await;
    }
    let gone = wait_for(
        &format!("{what} to be deleted"),
        Duration::from_secs(30),
        || async {
            Ok(api
                .list(&ListParams::default())
                .await?
                .items
                .is_empty()
                .then_some(()))
        },
    )
    .await;
    if gone.is_ok() {
        return;
    }
    for o in api.list(&ListParams::default()).await.into_iter().flatten() {
        let _ = api
            .patch(
                &o.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": null}})),
            )
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use proglog_crds::{MemberStatus, ProgLogStatus};

    /// The CLI reads the status without the operator's types; every field the operator writes
    /// must reach it under the same name and type.
    #[test]
    fn the_clients_status_view_reads_every_field_the_operator_writes() {
        let status = ProgLogStatus {
            observed_generation: Some(7),
            replicas: 3,
            ready_replicas: 2,
            leader: Some("demo-1".into()),
            term: Some(5),
            members: vec![MemberStatus {
                pod: "demo-1".into(),
                raft_id: 2,
                role: "Leader".into(),
                healthy: true,
                lag: Some(0),
                address: Some("demo-1.demo-members.ns.svc.cluster.local:8400".into()),
            }],
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "False".into(),
                reason: "MemberDown".into(),
                message: "demo-2 is not ready".into(),
                last_transition_time: Time(Default::default()),
                observed_generation: Some(7),
            }],
            selector: Some(names::selector("demo")),
            storage: Some(proglog_crds::StorageStatus {
                size: "2Gi".into(),
                volumes: vec![proglog_crds::VolumeStatus {
                    claim: "data-demo-0".into(),
                    requested: "2Gi".into(),
                    capacity: Some("1Gi".into()),
                }],
                message: Some("expanding to 2Gi: waiting for data-demo-0".into()),
            }),
            rollout: Some(proglog_crds::RolloutStatus {
                revision: "demo-5d8f".into(),
                updated: 1,
                replicas: 3,
                message: Some("restarting demo-2".into()),
            }),
        };
        let obj: kube::api::DynamicObject = serde_json::from_value(json!({
            "apiVersion": "proglog.dev/v1alpha1", "kind": "ProgLog",
            "metadata": {"name": "demo", "namespace": "ns", "generation": 7},
            "spec": {"replicas": 3},
            "status": status,
        }))
        .unwrap();
        let v = proglog_client::kube_status::view("ns", "demo", &obj);
        let s = &v.status;
        assert_eq!(s.observed_generation, Some(7));
        assert_eq!(s.replicas, Some(3));
        assert_eq!(s.ready_replicas, Some(2));
        assert_eq!(s.leader.as_deref(), Some("demo-1"));
        assert_eq!(s.term, Some(5));
        assert_eq!(s.selector, status.selector);
        let storage = s.storage.as_ref().expect("status.storage");
        assert_eq!(storage.size.as_deref(), Some("2Gi"));
        assert_eq!(storage.message, status.storage.as_ref().unwrap().message);
        let rollout = s.rollout.as_ref().expect("status.rollout");
        assert_eq!(rollout.revision.as_deref(), Some("demo-5d8f"));
        assert_eq!((rollout.updated, rollout.replicas), (Some(1), Some(3)));
        assert_eq!(rollout.message.as_deref(), Some("restarting demo-2"));
        let m = &s.members[0];
        assert_eq!(m.pod.as_deref(), Some("demo-1"));
        assert_eq!(m.raft_id, Some(2));
        assert_eq!(m.role.as_deref(), Some("Leader"));
        assert_eq!(m.healthy, Some(true));
        assert_eq!(m.lag, Some(0));
        assert_eq!(m.address, status.members[0].address);
        let c = &s.conditions[0];
        assert_eq!(
            (c.type_.as_str(), c.status.as_str(), c.reason.as_deref()),
            ("Ready", "False", Some("MemberDown"))
        );
        assert_eq!(c.message.as_deref(), Some("demo-2 is not ready"));
    }

    #[test]
    fn the_manifests_parse_and_name_the_operator() {
        let dep = manifest_one("operator.yaml").unwrap();
        assert_eq!(dep["metadata"]["name"], OPERATOR);
        let c = &dep["spec"]["template"]["spec"]["containers"][0];
        let args: Vec<&str> = c["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert!(args.contains(&"--metrics-addr=$(POD_IP):8080"), "{args:?}");
        // Two replicas, one active at a time: leader election must come with them.
        assert_eq!(dep["spec"]["replicas"], 2);
        assert!(args.contains(&"--leader-election"), "{args:?}");
        let sample = sample_proglog("x", "ns", 5, "Delete").unwrap();
        assert_eq!(sample["spec"]["replicas"], 5);
        let spec: proglog_crds::ProgLogSpec = serde_json::from_value(sample["spec"].clone())
            .expect("the sample is a valid ProgLog spec");
        assert_eq!(spec.storage.on_delete, proglog_crds::VolumePolicy::Delete);
    }
}
