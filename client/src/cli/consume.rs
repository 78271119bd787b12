//! `proglog consume`: one ConsumeStream from a follower, to the end of the log (or following the
//! tail with --follow), printed through a buffered stdout that is flushed whenever the stream
//! has nothing ready (so a follower on a terminal sees each record as it comes).

use std::io::{BufWriter, ErrorKind, Write};

use anyhow::Result;
use futures::{FutureExt, StreamExt};

use super::output::Format;
use super::Args;

/// Writes one record: `offset<TAB>value` (the value as text), or one JSON object per line.
fn write_record(out: &mut impl Write, format: Format, r: &crate::Record) -> std::io::Result<()> {
    match format {
        Format::Json => {
            serde_json::to_writer(&mut *out, r)?;
            out.write_all(b"\n")
        }
        Format::Table => {
            write!(out, "{}\t", r.offset)?;
            match std::str::from_utf8(&r.value) {
                Ok(s) => out.write_all(s.as_bytes())?,
                Err(_) => out.write_all(String::from_utf8_lossy(&r.value).as_bytes())?,
            }
            out.write_all(b"\n")
        }
    }
}

pub(super) async fn consume(
    args: &Args,
    from: u64,
    follow: bool,
    count: Option<u64>,
) -> Result<()> {
    let client = args.client().await?;
    let limit = count.unwrap_or(u64::MAX);
    let mut stream = if follow {
        client.consume_stream(from).boxed()
    } else {
        client
            .consume_to_end(from, count.map(|c| from.saturating_add(c)))
            .boxed()
    };
    let mut out = BufWriter::with_capacity(64 << 10, std::io::stdout().lock());
    let mut seen = 0u64;
    let written = async {
        while seen < limit {
            let next = match stream.next().now_or_never() {
                Some(r) => r,
                None => {
                    out.flush()?;
                    tokio::select! {
                        r = stream.next() => r,
                        _ = tokio::signal::ctrl_c() => break,
                    }
                }
            };
            let Some(r) = next else { break };
            write_record(&mut out, args.output, &r?)?;
            seen += 1;
        }
        out.flush()?;
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = written {
        // A reader that went away (`proglog consume | head`) is not an error.
        let broken_pipe = e
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == ErrorKind::BrokenPipe);
        return if broken_pipe { Ok(()) } else { Err(e) };
    }
    if seen == 0 && !follow && args.output == Format::Table {
        eprintln!("no records at offset {from} yet (the log ends there; --follow waits for them)");
    }
    Ok(())
}
