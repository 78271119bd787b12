//! Members as separate `logserver` processes (for SIGKILL, SIGTERM and restarts): the test kit's
//! process cluster ([`proglog_testkit::procs::Cluster`]) running this crate's binary with the
//! timings of the in-process clusters.

use proglog_testkit::procs::Options;

/// This crate's `logserver`, heartbeat 100 ms, election timeout 800 ms.
pub fn options() -> Options {
    Options {
        // NB: the binary built with these tests; testkit would otherwise build one apart.
        bin: Some(env!("CARGO_BIN_EXE_logserver").into()),
        args: ["--heartbeat-ms", "100", "--election-timeout-ms", "800"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    }
}
