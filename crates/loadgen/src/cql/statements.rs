//! What the CQL load says and expects back. Every request goes to the Empire example's table
//! `attendance.daily_records (loc text, creation timeuuid, present boolean, PRIMARY KEY (loc,
//! creation))`, which its policy names. Key `n` is the row with `loc` `outpost-n`, a `creation`
//! made from `n` and `present` true; a write stores it again as it was, so a read always finds
//! it as written.

use std::fmt;
use std::io::Write;

use super::frame::{self, Response};
use crate::load::Checked;

/// Creating the keyspace and the table, as the example does, when they do not exist.
pub(super) const CREATE_KEYSPACE: &str =
    "CREATE KEYSPACE IF NOT EXISTS attendance WITH replication = \
    {'class': 'SimpleStrategy', 'replication_factor': 1}";
pub(super) const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS attendance.daily_records \
    (loc text, creation timeuuid, present boolean, PRIMARY KEY (loc, creation))";

/// The statements a connection prepares, with their values bound by position.
const INSERT: &str =
    "INSERT INTO attendance.daily_records (loc, creation, present) VALUES (?, ?, ?)";
const SELECT: &str =
    "SELECT loc, present FROM attendance.daily_records WHERE loc = ? AND creation = ?";

/// The error code of a statement naming a keyspace or table that does not exist (Invalid).
pub(super) const INVALID: i32 = 0x2200;

/// Every row's `loc` starts with this.
const LOC_PREFIX: &str = "outpost-";

/// A boolean `true` as a CQL value.
const TRUE: &[u8] = &[1];

/// What a request expects back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Insert,
    Select(u32),
}

/// How a connection sends its statements.
pub(super) enum Statements {
    /// QUERY, with the values written into the text of each statement.
    Query,
    /// EXECUTE of the statements the connection prepared (by their ids), with bound values.
    Prepared { insert: Vec<u8>, select: Vec<u8> },
}

impl Statements {
    /// The queries to prepare for [`Statements::Prepared`]: the INSERT, then the SELECT.
    pub(super) const TO_PREPARE: [&'static str; 2] = [INSERT, SELECT];

    /// Appends the INSERT of row `key` on `stream`.
    pub(super) fn insert(&self, out: &mut Vec<u8>, stream: i16, key: u32) {
        match self {
            Statements::Query => frame::encode_query(out, stream, InsertQuery(key)),
            Statements::Prepared { insert, .. } => {
                let loc = Loc::new(key);
                let values = [loc.as_bytes(), &creation(key), TRUE];
                frame::encode_execute(out, stream, insert, &values);
            }
        }
    }

    /// Appends the SELECT of row `key` by its primary key on `stream`.
    pub(super) fn select(&self, out: &mut Vec<u8>, stream: i16, key: u32) {
        match self {
            Statements::Query => frame::encode_query(out, stream, SelectQuery(key)),
            Statements::Prepared { select, .. } => {
                let loc = Loc::new(key);
                frame::encode_execute(out, stream, select, &[loc.as_bytes(), &creation(key)]);
            }
        }
    }
}

/// The INSERT of row `key` as the text of a QUERY.
pub(super) struct InsertQuery(pub u32);

impl fmt::Display for InsertQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "INSERT INTO attendance.daily_records (loc, creation, present) \
             VALUES ('{LOC_PREFIX}{}', {}, true)",
            self.0,
            CreationText(self.0)
        )
    }
}

/// The SELECT of row `key` by its primary key as the text of a QUERY.
struct SelectQuery(u32);

impl fmt::Display for SelectQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SELECT loc, present FROM attendance.daily_records \
             WHERE loc = '{LOC_PREFIX}{}' AND creation = {}",
            self.0,
            CreationText(self.0)
        )
    }
}

/// Whether `response` is the right answer to `op`, and what is wrong with it if not.
pub(super) fn check(op: Op, response: &Response<'_>) -> Checked {
    match (op, response) {
        (Op::Insert, Response::Void) => Ok(()),
        (Op::Select(key), Response::Rows(rows)) => match rows.as_slice() {
            [row] => match row.as_slice() {
                [Some(loc), Some(present)] if loc_number(loc) == Some(key) && *present == TRUE => {
                    Ok(())
                }
                _ => Err(format!(
                    "SELECT of row {key} answered with another row: {row:?}"
                )),
            },
            _ => Err(format!(
                "SELECT of row {key} answered with {} rows",
                rows.len()
            )),
        },
        (Op::Insert, other) => Err(format!("INSERT answered with {}", describe(other))),
        (Op::Select(key), other) => Err(format!(
            "SELECT of row {key} answered with {}",
            describe(other)
        )),
    }
}

