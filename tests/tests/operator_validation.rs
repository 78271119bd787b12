//! Bad ProgLogs are refused at admission by the CRD's schema and CEL rules, with a message that
//! says what to fix: too many (or no) replicas, an election timeout under three heartbeats, a
//! negative page-cache window, and a change of the volume class or of the gRPC port, a smaller
//! volume size (volumes only grow) and a size that is no quantity. The API server alone decides
//! these, so no operator runs here (and no finalizer holds the valid ProgLog this test makes and
//! deletes).

use anyhow::{ensure, Result};
use e2e::operator::{sample_proglog, OperatorEnv};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_proglogs_are_refused_with_the_schemas_messages() -> Result<()> {
    let env = OperatorEnv::without_operator("e2e-op-valid").await?;
    let result = scenario(&env).await;
    env.cleanup(result.is_err()).await;
    result
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

async fn scenario(env: &OperatorEnv) -> Result<()> {
    let ns = env.ns.as_str();

    let mut p = sample_proglog("too-many", ns, 12, "Delete")?;
    refused(
        env,
        "replicas 12",
        &p,
        &["spec.replicas", "less than or equal to 9"],
    )?;
    p["spec"]["replicas"] = json!(0);
    refused(
        env,
        "replicas 0",
        &p,
        &["spec.replicas", "greater than or equal to 1"],
    )?;

    let mut p = sample_proglog("hasty", ns, 3, "Delete")?;
    p["spec"]["log"]["heartbeatMs"] = json!(100);
    p["spec"]["log"]["electionTimeoutMs"] = json!(250);
    refused(
        env,
        "electionTimeoutMs < 3 * heartbeatMs",
        &p,
        &["log.electionTimeoutMs must be at least 3 times log.heartbeatMs"],
    )?;
    let mut p = sample_proglog("no-window", ns, 3, "Delete")?;
    p["spec"]["log"]["cacheWindowBytes"] = json!(-1);
    refused(
        env,
        "cacheWindowBytes -1",
        &p,
        &["spec.log.cacheWindowBytes", "greater than or equal to 0"],
    )?;

    // A valid one is accepted; then its volume class cannot be set.
    let p = sample_proglog("fixed", ns, 3, "Delete")?;
    env.kubectl_ok(&["apply", "-f", "-"], Some(&p.to_string()))?;
    let mut classed = p.clone();
    classed["spec"]["storage"]["storageClassName"] = json!("standard");
    refused(
        env,
        "storage.storageClassName set after creation",
        &classed,
        &["storage.storageClassName cannot be set or unset after creation"],
    )?;
    let mut moved = p.clone();
    moved["spec"]["ports"]["grpc"] = json!(8500);
    refused(
        env,
        "ports.grpc change",
        &moved,
        &["ports.grpc cannot be changed after creation"],
    )?;
    // What may change does: replicas, log settings and the volume size (the operator grows the
    // volumes, or says in status.storage why it cannot).
    let mut scaled = p.clone();
    scaled["spec"]["storage"]["size"] = json!("2Gi");
    scaled["spec"]["replicas"] = json!(5);
    scaled["spec"]["log"]["electionTimeoutMs"] = json!(1000);
    env.kubectl_ok(&["apply", "-f", "-"], Some(&scaled.to_string()))?;
    // Volumes only grow: a smaller size is refused at admission, saying what to do instead.
    let mut shrunk = scaled.clone();
    shrunk["spec"]["storage"]["size"] = json!("1Gi");
    refused(
        env,
        "storage.size lowered from 2Gi to 1Gi",
        &shrunk,
        &[
            "spec.storage.size",
            "storage.size cannot be lowered: volumes only grow",
            "create a new ProgLog",
        ],
    )?;
    // The same size spelled otherwise is no shrink, and neither is a plain byte count above it.
    let mut same = scaled.clone();
    same["spec"]["storage"]["size"] = json!("2048Mi");
    env.kubectl_ok(&["apply", "-f", "-"], Some(&same.to_string()))?;
    let mut bytes = scaled.clone();
    bytes["spec"]["storage"]["size"] = json!(3_000_000_000_u64);
    env.kubectl_ok(&["apply", "-f", "-"], Some(&bytes.to_string()))?;
    shrunk["spec"]["storage"]["size"] = json!(1_000_000_000_u64);
    refused(
        env,
        "storage.size lowered to a byte count",
        &shrunk,
        &["storage.size cannot be lowered"],
    )?;
    let mut garbage = scaled.clone();
    garbage["spec"]["storage"]["size"] = json!("lots");
    refused(
        env,
        "storage.size not a quantity",
        &garbage,
        &["storage.size must be a quantity"],
    )?;
    env.kubectl_ok(&["delete", "plog", "fixed", "--wait=true"], None)?;
    Ok(())
}
