//! CQL statements as policy sees them: an action and, for actions on a table, the table.
//!
//! Classification reads the tokens of one statement (or of a text batch, every statement of
//! it), so `INSERT INTO t(a,b)`, quoted names and comments are understood, not split on white
//! space. A batch's statements end at a `;`, at `APPLY BATCH` or where the next one begins (a
//! reserved word such as `INSERT` or `DELETE`, so never a name), as Cassandra's grammar needs
//! no `;` between them; a batch holds only INSERT, UPDATE and DELETE. `USE` takes exactly one name.
//! Unqualified tables resolve against the connection's keyspace. It reads the text as it goes,
//! borrows names from it and never allocates (but for errors); it decides nothing about
//! policy.

use std::fmt;

use crate::lexer::{LexError, Lexer, Token, WordOrEnd};

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
    AlterMaterializedView,
    Describe,
    ListSuperusers,
    AddIdentity,
    DropIdentity,
}

/// Every action with its policy name.
pub const ACTIONS: [(Action, &str); 43] = [
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
    (Action::AlterMaterializedView, "alter-materialized-view"),
    (Action::Describe, "describe"),
    (Action::ListSuperusers, "list-superusers"),
    (Action::AddIdentity, "add-identity"),
    (Action::DropIdentity, "drop-identity"),
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
                | AlterMaterializedView
                | CreateTrigger
                | DropTrigger
        )
    }
}

/// A name as written: unquoted (case-insensitive: it resolves lower-cased) or quoted (kept as
/// is, `""` standing for `"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Name<'q> {
    Unquoted(&'q str),
    Quoted(&'q str),
}

impl Name<'_> {
    /// Appends the name as Cassandra resolves it to `out`.
    pub fn push_to(&self, out: &mut String) {
        match *self {
            Name::Unquoted(word) => {
                let start = out.len();
                out.push_str(word);
                // Names are mostly written in lower case already; lower-casing only when needed
                // also spares re-reading the bytes just copied.
                if word.bytes().any(|b| b.is_ascii_uppercase()) {
                    out[start..].make_ascii_lowercase();
                }
            }
            Name::Quoted(quoted) => {
                for (i, part) in quoted.split("\"\"").enumerate() {
                    if i > 0 {
                        out.push('"');
                    }
                    out.push_str(part);
                }
            }
        }
    }
}

impl fmt::Display for Name<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut resolved = String::new();
        self.push_to(&mut resolved);
        f.write_str(&resolved)
    }
}

/// A possibly qualified table name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableName<'q> {
    /// The keyspace, when the statement names one.
    pub keyspace: Option<Name<'q>>,
    /// The table.
    pub table: Name<'q>,
}

impl TableName<'_> {
    /// Appends `keyspace.table` to `out`, an unqualified name resolving against `current`
    /// (the connection's keyspace); false, with `out` as it was, when unqualified and no
    /// keyspace is set.
    pub fn push_qualified(&self, current: Option<&str>, out: &mut String) -> bool {
        match (self.keyspace, current) {
            (Some(keyspace), _) => keyspace.push_to(out),
            (None, Some(current)) => out.push_str(current),
            (None, None) => return false,
        }
        out.push('.');
        self.table.push_to(out);
        true
    }

    /// `keyspace.table`, as [`TableName::push_qualified`] writes it.
    pub fn qualified(&self, current: Option<&str>) -> Option<String> {
        let mut out = String::new();
        self.push_qualified(current, &mut out).then_some(out)
    }
}

impl fmt::Display for TableName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.keyspace {
            Some(keyspace) => write!(f, "{keyspace}.{}", self.table),
            None => write!(f, "{}", self.table),
        }
    }
}

