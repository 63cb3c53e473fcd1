//! The statement grammar: a recursive-descent reader of Cassandra's `Parser.g` over the
//! fixture's own tokens. It accepts exactly one statement (or text batch) followed by any
//! number of `;`, and refuses what the grammar refuses, including the checks Cassandra's
//! parser makes as it reads (bind markers as names, reserved type names, a permission no
//! resource takes, repeated properties or role options, `X = Y + 1` updates).
//!
//! Where the grammar chooses by looking ahead, this reader tries the alternatives in order and
//! backs out of one that fails. It builds the statements the fixture evaluates in full and
//! reads every other statement (or feature of one) into [`Stmt::Unsupported`]; it evaluates
//! nothing and resolves no names against a keyspace.

use std::cell::RefCell;
use std::collections::HashSet;

use super::keywords;
use super::lexer::{Spanned, Token};
use super::{Action, Condition, Selection, Stmt, SyntaxError, TableRef, Term};
use crate::types::{CqlType, Literal};

type Result<T> = std::result::Result<T, SyntaxError>;

/// Reads a query: one statement, then any number of `;`, then nothing.
pub(super) fn query(tokens: Vec<Spanned<'_>>, len: usize) -> Result<Stmt> {
    let mut parser = Parser {
        tokens,
        pos: 0,
        markers: 0,
        unsupported: None,
        recognition: None,
        furthest: RefCell::new(None),
        len,
    };
    let read = parser.statement().and_then(|stmt| {
        while parser.eat_p(";") {}
        match parser.pos < parser.tokens.len() {
            true => Err(parser.expected("the end of the query")),
            false => Ok(stmt),
        }
    });
    match (read, parser.recognition) {
        (Err(error), _) => Err(parser
            .furthest
            .into_inner()
            .map_or(error, |(_, furthest)| furthest)),
        (Ok(_), Some(error)) => Err(error),
        (Ok(stmt), None) => Ok(stmt),
    }
}

/// A selector as far as the fixture evaluates it.
enum Selector {
    Column(String),
    Count,
    Other,
}

/// What a GRANT, REVOKE or LIST names, for the permissions it takes.
#[derive(Clone, Copy)]
enum Resource {
    Keyspaces,
    Table,
    Roles,
    Role,
    Functions,
    Function,
    Mbeans,
}

impl Resource {
    /// The permissions that apply to the resource.
    fn applicable(self) -> &'static [&'static str] {
        match self {
            Resource::Keyspaces => &[
                "create",
                "alter",
                "drop",
                "select",
                "modify",
                "authorize",
                "unmask",
                "select_masked",
            ],
            Resource::Table => &[
                "alter",
                "drop",
                "select",
                "modify",
                "authorize",
                "unmask",
                "select_masked",
            ],
            Resource::Roles => &["create", "alter", "drop", "authorize", "describe"],
            Resource::Role => &["alter", "drop", "authorize"],
            Resource::Functions => &["create", "alter", "drop", "authorize", "execute"],
            Resource::Function => &["alter", "drop", "authorize", "execute"],
            Resource::Mbeans => &["authorize", "describe", "execute", "modify", "select"],
        }
    }
}

/// The permissions a statement may name.
const PERMISSIONS: [&str; 10] = [
    "create",
    "alter",
    "drop",
    "select",
    "modify",
    "authorize",
    "describe",
    "execute",
    "unmask",
    "select_masked",
];

/// Type names the grammar keeps from user types.
const RESERVED_TYPE_NAMES: [&str; 7] = [
    "byte",
    "complex",
    "enum",
    "date",
    "interval",
    "macaddr",
    "bitstring",
];

/// Where the reader is, to come back to when an alternative fails.
#[derive(Clone)]
struct Mark {
    pos: usize,
    markers: usize,
    unsupported: Option<String>,
    recognition: Option<SyntaxError>,
}

struct Parser<'q> {
    tokens: Vec<Spanned<'q>>,
    pos: usize,
    /// Bind markers read so far.
    markers: usize,
    /// The first feature of the statement being read that the fixture does not evaluate.
    unsupported: Option<String>,
    /// The first error found by a check made while reading (the statement reads on).
    recognition: Option<SyntaxError>,
    /// The error found furthest into the text, alternatives included: the one to report.
    furthest: RefCell<Option<(usize, SyntaxError)>>,
    /// The length of the text, where errors at its end are.
    len: usize,
}

impl<'q> Parser<'q> {
    // Tokens.

