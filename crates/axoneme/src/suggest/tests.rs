//! The suggester end to end on hand-written access-log lines: filters, errors with their
//! location, determinism, peers that are entities, `--min-count`, and the output of every
//! protocol imported and compiled by the policy engine.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use axoneme_policy::{parse_policies, EndpointSpec, Snapshot};

use super::*;
use crate::builtin_protocols;
use crate::config::ProtocolsConfig;

/// One entry: `ingress` or not, the remote's labels, the L7 protocol and fields.
fn entry(
    entry_type: &str,
    ingress: bool,
    remote: &[&str],
    proto: &str,
    fields: &[(&str, &str)],
) -> String {
    let own = ["app=cache", "k8s:io.kubernetes.pod.namespace=default"];
    let (source, destination) = match ingress {
        true => (remote.to_vec(), own.to_vec()),
        false => (own.to_vec(), remote.to_vec()),
    };
    let fields: serde_json::Map<String, Value> = fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
        .collect();
    serde_json::json!({
        "entry_type": entry_type,
        "is_ingress": ingress,
        "policy_name": "",
        "source_labels": source,
        "destination_labels": destination,
        "source_address": "10.0.0.1:40000",
        "destination_address": "10.0.0.2:9000",
        "endpoint": "cache",
        "generic_l7": {"proto": proto, "fields": fields},
    })
    .to_string()
}

const LUKE: [&str; 2] = ["app=luke", "k8s:io.kubernetes.pod.namespace=default"];

fn memcache(command: &str, keys: &str) -> String {
    entry(
        "Request",
        true,
        &LUKE,
        "memcache",
        &[("command", command), ("keys", keys)],
    )
}

