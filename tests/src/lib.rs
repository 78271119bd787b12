//! End-to-end test helpers.
//!
//! [`devcluster`] starts (or reuses) the local Kubernetes control plane and node agent and hands tests a
//! `kube::Client`. [`operator`] gives the operator e2e tests a namespace with its own operator pod
//! (deployed from `manifests/`), `kubectl` and the `proglog` CLI, and waits on a ProgLog's status.

pub mod devcluster;
pub mod operator;
