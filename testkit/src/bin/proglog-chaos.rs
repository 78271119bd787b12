//! The fault campaign (see `proglog_testkit::nemesis`): `proglog-chaos --seed 7 --faults 30`.
//! As root with `ip` and `iptables`, it creates network namespaces for the members and the
//! clients, re-runs itself inside the clients' namespace, and removes them at the end; elsewhere
//! (or with `--loopback`) it runs on 127.0.0.1 without partition faults. Exits 1 when the history
//! check finds a violation.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use proglog_testkit::nemesis::{self, Campaign};
use proglog_testkit::netns::Net;

#[derive(Parser, Debug)]
#[command(about = "Seeded fault campaign with a history check")]
struct Args {
    /// RNG seed of the nemesis.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Faults to inject, one after another.
    #[arg(long, default_value_t = 30)]
    faults: usize,
    /// Concurrent producers.
    #[arg(long, default_value_t = 3)]
    producers: usize,
    /// Typical duration of one fault, in milliseconds (each draws 0.5-1.5x).
    #[arg(long, default_value_t = 1500)]
    fault_ms: u64,
    /// Producers send no producer id (raw at-least-once produce: retries may duplicate);
    /// default: the idempotent producer.
    #[arg(long)]
    at_least_once: bool,
    /// Run on loopback, without network namespaces (no partition faults).
    #[arg(long)]
    loopback: bool,
    /// Extra logserver flag (repeat).
    #[arg(long = "arg")]
    args: Vec<String>,
    /// Internal: run inside the namespaces `<prefix>*` of net 10.77.<net>.0/24.
    #[arg(long, hide = true)]
    inner: Option<String>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    if args.inner.is_none() && !args.loopback && Net::available() {
        let id = (std::process::id() % 200 + 20) as u8;
        let prefix = format!("plg{id}");
        let net = Net::create(&prefix, id, 3).context("creating network namespaces")?;
        let exe = std::env::current_exe()?;
        let st = Command::new("ip")
            .args(["netns", "exec", &net.client_ns()])
            .arg(exe)
            .args(std::env::args_os().skip(1))
            .args(["--inner", &format!("{prefix}:{id}")])
            .status()?;
        drop(net);
        std::process::exit(st.code().unwrap_or(1));
    }
    let net = match &args.inner {
        Some(s) => {
            let (prefix, id) = s.split_once(':').context("bad --inner")?;
            Some(Net::attach(prefix, id.parse()?, 3))
        }
        None => None,
    };
    let campaign = Campaign {
        seed: args.seed,
        faults: args.faults,
        producers: args.producers,
        fault_for: Duration::from_millis(args.fault_ms),
        args: args.args.clone(),
        bin: None,
        idempotent: !args.at_least_once,
    };
    let rt = tokio::runtime::Runtime::new()?;
    let out = rt.block_on(nemesis::run(&campaign, net.as_ref()))?;
    let r = &out.report;
    println!(
        "seed {}: {} faults ({}; {}), load {}",
        args.seed,
        out.faults.len(),
        if args.at_least_once {
            "at-least-once producers, no producer id"
        } else {
            "idempotent producers"
        },
        if net.is_some() {
            "network namespaces"
        } else {
            "loopback, no partitions"
        },
        proglog_testkit::load_average()
    );
    print!("{}", out.summary());
    println!(
        "history: {} attempts: {} acknowledged, {} refused (not committed), {} unknown ({} of them committed); {} records; {} duplicated values",
        r.attempts, r.acked, r.failed, r.unknown, r.unknown_committed, r.records, r.duplicates.len()
    );
    println!(
        "producer ids: {} retries answered with the original offset (deduplicated), {} new epochs after a refusal",
        out.deduplicated, out.renewals
    );
    for ((v, offs, unknown), d) in r.duplicates.iter().zip(&out.duplicates) {
        let during: Vec<String> = d
            .faults
            .iter()
            .map(|(n, f)| match f {
                Some(f) => format!("fault {n} {f:?}"),
                None => "between faults".into(),
            })
            .collect();
        println!(
            "  duplicate {v} at {offs:?}: {unknown} attempts of unknown outcome, during {}",
            during.join(", ")
        );
    }
    if r.ok() {
        println!("check: OK");
        Ok(())
    } else {
        for v in &r.violations {
            println!("VIOLATION {v:?}");
        }
        std::process::exit(1);
    }
}
