//! Three `logserver` processes; a follower is paused (SIGSTOP) for several seconds while the
//! leader takes writes, then resumed (SIGCONT). Every call the leader made to it in the meantime
//! timed out and was reset; the follower reads them all at once when it resumes. Replication to
//! it must resume by itself over the peer connections (no RESOURCE_EXHAUSTED, no stream-limit
//! GOAWAY), and the leader keeps its term (the returning member forces no election).

use std::time::Duration;

use anyhow::Result;
use proglog_client::Client;
use proglog_testkit::procs::{Cluster, Options};
use proglog_testkit::{eventually, DEADLINE};

/// How long the follower stays paused: long enough for the leader to reset well over h2's
/// default limit of 20 pending streams (one AppendEntries per timeout + back-off, ~300 ms).
const PAUSE: Duration = Duration::from_secs(8);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_follower_catches_up_over_the_same_peer_connections() -> Result<()> {
    let opts = Options {
        bin: Some(env!("CARGO_BIN_EXE_logserver").into()),
        log_files: true,
        ..Default::default()
    };
    let mut cluster = Cluster::start(3, opts).await?;
    let leader = cluster.wait_leader().await?;
    let term = cluster.status(leader).await?.term;
    let follower = (1..=3).find(|&m| m != leader).unwrap();
    let client = Client::connect(cluster.addrs()).await?;
    client.produce("before").await?;

    cluster.pause(follower)?;
    let paused_at = tokio::time::Instant::now();
    let mut last = 0;
    // NB: the pause is the fault being tested; writes keep flowing through it.
    while paused_at.elapsed() < PAUSE {
        last = client.produce(format!("during-{last}")).await?;
    }
    cluster.resume(follower)?;

    // The follower catches up with everything written during the pause, and more.
    let after = client.produce("after").await?;
    assert!(after > last);
    eventually("the resumed follower to catch up", DEADLINE, || async {
        let st = cluster.status(follower).await.ok()?;
        (st.applied_index? >= cluster.status(leader).await.ok()?.applied_index?).then_some(())
    })
    .await?;
    let st = cluster.status(leader).await?;
    assert_eq!(st.term, term, "the resumed follower forced an election");
    assert_eq!(st.leader_id, Some(leader));

    // h2 logs a stream-limit GOAWAY on the side that sends it (the resumed follower); the
    // other side sees RESOURCE_EXHAUSTED or a GOAWAY.
    for m in 1..=3 {
        let log = cluster.log_of(m);
        for bad in [
            "RESOURCE_EXHAUSTED",
            "ResourceExhausted",
            "reached limit",
            "GOAWAY",
            "ENHANCE_YOUR_CALM",
        ] {
            let hits: Vec<&str> = log.lines().filter(|l| l.contains(bad)).take(3).collect();
            assert!(
                hits.is_empty(),
                "member {m}: a peer connection broke ({bad}):\n{}",
                hits.join("\n")
            );
        }
    }
    Ok(())
}
