//! Arbitrary bytes on both flows of a Cassandra connection, cut into arbitrary reads, and the
//! same bytes as CQL text: frame decoding, decompression, the lexer and the classifier must
//! never panic (the datapath would catch it; here it is a failure).

#![no_main]

use std::sync::OnceLock;

use axoneme_cassandra::{classify, Cassandra};
use axoneme_datapath::ConnectionError;
use axoneme_testkit::{RulesPolicy, Session};
use libfuzzer_sys::fuzz_target;

/// Compiled once: rule compilation is not what is being fuzzed.
fn policy(cassandra: &Cassandra) -> &'static RulesPolicy {
    static POLICY: OnceLock<RulesPolicy> = OnceLock::new();
    POLICY.get_or_init(|| {
        RulesPolicy::compile(
            cassandra,
            "fuzz",
            &[&[("query_action", "select")], &[("query_action", "insert")]],
        )
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = classify(text);
    }
    let cassandra = Cassandra::new(64 * 1024);
    let mut session = Session::new(&cassandra, policy(&cassandra).clone());
    if let Err(ConnectionError::Panic(message)) = session.replay(data) {
        panic!("parser panicked: {message}");
    }
});
