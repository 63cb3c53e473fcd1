//! Arbitrary bytes on both flows of a memcached connection (text, meta or binary, as the first
//! byte decides), cut into arbitrary reads: the parser must never panic (the datapath would
//! catch it; here it is a failure), and every error must be a clean close.

#![no_main]

use axoneme_datapath::ConnectionError;
use axoneme_memcache::Memcache;
use axoneme_sdk::Flow;
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
    // Each read: one control byte (flow in the top bit, length in the rest), then the bytes.
    let mut rest = data;
    while let Some((&control, tail)) = rest.split_first() {
        let flow = if control & 0x80 == 0 { Flow::Request } else { Flow::Reply };
        let len = usize::from(control & 0x7f).min(tail.len());
        let (chunk, tail) = tail.split_at(len);
        rest = tail;
        match session.send(flow, chunk) {
            Ok(()) => {}
            Err(ConnectionError::Panic(message)) => panic!("parser panicked: {message}"),
            Err(_) => return,
        }
    }
});
