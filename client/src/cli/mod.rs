//! The `proglog` command: clap [`Args`] and [`run`]. Chooses the target (`--addr` seeds, or
//! `--cluster`/`--namespace` through Kubernetes), runs one subcommand and prints tables for
//! people or JSON for scripts. Errors end with a hint that says what to do. Each subcommand
//! lives in its own module; this one holds the flags, the target and the error hints.

mod admin;
mod consume;
pub mod output;
mod produce;
mod servers;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

pub use self::admin::AdminCmd;
use crate::admin::Admin;
use crate::resolver::{BootstrapConfig, BootstrapResolver, KubernetesConfig, KubernetesResolver};
use crate::{Client, ClientConfig, Error, RetryPolicy};
use output::Format;

/// Command-line flags of `proglog`.
#[derive(Debug, Parser)]
#[command(
    name = "proglog",
    version,
    about = "Produce to and consume from a ProgLog cluster, and administer it",
    after_help = "Examples:\n  proglog produce hello world\n  seq 1 100000 | proglog produce\n  proglog consume --from 0 --follow\n  proglog --cluster demo --namespace logs servers\n  proglog --ca ca.pem --cert root.pem --key root-key.pem produce hello\n  proglog --cluster demo --user alice produce hello\n  proglog --admin-token-file ~/.cache/proglog/run/admin-token status"
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
    /// CA bundle (PEM) that verifies the members: turns TLS on.
    #[arg(long, global = true, env = "PROGLOG_CA")]
    pub ca: Option<PathBuf>,
    /// This client's certificate (PEM) for mutual TLS; its CN is the subject the members'
    /// ACL authorizes (the operator's certificate for admin commands).
    #[arg(long, global = true, env = "PROGLOG_CERT", requires_all = ["ca", "key"])]
    pub cert: Option<PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(long, global = true, env = "PROGLOG_KEY", requires_all = ["ca", "cert"])]
    pub key: Option<PathBuf>,
    /// A ProgLogUser of the --cluster ProgLog: its Secret, read through the Kubernetes API,
    /// stands for --ca/--cert/--key (the user must be Ready; your Kubernetes identity needs
    /// `get` on proglogusers and secrets in --namespace).
    #[arg(long, global = true, env = "PROGLOG_USER", requires = "cluster", conflicts_with_all = ["ca", "cert", "key"])]
    pub user: Option<String>,
    /// The TLS settings --user resolved to (filled in by [`run`]).
    #[arg(skip)]
    pub user_tls: Option<proglog_tls::ClientTls>,
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
    /// Cluster status: the ProgLog resource with --cluster, else the Raft status (admin token).
    Status {
        /// The status of the member --addr names itself, not of its leader (which member
        /// answers, its role, term and indexes: e.g. what a Service routed the call to).
        #[arg(long)]
        local: bool,
        /// Seconds between the two status samples the rates (records/s, and each member's
        /// replicated entries/s) are computed from; 0 takes one sample and shows no rates.
        #[arg(long, default_value_t = 1.0)]
        rate_secs: f64,
    },
    /// Administer a cluster run without the operator (needs the admin token).
    #[command(subcommand)]
    Admin(AdminCmd),
}

/// Runs the command; prints the error and a hint on failure.
pub async fn run(mut args: Args) -> ExitCode {
    init_tracing();
    let res = match args.resolve_user().await {
        Ok(()) => dispatch(&args).await,
        Err(e) => Err(e),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let e = match diagnose(&e, &args).await {
                Some(cause) => anyhow::Error::new(cause).context("no ProgLog member answered"),
                None => e,
            };
            eprintln!("error: {e:#}");
            if let Some(h) = hint(&e, &args) {
                eprintln!("hint: {h}");
            }
            ExitCode::FAILURE
        }
    }
}

/// When no member could be found through --addr, asks the first one directly for the reason
/// (a TLS failure, a refused certificate): the resolver only knows that nobody answered.
async fn diagnose(e: &anyhow::Error, args: &Args) -> Option<Error> {
    if !matches!(e.downcast_ref::<Error>(), Some(Error::NoMembers)) || args.cluster.is_some() {
        return None;
    }
    let addr = args.addr.first()?;
    let tls = args.tls().ok()?;
    if tls.is_none() && speaks_tls(addr).await {
        return Some(Error::Tls(format!(
            "{addr} serves TLS and this client dials plaintext: pass --ca (and --cert/--key)"
        )));
    }
    let ch = crate::conn::lazy_channel(
        addr,
        Duration::from_secs(2),
        Duration::from_secs(20),
        tls.as_ref(),
    )
    .ok()?;
    let mut client = proglog_proto::v1::log_client::LogClient::new(ch);
    let call = client.get_servers(proglog_proto::v1::GetServersRequest {});
    match tokio::time::timeout(Duration::from_secs(3), call).await {
        Ok(Err(status)) => Some(Error::from_status(addr, &status, None)),
        _ => None,
    }
}

