//! The CQL the fixture evaluates, read from `axoneme_cassandra`'s tokens into statements.
//!
//! Unquoted names are lower-cased and quoted ones kept as written, as Cassandra does. Bind
//! markers (`?` or `:name`) are numbered in order of appearance.

use axoneme_cassandra::lexer::{Lexer, Token};

use crate::types::{CqlType, Literal};

/// A table as a statement names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRef {
    pub keyspace: Option<String>,
    pub name: String,
}

/// A value in a statement: a literal or the bind marker of that index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Term {
    Literal(Literal),
    Marker(usize),
}

/// `column = term`, or `column IN (terms)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub column: String,
    pub terms: Vec<Term>,
}

/// What a SELECT returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    All,
    Columns(Vec<String>),
    Count,
}

/// A statement the fixture evaluates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stmt {
    Use(String),
    CreateKeyspace {
        name: String,
        if_not_exists: bool,
    },
    CreateTable {
        table: TableRef,
        if_not_exists: bool,
        columns: Vec<(String, CqlType)>,
        partition_key: Vec<String>,
        clustering: Vec<String>,
    },
    DropKeyspace {
        name: String,
        if_exists: bool,
    },
    DropTable {
        table: TableRef,
        if_exists: bool,
    },
    Truncate(TableRef),
    Insert {
        table: TableRef,
        columns: Vec<String>,
        values: Vec<Term>,
    },
    Select {
        table: TableRef,
        selection: Selection,
        conditions: Vec<Condition>,
        limit: Option<Term>,
    },
    Update {
        table: TableRef,
        assignments: Vec<(String, Term)>,
        conditions: Vec<Condition>,
    },
    Delete {
        table: TableRef,
        columns: Vec<String>,
        conditions: Vec<Condition>,
    },
    /// `BEGIN [UNLOGGED] BATCH … APPLY BATCH` in one query.
    Batch(Vec<Stmt>),
}

impl Stmt {
    /// The number of bind markers.
    pub fn markers(&self) -> usize {
        self.terms()
            .iter()
            .filter(|(_, t)| matches!(t, Term::Marker(_)))
            .count()
    }

    /// Every term with the column it is for (`None` for LIMIT), in order of appearance.
    pub fn terms(&self) -> Vec<(Option<&str>, &Term)> {
        match self {
            Stmt::Insert {
                columns, values, ..
            } => columns
                .iter()
                .map(|c| Some(c.as_str()))
                .zip(values)
                .collect(),
            Stmt::Select {
                conditions, limit, ..
            } => {
                let mut terms = condition_terms(conditions);
                terms.extend(limit.iter().map(|t| (None, t)));
                terms
            }
            Stmt::Update {
                assignments,
                conditions,
                ..
            } => {
                let mut terms: Vec<_> = assignments
                    .iter()
                    .map(|(c, t)| (Some(c.as_str()), t))
                    .collect();
                terms.extend(condition_terms(conditions));
                terms
            }
            Stmt::Delete { conditions, .. } => condition_terms(conditions),
            Stmt::Batch(statements) => statements.iter().flat_map(Stmt::terms).collect(),
            _ => Vec::new(),
        }
    }
}

/// The terms of conditions with their columns.
fn condition_terms(conditions: &[Condition]) -> Vec<(Option<&str>, &Term)> {
    conditions
        .iter()
        .flat_map(|c| c.terms.iter().map(|t| (Some(c.column.as_str()), t)))
        .collect()
}

/// Text that is not a statement the fixture knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError(pub String);

/// Reads one statement (or a text batch).
pub fn parse(query: &str) -> Result<Stmt, SyntaxError> {
    let tokens = Lexer::new(query)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SyntaxError(e.to_string()))?;
    let mut parser = Parser {
        tokens,
        at: 0,
        markers: 0,
    };
    let stmt = parser.statement()?;
    while parser.eat_punct(';') {}
    match parser.peek() {
        None => Ok(stmt),
        Some(token) => Err(SyntaxError(format!(
            "unexpected {token:?} after the statement"
        ))),
    }
}

struct Parser<'q> {
    tokens: Vec<Token<'q>>,
    at: usize,
    markers: usize,
}

