//! A compiled `l7` list, indexed so that checking a request does not scan every rule.
//!
//! Every protocol's rule says two things about a request: a selector that the protocol
//! interprets (a command, a group of commands, an action, or none) and what it requires of a
//! value (a key, a file name, a table): nothing, an exact value, a prefix or a [`WholeMatch`]
//! pattern. Rules with equal selectors form a group, so a list has as many groups as the
//! protocol has selectors, however many rules it holds. Within a group the values are indexed:
//! exact values and plain-name patterns in a hash set (a list, when few), prefixes in sorted
//! lists, every other pattern tried one by one when the group has few, else in a few
//! `RegexSet`s (the patterns themselves are then not kept: a set holds them in a fraction of
//! their space). A check visits the groups whose selector the request satisfies and
//! asks each index; it never looks at one rule after another (but for the few patterns of a
//! small group). The one case that allocates is a request with several values (a multi-key
//! get) each of which some pattern of a large group matches: finding one pattern that matches
//! them all asks the set for each value's list of matches.
//!
//! This module knows no protocol; it must keep the meaning of a linear scan ("does any rule
//! allow the request") exactly.

use std::collections::HashSet;

use regex::bytes::{RegexSet, RegexSetBuilder};

use crate::pattern::{is_text_tail, Shape, WholeMatch};
use crate::protocol::{L7RuleMap, RuleError};

/// What a rule requires of a request's value.
#[derive(Debug, Clone)]
pub enum ValueMatch {
    /// Nothing: the rule does not look at the value, and allows a request without one.
    Any,
    /// Exactly these bytes.
    Exact(Box<[u8]>),
    /// These bytes, then anything.
    Prefix(Box<[u8]>),
    /// A pattern matching the whole value.
    Pattern(WholeMatch),
}

/// A compiled `l7` list: a request is allowed when any of its rules allows it. A protocol
/// compiles each map into a selector `S` and a [`ValueMatch`]; its parser asks
/// [`RuleList::allows`].
#[derive(Debug, Clone)]
pub struct RuleList<S> {
    groups: Vec<(S, ValueIndex)>,
}

impl<S: PartialEq> RuleList<S> {
    /// Compiles each map of an `l7` list with `rule`, which gets the map's index for its errors,
    /// and indexes the result.
    pub fn compile(
        maps: &[L7RuleMap],
        mut rule: impl FnMut(usize, &L7RuleMap) -> Result<(S, ValueMatch), RuleError>,
    ) -> Result<RuleList<S>, RuleError> {
        let mut groups: Vec<(S, Filing)> = Vec::new();
        for (index, map) in maps.iter().enumerate() {
            let (selector, value) = rule(index, map)?;
            match groups.iter_mut().find(|(s, _)| *s == selector) {
                Some((_, filing)) => filing.add(index, value),
                None => {
                    let mut filing = Filing::default();
                    filing.add(index, value);
                    groups.push((selector, filing));
                }
            }
        }
        let groups = groups
            .into_iter()
            .map(|(selector, filing)| Ok((selector, filing.build()?)))
            .collect::<Result<_, RuleError>>()?;
        Ok(RuleList { groups })
    }

    /// Whether some rule whose selector satisfies `selects` accepts `values`: a rule that
    /// requires nothing of the value accepts anything, even no value at all; any other rule
    /// accepts a non-empty `values` whose every item it matches.
    pub fn allows<'v, V>(&self, selects: impl Fn(&S) -> bool, values: V) -> bool
    where
        V: Iterator<Item = &'v [u8]> + Clone,
    {
        self.groups
            .iter()
            .any(|(selector, index)| selects(selector) && index.accepts(values.clone()))
    }
}

/// The values of one group of rules, as they are gathered before indexing.
#[derive(Default)]
struct Filing {
    any: bool,
    exact: HashSet<Box<[u8]>>,
    prefixes: Vec<Box<[u8]>>,
    text_prefixes: Vec<Box<[u8]>>,
    /// Each pattern only a regex can decide in general, with its map's index. A group with
    /// few keeps them whole (a bare-dot name is then compared byte by byte); a group with more
    /// keeps their anchored sources in sets, which hold them in a fraction of the space.
    patterns: Vec<(usize, WholeMatch)>,
}

