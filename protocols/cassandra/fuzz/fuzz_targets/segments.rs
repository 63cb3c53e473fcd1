//! Arbitrary bytes as v5 segments: straight into the segment decoder, and on both flows of a
//! connection past a v5 handshake (LZ4 or not, as the first byte says), cut into arbitrary
//! reads, raw or wrapped in valid segments. Nothing may panic.

#![no_main]

use std::sync::OnceLock;

use axoneme_cassandra::segment::{self, Format};
use axoneme_cassandra::Cassandra;
use axoneme_datapath::ConnectionError;
use axoneme_sdk::Flow;
use axoneme_testkit::{RulesPolicy, Session};
use libfuzzer_sys::fuzz_target;

/// A STARTUP for protocol v5, asking for LZ4 when `lz4`.
fn startup(lz4: bool) -> Vec<u8> {
    let mut options: Vec<(&str, &str)> = vec![("CQL_VERSION", "3.0.0")];
    if lz4 {
        options.push(("COMPRESSION", "lz4"));
    }
    let mut body = (options.len() as u16).to_be_bytes().to_vec();
    for (key, value) in options {
        for s in [key, value] {
            body.extend_from_slice(&(s.len() as u16).to_be_bytes());
            body.extend_from_slice(s.as_bytes());
        }
    }
    let mut frame = vec![5, 0, 0, 0, 0x01];
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

/// Compiled once: rule compilation is not what is being fuzzed.
fn policy(cassandra: &Cassandra) -> &'static RulesPolicy {
    static POLICY: OnceLock<RulesPolicy> = OnceLock::new();
    POLICY.get_or_init(|| {
        RulesPolicy::compile(
            cassandra,
            "fuzz",
            &[
                &[("query_action", "select")],
                &[("query_action", "insert"), ("query_table", "ks\\..*")],
            ],
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, data)) = data.split_first() else {
        return;
    };
    let lz4 = first & 1 == 1;
    let format = if lz4 { Format::Lz4 } else { Format::Plain };
    if let Some(Ok(header)) = segment::parse_header(format, data) {
        let _ = segment::decode_payload(&header, data, &mut Vec::new());
    }
    let cassandra = Cassandra::new(256 * 1024);
    let mut session = Session::new(&cassandra, policy(&cassandra).clone());
    session.send(Flow::Request, &startup(lz4)).expect("STARTUP");
    session
        .send(Flow::Reply, &[0x85, 0, 0, 0, 0x02, 0, 0, 0, 0])
        .expect("READY");
    // Records: a control byte (bit 0: the flow; bit 1: wrap the bytes in valid segments, so
    // that envelopes get past the CRCs; the other bits: the read size), a 16-bit length, bytes.
    let mut rest = data;
    while let [control, hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (bytes, tail) = tail.split_at(len);
        rest = tail;
        let flow = if control & 1 == 0 {
            Flow::Request
        } else {
            Flow::Reply
        };
        let mut wire = Vec::new();
        if control & 2 != 0 {
            segment::encode(format, bytes, &mut wire);
        } else {
            wire.extend_from_slice(bytes);
        }
        let read = usize::from(control >> 2) * 64 + 1;
        for chunk in wire.chunks(read) {
            match session.send(flow, chunk) {
                Ok(()) => {}
                Err(ConnectionError::Panic(message)) => panic!("parser panicked: {message}"),
                Err(_) => return,
            }
        }
    }
});
