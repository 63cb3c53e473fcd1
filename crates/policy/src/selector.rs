//! Label selectors (`endpointSelector`, `fromEndpoints`, `toEndpoints`) and label keys.
//!
//! Owns the meaning of `matchLabels` / `matchExpressions`, of label source prefixes, of the
//! reserved labels that name the host and the world, and of the namespace label that scopes a
//! CiliumNetworkPolicy's selectors to its namespace. It matches one label set at a time and must
//! not know about endpoints, addresses or rules.

use std::collections::BTreeMap;

use crate::error::FieldError;
use crate::model::{Operator, SelectorModel};

/// The label sources whose prefix is dropped: `k8s:app` matches the label `app`.
const PLAIN_SOURCES: [&str; 4] = ["k8s", "any", "container", "unspec"];

/// The source of the labels of reserved identities (`reserved:host`, `reserved:world`).
const RESERVED_SOURCE: &str = "reserved";

/// The label carrying an endpoint's namespace, as selectors see it (without its `k8s:` source).
pub(crate) const NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";

/// The prefix of the labels Cilium derives from a namespace's own labels; a selector naming one
/// chooses its namespaces itself.
const NAMESPACE_LABELS_PREFIX: &str = "io.cilium.k8s.namespace.labels.";

/// A label key with its source prefix resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LabelKey {
    /// An ordinary label, without any source prefix.
    Plain(String),
    /// A reserved label, kept whole (`reserved:host`).
    Reserved(String),
}

/// Resolves the source prefix of `key`, rejecting sources Axoneme does not know.
pub(crate) fn parse_label_key(key: &str) -> Result<LabelKey, String> {
    let parsed = match key.split_once(':') {
        None => LabelKey::Plain(key.to_owned()),
        Some((source, rest)) if PLAIN_SOURCES.contains(&source) => LabelKey::Plain(rest.to_owned()),
        Some((RESERVED_SOURCE, _)) => LabelKey::Reserved(key.to_owned()),
        Some((source, _)) => {
            return Err(format!(
                "unsupported label source {source:?} (supported: {}, {RESERVED_SOURCE})",
                PLAIN_SOURCES.join(", ")
            ))
        }
    };
    match &parsed {
        LabelKey::Plain(k) if k.is_empty() => Err("empty label key".to_owned()),
        LabelKey::Reserved(k) if k.len() == RESERVED_SOURCE.len() + 1 => {
            Err("empty label key".to_owned())
        }
        _ => Ok(parsed),
    }
}

/// Whether a label key without its source is the namespace label or a namespace's label.
fn names_namespace(plain: &str) -> bool {
    plain == NAMESPACE_LABEL || plain.starts_with(NAMESPACE_LABELS_PREFIX)
}

/// Whether `key` names its label through a source Cilium reads the namespace from: `k8s:`,
/// `any:`, or none (which Cilium takes as `any:`).
fn namespace_source(key: &str) -> bool {
    match key.split_once(':') {
        None => true,
        Some((source, _)) => NAMESPACE_SOURCES.contains(&source),
    }
}

/// The label sources through which a selector names the namespace.
const NAMESPACE_SOURCES: [&str; 2] = ["k8s", "any"];

/// The labels of one identity as selectors see them: plain keys for endpoints, the single key
/// `reserved:<name>` for a reserved identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LabelSet {
    /// Key to value.
    pub labels: BTreeMap<String, String>,
    /// True for reserved identities, which only selectors naming a reserved label can select.
    pub reserved: bool,
}

/// A compiled label selector.
#[derive(Debug, Clone)]
pub(crate) struct Selector {
    requirements: Vec<Requirement>,
    names_reserved: bool,
}

#[derive(Debug, Clone)]
struct Requirement {
    key: String,
    test: Test,
}

