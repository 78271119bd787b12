//! A simulated StatefulSet of real logserver members on loopback, for driving
//! `membership::reconcile_with` the way the controller does, without Kubernetes.
//!
//! Pod `o` is a real member (node id `o + 1`, name `demo-<o>`) bound to `127.A.B.(o+1):P`: one
//! port for all, distinct loopback IPs, as pods have. "Applying" the StatefulSet size starts
//! missing members with fresh data dirs and stops (and wipes, as `whenScaled: Delete` does) the
//! ones above it. A pod is "ready" when its member knows a leader (the readiness probe's rule).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use logserver::config::Config;
use logserver::node::Node;
use logserver::raft::network::NetFilter;
use proglog_operator::admin::AdminPool;
use proglog_operator::membership::{self, MembershipInput, MembershipReport, PodInfo};
use proglog_operator::names;
use proglog_operator::step::{StepKind, Taken};
use proglog_proto::v1 as pb;

pub const NAME: &str = "demo";
pub const TOKEN: &str = "membership-test-token";

pub struct Sim {
    /// The first three octets of the members' addresses (member `o` is `<base>.(o+1)`).
    pub base: [u8; 3],
    pub port: u16,
    pub pool: AdminPool,
    pub filter: Arc<NetFilter>,
    pub nodes: BTreeMap<u32, Node>,
    pub sts: Option<u32>,
    /// Every step taken, with the time since the simulation started.
    pub steps: Vec<(Duration, Taken)>,
    pub started: Instant,
    root: tempfile::TempDir,
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "off,proglog_operator=info".into()),
        )
        .with_test_writer()
        .try_init();
}

impl Sim {
    /// A simulation with no StatefulSet yet, on a loopback /24 of its own.
    pub fn new() -> Result<Sim> {
        Self::new_in(|x| [127, 100 + (x % 100) as u8, (x >> 8) as u8])
    }

    /// The same on a /24 of 10.245.128.0/17, which the running devcluster makes local to this
    /// machine (like 127.0.0.0/8, but an API server accepts these addresses in EndpointSlices).
    pub fn new_devcluster() -> Result<Sim> {
        Self::new_in(|x| [10, 245, 128 + (x % 127) as u8])
    }

    fn new_in(pick: impl Fn(u32) -> [u8; 3]) -> Result<Sim> {
        let seed = std::process::id() ^ (Instant::now().elapsed().subsec_nanos() << 3);
        for attempt in 0..20u32 {
            let x = seed.wrapping_add(attempt.wrapping_mul(7919));
            let base = pick(x);
            let probe = std::net::TcpListener::bind((ip(base, 0), 0))?;
            let port = probe.local_addr()?.port();
            let free = (1..9).all(|o| std::net::TcpListener::bind((ip(base, o), port)).is_ok());
            drop(probe);
            if free {
                return Ok(Sim {
                    base,
                    port,
                    pool: AdminPool::with_timeouts(
                        Duration::from_millis(500),
                        Duration::from_secs(5),
                    ),
                    filter: Arc::new(NetFilter::default()),
                    nodes: BTreeMap::new(),
                    sts: None,
                    steps: Vec::new(),
                    started: Instant::now(),
                    root: tempfile::tempdir()?,
                });
            }
        }
        bail!("no free address and port found")
    }

