//! Denials of the client telemetry APIs (KIP-714) that librdkafka 2.x and the Java client send
//! to every broker that offers them: GetTelemetrySubscriptions (key 71) and PushTelemetry
//! (key 72), v0, whose responses are an error code and defaults (no subscription).
//!
//! Their requests name no topic; this module only writes responses.

use crate::api::{GET_TELEMETRY_SUBSCRIPTIONS, PUSH_TELEMETRY};
use crate::wire::Writer;

use super::WriteDenial;

/// The denial writer for API `key` at `version`, if this module has one.
pub fn denial(key: i16, version: i16) -> Option<WriteDenial> {
    match (key, version) {
        (GET_TELEMETRY_SUBSCRIPTIONS, 0) => Some(get_telemetry_subscriptions),
        (PUSH_TELEMETRY, 0) => Some(push_telemetry),
        _ => None,
    }
}

fn get_telemetry_subscriptions(_version: i16, error: i16, w: &mut Writer<'_>) {
    w.i32(0);
    w.i16(error);
    w.uuid(&[0; 16]);
    w.i32(0);
    w.array_len(Some(0));
    w.i32(0);
    w.i32(0);
    w.bool(false);
    w.array_len(Some(0));
    w.tagged_fields();
}

fn push_telemetry(_version: i16, error: i16, w: &mut Writer<'_>) {
    w.i32(0);
    w.i16(error);
    w.tagged_fields();
}
