//! `proglog servers`: the members as the cluster reports them, which one leads, and which ones
//! this client reads from.

use anyhow::Result;

use super::output::{print_json, Format, Table};
use super::Args;
use crate::resolver::{Endpoint, Members};
use crate::Server;

/// The endpoint the client knows for `s`, if any. NB: under --cluster the client dials the pod
/// IPs of the EndpointSlices while GetServers names members by their DNS names, so a member is
/// also matched by its name (the pod name) or the first label of its DNS name.
fn endpoint_of<'a>(s: &Server, routed: &'a Members) -> Option<&'a Endpoint> {
    let host = s.rpc_addr.split(['.', ':']).next().unwrap_or_default();
    routed.endpoints.iter().find(|e| {
        e.addr == s.rpc_addr || (!e.name.is_empty() && (e.name == s.id || e.name == host))
    })
}

/// True when the client spreads its reads over `s` (a ready follower it knows).
fn reads_from(s: &Server, routed: &Members) -> bool {
    endpoint_of(s, routed).is_some_and(|e| e.ready && !e.is_leader)
}

pub(super) async fn servers(args: &Args) -> Result<()> {
    let client = args.client().await?;
    let servers = client.servers().await?;
    let routed = client.members();
    match args.output {
        Format::Json => {
            let reads: Vec<&str> = servers
                .iter()
                .filter(|s| reads_from(s, &routed))
                .map(|s| s.id.as_str())
                .collect();
            print_json(&serde_json::json!({
                "servers": servers, "resolved": routed, "reads_from": reads,
            }))
        }
        Format::Table => {
            let mut t = Table::new(&["ID", "NODE", "ADDRESS", "ROLE", "VOTER", "READS"]);
            for s in &servers {
                t.row(vec![
                    s.id.clone(),
                    s.node_id.to_string(),
                    s.rpc_addr.clone(),
                    if s.is_leader { "leader" } else { "follower" }.into(),
                    if s.voter { "yes" } else { "learner" }.into(),
                    if reads_from(s, &routed) { "yes" } else { "no" }.into(),
                ]);
            }
            t.print();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(id: &str, addr: &str, is_leader: bool) -> Server {
        Server {
            id: id.into(),
            node_id: 1,
            rpc_addr: addr.into(),
            is_leader,
            voter: true,
        }
    }

    fn endpoint(addr: &str, name: &str, is_leader: bool) -> Endpoint {
        Endpoint {
            addr: addr.into(),
            name: name.into(),
            is_leader,
            ready: true,
            server_name: None,
        }
    }

    /// Under --cluster: slices carry pod IPs, GetServers DNS names; followers still match.
    #[test]
    fn followers_match_by_pod_name_when_addresses_differ() {
        let routed = Members::new(vec![
            endpoint("10.1.0.5:8400", "demo-0", true),
            endpoint("10.1.0.6:8400", "demo-1", false),
            endpoint("10.1.0.7:8400", "", false),
        ]);
        let dns = |pod: &str| format!("{pod}.demo-headless.logs.svc:8400");
        assert!(!reads_from(
            &server("demo-0", &dns("demo-0"), true),
            &routed
        ));
        assert!(reads_from(
            &server("demo-1", &dns("demo-1"), false),
            &routed
        ));
        // Matched by the DNS name's first label when the member has no name of its own.
        assert!(reads_from(&server("2", &dns("demo-1"), false), &routed));
        // An endpoint without a name matches only by address.
        assert!(!reads_from(
            &server("demo-2", &dns("demo-2"), false),
            &routed
        ));
        assert!(reads_from(&server("3", "10.1.0.7:8400", false), &routed));
    }
}
