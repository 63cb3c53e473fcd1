//! The CQL the fixture reads: statements from query text, by Cassandra's grammar, with the
//! fixture's own [`lexer`] and [`parser`] (it shares no code with the proxy it judges).
//!
//! Every statement the grammar accepts is read, and classified as policy sees it: an
//! [`Action`] with Cilium's name and, for actions on a table, the table. Only a subset is
//! evaluated; the rest is read into [`Stmt::Unsupported`]. Unquoted names are lower-cased and
//! quoted ones kept as written, as Cassandra does. Bind markers (`?` or `:name`) are numbered
//! in order of appearance. This module decides nothing about execution.

mod keywords;
pub mod lexer;
mod parser;

use crate::types::{CqlType, Literal};

/// What a statement does, with the names Cilium's `query_action` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Select,
    Insert,
    Update,
    Delete,
    CreateTable,
    DropTable,
    AlterTable,
    TruncateTable,
    Use,
    CreateKeyspace,
    AlterKeyspace,
    DropKeyspace,
    DropIndex,
    CreateIndex,
    CreateMaterializedView,
    DropMaterializedView,
    AlterMaterializedView,
    CreateRole,
    AlterRole,
    DropRole,
    GrantRole,
    RevokeRole,
    ListRoles,
    GrantPermission,
    RevokePermission,
    ListPermissions,
    ListSuperusers,
    CreateUser,
    AlterUser,
    DropUser,
    ListUsers,
    CreateFunction,
    DropFunction,
    CreateAggregate,
    DropAggregate,
    CreateType,
    AlterType,
    DropType,
    CreateTrigger,
    DropTrigger,
    Describe,
    AddIdentity,
    DropIdentity,
}

impl Action {
    /// The policy name.
    pub fn name(self) -> &'static str {
        use Action::*;
        match self {
            Select => "select",
            Insert => "insert",
            Update => "update",
            Delete => "delete",
            CreateTable => "create-table",
            DropTable => "drop-table",
            AlterTable => "alter-table",
            TruncateTable => "truncate-table",
            Use => "use",
            CreateKeyspace => "create-keyspace",
            AlterKeyspace => "alter-keyspace",
            DropKeyspace => "drop-keyspace",
            DropIndex => "drop-index",
            CreateIndex => "create-index",
            CreateMaterializedView => "create-materialized-view",
            DropMaterializedView => "drop-materialized-view",
            AlterMaterializedView => "alter-materialized-view",
            CreateRole => "create-role",
            AlterRole => "alter-role",
            DropRole => "drop-role",
            GrantRole => "grant-role",
            RevokeRole => "revoke-role",
            ListRoles => "list-roles",
            GrantPermission => "grant-permission",
            RevokePermission => "revoke-permission",
            ListPermissions => "list-permissions",
            ListSuperusers => "list-superusers",
            CreateUser => "create-user",
            AlterUser => "alter-user",
            DropUser => "drop-user",
            ListUsers => "list-users",
            CreateFunction => "create-function",
            DropFunction => "drop-function",
            CreateAggregate => "create-aggregate",
            DropAggregate => "drop-aggregate",
            CreateType => "create-type",
            AlterType => "alter-type",
            DropType => "drop-type",
            CreateTrigger => "create-trigger",
            DropTrigger => "drop-trigger",
            Describe => "describe",
            AddIdentity => "add-identity",
            DropIdentity => "drop-identity",
        }
    }
}

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
    /// `BEGIN [UNLOGGED | COUNTER] BATCH … APPLY BATCH` in one query.
    Batch(Vec<Stmt>),
    /// A statement the grammar accepts that the fixture does not evaluate: `what` names the
    /// statement kind or the feature it lacks.
    Unsupported {
        action: Action,
        table: Option<TableRef>,
        what: String,
    },
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

impl Stmt {
    /// The statement's actions, each with its table when it acts on one: one for a
    /// statement, one per statement for a batch.
    pub fn actions(&self) -> Vec<(Action, Option<&TableRef>)> {
        let one = |action, table| vec![(action, Some(table))];
        match self {
            Stmt::Use(_) => vec![(Action::Use, None)],
            Stmt::CreateKeyspace { .. } => vec![(Action::CreateKeyspace, None)],
            Stmt::CreateTable { table, .. } => one(Action::CreateTable, table),
            Stmt::DropKeyspace { .. } => vec![(Action::DropKeyspace, None)],
            Stmt::DropTable { table, .. } => one(Action::DropTable, table),
            Stmt::Truncate(table) => one(Action::TruncateTable, table),
            Stmt::Insert { table, .. } => one(Action::Insert, table),
            Stmt::Select { table, .. } => one(Action::Select, table),
            Stmt::Update { table, .. } => one(Action::Update, table),
            Stmt::Delete { table, .. } => one(Action::Delete, table),
            Stmt::Batch(statements) => statements.iter().flat_map(Stmt::actions).collect(),
            Stmt::Unsupported { action, table, .. } => vec![(*action, table.as_ref())],
        }
    }

    /// What policy checks: each action with its table resolved against `keyspace` (the
    /// connection's, or the request's), `""` for actions on no table. A table named without
    /// its keyspace when there is none cannot be checked.
    pub fn checked(&self, keyspace: Option<&str>) -> Result<Vec<Checked>, Unresolved> {
        self.actions()
            .into_iter()
            .map(|(action, table)| {
                let table = match table {
                    None => String::new(),
                    Some(table) => {
                        let keyspace = table
                            .keyspace
                            .as_deref()
                            .or(keyspace)
                            .ok_or_else(|| Unresolved(table.name.clone()))?;
                        format!("{keyspace}.{}", table.name)
                    }
                };
                Ok(Checked { action, table })
            })
            .collect()
    }
}

/// An action as policy checks it, with `keyspace.table` (`""` for actions on no table).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Checked {
    pub action: Action,
    pub table: String,
}

/// A table named without its keyspace where no keyspace is set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("No keyspace has been specified. USE a keyspace, or explicitly specify keyspace.tablename (table {0})")]
pub struct Unresolved(pub String);

/// Text the grammar refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyntaxError {
    #[error(transparent)]
    Lexical(#[from] lexer::LexError),
    #[error("at {at}: {message}")]
    Grammar { at: usize, message: String },
}

/// Reads one statement (or a text batch), optionally followed by `;`s.
pub fn parse(query: &str) -> Result<Stmt, SyntaxError> {
    let tokens = lexer::tokenize(query)?;
    parser::query(tokens, query.len())
}

#[cfg(test)]
mod tests;
