//! Parsers, the protocols that make them, and the registry that finds a protocol by the name a
//! policy's `l7proto` uses.
//!
//! A protocol is one value implementing [`Protocol`]: it creates a parser per connection and
//! compiles its L7 rules. This module must stay free of any knowledge of specific protocols.

use std::any::Any;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::context::{ConnectionMeta, Context, Flow};
use crate::input::Input;
use crate::op::Op;

/// Parses one connection, both flows, never concurrently.
pub trait Parser: Send {
    /// Looks at `input` (which starts at a frame boundary) of `flow` and answers with one
    /// operation. `end_stream` is true when the sender has closed its side after this input.
    fn on_data(
        &mut self,
        ctx: &mut Context<'_>,
        flow: Flow,
        end_stream: bool,
        input: Input<'_>,
    ) -> Op;
}

/// One element of a policy's `l7` list: string keys to string values.
pub type L7RuleMap = BTreeMap<String, String>;

/// A compiled L7 rule set, as a protocol's rule compiler produced it. The protocol's parser gets
/// it back, typed, through [`Context::check`].
pub type CompiledRules = Arc<dyn Any + Send + Sync>;

/// A rule that a protocol's compiler rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("l7[{index}]{}: {reason}", key.as_ref().map(|k| format!(".{k}")).unwrap_or_default())]
pub struct RuleError {
    /// Position of the offending map in the `l7` list.
    pub index: usize,
    /// The offending key, when one is to blame.
    pub key: Option<String>,
    /// Why it was rejected.
    pub reason: String,
}

impl RuleError {
    /// A rejection of the map at `index`, blaming `key` when given.
    pub fn new(index: usize, key: Option<&str>, reason: impl Into<String>) -> Self {
        RuleError {
            index,
            key: key.map(str::to_owned),
            reason: reason.into(),
        }
    }
}

/// Rejects any key of `rule` that is not in `known`, naming the protocol's keys in the message.
pub fn reject_unknown_keys(
    index: usize,
    rule: &L7RuleMap,
    known: &[&str],
) -> Result<(), RuleError> {
    match rule.keys().find(|k| !known.contains(&k.as_str())) {
        Some(key) => Err(RuleError::new(
            index,
            Some(key),
            format!("unknown key (expected one of: {})", known.join(", ")),
        )),
        None => Ok(()),
    }
}

/// The constraints of an `l7` map: the map without its keys whose value is empty.
///
/// An empty value (`keyExact: ""`, `file: ""`) means "no constraint on that key", as in
/// Cilium's parsers, which skipped zero-length matchers; the policy engine warns about such
/// values at import. Rule compilers call this after [`reject_unknown_keys`], so that a misspelt
/// key is refused whatever its value.
pub fn constraints(rule: &L7RuleMap) -> Cow<'_, L7RuleMap> {
    if rule.values().any(String::is_empty) {
        Cow::Owned(
            rule.iter()
                .filter(|(_, value)| !value.is_empty())
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
        )
    } else {
        Cow::Borrowed(rule)
    }
}

/// A protocol: the factory of its parsers and the compiler of its L7 rules.
pub trait Protocol: Send + Sync + 'static {
    /// The name policies use in `l7proto`.
    fn name(&self) -> &'static str;

    /// A parser for a new connection.
    fn new_parser(&self, meta: &ConnectionMeta) -> Box<dyn Parser>;

    /// Compiles a non-empty `l7` list into the rule set the parser checks requests against. A
    /// request is allowed by the list when it satisfies any of its maps.
    fn compile_rules(&self, rules: &[L7RuleMap]) -> Result<CompiledRules, RuleError>;

    /// Says whether a request described by `fields` (as `axoneme policy trace` takes them, e.g.
    /// `command=get key=a`) satisfies `rules`, a rule set this protocol compiled. Protocols
    /// that cannot describe a request by fields keep this default, which says so.
    fn trace(
        &self,
        rules: &(dyn Any + Send + Sync),
        fields: &BTreeMap<String, String>,
    ) -> Result<bool, String> {
        let _ = (rules, fields);
        Err(format!("{} requests cannot be traced", self.name()))
    }
}

/// A second protocol was registered under a name already taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("protocol {0:?} is already registered")]
pub struct DuplicateProtocol(pub &'static str);

/// The protocols known to a process, by name.
#[derive(Clone, Default)]
pub struct Registry {
    protocols: HashMap<&'static str, Arc<dyn Protocol>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Adds a protocol under its name.
    pub fn register(&mut self, protocol: Arc<dyn Protocol>) -> Result<(), DuplicateProtocol> {
        let name = protocol.name();
        if self.protocols.contains_key(name) {
            return Err(DuplicateProtocol(name));
        }
        self.protocols.insert(name, protocol);
        Ok(())
    }

    /// The protocol registered under `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Protocol>> {
        self.protocols.get(name)
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.protocols.keys().copied().collect();
        names.sort_unstable();
        names
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.names()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_values_constrain_nothing() {
        let rule: L7RuleMap = [("cmd", "READ"), ("file", "")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let kept = constraints(&rule);
        assert_eq!(kept.keys().collect::<Vec<_>>(), ["cmd"]);
        let full: L7RuleMap = [("cmd".to_owned(), "READ".to_owned())].into();
        assert!(matches!(constraints(&full), Cow::Borrowed(_)));
    }
}
