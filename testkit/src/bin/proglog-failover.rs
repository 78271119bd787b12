//! Failover benchmark: a three-member cluster of `logserver` processes under steady produce
//! through the client (default settings: bootstrap resolver, retries); the leader is SIGKILLed,
//! and the time from the kill to the first produce acknowledged by the new leader is recorded;
//! the killed member is restarted and caught up before the next kill. Prints every sample and
//! the distribution, with the load average.
//!
//! `cargo run --release -p proglog-testkit --bin proglog-failover -- --kills 50`
//! (`PROGLOG_LOGSERVER=path` runs another `logserver` binary, e.g. an older build.)

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use proglog_client::Client;
use proglog_proto::v1 as pb;
use proglog_proto::v1::log_client::LogClient;
use proglog_testkit::procs::{Cluster, Options};
use proglog_testkit::{eventually, load_average, percentile, DEADLINE};
use tonic::transport::Endpoint;

#[derive(Parser, Debug)]
#[command(about = "Leader SIGKILL -> first acknowledged produce, over many kills")]
struct Args {
    /// Leader kills.
    #[arg(long, default_value_t = 50)]
    kills: usize,
    /// Concurrent producers.
    #[arg(long, default_value_t = 4)]
    producers: usize,
    /// Extra logserver flag (repeat), e.g. `--arg=--election-timeout-ms=500`.
    #[arg(long = "arg")]
    args: Vec<String>,
    /// Members log to this process's stderr, at `RUST_LOG` (e.g.
    /// `RUST_LOG=warn,logserver::raft::election=debug` shows every campaign and pre-vote).
    #[arg(long)]
    show_logs: bool,
}

/// Acknowledgements: (when, offset).
type Acks = Arc<Mutex<Vec<(Instant, u64)>>>;

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let opts = Options {
        args: args.args.clone(),
        show_logs: args.show_logs,
        ..Default::default()
    };
    let mut cluster = Cluster::start(3, opts).await?;
    let client = Client::connect(cluster.addrs()).await?;
    client.wait_for_leader(DEADLINE).await?;

    let acks: Acks = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for p in 0..args.producers {
        let (client, acks, stop) = (client.clone(), acks.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let v = format!("p{p}-{i}");
                match client.produce(v).await {
                    Ok(off) => acks.lock().unwrap().push((Instant::now(), off)),
                    Err(e) => eprintln!("producer {p}: a produce failed after retries: {e}"),
                }
                i += 1;
            }
        }));
    }

    let (mut samples, mut elections, mut learnt) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..args.kills {
        let leader = cluster.wait_leader().await?;
        let term = cluster.status(leader).await?.term;
        let before = acks.lock().unwrap().len();
        eventually("produce to flow", DEADLINE, || {
            let n = acks.lock().unwrap().len();
            async move { (n >= before + 20).then_some(()) }
        })
        .await?;
        let survivors: Vec<String> = (1..=3)
            .filter(|&m| m != leader)
            .map(|m| cluster.member(m).addr.to_string())
            .collect();
        let killed_at = Instant::now();
        cluster.kill(leader)?;
        let elected = tokio::spawn(elected(survivors, killed_at));
        // The first ack after the kill whose record is of a later term: the new leader's.
        let mut checked = 0;
        let first = eventually("an ack by the new leader", DEADLINE, || {
            let later: Vec<(Instant, u64)> = acks
                .lock()
                .unwrap()
                .iter()
                .filter(|(t, _)| *t > killed_at)
                .copied()
                .collect();
            let client = client.clone();
            let from = checked;
            checked = later.len();
            async move {
                for (t, off) in later.into_iter().skip(from) {
                    let r = client.consume(off).await.ok()?;
                    if r.term > term {
                        return Some(t);
                    }
                }
                None
            }
        })
        .await?;
        let took = first - killed_at;
        let elected = elected.await??;
        println!(
            "kill {:>3}: member {leader} (term {term}) -> a new leader after {:>4} ms, first ack by it after {:>4} ms  (load {})",
            k + 1,
            elected.as_millis(),
            took.as_millis(),
            load_average()
        );
        samples.push(took);
        elections.push(elected);
        learnt.push(took.saturating_sub(elected));
        cluster.restart(leader).await?;
        wait_caught_up(&cluster, leader).await?;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(15), t).await;
    }

    samples.sort();
    elections.sort();
    learnt.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "of which: kill -> a survivor leads p50 {:.0} ms, p99 {:.0} ms; it leads -> first ack by it p50 {:.0} ms, p99 {:.0} ms",
        ms(percentile(&elections, 50.0)),
        ms(percentile(&elections, 99.0)),
        ms(percentile(&learnt, 50.0)),
        ms(percentile(&learnt, 99.0)),
    );
    println!(
        "failover over {} kills: p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms, min {:.0} ms (load {})",
        samples.len(),
        ms(percentile(&samples, 50.0)),
        ms(percentile(&samples, 90.0)),
        ms(percentile(&samples, 99.0)),
        ms(*samples.last().context("no samples")?),
        ms(samples[0]),
        load_average()
    );
    let stats = client.stats();
    let retried: u64 = stats.iter().map(|s| s.errors).sum();
    println!("{retried} produce attempts failed and were retried by the client");
    Ok(())
}

/// Asks `survivors` every 5 ms whether they lead (`GetServers`); returns the time from `since`
/// until one does.
async fn elected(survivors: Vec<String>, since: Instant) -> Result<Duration> {
    let mut clients = Vec::new();
    for a in &survivors {
        let ch = Endpoint::from_shared(format!("http://{a}"))?.connect_lazy();
        clients.push((a.clone(), LogClient::new(ch)));
    }
    loop {
        for (a, c) in &mut clients {
            let Ok(r) = c.get_servers(pb::GetServersRequest {}).await else {
                continue;
            };
            let now = Instant::now();
            if r.into_inner()
                .servers
                .iter()
                .any(|s| s.is_leader && s.rpc_addr == *a)
            {
                return Ok(now - since);
            }
        }
        anyhow::ensure!(
            since.elapsed() < DEADLINE,
            "no survivor leads after {DEADLINE:?}"
        );
        // NB: finer than `eventually`'s 20 ms: the time is the figure.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until member `id` has applied what the leader held when it restarted.
async fn wait_caught_up(cluster: &Cluster, id: u64) -> Result<()> {
    let leader = cluster.wait_leader().await?;
    let last = cluster.status(leader).await?.last_log_index;
    eventually("the restarted member to catch up", DEADLINE, || async {
        let st = cluster.status(id).await.ok()?;
        (st.applied_index >= last).then_some(())
    })
    .await
}
