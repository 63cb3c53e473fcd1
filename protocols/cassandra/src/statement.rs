//! CQL statements as policy sees them: an action and, for actions on a table, the table.
//!
//! Classification reads the tokens of one statement (or of a text batch, every statement of
//! it), so `INSERT INTO t(a,b)`, quoted names and comments are understood, not split on white
//! space. Unqualified tables resolve against the connection's keyspace. It decides nothing
//! about policy.

use std::fmt;

use crate::lexer::{LexError, Lexer, Token};

/// What a statement does, with Cilium's names.
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
    CreateRole,
    AlterRole,
    DropRole,
    GrantRole,
    RevokeRole,
    ListRoles,
    GrantPermission,
    RevokePermission,
    ListPermissions,
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
}

/// Every action with its policy name.
pub const ACTIONS: [(Action, &str); 38] = [
    (Action::Select, "select"),
    (Action::Insert, "insert"),
    (Action::Update, "update"),
    (Action::Delete, "delete"),
    (Action::CreateTable, "create-table"),
    (Action::DropTable, "drop-table"),
    (Action::AlterTable, "alter-table"),
    (Action::TruncateTable, "truncate-table"),
    (Action::Use, "use"),
    (Action::CreateKeyspace, "create-keyspace"),
    (Action::AlterKeyspace, "alter-keyspace"),
    (Action::DropKeyspace, "drop-keyspace"),
    (Action::DropIndex, "drop-index"),
    (Action::CreateIndex, "create-index"),
    (Action::CreateMaterializedView, "create-materialized-view"),
    (Action::DropMaterializedView, "drop-materialized-view"),
    (Action::CreateRole, "create-role"),
    (Action::AlterRole, "alter-role"),
    (Action::DropRole, "drop-role"),
    (Action::GrantRole, "grant-role"),
    (Action::RevokeRole, "revoke-role"),
    (Action::ListRoles, "list-roles"),
    (Action::GrantPermission, "grant-permission"),
    (Action::RevokePermission, "revoke-permission"),
    (Action::ListPermissions, "list-permissions"),
    (Action::CreateUser, "create-user"),
    (Action::AlterUser, "alter-user"),
    (Action::DropUser, "drop-user"),
    (Action::ListUsers, "list-users"),
    (Action::CreateFunction, "create-function"),
    (Action::DropFunction, "drop-function"),
    (Action::CreateAggregate, "create-aggregate"),
    (Action::DropAggregate, "drop-aggregate"),
    (Action::CreateType, "create-type"),
    (Action::AlterType, "alter-type"),
    (Action::DropType, "drop-type"),
    (Action::CreateTrigger, "create-trigger"),
    (Action::DropTrigger, "drop-trigger"),
];

impl Action {
    /// The policy name.
    pub fn name(self) -> &'static str {
        ACTIONS[self as usize].1
    }

    /// The action a policy names.
    pub fn from_name(name: &str) -> Option<Action> {
        ACTIONS.iter().find(|(_, n)| *n == name).map(|&(a, _)| a)
    }

    /// Whether the action works on a table (so that `query_table` can constrain it).
    pub fn has_table(self) -> bool {
        use Action::*;
        matches!(
            self,
            Select
                | Insert
                | Update
                | Delete
                | CreateTable
                | DropTable
                | AlterTable
                | TruncateTable
                | CreateIndex
                | CreateMaterializedView
                | DropMaterializedView
                | CreateTrigger
                | DropTrigger
        )
    }
}

/// A table name, keyspace-qualified once resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    /// The keyspace, when the statement names one.
    pub keyspace: Option<String>,
    /// The table.
    pub table: String,
}

impl TableName {
    /// `keyspace.table`, the unqualified name resolving against `current` (the connection's
    /// keyspace); `None` when unqualified and no keyspace is set.
    pub fn qualified(&self, current: Option<&str>) -> Option<String> {
        let keyspace = self.keyspace.as_deref().or(current)?;
        Some(format!("{keyspace}.{}", self.table))
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.keyspace {
            Some(keyspace) => write!(f, "{keyspace}.{}", self.table),
            None => f.write_str(&self.table),
        }
    }
}

/// One classified statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// What it does.
    pub action: Action,
    /// The table, for actions on a table.
    pub table: Option<TableName>,
    /// For `USE`: the keyspace it switches to.
    pub keyspace: Option<String>,
}

