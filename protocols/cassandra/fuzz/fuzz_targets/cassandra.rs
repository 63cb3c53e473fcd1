//! Arbitrary bytes on both flows of a Cassandra connection, cut into arbitrary reads, and the
//! same bytes as CQL text: frame decoding, decompression, the lexer and the classifier must
//! never panic (the datapath would catch it; here it is a failure).

#![no_main]

use axoneme_cassandra::{classify, Cassandra};
use axoneme_datapath::ConnectionError;
use axoneme_testkit::{RulesPolicy, Session};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = classify(text);
    }
    let cassandra = Cassandra::new(64 * 1024);
    let rules = RulesPolicy::compile(
        &cassandra,
        "fuzz",
        &[&[("query_action", "select")], &[("query_action", "insert")]],
    );
    let mut session = Session::new(&cassandra, rules);
    if let Err(ConnectionError::Panic(message)) = session.replay(data) {
        panic!("parser panicked: {message}");
    }
});
