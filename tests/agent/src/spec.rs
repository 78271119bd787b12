//! Pure translation of a pod spec into what a process needs: argv and environment.
//!
//! No I/O here: Secrets and ConfigMaps the pod refers to are fetched by the caller and passed in.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};

/// Secret and ConfigMap data a pod refers to, by name (values as text).
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Secret name -> key -> value.
    pub secrets: BTreeMap<String, BTreeMap<String, String>>,
    /// ConfigMap name -> key -> value.
    pub config_maps: BTreeMap<String, BTreeMap<String, String>>,
}

/// Facts about the running pod that the downward API exposes.
#[derive(Debug, Clone)]
pub struct PodFacts {
    /// The pod's IP.
    pub pod_ip: String,
    /// The node's IP.
    pub host_ip: String,
    /// Where pods reach the API server.
    pub api_host: String,
    /// Its port.
    pub api_port: u16,
}

/// Replaces `$(NAME)` with the value of `NAME` in `env` (left alone when undefined) and `$$` with `$`,
/// as Kubernetes does for command, args and env values.
pub fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(body) = tail.strip_prefix("$(") {
            match body.find(')') {
                Some(end) => {
                    let name = &body[..end];
                    match env.iter().rev().find(|(k, _)| k == name) {
                        Some((_, v)) => out.push_str(v),
                        None => out.push_str(&tail[..end + 3]),
                    }
                    rest = &body[end + 1..];
                }
                None => {
                    out.push_str(tail);
                    rest = "";
                }
            }
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// The value of a downward-API `fieldPath` for `pod`.
pub fn field_value(pod: &Pod, facts: &PodFacts, path: &str) -> Result<String, String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let quoted = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix("']"))
            .map(str::to_string)
    };
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into()),
        "status.podIP" | "status.podIPs" => facts.pod_ip.clone(),
        "status.hostIP" | "status.hostIPs" => facts.host_ip.clone(),
        "metadata.labels" | "metadata.annotations" => {
            let m = if path == "metadata.labels" {
                &meta.labels
            } else {
                &meta.annotations
            };
            m.iter()
                .flatten()
                .map(|(k, v)| format!("{k}={v:?}"))
                .collect::<Vec<_>>()
                .join("\n")
        }
        _ => {
            if let Some(k) = quoted("metadata.labels['") {
                meta.labels
                    .as_ref()
                    .and_then(|l| l.get(&k).cloned())
                    .unwrap_or_default()
            } else if let Some(k) = quoted("metadata.annotations['") {
                meta.annotations
                    .as_ref()
                    .and_then(|l| l.get(&k).cloned())
                    .unwrap_or_default()
            } else {
                return Err(format!("unsupported fieldRef fieldPath {path:?}"));
            }
        }
    })
}

fn lookup(
    kind: &str,
    map: &BTreeMap<String, BTreeMap<String, String>>,
    name: &str,
    key: &str,
    optional: bool,
) -> Result<Option<String>, String> {
    match map.get(name).and_then(|d| d.get(key)) {
        Some(v) => Ok(Some(v.clone())),
        None if optional => Ok(None),
        None => Err(format!(
            "{kind} {name:?} has no key {key:?} (or does not exist)"
        )),
    }
}

/// The environment of `container`: the agent's base variables, `envFrom`, then `env`, in order.
pub fn environment(
    pod: &Pod,
    container: &Container,
    sources: &Sources,
    facts: &PodFacts,
) -> Result<Vec<(String, String)>, String> {
    let hostname = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    let mut env: Vec<(String, String)> = vec![
        (
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ),
        ("HOSTNAME".into(), hostname),
        ("HOME".into(), "/root".into()),
        ("KUBERNETES_SERVICE_HOST".into(), facts.api_host.clone()),
        ("KUBERNETES_SERVICE_PORT".into(), facts.api_port.to_string()),
        (
            "KUBERNETES_SERVICE_PORT_HTTPS".into(),
            facts.api_port.to_string(),
        ),
    ];
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (kind, map, name, optional) = if let Some(s) = &from.secret_ref {
            (
                "Secret",
                &sources.secrets,
                s.name.clone(),
                s.optional.unwrap_or(false),
            )
        } else if let Some(c) = &from.config_map_ref {
            (
                "ConfigMap",
                &sources.config_maps,
                c.name.clone(),
                c.optional.unwrap_or(false),
            )
        } else {
            continue;
        };
        match map.get(&name) {
            Some(data) => env.extend(
                data.iter()
                    .map(|(k, v)| (format!("{prefix}{k}"), v.clone())),
            ),
            None if optional => {}
            None => return Err(format!("{kind} {name:?} not found (envFrom)")),
        }
    }
    for var in container.env.iter().flatten() {
        let value = if let Some(from) = &var.value_from {
            if let Some(f) = &from.field_ref {
                Some(field_value(pod, facts, &f.field_path)?)
            } else if let Some(s) = &from.secret_key_ref {
                lookup(
                    "Secret",
                    &sources.secrets,
                    &s.name,
                    &s.key,
                    s.optional.unwrap_or(false),
                )?
            } else if let Some(c) = &from.config_map_key_ref {
                lookup(
                    "ConfigMap",
                    &sources.config_maps,
                    &c.name,
                    &c.key,
                    c.optional.unwrap_or(false),
                )?
            } else if let Some(r) = &from.resource_field_ref {
                Some(resource_value(container, &r.resource))
            } else {
                return Err(format!("env {:?}: unsupported valueFrom", var.name));
            }
        } else {
            Some(expand(var.value.as_deref().unwrap_or(""), &env))
        };
        if let Some(v) = value {
            env.push((var.name.clone(), v));
        }
    }
    Ok(env)
}

