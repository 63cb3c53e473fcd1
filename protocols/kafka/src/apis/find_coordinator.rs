//! FindCoordinator (key 10), v0 to v6: the groups or transactional ids whose coordinator a
//! client looks for, and the response that denies it.
//!
//! The request names no topic; its keys are read because the response of v4 and later
//! answers each key. A denial fails a transactional id with TRANSACTIONAL_ID_AUTHORIZATION_FAILED
//! (53) and any other key (groups, share groups) with GROUP_AUTHORIZATION_FAILED (30).

use crate::topics::{Entries, GROUP_AUTHORIZATION_FAILED};
use crate::wire::{Reader, WireError, Writer};

/// The first version looking for several keys at once.
const BATCHED: i16 = 4;

/// The key type of a transactional id.
const TRANSACTION: i8 = 1;

/// Error code: the client may not use the transactional id.
pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;

/// A FindCoordinator request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// 0: group, 1: transaction, 2: share group.
    pub key_type: i8,
    /// The key (v0 to v3).
    pub key: Option<&'a [u8]>,
    /// The keys (v4 and later).
    pub keys: Entries<'a, &'a [u8]>,
}

/// Reads a FindCoordinator request body.
pub fn parse<'a>(r: &mut Reader<'a>, version: i16) -> Result<Request<'a>, WireError> {
    let key = match version < BATCHED {
        true => Some(r.string("the key")?),
        false => None,
    };
    let key_type = match version {
        0 => 0,
        _ => r.i8("the key type")?,
    };
    let keys = match version >= BATCHED {
        true => Entries::read(r, version, "the coordinator keys", coordinator_key)?,
        false => Entries::empty(),
    };
    r.tagged_fields()?;
    Ok(Request {
        key_type,
        key,
        keys,
    })
}

fn coordinator_key<'a>(r: &mut Reader<'a>, _version: i16) -> Result<&'a [u8], WireError> {
    r.string("a coordinator key")
}

/// Writes the response body that fails every key of `request`.
pub fn write_denial(request: &Request<'_>, version: i16, w: &mut Writer<'_>) {
    let error = match request.key_type {
        TRANSACTION => TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        _ => GROUP_AUTHORIZATION_FAILED,
    };
    if version >= 1 {
        w.i32(0);
    }
    if version < BATCHED {
        w.i16(error);
        if version >= 1 {
            w.nullable_string(None);
        }
        w.i32(-1);
        w.string(b"");
        w.i32(-1);
    } else {
        w.array_len(Some(request.keys.len()));
        for key in request.keys.iter() {
            w.string(key);
            w.i32(-1);
            w.string(b"");
            w.i32(-1);
            w.i16(error);
            w.nullable_string(None);
            w.tagged_fields();
        }
    }
    w.tagged_fields();
}
