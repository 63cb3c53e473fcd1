//! R2-D2, the example protocol of the Axoneme parser SDK.
//!
//! Requests are `\r\n`-terminated lines (`READ <file>`, `WRITE <file>`, `HALT`, `RESET`); every
//! request gets one reply line. Policies use `l7proto: r2d2` with the keys `cmd` (exact) and
//! `file` (a regular expression matching the whole file name). A denied request is dropped and
//! answered with `ERROR\r\n`. `docs/writing-a-parser.md` walks through this crate.

mod parser;
mod request;
mod rules;

use axoneme_sdk::{ConnectionMeta, L7RuleMap, Parser, RuleError, TraceFields, TypedProtocol};

pub use parser::{R2d2Parser, DENIAL, MAX_LINE, MAX_PENDING_RUNS};
pub use request::{Command, Request};
pub use rules::RuleSet;

/// The R2-D2 protocol, registered as `r2d2`.
#[derive(Debug, Default, Clone, Copy)]
pub struct R2d2;

impl TypedProtocol for R2d2 {
    type Rules = RuleSet;
    const TRACE_FIELDS: &'static [&'static str] = &["cmd", "file"];

    fn name(&self) -> &'static str {
        "r2d2"
    }

    fn parser(&self, _meta: &ConnectionMeta) -> Box<dyn Parser> {
        Box::<R2d2Parser>::default()
    }

    fn compile(&self, rules: &[L7RuleMap]) -> Result<RuleSet, RuleError> {
        rules::compile(rules)
    }

    /// Traces `cmd=<command>` with `file=<name>`.
    fn trace_request(&self, rules: &RuleSet, fields: &TraceFields<'_>) -> Result<bool, String> {
        let cmd = fields.require("cmd")?;
        let command = Command::from_name(cmd.as_bytes())
            .ok_or_else(|| format!("unknown r2d2 command {cmd:?}"))?;
        let file = fields.get("file").map(str::as_bytes);
        Ok(rules.allows(&Request { command, file }))
    }
}
