//! Shared by the `controller_*` tests: a client for the devcluster (the cluster `KUBECONFIG` names,
//! else the devcluster, started by `tests/devcluster/up.sh` when it is not running), the CRD, a
//! namespace per test, the controller running in-process for that namespace, and waits with
//! deadlines.
//! The cluster comes from `e2e::devcluster` (the e2e crate depends on crds, proto and client,
//! never on the operator, so there is no cycle).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, CustomResourceExt};
use proglog_crds::ProgLog;
use proglog_operator::controller::{self, Options};
use proglog_operator::metrics::{self, Metrics};

/// A client for the cluster (`KUBECONFIG`, else the devcluster, started when not running), with
/// the images built and loaded (once per test binary) and the ProgLog CRD installed.
pub async fn client() -> Result<Client> {
    let started = Instant::now();
    static BUILT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let dc = tokio::task::spawn_blocking(|| -> Result<e2e::devcluster::DevCluster> {
        let dc = e2e::devcluster::ensure()?;
        BUILT
            .get_or_init(|| {
                // NB: the CRD's default image, which images.sh also tags.
                e2e::images::images()
                    .map(|_| ())
                    .map_err(|e| format!("{e:#}"))
            })
            .clone()
            .map_err(anyhow::Error::msg)?;
        Ok(dc)
    })
    .await??;
    let client = dc.client().await?;
    install_crd(&client).await?;
    eprintln!(
        "cluster, logserver and CRD ready in {:?}",
        started.elapsed()
    );
    Ok(client)
}

async fn install_crd(client: &Client) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = ProgLog::crd();
    let name = crd.metadata.name.clone().unwrap_or_default();
    crds.patch(
        &name,
        &PatchParams::apply("proglog-crd").force(),
        &Patch::Apply(&crd),
    )
    .await
    .context("applying the ProgLog CRD")?;
    wait_for(
        "the ProgLog CRD to be established",
        Duration::from_secs(30),
        || {
            let crds = crds.clone();
            let name = name.clone();
            async move {
                let crd = crds.get(&name).await?;
                let ok = crd
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                Ok(ok.then_some(()))
            }
        },
    )
    .await
}

/// A fresh namespace `<prefix>-<pid>-<n>`.
pub async fn namespace(client: &Client, prefix: &str) -> Result<String> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = format!("{prefix}-{}-{:x}", std::process::id(), nanos & 0xffff);
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    Ok(name)
}

/// Deletes a namespace (what is in it goes with it).
pub async fn delete_namespace(client: &Client, ns: &str) {
    let _ = Api::<Namespace>::all(client.clone())
        .delete(ns, &DeleteParams::background())
        .await;
}

/// The controller, running in this process for one namespace.
pub struct Operator {
    pub metrics: Arc<Metrics>,
    pub metrics_addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Operator {
    /// Starts the controller for `ns` and its metrics server on 127.0.0.1:0.
    pub async fn start(client: &Client, ns: &str) -> Result<Operator> {
        Self::start_with(client, ns, Default::default()).await
    }

    /// [`Operator::start`] issuing certificates with `validity` (tests shorten it).
    pub async fn start_with(
        client: &Client,
        ns: &str,
        validity: proglog_operator::pki::Validity,
    ) -> Result<Operator> {
        let metrics = Arc::new(Metrics::new());
        let listener = metrics::bind("127.0.0.1:0".parse()?).await?;
        let metrics_addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (server_stop, server_stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(metrics::serve(listener, metrics.clone(), async {
            let _ = server_stopped.await;
        }));
        let opts = Options {
            namespace: Some(ns.to_string()),
            cluster_domain: "cluster.local".to_string(),
            validity,
        };
        let task = tokio::spawn(controller::run(
            client.clone(),
            opts,
            metrics.clone(),
            async {
                let _ = stopped.await;
            },
        ));
        let task = tokio::spawn(async move {
            let _ = task.await;
            let _ = server_stop.send(());
        });
        Ok(Operator {
            metrics,
            metrics_addr,
            stop: Some(stop),
            task,
        })
    }

    /// Stops the controller (in-flight passes finish) and its metrics server.
    pub async fn stop(mut self) -> Result<()> {
        let started = Instant::now();
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .context("the controller did not stop within 30 s")??;
        eprintln!("controller stopped in {:?}", started.elapsed());
        Ok(())
    }
}

/// A plain HTTP GET on the operator's metrics server: (status code, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    let code = out.get(9..12).context("short HTTP answer")?.parse()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
    Ok((code, body.unwrap_or_default()))
}

pub use e2e::devcluster::wait_for;

/// Waits until the ProgLog's condition `type_` is `status` for its current generation; returns
/// the ProgLog as then observed.
pub async fn wait_condition(
    api: &Api<ProgLog>,
    name: &str,
    type_: &str,
    status: &str,
    timeout: Duration,
) -> Result<ProgLog> {
    wait_for(
        &format!("{name} to have {type_}={status}"),
        timeout,
        || async {
            let pl = api.get(name).await?;
            let st = pl.status.clone().unwrap_or_default();
            let met = st.observed_generation == pl.metadata.generation
                && st
                    .conditions
                    .iter()
                    .any(|c| c.type_ == type_ && c.status == status);
            Ok(met.then_some(pl))
        },
    )
    .await
}