/// One classified statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statement<'q> {
    /// What it does.
    pub action: Action,
    /// The table, for actions on a table.
    pub table: Option<TableName<'q>>,
    /// For `USE`: the keyspace it switches to.
    pub keyspace: Option<Name<'q>>,
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
    /// A batch holding a statement other than INSERT, UPDATE or DELETE.
    #[error("a batch holds only INSERT, UPDATE and DELETE, not a statement starting with {0:?}")]
    NotInBatch(String),
    /// A statement with more than its grammar allows (`USE ks.t`, `USE a b`).
    #[error("{0}: unexpected text after the statement")]
    Trailing(&'static str),
    /// A statement holding a word that begins another statement.
    #[error("{0}: {1:?} begins another statement")]
    Foreign(&'static str, String),
    /// A statement this classifier does not know.
    #[error("unrecognised statement starting with {0:?}")]
    Unknown(String),
    /// A statement missing the name it acts on.
    #[error("{0}: no name where one was expected")]
    MissingName(&'static str),
}

/// Classifies a query: one statement, or a text batch of several. Returns every statement
/// (a batch's in order).
pub fn classify(query: &str) -> Result<Vec<Statement<'_>>, ClassifyError> {
    statements(query).collect()
}

/// The statements of a query, read one at a time: one statement, or every statement of a text
/// batch; an error ends them.
pub fn statements(query: &str) -> Statements<'_> {
    Statements {
        lexer: Lexer::new(query),
        place: Place::Start,
    }
}

/// An iterator over the statements of a query; see [`statements`].
#[derive(Debug, Clone)]
pub struct Statements<'q> {
    lexer: Lexer<'q>,
    place: Place,
}

/// Where a [`Statements`] is in its query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Start,
    InBatch,
    Done,
}

impl<'q> Iterator for Statements<'q> {
    type Item = Result<Statement<'q>, ClassifyError>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = match self.place {
            Place::Done => return None,
            Place::Start => self.first(),
            Place::InBatch => self.in_batch(),
        };
        if !matches!(item, Some(Ok(_))) {
            self.place = Place::Done;
        }
        item
    }
}

/// The next token of `lexer`, lexing errors as classification errors.
fn next_token<'q>(lexer: &mut Lexer<'q>) -> Result<Option<Token<'q>>, ClassifyError> {
    lexer.next().transpose().map_err(ClassifyError::from)
}

