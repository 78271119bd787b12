//! A tower layer on the gRPC server that counts every call by service, method and gRPC status
//! code and times it, from the request's arrival to the end of the response (the trailers). A
//! streaming call is timed over its whole life.
//!
//! The code is read where gRPC puts it: in the response headers of a trailers-only response
//! (tonic's errors), else in the trailers at the end of the body. A call whose response is
//! dropped before it ends (the client went away) counts as `CANCELLED`. Knows nothing of the
//! services behind it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of a started call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    service: String,
    method: String,
}

/// Labels of a finished call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DoneLabels {
    service: String,
    method: String,
    /// gRPC status code name, as in the gRPC spec (`OK`, `INVALID_ARGUMENT`, ...).
    code: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The per-call metrics; cheap to clone (shared counters).
#[derive(Clone)]
pub struct RpcMetrics {
    started: Family<CallLabels, Counter>,
    handled: Family<DoneLabels, Counter>,
    seconds: HistogramFamily<DoneLabels>,
    /// Services whose names become labels; calls to any other path count as `unknown`.
    known: Arc<[&'static str]>,
}

impl RpcMetrics {
    /// Registers the call metrics in `registry` (names under its prefix): `grpc_server_started`,
    /// `grpc_server_handled` and `grpc_server_handling_seconds`. Only the services in `known`
    /// are named in labels, so a caller cannot grow the label set with made-up paths.
    pub fn register(registry: &mut Registry, known: &[&'static str]) -> Self {
        // 100 us .. ~105 s, x2 per bucket: a local read to a long stream.
        let seconds: HistogramFamily<DoneLabels> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(1e-4, 2.0, 21)));
        let m = RpcMetrics {
            started: Family::default(),
            handled: Family::default(),
            seconds,
            known: known.into(),
        };
        registry.register(
            "grpc_server_started",
            "gRPC calls started, by service and method",
            m.started.clone(),
        );
        registry.register(
            "grpc_server_handled",
            "gRPC calls finished, by service, method and status code",
            m.handled.clone(),
        );
        registry.register(
            "grpc_server_handling_seconds",
            "Time from a call's arrival to the end of its response, by service, method and code",
            m.seconds.clone(),
        );
        m
    }

    /// `/pkg.Service/Method` -> (service, method), `unknown` for services not in `known`.
    fn labels(&self, path: &str) -> CallLabels {
        let mut parts = path.trim_start_matches('/').splitn(2, '/');
        let (service, method) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let ok = self.known.contains(&service)
            && !method.is_empty()
            && method.len() <= 64
            && method
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if ok {
            CallLabels {
                service: service.into(),
                method: method.into(),
            }
        } else {
            CallLabels {
                service: "unknown".into(),
                method: "unknown".into(),
            }
        }
    }
}

/// The layer: `Server::builder().layer(RpcLayer::new(rpc))`.
#[derive(Clone)]
pub struct RpcLayer {
    metrics: RpcMetrics,
}

impl RpcLayer {
    /// A layer recording into `metrics`.
    pub fn new(metrics: RpcMetrics) -> Self {
        RpcLayer { metrics }
    }
}

impl<S> tower_layer::Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> RpcService<S> {
        RpcService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`RpcLayer`] wraps around the server's routes.
#[derive(Clone)]
pub struct RpcService<S> {
    inner: S,
    metrics: RpcMetrics,
}

impl<S, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for RpcService<S>
where
    S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<RpcBody<ResBody>>;
    type Error = S::Error;
    type Future = RpcFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let labels = self.metrics.labels(req.uri().path());
        self.metrics.started.get_or_create(&labels).inc();
        let call = Call {
            metrics: self.metrics.clone(),
            labels,
            started: Instant::now(),
            done: false,
        };
        RpcFuture {
            inner: self.inner.call(req),
            call: Some(call),
        }
    }
}

/// One call in flight; records itself when finished, or as `CANCELLED` when dropped unfinished.
struct Call {
    metrics: RpcMetrics,
    labels: CallLabels,
    started: Instant,
    done: bool,
}

impl Call {
    fn finish(&mut self, code: &'static str) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let labels = DoneLabels {
            service: self.labels.service.clone(),
            method: self.labels.method.clone(),
            code,
        };
        self.metrics.handled.get_or_create(&labels).inc();
        self.metrics
            .seconds
            .get_or_create(&labels)
            .observe(self.started.elapsed().as_secs_f64());
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish("CANCELLED");
    }
}

pin_project! {
    /// The response future of [`RpcService`].
    pub struct RpcFuture<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }
}

impl<F, B, E> Future for RpcFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<RpcBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = ready!(this.inner.poll(cx));
        let mut call = this.call.take();
        Poll::Ready(match res {
            Ok(resp) => {
                // A trailers-only response (an error) carries its status in the headers.
                if let (Some(code), Some(c)) = (code_in(resp.headers()), call.as_mut()) {
                    c.finish(code);
                }
                Ok(resp.map(|inner| RpcBody { inner, call }))
            }
            Err(e) => {
                if let Some(c) = call.as_mut() {
                    c.finish("UNKNOWN");
                }
                Err(e)
            }
        })
    }
}

pin_project! {
    /// The response body of [`RpcService`]: the inner body, watched for its trailers.
    pub struct RpcBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }
}

impl<B: Body> Body for RpcBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(call) = this.call.as_mut() {
            match &frame {
                Some(Ok(f)) => {
                    if let Some(t) = f.trailers_ref() {
                        call.finish(code_in(t).unwrap_or("UNKNOWN"));
                    }
                }
                Some(Err(_)) => call.finish("INTERNAL"),
                // NB: a gRPC response always ends in trailers; one that does not is no success.
                None => call.finish("UNKNOWN"),
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The gRPC status code in `grpc-status`, by its name in the gRPC spec.
fn code_in(headers: &HeaderMap) -> Option<&'static str> {
    let v = headers.get("grpc-status")?;
    let n: i32 = v.to_str().ok()?.trim().parse().ok()?;
    Some(code_name(n))
}

/// The name of gRPC status code `n` (`UNKNOWN` for codes outside the spec).
pub fn code_name(n: i32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    usize::try_from(n)
        .ok()
        .and_then(|i| NAMES.get(i))
        .copied()
        .unwrap_or("UNKNOWN")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_become_bounded_labels() {
        let mut r = Registry::default();
        let m = RpcMetrics::register(&mut r, &["proglog.v1.Log"]);
        let l = m.labels("/proglog.v1.Log/Produce");
        assert_eq!(
            (l.service.as_str(), l.method.as_str()),
            ("proglog.v1.Log", "Produce")
        );
        for bad in [
            "/made.up/Produce",
            "/proglog.v1.Log/",
            "/proglog.v1.Log/a/b",
            "/",
        ] {
            let l = m.labels(bad);
            assert_eq!(
                (l.service.as_str(), l.method.as_str()),
                ("unknown", "unknown"),
                "{bad}"
            );
        }
        assert_eq!(code_name(0), "OK");
        assert_eq!(code_name(11), "OUT_OF_RANGE");
        assert_eq!(code_name(16), "UNAUTHENTICATED");
        assert_eq!(code_name(17), "UNKNOWN");
        assert_eq!(code_name(-1), "UNKNOWN");
    }
}
