//! Error messages: where (file, policy or document, field path) and why.

mod common;

use common::{build_error, endpoints, ip, registry, HOST};

use axoneme_policy::{parse_policies, EndpointSpec, Snapshot};

const HEAD: &str =
    "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: rule1\n";

fn with_spec(spec: &str) -> String {
    let spec: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    format!("{HEAD}spec:\n{spec}")
}

fn ingress_error(rule: &str) -> String {
    build_error(&with_spec(&format!(
        "endpointSelector: {{}}\ningress: [{rule}]"
    )))
}

/// The part of an error after `test.yaml: policy "rule1": `.
fn field_error(rule: &str) -> String {
    let error = ingress_error(rule);
    error
        .strip_prefix("test.yaml: policy \"rule1\": ")
        .unwrap_or_else(|| panic!("unexpected prefix: {error}"))
        .to_owned()
}

#[test]
fn yaml_syntax_errors_give_line_and_column() {
    assert_eq!(
        build_error("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n    name: a\n  bad: [\n"),
        "test.yaml: line 5 column 3: did not find expected key, while parsing a block mapping"
    );
}

#[test]
fn unknown_fields_name_their_path() {
    let error = ingress_error("{fromEndpoint: [{}]}");
    assert!(
        error.starts_with(
            "test.yaml: policy \"rule1\": spec.ingress[0].fromEndpoint: unknown field `fromEndpoint`, expected one of `fromEndpoints`"
        ),
        "{error}"
    );
    let error = build_error(&format!(
        "{HEAD}spec: {{endpointSelector: {{}}}}\nextra: 1\n"
    ));
    assert!(
        error.starts_with("test.yaml: policy \"rule1\": extra: unknown field `extra`"),
        "{error}"
    );
}

/// In Cilium a `toPorts` element without ports contributes no port at all (cilium/cilium
/// `pkg/policy/rule.go`: only a rule with no `toPorts` element is L3-only; each element merges
/// the ports of `GetPortProtocols()`, none here), while reading it as "every port" would open
/// them all. Such an element is refused, in allow and deny rules alike.
#[test]
fn a_to_ports_element_without_ports_is_refused() {
    let message = "a toPorts element without ports matches no port (as in Cilium); list the \
                   ports, or write ports: [{port: \"0\"}] for every port";
    let cases = [
        ("ingress", "{}"),
        ("ingress", "{ports: []}"),
        ("ingress", "{rules: {}}"),
        ("ingressDeny", "{}"),
        ("ingressDeny", "{ports: []}"),
    ];
    for (section, element) in cases {
        let error = build_error(&with_spec(&format!(
            "endpointSelector: {{}}\n{section}: [{{fromEntities: [world], toPorts: [{{ports: [{{port: '80'}}]}}, {element}]}}]"
        )));
        assert_eq!(
            error,
            format!("test.yaml: policy \"rule1\": spec.{section}[0].toPorts[1].ports: {message}"),
            "{section} {element}"
        );
    }
    assert_eq!(
        field_error("{toPorts: [{rules: {l7proto: test}}]}"),
        format!("spec.ingress[0].toPorts[0].ports: {message}")
    );
}

