//! The ProgLog operator: a kube-runtime controller for `proglog.dev/v1alpha1` `ProgLog`.
//!
//! - [`resources`]: the desired child objects, as pure functions of a ProgLog (unit-tested).
//! - [`controller`]: the Controller, reconcile (server-side apply, status, finalizer, events).
//! - [`status`]: the ProgLog's status and conditions, as a pure function of what a pass observed.
//! - [`admin`]: gRPC connections to the members' admin API (`proglog.v1.Cluster`).
//! - [`membership`]: observes Raft membership and takes one step toward the spec; [`planner`]
//!   chooses that step (pure); [`step`] types it from the plan to Events, metrics and status.
//! - [`discovery`]: follows each cluster's leader and writes the leader/followers EndpointSlices.
//! - [`rollout`]: leader-last rolling updates (the StatefulSet is `OnDelete`; the operator
//!   restarts the members one at a time, followers first, and hands leadership over).
//! - [`volumes`]: growing the members' volume claims toward `spec.storage.size` (pure plan).
//! - [`names`]: the names, labels and addresses the others share.
//! - [`users`]: the ProgLogUser controller (a user's certificate, policy lines and discovery
//!   binding); [`user_resources`] builds what it writes (pure).
//! - [`pki`]: the CA, member and operator certificates of a ProgLog and when to renew them (pure);
//!   [`certs`] keeps them in Secrets; [`acl`] renders the Log service's policy, [`acl_push`]
//!   pushes it to the members.
//! - [`metrics`]: Prometheus metrics and the health endpoints of the operator process.
//! - [`leader`]: leader election between replicas on a Lease (with a fence).
//! - [`app`]: the process: flags, logging, signals; `main.rs` only calls [`app::run`].

pub mod acl;
pub mod acl_push;
pub mod admin;
pub mod app;
pub mod certs;
pub mod controller;
pub mod discovery;
pub mod leader;
pub mod membership;
pub mod metrics;
pub use proglog_crds::names;
pub mod pki;
pub mod planner;
pub mod resources;
pub mod rollout;
pub mod status;
pub mod step;
pub mod user_resources;
pub mod users;
pub mod volumes;
