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
//!
//! This module keeps the reader's state, its token and name rules and the choice of statement;
//! [`terms`] reads types, values and properties, [`selectors`] selectors and WHERE clauses,
//! [`dml`] SELECT, INSERT, UPDATE, DELETE and batches, [`ddl`] CREATE, ALTER and DROP of
//! schema, [`dcl`] roles, users, permissions, identities and DESCRIBE.

mod dcl;
mod ddl;
mod dml;
mod selectors;
mod terms;

use std::cell::RefCell;

use super::keywords;
use super::lexer::{Spanned, Token};
use super::{Action, Stmt, SyntaxError, TableRef};

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

/// The reader's state over the tokens of one query.
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

    fn string(&mut self) -> Result<()> {
        match self.advance()? {
            Token::Str(_) => Ok(()),
            _ => {
                self.pos -= 1;
                Err(self.expected("a string"))
            }
        }
    }
}
