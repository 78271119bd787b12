//! `proglog-bench`: load for a running cluster. N clients produce fixed-size values (one record
//! per Produce, or `--batch` records per ProduceBatch) for a duration or a count, following the
//! leader across elections; then readers stream everything back from the followers. Reports
//! records/s, MB/s and latency percentiles (text or `--json`); `--verify` checks that every
//! acknowledged record reads back at its offset with its value. `--idempotent` makes each client
//! an idempotent producer (InitProducer, then sequence numbers; retries keep them), to measure
//! what exactly-once costs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use futures::StreamExt;
use hdrhistogram::Histogram;
use proglog_proto::v1 as pb;
use proglog_proto::v1::log_client::LogClient;
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, Clone, Parser)]
#[command(name = "proglog-bench", about = "Load generator for a ProgLog cluster")]
struct Args {
    /// Any member (comma-separated list allowed); the leader is found from there.
    #[arg(
        long,
        env = "PROGLOG_ADDR",
        default_value = "127.0.0.1:8400",
        value_delimiter = ','
    )]
    addr: Vec<String>,
    /// Concurrent producing clients, each on its own connection.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Bytes per record value.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Records per request (1 = Produce, more = ProduceBatch).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Produce for this many seconds (ignored when --count is given).
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Produce exactly this many records in total.
    #[arg(long)]
    count: Option<u64>,
    /// Skip the consume phase.
    #[arg(long)]
    no_consume: bool,
    /// Followers the consume phase reads from in parallel (default: all of them).
    #[arg(long)]
    consume_members: Option<usize>,
    /// After the run, read every acknowledged record back and compare.
    #[arg(long)]
    verify: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Each client is an idempotent producer (exactly-once produce).
    #[arg(long)]
    idempotent: bool,
    /// CA bundle that verifies the members: dial with TLS (with --cert/--key: mutual TLS, as a
    /// user the members' ACL lets produce and consume).
    #[arg(long, env = "PROGLOG_CA")]
    ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, env = "PROGLOG_CERT", requires_all = ["ca", "key"])]
    cert: Option<std::path::PathBuf>,
    /// Its private key (PEM).
    #[arg(long, env = "PROGLOG_KEY", requires_all = ["ca", "cert"])]
    key: Option<std::path::PathBuf>,
}

/// TLS settings of every connection, from --ca/--cert/--key (set once in `main`).
static TLS: std::sync::OnceLock<Option<proglog_tls::ClientTls>> = std::sync::OnceLock::new();

/// The value of record `seq` of client `client` (deterministic, so `--verify` can recompute it).
fn value(client: usize, seq: u64, size: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(size);
    push_value(&mut v, client, seq, size);
    v
}

/// Appends [`value`]`(client, seq, size)` to `buf`.
fn push_value(buf: &mut Vec<u8>, client: usize, seq: u64, size: usize) {
    use std::io::Write;
    let start = buf.len();
    write!(buf, "c{client}-s{seq}-").expect("writing to a Vec");
    let len = (buf.len() - start).max(size);
    buf.resize(start + len, b'.');
}

/// The records `first..first + n` of client `client`.
/// NB: the values share one buffer (one allocation and one free per call, not per record): the
/// load generator runs on the cores it measures, so its own cost lengthens every round trip.
fn batch_records(client: usize, first: u64, n: u64, size: usize) -> Vec<pb::Record> {
    let mut buf = Vec::with_capacity(n as usize * size);
    let mut ends = Vec::with_capacity(n as usize);
    for seq in first..first + n {
        push_value(&mut buf, client, seq, size);
        ends.push(buf.len());
    }
    let buf = bytes::Bytes::from(buf);
    let mut start = 0;
    ends.into_iter()
        .map(|end| {
            let value = buf.slice(start..end);
            start = end;
            pb::Record {
                value,
                ..Default::default()
            }
        })
        .collect()
}

async fn connect(addr: &str) -> Result<LogClient<Channel>> {
    let ep = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    let ch = match TLS.get().and_then(Option::as_ref) {
        Some(tls) => ep.connect_with_connector(tls.connector()).await,
        None => ep.connect().await,
    }
    .with_context(|| format!("connecting to {addr}"))?;
    Ok(LogClient::new(ch).max_decoding_message_size(64 << 20))
}

