//! Flow filters: which access-log entries a watcher (`axoneme observe`) wants, parsed from the
//! API's query and matched against live entries and against the JSON lines the monitor keeps
//! for replay alike, through one [`Flow`] view of both.
//!
//! Filters of different kinds must all match (AND); several values of one kind match when any
//! does (OR), as `hubble observe` combines them. Values are checked when parsed: an unknown
//! protocol, type or verdict is an error that lists the valid ones. This module decides nothing
//! about traffic and formats nothing.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use axoneme_sdk::{logging_audit, Direction, EntryType, LogEntry};
use serde_json::Value;
use thiserror::Error;

/// A filter value that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FilterError {
    /// A value not among the valid ones.
    #[error("{what}: {value:?} is not one of {valid}")]
    Unknown {
        /// The filter.
        what: &'static str,
        /// The value given.
        value: String,
        /// The valid values, comma-separated.
        valid: String,
    },
    /// A value of the wrong shape.
    #[error("{what}: {value:?}: {why}")]
    Malformed {
        /// The filter.
        what: &'static str,
        /// The value given.
        value: String,
        /// What shape it should have.
        why: &'static str,
    },
}

/// Whether an entry's request went on (`Forwarded`: requests and responses), was stopped
/// (`Denied`), in Hubble's words, or went on only because its policy is in audit mode
/// (`Audit`: a `Request` entry marked `"verdict":"Audit"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowVerdict {
    /// Passed on: a `Request` or `Response` entry, not audited.
    Forwarded,
    /// Stopped: a `Denied` entry.
    Denied,
    /// Passed on although policy would deny it: an audited `Request` entry.
    Audit,
}

impl FlowVerdict {
    /// The verdict of an entry of type `entry_type`, `audited` or not.
    pub fn of(entry_type: EntryType, audited: bool) -> FlowVerdict {
        match entry_type {
            EntryType::Request if audited => FlowVerdict::Audit,
            EntryType::Request | EntryType::Response => FlowVerdict::Forwarded,
            EntryType::Denied => FlowVerdict::Denied,
        }
    }
}

/// An endpoint a watcher named, as resolved when the watch began: its name and addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedEndpoint {
    /// Its name.
    pub name: String,
    /// Its addresses.
    pub ips: Vec<IpAddr>,
}

/// What a watcher wants to see; an empty list matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Entry types.
    pub entry_types: Vec<EntryType>,
    /// Protocols (the parser's name).
    pub protocols: Vec<String>,
    /// Verdicts.
    pub verdicts: Vec<FlowVerdict>,
    /// Guarded endpoints (the listener's `endpoint`), either way.
    pub endpoints: Vec<String>,
    /// Labels of the source (`key=value`, or a bare key), any source prefix ignored.
    pub from_labels: Vec<String>,
    /// Labels of the destination.
    pub to_labels: Vec<String>,
    /// Security identities of the source.
    pub from_identities: Vec<u32>,
    /// Security identities of the destination.
    pub to_identities: Vec<u32>,
    /// Endpoints the flow comes from.
    pub from_endpoints: Vec<NamedEndpoint>,
    /// Endpoints the flow goes to.
    pub to_endpoints: Vec<NamedEndpoint>,
    /// L7 fields: for each key, the values any of which the entry's field must equal.
    pub l7: BTreeMap<String, Vec<String>>,
}

/// What a filter reads of an entry: a live [`LogEntry`], or a kept JSON line.
pub trait Flow {
    /// The entry's type, if known.
    fn entry_type(&self) -> Option<EntryType>;
    /// Whether the entry is a request that audit mode let through.
    fn audited(&self) -> bool;
    /// The protocol, empty for entries of no parser.
    fn proto(&self) -> &str;
    /// Ingress or egress, seen from the guarded endpoint.
    fn direction(&self) -> Direction;
    /// The guarded endpoint.
    fn endpoint(&self) -> &str;
    /// The source's (`true`) or destination's identity.
    fn identity(&self, source: bool) -> u32;
    /// The source's or destination's address.
    fn address(&self, source: bool) -> Option<IpAddr>;
    /// Whether any of the source's or destination's labels satisfies `wanted`.
    fn any_label(&self, source: bool, wanted: &dyn Fn(&str) -> bool) -> bool;
    /// Whether the L7 field `key` is `value`.
    fn field_is(&self, key: &str, value: &str) -> bool;
}

