//! The access log shared by the agent and the Envoy filter, so that both write the same lines
//! the same way: its JSON, one entry as one line with Cilium's field names (or, configured so,
//! in a compact form with short keys and no label arrays, [`LogFormat`]), written byte by
//! byte on the forwarding path (no serializer, no intermediate values), with long field values
//! cut and marked (here); the queue bounded in bytes and the thread that writes it
//! ([`writer`]); and the ring of recent entries that writer feeds ([`recent`]). It records and
//! counts; it decides nothing about traffic.

pub mod recent;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod writer;

use std::cell::{Cell, RefCell};
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axoneme_sdk::{logging_audit, logging_denial, ConnectionMeta, Direction, EntryType, LogEntry};

/// Appends `entry` to `out` as one JSON line, and returns how many of its field values were
/// truncated. A `Denied` entry a parser wrote after a denying policy check also gets `reason`:
/// `deny-rule` (its `policy_name` holds the deny rule) or `no-allow` (no rule allowed the
/// request; `policy_name` is empty).
///
/// A `Request` entry about a request that audit mode let through (see
/// [`axoneme_sdk::logging_audit`]) gets `"verdict":"Audit"` and the `reason` it would have been
/// denied for, after `policy_name`: `"entry_type":"Request","policy_name":"","verdict":"Audit",
/// "reason":"no-allow"`. No other entry has a `verdict`.
///
/// A field value longer than `max_field_bytes` bytes is cut to at most that many, at a UTF-8
/// character boundary, and only the part kept is copied. The entry then says which values were
/// cut and how long each was, in bytes, in `generic_l7.truncated`, after `fields`:
/// `"truncated":{"keys":1048576}`. An entry without it has every value whole.
///
/// This runs on the forwarding path for every request, so it writes bytes directly: numbers
/// through [`push_decimal`], strings through [`json_string`], which copies plain ASCII whole,
/// and the fields a connection's entries share as rendered for its previous entry.
pub fn format_entry(
    out: &mut Vec<u8>,
    entry: &LogEntry<'_>,
    now: SystemTime,
    max_field_bytes: usize,
) -> u64 {
    let meta = entry.meta;
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    out.extend_from_slice(b"{\"timestamp\":");
    push_nanoseconds(out, since_epoch);
    out.extend_from_slice(b",\"time\":\"");
    push_rfc3339(out, since_epoch);
    out.push(b'"');
    out.extend_from_slice(match meta.direction {
        Direction::Ingress => b",\"is_ingress\":true,\"entry_type\":\"",
        Direction::Egress => b",\"is_ingress\":false,\"entry_type\":\"",
    });
    out.extend_from_slice(entry.entry_type.as_str().as_bytes());
    out.extend_from_slice(b"\",\"policy_name\":");
    json_string(out, entry.policy_name.as_bytes());
    push_verdict_and_reason(out, entry.entry_type, b",\"verdict\":\"", b",\"reason\":\"");
    CILIUM_CONNECTIONS
        .with_borrow_mut(|connections| connections.render(meta, out, render_cilium_connection));
    out.extend_from_slice(b",\"generic_l7\":{\"proto\":");
    json_string(out, entry.proto.unwrap_or("").as_bytes());
    let truncated = push_l7_fields(
        out,
        entry,
        max_field_bytes,
        b",\"fields\":",
        b",\"truncated\":",
    );
    out.extend_from_slice(b"}}\n");
    truncated
}

/// The form access-log lines take (`accessLog.format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Cilium's field names and label arrays ([`format_entry`]).
    #[default]
    Cilium,
    /// Short keys, no label arrays ([`format_compact_entry`]).
    Compact,
}

impl LogFormat {
    /// Appends `entry` to `out` as one line of this form; how many field values were cut.
    pub fn format(
        self,
        out: &mut Vec<u8>,
        entry: &LogEntry<'_>,
        now: SystemTime,
        max_field_bytes: usize,
    ) -> u64 {
        match self {
            LogFormat::Cilium => format_entry(out, entry, now, max_field_bytes),
            LogFormat::Compact => format_compact_entry(out, entry, now, max_field_bytes),
        }
    }
}

/// Appends `entry` to `out` as one compact JSON line, and returns how many of its field values
/// were truncated. It holds what [`format_entry`] writes under shorter keys, in the same order,
/// but the label arrays (the identities name those label sets) and `time` (the same instant as
/// `ts`):
///
/// | key   | Cilium's name                  | value                                           |
/// |-------|--------------------------------|-------------------------------------------------|
/// | `ts`  | `timestamp`                    | nanoseconds since the epoch                     |
/// | `in`  | `is_ingress`                   | `true` or `false`                               |
/// | `t`   | `entry_type`                   | `q` Request, `r` Response, `d` Denied           |
/// | `p`   | `policy_name`                  | left out when empty                             |
/// | `v`   | `verdict`                      | `Audit`, on audited requests only               |
/// | `rs`  | `reason`                       | `deny-rule` or `no-allow`, as in Cilium's form  |
/// | `si`  | `source_security_id`           | number                                          |
/// | `di`  | `destination_security_id`      | number                                          |
/// | `sa`  | `source_address`               | `ip:port`                                       |
/// | `da`  | `destination_address`          | `ip:port`                                       |
/// | `l`   | `listener`                     |                                                 |
/// | `e`   | `endpoint`                     |                                                 |
/// | `pr`  | `generic_l7.proto`             | left out for entries of no parser               |
/// | `f`   | `generic_l7.fields`            | object, left out when empty                     |
/// | `tr`  | `generic_l7.truncated`         | object, only when a value was cut               |
pub fn format_compact_entry(
    out: &mut Vec<u8>,
    entry: &LogEntry<'_>,
    now: SystemTime,
    max_field_bytes: usize,
) -> u64 {
    let meta = entry.meta;
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    out.extend_from_slice(b"{\"ts\":");
    push_nanoseconds(out, since_epoch);
    out.extend_from_slice(match meta.direction {
        Direction::Ingress => b",\"in\":true,\"t\":\"",
        Direction::Egress => b",\"in\":false,\"t\":\"",
    });
    out.push(compact_entry_type(entry.entry_type));
    out.push(b'"');
    if !entry.policy_name.is_empty() {
        out.extend_from_slice(b",\"p\":");
        json_string(out, entry.policy_name.as_bytes());
    }
    push_verdict_and_reason(out, entry.entry_type, b",\"v\":\"", b",\"rs\":\"");
    COMPACT_CONNECTIONS
        .with_borrow_mut(|connections| connections.render(meta, out, render_compact_connection));
    if let Some(proto) = entry.proto.filter(|proto| !proto.is_empty()) {
        out.extend_from_slice(b",\"pr\":");
        json_string(out, proto.as_bytes());
    }
    let truncated = if entry.fields.is_empty() {
        0
    } else {
        push_l7_fields(out, entry, max_field_bytes, b",\"f\":", b",\"tr\":")
    };
    out.extend_from_slice(b"}\n");
    truncated
}

