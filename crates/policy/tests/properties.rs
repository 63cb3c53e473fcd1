//! Properties that must hold for any input.

mod common;

use axoneme_policy::parse_policies;
use axoneme_sdk::Direction;
use common::snapshot;
use proptest::prelude::*;

proptest! {
    #[test]
    fn parsing_never_panics(text in "\\PC{0,200}") {
        let _ = parse_policies("fuzz.yaml", &text);
    }

    #[test]
    fn parsing_mangled_policies_never_panics(cut in 0usize..400, junk in "[ :\\-\\[\\]{}a-z0-9'\\n]{0,12}") {
        let text = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p}\nspec:\n  endpointSelector: {matchLabels: {app: db}}\n  ingress:\n  - fromCIDRSet: [{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}]\n    toPorts: [{ports: [{port: 80, endPort: 90}]}]\n";
        let cut = cut.min(text.len());
        let mangled = format!("{}{junk}{}", &text[..cut], &text[cut..]);
        let _ = parse_policies("fuzz.yaml", &mangled);
    }

    #[test]
    fn a_cidr_rule_allows_exactly_its_addresses(a in any::<u8>(), b in any::<u8>(), port in any::<u16>()) {
        let snap = snapshot(
            "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p}\n\
             spec: {endpointSelector: {matchLabels: {app: db}}, ingress: [{fromCIDRSet: [{cidr: 172.16.0.0/12, except: [172.20.0.0/16]}]}]}\n",
        );
        let remote = std::net::IpAddr::from([172, a, b, 1]);
        let inside = (16..32).contains(&a) && a != 20;
        let verdict = snap.decide_connection("db", Direction::Ingress, remote, port);
        prop_assert_eq!(common::short(&verdict) == "allowed:p", inside);
    }
}
