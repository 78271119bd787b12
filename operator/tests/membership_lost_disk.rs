//! A voter that lost its disk (restarted fresh while the leader still counts it as a voter) is
//! removed from the membership, re-added as a learner, and votes again only once it holds the
//! whole log. Real members on loopback, `membership::reconcile_with` driven pass after pass.

mod membership_common;

use std::time::Duration;

use anyhow::{ensure, Result};
use membership_common::{init_tracing, Sim};
use proglog_operator::names;
use proglog_operator::step::{Outcome, RemoveReason, Step, StepKind, Taken};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_that_lost_its_disk_rejoins_through_learner() -> Result<()> {
    init_tracing();
    let mut sim = Sim::new()?;
    sim.drive(3, Duration::from_secs(90)).await?;

    let seeds: Vec<String> = (0..3).map(|o| sim.addr(o).to_string()).collect();
    let client = proglog_client::Client::connect(seeds).await?;
    client.wait_for_leader(Duration::from_secs(10)).await?;
    let mut acked = Vec::new();
    for i in 0..50u32 {
        let v = format!("before-{i}").into_bytes();
        acked.push((client.produce(v.clone()).await?, v));
    }

    // A follower loses its disk. It comes back empty and, for now, cut off from its peers (so
    // the leader cannot quietly refill it before the operator looks).
    let (leader, _, _) = sim.membership().await?;
    let lost = (0..3).find(|&o| o != leader).unwrap();
    sim.stop_and_wipe(lost).await?;
    for o in (0..3).filter(|&o| o != lost) {
        sim.filter.cut(names::node_id(lost), names::node_id(o));
    }
    sim.start(lost).await?;
    let s = sim.status(lost).await?;
    ensure!(
        s.members.is_empty(),
        "the wiped member answers as fresh: {s:?}"
    );

    // One pass: it is removed, not trusted as a voter.
    sim.steps.clear();
    let r = sim.pass(3).await?;
    ensure!(
        matches!(
            &r.step,
            Some(Taken {
                step: Step::Remove {
                    ordinal,
                    reason: RemoveReason::LostData,
                    ..
                },
                outcome: Outcome::Removed,
                ..
            }) if *ordinal == lost
        ),
        "expected removal of the wiped member, got {r:#?}"
    );
    let (_, voters, _) = sim.membership().await?;
    ensure!(
        !voters.contains(&lost) && voters.len() == 2,
        "voters {voters:?}"
    );

    // Writes still commit on the two remaining voters.
    for i in 0..20u32 {
        let v = format!("during-{i}").into_bytes();
        acked.push((client.produce(v.clone()).await?, v));
    }

    // The link comes back: it is re-added as a learner, catches up, then is promoted.
    sim.filter.heal();
    let r = sim.drive(3, Duration::from_secs(90)).await?;
    let steps = sim.step_messages();
    eprintln!("steps: {steps:#?}");
    let removed = sim.position(StepKind::Remove, lost).expect("removed");
    let learner = (sim.position(StepKind::AddLearner, lost)).expect("re-added as a learner");
    let promoted = sim.position(StepKind::Promote, lost).expect("promoted");
    ensure!(removed < learner && learner < promoted, "{steps:?}");
    ensure!(r.settled);
    let (_, voters, learners) = sim.membership().await?;
    ensure!(voters == [0, 1, 2] && learners.is_empty());

    // It holds every acknowledged record.
    let last = acked.iter().map(|(o, _)| *o).max().unwrap();
    let sm = sim.nodes[&lost].records().clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while sm.range().1 <= last {
        ensure!(
            std::time::Instant::now() < deadline,
            "the rejoined member did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut log =
        proglog_proto::v1::log_client::LogClient::connect(format!("http://{}", sim.addr(lost)))
            .await?;
    for (off, v) in &acked {
        let rec = log
            .consume(proglog_proto::v1::ConsumeRequest {
                offset: *off,
                ..Default::default()
            })
            .await?
            .into_inner()
            .record
            .unwrap_or_default();
        ensure!(
            rec.value[..] == v[..],
            "record {off} on the rejoined member differs"
        );
    }
    sim.shutdown().await
}