/// The letter the compact form writes for `entry_type`.
fn compact_entry_type(entry_type: EntryType) -> u8 {
    match entry_type {
        EntryType::Request => b'q',
        EntryType::Response => b'r',
        EntryType::Denied => b'd',
    }
}

/// The verdict (`Audit`, when audit mode let a request through) and the reason an entry of
/// `entry_type` states, as the logging thread says of the entry it is logging now: a `Denied`
/// entry after a denying policy check has a reason and no verdict, an audited `Request` both;
/// other entries neither.
fn verdict_and_reason(entry_type: EntryType) -> Option<(Option<&'static [u8]>, &'static [u8])> {
    match entry_type {
        EntryType::Denied => logging_denial().map(|reason| (None, reason.as_str().as_bytes())),
        EntryType::Request => {
            logging_audit().map(|reason| (Some(&b"Audit"[..]), reason.as_str().as_bytes()))
        }
        EntryType::Response => None,
    }
}

/// Appends the verdict (an audited request's) and the reason of an entry of `entry_type`, when
/// it has them, each as a string after its key (`verdict_key`, `reason_key`: up to the opening
/// quote).
#[inline]
fn push_verdict_and_reason(
    out: &mut Vec<u8>,
    entry_type: EntryType,
    verdict_key: &[u8],
    reason_key: &[u8],
) {
    if let Some((verdict, reason)) = verdict_and_reason(entry_type) {
        if let Some(verdict) = verdict {
            out.extend_from_slice(verdict_key);
            out.extend_from_slice(verdict);
            out.push(b'"');
        }
        out.extend_from_slice(reason_key);
        out.extend_from_slice(reason);
        out.push(b'"');
    }
}

/// Appends `fields_key` and the entry's fields as an object, each value cut to
/// `max_field_bytes`; then, when any was cut, `truncated_key` and an object of the cut values'
/// whole lengths. Returns how many were cut.
fn push_l7_fields(
    out: &mut Vec<u8>,
    entry: &LogEntry<'_>,
    max_field_bytes: usize,
    fields_key: &[u8],
    truncated_key: &[u8],
) -> u64 {
    out.extend_from_slice(fields_key);
    out.push(b'{');
    let mut truncated = 0;
    for (i, field) in entry.fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_string(out, field.key.as_bytes());
        out.push(b':');
        let kept = utf8_prefix(field.value, max_field_bytes);
        truncated += u64::from(kept.len() < field.value.len());
        json_string(out, kept);
    }
    out.push(b'}');
    if truncated > 0 {
        out.extend_from_slice(truncated_key);
        out.push(b'{');
        let cut = entry
            .fields
            .iter()
            .filter(|f| f.value.len() > max_field_bytes);
        for (i, field) in cut.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json_string(out, field.key.as_bytes());
            out.push(b':');
            push_decimal(out, field.value.len() as u64);
        }
        out.push(b'}');
    }
    truncated
}

/// The longest start of `bytes` of at most `max` bytes that does not end inside a UTF-8
/// character (`bytes` itself when it is no longer).
fn utf8_prefix(bytes: &[u8], max: usize) -> &[u8] {
    if bytes.len() <= max {
        return bytes;
    }
    // Cut before the character that byte `max` belongs to, which starts at most three bytes
    // earlier; in invalid UTF-8, longer runs of continuation bytes are cut anywhere.
    let mut cut = max;
    while cut > max.saturating_sub(3) && bytes[cut] & 0xc0 == 0x80 {
        cut -= 1;
    }
    &bytes[..cut]
}

/// How many connections' parts each logging thread keeps rendered, in sets of [`WAYS`] slots
/// chosen by connection id and direction: a worker serving fewer connections finds nearly every
/// one's part, and one serving more renders again only those another pushed out. A power of two.
const RENDERED_CONNECTIONS: usize = 512;

/// The slots a connection's part may take: one of the set its id and direction select.
const WAYS: usize = 4;

/// Room a slot's buffer is given when first used: a connection's part with a few labels a side
/// fits, so a slot grows once, not by doubling.
const RENDERED_PART_CAPACITY: usize = 512;

