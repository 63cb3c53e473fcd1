//! The suggested policy as YAML, written by hand so that every rule carries a comment with the
//! number of requests it covers. Every string is written double-quoted with JSON's escapes,
//! which YAML reads the same, so no value can change the document's structure.

use std::fmt::Write as _;

use axoneme_sdk::Direction;

use super::{suggest_rules, Generalise, Observed, Peer, SuggestError, NAMESPACE_LABEL};

/// `value` as a double-quoted YAML scalar.
fn quoted(value: &str) -> String {
    serde_json::Value::String(value.to_owned()).to_string()
}

/// `label` (`key=value`) as a key and a value.
fn split_label(label: &str) -> (&str, &str) {
    label.split_once('=').unwrap_or((label, ""))
}

/// The namespace among identity labels (`default` when none says).
fn namespace_of(labels: &[String]) -> &str {
    labels
        .iter()
        .map(|l| split_label(l))
        .find(|(k, _)| *k == NAMESPACE_LABEL)
        .map_or("default", |(_, v)| v)
}

/// A policy name from an endpoint's: lowercase letters, digits and `-`.
fn policy_name(endpoint: &str, direction: Direction) -> String {
    let name: String = endpoint
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        })
        .collect();
    let direction = match direction {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    };
    format!("{}-{direction}-suggested", name.trim_matches('-'))
}

/// Writes the policy of `endpoint` in `direction` for what was `observed`.
pub(super) fn policy(
    out: &mut String,
    endpoint: &str,
    direction: Direction,
    observed: &Observed,
    files: &[String],
    generalise: Generalise,
    min_count: u64,
) -> Result<(), SuggestError> {
    let namespace = namespace_of(&observed.own_labels);
    let selector: Vec<(&str, &str)> = observed
        .own_labels
        .iter()
        .map(|l| split_label(l))
        .filter(|(k, _)| *k != NAMESPACE_LABEL)
        .collect();
    if selector.is_empty() {
        return Err(SuggestError::Unwritable {
            endpoint: endpoint.to_owned(),
            message: "it has no labels besides its namespace, so no selector can name it alone"
                .to_owned(),
        });
    }
    let (section, peers_field, entities_field) = match direction {
        Direction::Ingress => ("ingress", "fromEndpoints", "fromEntities"),
        Direction::Egress => ("egress", "toEndpoints", "toEntities"),
    };
    let _ = writeln!(
        out,
        "# Suggested by `axoneme policy suggest` for endpoint {} ({section}) from {} forwarded \
         request(s), {} of them audited, in {}.",
        quoted(endpoint),
        observed.requests,
        observed.audited,
        files.join(", ")
    );
    let _ = writeln!(
        out,
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: {}\n  \
         namespace: {}\nspec:\n  endpointSelector:\n    matchLabels:",
        quoted(&policy_name(endpoint, direction)),
        quoted(namespace)
    );
    for (key, value) in &selector {
        let _ = writeln!(out, "      {}: {}", quoted(key), quoted(value));
    }
    let mut items = String::new();
    for (peer, requests) in &observed.peers {
        let Some(suggestion) = suggest_rules(&peer.proto, requests, generalise) else {
            let count: u64 = requests.values().sum();
            let _ = writeln!(
                items,
                "  # Left out: {count} request(s) of l7proto {} on port {}: no suggester for it.",
                quoted(&peer.proto),
                peer.port
            );
            continue;
        };
        let (kept, left_out): (Vec<_>, Vec<_>) = suggestion
            .rules
            .into_iter()
            .partition(|rule| rule.count >= min_count);
        for rule in &left_out {
            let keys: Vec<String> = rule
                .keys
                .iter()
                .map(|(k, v)| format!("{k}: {}", quoted(v)))
                .collect();
            let _ = writeln!(
                items,
                "  # Left out (--min-count {min_count}): {{{}}} covering {} request(s).",
                keys.join(", "),
                rule.count
            );
        }
        for what in &suggestion.unexpressible {
            let _ = writeln!(items, "  # Left out, no rule can name it: {what}.");
        }
        if kept.is_empty() {
            continue;
        }
        peer_item(&mut items, peer, peers_field, entities_field, namespace);
        let _ = writeln!(
            items,
            "      toPorts:\n        - ports:\n            - port: \"{}\"\n              \
             protocol: TCP\n          rules:",
            peer.port
        );
        let list = if peer.proto == "kafka" {
            "kafka"
        } else {
            let _ = writeln!(items, "            l7proto: {}", quoted(&peer.proto));
            "l7"
        };
        let _ = writeln!(items, "            {list}:");
        for rule in kept {
            let _ = writeln!(items, "              # {} request(s)", rule.count);
            for (i, (key, value)) in rule.keys.iter().enumerate() {
                let lead = if i == 0 { "- " } else { "  " };
                let _ = writeln!(items, "              {lead}{key}: {}", quoted(value));
            }
        }
    }
    if items.lines().all(|l| l.trim_start().starts_with('#')) {
        // Without an allow item the policy would select the endpoint and allow nothing:
        // say so rather than write a policy that denies everything it selects.
        out.push_str(&items);
        let _ = writeln!(
            out,
            "  # No rule kept: the policy would deny every request; nothing is allowed.\n  {section}: []"
        );
        return Ok(());
    }
    let _ = writeln!(out, "  {section}:");
    out.push_str(&items);
    Ok(())
}

/// Writes the start of one allow item: the peer's selector (or entity).
fn peer_item(
    out: &mut String,
    peer: &Peer,
    peers_field: &str,
    entities_field: &str,
    namespace: &str,
) {
    if let Some(entity) = peer
        .labels
        .iter()
        .find_map(|l| l.strip_prefix("reserved:"))
    {
        let _ = writeln!(out, "    - {entities_field}: [{}]", quoted(entity));
        return;
    }
    let _ = writeln!(out, "    - {peers_field}:\n        - matchLabels:");
    for label in &peer.labels {
        let (key, value) = split_label(label);
        if key == NAMESPACE_LABEL && value == namespace {
            continue;
        }
        let _ = writeln!(out, "            {}: {}", quoted(key), quoted(value));
    }
}
