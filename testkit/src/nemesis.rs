//! The seeded nemesis and the campaign around it: start three members (in network namespaces
//! when given, else on loopback without partitions), run producers, inject `faults` faults drawn
//! from a seeded RNG one after another (each healed before the next), heal everything, read every
//! member's whole log and check it ([`crate::history::check`]). Figures per fault type: time from
//! the fault to the first acknowledgement, and the longest time without one until writes flowed
//! again after the heal.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use proglog_client::admin::Admin;
use proglog_proto::v1 as pb;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::chaos::{produce, read_log, Fault, Recorder};
use crate::history::{check, MemberLog, Report};
use crate::netns::Net;
use crate::procs::{Cluster, Options, Placement, TOKEN};
use crate::{eventually, DEADLINE};

/// Settings of a campaign.
#[derive(Debug, Clone)]
pub struct Campaign {
    pub seed: u64,
    pub faults: usize,
    pub producers: usize,
    /// How long a fault lasts (down, paused or cut off).
    pub fault_for: Duration,
    /// Extra `logserver` flags.
    pub args: Vec<String>,
    /// The `logserver` binary; default [`crate::procs::logserver_bin`].
    pub bin: Option<std::path::PathBuf>,
    /// Producers use the idempotent producer (a producer id, epoch and sequence on every
    /// attempt); false: raw at-least-once produce, whose retries may duplicate.
    pub idempotent: bool,
}

/// One injected fault and what writes saw.
#[derive(Debug, Clone)]
pub struct FaultFigures {
    pub fault: Fault,
    pub first_ack: Option<Duration>,
    pub longest_gap: Duration,
}

/// A value found at more than one offset, and the faults its unknown attempts ended in.
#[derive(Debug, Clone)]
pub struct Duplicate {
    pub value: String,
    pub offsets: Vec<u64>,
    /// `(fault number from 1, its kind)`; number 0 (`None`): between faults.
    pub faults: Vec<(usize, Option<Fault>)>,
}

/// What a campaign found.
#[derive(Debug)]
pub struct Outcome {
    pub faults: Vec<FaultFigures>,
    pub report: Report,
    /// Every duplicated value, attributed to faults.
    pub duplicates: Vec<Duplicate>,
    /// Retries acknowledged with the original offset (duplicates the producer id prevented).
    pub deduplicated: usize,
    /// Producer refusals that started a new producer epoch.
    pub renewals: usize,
}

impl Outcome {
    /// Per fault type: count, worst time to the first ack, worst and median longest gap.
    pub fn summary(&self) -> String {
        let mut by: BTreeMap<Fault, Vec<&FaultFigures>> = BTreeMap::new();
        for f in &self.faults {
            by.entry(f.fault).or_default().push(f);
        }
        let ms = |d: Duration| d.as_millis();
        let mut out = String::new();
        for (fault, fs) in by {
            let mut gaps: Vec<Duration> = fs.iter().map(|f| f.longest_gap).collect();
            gaps.sort();
            let mut firsts: Vec<Duration> = fs.iter().filter_map(|f| f.first_ack).collect();
            firsts.sort();
            let dups = self
                .duplicates
                .iter()
                .filter(|d| d.faults.iter().any(|(_, f)| *f == Some(fault)))
                .count();
            out += &format!(
                "{fault:?}: {} faults; first ack after p50 {} ms, max {} ms; longest write gap p50 {} ms, max {} ms; {dups} duplicates\n",
                fs.len(),
                ms(crate::percentile(&firsts, 50.0)),
                ms(firsts.last().copied().unwrap_or_default()),
                ms(crate::percentile(&gaps, 50.0)),
                ms(gaps.last().copied().unwrap_or_default()),
            );
        }
        out
    }
}

/// Runs a campaign; `net` places members in namespaces (and enables partitions).
pub async fn run(c: &Campaign, net: Option<&Net>) -> Result<Outcome> {
    let mut opts = Options {
        bin: c.bin.clone(),
        args: c.args.clone(),
        ..Default::default()
    };
    if let Some(net) = net {
        opts.placements = (1..=3)
            .map(|i| Placement {
                prefix: ["ip", "netns", "exec", &net.member_ns(i)]
                    .map(String::from)
                    .to_vec(),
                addr: net.member_addr(i),
            })
            .collect();
    }
    let mut cluster = Cluster::start(3, opts).await?;
    let rec = Arc::new(Recorder::default());
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..c.producers)
        .map(|p| {
            let (addrs, rec, stop) = (cluster.addrs(), rec.clone(), stop.clone());
            tokio::spawn(produce(p, addrs, rec, stop, c.idempotent))
        })
        .collect();

    let mut rng = StdRng::seed_from_u64(c.seed);
    let kinds = Fault::all(net.is_some());
    let mut figures = Vec::new();
    for i in 0..c.faults {
        settle(&cluster, &rec).await?;
        let fault = kinds[rng.random_range(0..kinds.len())];
        let leader = cluster.wait_leader().await?;
        let others: Vec<u64> = (1..=3).filter(|&m| m != leader).collect();
        let follower = others[rng.random_range(0..others.len())];
        let hold = c.fault_for.mul_f64(rng.random_range(0.5..1.5));
        println!(
            "fault {:>3}: {fault:?} (leader {leader}, follower {follower}, {} ms)",
            i + 1,
            hold.as_millis()
        );
        let start = Instant::now();
        rec.fault.store(i + 1, Ordering::Relaxed);
        inject(&mut cluster, net, fault, leader, follower, hold).await?;
        settle(&cluster, &rec).await?;
        // NB: attempts that end while writes recover still count to this fault.
        rec.fault.store(0, Ordering::Relaxed);
        // NB: up to now: settling saw writes flow again after the heal.
        let (first_ack, longest_gap) = rec.window(start, Instant::now());
        figures.push(FaultFigures {
            fault,
            first_ack,
            longest_gap,
        });
    }
    settle(&cluster, &rec).await?;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }

    // Every member holds the leader's whole log, then read them all.
    let leader = cluster.wait_leader().await?;
    let last = cluster.status(leader).await?.last_log_index;
    eventually("every member to apply the whole log", DEADLINE, || async {
        for m in 1..=3 {
            let st = cluster.status(m).await.ok()?;
            (st.applied_index >= last).then_some(())?;
        }
        Some(())
    })
    .await?;
    let mut logs = Vec::new();
    for m in 1..=3 {
        let st = cluster.status(m).await?;
        let addr = cluster.member(m).addr.to_string();
        let records = read_log(&addr, st.first_offset, st.next_offset)
            .await
            .with_context(|| format!("reading member {m}'s log"))?;
        logs.push(MemberLog {
            member: format!("m{m}"),
            records,
        });
    }
    let attempts = rec.attempts.lock().unwrap().clone();
    let report = check(&attempts, &logs);
    let duplicates = report
        .duplicates
        .iter()
        .map(|(value, offsets, _)| Duplicate {
            value: value.clone(),
            offsets: offsets.clone(),
            faults: rec
                .unknown_during(value.as_bytes())
                .into_iter()
                .map(|n| {
                    (
                        n,
                        n.checked_sub(1)
                            .and_then(|i| figures.get(i))
                            .map(|f| f.fault),
                    )
                })
                .collect(),
        })
        .collect();
    Ok(Outcome {
        faults: figures,
        report,
        duplicates,
        deduplicated: rec.deduplicated.load(Ordering::Relaxed),
        renewals: rec.renewals.load(Ordering::Relaxed),
    })
}