/// True when the server at `addr` answers an HTTP/2 preface with a TLS alert record.
async fn speaks_tls(addr: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let probe = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .ok()?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.ok()?;
        Some(b[0] == 0x15) // NB: TLS record type 21, an alert.
    };
    let r = tokio::time::timeout(Duration::from_secs(1), probe).await;
    matches!(r, Ok(Some(true)))
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
            None => format!("nothing answers at {target}: start a local cluster with `make run-local`, or pass --addr host:port"),
        }),
        Some(Error::NoLeader) => Some("wait a few seconds for the election, or form the cluster with `proglog admin init --member 1=host:port ...`".into()),
        Some(Error::OutOfRange { .. }) => Some("the message names the readable range; consume from an offset inside it".into()),
        Some(Error::Unauthenticated(_)) if args.ca.is_some() || args.user.is_some() => Some("pass a client certificate the cluster's CA signed: --cert FILE --key FILE (`make run-local` writes them under ~/.cache/proglog/run/tls/)".into()),
        Some(Error::Unauthenticated(_)) => Some("pass the admin token: --admin-token-file FILE, or for a TLS cluster --ca/--cert/--key".into()),
        Some(Error::PermissionDenied { .. }) if args.user.is_some() => Some(format!(
            "the ProgLogUser does not grant this action: add it to spec.actions (`kubectl -n {} edit pluser {}`)",
            args.namespace,
            args.user.as_deref().unwrap_or_default()
        )),
        Some(Error::PermissionDenied { .. }) => Some("the member knows who you are and refuses: the ACL policy (--acl-policy of the members) must grant this subject the action; admin commands need the operator's certificate".into()),
        Some(Error::Tls(_)) => Some("check the files given to --ca/--cert/--key (renew an expired certificate)".into()),
        _ if text.contains("not signed by a CA in our CA bundle") => Some("--ca must be the CA that signed the members' certificates".into()),
        _ if text.contains("did not answer TLS") || (args.ca.is_none() && args.user.is_none() && ["connection closed", "h2 protocol error", "canceled"].iter().any(|w| text.contains(w))) => Some(format!("{target} may serve TLS: pass --ca (and --cert/--key)")),
        Some(Error::Kube(_)) | None if (args.cluster.is_some() && text.contains("Kubernetes")) || (text.contains("kube") && text.contains("Connect")) => {
            Some("cannot reach the Kubernetes API server: check KUBECONFIG (`kubectl cluster-info`), or use --addr".into())
        }
        _ if text.contains("tcp connect") || text.contains("Connection refused") || text.contains("transport error") => {
            Some(format!("cannot reach {target}: is a ProgLog member running there? (`make run-local` starts one on 127.0.0.1:8400)"))
        }
        _ => None,
    }
}

impl Args {
    /// With --user: reads the user's Secret through the Kubernetes API into [`Args::user_tls`].
    async fn resolve_user(&mut self) -> Result<()> {
        let (Some(user), Some(cluster)) = (&self.user, &self.cluster) else {
            return Ok(());
        };
        let kube = kube::Client::try_default().await.context(
            "--user reads the user's Secret through Kubernetes: set KUBECONFIG (or run in a pod)",
        )?;
        let tls = crate::kube_user::tls(&kube, &self.namespace, cluster, user).await?;
        self.user_tls = Some(tls);
        Ok(())
    }

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

    /// TLS settings from --ca/--cert/--key, if --ca is given.
    pub fn tls(&self) -> Result<Option<proglog_tls::ClientTls>> {
        if let Some(t) = &self.user_tls {
            return Ok(Some(t.clone()));
        }
        let Some(ca) = &self.ca else { return Ok(None) };
        let identity = self.cert.as_deref().zip(self.key.as_deref());
        Ok(Some(crate::conn::tls_from_files(ca, identity)?))
    }

    fn require_token(&self) -> Result<String> {
        self.token()?.context(
            "this command needs the admin token: pass --admin-token, --admin-token-file or set PROGLOG_ADMIN_TOKEN",
        )
    }

    fn config(&self) -> Result<ClientConfig> {
        Ok(ClientConfig {
            retry: RetryPolicy {
                max_attempts: self.attempts.max(1),
                deadline: Duration::from_secs(self.timeout_secs),
                ..Default::default()
            },
            idempotent: !self.at_least_once,
            tls: self.tls()?,
            ..Default::default()
        })
    }

    async fn client(&self) -> Result<Client> {
        let cfg = self.config()?;
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
                b.tls = cfg.tls.clone();
                Client::new(Arc::new(BootstrapResolver::start(b).await?), cfg)?
            }
        };
        // Give discovery a moment; calls retry on their own if it takes longer.
        let wait = Duration::from_secs(self.timeout_secs.clamp(1, 3));
        let _ = client.wait_for_leader(wait).await;
        Ok(client)
    }

    /// The member admin calls enter through.
    async fn admin(&self) -> Result<Admin> {
        let tls = self.tls()?;
        let token = match &tls {
            Some(_) => self.token()?.unwrap_or_default(),
            None => self.require_token()?,
        };
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
        let admin = Admin::new(addr, token)?;
        Ok(match tls {
            Some(t) => admin.with_tls(t),
            None => admin,
        })
    }
}

async fn dispatch(args: &Args) -> Result<()> {
    match &args.cmd {
        Cmd::Produce { values, batch } => produce::produce(args, values, *batch).await,
        Cmd::Consume {
            from,
            follow,
            count,
        } => consume::consume(args, *from, *follow, *count).await,
        Cmd::Servers => servers::servers(args).await,
        Cmd::Status { local, rate_secs } => status::status(args, *local, *rate_secs).await,
        Cmd::Admin(cmd) => admin::admin(args, cmd).await,
    }
}
