//! An in-process cluster of real members on 127.0.0.1 with real data dirs, helpers that wait on
//! conditions with deadlines (no fixed sleeps), and a producer that follows the leader.
#![allow(dead_code)]

pub mod procs;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use logserver::config::Config;
use logserver::node::Node;
use logserver::raft::network::NetFilter;
use proglog_proto::v1 as pb;
use proglog_proto::v1::cluster_client::ClusterClient;
use proglog_proto::v1::log_client::LogClient;
use tonic::transport::Channel;

pub const TOKEN: &str = "test-admin-token";
pub use proglog_testkit::DEADLINE;

pub use proglog_testkit::eventually;

pub struct Member {
    pub id: u64,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    pub node: Option<Node>,
}

pub struct TestCluster {
    pub members: Vec<Member>,
    pub filter: Arc<NetFilter>,
    pub tweak: fn(&mut Config),
    _root: tempfile::TempDir,
}

pub fn config(id: u64, dir: PathBuf, listen: SocketAddr, tweak: fn(&mut Config)) -> Config {
    let mut c = Config::new(id, dir, listen);
    c.admin_token = Some(TOKEN.into());
    c.heartbeat = Duration::from_millis(100);
    c.election_timeout = Duration::from_millis(800);
    tweak(&mut c);
    c
}

pub fn with_token<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    r
}

pub async fn log_client(addr: SocketAddr) -> Result<LogClient<Channel>> {
    Ok(LogClient::connect(format!("http://{addr}")).await?)
}

pub async fn admin_client(addr: SocketAddr) -> Result<ClusterClient<Channel>> {
    Ok(ClusterClient::connect(format!("http://{addr}")).await?)
}

impl TestCluster {
    /// Starts `n` members and forms one cluster through the admin API of member 1.
    pub async fn start(n: u64, tweak: fn(&mut Config)) -> Result<TestCluster> {
        let root = tempfile::tempdir()?;
        let filter = Arc::new(NetFilter::default());
        let mut members = Vec::new();
        for id in 1..=n {
            let dir = root.path().join(format!("m{id}"));
            let cfg = config(id, dir.clone(), "127.0.0.1:0".parse()?, tweak);
            let node = Node::start_with_filter(cfg, filter.clone()).await?;
            members.push(Member {
                id,
                addr: node.addr(),
                dir,
                node: Some(node),
            });
        }
        let c = TestCluster {
            members,
            filter,
            tweak,
            _root: root,
        };
        let init = pb::InitializeRequest {
            members: c
                .members
                .iter()
                .map(|m| pb::Member {
                    node_id: m.id,
                    addr: m.addr.to_string(),
                    name: format!("m{}", m.id),
                })
                .collect(),
        };
        admin_client(c.members[0].addr)
            .await?
            .initialize(with_token(init))
            .await?;
        c.leader().await?;
        Ok(c)
    }

    pub fn member(&self, id: u64) -> &Member {
        &self.members[(id - 1) as usize]
    }

    pub fn node(&self, id: u64) -> &Node {
        self.member(id).node.as_ref().expect("member is running")
    }

    pub fn running(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| m.node.is_some())
    }

    /// Waits until the running members agree on a leader that is running; returns its id.
    pub async fn leader(&self) -> Result<u64> {
        eventually(
            "a leader all running members agree on",
            DEADLINE,
            || async {
                let mut leaders = self.running().map(|m| {
                    m.node
                        .as_ref()
                        .unwrap()
                        .raft()
                        .metrics()
                        .borrow()
                        .current_leader
                });
                let first = leaders.next()??;
                let all_agree = leaders.all(|l| l == Some(first));
                let leader_running = self.member(first).node.is_some();
                (all_agree && leader_running).then_some(first)
            },
        )
        .await
    }

    /// Stops a member gracefully.
    pub async fn stop(&mut self, id: u64) -> Result<()> {
        let node = self.members[(id - 1) as usize]
            .node
            .take()
            .context("not running")?;
        node.shutdown().await?;
        Ok(())
    }

    /// Kills a member (no graceful shutdown).
    pub async fn kill(&mut self, id: u64) {
        if let Some(node) = self.members[(id - 1) as usize].node.take() {
            node.kill().await;
        }
    }

    /// Restarts a stopped member with its data dir, on its old address.
    pub async fn restart(&mut self, id: u64) -> Result<()> {
        let m = &self.members[(id - 1) as usize];
        let cfg = config(id, m.dir.clone(), m.addr, self.tweak);
        let node = eventually("the old port to be free", DEADLINE, || {
            let cfg = cfg.clone();
            let filter = self.filter.clone();
            async move { Node::start_with_filter(cfg, filter).await.ok() }
        })
        .await?;
        self.members[(id - 1) as usize].node = Some(node);
        Ok(())
    }

    /// Waits until member `id` has applied records up to `next` (exclusive).
    pub async fn wait_next(&self, id: u64, next: u64) -> Result<()> {
        let sm = self.node(id).records().clone();
        eventually(
            &format!("member {id} to reach offset {next}"),
            DEADLINE,
            || {
                let sm = sm.clone();
                async move { (sm.range().1 >= next).then_some(()) }
            },
        )
        .await
    }

    pub async fn shutdown(mut self) -> Result<()> {
        for m in &mut self.members {
            if let Some(n) = m.node.take() {
                n.shutdown().await?;
            }
        }
        Ok(())
    }
}

