//! Arbitrary bytes on both flows of a memcached connection (text, meta or binary, as the first
//! byte decides), cut into arbitrary reads: the parser must never panic (the datapath would
//! catch it; here it is a failure), and every error must be a clean close.

#![no_main]

use axoneme_datapath::ConnectionError;
use axoneme_memcache::Memcache;
use axoneme_testkit::{RulesPolicy, Session};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let memcache = Memcache::new(64 * 1024);
    let rules = RulesPolicy::compile(
        &memcache,
        "fuzz",
        &[
            &[("command", "writeGroup"), ("keyPrefix", "a/")],
            &[("command", "get"), ("keyExact", "k")],
        ],
    );
    let mut session = Session::new(&memcache, rules);
    if let Err(ConnectionError::Panic(message)) = session.replay(data) {
        panic!("parser panicked: {message}");
    }
});
