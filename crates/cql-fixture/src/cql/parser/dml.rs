//! SELECT, INSERT, UPDATE, DELETE and text batches, built into the statements the fixture
//! evaluates; TTL and TIMESTAMP are read and dropped, conditions (IF) noted as unsupported.

use super::{Parser, Result};
use crate::cql::lexer::Token;
use crate::cql::{Selection, Stmt, Term};

impl Parser<'_> {
    pub(super) fn select(&mut self) -> Result<Stmt> {
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
            self.group_by()?;
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

    pub(super) fn insert(&mut self) -> Result<Stmt> {
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

    pub(super) fn update(&mut self) -> Result<Stmt> {
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

    pub(super) fn delete(&mut self) -> Result<Stmt> {
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
    pub(super) fn batch(&mut self) -> Result<Stmt> {
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
}