impl Flow for LogEntry<'_> {
    fn entry_type(&self) -> Option<EntryType> {
        Some(self.entry_type)
    }

    /// Read, as the access log reads it, from what the logging thread says of the entry it is
    /// logging now.
    fn audited(&self) -> bool {
        self.entry_type == EntryType::Request && logging_audit().is_some()
    }

    fn proto(&self) -> &str {
        self.proto.unwrap_or_default()
    }

    fn direction(&self) -> Direction {
        self.meta.direction
    }

    fn endpoint(&self) -> &str {
        &self.meta.endpoint
    }

    fn identity(&self, source: bool) -> u32 {
        if source {
            self.meta.source_identity
        } else {
            self.meta.destination_identity
        }
    }

    fn address(&self, source: bool) -> Option<IpAddr> {
        Some(if source {
            self.meta.source.ip()
        } else {
            self.meta.destination.ip()
        })
    }

    fn any_label(&self, source: bool, wanted: &dyn Fn(&str) -> bool) -> bool {
        let labels = if source {
            &self.meta.source_labels
        } else {
            &self.meta.destination_labels
        };
        labels.iter().any(|label| wanted(label))
    }

    fn field_is(&self, key: &str, value: &str) -> bool {
        self.fields
            .iter()
            .any(|field| field.key == key && field.value == value.as_bytes())
    }
}

/// An access-log line parsed back, as the monitor keeps them for replay.
pub struct LoggedFlow<'v>(pub &'v Value);

impl LoggedFlow<'_> {
    fn text(&self, key: &str) -> &str {
        self.0.get(key).and_then(Value::as_str).unwrap_or_default()
    }

    fn side(source: bool) -> &'static str {
        if source {
            "source"
        } else {
            "destination"
        }
    }
}

impl Flow for LoggedFlow<'_> {
    fn entry_type(&self) -> Option<EntryType> {
        match self.text("entry_type") {
            "Request" => Some(EntryType::Request),
            "Response" => Some(EntryType::Response),
            "Denied" => Some(EntryType::Denied),
            _ => None,
        }
    }

    fn audited(&self) -> bool {
        self.text("verdict") == "Audit"
    }

    fn proto(&self) -> &str {
        self.0["generic_l7"]["proto"].as_str().unwrap_or_default()
    }

    fn direction(&self) -> Direction {
        if self.0["is_ingress"].as_bool() == Some(false) {
            Direction::Egress
        } else {
            Direction::Ingress
        }
    }

    fn endpoint(&self) -> &str {
        self.text("endpoint")
    }

    fn identity(&self, source: bool) -> u32 {
        let key = format!("{}_security_id", Self::side(source));
        self.0[key.as_str()]
            .as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .unwrap_or(u32::MAX)
    }

    fn address(&self, source: bool) -> Option<IpAddr> {
        let key = format!("{}_address", Self::side(source));
        self.text(&key).parse::<SocketAddr>().ok().map(|a| a.ip())
    }

    fn any_label(&self, source: bool, wanted: &dyn Fn(&str) -> bool) -> bool {
        let key = format!("{}_labels", Self::side(source));
        self.0[key.as_str()]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .any(wanted)
    }

    fn field_is(&self, key: &str, value: &str) -> bool {
        self.0["generic_l7"]["fields"][key].as_str() == Some(value)
    }
}