thread_local! {
    /// The connection parts this thread rendered last, in Cilium's form.
    static CILIUM_CONNECTIONS: RefCell<ConnectionParts> =
        const { RefCell::new(ConnectionParts::new()) };
    /// The connection parts this thread rendered last, in the compact form.
    static COMPACT_CONNECTIONS: RefCell<ConnectionParts> =
        const { RefCell::new(ConnectionParts::new()) };
}

/// The part of an entry that every entry of a connection shares (identities, addresses, labels,
/// listener, endpoint), rendered once per connection into one of the slots its id and direction
/// select (an entry may be logged under either guarded end of a connection), and kept there
/// until [`WAYS`] other connections of the same set log after it. A slot taken over
/// keeps its buffer, so that once every slot has grown to the usual size rendering allocates
/// nothing.
struct ConnectionParts {
    slots: Vec<Option<(ConnectionMeta, Vec<u8>)>>,
}

impl ConnectionParts {
    const fn new() -> ConnectionParts {
        ConnectionParts { slots: Vec::new() }
    }

    /// Appends the shared part of `meta`'s entries to `out`, as `render_connection` renders it.
    fn render(
        &mut self,
        meta: &ConnectionMeta,
        out: &mut Vec<u8>,
        render_connection: fn(&ConnectionMeta, &mut Vec<u8>),
    ) {
        if self.slots.is_empty() {
            self.slots.resize_with(RENDERED_CONNECTIONS, || None);
        }
        let at = WAYS * set_of(meta);
        let set = &mut self.slots[at..at + WAYS];
        let found = set.iter().position(|slot| {
            slot.as_ref()
                .is_some_and(|(kept, _)| same_connection(kept, meta))
        });
        // A set is kept in the order its connections last logged, the latest first: a
        // connection not found takes the slot of the one that logged longest ago.
        set[..=found.unwrap_or(WAYS - 1)].rotate_right(1);
        if found.is_none() {
            let mut rendered = match set[0].take() {
                Some((_, mut buffer)) => {
                    buffer.clear();
                    buffer
                }
                None => Vec::with_capacity(RENDERED_PART_CAPACITY),
            };
            render_connection(meta, &mut rendered);
            set[0] = Some((meta.clone(), rendered));
        }
        if let Some((_, rendered)) = &set[0] {
            out.extend_from_slice(rendered);
        }
    }
}

/// The set of [`WAYS`] slots that `meta`'s connection and direction may take: Fibonacci hashing
/// of the two, so that the ids one worker sees (every n-th, with connections dealt to n workers
/// in turn) spread over every set, and the two guarded ends of a connection fall apart.
fn set_of(meta: &ConnectionMeta) -> usize {
    const SETS: usize = RENDERED_CONNECTIONS / WAYS;
    let key = meta.id << 1 | matches!(meta.direction, Direction::Egress) as u64;
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SETS.trailing_zeros())) as usize
}

/// Whether `a` and `b` describe the same connection. The shared strings are compared by
/// identity: a kept part holds them, so their memory cannot be reused for other values.
fn same_connection(a: &ConnectionMeta, b: &ConnectionMeta) -> bool {
    a.id == b.id
        && a.direction == b.direction
        && a.source == b.source
        && a.destination == b.destination
        && a.source_identity == b.source_identity
        && a.destination_identity == b.destination_identity
        && Arc::ptr_eq(&a.listener, &b.listener)
        && Arc::ptr_eq(&a.endpoint, &b.endpoint)
        && Arc::ptr_eq(&a.source_labels, &b.source_labels)
        && Arc::ptr_eq(&a.destination_labels, &b.destination_labels)
}

/// The fields of an entry that come from its connection, from `source_security_id` to
/// `endpoint`, with the comma before them.
fn render_cilium_connection(meta: &ConnectionMeta, out: &mut Vec<u8>) {
    out.extend_from_slice(b",\"source_security_id\":");
    push_decimal(out, meta.source_identity.into());
    out.extend_from_slice(b",\"destination_security_id\":");
    push_decimal(out, meta.destination_identity.into());
    out.extend_from_slice(b",\"source_address\":\"");
    push_address(out, meta.source);
    out.extend_from_slice(b"\",\"destination_address\":\"");
    push_address(out, meta.destination);
    out.extend_from_slice(b"\",\"source_labels\":");
    json_list(out, &meta.source_labels);
    out.extend_from_slice(b",\"destination_labels\":");
    json_list(out, &meta.destination_labels);
    out.extend_from_slice(b",\"listener\":");
    json_string(out, meta.listener.as_bytes());
    out.extend_from_slice(b",\"endpoint\":");
    json_string(out, meta.endpoint.as_bytes());
}

/// The compact form's fields of an entry that come from its connection, from `si` to `e`, with
/// the comma before them.
fn render_compact_connection(meta: &ConnectionMeta, out: &mut Vec<u8>) {
    out.extend_from_slice(b",\"si\":");
    push_decimal(out, meta.source_identity.into());
    out.extend_from_slice(b",\"di\":");
    push_decimal(out, meta.destination_identity.into());
    out.extend_from_slice(b",\"sa\":\"");
    push_address(out, meta.source);
    out.extend_from_slice(b"\",\"da\":\"");
    push_address(out, meta.destination);
    out.extend_from_slice(b"\",\"l\":");
    json_string(out, meta.listener.as_bytes());
    out.extend_from_slice(b",\"e\":");
    json_string(out, meta.endpoint.as_bytes());
}

