//! Kafka L7 policy for Axoneme, registered as `kafka` (the name Cilium's `rules.kafka` maps to),
//! over every request version a Kafka 4.x broker accepts.
//!
//! [`header`] frames the byte streams by their 4-byte length and reads request headers;
//! [`api`] is the table of API keys (Kafka's names, the names policies use, versions,
//! flexible versions); [`apis`] reads the bodies of the requests that name topics, in place,
//! and writes the responses that deny them; [`rules`] compiles Cilium's `role`, `apiKey`,
//! `apiVersion`, `clientID` and `topic` keys and judges requests as Cilium did; [`pending`]
//! keeps responses and denials in correlation order, [`topic_ids`] the names of the topic ids
//! each upstream's Metadata responses gave out, [`fetch_sessions`] the fetch sessions a
//! connection created and the topics each holds, and [`KafkaParser`] applies all of it to a
//! connection. [`wire`] holds Kafka's primitive types and [`topics`] the arrays of topics and
//! partitions. Everything here is sans-IO: a function of the bytes at hand.

pub mod api;
pub mod apis;
mod error;
pub mod fetch_sessions;
pub mod header;
mod parser;
pub mod pending;
pub mod rules;
pub mod topic_ids;
pub mod topics;
pub mod wire;

use std::sync::Arc;

use axoneme_sdk::{ConnectionMeta, L7RuleMap, Parser, RuleError, TraceFields, TypedProtocol};

pub use api::Api;
pub use apis::{Body, Denial, Request};
pub use error::Error;
pub use header::RequestHeader;
pub use parser::KafkaParser;
pub use rules::RuleSet;
pub use topic_ids::TopicIds;
pub use topics::TopicRef;

/// The broker's default limit on a request (`socket.request.max.bytes`, 100 MiB).
pub const DEFAULT_MAX_REQUEST: usize = 100 * 1024 * 1024;

/// The Kafka protocol.
#[derive(Debug, Clone)]
pub struct Kafka {
    max_request: usize,
    /// The topic ids learned per upstream, shared by its connections.
    clusters: Arc<topic_ids::Clusters>,
}

impl Kafka {
    /// Kafka, refusing requests longer than `max_request` bytes (the connection is closed).
    /// A request whose body names topics is held whole, so the datapath's buffer limit bounds
    /// those too.
    pub fn new(max_request: usize) -> Self {
        Kafka {
            max_request,
            clusters: Arc::default(),
        }
    }
}

impl Default for Kafka {
    fn default() -> Self {
        Kafka::new(DEFAULT_MAX_REQUEST)
    }
}

