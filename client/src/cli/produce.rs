//! `proglog produce`: the arguments as records, or one record per line of standard input in
//! ProduceBatch calls, with a progress bar on a terminal.

use std::io::{BufRead, IsTerminal};

use anyhow::{Context, Result};

use super::output::{print_json, Format, Table};
use super::Args;

pub(super) async fn produce(args: &Args, values: &[String], batch: usize) -> Result<()> {
    let client = args.client().await?;
    if !values.is_empty() {
        let mut offsets = Vec::new();
        for v in values {
            offsets.push(client.produce(v.clone().into_bytes()).await?);
        }
        match args.output {
            Format::Json => print_json(&serde_json::json!({ "offsets": offsets })),
            Format::Table => {
                let mut t = Table::new(&["OFFSET", "VALUE"]);
                for (o, v) in offsets.iter().zip(values) {
                    t.row(vec![o.to_string(), v.clone()]);
                }
                t.print();
            }
        }
        return Ok(());
    }
    if std::io::stdin().is_terminal() {
        eprintln!("reading records from standard input, one per line (Ctrl-D ends)");
    }
    let bar = progress_bar();
    let stdin = std::io::stdin().lock();
    let (mut first, mut last, mut count) = (None, None, 0u64);
    let mut pending: Vec<bytes::Bytes> = Vec::with_capacity(batch.max(1));
    let mut pending_bytes = 0u64;
    let mut lines = stdin.lines();
    loop {
        let line = lines.next().transpose().context("reading standard input")?;
        if let Some(l) = &line {
            pending_bytes += l.len() as u64 + 1;
            pending.push(l.clone().into_bytes().into());
        }
        if pending.len() >= batch.max(1) || (line.is_none() && !pending.is_empty()) {
            let n = pending.len() as u64;
            let offs = client.produce_batch(std::mem::take(&mut pending)).await?;
            first = first.or(offs.first().copied());
            last = offs.last().copied().or(last);
            count += n;
            bar.inc(pending_bytes);
            bar.set_message(format!("{count} records"));
            pending_bytes = 0;
        }
        if line.is_none() {
            break;
        }
    }
    bar.finish_and_clear();
    match args.output {
        Format::Json => print_json(
            &serde_json::json!({"records": count, "first_offset": first, "last_offset": last}),
        ),
        Format::Table => match (first, last) {
            (Some(f), Some(l)) => println!("produced {count} records at offsets {f}..={l}"),
            _ => println!("no records on standard input"),
        },
    }
    Ok(())
}

/// A byte progress bar when stdin is a file of known size, else a spinner; hidden when stderr is
/// not a terminal.
fn progress_bar() -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    let size = std::fs::metadata("/dev/stdin")
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len());
    let bar = match size {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg} ({eta} left)")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {bytes} {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar
}
