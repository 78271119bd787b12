//! `logserver`: one ProgLog member. Flags (all with `PROGLOG_*` env equivalents): see `--help`.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    logserver::init_tracing();
    logserver::run(logserver::config::Args::parse()).await
}
