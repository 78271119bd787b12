//! Authentication and authorization of every call, as one tower layer in front of all the
//! services of a member, keyed by the gRPC method path (`/package.Service/Method`). Any service
//! added to the server (e.g. another Log API) goes through it once its methods have [`Rule`]s;
//! a method with no rule is refused.
//!
//! Under TLS, who calls is the subject (CN) of the client certificate the TLS handshake
//! verified against the CA bundle:
//! - the Log service: produce and consume calls need a subject the [`Acl`] allows the action
//!   (else PERMISSION_DENIED naming both); no certificate is UNAUTHENTICATED;
//! - the Raft peer service: only the cluster's member identity;
//! - the admin plane (the Cluster service, and the Acl service the operator pushes the policy
//!   through): only the operator's identity;
//! - health and reflection: anyone who completed the handshake.
//!
//! Without TLS (plaintext, only when asked for) the layer lets every call through; the admin
//! service then checks its bearer token itself.
//! The subject of an authenticated call is put in the request's extensions as [`Subject`].

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{Either, Ready};
use proglog_tls::server::Peer;
use tonic::Status;

use super::acl::{Acl, Action};

/// What a method needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Anyone (health checks, reflection).
    Open,
    /// Any verified client certificate.
    Authenticated,
    /// A subject the ACL allows this action.
    Act(Action),
    /// The cluster's member identity (peer plane).
    Member,
    /// The operator's identity (admin plane).
    Admin,
}

/// Rules by method path, with per-service defaults.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    methods: HashMap<String, Rule>,
    services: HashMap<String, Rule>,
}

impl Rules {
    /// The rule for one method, `/package.Service/Method`.
    pub fn method(mut self, path: &str, rule: Rule) -> Self {
        self.methods.insert(path.to_string(), rule);
        self
    }

    /// The rule for every method of `package.Service` that has none of its own.
    pub fn service(mut self, service: &str, rule: Rule) -> Self {
        self.services.insert(service.to_string(), rule);
        self
    }

    /// The rule for a request path; `None` when there is none (refused).
    pub fn rule(&self, path: &str) -> Option<Rule> {
        if let Some(r) = self.methods.get(path) {
            return Some(*r);
        }
        let service = path.trim_start_matches('/').split('/').next()?;
        self.services.get(service).copied()
    }

    /// The rules of ProgLog's own services, and of the book's `log.v1.Log` API served beside
    /// them (same actions as the book's proglog authorizes).
    pub fn proglog() -> Self {
        use Action::{Consume, Produce};
        let log = |m: &str| format!("/proglog.v1.Log/{m}");
        let book = |m: &str| format!("/log.v1.Log/{m}");
        Rules::default()
            .method(&book("Produce"), Rule::Act(Produce))
            .method(&book("ProduceStream"), Rule::Act(Produce))
            .method(&book("Consume"), Rule::Act(Consume))
            .method(&book("ConsumeStream"), Rule::Act(Consume))
            .method(&book("GetServers"), Rule::Authenticated)
            .service("grpc.health.v1.Health", Rule::Open)
            .service("grpc.reflection.v1.ServerReflection", Rule::Open)
            .service("grpc.reflection.v1alpha.ServerReflection", Rule::Open)
            .service("proglog.raft.v1.Raft", Rule::Member)
            .service("proglog.v1.Cluster", Rule::Admin)
            .service("proglog.v1.Acl", Rule::Admin)
            .method(&log("Produce"), Rule::Act(Produce))
            .method(&log("ProduceBatch"), Rule::Act(Produce))
            .method(&log("ProduceStream"), Rule::Act(Produce))
            .method(&log("InitProducer"), Rule::Act(Produce))
            .method(&log("Consume"), Rule::Act(Consume))
            .method(&log("ConsumeStream"), Rule::Act(Consume))
            .method(&log("GetServers"), Rule::Authenticated)
    }
}

/// The subject (certificate CN) of an authenticated call, in the request extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject(pub Arc<str>);

