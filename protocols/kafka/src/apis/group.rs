//! Denials of the group APIs whose requests are not read and whose responses are an error
//! code and defaults: JoinGroup (key 11), Heartbeat (key 12), LeaveGroup (key 13), SyncGroup
//! (key 14) and ListGroups (key 16).
//!
//! Their requests name no topic; this module only writes responses.

use crate::api::{HEARTBEAT, JOIN_GROUP, LEAVE_GROUP, LIST_GROUPS, SYNC_GROUP};
use crate::wire::Writer;

use super::WriteDenial;

/// The denial writer for API `key` at `version`, if this module has one.
pub fn denial(key: i16, version: i16) -> Option<WriteDenial> {
    match (key, version) {
        (JOIN_GROUP, 0..=9) => Some(join_group),
        (HEARTBEAT, 0..=4) => Some(heartbeat),
        (LEAVE_GROUP, 0..=5) => Some(leave_group),
        (SYNC_GROUP, 0..=5) => Some(sync_group),
        (LIST_GROUPS, 0..=5) => Some(list_groups),
        _ => None,
    }
}

fn join_group(version: i16, error: i16, w: &mut Writer<'_>) {
    if version >= 2 {
        w.i32(0);
    }
    w.i16(error);
    w.i32(-1);
    if version >= 7 {
        w.nullable_string(None);
        w.nullable_string(None);
    } else {
        w.string(b"");
    }
    w.string(b"");
    if version >= 9 {
        w.bool(false);
    }
    w.string(b"");
    w.array_len(Some(0));
    w.tagged_fields();
}

fn heartbeat(version: i16, error: i16, w: &mut Writer<'_>) {
    if version >= 1 {
        w.i32(0);
    }
    w.i16(error);
    w.tagged_fields();
}

fn leave_group(version: i16, error: i16, w: &mut Writer<'_>) {
    if version >= 1 {
        w.i32(0);
    }
    w.i16(error);
    if version >= 3 {
        w.array_len(Some(0));
    }
    w.tagged_fields();
}

fn sync_group(version: i16, error: i16, w: &mut Writer<'_>) {
    if version >= 1 {
        w.i32(0);
    }
    w.i16(error);
    if version >= 5 {
        w.nullable_string(None);
        w.nullable_string(None);
    }
    w.bytes(b"");
    w.tagged_fields();
}

fn list_groups(version: i16, error: i16, w: &mut Writer<'_>) {
    if version >= 1 {
        w.i32(0);
    }
    w.i16(error);
    w.array_len(Some(0));
    w.tagged_fields();
}