/// (leader, followers) as some reachable member reports them.
async fn discover(addrs: &[String]) -> Result<(String, Vec<String>)> {
    for a in addrs {
        let Ok(mut c) = connect(a).await else {
            continue;
        };
        let Ok(r) = c.get_servers(pb::GetServersRequest {}).await else {
            continue;
        };
        let servers = r.into_inner().servers;
        if let Some(l) = servers.iter().find(|s| s.is_leader) {
            let followers = servers
                .iter()
                .filter(|s| !s.is_leader)
                .map(|s| s.rpc_addr.clone())
                .collect();
            return Ok((l.rpc_addr.clone(), followers));
        }
    }
    bail!("no member in {addrs:?} knows a leader")
}

struct ClientResult {
    hist: Histogram<u64>,
    acked: Vec<(u64, u64)>, // (first offset, seq of the first record)
    records: u64,
    errors: u64,
}

async fn producer(
    id: usize,
    args: Args,
    mut members: Vec<String>,
    stop: Arc<AtomicBool>,
    budget: Arc<AtomicU64>,
) -> Result<ClientResult> {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut acked = Vec::new();
    let (mut records, mut errors, mut seq) = (0u64, 0u64, 0u64);
    let (leader, _) = discover(&members).await?;
    let mut client = connect(&leader).await?;
    members.push(leader);
    let (pid, epoch) = match args.idempotent {
        true => {
            let r = client
                .init_producer(pb::InitProducerRequest::default())
                .await?
                .into_inner();
            (r.producer_id, r.producer_epoch)
        }
        false => (0, 0),
    };
    while !stop.load(Ordering::Relaxed) {
        let n = args.batch as u64;
        if args.count.is_some() {
            let left =
                budget.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(n));
            if left.is_err() {
                break;
            }
        }
        let values = batch_records(id, seq, n, args.value_size);
        loop {
            let start = Instant::now();
            let res = if n == 1 {
                client
                    .produce(pb::ProduceRequest {
                        record: values.first().cloned(),
                        producer_id: pid,
                        producer_epoch: epoch,
                        sequence: seq,
                    })
                    .await
                    .map(|r| r.into_inner().offset)
            } else {
                client
                    .produce_batch(pb::ProduceBatchRequest {
                        records: values.clone(),
                        producer_id: pid,
                        producer_epoch: epoch,
                        first_sequence: seq,
                    })
                    .await
                    .map(|r| r.into_inner().offsets[0])
            };
            match res {
                Ok(first) => {
                    hist.saturating_record(start.elapsed().as_micros() as u64);
                    acked.push((first, seq));
                    records += n;
                    seq += n;
                    break;
                }
                Err(status) => {
                    errors += 1;
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    // Follow the leader hint, else rediscover (an election may be running).
                    let hint = status
                        .metadata()
                        .get(proglog_proto::LEADER_METADATA_KEY)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    let next = match hint {
                        Some(h) => Some(h),
                        None => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            discover(&members).await.ok().map(|(l, _)| l)
                        }
                    };
                    if let Some(addr) = next {
                        if let Ok(c) = connect(&addr).await {
                            client = c;
                        }
                    }
                }
            }
        }
    }
    Ok(ClientResult {
        hist,
        acked,
        records,
        errors,
    })
}

