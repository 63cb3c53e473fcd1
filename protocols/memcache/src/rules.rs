//! Memcached's L7 rules: `command` (a command or group) and at most one of `keyExact`,
//! `keyPrefix`, `keyRegex`.
//!
//! Compiles policy maps into matchers and matches a request's command and keys against them.
//! A key rule constrains every key of a request; a request without keys never satisfies a key
//! rule (so `{command: flush_all, keyPrefix: a/}` cannot flush everyone's keys). `keyRegex`
//! must match the whole key, like every regex in Axoneme's policies. An empty value is no
//! constraint, as in Cilium: `{command: get, keyExact: ""}` allows every get.

use axoneme_sdk::{constraints, reject_unknown_keys, L7RuleMap, RuleError, RuleList, WholeMatch};

use crate::command::{Command, CommandSet};

const KEYS: [&str; 4] = ["command", "keyExact", "keyPrefix", "keyRegex"];

/// How a rule constrains keys.
#[derive(Debug, Clone)]
enum KeyMatch {
    Any,
    Exact(Box<[u8]>),
    Prefix(Box<[u8]>),
    Regex(WholeMatch),
}

impl KeyMatch {
    fn matches(&self, key: &[u8]) -> bool {
        match self {
            KeyMatch::Any => true,
            KeyMatch::Exact(exact) => key == &exact[..],
            KeyMatch::Prefix(prefix) => key.starts_with(prefix),
            KeyMatch::Regex(regex) => regex.is_match(key),
        }
    }
}

/// One compiled `l7` map.
#[derive(Debug, Clone)]
pub struct Rule {
    commands: CommandSet,
    key: KeyMatch,
}

impl Rule {
    /// Whether a request for `command` on `keys` satisfies this rule.
    pub fn matches<'k>(&self, command: Command, keys: impl Iterator<Item = &'k [u8]>) -> bool {
        if !self.commands.contains(command) {
            return false;
        }
        if let KeyMatch::Any = self.key {
            return true;
        }
        let mut any = false;
        for key in keys {
            if !self.key.matches(key) {
                return false;
            }
            any = true;
        }
        any
    }
}

/// A compiled `l7` list of memcached rules: a request is allowed when any rule matches.
pub type RuleSet = RuleList<Rule>;

/// Compiles the maps of one `l7` list.
pub fn compile(maps: &[L7RuleMap]) -> Result<RuleSet, RuleError> {
    RuleList::compile(maps, compile_rule)
}

