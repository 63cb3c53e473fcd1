//! CQL types and values: type names, the [option] that describes a type in result metadata,
//! and the serialized form of values (what the protocol carries in a [bytes]), which is also
//! how the store keeps them.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A CQL type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CqlType {
    Ascii,
    Text,
    Int,
    Bigint,
    Boolean,
    Uuid,
    Timeuuid,
    Timestamp,
    Double,
    Float,
    Blob,
    Inet,
    List(Box<CqlType>),
    Set(Box<CqlType>),
    Map(Box<CqlType>, Box<CqlType>),
}

/// A literal as CQL text writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Literal {
    /// A string literal, unescaped.
    Str(String),
    /// A number, UUID or blob (`0x…`), as written (with its sign).
    Bare(String),
    Bool(bool),
    Null,
    /// `now()`: a new time-based UUID.
    Now,
    /// `uuid()`: a new random UUID.
    RandomUuid,
}

impl CqlType {
    /// Reads a type name: `text`, `int`, …, `list<…>`, `set<…>`, `map<…, …>` (`frozen<…>` is
    /// the same type here).
    pub fn parse(name: &str) -> Option<CqlType> {
        let name = name.trim().to_ascii_lowercase();
        if let Some(inner) = generic(&name, "frozen") {
            return CqlType::parse(inner);
        }
        if let Some(inner) = generic(&name, "list") {
            return Some(CqlType::List(Box::new(CqlType::parse(inner)?)));
        }
        if let Some(inner) = generic(&name, "set") {
            return Some(CqlType::Set(Box::new(CqlType::parse(inner)?)));
        }
        if let Some(inner) = generic(&name, "map") {
            let split = split_top_level(inner)?;
            return Some(CqlType::Map(
                Box::new(CqlType::parse(&inner[..split])?),
                Box::new(CqlType::parse(&inner[split + 1..])?),
            ));
        }
        Some(match name.as_str() {
            "ascii" => CqlType::Ascii,
            "text" | "varchar" => CqlType::Text,
            "int" => CqlType::Int,
            "bigint" => CqlType::Bigint,
            "boolean" => CqlType::Boolean,
            "uuid" => CqlType::Uuid,
            "timeuuid" => CqlType::Timeuuid,
            "timestamp" => CqlType::Timestamp,
            "double" => CqlType::Double,
            "float" => CqlType::Float,
            "blob" => CqlType::Blob,
            "inet" => CqlType::Inet,
            _ => return None,
        })
    }

    /// The type as an [option] of result metadata.
    pub fn write_option(&self, out: &mut Vec<u8>) {
        let id: u16 = match self {
            CqlType::Ascii => 0x0001,
            CqlType::Bigint => 0x0002,
            CqlType::Blob => 0x0003,
            CqlType::Boolean => 0x0004,
            CqlType::Double => 0x0007,
            CqlType::Float => 0x0008,
            CqlType::Int => 0x0009,
            CqlType::Timestamp => 0x000b,
            CqlType::Uuid => 0x000c,
            CqlType::Text => 0x000d,
            CqlType::Timeuuid => 0x000f,
            CqlType::Inet => 0x0010,
            CqlType::List(_) => 0x0020,
            CqlType::Map(_, _) => 0x0021,
            CqlType::Set(_) => 0x0022,
        };
        out.extend_from_slice(&id.to_be_bytes());
        match self {
            CqlType::List(inner) | CqlType::Set(inner) => inner.write_option(out),
            CqlType::Map(key, value) => {
                key.write_option(out);
                value.write_option(out);
            }
            _ => {}
        }
    }

    /// The serialized length of a fixed-size type.
    fn fixed_len(&self) -> Option<usize> {
        match self {
            CqlType::Int | CqlType::Float => Some(4),
            CqlType::Bigint | CqlType::Timestamp | CqlType::Double => Some(8),
            CqlType::Boolean => Some(1),
            CqlType::Uuid | CqlType::Timeuuid => Some(16),
            _ => None,
        }
    }

    /// Checks a bound value's serialized form.
    pub fn check(&self, bytes: &[u8]) -> Result<(), String> {
        let ok = match self {
            CqlType::Text => std::str::from_utf8(bytes).is_ok(),
            CqlType::Ascii => bytes.is_ascii(),
            CqlType::Inet => bytes.len() == 4 || bytes.len() == 16,
            other => other.fixed_len().map_or(true, |len| len == bytes.len()),
        };
        match ok {
            true => Ok(()),
            false => Err(format!("invalid {} value of {} bytes", self, bytes.len())),
        }
    }

