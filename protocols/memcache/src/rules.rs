//! Memcached's L7 rules: `command` (a command or group) and at most one of `keyExact`,
//! `keyPrefix`, `keyRegex`.
//!
//! Compiles policy maps into matchers and matches a request's command and keys against them.
//! A key rule constrains every key of a request; a request without keys never satisfies a key
//! rule (so `{command: flush_all, keyPrefix: a/}` cannot flush everyone's keys). `keyRegex`
//! must match the whole key, like every regex in Axoneme's policies. An empty value is no
//! constraint, as in Cilium: `{command: get, keyExact: ""}` allows every get.

use axoneme_sdk::{
    constraints, reject_unknown_keys, L7RuleMap, RuleError, RuleList, ValueMatch, WholeMatch,
};

use crate::command::{Command, CommandSet};

const KEYS: [&str; 4] = ["command", "keyExact", "keyPrefix", "keyRegex"];

/// A compiled `l7` list of memcached rules: a request is allowed when any rule matches. Its
/// rules are grouped by their `command` and their keys indexed (see [`RuleList`]).
#[derive(Debug, Clone)]
pub struct RuleSet(RuleList<CommandSet>);

impl RuleSet {
    /// Whether a rule allows `command` on `keys`: one rule whose command set holds `command`
    /// and that either constrains no key or matches every key of a request with keys.
    pub fn allows<'k>(
        &self,
        command: Command,
        keys: impl Iterator<Item = &'k [u8]> + Clone,
    ) -> bool {
        self.0.allows(|commands| commands.contains(command), keys)
    }
}

/// Compiles the maps of one `l7` list.
pub fn compile(maps: &[L7RuleMap]) -> Result<RuleSet, RuleError> {
    RuleList::compile(maps, compile_rule).map(RuleSet)
}

fn compile_rule(index: usize, map: &L7RuleMap) -> Result<(CommandSet, ValueMatch), RuleError> {
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
        (None, _) => ValueMatch::Any,
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
        (Some(("keyExact", value)), None) => ValueMatch::Exact(value.as_bytes().into()),
        (Some(("keyPrefix", value)), None) => ValueMatch::Prefix(value.as_bytes().into()),
        (Some((_, pattern)), None) => {
            ValueMatch::Pattern(WholeMatch::compile(index, "keyRegex", pattern)?)
        }
    };
    Ok((commands, key))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The check as a linear scan, each rule on its own: the oracle for the index.
    fn linear<'k>(
        maps: &[L7RuleMap],
        command: Command,
        keys: impl Iterator<Item = &'k [u8]> + Clone,
    ) -> bool {
        maps.iter()
            .enumerate()
            .map(|(index, map)| compile_rule(index, map).unwrap())
            .any(|(commands, key)| {
                if !commands.contains(command) {
                    return false;
                }
                if let ValueMatch::Any = key {
                    return true;
                }
                let mut any = false;
                for k in keys.clone() {
                    let matches = match &key {
                        ValueMatch::Any => true,
                        ValueMatch::Exact(exact) => k == &exact[..],
                        ValueMatch::Prefix(prefix) => k.starts_with(prefix),
                        ValueMatch::Pattern(regex) => regex.is_match(k),
                    };
                    if !matches {
                        return false;
                    }
                    any = true;
                }
                any
            })
    }

    fn rule_map() -> impl Strategy<Value = L7RuleMap> {
        let command = prop::sample::select(vec![
            None,
            Some(""),
            Some("get"),
            Some("get"),
            Some("get"),
            Some("set"),
            Some("storage"),
            Some("writeGroup"),
            Some("delete"),
            Some("stats"),
        ]);
        let plain = prop_oneof![2 => "[ab]{0,2}", 1 => "[ab/]{0,3}"];
        let pattern = prop_oneof![
            1 => "[ab]{0,2}",
            4 => prop::sample::select(vec![
                "a.*", "a/.*", ".*", "a.b", "[ab]+", "a|b/a", "(a|b)/.*", "a/b", r"a\.", "é.*",
                "b.*a", "a[/b]",
            ])
            .prop_map(str::to_owned),
        ];
        let key = prop_oneof![
            1 => Just(None),
            1 => (prop::sample::select(vec!["keyExact", "keyPrefix"]), plain).prop_map(Some),
            2 => pattern.prop_map(|pattern| Some(("keyRegex", pattern))),
        ];
        (command, key).prop_map(|(command, key)| {
            let mut map = L7RuleMap::new();
            if let Some(command) = command {
                map.insert("command".to_owned(), command.to_owned());
            }
            if let Some((key, value)) = key {
                map.insert(key.to_owned(), value);
            }
            map
        })
    }

    fn request_key() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            4 => "[ab]{0,3}".prop_map(String::into_bytes),
            4 => prop::sample::select(vec!["a", "ab", "a/b", "b/a", "a.", "aXb", "a/"])
                .prop_map(|key| key.as_bytes().to_vec()),
            2 => "[ab/]{0,4}".prop_map(String::into_bytes),
            1 => "[ab/.é\n]{0,4}".prop_map(String::into_bytes),
            1 => ("[ab/]{0,3}", any::<u8>()).prop_map(|(key, byte)| [key.as_bytes(), &[byte]].concat()),
        ]
    }

    proptest! {
        /// The index allows exactly what a scan of the rules allows.
        #[test]
        fn the_index_agrees_with_a_linear_scan(
            maps in prop::collection::vec(rule_map(), 0..24),
            requests in prop::collection::vec(
                (
                    prop::sample::select(vec![
                        Command::Get,
                        Command::Get,
                        Command::Get,
                        Command::Set,
                        Command::Delete,
                        Command::Touch,
                        Command::Stats,
                        Command::FlushAll,
                        Command::Gat,
                        Command::Other,
                    ]),
                    prop::collection::vec(request_key(), 0..4),
                ),
                1..16,
            ),
        ) {
            let maps: Vec<L7RuleMap> = maps
                .into_iter()
                .filter(|map| compile_rule(0, map).is_ok())
                .collect();
            let rules = super::compile(&maps).unwrap();
            for (command, keys) in &requests {
                let keys = keys.iter().map(Vec::as_slice);
                prop_assert_eq!(
                    rules.allows(*command, keys.clone()),
                    linear(&maps, *command, keys.clone()),
                    "{:?} {:?}", command, keys.collect::<Vec<_>>()
                );
            }
        }
    }

    fn compile(maps: &[&[(&str, &str)]]) -> Result<RuleSet, String> {
        super::compile(&axoneme_testkit::rule_maps(maps)).map_err(|e| e.to_string())
    }

    fn matches<'k>(
        rules: &RuleSet,
        command: Command,
        keys: impl Iterator<Item = &'k [u8]> + Clone,
    ) -> bool {
        rules.allows(command, keys)
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
