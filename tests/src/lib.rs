//! End-to-end test helpers.
//!
//! [`devcluster`] starts (or reuses) the local Kubernetes control plane and node agent and hands tests a
//! `kube::Client`. [`operator`] gives the operator e2e tests a namespace with its own operator pod
//! (deployed from `manifests/`), `kubectl` and the `proglog` CLI, and waits on a ProgLog's status;
//! [`records`] produces records and checks that every acknowledged one reads back; [`images`]
//! builds the logserver and operator images and loads them on the node; [`pki`] gives a test a
//! client identity signed by a ProgLog's CA (or the operator's own).

pub mod devcluster;
pub mod images;
pub mod operator;
pub mod pki;
pub mod records;

/// The naming contract of a ProgLog's objects (labels, Service and slice names), shared with the
/// operator and the client.
pub use proglog_crds::names;
