//! Kafka's L7 rules, as Cilium users write them: `role` (`produce` or `consume`), `apiKey`,
//! `apiVersion`, `clientID` and `topic`; and the judgement of a request against them.
//!
//! The judgement is Cilium's (`proxylib/kafka/kafkalib/policy.go` in cilium/proxy, `Rule.Matches`
//! over the request's topic set, which each matching rule's topic is taken from): a rule
//! matches the key, version and client id of a request when each it names equals the
//! request's; a rule without `topic`, or any matching rule for an API that carries no topics,
//! allows the request; otherwise the request is allowed when each topic it names is the `topic`
//! of some matching rule (different rules may allow different topics). A Produce, Fetch,
//! ListOffsets or Metadata request that names no topic (Metadata for all topics, or for none,
//! as librdkafka first asks for the brokers) is judged on the rules' other keys, as Cilium's
//! per-request matchers, which looked only at the client id of these, judged it; a request of
//! another topic API that names none (OffsetFetch for all topics) is allowed only by a rule
//! without `topic`, and so is a topic named by an id the upstream never named, and so are the
//! topics beyond one name that an ACL filter, a config resource of an unknown type or a fetch
//! session this connection did not create stand for ([`TopicRef::Any`]). Keys and values
//! are checked as Cilium's
//! `Sanitize` did, with Kafka's own topic syntax (at most 249 characters, not `.` or `..`).
//! SASL authentication is not data access and the identity stays the peer's whatever principal
//! it authenticates as, so `SaslHandshake` (version 1 and later, after which the exchange travels
//! in `SaslAuthenticate` requests) and `SaslAuthenticate` pass whatever the rules say. A version 0
//! handshake is judged like any other request: the raw tokens that follow it are no Kafka
//! requests, and close the connection when they come.
//! This module compiles and judges; reading requests is the message modules' business.

use axoneme_sdk::{constraints, reject_unknown_keys, L7RuleMap, RuleError, RuleList, ValueMatch};

use crate::api::*;
use crate::apis::names_topics;
use crate::header::RequestHeader;
use crate::topics::TopicRef;

const KEYS: [&str; 5] = ["role", "apiKey", "apiVersion", "clientID", "topic"];

/// Kafka's longest topic name.
pub const MAX_TOPIC_LEN: usize = 249;

/// The API keys of Cilium's `produce` role (`GetAPIKeys` in `pkg/policy/api/kafka`).
pub const PRODUCE_ROLE: [i16; 3] = [PRODUCE, METADATA, API_VERSIONS];

/// The API keys of Cilium's `consume` role.
pub const CONSUME_ROLE: [i16; 11] = [
    FETCH,
    LIST_OFFSETS,
    METADATA,
    OFFSET_COMMIT,
    OFFSET_FETCH,
    FIND_COORDINATOR,
    JOIN_GROUP,
    HEARTBEAT,
    LEAVE_GROUP,
    SYNC_GROUP,
    API_VERSIONS,
];

/// The topic APIs whose requests naming no topic are judged on the rules' other keys (see the
/// module documentation).
const NO_TOPIC_BY_OTHER_KEYS: [i16; 4] = [PRODUCE, FETCH, LIST_OFFSETS, METADATA];

/// Whether `header` is a request of SASL authentication that passes whatever the rules (see the
/// module documentation).
fn authenticates(header: &RequestHeader<'_>) -> bool {
    match header.api.key {
        SASL_HANDSHAKE => header.api_version >= 1,
        SASL_AUTHENTICATE => true,
        _ => false,
    }
}

/// The API keys a rule allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keys {
    All,
    /// Bit `k` set: key `k` (every key is below 128).
    Set(u128),
}

impl Keys {
    fn of(keys: &[i16]) -> Keys {
        Keys::Set(keys.iter().fold(0, |set, &k| set | 1 << k))
    }

    fn contains(self, key: i16) -> bool {
        match self {
            Keys::All => true,
            Keys::Set(set) => (0..128).contains(&key) && set & (1 << key) != 0,
        }
    }
}

/// What a rule requires of a request besides its topics.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Selector {
    keys: Keys,
    version: Option<i16>,
    client_id: Option<Box<[u8]>>,
}

impl Selector {
    fn matches(&self, header: &RequestHeader<'_>) -> bool {
        self.keys.contains(header.api.key)
            && self.version.is_none_or(|v| v == header.api_version)
            && self
                .client_id
                .as_deref()
                .is_none_or(|id| id == header.client_id.unwrap_or_default())
    }
}

