//! The ProgLog operator: a kube-runtime controller for `proglog.dev/v1alpha1` `ProgLog`.
//!
//! - [`resources`]: the desired child objects, as pure functions of a ProgLog (unit-tested).
//! - [`controller`]: the Controller, reconcile (server-side apply, status, finalizer, events).
//! - [`status`]: the ProgLog's status and conditions, as a pure function of what a pass observed.
//! - [`admin`]: gRPC connections to the members' admin API (`proglog.v1.Cluster`).
//! - [`membership`]: observes Raft membership and takes one step toward the spec.
//! - [`discovery`]: follows each cluster's leader and writes the leader/followers EndpointSlices.
//! - [`names`]: the names, labels and addresses the others share.
//! - [`pki`]: the CA, member and operator certificates of a ProgLog (not yet used by reconcile).
//! - [`metrics`]: Prometheus metrics and the health endpoints of the operator process.
//! - [`app`]: the process: flags, logging, signals; `main.rs` only calls [`app::run`].

pub mod admin;
pub mod app;
pub mod controller;
pub mod discovery;
pub mod membership;
pub mod metrics;
pub mod names;
pub mod pki;
pub mod resources;
pub mod status;