/// `label` without a source prefix such as `k8s:` (a colon before any `=`).
fn unprefixed(label: &str) -> &str {
    let key_end = label.find('=').unwrap_or(label.len());
    match label[..key_end].find(':') {
        Some(colon) => &label[colon + 1..],
        None => label,
    }
}

/// Whether the entry label `have` satisfies the wanted label `want` (`key=value`, or a bare
/// key for any value), source prefixes ignored on both.
pub fn label_matches(want: &str, have: &str) -> bool {
    let (want, have) = (unprefixed(want), unprefixed(have));
    if want.contains('=') {
        want == have
    } else {
        have.split_once('=').map_or(have, |(key, _)| key) == want
    }
}

impl Filter {
    /// Whether `flow` passes the filter.
    pub fn matches(&self, flow: &impl Flow) -> bool {
        let entry_type = flow.entry_type();
        let any = |list_empty: bool, found: &mut dyn FnMut() -> bool| list_empty || found();
        any(self.entry_types.is_empty(), &mut || {
            entry_type.is_some_and(|t| self.entry_types.contains(&t))
        }) && any(self.verdicts.is_empty(), &mut || {
            entry_type.is_some_and(|t| self.verdicts.contains(&FlowVerdict::of(t, flow.audited())))
        }) && any(self.protocols.is_empty(), &mut || {
            self.protocols.iter().any(|p| p == flow.proto())
        }) && any(self.endpoints.is_empty(), &mut || {
            self.endpoints.iter().any(|e| e == flow.endpoint())
        }) && self.labels_match(flow, true, &self.from_labels)
            && self.labels_match(flow, false, &self.to_labels)
            && identities_match(flow, true, &self.from_identities)
            && identities_match(flow, false, &self.to_identities)
            && endpoints_match(flow, true, &self.from_endpoints)
            && endpoints_match(flow, false, &self.to_endpoints)
            && self
                .l7
                .iter()
                .all(|(key, values)| values.iter().any(|v| flow.field_is(key, v)))
    }

    fn labels_match(&self, flow: &impl Flow, source: bool, wanted: &[String]) -> bool {
        wanted.is_empty()
            || wanted
                .iter()
                .any(|want| flow.any_label(source, &|have| label_matches(want, have)))
    }
}

fn identities_match(flow: &impl Flow, source: bool, wanted: &[u32]) -> bool {
    wanted.is_empty() || wanted.contains(&flow.identity(source))
}

/// Whether the source's (or destination's) side of `flow` is one of `wanted`: the guarded
/// endpoint on its own side (the source of egress, the destination of ingress), or an
/// endpoint owning the side's address.
fn endpoints_match(flow: &impl Flow, source: bool, wanted: &[NamedEndpoint]) -> bool {
    if wanted.is_empty() {
        return true;
    }
    let guarded_side = (flow.direction() == Direction::Egress) == source;
    let address = flow.address(source);
    wanted.iter().any(|endpoint| {
        (guarded_side && endpoint.name == flow.endpoint())
            || address.is_some_and(|a| endpoint.ips.contains(&a))
    })
}

/// Parses an entry type, any case: `request`, `response` or `denied`.
pub fn parse_entry_type(text: &str) -> Result<EntryType, FilterError> {
    match text.to_ascii_lowercase().as_str() {
        "request" => Ok(EntryType::Request),
        "response" => Ok(EntryType::Response),
        "denied" => Ok(EntryType::Denied),
        _ => Err(FilterError::Unknown {
            what: "type",
            value: text.to_owned(),
            valid: "request, response, denied".into(),
        }),
    }
}

/// Parses a verdict, any case: `forwarded`, `denied` or `audit`.
pub fn parse_verdict(text: &str) -> Result<FlowVerdict, FilterError> {
    match text.to_ascii_lowercase().as_str() {
        "forwarded" => Ok(FlowVerdict::Forwarded),
        "denied" => Ok(FlowVerdict::Denied),
        "audit" => Ok(FlowVerdict::Audit),
        _ => Err(FilterError::Unknown {
            what: "verdict",
            value: text.to_owned(),
            valid: "FORWARDED, DENIED, AUDIT".into(),
        }),
    }
}

