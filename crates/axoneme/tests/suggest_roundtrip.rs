//! `axoneme policy suggest` round trip, as a property: for any set of memcached requests
//! written to an access log by the real formatter, the suggested policy, imported into the real
//! policy engine, allows every request observed; and with `--exact`, it denies every other
//! request this test can generate (a command on a key it was never used with). The verdicts come
//! from the engine and the memcache protocol's rule matcher, never from the suggester.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use axoneme::config::ProtocolsConfig;
use axoneme::suggest::{suggest, SuggestArgs};
use axoneme::telemetry::access_log::format_entry;
use axoneme_memcache::{Command, RuleSet};
use axoneme_policy::{parse_policies, ConnectionVerdict, EndpointSpec, Snapshot};
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

/// The access log of `requests` from luke to cache, as the agent writes it.
fn access_log(requests: &[Request]) -> Vec<u8> {
    let meta = ConnectionMeta {
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
    };
    let mut log = Vec::new();
    for (command, keys) in requests {
        let keys = keys.join(", ");
        let fields = [Field::text("command", command), Field::text("keys", &keys)];
        let entry = LogEntry {
            entry_type: EntryType::Request,
            meta: &meta,
            policy_name: "",
            proto: Some("memcache"),
            fields: &fields,
        };
        format_entry(&mut log, &entry, SystemTime::now(), 4096);
    }
    log
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

/// The policy suggested for `requests`, imported: a judge of luke's requests to cache.
fn suggested_judge(requests: &[Request], exact: bool) -> impl Fn(&str, &[&str]) -> bool {
    let path = log_file(&access_log(requests));
    let args = SuggestArgs {
        from_log: vec![path.clone()],
        endpoint: Some("cache".to_owned()),
        direction: None,
        exact,
        min_count: 1,
        group_keyspaces: None,
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
    move |command: &str, keys: &[&str]| {
        let command = Command::from_name(command).unwrap();
        let keys = keys.iter().map(|k| k.as_bytes());
        let verdict = policy.check(&mut typed(|rules: &RuleSet| {
            rules.allows(command, keys.clone())
        }));
        verdict.allowed
    }
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
}
