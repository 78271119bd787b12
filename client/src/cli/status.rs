//! `proglog status`: the ProgLog resource with --cluster, else the Raft status of the members
//! through the admin API.

use anyhow::{Context, Result};
use proglog_proto::v1 as pb;

use super::output::{opt, print_json, Format, Table};
use super::Args;

pub(super) async fn status(args: &Args, local: bool) -> Result<()> {
    if let Some(name) = &args.cluster {
        let kube = kube::Client::try_default()
            .await
            .context("no Kubernetes configuration: set KUBECONFIG (or run in a pod)")?;
        let v = crate::kube_status::get(&kube, &args.namespace, name).await?;
        match args.output {
            Format::Json => print_json(&v),
            Format::Table => {
                let s = &v.status;
                let mut t = Table::new(&[
                    "NAME",
                    "REPLICAS",
                    "CURRENT",
                    "READY",
                    "LEADER",
                    "TERM",
                    "GENERATION",
                    "OBSERVED",
                ]);
                t.row(vec![
                    v.name.clone(),
                    opt(v.desired_replicas),
                    opt(s.replicas),
                    opt(s.ready_replicas),
                    opt(s.leader.clone()),
                    opt(s.term),
                    opt(v.generation),
                    opt(s.observed_generation),
                ]);
                t.print();
                if !s.members.is_empty() {
                    println!();
                    let mut t =
                        Table::new(&["POD", "RAFT ID", "ROLE", "HEALTHY", "LAG", "ADDRESS"]);
                    for m in &s.members {
                        t.row(vec![
                            opt(m.pod.clone()),
                            opt(m.raft_id),
                            opt(m.role.clone()),
                            opt(m.healthy),
                            opt(m.lag),
                            opt(m.address.clone()),
                        ]);
                    }
                    t.print();
                }
                if !s.conditions.is_empty() {
                    println!();
                    let mut t = Table::new(&["CONDITION", "STATUS", "REASON", "MESSAGE"]);
                    for c in &s.conditions {
                        t.row(vec![
                            c.type_.clone(),
                            c.status.clone(),
                            opt(c.reason.clone()),
                            opt(c.message.clone()),
                        ]);
                    }
                    t.print();
                }
            }
        }
        return Ok(());
    }
    raft_status(args, local).await
}

/// The Raft status through the admin API (the leader's view when the member knows the leader).
pub(super) async fn raft_status(args: &Args, local: bool) -> Result<()> {
    let admin = args.admin().await?;
    let st = if local {
        admin.status_of(admin.addr()).await?
    } else {
        admin.status().await?
    };
    match args.output {
        Format::Json => print_json(&status_json(&st)),
        Format::Table => {
            println!(
                "member {} is {}; term {}; leader {} ({}); commit index {}; offsets [{}, {})",
                st.node_id,
                role_name(st.role),
                st.term,
                opt(st.leader_id.filter(|&l| l != 0)),
                if st.leader_addr.is_empty() {
                    "-"
                } else {
                    &st.leader_addr
                },
                opt(st.commit_index),
                st.first_offset,
                st.next_offset
            );
            let mut t = Table::new(&["ID", "NAME", "ADDRESS", "ROLE", "VOTER", "MATCHED", "LAG"]);
            for m in &st.members {
                t.row(vec![
                    m.node_id.to_string(),
                    m.name.clone(),
                    m.addr.clone(),
                    role_name(m.role).into(),
                    if m.voter { "yes" } else { "no" }.into(),
                    opt(m.matched_index),
                    opt(m.lag),
                ]);
            }
            t.print();
        }
    }
    Ok(())
}

fn role_name(role: i32) -> &'static str {
    match pb::Role::try_from(role).unwrap_or(pb::Role::Unspecified) {
        pb::Role::Leader => "leader",
        pb::Role::Follower => "follower",
        pb::Role::Candidate => "candidate",
        pb::Role::Learner => "learner",
        pb::Role::Shutdown => "shutdown",
        pb::Role::Unspecified => "unknown",
    }
}

pub(super) fn status_json(st: &pb::ClusterStatus) -> serde_json::Value {
    serde_json::json!({
        "node_id": st.node_id,
        "role": role_name(st.role),
        "term": st.term,
        "leader_id": st.leader_id.filter(|&l| l != 0),
        "leader_addr": st.leader_addr,
        "last_log_index": st.last_log_index,
        "commit_index": st.commit_index,
        "applied_index": st.applied_index,
        "snapshot_index": st.snapshot_index,
        "first_offset": st.first_offset,
        "next_offset": st.next_offset,
        "members": st.members.iter().map(|m| serde_json::json!({
            "node_id": m.node_id, "name": m.name, "addr": m.addr, "role": role_name(m.role),
            "voter": m.voter, "matched_index": m.matched_index, "lag": m.lag,
        })).collect::<Vec<_>>(),
    })
}
