//! Patterns in policy rules that must match a whole value (`file`, `keyRegex`, `query_table`).
//!
//! A rule's regular expression is anchored at both ends: `fleet` matches the value `fleet`, not
//! `empire/fleet-plans`. Most patterns that policies hold are plain names (`attendance\.daily`,
//! or with a bare `.` for any character: `attendance.daily`) or a name followed by anything
//! (`system\..*`); those are matched by comparing bytes, the rest by the compiled regex. Every
//! other pattern is compiled, so a bad one is always refused; a plain name cannot be bad. The
//! same distinction lets a rule index ([`crate::RuleList`]) file plain names with exact values,
//! name prefixes with prefixes, and only the rest with regexes.

use regex::bytes::Regex;

use crate::protocol::RuleError;

/// Plain names (and name prefixes) up to this length are valid regexes far within the regex
/// crate's size limit, so they are not compiled at all: a policy of 100,000 table names imports
/// in milliseconds instead of seconds. Longer ones are compiled, so that the limit refuses
/// them as it refuses any other pattern.
const PLAIN_UNCOMPILED_MAX: usize = 1024;

/// A compiled pattern that matches whole values.
#[derive(Debug, Clone)]
pub struct WholeMatch {
    how: How,
}

#[derive(Debug, Clone)]
enum How {
    /// Exactly these bytes.
    Literal(Box<[u8]>),
    /// These bytes where `wild` is false, any character but a line break where it is true; the
    /// regex decides for values that are not ASCII.
    Dotted {
        bytes: Box<[u8]>,
        wild: Box<[bool]>,
        regex: Regex,
    },
    /// These bytes, then any UTF-8 text without a line break (what `.*` matches).
    Prefix(Box<[u8]>),
    Regex(Regex),
}

impl WholeMatch {
    /// Compiles `pattern`, the value of the rule key `key` in the `l7` map at `index`; a bad
    /// pattern is an error naming both.
    pub fn compile(index: usize, key: &str, pattern: &str) -> Result<WholeMatch, RuleError> {
        // The pattern is checked as written first: its errors are then in the user's terms,
        // and a pattern that closes the anchoring group itself (`a)|(b`, which would make
        // `^(?:a)|(b)$` match anything starting with `a`) is refused as unbalanced.
        let invalid = |error: regex::Error| {
            RuleError::new(
                index,
                Some(key),
                format!("invalid regex {pattern:?}: {}", one_line(&error)),
            )
        };
        let compiled = || {
            Regex::new(pattern).map_err(invalid)?;
            Regex::new(&format!("^(?:{pattern})$")).map_err(invalid)
        };
        let prefix = pattern
            .strip_suffix(".*")
            .and_then(plain)
            .filter(|pieces| pieces.iter().all(|p| p.is_some()));
        let how = match (prefix, plain(pattern)) {
            (Some(prefix), _) => How::Prefix(prefix.into_iter().flatten().collect()),
            (None, Some(pieces)) if pieces.iter().all(|p| p.is_some()) => {
                How::Literal(pieces.into_iter().flatten().collect())
            }
            (None, Some(pieces)) => How::Dotted {
                bytes: pieces.iter().map(|p| p.unwrap_or(b'.')).collect(),
                wild: pieces.iter().map(|p| p.is_none()).collect(),
                regex: compiled()?,
            },
            (None, None) => How::Regex(compiled()?),
        };
        if matches!(how, How::Literal(_) | How::Prefix(_)) && pattern.len() > PLAIN_UNCOMPILED_MAX {
            compiled()?;
        }
        Ok(WholeMatch { how })
    }

    /// Whether the whole of `value` matches.
    #[inline]
    pub fn is_match(&self, value: &[u8]) -> bool {
        match &self.how {
            How::Literal(exact) => value == &exact[..],
            How::Prefix(prefix) => {
                value.starts_with(prefix) && is_text_tail(&value[prefix.len()..])
            }
            How::Dotted { bytes, wild, regex } => {
                if !value.is_ascii() {
                    return regex.is_match(value);
                }
                value.len() == bytes.len()
                    && value
                        .iter()
                        .zip(bytes.iter().zip(wild.iter()))
                        .all(|(&v, (&b, &any))| if any { v != b'\n' } else { v == b })
            }
            How::Regex(regex) => regex.is_match(value),
        }
    }
}

/// What an index needs to know of a [`WholeMatch`] to file it.
pub(crate) enum Shape<'a> {
    /// Exactly these bytes.
    Literal(&'a [u8]),
    /// These bytes, then a tail that [`is_text_tail`] accepts.
    TextPrefix(&'a [u8]),
    /// Only the regex can tell; this is its source, anchored at both ends.
    Regex(&'a str),
}

impl WholeMatch {
    /// How an index can hold this pattern.
    pub(crate) fn shape(&self) -> Shape<'_> {
        match &self.how {
            How::Literal(exact) => Shape::Literal(exact),
            How::Prefix(prefix) => Shape::TextPrefix(prefix),
            How::Dotted { regex, .. } | How::Regex(regex) => Shape::Regex(regex.as_str()),
        }
    }
}

/// Whether `rest` is what `.*` matches: UTF-8 text without a line break.
pub(crate) fn is_text_tail(rest: &[u8]) -> bool {
    std::str::from_utf8(rest).is_ok_and(|rest| !rest.contains('\n'))
}

/// The gist of a regex error on one line: the syntax error's own words without the echoed
/// pattern and caret lines the regex crate prints above them.
fn one_line(error: &regex::Error) -> String {
    match error {
        regex::Error::Syntax(text) => text
            .lines()
            .find_map(|line| line.trim().strip_prefix("error: "))
            .unwrap_or_else(|| text.trim())
            .to_owned(),
        regex::Error::CompiledTooBig(limit) => {
            format!("the compiled regex would exceed {limit} bytes")
        }
        other => other.to_string().replace('\n', " "),
    }
}

/// `pattern` as bytes to match one by one (`None`: a bare `.`, any character) when it is a
/// plain string: characters other than the regex syntax's special ones, special ones escaped
/// with `\`, and bare dots.
fn plain(pattern: &str) -> Option<Vec<Option<u8>>> {
    let mut pieces = Vec::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        let c = match c {
            '.' => {
                pieces.push(None);
                continue;
            }
            '\\' => chars.next().filter(|&next| is_special(next))?,
            c if is_special(c) || c.is_whitespace() => return None,
            c => c,
        };
        let mut utf8 = [0; 4];
        pieces.extend(c.encode_utf8(&mut utf8).bytes().map(Some));
    }
    Some(pieces)
}

