//! `axoneme policy trace --listener` agrees with what a real connection through that listener
//! meets, for every kind of listener a process can be reached through without redirect rules:
//! a sidecar guarding the server (ingress), one that parses whatever policy says, one whose
//! `l7proto` conflicts with policy, and one guarding the client (egress). Each case is a source,
//! a listener and a request; the connection's fate (refused, request denied, request allowed)
//! is compared with the trace's answer.

mod common;

use std::process::Child;

use common::{
    agent_cli, connect_from, free_port, request, spawn_agent, temp_dir, wait_for_api, Upstream,
    LUKE,
};
use serde_json::Value;

const C3PO: &str = "127.0.0.3";

struct Agent {
    child: Child,
    dir: std::path::PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Listeners `sidecar` (ingress to r2d2), `parses` (ingress to `open`, which no policy selects,
/// parsing R2-D2), `mismatch` (ingress to r2d2, parsing memcache) and `luke-out` (luke's
/// egress), each with its port, all toward `upstream`.
async fn start(upstream: &Upstream) -> (Agent, [(&'static str, u16); 4]) {
    let dir = temp_dir("trace");
    let port = upstream.addr.port();
    let listeners = [
        ("sidecar", free_port()),
        ("parses", free_port()),
        ("mismatch", free_port()),
        ("luke-out", free_port()),
    ];
    let policy = format!(
        r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: r2d2-in}}
spec:
  endpointSelector: {{matchLabels: {{app: r2d2}}}}
  ingress:
    - fromEndpoints: [{{matchLabels: {{app: luke}}}}]
      toPorts: [{{ports: [{{port: "{port}"}}], rules: {{l7proto: r2d2, l7: [{{cmd: READ, file: "/public/.*"}}]}}}}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: luke-out}}
spec:
  endpointSelector: {{matchLabels: {{app: luke}}}}
  egress:
    - toEndpoints: [{{matchLabels: {{app: r2d2}}}}]
      toPorts: [{{ports: [{{port: "{port}"}}], rules: {{l7proto: r2d2, l7: [{{cmd: HALT}}]}}}}]
"#
    );
    std::fs::write(dir.join("policy.yaml"), policy).unwrap();
    let up = upstream.addr;
    let [sidecar, parses, mismatch, luke_out] = listeners.map(|(_, port)| port);
    std::fs::write(
        dir.join("config.yaml"),
        format!(
            r#"accessLog: {{path: access.log}}
api: {{socket: api.sock}}
endpoints:
  - {{name: r2d2, ips: ["127.0.0.1"], labels: {{app: r2d2}}}}
  - {{name: luke, ips: ["{LUKE}"], labels: {{app: luke}}}}
  - {{name: c3po, ips: ["{C3PO}"], labels: {{app: c3po}}}}
  - {{name: open, ips: ["127.0.0.5"], labels: {{app: open}}}}
policies: [policy.yaml]
listeners:
  - {{name: sidecar, listen: "127.0.0.1:{sidecar}", upstream: "{up}", endpoint: r2d2, direction: ingress}}
  - {{name: parses, listen: "127.0.0.1:{parses}", upstream: "{up}", endpoint: open, direction: ingress, l7proto: r2d2}}
  - {{name: mismatch, listen: "127.0.0.1:{mismatch}", upstream: "{up}", endpoint: r2d2, direction: ingress, l7proto: memcache}}
  - {{name: luke-out, listen: "127.0.0.1:{luke_out}", upstream: "{up}", endpoint: luke, direction: egress}}
"#
        ),
    )
    .unwrap();
    let agent = Agent {
        child: spawn_agent(&dir),
        dir,
    };
    wait_for_api(&agent.dir).await;
    (agent, listeners)
}

/// What a real connection from `source` through the listener on `port` meets with `line`.
async fn real(source: &str, port: u16, line: &str) -> &'static str {
    let mut stream = connect_from(source, format!("127.0.0.1:{port}").parse().unwrap()).await;
    match request(&mut stream, &format!("{line}\r\n")).await.as_str() {
        "" => "refused",
        "ERROR\r\n" => "denied",
        reply if reply == format!("OK {line}\r\n") => "allowed",
        reply => panic!("unexpected reply {reply:?}"),
    }
}

