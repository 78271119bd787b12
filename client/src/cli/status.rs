//! `proglog status`: the ProgLog resource with --cluster, else the Raft status of the members
//! through the admin API, with each member's lag and, from two samples `--rate-secs` apart, the
//! rates: records appended per second, and entries replicated per second to each member.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use proglog_proto::v1 as pb;

use super::output::{opt, print_json, Format, Table};
use super::Args;

pub(super) async fn status(args: &Args, local: bool, rate_secs: f64) -> Result<()> {
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
                if let Some(st) = &s.storage {
                    println!(
                        "\nstorage {}{}",
                        opt(st.size.clone()),
                        st.message
                            .as_ref()
                            .map_or(String::new(), |m| format!(": {m}"))
                    );
                }
                if let Some(r) = &s.rollout {
                    println!(
                        "\nrollout {}/{} members on revision {}{}",
                        opt(r.updated),
                        opt(r.replicas),
                        opt(r.revision.clone()),
                        r.message
                            .as_ref()
                            .map_or(String::new(), |m| format!(": {m}"))
                    );
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
    raft_status(args, local, rate_secs).await
}

/// The Raft status through the admin API (the leader's view when the member knows the leader),
/// with rates from a second sample `rate_secs` later (none when 0).
pub(super) async fn raft_status(args: &Args, local: bool, rate_secs: f64) -> Result<()> {
    anyhow::ensure!(
        rate_secs.is_finite() && (0.0..=3600.0).contains(&rate_secs),
        "--rate-secs must be between 0 and 3600"
    );
    let admin = args.admin().await?;
    let sample = || async {
        let st = if local {
            admin.status_of(admin.addr()).await?
        } else {
            admin.status().await?
        };
        anyhow::Ok((Instant::now(), st))
    };
    let (t0, first) = sample().await?;
    let (st, rates) = if rate_secs > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(rate_secs)).await;
        let (t1, st) = sample().await?;
        let r = Rates::between(&first, &st, t1 - t0);
        (st, r)
    } else {
        (first, None)
    };
    match args.output {
        Format::Json => {
            let mut v = status_json(&st);
            if let Some(r) = &rates {
                v["rates"] = r.json();
            }
            print_json(&v)
        }
        Format::Table => {
            println!(
                "member {} is {}; term {}; leader {} ({}); commit index {}; offsets [{}, {}); {} records/s",
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
                st.next_offset,
                opt(rates.as_ref().map(|r| format!("{:.1}", r.records)))
            );
            let mut t = Table::new(&[
                "ID",
                "NAME",
                "ADDRESS",
                "ROLE",
                "VOTER",
                "MATCHED",
                "LAG",
                "ENTRIES/S",
            ]);
            for m in &st.members {
                let rate = rates.as_ref().and_then(|r| r.entries.get(&m.node_id));
                t.row(vec![
                    m.node_id.to_string(),
                    m.name.clone(),
                    m.addr.clone(),
                    role_name(m.role).into(),
                    if m.voter { "yes" } else { "no" }.into(),
                    opt(m.matched_index),
                    opt(m.lag),
                    opt(rate.map(|r| format!("{r:.1}"))),
                ]);
            }
            t.print();
        }
    }
    Ok(())
}

/// Rates between two status samples of the same member.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Rates {
    /// Records appended per second (the member's next offset).
    pub records: f64,
    /// Entries replicated per second, per member id (matched index; when the sampled member leads,
    /// as it reports each member).
    pub entries: BTreeMap<u64, f64>,
}

impl Rates {
    /// The rates from `a` to `b`, `elapsed` apart; `None` when they are not comparable (other
    /// members answered, or no time passed).
    pub fn between(
        a: &pb::ClusterStatus,
        b: &pb::ClusterStatus,
        elapsed: Duration,
    ) -> Option<Self> {
        let secs = elapsed.as_secs_f64();
        if a.node_id != b.node_id || secs <= 0.0 {
            return None;
        }
        let per_sec = |x: u64, y: u64| y.saturating_sub(x) as f64 / secs;
        let before: BTreeMap<u64, u64> = a
            .members
            .iter()
            .filter_map(|m| Some((m.node_id, m.matched_index?)))
            .collect();
        let entries = b
            .members
            .iter()
            .filter_map(|m| {
                Some((
                    m.node_id,
                    per_sec(*before.get(&m.node_id)?, m.matched_index?),
                ))
            })
            .collect();
        Some(Rates {
            records: per_sec(a.next_offset, b.next_offset),
            entries,
        })
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "records_per_sec": self.records,
            "entries_per_sec": self.entries.iter().map(|(id, r)| (id.to_string(), *r)).collect::<BTreeMap<_, _>>(),
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn st(node_id: u64, next_offset: u64, matched: &[(u64, Option<u64>)]) -> pb::ClusterStatus {
        pb::ClusterStatus {
            node_id,
            next_offset,
            members: matched
                .iter()
                .map(|&(id, m)| pb::MemberStatus {
                    node_id: id,
                    matched_index: m,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn rates_come_from_two_samples_of_one_member() {
        let a = st(1, 100, &[(1, Some(50)), (2, Some(40)), (3, None)]);
        let b = st(
            1,
            300,
            &[(1, Some(70)), (2, Some(70)), (3, Some(5)), (4, Some(9))],
        );
        let r = Rates::between(&a, &b, Duration::from_secs(2)).unwrap();
        assert_eq!(r.records, 100.0);
        assert_eq!(r.entries, BTreeMap::from([(1, 10.0), (2, 15.0)]));
        // Another member answered the second time: nothing to compare.
        assert_eq!(
            Rates::between(&a, &st(2, 300, &[]), Duration::from_secs(1)),
            None
        );
        assert_eq!(Rates::between(&a, &b, Duration::ZERO), None);
        // A member that went backwards (a new leader's view) counts as 0, not negative.
        let c = st(1, 50, &[(2, Some(10))]);
        let r = Rates::between(&b, &c, Duration::from_secs(1)).unwrap();
        assert_eq!((r.records, r.entries[&2]), (0.0, 0.0));
    }
}
