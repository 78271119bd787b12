//! The book's client API, `log.v1.Log` ("Distributed Services with Go", `api/v1/log.proto`), served
//! next to `proglog.v1.Log` over the same log and the same write path: every call goes through
//! [`LogService`] (group commit, leader check, size limit, read up to the commit index), so a
//! record produced through one API is consumed through the other.
//!
//! What the book documents, and how it maps here:
//! - Produce/ProduceStream append at least once (the book has no producer id, so no idempotence);
//!   on a follower they fail like ours: `UNAVAILABLE` with the leader in `proglog-leader`.
//! - Consume past the end fails with the book's `ErrOffsetOutOfRange` status: code 404 (outside
//!   gRPC's code space; tonic cannot express it, so [`BookServer`] rewrites the trailers-only
//!   response), message `offset out of range: N`, and a `google.rpc.LocalizedMessage` detail.
//! - ConsumeStream follows the tail (the book loops on out-of-range); ProduceStream answers each
//!   request in order and ends at the first error.
//! - `Record.term` is the Raft term of the record; `Record.type` is not stored (0).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use proglog_proto::book::v1 as book;
use proglog_proto::book::v1::log_server::{Log, LogServer};
use proglog_proto::v1 as pb;
use proglog_proto::v1::log_server::Log as _;
use tokio::sync::watch;
use tonic::codegen::{http, BoxFuture, Service};
use tonic::metadata::MetadataMap;
use tonic::server::NamedService;
use tonic::{Code, Extensions, Request, Response, Status, Streaming};

use super::log::LogService;

/// Produce calls a stream keeps in flight at once (they commit in order, as group commit keeps
/// the queue order).
const STREAM_PIPELINE: usize = 64;
/// Internal response header that carries a status code tonic's `Code` cannot express; the
/// [`BookServer`] wrapper moves it into `grpc-status`. Never leaves the member.
const RAW_CODE_HEADER: &str = "x-proglog-raw-grpc-status";

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// `log.v1.Log` over a member's [`LogService`].
#[derive(Debug, Clone)]
pub struct BookService {
    log: LogService,
    /// Flips to true when the member shuts down; ProduceStream ends on it.
    shutdown: watch::Receiver<bool>,
}

impl BookService {
    /// The book's API over `log` (share the member's service: it holds the group commit queue).
    pub fn new(log: LogService, shutdown: watch::Receiver<bool>) -> Self {
        BookService { log, shutdown }
    }

    async fn produce_one(
        &self,
        from: &Caller,
        r: book::ProduceRequest,
    ) -> Result<book::ProduceResponse, Status> {
        let record = r
            .record
            .ok_or_else(|| Status::invalid_argument("record is missing"))?;
        let req = pb::ProduceRequest {
            record: Some(pb::Record {
                value: record.value,
                offset: 0,
                term: 0,
            }),
            // NB: no producer id: the book's Produce is at least once.
            ..Default::default()
        };
        let resp = self.log.produce(from.request(req)).await?.into_inner();
        Ok(book::ProduceResponse {
            offset: resp.offset,
        })
    }
}

/// Who called: the metadata and extensions (remote address, TLS peer certificates) of the book
/// call, passed on with every call it makes to [`LogService`], so whatever that service checks of
/// its caller it checks of the book's callers too.
struct Caller {
    metadata: MetadataMap,
    extensions: Extensions,
}

impl Caller {
    fn split<T>(req: Request<T>) -> (Caller, T) {
        let (metadata, extensions, msg) = req.into_parts();
        (
            Caller {
                metadata,
                extensions,
            },
            msg,
        )
    }

    fn request<T>(&self, msg: T) -> Request<T> {
        Request::from_parts(self.metadata.clone(), self.extensions.clone(), msg)
    }
}

fn record(r: pb::Record) -> book::Record {
    book::Record {
        value: r.value,
        offset: r.offset,
        term: r.term,
        r#type: 0,
    }
}

/// The book's `ErrOffsetOutOfRange` as a status: code 404 (through [`RAW_CODE_HEADER`]), its
/// message, and a `LocalizedMessage` detail; our own message (the readable range) is appended to
/// the detail so nothing is lost.
fn offset_out_of_range(offset: u64, ours: &str) -> Status {
    let code = proglog_proto::BOOK_OFFSET_OUT_OF_RANGE_CODE;
    let message = format!("offset out of range: {offset}");
    let details = rpc::Status {
        code: code as i32,
        message: message.clone(),
        details: vec![rpc::Any::pack(
            "google.rpc.LocalizedMessage",
            &rpc::LocalizedMessage {
                locale: "en-US".into(),
                message: format!(
                    "The requested offset is outside the log's range: {offset} ({ours})"
                ),
            },
        )],
    };
    let mut md = MetadataMap::new();
    md.insert(RAW_CODE_HEADER, code.into());
    Status::with_details_and_metadata(
        // Placeholder; [`BookServer`] writes `code` over it.
        Code::OutOfRange,
        message,
        prost::Message::encode_to_vec(&details).into(),
        md,
    )
}

#[tonic::async_trait]
impl Log for BookService {
    #[tracing::instrument(skip_all, level = "debug")]
    async fn produce(
        &self,
        req: Request<book::ProduceRequest>,
    ) -> Result<Response<book::ProduceResponse>, Status> {
        let (from, msg) = Caller::split(req);
        Ok(Response::new(self.produce_one(&from, msg).await?))
    }

