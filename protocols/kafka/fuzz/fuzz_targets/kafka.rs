//! Bytes on both flows of a Kafka connection, through the datapath with a few rules: the
//! parser must never panic (the datapath would catch it; here it is a failure), and every
//! error must be a clean close.
//!
//! The first byte picks the mode. Even: the rest is arbitrary bytes cut into arbitrary reads
//! (framing, headers, streaming). Odd: the rest is a script of messages whose frames and
//! headers are valid and whose bodies are arbitrary, so that fuzzing gets past the framing to
//! the body readers, the denials, the topic-id learning, the fetch sessions and the narrowing
//! of Metadata:
//!
//! - a request: a control byte below 0x80, an API (one of [`APIS`], by index modulo their
//!   number), a version (taken as it is when the API accepts it, else wrapped into its
//!   range), a 2-byte body length and the body; it goes out with the next correlation id
//!   (from 0) and client id `fuzz`;
//! - a response: a control byte of 0x80 or more, a correlation id (one byte), a 2-byte body
//!   length and the body (which, for a flexible response, starts with its header's tagged
//!   fields).
//!
//! The control byte's low seven bits cut the frame into reads of that many bytes (0: one
//! read).

#![no_main]

use std::sync::OnceLock;

use axoneme_datapath::ConnectionError;
use axoneme_kafka::api::*;
use axoneme_kafka::{Api, Kafka};
use axoneme_sdk::Flow;
use axoneme_testkit::{RulesPolicy, Session};
use libfuzzer_sys::fuzz_target;

/// The APIs the script's requests are of: every API whose body the parser reads, and those
/// whose denial it composes without reading the body.
const APIS: [i16; 28] = [
    PRODUCE,
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
    LIST_GROUPS,
    API_VERSIONS,
    CREATE_TOPICS,
    DELETE_TOPICS,
    DELETE_RECORDS,
    INIT_PRODUCER_ID,
    OFFSET_FOR_LEADER_EPOCH,
    ADD_PARTITIONS_TO_TXN,
    TXN_OFFSET_COMMIT,
    GET_TELEMETRY_SUBSCRIPTIONS,
    PUSH_TELEMETRY,
    DESCRIBE_ACLS,
    CREATE_ACLS,
    DELETE_ACLS,
    DESCRIBE_CONFIGS,
    ALTER_CONFIGS,
    INCREMENTAL_ALTER_CONFIGS,
];

/// Compiled once: rule compilation is not what is being fuzzed.
fn policy(kafka: &Kafka) -> &'static RulesPolicy {
    static POLICY: OnceLock<RulesPolicy> = OnceLock::new();
    POLICY.get_or_init(|| {
        RulesPolicy::compile(
            kafka,
            "fuzz",
            &[
                &[("role", "produce"), ("topic", "a")],
                &[("role", "consume"), ("topic", "b")],
                &[("apiKey", "createtopics"), ("topic", "a")],
                &[("apiKey", "describeconfigs"), ("topic", "b")],
                &[("apiKey", "createacls"), ("topic", "a")],
                &[("apiKey", "apiversions")],
            ],
        )
    })
}

/// A script step's fields, taken from the front of `rest`.
fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if rest.len() < n {
        return None;
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Some(head)
}

/// The next step's frame and its flow, or `None` at the end of the script.
fn step(rest: &mut &[u8], correlation_id: &mut i32) -> Option<(Flow, u8, Vec<u8>)> {
    let &[control] = take(rest, 1)? else {
        return None;
    };
    let mut message = Vec::new();
    let flow = if control < 0x80 {
        let &[api, version] = take(rest, 2)? else {
            return None;
        };
        let api = Api::by_key(APIS[usize::from(api) % APIS.len()])?;
        let (low, high) = api.versions?;
        let version = match api.accepts(i16::from(version)) {
            true => i16::from(version),
            false => low + i16::from(version) % (high - low + 1),
        };
        message.extend_from_slice(&api.key.to_be_bytes());
        message.extend_from_slice(&version.to_be_bytes());
        message.extend_from_slice(&correlation_id.to_be_bytes());
        message.extend_from_slice(b"\x00\x04fuzz");
        if api.is_flexible(version) {
            message.push(0);
        }
        *correlation_id += 1;
        Flow::Request
    } else {
        let &[id] = take(rest, 1)? else {
            return None;
        };
        message.extend_from_slice(&i32::from(id).to_be_bytes());
        Flow::Reply
    };
    let &[l0, l1] = take(rest, 2)? else {
        return None;
    };
    let len = usize::from(u16::from_be_bytes([l0, l1])).min(rest.len());
    message.extend_from_slice(take(rest, len)?);
    let mut frame = (message.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&message);
    Some((flow, control & 0x7f, frame))
}

/// Plays a script of valid frames with arbitrary bodies; stops at the first error.
fn play(session: &mut Session, mut script: &[u8]) -> Result<(), ConnectionError> {
    let mut correlation_id = 0;
    while let Some((flow, cut, frame)) = step(&mut script, &mut correlation_id) {
        let read = match cut {
            0 => frame.len(),
            n => usize::from(n),
        };
        for chunk in frame.chunks(read) {
            session.send(flow, chunk)?;
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let kafka = Kafka::new(64 * 1024);
    let mut session = Session::new(&kafka, policy(&kafka).clone());
    let result = match mode & 1 {
        0 => session.replay(rest),
        _ => play(&mut session, rest),
    };
    if let Err(ConnectionError::Panic(message)) = result {
        panic!("parser panicked: {message}");
    }
});
