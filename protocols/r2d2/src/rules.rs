//! R2-D2's L7 rules: `cmd` (exact) and `file` (a regular expression that must match the whole
//! file name). An empty value is no constraint, as in Cilium: `{cmd: READ, file: ""}` allows
//! every READ.
//!
//! Compiling policy maps into matchers and matching requests; nothing here sees the wire.

use axoneme_sdk::{constraints, reject_unknown_keys, L7RuleMap, RuleError, RuleList, WholeMatch};

use crate::request::{Command, Request};

/// One compiled `l7` map.
#[derive(Debug, Clone)]
pub struct Rule {
    command: Option<Command>,
    file: Option<WholeMatch>,
}

impl Rule {
    /// Whether `request` satisfies every constraint of this rule.
    pub fn matches(&self, request: &Request<'_>) -> bool {
        self.command.is_none_or(|c| c == request.command)
            && self
                .file
                .as_ref()
                .is_none_or(|re| request.file.is_some_and(|file| re.is_match(file)))
    }
}

/// A compiled `l7` list of R-2D2 rules: a request is allowed when any rule matches.
pub type RuleSet = RuleList<Rule>;

/// Compiles the maps of one `l7` list.
pub fn compile(maps: &[L7RuleMap]) -> Result<RuleSet, RuleError> {
    RuleList::compile(maps, compile_rule)
}

fn compile_rule(index: usize, map: &L7RuleMap) -> Result<Rule, RuleError> {
    reject_unknown_keys(index, map, &["cmd", "file"])?;
    let map = &*constraints(map);
    let command = match map.get("cmd") {
        None => None,
        Some(name) => Some(Command::from_name(name.as_bytes()).ok_or_else(|| {
            RuleError::new(
                index,
                Some("cmd"),
                format!("unknown command {name:?} (expected READ, WRITE, HALT or RESET)"),
            )
        })?),
    };
    let file = match map.get("file") {
        None => None,
        Some(_) if command.is_some_and(|c| !c.takes_file()) => {
            return Err(RuleError::new(
                index,
                Some("file"),
                "only READ and WRITE name a file",
            ));
        }
        Some(pattern) => Some(WholeMatch::compile(index, "file", pattern)?),
    };
    Ok(Rule { command, file })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(rules: &RuleSet, request: &Request<'_>) -> bool {
        rules.any(|rule| rule.matches(request))
    }

    fn map(pairs: &[(&str, &str)]) -> L7RuleMap {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn read(file: &[u8]) -> Request<'_> {
        Request {
            command: Command::Read,
            file: Some(file),
        }
    }

    #[test]
    fn command_and_anchored_file_regex() {
        let rules = compile(&[map(&[("cmd", "READ"), ("file", "/public/.*")])]).unwrap();
        assert!(matches(&rules, &read(b"/public/plans")));
        assert!(
            !matches(&rules, &read(b"/secret/public/plans")),
            "the regex must match the whole name"
        );
        assert!(!matches(
            &rules,
            &Request {
                command: Command::Write,
                file: Some(b"/public/x")
            }
        ));
        assert!(!matches(
            &rules,
            &Request {
                command: Command::Halt,
                file: None
            }
        ));
    }

    #[test]
    fn an_empty_map_allows_everything_and_maps_add_up() {
        let rules = compile(&[map(&[("cmd", "HALT")]), map(&[("file", "a")])]).unwrap();
        assert!(matches(
            &rules,
            &Request {
                command: Command::Halt,
                file: None
            }
        ));
        assert!(matches(
            &rules,
            &Request {
                command: Command::Write,
                file: Some(b"a")
            }
        ));
        assert!(!matches(
            &rules,
            &Request {
                command: Command::Reset,
                file: None
            }
        ));
        assert!(matches(
            &compile(&[map(&[])]).unwrap(),
            &Request {
                command: Command::Reset,
                file: None
            }
        ));
    }

    #[test]
    fn empty_values_are_no_constraint() {
        let reads = compile(&[map(&[("cmd", "READ"), ("file", "")])]).unwrap();
        assert!(matches(&reads, &read(b"/secret/plans")));
        assert!(!matches(
            &reads,
            &Request {
                command: Command::Write,
                file: Some(b"/x")
            }
        ));
        let halt = compile(&[map(&[("cmd", "HALT"), ("file", "")])]).unwrap();
        let halt_request = Request {
            command: Command::Halt,
            file: None,
        };
        assert!(matches(&halt, &halt_request));
        let anything = compile(&[map(&[("cmd", ""), ("file", "")])]).unwrap();
        assert!(matches(&anything, &halt_request));
    }

    #[test]
    fn bad_rules_say_which_key_and_why() {
        let err =
            |pairs: &[(&str, &str)]| compile(&[map(&[]), map(pairs)]).unwrap_err().to_string();
        assert_eq!(
            err(&[("cmd", "READ"), ("path", "x")]),
            "l7[1].path: unknown key (expected one of: cmd, file)"
        );
        assert_eq!(
            err(&[("cmd", "read")]),
            "l7[1].cmd: unknown command \"read\" (expected READ, WRITE, HALT or RESET)"
        );
        assert_eq!(
            err(&[("cmd", "HALT"), ("file", "x")]),
            "l7[1].file: only READ and WRITE name a file"
        );
        assert!(err(&[("file", "(")]).starts_with("l7[1].file: invalid regex \"(\": "));
    }
}