/// Produces one record through member `addr`; `Ok(None)` when that member refused (not leader).
pub async fn produce(
    client: &mut LogClient<Channel>,
    value: Vec<u8>,
) -> Result<u64, tonic::Status> {
    let r = client
        .produce(pb::ProduceRequest {
            record: Some(pb::Record {
                value: value.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?;
    Ok(r.into_inner().offset)
}

/// The deterministic value of record `i`.
pub fn value(i: u64) -> Vec<u8> {
    format!("record-{i:06}-{}", "x".repeat((i % 17) as usize)).into_bytes()
}

/// The records `ids`, each with its [`value`].
pub fn records(ids: std::ops::Range<u64>) -> Vec<pb::Record> {
    ids.map(|i| pb::Record {
        value: value(i).into(),
        ..Default::default()
    })
    .collect()
}

/// A producer that follows the leader: on a refusal it goes where `proglog-leader` points, on a
/// dead member it tries the next one.
pub struct Producer {
    addrs: Vec<SocketAddr>,
    current: usize,
    clients: BTreeMap<SocketAddr, LogClient<Channel>>,
}

impl Producer {
    pub fn new(addrs: Vec<SocketAddr>) -> Self {
        Producer {
            addrs,
            current: 0,
            clients: BTreeMap::new(),
        }
    }

    async fn client(&mut self) -> Option<LogClient<Channel>> {
        let addr = self.addrs[self.current];
        if let Some(c) = self.clients.get(&addr) {
            return Some(c.clone());
        }
        let ep = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .ok()?
            .connect_timeout(Duration::from_millis(500))
            // NB: above a leadership transfer, which holds writes for about 1.2 leases.
            .timeout(Duration::from_secs(10));
        let c = LogClient::new(ep.connect().await.ok()?);
        self.clients.insert(addr, c.clone());
        Some(c)
    }

    /// The member that answered last.
    pub fn current(&self) -> SocketAddr {
        self.addrs[self.current]
    }

    /// Produces `v` until some member acknowledges it; gives up at the deadline.
    pub async fn produce(&mut self, v: Vec<u8>) -> Result<u64> {
        let end = tokio::time::Instant::now() + DEADLINE;
        loop {
            anyhow::ensure!(
                tokio::time::Instant::now() < end,
                "no member acknowledged in time"
            );
            let Some(mut c) = self.client().await else {
                self.current = (self.current + 1) % self.addrs.len();
                // Retry pacing while a member is down.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            match produce(&mut c, v.clone()).await {
                Ok(off) => return Ok(off),
                Err(status) => {
                    let leader = status
                        .metadata()
                        .get(proglog_proto::LEADER_METADATA_KEY)
                        .and_then(|l| l.to_str().ok())
                        .and_then(|l| l.parse::<SocketAddr>().ok());
                    match leader.and_then(|l| self.addrs.iter().position(|a| *a == l)) {
                        Some(i) if i != self.current => self.current = i,
                        _ => {
                            self.clients.remove(&self.addrs[self.current]);
                            self.current = (self.current + 1) % self.addrs.len();
                            // Retry pacing while an election runs.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            }
        }
    }
}
