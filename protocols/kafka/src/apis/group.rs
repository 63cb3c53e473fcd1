//! Denials of the group APIs the `consume` role needs whose responses are an error code and
//! defaults: Heartbeat (key 12), LeaveGroup (key 13) and SyncGroup (key 14).
//!
//! Their requests name no topic and are not read; this module only writes responses.

use crate::api::{HEARTBEAT, LEAVE_GROUP, SYNC_GROUP};
use crate::wire::Writer;

/// Writes a denial body of one version with an error code.
pub type WriteDenial = fn(i16, i16, &mut Writer<'_>);

/// The denial writer for API `key` at `version`, if this module has one.
pub fn denial(key: i16, version: i16) -> Option<WriteDenial> {
    match (key, version) {
        (HEARTBEAT, 0..=4) => Some(heartbeat),
        (LEAVE_GROUP, 0..=5) => Some(leave_group),
        (SYNC_GROUP, 0..=5) => Some(sync_group),
        _ => None,
    }
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