impl TypedProtocol for Kafka {
    type Rules = RuleSet;
    const TRACE_FIELDS: &'static [&'static str] = &["apiKey", "apiVersion", "clientID", "topic"];

    fn name(&self) -> &'static str {
        "kafka"
    }

    fn parser(&self, meta: &ConnectionMeta) -> Box<dyn Parser> {
        Box::new(KafkaParser::new(
            self.max_request,
            self.clusters.of(meta.destination),
        ))
    }

    fn compile(&self, rules: &[L7RuleMap]) -> Result<RuleSet, RuleError> {
        rules::compile(rules)
    }

    /// Traces `apiKey=<name>` with optional `apiVersion=<n>`, `clientID=<id>` and
    /// `topic=<t1,t2,...>`. Without `apiVersion`, rules that name a version do not apply. The
    /// topics of an API whose requests are not read are ignored, as connections cannot see
    /// them.
    fn trace_request(&self, rules: &RuleSet, fields: &TraceFields<'_>) -> Result<bool, String> {
        let name = fields.require("apiKey")?;
        let api =
            Api::by_policy_name(name).ok_or_else(|| format!("unknown Kafka apiKey {name:?}"))?;
        let api_version = match fields.get("apiVersion") {
            None => -1,
            Some(v) => v
                .parse::<i16>()
                .ok()
                .filter(|v| *v >= 0)
                .ok_or_else(|| format!("invalid Kafka apiVersion {v:?}"))?,
        };
        let header = RequestHeader {
            api,
            api_version,
            correlation_id: 0,
            client_id: fields.get("clientID").map(str::as_bytes),
        };
        let topics = fields
            .get("topic")
            .filter(|_| parser::reads_body(api.key))
            .into_iter()
            .flat_map(|t| t.split(',').map(str::trim).filter(|t| !t.is_empty()))
            .map(|t| TopicRef::Name(t.as_bytes()));
        Ok(rules.allows(&header, topics))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use axoneme_sdk::Protocol;

    use super::*;

    #[test]
    fn leave_to_create_traces_as_createtopics_without_a_version() {
        let kafka = Kafka::default();
        let maps = axoneme_testkit::rule_maps(&[
            &[("apiKey", "createtopics"), ("topic", "empire-drills")],
            &[
                ("apiKey", "createtopics"),
                ("apiVersion", "7"),
                ("topic", "deathstar-plans"),
            ],
            &[("apiKey", "createtopics"), ("clientID", "hq")],
        ]);
        let compiled = Protocol::compile_rules(&kafka, &maps).unwrap();
        let rules = rules::compile(&maps).unwrap();
        let mut verdicts = Vec::new();
        for client in [None, Some("hq")] {
            for topic in ["empire-drills", "deathstar-plans"] {
                let header = RequestHeader {
                    api: Api::by_key(api::METADATA).unwrap(),
                    api_version: 12,
                    correlation_id: 1,
                    client_id: client.map(str::as_bytes),
                };
                let creates = rules
                    .allows_creating(&header, std::iter::once(TopicRef::Name(topic.as_bytes())));
                let fields: BTreeMap<String, String> = [("apiKey", "createtopics")]
                    .into_iter()
                    .chain(client.map(|client| ("clientID", client)))
                    .chain([("topic", topic)])
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                assert_eq!(
                    Protocol::trace(&kafka, &*compiled, &fields),
                    Ok(creates),
                    "{client:?} {topic}"
                );
                verdicts.push(creates);
            }
        }
        assert_eq!(verdicts, [true, false, true, true]);
    }

    #[test]
    fn traces_as_connections_judge() {
        let kafka = Kafka::default();
        let rules = Protocol::compile_rules(
            &kafka,
            &axoneme_testkit::rule_maps(&[
                &[("role", "produce"), ("topic", "deathstar-plans")],
                &[("apiKey", "metadata"), ("apiVersion", "12")],
                &[("apiKey", "describetopicpartitions"), ("topic", "x")],
            ]),
        )
        .unwrap();
        let trace = |pairs: &[(&str, &str)]| {
            let fields: BTreeMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Protocol::trace(&kafka, &*rules, &fields)
        };
        assert_eq!(
            trace(&[("apiKey", "produce"), ("topic", "deathstar-plans")]),
            Ok(true)
        );
        assert_eq!(
            trace(&[
                ("apiKey", "produce"),
                ("topic", "deathstar-plans, empire-announce")
            ]),
            Ok(false)
        );
        assert_eq!(trace(&[("apiKey", "metadata"), ("topic", "x")]), Ok(false));
        assert_eq!(
            trace(&[("apiKey", "metadata"), ("apiVersion", "12"), ("topic", "x")]),
            Ok(true)
        );
        assert_eq!(
            trace(&[("apiKey", "metadata")]),
            Ok(true),
            "all topics: judged on the produce rule's role"
        );
        assert_eq!(
            trace(&[("apiKey", "describetopicpartitions"), ("topic", "x")]),
            Ok(false),
            "its requests are not read: only a rule without topic allows them"
        );
        assert_eq!(
            trace(&[("apiKey", "listoffsets")]),
            Err("unknown Kafka apiKey \"listoffsets\"".into())
        );
        assert_eq!(
            trace(&[("topic", "x")]),
            Err("kafka requests need apiKey".into())
        );
        assert_eq!(
            trace(&[("apiKey", "fetch"), ("apiVersion", "-1")]),
            Err("invalid Kafka apiVersion \"-1\"".into())
        );
    }
}