    #[tracing::instrument(skip_all, level = "debug")]
    async fn consume(
        &self,
        req: Request<book::ConsumeRequest>,
    ) -> Result<Response<book::ConsumeResponse>, Status> {
        let (from, msg) = Caller::split(req);
        let offset = msg.offset;
        let req = pb::ConsumeRequest {
            offset,
            ..Default::default()
        };
        match self.log.consume(from.request(req)).await {
            Ok(r) => Ok(Response::new(book::ConsumeResponse {
                record: r.into_inner().record.map(record),
            })),
            Err(s) if s.code() == Code::OutOfRange => Err(offset_out_of_range(offset, s.message())),
            Err(s) => Err(s),
        }
    }

    type ConsumeStreamStream = BoxStream<book::ConsumeResponse>;

    async fn consume_stream(
        &self,
        req: Request<book::ConsumeRequest>,
    ) -> Result<Response<Self::ConsumeStreamStream>, Status> {
        // Follows the tail (to_end false, no end offset), as the book's loop does.
        let (from, msg) = Caller::split(req);
        let req = pb::ConsumeRequest {
            offset: msg.offset,
            ..Default::default()
        };
        let inner = self.log.consume_stream(from.request(req)).await?;
        let out = inner.into_inner().map(|r| {
            r.map(|r| book::ConsumeResponse {
                record: r.record.map(record),
            })
        });
        Ok(Response::new(Box::pin(out)))
    }

    type ProduceStreamStream = BoxStream<book::ProduceResponse>;

    async fn produce_stream(
        &self,
        req: Request<Streaming<book::ProduceRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        let this = self.clone();
        let mut shutdown = self.shutdown.clone();
        let (from, stream) = Caller::split(req);
        let from = std::sync::Arc::new(from);
        let out = stream
            .take_until(async move {
                let _ = shutdown.wait_for(|&s| s).await;
            })
            .map(move |r| {
                let (this, from) = (this.clone(), from.clone());
                async move { this.produce_one(&from, r?).await }
            })
            .buffered(STREAM_PIPELINE)
            // The book's loop returns at the first error: end the stream with it.
            .scan(false, |failed, r| {
                let item = (!*failed).then(|| {
                    *failed = r.is_err();
                    r
                });
                futures::future::ready(item)
            });
        Ok(Response::new(Box::pin(out)))
    }

    async fn get_servers(
        &self,
        req: Request<book::GetServersRequest>,
    ) -> Result<Response<book::GetServersResponse>, Status> {
        let (from, _) = Caller::split(req);
        let ours = self
            .log
            .get_servers(from.request(pb::GetServersRequest {}))
            .await?
            .into_inner();
        let servers = ours
            .servers
            .into_iter()
            .map(|s| book::Server {
                id: s.id,
                rpc_addr: s.rpc_addr,
                is_leader: s.is_leader,
            })
            .collect();
        Ok(Response::new(book::GetServersResponse { servers }))
    }
}

/// The `log.v1.Log` gRPC service; add it to the server like any generated one.
#[derive(Debug, Clone)]
pub struct BookServer {
    inner: LogServer<BookService>,
}

impl BookServer {
    pub fn new(
        log: LogService,
        shutdown: watch::Receiver<bool>,
        max_decoding_message_size: usize,
    ) -> Self {
        BookServer {
            inner: LogServer::new(BookService::new(log, shutdown))
                .max_decoding_message_size(max_decoding_message_size),
        }
    }
}

impl NamedService for BookServer {
    const NAME: &'static str = <LogServer<BookService> as NamedService>::NAME;
}

impl<B> Service<http::Request<B>> for BookServer
where
    LogServer<BookService>:
        Service<http::Request<B>, Response = http::Response<tonic::body::Body>, Error = Infallible>,
    <LogServer<BookService> as Service<http::Request<B>>>::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::<http::Request<B>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut resp = fut.await?;
            // NB: an error from a unary handler is a trailers-only response, so its status is
            // in the headers; streams never produce the book's 404 (ConsumeStream waits instead).
            let headers = resp.headers_mut();
            if let Some(code) = headers.remove(RAW_CODE_HEADER) {
                headers.insert("grpc-status", code);
            }
            Ok(resp)
        })
    }
}

/// The few `google.rpc` messages the book's error detail needs (`google/rpc/status.proto`,
/// `error_details.proto`, `google/protobuf/any.proto`).
mod rpc {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        #[prost(int32, tag = "1")]
        pub code: i32,
        #[prost(string, tag = "2")]
        pub message: String,
        #[prost(message, repeated, tag = "3")]
        pub details: Vec<Any>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Any {
        #[prost(string, tag = "1")]
        pub type_url: String,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }

    impl Any {
        pub fn pack(full_name: &str, m: &impl prost::Message) -> Any {
            Any {
                type_url: format!("type.googleapis.com/{full_name}"),
                value: m.encode_to_vec(),
            }
        }
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LocalizedMessage {
        #[prost(string, tag = "1")]
        pub locale: String,
        #[prost(string, tag = "2")]
        pub message: String,
    }
}
