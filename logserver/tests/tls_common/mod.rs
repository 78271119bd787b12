//! In-process members with mutual TLS on 127.0.0.1, certificates from a throw-away PKI
//! ([`proglog_testkit::pki`]), formed into one cluster through the admin API with the
//! operator's certificate. Kept apart from `common` (plaintext, token) on purpose.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use logserver::config::{Config, TlsConfig};
use logserver::node::Node;
use proglog_proto::v1 as pb;
use proglog_proto::v1::cluster_client::ClusterClient;
use proglog_proto::v1::log_client::LogClient;
use proglog_testkit::pki::{channel, TestPki};
use proglog_testkit::{eventually, DEADLINE};
use proglog_tls::TlsFiles;
use tonic::transport::Channel;

/// A member's config with mutual TLS from `files` and the ACL of `pki`.
pub fn tls_config(pki: &TestPki, id: u64, dir: &Path, files: TlsFiles) -> Config {
    let mut c = Config::new(id, dir, "127.0.0.1:0".parse().unwrap());
    c.heartbeat = Duration::from_millis(100);
    c.election_timeout = Duration::from_millis(800);
    c.tls = Some(TlsConfig {
        files,
        reload_every: Duration::from_millis(100),
        acl_model: pki.model(),
        acl_policy: pki.policy(),
        member_identity: None,
        admin_identity: proglog_tls::issue::DEV_OPERATOR.into(),
    });
    c
}

pub struct TlsCluster {
    pub pki: TestPki,
    pub nodes: Vec<Node>,
    pub root: tempfile::TempDir,
}

impl TlsCluster {
    /// `n` members, each with its own copy of the member certificate (so each can be renewed
    /// alone: `member-<id>`), one cluster, a leader elected.
    pub async fn start(n: u64) -> Result<TlsCluster> {
        Self::start_with(n, DAY).await
    }

    /// As [`TlsCluster::start`], the member certificates valid for `valid_for`.
    pub async fn start_with(n: u64, valid_for: Duration) -> Result<TlsCluster> {
        let pki = TestPki::new()?;
        let root = tempfile::tempdir()?;
        let mut nodes = Vec::new();
        for id in 1..=n {
            let name = format!("member-{id}");
            pki.issue(
                &name,
                proglog_tls::issue::DEV_MEMBER,
                &["127.0.0.1"],
                valid_for,
            )?;
            let cfg = tls_config(
                &pki,
                id,
                &root.path().join(format!("m{id}")),
                pki.files(&name),
            );
            nodes.push(Node::start(cfg).await?);
        }
        let c = TlsCluster { pki, nodes, root };
        let members = c
            .nodes
            .iter()
            .map(|n| pb::Member {
                node_id: n.id(),
                addr: n.addr().to_string(),
                name: format!("m{}", n.id()),
            })
            .collect();
        c.admin(0)?
            .initialize(pb::InitializeRequest { members })
            .await
            .context("initialize with the operator's certificate")?;
        c.leader().await?;
        Ok(c)
    }

    pub fn addr(&self, i: usize) -> String {
        self.nodes[i].addr().to_string()
    }

    /// A channel to member `i` as `who` (`None`: TLS with no client certificate).
    pub fn chan(&self, who: Option<&str>, i: usize) -> Result<Channel> {
        let tls = match who {
            Some(w) => self.pki.client(w)?,
            None => self.pki.anonymous()?,
        };
        channel(Some(&tls), &self.addr(i))
    }

    pub fn log(&self, who: Option<&str>, i: usize) -> Result<LogClient<Channel>> {
        Ok(LogClient::new(self.chan(who, i)?))
    }

    pub fn admin(&self, i: usize) -> Result<ClusterClient<Channel>> {
        Ok(ClusterClient::new(self.chan(Some("operator"), i)?))
    }

    /// Index (in `nodes`) of the leader all members agree on.
    pub async fn leader(&self) -> Result<usize> {
        eventually("a leader all members agree on", DEADLINE, || async {
            let leaders: Vec<_> = self
                .nodes
                .iter()
                .map(|n| n.raft().metrics().borrow().current_leader)
                .collect();
            let l = leaders[0]?;
            leaders
                .iter()
                .all(|x| *x == Some(l))
                .then(|| self.nodes.iter().position(|n| n.id() == l))
                .flatten()
        })
        .await
    }

    /// (first, next) record offsets of every member.
    pub fn ranges(&self) -> Vec<(u64, u64)> {
        self.nodes.iter().map(|n| n.records().range()).collect()
    }

    pub async fn shutdown(self) -> Result<()> {
        for n in self.nodes {
            n.shutdown().await?;
        }
        Ok(())
    }
}

pub const DAY: Duration = Duration::from_secs(24 * 3600);

/// A one-record produce request.
pub fn record(v: &str) -> pb::ProduceRequest {
    pb::ProduceRequest {
        record: Some(pb::Record {
            value: v.as_bytes().to_vec().into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Asserts a refusal with `code` whose message contains every one of `words`.
pub fn assert_refused<T: std::fmt::Debug>(
    r: Result<T, tonic::Status>,
    code: tonic::Code,
    words: &[&str],
) {
    let s = r.expect_err("the call must be refused");
    assert_eq!(s.code(), code, "{s:?}");
    for w in words {
        assert!(s.message().contains(w), "{w:?} not in {:?}", s.message());
    }
}

pub fn addr_of(n: &Node) -> SocketAddr {
    n.addr()
}