/// A compiled `l7` list of Kafka rules.
#[derive(Debug, Clone)]
pub struct RuleSet {
    /// The rules, grouped by selector, with their topics indexed.
    topics: RuleList<Selector>,
    /// Each distinct selector: for APIs that carry no topics, where `topic` is ignored.
    selectors: Vec<Selector>,
}

impl RuleSet {
    /// Whether the rules allow a request with `header` naming `topics` (see the module
    /// documentation).
    pub fn allows<'t>(
        &self,
        header: &RequestHeader<'_>,
        topics: impl Iterator<Item = TopicRef<'t>> + Clone,
    ) -> bool {
        if authenticates(header) {
            return true;
        }
        let selects = |selector: &Selector| selector.matches(header);
        if !names_topics(header.api.key) {
            return self.selectors.iter().any(selects);
        }
        // A rule without `topic` accepts any topic and none; the index asked about one name
        // answers for those rules too, so each topic is one walk of the index.
        let any_topic = || self.topics.allows(selects, std::iter::empty());
        let mut topics = topics.peekable();
        if topics.peek().is_none() {
            return any_topic()
                || NO_TOPIC_BY_OTHER_KEYS.contains(&header.api.key)
                    && self.selectors.iter().any(selects);
        }
        topics.all(|topic| match topic {
            TopicRef::Name(name) => self.topics.allows(selects, std::iter::once(name)),
            TopicRef::Id(_) | TopicRef::Any => any_topic(),
        })
    }

    /// Whether the rules let a Metadata request with `header` have the broker create
    /// `topics` (Kafka's authorizer asks for Create on each topic the broker would create):
    /// judged as a CreateTopics request from the same client naming them, of no version, so
    /// only `createtopics` rules without `apiVersion` (or rules without `apiKey` and `role`)
    /// allow it. A request naming no topic creates none.
    pub fn allows_creating<'t>(
        &self,
        header: &RequestHeader<'_>,
        topics: impl Iterator<Item = TopicRef<'t>> + Clone,
    ) -> bool {
        let mut topics = topics.peekable();
        if topics.peek().is_none() {
            return true;
        }
        let create = RequestHeader {
            api: Api::by_key(CREATE_TOPICS).expect("CreateTopics is in the API table"),
            api_version: -1,
            ..*header
        };
        self.allows(&create, topics)
    }
}

/// Compiles the maps of one `l7` list.
pub fn compile(maps: &[L7RuleMap]) -> Result<RuleSet, RuleError> {
    let mut selectors: Vec<Selector> = Vec::new();
    let topics = RuleList::compile(maps, |index, map| {
        let (selector, topic) = compile_rule(index, map)?;
        if !selectors.contains(&selector) {
            selectors.push(selector.clone());
        }
        Ok((selector, topic))
    })?;
    Ok(RuleSet { topics, selectors })
}

fn compile_rule(index: usize, map: &L7RuleMap) -> Result<(Selector, ValueMatch), RuleError> {
    reject_unknown_keys(index, map, &KEYS)?;
    let map = &*constraints(map);
    let error = |key: &str, reason: String| RuleError::new(index, Some(key), reason);
    let keys = match (map.get("role"), map.get("apiKey")) {
        (Some(role), Some(key)) => {
            return Err(error(
                "apiKey",
                format!("cannot set both role {role:?} and apiKey {key:?} together"),
            ))
        }
        (Some(role), None) if role.eq_ignore_ascii_case("produce") => Keys::of(&PRODUCE_ROLE),
        (Some(role), None) if role.eq_ignore_ascii_case("consume") => Keys::of(&CONSUME_ROLE),
        (Some(role), None) => {
            return Err(error(
                "role",
                format!("invalid Kafka role {role:?} (expected produce or consume)"),
            ))
        }
        (None, Some(name)) => match Api::by_policy_name(name) {
            Some(api) => Keys::of(&[api.key]),
            None => return Err(error("apiKey", format!("invalid Kafka apiKey {name:?}"))),
        },
        (None, None) => Keys::All,
    };
    let version = match map.get("apiVersion") {
        None => None,
        Some(text) => match text.parse::<i16>() {
            Ok(version) if version >= 0 => Some(version),
            _ => {
                return Err(error(
                    "apiVersion",
                    format!("invalid Kafka apiVersion {text:?} (expected 0 to 32767)"),
                ))
            }
        },
    };
    let client_id = map.get("clientID").map(|id| id.as_bytes().into());
    let topic = match map.get("topic") {
        None => ValueMatch::Any,
        Some(topic) => {
            check_topic(topic).map_err(|reason| error("topic", reason))?;
            ValueMatch::Exact(topic.as_bytes().into())
        }
    };
    Ok((
        Selector {
            keys,
            version,
            client_id,
        },
        topic,
    ))
}

