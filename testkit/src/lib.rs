//! ProgLog's test kit, shared by the tests of every crate and by the fault tools: waiting on a
//! condition with a deadline ([`eventually`], [`wait_for`]), clusters of real `logserver`
//! processes on loopback or in network namespaces ([`procs`], [`netns`]), the history checker
//! ([`history`]) and a throw-away PKI for TLS tests ([`pki`]).
//! Binaries: `proglog-failover` (leader SIGKILL -> first acknowledged produce, distribution) and
//! `proglog-chaos` (the seeded fault campaign).
//!
//! Nothing here is used by the product: only tests and tools depend on this crate.

pub mod chaos;
pub mod history;
pub mod nemesis;
pub mod netns;
pub mod pki;
pub mod procs;

use std::future::Future;
use std::time::Duration;

use anyhow::{bail, Result};

/// The usual deadline of a wait in tests.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `f` every 20 ms until it returns `Some`, failing after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll(what, deadline, Duration::from_millis(20), || {
        let fut = f();
        async move { Ok(fut.await) }
    })
    .await
}

/// Polls the fallible `check` every 250 ms (for state that changes slowly, such as Kubernetes
/// objects) until it returns `Ok(Some)`; fails after `timeout` with `what` and the last error.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    poll(what, timeout, Duration::from_millis(250), check).await
}

async fn poll<T, F, Fut>(what: &str, deadline: Duration, every: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let end = tokio::time::Instant::now() + deadline;
    let mut last = None;
    loop {
        match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = Some(format!("{e:#}")),
        }
        if tokio::time::Instant::now() > end {
            match last {
                Some(e) => {
                    bail!("timed out after {deadline:?} waiting for {what} (last error: {e})")
                }
                None => bail!("timed out after {deadline:?} waiting for {what}"),
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// Percentile `p` (0..=100) of sorted `xs` (nearest rank).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `uptime`'s load averages, for figures measured on a shared machine.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}