/// What `policy trace --listener` answers for the same connection and request.
fn traced(agent: &Agent, listener: &str, args: &[&str], line: &str) -> &'static str {
    let mut fields = line.split(' ');
    let cmd = format!("cmd={}", fields.next().unwrap());
    let file = fields.next().map(|f| format!("file={f}"));
    let mut all = vec!["policy", "trace", "--listener", listener, "-o", "json"];
    all.extend(args);
    all.push(&cmd);
    all.extend(file.as_deref());
    let output = agent_cli(&agent.dir, &all);
    assert!(
        output.status.success(),
        "{all:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    match (answer["allowed"].as_bool(), answer["stage"].as_str()) {
        (Some(true), _) => "allowed",
        (Some(false), Some("l7")) => "denied",
        (Some(false), Some("l3l4")) => "refused",
        _ => panic!("unexpected answer {answer}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_and_a_real_connection_agree_for_every_listener_kind() {
    let upstream = Upstream::start().await;
    let (agent, listeners) = start(&upstream).await;
    let port = upstream.addr.port().to_string();
    let port_of = |name: &str| listeners.iter().find(|(n, _)| *n == name).unwrap().1;
    let ingress = |source: &'static str, endpoint: &'static str| {
        vec![
            "--src-address".to_owned(),
            source.to_owned(),
            "--dst-endpoint".to_owned(),
            endpoint.to_owned(),
            "--dport".to_owned(),
            port.clone(),
        ]
    };
    let egress_of_luke = vec![
        "--src-address".to_owned(),
        "127.0.0.1".to_owned(),
        "--dst-endpoint".to_owned(),
        "luke".to_owned(),
        "--dport".to_owned(),
        port.clone(),
        "--egress".to_owned(),
    ];
    let cases = [
        (
            LUKE,
            "sidecar",
            ingress(LUKE, "r2d2"),
            "READ /public/a",
            "allowed",
        ),
        (
            LUKE,
            "sidecar",
            ingress(LUKE, "r2d2"),
            "WRITE /public/a",
            "denied",
        ),
        (
            C3PO,
            "sidecar",
            ingress(C3PO, "r2d2"),
            "READ /public/a",
            "refused",
        ),
        (LUKE, "parses", ingress(LUKE, "open"), "WRITE /x", "allowed"),
        (
            LUKE,
            "mismatch",
            ingress(LUKE, "r2d2"),
            "READ /public/a",
            "refused",
        ),
        (LUKE, "luke-out", egress_of_luke.clone(), "HALT", "allowed"),
        (LUKE, "luke-out", egress_of_luke, "READ /public/a", "denied"),
    ];
    for (source, listener, args, line, expected) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let met = real(source, port_of(listener), line).await;
        let answer = traced(&agent, listener, &args, line);
        assert_eq!(
            (met, answer),
            (expected, expected),
            "{source} through {listener}: {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_refuses_an_unknown_listener_or_one_of_the_other_direction() {
    let upstream = Upstream::start().await;
    let (agent, _) = start(&upstream).await;
    let port = upstream.addr.port().to_string();
    let run = |listener: &str, egress: bool| {
        let mut args = vec![
            "policy",
            "trace",
            "--listener",
            listener,
            "--src-address",
            LUKE,
            "--dst-endpoint",
            "r2d2",
            "--dport",
            &port,
        ];
        if egress {
            args.push("--egress");
        }
        agent_cli(&agent.dir, &args)
    };
    let unknown = run("nowhere", false);
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("nowhere"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
    let wrong = run("sidecar", true);
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("guards ingress connections"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
}