impl<'q> Statements<'q> {
    /// The first statement, or the first of a batch.
    fn first(&mut self) -> Option<Result<Statement<'q>, ClassifyError>> {
        match self.lexer.skip_semicolons() {
            Ok(true) => {}
            Ok(false) => return Some(Err(ClassifyError::Empty)),
            Err(error) => return Some(Err(error.into())),
        }
        let view = StatementView::new(self.lexer.clone(), false);
        if view.keyword(0) == kw::BEGIN {
            return match self.begin_batch() {
                Ok(()) => {
                    self.place = Place::InBatch;
                    self.in_batch()
                }
                Err(error) => Some(Err(error)),
            };
        }
        let statement = view.classify(&mut self.lexer).and_then(|statement| {
            match self.lexer.skip_semicolons()? {
                true => Err(ClassifyError::Several),
                false => Ok(statement),
            }
        });
        self.place = Place::Done;
        Some(statement)
    }

    /// Reads `BEGIN [UNLOGGED|COUNTER] BATCH [USING …]`: the using clause runs up to the
    /// first statement or the `APPLY BATCH` of an empty batch.
    fn begin_batch(&mut self) -> Result<(), ClassifyError> {
        let unknown = || ClassifyError::Unknown("BEGIN".into());
        next_token(&mut self.lexer)?;
        let mut token = next_token(&mut self.lexer)?.ok_or_else(unknown)?;
        if token.is("UNLOGGED") || token.is("COUNTER") {
            token = next_token(&mut self.lexer)?.ok_or_else(unknown)?;
        }
        if !token.is("BATCH") {
            return Err(unknown());
        }
        let mut ahead = self.lexer.clone();
        if next_token(&mut ahead)?.is_some_and(|t| t.is("USING")) {
            loop {
                let mut next = ahead.clone();
                match next_token(&mut next)? {
                    Some(t) if starts_batch_statement(&t) || t.is("APPLY") => break,
                    Some(Token::Punct(';')) | None => return Err(unknown()),
                    Some(_) => ahead = next,
                }
            }
            self.lexer = ahead;
        }
        Ok(())
    }

    /// The next statement of a batch; `None` after `APPLY BATCH` ends it.
    fn in_batch(&mut self) -> Option<Result<Statement<'q>, ClassifyError>> {
        let unknown = || ClassifyError::Unknown("BEGIN".into());
        match self.lexer.skip_semicolons() {
            Ok(true) => {}
            Ok(false) => return Some(Err(unknown())),
            Err(error) => return Some(Err(error.into())),
        }
        let mut rest = self.lexer.clone();
        let token = match next_token(&mut rest) {
            Ok(Some(token)) => token,
            Ok(None) => return Some(Err(unknown())),
            Err(error) => return Some(Err(error)),
        };
        if token.is("APPLY") {
            // APPLY BATCH, then nothing but `;`.
            self.place = Place::Done;
            let end = next_token(&mut rest).and_then(|batch| match batch {
                Some(t) if t.is("BATCH") => Ok(rest.skip_semicolons()?),
                _ => Ok(true),
            });
            return match end {
                Ok(false) => None,
                Ok(true) => Some(Err(unknown())),
                Err(error) => Some(Err(error)),
            };
        }
        if !starts_batch_statement(&token) {
            return Some(Err(ClassifyError::NotInBatch(match token {
                Token::Word(w) => w.to_owned(),
                other => format!("{other:?}"),
            })));
        }
        Some(StatementView::new(self.lexer.clone(), true).classify(&mut self.lexer))
    }
}

/// Whether `token` begins a statement a batch may hold: `INSERT`, `UPDATE` or `DELETE`.
fn starts_batch_statement(token: &Token<'_>) -> bool {
    match token {
        Token::Word(word) => matches!(
            keyword(word.as_bytes()),
            kw::INSERT | kw::UPDATE | kw::DELETE
        ),
        _ => false,
    }
}

/// Whether the reserved word `word` cannot stand inside a statement read as `action` (past its
/// first token): it begins another statement. Data statements hold none of the words that begin
/// statements; the others may name permissions (`GRANT SELECT`), clauses (`ALTER TABLE t DROP
/// c`, `ORDER BY c DESC`) or a view's query (`AS SELECT`), but never a data statement's verb.
fn foreign(action: Action, word: &str) -> bool {
    use short::*;
    let data = matches!(
        action,
        Action::Select | Action::Insert | Action::Update | Action::Delete
    );
    match short_keyword(word.as_bytes()) {
        INSERT | UPDATE | DELETE | USE | TRUNCATE | BEGIN | APPLY => true,
        SELECT | CREATE | DROP | ALTER | GRANT | REVOKE | DESCRIBE => data,
        _ => false,
    }
}

/// Whether `word` (not a statement's first token), followed by what `rest` holds, ends a
/// statement of a batch: the next statement's first word, or `APPLY BATCH`.
fn ends_batch_statement(word: &str, rest: &Lexer<'_>) -> bool {
    use short::*;
    match short_keyword(word.as_bytes()) {
        INSERT | UPDATE | DELETE | SELECT | USE | TRUNCATE | CREATE | DROP | ALTER | GRANT
        | REVOKE | BEGIN | DESCRIBE | DESC => true,
        APPLY => matches!(rest.clone().next(), Some(Ok(t)) if t.is("BATCH")),
        _ => false,
    }
}