#[derive(Debug, Clone)]
enum Test {
    Equals(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
}

impl Selector {
    /// Checks and compiles a selector written at `path`.
    pub(crate) fn parse(model: &SelectorModel, path: &str) -> Result<Selector, FieldError> {
        let mut requirements = Vec::new();
        let mut names_reserved = false;
        let mut resolve = |key: &str, field: String| match parse_label_key(key) {
            Ok(LabelKey::Plain(k)) if names_namespace(&k) && !namespace_source(key) => {
                Err(FieldError::new(
                    field,
                    "the namespace label can only be named with the k8s: or any: source (or \
                     none), as Cilium scopes selectors by these",
                ))
            }
            Ok(LabelKey::Plain(k)) => Ok(k),
            Ok(LabelKey::Reserved(k)) => {
                names_reserved = true;
                Ok(k)
            }
            Err(message) => Err(FieldError::new(field, message)),
        };
        for (key, value) in model.match_labels.iter().flatten() {
            let key = resolve(key, format!("{path}.matchLabels.{key}"))?;
            requirements.push(Requirement {
                key,
                test: Test::Equals(value.clone()),
            });
        }
        for (index, expression) in model.match_expressions.iter().flatten().enumerate() {
            let at = format!("{path}.matchExpressions[{index}]");
            let key = resolve(&expression.key, format!("{at}.key"))?;
            let values = expression.values.clone().unwrap_or_default();
            let test = match expression.operator {
                Operator::In | Operator::NotIn if values.is_empty() => {
                    return Err(FieldError::new(
                        format!("{at}.values"),
                        format!(
                            "operator {:?} needs at least one value",
                            expression.operator
                        ),
                    ))
                }
                Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                    return Err(FieldError::new(
                        format!("{at}.values"),
                        format!("operator {:?} takes no values", expression.operator),
                    ))
                }
                Operator::In => Test::In(values),
                Operator::NotIn => Test::NotIn(values),
                Operator::Exists => Test::Exists,
                Operator::DoesNotExist => Test::DoesNotExist,
            };
            requirements.push(Requirement { key, test });
        }
        Ok(Selector {
            requirements,
            names_reserved,
        })
    }

    /// Scopes an `endpointSelector` to `namespace`: it selects only endpoints of that
    /// namespace, whatever namespace it names itself (as in Cilium). Returns the namespaces it
    /// named that are not `namespace`, which no longer count.
    pub(crate) fn select_in_namespace(&mut self, namespace: &str) -> Vec<String> {
        let mut dropped = Vec::new();
        self.requirements.retain(|r| match &r.test {
            Test::Equals(value) if r.key == NAMESPACE_LABEL => {
                if value != namespace {
                    dropped.push(value.clone());
                }
                false
            }
            _ => true,
        });
        self.requirements.push(Requirement {
            key: NAMESPACE_LABEL.to_owned(),
            test: Test::Equals(namespace.to_owned()),
        });
        dropped
    }

    /// Scopes a peer selector (`fromEndpoints`, `toEndpoints`) of a CiliumNetworkPolicy to its
    /// `namespace`, unless it names the namespace label (or a namespace's labels) itself, or
    /// names a reserved label (reserved identities have no namespace).
    pub(crate) fn peer_in_namespace(&mut self, namespace: &str) {
        let names_namespace = self.requirements.iter().any(|r| names_namespace(&r.key));
        if !names_namespace && !self.names_reserved {
            self.requirements.push(Requirement {
                key: NAMESPACE_LABEL.to_owned(),
                test: Test::Equals(namespace.to_owned()),
            });
        }
    }

