//! The `proglog` binary as a user runs it against a three-member loopback cluster: form it with
//! `admin init`, produce from arguments and from stdin, consume, list servers, show the status,
//! move leadership, and get errors that say what to do.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use anyhow::{ensure, Result};
use common::*;

fn proglog(cluster: &Cluster, args: &[&str], stdin: Option<&str>) -> Result<Output> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_proglog"));
    cmd.arg("--addr")
        .arg(cluster.addrs().join(","))
        .args(args)
        .env_remove("PROGLOG_ADMIN_TOKEN")
        .env_remove("PROGLOG_ADMIN_TOKEN_FILE")
        .env_remove("KUBECONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes())?;
    }
    drop(input);
    Ok(child.wait_with_output()?)
}

fn ok(out: &Output) -> Result<String> {
    ensure!(
        out.status.success(),
        "proglog failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn failed(out: &Output) -> Result<String> {
    ensure!(!out.status.success(), "proglog succeeded unexpectedly");
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_forms_produces_consumes_and_administers() -> Result<()> {
    let cluster = Cluster::spawn(3)?;
    cluster.wait_listening().await?;
    let token = cluster.token_file.to_str().unwrap().to_string();
    let a = cluster.addrs();

    // Without the token, admin commands say how to pass it.
    let e = failed(&proglog(&cluster, &["admin", "init"], None)?)?;
    assert!(e.contains("--admin-token-file"), "{e}");

    let (m1, m2, m3) = (
        format!("1={}", a[0]),
        format!("2={}", a[1]),
        format!("3={}", a[2]),
    );
    let init = [
        "--admin-token-file",
        &token,
        "admin",
        "init",
        "--member",
        &m1,
        "--member",
        &m2,
        "--member",
        &m3,
    ];
    assert_eq!(ok(&proglog(&cluster, &init, None)?)?.trim(), "initialized");
    let again = ok(&proglog(&cluster, &init, None)?)?;
    assert!(again.contains("already initialized"), "{again}");
    cluster.wait_leader().await?;

    let out = ok(&proglog(&cluster, &["produce", "hello", "world"], None)?)?;
    assert_eq!(out, "OFFSET  VALUE\n0       hello\n1       world\n");

    let lines: String = (0..1000).map(|i| format!("line {i}\n")).collect();
    let out = ok(&proglog(
        &cluster,
        &["produce", "--batch", "64"],
        Some(&lines),
    )?)?;
    assert_eq!(out.trim(), "produced 1000 records at offsets 2..=1001");

    let out = ok(&proglog(&cluster, &["consume", "--from", "0"], None)?)?;
    let got: Vec<&str> = out.lines().collect();
    assert_eq!(got.len(), 1002);
    assert_eq!(got[0], "0\thello");
    assert_eq!(got[1001], "1001\tline 999");

    let out = ok(&proglog(
        &cluster,
        &["-o", "json", "consume", "--from", "1", "--count", "2"],
        None,
    )?)?;
    let recs: Vec<serde_json::Value> = out
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0]["offset"], 1);
    assert_eq!(recs[0]["value"], "world");
    assert_eq!(recs[1]["value"], "line 0");

    let out = ok(&proglog(
        &cluster,
        &[
            "-o", "json", "consume", "--from", "1000", "--follow", "--count", "2",
        ],
        None,
    )?)?;
    assert_eq!(out.lines().count(), 2, "{out}");

    // Past the end: the error names the readable range and says what to do.
    let e = failed(&proglog(&cluster, &["consume", "--from", "5000"], None)?)?;
    assert!(e.contains("[0, 1002)") && e.contains("hint:"), "{e}");

    let out = ok(&proglog(&cluster, &["-o", "json", "servers"], None)?)?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let servers = v["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 3);
    let leaders: Vec<&serde_json::Value> =
        servers.iter().filter(|s| s["is_leader"] == true).collect();
    assert_eq!(leaders.len(), 1);
    let leader_id = leaders[0]["node_id"].as_u64().unwrap();
    let out = ok(&proglog(&cluster, &["servers"], None)?)?;
    assert!(out.starts_with("ID  NODE  ADDRESS"), "{out}");
    assert_eq!(
        out.lines().filter(|l| l.contains("leader")).count(),
        1,
        "{out}"
    );

    let out = ok(&proglog(
        &cluster,
        &["--admin-token-file", &token, "status"],
        None,
    )?)?;
    assert!(out.contains("offsets [0, 1002)"), "{out}");
    assert_eq!(out.lines().count(), 5, "{out}");

    // Move leadership to another member and see the CLI follow it.
    let target = if leader_id == 1 { 2 } else { 1 };
    let t = target.to_string();
    let out = ok(&proglog(
        &cluster,
        &["--admin-token-file", &token, "admin", "transfer", &t],
        None,
    )?)?;
    assert_eq!(out.trim(), format!("member {target} leads"));
    let out = ok(&proglog(
        &cluster,
        &["-o", "json", "produce", "after"],
        None,
    )?)?;
    assert!(out.contains("1002"), "{out}");
    // The opt-out of the idempotent producer still produces (at least once).
    let out = ok(&proglog(
        &cluster,
        &["--at-least-once", "produce", "plain"],
        None,
    )?)?;
    assert!(out.contains("1003"), "{out}");

    // Nothing listening: the error says what to do.
    let out = Command::new(env!("CARGO_BIN_EXE_proglog"))
        .args(["--addr", "127.0.0.1:1", "--timeout-secs", "2", "servers"])
        .output()?;
    let e = failed(&out)?;
    assert!(e.contains("make run"), "{e}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_each_members_lag_and_the_rates_under_a_producer() -> Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let cluster = Cluster::start(3).await?;
    let token = cluster.token_file.to_str().unwrap().to_string();
    // A producer fed from stdin for as long as the status takes its two samples.
    let mut producer = Command::new(env!("CARGO_BIN_EXE_proglog"))
        .arg("--addr")
        .arg(cluster.addrs().join(","))
        .args(["produce", "--batch", "8"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let mut input = producer.stdin.take().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) && writeln!(input, "rate {i}").is_ok() {
                i += 1;
            }
        })
    };
    let out = proglog(
        &cluster,
        &["--admin-token-file", &token, "status", "--rate-secs", "1"],
        None,
    );
    stop.store(true, Ordering::Relaxed);
    // NB: killed, not drained: the pipe holds thousands of lines still to produce.
    producer.kill()?;
    producer.wait()?;
    writer.join().unwrap();
    let out = ok(&out?)?;

    let first = out.lines().next().unwrap_or_default();
    let records: f64 = first
        .rsplit_once("; ")
        .and_then(|(_, r)| r.strip_suffix(" records/s"))
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no records/s in {first:?}"));
    assert!(records > 0.0, "{out}");
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0][6..], ["LAG", "ENTRIES/S"], "{out}");
    assert_eq!(rows.len(), 4, "{out}");
    for r in &rows[1..] {
        let lag: u64 = r[6].parse().unwrap_or_else(|_| panic!("lag in {r:?}"));
        let rate: f64 = r[7].parse().unwrap_or_else(|_| panic!("rate in {r:?}"));
        assert!(lag < 100_000 && rate > 0.0, "{out}");
    }
    Ok(())
}