/// A word of at most 8 bytes as a number to compare with keywords of letters only: its bytes,
/// little-endian, each with the bit that tells lower from upper case cleared; 0 for a longer
/// word. A word is letters, digits and `_`: cleared, a letter is its upper case, a digit a
/// control character and `_` itself, so a word meets a keyword's number only when it is that
/// keyword in any case (the length too, as no byte of a word is zero). Built by shifts, without
/// a copy: cheaper than [`keyword`] for the words read on the way to a statement's end.
#[inline]
const fn short_keyword(word: &[u8]) -> u64 {
    if word.len() > 8 {
        return 0;
    }
    let mut number = 0;
    let mut i = 0;
    while i < word.len() {
        number |= (word[i] as u64) << (8 * i);
        i += 1;
    }
    number & 0xDFDF_DFDF_DFDF_DFDF
}

/// The [`short_keyword`] numbers of the keywords that begin statements.
mod short {
    macro_rules! keywords {
        ($($name:ident)*) => {
            $(pub(super) const $name: u64 = super::short_keyword(stringify!($name).as_bytes());)*
        };
    }

    keywords!(INSERT UPDATE DELETE SELECT USE TRUNCATE CREATE DROP ALTER GRANT REVOKE BEGIN DESCRIBE DESC APPLY);
}

/// One statement of a query, read from its first token up to its end: a `;`, the end of the
/// text, or in a batch an `APPLY BATCH`.
struct StatementView<'q> {
    in_batch: bool,
    /// The statement's first [`HEAD`] tokens (`None` past its end), read once: classifying
    /// looks at them again and again.
    head: [Option<Token<'q>>; HEAD],
    /// A cursor after them, when the statement has that many.
    rest: Lexer<'q>,
}

/// Tokens a [`StatementView`] keeps at hand: enough for the keywords of the most frequent
/// statements and the qualified name after them (`INSERT INTO ks . t`, `UPDATE ks . t SET`).
const HEAD: usize = 5;

/// A statement's tokens from one of them on: from the view's head while it lasts, then lexed.
#[derive(Clone)]
struct Tokens<'v, 'q> {
    view: &'v StatementView<'q>,
    /// The index of the next token, while it is in the head.
    at: usize,
    /// Past the head: the cursor the next token is lexed at.
    lexer: Lexer<'q>,
}

impl<'q> Iterator for Tokens<'_, 'q> {
    type Item = Token<'q>;

    fn next(&mut self) -> Option<Token<'q>> {
        if self.at < HEAD {
            let token = self.view.head[self.at]?;
            self.at += 1;
            return Some(token);
        }
        self.view.next_in(&mut self.lexer, false)
    }
}

impl<'q> StatementView<'q> {
    /// The statement starting at `start`.
    fn new(start: Lexer<'q>, in_batch: bool) -> Self {
        let mut view = StatementView {
            in_batch,
            head: [None; HEAD],
            rest: start,
        };
        let mut lexer = view.rest.clone();
        for i in 0..HEAD {
            view.head[i] = view.next_in(&mut lexer, i == 0);
            if view.head[i].is_none() {
                break;
            }
        }
        view.rest = lexer;
        view
    }

    /// The statement's tokens from its token number `at` on.
    fn tokens(&self, at: usize) -> Tokens<'_, 'q> {
        let mut tokens = Tokens {
            view: self,
            at: at.min(HEAD),
            lexer: self.rest.clone(),
        };
        for _ in HEAD..at {
            tokens.next();
        }
        tokens
    }

    /// Whether `token` (not the statement's first), followed by what `rest` holds, ends the
    /// statement: a `;`, or in a batch `APPLY BATCH` or the next statement's first word.
    fn ends(&self, token: &Token<'_>, rest: &Lexer<'q>) -> bool {
        match token {
            Token::Punct(';') => true,
            Token::Word(word) => self.in_batch && ends_batch_statement(word, rest),
            _ => false,
        }
    }

