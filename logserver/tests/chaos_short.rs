//! A short seeded fault campaign on loopback (`make chaos` runs long ones, with partitions in
//! network namespaces): a few kills, pauses, restarts and a membership change under concurrent
//! idempotent producers, then the history check over every member's whole log and no duplicate.

use std::time::Duration;

use anyhow::Result;
use proglog_testkit::nemesis::{self, Campaign};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_short_seeded_campaign_keeps_every_guarantee() -> Result<()> {
    let campaign = Campaign {
        seed: 7,
        faults: 5,
        producers: 3,
        fault_for: Duration::from_millis(600),
        args: Vec::new(),
        bin: Some(env!("CARGO_BIN_EXE_logserver").into()),
        idempotent: true,
    };
    let out = nemesis::run(&campaign, None).await?;
    print!("{}", out.summary());
    let r = &out.report;
    println!(
        "{} attempts, {} acknowledged, {} refused, {} unknown, {} records, {} duplicated values",
        r.attempts,
        r.acked,
        r.failed,
        r.unknown,
        r.records,
        r.duplicates.len()
    );
    assert!(r.ok(), "violations: {:#?}", r.violations);
    assert!(r.acked > 0 && r.records >= r.acked);
    // The producers are idempotent: a retry of a committed value is answered with its offset.
    assert!(
        out.duplicates.is_empty(),
        "duplicates with producer ids: {:#?}",
        out.duplicates
    );
    Ok(())
}
