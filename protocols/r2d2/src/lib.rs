//! R2-D2, the example protocol of the Axoneme parser SDK.
//!
//! Requests are `\r\n`-terminated lines (`READ <file>`, `WRITE <file>`, `HALT`, `RESET`); every
//! request gets one reply line. Policies use `l7proto: r2d2` with the keys `cmd` (exact) and
//! `file` (a regular expression matching the whole file name). A denied request is dropped and
//! answered with `ERROR\r\n`. `docs/writing-a-parser.md` walks through this crate.

mod parser;
mod request;
mod rules;

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;

use axoneme_sdk::{CompiledRules, ConnectionMeta, L7RuleMap, Parser, Protocol, RuleError};

pub use parser::{R2d2Parser, DENIAL, MAX_LINE, MAX_PENDING_RUNS};
pub use request::{Command, Request};
pub use rules::RuleSet;

/// The R2-D2 protocol, registered as `r2d2`.
#[derive(Debug, Default, Clone, Copy)]
pub struct R2d2;

impl Protocol for R2d2 {
    fn name(&self) -> &'static str {
        "r2d2"
    }

    fn new_parser(&self, _meta: &ConnectionMeta) -> Box<dyn Parser> {
        Box::<R2d2Parser>::default()
    }

    fn compile_rules(&self, rules: &[L7RuleMap]) -> Result<CompiledRules, RuleError> {
        Ok(Arc::new(rules::compile(rules)?))
    }

    fn trace(
        &self,
        rules: &(dyn Any + Send + Sync),
        fields: &BTreeMap<String, String>,
    ) -> Result<bool, String> {
        let rules = rules
            .downcast_ref::<RuleSet>()
            .ok_or("not an r2d2 rule set")?;
        if let Some(unknown) = fields
            .keys()
            .find(|k| !["cmd", "file"].contains(&k.as_str()))
        {
            return Err(format!(
                "unknown r2d2 field {unknown:?} (expected cmd, file)"
            ));
        }
        let cmd = fields.get("cmd").ok_or("r2d2 requests need cmd")?;
        let command = Command::from_name(cmd.as_bytes())
            .ok_or_else(|| format!("unknown r2d2 command {cmd:?}"))?;
        let file = fields.get("file").map(String::as_bytes);
        let request = Request { command, file };
        Ok(rules.allows(&request))
    }
}