    /// The token at `lexer`, moving past it; `None` at the statement's end. The statement's
    /// `first` token never ends it.
    fn next_in(&self, lexer: &mut Lexer<'q>, first: bool) -> Option<Token<'q>> {
        let token = lexer.next()?.ok()?;
        (first || !self.ends(&token, lexer)).then_some(token)
    }

    /// Whether the token at `at` is `keyword`.
    fn is(&self, at: usize, keyword: &str) -> bool {
        self.tokens(at).next().is_some_and(|t| t.is(keyword))
    }

    /// The tokens after the first `keyword`.
    fn after(&self, keyword: &str) -> Option<Tokens<'_, 'q>> {
        let mut tokens = self.tokens(0);
        while !tokens.next()?.is(keyword) {}
        Some(tokens)
    }

    /// A possibly qualified name at the start of `tokens`, after an `IF [NOT] EXISTS`: `t`,
    /// `ks.t`, `"Ks"."T"`.
    fn name(&self, mut tokens: Tokens<'_, 'q>) -> Option<TableName<'q>> {
        let mut ahead = tokens.clone();
        if ahead.next().is_some_and(|t| t.is("IF")) {
            let mut token = ahead.next();
            if token.is_some_and(|t| t.is("NOT")) {
                token = ahead.next();
            }
            if token.is_some_and(|t| t.is("EXISTS")) {
                tokens = ahead;
            }
        }
        let part = |token: Token<'q>| match token {
            Token::Word(w) => Some(Name::Unquoted(w)),
            Token::Quoted(q) => Some(Name::Quoted(q)),
            _ => None,
        };
        let first = part(tokens.next()?)?;
        match (tokens.next(), tokens.next().and_then(part)) {
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

    /// Moves `lexer` (at the statement's start) past the statement and the `;` that ends it,
    /// or to the `APPLY BATCH` or next statement that does in a batch; lexing errors on the way
    /// are errors, and so is, outside a batch, a reserved word that the statement read as
    /// `action` cannot hold (the start of another statement, which Cassandra refuses).
    fn skip_to_end(
        &self,
        lexer: &mut Lexer<'q>,
        action: Option<Action>,
    ) -> Result<(), ClassifyError> {
        // A full head was read without error and nothing in it ends the statement: what is
        // left to read starts after it.
        if self.head.iter().all(Option::is_some) {
            if let (false, Some(action)) = (self.in_batch, action) {
                for &token in self.head[1..].iter().flatten() {
                    if let Token::Word(word) = token {
                        if foreign(action, word) {
                            return Err(ClassifyError::Foreign(action.name(), word.to_owned()));
                        }
                    }
                }
            }
            *lexer = self.rest.clone();
        } else {
            // The statement's first token neither ends it nor is foreign to it.
            match next_token(lexer)? {
                None | Some(Token::Punct(';')) => return Ok(()),
                Some(_) => {}
            }
        }
        // Only words and the `;` matter from here on.
        loop {
            let word = match lexer.next_word()? {
                WordOrEnd::End => return Ok(()),
                WordOrEnd::Word(word) => word,
            };
            if self.in_batch {
                if ends_batch_statement(word, lexer) {
                    lexer.back_to(word);
                    return Ok(());
                }
            } else if let Some(action) = action.filter(|&a| foreign(a, word)) {
                return Err(ClassifyError::Foreign(action.name(), word.to_owned()));
            }
        }
    }

    /// The word at `at`, as written; empty when there is none.
    fn word(&self, at: usize) -> &'q str {
        match self.tokens(at).next() {
            Some(Token::Word(w)) => w,
            _ => "",
        }
    }

    /// The word at `at` as a [`keyword`] number.
    fn keyword(&self, at: usize) -> u128 {
        keyword(self.word(at).as_bytes())
    }