/// Checks that `text` names one of the `known` protocols.
pub fn parse_protocol(text: &str, known: &[&str]) -> Result<String, FilterError> {
    if known.contains(&text) {
        Ok(text.to_owned())
    } else {
        Err(FilterError::Unknown {
            what: "protocol",
            value: text.to_owned(),
            valid: known.join(", "),
        })
    }
}

/// Parses a security identity (a number).
pub fn parse_identity(what: &'static str, text: &str) -> Result<u32, FilterError> {
    text.parse().map_err(|_| FilterError::Malformed {
        what,
        value: text.to_owned(),
        why: "expected a numeric security identity",
    })
}

/// Parses an L7 field filter, `key=value`.
pub fn parse_l7(text: &str) -> Result<(String, String), FilterError> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(FilterError::Malformed {
            what: "l7",
            value: text.to_owned(),
            why: "expected field=value, e.g. command=get",
        }),
    }
}

/// Parses a label filter: `key=value` or a bare `key`, not empty.
pub fn parse_label(what: &'static str, text: &str) -> Result<String, FilterError> {
    if text.is_empty() || text.starts_with('=') {
        return Err(FilterError::Malformed {
            what,
            value: text.to_owned(),
            why: "expected key=value or key",
        });
    }
    Ok(text.to_owned())
}

/// A watch as asked for with `/v1/monitor`'s query (or `observe`'s flags): the filter, and
/// the replay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchQuery {
    /// Which entries.
    pub filter: Filter,
    /// Replay this many recent entries first.
    pub last: Option<usize>,
    /// Show later entries; without `last`, always.
    pub follow: bool,
}

/// A watch query that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum QueryError {
    /// A filter's value cannot be used.
    #[error(transparent)]
    Filter(#[from] FilterError),
    /// An endpoint name no endpoint has.
    #[error("endpoint: {value:?} is not a known endpoint (known: {known})")]
    UnknownEndpoint {
        /// The name given.
        value: String,
        /// The known names, comma-separated.
        known: String,
    },
    /// A key that is not a filter.
    #[error(
        "{0:?} is not a monitor filter (type, verdict, protocol, endpoint, from_endpoint, \
         to_endpoint, from_label, to_label, from_identity, to_identity, l7, last, follow)"
    )]
    NotAFilter(String),
    /// `last` is not a number.
    #[error("last: {0:?} is not a number of entries")]
    Last(String),
    /// `follow` is not a boolean.
    #[error("follow: {0:?} is not true or false")]
    Follow(String),
}

/// What names in a query are checked against.
pub struct QueryContext<'a> {
    /// The endpoints names may name, with their addresses; `None` when no agent is asked (an
    /// access-log file is read): a name then matches the endpoint the entries themselves name
    /// as guarded, and no address.
    pub endpoints: Option<&'a [axoneme_policy::EndpointSpec]>,
    /// The protocols the agent parses.
    pub protocols: &'a [&'a str],
}

