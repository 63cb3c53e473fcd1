//! Cilium's `rules.kafka`: loading, errors at their field paths, and requests judged by the
//! `kafka` protocol the rules select.

mod common;

use std::sync::Arc;

use axoneme_kafka::{Api, Kafka, RequestHeader, RuleSet, TopicRef};
use axoneme_policy::{parse_policies, PortPolicy, Snapshot};
use axoneme_sdk::{typed, Direction, Registry, RequestPolicy};
use common::{endpoints, ip, l7_policy, registry, CACHE, HOST, WEB};

const HEAD: &str =
    "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: empire\n";

/// A policy letting `web` reach `db` on port 9092 with `rules`.
fn policy(rules: &str) -> String {
    format!(
        "{HEAD}spec:\n  endpointSelector: {{matchLabels: {{app: db}}}}\n  ingress:\n  - fromEndpoints: [{{matchLabels: {{app: web}}}}]\n    toPorts:\n    - ports: [{{port: \"9092\", protocol: TCP}}]\n      rules:\n{rules}"
    )
}

fn kafka_registry() -> Registry {
    let mut registry = registry();
    registry.register(Arc::new(Kafka::default())).unwrap();
    registry
}

fn build(text: &str, registry: &Registry) -> Result<Snapshot, String> {
    let policies = parse_policies("test.yaml", text).map_err(|e| e.to_string())?;
    Snapshot::build(policies, &endpoints(), &[ip(HOST)], registry, None).map_err(|e| e.to_string())
}

/// The part of the error after `test.yaml: policy "empire": `.
fn error(rules: &str) -> String {
    let error = build(&policy(rules), &kafka_registry()).expect_err("expected an error");
    error
        .strip_prefix("test.yaml: policy \"empire\": ")
        .unwrap_or_else(|| panic!("unexpected prefix: {error}"))
        .to_owned()
}

/// Whether `policy` allows a request of `api_key` (a policy name) at `version` from `client`
/// naming `topics`.
fn allows(policy: &PortPolicy, api_key: &str, version: i16, client: &str, topics: &[&str]) -> bool {
    let header = RequestHeader {
        api: Api::by_policy_name(api_key).unwrap(),
        api_version: version,
        correlation_id: 1,
        client_id: Some(client.as_bytes()),
    };
    let topics = topics.iter().map(|t| TopicRef::Name(t.as_bytes()));
    let mut check = typed(|rules: &RuleSet| rules.allows(&header, topics.clone()));
    policy.check(&mut check).allowed
}

const EMPIRE: &str = "        kafka:
        - role: produce
          topic: deathstar-plans
        - role: consume
          topic: empire-announce
        - apiKey: apiversions
        - apiKey: metadata
          apiVersion: \"12\"
          clientID: outpost-7
";

#[test]
fn kafka_rules_select_the_kafka_protocol_and_judge_as_cilium() {
    let snapshot = build(&policy(EMPIRE), &kafka_registry()).unwrap();
    let port = l7_policy(&snapshot, "db", Direction::Ingress, WEB, 9092);
    assert_eq!(port.proto(), Some("kafka"));
    assert!(allows(&port, "produce", 9, "hq", &["deathstar-plans"]));
    assert!(!allows(&port, "produce", 9, "hq", &["empire-announce"]));
    assert!(!allows(
        &port,
        "produce",
        9,
        "hq",
        &["deathstar-plans", "empire-announce"]
    ));
    assert!(allows(&port, "fetch", 16, "hq", &["empire-announce"]));
    assert!(!allows(&port, "fetch", 16, "hq", &["deathstar-plans"]));
    assert!(allows(&port, "joingroup", 9, "any", &[]));
    assert!(allows(&port, "apiversions", 3, "any", &[]));
    assert!(!allows(
        &port,
        "createtopics",
        7,
        "hq",
        &["deathstar-plans"]
    ));
    assert!(allows(&port, "metadata", 12, "outpost-7", &["secret"]));
    assert!(!allows(&port, "metadata", 12, "outpost-8", &["secret"]));
    assert!(!allows(&port, "metadata", 11, "outpost-7", &["secret"]));
    assert!(
        allows(&port, "metadata", 11, "outpost-8", &[]),
        "naming no topic, judged on the roles"
    );
    let l7 = snapshot.l7_ports();
    assert_eq!(l7.len(), 1);
    assert_eq!(&*l7[0].proto, "kafka");
    assert_eq!(l7[0].port, 9092);
}

#[test]
fn empty_kafka_lists_and_rules_allow_every_request_parsed() {
    for rules in ["        kafka: []\n", "        kafka: [{}]\n"] {
        let snapshot = build(&policy(rules), &kafka_registry()).unwrap();
        let port = l7_policy(&snapshot, "db", Direction::Ingress, WEB, 9092);
        assert_eq!(port.proto(), Some("kafka"), "{rules}");
        assert!(allows(&port, "deletetopics", 6, "x", &["deathstar-plans"]));
    }
}

