//! A tiny protocol for tests, the endpoints every test uses, and helpers to read verdicts.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use axoneme_policy::{parse_policies, ConnectionVerdict, EndpointSpec, PortPolicy, Snapshot};
use axoneme_sdk::{
    reject_unknown_keys, typed, ConnectionMeta, Context, Direction, Flow, Input, L7RuleMap, Op,
    Parser, Registry, RequestPolicy, RuleError, TypedProtocol,
};

/// The compiled rules of the test protocol: per map, the command it allows (`None`: any).
pub(crate) struct TestRules(Vec<Option<String>>);

impl TestRules {
    pub(crate) fn allows(&self, cmd: &str) -> bool {
        self.0.iter().any(|c| match c {
            None => true,
            Some(c) => c == cmd,
        })
    }
}

struct NopParser;

impl Parser for NopParser {
    fn on_data(&mut self, _: &mut Context<'_>, _: Flow, _: bool, _: Input<'_>) -> Op {
        Op::Nop
    }
}

/// A protocol whose rules have one key, `cmd`, matched exactly; the value `bad` is rejected.
pub(crate) struct TestProtocol(pub &'static str);

impl TypedProtocol for TestProtocol {
    type Rules = TestRules;
    const TRACE_FIELDS: &'static [&'static str] = &[];

    fn name(&self) -> &'static str {
        self.0
    }

    fn parser(&self, _: &ConnectionMeta) -> Box<dyn Parser> {
        Box::new(NopParser)
    }

    fn compile(&self, rules: &[L7RuleMap]) -> Result<TestRules, RuleError> {
        let mut cmds = Vec::new();
        for (index, rule) in rules.iter().enumerate() {
            reject_unknown_keys(index, rule, &["cmd"])?;
            match rule.get("cmd") {
                Some(c) if c == "bad" => {
                    return Err(RuleError::new(index, Some("cmd"), "bad command"))
                }
                cmd => cmds.push(cmd.cloned()),
            }
        }
        Ok(TestRules(cmds))
    }
}

pub(crate) fn registry() -> Registry {
    let mut registry = Registry::new();
    registry.register(Arc::new(TestProtocol("test"))).unwrap();
    registry.register(Arc::new(TestProtocol("other"))).unwrap();
    registry
}

pub(crate) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn endpoint(name: &str, ips: &[&str], labels: &[(&str, &str)]) -> EndpointSpec {
    EndpointSpec {
        name: name.to_owned(),
        ips: ips.iter().map(|s| ip(s)).collect(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        namespace: None,
        policy_audit_mode: false,
    }
}

pub(crate) const WEB: &str = "10.0.0.1";
pub(crate) const DB: &str = "10.0.0.2";
pub(crate) const CACHE: &str = "10.0.0.3";
pub(crate) const HOST: &str = "192.168.1.1";
pub(crate) const WORLD: &str = "203.0.113.5";

pub(crate) fn endpoints() -> Vec<EndpointSpec> {
    vec![
        endpoint(
            "web",
            &[WEB, "fd00::1"],
            &[("app", "web"), ("tier", "front")],
        ),
        endpoint("db", &[DB], &[("app", "db"), ("tier", "back")]),
        endpoint("cache", &[CACHE], &[("app", "cache")]),
    ]
}

pub(crate) fn snapshot(yaml: &str) -> Snapshot {
    let policies = parse_policies("test.yaml", yaml).unwrap_or_else(|e| panic!("{e}"));
    Snapshot::build(policies, &endpoints(), &[ip(HOST)], &registry(), None)
        .unwrap_or_else(|e| panic!("{e}"))
}

pub(crate) fn build_error(yaml: &str) -> String {
    match parse_policies("test.yaml", yaml) {
        Err(e) => e.to_string(),
        Ok(policies) => {
            match Snapshot::build(policies, &endpoints(), &[ip(HOST)], &registry(), None) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("expected an error"),
            }
        }
    }
}

/// A verdict in a few words: `unrestricted`, `refused:<policy>`, `allowed:<policy>` or
/// `l7:<policy>` (allowed with L7).
pub(crate) fn short(verdict: &ConnectionVerdict) -> String {
    match verdict {
        ConnectionVerdict::Unrestricted => "unrestricted".to_owned(),
        ConnectionVerdict::Refused { policy_name, .. } => format!("refused:{policy_name}"),
        ConnectionVerdict::Allowed {
            policy_name,
            l7: None,
        } => format!("allowed:{policy_name}"),
        ConnectionVerdict::Allowed {
            policy_name,
            l7: Some(_),
        } => format!("l7:{policy_name}"),
    }
}

pub(crate) fn ingress(snap: &Snapshot, endpoint: &str, remote: &str, port: u16) -> String {
    short(&snap.decide_connection(endpoint, Direction::Ingress, ip(remote), port))
}

pub(crate) fn egress(snap: &Snapshot, endpoint: &str, remote: &str, port: u16) -> String {
    short(&snap.decide_connection(endpoint, Direction::Egress, ip(remote), port))
}

/// The verdict of `policy` on a request with command `cmd`: `allow:<policy>` or
/// `deny:<policy>`.
pub(crate) fn request(policy: &PortPolicy, cmd: &str) -> String {
    let verdict = policy.check(&mut typed(|rules: &TestRules| rules.allows(cmd)));
    let word = if verdict.allowed { "allow" } else { "deny" };
    format!("{word}:{}", verdict.policy_name)
}

/// The request-level policy of an L7 verdict.
pub(crate) fn l7_policy(
    snap: &Snapshot,
    endpoint: &str,
    direction: Direction,
    remote: &str,
    port: u16,
) -> Arc<PortPolicy> {
    match snap.decide_connection(endpoint, direction, ip(remote), port) {
        ConnectionVerdict::Allowed { l7: Some(p), .. } => p,
        other => panic!("expected an L7 verdict, got {other:?}"),
    }
}