/// A misspelt key never drops the constraint it was meant to carry: each of these, read
/// leniently, would widen the policy (a selector or L7 list without its content selects or
/// allows more), so each is refused at its path.
#[test]
fn misspelt_keys_that_would_widen_are_refused() {
    for (spec, field) in [
        (
            "endpointSelector: {}\ningress: [{fromEndpoints: [{matchLabel: {app: web}}]}]",
            "spec.ingress[0].fromEndpoints[0].matchLabel",
        ),
        (
            "endpointSelector: {}\ningress: [{fromEndpoints: [{matchExpressions: [{key: app, operator: NotIn, value: [web]}]}]}]",
            "spec.ingress[0].fromEndpoints[0].matchExpressions[0].value",
        ),
        (
            "endpointSelector: {}\ningress: [{toPorts: [{ports: [{port: '80'}], rules: {memcache: [{command: get}]}}]}]",
            "spec.ingress[0].toPorts[0].rules.memcache",
        ),
        (
            "endpointSelector: {}\ningress: [{toPorts: [{ports: [{port: '80'}], rules: {l7proto: test, l7Rules: [{cmd: get}]}}]}]",
            "spec.ingress[0].toPorts[0].rules.l7Rules",
        ),
        (
            "endpointSelector: {}\ningress: [{toPorts: [{ports: [{port: '80', endport: 90}]}]}]",
            "spec.ingress[0].toPorts[0].ports[0].endport",
        ),
        (
            "endpointSelector: {}\ningress: [{toPort: [{ports: [{port: '80'}]}]}]",
            "spec.ingress[0].toPort",
        ),
        (
            "endpointSelector: {}\nIngressDeny: [{fromEntities: [world]}]",
            "spec.IngressDeny",
        ),
    ] {
        let error = build_error(&with_spec(spec));
        let prefix = format!("test.yaml: policy \"rule1\": {field}: unknown field");
        assert!(error.starts_with(&prefix), "{error}");
    }
}

#[test]
fn l7_errors() {
    assert_eq!(
        ingress_error("{toPorts: [{ports: [{port: 80}], rules: {l7proto: foo}}]}"),
        "test.yaml: policy \"rule1\": spec.ingress[0].toPorts[0].rules.l7proto: unknown l7proto \"foo\" (known: other, test)"
    );
    assert_eq!(
        field_error("{toPorts: [{ports: [{port: 80}], rules: {l7proto: test, l7: [{cmd: a}, {cmd: bad}]}}]}"),
        "spec.ingress[0].toPorts[0].rules.l7[1].cmd: bad command"
    );
    assert_eq!(
        field_error("{toPorts: [{ports: [{port: 80}], rules: {l7proto: test, l7: [{file: a}]}}]}"),
        "spec.ingress[0].toPorts[0].rules.l7[0].file: unknown key (expected one of: cmd)"
    );
    assert_eq!(
        field_error("{toPorts: [{ports: [{port: 80, endPort: 90}], rules: {l7proto: test}}]}"),
        "spec.ingress[0].toPorts[0].ports[0]: L7 rules need a single port"
    );
    assert_eq!(
        field_error("{toPorts: [{ports: [{port: 0}], rules: {l7proto: test}}]}"),
        "spec.ingress[0].toPorts[0].ports[0]: L7 rules need a single port"
    );
    assert_eq!(
        field_error("{toPorts: [{ports: [{port: 80}], rules: {http: [{}]}}]}"),
        "spec.ingress[0].toPorts[0].rules.http: http rules are not supported by axoneme"
    );
    assert_eq!(
        field_error("{toPorts: [{ports: [{port: 80}], rules: {l7: [{cmd: a}]}}]}"),
        "spec.ingress[0].toPorts[0].rules.l7proto: l7proto is required with l7"
    );
    assert_eq!(
        build_error(&with_spec(
            "endpointSelector: {}\ningressDeny: [{toPorts: [{ports: [{port: 80}], rules: {l7proto: test}}]}]"
        )),
        "test.yaml: policy \"rule1\": spec.ingressDeny[0].toPorts[0].rules: L7 rules are not allowed in deny rules"
    );
}

#[test]
fn rule_errors_in_specs_name_the_element() {
    assert_eq!(
        build_error(&format!(
            "{HEAD}specs:\n- endpointSelector: {{}}\n- endpointSelector: {{}}\n  egress: [{{toPorts: [{{ports: [{{port: 80}}], rules: {{l7proto: test, l7: [{{cmd: bad}}]}}}}]}}]\n"
        )),
        "test.yaml: policy \"rule1\": specs[1].egress[0].toPorts[0].rules.l7[0].cmd: bad command"
    );
}