    fn peek(&self) -> Option<&Token<'q>> {
        self.peek_at(0)
    }

    fn peek_at(&self, n: usize) -> Option<&Token<'q>> {
        self.tokens.get(self.pos + n).map(|s| &s.token)
    }

    fn word_at(&self, n: usize) -> Option<&'q str> {
        match self.peek_at(n) {
            Some(Token::Word(w)) => Some(w),
            _ => None,
        }
    }

    /// Whether the token `n` ahead is keyword `k` (`table` also spelt `columnfamily`,
    /// `tables` also `columnfamilies`). `schema` is a keyword of its own, not `keyspace`:
    /// Cassandra's lexer lists it first, so `CREATE SCHEMA` is no statement.
    fn kw_at(&self, n: usize, k: &str) -> bool {
        self.word_at(n).is_some_and(|w| {
            w.eq_ignore_ascii_case(k)
                || (k == "table" && w.eq_ignore_ascii_case("columnfamily"))
                || (k == "tables" && w.eq_ignore_ascii_case("columnfamilies"))
        })
    }

    fn at_kw(&self, k: &str) -> bool {
        self.kw_at(0, k)
    }

    fn eat_kw(&mut self, k: &str) -> bool {
        let found = self.at_kw(k);
        self.pos += usize::from(found);
        found
    }

    fn expect_kw(&mut self, k: &str) -> Result<()> {
        match self.eat_kw(k) {
            true => Ok(()),
            false => Err(self.expected(&k.to_ascii_uppercase())),
        }
    }

    fn p_at(&self, n: usize, p: &str) -> bool {
        matches!(self.peek_at(n), Some(Token::Punct(q)) if *q == p)
    }

    fn at_p(&self, p: &str) -> bool {
        self.p_at(0, p)
    }

    fn eat_p(&mut self, p: &str) -> bool {
        let found = self.at_p(p);
        self.pos += usize::from(found);
        found
    }

    fn expect_p(&mut self, p: &str) -> Result<()> {
        match self.eat_p(p) {
            true => Ok(()),
            false => Err(self.expected(&format!("'{p}'"))),
        }
    }

    /// Takes the next token, whatever it is.
    fn advance(&mut self) -> Result<Token<'q>> {
        let token = self.peek().cloned().ok_or_else(|| self.expected("more"))?;
        self.pos += 1;
        Ok(token)
    }

    fn expected(&self, wanted: &str) -> SyntaxError {
        let error = self.describe_expected(wanted);
        let mut furthest = self.furthest.borrow_mut();
        if furthest.as_ref().map_or(true, |(pos, _)| self.pos >= *pos) {
            *furthest = Some((self.pos, error.clone()));
        }
        error
    }

    fn describe_expected(&self, wanted: &str) -> SyntaxError {
        match self.tokens.get(self.pos) {
            Some(found) => SyntaxError::Grammar {
                at: found.at,
                message: format!("expected {wanted}, found {:?}", found.token),
            },
            None => SyntaxError::Grammar {
                at: self.len,
                message: format!("expected {wanted} at the end of the query"),
            },
        }
    }

    /// Records an error found by a check while reading on, as Cassandra's parser does.
    fn recognize(&mut self, message: String) {
        if self.recognition.is_none() {
            let at = self.tokens.get(self.pos).map_or(self.len, |s| s.at);
            self.recognition = Some(SyntaxError::Grammar { at, message });
        }
    }

    /// Notes a feature the fixture does not evaluate.
    fn unsupported(&mut self, what: &str) {
        if self.unsupported.is_none() {
            self.unsupported = Some(what.to_string());
        }
    }

    fn mark(&self) -> Mark {
        Mark {
            pos: self.pos,
            markers: self.markers,
            unsupported: self.unsupported.clone(),
            recognition: self.recognition.clone(),
        }
    }

    fn reset(&mut self, mark: Mark) {
        self.pos = mark.pos;
        self.markers = mark.markers;
        self.unsupported = mark.unsupported;
        self.recognition = mark.recognition;
    }

    /// Reads with `rule`, or, when it fails, comes back to where it started.
    fn attempt<T>(&mut self, rule: impl FnOnce(&mut Self) -> Result<T>) -> Option<T> {
        let mark = self.mark();
        match rule(self) {
            Ok(value) => Some(value),
            Err(_) => {
                self.reset(mark);
                None
            }
        }
    }

    // Names.

    /// A name: a word `accept` admits (lower-cased) or a quoted name (as written).
    fn name_with(&mut self, accept: fn(&str) -> bool, what: &str) -> Result<String> {
        match self.peek() {
            Some(Token::Word(w)) if accept(w) => {
                let name = w.to_ascii_lowercase();
                self.pos += 1;
                Ok(name)
            }
            Some(Token::Quoted(q)) => {
                let name = q.clone();
                self.pos += 1;
                Ok(name)
            }
            _ => Err(self.expected(what)),
        }
    }

    /// `ident`, `fident`, `noncol_ident`: an identifier, a quoted name or an unreserved
    /// keyword.
    fn ident(&mut self) -> Result<String> {
        self.name_with(keywords::is_name, "a name")
    }

    /// `cident`: an `ident` or `""`.
    fn cident(&mut self) -> Result<String> {
        match self.peek() {
            Some(Token::EmptyQuoted) => {
                self.pos += 1;
                Ok(String::new())
            }
            _ => self.ident(),
        }
    }

    /// A keyspace, table, index or role name, where a bind marker is read and refused.
    fn schema_name(&mut self, what: &str) -> Result<String> {
        if self.peek() == Some(&Token::Marker) {
            self.pos += 1;
            self.recognize(format!("Bind variables cannot be used for {what} names"));
            return Ok(String::new());
        }
        self.ident()
    }

    fn keyspace_name(&mut self) -> Result<String> {
        self.schema_name("keyspace")
    }

    /// `columnFamilyName`: `[keyspace .] table`.
    fn table_name(&mut self) -> Result<TableRef> {
        self.qualified("table")
    }

    /// `[keyspace .] name`, the name being of a table or an index.
    fn qualified(&mut self, what: &str) -> Result<TableRef> {
        let first = self.schema_name(if self.p_at(1, ".") { "keyspace" } else { what })?;
        match self.eat_p(".") {
            true => Ok(TableRef {
                keyspace: Some(first),
                name: self.schema_name(what)?,
            }),
            false => Ok(TableRef {
                keyspace: None,
                name: first,
            }),
        }
    }

    /// `userTypeName`: `[keyspace .] type`, the type being no native type nor a reserved
    /// type name.
    fn user_type_name(&mut self) -> Result<()> {
        if self.p_at(1, ".") {
            self.ident()?;
            self.pos += 1;
        }
        if let Some(Token::Word(w)) = self.peek() {
            if keywords::is_identifier(w)
                && RESERVED_TYPE_NAMES
                    .iter()
                    .any(|r| r.eq_ignore_ascii_case(w))
            {
                let message = format!("Invalid (reserved) user type name {w}");
                self.recognize(message);
            }
        }
        self.name_with(keywords::is_type_name, "a type name")
            .map(drop)
    }

    /// `functionName`: `[keyspace .] function`.
    fn function_name(&mut self) -> Result<(Option<String>, String)> {
        let keyspace = match self.p_at(1, ".") {
            true => {
                let keyspace = self.keyspace_name()?;
                self.pos += 1;
                Some(keyspace)
            }
            false => None,
        };
        let name = self.name_with(keywords::is_function_name, "a function name")?;
        Ok((keyspace, name))
    }

    /// `userOrRoleName`: a name, a quoted name, a string or an unreserved keyword.
    fn role_name(&mut self) -> Result<()> {
        if let Some(Token::Str(_)) = self.peek() {
            self.pos += 1;
            return Ok(());
        }
        self.schema_name("role").map(drop)
    }

    /// `username` and `identity`: an identifier or a string; a quoted name is read and
    /// refused.
    fn plain_name(&mut self, what: &str) -> Result<()> {
        match self.peek() {
            Some(Token::Word(w)) if keywords::is_identifier(w) => {}
            Some(Token::Str(_)) => {}
            Some(Token::Quoted(_)) => {
                self.recognize(format!("Quoted strings are are not supported for {what}"))
            }
            _ => return Err(self.expected(what)),
        }
        self.pos += 1;
        Ok(())
    }

    fn if_not_exists(&mut self) -> Result<bool> {
        if !self.eat_kw("if") {
            return Ok(false);
        }
        self.expect_kw("not")?;
        self.expect_kw("exists")?;
        Ok(true)
    }

    fn if_exists(&mut self) -> Result<bool> {
        if !self.eat_kw("if") {
            return Ok(false);
        }
        self.expect_kw("exists")?;
        Ok(true)
    }

    // Types.

    /// `comparatorType`: the type when the fixture stores it.
    fn comparator_type(&mut self) -> Result<Option<CqlType>> {
        let generic = ["map", "list", "set", "tuple", "vector", "frozen"]
            .into_iter()
            .find(|k| self.at_kw(k) && self.p_at(1, "<"));
        if let Some(kind) = generic {
            self.pos += 2;
            let first = self.comparator_type()?;
            let ty = match kind {
                "map" => {
                    self.expect_p(",")?;
                    let value = self.comparator_type()?;
                    first
                        .zip(value)
                        .map(|(k, v)| CqlType::Map(Box::new(k), Box::new(v)))
                }
                "list" => first.map(|t| CqlType::List(Box::new(t))),
                "set" => first.map(|t| CqlType::Set(Box::new(t))),
                "frozen" => first,
                "tuple" => {
                    while self.eat_p(",") {
                        self.comparator_type()?;
                    }
                    None
                }
                _ => {
                    self.expect_p(",")?;
                    match self.advance()? {
                        Token::Integer(_) => None,
                        _ => return Err(self.expected("a dimension")),
                    }
                }
            };
            self.expect_p(">")?;
            return Ok(ty);
        }
        match self.peek() {
            Some(Token::Word(w)) if keywords::is_native_type(w) => {
                let ty = CqlType::parse(w);
                self.pos += 1;
                Ok(ty)
            }
            Some(Token::Str(_)) => {
                self.pos += 1;
                Ok(None)
            }
            _ => self.user_type_name().map(|()| None),
        }
    }

    fn native_type(&mut self) -> Result<()> {
        match self.peek() {
            Some(Token::Word(w)) if keywords::is_native_type(w) => {
                self.pos += 1;
                Ok(())
            }
            _ => Err(self.expected("a native type")),
        }
    }

    // Terms.

    /// `constant`, when the next token is one.
    fn constant(&mut self) -> Option<Literal> {
        let literal = match self.peek()? {
            Token::Str(s) => Literal::Str(s.clone()),
            Token::Integer(n)
            | Token::Float(n)
            | Token::Duration(n)
            | Token::Uuid(n)
            | Token::Hex(n) => Literal::Bare(n.to_string()),
            Token::Boolean(b) => Literal::Bool(*b),
            Token::NegativeNaN => Literal::Bare("NaN".into()),
            Token::NegativeInfinity => Literal::Bare("-Infinity".into()),
            Token::Word(w) if w.eq_ignore_ascii_case("nan") => Literal::Bare("NaN".into()),
            Token::Word(w) if w.eq_ignore_ascii_case("infinity") => {
                Literal::Bare("Infinity".into())
            }
            _ => return None,
        };
        self.pos += 1;
        Some(literal)
    }

    /// `marker`: `?` or `:name`, numbered in order.
    fn marker(&mut self) -> Result<Option<Term>> {
        match self.peek() {
            Some(Token::Marker) => self.pos += 1,
            Some(Token::Punct(":")) => {
                self.pos += 1;
                self.ident()?;
            }
            _ => return Ok(None),
        }
        self.markers += 1;
        Ok(Some(Term::Marker(self.markers - 1)))
    }

    /// `term`: additions of products of (negated) simple terms.
    fn term(&mut self) -> Result<Term> {
        let mut term = self.term_product()?;
        while self.at_p("+") || self.at_p("-") {
            let more = self.attempt(|p| {
                p.pos += 1;
                p.term_product()
            });
            match more {
                Some(_) => {
                    self.unsupported("arithmetic");
                    term = placeholder();
                }
                None => break,
            }
        }
        Ok(term)
    }

    fn term_product(&mut self) -> Result<Term> {
        let mut term = self.term_group()?;
        while self.at_p("*") || self.at_p("/") || self.at_p("%") {
            let more = self.attempt(|p| {
                p.pos += 1;
                p.term_group()
            });
            match more {
                Some(_) => {
                    self.unsupported("arithmetic");
                    term = placeholder();
                }
                None => break,
            }
        }
        Ok(term)
    }

    fn term_group(&mut self) -> Result<Term> {
        if !self.eat_p("-") {
            return self.simple_term();
        }
        match self.simple_term()? {
            Term::Literal(Literal::Bare(n)) if n.starts_with(|c: char| c.is_ascii_digit()) => {
                Ok(Term::Literal(Literal::Bare(format!("-{n}"))))
            }
            _ => {
                self.unsupported("negation");
                Ok(placeholder())
            }
        }
    }

    /// `simpleTerm`: a value, a function call, a type cast or CAST.
    fn simple_term(&mut self) -> Result<Term> {
        if let Some(literal) = self.constant() {
            return Ok(Term::Literal(literal));
        }
        if let Some(marker) = self.marker()? {
            return Ok(marker);
        }
        if self.eat_kw("null") {
            return Ok(Term::Literal(Literal::Null));
        }
        if self.at_p("(") {
            let cast = self.attempt(|p| {
                p.pos += 1;
                p.comparator_type()?;
                p.expect_p(")")?;
                p.simple_term()
            });
            if cast.is_some() {
                self.unsupported("type hints");
                return Ok(placeholder());
            }
            self.tuple_literal()?;
            self.unsupported("tuple literals");
            return Ok(placeholder());
        }
        if self.at_p("[") || self.at_p("{") {
            self.collection_literal()?;
            self.unsupported("collection literals");
            return Ok(placeholder());
        }
        if self.at_kw("cast") && self.p_at(1, "(") {
            self.pos += 2;
            self.simple_term()?;
            self.expect_kw("as")?;
            self.native_type()?;
            self.expect_p(")")?;
            self.unsupported("CAST");
            return Ok(placeholder());
        }
        let (keyspace, name) = self.function_name()?;
        self.expect_p("(")?;
        let mut arguments = 0;
        if !self.eat_p(")") {
            loop {
                self.term()?;
                arguments += 1;
                if !self.eat_p(",") {
                    break;
                }
            }
            self.expect_p(")")?;
        }
        match (keyspace, name.as_str(), arguments) {
            (None, "now", 0) => Ok(Term::Literal(Literal::Now)),
            (None, "uuid", 0) => Ok(Term::Literal(Literal::RandomUuid)),
            _ => {
                self.unsupported("function calls");
                Ok(placeholder())
            }
        }
    }

    /// `tupleLiteral`: `(term, …)`.
    fn tuple_literal(&mut self) -> Result<()> {
        self.expect_p("(")?;
        self.term()?;
        while self.eat_p(",") {
            self.term()?;
        }
        self.expect_p(")")
    }

    /// A list, set, map or user type literal.
    fn collection_literal(&mut self) -> Result<()> {
        if self.eat_p("[") {
            if !self.eat_p("]") {
                self.term()?;
                while self.eat_p(",") {
                    self.term()?;
                }
                self.expect_p("]")?;
            }
            return Ok(());
        }
        self.expect_p("{")?;
        if self.eat_p("}") {
            return Ok(());
        }
        let collection = self.attempt(|p| {
            p.term()?;
            if p.eat_p(":") {
                p.term()?;
                while p.eat_p(",") {
                    p.term()?;
                    p.expect_p(":")?;
                    p.term()?;
                }
            } else {
                while p.eat_p(",") {
                    p.term()?;
                }
            }
            p.expect_p("}")
        });
        if collection.is_some() {
            return Ok(());
        }
        loop {
            self.ident()?;
            self.expect_p(":")?;
            self.term()?;
            if !self.eat_p(",") {
                break;
            }
        }
        self.expect_p("}")
    }

    /// `fullMapLiteral` of constants, as properties and role options take.
    fn property_map(&mut self) -> Result<()> {
        self.expect_p("{")?;
        if self.eat_p("}") {
            return Ok(());
        }
        loop {
            self.constant_term("property name")?;
            self.expect_p(":")?;
            self.constant_term("property value")?;
            if !self.eat_p(",") {
                break;
            }
        }
        self.expect_p("}")
    }

    /// A term that must be a lone constant.
    fn constant_term(&mut self, what: &str) -> Result<()> {
        let start = self.pos;
        self.term()?;
        let constant = self.pos == start + 1
            && matches!(
                self.tokens[start].token,
                Token::Str(_)
                    | Token::Integer(_)
                    | Token::Float(_)
                    | Token::Boolean(_)
                    | Token::Duration(_)
                    | Token::Uuid(_)
                    | Token::Hex(_)
                    | Token::NegativeNaN
                    | Token::NegativeInfinity
            );
        let named = self.pos == start + 1
            && matches!(&self.tokens[start].token, Token::Word(w)
                if w.eq_ignore_ascii_case("nan") || w.eq_ignore_ascii_case("infinity"));
        if !(constant || named) {
            self.recognize(format!("Invalid {what}"));
        }
        Ok(())
    }

    /// `intValue`: an integer or a marker.
    fn int_value(&mut self) -> Result<Term> {
        if let Some(Token::Integer(n)) = self.peek() {
            let term = Term::Literal(Literal::Bare(n.to_string()));
            self.pos += 1;
            return Ok(term);
        }
        self.marker()?.ok_or_else(|| self.expected("an integer"))
    }

    /// `properties`: `name = value AND …`, each name once.
    fn properties(&mut self, seen: &mut HashSet<String>) -> Result<()> {
        loop {
            self.property(seen)?;
            if !self.eat_kw("and") {
                return Ok(());
            }
        }
    }

    fn property(&mut self, seen: &mut HashSet<String>) -> Result<()> {
        let name = self.ident()?;
        self.expect_p("=")?;
        if self.at_p("{") {
            self.property_map()?;
        } else if self.constant().is_none() {
            match self.peek() {
                Some(Token::Word(w)) if keywords::is_keyword(w) && keywords::is_name(w) => {
                    self.pos += 1
                }
                _ => return Err(self.expected("a property value")),
            }
        }
        if !seen.insert(name.clone()) {
            self.recognize(format!("Multiple definition for property {name}"));
        }
        Ok(())
    }

    // Selectors.

    /// `selectors`: `*` or selectors, as the fixture evaluates them.
    fn selectors(&mut self) -> Result<Selection> {
        if self.eat_p("*") {
            return Ok(Selection::All);
        }
        let mut selectors = vec![self.selector()?];
        while self.eat_p(",") {
            selectors.push(self.selector()?);
        }
        if let [Selector::Count] = selectors.as_slice() {
            return Ok(Selection::Count);
        }
        let mut columns = Vec::new();
        for selector in selectors {
            match selector {
                Selector::Column(name) => columns.push(name),
                _ => self.unsupported("selectors other than columns and COUNT(*)"),
            }
        }
        Ok(Selection::Columns(columns))
    }

    fn selector(&mut self) -> Result<Selector> {
        let selector = self.selection_sum()?;
        if self.eat_kw("as") {
            self.ident()?;
            return Ok(Selector::Other);
        }
        Ok(selector)
    }

    /// `unaliasedSelector`.
    fn selection_sum(&mut self) -> Result<Selector> {
        let mut selector = self.selection_product()?;
        while self.at_p("+") || self.at_p("-") {
            let more = self.attempt(|p| {
                p.pos += 1;
                p.selection_product()
            });
            match more {
                Some(_) => selector = Selector::Other,
                None => break,
            }
        }
        Ok(selector)
    }

    fn selection_product(&mut self) -> Result<Selector> {
        let mut selector = self.selection_group()?;
        while self.at_p("*") || self.at_p("/") || self.at_p("%") {
            let more = self.attempt(|p| {
                p.pos += 1;
                p.selection_group()
            });
            match more {
                Some(_) => selector = Selector::Other,
                None => break,
            }
        }
        Ok(selector)
    }

    fn selection_group(&mut self) -> Result<Selector> {
        if self.eat_p("-") {
            self.selection_group()?;
            return Ok(Selector::Other);
        }
        let selector = self.selection_without_field()?;
        match self.selector_modifiers()? {
            true => Ok(Selector::Other),
            false => Ok(selector),
        }
    }

    /// `selectorModifier`: field and element selections; whether there were any.
    fn selector_modifiers(&mut self) -> Result<bool> {
        let mut any = false;
        loop {
            if self.at_p(".") {
                let field = self.attempt(|p| {
                    p.pos += 1;
                    p.ident()
                });
                if field.is_none() {
                    return Ok(any);
                }
            } else if self.eat_p("[") {
                if self.eat_p_range() {
                    self.term()?;
                } else {
                    self.term()?;
                    if self.eat_p_range() && !self.at_p("]") {
                        self.term()?;
                    }
                }
                self.expect_p("]")?;
            } else {
                return Ok(any);
            }
            any = true;
        }
    }

    fn eat_p_range(&mut self) -> bool {
        let found = self.peek() == Some(&Token::Range);
        self.pos += usize::from(found);
        found
    }

    fn selection_without_field(&mut self) -> Result<Selector> {
        if self.at_p("(") {
            let hint = self.attempt(|p| {
                p.pos += 1;
                p.comparator_type()?;
                p.expect_p(")")?;
                p.selection_without_field()
            });
            if hint.is_none() {
                self.expect_p("(")?;
                self.selection_sum()?;
                while self.eat_p(",") {
                    self.selection_sum()?;
                }
                self.expect_p(")")?;
            }
            return Ok(Selector::Other);
        }
        if self.eat_p("[") {
            if !self.eat_p("]") {
                self.selection_sum()?;
                while self.eat_p(",") {
                    self.selection_sum()?;
                }
                self.expect_p("]")?;
            }
            return Ok(Selector::Other);
        }
        if self.eat_p("{") {
            if self.eat_p("}") {
                return Ok(Selector::Other);
            }
            self.selection_sum()?;
            if self.eat_p(":") {
                self.selection_sum()?;
                while self.eat_p(",") {
                    self.selection_sum()?;
                    self.expect_p(":")?;
                    self.selection_sum()?;
                }
            } else {
                while self.eat_p(",") {
                    self.selection_sum()?;
                }
            }
            self.expect_p("}")?;
            return Ok(Selector::Other);
        }
        self.simple_selector()
    }

    /// `simpleUnaliasedSelector`: a column, a literal or a function of selectors.
    fn simple_selector(&mut self) -> Result<Selector> {
        if self.at_kw("count") && self.p_at(1, "(") && self.p_at(2, "*") {
            self.pos += 3;
            self.expect_p(")")?;
            return Ok(Selector::Count);
        }
        if ["writetime", "maxwritetime", "ttl"]
            .iter()
            .any(|k| self.at_kw(k))
            && self.p_at(1, "(")
        {
            self.pos += 2;
            self.ident()?;
            self.selector_modifiers()?;
            self.expect_p(")")?;
            return Ok(Selector::Other);
        }
        if self.at_kw("cast") && self.p_at(1, "(") {
            self.pos += 2;
            self.selection_sum()?;
            self.expect_kw("as")?;
            self.native_type()?;
            self.expect_p(")")?;
            return Ok(Selector::Other);
        }
        let call = self.attempt(|p| {
            let (keyspace, name) = p.function_name()?;
            p.expect_p("(")?;
            let mut one = false;
            let mut arguments = 0;
            if !p.eat_p(")") {
                loop {
                    let start = p.pos;
                    p.selection_sum()?;
                    one = arguments == 0
                        && p.pos == start + 1
                        && p.tokens[start].token == Token::Integer("1");
                    arguments += 1;
                    if !p.eat_p(",") {
                        break;
                    }
                }
                p.expect_p(")")?;
            }
            Ok(keyspace.is_none() && name == "count" && arguments == 1 && one)
        });
        match call {
            Some(true) => return Ok(Selector::Count),
            Some(false) => return Ok(Selector::Other),
            None => {}
        }
        if let Some(Token::Word(_) | Token::Quoted(_)) = self.peek() {
            if let Some(name) = self.attempt(Self::ident) {
                return Ok(Selector::Column(name));
            }
        }
        if self.constant().is_some() || self.eat_kw("null") || self.marker()?.is_some() {
            return Ok(Selector::Other);
        }
        Err(self.expected("a selector"))
    }

    // WHERE clauses.

    /// `whereClause`: relations joined by AND, as the fixture evaluates them.
    fn where_clause(&mut self) -> Result<Vec<Condition>> {
        let mut conditions = Vec::new();
        loop {
            match self.relation_or_expression()? {
                Some(condition) => conditions.push(condition),
                None => self.unsupported("this WHERE clause"),
            }
            if !self.eat_kw("and") {
                return Ok(conditions);
            }
        }
    }

    fn relation_or_expression(&mut self) -> Result<Option<Condition>> {
        if self.peek() == Some(&Token::ExprOpen) {
            self.pos += 1;
            self.schema_name("index")?;
            self.expect_p(",")?;
            self.term()?;
            self.expect_p(")")?;
            return Ok(None);
        }
        self.relation()
    }

    fn relation_type(&mut self) -> Option<&'static str> {
        let op = ["=", "<", "<=", ">", ">=", "!="]
            .into_iter()
            .find(|op| self.at_p(op))?;
        self.pos += 1;
        Some(op)
    }

    fn relation(&mut self) -> Result<Option<Condition>> {
        if self.at_kw("token") {
            self.pos += 1;
            self.identifier_tuple()?;
            if self.eat_kw("between") {
                self.term()?;
                self.expect_kw("and")?;
                self.term()?;
            } else {
                self.relation_type()
                    .ok_or_else(|| self.expected("an operator"))?;
                self.term()?;
            }
            return Ok(None);
        }
        if self.at_p("(") {
            let tuple = self.attempt(|p| {
                p.identifier_tuple()?;
                p.multi_column_relation()
            });
            if tuple.is_none() {
                self.expect_p("(")?;
                self.relation()?;
                self.expect_p(")")?;
            }
            return Ok(None);
        }
        let column = self.cident()?;
        if self.eat_p("[") {
            self.term()?;
            self.expect_p("]")?;
            self.relation_type()
                .ok_or_else(|| self.expected("an operator"))?;
            self.term()?;
            return Ok(None);
        }
        if let Some(op) = self.relation_type() {
            let term = self.term()?;
            return Ok((op == "=").then(|| Condition {
                column,
                terms: vec![term],
            }));
        }
        if self.eat_kw("between") {
            self.term()?;
            self.expect_kw("and")?;
            self.term()?;
            return Ok(None);
        }
        if self.eat_kw("like") {
            self.term()?;
            return Ok(None);
        }
        if self.eat_kw("is") {
            self.expect_kw("not")?;
            self.expect_kw("null")?;
            return Ok(None);
        }
        let negated = self.eat_kw("not");
        if self.eat_kw("in") {
            let terms = self.in_values()?;
            return Ok(terms
                .filter(|_| !negated)
                .map(|terms| Condition { column, terms }));
        }
        if self.eat_kw("contains") {
            self.eat_kw("key");
            self.term()?;
            return Ok(None);
        }
        Err(self.expected("an operator"))
    }

    /// `singleColumnInValues`: `(terms)` (the terms) or a marker (none).
    fn in_values(&mut self) -> Result<Option<Vec<Term>>> {
        if self.marker()?.is_some() {
            return Ok(None);
        }
        self.expect_p("(")?;
        let mut terms = Vec::new();
        if !self.eat_p(")") {
            terms.push(self.term()?);
            while self.eat_p(",") {
                terms.push(self.term()?);
            }
            self.expect_p(")")?;
        }
        Ok(Some(terms))
    }

    /// `tupleOfIdentifiers`: `(column, …)`.
    fn identifier_tuple(&mut self) -> Result<()> {
        self.expect_p("(")?;
        self.cident()?;
        while self.eat_p(",") {
            self.cident()?;
        }
        self.expect_p(")")
    }

    /// What follows a tuple of columns: IN, a comparison or BETWEEN.
    fn multi_column_relation(&mut self) -> Result<()> {
        if self.eat_kw("in") {
            if self.marker()?.is_some() {
                return Ok(());
            }
            self.expect_p("(")?;
            if self.eat_p(")") {
                return Ok(());
            }
            loop {
                if self.marker()?.is_none() {
                    self.tuple_literal()?;
                }
                if !self.eat_p(",") {
                    break;
                }
            }
            return self.expect_p(")");
        }
        if self.eat_kw("between") {
            self.multi_column_value()?;
            self.expect_kw("and")?;
            return self.multi_column_value();
        }
        self.relation_type()
            .ok_or_else(|| self.expected("an operator"))?;
        self.multi_column_value()
    }

    fn multi_column_value(&mut self) -> Result<()> {
        match self.marker()? {
            Some(_) => Ok(()),
            None => self.tuple_literal(),
        }
    }

    /// `IF EXISTS` or `IF conditions` of an UPDATE or DELETE.
    fn update_conditions(&mut self) -> Result<()> {
        if !self.eat_kw("if") {
            return Ok(());
        }
        self.unsupported("conditional updates (IF)");
        if self.eat_kw("exists") {
            return Ok(());
        }
        loop {
            self.cident()?;
            if self.eat_p("[") {
                self.term()?;
                self.expect_p("]")?;
            } else if self.at_p(".") {
                self.pos += 1;
                self.ident()?;
            } else if self.eat_kw("contains") {
                self.eat_kw("key");
                self.term()?;
                if !self.eat_kw("and") {
                    return Ok(());
                }
                continue;
            }
            if self.eat_kw("in") {
                self.in_values()?;
            } else {
                self.relation_type()
                    .ok_or_else(|| self.expected("an operator"))?;
                self.term()?;
            }
            if !self.eat_kw("and") {
                return Ok(());
            }
        }
    }

    /// `usingClause`: TIMESTAMP and TTL, which the fixture ignores.
    fn using_clause(&mut self) -> Result<()> {
        if !self.eat_kw("using") {
            return Ok(());
        }
        loop {
            if !(self.eat_kw("timestamp") || self.eat_kw("ttl")) {
                return Err(self.expected("TIMESTAMP or TTL"));
            }
            self.int_value()?;
            if !self.eat_kw("and") {
                return Ok(());
            }
        }
    }

    // Statements.

    fn statement(&mut self) -> Result<Stmt> {
        let Some(first) = self.word_at(0) else {
            return Err(self.expected("a statement"));
        };
        match first.to_ascii_lowercase().as_str() {
            "select" => self.evaluated(Self::select),
            "insert" => self.evaluated(Self::insert),
            "update" => self.evaluated(Self::update),
            "delete" => self.evaluated(Self::delete),
            "begin" => self.batch(),
            "use" => {
                self.pos += 1;
                Ok(Stmt::Use(self.keyspace_name()?))
            }
            "truncate" => self.evaluated(|p| {
                p.pos += 1;
                p.eat_kw("table");
                Ok(Stmt::Truncate(p.table_name()?))
            }),
            "create" => self.create(),
            "drop" => self.drop(),
            "alter" => self.alter(),
            "grant" | "revoke" => self.grant_or_revoke(),
            "list" => self.list(),
            "describe" | "desc" => self.describe(),
            "add" => self.add_identity(),
            _ => Err(self.expected("a statement")),
        }
    }

    /// Reads a statement the fixture evaluates, which becomes [`Stmt::Unsupported`] when it
    /// uses a feature the fixture lacks.
    fn evaluated(&mut self, rule: impl FnOnce(&mut Self) -> Result<Stmt>) -> Result<Stmt> {
        let outer = self.unsupported.take();
        let stmt = rule(self)?;
        let what = std::mem::replace(&mut self.unsupported, outer);
        let Some(what) = what else {
            return Ok(stmt);
        };
        let Some((action, table)) = stmt.actions().first().map(|(a, t)| (*a, t.cloned())) else {
            return Ok(stmt);
        };
        Ok(Stmt::Unsupported {
            action,
            table,
            what,
        })
    }

    /// A statement the fixture reads but does not evaluate.
    fn other(action: Action, table: Option<TableRef>) -> Stmt {
        Stmt::Unsupported {
            action,
            table,
            what: format!("{} statements", action.name()),
        }
    }

    fn select(&mut self) -> Result<Stmt> {
        self.expect_kw("select")?;
        if self.at_kw("json") {
            let json = self.attempt(|p| {
                p.pos += 1;
                p.select_clause()
            });
            if json.is_some() {
                self.unsupported("SELECT JSON");
                self.expect_kw("from")?;
                return self.select_rest(Selection::All);
            }
        }
        let selection = self.select_clause()?;
        self.expect_kw("from")?;
        self.select_rest(selection)
    }

    /// `selectClause`: `[DISTINCT] selectors`.
    fn select_clause(&mut self) -> Result<Selection> {
        if self.at_kw("distinct") {
            let distinct = self.attempt(|p| {
                p.pos += 1;
                p.selectors()
            });
            if let Some(selection) = distinct {
                self.unsupported("SELECT DISTINCT");
                return Ok(selection);
            }
        }
        self.selectors()
    }

    /// A SELECT from its table on.
    fn select_rest(&mut self, selection: Selection) -> Result<Stmt> {
        let table = self.table_name()?;
        let conditions = match self.eat_kw("where") {
            true => self.where_clause()?,
            false => Vec::new(),
        };
        if self.at_kw("group") {
            self.pos += 1;
            self.expect_kw("by")?;
            self.selection_sum()?;
            while self.eat_p(",") {
                self.selection_sum()?;
            }
            self.unsupported("GROUP BY");
        }
        if self.eat_kw("order") {
            self.expect_kw("by")?;
            loop {
                self.cident()?;
                if self.eat_kw("ann") {
                    self.expect_kw("of")?;
                    self.term()?;
                }
                let _ = self.eat_kw("asc") || self.eat_kw("desc");
                if !self.eat_p(",") {
                    break;
                }
            }
            self.unsupported("ORDER BY");
        }
        if self.at_kw("per") {
            self.pos += 1;
            self.expect_kw("partition")?;
            self.expect_kw("limit")?;
            self.int_value()?;
            self.unsupported("PER PARTITION LIMIT");
        }
        let limit = match self.eat_kw("limit") {
            true => Some(self.int_value()?),
            false => None,
        };
        if self.eat_kw("allow") {
            self.expect_kw("filtering")?;
        }
        Ok(Stmt::Select {
            table,
            selection,
            conditions,
            limit,
        })
    }

    fn insert(&mut self) -> Result<Stmt> {
        self.expect_kw("insert")?;
        self.expect_kw("into")?;
        let table = self.table_name()?;
        if self.eat_kw("json") {
            if let Some(Token::Str(_)) = self.peek() {
                self.pos += 1;
            } else if self.marker()?.is_none() {
                return Err(self.expected("a JSON value"));
            }
            if self.eat_kw("default") && !(self.eat_kw("null") || self.eat_kw("unset")) {
                return Err(self.expected("NULL or UNSET"));
            }
            if self.if_not_exists()? {
                self.unsupported("INSERT IF NOT EXISTS");
            }
            self.using_clause()?;
            self.unsupported("INSERT JSON");
            return Ok(Stmt::Insert {
                table,
                columns: Vec::new(),
                values: Vec::new(),
            });
        }
        self.expect_p("(")?;
        let mut columns = vec![self.cident()?];
        while self.eat_p(",") {
            columns.push(self.cident()?);
        }
        self.expect_p(")")?;
        self.expect_kw("values")?;
        self.expect_p("(")?;
        let mut values = vec![self.term()?];
        while self.eat_p(",") {
            values.push(self.term()?);
        }
        self.expect_p(")")?;
        if self.if_not_exists()? {
            self.unsupported("INSERT IF NOT EXISTS");
        }
        self.using_clause()?;
        Ok(Stmt::Insert {
            table,
            columns,
            values,
        })
    }

    fn update(&mut self) -> Result<Stmt> {
        self.expect_kw("update")?;
        let table = self.table_name()?;
        self.using_clause()?;
        self.expect_kw("set")?;
        let mut assignments = Vec::new();
        loop {
            if let Some(assignment) = self.column_operation()? {
                assignments.push(assignment);
            }
            if !self.eat_p(",") {
                break;
            }
        }
        self.expect_kw("where")?;
        let conditions = self.where_clause()?;
        self.update_conditions()?;
        Ok(Stmt::Update {
            table,
            assignments,
            conditions,
        })
    }

    /// `columnOperation`: `column = term` as the fixture evaluates it, or another update.
    fn column_operation(&mut self) -> Result<Option<(String, Term)>> {
        let column = self.cident()?;
        if self.eat_p("+=") || self.eat_p("-=") {
            self.term()?;
            self.unsupported("updates other than column = value");
            return Ok(None);
        }
        if self.eat_p("[") {
            self.term()?;
            self.expect_p("]")?;
            self.expect_p("=")?;
            self.term()?;
            self.unsupported("updates other than column = value");
            return Ok(None);
        }
        if self.at_p(".") {
            self.pos += 1;
            self.ident()?;
            self.expect_p("=")?;
            self.term()?;
            self.unsupported("updates other than column = value");
            return Ok(None);
        }
        self.expect_p("=")?;
        let value = self.attempt(|p| {
            let term = p.term()?;
            match p.eat_p("+") {
                true => Ok((term, Some(p.cident()?))),
                false => Ok((term, None)),
            }
        });
        match value {
            Some((term, None)) => return Ok(Some((column, term))),
            Some((_, Some(other))) => {
                if other != column {
                    self.recognize(
                        "Only expressions of the form X = <value> + X are supported.".into(),
                    );
                }
            }
            None => {
                let other = self.cident()?;
                if self.eat_p("+") || self.eat_p("-") {
                    self.term()?;
                } else {
                    match self.advance()? {
                        Token::Integer(_) => {}
                        _ => return Err(self.expected("'+', '-' or an integer")),
                    }
                }
                if other != column {
                    self.recognize(
                        "Only expressions of the form X = X +/- <value> are supported.".into(),
                    );
                }
            }
        }
        self.unsupported("updates other than column = value");
        Ok(None)
    }

    fn delete(&mut self) -> Result<Stmt> {
        self.expect_kw("delete")?;
        let mut columns = Vec::new();
        if !self.at_kw("from") {
            loop {
                columns.push(self.cident()?);
                if self.eat_p("[") {
                    self.term()?;
                    self.expect_p("]")?;
                    self.unsupported("deleting elements");
                } else if self.eat_p(".") {
                    self.ident()?;
                    self.unsupported("deleting fields");
                }
                if !self.eat_p(",") {
                    break;
                }
            }
        }
        self.expect_kw("from")?;
        let table = self.table_name()?;
        if self.eat_kw("using") {
            self.expect_kw("timestamp")?;
            self.int_value()?;
        }
        self.expect_kw("where")?;
        let conditions = self.where_clause()?;
        self.update_conditions()?;
        Ok(Stmt::Delete {
            table,
            columns,
            conditions,
        })
    }

    /// `BEGIN [UNLOGGED | COUNTER] BATCH [USING …] (INSERT | UPDATE | DELETE [;])* APPLY BATCH`.
    fn batch(&mut self) -> Result<Stmt> {
        self.expect_kw("begin")?;
        let _ = self.eat_kw("unlogged") || self.eat_kw("counter");
        self.expect_kw("batch")?;
        self.using_clause()?;
        let mut statements = Vec::new();
        loop {
            let stmt = match self.word_at(0).map(str::to_ascii_lowercase).as_deref() {
                Some("insert") => self.evaluated(Self::insert)?,
                Some("update") => self.evaluated(Self::update)?,
                Some("delete") => self.evaluated(Self::delete)?,
                _ => break,
            };
            statements.push(stmt);
            self.eat_p(";");
        }
        self.expect_kw("apply")?;
        self.expect_kw("batch")?;
        Ok(Stmt::Batch(statements))
    }

    fn create(&mut self) -> Result<Stmt> {
        self.expect_kw("create")?;
        if self.eat_kw("keyspace") {
            let if_not_exists = self.if_not_exists()?;
            let name = self.keyspace_name()?;
            self.expect_kw("with")?;
            self.properties(&mut HashSet::new())?;
            return Ok(Stmt::CreateKeyspace {
                name,
                if_not_exists,
            });
        }
        if self.eat_kw("table") {
            return self.evaluated(Self::create_table);
        }
        if self.at_kw("custom") || self.at_kw("index") {
            return self.create_index();
        }
        if self.eat_kw("materialized") {
            self.expect_kw("view")?;
            self.if_not_exists()?;
            let view = self.table_name()?;
            self.expect_kw("as")?;
            self.expect_kw("select")?;
            self.selectors()?;
            self.expect_kw("from")?;
            self.table_name()?;
            if self.eat_kw("where") {
                self.where_clause()?;
            }
            self.expect_kw("primary")?;
            self.expect_kw("key")?;
            self.primary_key_columns()?;
            if self.eat_kw("with") {
                self.table_properties(false)?;
            }
            return Ok(Self::other(Action::CreateMaterializedView, Some(view)));
        }
        if self.eat_kw("trigger") {
            self.if_not_exists()?;
            self.ident()?;
            self.expect_kw("on")?;
            let table = self.table_name()?;
            self.expect_kw("using")?;
            self.string()?;
            return Ok(Self::other(Action::CreateTrigger, Some(table)));
        }
        if self.eat_kw("type") {
            self.if_not_exists()?;
            self.user_type_name()?;
            self.expect_p("(")?;
            loop {
                self.ident()?;
                self.comparator_type()?;
                if !self.eat_p(",") {
                    break;
                }
                if self.at_p(")") {
                    break;
                }
            }
            self.expect_p(")")?;
            return Ok(Self::other(Action::CreateType, None));
        }
        if self.eat_kw("or") {
            self.expect_kw("replace")?;
            if !(self.at_kw("function") || self.at_kw("aggregate")) {
                return Err(self.expected("FUNCTION or AGGREGATE"));
            }
        }
        if self.eat_kw("function") {
            self.create_function()?;
            return Ok(Self::other(Action::CreateFunction, None));
        }
        if self.eat_kw("aggregate") {
            self.create_aggregate()?;
            return Ok(Self::other(Action::CreateAggregate, None));
        }
        if self.eat_kw("role") {
            self.if_not_exists()?;
            self.role_name()?;
            if self.eat_kw("with") {
                self.role_options()?;
            }
            return Ok(Self::other(Action::CreateRole, None));
        }
        if self.eat_kw("user") {
            self.if_not_exists()?;
            self.user_options()?;
            return Ok(Self::other(Action::CreateUser, None));
        }
        Err(self.expected("what to create"))
    }

    fn string(&mut self) -> Result<()> {
        match self.advance()? {
            Token::Str(_) => Ok(()),
            _ => {
                self.pos -= 1;
                Err(self.expected("a string"))
            }
        }
    }

    /// `CREATE TABLE` from the table's name on: a definition, or `LIKE` another table.
    fn create_table(&mut self) -> Result<Stmt> {
        let if_not_exists = self.if_not_exists()?;
        let table = self.table_name()?;
        if self.eat_kw("like") {
            self.table_name()?;
            if self.eat_kw("with") {
                let mut seen = HashSet::new();
                loop {
                    if !self.eat_kw("indexes") {
                        self.property(&mut seen)?;
                    }
                    if !self.eat_kw("and") {
                        break;
                    }
                }
            }
            self.unsupported("CREATE TABLE LIKE");
            return Ok(Stmt::CreateTable {
                table,
                if_not_exists,
                columns: Vec::new(),
                partition_key: Vec::new(),
                clustering: Vec::new(),
            });
        }
        self.expect_p("(")?;
        let (mut columns, mut partition_key, mut clustering) = (Vec::new(), Vec::new(), vec![]);
        loop {
            if self.eat_kw("primary") {
                self.expect_kw("key")?;
                (partition_key, clustering) = self.primary_key_columns()?;
            } else {
                let name = self.ident()?;
                let ty = self.comparator_type()?;
                if self.eat_kw("static") {
                    self.unsupported("static columns");
                }
                if self.at_kw("masked") {
                    self.column_mask()?;
                    self.unsupported("masked columns");
                }
                if self.eat_kw("primary") {
                    self.expect_kw("key")?;
                    partition_key = vec![name.clone()];
                }
                match ty {
                    Some(ty) => columns.push((name, ty)),
                    None => self.unsupported("this column type"),
                }
            }
            if !self.eat_p(",") || self.at_p(")") {
                break;
            }
        }
        self.expect_p(")")?;
        if self.eat_kw("with") {
            self.table_properties(true)?;
        }
        Ok(Stmt::CreateTable {
            table,
            if_not_exists,
            columns,
            partition_key,
            clustering,
        })
    }

    /// `(key, clustering, …)` where the key is a column or `(columns)`.
    fn primary_key_columns(&mut self) -> Result<(Vec<String>, Vec<String>)> {
        self.expect_p("(")?;
        let partition_key = match self.eat_p("(") {
            true => {
                let mut key = vec![self.ident()?];
                while self.eat_p(",") {
                    key.push(self.ident()?);
                }
                self.expect_p(")")?;
                key
            }
            false => vec![self.ident()?],
        };
        let mut clustering = Vec::new();
        while self.eat_p(",") {
            clustering.push(self.ident()?);
        }
        self.expect_p(")")?;
        Ok((partition_key, clustering))
    }

    /// Table or view properties: `name = value`, `COMPACT STORAGE` (tables only) and
    /// `CLUSTERING ORDER BY (…)`, joined by AND.
    fn table_properties(&mut self, table: bool) -> Result<()> {
        let mut seen = HashSet::new();
        loop {
            if self.at_kw("compact") && self.kw_at(1, "storage") {
                self.pos += 2;
                if !table {
                    self.recognize(
                        "COMPACT STORAGE tables are not allowed starting with version 4.0".into(),
                    );
                }
            } else if self.at_kw("clustering") && self.kw_at(1, "order") {
                self.pos += 2;
                self.expect_kw("by")?;
                self.expect_p("(")?;
                loop {
                    self.ident()?;
                    if !(self.eat_kw("asc") || self.eat_kw("desc")) {
                        return Err(self.expected("ASC or DESC"));
                    }
                    if !self.eat_p(",") {
                        break;
                    }
                }
                self.expect_p(")")?;
            } else {
                self.property(&mut seen)?;
            }
            if !self.eat_kw("and") {
                return Ok(());
            }
        }
    }

    /// `MASKED WITH DEFAULT` or `MASKED WITH function(arguments)`.
    fn column_mask(&mut self) -> Result<()> {
        self.expect_kw("masked")?;
        self.expect_kw("with")?;
        if self.at_kw("default") && !self.p_at(1, "(") && !self.p_at(1, ".") {
            self.pos += 1;
            return Ok(());
        }
        self.function_name()?;
        self.expect_p("(")?;
        if !self.eat_p(")") {
            self.term()?;
            while self.eat_p(",") {
                self.term()?;
            }
            self.expect_p(")")?;
        }
        Ok(())
    }

    fn create_index(&mut self) -> Result<Stmt> {
        self.eat_kw("custom");
        self.expect_kw("index")?;
        self.if_not_exists()?;
        if !self.at_kw("on") {
            self.schema_name("index")?;
        }
        self.expect_kw("on")?;
        let table = self.table_name()?;
        self.expect_p("(")?;
        if !self.eat_p(")") {
            loop {
                let wrapped = ["values", "keys", "entries", "full"]
                    .iter()
                    .any(|k| self.at_kw(k))
                    && self.p_at(1, "(");
                if wrapped {
                    self.pos += 2;
                    self.cident()?;
                    self.expect_p(")")?;
                } else {
                    self.cident()?;
                }
                if !self.eat_p(",") {
                    break;
                }
            }
            self.expect_p(")")?;
        }
        if self.eat_kw("using") {
            self.string()?;
        }
        if self.eat_kw("with") {
            self.properties(&mut HashSet::new())?;
        }
        Ok(Self::other(Action::CreateIndex, Some(table)))
    }

    /// `CREATE FUNCTION` from `[IF NOT EXISTS]` on.
    fn create_function(&mut self) -> Result<()> {
        self.if_not_exists()?;
        self.function_name()?;
        self.expect_p("(")?;
        if !self.eat_p(")") {
            loop {
                self.ident()?;
                self.comparator_type()?;
                if !self.eat_p(",") {
                    break;
                }
            }
            self.expect_p(")")?;
        }
        if self.eat_kw("returns") {
            self.expect_kw("null")?;
        } else {
            self.expect_kw("called")?;
        }
        self.expect_kw("on")?;
        self.expect_kw("null")?;
        self.expect_kw("input")?;
        self.expect_kw("returns")?;
        self.comparator_type()?;
        self.expect_kw("language")?;
        match self.peek() {
            Some(Token::Word(w)) if keywords::is_identifier(w) => self.pos += 1,
            _ => return Err(self.expected("a language")),
        }
        self.expect_kw("as")?;
        self.string()
    }

    /// `CREATE AGGREGATE` from `[IF NOT EXISTS]` on.
    fn create_aggregate(&mut self) -> Result<()> {
        self.if_not_exists()?;
        self.function_name()?;
        self.argument_types()?;
        self.expect_kw("sfunc")?;
        self.name_with(keywords::is_function_name, "a function name")?;
        self.expect_kw("stype")?;
        self.comparator_type()?;
        if self.eat_kw("finalfunc") {
            self.name_with(keywords::is_function_name, "a function name")?;
        }
        if self.eat_kw("initcond") {
            self.term()?;
        }
        Ok(())
    }

    /// `(type, …)`, possibly empty.
    fn argument_types(&mut self) -> Result<()> {
        self.expect_p("(")?;
        if self.eat_p(")") {
            return Ok(());
        }
        self.comparator_type()?;
        while self.eat_p(",") {
            self.comparator_type()?;
        }
        self.expect_p(")")
    }

    /// `roleOptions`: options joined by AND, each at most once, the password given one way.
    fn role_options(&mut self) -> Result<()> {
        let mut seen = HashSet::new();
        loop {
            let option = if self.eat_kw("password") {
                self.expect_p("=")?;
                self.string()?;
                "password"
            } else if self.eat_kw("generated") {
                self.expect_kw("password")?;
                "generated password"
            } else if self.eat_kw("hashed") {
                self.expect_kw("password")?;
                self.expect_p("=")?;
                self.string()?;
                "hashed password"
            } else if self.eat_kw("options") {
                self.expect_p("=")?;
                self.property_map()?;
                "options"
            } else if self.at_kw("superuser") || self.at_kw("login") {
                let option = match self.eat_kw("superuser") {
                    true => "superuser",
                    false => {
                        self.pos += 1;
                        "login"
                    }
                };
                self.expect_p("=")?;
                match self.advance()? {
                    Token::Boolean(_) => option,
                    _ => {
                        self.pos -= 1;
                        return Err(self.expected("true or false"));
                    }
                }
            } else if self.eat_kw("access") {
                let from = match self.eat_kw("to") {
                    true => false,
                    false => {
                        self.expect_kw("from")?;
                        true
                    }
                };
                let all = self.eat_kw("all");
                self.expect_kw(if from { "cidrs" } else { "datacenters" })?;
                if !all {
                    self.expect_p("{")?;
                    self.string()?;
                    while self.eat_p(",") {
                        self.string()?;
                    }
                    self.expect_p("}")?;
                }
                if from {
                    "access from cidrs"
                } else {
                    "access to datacenters"
                }
            } else {
                return Err(self.expected("a role option"));
            };
            if !seen.insert(option) && !option.starts_with("access") {
                self.recognize(format!("Multiple definition for role option '{option}'"));
            }
            if !self.eat_kw("and") {
                break;
            }
        }
        self.passwords_exclusive(&seen);
        Ok(())
    }

    /// Refuses a password given in more than one way.
    fn passwords_exclusive(&mut self, seen: &HashSet<&str>) {
        let ways = ["password", "hashed password", "generated password"]
            .iter()
            .filter(|w| seen.contains(*w))
            .count();
        if ways > 1 {
            self.recognize("Options of the password are mutually exclusive".into());
        }
    }

    /// `username [WITH password] [SUPERUSER | NOSUPERUSER]` of CREATE and ALTER USER.
    fn user_options(&mut self) -> Result<()> {
        self.plain_name("user names")?;
        if self.eat_kw("with") {
            if self.eat_kw("hashed") {
                self.expect_kw("password")?;
                self.string()?;
            } else if self.eat_kw("generated") {
                self.expect_kw("password")?;
            } else {
                self.expect_kw("password")?;
                self.string()?;
            }
        }
        let _ = self.eat_kw("superuser") || self.eat_kw("nosuperuser");
        Ok(())
    }

    fn drop(&mut self) -> Result<Stmt> {
        self.expect_kw("drop")?;
        if self.eat_kw("keyspace") {
            let if_exists = self.if_exists()?;
            return Ok(Stmt::DropKeyspace {
                if_exists,
                name: self.keyspace_name()?,
            });
        }
        if self.eat_kw("table") {
            let if_exists = self.if_exists()?;
            return Ok(Stmt::DropTable {
                if_exists,
                table: self.table_name()?,
            });
        }
        if self.eat_kw("index") {
            self.if_exists()?;
            self.qualified("index")?;
            return Ok(Self::other(Action::DropIndex, None));
        }
        if self.eat_kw("materialized") {
            self.expect_kw("view")?;
            self.if_exists()?;
            let view = self.table_name()?;
            return Ok(Self::other(Action::DropMaterializedView, Some(view)));
        }
        if self.eat_kw("type") {
            self.if_exists()?;
            self.user_type_name()?;
            return Ok(Self::other(Action::DropType, None));
        }
        if self.at_kw("function") || self.at_kw("aggregate") {
            let action = match self.eat_kw("function") {
                true => Action::DropFunction,
                false => {
                    self.pos += 1;
                    Action::DropAggregate
                }
            };
            self.if_exists()?;
            self.function_name()?;
            if self.at_p("(") {
                self.argument_types()?;
            }
            return Ok(Self::other(action, None));
        }
        if self.eat_kw("trigger") {
            self.if_exists()?;
            self.ident()?;
            self.expect_kw("on")?;
            let table = self.table_name()?;
            return Ok(Self::other(Action::DropTrigger, Some(table)));
        }
        if self.eat_kw("role") {
            self.if_exists()?;
            self.role_name()?;
            return Ok(Self::other(Action::DropRole, None));
        }
        if self.eat_kw("user") {
            self.if_exists()?;
            self.plain_name("user names")?;
            return Ok(Self::other(Action::DropUser, None));
        }
        if self.eat_kw("identity") {
            self.if_exists()?;
            self.plain_name("identity")?;
            return Ok(Self::other(Action::DropIdentity, None));
        }
        Err(self.expected("what to drop"))
    }

    fn alter(&mut self) -> Result<Stmt> {
        self.expect_kw("alter")?;
        if self.eat_kw("keyspace") {
            self.if_exists()?;
            self.keyspace_name()?;
            self.expect_kw("with")?;
            self.properties(&mut HashSet::new())?;
            return Ok(Self::other(Action::AlterKeyspace, None));
        }
        if self.eat_kw("table") {
            self.if_exists()?;
            let table = self.table_name()?;
            self.alter_table()?;
            return Ok(Self::other(Action::AlterTable, Some(table)));
        }
        if self.eat_kw("materialized") {
            self.expect_kw("view")?;
            self.if_exists()?;
            let view = self.table_name()?;
            self.expect_kw("with")?;
            self.properties(&mut HashSet::new())?;
            return Ok(Self::other(Action::AlterMaterializedView, Some(view)));
        }
        if self.eat_kw("type") {
            self.if_exists()?;
            self.user_type_name()?;
            if self.eat_kw("alter") {
                self.ident()?;
                self.expect_kw("type")?;
                self.comparator_type()?;
            } else if self.eat_kw("add") {
                self.if_not_exists()?;
                self.ident()?;
                self.comparator_type()?;
            } else {
                self.expect_kw("rename")?;
                self.if_exists()?;
                self.renames()?;
            }
            return Ok(Self::other(Action::AlterType, None));
        }
        if self.eat_kw("role") {
            self.if_exists()?;
            self.role_name()?;
            if self.eat_kw("with") {
                self.role_options()?;
            }
            return Ok(Self::other(Action::AlterRole, None));
        }
        if self.eat_kw("user") {
            self.if_exists()?;
            self.user_options()?;
            return Ok(Self::other(Action::AlterUser, None));
        }
        Err(self.expected("what to alter"))
    }

    /// `a TO b [AND c TO d]…`
    fn renames(&mut self) -> Result<()> {
        loop {
            self.ident()?;
            self.expect_kw("to")?;
            self.ident()?;
            if !self.eat_kw("and") {
                return Ok(());
            }
        }
    }

    /// What ALTER TABLE does to the table.
    fn alter_table(&mut self) -> Result<()> {
        if self.eat_kw("alter") {
            if self.kw_at(1, "type") {
                self.cident()?;
                self.pos += 1;
                self.comparator_type()?;
                return Ok(());
            }
            self.if_exists()?;
            self.cident()?;
            if self.at_kw("masked") {
                return self.column_mask();
            }
            self.expect_kw("drop")?;
            return self.expect_kw("masked");
        }
        if self.eat_kw("add") {
            self.if_not_exists()?;
            let list = self.eat_p("(");
            loop {
                self.ident()?;
                self.comparator_type()?;
                self.eat_kw("static");
                if self.at_kw("masked") {
                    self.column_mask()?;
                }
                if !(list && self.eat_p(",")) {
                    break;
                }
            }
            if list {
                self.expect_p(")")?;
            }
            return Ok(());
        }
        if self.at_kw("drop") && self.kw_at(1, "compact") && self.kw_at(2, "storage") {
            self.pos += 3;
            return Ok(());
        }
        if self.eat_kw("drop") {
            self.if_exists()?;
            if self.eat_p("(") {
                self.ident()?;
                while self.eat_p(",") {
                    self.ident()?;
                }
                self.expect_p(")")?;
            } else {
                self.ident()?;
            }
            if self.eat_kw("using") {
                self.expect_kw("timestamp")?;
                match self.advance()? {
                    Token::Integer(_) => {}
                    _ => return Err(self.expected("an integer")),
                }
            }
            return Ok(());
        }
        if self.eat_kw("rename") {
            self.if_exists()?;
            return self.renames();
        }
        self.expect_kw("with")?;
        self.properties(&mut HashSet::new())
    }

    /// GRANT or REVOKE, of permissions on a resource or of a role.
    fn grant_or_revoke(&mut self) -> Result<Stmt> {
        let grant = self.eat_kw("grant");
        if !grant {
            self.expect_kw("revoke")?;
        }
        let to = if grant { "to" } else { "from" };
        let permissions = self.attempt(|p| {
            let permissions = p.permissions()?;
            p.expect_kw("on")?;
            let resource = p.resource()?;
            p.expect_kw(to)?;
            Ok((permissions, resource))
        });
        if let Some((permissions, resource)) = permissions {
            self.role_name()?;
            let applicable = resource.applicable();
            if !permissions.iter().any(|p| applicable.contains(p)) {
                self.recognize(
                    "Resource type does not support any of the requested permissions".into(),
                );
            }
            let action = match grant {
                true => Action::GrantPermission,
                false => Action::RevokePermission,
            };
            return Ok(Self::other(action, None));
        }
        self.role_name()?;
        self.expect_kw(to)?;
        self.role_name()?;
        let action = match grant {
            true => Action::GrantRole,
            false => Action::RevokeRole,
        };
        Ok(Self::other(action, None))
    }

    /// `permissionOrAll`: the permissions named.
    fn permissions(&mut self) -> Result<Vec<&'static str>> {
        if self.eat_kw("all") {
            self.eat_kw("permissions");
            return Ok(PERMISSIONS.to_vec());
        }
        let mut permissions = Vec::new();
        loop {
            let permission = PERMISSIONS
                .into_iter()
                .find(|p| self.at_kw(p))
                .ok_or_else(|| self.expected("a permission"))?;
            self.pos += 1;
            self.eat_kw("permission");
            permissions.push(permission);
            if !self.eat_p(",") {
                return Ok(permissions);
            }
        }
    }

    /// `resource`: data, roles, functions or MBeans.
    fn resource(&mut self) -> Result<Resource> {
        if self.at_kw("all") {
            let all = self.attempt(|p| {
                p.pos += 1;
                if p.eat_kw("keyspaces") {
                    return Ok(Resource::Keyspaces);
                }
                if p.eat_kw("roles") {
                    return Ok(Resource::Roles);
                }
                if p.eat_kw("mbeans") {
                    return Ok(Resource::Mbeans);
                }
                if p.eat_kw("tables") {
                    p.expect_kw("in")?;
                    p.expect_kw("keyspace")?;
                    p.keyspace_name()?;
                    return Ok(Resource::Keyspaces);
                }
                p.expect_kw("functions")?;
                if p.eat_kw("in") {
                    p.expect_kw("keyspace")?;
                    p.keyspace_name()?;
                }
                Ok(Resource::Functions)
            });
            if let Some(resource) = all {
                return Ok(resource);
            }
        }
        if self.eat_kw("keyspace") {
            self.keyspace_name()?;
            return Ok(Resource::Keyspaces);
        }
        if self.at_kw("role") {
            if let Some(()) = self.attempt(|p| {
                p.pos += 1;
                p.role_name()
            }) {
                return Ok(Resource::Role);
            }
        }
        if self.at_kw("function") {
            let function = self.attempt(|p| {
                p.pos += 1;
                p.function_name()?;
                p.argument_types()
            });
            if function.is_some() {
                return Ok(Resource::Function);
            }
        }
        if (self.at_kw("mbean") || self.at_kw("mbeans"))
            && matches!(self.peek_at(1), Some(Token::Str(_)))
        {
            self.pos += 2;
            return Ok(Resource::Mbeans);
        }
        self.eat_kw("table");
        self.table_name()?;
        Ok(Resource::Table)
    }

    fn list(&mut self) -> Result<Stmt> {
        self.expect_kw("list")?;
        if self.eat_kw("users") {
            return Ok(Self::other(Action::ListUsers, None));
        }
        if self.eat_kw("superusers") {
            return Ok(Self::other(Action::ListSuperusers, None));
        }
        if self.eat_kw("roles") {
            if self.eat_kw("of") {
                self.role_name()?;
            }
            self.eat_kw("norecursive");
            return Ok(Self::other(Action::ListRoles, None));
        }
        self.permissions()?;
        if self.eat_kw("on") {
            self.resource()?;
        }
        if self.eat_kw("of") {
            self.role_name()?;
        }
        self.eat_kw("norecursive");
        Ok(Self::other(Action::ListPermissions, None))
    }

    fn describe(&mut self) -> Result<Stmt> {
        self.pos += 1;
        let listing = [
            "cluster",
            "keyspaces",
            "tables",
            "types",
            "functions",
            "aggregates",
        ]
        .into_iter()
        .any(|k| self.eat_kw(k));
        if !listing {
            self.describe_one()?;
        }
        if self.eat_kw("with") {
            self.expect_kw("internals")?;
        }
        Ok(Self::other(Action::Describe, None))
    }

    /// What DESCRIBE describes, other than a listing.
    fn describe_one(&mut self) -> Result<()> {
        if self.eat_kw("full") {
            self.expect_kw("schema")?;
        } else if self.kw_at(0, "schema") {
            self.pos += 1;
        } else if self.eat_kw("only") {
            self.expect_kw("keyspace")?;
            self.optional_keyspace()?;
        } else if self.eat_kw("keyspace") {
            self.optional_keyspace()?;
        } else if self.eat_kw("table") || self.eat_kw("index") {
            self.table_name()?;
        } else if self.eat_kw("materialized") {
            self.expect_kw("view")?;
            self.table_name()?;
        } else if self.at_kw("type") && !self.p_at(1, ".") && self.peek_at(1).is_some() {
            let typed = self.attempt(|p| {
                p.pos += 1;
                p.user_type_name()
            });
            if typed.is_none() {
                self.table_name()?;
            }
        } else if (self.at_kw("function") || self.at_kw("aggregate")) && !self.p_at(1, ".") {
            let named = self.attempt(|p| {
                p.pos += 1;
                p.function_name()
            });
            if named.is_none() {
                self.table_name()?;
            }
        } else {
            self.table_name()?;
        }
        Ok(())
    }

    /// The keyspace DESCRIBE KEYSPACE may name.
    fn optional_keyspace(&mut self) -> Result<()> {
        if matches!(self.peek(), Some(Token::Word(_) | Token::Quoted(_))) && !self.at_kw("with") {
            self.keyspace_name()?;
        }
        Ok(())
    }

    /// `ADD IDENTITY [IF NOT EXISTS] identity TO ROLE role`.
    fn add_identity(&mut self) -> Result<Stmt> {
        self.expect_kw("add")?;
        self.expect_kw("identity")?;
        self.if_not_exists()?;
        self.plain_name("identity")?;
        self.expect_kw("to")?;
        self.expect_kw("role")?;
        self.plain_name("identity")?;
        Ok(Self::other(Action::AddIdentity, None))
    }
}

/// The term a feature the fixture does not evaluate stands in for.
fn placeholder() -> Term {
    Term::Literal(Literal::Null)
}