/// Characters with a meaning in the regex syntax (those `regex::escape` escapes).
fn is_special(c: char) -> bool {
    matches!(
        c,
        '\\' | '.'
            | '+'
            | '*'
            | '?'
            | '('
            | ')'
            | '|'
            | '['
            | ']'
            | '{'
            | '}'
            | '^'
            | '$'
            | '#'
            | '&'
            | '-'
            | '~'
    )
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn compiled(pattern: &str) -> WholeMatch {
        WholeMatch::compile(0, "file", pattern).unwrap()
    }

    #[test]
    fn plain_names_and_name_prefixes_are_compared_not_searched() {
        assert!(matches!(
            compiled(r"attendance\.daily_records").how,
            How::Literal(_)
        ));
        assert!(matches!(compiled(r"system\..*").how, How::Prefix(_)));
        assert!(matches!(compiled(r"/public/.*").how, How::Prefix(_)));
        assert!(matches!(compiled(r"user:[0-9]+").how, How::Regex(_)));
        assert!(matches!(compiled(r"a\d").how, How::Regex(_)));
        assert!(matches!(compiled("a b").how, How::Regex(_)));
    }

    #[test]
    fn matches_are_whole() {
        let table = compiled(r"attendance\.daily_records");
        assert!(table.is_match(b"attendance.daily_records"));
        assert!(!table.is_match(b"attendanceXdaily_records"));
        assert!(!table.is_match(b"attendance.daily_records_archive"));
        let dotted = compiled("attendance.daily_records");
        assert!(dotted.is_match(b"attendance.daily_records"));
        assert!(dotted.is_match(b"attendanceXdaily_records"));
        assert!(dotted.is_match("attendanceédaily_records".as_bytes()));
        assert!(!dotted.is_match(b"attendance\ndaily_records"));
        assert!(!dotted.is_match(b"attendance.daily_record"));
        let system = compiled(r"system\..*");
        assert!(system.is_match(b"system.local"));
        assert!(system.is_match(b"system."));
        assert!(!system.is_match(b"system_schema.tables"));
        assert!(!system.is_match(b"system.a\nb"));
        assert!(!system.is_match(b"system.\xff"));
    }

    #[test]
    fn bad_patterns_are_refused_with_their_key() {
        let error = WholeMatch::compile(3, "keyRegex", "(").unwrap_err();
        assert_eq!((error.index, error.key.as_deref()), (3, Some("keyRegex")));
        assert_eq!(error.reason, "invalid regex \"(\": unclosed group");
        let error = WholeMatch::compile(0, "file", "a)|(b").unwrap_err();
        assert_eq!(
            error.reason, "invalid regex \"a)|(b\": unopened group",
            "one line, about the pattern as written, and it cannot escape the anchors"
        );
        let error = WholeMatch::compile(0, "file", "[z-a]").unwrap_err();
        assert!(
            !error.reason.contains('\n') && !error.reason.contains("(?:"),
            "{}",
            error.reason
        );
    }

    proptest! {
        /// A pattern taken as a plain name or name prefix, which is not compiled, is a valid
        /// regex: nothing that a compilation would refuse gets through uncompiled.
        #[test]
        fn plain_names_are_valid_regexes(
            pieces in proptest::collection::vec(
                prop_oneof![
                    any::<char>().prop_map(String::from),
                    "\\\\[-\\\\.+*?()|\\[\\]{}^$#&~a-z]",
                    Just(".*".to_owned()),
                ],
                0..8,
            ),
        ) {
            let pattern = pieces.concat();
            if let Ok(WholeMatch { how: How::Literal(_) | How::Prefix(_) }) =
                WholeMatch::compile(0, "file", &pattern)
            {
                prop_assert!(Regex::new(&pattern).is_ok(), "{:?}", pattern);
                prop_assert!(Regex::new(&format!("^(?:{pattern})$")).is_ok(), "{:?}", pattern);
            }
        }

        /// Whatever shortcut a pattern takes, it matches exactly what its regex matches.
        #[test]
        fn shortcuts_agree_with_the_regex(
            pattern in r"(\\\.|[a-z./_:]|\.\*){0,8}",
            text in r"[a-z./_:\né]{0,12}",
            tail in proptest::collection::vec(any::<u8>(), 0..3),
        ) {
            let regex = Regex::new(&format!("^(?:{pattern})$")).unwrap();
            let compiled = compiled(&pattern);
            let value = [text.as_bytes(), &tail].concat();
            prop_assert_eq!(compiled.is_match(&value), regex.is_match(&value));
        }
    }
}
