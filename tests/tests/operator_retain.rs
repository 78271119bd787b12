//! `storage.onDelete: Retain`: deleting a ProgLog removes every child the operator made but keeps
//! the members' volumes, and a ProgLog of the same name applied again picks its data up (the
//! member restarts with its Raft state; the operator must not initialize it afresh). One member,
//! its own operator pod in its own namespace; prints its timings. The ProgLog runs as the sample
//! has it (mutual TLS and the ACL): the new ProgLog has a new CA, and the ProgLogUser that
//! outlived the old one gets a certificate of the new CA and its grant back.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use e2e::devcluster::wait_for;
use e2e::names;
use e2e::operator::{healthy_voters, is_ready, sample_proglog_tls, wait_proglog, OperatorEnv};
use proglog_client::{Client, ClientConfig};

const NAME: &str = "keep";
const RECORDS: usize = 20;
const USER: &str = "app";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_with_retain_keeps_the_volumes_and_a_new_proglog_reads_them() -> Result<()> {
    let env = OperatorEnv::start("e2e-op-retain").await?;
    let result = scenario(&env).await;
    if let Err(e) = &result {
        eprintln!("FAILED: {e:#}");
    }
    env.cleanup(result.is_err()).await;
    result
}

async fn ready(env: &OperatorEnv, what: &str) -> Result<Duration> {
    let body = sample_proglog_tls(NAME, &env.ns, 1, "Retain")?;
    let t = Instant::now();
    env.kubectl_ok(&["apply", "-f", "-"], Some(&body.to_string()))?;
    wait_proglog(
        &env.proglogs(),
        NAME,
        "Ready with one voter",
        Duration::from_secs(120),
        |p| is_ready(p) && healthy_voters(p).len() == 1,
    )
    .await?;
    let took = t.elapsed();
    eprintln!("[timing] {what}: Ready after apply {took:.2?}");
    Ok(took)
}

async fn scenario(env: &OperatorEnv) -> Result<()> {
    let ns = env.ns.as_str();
    ready(env, "1 member").await?;
    let config = ClientConfig {
        tls: Some(e2e::pki::user(&env.client, ns, NAME, USER).await?),
        ..Default::default()
    };
    let client = Client::in_kubernetes(env.client.clone(), ns, NAME, config)?;
    client.wait_for_leader(Duration::from_secs(30)).await?;
    e2e::pki::wait_granted(&client, "granted").await?;
    let mut acked = Vec::new();
    for i in 0..RECORDS {
        let v = format!("kept-{i}");
        acked.push((client.produce(v.clone().into_bytes()).await?, v));
    }
    drop(client);
    let old_ca = e2e::pki::ca_pem(&env.client, ns, NAME).await?;

    let t = Instant::now();
    env.kubectl_ok(
        &["delete", "plog", NAME, "--wait=true", "--timeout=60s"],
        None,
    )?;
    wait_for("every child to go", Duration::from_secs(60), || async {
        let left = env.children_left(NAME).await?;
        ensure!(left.is_empty(), "still there: {left:?}");
        Ok(Some(()))
    })
    .await?;
    eprintln!("[timing] delete -> children gone: {:.2?}", t.elapsed());
    let claim = format!("pvc/{}-{}", names::DATA_VOLUME, names::pod(NAME, 0));
    let claims = env.claims(NAME).await?;
    ensure!(
        claims == [claim.clone()],
        "with onDelete: Retain the volume stays: {claims:?}, want [{claim}]"
    );

    ready(env, "again on the retained volume").await?;
    let new_ca = e2e::pki::ca_pem(&env.client, ns, NAME).await?;
    ensure!(new_ca != old_ca, "the re-created ProgLog kept the old CA");
    // The user's certificate is re-issued by the new CA and its grant reaches the new ACL; until
    // then a handshake or a call fails, so each try reads the user's Secret afresh.
    let t = Instant::now();
    let first = acked[0].0;
    let client = wait_for(
        "the user's certificate from the new CA and its grant",
        Duration::from_secs(120),
        || async {
            let tls = proglog_client::kube_user::tls(&env.client, ns, NAME, USER).await?;
            let config = ClientConfig {
                tls: Some(tls),
                ..Default::default()
            };
            let client = Client::in_kubernetes(env.client.clone(), ns, NAME, config)?;
            client.consume(first).await?;
            Ok(Some(client))
        },
    )
    .await?;
    eprintln!(
        "[timing] re-created ProgLog Ready -> the user reads again: {:.2?}",
        t.elapsed()
    );
    for (off, want) in &acked {
        let r = client.consume(*off).await?;
        ensure!(
            String::from_utf8_lossy(&r.value) == *want,
            "offset {off} after re-creation: {:?}, want {want:?}",
            r.value
        );
    }
    let next = client.produce("after-recreate").await?;
    let last = acked.last().map(|(o, _)| *o).unwrap_or_default();
    ensure!(
        next > last,
        "a new record lands after the retained ones: {next} <= {last}"
    );
    Ok(())
}