/// A query that cannot be classified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassifyError {
    /// The text does not lex.
    #[error(transparent)]
    Lex(#[from] LexError),
    /// No statement.
    #[error("empty query")]
    Empty,
    /// More than one statement in one query.
    #[error("more than one statement in a query")]
    Several,
    /// A statement this classifier does not know.
    #[error("unrecognised statement starting with {0:?}")]
    Unknown(String),
    /// A statement missing the name it acts on.
    #[error("{0}: no name where one was expected")]
    MissingName(&'static str),
}

/// Classifies a query: one statement, or a text batch of several. Returns every statement
/// (a batch's in order).
pub fn classify(query: &str) -> Result<Vec<Statement>, ClassifyError> {
    let tokens: Vec<Token<'_>> = Lexer::new(query).collect::<Result<_, _>>()?;
    let mut statements: Vec<&[Token<'_>]> = tokens
        .split(|t| *t == Token::Punct(';'))
        .filter(|s| !s.is_empty())
        .collect();
    match statements.len() {
        0 => return Err(ClassifyError::Empty),
        1 => {}
        _ if statements[0].first().is_some_and(|t| t.is("BEGIN")) => {}
        _ => return Err(ClassifyError::Several),
    }
    if statements[0].first().is_some_and(|t| t.is("BEGIN")) {
        return batch(&mut statements);
    }
    Ok(vec![statement(statements[0])?])
}

/// A text batch: `BEGIN [UNLOGGED|COUNTER] BATCH [USING …] s1; s2; … APPLY BATCH`.
fn batch(parts: &mut [&[Token<'_>]]) -> Result<Vec<Statement>, ClassifyError> {
    let unknown = || ClassifyError::Unknown("BEGIN".into());
    let first = &mut parts[0];
    let after_batch = first
        .iter()
        .position(|t| t.is("BATCH"))
        .ok_or_else(unknown)?;
    let mut rest = &first[after_batch + 1..];
    if rest.first().is_some_and(|t| t.is("USING")) {
        // USING TIMESTAMP <n>: skip the clause up to the first statement keyword.
        rest = &rest[rest.len().min(3)..];
    }
    *first = rest;
    let (last, body) = parts.split_last_mut().ok_or_else(unknown)?;
    let apply = last
        .iter()
        .rposition(|t| t.is("APPLY"))
        .ok_or_else(unknown)?;
    if !last.get(apply + 1).is_some_and(|t| t.is("BATCH")) || apply + 2 != last.len() {
        return Err(unknown());
    }
    let tail = &last[..apply];
    body.iter()
        .copied()
        .chain(std::iter::once(tail))
        .filter(|s| !s.is_empty())
        .map(statement)
        .collect()
}

/// Reads a possibly qualified name at the start of `tokens`: `t`, `ks.t`, `"Ks"."T"`.
fn name(tokens: &[Token<'_>]) -> Option<TableName> {
    let part = |token: &Token<'_>| match token {
        Token::Word(w) => Some(w.to_ascii_lowercase()),
        Token::Quoted(q) => Some(q.replace("\"\"", "\"")),
        _ => None,
    };
    let first = part(tokens.first()?)?;
    match (tokens.get(1), tokens.get(2).and_then(part)) {
        (Some(Token::Punct('.')), Some(second)) => Some(TableName {
            keyspace: Some(first),
            table: second,
        }),
        _ => Some(TableName {
            keyspace: None,
            table: first,
        }),
    }
}

/// Skips `IF [NOT] EXISTS`.
fn skip_if_exists<'t>(tokens: &'t [Token<'t>]) -> &'t [Token<'t>] {
    match tokens {
        [i, n, e, rest @ ..] if i.is("IF") && n.is("NOT") && e.is("EXISTS") => rest,
        [i, e, rest @ ..] if i.is("IF") && e.is("EXISTS") => rest,
        _ => tokens,
    }
}

fn statement(tokens: &[Token<'_>]) -> Result<Statement, ClassifyError> {
    use Action::*;
    let word = |i: usize| match tokens.get(i) {
        Some(Token::Word(w)) => w.to_ascii_uppercase(),
        _ => String::new(),
    };
    let on_table = |action: Action, at: usize| -> Result<Statement, ClassifyError> {
        let table = name(skip_if_exists(tokens.get(at..).unwrap_or_default()))
            .ok_or(ClassifyError::MissingName(action.name()))?;
        Ok(Statement {
            action,
            table: Some(table),
            keyspace: None,
        })
    };
    let after = |keyword: &str| tokens.iter().position(|t| t.is(keyword)).map(|i| i + 1);
    let plain = |action: Action| {
        Ok(Statement {
            action,
            table: None,
            keyspace: None,
        })
    };
    let (first, second) = (word(0), word(1));
    match (first.as_str(), second.as_str()) {
        ("SELECT", _) => on_table(
            Select,
            after("FROM").ok_or(ClassifyError::MissingName("select"))?,
        ),
        ("INSERT", "INTO") => on_table(Insert, 2),
        ("UPDATE", _) => on_table(Update, 1),
        ("DELETE", _) => on_table(
            Delete,
            after("FROM").ok_or(ClassifyError::MissingName("delete"))?,
        ),
        ("TRUNCATE", "TABLE" | "COLUMNFAMILY") => on_table(TruncateTable, 2),
        ("TRUNCATE", _) => on_table(TruncateTable, 1),
        ("USE", _) => {
            let keyspace = name(&tokens[1..])
                .ok_or(ClassifyError::MissingName("use"))?
                .table;
            Ok(Statement {
                action: Use,
                table: None,
                keyspace: Some(keyspace),
            })
        }
        ("CREATE" | "ALTER" | "DROP", _) => ddl(tokens, &first, &word, &on_table, &plain),
        ("GRANT" | "REVOKE", _) => {
            // GRANT <permission> ON <resource> TO <role> vs GRANT <role> TO <role>.
            let on_resource = tokens.iter().any(|t| t.is("ON"));
            match (first.as_str(), on_resource) {
                ("GRANT", true) => plain(GrantPermission),
                ("GRANT", false) => plain(GrantRole),
                (_, true) => plain(RevokePermission),
                (_, false) => plain(RevokeRole),
            }
        }
        ("LIST", "ROLES") => plain(ListRoles),
        ("LIST", "USERS") => plain(ListUsers),
        ("LIST", _) => plain(ListPermissions),
        _ => Err(ClassifyError::Unknown(match tokens.first() {
            Some(Token::Word(w)) => (*w).to_owned(),
            other => format!("{other:?}"),
        })),
    }
}

fn ddl(
    tokens: &[Token<'_>],
    verb: &str,
    word: &dyn Fn(usize) -> String,
    on_table: &dyn Fn(Action, usize) -> Result<Statement, ClassifyError>,
    plain: &dyn Fn(Action) -> Result<Statement, ClassifyError>,
) -> Result<Statement, ClassifyError> {
    use Action::*;
    // CREATE OR REPLACE FUNCTION / AGGREGATE, CREATE CUSTOM INDEX.
    let mut object = 1;
    while ["OR", "REPLACE", "CUSTOM"].contains(&word(object).as_str()) {
        object += 1;
    }
    let object_word = word(object);
    let pick = |create: Action, alter: Option<Action>, drop: Action| match verb {
        "CREATE" => Some(create),
        "ALTER" => alter,
        _ => Some(drop),
    };
    let unknown = || ClassifyError::Unknown(format!("{verb} {object_word}"));
    match object_word.as_str() {
        "TABLE" | "COLUMNFAMILY" => on_table(
            pick(CreateTable, Some(AlterTable), DropTable).ok_or_else(unknown)?,
            object + 1,
        ),
        "KEYSPACE" | "SCHEMA" => {
            plain(pick(CreateKeyspace, Some(AlterKeyspace), DropKeyspace).ok_or_else(unknown)?)
        }
        "INDEX" if verb == "CREATE" => {
            let on = tokens
                .iter()
                .position(|t| t.is("ON"))
                .ok_or(ClassifyError::MissingName("create-index"))?;
            on_table(CreateIndex, on + 1)
        }
        "INDEX" if verb == "DROP" => plain(DropIndex),
        "MATERIALIZED" if word(object + 1) == "VIEW" => on_table(
            pick(CreateMaterializedView, None, DropMaterializedView).ok_or_else(unknown)?,
            object + 2,
        ),
        "TRIGGER" if verb != "ALTER" => {
            let on = tokens
                .iter()
                .position(|t| t.is("ON"))
                .ok_or(ClassifyError::MissingName("trigger"))?;
            on_table(
                if verb == "CREATE" {
                    CreateTrigger
                } else {
                    DropTrigger
                },
                on + 1,
            )
        }
        "ROLE" => plain(pick(CreateRole, Some(AlterRole), DropRole).ok_or_else(unknown)?),
        "USER" => plain(pick(CreateUser, Some(AlterUser), DropUser).ok_or_else(unknown)?),
        "FUNCTION" if verb != "ALTER" => {
            plain(pick(CreateFunction, None, DropFunction).ok_or_else(unknown)?)
        }
        "AGGREGATE" if verb != "ALTER" => {
            plain(pick(CreateAggregate, None, DropAggregate).ok_or_else(unknown)?)
        }
        "TYPE" => plain(pick(CreateType, Some(AlterType), DropType).ok_or_else(unknown)?),
        _ => Err(unknown()),
    }
}

#[cfg(test)]
mod tests;
