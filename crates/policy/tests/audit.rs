//! Audit mode at the request decision: per endpoint (`policyAuditMode`) and per policy (the
//! `axoneme.io/audit` annotation), a request that would be denied is allowed with its verdict
//! marked audited and the would-be denial's policy name; everything else decides as enforcing.

mod common;

use std::net::IpAddr;

use axoneme_policy::{parse_policies, EndpointSpec, PortPolicy, Snapshot};
use axoneme_sdk::{typed, Direction, RequestPolicy};
use common::*;

/// A policy letting web reach cache on port 11211 with the test protocol and the `cmd` rules
/// given, annotated with `annotations` (YAML flow mapping, empty for none).
fn cache_policy(name: &str, cmds: &[&str], annotations: &str) -> String {
    let rules: Vec<String> = cmds.iter().map(|c| format!("{{cmd: {c}}}")).collect();
    format!(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\n\
         metadata: {{name: {name}, annotations: {{{annotations}}}}}\n\
         spec:\n  endpointSelector: {{matchLabels: {{app: cache}}}}\n  \
         ingress: [{{fromEndpoints: [{{matchLabels: {{app: web}}}}], toPorts: [{{ports: [{{port: '11211'}}], \
         rules: {{l7proto: test, l7: [{}]}}}}]}}]\n",
        rules.join(", ")
    )
}

/// The endpoints of every test, cache in audit mode when `cache_audited`.
fn endpoints_with(cache_audited: bool) -> Vec<EndpointSpec> {
    let mut endpoints = endpoints();
    for endpoint in &mut endpoints {
        endpoint.policy_audit_mode = endpoint.name == "cache" && cache_audited;
    }
    endpoints
}

fn snapshot_with(yaml: &str, cache_audited: bool) -> Snapshot {
    let policies = parse_policies("test.yaml", yaml).unwrap_or_else(|e| panic!("{e}"));
    let host: IpAddr = HOST.parse().unwrap();
    Snapshot::build(
        policies,
        &endpoints_with(cache_audited),
        &[host],
        &registry(),
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The verdict on command `cmd`: `allow:<policy>`, `deny:<policy>` or `audit:<policy>`.
fn verdict(policy: &PortPolicy, cmd: &str) -> String {
    let verdict = policy.check(&mut typed(|rules: &TestRules| rules.allows(cmd)));
    let word = match (verdict.allowed, verdict.audited) {
        (true, false) => "allow",
        (true, true) => "audit",
        (false, true) => panic!("an audited verdict denied {cmd}"),
        (false, false) => "deny",
    };
    format!("{word}:{}", verdict.policy_name)
}

fn web_to_cache(snap: &Snapshot) -> std::sync::Arc<PortPolicy> {
    l7_policy(snap, "cache", Direction::Ingress, WEB, 11211)
}

#[test]
fn an_endpoint_in_audit_mode_lets_what_no_rule_allows_through_as_audited() {
    let yaml = cache_policy("cache-gets", &["get"], "");
    let enforcing = snapshot_with(&yaml, false);
    assert_eq!(
        verdict(&web_to_cache(&enforcing), "get"),
        "allow:cache-gets"
    );
    assert_eq!(verdict(&web_to_cache(&enforcing), "set"), "deny:");
    assert!(!web_to_cache(&enforcing).is_audited());
    assert_eq!(enforcing.audited("cache"), Some(false));

    let audited = snapshot_with(&yaml, true);
    assert_eq!(audited.audited("cache"), Some(true));
    assert_eq!(verdict(&web_to_cache(&audited), "get"), "allow:cache-gets");
    assert_eq!(verdict(&web_to_cache(&audited), "set"), "audit:");
    assert_eq!(
        ingress(&audited, "cache", DB, 11211),
        "refused:",
        "a connection no rule allows is still refused: audit mode is about requests"
    );
}

#[test]
fn a_policy_annotated_for_audit_audits_only_what_it_alone_governs() {
    let audit = cache_policy("cache-gets", &["get"], "axoneme.io/audit: \"true\"");
    let snap = snapshot_with(&audit, false);
    assert!(snap.policies()[0].audit());
    assert_eq!(verdict(&web_to_cache(&snap), "set"), "audit:");
    assert_eq!(verdict(&web_to_cache(&snap), "get"), "allow:cache-gets");

    let off = cache_policy("cache-gets", &["get"], "axoneme.io/audit: \"false\"");
    assert_eq!(
        verdict(&web_to_cache(&snapshot_with(&off, false)), "set"),
        "deny:"
    );

    let enforcing = cache_policy("cache-deletes", &["delete"], "");
    let both = snapshot_with(&format!("{audit}---\n{enforcing}"), false);
    assert_eq!(
        verdict(&web_to_cache(&both), "set"),
        "deny:",
        "an enforcing policy on the same connection keeps denying what no rule allows"
    );
    assert_eq!(
        verdict(&web_to_cache(&both), "delete"),
        "allow:cache-deletes"
    );
}

#[test]
fn a_misspelt_audit_annotation_is_refused_with_its_field() {
    let error = parse_policies(
        "cache.yaml",
        &cache_policy("cache-gets", &["get"], "axoneme.io/audit: \"yes\""),
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("metadata.annotations.axoneme.io/audit")
            && error.contains("must be \"true\" or \"false\", not \"yes\""),
        "{error}"
    );
}

#[test]
fn an_open_connection_a_new_policy_refuses_is_audited_on_an_audited_endpoint() {
    let yaml = cache_policy("cache-gets", &["get"], "");
    let audited = snapshot_with(&yaml, true);
    let db = |snap: &Snapshot| {
        snap.request_policy("cache", Direction::Ingress, DB.parse().unwrap(), 11211)
    };
    assert_eq!(verdict(&db(&audited), "get"), "audit:");
    assert_eq!(verdict(&db(&snapshot_with(&yaml, false)), "get"), "deny:");
}

#[test]
fn policy_audit_mode_is_read_from_an_endpoint_description_and_left_out_when_off() {
    let on: EndpointSpec =
        serde_json::from_str(r#"{"name": "cache", "ips": ["10.0.0.3"], "policyAuditMode": true}"#)
            .unwrap();
    assert!(on.policy_audit_mode);
    let off: EndpointSpec =
        serde_json::from_str(r#"{"name": "cache", "ips": ["10.0.0.3"]}"#).unwrap();
    assert!(!off.policy_audit_mode);
    assert!(!serde_json::to_string(&off)
        .unwrap()
        .contains("policyAuditMode"));
    assert!(serde_json::to_string(&on)
        .unwrap()
        .contains("\"policyAuditMode\":true"));
}
