//! The `proglog` command: clap [`Args`] and [`run`]. Chooses the target (`--addr` seeds, or
//! `--cluster`/`--namespace` through Kubernetes), runs one subcommand and prints tables for
//! people or JSON for scripts. Errors end with a hint that says what to do.

pub mod output;

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use proglog_proto::v1 as pb;

use crate::admin::{parse_member, Admin};
use crate::resolver::{BootstrapConfig, BootstrapResolver, KubernetesConfig, KubernetesResolver};
use crate::{Client, ClientConfig, Error, RetryPolicy};
use output::{opt, print_json, Format, Table};

/// Command-line flags of `proglog`.
#[derive(Debug, Parser)]
#[command(
    name = "proglog",
    version,
    about = "Produce to and consume from a ProgLog cluster, and administer it",
    after_help = "Examples:\n  proglog produce hello world\n  seq 1 100000 | proglog produce\n  proglog consume --from 0 --follow\n  proglog --cluster demo --namespace logs servers\n  proglog --admin-token-file ~/.cache/proglog/run/admin-token status"
)]
pub struct Args {
    /// Member address(es) to start from, `host:port`, comma-separated.
    #[arg(
        long,
        global = true,
        env = "PROGLOG_ADDR",
        value_delimiter = ',',
        default_value = "127.0.0.1:8400"
    )]
    pub addr: Vec<String>,
    /// Name of a ProgLog resource: discover its members through Kubernetes (KUBECONFIG or
    /// in-cluster config) instead of --addr.
    #[arg(long, global = true, env = "PROGLOG_CLUSTER")]
    pub cluster: Option<String>,
    /// Namespace of the ProgLog named by --cluster.
    #[arg(
        long,
        short = 'n',
        global = true,
        env = "PROGLOG_NAMESPACE",
        default_value = "default"
    )]
    pub namespace: String,
    /// Output format.
    #[arg(
        long,
        short = 'o',
        global = true,
        env = "PROGLOG_OUTPUT",
        value_enum,
        default_value = "table"
    )]
    pub output: Format,
    /// Admin API bearer token.
    #[arg(
        long,
        global = true,
        env = "PROGLOG_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
    /// File holding the admin API bearer token.
    #[arg(long, global = true, env = "PROGLOG_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Give up on a call after this many seconds (retries included).
    #[arg(
        long,
        global = true,
        env = "PROGLOG_TIMEOUT_SECS",
        default_value_t = 10
    )]
    pub timeout_secs: u64,
    /// Attempts per call (1 turns retries off).
    #[arg(long, global = true, env = "PROGLOG_ATTEMPTS", default_value_t = 100)]
    pub attempts: u32,
    /// Produce at least once: no idempotent producer, so a retried record may be appended
    /// twice. By default produce is exactly once.
    #[arg(long, global = true, env = "PROGLOG_AT_LEAST_ONCE")]
    pub at_least_once: bool,
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Append records: the arguments, or else one record per line of standard input.
    Produce {
        /// Values to append (none: read lines from stdin).
        values: Vec<String>,
        /// Records per ProduceBatch call when reading stdin.
        #[arg(long, default_value_t = 256)]
        batch: usize,
    },
    /// Read records from an offset (to the end, or following the tail with --follow).
    Consume {
        /// First offset to read.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Keep streaming new records as they are committed (Ctrl-C stops).
        #[arg(long, short = 'f')]
        follow: bool,
        /// Stop after this many records.
        #[arg(long)]
        count: Option<u64>,
    },
    /// List the members, which one leads, and which the client routes to.
    Servers,
    /// Cluster status: the ProgLog resource with --cluster, else the Raft status (admin token)
    /// as the leader reports it.
    Status {
        /// The status of the member --addr names itself, not of its leader (which member
        /// answers, its role, term and indexes: e.g. what a Service routed the call to).
        #[arg(long)]
        local: bool,
    },
    /// Administer a cluster run without the operator (needs the admin token).
    #[command(subcommand)]
    Admin(AdminCmd),
}

/// Admin subcommands.
#[derive(Debug, Subcommand)]
pub enum AdminCmd {
    /// Make the given members the first voters (`--member id=host:port`, repeated); without
    /// members, the member at --addr alone.
    Init {
        #[arg(long = "member", value_parser = parse_member)]
        members: Vec<pb::Member>,
    },
    /// Add a member (`id=host:port` or `id=name@host:port`): as a learner, then as a voter once
    /// it has caught up.
    Add {
        #[arg(value_parser = parse_member)]
        member: pb::Member,
        /// Leave it a learner (no vote).
        #[arg(long)]
        learner: bool,
    },
    /// Remove a member by id (move leadership off it first if it leads).
    Remove { id: u64 },
    /// Move leadership to the voter with this id.
    Transfer { id: u64 },
}