impl Filing {
    fn add(&mut self, index: usize, value: ValueMatch) {
        match value {
            ValueMatch::Any => self.any = true,
            ValueMatch::Exact(exact) => {
                self.exact.insert(exact);
            }
            ValueMatch::Prefix(prefix) => self.prefixes.push(prefix),
            ValueMatch::Pattern(pattern) => match pattern.shape() {
                Shape::Literal(exact) => {
                    self.exact.insert(exact.into());
                }
                Shape::TextPrefix(prefix) => self.text_prefixes.push(prefix.into()),
                Shape::Regex(_) => self.patterns.push((index, pattern)),
            },
        }
    }

    fn build(self) -> Result<ValueIndex, RuleError> {
        if self.any {
            // A rule that requires nothing makes the others of its group irrelevant.
            return Ok(ValueIndex {
                any: true,
                ..ValueIndex::default()
            });
        }
        let sorted = |mut list: Vec<Box<[u8]>>| {
            list.sort_unstable();
            list.dedup();
            list.into_boxed_slice()
        };
        Ok(ValueIndex {
            any: false,
            exact: ExactValues::new(self.exact),
            prefixes: sorted(self.prefixes),
            text_prefixes: sorted(self.text_prefixes),
            patterns: match self.patterns.len() <= FEW_PATTERNS {
                true => Patterns::Few(self.patterns.into_iter().map(|(_, p)| p).collect()),
                false => {
                    let sources: Vec<(usize, Box<str>)> = self
                        .patterns
                        .iter()
                        .map(|(index, pattern)| match pattern.shape() {
                            Shape::Regex(source) => (*index, source.into()),
                            Shape::Literal(_) | Shape::TextPrefix(_) => {
                                unreachable!("filed as a pattern only a regex can decide")
                            }
                        })
                        .collect();
                    Patterns::Sets(regex_sets(&sources)?)
                }
            },
        })
    }
}

/// Exact values a group accepts: a few in a list compared one by one (cheaper than hashing
/// the value), more in a hash set.
#[derive(Debug, Clone)]
enum ExactValues {
    Few(Box<[Box<[u8]>]>),
    Many(HashSet<Box<[u8]>>),
}

/// Up to how many exact values a group compares one by one.
const FEW_EXACT_VALUES: usize = 8;

impl ExactValues {
    fn new(values: HashSet<Box<[u8]>>) -> ExactValues {
        match values.len() <= FEW_EXACT_VALUES {
            true => ExactValues::Few(values.into_iter().collect()),
            false => {
                let mut values = values;
                values.shrink_to_fit();
                ExactValues::Many(values)
            }
        }
    }

    fn contains(&self, value: &[u8]) -> bool {
        match self {
            ExactValues::Few(values) => values.iter().any(|v| **v == *value),
            ExactValues::Many(values) => values.contains(value),
        }
    }
}

impl Default for ExactValues {
    fn default() -> Self {
        ExactValues::Few(Box::default())
    }
}

/// The values one group of rules accepts, indexed.
#[derive(Debug, Clone, Default)]
struct ValueIndex {
    any: bool,
    exact: ExactValues,
    /// Sorted: prefixes after which anything may follow.
    prefixes: Box<[Box<[u8]>]>,
    /// Sorted: prefixes after which a text tail ([`is_text_tail`]) must follow.
    text_prefixes: Box<[Box<[u8]>]>,
    /// The patterns only a regex can decide in general.
    patterns: Patterns,
}

/// Up to how many regex patterns a group keeps whole and tries one by one.
const FEW_PATTERNS: usize = 8;

/// A group's patterns that only a regex can decide in general.
#[derive(Debug, Clone)]
enum Patterns {
    /// Few: each kept whole and tried in turn (a bare-dot name compares bytes, no regex runs).
    Few(Box<[WholeMatch]>),
    /// More: their sources in sets of at most [`PATTERNS_PER_SET`].
    Sets(Box<[RegexSet]>),
}

impl Default for Patterns {
    fn default() -> Self {
        Patterns::Few(Box::default())
    }
}

/// How many patterns one `RegexSet` holds at most: a check costs one pass over the value per
/// set, and a set's lazy DFA stays small and fast when it holds a few thousand patterns.
const PATTERNS_PER_SET: usize = 2048;