    /// The serialized form of a literal, `None` for null.
    pub fn from_literal(&self, literal: &Literal) -> Result<Option<Vec<u8>>, String> {
        let bad = || format!("cannot read {literal:?} as a {self} value");
        let bytes = match (self, literal) {
            (_, Literal::Null) => return Ok(None),
            (CqlType::Text | CqlType::Ascii, Literal::Str(s)) => {
                let bytes = s.as_bytes().to_vec();
                self.check(&bytes)?;
                bytes
            }
            (CqlType::Int, Literal::Bare(n)) => {
                n.parse::<i32>().map_err(|_| bad())?.to_be_bytes().to_vec()
            }
            (CqlType::Bigint | CqlType::Timestamp, Literal::Bare(n)) => {
                n.parse::<i64>().map_err(|_| bad())?.to_be_bytes().to_vec()
            }
            (CqlType::Timestamp, Literal::Str(s)) => {
                parse_timestamp(s).ok_or_else(bad)?.to_be_bytes().to_vec()
            }
            (CqlType::Double, Literal::Bare(n)) => {
                n.parse::<f64>().map_err(|_| bad())?.to_be_bytes().to_vec()
            }
            (CqlType::Float, Literal::Bare(n)) => {
                n.parse::<f32>().map_err(|_| bad())?.to_be_bytes().to_vec()
            }
            (CqlType::Boolean, Literal::Bool(b)) => vec![u8::from(*b)],
            (CqlType::Uuid | CqlType::Timeuuid, Literal::Bare(u)) => {
                parse_uuid(u).ok_or_else(bad)?.to_vec()
            }
            (CqlType::Uuid | CqlType::Timeuuid, Literal::Now) => time_uuid().to_vec(),
            (CqlType::Uuid, Literal::RandomUuid) => random_uuid().to_vec(),
            (CqlType::Blob, Literal::Bare(hex)) => parse_blob(hex).ok_or_else(bad)?,
            (CqlType::Inet, Literal::Str(s)) => match s.parse::<IpAddr>().map_err(|_| bad())? {
                IpAddr::V4(ip) => ip.octets().to_vec(),
                IpAddr::V6(ip) => ip.octets().to_vec(),
            },
            _ => return Err(bad()),
        };
        Ok(Some(bytes))
    }

    /// Appends bytes that order as the values do (for integers; bytewise otherwise), and that
    /// stay ordered when several are concatenated.
    pub fn order_bytes(&self, bytes: &[u8], out: &mut Vec<u8>) {
        match self {
            CqlType::Int | CqlType::Bigint | CqlType::Timestamp if !bytes.is_empty() => {
                out.push(bytes[0] ^ 0x80);
                out.extend_from_slice(&bytes[1..]);
            }
            _ => {
                for &b in bytes {
                    out.push(b);
                    if b == 0 {
                        out.push(0xff);
                    }
                }
                out.extend_from_slice(&[0, 0]);
            }
        }
    }
}

impl std::fmt::Display for CqlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            CqlType::Ascii => "ascii",
            CqlType::Text => "text",
            CqlType::Int => "int",
            CqlType::Bigint => "bigint",
            CqlType::Boolean => "boolean",
            CqlType::Uuid => "uuid",
            CqlType::Timeuuid => "timeuuid",
            CqlType::Timestamp => "timestamp",
            CqlType::Double => "double",
            CqlType::Float => "float",
            CqlType::Blob => "blob",
            CqlType::Inet => "inet",
            CqlType::List(inner) => return write!(f, "list<{inner}>"),
            CqlType::Set(inner) => return write!(f, "set<{inner}>"),
            CqlType::Map(key, value) => return write!(f, "map<{key}, {value}>"),
        };
        f.write_str(name)
    }
}

/// The inside of `outer<…>`.
fn generic<'n>(name: &'n str, outer: &str) -> Option<&'n str> {
    name.strip_prefix(outer)?
        .trim_start()
        .strip_prefix('<')?
        .strip_suffix('>')
}

/// The position of the comma that separates a map's key and value types.
fn split_top_level(inner: &str) -> Option<usize> {
    let mut depth = 0i32;
    for (i, c) in inner.char_indices() {
        match c {
            '<' => depth += 1,
            '>' => depth -= 1,
            ',' if depth == 0 => return Some(i),
            _ => {}
        }
    }
    None
}

/// A UUID from its 36-character text form.
pub fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let hex: String = text.chars().filter(|&c| c != '-').collect();
    if text.len() != 36 || hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A blob literal `0x…`.
fn parse_blob(text: &str) -> Option<Vec<u8>> {
    let hex = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))?;
    if hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Milliseconds since the epoch of `YYYY-MM-DD`, optionally followed by ` HH:MM[:SS[.fff]]`