/// Reads a watch query (repeated keys allowed): an unknown key, protocol, type, verdict or
/// endpoint is an error that says which and lists the valid ones.
pub fn parse_query(
    pairs: impl IntoIterator<Item = (String, String)>,
    context: &QueryContext<'_>,
) -> Result<WatchQuery, QueryError> {
    let mut query = WatchQuery::default();
    let mut follow = None;
    let filter = &mut query.filter;
    let endpoint = |value: &str| match context.endpoints {
        None => Ok(NamedEndpoint {
            name: value.to_owned(),
            ips: Vec::new(),
        }),
        Some(endpoints) => endpoints
            .iter()
            .find(|e| e.name == value)
            .map(|e| NamedEndpoint {
                name: e.name.clone(),
                ips: e.ips.clone(),
            })
            .ok_or_else(|| QueryError::UnknownEndpoint {
                value: value.to_owned(),
                known: endpoints
                    .iter()
                    .map(|e| e.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
    };
    for (key, value) in pairs {
        match key.as_str() {
            "type" => filter.entry_types.push(parse_entry_type(&value)?),
            "verdict" => filter.verdicts.push(parse_verdict(&value)?),
            "protocol" | "proto" => filter
                .protocols
                .push(parse_protocol(&value, context.protocols)?),
            "endpoint" => filter.endpoints.push(endpoint(&value)?.name),
            "from_endpoint" => filter.from_endpoints.push(endpoint(&value)?),
            "to_endpoint" => filter.to_endpoints.push(endpoint(&value)?),
            "from_label" => filter.from_labels.push(parse_label("from_label", &value)?),
            "to_label" => filter.to_labels.push(parse_label("to_label", &value)?),
            "from_identity" => filter
                .from_identities
                .push(parse_identity("from_identity", &value)?),
            "to_identity" => filter
                .to_identities
                .push(parse_identity("to_identity", &value)?),
            "l7" => {
                let (field, wanted) = parse_l7(&value)?;
                filter.l7.entry(field).or_default().push(wanted);
            }
            "last" => query.last = Some(value.parse().map_err(|_| QueryError::Last(value))?),
            "follow" => {
                follow = Some(
                    value
                        .parse::<bool>()
                        .map_err(|_| QueryError::Follow(value))?,
                )
            }
            _ => return Err(QueryError::NotAFilter(key)),
        }
    }
    query.follow = follow.unwrap_or(query.last.is_none());
    Ok(query)
}

#[cfg(test)]
mod tests {
    use axoneme_sdk::Field;

    use super::*;
    use axoneme_access_log::testing::log_meta;

    fn logged(entry_type: &str, proto: &str, fields: Value) -> Value {
        serde_json::json!({
            "is_ingress": true,
            "entry_type": entry_type,
            "source_security_id": 300,
            "destination_security_id": 400,
            "source_address": "127.0.0.21:40000",
            "destination_address": "127.0.0.1:11211",
            "source_labels": ["app=luke", "k8s:io.kubernetes.pod.namespace=default"],
            "destination_labels": ["app=cache"],
            "endpoint": "cache",
            "generic_l7": {"proto": proto, "fields": fields},
        })
    }

    #[test]
    fn labels_match_by_key_and_value_or_key_alone_ignoring_source_prefixes() {
        assert!(label_matches("app=luke", "app=luke"));
        assert!(label_matches("k8s:app=luke", "app=luke"));
        assert!(label_matches(
            "io.kubernetes.pod.namespace=default",
            "k8s:io.kubernetes.pod.namespace=default"
        ));
        assert!(label_matches("app", "k8s:app=luke"));
        assert!(!label_matches("app=leia", "app=luke"));
        assert!(!label_matches("ap", "app=luke"));
        assert!(!label_matches("app=luk", "app=luke"));
    }

    #[test]
    fn kinds_combine_with_and_and_repeats_with_or() {
        let get = logged("Request", "memcache", serde_json::json!({"command": "get"}));
        let set = logged("Denied", "memcache", serde_json::json!({"command": "set"}));
        let filter = Filter {
            l7: BTreeMap::from([("command".into(), vec!["get".into(), "set".into()])]),
            from_labels: vec!["app=luke".into()],
            ..Filter::default()
        };
        assert!(filter.matches(&LoggedFlow(&get)));
        assert!(filter.matches(&LoggedFlow(&set)));
        let forwarded = Filter {
            verdicts: vec![FlowVerdict::Forwarded],
            ..filter.clone()
        };
        assert!(forwarded.matches(&LoggedFlow(&get)));
        assert!(!forwarded.matches(&LoggedFlow(&set)));
        let other_source = Filter {
            from_labels: vec!["app=leia".into()],
            ..filter.clone()
        };
        assert!(!other_source.matches(&LoggedFlow(&get)));
        let either_source = Filter {
            from_labels: vec!["app=leia".into(), "app=luke".into()],
            ..filter
        };
        assert!(either_source.matches(&LoggedFlow(&get)));
    }

    #[test]
    fn identities_and_endpoints_are_matched_on_their_side() {
        let get = logged("Request", "memcache", serde_json::json!({}));
        let flow = LoggedFlow(&get);
        let side = |from: Vec<u32>, to: Vec<u32>| Filter {
            from_identities: from,
            to_identities: to,
            ..Filter::default()
        };
        assert!(side(vec![300], vec![400]).matches(&flow));
        assert!(!side(vec![400], vec![]).matches(&flow));
        assert!(!side(vec![], vec![300]).matches(&flow));
        let cache = NamedEndpoint {
            name: "cache".into(),
            ips: vec![],
        };
        let luke = NamedEndpoint {
            name: "luke".into(),
            ips: vec!["127.0.0.21".parse().unwrap()],
        };
        let endpoints = |from: Vec<NamedEndpoint>, to: Vec<NamedEndpoint>| Filter {
            from_endpoints: from,
            to_endpoints: to,
            ..Filter::default()
        };
        assert!(endpoints(vec![luke.clone()], vec![cache.clone()]).matches(&flow));
        assert!(!endpoints(vec![cache.clone()], vec![]).matches(&flow));
        assert!(!endpoints(vec![], vec![luke]).matches(&flow));
    }

    #[test]
    fn a_live_entry_and_its_logged_line_match_alike() {
        let meta = log_meta();
        let fields = [Field::text("command", "get"), Field::bytes("keys", b"a")];
        let entry = LogEntry {
            entry_type: EntryType::Request,
            meta: &meta,
            policy_name: "p",
            proto: Some("memcache"),
            fields: &fields,
        };
        let mut line = Vec::new();
        crate::telemetry::access_log::format_entry(
            &mut line,
            &entry,
            std::time::SystemTime::now(),
            4096,
        );
        let value: Value = serde_json::from_slice(&line).unwrap();
        let filters = [
            Filter::default(),
            Filter {
                l7: BTreeMap::from([("command".into(), vec!["get".into()])]),
                ..Filter::default()
            },
            Filter {
                l7: BTreeMap::from([("command".into(), vec!["set".into()])]),
                ..Filter::default()
            },
            Filter {
                entry_types: vec![EntryType::Denied],
                ..Filter::default()
            },
            Filter {
                protocols: vec!["memcache".into()],
                from_identities: vec![meta.source_identity],
                to_labels: meta.destination_labels.to_vec(),
                ..Filter::default()
            },
            Filter {
                from_identities: vec![meta.destination_identity],
                ..Filter::default()
            },
        ];
        let expected = [true, true, false, false, true, false];
        for (filter, expected) in filters.iter().zip(expected) {
            assert_eq!(filter.matches(&entry), expected, "{filter:?}");
            assert_eq!(filter.matches(&LoggedFlow(&value)), expected, "{filter:?}");
        }
    }

    #[test]
    fn an_audited_request_has_the_audit_verdict_live_and_logged() {
        let meta = log_meta();
        let fields = [Field::text("command", "set")];
        let entry = |entry_type| LogEntry {
            entry_type,
            meta: &meta,
            policy_name: "p",
            proto: Some("memcache"),
            fields: &fields,
        };
        let only = |verdict| Filter {
            verdicts: vec![verdict],
            ..Filter::default()
        };
        let (audit, forwarded) = (only(FlowVerdict::Audit), only(FlowVerdict::Forwarded));
        axoneme_sdk::logging_audit_as(Some(axoneme_sdk::DenyReason::NoAllow), || {
            assert!(audit.matches(&entry(EntryType::Request)));
            assert!(!forwarded.matches(&entry(EntryType::Request)));
            assert!(
                forwarded.matches(&entry(EntryType::Response)),
                "only requests are audited"
            );
        });
        assert!(!audit.matches(&entry(EntryType::Request)));
        assert!(forwarded.matches(&entry(EntryType::Request)));
        let mut audited = logged("Request", "memcache", serde_json::json!({"command": "set"}));
        audited["verdict"] = "Audit".into();
        audited["reason"] = "no-allow".into();
        assert!(audit.matches(&LoggedFlow(&audited)));
        assert!(!forwarded.matches(&LoggedFlow(&audited)));
        let plain = logged("Request", "memcache", serde_json::json!({"command": "set"}));
        assert!(!audit.matches(&LoggedFlow(&plain)));
        assert_eq!(parse_verdict("Audit"), Ok(FlowVerdict::Audit));
    }

    #[test]
    fn unknown_values_are_errors_that_list_the_valid_ones() {
        assert_eq!(parse_entry_type("DENIED"), Ok(EntryType::Denied));
        assert_eq!(
            parse_verdict("dropped").unwrap_err().to_string(),
            "verdict: \"dropped\" is not one of FORWARDED, DENIED, AUDIT"
        );
        assert_eq!(
            parse_protocol("http", &["memcache", "r2d2"])
                .unwrap_err()
                .to_string(),
            "protocol: \"http\" is not one of memcache, r2d2"
        );
        assert!(parse_identity("from-identity", "luke").is_err());
        assert_eq!(
            parse_l7("command=get"),
            Ok(("command".into(), "get".into()))
        );
        assert_eq!(parse_l7("keys=a=b"), Ok(("keys".into(), "a=b".into())));
        assert!(parse_l7("command").is_err());
        assert!(parse_l7("=get").is_err());
        assert!(parse_label("from-label", "").is_err());
    }

    #[test]
    fn a_query_names_endpoints_of_the_agent_or_of_the_entries() {
        let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let cache = axoneme_policy::EndpointSpec {
            name: "cache".into(),
            ips: vec!["127.0.0.1".parse().unwrap()],
            labels: BTreeMap::new(),
            namespace: None,
            policy_audit_mode: false,
        };
        let endpoints = [cache];
        let with_agent = QueryContext {
            endpoints: Some(&endpoints),
            protocols: &["memcache"],
        };
        let query = parse_query(pairs(&[("to_endpoint", "cache")]), &with_agent).unwrap();
        assert_eq!(query.filter.to_endpoints[0].ips, endpoints[0].ips);
        assert!(query.follow, "without last, a watch follows");
        assert_eq!(
            parse_query(pairs(&[("from_endpoint", "yoda")]), &with_agent),
            Err(QueryError::UnknownEndpoint {
                value: "yoda".into(),
                known: "cache".into()
            })
        );
        let offline = QueryContext {
            endpoints: None,
            protocols: &["memcache"],
        };
        let query = parse_query(
            pairs(&[
                ("from_endpoint", "yoda"),
                ("last", "5"),
                ("follow", "false"),
            ]),
            &offline,
        )
        .unwrap();
        assert_eq!(query.filter.from_endpoints[0].name, "yoda");
        assert!(query.filter.from_endpoints[0].ips.is_empty());
        assert_eq!((query.last, query.follow), (Some(5), false));
        assert_eq!(
            parse_query(pairs(&[("colour", "red")]), &offline),
            Err(QueryError::NotAFilter("colour".into()))
        );
        assert_eq!(
            parse_query(pairs(&[("last", "many")]), &offline),
            Err(QueryError::Last("many".into()))
        );
        assert!(matches!(
            parse_query(pairs(&[("protocol", "nfs")]), &offline),
            Err(QueryError::Filter(FilterError::Unknown { .. }))
        ));
    }
}
