//! Bad ProgLogUsers are refused at admission by the CRD's schema and CEL rules, with a message
//! that says what to fix: no action, an unknown or repeated one, a name that cannot be a
//! ProgLog's or a ServiceAccount's, and a change of the ProgLog or the Secret after creation. The
//! API server alone decides these, so no operator runs here (and no finalizer holds the valid
//! user this test makes and deletes).

use anyhow::{ensure, Result};
use e2e::operator::OperatorEnv;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_users_are_refused_with_the_schemas_messages() -> Result<()> {
    let env = OperatorEnv::without_operator("e2e-user-valid").await?;
    let result = scenario(&env);
    env.cleanup(result.is_err()).await;
    result
}

fn user(ns: &str, spec: Value) -> Value {
    json!({"apiVersion": "proglog.dev/v1alpha1", "kind": "ProgLogUser",
           "metadata": {"name": "alice", "namespace": ns}, "spec": spec})
}

/// `kubectl apply` of `body` must fail, naming every one of `needles`.
fn refused(env: &OperatorEnv, what: &str, body: &Value, needles: &[&str]) -> Result<()> {
    let out = env.kubectl(&["apply", "-f", "-"], Some(&body.to_string()))?;
    ensure!(
        !out.ok,
        "{what}: accepted, should be refused:\n{}",
        out.stdout
    );
    eprintln!("{what}: {}", out.stderr.trim());
    for n in needles {
        ensure!(
            out.stderr.contains(n),
            "{what}: the error does not say {n:?}:\n{}",
            out.stderr
        );
    }
    Ok(())
}

fn scenario(env: &OperatorEnv) -> Result<()> {
    let ns = env.ns.as_str();
    let cases = [
        (
            "no action",
            json!({"proglog": "demo", "actions": []}),
            "spec.actions must list at least one of produce, consume",
        ),
        (
            "an unknown action",
            json!({"proglog": "demo", "actions": ["write"]}),
            "Unsupported value: \"write\"",
        ),
        (
            "a repeated action",
            json!({"proglog": "demo", "actions": ["produce", "produce"]}),
            "Duplicate value: \"produce\"",
        ),
        (
            "no proglog",
            json!({"actions": ["produce"]}),
            "spec.proglog: Required value",
        ),
        (
            "a bad proglog name",
            json!({"proglog": "Demo_1", "actions": ["produce"]}),
            "spec.proglog must be the name of a ProgLog in this namespace",
        ),
        (
            "a bad ServiceAccount",
            json!({"proglog": "demo", "actions": ["produce"], "serviceAccounts": ["App"]}),
            "spec.serviceAccounts must hold ServiceAccount names",
        ),
    ];
    for (what, spec, needle) in cases {
        refused(env, what, &user(ns, spec), &[needle])?;
    }

    // A valid one is accepted; then its ProgLog and Secret cannot change.
    let ok = user(
        ns,
        json!({"proglog": "demo", "actions": ["consume"], "serviceAccounts": ["app"]}),
    );
    env.kubectl_ok(&["apply", "-f", "-"], Some(&ok.to_string()))?;
    let mut moved = ok.clone();
    moved["spec"]["proglog"] = json!("other");
    refused(
        env,
        "spec.proglog changed",
        &moved,
        &["spec.proglog cannot be changed"],
    )?;
    let mut renamed = ok.clone();
    renamed["spec"]["secretName"] = json!("alice-certs");
    refused(
        env,
        "spec.secretName set",
        &renamed,
        &["spec.secretName cannot be changed"],
    )?;
    // What may change does: the actions and the ServiceAccounts.
    let mut widened = ok.clone();
    widened["spec"]["actions"] = json!(["produce", "consume"]);
    widened["spec"]["serviceAccounts"] = json!(["app", "web"]);
    env.kubectl_ok(&["apply", "-f", "-"], Some(&widened.to_string()))?;
    env.kubectl_ok(&["delete", "pluser", "alice", "--wait=true"], None)?;
    Ok(())
}
