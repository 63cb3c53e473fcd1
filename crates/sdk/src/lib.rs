//! The Axoneme parser SDK: everything a protocol parser depends on, and nothing else.
//!
//! A parser answers each piece of input with one [`Op`] (MORE, PASS, DROP, INJECT, ERROR, NOP),
//! reads its input through the zero-copy [`Input`] view, checks requests and writes access-log
//! entries through its [`Context`], and is created by a [`Protocol`] registered by name in a
//! [`Registry`]. Buffers that grew for a large frame give the memory back with
//! [`TrimCapacity`]; a parser that answers denied requests itself keeps its replies in request
//! order with a [`ReplyOrder`]. This crate does no I/O and knows no specific protocol; applying operations
//! to byte streams belongs to the datapath crate.

#![warn(missing_docs)]

mod context;
mod input;
mod op;
mod pattern;
mod protocol;
mod reply_order;
mod rule_list;
mod trim;

pub use context::{
    logging_audit, logging_audit_as, logging_denial, typed, AccessLog, ConnectionMeta, Context,
    DenyReason, Direction, EntryType, Field, Flow, InjectBuffer, LogEntry, RequestPolicy, Verdict,
};
pub use input::Input;
pub use op::{ErrorCode, Op, ParseError};
pub use pattern::WholeMatch;
pub use protocol::{
    constraints, reject_unknown_keys, CompiledRules, DuplicateProtocol, L7RuleMap, Parser,
    Protocol, Registry, RuleError, TraceFields, TypedProtocol,
};
pub use reply_order::{Full, Placed, ReplyOrder, Run, Turn};
pub use rule_list::{RuleList, ValueMatch};
pub use trim::{TrimCapacity, KEPT_CAPACITY};