/// A `resourceFieldRef` value: the container's quantity, or the node's capacity when unset.
fn resource_value(container: &Container, resource: &str) -> String {
    let (section, name) = resource.split_once('.').unwrap_or(("limits", resource));
    let r = container.resources.as_ref();
    let map = if section == "requests" {
        r.and_then(|r| r.requests.as_ref())
    } else {
        r.and_then(|r| r.limits.as_ref())
    };
    match map.and_then(|m| m.get(name)) {
        Some(q) => q.0.clone(),
        None if name == "cpu" => "16".into(),
        None => "34359738368".into(),
    }
}

/// The program and arguments of `container`, whose image runs `binary`:
/// - no `command`: `binary` with `args`;
/// - `command[0]` names the image's binary (same file name): `binary` with the rest of command + args;
/// - otherwise `command[0]` is a host program (looked up on `PATH` unless absolute).
pub fn argv(
    container: &Container,
    binary: &Path,
    env: &[(String, String)],
) -> Result<Vec<String>, String> {
    let x = |v: &Vec<String>| v.iter().map(|s| expand(s, env)).collect::<Vec<_>>();
    let command = container.command.as_ref().map(x).unwrap_or_default();
    let args = container.args.as_ref().map(x).unwrap_or_default();
    let bin = binary.to_string_lossy().to_string();
    let mut out = match command.split_first() {
        None => vec![bin],
        Some((first, rest)) => {
            let same = Path::new(first).file_name() == binary.file_name();
            let mut v = vec![if same { bin } else { host_program(first)? }];
            v.extend(rest.iter().cloned());
            v
        }
    };
    out.extend(args);
    Ok(out)
}

fn host_program(name: &str) -> Result<String, String> {
    if name.starts_with('/') {
        return if Path::new(name).exists() {
            Ok(name.into())
        } else {
            Err(format!("{name} does not exist on this node"))
        };
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<PathBuf>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .map(|p| p.to_string_lossy().to_string())
        .ok_or_else(|| {
            format!("command {name:?} is neither the image's binary nor a program on this node")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        EnvVar, EnvVarSource, ObjectFieldSelector, PodSpec, SecretKeySelector,
    };

    fn facts() -> PodFacts {
        PodFacts {
            pod_ip: "127.10.0.5".into(),
            host_ip: "127.0.0.1".into(),
            api_host: "127.0.0.1".into(),
            api_port: 16443,
        }
    }

    fn pod() -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some("web-0".into());
        p.metadata.namespace = Some("ns".into());
        p.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
        p.spec = Some(PodSpec {
            node_name: Some("n1".into()),
            ..Default::default()
        });
        p
    }

    fn field(name: &str, path: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: path.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn expansion() {
        let env = vec![("A".to_string(), "1".to_string())];
        assert_eq!(expand("x$(A)y$(B)z$$(A)", &env), "x1y$(B)z$(A)");
        assert_eq!(expand("$(unterminated", &env), "$(unterminated");
        assert_eq!(expand("cost $5", &env), "cost $5");
    }

    #[test]
    fn downward_api_secrets_and_expansion() {
        let c = Container {
            name: "c".into(),
            env: Some(vec![
                field("POD_IP", "status.podIP"),
                field("POD_NAME", "metadata.name"),
                field("APP", "metadata.labels['app']"),
                EnvVar {
                    name: "ADDR".into(),
                    value: Some("$(POD_IP):8080".into()),
                    ..Default::default()
                },
                EnvVar {
                    name: "PASSWORD".into(),
                    value_from: Some(EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: "s".into(),
                            key: "pw".into(),
                            optional: None,
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        let mut sources = Sources::default();
        sources.secrets.insert(
            "s".into(),
            [("pw".to_string(), "hunter2".to_string())].into(),
        );
        let env = environment(&pod(), &c, &sources, &facts()).unwrap();
        let get = |k: &str| {
            env.iter()
                .rev()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("POD_IP"), Some("127.10.0.5"));
        assert_eq!(get("POD_NAME"), Some("web-0"));
        assert_eq!(get("APP"), Some("web"));
        assert_eq!(get("ADDR"), Some("127.10.0.5:8080"));
        assert_eq!(get("PASSWORD"), Some("hunter2"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT"), Some("16443"));
        assert_eq!(get("HOSTNAME"), Some("web-0"));
        let missing = environment(&pod(), &c, &Sources::default(), &facts()).unwrap_err();
        assert!(missing.contains("Secret \"s\""), "{missing}");
    }

    #[test]
    fn argv_rules() {
        let bin = Path::new("/t/debug/logserver");
        let mut c = Container {
            name: "c".into(),
            args: Some(vec!["--id=$(N)".into()]),
            ..Default::default()
        };
        let env = vec![("N".to_string(), "3".to_string())];
        assert_eq!(
            argv(&c, bin, &env).unwrap(),
            ["/t/debug/logserver", "--id=3"]
        );
        c.command = Some(vec!["/usr/local/bin/logserver".into(), "serve".into()]);
        assert_eq!(
            argv(&c, bin, &env).unwrap(),
            ["/t/debug/logserver", "serve", "--id=3"]
        );
        c.command = Some(vec!["sh".into(), "-c".into()]);
        assert!(argv(&c, bin, &env).unwrap()[0].ends_with("/sh"));
        c.command = Some(vec!["no-such-program-xyz".into()]);
        assert!(argv(&c, bin, &env).is_err());
    }
}
