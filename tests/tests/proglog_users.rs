//! ProgLogUsers on the devcluster, end to end: the operator issues each user a certificate
//! signed by its ProgLog's CA into a Secret, writes its actions into the ProgLog's ACL policy and
//! binds the discovery ClusterRole to its ServiceAccounts. Then, in pods running the `proglog`
//! CLI of the logserver image as ServiceAccount `app` (Pod Security `restricted`):
//! - the produce+consume user's pod produces and consumes through `--cluster` discovery;
//! - a pod with no certificate is refused (UNAUTHENTICATED);
//! - the consume-only user's pod consumes, gets PERMISSION_DENIED (naming its subject and the
//!   action) on produce, and nothing is written;
//!
//! and from the test process, `proglog --cluster --user` reads a user's Secret through the API
//! (clear errors for a missing or not-Ready user), and deleting a ProgLogUser revokes it: the
//! next produce with its (saved) certificate is refused, and its Secret and binding are gone.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use e2e::devcluster::wait_for;
use e2e::names;
use e2e::operator::{is_ready, sample_proglog_tls, wait_proglog, OperatorEnv};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::Api;
use proglog_crds::ProgLogUser;
use serde_json::{json, Value};

const NAME: &str = "users";
const SA: &str = "app";
/// Users: both actions, consume only, and one of a ProgLog that does not exist.
const WRITER: &str = "writer";
const READER: &str = "reader";
const ORPHAN: &str = "orphan";

fn user(ns: &str, name: &str, proglog: &str, actions: &[&str]) -> Value {
    json!({"apiVersion": "proglog.dev/v1alpha1", "kind": "ProgLogUser",
           "metadata": {"name": name, "namespace": ns},
           "spec": {"proglog": proglog, "actions": actions, "serviceAccounts": [SA]}})
}

/// A pod running the CLI as ServiceAccount `app`: `init` (if any) then `main`, each a list of
/// CLI arguments after `--cluster NAME -n NS`; the volume `tls` holds `secret`'s `keys` at /tls.
fn cli_pod(
    ns: &str,
    pod: &str,
    image: &str,
    secret: &str,
    keys: &[&str],
    init: Option<&[&str]>,
    main: &[&str],
) -> Value {
    let container = |name: &str, args: &[&str]| {
        let mut all: Vec<String> = vec![format!("--cluster={NAME}"), format!("--namespace={ns}")];
        all.extend(args.iter().map(|a| a.to_string()));
        json!({"name": name, "image": image, "imagePullPolicy": "IfNotPresent",
               "command": ["/usr/local/bin/proglog"], "args": all,
               "env": [{"name": "PROGLOG_LOG", "value": "warn"}],
               "volumeMounts": [{"name": "tls", "mountPath": "/tls", "readOnly": true}],
               "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                   "capabilities": {"drop": ["ALL"]}}})
    };
    let items: Vec<Value> = keys.iter().map(|k| json!({"key": k, "path": k})).collect();
    let mut spec = json!({
        "serviceAccountName": SA,
        "restartPolicy": "Never",
        "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container("main", main)],
        "volumes": [{"name": "tls", "secret": {"secretName": secret, "items": items}}],
    });
    if let Some(init) = init {
        spec["initContainers"] = json!([container("init", init)]);
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod, "namespace": ns}, "spec": spec})
}

const TLS_FLAGS: [&str; 3] = [
    "--ca=/tls/ca.pem",
    "--cert=/tls/tls.crt",
    "--key=/tls/tls.key",
];
const ALL_KEYS: [&str; 3] = ["ca.pem", "tls.crt", "tls.key"];

/// Runs `body` as a pod to its end; returns (succeeded, the logs of all its containers).
async fn run_pod(env: &OperatorEnv, body: &Value) -> Result<(bool, String)> {
    let pod = body["metadata"]["name"].as_str().context("pod name")?;
    env.kubectl_ok(&["apply", "-f", "-"], Some(&body.to_string()))?;
    let phase = wait_for(
        &format!("pod {pod} to finish"),
        Duration::from_secs(180),
        || async {
            let out = env.kubectl(&["get", "pod", pod, "-o", "jsonpath={.status.phase}"], None)?;
            let phase = out.stdout.trim().to_string();
            Ok(matches!(phase.as_str(), "Succeeded" | "Failed").then_some(phase))
        },
    )
    .await?;
    let logs = env
        .kubectl(&["logs", pod, "--all-containers", "--prefix"], None)
        .map(|o| o.stdout + &o.stderr)
        .unwrap_or_else(|e| format!("(no log: {e:#})"));
    eprintln!("[{}] pod {pod}: {phase}\n{logs}", env.ns);
    Ok((phase == "Succeeded", logs))
}