/// Streams `[0, total)` from one member; returns (records, bytes).
async fn consume_all(addr: String, total: u64) -> Result<(u64, u64)> {
    let mut c = connect(&addr).await?;
    let mut s = c
        .consume_stream(pb::ConsumeRequest {
            offset: 0,
            to_end: false,
            end_offset: total,
        })
        .await?
        .into_inner();
    let (mut n, mut bytes) = (0u64, 0u64);
    while n < total {
        match s.next().await {
            Some(r) => {
                let r = r?;
                bytes += r.record.map_or(0, |r| r.value.len() as u64);
                n += 1;
            }
            None => break,
        }
    }
    Ok((n, bytes))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.clients == 0 || args.batch == 0 {
        bail!("--clients and --batch must be > 0");
    }
    let tls = match (&args.ca, &args.cert, &args.key) {
        (None, _, _) => None,
        (Some(ca), Some(cert), Some(key)) => {
            Some(proglog_tls::ClientTls::from_files(proglog_tls::TlsFiles {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            })?)
        }
        (Some(ca), _, _) => Some(proglog_tls::ClientTls::ca_only(ca)?),
    };
    let _ = TLS.set(tls);
    let (leader, followers) = discover(&args.addr).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let budget = Arc::new(AtomicU64::new(args.count.unwrap_or(u64::MAX)));
    let mut members = args.addr.clone();
    members.extend(followers.iter().cloned());
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.clients)
        .map(|id| {
            tokio::spawn(producer(
                id,
                args.clone(),
                members.clone(),
                stop.clone(),
                budget.clone(),
            ))
        })
        .collect();
    if args.count.is_none() {
        tokio::time::sleep(Duration::from_secs(args.duration_secs)).await;
        stop.store(true, Ordering::Relaxed);
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut records, mut errors) = (0u64, 0u64);
    let mut acked = Vec::new();
    for (id, t) in tasks.into_iter().enumerate() {
        let r = t.await??;
        hist.add(&r.hist)?;
        records += r.records;
        errors += r.errors;
        acked.extend(r.acked.into_iter().map(|(off, seq)| (off, id, seq)));
    }
    let secs = started.elapsed().as_secs_f64();
    let mb = (records * args.value_size as u64) as f64 / 1e6;

    // Consume phase: stream everything back from each follower, in parallel.
    let mut consumed: Vec<(String, u64, u64)> = Vec::new();
    let mut consume_secs = 0.0;
    if !args.no_consume {
        let total = acked
            .iter()
            .map(|&(off, ..)| off + args.batch as u64)
            .max()
            .unwrap_or(0);
        let (_, mut followers) = discover(&members).await?;
        followers.truncate(args.consume_members.unwrap_or(usize::MAX));
        let started = Instant::now();
        let tasks: Vec<_> = followers
            .iter()
            .map(|f| tokio::spawn(consume_all(f.clone(), total)))
            .collect();
        for (f, t) in followers.iter().zip(tasks) {
            match t.await? {
                Ok((n, bytes)) => consumed.push((f.clone(), n, bytes)),
                // A member that is down (say, the leader killed during the run) is skipped.
                Err(e) => eprintln!("consume from {f} skipped: {e:#}"),
            }
        }
        consume_secs = started.elapsed().as_secs_f64();
    }

    let mut missing = 0u64;
    if args.verify {
        let (leader_now, _) = discover(&members).await?;
        let mut c = connect(&leader_now).await?;
        for &(off, id, seq) in &acked {
            for k in 0..args.batch as u64 {
                let want = value(id, seq + k, args.value_size);
                let got = c
                    .consume(pb::ConsumeRequest {
                        offset: off + k,
                        ..Default::default()
                    })
                    .await;
                match got {
                    Ok(r)
                        if r.get_ref()
                            .record
                            .as_ref()
                            .is_some_and(|r| r.value[..] == want[..]) => {}
                    _ => missing += 1,
                }
            }
        }
    }

    let consume_records: u64 = consumed.iter().map(|(_, n, _)| n).sum();
    let consume_bytes: u64 = consumed.iter().map(|(_, _, b)| b).sum();
    let p = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let report = serde_json::json!({
        "leader": leader,
        "clients": args.clients,
        "idempotent": args.idempotent,
        "value_size": args.value_size,
        "batch": args.batch,
        "seconds": secs,
        "records": records,
        "errors": errors,
        "produce_records_per_sec": records as f64 / secs,
        "produce_mb_per_sec": mb / secs,
        "latency_ms": { "p50": p(0.5), "p99": p(0.99), "p999": p(0.999), "max": hist.max() as f64 / 1000.0 },
        "consume": {
            "members": consumed.len(),
            "records": consume_records,
            "seconds": consume_secs,
            "records_per_sec": if consume_secs > 0.0 { consume_records as f64 / consume_secs } else { 0.0 },
            "mb_per_sec": if consume_secs > 0.0 { consume_bytes as f64 / 1e6 / consume_secs } else { 0.0 },
        },
        "verify": if args.verify { serde_json::json!({ "checked": records, "missing": missing }) } else { serde_json::Value::Null },
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "produce: {records} records in {secs:.1}s = {:.0} records/s, {:.2} MB/s ({} clients, {} B values, batch {}, {errors} errors)",
            records as f64 / secs,
            mb / secs,
            args.clients,
            args.value_size,
            args.batch
        );
        println!(
            "latency per request: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            p(0.5),
            p(0.99),
            p(0.999),
            hist.max() as f64 / 1000.0
        );
        if !args.no_consume {
            println!(
                "consume from {} follower(s) in parallel: {consume_records} records in {consume_secs:.1}s = {:.0} records/s, {:.2} MB/s",
                consumed.len(),
                report["consume"]["records_per_sec"].as_f64().unwrap_or(0.0),
                report["consume"]["mb_per_sec"].as_f64().unwrap_or(0.0)
            );
        }
        if args.verify {
            println!(
                "verify: {records} acknowledged records checked, {missing} missing or different"
            );
        }
    }
    if missing > 0 {
        bail!("{missing} acknowledged records are missing");
    }
    Ok(())
}
