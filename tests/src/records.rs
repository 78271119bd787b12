//! Records through the client, for the operator e2e tests: wait until the resolver shows the
//! members, produce many records concurrently and keep what was acknowledged (offset -> value),
//! read every acknowledged record back and compare it (the "no acknowledged record lost" check),
//! and wait until a member serves an offset. Nothing here knows about Kubernetes objects except
//! a pod's Ready condition.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use k8s_openapi::api::core::v1::Pod;
use proglog_client::{Client, Members};
use proglog_proto::v1 as pb;
use proglog_proto::v1::log_client::LogClient;

use crate::devcluster::wait_for;

/// Concurrent producers (and readers) of [`produce_many`] and [`check_all`].
pub const PRODUCERS: usize = 8;

/// True when the pod's Ready condition is True.
pub fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Waits until the resolver names a leader and `n - 1` ready followers.
pub async fn wait_for_members(client: &Client, n: usize, timeout: Duration) -> Result<Members> {
    wait_for(
        &format!("the resolver to list a leader and {} followers", n - 1),
        timeout,
        || async {
            let m = client.members();
            ensure!(
                m.leader().is_some() && m.ready_followers().count() == n - 1,
                "the resolver has {m:?}"
            );
            Ok(Some(m))
        },
    )
    .await
}

/// Produces `count` records `<prefix>-<i>` from [`PRODUCERS`] tasks; returns offset -> value.
/// Fails when an offset is acknowledged twice.
pub async fn produce_many(
    client: &Client,
    prefix: &str,
    count: usize,
) -> Result<BTreeMap<u64, String>> {
    let mut tasks = Vec::new();
    for p in 0..PRODUCERS {
        let client = client.clone();
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in (p..count).step_by(PRODUCERS) {
                let v = format!("{prefix}-{i}");
                let off = client
                    .produce(v.clone().into_bytes())
                    .await
                    .with_context(|| format!("producing {v}"))?;
                out.push((off, v));
            }
            anyhow::Ok(out)
        }));
    }
    let mut acked = BTreeMap::new();
    for t in tasks {
        for (off, v) in t.await?? {
            if let Some(prev) = acked.insert(off, v.clone()) {
                bail!("offset {off} acknowledged twice: {prev} and {v}");
            }
        }
    }
    Ok(acked)
}

/// Reads every acknowledged record back through the client and compares it.
pub async fn check_all(client: &Client, acked: &BTreeMap<u64, String>) -> Result<()> {
    let items: Vec<(u64, String)> = acked.iter().map(|(o, v)| (*o, v.clone())).collect();
    let chunk = items.len().div_ceil(PRODUCERS).max(1);
    let mut tasks = Vec::new();
    for part in items.chunks(chunk) {
        let client = client.clone();
        let part = part.to_vec();
        tasks.push(tokio::spawn(async move {
            for (off, want) in part {
                let r = client
                    .consume(off)
                    .await
                    .with_context(|| format!("consuming acknowledged offset {off}"))?;
                let got = String::from_utf8_lossy(&r.value);
                ensure!(
                    got == want,
                    "offset {off}: read {got:?}, acknowledged {want:?}"
                );
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Waits until member `addr` serves `offset` (it has applied the commit).
pub async fn wait_readable(addr: &str, offset: u64) -> Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?.connect_lazy();
    wait_for(
        &format!("{addr} to serve offset {offset}"),
        Duration::from_secs(15),
        || {
            let mut c = LogClient::new(channel.clone());
            async move {
                match c.consume(pb::ConsumeRequest { offset }).await {
                    Ok(_) => Ok(Some(())),
                    Err(s) if s.code() == tonic::Code::OutOfRange => Ok(None),
                    Err(s) => bail!("{addr}: {s}"),
                }
            }
        },
    )
    .await
}

/// Follows `WatchStatus` of each member in `addrs` (admin `token`) and returns the moment the
/// first of them reports a leader other than Raft node `old_leader` (the election, as the
/// members see it). Runs until then; spawn it before the leader goes.
pub async fn wait_for_election(
    addrs: Vec<String>,
    token: String,
    old_leader: u64,
) -> Result<tokio::time::Instant> {
    use proglog_proto::v1::cluster_client::ClusterClient;
    let (tx, mut rx) = tokio::sync::mpsc::channel(addrs.len().max(1));
    for addr in addrs {
        let (tx, token) = (tx.clone(), token.clone());
        tokio::spawn(async move {
            let run = async {
                let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
                    .connect()
                    .await?;
                let req = proglog_client::conn::with_token(pb::StatusRequest {}, &token)?;
                let mut stream = ClusterClient::new(ch).watch_status(req).await?.into_inner();
                while let Some(st) = stream.message().await? {
                    if st.leader_id.is_some_and(|l| l != 0 && l != old_leader) {
                        let _ = tx.send(tokio::time::Instant::now()).await;
                        break;
                    }
                }
                anyhow::Ok(())
            };
            if let Err(e) = run.await {
                tracing::debug!(%addr, "watching for the election: {e:#}");
            }
        });
    }
    drop(tx);
    rx.recv()
        .await
        .context("no member reported a new leader (every WatchStatus ended)")
}
