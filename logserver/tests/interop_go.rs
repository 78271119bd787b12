//! Other people's clients against ProgLog: runs the Go suite in `tests/interop` (the book's
//! generated client and grpcurl, both from their Go modules) against three `logserver`
//! processes on loopback, as `make run-local` starts them. Needs the Go toolchain
//! (`scripts/install-deps.sh`); modules come from the machine's Go module proxy into the module
//! cache (outside the clone), so only the first run downloads.

use std::path::Path;
use std::process::Stdio;

use anyhow::{ensure, Context, Result};
use proglog_testkit::procs::{Cluster, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_clients_produce_and_consume_on_a_local_cluster() -> Result<()> {
    let cluster = Cluster::start(
        3,
        Options {
            bin: Some(env!("CARGO_BIN_EXE_logserver").into()),
            ..Default::default()
        },
    )
    .await?;
    let addrs = cluster.addrs().join(",");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/interop");
    // NB: `-count=1`: the cluster is new on every run, a cached pass proves nothing.
    let out = tokio::process::Command::new("go")
        .args(["test", "-count=1", "-v", "."])
        .current_dir(&dir)
        .env("PROGLOG_ADDRS", &addrs)
        .stdin(Stdio::null())
        .output()
        .await
        .context("running `go test` in tests/interop (is Go installed? scripts/install-deps.sh)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}{stderr}");
    ensure!(
        out.status.success(),
        "the Go interop suite failed against {addrs} ({})",
        out.status
    );
    // Every test ran (none skipped for want of the cluster).
    ensure!(
        !stdout.contains("--- SKIP"),
        "the Go interop suite skipped tests:\n{stdout}"
    );
    Ok(())
}