#[test]
fn metadata_and_document_errors() {
    assert_eq!(
        build_error("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {namespace: x}\nspec: {endpointSelector: {}}\n"),
        "test.yaml: document 1: metadata.name: a policy needs a name"
    );
    assert_eq!(
        build_error("---\n---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nspec: {endpointSelector: {}}\n"),
        "test.yaml: document 2: missing field `metadata`"
    );
    assert_eq!(
        build_error("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"),
        "test.yaml: policy \"x\": apiVersion: unsupported apiVersion \"v1\" (expected cilium.io/v2)"
    );
    assert_eq!(
        build_error("apiVersion: cilium.io/v2\nkind: NetworkPolicy\nmetadata: {name: x}\n"),
        "test.yaml: policy \"x\": kind: unsupported kind \"NetworkPolicy\" (expected CiliumNetworkPolicy or CiliumClusterwideNetworkPolicy, or a list of them)"
    );
    assert_eq!(
        build_error(HEAD),
        "test.yaml: policy \"rule1\": spec: a policy needs spec or a non-empty specs"
    );
    assert_eq!(
        build_error("[1, 2]"),
        "test.yaml: document 1: expected a mapping with apiVersion, kind, metadata and spec"
    );
    assert_eq!(
        build_error(&format!("{HEAD}spec: {{ingress: [{{}}]}}\n")),
        "test.yaml: policy \"rule1\": spec.endpointSelector: endpointSelector is required"
    );
    assert_eq!(
        build_error(&with_spec("nodeSelector: {}\negress: [{}]")),
        "test.yaml: policy \"rule1\": spec.nodeSelector: nodeSelector is not supported by axoneme"
    );
}

#[test]
fn selector_errors() {
    assert_eq!(
        field_error("{fromEndpoints: [{matchExpressions: [{key: a, operator: In}]}]}"),
        "spec.ingress[0].fromEndpoints[0].matchExpressions[0].values: operator In needs at least one value"
    );
    assert_eq!(
        field_error("{fromEndpoints: [{matchExpressions: [{key: a, operator: Exists, values: [x]}]}]}"),
        "spec.ingress[0].fromEndpoints[0].matchExpressions[0].values: operator Exists takes no values"
    );
    assert_eq!(
        field_error("{fromEndpoints: [{matchExpressions: [{key: a, operator: Foo}]}]}"),
        "spec.ingress[0].fromEndpoints[0].matchExpressions[0].operator: unknown variant `Foo`, expected one of `In`, `NotIn`, `Exists`, `DoesNotExist`"
    );
    assert_eq!(
        field_error("{fromEndpoints: [{matchLabels: {'cidr:x': y}}]}"),
        "spec.ingress[0].fromEndpoints[0].matchLabels.cidr:x: unsupported label source \"cidr\" (supported: k8s, any, container, unspec, reserved)"
    );
}

#[test]
fn peer_and_port_errors() {
    let cases = [
        ("{toFQDNs: [{matchName: x}]}", "spec.ingress[0].toFQDNs: toFQDNs is not supported by axoneme"),
        ("{fromRequires: [{}]}", "spec.ingress[0].fromRequires: fromRequires is not supported by axoneme"),
        ("{fromNodes: [{}]}", "spec.ingress[0].fromNodes: fromNodes is not supported by axoneme"),
        ("{icmps: []}", "spec.ingress[0].icmps: icmps is not supported by axoneme"),
        ("{toEndpoints: [{}]}", "spec.ingress[0].toEndpoints: toEndpoints is not allowed in an ingress rule"),
        ("{fromEntities: [moon]}", "spec.ingress[0].fromEntities[0]: unknown entity \"moon\" (known: world, world-ipv4, world-ipv6, host, cluster, all, remote-node, kube-apiserver, health, init, unmanaged, ingress)"),
        ("{fromCIDR: [10.0.0.0/33]}", "spec.ingress[0].fromCIDR[0]: invalid CIDR \"10.0.0.0/33\""),
        ("{fromCIDRSet: [{cidr: 10.0.0.0/8, except: [11.0.0.0/24]}]}", "spec.ingress[0].fromCIDRSet[0].except[0]: 11.0.0.0/24 is not inside 10.0.0.0/8"),
        ("{fromCIDRSet: [{cidrGroupRef: g}]}", "spec.ingress[0].fromCIDRSet[0].cidrGroupRef: cidrGroupRef is not supported by axoneme"),
        ("{toPorts: [{ports: [{port: http}]}]}", "spec.ingress[0].toPorts[0].ports[0].port: named port \"http\" is not supported by axoneme (use a number)"),
        ("{toPorts: [{ports: [{port: 70000}]}]}", "spec.ingress[0].toPorts[0].ports[0].port: port 70000 is out of range 0-65535"),
        ("{toPorts: [{ports: [{port: 90, endPort: 80}]}]}", "spec.ingress[0].toPorts[0].ports[0].endPort: endPort 80 must be between port 90 and 65535"),
        ("{toPorts: [{ports: [{port: 80, protocol: ICMP}]}]}", "spec.ingress[0].toPorts[0].ports[0].protocol: unsupported protocol \"ICMP\" (expected TCP, UDP, SCTP or ANY)"),
        ("{toPorts: [{ports: [{port: 443}], serverNames: [a]}]}", "spec.ingress[0].toPorts[0].serverNames: serverNames is not supported by axoneme"),
    ];
    for (rule, expected) in cases {
        assert_eq!(field_error(rule), expected);
    }
    let error = build_error(&with_spec(
        "endpointSelector: {}\negress: [{toServices: [{}]}]",
    ));
    assert_eq!(error, "test.yaml: policy \"rule1\": spec.egress[0].toServices: toServices is not supported by axoneme");
}