    pub fn addr(&self, o: u32) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(ip(self.base, o), self.port))
    }

    pub fn dir(&self, o: u32) -> PathBuf {
        self.root.path().join(names::pod(NAME, o))
    }

    pub fn config(&self, o: u32) -> Config {
        let mut c = Config::new(names::node_id(o), self.dir(o), self.addr(o));
        c.name = names::pod(NAME, o);
        c.admin_token = Some(TOKEN.into());
        c.heartbeat = Duration::from_millis(100);
        c.election_timeout = Duration::from_millis(800);
        c
    }

    /// Starts pod `o` (its member keeps whatever its data dir holds).
    pub async fn start(&mut self, o: u32) -> Result<()> {
        let cfg = self.config(o);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match Node::start_with_filter(cfg.clone(), self.filter.clone()).await {
                Ok(n) => {
                    self.nodes.insert(o, n);
                    return Ok(());
                }
                // The old socket of a restarted member may linger a moment.
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!("starting demo-{o}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Stops pod `o` gracefully.
    pub async fn stop(&mut self, o: u32) -> Result<()> {
        if let Some(n) = self.nodes.remove(&o) {
            n.shutdown().await?;
        }
        Ok(())
    }

    /// Stops pod `o` and deletes its data (its volume claim is deleted, or the disk is lost).
    pub async fn stop_and_wipe(&mut self, o: u32) -> Result<()> {
        self.stop(o).await?;
        let d = self.dir(o);
        if d.exists() {
            std::fs::remove_dir_all(&d).with_context(|| format!("wiping {}", d.display()))?;
        }
        Ok(())
    }

    /// What the StatefulSet controller would do for `self.sts` replicas.
    pub async fn apply_sts(&mut self) -> Result<()> {
        let Some(n) = self.sts else { return Ok(()) };
        let above: Vec<u32> = self.nodes.keys().copied().filter(|&o| o >= n).collect();
        for o in above {
            self.stop_and_wipe(o).await?;
        }
        for o in 0..n {
            if !self.nodes.contains_key(&o) {
                self.start(o).await?;
            }
        }
        Ok(())
    }

    pub fn pods(&self) -> Vec<PodInfo> {
        self.nodes
            .iter()
            .map(|(&o, n)| PodInfo {
                name: names::pod(NAME, o),
                ordinal: o,
                ip: Some(ip(self.base, o).to_string()),
                ready: n.raft().metrics().borrow().current_leader.is_some(),
                terminating: false,
            })
            .collect()
    }

    pub fn input(&self, desired: u32) -> MembershipInput {
        MembershipInput {
            namespace: "test".into(),
            name: NAME.into(),
            desired,
            sts_replicas: self.sts,
            pods: self.pods(),
            port: i32::from(self.port),
            cluster_domain: "cluster.local".into(),
            auth: proglog_operator::admin::ClusterAuth::Token(TOKEN.into()),
        }
    }

    /// One controller pass: reconcile, record the step, size the StatefulSet.
    pub async fn pass(&mut self, desired: u32) -> Result<MembershipReport> {
        let base = self.base;
        let port = self.port;
        let input = self.input(desired);
        let report = membership::reconcile_with(&self.pool, &input, move |o| {
            SocketAddr::V4(SocketAddrV4::new(ip(base, o), port)).to_string()
        })
        .await?;
        if let Some(s) = &report.step {
            let at = self.started.elapsed();
            eprintln!("[{:>7.2}s] step: {s}", at.as_secs_f64());
            self.steps.push((at, s.clone()));
        }
        self.sts = Some(u32::try_from(report.statefulset_replicas)?);
        self.apply_sts().await?;
        Ok(report)
    }

    /// Passes until the report says settled; returns the last report.
    pub async fn drive(&mut self, desired: u32, within: Duration) -> Result<MembershipReport> {
        let deadline = Instant::now() + within;
        let mut last_wait = None;
        loop {
            let r = self.pass(desired).await?;
            if r.settled {
                return Ok(r);
            }
            if r.waiting != last_wait {
                if let Some(w) = &r.waiting {
                    eprintln!(
                        "[{:>7.2}s] waiting: {w}",
                        self.started.elapsed().as_secs_f64()
                    );
                }
                last_wait = r.waiting.clone();
            }
            if Instant::now() > deadline {
                bail!("not settled at {desired} within {within:?}; last report: {r:#?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The Status of pod `o`.
    pub async fn status(&self, o: u32) -> Result<pb::ClusterStatus> {
        Ok(self
            .pool
            .client(
                &self.addr(o).to_string(),
                &proglog_operator::admin::Auth::Token(TOKEN.into()),
            )?
            .status()
            .await?)
    }

    /// The leader's ordinal and its view: voters' and learners' ordinals.
    pub async fn membership(&self) -> Result<(u32, Vec<u32>, Vec<u32>)> {
        for &o in self.nodes.keys() {
            let s = self.status(o).await?;
            if s.role() == pb::Role::Leader {
                let ord = |id| names::ordinal_of(id).unwrap();
                let voters = s.members.iter().filter(|m| m.voter).map(|m| ord(m.node_id));
                let learners = s
                    .members
                    .iter()
                    .filter(|m| !m.voter)
                    .map(|m| ord(m.node_id));
                return Ok((o, voters.collect(), learners.collect()));
            }
        }
        bail!("no member leads")
    }

    /// The steps of `kind` taken so far.
    pub fn steps_of(&self, kind: StepKind) -> Vec<&Taken> {
        self.steps
            .iter()
            .map(|(_, t)| t)
            .filter(|t| t.kind() == kind)
            .collect()
    }

    /// Where the first step of `kind` on pod `ordinal` is among the steps taken.
    pub fn position(&self, kind: StepKind, ordinal: u32) -> Option<usize> {
        self.steps
            .iter()
            .position(|(_, t)| t.kind() == kind && t.step.ordinal() == ordinal)
    }

    /// The steps taken, as their messages.
    pub fn step_messages(&self) -> Vec<String> {
        self.steps.iter().map(|(_, t)| t.to_string()).collect()
    }

    pub async fn shutdown(mut self) -> Result<()> {
        let all: Vec<u32> = self.nodes.keys().copied().collect();
        for o in all {
            self.stop(o).await?;
        }
        Ok(())
    }
}

fn ip(base: [u8; 3], o: u32) -> Ipv4Addr {
    Ipv4Addr::new(base[0], base[1], base[2], (o + 1) as u8)
}