    /// Classifies the statement and moves `lexer` (at its start) past it: see
    /// [`StatementView::skip_to_end`].
    fn classify(&self, lexer: &mut Lexer<'q>) -> Result<Statement<'q>, ClassifyError> {
        let statement = self.classify_head();
        // Lexing errors anywhere in the statement come first.
        self.skip_to_end(lexer, statement.as_ref().ok().map(|s| s.action))?;
        statement
    }

    /// Classifies the statement by its first tokens.
    fn classify_head(&self) -> Result<Statement<'q>, ClassifyError> {
        use Action::*;
        let first = self.keyword(0);
        let on_table = |action, tokens| self.on_table(action, tokens);
        match (first, self.keyword(1)) {
            (kw::SELECT, _) => on_table(Select, self.after("FROM")),
            (kw::INSERT, kw::INTO) => on_table(Insert, Some(self.tokens(2))),
            (kw::UPDATE, _) => on_table(Update, Some(self.tokens(1))),
            (kw::DELETE, _) => on_table(Delete, self.after("FROM")),
            (kw::TRUNCATE, kw::TABLE | kw::COLUMNFAMILY) => {
                on_table(TruncateTable, Some(self.tokens(2)))
            }
            (kw::TRUNCATE, _) => on_table(TruncateTable, Some(self.tokens(1))),
            (kw::USE, _) => {
                let mut tokens = self.tokens(1);
                let keyspace = match tokens.next() {
                    Some(Token::Word(w)) => Name::Unquoted(w),
                    Some(Token::Quoted(q)) => Name::Quoted(q),
                    _ => return Err(missing(Use)),
                };
                if tokens.next().is_some() {
                    return Err(ClassifyError::Trailing(Use.name()));
                }
                Ok(Statement {
                    action: Use,
                    table: None,
                    keyspace: Some(keyspace),
                })
            }
            (kw::CREATE | kw::ALTER | kw::DROP, _) => self.ddl(first),
            (kw::GRANT | kw::REVOKE, _) => {
                // GRANT <permission> ON <resource> TO <role> vs GRANT <role> TO <role>.
                let on_resource = self.after("ON").is_some();
                match (first, on_resource) {
                    (kw::GRANT, true) => plain(GrantPermission),
                    (kw::GRANT, false) => plain(GrantRole),
                    (_, true) => plain(RevokePermission),
                    (_, false) => plain(RevokeRole),
                }
            }
            (kw::LIST, kw::ROLES) => plain(ListRoles),
            (kw::LIST, kw::USERS) => plain(ListUsers),
            (kw::LIST, kw::SUPERUSERS) => plain(ListSuperusers),
            (kw::DESCRIBE | kw::DESC, _) => plain(Describe),
            (kw::ADD, kw::IDENTITY) => plain(AddIdentity),
            (kw::LIST, _) => plain(ListPermissions),
            _ => Err(ClassifyError::Unknown(match self.head[0] {
                Some(Token::Word(w)) => w.to_owned(),
                other => format!("{other:?}"),
            })),
        }
    }