/// (or `T` instead of the space) and `Z` or `+0000`: UTC only.
fn parse_timestamp(text: &str) -> Option<i64> {
    let text = text
        .strip_suffix('Z')
        .or_else(|| text.strip_suffix("+0000"))
        .unwrap_or(text);
    let (date, time) = match text.split_once(['T', ' ']) {
        Some((date, time)) => (date, Some(time)),
        None => (text, None),
    };
    let mut parts = date.split('-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: i64 = parts.next()?.parse().ok()?;
    let day: i64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let mut millis = days_from_civil(year, month, day) * 86_400_000;
    if let Some(time) = time {
        let mut parts = time.split(':');
        let hours: i64 = parts.next()?.parse().ok()?;
        let minutes: i64 = parts.next()?.parse().ok()?;
        let seconds: f64 = parts.next().unwrap_or("0").parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        millis += hours * 3_600_000 + minutes * 60_000 + (seconds * 1000.0).round() as i64;
    }
    Some(millis)
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// A version 1 (time-based) UUID; successive calls give increasing timestamps.
pub fn time_uuid() -> [u8; 16] {
    static LAST: AtomicU64 = AtomicU64::new(0);
    // 100 ns intervals between 1582-10-15 and 1970-01-01.
    const GREGORIAN_OFFSET: u64 = 0x01b2_1dd2_1381_4000;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64 / 100)
        .unwrap_or(0)
        + GREGORIAN_OFFSET;
    let previous = LAST
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(now.max(last + 1))
        })
        .unwrap_or(0);
    let ticks = now.max(previous + 1);
    let mut out = [0u8; 16];
    out[0..4].copy_from_slice(&(ticks as u32).to_be_bytes());
    out[4..6].copy_from_slice(&((ticks >> 32) as u16).to_be_bytes());
    out[6..8].copy_from_slice(&(((ticks >> 48) as u16 & 0x0fff) | 0x1000).to_be_bytes());
    out[8..].copy_from_slice(&[0x80, 0x01, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab]);
    out
}

/// A version 4 (random) UUID.
pub fn random_uuid() -> [u8; 16] {
    let mut out = [0u8; 16];
    for half in out.chunks_mut(8) {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        half.copy_from_slice(&hasher.finish().to_be_bytes());
    }
    out[6] = (out[6] & 0x0f) | 0x40;
    out[8] = (out[8] & 0x3f) | 0x80;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_and_options() {
        for name in [
            "text",
            "int",
            "bigint",
            "boolean",
            "uuid",
            "timestamp",
            "timeuuid",
        ] {
            assert_eq!(CqlType::parse(name).unwrap().to_string(), name);
        }
        assert_eq!(CqlType::parse("VARCHAR"), Some(CqlType::Text));
        let map = CqlType::parse("frozen<map<text, list<int>>>").unwrap();
        assert_eq!(map.to_string(), "map<text, list<int>>");
        let mut option = Vec::new();
        map.write_option(&mut option);
        assert_eq!(option, [0, 0x21, 0, 0x0d, 0, 0x20, 0, 0x09]);
        assert_eq!(CqlType::parse("decimal"), None);
    }

    #[test]
    fn literals_encode_per_type() {
        let bare = |s: &str| Literal::Bare(s.to_string());
        let enc = |t: CqlType, l: Literal| t.from_literal(&l).unwrap().unwrap();
        assert_eq!(enc(CqlType::Int, bare("-2")), (-2i32).to_be_bytes());
        assert_eq!(enc(CqlType::Bigint, bare("7")), 7i64.to_be_bytes());
        assert_eq!(enc(CqlType::Double, bare("1.5")), 1.5f64.to_be_bytes());
        assert_eq!(enc(CqlType::Boolean, Literal::Bool(true)), [1]);
        assert_eq!(
            enc(CqlType::Text, Literal::Str("héllo".into())),
            "héllo".as_bytes()
        );
        assert_eq!(enc(CqlType::Blob, bare("0x0aff")), [0x0a, 0xff]);
        assert_eq!(
            enc(CqlType::Uuid, bare("123e4567-e89b-12d3-a456-426614174000"))[..4],
            [0x12, 0x3e, 0x45, 0x67]
        );
        assert_eq!(
            enc(
                CqlType::Timestamp,
                Literal::Str("2024-03-01 12:00:00Z".into())
            ),
            1_709_294_400_000i64.to_be_bytes()
        );
        assert_eq!(
            enc(CqlType::Inet, Literal::Str("10.0.0.1".into())),
            [10, 0, 0, 1]
        );
        assert_eq!(CqlType::Int.from_literal(&Literal::Null), Ok(None));
        assert!(CqlType::Int.from_literal(&bare("x")).is_err());
        assert!(CqlType::Int
            .from_literal(&Literal::Str("1".into()))
            .is_err());
        assert!(CqlType::Uuid.from_literal(&bare("1234")).is_err());
    }

    #[test]
    fn generated_uuids_have_their_versions_and_order() {
        let (a, b) = (time_uuid(), time_uuid());
        assert_eq!(a[6] >> 4, 1);
        assert_ne!(a, b);
        assert_eq!(random_uuid()[6] >> 4, 4);
    }

    #[test]
    fn checks_and_order() {
        assert!(CqlType::Int.check(&[0, 0, 0, 1]).is_ok());
        assert!(CqlType::Int.check(&[0, 1]).is_err());
        assert!(CqlType::Text.check(&[0xff]).is_err());
        let key = |t: &CqlType, v: &[u8]| {
            let mut out = Vec::new();
            t.order_bytes(v, &mut out);
            out
        };
        assert!(
            key(&CqlType::Int, &(-1i32).to_be_bytes()) < key(&CqlType::Int, &1i32.to_be_bytes())
        );
        assert!(key(&CqlType::Text, b"a") < key(&CqlType::Text, b"ab"));
        assert!(key(&CqlType::Text, b"ab") < key(&CqlType::Text, b"b"));
    }
}
