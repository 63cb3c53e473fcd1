//! Cassandra rules from observed requests: per action, each table as an exact `query_table`;
//! with `--group-keyspaces N`, once N tables of one keyspace were used with an action, the
//! whole keyspace (`ks\..*`). Table-less actions (`use`, `create-role`, …) as
//! `{query_action: X}`.

use std::collections::{BTreeMap, BTreeSet};

use super::regex_text::escape;
use super::{Fields, Generalise, SuggestedRule, Suggestion};

/// The rules for `requests` (fields `query_action` and `query_table`).
pub(crate) fn suggest(requests: &BTreeMap<Fields, u64>, generalise: Generalise) -> Suggestion {
    let mut suggestion = Suggestion::default();
    // action → table ("" for none) → requests.
    let mut by_action: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
    for (fields, &count) in requests {
        let Some(action) = fields.get("query_action").filter(|a| !a.is_empty()) else {
            suggestion
                .unexpressible
                .push(format!("{count} request(s) without a query_action"));
            continue;
        };
        let table = fields.get("query_table").map_or("", String::as_str);
        *by_action
            .entry(action)
            .or_default()
            .entry(table)
            .or_default() += count;
    }
    for (action, tables) in by_action {
        let threshold = generalise.group_keyspaces.filter(|_| !generalise.exact);
        let mut keyspaces: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for table in tables.keys() {
            if let Some((keyspace, _)) = table.split_once('.') {
                keyspaces.entry(keyspace).or_default().insert(table);
            }
        }
        let grouped: BTreeSet<&str> = keyspaces
            .iter()
            .filter(|(_, used)| threshold.is_some_and(|n| used.len() >= n.max(1)))
            .map(|(keyspace, _)| *keyspace)
            .collect();
        let mut keyspace_counts: BTreeMap<&str, u64> = BTreeMap::new();
        for (table, count) in tables {
            let keyspace = table.split_once('.').map(|(k, _)| k);
            match keyspace.filter(|k| grouped.contains(k)) {
                Some(keyspace) => *keyspace_counts.entry(keyspace).or_default() += count,
                None => {
                    let mut keys = vec![("query_action", action.to_owned())];
                    if !table.is_empty() {
                        keys.push(("query_table", escape(table)));
                    }
                    suggestion.rules.push(SuggestedRule { keys, count });
                }
            }
        }
        for (keyspace, count) in keyspace_counts {
            let keys = vec![
                ("query_action", action.to_owned()),
                ("query_table", format!("{}\\..*", escape(keyspace))),
            ];
            suggestion.rules.push(SuggestedRule { keys, count });
        }
    }
    suggestion
}
