//! `axoneme policy suggest` round trip, as a property: for any set of memcached, Cassandra or
//! Kafka requests written to an access log by the real formatter, the suggested policy, imported
//! into the real policy engine, allows every request observed; and with `--exact`, it denies
//! every other request this test can generate (a command on a key, an action on a table, an API
//! on a topic, never seen together). The verdicts come from the engine and each protocol's own
//! rule matcher (memcached's directly, the others' through `trace`), never from the suggester.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use axoneme::config::ProtocolsConfig;
use axoneme::suggest::{suggest, SuggestArgs};
use axoneme::telemetry::access_log::format_entry;
use axoneme_memcache::{Command, RuleSet};
use axoneme_policy::{parse_policies, ConnectionVerdict, EndpointSpec, PortPolicy, Snapshot};
use axoneme_sdk::{typed, ConnectionMeta, Direction, EntryType, Field, LogEntry, RequestPolicy};
use proptest::prelude::*;

const CACHE: &str = "10.0.0.2";
const LUKE: &str = "10.0.0.1";
const PORT: u16 = 11211;

/// Commands that take one key.
const ONE_KEY: [&str; 11] = [
    "set", "add", "replace", "append", "prepend", "cas", "incr", "decr", "delete", "touch", "gat",
];
/// Commands without keys.
const KEYLESS: [&str; 3] = ["version", "flush_all", "stats"];
/// Every key the test uses: stems shared by several, and keys without a separator.
const KEYS: [&str; 12] = [
    "user:1", "user:2", "user:3", "sess/1", "sess/2", "sess/3", "cfg.a", "cfg.b", "cfg.c", "k1",
    "k2", "k3",
];

/// One memcached request: its command and keys.
type Request = (&'static str, Vec<&'static str>);

fn request() -> impl Strategy<Value = Request> {
    let key = || prop::sample::select(KEYS.to_vec());
    prop_oneof![
        (prop::sample::select(ONE_KEY.to_vec()), key()).prop_map(|(c, k)| (c, vec![k])),
        prop::collection::vec(key(), 1..4).prop_map(|keys| ("get", keys)),
        prop::sample::select(KEYLESS.to_vec()).prop_map(|c| (c, Vec::new())),
    ]
}

fn endpoint(name: &str, ip: &str) -> EndpointSpec {
    EndpointSpec {
        name: name.to_owned(),
        ips: vec![ip.parse().unwrap()],
        labels: [("app".to_owned(), name.to_owned())].into(),
        namespace: None,
        policy_audit_mode: false,
    }
}

/// The connection every logged request of the test is on: luke to cache.
fn luke_to_cache() -> ConnectionMeta {
    ConnectionMeta {
        id: 1,
        listener: Arc::from("cache"),
        endpoint: Arc::from("cache"),
        direction: Direction::Ingress,
        source: SocketAddr::new(LUKE.parse().unwrap(), 40000),
        destination: SocketAddr::new(CACHE.parse().unwrap(), PORT),
        source_identity: 257,
        destination_identity: 256,
        source_labels: Arc::from(vec![
            "app=luke".to_owned(),
            "k8s:io.kubernetes.pod.namespace=default".to_owned(),
        ]),
        destination_labels: Arc::from(vec![
            "app=cache".to_owned(),
            "k8s:io.kubernetes.pod.namespace=default".to_owned(),
        ]),
    }
}

/// The access log of requests of `proto`, each given as its logged fields, as the agent writes
/// it.
fn access_log(proto: &str, requests: &[Vec<(&str, String)>]) -> Vec<u8> {
    let meta = luke_to_cache();
    let mut log = Vec::new();
    for request in requests {
        let fields: Vec<Field<'_>> = request.iter().map(|(k, v)| Field::text(k, v)).collect();
        let entry = LogEntry {
            entry_type: EntryType::Request,
            meta: &meta,
            policy_name: "",
            proto: Some(proto),
            fields: &fields,
        };
        format_entry(&mut log, &entry, SystemTime::now(), 4096);
    }
    log
}

