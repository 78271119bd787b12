//! The admin `proglog.v1.Acl` service: the operator pushes the rendered policy, and the member
//! puts it in force at once ([`Acl::set`]) instead of waiting for the kubelet to refresh the
//! policy file. Under TLS only the operator's certificate reaches it (the [`super::guard`]
//! layer: the admin plane); in plaintext there is no ACL, so after the admin token it answers
//! FAILED_PRECONDITION.

use std::sync::Arc;

use proglog_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::acl::Acl;
use super::cluster::check_token;

/// The Acl service of one member.
#[derive(Debug, Clone)]
pub struct AclService {
    /// The ACL in force (`None`: plaintext, no ACL).
    acl: Option<Arc<Acl>>,
    admin_token: Option<String>,
}

impl AclService {
    pub fn new(acl: Option<Arc<Acl>>, admin_token: Option<String>) -> Self {
        AclService { acl, admin_token }
    }
}

#[tonic::async_trait]
impl pb::acl_server::Acl for AclService {
    #[tracing::instrument(skip_all)]
    async fn set_policy(
        &self,
        req: Request<pb::SetPolicyRequest>,
    ) -> Result<Response<pb::SetPolicyResponse>, Status> {
        let Some(acl) = &self.acl else {
            check_token(self.admin_token.as_deref(), &req)?;
            return Err(Status::failed_precondition(
                "this member runs without TLS and checks no ACL: there is no policy to set",
            ));
        };
        let r = req.into_inner();
        let changed = acl
            .set(&r.model, &r.policy)
            .await
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if changed {
            tracing::info!(
                lines = r.policy.lines().filter(|l| l.starts_with("p,")).count(),
                "ACL policy pushed by the operator is in force"
            );
        }
        Ok(Response::new(pb::SetPolicyResponse { changed }))
    }
}