/// The patterns as sets of at most [`PATTERNS_PER_SET`]; a set that would be too big to
/// compile is split in halves, down to single patterns.
fn regex_sets(patterns: &[(usize, Box<str>)]) -> Result<Box<[RegexSet]>, RuleError> {
    fn add(patterns: &[(usize, Box<str>)], sets: &mut Vec<RegexSet>) -> Result<(), RuleError> {
        match RegexSetBuilder::new(patterns.iter().map(|(_, source)| source)).build() {
            Ok(set) => sets.push(set),
            Err(error) if patterns.len() == 1 => {
                return Err(RuleError::new(
                    patterns[0].0,
                    None,
                    format!("the pattern cannot be indexed: {error}"),
                ));
            }
            Err(_) => {
                let (left, right) = patterns.split_at(patterns.len() / 2);
                add(left, sets)?;
                add(right, sets)?;
            }
        }
        Ok(())
    }
    let mut sets = Vec::new();
    for chunk in patterns.chunks(PATTERNS_PER_SET) {
        add(chunk, &mut sets)?;
    }
    Ok(sets.into_boxed_slice())
}

impl ValueIndex {
    /// Whether one of the group's rules accepts every item of `values` (see
    /// [`RuleList::allows`]).
    fn accepts<'v>(&self, values: impl Iterator<Item = &'v [u8]> + Clone) -> bool {
        if self.any {
            return true;
        }
        let mut rest = values.clone();
        let Some(first) = rest.next() else {
            return false;
        };
        // Whatever a rule's prefix is, it is a prefix of what all the values have in common.
        let common = &first[..rest.clone().fold(first.len(), |common, value| {
            common_prefix(&first[..common], value)
        })];
        (self.exact.contains(first) && rest.clone().all(|value| value == first))
            || matching_prefixes(&self.prefixes, common).next().is_some()
            || matching_prefixes(&self.text_prefixes, common)
                .any(|len| values.clone().all(|value| is_text_tail(&value[len..])))
            || self.patterns_accept(first, rest)
    }

    /// Whether one of the group's regex-only patterns matches `first` and every item of
    /// `rest`.
    fn patterns_accept<'v>(
        &self,
        first: &[u8],
        rest: impl Iterator<Item = &'v [u8]> + Clone,
    ) -> bool {
        let sets = match &self.patterns {
            Patterns::Few(patterns) => {
                return patterns
                    .iter()
                    .any(|p| p.is_match(first) && rest.clone().all(|value| p.is_match(value)))
            }
            Patterns::Sets(sets) => sets,
        };
        if rest.clone().next().is_none() {
            return sets.iter().any(|set| set.is_match(first));
        }
        // Every value must match some pattern before it is worth finding one that matches
        // all; finding it allocates the list of each value's matches, for this set only.
        rest.clone()
            .all(|value| sets.iter().any(|set| set.is_match(value)))
            && sets.iter().filter(|set| set.is_match(first)).any(|set| {
                let others: Vec<_> = rest.clone().map(|value| set.matches(value)).collect();
                set.matches(first)
                    .iter()
                    .any(|pattern| others.iter().all(|matches| matches.matched(pattern)))
            })
    }
}

/// Up to how many prefixes a group compares one by one rather than by binary search.
const FEW_PREFIXES: usize = 8;

/// The lengths of the items of `sorted` (sorted, without duplicates) that are prefixes of
/// `value`: compared one by one when there are few, else found by [`prefixes_of`].
fn matching_prefixes<'a>(
    sorted: &'a [Box<[u8]>],
    value: &'a [u8],
) -> impl Iterator<Item = usize> + 'a {
    let few = sorted.len() <= FEW_PREFIXES;
    let scanned = few.then(|| {
        sorted
            .iter()
            .filter(move |prefix| value.starts_with(prefix))
            .map(|prefix| prefix.len())
    });
    let searched = (!few).then(|| prefixes_of(sorted, value));
    scanned
        .into_iter()
        .flatten()
        .chain(searched.into_iter().flatten())
}

