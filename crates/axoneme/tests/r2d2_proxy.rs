//! The proxy end to end over real sockets: R2-D2 clients from distinct source addresses, a real
//! upstream, policy at L3/L4 and L7, half-close, a panicking parser, and the access log.

mod common;

use std::sync::Arc;

use axoneme::builtin_protocols;
use axoneme_sdk::{
    reject_unknown_keys, ConnectionMeta, Context, Flow, Input, L7RuleMap, Op, Parser, RuleError,
    TypedProtocol,
};
use common::{connect_from, read_line, request, TestProxy, Upstream, LUKE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const VADER: &str = "127.0.0.66";

fn config(upstream: &Upstream) -> String {
    format!(
        r#"
endpoints:
  - {{name: r2d2, ips: ["127.0.0.1"], labels: {{app: r2d2}}}}
  - {{name: luke, ips: ["{LUKE}"], labels: {{app: luke}}}}
  - {{name: vader, ips: ["{VADER}"], labels: {{app: vader}}}}
  - {{name: c3po, ips: ["127.0.0.3"], labels: {{app: c3po}}}}
listeners:
  - {{name: r2d2, listen: "127.0.0.1:0", upstream: "{up}", endpoint: r2d2, direction: ingress}}
  - {{name: c3po, listen: "127.0.0.1:0", upstream: "{up}", endpoint: c3po, direction: ingress}}
  - {{name: luke-out, listen: "127.0.0.1:0", upstream: "{up}", endpoint: luke, direction: egress}}
  - {{name: panicky, listen: "127.0.0.1:0", upstream: "{up}", endpoint: c3po, direction: ingress, l7proto: panicky}}
"#,
        up = upstream.addr
    )
}

fn policy(port: u16, rules: &str) -> String {
    format!(
        r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: r2d2-obeys-luke}}
spec:
  endpointSelector: {{matchLabels: {{app: r2d2}}}}
  ingress:
    - fromEndpoints: [{{matchLabels: {{app: luke}}}}]
      toPorts:
        - ports: [{{port: "{port}", protocol: TCP}}]
          rules:
            l7proto: r2d2
            l7:
{rules}
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: luke-talks-to-r2d2}}
spec:
  endpointSelector: {{matchLabels: {{app: luke}}}}
  egress:
    - toEndpoints: [{{matchLabels: {{app: r2d2}}}}]
      toPorts:
        - ports: [{{port: {port}}}]
          rules:
            l7proto: r2d2
            l7:
              - cmd: HALT
"#
    )
}

const READ_PUBLIC: &str =
    "              - {cmd: READ, file: \"/public/.*\"}\n              - {cmd: HALT}";

/// A protocol whose parser forwards lines and panics on `boom`.
struct Panicky;

struct PanickyParser;

impl Parser for PanickyParser {
    fn on_data(&mut self, _: &mut Context<'_>, _: Flow, _: bool, input: Input<'_>) -> Op {
        match input.find_crlf(0) {
            Some(_) if input.starts_with(b"boom") => panic!("boom requested"),
            Some(end) => Op::Pass(end + 2),
            None if input.is_empty() => Op::Nop,
            None => Op::More(1),
        }
    }
}

impl TypedProtocol for Panicky {
    type Rules = ();
    const TRACE_FIELDS: &'static [&'static str] = &[];

    fn name(&self) -> &'static str {
        "panicky"
    }

    fn parser(&self, _: &ConnectionMeta) -> Box<dyn Parser> {
        Box::new(PanickyParser)
    }

    fn compile(&self, rules: &[L7RuleMap]) -> Result<(), RuleError> {
        for (i, rule) in rules.iter().enumerate() {
            reject_unknown_keys(i, rule, &[])?;
        }
        Ok(())
    }
}

