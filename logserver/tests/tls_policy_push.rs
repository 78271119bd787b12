//! The operator's policy push (`proglog.v1.Acl`, admin plane) on a real member over mutual TLS:
//! a pushed policy is in force when the call returns, with no change to the policy file; only
//! the operator's identity may push; a policy that does not load is refused and changes
//! nothing. A plaintext member checks the admin token and has no policy to set. (How a push
//! and the policy files take turns: the unit tests of `service::acl`.)

mod common;
mod tls_common;

use anyhow::Result;
use proglog_proto::v1 as pb;
use proglog_proto::v1::acl_client::AclClient;
use tls_common::{assert_refused, record, TlsCluster};
use tonic::transport::Channel;
use tonic::Code;

const MODEL: &str = include_str!("../acl/model.conf");
const BOOK: &str = include_str!("../acl/policy.csv");

fn push(policy: &str) -> pb::SetPolicyRequest {
    pb::SetPolicyRequest {
        model: MODEL.into(),
        policy: policy.into(),
    }
}

fn first() -> pb::ConsumeRequest {
    pb::ConsumeRequest {
        offset: 0,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pushed_policy_denies_at_once_and_only_the_operator_may_push() -> Result<()> {
    let c = TlsCluster::start(1).await?;
    let acl =
        |who: Option<&str>| -> Result<AclClient<Channel>> { Ok(AclClient::new(c.chan(who, 0)?)) };
    c.log(Some("root"), 0)?.produce(record("a")).await?;
    let mut reader = c.log(Some("reader"), 0)?;
    reader.consume(first()).await?;
    let revoked = BOOK.to_string(); // the book's policy: root only, no reader

    // Nobody but the operator may push: a user, the members' identity, no certificate.
    let r = acl(Some("root"))?.set_policy(push(&revoked)).await;
    assert_refused(r, Code::PermissionDenied, &["\"root\"", "admin"]);
    let r = acl(Some("member-1"))?.set_policy(push(&revoked)).await;
    assert_refused(r, Code::PermissionDenied, &["\"proglog-member\"", "admin"]);
    let r = acl(None)?.set_policy(push(&revoked)).await;
    assert_refused(r, Code::Unauthenticated, &["client certificate"]);
    reader.consume(first()).await?;

    // A model that does not load: refused, the policy in force stays.
    let bad = pb::SetPolicyRequest {
        model: "[request_definition]\nr = sub, obj, act\n".into(),
        policy: revoked.clone(),
    };
    let r = acl(Some("operator"))?.set_policy(bad).await;
    assert_refused(r, Code::InvalidArgument, &["pushed ACL"]);
    reader.consume(first()).await?;

    // The operator's push is in force when the call returns: the next call is refused.
    let mut op = acl(Some("operator"))?;
    assert!(op.set_policy(push(&revoked)).await?.into_inner().changed);
    let r = reader.consume(first()).await;
    assert_refused(r, Code::PermissionDenied, &["\"reader\"", "consume"]);
    c.log(Some("root"), 0)?.produce(record("b")).await?;
    assert!(!op.set_policy(push(&revoked)).await?.into_inner().changed);

    c.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plaintext_member_checks_the_token_and_has_no_policy_to_set() -> Result<()> {
    let c = common::TestCluster::start(1, |_| {}).await?;
    let ch = Channel::from_shared(format!("http://{}", c.member(1).addr))?
        .connect()
        .await?;
    let mut acl = AclClient::new(ch);
    let r = acl.set_policy(push(BOOK)).await;
    assert_refused(r, Code::Unauthenticated, &["authorization"]);
    let r = acl.set_policy(common::with_token(push(BOOK))).await;
    assert_refused(r, Code::FailedPrecondition, &["without TLS"]);
    c.shutdown().await
}
