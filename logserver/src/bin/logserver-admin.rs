//! `logserver-admin`: a small client of the Cluster (admin) API - form a cluster, add learners,
//! change membership, transfer leadership, show status - plus `wait-serving` for scripts.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use proglog_proto::v1 as pb;
use proglog_proto::v1::cluster_client::ClusterClient;
use tonic::transport::Channel;

#[derive(Debug, Parser)]
#[command(name = "logserver-admin", about = "Admin client of a ProgLog member")]
struct Args {
    /// host:port of the member to talk to.
    #[arg(long, env = "PROGLOG_ADDR", default_value = "127.0.0.1:8400")]
    addr: String,
    /// File holding the admin bearer token.
    #[arg(long, env = "PROGLOG_ADMIN_TOKEN_FILE")]
    token_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Makes the given members (`id=host:port`, repeated) the first voters. Succeeds quietly
    /// when the cluster is already initialized.
    Init {
        #[arg(long = "member", value_parser = parse_member)]
        members: Vec<pb::Member>,
    },
    /// Adds a learner (`id=host:port`) and waits until it has caught up.
    AddLearner {
        #[arg(value_parser = parse_member)]
        member: pb::Member,
    },
    /// Sets the voter set (comma-separated ids).
    SetVoters {
        #[arg(value_delimiter = ',')]
        voters: Vec<u64>,
    },
    /// Removes a member.
    Remove { id: u64 },
    /// Moves leadership to a voter.
    Transfer { id: u64 },
    /// Prints the member's Raft status.
    Status,
    /// Waits until the member reports SERVING on grpc.health.v1.Health.
    WaitServing {
        #[arg(long, default_value_t = 30)]
        timeout_secs: u64,
    },
}

fn parse_member(s: &str) -> Result<pb::Member, String> {
    let (id, addr) = s.split_once('=').ok_or("expected id=host:port")?;
    Ok(pb::Member {
        node_id: id.parse().map_err(|e| format!("bad id {id:?}: {e}"))?,
        addr: addr.to_string(),
        name: String::new(),
    })
}

struct Admin {
    client: ClusterClient<Channel>,
    token: String,
}

impl Admin {
    fn req<T>(&self, msg: T) -> Result<tonic::Request<T>> {
        let mut r = tonic::Request::new(msg);
        r.metadata_mut()
            .insert("authorization", format!("Bearer {}", self.token).parse()?);
        Ok(r)
    }
}

async fn channel(addr: &str) -> Result<Channel> {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))
}

async fn wait_serving(addr: &str, timeout: Duration) -> Result<()> {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let end = tokio::time::Instant::now() + timeout;
    loop {
        if let Ok(ch) = channel(addr).await {
            let r = HealthClient::new(ch)
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await;
            if r.is_ok_and(|r| r.into_inner().status == 1) {
                return Ok(());
            }
        }
        if tokio::time::Instant::now() > end {
            bail!("{addr} is not SERVING after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if let Cmd::WaitServing { timeout_secs } = args.cmd {
        return wait_serving(&args.addr, Duration::from_secs(timeout_secs)).await;
    }
    let token_file = args
        .token_file
        .context("--token-file (or PROGLOG_ADMIN_TOKEN_FILE) is required")?;
    let token = std::fs::read_to_string(&token_file)
        .with_context(|| format!("reading {}", token_file.display()))?
        .trim()
        .to_string();
    let mut admin = Admin {
        client: ClusterClient::new(channel(&args.addr).await?),
        token,
    };
    match args.cmd {
        Cmd::Init { members } => {
            let r = admin.req(pb::InitializeRequest { members })?;
            match admin.client.initialize(r).await {
                Ok(_) => println!("initialized"),
                Err(s) if s.code() == tonic::Code::AlreadyExists => {
                    println!("already initialized")
                }
                Err(s) => return Err(s.into()),
            }
        }
        Cmd::AddLearner { member } => {
            let r = admin.req(pb::AddLearnerRequest {
                member: Some(member),
            })?;
            let mut s = admin.client.add_learner(r).await?.into_inner();
            while let Some(p) = s.message().await? {
                println!(
                    "learner {}: matched {} of {}{}",
                    p.node_id,
                    p.matched_index,
                    p.leader_last_index,
                    if p.caught_up { " (caught up)" } else { "" }
                );
            }
        }
        Cmd::SetVoters { voters } => {
            let r = admin.req(pb::ChangeMembershipRequest {
                voters,
                retain_as_learners: false,
            })?;
            let st = admin.client.change_membership(r).await?.into_inner();
            println!("{:#?}", st.status);
        }
        Cmd::Remove { id } => {
            let r = admin.req(pb::RemoveMemberRequest { node_id: id })?;
            let st = admin.client.remove_member(r).await?.into_inner();
            println!("{:#?}", st.status);
        }
        Cmd::Transfer { id } => {
            let r = admin.req(pb::TransferLeadershipRequest { node_id: id })?;
            let l = admin.client.transfer_leadership(r).await?.into_inner();
            println!("leader is now {}", l.leader_id);
        }
        Cmd::Status => {
            let r = admin.req(pb::StatusRequest {})?;
            println!("{:#?}", admin.client.status(r).await?.into_inner());
        }
        Cmd::WaitServing { .. } => unreachable!("handled above"),
    }
    Ok(())
}
