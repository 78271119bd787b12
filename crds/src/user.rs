//! The `ProgLogUser` custom resource (`proglog.dev/v1alpha1`, short name `pluser`): an
//! application's identity on one ProgLog. The operator issues it a client certificate (subject
//! [`crate::names::user_subject`], `<namespace>/<name>`) signed by the ProgLog's CA into a Secret
//! the application mounts, grants it the listed actions in the ProgLog's ACL policy, and lets the
//! listed ServiceAccounts read the ProgLog's discovery objects (EndpointSlices, the ProgLog).
//!
//! The schema refuses what the operator could not act on, each rule with a message that says what
//! to fix: no action or an unknown one, a ProgLog or ServiceAccount name that cannot be a name, a
//! change of the ProgLog or the Secret (the old ones would be left behind; make a new user).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Kind of the resource.
pub const USER_KIND: &str = "ProgLogUser";

/// Condition reason: the certificate is issued and the policy and binding are in place.
pub const REASON_ISSUED: &str = "Issued";
/// Condition reason: `spec.proglog` names no ProgLog in the namespace.
pub const REASON_PROGLOG_NOT_FOUND: &str = "ProgLogNotFound";
/// Condition reason: the ProgLog has no CA (yet): its Secret is missing or unreadable.
pub const REASON_CA_NOT_READY: &str = "CANotReady";
/// Condition reason: the ProgLog runs without TLS, so it takes no certificates and no policy.
pub const REASON_TLS_DISABLED: &str = "TLSDisabled";
/// Condition reason: the Secret to write exists and belongs to someone else.
pub const REASON_SECRET_CONFLICT: &str = "SecretConflict";
/// Condition reason: an API call or the issuing failed (the message says which).
pub const REASON_FAILED: &str = "ReconcileFailed";

/// What a user may do on the Log service (the actions of the ACL policy).
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum UserAction {
    /// Append records (Produce, ProduceBatch, ProduceStream).
    Produce,
    /// Read records (Consume, ConsumeStream).
    Consume,
}

impl UserAction {
    /// The action as the ACL policy spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            UserAction::Produce => "produce",
            UserAction::Consume => "consume",
        }
    }
}

/// An application's identity on one ProgLog.
// The printcolumn(...) groups repeat `type_ = ...` by design; clippy reads them as one attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "proglog.dev",
    version = "v1alpha1",
    kind = "ProgLogUser",
    plural = "proglogusers",
    shortname = "pluser",
    namespaced,
    status = "ProgLogUserStatus",
    printcolumn(
        name = "ProgLog",
        type_ = "string",
        json_path = ".spec.proglog",
        description = "The ProgLog this user may call"
    ),
    printcolumn(
        name = "Actions",
        type_ = "string",
        json_path = ".spec.actions",
        description = "What the user may do"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Certificate issued, policy and binding in place"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "(has(self.secretName) ? self.secretName : '') == (has(oldSelf.secretName) ? oldSelf.secretName : '')"
).message("spec.secretName cannot be changed; create another ProgLogUser (or delete and recreate this one)"))]
pub struct ProgLogUserSpec {
    /// Name of the ProgLog (in this namespace) the user may call. Fixed at creation.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(
        validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message(
            "spec.proglog must be the name of a ProgLog in this namespace (lowercase letters, digits and '-')"
        ),
        validation = Rule::new("self == oldSelf").message(
            "spec.proglog cannot be changed; create another ProgLogUser for the other ProgLog"
        )
    )]
    pub proglog: String,

    /// What the user may do: `produce`, `consume` or both.
    #[schemars(length(max = 2), extend("x-kubernetes-list-type" = "set"))]
    #[x_kube(validation = Rule::new("size(self) > 0").message(
        "spec.actions must list at least one of produce, consume"
    ))]
    pub actions: Vec<UserAction>,

    /// ServiceAccounts (in this namespace) of the application's pods: they may read the
    /// ProgLog's discovery objects (EndpointSlices and the ProgLog), as the client's resolver
    /// does. Empty: no binding.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 253)))]
    #[x_kube(validation = Rule::new(
        "self.all(s, s.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$'))"
    ).message(
        "spec.serviceAccounts must hold ServiceAccount names (lowercase letters, digits, '-' and '.')"
    ))]
    pub service_accounts: Vec<String>,

    /// The Secret the certificate goes into (keys `ca.pem`, `tls.crt`, `tls.key`). Default:
    /// `<user>-proglog-tls`. Fixed at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')").message(
        "spec.secretName must be a Secret name (lowercase letters, digits, '-' and '.')"
    ))]
    pub secret_name: Option<String>,
}

impl ProgLogUserSpec {
    /// The Secret the certificate goes into, for user `user`.
    pub fn secret(&self, user: &str) -> String {
        self.secret_name
            .clone()
            .unwrap_or_else(|| crate::names::user_secret(user))
    }
}

/// What the operator observed of a ProgLogUser.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProgLogUserStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (Kubernetes API conventions): True once the certificate is issued and the policy
    /// and binding are in place; False with a reason (`ProgLogNotFound`, `TLSDisabled`,
    /// `CANotReady`, `SecretConflict`, `ReconcileFailed`) and a message saying what to do.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The subject (certificate CN) the ACL policy names: `<namespace>/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The Secret holding the certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// When the certificate ends (RFC 3339); the operator renews it well before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn a_spec_reads_actions_in_lower_case_and_defaults_the_rest() {
        let spec: ProgLogUserSpec = serde_json::from_value(serde_json::json!({
            "proglog": "demo", "actions": ["produce", "consume"]
        }))
        .unwrap();
        assert_eq!(spec.actions, [UserAction::Produce, UserAction::Consume]);
        assert!(spec.service_accounts.is_empty());
        assert_eq!(spec.secret("alice"), "alice-proglog-tls");
        let bad = serde_json::from_value::<ProgLogUserSpec>(serde_json::json!({
            "proglog": "demo", "actions": ["write"]
        }));
        assert!(bad.is_err());
    }

    #[test]
    fn the_crd_has_columns_enum_and_rules() {
        let crd = serde_json::to_value(ProgLogUser::crd()).unwrap();
        let v = &crd["spec"]["versions"][0];
        assert!(v["subresources"]["status"].is_object());
        let cols: Vec<&str> = v["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(cols, ["ProgLog", "Actions", "Ready", "Age"]);
        assert_eq!(crd["spec"]["names"]["shortNames"][0], "pluser");
        let spec = &v["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let actions = &spec["properties"]["actions"];
        assert_eq!(
            actions["items"]["enum"],
            serde_json::json!(["produce", "consume"])
        );
        assert_eq!(actions["x-kubernetes-list-type"], "set");
        assert_eq!(
            spec["required"],
            serde_json::json!(["actions", "proglog"]),
            "proglog and actions are required"
        );
        let text = serde_json::to_string(&crd).unwrap();
        for rule in [
            "size(self) > 0",
            "spec.proglog cannot be changed",
            "spec.secretName cannot be changed",
            "spec.serviceAccounts must hold ServiceAccount names",
        ] {
            assert!(text.contains(rule), "missing rule {rule:?}");
        }
    }
}
