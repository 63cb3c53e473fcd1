//! Cassandra's L7 rules: `query_action` (exact, Cilium's action names) and `query_table` (a
//! regular expression over `keyspace.table`).
//!
//! `query_table` must match the whole name: Cilium searched unanchored, so `attendance` also
//! matched `attendance_archive.secrets`; anchoring makes a rule mean what it says, and the
//! usual patterns (`system\..*`, `attendance.daily_records`) behave the same either way. A
//! table-less action (`use`, `create-role`, …) with `query_table` is an import error. An empty
//! value is no constraint, as in Cilium: `{query_action: select, query_table: ""}` allows every
//! select.

use axoneme_sdk::{
    constraints, reject_unknown_keys, L7RuleMap, RuleError, RuleList, ValueMatch, WholeMatch,
};

use crate::statement::Action;

/// A compiled `l7` list of Cassandra rules: a statement is allowed when any rule matches. Its
/// rules are grouped by their `query_action` and their tables indexed (see [`RuleList`]).
#[derive(Debug, Clone)]
pub struct RuleSet(RuleList<Option<Action>>);

impl RuleSet {
    /// Whether a rule allows `action` on `table` (`keyspace.table`, `None` for table-less
    /// actions or an unresolved name): one rule with that action or none, and no table
    /// constraint or one that `table` matches.
    pub fn allows(&self, action: Action, table: Option<&str>) -> bool {
        self.0.allows(
            |rule| rule.is_none_or(|a| a == action),
            table.map(str::as_bytes).into_iter(),
        )
    }
}

/// Compiles the maps of one `l7` list.
pub fn compile(maps: &[L7RuleMap]) -> Result<RuleSet, RuleError> {
    RuleList::compile(maps, compile_rule).map(RuleSet)
}

