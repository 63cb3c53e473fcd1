//! CQL text into tokens, by the lexical rules of Cassandra's grammar (`Lexer.g`), written for
//! the fixture alone: it owns what a token is and where one ends, and knows nothing of
//! statements.
//!
//! White space is only ' ', '\t', '\n' and '\r'. A line comment (`--` or `//`) runs to the
//! first '\n' or '\r', which belongs to it; one that reaches the end of the text is an error,
//! as is an unterminated `/* … */`, string or quoted name. Where several token rules match,
//! the longest match wins, and between matches of one length the rule Cassandra lists first
//! (keywords, then numbers, booleans and durations before identifiers). A number never takes
//! a `-` that starts a comment. A character that starts no token is an error.

/// A token, with names and strings already unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token<'q> {
    /// An identifier or a keyword, as written (the parser compares keywords ignoring case).
    Word(&'q str),
    /// `"…"`: the name with `""` read as `"`.
    Quoted(String),
    /// `""`, which names nothing.
    EmptyQuoted,
    /// `'…'` (with `''` read as `'`) or `$$…$$`.
    Str(String),
    Integer(&'q str),
    Float(&'q str),
    Boolean(bool),
    Duration(&'q str),
    Uuid(&'q str),
    Hex(&'q str),
    /// `-NaN` (`NaN` alone is a word).
    NegativeNaN,
    /// `-Infinity` (`Infinity` alone is a word).
    NegativeInfinity,
    /// `?`
    Marker,
    /// `..`
    Range,
    /// `expr(`, which opens a custom index expression.
    ExprOpen,
    /// Punctuation and operators: `;` `(` `)` `,` `.` `*` `=` `<` `>` `<=` `>=` `!=` `+` `-`
    /// `/` `%` `[` `]` `{` `}` `:` `+=` `-=`.
    Punct(&'static str),
}

/// A token and the byte offset it starts at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spanned<'q> {
    pub token: Token<'q>,
    pub at: usize,
}

/// Text that cannot be split into tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LexError {
    #[error("line comment at {0} has no line end")]
    UnterminatedLineComment(usize),
    #[error("comment at {0} is not closed")]
    UnterminatedComment(usize),
    #[error("string at {0} is not closed")]
    UnterminatedString(usize),
    #[error("quoted name at {0} is not closed")]
    UnterminatedName(usize),
    #[error("character {1:?} at {0} starts no token")]
    Stray(usize, char),
}

/// Punctuation, longest first so that a two-character operator wins over its first character.
const PUNCTUATION: [&str; 23] = [
    "<=", ">=", "!=", "+=", "-=", ";", "(", ")", ",", ".", "*", "=", "<", ">", "+", "-", "/", "%",
    "[", "]", "{", "}", ":",
];

/// Splits `text` into tokens, leaving out white space and comments.
pub fn tokenize(text: &str) -> Result<Vec<Spanned<'_>>, LexError> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let rest = &text[at..];
        match bytes[at] {
            b' ' | b'\t' | b'\n' | b'\r' => at += 1,
            b'-' if rest.starts_with("--") => at = line_comment(text, at)?,
            b'/' if rest.starts_with("//") => at = line_comment(text, at)?,
            b'/' if rest.starts_with("/*") => {
                let end = rest[2..]
                    .find("*/")
                    .ok_or(LexError::UnterminatedComment(at))?;
                at += 2 + end + 2;
            }
            b'\'' => {
                let (value, end) =
                    quoted(text, at, b'\'').ok_or(LexError::UnterminatedString(at))?;
                tokens.push(Spanned {
                    token: Token::Str(value),
                    at,
                });
                at = end;
            }
            b'$' if rest.starts_with("$$") => {
                let end = rest[2..]
                    .find("$$")
                    .ok_or(LexError::UnterminatedString(at))?;
                tokens.push(Spanned {
                    token: Token::Str(rest[2..2 + end].to_string()),
                    at,
                });
                at += 2 + end + 2;
            }
            b'"' if rest.starts_with("\"\"") && !rest[2..].starts_with('"') => {
                tokens.push(Spanned {
                    token: Token::EmptyQuoted,
                    at,
                });
                at += 2;
            }
            b'"' => {
                let (value, end) = quoted(text, at, b'"').ok_or(LexError::UnterminatedName(at))?;
                tokens.push(Spanned {
                    token: Token::Quoted(value),
                    at,
                });
                at = end;
            }
            // Longer than the identifier `expr`, so it wins.
            b'e' if rest.starts_with("expr(") => {
                tokens.push(Spanned {
                    token: Token::ExprOpen,
                    at,
                });
                at += 5;
            }
            _ => {
                let (token, len) = word_or_number(rest)
                    .or_else(|| symbol(rest))
                    .ok_or_else(|| LexError::Stray(at, rest.chars().next().unwrap_or('\0')))?;
                tokens.push(Spanned { token, at });
                at += len;
            }
        }
    }
    Ok(tokens)
}

/// The end of the line comment starting at `at`: just past its first '\n' or '\r'.
fn line_comment(text: &str, at: usize) -> Result<usize, LexError> {
    text[at..]
        .find(['\n', '\r'])
        .map(|end| at + end + 1)
        .ok_or(LexError::UnterminatedLineComment(at))
}

/// A string or name opened by `quote` at `at`, a doubled `quote` standing for one: its value
/// and the offset past its closing quote.
fn quoted(text: &str, at: usize, quote: u8) -> Option<(String, usize)> {
    let bytes = text.as_bytes();
    let mut value = String::new();
    let mut from = at + 1;
    let mut i = from;
    loop {
        match *bytes.get(i)? {
            b if b == quote && bytes.get(i + 1) == Some(&quote) => {
                value.push_str(&text[from..=i]);
                i += 2;
                from = i;
            }
            b if b == quote => {
                value.push_str(&text[from..i]);
                return Some((value, i + 1));
            }
            _ => i += 1,
        }
    }
}

/// Punctuation, `?` and `..` at the start of `rest`.
fn symbol(rest: &str) -> Option<(Token<'static>, usize)> {
    if rest.starts_with("..") {
        return Some((Token::Range, 2));
    }
    if rest.starts_with('?') {
        return Some((Token::Marker, 1));
    }
    PUNCTUATION
        .iter()
        .find(|p| rest.starts_with(**p))
        .map(|p| (Token::Punct(p), p.len()))
}

/// The longest identifier, keyword, boolean or literal number at the start of `rest`.
fn word_or_number<'q>(rest: &'q str) -> Option<(Token<'q>, usize)> {
    let bytes = rest.as_bytes();
    let ident = match bytes.first() {
        Some(b) if b.is_ascii_alphabetic() => {
            1 + bytes[1..]
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
                .count()
        }
        _ => 0,
    };
    // Candidates in Cassandra's rule order; a later one wins only by being longer.
    let mut best: Option<(Token<'q>, usize)> = None;
    let mut offer = |token: Token<'q>, len: usize| {
        if len > 0 && best.as_ref().map_or(true, |(_, l)| len > *l) {
            best = Some((token, len));
        }
    };
    let negative_word = |word: &str| {
        bytes.first() == Some(&b'-')
            && bytes.len() > word.len()
            && bytes[1..=word.len()].eq_ignore_ascii_case(word.as_bytes())
    };
    if negative_word("nan") {
        offer(Token::NegativeNaN, 4);
    }
    if negative_word("infinity") {
        offer(Token::NegativeInfinity, 9);
    }
    let integer = integer(bytes);
    offer(Token::Integer(&rest[..integer]), integer);
    let float = float(bytes, integer);
    offer(Token::Float(&rest[..float]), float);
    let word = &rest[..ident];
    if word.eq_ignore_ascii_case("true") || word.eq_ignore_ascii_case("false") {
        offer(Token::Boolean(word.eq_ignore_ascii_case("true")), ident);
    }
    let duration = duration(rest);
    offer(Token::Duration(&rest[..duration]), duration);
    offer(Token::Word(word), ident);
    let hex = match bytes {
        [b'0', b'x' | b'X', tail @ ..] => {
            2 + tail.iter().take_while(|b| b.is_ascii_hexdigit()).count()
        }
        _ => 0,
    };
    offer(Token::Hex(&rest[..hex]), hex);
    if is_uuid(bytes) {
        offer(Token::Uuid(&rest[..36]), 36);
    }
    best
}

fn digits(bytes: &[u8]) -> usize {
    bytes.iter().take_while(|b| b.is_ascii_digit()).count()
}

/// `'-'? DIGIT+`: its length, or 0.
fn integer(bytes: &[u8]) -> usize {
    let sign = usize::from(bytes.first() == Some(&b'-'));
    match digits(&bytes[sign..]) {
        0 => 0,
        n => sign + n,
    }
}

/// `INTEGER ('.' DIGIT*)? EXPONENT?`, given the integer's length: its length, or 0. An
/// integer followed by `..` stays an integer (a range), and one followed by `...` takes one
/// dot.
fn float(bytes: &[u8], integer: usize) -> usize {
    if integer == 0 {
        return 0;
    }
    let mut end = integer;
    if bytes.get(end) == Some(&b'.') {
        if bytes.get(end + 1) == Some(&b'.') {
            return match bytes.get(end + 2) == Some(&b'.') {
                true => end + 1,
                false => 0,
            };
        }
        end += 1 + digits(&bytes[end + 1..]);
    }
    if matches!(bytes.get(end), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(bytes.get(end + 1), Some(b'+' | b'-')));
        let n = digits(&bytes[(end + 1 + sign).min(bytes.len())..]);
        if n > 0 {
            end += 1 + sign + n;
        }
    }
    end
}

