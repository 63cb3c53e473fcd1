//! Connection and request decisions of compiled snapshots.

mod common;

use axoneme_policy::{parse_policies, ClusterInputs, ConnectionVerdict, Snapshot};
use axoneme_sdk::Direction;
use common::*;

const HEAD: &str = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\n";

fn policy(name: &str, spec: &str) -> String {
    let spec: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    format!("{HEAD}metadata:\n  name: {name}\nspec:\n{spec}")
}

#[test]
fn unselected_endpoint_is_unrestricted() {
    let snap = snapshot(&policy(
        "db-only",
        "endpointSelector: {matchLabels: {app: db}}\ningress: [{fromEndpoints: [{matchLabels: {app: web}}]}]",
    ));
    assert_eq!(ingress(&snap, "web", WORLD, 80), "unrestricted");
    assert_eq!(egress(&snap, "db", WORLD, 80), "unrestricted");
    assert_eq!(ingress(&snap, "db", WEB, 5432), "allowed:db-only");
    assert_eq!(ingress(&snap, "db", CACHE, 5432), "refused:");
    match snap.decide_connection("db", Direction::Ingress, ip(CACHE), 5432) {
        ConnectionVerdict::Refused { reason, .. } => {
            assert_eq!(reason, "no rule allows this remote on port 5432")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(ingress(&snap, "nobody", WEB, 1), "refused:");
}

#[test]
fn match_expressions_operators() {
    let cases = [
        (
            "{key: tier, operator: In, values: [front, back]}",
            [true, true, false],
        ),
        (
            "{key: tier, operator: NotIn, values: [front]}",
            [false, true, true],
        ),
        ("{key: tier, operator: Exists}", [true, true, false]),
        ("{key: tier, operator: DoesNotExist}", [false, false, true]),
        (
            "{key: 'k8s:app', operator: In, values: [cache]}",
            [false, false, true],
        ),
    ];
    for (expression, expected) in cases {
        let snap = snapshot(&policy(
            "p",
            &format!(
                "endpointSelector: {{matchLabels: {{app: db}}}}\n\
                 ingress: [{{fromEndpoints: [{{matchExpressions: [{expression}]}}]}}]"
            ),
        ));
        let got: Vec<bool> = [WEB, DB, CACHE]
            .iter()
            .map(|remote| ingress(&snap, "db", remote, 1) == "allowed:p")
            .collect();
        assert_eq!(got, expected, "{expression}");
        assert_eq!(ingress(&snap, "db", HOST, 1), "refused:", "{expression}");
    }
}

#[test]
fn empty_selector_selects_every_endpoint_but_not_reserved_identities() {
    let snap = snapshot(&policy(
        "all",
        "endpointSelector: {}\ningress: [{fromEndpoints: [{}]}]",
    ));
    for endpoint in ["web", "db", "cache"] {
        assert_eq!(ingress(&snap, endpoint, CACHE, 1), "allowed:all");
        assert_eq!(ingress(&snap, endpoint, HOST, 1), "refused:");
        assert_eq!(ingress(&snap, endpoint, WORLD, 1), "refused:");
    }
    let snap = snapshot(&policy(
        "host",
        "endpointSelector: {}\ningress: [{fromEndpoints: [{matchLabels: {'reserved:host': ''}}]}]",
    ));
    assert_eq!(ingress(&snap, "web", HOST, 1), "allowed:host");
    assert_eq!(ingress(&snap, "web", DB, 1), "refused:");
}

#[test]
fn to_endpoints_for_egress() {
    let snap = snapshot(&policy(
        "web-out",
        "endpointSelector: {matchLabels: {'any:app': web}}\negress: [{toEndpoints: [{matchLabels: {tier: back}}]}]",
    ));
    assert_eq!(egress(&snap, "web", DB, 5432), "allowed:web-out");
    assert_eq!(egress(&snap, "web", CACHE, 11211), "refused:");
    assert_eq!(ingress(&snap, "web", CACHE, 80), "unrestricted");
}

#[test]
fn cidr_and_cidr_set_match_only_the_world() {
    let snap = snapshot(&policy(
        "cidr",
        "endpointSelector: {matchLabels: {app: web}}\n\
         ingress:\n\
         - fromCIDR: [10.0.0.0/8, 2001:db8::/64]\n\
         - fromCIDRSet: [{cidr: 198.51.100.0/24, except: [198.51.100.128/25]}, {cidr: 'fd01::/16', except: ['fd01:1::/32']}]\n\
         - fromCIDR: [203.0.113.77]",
    ));
    assert_eq!(ingress(&snap, "web", "10.9.9.9", 1), "allowed:cidr");
    assert_eq!(
        ingress(&snap, "web", DB, 1),
        "refused:",
        "endpoints are not selected by CIDR"
    );
    assert_eq!(ingress(&snap, "web", "2001:db8::9", 1), "allowed:cidr");
    assert_eq!(ingress(&snap, "web", "2001:db8:1::9", 1), "refused:");
    assert_eq!(ingress(&snap, "web", "198.51.100.1", 1), "allowed:cidr");
    assert_eq!(ingress(&snap, "web", "198.51.100.200", 1), "refused:");
    assert_eq!(ingress(&snap, "web", "fd01:2::1", 1), "allowed:cidr");
    assert_eq!(ingress(&snap, "web", "fd01:1::1", 1), "refused:");
    assert_eq!(ingress(&snap, "web", "203.0.113.77", 1), "allowed:cidr");
    assert_eq!(ingress(&snap, "web", "203.0.113.78", 1), "refused:");
    assert_eq!(ingress(&snap, "web", "::ffff:10.1.1.1", 1), "allowed:cidr");
}

#[test]
fn entities() {
    let cases = [
        ("world", [false, false, true]),
        ("host", [false, true, false]),
        ("cluster", [true, true, false]),
        ("all", [true, true, true]),
        ("kube-apiserver", [false, false, false]),
    ];
    for (entity, expected) in cases {
        let snap = snapshot(&policy(
            "e",
            &format!("endpointSelector: {{matchLabels: {{app: db}}}}\ningress: [{{fromEntities: [{entity}]}}]"),
        ));
        let got: Vec<bool> = [WEB, HOST, WORLD]
            .iter()
            .map(|r| ingress(&snap, "db", r, 1) == "allowed:e")
            .collect();
        assert_eq!(got, expected, "{entity}");
    }
}

#[test]
fn deny_wins_over_allow() {
    let snap = snapshot(&format!(
        "{}---\n{}",
        policy(
            "allow-all",
            "endpointSelector: {}\ningress: [{fromEntities: [all]}]\negress: [{toEntities: [all]}]"
        ),
        policy(
            "no-world",
            "endpointSelector: {matchLabels: {app: db}}\n\
             ingressDeny: [{fromEntities: [world]}, {fromEndpoints: [{matchLabels: {app: web}}], toPorts: [{ports: [{port: 22}]}]}]\n\
             egressDeny: [{toCIDR: [203.0.113.0/24]}]"
        )
    ));
    assert_eq!(ingress(&snap, "db", WORLD, 5432), "refused:no-world");
    assert_eq!(ingress(&snap, "db", WEB, 22), "refused:no-world");
    assert_eq!(ingress(&snap, "db", WEB, 5432), "allowed:allow-all");
    assert_eq!(egress(&snap, "db", WORLD, 443), "refused:no-world");
    assert_eq!(egress(&snap, "web", WORLD, 443), "allowed:allow-all");
    match snap.decide_connection("db", Direction::Egress, ip(WORLD), 443) {
        ConnectionVerdict::Refused { reason, .. } => {
            assert_eq!(reason, "denied by egressDeny rule")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn ports_numbers_strings_wildcards_ranges_and_protocols() {
    let snap = snapshot(&policy(
        "ports",
        "endpointSelector: {matchLabels: {app: db}}\n\
         ingress:\n\
         - fromEndpoints: [{matchLabels: {app: web}}]\n\
         \x20 toPorts: [{ports: [{port: 80}, {port: '443'}, {port: '8000', endPort: 8010}, {port: 53, protocol: UDP}, {port: 9000, protocol: ANY}]}]\n\
         - fromEndpoints: [{matchLabels: {app: cache}}]\n\
         \x20 toPorts: [{ports: [{port: '0'}]}]\n\
         - fromEntities: [host]\n\
         \x20 toPorts: [{ports: [{protocol: TCP}]}]",
    ));
    for (port, allowed) in [
        (80, true),
        (443, true),
        (8000, true),
        (8010, true),
        (8011, false),
        (53, false),
        (9000, true),
        (81, false),
    ] {
        assert_eq!(
            ingress(&snap, "db", WEB, port) == "allowed:ports",
            allowed,
            "port {port}"
        );
    }
    assert_eq!(ingress(&snap, "db", CACHE, 12345), "allowed:ports");
    assert_eq!(ingress(&snap, "db", HOST, 1), "allowed:ports");
}

/// An explicitly empty peer list selects no remote: Cilium's `mergeEndpointSelectors`
/// (cilium/cilium `pkg/policy/utils/parserules.go`: "Explicitly check for empty non-nil
/// slices, it should not result in any identity being selected") treats
/// `fromEndpoints: []`, `fromCIDR: []`, `fromCIDRSet: []` and `fromEntities: []` (and their
/// egress twins) as selecting nothing, not as the wildcard that an absent field is.
#[test]
fn an_empty_peer_list_selects_no_remote() {
    for field in ["fromEndpoints", "fromCIDR", "fromCIDRSet", "fromEntities"] {
        let snap = snapshot(&policy(
            "empty-peers",
            &format!(
                "endpointSelector: {{matchLabels: {{app: db}}}}\n\
                 ingress:\n\
                 - {field}: []\n\
                 \x20 toPorts: [{{ports: [{{port: '5432'}}]}}]\n\
                 - {field}: []"
            ),
        ));
        for remote in [WEB, CACHE, HOST, WORLD] {
            assert_eq!(
                ingress(&snap, "db", remote, 5432),
                "refused:",
                "{field} {remote}"
            );
            assert_eq!(
                ingress(&snap, "db", remote, 1),
                "refused:",
                "{field} {remote}"
            );
        }
    }
    for field in ["toEndpoints", "toCIDR", "toCIDRSet", "toEntities"] {
        let snap = snapshot(&policy(
            "empty-peers",
            &format!(
                "endpointSelector: {{matchLabels: {{app: web}}}}\n\
                 egress: [{{{field}: [], toPorts: [{{ports: [{{port: '5432'}}]}}]}}]"
            ),
        ));
        for remote in [DB, CACHE, HOST, WORLD] {
            assert_eq!(
                egress(&snap, "web", remote, 5432),
                "refused:",
                "{field} {remote}"
            );
        }
    }
    let snap = snapshot(&policy(
        "empty-deny",
        "endpointSelector: {matchLabels: {app: db}}\n\
         ingress: [{toPorts: [{ports: [{port: '5432'}]}]}]\n\
         ingressDeny: [{fromEndpoints: [], toPorts: [{ports: [{port: '5432'}]}]}]",
    ));
    assert_eq!(ingress(&snap, "db", WEB, 5432), "allowed:empty-deny");
    let policies = parse_policies(
        "test.yaml",
        &policy(
            "warned",
            "endpointSelector: {}\ningress: [{fromEntities: [], toPorts: [{ports: [{port: '1'}]}]}]",
        ),
    )
    .unwrap();
    let warnings: Vec<String> = policies[0]
        .warnings()
        .iter()
        .map(|w| w.to_string())
        .collect();
    assert_eq!(
        warnings,
        ["test.yaml: policy \"warned\": spec.ingress[0].fromEntities: the empty list selects no \
          remote, so this rule allows (or denies) nothing (as in Cilium; leave the field out to \
          mean every remote)"]
    );
}

#[test]
fn l4_only_rules_need_no_parsing() {
    let snap = snapshot(&policy(
        "l4",
        "endpointSelector: {matchLabels: {app: db}}\ningress: [{toPorts: [{ports: [{port: 5432}]}]}]",
    ));
    assert_eq!(ingress(&snap, "db", WORLD, 5432), "allowed:l4");
    assert_eq!(ingress(&snap, "db", HOST, 5432), "allowed:l4");
    assert_eq!(ingress(&snap, "db", WORLD, 5433), "refused:");
}

#[test]
fn empty_rule_only_turns_default_deny_on() {
    let snap = snapshot(&policy(
        "lock",
        "endpointSelector: {matchLabels: {app: db}}\ningress: [{}]",
    ));
    assert_eq!(ingress(&snap, "db", WEB, 1), "refused:");
    assert_eq!(egress(&snap, "db", WEB, 1), "unrestricted");
    let snap = snapshot(&policy(
        "empty-list",
        "endpointSelector: {matchLabels: {app: db}}\ningress: []",
    ));
    assert_eq!(ingress(&snap, "db", WEB, 1), "unrestricted");
}

#[test]
fn l7_rules_and_allow_all_forms() {
    let snap = snapshot(&policy(
        "l7",
        "endpointSelector: {matchLabels: {app: db}}\n\
         ingress:\n\
         - fromEndpoints: [{matchLabels: {app: web}}]\n\
         \x20 toPorts:\n\
         \x20 - ports: [{port: 7000}]\n\
         \x20   rules: {l7proto: test, l7: [{cmd: get}, {cmd: put}]}\n\
         \x20 - ports: [{port: 7001}]\n\
         \x20   rules: {l7proto: test, l7: [{}]}\n\
         \x20 - ports: [{port: 7002}]\n\
         \x20   rules: {l7proto: test, l7: []}\n\
         \x20 - ports: [{port: 7003}]\n\
         \x20   rules: {l7proto: test}",
    ));
    let strict = l7_policy(&snap, "db", Direction::Ingress, WEB, 7000);
    assert_eq!(strict.proto(), Some("test"));
    assert_eq!(request(&strict, "get"), "allow:l7");
    assert_eq!(request(&strict, "put"), "allow:l7");
    assert_eq!(request(&strict, "del"), "deny:");
    for port in [7001, 7002, 7003] {
        let open = l7_policy(&snap, "db", Direction::Ingress, WEB, port);
        assert_eq!(open.proto(), Some("test"));
        assert_eq!(request(&open, "del"), "allow:l7", "port {port}");
    }
    assert_eq!(ingress(&snap, "db", CACHE, 7000), "refused:");
}

#[test]
fn l7_port_with_an_l4_rule_for_another_remote() {
    let snap = snapshot(&format!(
        "{}---\n{}",
        policy(
            "strict",
            "endpointSelector: {matchLabels: {app: db}}\n\
             ingress: [{fromEndpoints: [{matchLabels: {app: web}}], toPorts: [{ports: [{port: 7000}], rules: {l7proto: test, l7: [{cmd: get}]}}]}]"
        ),
        policy(
            "loose",
            "endpointSelector: {matchLabels: {app: db}}\n\
             ingress: [{fromEndpoints: [{matchLabels: {app: cache}}]}]"
        ),
    ));
    let web = l7_policy(&snap, "db", Direction::Ingress, WEB, 7000);
    assert_eq!(request(&web, "get"), "allow:strict");
    assert_eq!(request(&web, "put"), "deny:");
    let cache = l7_policy(&snap, "db", Direction::Ingress, CACHE, 7000);
    assert_eq!(cache.proto(), Some("test"));
    assert_eq!(request(&cache, "put"), "allow:loose");
    assert_eq!(ingress(&snap, "db", CACHE, 7001), "allowed:loose");
}

/// Cilium's layer 7 documentation (Documentation/security/policy/layer7.rst): "If a layer 4
/// rule is specified in the policy, and a similar layer 4 rule with layer 7 rules is also
/// specified, then the layer 7 portions of the latter rule will have no effect." The same
/// remote, allowed on the L7 port by a rule without L7 rules (all ports, or a range holding the
/// port), may send any request there; a remote allowed only with L7 rules may not.
#[test]
fn an_l4_allow_for_the_same_remote_opens_its_l7_port() {
    for loose in [
        "ingress: [{fromEndpoints: [{matchLabels: {app: web}}]}]",
        "ingress: [{fromEndpoints: [{matchLabels: {app: web}}], toPorts: [{ports: [{port: '6000', endPort: 8000}]}]}]",
    ] {
        let snap = snapshot(&format!(
            "{}---\n{}",
            policy(
                "strict",
                "endpointSelector: {matchLabels: {app: db}}\n\
                 ingress: [{fromEndpoints: [{matchLabels: {app: web}}, {matchLabels: {app: cache}}], toPorts: [{ports: [{port: 7000}], rules: {l7proto: test, l7: [{cmd: get}]}}]}]"
            ),
            policy(
                "loose",
                &format!("endpointSelector: {{matchLabels: {{app: db}}}}\n{loose}"),
            ),
        ));
        let web = l7_policy(&snap, "db", Direction::Ingress, WEB, 7000);
        assert_eq!(web.proto(), Some("test"), "{loose}");
        assert_eq!(request(&web, "put"), "allow:loose", "{loose}");
        assert_eq!(request(&web, "get"), "allow:strict", "{loose}");
        let cache = l7_policy(&snap, "db", Direction::Ingress, CACHE, 7000);
        assert_eq!(request(&cache, "get"), "allow:strict", "{loose}");
        assert_eq!(request(&cache, "put"), "deny:", "{loose}");
    }
}

#[test]
fn rules_add_up_across_policies() {
    let rule = |name: &str, cmd: &str| {
        policy(
            name,
            &format!(
                "endpointSelector: {{matchLabels: {{app: web}}}}\n\
                 egress: [{{toEndpoints: [{{matchLabels: {{app: db}}}}], toPorts: [{{ports: [{{port: 7000}}], rules: {{l7proto: test, l7: [{{cmd: {cmd}}}]}}}}]}}]"
            ),
        )
    };
    let snap = snapshot(&format!(
        "{}---\n{}",
        rule("reads", "get"),
        rule("writes", "put")
    ));
    let l7 = l7_policy(&snap, "web", Direction::Egress, DB, 7000);
    assert_eq!(request(&l7, "get"), "allow:reads");
    assert_eq!(request(&l7, "put"), "allow:writes");
    assert_eq!(request(&l7, "del"), "deny:");
}

#[test]
fn enable_default_deny_false() {
    let snap = snapshot(&policy(
        "soft",
        "endpointSelector: {matchLabels: {app: db}}\n\
         enableDefaultDeny: {ingress: false}\n\
         ingress: [{fromEndpoints: [{matchLabels: {app: web}}]}]\n\
         ingressDeny: [{fromEntities: [world]}]",
    ));
    assert_eq!(ingress(&snap, "db", CACHE, 1), "unrestricted");
    assert_eq!(ingress(&snap, "db", WORLD, 1), "refused:soft");
    let snap = snapshot(&format!(
        "{}---\n{}",
        policy(
            "soft",
            "endpointSelector: {}\nenableDefaultDeny: {ingress: false}\ningress: [{fromEntities: [host]}]"
        ),
        policy("hard", "endpointSelector: {matchLabels: {app: db}}\ningress: [{fromEndpoints: [{matchLabels: {app: web}}]}]"),
    ));
    assert_eq!(ingress(&snap, "web", WORLD, 1), "unrestricted");
    assert_eq!(ingress(&snap, "db", HOST, 1), "allowed:soft");
    assert_eq!(ingress(&snap, "db", CACHE, 1), "refused:");
}

/// With only default-allow rules, Cilium synthesizes a wildcard allow-all rule after them
/// (cilium/cilium `pkg/policy/repository.go`, `computePolicyEnforcementAndRules`: "we must
/// insert an additional allow-all rule [...] because rules may have additional effects such as
/// enabling L7 proxy"): the L7 port is still parsed, and every request of every remote passes.
#[test]
fn l7_rules_without_default_deny_parse_but_allow_everything() {
    let snap = snapshot(&policy(
        "soft-l7",
        "endpointSelector: {matchLabels: {app: db}}\n\
         enableDefaultDeny: {ingress: false}\n\
         ingress: [{fromEndpoints: [{matchLabels: {app: web}}], toPorts: [{ports: [{port: 7000}], rules: {l7proto: test, l7: [{cmd: get}]}}]}]",
    ));
    assert_eq!(snap.enforced("db", Direction::Ingress), Some(false));
    assert!(snap
        .l7_ports()
        .iter()
        .any(|p| p.endpoint == "db" && p.port == 7000 && &*p.proto == "test"));
    for remote in [WEB, CACHE, WORLD] {
        let open = snap.request_policy("db", Direction::Ingress, ip(remote), 7000);
        assert_eq!(open.proto(), Some("test"), "{remote}");
        assert_eq!(request(&open, "put"), "allow:", "{remote}");
    }
}

#[test]
fn clusterwide_policies_and_specs_lists() {
    let snap = snapshot(
        "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: cw}\n\
         specs:\n\
         - endpointSelector: {matchLabels: {app: db}}\n\
         \x20 ingress: [{fromEndpoints: [{matchLabels: {app: web}}]}]\n\
         - endpointSelector: {matchLabels: {app: cache}}\n\
         \x20 ingress: [{fromEndpoints: [{matchLabels: {app: db}}]}]\n",
    );
    assert_eq!(ingress(&snap, "db", WEB, 1), "allowed:cw");
    assert_eq!(ingress(&snap, "cache", DB, 1), "allowed:cw");
    assert_eq!(ingress(&snap, "cache", WEB, 1), "refused:");
}

#[test]
fn request_policy_follows_the_snapshot() {
    let snap = snapshot(&format!(
        "{}---\n{}",
        policy(
            "strict",
            "endpointSelector: {matchLabels: {app: db}}\n\
             ingress: [{fromEndpoints: [{matchLabels: {app: web}}], toPorts: [{ports: [{port: 7000}], rules: {l7proto: test, l7: [{cmd: get}]}}]}]"
        ),
        policy("deny-cache", "endpointSelector: {matchLabels: {app: db}}\ningressDeny: [{fromEndpoints: [{matchLabels: {app: cache}}]}]"),
    ));
    let real = snap.request_policy("db", Direction::Ingress, ip(WEB), 7000);
    assert_eq!(request(&real, "get"), "allow:strict");
    assert_eq!(request(&real, "put"), "deny:");
    let denied = snap.request_policy("db", Direction::Ingress, ip(CACHE), 7000);
    assert_eq!(denied.proto(), Some("test"));
    assert_eq!(request(&denied, "get"), "deny:deny-cache");
    let default = snap.request_policy("db", Direction::Ingress, ip(HOST), 7000);
    assert_eq!(request(&default, "get"), "deny:");
    let free = snap.request_policy("web", Direction::Ingress, ip(HOST), 7000);
    assert_eq!(request(&free, "get"), "allow:");
    let snap = snapshot(&policy(
        "l3",
        "endpointSelector: {matchLabels: {app: db}}\ningress: [{fromEntities: [host]}]",
    ));
    let l3 = snap.request_policy("db", Direction::Ingress, ip(HOST), 7000);
    assert_eq!(l3.proto(), None);
    assert_eq!(request(&l3, "anything"), "allow:l3");
}

#[test]
fn identities_are_stable_across_rebuilds() {
    let registry = registry();
    let first = Snapshot::build(Vec::new(), &endpoints(), &[ip(HOST)], &registry, None).unwrap();
    assert_eq!(first.revision(), 1);
    assert_eq!(first.identity_of(ip(HOST)).id, 1);
    assert_eq!(
        &*first.identity_of(ip(HOST)).labels,
        ["reserved:host".to_owned()]
    );
    assert_eq!(first.identity_of(ip(WORLD)).id, 2);
    assert_eq!(
        &*first.identity_of(ip(WORLD)).labels,
        ["reserved:world".to_owned()]
    );
    let web = first.identity_of(ip(WEB)).clone();
    assert!(web.id >= 256);
    assert_eq!(
        &*web.labels,
        [
            "app=web".to_owned(),
            "k8s:io.kubernetes.pod.namespace=default".to_owned(),
            "tier=front".to_owned()
        ],
        "the endpoint's labels and its namespace"
    );
    assert_eq!(first.identity_of(ip("fd00::1")), &web);
    assert_eq!(first.endpoint("web").unwrap().identity, web);

    let mut changed = endpoints();
    changed.remove(1);
    changed[1].labels.insert("k8s:zone".into(), "a".into());
    changed.push(common_endpoint(
        "web-2",
        "10.0.0.9",
        &[("app", "web"), ("tier", "front")],
    ));
    let policies = parse_policies(
        "p.yaml",
        &policy("p", "endpointSelector: {}\ningress: [{}]"),
    )
    .unwrap();
    let second = Snapshot::build(policies, &changed, &[], &registry, Some(&first)).unwrap();
    assert_eq!(second.revision(), 2);
    assert_eq!(second.policies().len(), 1);
    assert_eq!(second.identity_of(ip(WEB)).id, web.id);
    assert_eq!(second.identity_of(ip("10.0.0.9")).id, web.id);
    let cache = second.identity_of(ip(CACHE));
    assert_eq!(
        &*cache.labels,
        [
            "app=cache".to_owned(),
            "k8s:io.kubernetes.pod.namespace=default".to_owned(),
            "zone=a".to_owned()
        ]
    );
    let used: Vec<u32> = [WEB, DB, CACHE]
        .iter()
        .map(|a| first.identity_of(ip(a)).id)
        .collect();
    assert!(
        !used.contains(&cache.id),
        "a new label set gets a new number"
    );
    assert_eq!(
        second.identity_of(ip(DB)).id,
        2,
        "a removed endpoint's address is world"
    );
    assert_eq!(
        second.identity_of(ip(HOST)).id,
        2,
        "host addresses come from host_ips"
    );
}

fn common_endpoint(
    name: &str,
    addr: &str,
    labels: &[(&str, &str)],
) -> axoneme_policy::EndpointSpec {
    axoneme_policy::EndpointSpec {
        name: name.into(),
        ips: vec![ip(addr)],
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        namespace: None,
        policy_audit_mode: false,
    }
}

#[test]
fn snapshots_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Snapshot>();
    check::<axoneme_policy::PortPolicy>();
}

#[test]
fn l7_ports_list_every_endpoint_direction_and_port_with_l7_rules() {
    let snap = snapshot(&format!(
        "{}---\n{}",
        policy(
            "db-l7",
            "endpointSelector: {matchLabels: {tier: back}}\n\
             ingress: [{toPorts: [{ports: [{port: \"7001\"}, {port: \"7000\"}], rules: {l7proto: test, l7: [{cmd: get}]}}]},\n\
             \x20         {toPorts: [{ports: [{port: \"5432\"}]}]}]"
        ),
        policy(
            "web-out",
            "endpointSelector: {matchLabels: {app: web}}\n\
             egress: [{toEndpoints: [{matchLabels: {app: db}}], toPorts: [{ports: [{port: \"9000\"}], rules: {l7proto: other}}]}]"
        ),
    ));
    let ports: Vec<String> = snap
        .l7_ports()
        .iter()
        .map(|p| {
            let ips: Vec<String> = p.ips.iter().map(|ip| ip.to_string()).collect();
            format!(
                "{} {:?} {} {} [{}]",
                p.endpoint,
                p.direction,
                p.port,
                p.proto,
                ips.join(" ")
            )
        })
        .collect();
    assert_eq!(
        ports,
        [
            "db Ingress 7000 test [10.0.0.2]",
            "db Ingress 7001 test [10.0.0.2]",
            "web Egress 9000 other [10.0.0.1 fd00::1]",
        ]
    );
    assert_eq!(
        snap.endpoint_at(ip("fd00::1")).map(|e| e.name.as_str()),
        Some("web")
    );
    assert_eq!(snap.endpoint_at(ip(WORLD)), None);
}

/// The common endpoints (namespace `default`) plus a web and a db in namespace `prod`.
fn namespaced_snapshot(yaml: &str) -> Snapshot {
    let mut all = endpoints();
    for (name, addr, app) in [
        ("prod-web", "10.0.1.1", "web"),
        ("prod-db", "10.0.1.2", "db"),
    ] {
        let mut endpoint = common_endpoint(name, addr, &[("app", app)]);
        endpoint.namespace = Some("prod".into());
        all.push(endpoint);
    }
    let policies = parse_policies("ns.yaml", yaml).unwrap_or_else(|e| panic!("{e}"));
    Snapshot::build(policies, &all, &[], &registry(), None).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_namespaced_policy_selects_and_admits_its_own_namespace() {
    let spec = "endpointSelector: {matchLabels: {app: db}}\ningress: [{fromEndpoints: [{matchLabels: {app: web}}]}]";
    let in_prod = policy("p", spec).replace("name: p", "name: p\n  namespace: prod");
    let snap = namespaced_snapshot(&in_prod);
    assert_eq!(
        ingress(&snap, "db", WEB, 5432),
        "unrestricted",
        "another namespace"
    );
    assert_eq!(ingress(&snap, "prod-db", "10.0.1.1", 5432), "allowed:p");
    assert_eq!(
        ingress(&snap, "prod-db", WEB, 5432),
        "refused:",
        "a web of default"
    );
    assert_eq!(snap.enforced("prod-db", Direction::Ingress), Some(true));
    assert_eq!(snap.enforced("db", Direction::Ingress), Some(false));
    assert_eq!(snap.enforced("nobody", Direction::Ingress), None);

    let default = namespaced_snapshot(&policy("d", spec));
    assert_eq!(
        ingress(&default, "db", WEB, 5432),
        "allowed:d",
        "default namespace"
    );
    assert_eq!(ingress(&default, "db", "10.0.1.1", 5432), "refused:");
    assert_eq!(ingress(&default, "prod-db", WEB, 5432), "unrestricted");
}

#[test]
fn a_peer_selector_naming_the_namespace_reaches_across() {
    for key in [
        "k8s:io.kubernetes.pod.namespace",
        "io.kubernetes.pod.namespace",
    ] {
        let spec = format!(
            "endpointSelector: {{matchLabels: {{app: db}}}}\ningress: [{{fromEndpoints: [{{matchLabels: {{app: web, '{key}': default}}}}]}}]"
        );
        let yaml = policy("cross", &spec).replace("name: cross", "name: cross\n  namespace: prod");
        let snap = namespaced_snapshot(&yaml);
        assert_eq!(
            ingress(&snap, "prod-db", WEB, 5432),
            "allowed:cross",
            "{key}"
        );
        assert_eq!(
            ingress(&snap, "prod-db", "10.0.1.1", 5432),
            "refused:",
            "{key}"
        );
    }
    let any = "endpointSelector: {matchLabels: {app: db}}\ningress: [{fromEndpoints: [{matchLabels: {app: web}, matchExpressions: [{key: k8s:io.kubernetes.pod.namespace, operator: Exists}]}]}]";
    let snap = namespaced_snapshot(&policy("any", any));
    assert_eq!(ingress(&snap, "db", "10.0.1.1", 5432), "allowed:any");
    assert_eq!(ingress(&snap, "db", WEB, 5432), "allowed:any");
}

/// Cilium leaves a peer selector unscoped only when it names the namespace through the `k8s:`
/// or `any:` source (cilium/cilium `pkg/k8s/apis/cilium.io/utils/utils.go`,
/// `getEndpointSelector`: `HasKey(podPrefixLbl)`, `HasKey(podAnyPrefixLbl)` and the namespace
/// labels prefix with the same two sources). Through another source (`container:`, `unspec:`)
/// the selector is scoped to the policy's namespace and also asks for a label of that source
/// that no pod has, so it admits nobody; reading it as naming the namespace would reach across
/// namespaces. Such a key is refused.
#[test]
fn a_namespace_key_of_another_source_is_refused() {
    for key in [
        "container:io.kubernetes.pod.namespace",
        "unspec:io.kubernetes.pod.namespace",
        "container:io.cilium.k8s.namespace.labels.team",
    ] {
        for (kind, select) in [
            ("matchLabels", format!("matchLabels: {{'{key}': default}}")),
            (
                "matchExpressions[0]",
                format!("matchExpressions: [{{key: '{key}', operator: Exists}}]"),
            ),
        ] {
            let spec = format!(
                "endpointSelector: {{matchLabels: {{app: db}}}}\ningress: [{{fromEndpoints: [{{{select}}}]}}]"
            );
            let yaml =
                policy("cross", &spec).replace("name: cross", "name: cross\n  namespace: prod");
            let error = match parse_policies("ns.yaml", &yaml) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("{key} in {kind} was accepted"),
            };
            let field = if kind == "matchLabels" {
                format!("matchLabels.{key}")
            } else {
                format!("{kind}.key")
            };
            assert_eq!(
                error,
                format!(
                    "ns.yaml: policy \"cross\": spec.ingress[0].fromEndpoints[0].{field}: the \
                     namespace label can only be named with the k8s: or any: source (or none), \
                     as Cilium scopes selectors by these"
                ),
            );
        }
    }
}

#[test]
fn a_clusterwide_policy_spans_namespaces() {
    let spec = "endpointSelector: {matchLabels: {app: db}}\ningress: [{fromEndpoints: [{matchLabels: {'k8s:app': web}}]}]";
    let yaml = policy("cw", spec).replace(
        "kind: CiliumNetworkPolicy",
        "kind: CiliumClusterwideNetworkPolicy",
    );
    let snap = namespaced_snapshot(&yaml);
    for db in ["db", "prod-db"] {
        assert_eq!(ingress(&snap, db, WEB, 5432), "allowed:cw", "{db}");
        assert_eq!(ingress(&snap, db, "10.0.1.1", 5432), "allowed:cw", "{db}");
        assert_eq!(ingress(&snap, db, CACHE, 5432), "refused:", "{db}");
    }
}

#[test]
fn an_endpoint_selector_always_applies_in_the_policy_namespace() {
    let spec = "endpointSelector: {matchLabels: {app: db, 'k8s:io.kubernetes.pod.namespace': default}}\ningress: [{}]";
    let yaml = policy("own", spec).replace("name: own", "name: own\n  namespace: prod");
    let policies = parse_policies("ns.yaml", &yaml).unwrap();
    assert_eq!(policies[0].warnings().len(), 1);
    assert!(
        policies[0].warnings()[0]
            .to_string()
            .contains("spec.endpointSelector: selects in namespace \"default\""),
        "{}",
        policies[0].warnings()[0]
    );
    let snap = namespaced_snapshot(&yaml);
    assert_eq!(snap.enforced("prod-db", Direction::Ingress), Some(true));
    assert_eq!(snap.enforced("db", Direction::Ingress), Some(false));
}

#[test]
fn remote_endpoints_are_identities_that_no_listener_guards() {
    let policies = parse_policies(
        "p.yaml",
        &policy(
            "db-from-api",
            "endpointSelector: {matchLabels: {app: db}}\ningress: [{fromEndpoints: [{matchLabels: {app: api}}]}]",
        ),
    )
    .unwrap();
    let remote = vec![
        common_endpoint("node-a/api", "10.1.0.1", &[("app", "api")]),
        common_endpoint("node-a/other", "10.1.0.2", &[("app", "other")]),
        // Claims an address of a local endpoint: the local one keeps it.
        common_endpoint("node-c/db", DB, &[("app", "api")]),
        // Claims an address of this host: it stays the host's, as a local endpoint's address
        // stays the local endpoint's (in Cilium the host's own entries in the ipcache win
        // over those from the kvstore).
        common_endpoint("node-c/host", HOST, &[("app", "api")]),
    ];
    let registry = registry();
    let cluster = ClusterInputs {
        remote: &remote,
        numbers: None,
    };
    let snap = Snapshot::build_in_cluster(
        policies.clone(),
        &endpoints(),
        cluster,
        &[ip(HOST)],
        &registry,
        None,
    )
    .unwrap();
    assert_eq!(
        ingress(&snap, "db", "10.1.0.1", 5432),
        "allowed:db-from-api"
    );
    assert_eq!(ingress(&snap, "db", HOST, 5432), "refused:");
    assert_eq!(
        snap.identity_of(ip(HOST)).id,
        snap.reserved_identities()[0].id
    );
    assert_eq!(ingress(&snap, "db", "10.1.0.2", 5432), "refused:");
    assert_eq!(ingress(&snap, "db", WORLD, 5432), "refused:");
    let api = snap.identity_of(ip("10.1.0.1"));
    assert!(api.id >= 256);
    assert_eq!(
        &*api.labels,
        [
            "app=api".to_owned(),
            "k8s:io.kubernetes.pod.namespace=default".to_owned()
        ]
    );
    assert_eq!(snap.identity_of(ip(DB)).labels[0], "app=db");
    assert!(snap.endpoint("node-a/api").is_none(), "not guarded here");
    assert!(snap.endpoint_at(ip("10.1.0.1")).is_none());
    assert!(snap.l7_ports().iter().all(|p| !p.endpoint.contains('/')));

    // Gone from the set, its address is the world's again.
    let alone = ClusterInputs::default();
    let gone =
        Snapshot::build_in_cluster(policies, &endpoints(), alone, &[], &registry, Some(&snap))
            .unwrap();
    assert_eq!(gone.identity_of(ip("10.1.0.1")).id, 2);
    assert_eq!(ingress(&gone, "db", "10.1.0.1", 5432), "refused:");
}

#[test]
fn two_remote_endpoints_claiming_one_address_fail_the_build() {
    let remote = vec![
        common_endpoint("node-a/api", "10.1.0.1", &[("app", "api")]),
        common_endpoint("node-b/api", "10.1.0.1", &[("app", "api")]),
    ];
    let error = remote_error(&remote);
    assert_eq!(
        error,
        "endpoint \"node-b/api\": address 10.1.0.1 already belongs to remote endpoint \"node-a/api\""
    );
    let twice = vec![
        common_endpoint("node-a/api", "10.1.0.1", &[("app", "api")]),
        common_endpoint("node-a/api", "10.1.0.2", &[("app", "api")]),
    ];
    let error = remote_error(&twice);
    assert!(error.contains("used by two remote endpoints"), "{error}");
}

fn remote_error(remote: &[axoneme_policy::EndpointSpec]) -> String {
    let cluster = ClusterInputs {
        remote,
        numbers: None,
    };
    Snapshot::build_in_cluster(Vec::new(), &endpoints(), cluster, &[], &registry(), None)
        .unwrap_err()
        .to_string()
}

#[test]
fn identity_numbers_come_from_the_cluster_when_it_gives_them() {
    let remote = vec![common_endpoint("node-a/api", "10.1.0.1", &[("app", "api")])];
    let mut numbers = std::collections::BTreeMap::new();
    for spec in endpoints().iter().chain(&remote) {
        let labels = spec.identity_labels().unwrap();
        let number = 1000 + numbers.len() as u32;
        numbers.insert(labels, number);
    }
    let cluster = ClusterInputs {
        remote: &remote,
        numbers: Some(&numbers),
    };
    let registry = registry();
    let snap = Snapshot::build_in_cluster(Vec::new(), &endpoints(), cluster, &[], &registry, None)
        .unwrap();
    let api = remote[0].identity_labels().unwrap();
    assert_eq!(snap.identity_of(ip("10.1.0.1")).id, numbers[&api]);
    let web = endpoints()[0].identity_labels().unwrap();
    assert_eq!(snap.identity_of(ip(WEB)).id, numbers[&web]);
    assert_eq!(snap.endpoint("web").unwrap().identity.id, numbers[&web]);
    assert_eq!(snap.identity_of(ip(WORLD)).id, 2, "reserved ones stay");

    // A label set the cluster has not numbered fails the build: no local number instead.
    numbers.remove(&api);
    let cluster = ClusterInputs {
        remote: &remote,
        numbers: Some(&numbers),
    };
    let error = Snapshot::build_in_cluster(Vec::new(), &endpoints(), cluster, &[], &registry, None)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("have no identity number in the cluster"),
        "{error}"
    );
}
