//! The ProgLog client library and the `proglog` CLI behind it.
//!
//! - [`resolver`]: where the members are - [`resolver::KubernetesResolver`] (EndpointSlices) or
//!   [`resolver::BootstrapResolver`] (`GetServers` from seed addresses).
//! - [`picker`]: which member serves a call - Produce to the leader, Consume round robin over
//!   the followers - over one long-lived channel per member.
//! - [`Client`]: the calls, with retries that follow the leader; Produce is exactly once through
//!   the idempotent [`producer`] unless `ClientConfig::idempotent` is off.
//! - [`admin`]: the admin (`Cluster`) API for clusters run without the operator.
//! - [`kube_status`]: a ProgLog resource's status through the Kubernetes API.
//! - [`kube_user`]: a ProgLogUser's certificate, read from its Secret through the Kubernetes API.
//! - [`cli`]: the `proglog` command.
//!
//! ```no_run
//! # async fn demo() -> proglog_client::Result<()> {
//! let client = proglog_client::Client::connect(["127.0.0.1:8400"]).await?;
//! let offset = client.produce("hello").await?;
//! let record = client.consume(offset).await?;
//! assert_eq!(&record.value[..], b"hello");
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
// NB: `tonic::Status` is large and tonic's generated code dictates it.
#![allow(clippy::result_large_err)]

pub mod admin;
pub mod cli;
pub mod client;
pub mod config;
pub mod conn;
pub mod error;
pub mod kube_status;
pub mod kube_user;
pub mod picker;
pub mod producer;
pub mod resolver;

pub use client::{Client, Record, Server};
pub use config::{ClientConfig, RetryPolicy};
pub use error::{Error, Result};
pub use picker::EndpointStats;
pub use resolver::{Endpoint, Members, Resolver};