/// Waits until every member runs, a leader is agreed on and writes flow again.
async fn settle(cluster: &Cluster, rec: &Recorder) -> Result<()> {
    cluster.wait_leader().await?;
    let before = rec.acked();
    eventually("writes to flow", DEADLINE, || async {
        (rec.acked() >= before + 5).then_some(())
    })
    .await
}

async fn inject(
    cluster: &mut Cluster,
    net: Option<&Net>,
    fault: Fault,
    leader: u64,
    follower: u64,
    hold: Duration,
) -> Result<()> {
    // NB: `hold` is the fault's duration, drawn by the nemesis; not a wait for an outcome.
    match fault {
        Fault::KillLeader | Fault::KillFollower => {
            let id = if fault == Fault::KillLeader {
                leader
            } else {
                follower
            };
            cluster.kill(id)?;
            tokio::time::sleep(hold).await;
            cluster.restart(id).await?;
        }
        Fault::PauseLeader | Fault::PauseFollower => {
            let id = if fault == Fault::PauseLeader {
                leader
            } else {
                follower
            };
            cluster.pause(id)?;
            tokio::time::sleep(hold).await;
            cluster.resume(id)?;
        }
        Fault::PartitionLeader | Fault::PartitionFollower => {
            let net = net.context("partitions need network namespaces")?;
            let id = if fault == Fault::PartitionLeader {
                leader
            } else {
                follower
            };
            net.isolate(id)?;
            tokio::time::sleep(hold).await;
            net.heal(id)?;
        }
        Fault::KillMajority => {
            cluster.kill(leader)?;
            cluster.kill(follower)?;
            tokio::time::sleep(hold).await;
            cluster.restart(leader).await?;
            cluster.restart(follower).await?;
        }
        Fault::RollingRestart => {
            let mut order: Vec<u64> = (1..=3).filter(|&m| m != leader).collect();
            order.push(leader);
            for id in order {
                cluster.stop(id).await?;
                cluster.restart(id).await?;
                cluster.wait_leader().await?;
            }
        }
        Fault::MembershipChange => {
            let removed = change_membership(cluster, follower, false).await?;
            tokio::time::sleep(hold).await;
            change_membership(cluster, removed, true).await?;
        }
    }
    Ok(())
}

/// Removes voter `id` (`add` false; another follower if `id` leads by then) or adds it back as
/// a voter (`add` true) through whichever member leads; retried while leadership moves (the
/// other faults just healed), until the leader's status shows it done. Returns the member.
async fn change_membership(cluster: &Cluster, mut id: u64, add: bool) -> Result<u64> {
    let end = Instant::now() + DEADLINE;
    loop {
        let leader = cluster.wait_leader().await?;
        if !add && id == leader {
            id = (1..=3).find(|&m| m != leader).context("no follower")?;
        }
        let admin = Admin::new(cluster.member(leader).addr.to_string(), TOKEN)?;
        let res = if add {
            let member = pb::Member {
                node_id: id,
                addr: cluster.member(id).addr.to_string(),
                name: format!("m{id}"),
            };
            admin.add(member, true, |_| {}).await.map(drop)
        } else {
            admin.remove(id).await.map(drop)
        };
        let Err(e) = res else { return Ok(id) };
        // NB: a call that timed out may have done it anyway.
        if let Ok(st) = cluster.status(leader).await {
            let voter = st.members.iter().any(|m| m.node_id == id && m.voter);
            if st.role == pb::Role::Leader as i32 && voter == add {
                return Ok(id);
            }
        }
        if Instant::now() > end {
            return Err(e).context(if add {
                "adding a member"
            } else {
                "removing a member"
            });
        }
        tracing::warn!("membership change through member {leader} failed, retrying: {e}");
        // Retry pacing while leadership moves.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
