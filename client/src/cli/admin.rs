//! `proglog admin`: form and change a cluster run without the operator through the admin API
//! (bearer token): init, add (learner, then voter), remove, transfer, set-voters, status, and
//! wait-serving for scripts.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Subcommand;
use proglog_proto::v1 as pb;

use super::output::{print_json, Format};
use super::status::status_json;
use super::Args;
use crate::admin::{parse_member, wait_serving};

/// Admin subcommands.
#[derive(Debug, Subcommand)]
pub enum AdminCmd {
    /// Make the given members the first voters (`--member id=host:port`, repeated); without
    /// members, the member at --addr alone.
    Init {
        #[arg(long = "member", value_parser = parse_member)]
        members: Vec<pb::Member>,
    },
    /// Add a member (`id=host:port` or `id=name@host:port`): as a learner, then as a voter once
    /// it has caught up.
    Add {
        #[arg(value_parser = parse_member)]
        member: pb::Member,
        /// Leave it a learner (no vote).
        #[arg(long)]
        learner: bool,
    },
    /// Remove a member by id (move leadership off it first if it leads).
    Remove { id: u64 },
    /// Move leadership to the voter with this id.
    Transfer { id: u64 },
    /// Make exactly these members (ids, comma-separated) the voters.
    SetVoters {
        #[arg(value_delimiter = ',', required = true)]
        voters: Vec<u64>,
        /// Keep voters left out as learners instead of removing them.
        #[arg(long)]
        retain_as_learners: bool,
    },
    /// The Raft status of the member at --addr (or the leader, when it knows one).
    Status,
    /// Wait until the member at --addr serves (joined, leader known); needs no token.
    WaitServing {
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 30)]
        timeout_secs: u64,
    },
}

pub(super) async fn admin(args: &Args, cmd: &AdminCmd) -> Result<()> {
    if let AdminCmd::WaitServing { timeout_secs } = cmd {
        let addr = args.addr.first().context("--addr is empty")?;
        wait_serving(
            addr,
            Duration::from_secs(*timeout_secs),
            args.tls()?.as_ref(),
        )
        .await?;
        if args.output == Format::Json {
            print_json(&serde_json::json!({"result": "serving", "addr": addr}));
        }
        return Ok(());
    }
    if let AdminCmd::Status = cmd {
        return super::status::raft_status(args, false, 0.0).await;
    }
    let admin = args.admin().await?;
    let done = |what: String, st: Option<&pb::ClusterStatus>| match args.output {
        Format::Json => {
            print_json(&serde_json::json!({"result": what, "status": st.map(status_json)}))
        }
        Format::Table => println!("{what}"),
    };
    match cmd {
        AdminCmd::Init { members } => {
            let fresh = admin.init(members.clone()).await?;
            done(
                if fresh {
                    "initialized".into()
                } else {
                    "already initialized (nothing changed)".into()
                },
                None,
            );
        }
        AdminCmd::Add { member, learner } => {
            let quiet = args.output == Format::Json;
            let st = admin
                .add(member.clone(), !learner, |p| {
                    if !quiet {
                        eprintln!(
                            "member {}: has {} of {} entries{}",
                            p.node_id,
                            p.matched_index,
                            p.leader_last_index,
                            if p.caught_up { " (caught up)" } else { "" }
                        );
                    }
                })
                .await?;
            let what = if *learner {
                "added as learner"
            } else {
                "added as voter"
            };
            done(format!("member {} {what}", member.node_id), Some(&st));
        }
        AdminCmd::Remove { id } => {
            let st = admin.remove(*id).await?;
            done(format!("member {id} removed"), Some(&st));
        }
        AdminCmd::Transfer { id } => {
            let leader = admin.transfer(*id).await?;
            done(format!("member {leader} leads"), None);
        }
        AdminCmd::SetVoters {
            voters,
            retain_as_learners,
        } => {
            let st = admin
                .set_voters(voters.clone(), *retain_as_learners)
                .await?;
            let ids: Vec<String> = voters.iter().map(u64::to_string).collect();
            done(format!("voters are now {}", ids.join(",")), Some(&st));
        }
        AdminCmd::Status | AdminCmd::WaitServing { .. } => unreachable!("handled above"),
    }
    Ok(())
}
