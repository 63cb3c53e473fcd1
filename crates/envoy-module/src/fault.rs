//! A protocol that fails on demand, to test in a real Envoy how the filter survives a parser
//! panic; compiled only with the `fault-injection` feature, never into a release build.
//!
//! `fault-injection` passes CRLF-terminated request lines and every reply byte unchanged, and
//! panics on the request line `panic`, or when it makes the parser of a connection from
//! [`PANIC_AT_CONNECT_FROM`], before any byte. It takes no L7 rules.

use std::net::{IpAddr, Ipv4Addr};

use axoneme_sdk::{
    ConnectionMeta, Context, Flow, Input, L7RuleMap, Op, Parser, RuleError, TypedProtocol,
};

/// The client address whose connections get no parser: making it panics.
pub(crate) const PANIC_AT_CONNECT_FROM: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 66));

/// The protocol, registered as `fault-injection`.
pub(crate) struct FaultInjection;

impl TypedProtocol for FaultInjection {
    type Rules = ();
    const TRACE_FIELDS: &'static [&'static str] = &[];

    fn name(&self) -> &'static str {
        "fault-injection"
    }

    fn parser(&self, meta: &ConnectionMeta) -> Box<dyn Parser> {
        if meta.source.ip() == PANIC_AT_CONNECT_FROM {
            panic!("fault injected: a connection from {PANIC_AT_CONNECT_FROM}");
        }
        Box::new(PanicOnRequest)
    }

    fn compile(&self, _rules: &[L7RuleMap]) -> Result<(), RuleError> {
        Err(RuleError::new(0, None, "fault-injection takes no L7 rules"))
    }
}

/// The parser: lines through, a panic on `panic`.
struct PanicOnRequest;

impl Parser for PanicOnRequest {
    fn on_data(
        &mut self,
        _ctx: &mut Context<'_>,
        flow: Flow,
        _end_stream: bool,
        input: Input<'_>,
    ) -> Op {
        if input.is_empty() {
            return Op::More(1);
        }
        match flow {
            Flow::Reply => Op::Pass(input.len()),
            Flow::Request => match input.find_crlf(0) {
                Some(_) if input.starts_with(b"panic\r\n") => {
                    panic!("fault injected: the request line was `panic`")
                }
                Some(at) => Op::Pass(at + 2),
                None => Op::More(1),
            },
        }
    }
}