/// The decimal digits of 0 to 99, two by two.
static DIGIT_PAIRS: [[u8; 2]; 100] = {
    let mut pairs = [[0u8; 2]; 100];
    let mut n = 0;
    while n < 100 {
        pairs[n] = [b'0' + (n / 10) as u8, b'0' + (n % 10) as u8];
        n += 1;
    }
    pairs
};

/// Appends `n` in decimal, two digits per division.
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    while n >= 100 {
        at -= 2;
        digits[at..at + 2].copy_from_slice(&DIGIT_PAIRS[(n % 100) as usize]);
        n /= 100;
    }
    if n >= 10 {
        at -= 2;
        digits[at..at + 2].copy_from_slice(&DIGIT_PAIRS[n as usize]);
    } else {
        at -= 1;
        digits[at] = b'0' + n as u8;
    }
    out.extend_from_slice(&digits[at..]);
}

/// Appends `duration` as a whole number of nanoseconds: the seconds, then the nine digits of
/// the nanoseconds (the same number, without 128-bit arithmetic).
fn push_nanoseconds(out: &mut Vec<u8>, duration: Duration) {
    let (seconds, nanos) = (duration.as_secs(), duration.subsec_nanos());
    if seconds == 0 {
        return push_decimal(out, nanos.into());
    }
    push_decimal(out, seconds);
    push_nine_digits(out, nanos);
}

/// Appends `nanos` (below 10^9) as nine digits, leading zeros kept.
fn push_nine_digits(out: &mut Vec<u8>, mut nanos: u32) {
    let mut digits = [0u8; 9];
    for at in [7, 5, 3, 1] {
        digits[at..at + 2].copy_from_slice(&DIGIT_PAIRS[(nanos % 100) as usize]);
        nanos /= 100;
    }
    digits[0] = b'0' + nanos as u8;
    out.extend_from_slice(&digits);
}

/// Appends the instant `since_epoch` after 1970-01-01T00:00:00Z as RFC 3339 in UTC with
/// nanoseconds, `2026-12-05T19:05:52.123456789Z`. Entries come many to a second, so each
/// thread keeps the date and time of the last second it rendered and writes only the
/// nanoseconds anew.
fn push_rfc3339(out: &mut Vec<u8>, since_epoch: Duration) {
    let seconds = since_epoch.as_secs();
    LAST_SECOND.with(|last| {
        let (rendered_second, mut text) = last.get();
        if rendered_second != Some(seconds) {
            text = date_and_time(seconds);
            last.set((Some(seconds), text));
        }
        out.extend_from_slice(&text);
    });
    out.push(b'.');
    push_nine_digits(out, since_epoch.subsec_nanos());
    out.push(b'Z');
}

/// The instant `since_epoch` after 1970-01-01T00:00:00Z as the `time` field writes it: RFC 3339
/// in UTC with nanoseconds.
pub fn rfc3339_time(since_epoch: Duration) -> String {
    let mut out = Vec::with_capacity(30);
    push_rfc3339(&mut out, since_epoch);
    String::from_utf8(out).expect("digits and ASCII punctuation")
}

thread_local! {
    /// The second a thread last rendered as a date and time, and that rendering.
    static LAST_SECOND: Cell<(Option<u64>, [u8; 19])> = const { Cell::new((None, [0; 19])) };
}

/// `seconds` after the epoch as `YYYY-MM-DDTHH:MM:SS` in UTC. The date comes from the count of
/// days by Howard Hinnant's `civil_from_days` (eras of 400 years, years starting in March so
/// that the leap day ends them), in unsigned arithmetic: the instant is never before 1970.
fn date_and_time(seconds: u64) -> [u8; 19] {
    let (days, second_of_day) = (seconds / 86_400, seconds % 86_400);
    let shifted = days + 719_468; // days since 0000-03-01
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    let mut text = *b"0000-00-00T00:00:00";
    for (at, n) in [
        (0, year / 100),
        (2, year),
        (5, month),
        (8, day),
        (11, second_of_day / 3_600),
        (14, second_of_day / 60 % 60),
        (17, second_of_day % 60),
    ] {
        text[at..at + 2].copy_from_slice(&DIGIT_PAIRS[(n % 100) as usize]);
    }
    text
}

/// Appends `address` as `a.b.c.d:port` or `[v6]:port`, as its `Display` does.
fn push_address(out: &mut Vec<u8>, address: SocketAddr) {
    match address {
        SocketAddr::V4(v4) => {
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_decimal(out, octet.into());
            }
            out.push(b':');
            push_decimal(out, v4.port().into());
        }
        SocketAddr::V6(_) => {
            let _ = write!(out, "{address}");
        }
    }
}

fn json_list(out: &mut Vec<u8>, items: &[String]) {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_string(out, item.as_bytes());
    }
    out.push(b']');
}

/// Writes `bytes` as a JSON string, replacing invalid UTF-8 with U+FFFD.
fn json_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    if plain(bytes) {
        out.extend_from_slice(bytes);
    } else {
        json_escaped(out, bytes);
    }
    out.push(b'"');
}

/// Whether a byte can stand in a JSON string as it is: printable ASCII but `"` and `\`.
fn plain_byte(b: u8) -> bool {
    (0x20..0x80).contains(&b) && b != b'"' && b != b'\\'
}

/// Whether every byte of `bytes` is [`plain_byte`], tested eight at a time: a byte below 0x20,
/// equal to `"` or `\`, or with its high bit set, sets the high bit of its place in one of the
/// words below (a borrow can set more places, but only past a byte that does match).
fn plain(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH: u64 = ONES * 0x80;
    let zero_byte = |w: u64| w.wrapping_sub(ONES) & !w;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let w = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        let control = w.wrapping_sub(ONES * 0x20) & !w;
        let special =
            zero_byte(w ^ (ONES * u64::from(b'"'))) | zero_byte(w ^ (ONES * u64::from(b'\\')));
        if (control | special | w) & HIGH != 0 {
            return false;
        }
    }
    words.remainder().iter().all(|&b| plain_byte(b))
}