/// A response in a few words, for a message.
pub(super) fn describe(response: &Response<'_>) -> String {
    match response {
        Response::Ready => "READY".into(),
        Response::Error { code, message } => format!("ERROR 0x{code:04x} {message}"),
        Response::Void => "a Void RESULT".into(),
        Response::Rows(rows) => format!("{} rows", rows.len()),
        Response::Prepared { .. } => "a Prepared RESULT".into(),
        Response::Done => "a Set_keyspace or Schema_change RESULT".into(),
        Response::Other(opcode) => format!("a response of opcode 0x{opcode:02x}"),
    }
}

/// The key number in a `loc` this load generator wrote, if it is one.
fn loc_number(loc: &[u8]) -> Option<u32> {
    let digits = loc.strip_prefix(LOC_PREFIX.as_bytes())?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The `loc` of row `key` as text, built without allocating.
struct Loc {
    /// `outpost-` and up to 10 digits.
    bytes: [u8; 18],
    len: usize,
}

impl Loc {
    fn new(key: u32) -> Loc {
        let mut bytes = [0; 18];
        let mut free = &mut bytes[..];
        // The longest key fits: writing cannot fail.
        let _ = write!(free, "{LOC_PREFIX}{key}");
        let len = 18 - free.len();
        Loc { bytes, len }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The `creation` of row `key`: a version 1 (time-based) UUID whose time is `key`.
fn creation(key: u32) -> [u8; 16] {
    let mut uuid = [0; 16];
    uuid[..4].copy_from_slice(&key.to_be_bytes());
    // Version 1; the RFC 4122 variant.
    uuid[6] = 0x10;
    uuid[8] = 0x80;
    uuid
}

/// [`creation`] as CQL writes a UUID.
struct CreationText(u32);

impl fmt::Display for CreationText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}-0000-1000-8000-000000000000", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_have_keyed_values() {
        assert_eq!(Loc::new(0).as_bytes(), b"outpost-0");
        assert_eq!(Loc::new(u32::MAX).as_bytes(), b"outpost-4294967295");
        assert_eq!(loc_number(b"outpost-42"), Some(42));
        assert_eq!(loc_number(b"endor"), None);
        let uuid = creation(0x0102_0304);
        assert_eq!(uuid[..8], [1, 2, 3, 4, 0, 0, 0x10, 0]);
        assert_eq!(
            CreationText(0x0102_0304).to_string(),
            "01020304-0000-1000-8000-000000000000"
        );
        assert_eq!(
            InsertQuery(7).to_string(),
            "INSERT INTO attendance.daily_records (loc, creation, present) \
             VALUES ('outpost-7', 00000007-0000-1000-8000-000000000000, true)"
        );
        assert_eq!(
            SelectQuery(7).to_string(),
            "SELECT loc, present FROM attendance.daily_records \
             WHERE loc = 'outpost-7' AND creation = 00000007-0000-1000-8000-000000000000"
        );
    }

    #[test]
    fn checks_responses() {
        assert_eq!(check(Op::Insert, &Response::Void), Ok(()));
        let row = |loc: &'static [u8], present: &'static [u8]| {
            Response::Rows(vec![vec![Some(loc), Some(present)]])
        };
        assert_eq!(check(Op::Select(3), &row(b"outpost-3", TRUE)), Ok(()));
        assert!(check(Op::Select(3), &row(b"outpost-4", TRUE)).is_err());
        assert!(check(Op::Select(3), &row(b"outpost-3", &[0])).is_err());
        assert!(check(Op::Select(3), &Response::Rows(Vec::new())).is_err());
        assert!(check(Op::Select(3), &Response::Void).is_err());
        let denied = Response::Error {
            code: 0x2100,
            message: "Unauthorized",
        };
        assert_eq!(
            check(Op::Insert, &denied),
            Err("INSERT answered with ERROR 0x2100 Unauthorized".into())
        );
    }
}