fn ready_reason(u: &ProgLogUser) -> Option<(String, String)> {
    let c = u
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")?;
    Some((c.status.clone(), c.reason.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn users_get_certificates_policy_and_discovery_and_lose_them_when_deleted() -> Result<()> {
    let env = OperatorEnv::start("e2e-users").await?;
    let result = scenario(&env).await;
    env.finish(result).await
}

async fn scenario(env: &OperatorEnv) -> Result<()> {
    let ns = env.ns.as_str();
    let t0 = Instant::now();
    let pl = sample_proglog_tls(NAME, ns, 1, "Delete")?;
    env.kubectl_ok(&["apply", "-f", "-"], Some(&pl.to_string()))?;
    env.kubectl_ok(&["create", "serviceaccount", SA], None)?;
    let users = json!({"apiVersion": "v1", "kind": "List", "items": [
        user(ns, WRITER, NAME, &["produce", "consume"]),
        user(ns, READER, NAME, &["consume"]),
        user(ns, ORPHAN, "nothere", &["produce"]),
    ]});
    env.kubectl_ok(&["apply", "-f", "-"], Some(&users.to_string()))?;

    wait_proglog(
        &env.proglogs(),
        NAME,
        "Ready",
        Duration::from_secs(180),
        is_ready,
    )
    .await?;
    let api: Api<ProgLogUser> = Api::namespaced(env.client.clone(), ns);
    wait_for("the users' status", Duration::from_secs(120), || async {
        let api = &api;
        let r = |n: &'static str| async move { api.get(n).await.map(|u| ready_reason(&u)) };
        let (w, rd, o) = (r(WRITER).await?, r(READER).await?, r(ORPHAN).await?);
        let ok = |x: &Option<(String, String)>| x.as_ref().is_some_and(|(s, _)| s == "True");
        let orphan = o
            .as_ref()
            .is_some_and(|(s, r)| s == "False" && r == "ProgLogNotFound");
        Ok((ok(&w) && ok(&rd) && orphan).then_some(()))
    })
    .await
    .with_context(|| {
        let st = env.kubectl(&["get", "pluser", "-o", "yaml"], None);
        format!("the users: {}", st.map(|o| o.stdout).unwrap_or_default())
    })?;
    eprintln!("[{ns}] ProgLog and users ready in {:.1?}", t0.elapsed());
    let table = env.kubectl_ok(&["get", "pluser"], None)?;
    eprintln!("{table}");
    ensure!(
        table.contains("PROGLOG") && table.contains("ACTIONS") && table.contains("READY"),
        "printer columns: {table}"
    );

    // What the operator made: the Secret, the binding, the policy.
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), ns);
    let writer_secret = secrets.get(&names::user_secret(WRITER)).await?;
    let data = writer_secret.data.clone().unwrap_or_default();
    ensure!(
        ALL_KEYS.iter().all(|k| data.contains_key(*k)),
        "Secret keys: {:?}",
        data.keys()
    );
    let rb = Api::<RoleBinding>::namespaced(env.client.clone(), ns)
        .get(&names::user_role_binding(WRITER))
        .await?;
    ensure!(rb.role_ref.name == names::DISCOVERY_CLUSTER_ROLE, "{rb:?}");
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), ns);
    let policy = cms
        .get(&names::acl_config_map(NAME))
        .await?
        .data
        .unwrap_or_default();
    let policy = policy
        .get(names::ACL_POLICY_KEY)
        .cloned()
        .unwrap_or_default();
    for line in [
        format!("p, {ns}/{WRITER}, *, produce"),
        format!("p, {ns}/{WRITER}, *, consume"),
        format!("p, {ns}/{READER}, *, consume"),
    ] {
        ensure!(policy.contains(&line), "policy lacks {line:?}:\n{policy}");
    }
    ensure!(
        !policy.contains(&format!("{ns}/{READER}, *, produce")),
        "{policy}"
    );

    let image = e2e::images::images()?.logserver;
    let writer_secret_name = names::user_secret(WRITER);
    let reader_secret_name = names::user_secret(READER);

    // 1. The writer's application produces and consumes.
    let mut produce = TLS_FLAGS.to_vec();
    produce.extend(["produce", "hello-from-app"]);
    let mut consume = TLS_FLAGS.to_vec();
    consume.extend(["consume", "--from=0"]);
    let body = cli_pod(
        ns,
        "writer-app",
        &image,
        &writer_secret_name,
        &ALL_KEYS,
        Some(&produce),
        &consume,
    );
    let (ok, logs) = run_pod(env, &body).await?;
    ensure!(
        ok && logs.contains("0\thello-from-app"),
        "the writer's pod: {logs}"
    );

    // 2. A pod with no certificate (the CA only) is refused.
    let mut plain = vec!["--ca=/tls/ca.pem", "--attempts=1"];
    plain.extend(["produce", "anonymous"]);
    let body = cli_pod(
        ns,
        "no-user",
        &image,
        &writer_secret_name,
        &["ca.pem"],
        None,
        &plain,
    );
    let (ok, logs) = run_pod(env, &body).await?;
    ensure!(
        !ok && logs.contains("unauthenticated"),
        "the pod without a user: {logs}"
    );

    // 3. The reader consumes, is refused produce, and nothing is written.
    let mut denied = TLS_FLAGS.to_vec();
    denied.extend(["--attempts=1", "produce", "sneaky"]);
    let body = cli_pod(
        ns,
        "reader-app",
        &image,
        &reader_secret_name,
        &ALL_KEYS,
        Some(&consume),
        &denied,
    );
    let (ok, logs) = run_pod(env, &body).await?;
    let subject = names::user_subject(ns, READER);
    ensure!(
        !ok && logs.contains("0\thello-from-app")
            && logs.contains("permission denied")
            && logs.contains(&subject)
            && logs.contains("produce"),
        "the reader's pod must consume and be refused produce, naming {subject}: {logs}"
    );

    // 4. `--user` from here: reads the Secret through the API.
    let cli = |args: &[&str]| {
        let mut all = vec!["--cluster", NAME, "--namespace", ns];
        all.extend_from_slice(args);
        env.proglog(&all)
    };
    let out = cli(&["--user", WRITER, "consume", "--from=0"])?;
    let lines: Vec<&str> = out.stdout.lines().collect();
    ensure!(
        out.ok && lines == ["0\thello-from-app"],
        "only the writer's record is in the log (the reader wrote nothing): {out:?}"
    );
    let out = cli(&["--user", "nobody", "consume"])?;
    ensure!(!out.ok && out.stderr.contains("not found"), "{out:?}");
    let out = cli(&["--user", ORPHAN, "consume"])?;
    ensure!(
        !out.ok
            && out
                .stderr
                .contains("it is a user of ProgLog nothere, not users"),
        "{out:?}"
    );
    let out = env.proglog(&[
        "--cluster",
        "nothere",
        "-n",
        ns,
        "--user",
        ORPHAN,
        "consume",
    ])?;
    ensure!(
        !out.ok && out.stderr.contains("not Ready (ProgLogNotFound)"),
        "{out:?}"
    );
    let out = cli(&["--user", READER, "--attempts=1", "produce", "sneaky"])?;
    ensure!(
        !out.ok
            && out.stderr.contains("permission denied")
            && out.stderr.contains(&subject)
            && out.stderr.contains("spec.actions"),
        "--user of a consume-only user: {out:?}"
    );

    // 5. Deleting the writer revokes it: its saved certificate is refused.
    let dir = tempfile::tempdir()?;
    for k in ALL_KEYS {
        std::fs::write(dir.path().join(k), &data[k].0)?;
    }
    let p = |k: &str| dir.path().join(k).to_string_lossy().into_owned();
    let (ca, cert, key) = (p("ca.pem"), p("tls.crt"), p("tls.key"));
    let saved = |value: &str| {
        cli(&[
            "--ca",
            &ca,
            "--cert",
            &cert,
            "--key",
            &key,
            "--attempts=1",
            "produce",
            value,
        ])
    };
    let out = saved("before")?;
    ensure!(
        out.ok,
        "the saved certificate works before the delete: {out:?}"
    );
    env.kubectl_ok(
        &["delete", "pluser", WRITER, "--wait=true", "--timeout=60s"],
        None,
    )?;
    // NB: the operator pushes the policy to the members before it lets the user go, so the
    // very first call after the delete is refused. Without the push it would take the kubelet's
    // refresh of the ConfigMap volume (10 s sync on the devcluster, about a minute by default).
    let t = Instant::now();
    let out = saved("after")?;
    ensure!(
        !out.ok && out.stderr.contains("permission denied"),
        "the deleted user's certificate must be refused by the first call after the delete: {out:?}"
    );
    eprintln!(
        "[{ns}] revoked: the first call {:.1?} after the delete was refused: {}",
        t.elapsed(),
        out.stderr.trim()
    );
    let events = env.kubectl_ok(
        &[
            "get",
            "events",
            "--field-selector",
            "reason=Revoked",
            "-o",
            "jsonpath={.items[*].message}",
        ],
        None,
    )?;
    ensure!(
        events.contains(&format!("{ns}/{WRITER} removed")) && events.contains("at once (pushed)"),
        "the Revoked Event says where the policy is in force: {events:?}"
    );
    let rbs = Api::<RoleBinding>::namespaced(env.client.clone(), ns);
    wait_for(
        "the deleted user's Secret and RoleBinding to go (owner references)",
        Duration::from_secs(60),
        || async {
            let secret = secrets.get_opt(&writer_secret_name).await?;
            let rb = rbs.get_opt(&names::user_role_binding(WRITER)).await?;
            Ok((secret.is_none() && rb.is_none()).then_some(()))
        },
    )
    .await?;
    let policy = cms
        .get(&names::acl_config_map(NAME))
        .await?
        .data
        .unwrap_or_default();
    ensure!(
        !policy[names::ACL_POLICY_KEY].contains(&format!("{ns}/{WRITER},")),
        "the policy still names the writer"
    );
    Ok(())
}
