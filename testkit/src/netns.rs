//! Network namespaces for partitions, created and removed by us (root only): a hub namespace
//! holding a bridge, one namespace per member and one for the clients, each joined to the bridge
//! by a veth pair created inside the hub. Member `i` gets `10.77.<net>.<i>`, clients
//! `10.77.<net>.100`. A partition is a pair of iptables DROP rules inside a member's namespace;
//! healing flushes its filter table. Nothing touches the host's own namespace or rules.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The port members listen on inside their namespaces.
pub const PORT: u16 = 8400;

fn run(args: &[&str]) -> Result<()> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A set of namespaces for `members` members and the clients; removed on drop.
#[derive(Debug)]
pub struct Net {
    pub prefix: String,
    pub net: u8,
    pub members: u64,
    created: Vec<String>,
}

impl Net {
    /// True when this process may create namespaces (root with `ip` and `iptables`).
    pub fn available() -> bool {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        let tools = ["ip", "iptables"].iter().all(|t| {
            Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        });
        root && tools
    }

    /// Creates the namespaces: `prefix` names them (`<prefix>h`, `<prefix>c`, `<prefix>m<i>`).
    pub fn create(prefix: &str, net: u8, members: u64) -> Result<Net> {
        let mut n = Net {
            prefix: prefix.to_string(),
            net,
            members,
            created: Vec::new(),
        };
        let hub = n.hub();
        n.add_ns(&hub)?;
        run(&["ip", "-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        run(&["ip", "-n", &hub, "link", "set", "br0", "up"])?;
        run(&["ip", "-n", &hub, "link", "set", "lo", "up"])?;
        for i in 1..=members {
            n.join(&n.member_ns(i), i as u8)?;
        }
        n.join(&n.client_ns(), 100)?;
        Ok(n)
    }

    /// The namespaces another process created (nothing is removed on drop).
    pub fn attach(prefix: &str, net: u8, members: u64) -> Net {
        Net {
            prefix: prefix.to_string(),
            net,
            members,
            created: Vec::new(),
        }
    }

    fn add_ns(&mut self, name: &str) -> Result<()> {
        run(&["ip", "netns", "add", name])?;
        self.created.push(name.to_string());
        Ok(())
    }

    fn join(&mut self, ns: &str, host: u8) -> Result<()> {
        self.add_ns(ns)?;
        let hub = self.hub();
        let port = format!("v{host}");
        run(&[
            "ip", "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
            "netns", ns,
        ])?;
        run(&[
            "ip", "-n", &hub, "link", "set", &port, "master", "br0", "up",
        ])?;
        let ip = format!("{}/24", self.ip(host));
        run(&["ip", "-n", ns, "addr", "add", &ip, "dev", "eth0"])?;
        run(&["ip", "-n", ns, "link", "set", "eth0", "up"])?;
        run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        Ok(())
    }

    fn hub(&self) -> String {
        format!("{}h", self.prefix)
    }

    /// The namespace of member `id`.
    pub fn member_ns(&self, id: u64) -> String {
        format!("{}m{id}", self.prefix)
    }

    /// The clients' namespace.
    pub fn client_ns(&self) -> String {
        format!("{}c", self.prefix)
    }

    fn ip(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.net, host)
    }

    /// The address member `id` listens on.
    pub fn member_addr(&self, id: u64) -> SocketAddr {
        SocketAddr::new(self.ip(id as u8).into(), PORT)
    }

    /// Drops all traffic between member `id` and every other member (clients still reach it).
    pub fn isolate(&self, id: u64) -> Result<()> {
        let ns = self.member_ns(id);
        for other in (1..=self.members).filter(|&o| o != id) {
            let ip = self.ip(other as u8).to_string();
            run(&[
                "ip", "netns", "exec", &ns, "iptables", "-A", "INPUT", "-s", &ip, "-j", "DROP",
            ])?;
            run(&[
                "ip", "netns", "exec", &ns, "iptables", "-A", "OUTPUT", "-d", &ip, "-j", "DROP",
            ])?;
        }
        Ok(())
    }

    /// Removes every partition rule of member `id`.
    pub fn heal(&self, id: u64) -> Result<()> {
        run(&["ip", "netns", "exec", &self.member_ns(id), "iptables", "-F"])
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            let _ = run(&["ip", "netns", "del", ns]);
        }
    }
}
