//! A member's Prometheus `/metrics`, scraped in the cluster: the operator's `<name>-metrics`
//! Service names every member's metrics port, and the API server's proxy (the path a scraper
//! without a ServiceMonitor would take through the Service, and per pod) reaches it. After
//! produces through the client, the leader's `Produce` counter has moved by at least as many
//! calls (a ProgLogUser's, over mutual TLS: the sample ProgLog), and the Raft gauges name a
//! term and a commit index. The metrics port stays plaintext (scrapers and probes).

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use e2e::devcluster::wait_for;
use e2e::names;
use e2e::operator::{healthy_voters, is_ready, sample_proglog_tls, wait_proglog, OperatorEnv};
use e2e::records::wait_for_members;
use proglog_client::Client;

const NAME: &str = "mtr";
const PRODUCES: usize = 25;
const PRODUCE_OK: &str =
    "proglog_grpc_server_handled_total{service=\"proglog.v1.Log\",method=\"Produce\",code=\"OK\"}";

/// The value of the sample `series` (name and labels exactly as exposed), if present.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .filter_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .next()
}

/// `/metrics` of the member metrics port behind `target` ("services/<svc>" or "pods/<pod>"),
/// through the API server's proxy. NB: a Service is named with its port's name, a pod with the
/// number (the API server's pod proxy fails on a port name).
fn scrape(env: &OperatorEnv, target: &str) -> Result<String> {
    let (kind, name) = target.split_once('/').context("kind/name")?;
    let port = match kind {
        "services" => names::METRICS_PORT_NAME.to_string(),
        _ => proglog_crds::DEFAULT_METRICS_PORT.to_string(),
    };
    let path = format!(
        "/api/v1/namespaces/{}/{kind}/http:{name}:{port}/proxy/metrics",
        env.ns
    );
    env.kubectl_ok(&["get", "--raw", &path], None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_members_metrics_show_produces_through_the_metrics_service() -> Result<()> {
    let env = OperatorEnv::start("e2e-metrics").await?;
    let result = scenario(&env).await;
    env.finish(result).await
}

async fn scenario(env: &OperatorEnv) -> Result<()> {
    let body = sample_proglog_tls(NAME, &env.ns, 3, "Delete")?;
    env.kubectl_ok(&["apply", "-f", "-"], Some(&body.to_string()))?;
    let p = wait_proglog(
        &env.proglogs(),
        NAME,
        "Ready with 3 voters",
        Duration::from_secs(180),
        |p| is_ready(p) && healthy_voters(p).len() == 3,
    )
    .await?;
    let leader = p.status.and_then(|s| s.leader).context("a leader")?;

    // Through the Service: some member answers with the data-plane families.
    let svc = format!("services/{}", names::metrics_service(NAME));
    let via_svc = wait_for(
        "the metrics Service to serve /metrics",
        Duration::from_secs(60),
        || async { Ok(scrape(env, &svc).ok()) },
    )
    .await?;
    for family in [
        "proglog_raft_term",
        "proglog_raft_commit_index",
        "proglog_fsync_seconds",
    ] {
        ensure!(
            via_svc.lines().any(|l| l.starts_with(family)),
            "{family} missing from {svc}:\n{via_svc}"
        );
    }

    // The leader's produce counter moves by at least the produces we make (as a ProgLogUser).
    let config = proglog_client::ClientConfig {
        tls: Some(e2e::pki::user(&env.client, &env.ns, NAME, "metrics").await?),
        ..e2e::records::through_faults()
    };
    let client = Client::in_kubernetes(env.client.clone(), &env.ns, NAME, config)?;
    wait_for_members(&client, 3, Duration::from_secs(60)).await?;
    e2e::pki::wait_granted(&client, "granted").await?;
    let pod = format!("pods/{leader}");
    let before = sample(&scrape(env, &pod)?, PRODUCE_OK).unwrap_or(0.0);
    for i in 0..PRODUCES {
        client.produce(format!("metrics-{i}")).await?;
    }
    let after = sample(&scrape(env, &pod)?, PRODUCE_OK).unwrap_or(0.0);
    eprintln!("[metrics] {leader} {PRODUCE_OK}: {before} -> {after} after {PRODUCES} produces");
    ensure!(
        after - before >= PRODUCES as f64,
        "the leader's produce counter moved {before} -> {after}, fewer than {PRODUCES}"
    );
    Ok(())
}
