//! The suggested policy as YAML, written by hand so that every rule carries a comment with the
//! number of requests it covers. A string is written plain when YAML cannot read it as anything
//! else (letters, digits and `_.-/`, starting with a letter, not a YAML 1.1 boolean or null);
//! otherwise double-quoted with JSON's escapes, which YAML reads the same, so no value can
//! change the document's structure.

use std::fmt::Write as _;

use axoneme_sdk::Direction;

use super::{suggest_rules, Generalise, Observed, Peer, SuggestError, NAMESPACE_LABEL};

/// `value` as a double-quoted YAML scalar.
fn quoted(value: &str) -> String {
    serde_json::Value::String(value.to_owned()).to_string()
}

/// Words YAML 1.1 readers take for booleans or null.
const SPECIAL_WORDS: [&str; 11] = [
    "true", "false", "yes", "no", "on", "off", "y", "n", "null", "none", "~",
];

/// `value` as a YAML scalar: plain when nothing else can be read into it, else quoted.
fn scalar(value: &str) -> String {
    let plain = value.starts_with(|c: char| c.is_ascii_alphabetic())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c))
        && !SPECIAL_WORDS.contains(&value.to_ascii_lowercase().as_str());
    match plain {
        true => value.to_owned(),
        false => quoted(value),
    }
}

/// "1 request", "2 requests".
fn count_text(count: u64) -> String {
    match count {
        1 => "1 request".to_owned(),
        n => format!("{n} requests"),
    }
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

/// Writes the policy of `endpoint` in `direction` for what was `observed`, unless no rule is
/// kept (every one under `min_count`, or no protocol known).
pub(super) fn policy(
    out: &mut String,
    endpoint: &str,
    direction: Direction,
    observed: &Observed,
    files: &[String],
    generalise: Generalise,
    min_count: u64,
) -> Result<Written, SuggestError> {
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
         ({} of them audited) in {}.",
        quoted(endpoint),
        count_text(observed.requests),
        observed.audited,
        files.join(", ")
    );
    let _ = writeln!(
        out,
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: {}\n  \
         namespace: {}\nspec:\n  endpointSelector:\n    matchLabels:",
        scalar(&policy_name(endpoint, direction)),
        scalar(namespace)
    );
    for (key, value) in &selector {
        let _ = writeln!(out, "      {}: {}", scalar(key), scalar(value));
    }
    let mut items = String::new();
    for (peer, requests) in &observed.peers {
        let Some(suggestion) = suggest_rules(&peer.proto, requests, generalise) else {
            let count: u64 = requests.values().sum();
            let _ = writeln!(
                items,
                "  # Left out: {} of l7proto {} on port {}: no suggester for it.",
                count_text(count),
                scalar(&peer.proto),
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
                .map(|(k, v)| format!("{k}: {}", scalar(v)))
                .collect();
            let _ = writeln!(
                items,
                "  # Left out (--min-count {min_count}): {{{}}} covering {}.",
                keys.join(", "),
                count_text(rule.count)
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
            let _ = writeln!(items, "            l7proto: {}", scalar(&peer.proto));
            "l7"
        };
        let _ = writeln!(items, "            {list}:");
        for rule in kept {
            let _ = writeln!(items, "              # {}", count_text(rule.count));
            for (i, (key, value)) in rule.keys.iter().enumerate() {
                let lead = if i == 0 { "- " } else { "  " };
                let _ = writeln!(items, "              {lead}{key}: {}", scalar(value));
            }
        }
    }
    if items.lines().all(|l| l.trim_start().starts_with('#')) {
        // An empty list would enforce nothing: no policy, and the reasons.
        return Ok(Written::Nothing(items));
    }
    let _ = writeln!(out, "  {section}:");
    out.push_str(&items);
    Ok(Written::Policy)
}

/// What [`policy`] wrote.
pub(super) enum Written {
    /// The policy.
    Policy,
    /// No policy, since no rule was kept; the comments saying what was left out.
    Nothing(String),
}

/// Writes the start of one allow item: the peer's selector (or entity).
fn peer_item(
    out: &mut String,
    peer: &Peer,
    peers_field: &str,
    entities_field: &str,
    namespace: &str,
) {
    if let Some(entity) = peer.labels.iter().find_map(|l| l.strip_prefix("reserved:")) {
        let _ = writeln!(out, "    - {entities_field}: [{}]", scalar(entity));
        return;
    }
    let _ = writeln!(out, "    - {peers_field}:\n        - matchLabels:");
    for label in &peer.labels {
        let (key, value) = split_label(label);
        if key == NAMESPACE_LABEL && value == namespace {
            continue;
        }
        let _ = writeln!(out, "            {}: {}", scalar(key), scalar(value));
    }
}