/// The length of the longest common prefix of `a` and `b`.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The lengths of the items of `sorted` (sorted, without duplicates) that are prefixes of
/// `value`, longest first.
///
/// The greatest item not above a prefix `bound` of `value` is either a prefix of `value` or
/// shares a shorter prefix with it, below which the search continues: each binary search
/// shortens the bound.
fn prefixes_of<'a>(sorted: &'a [Box<[u8]>], value: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    let mut bound = Some(value);
    std::iter::from_fn(move || loop {
        let below = bound?;
        let Some(candidate) = sorted[..sorted.partition_point(|item| &item[..] <= below)].last()
        else {
            bound = None;
            return None;
        };
        if value.starts_with(candidate) {
            bound = candidate.len().checked_sub(1).map(|len| &value[..len]);
            return Some(candidate.len());
        }
        bound = Some(&value[..common_prefix(candidate, value)]);
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sorted(items: &[&str]) -> Box<[Box<[u8]>]> {
        let mut items: Vec<Box<[u8]>> = items.iter().map(|i| i.as_bytes().into()).collect();
        items.sort_unstable();
        items.dedup();
        items.into_boxed_slice()
    }

    #[test]
    fn prefixes_are_found_longest_first() {
        let items = sorted(&["", "a", "a/b", "a/c", "ab", "b", "a/b/c/d"]);
        let found: Vec<_> = prefixes_of(&items, b"a/b/c").collect();
        assert_eq!(found, [3, 1, 0]);
        assert_eq!(prefixes_of(&items, b"").collect::<Vec<_>>(), [0]);
        let items = sorted(&["x", "a/b/z"]);
        assert_eq!(prefixes_of(&items, b"a/b/c").count(), 0);
    }

    #[test]
    fn a_rule_needs_every_value() {
        let pattern = |source| ValueMatch::Pattern(WholeMatch::compile(0, "key", source).unwrap());
        let values = [
            ValueMatch::Prefix((*b"a/").into()),
            ValueMatch::Exact((*b"b").into()),
            pattern("c[0-9]"),
            pattern("d[0-9]"),
            pattern(r"e\..*"),
        ];
        let maps = vec![L7RuleMap::new(); values.len()];
        let list = RuleList::compile(&maps, |i, _| Ok(((), values[i].clone()))).unwrap();
        let allows = |values: &[&str]| list.allows(|_| true, values.iter().map(|v| v.as_bytes()));
        assert!(allows(&["a/1", "a/2"]));
        assert!(allows(&["b", "b"]));
        assert!(allows(&["c1", "c2"]));
        assert!(
            !allows(&["a/1", "b"]),
            "each value matches a different rule"
        );
        assert!(!allows(&["c1", "a/1"]));
        assert!(!allows(&["c1", "d1"]), "each pattern matches one value");
        assert!(allows(&["e.1", "e.2"]));
        assert!(
            !allows(&["e.1", "e.\n"]),
            "a text prefix needs a text tail in every value"
        );
        assert!(!allows(&[]), "no value matches no value rule");
        assert!(!list.allows(|_| false, [&b"b"[..]].into_iter()));
    }

    proptest! {
        /// Patterns tried one by one (few in a group) and in sets (many) allow what a scan of
        /// the patterns allows, for one value and for several.
        #[test]
        fn patterns_few_and_many_agree_with_a_scan(
            sources in proptest::collection::vec(
                prop::sample::select(vec![
                    "a.b", "a[0-9]", "b.", "..", "a", "a.*", "a|b", "(a|b)[0-9]", r"b\.a", ".[0-9]b",
                ]),
                1..20,
            ),
            values in proptest::collection::vec("[ab.0-9]{0,3}", 1..4),
        ) {
            let patterns: Vec<WholeMatch> = sources
                .iter()
                .map(|source| WholeMatch::compile(0, "key", source).unwrap())
                .collect();
            let maps = vec![L7RuleMap::new(); patterns.len()];
            let list = RuleList::compile(&maps, |i, _| {
                Ok(((), ValueMatch::Pattern(patterns[i].clone())))
            })
            .unwrap();
            let scanned = patterns
                .iter()
                .any(|p| values.iter().all(|v| p.is_match(v.as_bytes())));
            prop_assert_eq!(
                list.allows(|_| true, values.iter().map(|v| v.as_bytes())),
                scanned
            );
        }

        /// The prefix search finds what a scan finds.
        #[test]
        fn prefix_search_agrees_with_a_scan(
            items in proptest::collection::vec("[ab/]{0,4}", 0..24),
            value in "[ab/]{0,6}",
        ) {
            let items = sorted(&items.iter().map(String::as_str).collect::<Vec<_>>());
            let mut scanned: Vec<usize> = items
                .iter()
                .filter(|item| value.as_bytes().starts_with(item))
                .map(|item| item.len())
                .collect();
            scanned.reverse();
            prop_assert_eq!(prefixes_of(&items, value.as_bytes()).collect::<Vec<_>>(), scanned.clone());
            let mut matched: Vec<usize> = matching_prefixes(&items, value.as_bytes()).collect();
            matched.sort_unstable_by(|a, b| b.cmp(a));
            prop_assert_eq!(matched, scanned);
        }
    }
}