/// Checks a topic name as Kafka does (`Topic.validate`).
fn check_topic(topic: &str) -> Result<(), String> {
    if topic == "." || topic == ".." {
        return Err(format!(
            "invalid Kafka topic {topic:?}: \".\" and \"..\" are not topic names"
        ));
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err(format!(
            "Kafka topic exceeds the maximum length of {MAX_TOPIC_LEN} characters"
        ));
    }
    if let Some(c) = topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "invalid Kafka topic {topic:?}: {c:?} is not one of a-z, A-Z, 0-9, '.', '_', '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn compile(maps: &[&[(&str, &str)]]) -> Result<RuleSet, String> {
        super::compile(&axoneme_testkit::rule_maps(maps)).map_err(|e| e.to_string())
    }

    fn header(key: i16, version: i16, client_id: Option<&str>) -> RequestHeader<'_> {
        RequestHeader {
            api: Api::by_key(key).unwrap(),
            api_version: version,
            correlation_id: 1,
            client_id: client_id.map(str::as_bytes),
        }
    }

    fn names<'t>(topics: &'t [&'t str]) -> impl Iterator<Item = TopicRef<'t>> + Clone {
        topics.iter().map(|t| TopicRef::Name(t.as_bytes()))
    }

    #[test]
    fn sasl_authentication_passes_whatever_the_rules_but_a_v0_handshake_is_judged() {
        let rules = compile(&[&[("role", "consume"), ("topic", "empire-announce")]]).unwrap();
        let allows = |key, version| rules.allows(&header(key, version, None), names(&[]));
        assert!(allows(SASL_HANDSHAKE, 1));
        assert!(allows(SASL_AUTHENTICATE, 0));
        assert!(allows(SASL_AUTHENTICATE, 2));
        assert!(
            !allows(SASL_HANDSHAKE, 0),
            "raw tokens follow a v0 handshake"
        );
        assert!(!allows(CREATE_TOPICS, 7), "other APIs are still judged");
    }

    #[test]
    fn creating_topics_is_judged_as_createtopics_of_no_version_from_the_same_client() {
        let rules = compile(&[
            &[("role", "produce")],
            &[("apiKey", "createtopics"), ("topic", "empire-drills")],
            &[
                ("apiKey", "createtopics"),
                ("clientID", "hq"),
                ("topic", "deathstar-plans"),
            ],
            &[("apiKey", "createtopics"), ("apiVersion", "7")],
        ])
        .unwrap();
        let creates = |client, topics: &[&str]| {
            rules.allows_creating(&header(METADATA, 12, client), names(topics))
        };
        assert!(creates(None, &["empire-drills"]));
        assert!(creates(Some("x"), &["empire-drills"]));
        assert!(
            !creates(None, &["deathstar-plans"]),
            "the client id is kept"
        );
        assert!(creates(Some("hq"), &["deathstar-plans", "empire-drills"]));
        assert!(
            !creates(Some("hq"), &["deathstar-plans", "x"]),
            "every topic, and a rule naming a version matches no version"
        );
        assert!(creates(None, &[]), "naming no topic creates none");
        let anything = compile(&[&[("topic", "x")]]).unwrap();
        assert!(
            anything.allows_creating(&header(METADATA, 12, None), names(&["x"])),
            "a rule without apiKey and role"
        );
    }

    #[test]
    fn the_empire_policy() {
        let rules = compile(&[
            &[("role", "produce"), ("topic", "deathstar-plans")],
            &[("role", "consume"), ("topic", "empire-announce")],
            &[("apiKey", "apiversions")],
            &[
                ("apiKey", "metadata"),
                ("apiVersion", "12"),
                ("clientID", "outpost-7"),
            ],
        ])
        .unwrap();
        let allows = |key, version, client, topics: &[&str]| {
            rules.allows(&header(key, version, client), names(topics))
        };
        assert!(allows(PRODUCE, 9, None, &["deathstar-plans"]));
        assert!(!allows(PRODUCE, 9, None, &["empire-announce"]));
        assert!(!allows(
            PRODUCE,
            9,
            None,
            &["deathstar-plans", "empire-announce"]
        ));
        assert!(allows(FETCH, 16, Some("x"), &["empire-announce"]));
        assert!(!allows(FETCH, 16, Some("x"), &["deathstar-plans"]));
        assert!(
            allows(METADATA, 12, None, &["deathstar-plans", "empire-announce"]),
            "each topic allowed by a different rule"
        );
        assert!(
            allows(METADATA, 12, None, &[]),
            "all topics, or none: judged on the consume rule's role"
        );
        assert!(
            !allows(OFFSET_FETCH, 8, None, &[]),
            "OffsetFetch for all topics: only a rule without topic"
        );
        assert!(allows(METADATA, 12, Some("outpost-7"), &["x"]));
        assert!(!allows(METADATA, 11, Some("outpost-7"), &["x"]));
        assert!(!allows(METADATA, 12, Some("outpost-8"), &["x"]));
        assert!(allows(API_VERSIONS, 4, None, &[]));
        assert!(
            allows(HEARTBEAT, 4, None, &[]),
            "a topic rule's topic is ignored for group APIs"
        );
        assert!(allows(FIND_COORDINATOR, 6, None, &[]));
        assert!(!allows(CREATE_TOPICS, 7, None, &["deathstar-plans"]));
        assert!(!allows(72, 0, None, &[]));
    }

    #[test]
    fn topic_ids_match_no_topic_rule() {
        let rules = compile(&[&[("apiKey", "fetch"), ("topic", "a")]]).unwrap();
        let id = [TopicRef::Id([1; 16])];
        assert!(!rules.allows(&header(FETCH, 13, None), id.iter().copied()));
        let any = compile(&[&[("apiKey", "fetch")]]).unwrap();
        assert!(any.allows(&header(FETCH, 13, None), id.iter().copied()));
    }

    #[test]
    fn client_ids_compare_exactly_and_null_is_empty() {
        let rules = compile(&[&[("clientID", "rdkafka")]]).unwrap();
        assert!(rules.allows(&header(PRODUCE, 9, Some("rdkafka")), names(&["a"])));
        assert!(!rules.allows(&header(PRODUCE, 9, Some("RDKAFKA")), names(&["a"])));
        assert!(!rules.allows(&header(PRODUCE, 9, None), names(&["a"])));
        let empty = compile(&[&[("clientID", "")]]).unwrap();
        assert!(empty.allows(&header(PRODUCE, 9, None), names(&["a"])));
    }

    #[test]
    fn names_are_case_insensitive_as_in_cilium() {
        assert!(compile(&[&[("role", "Produce")]]).is_ok());
        assert!(compile(&[&[("apiKey", "ApiVersions")]]).is_ok());
    }

    #[test]
    fn bad_rules_say_which_key_and_why() {
        assert_eq!(
            compile(&[&[("role", "produce"), ("apiKey", "fetch")]]).unwrap_err(),
            "l7[0].apiKey: cannot set both role \"produce\" and apiKey \"fetch\" together"
        );
        assert_eq!(
            compile(&[&[("role", "admin")]]).unwrap_err(),
            "l7[0].role: invalid Kafka role \"admin\" (expected produce or consume)"
        );
        assert_eq!(
            compile(&[&[("apiKey", "listoffsets")]]).unwrap_err(),
            "l7[0].apiKey: invalid Kafka apiKey \"listoffsets\""
        );
        for version in ["-1", "32768", "x", "1.0"] {
            assert!(compile(&[&[("apiVersion", version)]])
                .unwrap_err()
                .starts_with("l7[0].apiVersion: invalid Kafka apiVersion"));
        }
        for topic in [".", "..", "a b", "é", "a/b"] {
            assert!(
                compile(&[&[("topic", topic)]])
                    .unwrap_err()
                    .starts_with("l7[0].topic: invalid Kafka topic"),
                "{topic}"
            );
        }
        assert!(compile(&[&[("topic", &"a".repeat(249))]]).is_ok());
        assert_eq!(
            compile(&[&[("topic", &"a".repeat(250))]]).unwrap_err(),
            "l7[0].topic: Kafka topic exceeds the maximum length of 249 characters"
        );
        assert!(compile(&[&[("topics", "a")]])
            .unwrap_err()
            .starts_with("l7[0].topics: unknown key"));
        assert!(
            compile(&[&[("role", ""), ("apiKey", "fetch")]]).is_ok(),
            "empty is no value"
        );
    }

    /// Cilium's judgement, step by step as `MatchesRule` did it: each matching rule with a
    /// topic takes its topic out of the request's set, and the request is allowed when the set
    /// becomes empty or a rule without a topic (or any rule, for an API without topics) matches;
    /// a request naming no topic is matched by `ruleMatches`, whose matchers for Produce (0),
    /// Fetch (1), Offsets (2) and Metadata (3) requests looked only at the client id.
    fn cilium(maps: &[L7RuleMap], header: &RequestHeader<'_>, topics: &[&str]) -> bool {
        let mut left: BTreeSet<&str> = topics.iter().copied().collect();
        maps.iter().any(|map| {
            let map = constraints(map);
            let keys: Vec<i16> =
                match (map.get("role").map(|r| r.to_lowercase()), map.get("apiKey")) {
                    (Some(role), _) if role == "produce" => PRODUCE_ROLE.to_vec(),
                    (Some(_), _) => CONSUME_ROLE.to_vec(),
                    (None, Some(name)) => vec![Api::by_policy_name(name).unwrap().key],
                    (None, None) => Vec::new(),
                };
            if !keys.is_empty() && !keys.contains(&header.api.key) {
                return false;
            }
            if let Some(v) = map.get("apiVersion") {
                if v.parse::<i16>().unwrap() != header.api_version {
                    return false;
                }
            }
            if let Some(id) = map.get("clientID") {
                if id.as_bytes() != header.client_id.unwrap_or_default() {
                    return false;
                }
            }
            match map.get("topic") {
                Some(_) if names_topics(header.api.key) && topics.is_empty() => {
                    [0, 1, 2, 3].contains(&header.api.key)
                }
                Some(topic) if names_topics(header.api.key) => {
                    left.remove(topic.as_str()) && left.is_empty()
                }
                _ => true,
            }
        })
    }

    fn rule_map() -> impl Strategy<Value = L7RuleMap> {
        let selector = prop_oneof![
            Just(None),
            prop::sample::select(vec!["produce", "consume", "Consume"])
                .prop_map(|r| Some(("role", r))),
            prop::sample::select(vec![
                "produce",
                "fetch",
                "metadata",
                "heartbeat",
                "createtopics"
            ])
            .prop_map(|k| Some(("apiKey", k))),
        ];
        (
            selector,
            prop::option::of(prop::sample::select(vec!["1", "9", ""])),
            prop::option::of(prop::sample::select(vec!["c", "d", ""])),
            prop::option::of(prop::sample::select(vec!["a", "b", "c", ""])),
        )
            .prop_map(|(selector, version, client, topic)| {
                let mut map = L7RuleMap::new();
                let mut put = |k: &str, v: &str| map.insert(k.to_owned(), v.to_owned());
                if let Some((k, v)) = selector {
                    put(k, v);
                }
                version.map(|v| put("apiVersion", v));
                client.map(|v| put("clientID", v));
                topic.map(|v| put("topic", v));
                map
            })
    }

    proptest! {
        /// The compiled rules judge as Cilium's rule-by-rule matching did.
        #[test]
        fn judges_as_cilium(
            maps in prop::collection::vec(rule_map(), 0..8),
            requests in prop::collection::vec(
                (
                    prop::sample::select(vec![PRODUCE, FETCH, METADATA, OFFSET_FETCH, HEARTBEAT, CREATE_TOPICS, API_VERSIONS]),
                    prop::sample::select(vec![1i16, 9]),
                    prop::option::of(prop::sample::select(vec!["c", "d"])),
                    prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "d"]), 0..4),
                ),
                1..8,
            ),
        ) {
            let rules = super::compile(&maps).unwrap();
            for (key, version, client, topics) in &requests {
                let header = header(*key, *version, *client);
                prop_assert_eq!(
                    rules.allows(&header, names(topics)),
                    cilium(&maps, &header, topics),
                    "{:?} {:?}", header, topics
                );
            }
        }
    }
}
