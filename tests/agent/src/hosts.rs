//! Hosts files that stand in for cluster DNS.
//!
//! The agent keeps one file per namespace (`hosts/<namespace>`, bind-mounted over `/etc/hosts` in that
//! namespace's pods, so short names such as `<service>` work there) and one with fully qualified names
//! only (`hosts/all`, for tests on the host). Names:
//! - `<hostname>.<subdomain>.<ns>.svc.cluster.local` for a pod with `hostname` and `subdomain` set
//!   (StatefulSet pods), plus `.svc`/`<ns>` shortenings;
//! - `<service>.<ns>.svc.cluster.local` for each Service, resolving to the ready addresses of its
//!   EndpointSlices (there is no kube-proxy, so a ClusterIP is not reachable: the name goes straight to
//!   the endpoints), which covers selectorless Services whose slices a controller writes;
//! - `kubernetes.default.svc.cluster.local` to the API server address.
//!
//! NB: a bind-mounted file keeps its inode, so files are rewritten in place, never renamed over.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;

use crate::{Error, Result};

/// One pod as far as names go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodName {
    /// Namespace.
    pub namespace: String,
    /// The pod's IP.
    pub ip: String,
    /// `spec.hostname` (or the pod name).
    pub hostname: String,
    /// `spec.subdomain`, if set.
    pub subdomain: Option<String>,
}

/// One Service as far as names go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceName {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Ready addresses from its EndpointSlices.
    pub addresses: BTreeSet<String>,
}

/// Name -> addresses, in a stable order.
type Names = BTreeMap<String, BTreeSet<String>>;

fn add(names: &mut Names, name: String, ip: &str) {
    names.entry(name).or_default().insert(ip.to_string());
}

/// The fully qualified names of pods and services plus, per namespace, the shorter forms.
fn collect(
    pods: &[PodName],
    services: &[ServiceName],
    api_ip: &str,
) -> (Names, BTreeMap<String, Names>) {
    let mut fq = Names::new();
    let mut short: BTreeMap<String, Names> = BTreeMap::new();
    add(
        &mut fq,
        "kubernetes.default.svc.cluster.local".into(),
        api_ip,
    );
    for p in pods {
        if let Some(sub) = &p.subdomain {
            let base = format!("{}.{}.{}", p.hostname, sub, p.namespace);
            add(&mut fq, format!("{base}.svc.cluster.local"), &p.ip);
            let s = short.entry(p.namespace.clone()).or_default();
            add(s, format!("{}.{}", p.hostname, sub), &p.ip);
            add(s, base.clone(), &p.ip);
            add(s, format!("{base}.svc"), &p.ip);
        }
    }
    for svc in services {
        let base = format!("{}.{}", svc.name, svc.namespace);
        for ip in &svc.addresses {
            add(&mut fq, format!("{base}.svc.cluster.local"), ip);
            let s = short.entry(svc.namespace.clone()).or_default();
            add(s, svc.name.clone(), ip);
            add(s, base.clone(), ip);
            add(s, format!("{base}.svc"), ip);
        }
    }
    (fq, short)
}

fn render(names: &Names) -> String {
    let mut out =
        String::from("# written by devcluster-agent\n127.0.0.1 localhost\n::1 localhost\n");
    for (name, ips) in names {
        for ip in ips {
            out.push_str(&format!("{ip} {name}\n"));
        }
    }
    out
}

/// The text of every hosts file: `"all"` plus one per namespace in `namespaces`.
pub fn render_all(
    pods: &[PodName],
    services: &[ServiceName],
    namespaces: &BTreeSet<String>,
    api_ip: &str,
) -> BTreeMap<String, String> {
    let (fq, short) = collect(pods, services, api_ip);
    let mut files = BTreeMap::new();
    files.insert("all".to_string(), render(&fq));
    for ns in namespaces {
        let mut names = fq.clone();
        for (name, ips) in short.get(ns).cloned().unwrap_or_default() {
            names.entry(name).or_default().extend(ips);
        }
        files.insert(format!("ns-{ns}"), render(&names));
    }
    files
}

/// Writes `text` to `path` in place (keeping the inode) when it differs from what is there.
pub fn write_in_place(path: &Path, text: &str) -> Result<()> {
    if std::fs::read_to_string(path).ok().as_deref() == Some(text) {
        return Ok(());
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(Error::io(format!("opening {}", path.display())))?;
    f.write_all(text.as_bytes())
        .map_err(Error::io(format!("writing {}", path.display())))
}

/// Looks `name` up in a hosts file's text: every address listed for it.
pub fn lookup(text: &str, name: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let ip = parts.next()?;
            (!ip.starts_with('#') && parts.any(|n| n == name)).then(|| ip.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ip: &str) -> PodName {
        PodName {
            namespace: "ns".into(),
            ip: ip.into(),
            hostname: name.into(),
            subdomain: Some("web".into()),
        }
    }

    #[test]
    fn statefulset_and_service_names() {
        let pods = [pod("web-0", "127.10.0.2"), pod("web-1", "127.10.0.3")];
        let svc = ServiceName {
            namespace: "ns".into(),
            name: "web".into(),
            addresses: ["127.10.0.2".to_string()].into(),
        };
        let files = render_all(
            &pods,
            &[svc],
            &["ns".to_string(), "other".to_string()].into(),
            "127.0.0.1",
        );
        let all = &files["all"];
        assert_eq!(
            lookup(all, "web-1.web.ns.svc.cluster.local"),
            ["127.10.0.3"]
        );
        assert_eq!(
            lookup(all, "web.ns.svc.cluster.local"),
            ["127.10.0.2"],
            "the Service name goes to its ready endpoints"
        );
        assert_eq!(
            lookup(all, "kubernetes.default.svc.cluster.local"),
            ["127.0.0.1"]
        );
        assert!(
            lookup(all, "web").is_empty(),
            "no short names in the host file"
        );
        assert_eq!(lookup(&files["ns-ns"], "web"), ["127.10.0.2"]);
        assert_eq!(lookup(&files["ns-ns"], "web-0.web"), ["127.10.0.2"]);
        assert!(lookup(&files["ns-other"], "web").is_empty());
    }

    #[test]
    fn write_in_place_keeps_inode() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h");
        write_in_place(&p, "a long first text\n").unwrap();
        let ino = std::fs::metadata(&p).unwrap().ino();
        write_in_place(&p, "short\n").unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().ino(), ino);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "short\n");
    }
}
