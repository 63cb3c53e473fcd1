//! The simulated policies the cluster benches share: one per label set of simulated endpoints.

/// Policy `k`: r2d2 on `port` of the `app=r2d2` endpoints takes READs of files matching
/// `files` from the endpoints of label set `k` (`app=sim-k`), as a JSON document (as the agents
/// write imported policies).
pub(crate) fn policy(k: usize, port: u16, files: &str) -> String {
    serde_json::json!({
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": format!("sim-{k}")},
        "spec": {
            "endpointSelector": {"matchLabels": {"app": "r2d2"}},
            "ingress": [{
                "fromEndpoints": [{"matchLabels": {"app": format!("sim-{k}")}}],
                "toPorts": [{
                    "ports": [{"port": port.to_string()}],
                    "rules": {"l7proto": "r2d2", "l7": [{"cmd": "READ", "file": files}]}
                }]
            }]
        }
    })
    .to_string()
}
