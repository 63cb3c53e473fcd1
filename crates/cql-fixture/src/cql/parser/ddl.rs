//! CREATE, ALTER and DROP of keyspaces, tables, indexes, views, types, functions, aggregates
//! and triggers (roles and users are read by [`super::dcl`]). Keyspaces and tables become
//! statements the fixture evaluates; the others are only classified.

use std::collections::HashSet;

use super::{Parser, Result};
use crate::cql::keywords;
use crate::cql::lexer::Token;
use crate::cql::{Action, Stmt};

impl Parser<'_> {
    pub(super) fn create(&mut self) -> Result<Stmt> {
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
    pub(super) fn argument_types(&mut self) -> Result<()> {
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

    pub(super) fn drop(&mut self) -> Result<Stmt> {
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

    pub(super) fn alter(&mut self) -> Result<Stmt> {
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
}
