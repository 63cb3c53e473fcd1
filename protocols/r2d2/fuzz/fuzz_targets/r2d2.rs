//! Arbitrary bytes on both flows of an R2-D2 connection, cut into arbitrary reads, with small
//! buffers: the parser must never panic (the datapath would catch it; here it is a failure) and
//! must stay within the datapath's buffering limits.

#![no_main]

use std::sync::OnceLock;

use axoneme_datapath::{ConnectionError, Limits};
use axoneme_r2d2::R2d2;
use axoneme_testkit::{RulesPolicy, Session};
use libfuzzer_sys::fuzz_target;

/// Compiled once: rule compilation is not what is being fuzzed.
fn policy() -> &'static RulesPolicy {
    static POLICY: OnceLock<RulesPolicy> = OnceLock::new();
    POLICY.get_or_init(|| {
        RulesPolicy::compile(&R2d2, "fuzz", &[&[("cmd", "READ"), ("file", "/public/.*")]])
    })
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        inject_capacity: 64,
        max_buffered: 16 * 1024,
    };
    let mut session = Session::with_limits(&R2d2, policy().clone(), limits);
    if let Err(ConnectionError::Panic(message)) = session.replay(data) {
        panic!("parser panicked: {message}");
    }
});
