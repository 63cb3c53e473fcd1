//! Memcached rules from observed requests: per command, its keys as `keyExact`, keys sharing
//! their first segment as their longest shared prefix ending with a separator, `keyPrefix`
//! (`user:1`, `user:2` → `user:`; `user:1:name`, `user:2:name` → `user:`), and `keyRegex` when one multi-key
//! request spans several of them (a rule must match every key of a request); keyless
//! commands as `{command: X}`. Commands used with the same key matcher are written as Cilium's
//! groups when the whole group was: `writeGroup`, else `storage`.

use std::collections::{BTreeMap, BTreeSet};

use axoneme_memcache::{Command, CommandSet};

use super::{
    common_prefixes, merge_for_requests, Fields, Generalise, Matcher, SuggestedRule, Suggestion,
};

/// Separators that end a key's stem.
const SEPARATORS: [char; 6] = [':', '/', '.', '-', '_', '|'];

/// The groups, widest first.
const GROUPS: [&str; 2] = ["writeGroup", "storage"];

/// The rules for `requests` (fields `command` and `keys`, keys joined by `, `).
pub(crate) fn suggest(requests: &BTreeMap<Fields, u64>, generalise: Generalise) -> Suggestion {
    let mut suggestion = Suggestion::default();
    // command → (requests as their keys, count); keyless commands apart.
    let mut keyed: BTreeMap<&str, Vec<(Vec<String>, u64)>> = BTreeMap::new();
    let mut keyless: BTreeMap<&str, u64> = BTreeMap::new();
    for (fields, &count) in requests {
        let command = fields.get("command").map_or("", String::as_str);
        if Command::from_name(command).is_none() {
            suggestion
                .unexpressible
                .push(format!("{count} request(s) with command {command:?}"));
            continue;
        }
        let keys: Vec<String> = match fields.get("keys").map(String::as_str) {
            None | Some("") => Vec::new(),
            Some(keys) => keys.split(", ").map(str::to_owned).collect(),
        };
        match keys.is_empty() {
            true => *keyless.entry(command).or_default() += count,
            false => keyed.entry(command).or_default().push((keys, count)),
        }
    }
    // (matcher, command) → requests covered.
    let mut covered: BTreeMap<Option<Matcher>, BTreeMap<&str, u64>> = BTreeMap::new();
    for (command, count) in keyless {
        *covered.entry(None).or_default().entry(command).or_default() += count;
    }
    for (command, uses) in keyed {
        let keys = uses.iter().flat_map(|(keys, _)| keys.iter().cloned());
        let matchers = common_prefixes(keys, &SEPARATORS, generalise.exact);
        let matchers = merge_for_requests(matchers, uses.iter().map(|(keys, _)| keys.as_slice()));
        for (keys, count) in &uses {
            let matcher = matchers[&keys[0]].clone();
            *covered
                .entry(Some(matcher))
                .or_default()
                .entry(command)
                .or_default() += count;
        }
    }
    for (matcher, commands) in covered {
        for (command, count) in grouped(commands) {
            let mut keys = vec![("command", command)];
            match &matcher {
                None => {}
                Some(Matcher::Exact(key)) => keys.push(("keyExact", key.clone())),
                Some(Matcher::Prefix(prefix)) => keys.push(("keyPrefix", prefix.clone())),
                Some(any) => keys.push(("keyRegex", any.regex())),
            }
            suggestion.rules.push(SuggestedRule { keys, count });
        }
    }
    suggestion
}

/// `commands` with each group all of whose commands are there written as the group.
fn grouped(mut commands: BTreeMap<&str, u64>) -> Vec<(String, u64)> {
    let mut rules = Vec::new();
    for group in GROUPS {
        let Some(set) = CommandSet::from_name(group) else {
            continue;
        };
        let members: BTreeSet<&str> = commands
            .keys()
            .copied()
            .filter(|c| Command::from_name(c).is_some_and(|c| set.contains(c)))
            .collect();
        if members.len() == group_size(set) {
            let count = members.iter().filter_map(|c| commands.remove(c)).sum();
            rules.push((group.to_owned(), count));
        }
    }
    rules.extend(commands.into_iter().map(|(c, n)| (c.to_owned(), n)));
    rules
}

/// How many named commands `set` holds.
fn group_size(set: CommandSet) -> usize {
    axoneme_memcache::command::NAMES
        .iter()
        .filter(|(command, _)| set.contains(*command))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(command: &str, keys: &str) -> Fields {
        [("command", command), ("keys", keys)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    fn rules(requests: &[(&str, &str)], exact: bool) -> Vec<String> {
        let mut counted: BTreeMap<Fields, u64> = BTreeMap::new();
        for (command, keys) in requests {
            *counted.entry(request(command, keys)).or_default() += 1;
        }
        let generalise = Generalise {
            exact,
            group_keyspaces: None,
        };
        suggest(&counted, generalise)
            .rules
            .iter()
            .map(|r| {
                let keys: Vec<String> = r.keys.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("{} ({})", keys.join(" "), r.count)
            })
            .collect()
    }

    #[test]
    fn keys_sharing_a_stem_become_a_prefix_unless_exact() {
        let seen = [("get", "user:1"), ("get", "user:2"), ("get", "motd")];
        assert_eq!(
            rules(&seen, false),
            [
                "command=get keyExact=motd (1)",
                "command=get keyPrefix=user: (2)"
            ]
        );
        assert_eq!(
            rules(&seen, true),
            [
                "command=get keyExact=motd (1)",
                "command=get keyExact=user:1 (1)",
                "command=get keyExact=user:2 (1)"
            ]
        );
    }

    #[test]
    fn a_prefix_is_the_longest_the_keys_share_up_to_a_separator() {
        let seen = [
            ("get", "sess/eu/1"),
            ("get", "sess/eu/22"),
            ("get", "user:1:name"),
            ("get", "user:2:name"),
        ];
        assert_eq!(
            rules(&seen, false),
            [
                "command=get keyPrefix=sess/eu/ (2)",
                "command=get keyPrefix=user: (2)"
            ]
        );
    }

    #[test]
    fn a_multiget_across_matchers_gets_one_regex_rule() {
        assert_eq!(
            rules(&[("get", "a, b.c"), ("version", "")], true),
            ["command=version (1)", "command=get keyRegex=a|b\\.c (1)"]
        );
    }

    #[test]
    fn a_whole_group_is_written_as_the_group() {
        let storage = [
            "add", "set", "replace", "append", "prepend", "cas", "incr", "decr",
        ];
        let seen: Vec<(&str, &str)> = storage.iter().map(|c| (*c, "k")).collect();
        assert_eq!(rules(&seen, true), ["command=storage keyExact=k (8)"]);
        let mut all = seen.clone();
        all.extend([("delete", "k"), ("touch", "k"), ("get", "k")]);
        assert_eq!(
            rules(&all, true),
            [
                "command=writeGroup keyExact=k (10)",
                "command=get keyExact=k (1)"
            ]
        );
        assert_eq!(
            rules(&seen[..7], true).len(),
            7,
            "part of a group stays command by command"
        );
    }
}
