//! Arbitrary bytes on both flows of an R2-D2 connection, cut into arbitrary reads: the parser
//! must never panic (the datapath would catch it; here it is a failure) and must stay within the
//! datapath's buffering limits.

#![no_main]

use std::any::Any;
use std::sync::OnceLock;

use axoneme_datapath::{Connection, ConnectionError, Env, Limits};
use axoneme_r2d2::{R2d2, RuleSet};
use axoneme_sdk::{Flow, Protocol, RequestPolicy, Verdict};
use axoneme_testkit::{meta, Discard, NullLog};
use libfuzzer_sys::fuzz_target;

/// Allows `READ` of files under `/public/`, through the real rule compiler.
struct Policy(RuleSet);

impl RequestPolicy for Policy {
    fn check(&self, matches: &mut dyn FnMut(&(dyn Any + Send + Sync)) -> bool) -> Verdict<'_> {
        Verdict {
            allowed: matches(&self.0),
            policy_name: "fuzz",
        }
    }
}

/// Compiled once: rule compilation is not what is being fuzzed.
fn policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| {
        let rule =
            [("cmd", "READ"), ("file", "/public/.*")].map(|(k, v)| (k.to_string(), v.to_string()));
        Policy(RuleSet::compile(&[rule.into()]).expect("a valid rule"))
    })
}

fuzz_target!(|data: &[u8]| {
    let policy = policy();
    let meta = meta("127.0.0.21:5000", "127.0.0.1:4001");
    let limits = Limits {
        inject_capacity: 64,
        max_buffered: 16 * 1024,
    };
    let mut conn = Connection::new(R2d2.new_parser(&meta), meta, "r2d2", limits);
    let env = Env {
        policy,
        log: &NullLog,
    };
    // Each read: one control byte (flow in the top bit, length in the rest), then the bytes.
    let mut rest = data;
    while let Some((&control, tail)) = rest.split_first() {
        let flow = if control & 0x80 == 0 {
            Flow::Request
        } else {
            Flow::Reply
        };
        let len = usize::from(control & 0x7f).min(tail.len());
        let (chunk, tail) = tail.split_at(len);
        rest = tail;
        match conn.on_data(flow, chunk, rest.is_empty(), &env, &mut Discard::default()) {
            Ok(()) => {}
            Err(ConnectionError::Panic(message)) => panic!("parser panicked: {message}"),
            Err(_) => return,
        }
    }
});
