//! Volume growth, as pure functions: what raising `spec.storage.size` asks of the members' volume
//! claims, and what the status says about it. The controller observes the claims and their
//! StorageClass, calls [`plan`], patches the claims it names and writes [`Plan::status`].
//!
//! A StatefulSet's volume claim templates cannot change, so the template keeps the size it was
//! created with and the operator grows each claim itself - only up, only when the StorageClass
//! says `allowVolumeExpansion: true`. A smaller size is refused (the volumes keep their size and
//! the status says why); so is growth on a class that cannot expand.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use proglog_crds::{StorageStatus, VolumeStatus};

/// The size in the (first) volume claim template of `sts`.
pub fn template_size(sts: &StatefulSet) -> Option<&Quantity> {
    let t = sts
        .spec
        .as_ref()?
        .volume_claim_templates
        .as_ref()?
        .first()?;
    t.spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")
}

/// Gives `desired` the volume claim size of the StatefulSet that exists (its templates cannot
/// change); the claims themselves are grown by [`plan`].
pub fn keep_template_size(desired: &mut StatefulSet, existing: Option<&StatefulSet>) {
    let Some(size) = existing.and_then(template_size).cloned() else {
        return;
    };
    let templates = desired
        .spec
        .as_mut()
        .and_then(|s| s.volume_claim_templates.as_mut());
    for t in templates.into_iter().flatten() {
        if let Some(requests) = (t.spec.as_mut())
            .and_then(|s| s.resources.as_mut())
            .and_then(|r| r.requests.as_mut())
        {
            requests.insert("storage".to_string(), size.clone());
        }
    }
}

/// Bytes of a Kubernetes quantity (`10Gi`, `500M`, `1.5Gi`, `1e9`, `2048`), rounded up; `None`
/// for anything else (or a negative value).
pub fn bytes(q: &str) -> Option<u128> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let scale: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse::<i32>().ok()?),
        _ => return None,
    };
    let n: f64 = num.parse().ok()?;
    (n.is_finite() && n >= 0.0).then(|| (n * scale).ceil() as u128)
}

/// One volume claim of a member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// Its name (`data-<pod>`).
    pub name: String,
    /// `spec.resources.requests.storage`.
    pub requested: String,
    /// `status.capacity.storage`, once bound.
    pub capacity: Option<String>,
}

/// What to do about the claims' size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Claims to patch to `spec.storage.size`.
    pub expand: Vec<String>,
    /// What the status says.
    pub status: StorageStatus,
}

