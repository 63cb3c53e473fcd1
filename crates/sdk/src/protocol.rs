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

/// A protocol as the registry holds it: the factory of its parsers and the compiler of its L7
/// rules, with the rules' type erased. Protocols implement [`TypedProtocol`] instead, which
/// provides this.
pub trait Protocol: Send + Sync + 'static {
    /// The name policies use in `l7proto`.
    fn name(&self) -> &'static str;

    /// A parser for a new connection.
    fn new_parser(&self, meta: &ConnectionMeta) -> Box<dyn Parser>;

    /// Compiles a non-empty `l7` list into the rule set the parser checks requests against. A
    /// request is allowed by the list when it satisfies any of its maps.
    fn compile_rules(&self, rules: &[L7RuleMap]) -> Result<CompiledRules, RuleError>;

    /// Says whether a request described by `fields` (as `axoneme policy trace` takes them, e.g.
    /// `command=get key=a`) satisfies `rules`, a rule set this protocol compiled.
    fn trace(
        &self,
        rules: &(dyn Any + Send + Sync),
        fields: &BTreeMap<String, String>,
    ) -> Result<bool, String>;
}

/// A protocol written against its own compiled rule type. The blanket implementation makes every
/// `TypedProtocol` a [`Protocol`]: it stores the compiled rules type-erased and gives them back
/// typed, to the parser through [`Context::check`] and to [`TypedProtocol::trace_request`].
pub trait TypedProtocol: Send + Sync + 'static {
    /// An `l7` list compiled.
    type Rules: Send + Sync + 'static;

    /// The fields `axoneme policy trace` describes a request with; empty when requests cannot
    /// be traced.
    const TRACE_FIELDS: &'static [&'static str];

    /// The name policies use in `l7proto`.
    fn name(&self) -> &'static str;

    /// A parser for a new connection.
    fn parser(&self, meta: &ConnectionMeta) -> Box<dyn Parser>;

    /// Compiles a non-empty `l7` list; a request is allowed by the list when it satisfies any of
    /// its maps.
    fn compile(&self, rules: &[L7RuleMap]) -> Result<Self::Rules, RuleError>;

    /// Says whether the request `fields` describe satisfies `rules`. `fields` holds no key
    /// outside [`TypedProtocol::TRACE_FIELDS`] (checked before).
    fn trace_request(&self, rules: &Self::Rules, fields: &TraceFields<'_>) -> Result<bool, String> {
        let _ = (rules, fields);
        Err(format!("{} requests cannot be traced", self.name()))
    }
}

impl<P: TypedProtocol> Protocol for P {
    fn name(&self) -> &'static str {
        TypedProtocol::name(self)
    }

    fn new_parser(&self, meta: &ConnectionMeta) -> Box<dyn Parser> {
        self.parser(meta)
    }

    fn compile_rules(&self, rules: &[L7RuleMap]) -> Result<CompiledRules, RuleError> {
        Ok(Arc::new(self.compile(rules)?))
    }

    fn trace(
        &self,
        rules: &(dyn Any + Send + Sync),
        fields: &BTreeMap<String, String>,
    ) -> Result<bool, String> {
        let name = TypedProtocol::name(self);
        if P::TRACE_FIELDS.is_empty() {
            return Err(format!("{name} requests cannot be traced"));
        }
        if let Some(unknown) = fields
            .keys()
            .find(|k| !P::TRACE_FIELDS.contains(&k.as_str()))
        {
            return Err(format!(
                "unknown {name} field {unknown:?} (expected {})",
                P::TRACE_FIELDS.join(", ")
            ));
        }
        let rules = rules
            .downcast_ref::<P::Rules>()
            .ok_or_else(|| format!("not a {name} rule set"))?;
        self.trace_request(
            rules,
            &TraceFields {
                protocol: name,
                fields,
            },
        )
    }
}

/// The fields of a request to trace, as `axoneme policy trace` took them.
#[derive(Debug, Clone, Copy)]
pub struct TraceFields<'f> {
    protocol: &'static str,
    fields: &'f BTreeMap<String, String>,
}

impl<'f> TraceFields<'f> {
    /// The value of `key`, if given.
    pub fn get(&self, key: &str) -> Option<&'f str> {
        self.fields.get(key).map(String::as_str)
    }

    /// The value of `key`, or an error saying the protocol's requests need it.
    pub fn require(&self, key: &str) -> Result<&'f str, String> {
        self.get(key)
            .ok_or_else(|| format!("{} requests need {key}", self.protocol))
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
    use crate::op::Op;

    struct Nop;

    impl Parser for Nop {
        fn on_data(&mut self, _: &mut Context<'_>, _: Flow, _: bool, _: Input<'_>) -> Op {
            Op::Nop
        }
    }

    /// Rules of one key, `word`; a request is traced by `word` and allowed when it is listed.
    struct Words;

    impl TypedProtocol for Words {
        type Rules = Vec<String>;
        const TRACE_FIELDS: &'static [&'static str] = &["word"];

        fn name(&self) -> &'static str {
            "words"
        }

        fn parser(&self, _: &ConnectionMeta) -> Box<dyn Parser> {
            Box::new(Nop)
        }

        fn compile(&self, rules: &[L7RuleMap]) -> Result<Vec<String>, RuleError> {
            rules
                .iter()
                .enumerate()
                .map(|(i, rule)| {
                    reject_unknown_keys(i, rule, &["word"])?;
                    rule.get("word")
                        .cloned()
                        .ok_or_else(|| RuleError::new(i, None, "needs word"))
                })
                .collect()
        }

        fn trace_request(
            &self,
            rules: &Vec<String>,
            fields: &TraceFields<'_>,
        ) -> Result<bool, String> {
            let word = fields.require("word")?;
            Ok(rules.iter().any(|w| w == word))
        }
    }

    fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_typed_protocol_is_a_protocol_that_traces_over_its_own_rules() {
        let protocol: Arc<dyn Protocol> = Arc::new(Words);
        let rules = protocol
            .compile_rules(&[fields(&[("word", "hello")])])
            .unwrap();
        assert_eq!(
            protocol.trace(&*rules, &fields(&[("word", "hello")])),
            Ok(true)
        );
        assert_eq!(
            protocol.trace(&*rules, &fields(&[("word", "bye")])),
            Ok(false)
        );
        assert_eq!(
            protocol.trace(&*rules, &fields(&[("wrod", "hello")])),
            Err("unknown words field \"wrod\" (expected word)".into())
        );
        assert_eq!(
            protocol.trace(&*rules, &fields(&[])),
            Err("words requests need word".into())
        );
        assert_eq!(
            protocol.trace(&(), &fields(&[("word", "hello")])),
            Err("not a words rule set".into())
        );
    }

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