/// What the layer checks under TLS.
#[derive(Debug)]
pub struct Authz {
    pub rules: Rules,
    pub acl: Arc<Acl>,
    /// Subject of the cluster's members (the peer plane accepts only it).
    pub member_identity: String,
    /// Subject of the operator (the admin plane accepts only it).
    pub admin_identity: String,
}

impl Authz {
    /// Ok or the status refusing the call.
    pub fn check(&self, path: &str, subject: Option<&str>) -> Result<(), Status> {
        let Some(rule) = self.rules.rule(path) else {
            return Err(Status::permission_denied(format!(
                "{path}: no authorization rule for this method"
            )));
        };
        if rule == Rule::Open {
            return Ok(());
        }
        let Some(subject) = subject else {
            return Err(Status::unauthenticated(format!(
                "{path} needs a client certificate signed by the cluster's CA (mutual TLS)"
            )));
        };
        let who = |identity: &str, plane: &str| {
            if subject == identity {
                Ok(())
            } else {
                Err(Status::permission_denied(format!(
                    "subject {subject:?} may not call {path}: the {plane} accepts only {identity:?}"
                )))
            }
        };
        match rule {
            Rule::Open | Rule::Authenticated => {}
            Rule::Member => who(&self.member_identity, "Raft peer service")?,
            Rule::Admin => who(&self.admin_identity, "admin plane (Cluster, Acl)")?,
            Rule::Act(action) => {
                if !self.acl.allows(subject, action) {
                    return Err(Status::permission_denied(format!(
                        "subject {subject:?} is not allowed to {} (no ACL policy grants it)",
                        action.as_str()
                    )));
                }
            }
        }
        Ok(())
    }
}

/// The subject of the verified client certificate of this connection, if any (read once per
/// connection, when it was accepted).
fn subject_of<B>(req: &http::Request<B>) -> Option<Arc<str>> {
    req.extensions().get::<Peer>()?.subject.clone()
}

/// The layer: `None` lets everything through (plaintext).
#[derive(Debug, Clone, Default)]
pub struct GuardLayer {
    authz: Option<Arc<Authz>>,
}

impl GuardLayer {
    pub fn new(authz: Option<Arc<Authz>>) -> Self {
        GuardLayer { authz }
    }
}

impl<S> tower_layer::Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            authz: self.authz.clone(),
        }
    }
}

/// The service the layer wraps around the routes.
#[derive(Debug, Clone)]
pub struct Guard<S> {
    inner: S,
    authz: Option<Arc<Authz>>,
}

type Resp = http::Response<tonic::body::Body>;

impl<S, B> tower_service::Service<http::Request<B>> for Guard<S>
where
    S: tower_service::Service<http::Request<B>, Response = Resp>,
{
    type Response = Resp;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<Resp, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if let Some(authz) = &self.authz {
            let subject = subject_of(&req);
            match authz.check(req.uri().path(), subject.as_deref()) {
                Ok(()) => {
                    if let Some(s) = subject {
                        req.extensions_mut().insert(Subject(s));
                    }
                }
                Err(status) => {
                    tracing::debug!(
                        path = req.uri().path(),
                        ?subject,
                        "refused: {}",
                        status.message()
                    );
                    return Either::Right(futures::future::ready(Ok(status.into_http())));
                }
            }
        }
        Either::Left(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_fall_back_to_the_service_and_refuse_unknown_methods() {
        let r = Rules::proglog();
        assert_eq!(
            r.rule("/proglog.v1.Log/Produce"),
            Some(Rule::Act(Action::Produce))
        );
        assert_eq!(
            r.rule("/proglog.raft.v1.Raft/AppendEntries"),
            Some(Rule::Member)
        );
        assert_eq!(r.rule("/proglog.v1.Cluster/Initialize"), Some(Rule::Admin));
        assert_eq!(r.rule("/proglog.v1.Acl/SetPolicy"), Some(Rule::Admin));
        assert_eq!(r.rule("/grpc.health.v1.Health/Check"), Some(Rule::Open));
        assert_eq!(r.rule("/proglog.v1.Log/NotAMethod"), None);
        assert_eq!(r.rule("/other.Service/Call"), None);
    }
}
