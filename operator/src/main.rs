//! `proglog-operator`: runs the ProgLog controller (see `proglog_operator::app`).

use clap::Parser;
use proglog_operator::app::{self, Args};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    app::init_tracing(args.log_format);
    app::run(args).await
}