impl<'q> Parser<'q> {
    fn peek(&self) -> Option<Token<'q>> {
        self.tokens.get(self.at).copied()
    }

    fn next(&mut self) -> Result<Token<'q>, SyntaxError> {
        let token = self
            .peek()
            .ok_or_else(|| SyntaxError("unexpected end of statement".into()))?;
        self.at += 1;
        Ok(token)
    }

    fn eat(&mut self, keyword: &str) -> bool {
        let found = self.peek().is_some_and(|t| t.is(keyword));
        self.at += usize::from(found);
        found
    }

    fn eat_punct(&mut self, c: char) -> bool {
        let found = self.peek() == Some(Token::Punct(c));
        self.at += usize::from(found);
        found
    }

    fn expect(&mut self, keyword: &str) -> Result<(), SyntaxError> {
        match self.eat(keyword) {
            true => Ok(()),
            false => Err(self.unexpected(keyword)),
        }
    }

    fn expect_punct(&mut self, c: char) -> Result<(), SyntaxError> {
        match self.eat_punct(c) {
            true => Ok(()),
            false => Err(self.unexpected(&format!("'{c}'"))),
        }
    }

    fn unexpected(&self, wanted: &str) -> SyntaxError {
        match self.peek() {
            Some(token) => SyntaxError(format!("expected {wanted}, found {token:?}")),
            None => SyntaxError(format!("expected {wanted} at the end of the statement")),
        }
    }

    fn if_not_exists(&mut self) -> Result<bool, SyntaxError> {
        if !self.eat("IF") {
            return Ok(false);
        }
        self.expect("NOT")?;
        self.expect("EXISTS")?;
        Ok(true)
    }

    fn if_exists(&mut self) -> Result<bool, SyntaxError> {
        if !self.eat("IF") {
            return Ok(false);
        }
        self.expect("EXISTS")?;
        Ok(true)
    }

    fn identifier(&mut self) -> Result<String, SyntaxError> {
        match self.next()? {
            Token::Word(w) => Ok(w.to_ascii_lowercase()),
            Token::Quoted(q) => Ok(q.replace("\"\"", "\"")),
            other => Err(SyntaxError(format!("expected a name, found {other:?}"))),
        }
    }

    fn table(&mut self) -> Result<TableRef, SyntaxError> {
        let first = self.identifier()?;
        match self.eat_punct('.') {
            true => Ok(TableRef {
                keyspace: Some(first),
                name: self.identifier()?,
            }),
            false => Ok(TableRef {
                keyspace: None,
                name: first,
            }),
        }
    }

    /// Everything to the end of the statement (options this fixture does not keep).
    fn skip_rest(&mut self) {
        while self.peek().is_some_and(|t| t != Token::Punct(';')) {
            self.at += 1;
        }
    }

    fn statement(&mut self) -> Result<Stmt, SyntaxError> {
        let Some(Token::Word(first)) = self.peek() else {
            return Err(self.unexpected("a statement"));
        };
        self.at += 1;
        match first.to_ascii_uppercase().as_str() {
            "USE" => Ok(Stmt::Use(self.identifier()?)),
            "CREATE" => self.create(),
            "DROP" => self.drop(),
            "TRUNCATE" => {
                self.eat("TABLE");
                Ok(Stmt::Truncate(self.table()?))
            }
            "INSERT" => self.insert(),
            "SELECT" => self.select(),
            "UPDATE" => self.update(),
            "DELETE" => self.delete(),
            "BEGIN" => self.batch(),
            _ => Err(SyntaxError(format!("unknown statement {first:?}"))),
        }
    }

    fn create(&mut self) -> Result<Stmt, SyntaxError> {
        if self.eat("KEYSPACE") || self.eat("SCHEMA") {
            let if_not_exists = self.if_not_exists()?;
            let name = self.identifier()?;
            self.expect("WITH")?;
            self.skip_rest();
            return Ok(Stmt::CreateKeyspace {
                name,
                if_not_exists,
            });
        }
        if !(self.eat("TABLE") || self.eat("COLUMNFAMILY")) {
            return Err(self.unexpected("KEYSPACE or TABLE"));
        }
        let if_not_exists = self.if_not_exists()?;
        let table = self.table()?;
        self.expect_punct('(')?;
        let (mut columns, mut partition_key, mut clustering) = (Vec::new(), Vec::new(), vec![]);
        loop {
            if self.eat("PRIMARY") {
                self.expect("KEY")?;
                self.expect_punct('(')?;
                partition_key = match self.eat_punct('(') {
                    true => self.names_until_close()?,
                    false => vec![self.identifier()?],
                };
                if self.eat_punct(',') {
                    clustering = self.names_until_close()?;
                } else {
                    self.expect_punct(')')?;
                }
            } else {
                let name = self.identifier()?;
                let ty = self.column_type()?;
                if self.eat("PRIMARY") {
                    self.expect("KEY")?;
                    partition_key = vec![name.clone()];
                }
                columns.push((name, ty));
            }
            if !self.eat_punct(',') {
                break;
            }
        }
        self.expect_punct(')')?;
        if self.eat("WITH") {
            self.skip_rest();
        }
        if partition_key.is_empty() {
            return Err(SyntaxError(format!(
                "table {} has no PRIMARY KEY",
                table.name
            )));
        }
        Ok(Stmt::CreateTable {
            table,
            if_not_exists,
            columns,
            partition_key,
            clustering,
        })
    }

    /// `a, b)`: names up to and including the closing parenthesis.
    fn names_until_close(&mut self) -> Result<Vec<String>, SyntaxError> {
        let mut names = vec![self.identifier()?];
        while self.eat_punct(',') {
            names.push(self.identifier()?);
        }
        self.expect_punct(')')?;
        Ok(names)
    }

    /// A type, with its `<…>` parameters.
    fn column_type(&mut self) -> Result<CqlType, SyntaxError> {
        let mut text = match self.next()? {
            Token::Word(w) => w.to_string(),
            other => return Err(SyntaxError(format!("expected a type, found {other:?}"))),
        };
        let mut depth = 0;
        while self.peek() == Some(Token::Punct('<')) || depth > 0 {
            match self.next()? {
                Token::Punct(c) => {
                    depth += match c {
                        '<' => 1,
                        '>' => -1,
                        _ => 0,
                    };
                    text.push(c);
                }
                Token::Word(w) => text.push_str(w),
                other => return Err(SyntaxError(format!("unexpected {other:?} in a type"))),
            }
        }
        CqlType::parse(&text).ok_or_else(|| SyntaxError(format!("unsupported type {text}")))
    }

    fn drop(&mut self) -> Result<Stmt, SyntaxError> {
        if self.eat("KEYSPACE") || self.eat("SCHEMA") {
            let if_exists = self.if_exists()?;
            return Ok(Stmt::DropKeyspace {
                if_exists,
                name: self.identifier()?,
            });
        }
        if !(self.eat("TABLE") || self.eat("COLUMNFAMILY")) {
            return Err(self.unexpected("KEYSPACE or TABLE"));
        }
        let if_exists = self.if_exists()?;
        Ok(Stmt::DropTable {
            if_exists,
            table: self.table()?,
        })
    }

    fn term(&mut self) -> Result<Term, SyntaxError> {
        let literal = match self.next()? {
            Token::Marker => {
                self.markers += 1;
                return Ok(Term::Marker(self.markers - 1));
            }
            Token::Str(s) => Literal::Str(s.replace("''", "'")),
            Token::Punct('-') => match self.next()? {
                Token::Literal(n) => Literal::Bare(format!("-{n}")),
                other => return Err(SyntaxError(format!("expected a number, found {other:?}"))),
            },
            Token::Word(w) if w.eq_ignore_ascii_case("true") => Literal::Bool(true),
            Token::Word(w) if w.eq_ignore_ascii_case("false") => Literal::Bool(false),
            Token::Word(w) if w.eq_ignore_ascii_case("null") => Literal::Null,
            Token::Word(w)
                if (w.eq_ignore_ascii_case("now") || w.eq_ignore_ascii_case("uuid"))
                    && self.peek() == Some(Token::Punct('(')) =>
            {
                self.expect_punct('(')?;
                self.expect_punct(')')?;
                match w.eq_ignore_ascii_case("now") {
                    true => Literal::Now,
                    false => Literal::RandomUuid,
                }
            }
            Token::Word(w) | Token::Literal(w) => Literal::Bare(self.hex_run(w)),
            other => return Err(SyntaxError(format!("expected a value, found {other:?}"))),
        };
        Ok(Term::Literal(literal))
    }

    /// A UUID the lexer split at dashes (one that starts with a letter): joins the pieces.
    fn hex_run(&mut self, first: &str) -> String {
        let mut text = first.to_string();
        let is_hex = |s: &str| s.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
        while is_hex(&text) && self.peek() == Some(Token::Punct('-')) {
            match self.tokens.get(self.at + 1) {
                Some(Token::Word(w) | Token::Literal(w)) if is_hex(w) => {
                    text.push('-');
                    text.push_str(w);
                    self.at += 2;
                }
                _ => break,
            }
        }
        text
    }

    fn insert(&mut self) -> Result<Stmt, SyntaxError> {
        self.expect("INTO")?;
        let table = self.table()?;
        self.expect_punct('(')?;
        let columns = self.names_until_close()?;
        self.expect("VALUES")?;
        self.expect_punct('(')?;
        let mut values = vec![self.term()?];
        while self.eat_punct(',') {
            values.push(self.term()?);
        }
        self.expect_punct(')')?;
        if columns.len() != values.len() {
            return Err(SyntaxError(format!(
                "{} columns but {} values",
                columns.len(),
                values.len()
            )));
        }
        Ok(Stmt::Insert {
            table,
            columns,
            values,
        })
    }

    fn conditions(&mut self) -> Result<Vec<Condition>, SyntaxError> {
        let mut conditions = Vec::new();
        if !self.eat("WHERE") {
            return Ok(conditions);
        }
        loop {
            let column = self.identifier()?;
            let terms = if self.eat("IN") {
                self.expect_punct('(')?;
                let mut terms = vec![self.term()?];
                while self.eat_punct(',') {
                    terms.push(self.term()?);
                }
                self.expect_punct(')')?;
                terms
            } else {
                self.expect_punct('=')?;
                vec![self.term()?]
            };
            conditions.push(Condition { column, terms });
            if !self.eat("AND") {
                return Ok(conditions);
            }
        }
    }

    fn select(&mut self) -> Result<Stmt, SyntaxError> {
        let selection = if self.eat_punct('*') {
            Selection::All
        } else if self.peek().is_some_and(|t| t.is("COUNT"))
            && self.tokens.get(self.at + 1) == Some(&Token::Punct('('))
        {
            self.at += 2;
            if !self.eat_punct('*') {
                match self.next()? {
                    Token::Literal("1") => {}
                    other => return Err(SyntaxError(format!("unexpected {other:?} in COUNT"))),
                }
            }
            self.expect_punct(')')?;
            Selection::Count
        } else {
            let mut columns = vec![self.identifier()?];
            while self.eat_punct(',') {
                columns.push(self.identifier()?);
            }
            Selection::Columns(columns)
        };
        self.expect("FROM")?;
        let table = self.table()?;
        let conditions = self.conditions()?;
        let limit = match self.eat("LIMIT") {
            true => Some(self.term()?),
            false => None,
        };
        if self.eat("ALLOW") {
            self.expect("FILTERING")?;
        }
        Ok(Stmt::Select {
            table,
            selection,
            conditions,
            limit,
        })
    }

    fn update(&mut self) -> Result<Stmt, SyntaxError> {
        let table = self.table()?;
        self.expect("SET")?;
        let mut assignments = Vec::new();
        loop {
            let column = self.identifier()?;
            self.expect_punct('=')?;
            assignments.push((column, self.term()?));
            if !self.eat_punct(',') {
                break;
            }
        }
        let conditions = self.conditions()?;
        Ok(Stmt::Update {
            table,
            assignments,
            conditions,
        })
    }

    fn delete(&mut self) -> Result<Stmt, SyntaxError> {
        let mut columns = Vec::new();
        if !self.eat("FROM") {
            columns.push(self.identifier()?);
            while self.eat_punct(',') {
                columns.push(self.identifier()?);
            }
            self.expect("FROM")?;
        }
        let table = self.table()?;
        let conditions = self.conditions()?;
        Ok(Stmt::Delete {
            table,
            columns,
            conditions,
        })
    }

    fn batch(&mut self) -> Result<Stmt, SyntaxError> {
        let _ = self.eat("UNLOGGED") || self.eat("LOGGED");
        self.expect("BATCH")?;
        let mut statements = Vec::new();
        loop {
            while self.eat_punct(';') {}
            if self.eat("APPLY") {
                self.expect("BATCH")?;
                return Ok(Stmt::Batch(statements));
            }
            let stmt = self.statement()?;
            if !matches!(
                stmt,
                Stmt::Insert { .. } | Stmt::Update { .. } | Stmt::Delete { .. }
            ) {
                return Err(SyntaxError(
                    "only INSERT, UPDATE and DELETE are allowed in a batch".into(),
                ));
            }
            statements.push(stmt);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(keyspace: Option<&str>, name: &str) -> TableRef {
        TableRef {
            keyspace: keyspace.map(str::to_string),
            name: name.to_string(),
        }
    }

    #[test]
    fn create_table_with_compound_key_and_options() {
        let stmt = parse(
            r#"CREATE TABLE IF NOT EXISTS Ks."Users" (id int, "Name" text, at timestamp,
               tags set<text>, PRIMARY KEY ((id), at)) WITH comment = 'x';"#,
        )
        .unwrap();
        assert_eq!(
            stmt,
            Stmt::CreateTable {
                table: table(Some("ks"), "Users"),
                if_not_exists: true,
                columns: vec![
                    ("id".into(), CqlType::Int),
                    ("Name".into(), CqlType::Text),
                    ("at".into(), CqlType::Timestamp),
                    ("tags".into(), CqlType::Set(Box::new(CqlType::Text))),
                ],
                partition_key: vec!["id".into()],
                clustering: vec!["at".into()],
            }
        );
        let Stmt::CreateTable { partition_key, .. } =
            parse("create table t (k text primary key, v int)").unwrap()
        else {
            panic!()
        };
        assert_eq!(partition_key, ["k"]);
    }

    #[test]
    fn statements_with_markers_and_literals() {
        let stmt = parse("INSERT INTO t (a, b, c, d) VALUES (?, 'it''s', -3, now())").unwrap();
        assert_eq!(
            stmt,
            Stmt::Insert {
                table: table(None, "t"),
                columns: vec!["a".into(), "b".into(), "c".into(), "d".into()],
                values: vec![
                    Term::Marker(0),
                    Term::Literal(Literal::Str("it's".into())),
                    Term::Literal(Literal::Bare("-3".into())),
                    Term::Literal(Literal::Now),
                ],
            }
        );
        let stmt = parse("SELECT a, \"B\" FROM ks.t WHERE k = ? AND c IN (1, ?) LIMIT ?").unwrap();
        assert_eq!(stmt.markers(), 3);
        assert_eq!(
            stmt.terms().iter().map(|(c, _)| *c).collect::<Vec<_>>(),
            [Some("k"), Some("c"), Some("c"), None]
        );
        let Stmt::Select { selection, .. } = stmt else {
            panic!()
        };
        assert_eq!(selection, Selection::Columns(vec!["a".into(), "B".into()]));
        assert!(matches!(
            parse("select count(*) from t").unwrap(),
            Stmt::Select {
                selection: Selection::Count,
                ..
            }
        ));
        let Stmt::Update { conditions, .. } =
            parse("UPDATE t SET v = 1 WHERE id = a1b2c3d4-0000-4000-8000-00000000000f").unwrap()
        else {
            panic!()
        };
        assert_eq!(
            conditions[0].terms,
            [Term::Literal(Literal::Bare(
                "a1b2c3d4-0000-4000-8000-00000000000f".into()
            ))]
        );
    }

    #[test]
    fn batches_and_errors() {
        let Stmt::Batch(statements) = parse(
            "BEGIN UNLOGGED BATCH INSERT INTO t (k) VALUES (?); DELETE FROM t WHERE k = ?; APPLY BATCH",
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(statements.len(), 2);
        assert!(parse("BEGIN BATCH SELECT * FROM t; APPLY BATCH").is_err());
        assert!(parse("GRANT ALL ON t TO bob").is_err());
        assert!(parse("SELECT * FROM t junk").is_err());
        assert!(parse("CREATE TABLE t (k int)").is_err());
        assert_eq!(parse("USE \"MyKs\"").unwrap(), Stmt::Use("MyKs".into()));
    }
}
