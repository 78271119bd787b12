//! Members as separate `logserver` processes on loopback (for SIGKILL and restarts).

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};
use proglog_proto::v1 as pb;

use super::*;

/// A `logserver` process, SIGKILLed when dropped.
pub struct Proc {
    pub id: u64,
    pub addr: SocketAddr,
    pub child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_addr() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Starts member `id` on `addr` with its data in `dir/m<id>`.
pub fn spawn(
    id: u64,
    addr: SocketAddr,
    dir: &std::path::Path,
    token: &std::path::Path,
) -> Result<Proc> {
    let child = Command::new(env!("CARGO_BIN_EXE_logserver"))
        .args(["--id", &id.to_string(), "--listen", &addr.to_string()])
        .args(["--advertise", &addr.to_string()])
        .arg("--data-dir")
        .arg(dir.join(format!("m{id}")))
        .arg("--admin-token-file")
        .arg(token)
        .args(["--heartbeat-ms", "100", "--election-timeout-ms", "800"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("spawning logserver")?;
    Ok(Proc { id, addr, child })
}

/// The leader's address as some member reports it.
pub async fn leader_of(addrs: &[SocketAddr]) -> Option<SocketAddr> {
    for a in addrs {
        let Ok(mut c) = log_client(*a).await else {
            continue;
        };
        let Ok(r) = c.get_servers(pb::GetServersRequest {}).await else {
            continue;
        };
        if let Some(s) = r.into_inner().servers.into_iter().find(|s| s.is_leader) {
            return s.rpc_addr.parse().ok();
        }
    }
    None
}

/// Starts three members in `dir` and forms the cluster; returns them and the leader's address.
pub async fn start_three(dir: &std::path::Path) -> Result<(Vec<Proc>, SocketAddr)> {
    let token = dir.join("token");
    std::fs::write(&token, TOKEN)?;
    let mut procs = Vec::new();
    for id in 1..=3 {
        procs.push(spawn(id, free_addr()?, dir, &token)?);
    }
    let addrs: Vec<SocketAddr> = procs.iter().map(|p| p.addr).collect();
    let mut admin = eventually("member 1 to listen", DEADLINE, || async {
        admin_client(addrs[0]).await.ok()
    })
    .await?;
    for a in &addrs[1..] {
        eventually("members to listen", DEADLINE, || async {
            log_client(*a).await.ok()
        })
        .await?;
    }
    let members = procs
        .iter()
        .map(|p| pb::Member {
            node_id: p.id,
            addr: p.addr.to_string(),
            name: String::new(),
        })
        .collect();
    admin
        .initialize(with_token(pb::InitializeRequest { members }))
        .await?;
    let leader = eventually("a leader", DEADLINE, || leader_of(&addrs)).await?;
    Ok((procs, leader))
}