fn compile_rule(index: usize, map: &L7RuleMap) -> Result<Rule, RuleError> {
    reject_unknown_keys(index, map, &KEYS)?;
    let map = &*constraints(map);
    let commands = match map.get("command") {
        None => CommandSet::ALL,
        Some(name) => CommandSet::from_name(name).ok_or_else(|| {
            RuleError::new(
                index,
                Some("command"),
                format!("unknown memcached command or group {name:?}"),
            )
        })?,
    };
    let mut key_fields = KEYS[1..].iter().filter_map(|&k| map.get(k).map(|v| (k, v)));
    let key = match (key_fields.next(), key_fields.next()) {
        (None, _) => KeyMatch::Any,
        (Some((first, _)), Some((second, _))) => {
            return Err(RuleError::new(
                index,
                Some(second),
                format!("a rule takes one key matcher, and {first} is already given"),
            ));
        }
        (Some((field, _)), None) if !map.contains_key("command") => {
            return Err(RuleError::new(
                index,
                Some(field),
                "a key rule needs a command",
            ));
        }
        (Some(("keyExact", value)), None) => KeyMatch::Exact(value.as_bytes().into()),
        (Some(("keyPrefix", value)), None) => KeyMatch::Prefix(value.as_bytes().into()),
        (Some((_, pattern)), None) => {
            KeyMatch::Regex(WholeMatch::compile(index, "keyRegex", pattern)?)
        }
    };
    Ok(Rule { commands, key })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(maps: &[&[(&str, &str)]]) -> Result<RuleSet, String> {
        let maps: Vec<L7RuleMap> = maps
            .iter()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .collect();
        super::compile(&maps).map_err(|e| e.to_string())
    }

    fn matches<'k>(
        rules: &RuleSet,
        command: Command,
        keys: impl Iterator<Item = &'k [u8]> + Clone,
    ) -> bool {
        rules.any(|rule| rule.matches(command, keys.clone()))
    }

    fn keys<'a>(keys: &'a [&'a str]) -> impl Iterator<Item = &'a [u8]> + Clone {
        keys.iter().map(|k| k.as_bytes())
    }

    #[test]
    fn the_rebels_rules() {
        let maintenance = compile(&[
            &[("command", "writeGroup"), ("keyPrefix", "alliance/fleet/")],
            &[("command", "get"), ("keyPrefix", "alliance/fleet/")],
        ])
        .unwrap();
        assert!(matches(
            &maintenance,
            Command::Set,
            keys(&["alliance/fleet/xwing"])
        ));
        assert!(matches(
            &maintenance,
            Command::Delete,
            keys(&["alliance/fleet/xwing"])
        ));
        assert!(matches(
            &maintenance,
            Command::Get,
            keys(&["alliance/fleet/a", "alliance/fleet/b"])
        ));
        assert!(!matches(
            &maintenance,
            Command::Get,
            keys(&["alliance/fleet/a", "empire/plans"])
        ));
        assert!(!matches(
            &maintenance,
            Command::Set,
            keys(&["empire/plans"])
        ));
        assert!(!matches(&maintenance, Command::FlushAll, keys(&[])));
        assert!(!matches(
            &maintenance,
            Command::Gat,
            keys(&["alliance/fleet/a"])
        ));
    }

    #[test]
    fn key_matchers() {
        let exact = compile(&[&[("command", "get"), ("keyExact", "a")]]).unwrap();
        assert!(matches(&exact, Command::Get, keys(&["a"])));
        assert!(!matches(&exact, Command::Get, keys(&["ab"])));
        let regex = compile(&[&[("command", "get"), ("keyRegex", "user:[0-9]+")]]).unwrap();
        assert!(matches(&regex, Command::Get, keys(&["user:42"])));
        assert!(
            !matches(&regex, Command::Get, keys(&["xuser:42"])),
            "anchored at the start"
        );
        assert!(
            !matches(&regex, Command::Get, keys(&["user:42x"])),
            "anchored at the end"
        );
        assert!(
            !matches(&regex, Command::Get, keys(&[])),
            "no key satisfies no key rule"
        );
    }

    #[test]
    fn rules_without_keys_or_commands() {
        let all = compile(&[&[]]).unwrap();
        assert!(matches(&all, Command::Other, keys(&[])));
        assert!(matches(&all, Command::FlushAll, keys(&[])));
        let stats = compile(&[&[("command", "stats")]]).unwrap();
        assert!(matches(&stats, Command::Stats, keys(&[])));
        assert!(!matches(&stats, Command::Get, keys(&["a"])));
    }

    #[test]
    fn empty_values_are_no_constraint() {
        for key in ["keyExact", "keyPrefix", "keyRegex"] {
            let rules = compile(&[&[("command", "get"), (key, "")]]).unwrap();
            assert!(matches(&rules, Command::Get, keys(&["any/key"])), "{key}");
            assert!(matches(&rules, Command::Get, keys(&[])), "{key}");
            assert!(!matches(&rules, Command::Set, keys(&["any/key"])), "{key}");
            let everything = compile(&[&[(key, "")]]).unwrap();
            assert!(matches(&everything, Command::FlushAll, keys(&[])), "{key}");
        }
        let prefix =
            compile(&[&[("command", "get"), ("keyExact", ""), ("keyPrefix", "a/")]]).unwrap();
        assert!(matches(&prefix, Command::Get, keys(&["a/b"])));
        assert!(!matches(&prefix, Command::Get, keys(&["b"])));
        let any_command = compile(&[&[("command", "")]]).unwrap();
        assert!(matches(&any_command, Command::Delete, keys(&["x"])));
        assert!(
            compile(&[&[("kye", "")]]).is_err(),
            "a misspelt key is refused"
        );
    }

    #[test]
    fn bad_rules_say_which_key_and_why() {
        assert_eq!(
            compile(&[&[("keyPrefix", "a")]]).unwrap_err(),
            "l7[0].keyPrefix: a key rule needs a command"
        );
        assert_eq!(
            compile(&[&[("command", "gets")]]).unwrap_err(),
            "l7[0].command: unknown memcached command or group \"gets\""
        );
        assert_eq!(
            compile(&[&[("command", "get"), ("keyExact", "a"), ("keyPrefix", "b")]]).unwrap_err(),
            "l7[0].keyPrefix: a rule takes one key matcher, and keyExact is already given"
        );
        assert_eq!(
            compile(&[&[("command", "get"), ("key", "a")]]).unwrap_err(),
            "l7[0].key: unknown key (expected one of: command, keyExact, keyPrefix, keyRegex)"
        );
        assert!(compile(&[&[("command", "get"), ("keyRegex", "(")]])
            .unwrap_err()
            .starts_with("l7[0].keyRegex: invalid regex \"(\": "));
    }
}
