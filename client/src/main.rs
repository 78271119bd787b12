//! `proglog`: the ProgLog command line (see `proglog --help`).

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = proglog_client::cli::Args::parse();
    proglog_client::cli::run(args).await
}