fn compile_rule(index: usize, map: &L7RuleMap) -> Result<(Option<Action>, ValueMatch), RuleError> {
    reject_unknown_keys(index, map, &["query_action", "query_table"])?;
    let map = &*constraints(map);
    let action = match map.get("query_action") {
        None => None,
        Some(name) => Some(Action::from_name(name).ok_or_else(|| {
            RuleError::new(
                index,
                Some("query_action"),
                format!("unknown query_action {name:?}"),
            )
        })?),
    };
    let table = match map.get("query_table") {
        None => ValueMatch::Any,
        Some(_) if action.is_some_and(|a| !a.has_table()) => {
            return Err(RuleError::new(
                index,
                Some("query_table"),
                format!("{} acts on no table", action.map_or("", Action::name)),
            ));
        }
        Some(pattern) => ValueMatch::Pattern(WholeMatch::compile(index, "query_table", pattern)?),
    };
    Ok((action, table))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::statement::ACTIONS;

    /// The check as a linear scan, each rule on its own: the oracle for the index.
    fn linear(maps: &[L7RuleMap], action: Action, table: Option<&str>) -> bool {
        maps.iter()
            .enumerate()
            .map(|(index, map)| compile_rule(index, map).unwrap())
            .any(|(rule_action, rule_table)| {
                rule_action.is_none_or(|a| a == action)
                    && match rule_table {
                        ValueMatch::Any => true,
                        ValueMatch::Pattern(re) => table.is_some_and(|t| re.is_match(t.as_bytes())),
                        ValueMatch::Exact(exact) => {
                            table.is_some_and(|t| t.as_bytes() == &exact[..])
                        }
                        ValueMatch::Prefix(prefix) => {
                            table.is_some_and(|t| t.as_bytes().starts_with(&prefix))
                        }
                    }
            })
    }

    fn action() -> impl Strategy<Value = Action> {
        prop::sample::select(
            ACTIONS
                .iter()
                .map(|&(action, _)| action)
                .collect::<Vec<_>>(),
        )
    }

    fn rule_map() -> impl Strategy<Value = L7RuleMap> {
        let name = prop::option::of(prop_oneof![
            Just(String::new()),
            action().prop_map(|a| a.name().to_owned()),
            Just("select".to_owned()),
        ]);
        let table = prop::option::of(prop_oneof![
            "[ab.]{0,4}",
            prop::sample::select(vec![
                r"a\..*",
                "a..*",
                ".*",
                "a.b",
                r"a\.b",
                "[ab]+\\.b",
                "a.b|b.a",
                r"(a|b)\..*",
                "é.*",
            ])
            .prop_map(str::to_owned),
        ]);
        (name, table).prop_map(|(name, table)| {
            let mut map = L7RuleMap::new();
            if let Some(name) = name {
                map.insert("query_action".to_owned(), name);
            }
            if let Some(table) = table {
                map.insert("query_table".to_owned(), table);
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
                    prop_oneof![Just(Action::Select), Just(Action::Insert), action()],
                    prop::option::of("[ab.é\\n]{0,4}"),
                ),
                1..16,
            ),
        ) {
            let maps: Vec<L7RuleMap> = maps
                .into_iter()
                .filter(|map| compile_rule(0, map).is_ok())
                .collect();
            let rules = super::compile(&maps).unwrap();
            for (action, table) in &requests {
                prop_assert_eq!(
                    rules.allows(*action, table.as_deref()),
                    linear(&maps, *action, table.as_deref()),
                    "{:?} {:?}", action, table
                );
            }
        }
    }

    fn matches(rules: &RuleSet, action: Action, table: Option<&str>) -> bool {
        rules.allows(action, table)
    }

    fn compile(maps: &[&[(&str, &str)]]) -> Result<RuleSet, String> {
        super::compile(&axoneme_testkit::rule_maps(maps)).map_err(|e| e.to_string())
    }

    #[test]
    fn the_empire_outpost_rules() {
        let outpost = compile(&[
            &[("query_action", "select"), ("query_table", "system\\..*")],
            &[
                ("query_action", "select"),
                ("query_table", "system_schema\\..*"),
            ],
            &[
                ("query_action", "insert"),
                ("query_table", "attendance.daily_records"),
            ],
        ])
        .unwrap();
        assert!(matches(&outpost, Action::Select, Some("system.local")));
        assert!(matches(
            &outpost,
            Action::Select,
            Some("system_schema.tables")
        ));
        assert!(matches(
            &outpost,
            Action::Insert,
            Some("attendance.daily_records")
        ));
        assert!(!matches(
            &outpost,
            Action::Select,
            Some("attendance.daily_records")
        ));
        assert!(
            !matches(
                &outpost,
                Action::Insert,
                Some("attendance.daily_records_archive")
            ),
            "anchored"
        );
        assert!(
            !matches(&outpost, Action::Select, Some("deathstar.systemx")),
            "anchored"
        );
        assert!(!matches(&outpost, Action::DropTable, Some("system.local")));
        assert!(
            !matches(&outpost, Action::Insert, None),
            "an unresolved table matches no table rule"
        );
    }

    #[test]
    fn rules_without_constraints() {
        let all = compile(&[&[]]).unwrap();
        assert!(matches(&all, Action::CreateRole, None));
        let use_any = compile(&[&[("query_action", "use")]]).unwrap();
        assert!(matches(&use_any, Action::Use, None));
        assert!(!matches(&use_any, Action::Select, Some("a.b")));
    }

    #[test]
    fn empty_values_are_no_constraint() {
        let selects = compile(&[&[("query_action", "select"), ("query_table", "")]]).unwrap();
        assert!(matches(&selects, Action::Select, Some("deathstar.plans")));
        assert!(matches(&selects, Action::Select, None));
        assert!(!matches(&selects, Action::Insert, Some("a.b")));
        let roles = compile(&[&[("query_action", "create-role"), ("query_table", "")]]).unwrap();
        assert!(matches(&roles, Action::CreateRole, None));
        let anything = compile(&[&[("query_action", ""), ("query_table", "")]]).unwrap();
        assert!(matches(&anything, Action::DropTable, Some("a.b")));
    }

    #[test]
    fn bad_rules_say_which_key_and_why() {
        assert_eq!(
            compile(&[&[("query_action", "use"), ("query_table", "a")]]).unwrap_err(),
            "l7[0].query_table: use acts on no table"
        );
        assert_eq!(
            compile(&[&[("query_action", "SELECT")]]).unwrap_err(),
            "l7[0].query_action: unknown query_action \"SELECT\""
        );
        assert_eq!(
            compile(&[&[("table", "a")]]).unwrap_err(),
            "l7[0].table: unknown key (expected one of: query_action, query_table)"
        );
        assert!(compile(&[&[("query_table", "(")]])
            .unwrap_err()
            .starts_with("l7[0].query_table: invalid regex"));
    }
}