/// Plans growth of `claims` to `size` (`spec.storage.size`). `expandable` is the StorageClass's
/// `allowVolumeExpansion` (`None`: unknown, e.g. the class cannot be read).
pub fn plan(size: &str, claims: &[Claim], expandable: Option<bool>) -> Plan {
    let volumes: Vec<VolumeStatus> = claims
        .iter()
        .map(|c| VolumeStatus {
            claim: c.name.clone(),
            requested: c.requested.clone(),
            capacity: c.capacity.clone(),
        })
        .collect();
    let status = |message: Option<String>| StorageStatus {
        size: size.to_string(),
        volumes: volumes.clone(),
        message,
    };
    let Some(want) = bytes(size) else {
        let why = format!("storage.size {size:?} is not a quantity the operator understands");
        return Plan {
            expand: Vec::new(),
            status: status(Some(why)),
        };
    };
    let smaller: Vec<&str> = (claims.iter())
        .filter(|c| bytes(&c.requested).is_some_and(|b| b > want))
        .map(|c| c.name.as_str())
        .collect();
    let grow: Vec<String> = (claims.iter())
        .filter(|c| bytes(&c.requested).is_some_and(|b| b < want))
        .map(|c| c.name.clone())
        .collect();
    let mut message = None;
    if !smaller.is_empty() {
        message = Some(format!(
            "storage.size {size} is smaller than the volumes of {}: volumes cannot shrink, so they keep their size; set storage.size back to at least their size",
            smaller.join(", ")
        ));
    }
    if grow.is_empty() {
        let pending: Vec<&str> = (claims.iter())
            .filter(|c| {
                c.capacity
                    .as_deref()
                    .and_then(bytes)
                    .is_some_and(|b| b < want)
            })
            .map(|c| c.name.as_str())
            .collect();
        if message.is_none() && !pending.is_empty() {
            message = Some(format!(
                "expanding to {size}: waiting for {}",
                pending.join(", ")
            ));
        }
        return Plan {
            expand: Vec::new(),
            status: status(message),
        };
    }
    match expandable {
        Some(true) => {
            let m = message.unwrap_or_else(|| format!("expanding to {size}: {}", grow.join(", ")));
            Plan {
                expand: grow,
                status: status(Some(m)),
            }
        }
        allowed => {
            let why = if allowed.is_none() {
                "cannot be read"
            } else {
                "does not allow expansion"
            };
            let m = format!(
                "storage.size {size} is larger than the volumes, but their StorageClass {why} (allowVolumeExpansion); they keep their size"
            );
            Plan {
                expand: Vec::new(),
                status: status(Some(m)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_statefulset_keeps_the_claim_size_it_was_created_with() {
        let pl: proglog_crds::ProgLog = serde_json::from_value(serde_json::json!({
            "apiVersion": "proglog.dev/v1alpha1", "kind": "ProgLog",
            "metadata": {"name": "demo", "namespace": "ns", "uid": "u"},
            "spec": {"storage": {"size": "1Gi"}}
        }))
        .unwrap();
        let old = crate::resources::Children::new(&pl, "cluster.local")
            .unwrap()
            .statefulset(3);
        let mut grown = pl.clone();
        grown.spec.storage.size = Quantity("5Gi".into());
        let mut new = crate::resources::Children::new(&grown, "cluster.local")
            .unwrap()
            .statefulset(3);
        assert_eq!(template_size(&new), Some(&Quantity("5Gi".into())));
        keep_template_size(&mut new, Some(&old));
        assert_eq!(template_size(&new), Some(&Quantity("1Gi".into())));
        // No StatefulSet yet: the spec's size.
        let mut fresh = crate::resources::Children::new(&grown, "cluster.local")
            .unwrap()
            .statefulset(3);
        keep_template_size(&mut fresh, None);
        assert_eq!(template_size(&fresh), Some(&Quantity("5Gi".into())));
    }

    fn claim(name: &str, requested: &str, capacity: Option<&str>) -> Claim {
        Claim {
            name: name.into(),
            requested: requested.into(),
            capacity: capacity.map(Into::into),
        }
    }

    #[test]
    fn quantities_parse_to_bytes() {
        assert_eq!(bytes("10Gi"), Some(10 << 30));
        assert_eq!(bytes("1.5Gi"), Some(3 << 29));
        assert_eq!(bytes("500M"), Some(500_000_000));
        assert_eq!(bytes("2048"), Some(2048));
        assert_eq!(bytes("1e9"), Some(1_000_000_000));
        assert_eq!(bytes("1k"), Some(1000));
        for bad in ["", "Gi", "10GB", "-1Gi", "ten"] {
            assert_eq!(bytes(bad), None, "{bad}");
        }
    }

    #[test]
    fn growth_expands_each_smaller_claim_when_the_class_allows() {
        let claims = [
            claim("data-demo-0", "1Gi", Some("1Gi")),
            claim("data-demo-1", "2Gi", Some("2Gi")),
        ];
        let p = plan("2Gi", &claims, Some(true));
        assert_eq!(p.expand, ["data-demo-0"]);
        assert_eq!(p.status.size, "2Gi");
        assert_eq!(p.status.volumes.len(), 2);
        assert!(p
            .status
            .message
            .unwrap()
            .contains("expanding to 2Gi: data-demo-0"));

        // Patched, not yet resized: the status waits for the volume.
        let claims = [claim("data-demo-0", "2Gi", Some("1Gi"))];
        let p = plan("2Gi", &claims, Some(true));
        assert!(p.expand.is_empty());
        assert!(p
            .status
            .message
            .unwrap()
            .contains("waiting for data-demo-0"));

        // Done: nothing to say.
        let p = plan(
            "2Gi",
            &[claim("data-demo-0", "2Gi", Some("2Gi"))],
            Some(true),
        );
        assert_eq!((p.expand.len(), p.status.message), (0, None));
    }

    #[test]
    fn shrinking_and_a_class_without_expansion_are_refused_with_a_message() {
        let claims = [claim("data-demo-0", "2Gi", Some("2Gi"))];
        let p = plan("1Gi", &claims, Some(true));
        assert!(p.expand.is_empty());
        let m = p.status.message.unwrap();
        assert!(
            m.contains("cannot shrink") && m.contains("data-demo-0"),
            "{m}"
        );

        let claims = [claim("data-demo-0", "1Gi", Some("1Gi"))];
        for (allowed, why) in [
            (Some(false), "does not allow expansion"),
            (None, "cannot be read"),
        ] {
            let p = plan("2Gi", &claims, allowed);
            assert!(p.expand.is_empty());
            let m = p.status.message.unwrap();
            assert!(m.contains(why), "{m}");
        }
        let p = plan("lots", &claims, Some(true));
        assert!(p.expand.is_empty() && p.status.message.unwrap().contains("not a quantity"));
    }
}
