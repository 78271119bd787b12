//! A real three-member cluster on loopback with metrics listeners: produce and consume, then
//! scrape `/metrics` over HTTP and see the call counters (by method and code), the fsync
//! histogram, Raft's indexes, the followers' lag and the log on disk move.

mod common;

use std::net::SocketAddr;

use anyhow::{Context, Result};
use common::*;
use proglog_proto::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET path` over HTTP/1.1; (status code, body).
async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    let code = out.get(9..12).context("no status line")?.parse()?;
    let body = out.split_once("\r\n\r\n").context("no body")?.1.to_string();
    Ok((code, body))
}

/// The value of the sample `series` (name and labels exactly as exposed), if present.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

async fn scrape(addr: SocketAddr) -> Result<String> {
    let (code, body) = get(addr, "/metrics").await?;
    anyhow::ensure!(code == 200, "/metrics answered {code}: {body}");
    Ok(body)
}

fn handled(method: &str, code: &str) -> String {
    format!(
        "proglog_grpc_server_handled_total{{service=\"proglog.v1.Log\",method=\"{method}\",code=\"{code}\"}}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scrape_shows_calls_fsyncs_raft_and_disk_moving() -> Result<()> {
    let c = TestCluster::start(3, |cfg| {
        cfg.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await?;
    let leader = c.leader().await?;
    let follower = (1..=3).find(|&m| m != leader).unwrap();
    let at = |id: u64| c.node(id).metrics_addr().expect("metrics listener");
    assert_eq!(get(at(leader), "/healthz").await?.0, 200);

    let before = scrape(at(leader)).await?;
    let fsyncs_before =
        sample(&before, "proglog_fsync_seconds_count").context("fsync histogram")?;
    assert_eq!(sample(&before, &handled("Produce", "OK")), None, "{before}");

    const N: u64 = 20;
    let mut lc = log_client(c.member(leader).addr).await?;
    for i in 0..N {
        produce(&mut lc, value(i)).await?;
    }
    let past_end = lc
        .consume(pb::ConsumeRequest {
            offset: N + 5,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(past_end.code(), tonic::Code::OutOfRange);
    let refused = produce(&mut log_client(c.member(follower).addr).await?, value(0))
        .await
        .unwrap_err();
    c.wait_next(follower, N).await?;

    let after = scrape(at(leader)).await?;
    assert_eq!(
        sample(&after, &handled("Produce", "OK")),
        Some(N as f64),
        "{after}"
    );
    assert_eq!(
        sample(&after, &handled("Consume", "OUT_OF_RANGE")),
        Some(1.0),
        "{after}"
    );
    let produce_latency = "proglog_grpc_server_handling_seconds_count{service=\"proglog.v1.Log\",method=\"Produce\",code=\"OK\"}";
    assert_eq!(sample(&after, produce_latency), Some(N as f64), "{after}");
    assert!(
        sample(&after, "proglog_grpc_server_handled_total{service=\"proglog.raft.v1.Raft\",method=\"AppendEntries\",code=\"OK\"}").is_none(),
        "the leader sends AppendEntries, it does not serve them"
    );
    let fsyncs = sample(&after, "proglog_fsync_seconds_count").context("fsync histogram")?;
    assert!(fsyncs > fsyncs_before, "fsyncs {fsyncs_before} -> {fsyncs}");
    assert!(sample(&after, "proglog_fsync_seconds_sum").unwrap_or(0.0) > 0.0);

    assert_eq!(sample(&after, "proglog_raft_is_leader"), Some(1.0));
    assert!(sample(&after, "proglog_raft_term").unwrap_or(0.0) >= 1.0);
    let last = sample(&after, "proglog_raft_last_log_index").context("last log index")?;
    assert!(
        sample(&after, "proglog_raft_applied_index") >= Some(last - 1.0),
        "{after}"
    );
    assert_eq!(sample(&after, "proglog_log_next_offset"), Some(N as f64));
    assert!(sample(&after, "proglog_log_segments") >= Some(1.0));
    assert!(sample(&after, "proglog_log_disk_bytes") > Some(0.0));
    for id in (1..=3).filter(|&m| m != leader) {
        let lag = format!("proglog_raft_follower_lag_entries{{peer_id=\"{id}\",peer=\"m{id}\"}}");
        let lag = eventually("the follower's lag to reach 0", DEADLINE, || {
            let series = lag.clone();
            let addr = at(leader);
            async move { (sample(&scrape(addr).await.ok()?, &series)? == 0.0).then_some(()) }
        })
        .await;
        lag.with_context(|| format!("lag of member {id}"))?;
    }

    let f = scrape(at(follower)).await?;
    assert_eq!(sample(&f, "proglog_raft_is_leader"), Some(0.0));
    assert!(!f.contains("proglog_raft_follower_lag_entries{"), "{f}");
    let code = logserver::metrics::rpc::code_name(refused.code() as i32);
    assert_eq!(
        sample(&f, &handled("Produce", code)),
        Some(1.0),
        "{code}: {f}"
    );
    assert!(
        sample(&f, "proglog_grpc_server_handled_total{service=\"proglog.raft.v1.Raft\",method=\"AppendEntries\",code=\"OK\"}") >= Some(1.0),
        "{f}"
    );
    c.shutdown().await
}

/// The names of the `proglog_*` series a PromQL expression reads (not label matchers such as
/// `proglog_cluster="x"`).
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("proglog_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        rest = &tail[end..];
        if !rest.trim_start().starts_with(['=', '!']) {
            out.push(tail[..end].to_string());
        }
    }
    out
}

/// Whether `body` (a scrape) holds a sample of series `name`.
fn serves(body: &str, name: &str) -> bool {
    body.lines().filter(|l| !l.starts_with('#')).any(|l| {
        l.strip_prefix(name)
            .is_some_and(|r| r.starts_with(['{', ' ']))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_dashboard_panel_reads_metrics_a_member_serves() -> Result<()> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../manifests/monitoring/grafana-dashboard.json"
    );
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let c = TestCluster::start(3, |cfg| {
        cfg.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await?;
    let leader = c.leader().await?;
    let follower = (1..=3).find(|&m| m != leader).unwrap();
    let mut lc = log_client(c.member(leader).addr).await?;
    produce(&mut lc, value(0)).await?;
    c.wait_next(follower, 1).await?;
    // The leader serves the follower-lag series, a follower the Raft RPCs.
    let mut served = scrape(c.node(leader).metrics_addr().unwrap()).await?;
    served += &scrape(c.node(follower).metrics_addr().unwrap()).await?;

    let panels: Vec<&serde_json::Value> = dashboard["panels"]
        .as_array()
        .context("panels")?
        .iter()
        .filter(|p| p["type"] != "row")
        .collect();
    assert!(panels.len() >= 10, "{} panels", panels.len());
    for p in panels {
        let title = p["title"].as_str().unwrap_or("?");
        let names: Vec<String> = p["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|t| metric_names(t["expr"].as_str().unwrap_or("")))
            .collect();
        assert!(
            !names.is_empty(),
            "panel {title:?} reads no proglog_ metric"
        );
        for n in names {
            assert!(serves(&served, &n), "panel {title:?}: no member serves {n}");
        }
    }
    c.shutdown().await
}

/// `/readyz` is the kubelet's readiness probe (its gRPC probe cannot speak TLS): it must say
/// what the gRPC health service says, NOT SERVING (503) until the member knows a leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_answers_as_the_health_service_does() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = config(1, dir.path().join("m1"), "127.0.0.1:0".parse()?, |c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    });
    let node = logserver::node::Node::start(cfg).await?;
    let at = node.metrics_addr().context("metrics listener")?;
    let (code, body) = get(at, "/readyz").await?;
    assert_eq!(
        code, 503,
        "a member that knows no leader is not ready: {body}"
    );
    assert_eq!(get(at, "/healthz").await?.0, 200, "but it is alive");
    admin_client(node.addr())
        .await?
        .initialize(with_token(pb::InitializeRequest { members: vec![] }))
        .await?;
    eventually(
        "/readyz to answer 200 once the member leads",
        DEADLINE,
        || async { matches!(get(at, "/readyz").await, Ok((200, _))).then_some(()) },
    )
    .await?;
    node.shutdown().await?;
    Ok(())
}