#[test]
fn conflicting_l7_protocols() {
    let first = with_spec(
        "endpointSelector: {matchLabels: {app: db}}\ningress: [{toPorts: [{ports: [{port: 80}], rules: {l7proto: test}}]}]",
    );
    let second = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: rule2}\n\
                  spec: {endpointSelector: {}, ingress: [{fromEntities: [host], toPorts: [{ports: [{port: '80'}], rules: {l7proto: other, l7: [{cmd: x}]}}]}]}\n";
    assert_eq!(
        build_error(&format!("{first}---\n{second}")),
        "endpoint \"db\": ingress port 80: conflicting l7proto: \"test\" (test.yaml: policy \"rule1\": spec.ingress[0].toPorts[0]) and \"other\" (test.yaml: policy \"rule2\": spec.ingress[0].toPorts[0])"
    );
    // The same protocol twice, or different protocols in different directions, is fine.
    let egress = second
        .replace("ingress", "egress")
        .replace("fromEntities", "toEntities");
    let policies = parse_policies("t.yaml", &format!("{first}---\n{first}---\n{egress}")).unwrap();
    assert!(Snapshot::build(policies, &endpoints(), &[], &registry(), None).is_ok());
}

#[test]
fn endpoint_errors() {
    let mut list = endpoints();
    list[2].ips.push(ip("10.0.0.1"));
    let error = Snapshot::build(Vec::new(), &list, &[ip(HOST)], &registry(), None).unwrap_err();
    assert_eq!(
        error.to_string(),
        "endpoint \"cache\": address 10.0.0.1 already belongs to endpoint \"web\""
    );
    let mut list = endpoints();
    list[1].name = "web".into();
    let error = Snapshot::build(Vec::new(), &list, &[], &registry(), None).unwrap_err();
    assert_eq!(
        error.to_string(),
        "endpoint \"web\": the name is used by two endpoints"
    );
    let mut list = endpoints();
    list[0].labels.insert("reserved:host".into(), String::new());
    let error = Snapshot::build(Vec::new(), &list, &[], &registry(), None).unwrap_err();
    assert_eq!(
        error.to_string(),
        "endpoint \"web\": label \"reserved:host\": reserved labels cannot be given"
    );
}

#[test]
fn endpoint_specs_deserialize_strictly() {
    let spec: EndpointSpec =
        serde_yaml::from_str("name: a\nips: [10.0.0.1, 'fd00::1']\nlabels: {app: a}\n").unwrap();
    assert_eq!(spec.ips.len(), 2);
    assert!(serde_yaml::from_str::<EndpointSpec>("name: a\nips: []\nlabel: {}\n").is_err());
}
