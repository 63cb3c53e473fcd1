//! Access-log lines read back, in either form the log writes (`accessLog.format`): a compact
//! line is given Cilium's field names, so that everything reading the log (the filters of
//! `observe`, its rendering, the replay of recent entries) reads one form. A compact line has
//! no label arrays, and none are made up: its entry names no labels. This module reads
//! parsed lines; it writes no log and filters nothing.

use std::time::Duration;

use serde_json::{Map, Value};

/// The compact form's keys and the Cilium field each stands for, at the top level of the line
/// (the L7 part, nested in Cilium's form, is [`COMPACT_L7_KEYS`]).
pub const COMPACT_KEYS: [(&str, &str); 12] = [
    ("ts", "timestamp"),
    ("in", "is_ingress"),
    ("t", "entry_type"),
    ("p", "policy_name"),
    ("v", "verdict"),
    ("rs", "reason"),
    ("si", "source_security_id"),
    ("di", "destination_security_id"),
    ("sa", "source_address"),
    ("da", "destination_address"),
    ("l", "listener"),
    ("e", "endpoint"),
];

/// The compact form's keys of the L7 part and their names under Cilium's `generic_l7`.
pub const COMPACT_L7_KEYS: [(&str, &str); 3] =
    [("pr", "proto"), ("f", "fields"), ("tr", "truncated")];

/// Whether `entry` is a line of the compact form: it has the compact entry type `t` and not
/// Cilium's `entry_type`.
pub fn is_compact(entry: &Value) -> bool {
    entry.get("t").is_some() && entry.get("entry_type").is_none()
}

/// `entry` with Cilium's field names: a Cilium line as it is; a compact line with each key
/// renamed, its entry type spelled out, `time` written from its timestamp, and the fields the
/// compact form leaves out when empty (`policy_name`, `generic_l7.proto` and `fields`) put back
/// empty. It gets no `source_labels` or `destination_labels`. Keys of neither form are kept.
pub fn cilium_form(entry: Value) -> Value {
    if !is_compact(&entry) {
        return entry;
    }
    let Value::Object(mut compact) = entry else {
        return entry;
    };
    let mut cilium = Map::new();
    if let Some(nanos) = compact.get("ts").and_then(Value::as_u64) {
        cilium.insert("timestamp".into(), nanos.into());
        let since_epoch = Duration::from_nanos(nanos);
        let time = axoneme_access_log::rfc3339_time(since_epoch);
        cilium.insert("time".into(), time.into());
        compact.remove("ts");
    }
    for (short, name) in COMPACT_KEYS {
        if let Some(value) = compact.remove(short) {
            let value = match (short, value) {
                ("t", Value::String(letter)) => Value::String(entry_type_name(letter)),
                (_, value) => value,
            };
            cilium.insert(name.into(), value);
        }
    }
    cilium
        .entry("policy_name")
        .or_insert_with(|| Value::String(String::new()));
    let mut l7 = Map::new();
    l7.insert("proto".into(), Value::String(String::new()));
    l7.insert("fields".into(), Value::Object(Map::new()));
    for (short, name) in COMPACT_L7_KEYS {
        if let Some(value) = compact.remove(short) {
            l7.insert(name.into(), value);
        }
    }
    cilium.insert("generic_l7".into(), Value::Object(l7));
    cilium.extend(compact);
    Value::Object(cilium)
}

/// The entry type the compact letter stands for; an unknown letter as it is.
fn entry_type_name(letter: String) -> String {
    match letter.as_str() {
        "q" => "Request".into(),
        "r" => "Response".into(),
        "d" => "Denied".into(),
        _ => letter,
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use axoneme_sdk::{EntryType, Field, LogEntry};
    use serde_json::json;

    use super::*;
    use crate::telemetry::access_log::LogFormat;

    /// The entry in both forms, parsed.
    fn both_forms(entry: &LogEntry<'_>) -> (Value, Value) {
        let now = UNIX_EPOCH + Duration::new(1_796_497_552, 123_456_789);
        let (mut compact, mut cilium) = (Vec::new(), Vec::new());
        LogFormat::Compact.format(&mut compact, entry, now, 8);
        LogFormat::Cilium.format(&mut cilium, entry, now, 8);
        (
            serde_json::from_slice(&compact).unwrap(),
            serde_json::from_slice(&cilium).unwrap(),
        )
    }

    #[test]
    fn a_compact_line_reads_as_its_cilium_line_without_labels() {
        let meta = axoneme_access_log::testing::log_meta();
        let fields = [
            Field::text("command", "get"),
            Field::text("keys", "alliance/fleet/a"),
        ];
        for entry in [
            LogEntry {
                entry_type: EntryType::Denied,
                meta: &meta,
                policy_name: "",
                proto: Some("memcache"),
                fields: &fields,
            },
            axoneme_access_log::testing::bare_entry(&meta),
        ] {
            let (compact, cilium) = both_forms(&entry);
            assert!(is_compact(&compact) && !is_compact(&cilium));
            let mut without_labels = cilium.clone();
            let object = without_labels.as_object_mut().unwrap();
            object.remove("source_labels").unwrap();
            object.remove("destination_labels").unwrap();
            assert_eq!(cilium_form(compact), without_labels);
            assert_eq!(cilium_form(cilium.clone()), cilium, "Cilium lines are kept");
        }
    }

    #[test]
    fn spelled_out_by_hand() {
        let compact = json!({
            "ts": 1_000_000_042u64, "in": false, "t": "q", "v": "Audit", "rs": "no-allow",
            "si": 7, "di": 8, "sa": "10.0.0.1:1", "da": "10.0.0.2:2", "l": "L", "e": "E",
            "pr": "memcache", "f": {"keys": "kkkkkkkk"}, "tr": {"keys": 9}, "extra": 1
        });
        assert_eq!(
            cilium_form(compact),
            json!({
                "timestamp": 1_000_000_042u64, "time": "1970-01-01T00:00:01.000000042Z",
                "is_ingress": false, "entry_type": "Request", "policy_name": "",
                "verdict": "Audit", "reason": "no-allow",
                "source_security_id": 7, "destination_security_id": 8,
                "source_address": "10.0.0.1:1", "destination_address": "10.0.0.2:2",
                "listener": "L", "endpoint": "E",
                "generic_l7": {"proto": "memcache", "fields": {"keys": "kkkkkkkk"},
                               "truncated": {"keys": 9}},
                "extra": 1
            })
        );
    }
}
