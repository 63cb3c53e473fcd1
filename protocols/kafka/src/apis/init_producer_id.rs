//! Denial of InitProducerId (key 22), v0 to v5: the request an idempotent or transactional
//! producer sends before its first Produce (kafka-python 3 and the Java client since Kafka 3.0
//! are idempotent by default), answered with an error code and no producer id.
//!
//! The request names no topic and is not read; this module only writes the response.

use crate::api::INIT_PRODUCER_ID;
use crate::wire::Writer;

use super::WriteDenial;

/// The denial writer for API `key` at `version`, if this module has one.
pub fn denial(key: i16, version: i16) -> Option<WriteDenial> {
    match (key, version) {
        (INIT_PRODUCER_ID, 0..=5) => Some(write_denial),
        _ => None,
    }
}

fn write_denial(_version: i16, error: i16, w: &mut Writer<'_>) {
    w.i32(0);
    w.i16(error);
    w.i64(-1);
    w.i16(-1);
    w.tagged_fields();
}