fn file(lines: &[String]) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let path = std::env::temp_dir().join(format!(
        "axoneme-suggest-unit-{}-{}.log",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

fn args(path: PathBuf) -> SuggestArgs {
    SuggestArgs {
        from_log: vec![path],
        endpoint: None,
        direction: None,
        exact: false,
        min_count: 1,
        group_keyspaces: None,
    }
}

/// Imports and compiles `yaml` with the endpoints cache (10.0.0.2) and luke (10.0.0.1).
fn compiles(yaml: &str) {
    let policies = parse_policies("suggested.yaml", yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let endpoint = |name: &str, ip: &str| EndpointSpec {
        name: name.to_owned(),
        ips: vec![ip.parse().unwrap()],
        labels: [("app".to_owned(), name.to_owned())].into(),
        namespace: None,
        policy_audit_mode: false,
    };
    let registry = builtin_protocols(&ProtocolsConfig::default());
    let endpoints = [endpoint("cache", "10.0.0.2"), endpoint("luke", "10.0.0.1")];
    Snapshot::build(policies, &endpoints, &[], &registry, None)
        .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
}

#[test]
fn only_forwarded_l7_requests_are_taken_and_the_output_does_not_depend_on_their_order() {
    let mut lines = vec![
        memcache("get", "user:1"),
        memcache("get", "user:2"),
        entry(
            "Denied",
            true,
            &LUKE,
            "memcache",
            &[("command", "flush_all")],
        ),
        entry("Response", true, &LUKE, "memcache", &[("status", "ok")]),
        entry("Request", true, &LUKE, "", &[]),
        memcache("set", "motd"),
    ];
    let yaml = suggest(&args(file(&lines))).unwrap();
    assert!(
        yaml.contains("from 3 requests forwarded (0 of them audited)"),
        "{yaml}"
    );
    assert!(!yaml.contains("flush_all"), "{yaml}");
    compiles(&yaml);
    lines.reverse();
    let again = suggest(&args(file(&lines))).unwrap();
    let body = |text: &str| text.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(body(&again), body(&yaml), "same requests, same policy");
}

#[test]
fn the_policy_reads_as_an_operator_would_write_it() {
    let lines = [
        memcache("get", "user:1"),
        memcache("get", "user:2"),
        memcache("get", "user:2"),
    ];
    let yaml = suggest(&args(file(&lines))).unwrap();
    let body: Vec<&str> = yaml.lines().skip(1).collect();
    assert_eq!(
        body,
        [
            "apiVersion: cilium.io/v2",
            "kind: CiliumNetworkPolicy",
            "metadata:",
            "  name: cache-ingress-suggested",
            "  namespace: default",
            "spec:",
            "  endpointSelector:",
            "    matchLabels:",
            "      app: cache",
            "  ingress:",
            "    - fromEndpoints:",
            "        - matchLabels:",
            "            app: luke",
            "      toPorts:",
            "        - ports:",
            "            - port: \"9000\"",
            "              protocol: TCP",
            "          rules:",
            "            l7proto: memcache",
            "            l7:",
            "              # 3 requests",
            "              - command: get",
            "                keyPrefix: \"user:\"",
        ]
    );
}

#[test]
fn filters_min_count_and_entities_shape_the_output() {
    let world = ["reserved:world"];
    let lines = [
        memcache("get", "a"),
        memcache("get", "a"),
        memcache("delete", "a"),
        entry(
            "Request",
            false,
            &LUKE,
            "memcache",
            &[("command", "get"), ("keys", "b")],
        ),
        entry(
            "Request",
            true,
            &world,
            "memcache",
            &[("command", "get"), ("keys", "c")],
        ),
        entry(
            "Request",
            true,
            &["app=other", "k8s:io.kubernetes.pod.namespace=rebels"],
            "memcache",
            &[("command", "get"), ("keys", "d")],
        ),
    ];
    let path = file(&lines);
    let all = suggest(&args(path.clone())).unwrap();
    assert_eq!(all.matches("kind: CiliumNetworkPolicy").count(), 2, "{all}");
    assert!(all.contains("fromEntities: [world]"), "{all}");
    assert!(
        all.contains("io.kubernetes.pod.namespace\": rebels"),
        "{all}"
    );
    assert!(all.contains("name: cache-egress-suggested"), "{all}");
    assert!(all.contains("toEndpoints:"), "{all}");
    compiles(&all);

    let ingress_only = SuggestArgs {
        direction: Some(DirectionArg::Ingress),
        min_count: 2,
        ..args(path.clone())
    };
    let yaml = suggest(&ingress_only).unwrap();
    assert_eq!(
        yaml.matches("kind: CiliumNetworkPolicy").count(),
        1,
        "{yaml}"
    );
    assert!(
        yaml.contains(
            "# Left out (--min-count 2): {command: delete, keyExact: a} covering 1 request."
        ),
        "{yaml}"
    );
    assert!(!yaml.contains("fromEntities"), "{yaml}");
    compiles(&yaml);

    let nobody = SuggestArgs {
        endpoint: Some("db".to_owned()),
        ..args(path)
    };
    assert!(suggest(&nobody)
        .unwrap()
        .starts_with("# No forwarded L7 requests of endpoint \"db\""));
}

#[test]
fn compact_lines_are_read_and_a_forwarded_request_among_them_is_refused_for_its_labels() {
    let response = r#"{"ts":1,"in":true,"t":"r","si":257,"di":256,"sa":"127.0.0.21:5000","da":"127.0.0.1:11211","l":"cache","e":"cache","pr":"memcache","f":{"command":"get"}}"#;
    let with_response = file(&[memcache("get", "a"), response.to_owned()]);
    let alone = file(&[memcache("get", "a")]);
    // The same policy but for the file named in its first line.
    let policy = |path| {
        let text = suggest(&args(path)).unwrap();
        text.split_once('\n').unwrap().1.to_owned()
    };
    assert_eq!(
        policy(with_response),
        policy(alone),
        "a compact response is read, and not taken"
    );
    let request = response.replace(r#""t":"r""#, r#""t":"q""#);
    let path = file(&[memcache("get", "a"), request]);
    let error = suggest(&args(path.clone())).unwrap_err().to_string();
    assert_eq!(
        error,
        format!(
            "{}:2: not an access-log entry: no list field \"destination_labels\" (the entries \
             of a compact access log, accessLog.format: compact, name no labels, and policies \
             are written from labels: suggest from a log in Cilium's form)",
            path.display()
        )
    );
}

#[test]
fn a_bad_line_is_reported_with_its_file_and_line() {
    let path = file(&[memcache("get", "a"), "{\"entry_type\": 3}".to_owned()]);
    let error = suggest(&args(path.clone())).unwrap_err().to_string();
    assert_eq!(
        error,
        format!(
            "{}:2: not an access-log entry: no string field \"entry_type\"",
            path.display()
        )
    );
    let truncated =
        file(&[memcache("get", "a")
            .replace("\"fields\":", "\"truncated\":{\"keys\":5000},\"fields\":")]);
    let error = suggest(&args(truncated)).unwrap_err().to_string();
    assert!(
        error.contains(":1: not an access-log entry: a field value was truncated"),
        "{error}"
    );
    let missing = suggest(&args(PathBuf::from("/nonexistent/access.log"))).unwrap_err();
    assert!(
        missing
            .to_string()
            .starts_with("reading /nonexistent/access.log: "),
        "{missing}"
    );
}

#[test]
fn cassandra_tables_are_exact_unless_a_keyspace_reached_the_threshold() {
    let cql = |action: &str, table: &str| {
        entry(
            "Request",
            true,
            &LUKE,
            "cassandra",
            &[("query_action", action), ("query_table", table)],
        )
    };
    let lines = [
        cql("select", "shop.orders"),
        cql("select", "shop.users"),
        cql("select", "system.local"),
        cql("use", ""),
    ];
    let exact = suggest(&args(file(&lines))).unwrap();
    assert!(
        exact.contains("query_table: \"shop\\\\.orders\""),
        "{exact}"
    );
    assert!(exact.contains("- query_action: use\n"), "{exact}");
    compiles(&exact);
    let grouped = suggest(&SuggestArgs {
        group_keyspaces: Some(2),
        ..args(file(&lines))
    })
    .unwrap();
    assert!(
        grouped.contains("query_table: \"shop\\\\..*\""),
        "{grouped}"
    );
    assert!(
        grouped.contains("query_table: \"system\\\\.local\""),
        "{grouped}"
    );
    compiles(&grouped);
}

#[test]
fn kafka_topics_go_by_role_unless_exact() {
    let kafka = |api: &str, topic: &str| {
        entry(
            "Request",
            true,
            &LUKE,
            "kafka",
            &[("api_key", api), ("topic", topic)],
        )
    };
    let lines = [
        kafka("produce", "orders"),
        kafka("metadata", "orders"),
        kafka("fetch", "audit"),
        kafka("offsetcommit", "audit"),
        kafka("apiversions", ""),
    ];
    let by_role = suggest(&args(file(&lines))).unwrap();
    assert!(by_role.contains("            kafka:\n"), "{by_role}");
    assert!(
        by_role.contains("- role: produce\n                topic: orders"),
        "{by_role}"
    );
    assert!(
        by_role.contains("- role: consume\n                topic: audit"),
        "{by_role}"
    );
    assert!(by_role.contains("- apiKey: apiversions\n"), "{by_role}");
    compiles(&by_role);
    let exact = suggest(&SuggestArgs {
        exact: true,
        ..args(file(&lines))
    })
    .unwrap();
    assert!(!exact.contains("role:"), "{exact}");
    assert!(
        exact.contains("- apiKey: offsetcommit\n                topic: audit"),
        "{exact}"
    );
    compiles(&exact);
}

#[test]
fn r2d2_files_sharing_a_directory_become_one_pattern() {
    let r2d2 = |cmd: &str, file: &str| {
        entry(
            "Request",
            true,
            &LUKE,
            "r2d2",
            &[("cmd", cmd), ("file", file)],
        )
    };
    let lines = [
        r2d2("READ", "/public/a"),
        r2d2("READ", "/public/b"),
        r2d2("HALT", ""),
    ];
    let yaml = suggest(&args(file(&lines))).unwrap();
    assert!(
        yaml.contains("- cmd: READ\n                file: \"/public/.*\""),
        "{yaml}"
    );
    assert!(yaml.contains("- cmd: HALT\n"), "{yaml}");
    compiles(&yaml);
}

/// `text` written as a policy file of its own.
fn policy_file(text: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let path = std::env::temp_dir().join(format!(
        "axoneme-diff-unit-{}-{}.yaml",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, text).unwrap();
    path
}

fn diff_of(policy: &str, lines: &[String]) -> String {
    let args = DiffArgs {
        files: vec![policy_file(policy)],
        from_log: vec![file(lines)],
        endpoint: None,
        direction: None,
    };
    diff(&args, &builtin_protocols(&ProtocolsConfig::default())).unwrap()
}

const CACHE_POLICY: &str = r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: cache-users, annotations: {axoneme.io/audit: "true"}}
spec:
  endpointSelector: {matchLabels: {app: cache}}
  ingress:
    - fromEndpoints: [{matchLabels: {app: luke}}]
      toPorts:
        - ports: [{port: "9000"}]
          rules: {l7proto: memcache, l7: [{command: get, keyPrefix: "user:"}]}
"#;

#[test]
fn diff_lists_what_a_policy_would_deny_grouped_by_remote_and_reason() {
    let lines = [
        memcache("get", "user:1"),
        memcache("set", "user:1"),
        memcache("set", "user:1"),
        memcache("delete", "motd"),
        entry(
            "Request",
            true,
            &["reserved:world"],
            "memcache",
            &[("command", "get"), ("keys", "user:1")],
        ),
    ];
    let report = diff_of(CACHE_POLICY, &lines);
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(
        lines[..8],
        [
            "cache (ingress) from app=luke,k8s:io.kubernetes.pod.namespace=default on port 9000 (memcache): 3 of 4 requests would be denied",
            "  no rule allows it:",
            "         1  command=delete keys=motd",
            "         2  command=set keys=user:1",
            "cache (ingress) from reserved:world on port 9000 (memcache): 1 of 1 requests would be denied",
            "  refused at L3/L4: no rule allows this remote on port 9000:",
            "         1  command=get keys=user:1",
            lines[7],
        ],
        "{report}"
    );
    assert!(
        lines[7].starts_with("4 of 5 observed requests would be denied by "),
        "{report}"
    );
}

#[test]
fn diff_judges_kafka_requests_by_their_api_and_topic() {
    let kafka = |api: &str, topic: &str| {
        entry(
            "Request",
            true,
            &LUKE,
            "kafka",
            &[("api_key", api), ("api_version", "9"), ("topic", topic)],
        )
    };
    let policy = r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: orders}
spec:
  endpointSelector: {matchLabels: {app: cache}}
  ingress:
    - fromEndpoints: [{matchLabels: {app: luke}}]
      toPorts:
        - ports: [{port: "9000"}]
          rules: {kafka: [{role: produce, topic: orders}]}
"#;
    let report = diff_of(
        policy,
        &[kafka("produce", "orders"), kafka("fetch", "orders")],
    );
    assert!(
        report.contains("1  api_key=fetch api_version=9 topic=orders"),
        "{report}"
    );
    assert!(!report.contains("api_key=produce"), "{report}");
    assert!(
        report.contains("1 of 2 observed requests would be denied"),
        "{report}"
    );
}