    /// Whether the selector selects an identity with these labels. A selector that names no
    /// reserved label never selects a reserved identity, not even the empty selector.
    pub(crate) fn matches(&self, set: &LabelSet) -> bool {
        if set.reserved && !self.names_reserved {
            return false;
        }
        self.requirements.iter().all(|r| {
            let value = set.labels.get(&r.key);
            match &r.test {
                Test::Equals(wanted) => value == Some(wanted),
                Test::In(values) => value.is_some_and(|v| values.contains(v)),
                Test::NotIn(values) => !value.is_some_and(|v| values.contains(v)),
                Test::Exists => value.is_some(),
                Test::DoesNotExist => value.is_none(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selector(yaml: &str) -> Selector {
        let model: SelectorModel = serde_yaml::from_str(yaml).unwrap();
        Selector::parse(&model, "s").unwrap()
    }

    fn endpoint(labels: &[(&str, &str)]) -> LabelSet {
        LabelSet {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            reserved: false,
        }
    }

    fn reserved(name: &str) -> LabelSet {
        LabelSet {
            labels: [(format!("reserved:{name}"), String::new())].into(),
            reserved: true,
        }
    }

    #[test]
    fn label_keys() {
        assert_eq!(parse_label_key("app"), Ok(LabelKey::Plain("app".into())));
        assert_eq!(
            parse_label_key("k8s:app"),
            Ok(LabelKey::Plain("app".into()))
        );
        assert_eq!(
            parse_label_key("container:a:b"),
            Ok(LabelKey::Plain("a:b".into()))
        );
        assert_eq!(
            parse_label_key("reserved:host"),
            Ok(LabelKey::Reserved("reserved:host".into()))
        );
        assert!(parse_label_key("k8s:").is_err());
        assert!(parse_label_key("reserved:").is_err());
        assert!(parse_label_key("fqdn:x").is_err());
    }

    #[test]
    fn match_labels_and_expressions() {
        let web = endpoint(&[("app", "web"), ("tier", "front")]);
        let db = endpoint(&[("app", "db")]);
        let s = selector("{matchLabels: {'k8s:app': web}}");
        assert!(s.matches(&web) && !s.matches(&db));
        let s = selector("{matchLabels: {app: web}, matchExpressions: [{key: tier, operator: NotIn, values: [back]}]}");
        assert!(s.matches(&web) && !s.matches(&db));
        let s = selector("{matchExpressions: [{key: tier, operator: DoesNotExist}, {key: app, operator: In, values: [db, x]}]}");
        assert!(!s.matches(&web) && s.matches(&db));
    }

    #[test]
    fn namespaces_scope_selectors() {
        let default = endpoint(&[("app", "web"), (NAMESPACE_LABEL, "default")]);
        let prod = endpoint(&[("app", "web"), (NAMESPACE_LABEL, "prod")]);
        let mut subject =
            selector("{matchLabels: {app: web, 'k8s:io.kubernetes.pod.namespace': prod}}");
        assert_eq!(subject.select_in_namespace("default"), ["prod"]);
        assert!(subject.matches(&default) && !subject.matches(&prod));
        let mut peer = selector("{matchLabels: {app: web}}");
        peer.peer_in_namespace("prod");
        assert!(!peer.matches(&default) && peer.matches(&prod));
        for named in [
            "{matchLabels: {'k8s:io.kubernetes.pod.namespace': default}}",
            "{matchLabels: {io.kubernetes.pod.namespace: default}}",
            "{matchExpressions: [{key: 'k8s:io.kubernetes.pod.namespace', operator: In, values: [default]}]}",
        ] {
            let mut peer = selector(named);
            peer.peer_in_namespace("prod");
            assert!(peer.matches(&default) && !peer.matches(&prod), "{named}");
        }
        let mut any_namespace =
            selector("{matchExpressions: [{key: io.kubernetes.pod.namespace, operator: Exists}]}");
        any_namespace.peer_in_namespace("prod");
        assert!(any_namespace.matches(&default) && any_namespace.matches(&prod));
        let mut host = selector("{matchLabels: {'reserved:host': ''}}");
        host.peer_in_namespace("prod");
        assert!(host.matches(&reserved("host")));
    }

    #[test]
    fn source_prefixes_match_both_ways() {
        let plain = selector("{matchLabels: {app: web}}");
        let prefixed = selector("{matchLabels: {'k8s:app': web}}");
        let labelled = endpoint(&[("app", "web")]);
        assert!(plain.matches(&labelled) && prefixed.matches(&labelled));
    }

    #[test]
    fn reserved_identities_need_a_reserved_selector() {
        let empty = selector("{}");
        assert!(empty.matches(&endpoint(&[])) && !empty.matches(&reserved("host")));
        let not_in = selector("{matchExpressions: [{key: app, operator: NotIn, values: [x]}]}");
        assert!(!not_in.matches(&reserved("world")));
        let host = selector("{matchLabels: {'reserved:host': ''}}");
        assert!(host.matches(&reserved("host")));
        assert!(!host.matches(&reserved("world")));
        assert!(!host.matches(&endpoint(&[("app", "web")])));
        let world = selector("{matchExpressions: [{key: 'reserved:world', operator: Exists}]}");
        assert!(world.matches(&reserved("world")) && !world.matches(&reserved("host")));
    }
}
