//! Denial of ApiVersions (key 18), v0 to v4: an error code, no API keys.
//!
//! The request is not read. The response body follows the request's version while its header
//! stays v0 (see [`crate::header`]).

use crate::api::API_VERSIONS;
use crate::wire::Writer;

use super::WriteDenial;

/// The denial writer for API `key` at `version`, if this module has one.
pub fn denial(key: i16, version: i16) -> Option<WriteDenial> {
    match (key, version) {
        (API_VERSIONS, 0..=4) => Some(write_denial),
        _ => None,
    }
}

fn write_denial(version: i16, error: i16, w: &mut Writer<'_>) {
    w.i16(error);
    w.array_len(Some(0));
    if version >= 1 {
        w.i32(0);
    }
    w.tagged_fields();
}