/// The memcached requests' logged fields.
fn memcache_log(requests: &[Request]) -> Vec<u8> {
    let logged: Vec<Vec<(&str, String)>> = requests
        .iter()
        .map(|(command, keys)| vec![("command", command.to_string()), ("keys", keys.join(", "))])
        .collect();
    access_log("memcache", &logged)
}

/// A file of its own for one case's log.
fn log_file(bytes: &[u8]) -> PathBuf {
    static CASE: AtomicU32 = AtomicU32::new(0);
    let path = std::env::temp_dir().join(format!(
        "axoneme-suggest-roundtrip-{}-{}.log",
        std::process::id(),
        CASE.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, bytes).unwrap();
    path
}

/// The policy suggested from `log`, imported: luke's request-level policy at cache.
fn suggested_policy(log: &[u8], exact: bool, group_keyspaces: Option<usize>) -> Arc<PortPolicy> {
    let path = log_file(log);
    let args = SuggestArgs {
        from_log: vec![path.clone()],
        endpoint: Some("cache".to_owned()),
        direction: None,
        exact,
        min_count: 1,
        group_keyspaces,
    };
    let yaml = suggest(&args).unwrap();
    std::fs::remove_file(&path).unwrap();
    let policies = parse_policies("suggested.yaml", &yaml)
        .unwrap_or_else(|e| panic!("the suggestion does not import: {e}\n{yaml}"));
    let registry = axoneme::builtin_protocols(&ProtocolsConfig::default());
    let endpoints = [endpoint("cache", CACHE), endpoint("luke", LUKE)];
    let snapshot = Snapshot::build(policies, &endpoints, &[], &registry, None)
        .unwrap_or_else(|e| panic!("the suggestion does not compile: {e}\n{yaml}"));
    let verdict =
        snapshot.decide_connection("cache", Direction::Ingress, LUKE.parse().unwrap(), PORT);
    let ConnectionVerdict::Allowed {
        l7: Some(policy), ..
    } = verdict
    else {
        panic!("luke's connection is not parsed under the suggestion: {verdict:?}\n{yaml}");
    };
    policy
}

/// The suggestion for memcached `requests`, as a judge of a command on keys.
fn suggested_judge(requests: &[Request], exact: bool) -> impl Fn(&str, &[&str]) -> bool {
    let policy = suggested_policy(&memcache_log(requests), exact, None);
    move |command: &str, keys: &[&str]| {
        let command = Command::from_name(command).unwrap();
        let keys = keys.iter().map(|k| k.as_bytes());
        let verdict = policy.check(&mut typed(|rules: &RuleSet| {
            rules.allows(command, keys.clone())
        }));
        verdict.allowed
    }
}

/// The suggestion for `proto` requests logged as `log`, as a judge of a request described by
/// `axoneme policy trace`'s fields, through the protocol's own matcher.
fn traced_judge(
    proto: &'static str,
    log: &[u8],
    exact: bool,
    group_keyspaces: Option<usize>,
) -> impl Fn(&[(&str, &str)]) -> bool {
    let policy = suggested_policy(log, exact, group_keyspaces);
    let registry = axoneme::builtin_protocols(&ProtocolsConfig::default());
    let protocol = Arc::clone(registry.get(proto).unwrap());
    move |fields: &[(&str, &str)]| {
        let fields: BTreeMap<String, String> = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let verdict = policy.check(&mut |rules| protocol.trace(rules, &fields).unwrap());
        verdict.allowed
    }
}

const ACTIONS: [&str; 4] = ["select", "insert", "update", "delete"];
const TABLES: [&str; 5] = [
    "shop.orders",
    "shop.users",
    "shop.stock",
    "system.local",
    "audit.log",
];

/// The Cassandra statements' logged fields.
fn cassandra_log(statements: &[(&str, &str)]) -> Vec<u8> {
    let logged: Vec<Vec<(&str, String)>> = statements
        .iter()
        .map(|(action, table)| {
            vec![
                ("query_action", action.to_string()),
                ("query_table", table.to_string()),
            ]
        })
        .collect();
    access_log("cassandra", &logged)
}

const APIS: [&str; 5] = ["produce", "fetch", "metadata", "offsetcommit", "offsets"];
const TOPICS: [&str; 3] = ["orders", "audit", "deathstar-plans"];

/// The Kafka requests' logged fields.
fn kafka_log(requests: &[(&str, &str)]) -> Vec<u8> {
    let logged: Vec<Vec<(&str, String)>> = requests
        .iter()
        .map(|(api, topic)| {
            vec![
                ("api_key", api.to_string()),
                ("api_version", "4".to_owned()),
                ("correlation_id", "1".to_owned()),
                ("topic", topic.to_string()),
            ]
        })
        .collect();
    access_log("kafka", &logged)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_suggestion_allows_every_observed_request(
        requests in prop::collection::vec(request(), 1..24),
        exact in any::<bool>(),
    ) {
        let allows = suggested_judge(&requests, exact);
        for (command, keys) in &requests {
            prop_assert!(allows(command, keys), "{command} {keys:?} denied");
        }
    }

    #[test]
    fn an_exact_suggestion_denies_every_command_on_a_key_it_was_never_used_with(
        requests in prop::collection::vec(request(), 1..24),
    ) {
        let allows = suggested_judge(&requests, true);
        let used: BTreeSet<(&str, &str)> = requests
            .iter()
            .flat_map(|(command, keys)| keys.iter().map(move |key| (*command, *key)))
            .collect();
        let keyless: BTreeSet<&str> = requests
            .iter()
            .filter(|(_, keys)| keys.is_empty())
            .map(|(command, _)| *command)
            .collect();
        for command in ONE_KEY.iter().chain(["get"].iter()) {
            for key in KEYS {
                let observed = used.contains(&(*command, key));
                prop_assert_eq!(allows(command, &[key]), observed, "{} {}", command, key);
            }
        }
        for command in KEYLESS {
            prop_assert_eq!(allows(command, &[]), keyless.contains(command), "{}", command);
        }
    }

    #[test]
    fn cassandra_suggestions_allow_every_statement_and_exact_ones_nothing_else(
        statements in prop::collection::vec(
            (prop::sample::select(ACTIONS.to_vec()), prop::sample::select(TABLES.to_vec())),
            1..16,
        ),
        group_keyspaces in prop::option::of(1usize..3),
    ) {
        let log = cassandra_log(&statements);
        let grouped = traced_judge("cassandra", &log, false, group_keyspaces);
        let exact = traced_judge("cassandra", &log, true, group_keyspaces);
        let seen: BTreeSet<(&str, &str)> = statements.iter().copied().collect();
        for action in ACTIONS {
            for table in TABLES {
                let request = [("query_action", action), ("query_table", table)];
                if seen.contains(&(action, table)) {
                    prop_assert!(grouped(&request), "{} {} denied", action, table);
                }
                prop_assert_eq!(exact(&request), seen.contains(&(action, table)), "{} {}", action, table);
            }
        }
    }

    #[test]
    fn kafka_suggestions_allow_every_request_and_exact_ones_nothing_else(
        requests in prop::collection::vec(
            (prop::sample::select(APIS.to_vec()), prop::sample::select(TOPICS.to_vec())),
            1..16,
        ),
    ) {
        let log = kafka_log(&requests);
        let by_role = traced_judge("kafka", &log, false, None);
        let exact = traced_judge("kafka", &log, true, None);
        let seen: BTreeSet<(&str, &str)> = requests.iter().copied().collect();
        for api in APIS {
            for topic in TOPICS {
                let request = [("apiKey", api), ("apiVersion", "4"), ("topic", topic)];
                if seen.contains(&(api, topic)) {
                    prop_assert!(by_role(&request), "{} {} denied", api, topic);
                }
                prop_assert_eq!(exact(&request), seen.contains(&(api, topic)), "{} {}", api, topic);
            }
        }
    }
}
