//! R2-D2 rules from observed requests: per command, each file exactly (`file` is a regex,
//! so escaped); without `--exact`, files sharing a directory become `dir/.*` once two of them
//! were used. A request without a file: `{cmd: X}`.

use std::collections::BTreeMap;

use super::{stems, Fields, Generalise, SuggestedRule, Suggestion};

/// The rules for `requests` (fields `cmd` and `file`).
pub(crate) fn suggest(requests: &BTreeMap<Fields, u64>, generalise: Generalise) -> Suggestion {
    let mut suggestion = Suggestion::default();
    let mut by_cmd: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
    for (fields, &count) in requests {
        let cmd = fields.get("cmd").map_or("", String::as_str);
        let file = fields.get("file").map_or("", String::as_str);
        *by_cmd.entry(cmd).or_default().entry(file).or_default() += count;
    }
    for (cmd, files) in by_cmd {
        let named = files
            .keys()
            .filter(|f| !f.is_empty())
            .map(|f| f.to_string());
        let matchers = stems(named, &['/'], generalise.exact);
        let mut covered = BTreeMap::new();
        for (file, count) in files {
            *covered.entry(matchers.get(file).cloned()).or_default() += count;
        }
        for (matcher, count) in covered {
            let mut keys = vec![("cmd", cmd.to_owned())];
            if let Some(matcher) = matcher {
                keys.push(("file", matcher.regex()));
            }
            suggestion.rules.push(SuggestedRule { keys, count });
        }
    }
    suggestion
}
