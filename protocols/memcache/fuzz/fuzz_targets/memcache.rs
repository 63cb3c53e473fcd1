//! Arbitrary bytes on both flows of a memcached connection (text, meta or binary, as the first
//! byte decides), cut into arbitrary reads: the parser must never panic (the datapath would
//! catch it; here it is a failure), and every error must be a clean close.

#![no_main]

use std::sync::OnceLock;

use axoneme_datapath::ConnectionError;
use axoneme_memcache::Memcache;
use axoneme_testkit::{RulesPolicy, Session};
use libfuzzer_sys::fuzz_target;

/// Compiled once: rule compilation is not what is being fuzzed.
fn policy(memcache: &Memcache) -> &'static RulesPolicy {
    static POLICY: OnceLock<RulesPolicy> = OnceLock::new();
    POLICY.get_or_init(|| {
        RulesPolicy::compile(
            memcache,
            "fuzz",
            &[
                &[("command", "writeGroup"), ("keyPrefix", "a/")],
                &[("command", "get"), ("keyExact", "k")],
            ],
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let memcache = Memcache::new(64 * 1024);
    let mut session = Session::new(&memcache, policy(&memcache).clone());
    if let Err(ConnectionError::Panic(message)) = session.replay(data) {
        panic!("parser panicked: {message}");
    }
});