    /// An action on the table named at the start of `tokens`.
    fn on_table(
        &self,
        action: Action,
        tokens: Option<Tokens<'_, 'q>>,
    ) -> Result<Statement<'q>, ClassifyError> {
        let table = tokens
            .and_then(|tokens| self.name(tokens))
            .ok_or(missing(action))?;
        Ok(Statement {
            action,
            table: Some(table),
            keyspace: None,
        })
    }

    /// Classifies a `CREATE`, `ALTER` or `DROP` (`verb`, a [`keyword`] number).
    fn ddl(&self, verb: u128) -> Result<Statement<'q>, ClassifyError> {
        use Action::*;
        let on_table = |action, tokens| self.on_table(action, tokens);
        // CREATE OR REPLACE FUNCTION / AGGREGATE, CREATE CUSTOM INDEX.
        let mut object = 1;
        while ["OR", "REPLACE", "CUSTOM"]
            .iter()
            .any(|keyword| self.is(object, keyword))
        {
            object += 1;
        }
        let pick = |create: Action, alter: Option<Action>, drop: Action| match verb {
            kw::CREATE => Some(create),
            kw::ALTER => alter,
            _ => Some(drop),
        };
        let unknown = || ClassifyError::Unknown(format!("{} {}", self.word(0), self.word(object)));
        match self.keyword(object) {
            kw::TABLE | kw::COLUMNFAMILY => on_table(
                pick(CreateTable, Some(AlterTable), DropTable).ok_or_else(unknown)?,
                Some(self.tokens(object + 1)),
            ),
            kw::KEYSPACE | kw::SCHEMA => {
                plain(pick(CreateKeyspace, Some(AlterKeyspace), DropKeyspace).ok_or_else(unknown)?)
            }
            kw::INDEX if verb == kw::CREATE => on_table(CreateIndex, self.after("ON")),
            kw::INDEX if verb == kw::DROP => plain(DropIndex),
            kw::MATERIALIZED if self.is(object + 1, "VIEW") => on_table(
                pick(
                    CreateMaterializedView,
                    Some(AlterMaterializedView),
                    DropMaterializedView,
                )
                .ok_or_else(unknown)?,
                Some(self.tokens(object + 2)),
            ),
            kw::IDENTITY if verb == kw::DROP => plain(DropIdentity),
            kw::TRIGGER if verb != kw::ALTER => on_table(
                if verb == kw::CREATE {
                    CreateTrigger
                } else {
                    DropTrigger
                },
                self.after("ON"),
            ),
            kw::ROLE => plain(pick(CreateRole, Some(AlterRole), DropRole).ok_or_else(unknown)?),
            kw::USER => plain(pick(CreateUser, Some(AlterUser), DropUser).ok_or_else(unknown)?),
            kw::FUNCTION if verb != kw::ALTER => {
                plain(pick(CreateFunction, None, DropFunction).ok_or_else(unknown)?)
            }
            kw::AGGREGATE if verb != kw::ALTER => {
                plain(pick(CreateAggregate, None, DropAggregate).ok_or_else(unknown)?)
            }
            kw::TYPE => plain(pick(CreateType, Some(AlterType), DropType).ok_or_else(unknown)?),
            _ => Err(unknown()),
        }
    }
}

/// A word of at most 16 bytes as a number: its bytes, upper-cased, packed into a `u128` (0 for
/// a longer word), so that classifying compares a keyword in one step without copying it.
/// Words are letters, digits and `_`, never a zero byte, so two words never share a number.
const fn keyword(word: &[u8]) -> u128 {
    if word.len() > 16 {
        return 0;
    }
    let mut number = 0;
    let mut i = 0;
    while i < word.len() {
        number = number << 8 | word[i].to_ascii_uppercase() as u128;
        i += 1;
    }
    number
}

/// The [`keyword`] numbers of the keywords that tell statements apart.
mod kw {
    macro_rules! keywords {
        ($($name:ident)*) => {
            $(pub(super) const $name: u128 = super::keyword(stringify!($name).as_bytes());)*
        };
    }

    keywords!(
        BEGIN SELECT INSERT INTO UPDATE DELETE TRUNCATE TABLE COLUMNFAMILY USE CREATE ALTER DROP
        GRANT REVOKE LIST ROLES USERS SUPERUSERS KEYSPACE SCHEMA INDEX MATERIALIZED TRIGGER ROLE
        USER FUNCTION AGGREGATE TYPE DESCRIBE DESC ADD IDENTITY
    );
}

/// An action that names nothing policy constrains.
fn plain<'q>(action: Action) -> Result<Statement<'q>, ClassifyError> {
    Ok(Statement {
        action,
        table: None,
        keyspace: None,
    })
}

/// The error for a statement without the name it acts on.
fn missing(action: Action) -> ClassifyError {
    ClassifyError::MissingName(action.name())
}

#[cfg(test)]
mod tests;