/// The units of a duration such as `1h30m`, longest spelling first (ignoring case).
const DURATION_UNITS: [&str; 11] = ["mo", "ms", "us", "µs", "ns", "y", "w", "d", "h", "m", "s"];

/// A duration: `'-'? (DIGIT+ unit)+` or an ISO 8601 form (`P…`): its length, or 0.
fn duration(rest: &str) -> usize {
    let sign = usize::from(rest.starts_with('-'));
    let body = &rest[sign..];
    let mut end = 0;
    loop {
        let n = digits(&body.as_bytes()[end..]);
        if n == 0 {
            break;
        }
        let after = &body[end + n..];
        let Some(unit) = DURATION_UNITS.iter().find(|u| {
            after.len() >= u.len()
                && after.is_char_boundary(u.len())
                && after[..u.len()].eq_ignore_ascii_case(u)
        }) else {
            break;
        };
        end += n + unit.len();
    }
    let iso = iso_duration(body);
    match end.max(iso) {
        0 => 0,
        n => sign + n,
    }
}

/// An ISO 8601 duration (`P1Y2M3DT4H5M6S`, `PT4H`, `P2W`, `P0001-02-03T04:05:06`): its length,
/// or 0. The designators are upper case.
fn iso_duration(body: &str) -> usize {
    let bytes = body.as_bytes();
    if bytes.first() != Some(&b'P') {
        return 0;
    }
    let alternative = b"P0000-00-00T00:00:00";
    if bytes.len() >= alternative.len()
        && alternative
            .iter()
            .zip(bytes)
            .all(|(pattern, b)| match pattern {
                b'0' => b.is_ascii_digit(),
                other => other == b,
            })
    {
        return alternative.len();
    }
    let week = digits(&bytes[1..]);
    let weeks = match week > 0 && bytes.get(1 + week) == Some(&b'W') {
        true => 2 + week,
        false => 0,
    };
    let date = designators(&bytes[1..], b"YMD");
    let mut end = 1 + date;
    if bytes.get(end) == Some(&b'T') {
        let time = designators(&bytes[end + 1..], b"HMS");
        if time > 0 {
            end += 1 + time;
        }
    }
    match end > 1 {
        true => end.max(weeks),
        false => weeks,
    }
}

/// `(DIGIT+ X)…` for designators `X` taken in the order given, each at most once: the length
/// of the longest such run.
fn designators(bytes: &[u8], order: &[u8]) -> usize {
    let mut end = 0;
    let mut next = 0;
    loop {
        let n = digits(&bytes[end..]);
        let Some(position) = bytes
            .get(end + n)
            .and_then(|d| order[next..].iter().position(|o| o == d))
        else {
            return end;
        };
        if n == 0 {
            return end;
        }
        end += n + 1;
        next += position + 1;
    }
}

/// Whether `bytes` starts with a UUID: hex digits grouped 8-4-4-4-12.
fn is_uuid(bytes: &[u8]) -> bool {
    bytes.len() >= 36
        && bytes[..36].iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}
