//! Records through the client, for the operator e2e tests: wait until the resolver shows the
//! members, produce many records concurrently and keep what was acknowledged (offset -> value),
//! read every acknowledged record back and compare it (the "no acknowledged record lost" check),
//! and wait until a member serves an offset; a producer that runs in the background through a
//! failover or a rollout. Nothing here knows about Kubernetes objects except a pod's Ready
//! condition.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use k8s_openapi::api::core::v1::Pod;
use proglog_client::{Client, ClientConfig, Members, RetryPolicy};
use proglog_proto::v1 as pb;
use proglog_proto::v1::log_client::LogClient;

use crate::devcluster::wait_for;

/// A client configuration that rides through a failover, a rollout or a partition: up to 1000
/// attempts within 30 s per call.
pub fn through_faults() -> ClientConfig {
    ClientConfig {
        retry: RetryPolicy {
            max_attempts: 1000,
            deadline: Duration::from_secs(30),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Concurrent producers (and readers) of [`produce_many`] and [`check_all`].
pub const PRODUCERS: usize = 8;

/// What the producer task returns: (offset, value, acknowledged at) and the failed calls.
type ProducerLog = (Vec<(u64, String, Instant)>, Vec<String>);

/// One producer in the background, one record at a time, until [`BackgroundProducer::stop`].
pub struct BackgroundProducer {
    stop: Arc<AtomicBool>,
    count: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<ProducerLog>,
}

/// What a [`BackgroundProducer`] saw.
pub struct Produced {
    /// Every acknowledged record: offset -> value.
    pub acked: BTreeMap<u64, String>,
    /// The longest time between two acknowledgements.
    pub longest_gap: Duration,
    /// Every call that failed after the client's retries.
    pub errors: Vec<String>,
}

impl BackgroundProducer {
    /// Starts producing `<prefix>-<i>` through `client`.
    pub fn start(client: &Client, prefix: &str) -> BackgroundProducer {
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicUsize::new(0));
        let task = {
            let (client, stop, count) = (client.clone(), stop.clone(), count.clone());
            let prefix = prefix.to_string();
            tokio::spawn(async move {
                let (mut acked, mut errors) = (Vec::new(), Vec::new());
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let v = format!("{prefix}-{i}");
                    i += 1;
                    match client.produce(v.clone().into_bytes()).await {
                        Ok(off) => {
                            acked.push((off, v, Instant::now()));
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => errors.push(format!("{v}: {e:#}")),
                    }
                }
                (acked, errors)
            })
        };
        BackgroundProducer { stop, count, task }
    }

    /// How many records were acknowledged so far.
    pub fn acknowledged(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Waits until `more` records beyond those acknowledged now are acknowledged.
    pub async fn wait_for_more(&self, more: usize, timeout: Duration) -> Result<()> {
        let want = self.acknowledged() + more;
        wait_for(&format!("{want} acknowledged records"), timeout, || async {
            Ok((self.acknowledged() >= want).then_some(()))
        })
        .await
    }

    /// Stops it; fails when an offset was acknowledged twice.
    pub async fn stop(self) -> Result<Produced> {
        self.stop.store(true, Ordering::Relaxed);
        let (list, errors) = self.task.await?;
        let mut acked = BTreeMap::new();
        let (mut longest_gap, mut prev) = (Duration::ZERO, None::<Instant>);
        for (off, v, at) in list {
            if let Some(p) = prev {
                longest_gap = longest_gap.max(at.saturating_duration_since(p));
            }
            prev = Some(at);
            if let Some(old) = acked.insert(off, v.clone()) {
                bail!("offset {off} acknowledged twice: {old} and {v}");
            }
        }
        Ok(Produced {
            acked,
            longest_gap,
            errors,
        })
    }
}

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
                match c
                    .consume(pb::ConsumeRequest {
                        offset,
                        ..Default::default()
                    })
                    .await
                {
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
