//! The operator process's Prometheus metrics and its HTTP endpoints: `/metrics` (text exposition),
//! `/healthz` (the process serves) and `/readyz` (the controller's caches have synced).
//!
//! Owns the metric names and labels; the controller only calls the `record_*` methods. Knows
//! nothing of Kubernetes.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::step::StepKind;

/// Label set of reconcile errors.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    /// What failed (`Error::metric_label` of the controller): a small, fixed set.
    error: String,
}

/// Label set of membership steps.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    /// The step's kind ([`StepKind::label`]).
    kind: &'static str,
}

/// The operator's metrics (prefix `proglog_operator_`) and its readiness. Cheap to share in an `Arc`.
pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    errors: Family<ErrorLabels, Counter>,
    duration: Histogram,
    steps: Family<StepLabels, Counter>,
    leader: Gauge,
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Fresh metrics, not ready.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("proglog_operator");
        let reconciles = Counter::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        // 5 ms to ~40 s: a pass is a few API calls plus admin RPCs, a learner's catch-up is longer.
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let steps = Family::<StepLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconcile passes of ProgLogs",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconcile passes that failed, by what failed",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time a reconcile pass took",
            duration.clone(),
        );
        registry.register(
            "membership_steps",
            "Raft membership steps taken, by kind",
            steps.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica reconciles (holds the leader-election Lease, or runs without election)",
            leader.clone(),
        );
        // Every kind from 0, so a rate or an alert works before the first step of a kind.
        for kind in StepKind::ALL {
            let _ = steps.get_or_create(&StepLabels { kind: kind.label() });
        }
        Metrics {
            registry,
            reconciles,
            errors,
            duration,
            steps,
            leader,
            ready: AtomicBool::new(false),
        }
    }

    /// Records one reconcile pass that took `took` and failed with `error` (a metric label), if so.
    pub fn record_reconcile(&self, took: Duration, error: Option<&str>) {
        self.reconciles.inc();
        self.duration.observe(took.as_secs_f64());
        if let Some(e) = error {
            self.errors
                .get_or_create(&ErrorLabels {
                    error: e.to_string(),
                })
                .inc();
        }
    }

    /// Records a membership step of `kind`.
    pub fn record_step(&self, kind: StepKind) {
        self.steps
            .get_or_create(&StepLabels { kind: kind.label() })
            .inc();
    }

    /// Whether this replica reconciles now.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Marks the process ready (`/readyz` answers 200 from now on).
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Whether [`Metrics::set_ready`] was called.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The HTTP routes: `/metrics`, `/healthz`, `/readyz`.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(serve_ready))
        .with_state(metrics)
}

async fn serve_metrics(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
}

async fn serve_ready(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    if m.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced yet\n")
    }
}

/// Binds `addr` (port 0 picks a free port; see the listener's `local_addr`).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// Serves [`router`] on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let code = out[9..12].parse().unwrap();
        let body = out.split_once("\r\n\r\n").unwrap().1.to_string();
        (code, body)
    }

    #[tokio::test]
    async fn endpoints_serve_metrics_health_and_readiness() {
        let m = Arc::new(Metrics::new());
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, m.clone(), async {
            let _ = stopped.await;
        }));

        assert_eq!(get(addr, "/healthz").await.0, 200);
        assert_eq!(get(addr, "/readyz").await.0, 503);
        m.set_ready();
        assert_eq!(get(addr, "/readyz").await.0, 200);

        m.record_reconcile(Duration::from_millis(20), None);
        m.record_reconcile(Duration::from_millis(30), Some("kube"));
        m.record_step(StepKind::AddLearner);
        let (code, body) = get(addr, "/metrics").await;
        assert_eq!(code, 200);
        assert!(
            body.contains("proglog_operator_reconciles_total 2"),
            "{body}"
        );
        assert!(
            body.contains("proglog_operator_reconcile_errors_total{error=\"kube\"} 1"),
            "{body}"
        );
        assert!(body.contains("proglog_operator_reconcile_duration_seconds_count 2"));
        assert!(body.contains("proglog_operator_membership_steps_total{kind=\"add_learner\"} 1"));
        assert!(body.contains("proglog_operator_membership_steps_total{kind=\"remove_leader\"} 0"));

        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
