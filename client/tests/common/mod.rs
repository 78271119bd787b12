//! A three-member ProgLog cluster of real `logserver` processes on loopback for the client's
//! tests, formed through the client's own admin API, plus waiting helpers (deadlines, no fixed
//! sleeps). The logserver binary is built once per test binary with `cargo build`.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use proglog_client::admin::Admin;
use proglog_client::resolver::{BootstrapConfig, BootstrapResolver};
use proglog_client::{Client, ClientConfig};
use proglog_proto::v1 as pb;

pub const TOKEN: &str = "client-test-token";
pub const DEADLINE: Duration = Duration::from_secs(30);

pub use proglog_testkit::eventually;
pub use proglog_testkit::procs::logserver_bin;

pub struct Proc {
    pub id: u64,
    pub addr: SocketAddr,
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Cluster {
    pub procs: Vec<Proc>,
    pub token_file: PathBuf,
    dir: tempfile::TempDir,
}

fn free_addr() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

impl Cluster {
    /// Starts `n` members (not yet formed into a cluster).
    pub fn spawn(n: u64) -> Result<Cluster> {
        let bin = logserver_bin()?;
        let dir = tempfile::tempdir()?;
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, TOKEN)?;
        let mut procs = Vec::new();
        for id in 1..=n {
            let addr = free_addr()?;
            let child = Command::new(&bin)
                .args(["--id", &id.to_string(), "--name", &format!("m{id}")])
                .args([
                    "--listen",
                    &addr.to_string(),
                    "--advertise",
                    &addr.to_string(),
                ])
                .arg("--data-dir")
                .arg(dir.path().join(format!("m{id}")))
                .arg("--admin-token-file")
                .arg(&token_file)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?;
            procs.push(Proc { id, addr, child });
        }
        Ok(Cluster {
            procs,
            token_file,
            dir,
        })
    }

    /// Starts `n` members and forms them into one cluster through the admin API.
    pub async fn start(n: u64) -> Result<Cluster> {
        let c = Cluster::spawn(n)?;
        c.wait_listening().await?;
        let members = c
            .procs
            .iter()
            .map(|p| pb::Member {
                node_id: p.id,
                addr: p.addr.to_string(),
                name: format!("m{}", p.id),
            })
            .collect();
        Admin::new(c.addrs()[0].clone(), TOKEN)?
            .init(members)
            .await?;
        c.wait_leader().await?;
        Ok(c)
    }

    pub async fn wait_listening(&self) -> Result<()> {
        for p in &self.procs {
            eventually("members to listen", DEADLINE, || async {
                tokio::net::TcpStream::connect(p.addr).await.ok()
            })
            .await?;
        }
        Ok(())
    }

    /// Waits until every running member names the same leader; returns its address.
    pub async fn wait_leader(&self) -> Result<String> {
        eventually("a leader every member agrees on", DEADLINE, || async {
            let mut leader = None;
            for a in self.addrs() {
                let st = Admin::new(a.clone(), TOKEN)
                    .ok()?
                    .status_of(&a)
                    .await
                    .ok()?;
                if st.leader_addr.is_empty() {
                    return None;
                }
                match &leader {
                    None => leader = Some(st.leader_addr),
                    Some(l) if *l == st.leader_addr => {}
                    Some(_) => return None,
                }
            }
            leader
        })
        .await
    }

    pub fn addrs(&self) -> Vec<String> {
        self.procs.iter().map(|p| p.addr.to_string()).collect()
    }

    /// SIGKILLs the member at `addr` and waits for it to exit.
    pub fn kill(&mut self, addr: &str) -> Result<u64> {
        let i = self
            .procs
            .iter()
            .position(|p| p.addr.to_string() == addr)
            .context("no such member")?;
        let mut p = self.procs.remove(i);
        p.child.kill()?;
        p.child.wait()?;
        Ok(p.id)
    }

    /// A client with the bootstrap resolver over every member (following WatchStatus when
    /// `watch` is true), with `cfg`.
    pub async fn client(&self, watch: bool, cfg: ClientConfig) -> Result<Client> {
        let mut b = BootstrapConfig::new(self.addrs());
        if watch {
            b.admin_token = Some(TOKEN.into());
        }
        let r = BootstrapResolver::start(b).await?;
        let c = Client::new(Arc::new(r), cfg)?;
        c.wait_for_leader(DEADLINE).await?;
        Ok(c)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