/// Runs the command; prints the error and a hint on failure.
pub async fn run(args: Args) -> ExitCode {
    init_tracing();
    match dispatch(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if let Some(h) = hint(&e, &args) {
                eprintln!("hint: {h}");
            }
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PROGLOG_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,kube_client=off"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// What to do about an error, when we can tell.
fn hint(e: &anyhow::Error, args: &Args) -> Option<String> {
    let text = format!("{e:#}");
    let err = e.downcast_ref::<Error>().map(|e| match e {
        Error::RetriesExhausted { last, .. } => &**last,
        e => e,
    });
    let target = match &args.cluster {
        Some(c) => format!("ProgLog {}/{c}", args.namespace),
        None => args.addr.join(","),
    };
    match err {
        Some(Error::NoMembers) => Some(match &args.cluster {
            Some(_) => format!("no ready member of {target} is published yet: `kubectl get plog,endpointslices -n {}`", args.namespace),
            None => format!("nothing answers at {target}: start a local cluster with `make run`, or pass --addr host:port"),
        }),
        Some(Error::NoLeader) => Some("wait a few seconds for the election, or form the cluster with `proglog admin init --member 1=host:port ...`".into()),
        Some(Error::OutOfRange { .. }) => Some("the message names the readable range; consume from an offset inside it".into()),
        Some(Error::Unauthenticated(_)) => Some("pass the admin token: --admin-token-file FILE (`make run` writes ~/.cache/proglog/run/admin-token)".into()),
        Some(Error::Kube(_)) | None if (args.cluster.is_some() && text.contains("Kubernetes")) || (text.contains("kube") && text.contains("Connect")) => {
            Some("cannot reach the Kubernetes API server: check KUBECONFIG (`kubectl cluster-info`), or use --addr".into())
        }
        _ if text.contains("tcp connect") || text.contains("Connection refused") || text.contains("transport error") => {
            Some(format!("cannot reach {target}: is a ProgLog member running there? (`make run` starts one on 127.0.0.1:8400)"))
        }
        _ => None,
    }
}

impl Args {
    fn token(&self) -> Result<Option<String>> {
        if let Some(t) = &self.admin_token {
            return Ok(Some(t.trim().to_string()));
        }
        if let Some(f) = &self.admin_token_file {
            let t = std::fs::read_to_string(f)
                .with_context(|| format!("reading --admin-token-file {}", f.display()))?;
            let t = t.trim().to_string();
            if t.is_empty() {
                bail!("--admin-token-file {} is empty", f.display());
            }
            return Ok(Some(t));
        }
        Ok(None)
    }

    fn require_token(&self) -> Result<String> {
        self.token()?.context(
            "this command needs the admin token: pass --admin-token, --admin-token-file or set PROGLOG_ADMIN_TOKEN",
        )
    }

    fn config(&self) -> ClientConfig {
        ClientConfig {
            retry: RetryPolicy {
                max_attempts: self.attempts.max(1),
                deadline: Duration::from_secs(self.timeout_secs),
                ..Default::default()
            },
            idempotent: !self.at_least_once,
            ..Default::default()
        }
    }

    async fn client(&self) -> Result<Client> {
        let cfg = self.config();
        let client = match &self.cluster {
            Some(name) => {
                let kube = kube::Client::try_default().await.context(
                    "no Kubernetes configuration: set KUBECONFIG (or run in a pod), or use --addr",
                )?;
                let r =
                    KubernetesResolver::start(KubernetesConfig::new(kube, &self.namespace, name));
                Client::new(Arc::new(r), cfg)?
            }
            None => {
                let mut b = BootstrapConfig::new(self.addr.clone());
                b.admin_token = self.token()?;
                Client::new(Arc::new(BootstrapResolver::start(b).await?), cfg)?
            }
        };
        // Give discovery a moment; calls retry on their own if it takes longer.
        let _ = client.wait_for_leader(Duration::from_secs(3)).await;
        Ok(client)
    }

    /// The member admin calls enter through.
    async fn admin(&self) -> Result<Admin> {
        let token = self.require_token()?;
        let addr = match &self.cluster {
            Some(_) => {
                let c = self.client().await?;
                let m = c.members();
                m.leader()
                    .or(m.endpoints.first())
                    .map(|e| e.addr.clone())
                    .ok_or(Error::NoMembers)?
            }
            None => self.addr.first().cloned().context("--addr is empty")?,
        };
        Ok(Admin::new(addr, token)?)
    }
}

async fn dispatch(args: &Args) -> Result<()> {
    match &args.cmd {
        Cmd::Produce { values, batch } => produce(args, values, *batch).await,
        Cmd::Consume {
            from,
            follow,
            count,
        } => consume(args, *from, *follow, *count).await,
        Cmd::Servers => servers(args).await,
        Cmd::Status { local } => status(args, *local).await,
        Cmd::Admin(cmd) => admin(args, cmd).await,
    }
}

async fn produce(args: &Args, values: &[String], batch: usize) -> Result<()> {
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

fn print_record(format: Format, r: &crate::Record) {
    match format {
        Format::Json => match serde_json::to_string(r) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("error: {e}"),
        },
        Format::Table => println!("{}\t{}", r.offset, String::from_utf8_lossy(&r.value)),
    }
}

async fn consume(args: &Args, from: u64, follow: bool, count: Option<u64>) -> Result<()> {
    let client = args.client().await?;
    let limit = count.unwrap_or(u64::MAX);
    let mut seen = 0u64;
    if follow {
        let mut stream = std::pin::pin!(client.consume_stream(from));
        while seen < limit {
            let r = tokio::select! {
                r = stream.next() => r,
                _ = tokio::signal::ctrl_c() => break,
            };
            let Some(r) = r else { break };
            print_record(args.output, &r?);
            seen += 1;
        }
        return Ok(());
    }
    let mut offset = from;
    while seen < limit {
        match client.consume(offset).await {
            Ok(r) => {
                print_record(args.output, &r);
                offset = r.offset + 1;
                seen += 1;
            }
            // The end of the log: done.
            Err(Error::OutOfRange { .. }) if seen > 0 => break,
            // Nothing at `from`: fine when the log simply ends there ("... offsets [first, from)").
            Err(Error::OutOfRange { message, .. }) if message.ends_with(&format!(", {from})")) => {
                if args.output == Format::Table {
                    eprintln!("no records at offset {from} yet (the log ends there; --follow waits for them)");
                }
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

async fn servers(args: &Args) -> Result<()> {
    let client = args.client().await?;
    let servers = client.servers().await?;
    let routed = client.members();
    match args.output {
        Format::Json => print_json(&serde_json::json!({"servers": servers, "resolved": routed})),
        Format::Table => {
            let mut t = Table::new(&["ID", "NODE", "ADDRESS", "ROLE", "VOTER", "READS"]);
            for s in &servers {
                let reads = routed
                    .endpoints
                    .iter()
                    .find(|e| e.addr == s.rpc_addr)
                    .map_or("no", |e| if e.ready && !e.is_leader { "yes" } else { "no" });
                t.row(vec![
                    s.id.clone(),
                    s.node_id.to_string(),
                    s.rpc_addr.clone(),
                    if s.is_leader { "leader" } else { "follower" }.into(),
                    if s.voter { "yes" } else { "learner" }.into(),
                    reads.into(),
                ]);
            }
            t.print();
        }
    }
    Ok(())
}

async fn status(args: &Args, local: bool) -> Result<()> {
    if let Some(name) = &args.cluster {
        let kube = kube::Client::try_default()
            .await
            .context("no Kubernetes configuration: set KUBECONFIG (or run in a pod)")?;
        let v = crate::kube_status::get(&kube, &args.namespace, name).await?;
        match args.output {
            Format::Json => print_json(&v),
            Format::Table => {
                let s = &v.status;
                let mut t = Table::new(&[
                    "NAME",
                    "REPLICAS",
                    "CURRENT",
                    "READY",
                    "LEADER",
                    "TERM",
                    "GENERATION",
                    "OBSERVED",
                ]);
                t.row(vec![
                    v.name.clone(),
                    opt(v.desired_replicas),
                    opt(s.replicas),
                    opt(s.ready_replicas),
                    opt(s.leader.clone()),
                    opt(s.term),
                    opt(v.generation),
                    opt(s.observed_generation),
                ]);
                t.print();
                if !s.members.is_empty() {
                    println!();
                    let mut t =
                        Table::new(&["POD", "RAFT ID", "ROLE", "HEALTHY", "LAG", "ADDRESS"]);
                    for m in &s.members {
                        t.row(vec![
                            opt(m.pod.clone()),
                            opt(m.raft_id),
                            opt(m.role.clone()),
                            opt(m.healthy),
                            opt(m.lag),
                            opt(m.address.clone()),
                        ]);
                    }
                    t.print();
                }
                if !s.conditions.is_empty() {
                    println!();
                    let mut t = Table::new(&["CONDITION", "STATUS", "REASON", "MESSAGE"]);
                    for c in &s.conditions {
                        t.row(vec![
                            c.type_.clone(),
                            c.status.clone(),
                            opt(c.reason.clone()),
                            opt(c.message.clone()),
                        ]);
                    }
                    t.print();
                }
            }
        }
        return Ok(());
    }
    let admin = args.admin().await?;
    let st = if local {
        admin.status_of(admin.addr()).await?
    } else {
        admin.status().await?
    };
    match args.output {
        Format::Json => print_json(&status_json(&st)),
        Format::Table => {
            println!(
                "member {} is {}; term {}; leader {} ({}); commit index {}; offsets [{}, {})",
                st.node_id,
                role_name(st.role),
                st.term,
                opt(st.leader_id.filter(|&l| l != 0)),
                if st.leader_addr.is_empty() {
                    "-"
                } else {
                    &st.leader_addr
                },
                opt(st.commit_index),
                st.first_offset,
                st.next_offset
            );
            let mut t = Table::new(&["ID", "NAME", "ADDRESS", "ROLE", "VOTER", "MATCHED", "LAG"]);
            for m in &st.members {
                t.row(vec![
                    m.node_id.to_string(),
                    m.name.clone(),
                    m.addr.clone(),
                    role_name(m.role).into(),
                    if m.voter { "yes" } else { "no" }.into(),
                    opt(m.matched_index),
                    opt(m.lag),
                ]);
            }
            t.print();
        }
    }
    Ok(())
}

fn role_name(role: i32) -> &'static str {
    match pb::Role::try_from(role).unwrap_or(pb::Role::Unspecified) {
        pb::Role::Leader => "leader",
        pb::Role::Follower => "follower",
        pb::Role::Candidate => "candidate",
        pb::Role::Learner => "learner",
        pb::Role::Shutdown => "shutdown",
        pb::Role::Unspecified => "unknown",
    }
}

fn status_json(st: &pb::ClusterStatus) -> serde_json::Value {
    serde_json::json!({
        "node_id": st.node_id,
        "role": role_name(st.role),
        "term": st.term,
        "leader_id": st.leader_id.filter(|&l| l != 0),
        "leader_addr": st.leader_addr,
        "last_log_index": st.last_log_index,
        "commit_index": st.commit_index,
        "applied_index": st.applied_index,
        "snapshot_index": st.snapshot_index,
        "first_offset": st.first_offset,
        "next_offset": st.next_offset,
        "members": st.members.iter().map(|m| serde_json::json!({
            "node_id": m.node_id, "name": m.name, "addr": m.addr, "role": role_name(m.role),
            "voter": m.voter, "matched_index": m.matched_index, "lag": m.lag,
        })).collect::<Vec<_>>(),
    })
}

async fn admin(args: &Args, cmd: &AdminCmd) -> Result<()> {
    let admin = args.admin().await?;
    let done = |what: String, st: Option<&pb::ClusterStatus>| match args.output {
        Format::Json => {
            print_json(&serde_json::json!({"result": what, "status": st.map(status_json)}))
        }
        Format::Table => println!("{what}"),
    };
    match cmd {
        AdminCmd::Init { members } => {
            let fresh = admin.init(members.clone()).await?;
            done(
                if fresh {
                    "initialized".into()
                } else {
                    "already initialized (nothing changed)".into()
                },
                None,
            );
        }
        AdminCmd::Add { member, learner } => {
            let quiet = args.output == Format::Json;
            let st = admin
                .add(member.clone(), !learner, |p| {
                    if !quiet {
                        eprintln!(
                            "member {}: has {} of {} entries{}",
                            p.node_id,
                            p.matched_index,
                            p.leader_last_index,
                            if p.caught_up { " (caught up)" } else { "" }
                        );
                    }
                })
                .await?;
            let what = if *learner {
                "added as learner"
            } else {
                "added as voter"
            };
            done(format!("member {} {what}", member.node_id), Some(&st));
        }
        AdminCmd::Remove { id } => {
            let st = admin.remove(*id).await?;
            done(format!("member {id} removed"), Some(&st));
        }
        AdminCmd::Transfer { id } => {
            let leader = admin.transfer(*id).await?;
            done(format!("member {leader} leads"), None);
        }
    }
    Ok(())
}