async fn setup(name: &str) -> (Upstream, TestProxy) {
    let upstream = Upstream::start().await;
    let mut registry = builtin_protocols(&Default::default());
    registry.register(Arc::new(Panicky)).unwrap();
    let proxy = TestProxy::start(
        name,
        &config(&upstream),
        &policy(upstream.addr.port(), READ_PUBLIC),
        registry,
    )
    .await;
    (upstream, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_requests_reach_the_upstream_byte_exact_and_denied_ones_get_error() {
    let (upstream, proxy) = setup("allow-deny").await;
    let mut luke = connect_from(LUKE, proxy.addr("r2d2")).await;
    assert_eq!(
        request(&mut luke, "READ /public/plans\r\n").await,
        "OK READ /public/plans\r\n"
    );
    assert_eq!(
        request(&mut luke, "READ /secret/deathstar\r\n").await,
        "ERROR\r\n"
    );
    assert_eq!(
        request(&mut luke, "WRITE /public/plans\r\n").await,
        "ERROR\r\n"
    );
    assert_eq!(request(&mut luke, "HALT\r\n").await, "OK HALT\r\n");
    // Pipelined: the denial lands between the two replies, where its reply would have been.
    luke.write_all(b"READ /public/a\r\nRESET\r\nREAD /public/b\r\n")
        .await
        .unwrap();
    assert_eq!(read_line(&mut luke).await, "OK READ /public/a\r\n");
    assert_eq!(read_line(&mut luke).await, "ERROR\r\n");
    assert_eq!(read_line(&mut luke).await, "OK READ /public/b\r\n");
    assert_eq!(
        upstream.received(),
        b"READ /public/plans\r\nHALT\r\nREAD /public/a\r\nREAD /public/b\r\n"
    );

    let entries = proxy.log_entries(7).await;
    let summary: Vec<(String, String, String)> = entries
        .iter()
        .map(|e| {
            (
                e["entry_type"].as_str().unwrap().to_owned(),
                e["generic_l7"]["fields"]["cmd"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                e["generic_l7"]["fields"]["file"]
                    .as_str()
                    .unwrap_or("-")
                    .to_owned(),
            )
        })
        .collect();
    let expected = [
        ("Request", "READ", "/public/plans"),
        ("Denied", "READ", "/secret/deathstar"),
        ("Denied", "WRITE", "/public/plans"),
        ("Request", "HALT", "-"),
        ("Request", "READ", "/public/a"),
        ("Denied", "RESET", "-"),
        ("Request", "READ", "/public/b"),
    ];
    assert_eq!(
        summary,
        expected
            .iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
            .collect::<Vec<_>>()
    );
    let first = &entries[0];
    assert_eq!(first["is_ingress"], true);
    assert_eq!(first["policy_name"], "r2d2-obeys-luke");
    assert_eq!(first["listener"], "r2d2");
    assert_eq!(first["generic_l7"]["proto"], "r2d2");
    assert!(first["source_address"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.21:"));
    assert_eq!(first["destination_address"], upstream.addr.to_string());
    assert_eq!(
        first["source_labels"],
        serde_json::json!(["app=luke", "k8s:io.kubernetes.pod.namespace=default"])
    );
    assert_eq!(
        first["destination_labels"],
        serde_json::json!(["app=r2d2", "k8s:io.kubernetes.pod.namespace=default"])
    );
    assert!(first["timestamp"].as_u64().unwrap() > 1_600_000_000_000_000_000);
    assert!(first["source_security_id"].as_u64().unwrap() >= 256);
    assert_ne!(
        first["source_security_id"],
        first["destination_security_id"]
    );
    assert_eq!(entries[1]["policy_name"], "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_without_an_l3_l4_allow_is_closed_at_connect() {
    let (upstream, proxy) = setup("refused").await;
    let mut vader = connect_from(VADER, proxy.addr("r2d2")).await;
    let mut rest = Vec::new();
    let _ = vader.write_all(b"READ /public/plans\r\n").await;
    let n = vader.read_to_end(&mut rest).await.unwrap_or(0);
    assert_eq!(n, 0, "nothing comes back");
    let entries = proxy.log_entries(1).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["entry_type"], "Denied");
    assert_eq!(
        entries[0]["source_labels"],
        serde_json::json!(["app=vader", "k8s:io.kubernetes.pod.namespace=default"])
    );
    assert!(
        entries[0]["generic_l7"]["fields"]["status"]
            .as_str()
            .unwrap()
            .len()
            > 5
    );
    assert_eq!(
        upstream.connection_count(),
        0,
        "the upstream never saw the connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_no_policy_selects_is_unaffected() {
    let (upstream, proxy) = setup("unselected").await;
    let mut anyone = connect_from(VADER, proxy.addr("c3po")).await;
    assert_eq!(
        request(&mut anyone, "not r2d2 at all\r\n").await,
        "OK not r2d2 at all\r\n"
    );
    assert_eq!(
        request(&mut anyone, "WRITE /secret\r\n").await,
        "OK WRITE /secret\r\n"
    );
    assert_eq!(upstream.received(), b"not r2d2 at all\r\nWRITE /secret\r\n");
    assert!(
        proxy.log_entries(0).await.is_empty(),
        "unparsed traffic is not logged per request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_listeners_enforce_the_clients_policy() {
    let (upstream, proxy) = setup("egress").await;
    let mut luke = connect_from(LUKE, proxy.addr("luke-out")).await;
    assert_eq!(request(&mut luke, "HALT\r\n").await, "OK HALT\r\n");
    assert_eq!(
        request(&mut luke, "READ /public/plans\r\n").await,
        "ERROR\r\n"
    );
    assert_eq!(upstream.received(), b"HALT\r\n");
    let entries = proxy.log_entries(2).await;
    assert_eq!(entries[0]["is_ingress"], false);
    assert_eq!(entries[0]["policy_name"], "luke-talks-to-r2d2");
    assert_eq!(
        entries[0]["source_labels"],
        serde_json::json!(["app=luke", "k8s:io.kubernetes.pod.namespace=default"])
    );
    assert_eq!(
        entries[0]["destination_labels"],
        serde_json::json!(["app=r2d2", "k8s:io.kubernetes.pod.namespace=default"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_passes_through_in_both_directions() {
    let (upstream, proxy) = setup("half-close").await;
    for listener in ["r2d2", "c3po"] {
        let before = upstream.connection_count();
        let mut luke = connect_from(LUKE, proxy.addr(listener)).await;
        luke.write_all(b"READ /public/plans\r\n").await.unwrap();
        luke.shutdown().await.unwrap();
        let mut replies = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            luke.read_to_end(&mut replies),
        )
        .await
        .expect("the upstream's half-close reaches the client")
        .unwrap();
        assert_eq!(replies, b"OK READ /public/plans\r\n", "{listener}");
        assert!(
            upstream.saw_eof(before),
            "{listener}: the client's half-close reached the upstream"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_parser_closes_only_its_own_connection_and_is_logged() {
    let (_upstream, proxy) = setup("panic").await;
    let mut healthy = connect_from(LUKE, proxy.addr("panicky")).await;
    let mut doomed = connect_from(LUKE, proxy.addr("panicky")).await;
    assert_eq!(request(&mut healthy, "hello\r\n").await, "OK hello\r\n");
    assert_eq!(request(&mut doomed, "boom\r\n").await, "", "closed");
    assert_eq!(
        request(&mut healthy, "still here\r\n").await,
        "OK still here\r\n"
    );
    let mut fresh = connect_from(LUKE, proxy.addr("panicky")).await;
    assert_eq!(request(&mut fresh, "after\r\n").await, "OK after\r\n");
    let entries = proxy.log_entries(1).await;
    let panic = entries
        .iter()
        .find(|e| e["entry_type"] == "Denied")
        .expect("a Denied entry");
    assert_eq!(
        panic["generic_l7"]["fields"]["status"],
        "Panic: boom requested"
    );
    assert_eq!(panic["generic_l7"]["proto"], "panicky");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_connection_follows_a_policy_change_and_a_bad_policy_changes_nothing() {
    let (upstream, proxy) = setup("reload").await;
    let port = upstream.addr.port();
    let mut luke = connect_from(LUKE, proxy.addr("r2d2")).await;
    assert_eq!(
        request(&mut luke, "WRITE /public/plans\r\n").await,
        "ERROR\r\n"
    );

    proxy.write_policy(&policy(port, "              - {cmd: WRITE}"));
    let revision = proxy.agent.state().reload_files().unwrap();
    assert_eq!(revision, 2);
    assert_eq!(
        request(&mut luke, "WRITE /public/plans\r\n").await,
        "OK WRITE /public/plans\r\n"
    );
    assert_eq!(
        request(&mut luke, "READ /public/plans\r\n").await,
        "ERROR\r\n"
    );

    proxy.write_policy(&policy(port, "              - {cmd: WRITE, file: \"(\"}"));
    let error = proxy.agent.state().reload_files().unwrap_err().to_string();
    assert!(error.contains("policy.yaml"), "{error}");
    assert!(error.contains("r2d2-obeys-luke"), "{error}");
    assert!(error.contains("l7[0].file"), "{error}");
    assert_eq!(proxy.agent.state().revision(), 2);
    assert_eq!(
        request(&mut luke, "WRITE /public/plans\r\n").await,
        "OK WRITE /public/plans\r\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_closes_the_client() {
    let closed_port = common::free_port();
    let config = format!(
        r#"
endpoints:
  - {{name: r2d2, ips: ["127.0.0.1"], labels: {{app: r2d2}}}}
  - {{name: luke, ips: ["{LUKE}"], labels: {{app: luke}}}}
listeners:
  - {{name: r2d2, listen: "127.0.0.1:0", upstream: "127.0.0.1:{closed_port}", endpoint: r2d2, direction: ingress}}
"#
    );
    let proxy = TestProxy::start(
        "unreachable",
        &config,
        &policy(closed_port, READ_PUBLIC),
        builtin_protocols(&Default::default()),
    )
    .await;
    let mut luke = connect_from(LUKE, proxy.addr("r2d2")).await;
    let _ = luke.write_all(b"READ /public/plans\r\n").await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        luke.read_to_end(&mut rest),
    )
    .await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the client is closed: {read:?}"
    );
}