fn json_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                '\n' => out.extend_from_slice(b"\\n"),
                '\r' => out.extend_from_slice(b"\\r"),
                '\t' => out.extend_from_slice(b"\\t"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => {
                    let mut utf8 = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                }
            }
        }
        if !chunk.invalid().is_empty() {
            out.extend_from_slice("\u{fffd}".as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axoneme_sdk::{logging_audit_as, AccessLog, DenyReason, Verdict};
    use axoneme_sdk::{ConnectionMeta, Context, EntryType, Field, InjectBuffer, RequestPolicy};

    use super::*;
    use crate::testing::{bare_entry, log_meta as meta, multiget};

    #[test]
    fn entries_are_json_with_cilium_names() {
        let meta = meta();
        let mut line = Vec::new();
        let fields = [
            Field::text("cmd", "READ"),
            Field::bytes("file", b"/tmp/\"x\"\n\xff"),
        ];
        let entry = LogEntry {
            entry_type: EntryType::Denied,
            meta: &meta,
            policy_name: "rule1",
            proto: Some("r2d2"),
            fields: &fields,
        };
        format_entry(&mut line, &entry, UNIX_EPOCH + Duration::from_nanos(42), 64);
        assert_eq!(
            String::from_utf8(line).unwrap(),
            concat!(
                r#"{"timestamp":42,"time":"1970-01-01T00:00:00.000000042Z","#,
                r#""is_ingress":true,"entry_type":"Denied","policy_name":"rule1","#,
                r#""source_security_id":257,"destination_security_id":256,"#,
                r#""source_address":"127.0.0.21:5000","destination_address":"127.0.0.1:4001","#,
                r#""source_labels":["app=luke"],"destination_labels":["app=r2d2"],"listener":"r2d2","endpoint":"r2d2","#,
                r#""generic_l7":{"proto":"r2d2","fields":{"cmd":"READ","file":"/tmp/\"x\"\n�"}}}"#,
                "\n"
            )
        );
    }

    #[test]
    fn compact_entries_have_short_keys_and_no_labels() {
        let meta = meta();
        let fields = [
            Field::text("cmd", "READ"),
            Field::bytes("file", b"/tmp/\"x\""),
        ];
        let entry = LogEntry {
            entry_type: EntryType::Denied,
            meta: &meta,
            policy_name: "rule1",
            proto: Some("r2d2"),
            fields: &fields,
        };
        let mut line = Vec::new();
        format_compact_entry(&mut line, &entry, UNIX_EPOCH + Duration::from_nanos(42), 64);
        assert_eq!(
            String::from_utf8(line).unwrap(),
            concat!(
                r#"{"ts":42,"in":true,"t":"d","p":"rule1","si":257,"di":256,"#,
                r#""sa":"127.0.0.21:5000","da":"127.0.0.1:4001","l":"r2d2","e":"r2d2","#,
                r#""pr":"r2d2","f":{"cmd":"READ","file":"/tmp/\"x\""}}"#,
                "\n"
            )
        );
    }

    /// The keys a compact line may have.
    const COMPACT_KEYS: [&str; 15] = [
        "ts", "in", "t", "p", "v", "rs", "si", "di", "sa", "da", "l", "e", "pr", "f", "tr",
    ];

    /// Checks, key by key, that the compact line `compact` says what the Cilium line `cilium`
    /// says but the labels and the RFC 3339 time. Both are read with serde_json only.
    fn assert_same_entry(compact: &[u8], cilium: &[u8]) {
        use serde_json::{json, Value};
        let k: Value = serde_json::from_slice(compact).unwrap();
        let c: Value = serde_json::from_slice(cilium).unwrap();
        let k = k.as_object().unwrap();
        for key in k.keys() {
            assert!(COMPACT_KEYS.contains(&key.as_str()), "unknown key {key}");
        }
        assert_eq!(k["ts"], c["timestamp"]);
        assert_eq!(k["in"], c["is_ingress"]);
        let entry_type = match k["t"].as_str().unwrap() {
            "q" => "Request",
            "r" => "Response",
            "d" => "Denied",
            other => panic!("entry type {other}"),
        };
        assert_eq!(entry_type, c["entry_type"]);
        assert_eq!(k.get("p").unwrap_or(&json!("")), &c["policy_name"]);
        assert_ne!(
            k.get("p"),
            Some(&json!("")),
            "an empty policy name is left out"
        );
        assert_eq!(k.get("v"), c.get("verdict"));
        assert_eq!(k.get("rs"), c.get("reason"));
        assert_eq!(k["si"], c["source_security_id"]);
        assert_eq!(k["di"], c["destination_security_id"]);
        assert_eq!(k["sa"], c["source_address"]);
        assert_eq!(k["da"], c["destination_address"]);
        assert_eq!(k["l"], c["listener"]);
        assert_eq!(k["e"], c["endpoint"]);
        let l7 = &c["generic_l7"];
        assert_eq!(k.get("pr").unwrap_or(&json!("")), &l7["proto"]);
        assert_eq!(k.get("f").unwrap_or(&json!({})), &l7["fields"]);
        assert_eq!(k.get("tr"), l7.get("truncated"));
        assert!(c["source_labels"].is_array() && c["destination_labels"].is_array());
        assert!(compact.len() < cilium.len());
        assert_eq!(compact.last(), Some(&b'\n'));
        assert!(!compact[..compact.len() - 1].contains(&b'\n'), "one line");
    }

    /// An access log that writes every entry in both forms, at one instant.
    struct BothForms(Mutex<Vec<(Vec<u8>, Vec<u8>)>>);

    impl AccessLog for BothForms {
        fn log(&self, entry: &LogEntry<'_>) {
            let now = UNIX_EPOCH + Duration::new(1_796_497_552, 7);
            let (mut compact, mut cilium) = (Vec::new(), Vec::new());
            let cut = format_compact_entry(&mut compact, entry, now, 100);
            assert_eq!(cut, LogFormat::Cilium.format(&mut cilium, entry, now, 100));
            self.0.lock().unwrap().push((compact, cilium));
        }
    }

    /// A policy whose every check gives one verdict.
    struct Fixed(Verdict<'static>);

    impl RequestPolicy for Fixed {
        fn check(
            &self,
            _: &mut dyn FnMut(&(dyn std::any::Any + Send + Sync)) -> bool,
        ) -> Verdict<'_> {
            self.0
        }
    }

    #[test]
    fn compact_lines_say_what_cilium_lines_say_but_the_labels() {
        let ingress = meta();
        let mut egress = meta();
        egress.direction = Direction::Egress;
        egress.source = "[::1]:40000".parse().unwrap();
        egress.source_labels = Arc::from(vec!["k8s:app=\"quoted\"".to_string()]);
        let long = vec![b'k'; 300];
        let fields = [
            Field::text("command", "get"),
            Field::bytes("keys", &long),
            Field::bytes("odd", b"tab\t\xff\"\\"),
        ];
        let log = BothForms(Mutex::new(Vec::new()));
        for meta in [&ingress, &egress] {
            // Entries written directly: with and without a protocol, no verdict or reason.
            for entry_type in [EntryType::Request, EntryType::Response, EntryType::Denied] {
                for (policy_name, proto, fields) in [
                    ("", None, &fields[..0]),
                    ("allow-gets", Some("memcache"), &fields[..]),
                    ("p", Some(""), &fields[..1]),
                ] {
                    log.log(&LogEntry {
                        entry_type,
                        meta,
                        policy_name,
                        proto,
                        fields,
                    });
                }
            }
            // Entries a parser writes after checks: denied for either reason, audited.
            for (allowed, audited, policy_name) in [
                (false, false, ""),
                (false, false, "lockdown"),
                (true, true, ""),
                (true, true, "lockdown"),
            ] {
                let policy = Fixed(Verdict {
                    allowed,
                    policy_name,
                    audited,
                });
                let mut inject = [InjectBuffer::new(0), InjectBuffer::new(0)];
                let ctx = Context::new(meta, "memcache", &policy, &log, &mut inject);
                for entry_type in [EntryType::Denied, EntryType::Request, EntryType::Response] {
                    let verdict = ctx.check::<()>(|_| true);
                    ctx.log(entry_type, verdict.policy_name, &fields);
                }
            }
        }
        let lines = log.0.into_inner().unwrap();
        assert_eq!(lines.len(), 2 * (9 + 12));
        let mut reasons = std::collections::BTreeSet::new();
        for (compact, cilium) in &lines {
            assert_same_entry(compact, cilium);
            let value: serde_json::Value = serde_json::from_slice(compact).unwrap();
            reasons.insert(format!("{} {} {}", value["t"], value["v"], value["rs"]));
        }
        // Every kind of verdict and reason was among them.
        for kind in [
            r#""d" null "no-allow""#,
            r#""d" null "deny-rule""#,
            r#""q" "Audit" "no-allow""#,
            r#""q" "Audit" "deny-rule""#,
            r#""r" null null"#,
        ] {
            assert!(reasons.contains(kind), "{kind} in {reasons:?}");
        }
    }

    /// The UTC date and time of `seconds` after the epoch, counted year by year and month by
    /// month: slow, and independent of the date arithmetic it judges.
    fn civil_by_counting(seconds: u64) -> (u64, u64, u64, u64, u64, u64) {
        let leap =
            |y: u64| y.is_multiple_of(4) && (!y.is_multiple_of(100) || y.is_multiple_of(400));
        let (mut days, second_of_day) = (seconds / 86_400, seconds % 86_400);
        let mut year = 1970;
        while days >= if leap(year) { 366 } else { 365 } {
            days -= if leap(year) { 366 } else { 365 };
            year += 1;
        }
        let lengths = [
            31,
            if leap(year) { 29 } else { 28 },
            31,
            30,
            31,
            30,
            31,
            31,
            30,
            31,
            30,
            31,
        ];
        let mut month = 0;
        while days >= lengths[month] {
            days -= lengths[month];
            month += 1;
        }
        let (hour, minute, second) = (
            second_of_day / 3_600,
            second_of_day / 60 % 60,
            second_of_day % 60,
        );
        (year, month as u64 + 1, days + 1, hour, minute, second)
    }

    #[test]
    fn times_are_rfc_3339_in_utc_with_nanoseconds() {
        for (seconds, nanos, text) in [
            (0, 0, "1970-01-01T00:00:00.000000000Z"),
            (951_782_400, 1, "2000-02-29T00:00:00.000000001Z"),
            (1_796_497_552, 123_456_789, "2026-12-05T19:05:52.123456789Z"),
            (4_107_542_399, 999_999_999, "2100-02-28T23:59:59.999999999Z"),
        ] {
            let mut out = Vec::new();
            push_rfc3339(&mut out, Duration::new(seconds, nanos));
            assert_eq!(String::from_utf8(out).unwrap(), text);
        }
        // The same second again (rendered once), then the next one.
        let mut out = Vec::new();
        for (seconds, nanos) in [(86_399, 5), (86_399, 7), (86_400, 0)] {
            push_rfc3339(&mut out, Duration::new(seconds, nanos));
            out.push(b' ');
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "1970-01-01T23:59:59.000000005Z 1970-01-01T23:59:59.000000007Z \
             1970-01-02T00:00:00.000000000Z "
        );
    }

    proptest::proptest! {
        #[test]
        fn the_date_and_time_agree_with_counting_days(seconds in 0u64..253_402_300_800) {
            let mut out = Vec::new();
            push_rfc3339(&mut out, Duration::from_secs(seconds));
            let (y, mo, d, h, mi, s) = civil_by_counting(seconds);
            let expected = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.000000000Z");
            proptest::prop_assert_eq!(String::from_utf8(out).unwrap(), expected);
        }
    }

    #[test]
    fn denied_requests_say_whether_a_deny_rule_or_no_rule_decided() {
        struct Denying(&'static str);
        impl RequestPolicy for Denying {
            fn check(
                &self,
                _: &mut dyn FnMut(&(dyn std::any::Any + Send + Sync)) -> bool,
            ) -> Verdict<'_> {
                Verdict {
                    allowed: false,
                    policy_name: self.0,
                    audited: false,
                }
            }
        }
        struct Lines(Mutex<Vec<serde_json::Value>>);
        impl AccessLog for Lines {
            fn log(&self, entry: &LogEntry<'_>) {
                let mut line = Vec::new();
                format_entry(&mut line, entry, UNIX_EPOCH, 64);
                let value = serde_json::from_slice(&line).unwrap();
                self.0.lock().unwrap().push(value);
            }
        }
        let meta = meta();
        for (policy, reason) in [
            ("", DenyReason::NoAllow),
            ("lockdown", DenyReason::DenyRule),
        ] {
            let log = Lines(Mutex::new(Vec::new()));
            let mut inject = [InjectBuffer::new(0), InjectBuffer::new(0)];
            let denying = Denying(policy);
            let ctx = Context::new(&meta, "r2d2", &denying, &log, &mut inject);
            let verdict = ctx.check::<()>(|_| true);
            ctx.log(
                EntryType::Denied,
                verdict.policy_name,
                &[Field::text("cmd", "HALT")],
            );
            ctx.log(EntryType::Denied, "", &[Field::text("error", "bad frame")]);
            let lines = log.0.into_inner().unwrap();
            assert_eq!(lines[0]["policy_name"], policy);
            assert_eq!(lines[0]["reason"], reason.as_str());
            assert!(lines[1].get("reason").is_none(), "no check, no reason");
        }
    }

    #[test]
    fn an_audited_request_says_so_after_its_policy_name_and_nothing_else_does() {
        let meta = meta();
        let fields = [Field::text("cmd", "HALT")];
        let entry = |entry_type| LogEntry {
            entry_type,
            policy_name: "",
            fields: &fields,
            ..bare_entry(&meta)
        };
        let line = |entry_type, audit| {
            let mut out = Vec::new();
            logging_audit_as(audit, || {
                format_entry(&mut out, &entry(entry_type), UNIX_EPOCH, 64)
            });
            String::from_utf8(out).unwrap()
        };
        let audited = line(EntryType::Request, Some(DenyReason::NoAllow));
        assert!(
            audited.contains(
                r#""entry_type":"Request","policy_name":"","verdict":"Audit","reason":"no-allow","source_security_id""#
            ),
            "{audited}"
        );
        let forwarded = line(EntryType::Request, None);
        assert!(!forwarded.contains("verdict"), "{forwarded}");
        let response = line(EntryType::Response, Some(DenyReason::DenyRule));
        assert!(
            !response.contains("verdict"),
            "only requests are audited: {response}"
        );
    }

    #[test]
    fn each_connection_gets_its_own_shared_fields_however_entries_interleave() {
        let first = meta();
        let mut second = meta();
        second.source_labels = Arc::from(vec!["app=leia".to_string()]);
        let mut third = meta();
        third.source = "127.0.0.22:6000".parse().unwrap();
        let line = |meta: &ConnectionMeta| {
            let mut out = Vec::new();
            format_entry(&mut out, &bare_entry(meta), UNIX_EPOCH, 64);
            serde_json::from_slice::<serde_json::Value>(&out).unwrap()
        };
        for _ in 0..RENDERED_CONNECTIONS + 2 {
            assert_eq!(line(&first)["source_labels"][0], "app=luke");
            assert_eq!(line(&second)["source_labels"][0], "app=leia");
            assert_eq!(line(&third)["source_address"], "127.0.0.22:6000");
            assert_eq!(line(&first)["source_address"], "127.0.0.21:5000");
        }
        // More connections than a thread keeps rendered still log right.
        let many: Vec<ConnectionMeta> = (0..2 * RENDERED_CONNECTIONS as u64)
            .map(|id| ConnectionMeta { id, ..meta() })
            .collect();
        for meta in many.iter().chain(&many) {
            assert_eq!(line(meta)["destination_labels"][0], "app=r2d2");
        }
    }

    thread_local! {
        static RENDERS: Cell<usize> = const { Cell::new(0) };
    }

    /// Renders nothing, counting the calls.
    fn count_render(_: &ConnectionMeta, _: &mut Vec<u8>) {
        RENDERS.set(RENDERS.get() + 1);
    }

    #[test]
    fn a_worker_finds_the_parts_of_the_connections_it_serves_already_rendered() {
        // Connections are dealt to the workers in turn, so a worker sees every n-th id; a
        // connection guarded at both ends logs under each.
        for workers in [1u64, 2, 3, 4, 8] {
            let metas: Vec<ConnectionMeta> = (0..200)
                .flat_map(|k| {
                    let id = 1_000 + k * workers;
                    let ingress = ConnectionMeta { id, ..meta() };
                    let egress = (k % 10 == 0).then(|| ConnectionMeta {
                        direction: Direction::Egress,
                        ..ingress.clone()
                    });
                    std::iter::once(ingress).chain(egress)
                })
                .collect();
            let mut parts = ConnectionParts::new();
            let mut out = Vec::new();
            for meta in &metas {
                parts.render(meta, &mut out, count_render);
            }
            RENDERS.set(0);
            for meta in metas.iter().chain(&metas) {
                parts.render(meta, &mut out, count_render);
            }
            assert!(
                RENDERS.get() == 0,
                "{workers} workers: {} of {} parts rendered again",
                RENDERS.get(),
                2 * metas.len()
            );
        }
    }

    #[test]
    fn numbers_and_addresses_are_written_as_display_writes_them() {
        for address in [
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "10.0.7.1:80",
            "[::1]:11211",
        ] {
            let address: SocketAddr = address.parse().unwrap();
            let mut out = Vec::new();
            push_address(&mut out, address);
            assert_eq!(String::from_utf8(out).unwrap(), address.to_string());
        }
        for n in [0, 9, 10, 99, 100, 4_294_967_295, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(String::from_utf8(out).unwrap(), n.to_string());
        }
    }

    proptest::proptest! {
        #[test]
        fn decimals_and_nanoseconds_are_written_as_display_writes_them(
            n: u64,
            seconds in 0u64..u64::MAX / 1_000_000_000,
            nanos in 0u32..1_000_000_000,
        ) {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            proptest::prop_assert_eq!(String::from_utf8(out).unwrap(), n.to_string());
            let duration = Duration::new(seconds, nanos);
            let mut out = Vec::new();
            push_nanoseconds(&mut out, duration);
            proptest::prop_assert_eq!(String::from_utf8(out).unwrap(), duration.as_nanos().to_string());
        }

        #[test]
        fn words_at_a_time_find_what_bytes_one_by_one_find(
            bytes in proptest::collection::vec(
                proptest::prop_oneof![
                    0x20u8..0x7f,
                    proptest::strategy::Just(b'"'),
                    proptest::strategy::Just(b'\\'),
                    proptest::num::u8::ANY,
                ],
                0..40,
            ),
        ) {
            proptest::prop_assert_eq!(plain(&bytes), bytes.iter().all(|&b| plain_byte(b)));
        }
    }

    #[test]
    fn strings_are_escaped_only_where_json_needs_it() {
        for (raw, json) in [
            (&b"alliance/fleet/key-1"[..], r#""alliance/fleet/key-1""#),
            (
                b"tab\there \"q\" back\\slash \x01",
                r#""tab\there \"q\" back\\slash \u0001""#,
            ),
            ("x-wing ✈".as_bytes(), r#""x-wing ✈""#),
            (b"\x7f\xc3", "\"\x7f\u{fffd}\""),
        ] {
            let mut out = Vec::new();
            json_string(&mut out, raw);
            assert_eq!(String::from_utf8(out).unwrap(), json);
        }
    }

    #[test]
    fn a_long_field_value_is_cut_at_a_character_boundary_and_marked_with_its_length() {
        let meta = meta();
        let keys = vec![b'k'; 1 << 20];
        // "✈" is three bytes: the cut at 6 falls inside the second one, which is left out.
        let fields = [
            Field::bytes("keys", &keys),
            Field::text("plane", "✈✈✈"),
            Field::text("short", "whole"),
        ];
        let mut line = Vec::new();
        let truncated = format_entry(&mut line, &multiget(&meta, &fields), UNIX_EPOCH, 5);
        assert_eq!(truncated, 2);
        assert!(line.len() < 1000, "only the kept parts are copied");
        let entry: serde_json::Value = serde_json::from_slice(&line).unwrap();
        let l7 = &entry["generic_l7"];
        assert_eq!(l7["fields"]["keys"], "kkkkk");
        assert_eq!(l7["fields"]["plane"], "✈");
        assert_eq!(l7["fields"]["short"], "whole");
        assert_eq!(
            l7["truncated"],
            serde_json::json!({"keys": 1 << 20, "plane": 9})
        );
        let mut whole = Vec::new();
        assert_eq!(
            format_entry(&mut whole, &multiget(&meta, &fields[2..]), UNIX_EPOCH, 5),
            0
        );
        let entry: serde_json::Value = serde_json::from_slice(&whole).unwrap();
        assert!(
            entry["generic_l7"].get("truncated").is_none(),
            "whole values are not marked"
        );
    }

    proptest::proptest! {
        #[test]
        fn a_cut_value_is_the_longest_start_that_ends_between_characters(
            text in "\\PC{0,40}",
            max in 0usize..48,
        ) {
            let kept = utf8_prefix(text.as_bytes(), max);
            proptest::prop_assert!(kept.len() <= max);
            proptest::prop_assert!(text.is_char_boundary(kept.len()));
            proptest::prop_assert!(text.as_bytes().starts_with(kept));
            // Nothing longer would have fitted.
            let longer = (kept.len() + 1..=max.min(text.len())).find(|&n| text.is_char_boundary(n));
            proptest::prop_assert_eq!(longer, None);
        }
    }
}