#[test]
fn kafka_rules_coexist_with_other_ports_and_remotes() {
    let text = format!(
        "{}  - fromEndpoints: [{{matchLabels: {{app: cache}}}}]\n    toPorts:\n    - ports: [{{port: \"9092\"}}]\n      rules:\n        kafka: [{{role: consume, topic: empire-announce}}]\n",
        policy("        kafka: [{role: produce}]\n")
    );
    let snapshot = build(&text, &kafka_registry()).unwrap();
    let web = l7_policy(&snapshot, "db", Direction::Ingress, WEB, 9092);
    let cache = l7_policy(&snapshot, "db", Direction::Ingress, CACHE, 9092);
    assert!(allows(&web, "produce", 9, "hq", &["empire-announce"]));
    assert!(!allows(
        &cache,
        "produce",
        9,
        "outpost",
        &["empire-announce"]
    ));
    assert!(allows(&cache, "fetch", 4, "outpost", &["empire-announce"]));
    assert!(!allows(&web, "fetch", 4, "hq", &["empire-announce"]));
}

#[test]
fn a_port_parsed_as_kafka_refuses_another_protocol() {
    let text = format!(
        "{}  - fromEndpoints: [{{matchLabels: {{app: cache}}}}]\n    toPorts:\n    - ports: [{{port: \"9092\"}}]\n      rules: {{l7proto: test}}\n",
        policy("        kafka: [{role: produce}]\n")
    );
    assert_eq!(
        build(&text, &kafka_registry()).unwrap_err(),
        "endpoint \"db\": ingress port 9092: conflicting l7proto: \"kafka\" (test.yaml: policy \"empire\": spec.ingress[0].toPorts[0]) and \"test\" (test.yaml: policy \"empire\": spec.ingress[1].toPorts[0])"
    );
}

#[test]
fn kafka_rule_errors_say_what_where_and_why() {
    const AT: &str = "spec.ingress[0].toPorts[0].rules";
    let long = "t".repeat(250);
    let cases = [
        (
            "        kafka: [{role: produce, apiKey: fetch}]\n".to_owned(),
            format!("{AT}.kafka[0].apiKey: cannot set both role \"produce\" and apiKey \"fetch\" together"),
        ),
        (
            "        kafka: [{role: admin}]\n".to_owned(),
            format!("{AT}.kafka[0].role: invalid Kafka role \"admin\" (expected produce or consume)"),
        ),
        (
            "        kafka: [{}, {apiKey: listoffsets}]\n".to_owned(),
            format!("{AT}.kafka[1].apiKey: invalid Kafka apiKey \"listoffsets\""),
        ),
        (
            "        kafka: [{apiKey: fetch, apiVersion: \"-1\"}]\n".to_owned(),
            format!("{AT}.kafka[0].apiVersion: invalid Kafka apiVersion \"-1\" (expected 0 to 32767)"),
        ),
        (
            format!("        kafka: [{{role: consume, topic: {long}}}]\n"),
            format!("{AT}.kafka[0].topic: Kafka topic exceeds the maximum length of 249 characters"),
        ),
        (
            "        kafka: [{topic: \"death star\"}]\n".to_owned(),
            format!("{AT}.kafka[0].topic: invalid Kafka topic \"death star\": ' ' is not one of a-z, A-Z, 0-9, '.', '_', '-'"),
        ),
        (
            "        kafka: [{topic: \"..\"}]\n".to_owned(),
            format!("{AT}.kafka[0].topic: invalid Kafka topic \"..\": \".\" and \"..\" are not topic names"),
        ),
        (
            "        kafka: [{topics: x}]\n".to_owned(),
            format!("{AT}.kafka[0].topics: unknown key (expected one of: role, apiKey, apiVersion, clientID, topic)"),
        ),
        (
            "        kafka: [{role: produce}]\n        l7proto: test\n".to_owned(),
            format!("{AT}.l7proto: l7proto cannot be combined with kafka rules in one rules object (as in Cilium)"),
        ),
        (
            "        kafka: [{role: produce}]\n        l7: [{cmd: a}]\n".to_owned(),
            format!("{AT}.l7: l7 cannot be combined with kafka rules in one rules object (as in Cilium)"),
        ),
    ];
    for (rules, expected) in cases {
        assert_eq!(error(&rules), expected, "{rules}");
    }
    let number = error("        kafka: [{apiKey: fetch, apiVersion: 12}]\n");
    assert!(
        number.starts_with(&format!(
            "{AT}.kafka[0].apiVersion: invalid type: integer `12`"
        )),
        "{number}"
    );
}

#[test]
fn kafka_rules_need_the_kafka_protocol() {
    let error = build(&policy("        kafka: [{role: produce}]\n"), &registry()).unwrap_err();
    assert_eq!(
        error,
        "test.yaml: policy \"empire\": spec.ingress[0].toPorts[0].rules.kafka: kafka rules need the kafka protocol (known: other, test)"
    );
}

#[test]
fn empty_kafka_values_are_accepted_with_a_warning() {
    let text = policy("        kafka: [{role: consume, topic: \"\"}]\n");
    let policies = parse_policies("test.yaml", &text).unwrap();
    let warnings: Vec<String> = policies[0]
        .warnings()
        .iter()
        .map(|w| w.to_string())
        .collect();
    assert_eq!(
        warnings,
        ["test.yaml: policy \"empire\": spec.ingress[0].toPorts[0].rules.kafka[0].topic: the empty value puts no constraint on topic (as in Cilium)"]
    );
    let snapshot = build(&text, &kafka_registry()).unwrap();
    let port = l7_policy(&snapshot, "db", Direction::Ingress, WEB, 9092);
    assert!(allows(&port, "fetch", 4, "x", &["anything"]));
    assert!(!allows(&port, "produce", 9, "x", &["anything"]));
}
