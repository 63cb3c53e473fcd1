//! R2-D2's L7 rules: `cmd` (exact) and `file` (a regular expression that must match the whole
//! file name). An empty value is no constraint, as in Cilium: `{cmd: READ, file: ""}` allows
//! every READ.
//!
//! Compiling policy maps into matchers and matching requests; nothing here sees the wire.

use axoneme_sdk::{
    constraints, reject_unknown_keys, L7RuleMap, RuleError, RuleList, ValueMatch, WholeMatch,
};

use crate::request::{Command, Request};

/// A compiled `l7` list of R2-D2 rules: a request is allowed when any rule matches. Its rules
/// are grouped by their `cmd` and their file patterns indexed (see [`RuleList`]).
#[derive(Debug, Clone)]
pub struct RuleSet(RuleList<Option<Command>>);

impl RuleSet {
    /// Whether a rule allows `request`: one rule with its command or none, and no file
    /// constraint or one that the request's file matches.
    pub fn allows(&self, request: &Request<'_>) -> bool {
        self.0.allows(
            |rule| rule.is_none_or(|c| c == request.command),
            request.file.into_iter(),
        )
    }
}

/// Compiles the maps of one `l7` list.
pub(crate) fn compile(maps: &[L7RuleMap]) -> Result<RuleSet, RuleError> {
    RuleList::compile(maps, compile_rule).map(RuleSet)
}

fn compile_rule(index: usize, map: &L7RuleMap) -> Result<(Option<Command>, ValueMatch), RuleError> {
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
        None => ValueMatch::Any,
        Some(_) if command.is_some_and(|c| !c.takes_file()) => {
            return Err(RuleError::new(
                index,
                Some("file"),
                "only READ and WRITE name a file",
            ));
        }
        Some(pattern) => ValueMatch::Pattern(WholeMatch::compile(index, "file", pattern)?),
    };
    Ok((command, file))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The check as a linear scan, each rule on its own: the oracle for the index.
    fn linear(maps: &[L7RuleMap], request: &Request<'_>) -> bool {
        maps.iter()
            .enumerate()
            .map(|(index, map)| compile_rule(index, map).unwrap())
            .any(|(command, file)| {
                command.is_none_or(|c| c == request.command)
                    && match file {
                        ValueMatch::Any => true,
                        ValueMatch::Exact(exact) => request.file == Some(&exact[..]),
                        ValueMatch::Prefix(prefix) => {
                            request.file.is_some_and(|f| f.starts_with(&prefix))
                        }
                        ValueMatch::Pattern(re) => request.file.is_some_and(|f| re.is_match(f)),
                    }
            })
    }

    const COMMANDS: [Command; 4] = [Command::Read, Command::Write, Command::Halt, Command::Reset];

    fn rule_map() -> impl Strategy<Value = L7RuleMap> {
        let cmd = prop::option::of(prop::sample::select(vec![
            "", "READ", "WRITE", "HALT", "RESET",
        ]));
        let file = prop::option::of(prop_oneof![
            "[ab/]{0,4}",
            prop::sample::select(vec![
                "/a/.*",
                "/.*",
                ".*",
                "/a.b",
                "/[ab]+",
                "/a|/b/.*",
                "(/a|/b)/.*",
                "é.*",
                r"/a\..*",
            ])
            .prop_map(str::to_owned),
        ]);
        (cmd, file).prop_map(|(cmd, file)| {
            let mut map = L7RuleMap::new();
            if let Some(cmd) = cmd {
                map.insert("cmd".to_owned(), cmd.to_owned());
            }
            if let Some(file) = file {
                map.insert("file".to_owned(), file);
            }
            map
        })
    }

    proptest! {
        /// The index allows exactly what a scan of the rules allows.
        #[test]
        fn the_index_agrees_with_a_linear_scan(
            maps in prop::collection::vec(rule_map(), 0..24),
            requests in prop::collection::vec(
                (
                    prop::sample::select(COMMANDS.to_vec()),
                    prop::option::of(prop_oneof![
                        4 => "[ab/.]{0,5}".prop_map(String::into_bytes),
                        1 => "[ab/é\\n]{0,4}".prop_map(String::into_bytes),
                        1 => ("/[ab]{0,3}", any::<u8>())
                            .prop_map(|(file, byte)| [file.as_bytes(), &[byte]].concat()),
                    ]),
                ),
                1..16,
            ),
        ) {
            let maps: Vec<L7RuleMap> = maps
                .into_iter()
                .filter(|map| compile_rule(0, map).is_ok())
                .collect();
            let rules = super::compile(&maps).unwrap();
            for (command, file) in &requests {
                let request = Request { command: *command, file: file.as_deref() };
                prop_assert_eq!(rules.allows(&request), linear(&maps, &request), "{:?}", request);
            }
        }
    }

    fn matches(rules: &RuleSet, request: &Request<'_>) -> bool {
        rules.allows(request)
    }

    fn compile(maps: &[&[(&str, &str)]]) -> Result<RuleSet, RuleError> {
        super::compile(&axoneme_testkit::rule_maps(maps))
    }

    fn read(file: &[u8]) -> Request<'_> {
        Request {
            command: Command::Read,
            file: Some(file),
        }
    }

    #[test]
    fn command_and_anchored_file_regex() {
        let rules = compile(&[&[("cmd", "READ"), ("file", "/public/.*")]]).unwrap();
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
        let rules = compile(&[&[("cmd", "HALT")], &[("file", "a")]]).unwrap();
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
            &compile(&[&[]]).unwrap(),
            &Request {
                command: Command::Reset,
                file: None
            }
        ));
    }

    #[test]
    fn empty_values_are_no_constraint() {
        let reads = compile(&[&[("cmd", "READ"), ("file", "")]]).unwrap();
        assert!(matches(&reads, &read(b"/secret/plans")));
        assert!(!matches(
            &reads,
            &Request {
                command: Command::Write,
                file: Some(b"/x")
            }
        ));
        let halt = compile(&[&[("cmd", "HALT"), ("file", "")]]).unwrap();
        let halt_request = Request {
            command: Command::Halt,
            file: None,
        };
        assert!(matches(&halt, &halt_request));
        let anything = compile(&[&[("cmd", ""), ("file", "")]]).unwrap();
        assert!(matches(&anything, &halt_request));
    }

    #[test]
    fn bad_rules_say_which_key_and_why() {
        let err = |pairs: &[(&str, &str)]| compile(&[&[], pairs]).unwrap_err().to_string();
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
