//! A CQL lexer: text to tokens, split exactly where Cassandra's own lexer splits it.
//!
//! What decides policy is where comments, literals and statements begin and end, so those follow
//! Cassandra's grammar to the byte: white space is space, tab, `\n` and `\r` only; a `--` or
//! `//` comment runs to the first `\n` or `\r` and is an error when the text ends first; `/* */`
//! does not nest; a number (`-1`, `1.5e-3`, `0x1f`, `3h30m`, `-P1DT2H`, `-Infinity`, a UUID)
//! never contains `--`, so a `--` outside a literal always starts a comment, and a number
//! ends where Cassandra's ends, so a word glued to it (`-InfinityDELETE`) is read as Cassandra
//! reads it. Keywords are case-insensitive (they come out
//! as words; the classifier compares them without case), quoted identifiers keep their case,
//! string literals are `'…'` with `''` escapes and `$$…$$`. A character no CQL token starts
//! with (anything outside ASCII, a control character, a lone `$`, …) is an error. It borrows
//! the text and never allocates.
//!
//! Past a statement's first tokens, classifying needs only its words and its end:
//! `Lexer::next_word` walks to them without making the tokens between, reading white space,
//! words and single characters by a table of first bytes and handing every other token to the
//! iterator's one full reading; a property test holds it to the token walk on any text.

/// One token of CQL text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token<'q> {
    /// An unquoted identifier or keyword, as written.
    Word(&'q str),
    /// A `"quoted"` identifier, without its quotes (`""` inside stands for one `"`).
    Quoted(&'q str),
    /// A string literal, without its delimiters.
    Str(&'q str),
    /// A number, hex blob, duration or UUID.
    Literal(&'q str),
    /// A bind marker: `?`, or `:name`.
    Marker,
    /// Any other single character: `.`, `,`, `;`, `(`, `)`, `=`, …
    Punct(char),
}

impl Token<'_> {
    /// Whether this is the keyword `keyword` (any case).
    pub fn is(&self, keyword: &str) -> bool {
        matches!(self, Token::Word(w) if w.eq_ignore_ascii_case(keyword))
    }
}

/// Text the lexer cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LexError {
    /// A string literal without its closing quote.
    #[error("unterminated string literal starting at byte {0}")]
    UnterminatedString(usize),
    /// A quoted identifier without its closing quote.
    #[error("unterminated quoted identifier starting at byte {0}")]
    UnterminatedQuoted(usize),
    /// A `/*` comment without its `*/`.
    #[error("unterminated comment starting at byte {0}")]
    UnterminatedComment(usize),
    /// A `--` or `//` comment that the text ends in before a line end.
    #[error("line comment without a line end starting at byte {0}")]
    UnterminatedLineComment(usize),
    /// A character no CQL token starts with.
    #[error("unexpected character at byte {0}")]
    Unexpected(usize),
}

/// Byte classes, as bits of [`CLASSES`].
const BLANK: u8 = 1;
/// Starts a word: a letter or `_`.
const WORD_START: u8 = 2;
/// Continues a word: a letter, a digit or `_`.
const WORD: u8 = 4;
/// A single-character token: punctuation and operators.
const PUNCT: u8 = 8;
/// A hexadecimal digit.
const HEX: u8 = 16;

/// The classes of every byte, looked up once per byte instead of tested one by one.
static CLASSES: [u8; 256] = {
    let mut classes = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let mut class = 0;
        if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
            class |= BLANK;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            class |= WORD_START | WORD;
        }
        if c.is_ascii_digit() {
            class |= WORD;
        }
        if c.is_ascii_hexdigit() {
            class |= HEX;
        }
        if matches!(
            c,
            b';' | b'('
                | b')'
                | b','
                | b'.'
                | b'*'
                | b'='
                | b'<'
                | b'>'
                | b'!'
                | b'['
                | b']'
                | b'{'
                | b'}'
                | b':'
                | b'+'
                | b'-'
                | b'?'
                | b'/'
                | b'%'
        ) {
            class |= PUNCT;
        }
        classes[b] = class;
        b += 1;
    }
    classes
};

/// How [`Lexer::next_word`] reads a token by its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fast {
    /// White space.
    Blank,
    /// A token of this one character that is neither a `;` nor the start of anything longer:
    /// `.`, `,`, `(`, `?`, `=`, ….
    Punct,
    /// A letter or `_`: a word, a UUID or an ISO 8601 duration.
    Letter,
    /// Anything else: left to [`Lexer::next_token`].
    Other,
}

/// The [`Fast`] reading of every byte.
static FAST: [Fast; 256] = {
    let mut fast = [Fast::Other; 256];
    let mut b = 0;
    while b < 256 {
        let class = CLASSES[b];
        fast[b] = if class & BLANK != 0 {
            Fast::Blank
        } else if class & WORD_START != 0 {
            Fast::Letter
        } else if class & PUNCT != 0 && !matches!(b as u8, b';' | b':' | b'-' | b'/') {
            Fast::Punct
        } else {
            Fast::Other
        };
        b += 1;
    }
    fast
};

/// Whether `b` is of `class`.
#[inline]
fn is(b: u8, class: u8) -> bool {
    CLASSES[usize::from(b)] & class != 0
}

/// The units a duration literal is made of (`1h30m`, `2mo`, `500ms`, `3µs`), longest first where
/// one begins another.
const DURATION_UNITS: [&[u8]; 11] = [
    b"mo",
    b"ms",
    b"us",
    "\u{b5}s".as_bytes(),
    b"ns",
    b"y",
    b"w",
    b"d",
    b"h",
    b"m",
    b"s",
];

/// The length of the duration unit at the start of `bytes` (any case), or 0.
fn duration_unit(bytes: &[u8]) -> usize {
    DURATION_UNITS
        .iter()
        .find(|unit| bytes.len() >= unit.len() && bytes[..unit.len()].eq_ignore_ascii_case(unit))
        .map_or(0, |unit| unit.len())
}

/// Whether a UUID (`8-4-4-4-12` hexadecimal digits) starts `bytes`.
fn is_uuid(bytes: &[u8]) -> bool {
    const DASHES: [usize; 4] = [8, 13, 18, 23];
    // The dash after the first group rules out nearly every word and number, read first.
    bytes.len() >= 36
        && bytes[8] == b'-'
        && bytes[..36]
            .iter()
            .enumerate()
            .all(|(i, &b)| match DASHES.contains(&i) {
                true => b == b'-',
                false => is(b, HEX),
            })
}

/// Where the digits from `at` end.
fn digits_end(bytes: &[u8], mut at: usize) -> usize {
    while bytes.get(at).is_some_and(u8::is_ascii_digit) {
        at += 1;
    }
    at
}

/// Where the number starting at `start` (a digit, or a `-` before one) ends: an integer, a
/// float with an optional exponent, a `0x` blob or a duration. A `-` belongs to it only as its
/// sign or its exponent's, before a digit, so no number holds `--`.
fn number_end(bytes: &[u8], start: usize) -> usize {
    let mut at = start + usize::from(bytes[start] == b'-');
    if bytes[start] == b'0' && matches!(bytes.get(start + 1), Some(b'x' | b'X')) {
        at = start + 2;
        while bytes.get(at).is_some_and(|&b| is(b, HEX)) {
            at += 1;
        }
        return at;
    }
    at = digits_end(bytes, at);
    let integer_end = at;
    // `1.5`, `1.`, but `1..2` is an integer and a range.
    if bytes.get(at) == Some(&b'.') && bytes.get(at + 1) != Some(&b'.') {
        at = digits_end(bytes, at + 1);
    }
    if matches!(bytes.get(at), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(bytes.get(at + 1), Some(b'+' | b'-')));
        if bytes.get(at + 1 + sign).is_some_and(u8::is_ascii_digit) {
            return digits_end(bytes, at + 1 + sign);
        }
    }
    if at != integer_end {
        return at;
    }
    // A duration: units, each after digits (`1h30m`).
    loop {
        let unit = duration_unit(&bytes[at..]);
        if unit == 0 {
            return at;
        }
        at += unit;
        let more = digits_end(bytes, at);
        if more == at || duration_unit(&bytes[more..]) == 0 {
            return at;
        }
        at = more;
    }
}

/// Where the ISO 8601 duration whose `P` is at `p` ends, if one does: the alternative format
/// `PYYYY-MM-DDThh:mm:ss`, `P…W`, or a period (`P1Y2M3D`, each part optional in order) and/or
/// time (`T1H2M3S`). Letters are upper case, as Cassandra's grammar writes them.
fn iso_duration_end(bytes: &[u8], p: usize) -> Option<usize> {
    const ALTERNATIVE: &[u8; 20] = b"P0000-00-00T00:00:00";
    if bytes.len() >= p + 20
        && bytes[p..p + 20]
            .iter()
            .zip(ALTERNATIVE)
            .all(|(&b, &form)| match form {
                b'0' => b.is_ascii_digit(),
                _ => b == form,
            })
    {
        return Some(p + 20);
    }
    let start = p + 1;
    if bytes.get(start) == Some(&b'T') {
        return iso_time_end(bytes, start);
    }
    let digits = digits_end(bytes, start);
    if digits == start {
        return None;
    }
    let at = match bytes.get(digits) {
        Some(b'W') => return Some(digits + 1),
        Some(b'Y') => {
            let at = iso_part_end(bytes, digits + 1, b'M');
            iso_part_end(bytes, at, b'D')
        }
        Some(b'M') => iso_part_end(bytes, digits + 1, b'D'),
        Some(b'D') => digits + 1,
        _ => return None,
    };
    match bytes.get(at) {
        Some(b'T') => Some(iso_time_end(bytes, at).unwrap_or(at)),
        _ => Some(at),
    }
}

/// Where the ISO 8601 time designators whose `T` is at `t` end (`T1H2M3S`, parts optional in
/// order but one at least).
fn iso_time_end(bytes: &[u8], t: usize) -> Option<usize> {
    let digits = digits_end(bytes, t + 1);
    if digits == t + 1 {
        return None;
    }
    match bytes.get(digits) {
        Some(b'H') => {
            let at = iso_part_end(bytes, digits + 1, b'M');
            Some(iso_part_end(bytes, at, b'S'))
        }
        Some(b'M') => Some(iso_part_end(bytes, digits + 1, b'S')),
        Some(b'S') => Some(digits + 1),
        _ => None,
    }
}

/// After an optional ISO 8601 part at `at` (digits, then `letter`), where reading goes on.
fn iso_part_end(bytes: &[u8], at: usize, letter: u8) -> usize {
    let digits = digits_end(bytes, at);
    match digits > at && bytes.get(digits) == Some(&letter) {
        true => digits + 1,
        false => at,
    }
}

/// Where the negative literal starting at the `-` at `start` ends, if one does there: a
/// negative ISO duration (`-P1D`), `-NaN` or `-Infinity` (any case). Each is one token in
/// Cassandra's grammar, so what follows it starts a new token even without a space.
fn negative_literal_end(bytes: &[u8], start: usize) -> Option<usize> {
    let rest = &bytes[start + 1..];
    if rest.first() == Some(&b'P') {
        return iso_duration_end(bytes, start + 1);
    }
    [&b"infinity"[..], b"nan"]
        .into_iter()
        .find(|word| rest.len() >= word.len() && rest[..word.len()].eq_ignore_ascii_case(word))
        .map(|word| start + 1 + word.len())
}

/// What [`Lexer::next_word`] stops at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WordOrEnd<'q> {
    /// An unquoted identifier or keyword, as written (the token [`Token::Word`] holds).
    Word(&'q str),
    /// A `;` (the cursor is past it) or the end of the text.
    End,
}

/// An iterator over the tokens of CQL text.
#[derive(Debug, Clone)]
pub struct Lexer<'q> {
    text: &'q str,
    at: usize,
}

impl<'q> Lexer<'q> {
    /// Tokens of `text`.
    pub fn new(text: &'q str) -> Self {
        Lexer { text, at: 0 }
    }

    fn rest(&self) -> &'q [u8] {
        &self.text.as_bytes()[self.at..]
    }

    /// Skips white space and comments.
    #[inline]
    fn skip_blank(&mut self) -> Result<(), LexError> {
        let bytes = self.text.as_bytes();
        loop {
            while bytes.get(self.at).is_some_and(|&b| is(b, BLANK)) {
                self.at += 1;
            }
            if !matches!(bytes.get(self.at), Some(b'-' | b'/')) || !self.skip_comment()? {
                return Ok(());
            }
        }
    }

    /// Moves past the comment at the cursor, if one starts there: a `--` or `//` comment
    /// through the first `\n` or `\r`, a `/* */` comment through its end.
    #[inline]
    fn skip_comment(&mut self) -> Result<bool, LexError> {
        let rest = self.rest();
        match rest {
            [b'-', b'-', ..] | [b'/', b'/', ..] => {
                let end = memchr::memchr2(b'\n', b'\r', &rest[2..])
                    .ok_or(LexError::UnterminatedLineComment(self.at))?;
                self.at += end + 3;
            }
            [b'/', b'*', ..] => {
                let end = memchr::memmem::find(&rest[2..], b"*/")
                    .ok_or(LexError::UnterminatedComment(self.at))?;
                self.at += end + 4;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Moves past white space, comments and `;` tokens; true when text other than these
    /// follows.
    pub fn skip_semicolons(&mut self) -> Result<bool, LexError> {
        loop {
            self.skip_blank()?;
            match self.rest().first() {
                Some(b';') => self.at += 1,
                Some(_) => return Ok(true),
                None => return Ok(false),
            }
        }
    }

    /// Reads the `'…'` string literal at the cursor.
    fn string(&mut self) -> Result<&'q str, LexError> {
        let start = self.at;
        self.delimited(b'\'')
            .ok_or(LexError::UnterminatedString(start))
    }

    /// Reads the `"…"` identifier at the cursor.
    fn quoted(&mut self) -> Result<&'q str, LexError> {
        let start = self.at;
        self.delimited(b'"')
            .ok_or(LexError::UnterminatedQuoted(start))
    }

    /// Reads the `$$…$$` string literal at the cursor.
    fn dollar_string(&mut self) -> Result<&'q str, LexError> {
        let start = self.at;
        let body = start + 2;
        let end = memchr::memmem::find(&self.text.as_bytes()[body..], b"$$")
            .ok_or(LexError::UnterminatedString(start))?;
        self.at = body + end + 2;
        Ok(&self.text[body..body + end])
    }

    /// Reads a literal delimited by `quote`, where a doubled quote stands for one.
    fn delimited(&mut self, quote: u8) -> Option<&'q str> {
        let start = self.at + 1;
        let bytes = self.text.as_bytes();
        let mut i = start;
        loop {
            i += memchr::memchr(quote, &bytes[i..])?;
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            self.at = i + 1;
            return Some(&self.text[start..i]);
        }
    }

    #[inline]
    fn next_token(&mut self) -> Result<Option<Token<'q>>, LexError> {
        self.skip_blank()?;
        let start = self.at;
        let bytes = self.text.as_bytes();
        let Some(&first) = bytes.get(start) else {
            return Ok(None);
        };
        let second = bytes.get(start + 1).copied();
        let token = match first {
            b'\'' => Token::Str(self.string()?),
            b'"' => Token::Quoted(self.quoted()?),
            b'$' if second == Some(b'$') => Token::Str(self.dollar_string()?),
            b'?' => {
                self.at += 1;
                Token::Marker
            }
            b':' if second.is_some_and(|b| is(b, WORD_START)) => {
                self.at += 1;
                self.take_while(WORD);
                Token::Marker
            }
            b if is(b, HEX) && is_uuid(&bytes[start..]) => {
                self.at += 36;
                Token::Literal(&self.text[start..self.at])
            }
            b'P' if iso_duration_end(bytes, start) == Some(start + 20) => {
                self.at = start + 20;
                Token::Literal(&self.text[start..self.at])
            }
            b if is(b, WORD_START) => Token::Word(self.take_while(WORD)),
            b if b.is_ascii_digit()
                || (b == b'-' && second.is_some_and(|b| b.is_ascii_digit())) =>
            {
                self.at = number_end(bytes, start);
                Token::Literal(&self.text[start..self.at])
            }
            b'-' if negative_literal_end(bytes, start).is_some() => {
                self.at = negative_literal_end(bytes, start).unwrap_or(start + 1);
                Token::Literal(&self.text[start..self.at])
            }
            b if is(b, PUNCT) => {
                self.at += 1;
                Token::Punct(char::from(b))
            }
            _ => return Err(LexError::Unexpected(start)),
        };
        Ok(Some(token))
    }

    /// Moves past the tokens up to the next word, returning it, or past the next `;`: the
    /// words the tokens hold, in the same places, without making the other tokens. Words and
    /// the single-character tokens that statements are mostly made of are read here; every
    /// other token (literals, markers, comments, `-`, `/`) as the iterator reads it. A lexing
    /// error moves the cursor to the end of the text, as it ends the iterator.
    #[inline]
    pub(crate) fn next_word(&mut self) -> Result<WordOrEnd<'q>, LexError> {
        let bytes = self.text.as_bytes();
        loop {
            let start = self.at;
            let Some(&first) = bytes.get(start) else {
                return Ok(WordOrEnd::End);
            };
            match FAST[usize::from(first)] {
                Fast::Blank => self.at += 1,
                Fast::Punct => self.at += 1,
                Fast::Letter => {
                    // A UUID or an ISO 8601 duration in the alternative format may start with
                    // a letter; anything else is a word.
                    if is(first, HEX) && is_uuid(&bytes[start..]) {
                        self.at += 36;
                    } else if first == b'P' && iso_duration_end(bytes, start) == Some(start + 20) {
                        self.at += 20;
                    } else {
                        return Ok(WordOrEnd::Word(self.take_while(WORD)));
                    }
                }
                Fast::Other => match self.next_token() {
                    Ok(None | Some(Token::Punct(';'))) => return Ok(WordOrEnd::End),
                    Ok(Some(Token::Word(word))) => return Ok(WordOrEnd::Word(word)),
                    Ok(Some(_)) => {}
                    Err(error) => {
                        self.at = self.text.len();
                        return Err(error);
                    }
                },
            }
        }
    }

    /// Moves the cursor back to the start of `word`, a word it has just read.
    pub(crate) fn back_to(&mut self, word: &'q str) {
        self.at -= word.len();
    }

    /// Moves past the bytes of class `class`, returning them.
    #[inline]
    fn take_while(&mut self, class: u8) -> &'q str {
        let start = self.at;
        let rest = self.rest();
        self.at += rest
            .iter()
            .position(|&b| !is(b, class))
            .unwrap_or(rest.len());
        &self.text[start..self.at]
    }
}

impl<'q> Iterator for Lexer<'q> {
    type Item = Result<Token<'q>, LexError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match self.next_token() {
            Ok(Some(token)) => Some(Ok(token)),
            Ok(None) => None,
            Err(error) => {
                self.at = self.text.len();
                Some(Err(error))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tokens(text: &str) -> Vec<Token<'_>> {
        Lexer::new(text).collect::<Result<_, _>>().unwrap()
    }

    fn error(text: &str) -> Option<LexError> {
        Lexer::new(text).find_map(Result::err)
    }

    #[test]
    fn words_quoted_names_strings_and_punctuation() {
        assert_eq!(
            tokens(r#"INSERT INTO "MyKs"."Tbl"(a,b) VALUES ('it''s', $$x;y$$, 0x0A, ?, :name)"#),
            vec![
                Token::Word("INSERT"),
                Token::Word("INTO"),
                Token::Quoted("MyKs"),
                Token::Punct('.'),
                Token::Quoted("Tbl"),
                Token::Punct('('),
                Token::Word("a"),
                Token::Punct(','),
                Token::Word("b"),
                Token::Punct(')'),
                Token::Word("VALUES"),
                Token::Punct('('),
                Token::Str("it''s"),
                Token::Punct(','),
                Token::Str("x;y"),
                Token::Punct(','),
                Token::Literal("0x0A"),
                Token::Punct(','),
                Token::Marker,
                Token::Punct(','),
                Token::Marker,
                Token::Punct(')'),
            ]
        );
    }

    #[test]
    fn comments_are_skipped_wherever_they_are() {
        let text = "-- lead\nSELECT /* FROM secret.t */ * // tail\nFROM ks.t; -- end\n";
        assert_eq!(
            tokens(text),
            vec![
                Token::Word("SELECT"),
                Token::Punct('*'),
                Token::Word("FROM"),
                Token::Word("ks"),
                Token::Punct('.'),
                Token::Word("t"),
                Token::Punct(';'),
            ]
        );
    }

    #[test]
    fn line_comments_end_at_a_carriage_return_too() {
        assert_eq!(
            tokens("SELECT*FROM--\rsecret.vault/*\nsystem.local*/"),
            tokens("SELECT*FROM secret.vault")
        );
        assert_eq!(
            tokens("//\rDROP KEYSPACE secret/*\nSELECT*FROM system.local*/"),
            tokens("DROP KEYSPACE secret")
        );
        assert_eq!(tokens("a--x\r\nb"), tokens("a b"));
    }

    #[test]
    fn no_number_holds_two_dashes() {
        for (text, number) in [
            ("1--x\n", "1"),
            ("1.5--x\n", "1.5"),
            ("0x1f--x\n", "0x1f"),
            ("3h--x\n", "3h"),
            ("1e5--x\n", "1e5"),
            ("-12--x\n", "-12"),
            (
                "01234567-89ab-cdef-0123-456789abcdef--x\n",
                "01234567-89ab-cdef-0123-456789abcdef",
            ),
            (
                "deadbeef-dead-beef-dead-beefdeadbeef--x\n",
                "deadbeef-dead-beef-dead-beefdeadbeef",
            ),
        ] {
            assert_eq!(tokens(text), vec![Token::Literal(number)], "{text:?}");
        }
    }

    #[test]
    fn numbers_of_every_form() {
        for (text, number) in [
            ("-1", "-1"),
            ("1.5e-3", "1.5e-3"),
            ("2E+10", "2E+10"),
            ("1.", "1."),
            ("0X1F", "0X1F"),
            ("1h30m", "1h30m"),
            ("2mo", "2mo"),
            ("500ms", "500ms"),
            ("12us", "12us"),
            ("3\u{b5}s", "3\u{b5}s"),
        ] {
            assert_eq!(tokens(text), vec![Token::Literal(number)], "{text:?}");
        }
        assert_eq!(
            tokens("1..2"),
            vec![
                Token::Literal("1"),
                Token::Punct('.'),
                Token::Punct('.'),
                Token::Literal("2")
            ]
        );
        assert_eq!(
            tokens("1-2"),
            vec![Token::Literal("1"), Token::Literal("-2")]
        );
        assert_eq!(tokens("1ex"), vec![Token::Literal("1"), Token::Word("ex")]);
    }

    #[test]
    fn negative_literals_and_iso_durations_end_where_cassandra_ends_them() {
        for (text, literal, word) in [
            ("-InfinityDELETE", "-Infinity", "DELETE"),
            ("-nanInsert", "-nan", "Insert"),
            ("-P1YDELETE", "-P1Y", "DELETE"),
            ("-P1Y2M3DT4H5M6SDELETE", "-P1Y2M3DT4H5M6S", "DELETE"),
            ("-PT1HDELETE", "-PT1H", "DELETE"),
            ("-P2WDELETE", "-P2W", "DELETE"),
            (
                "P0001-02-03T04:05:06DELETE",
                "P0001-02-03T04:05:06",
                "DELETE",
            ),
            (
                "-P0001-02-03T04:05:06DELETE",
                "-P0001-02-03T04:05:06",
                "DELETE",
            ),
        ] {
            assert_eq!(
                tokens(text),
                vec![Token::Literal(literal), Token::Word(word)],
                "{text:?}"
            );
        }
        // Without a sign, a duration and the letters after it are one name.
        assert_eq!(tokens("P1YDELETE"), vec![Token::Word("P1YDELETE")]);
        assert_eq!(tokens("-Px"), vec![Token::Punct('-'), Token::Word("Px")]);
    }

    #[test]
    fn unterminated_and_unknown_things_are_errors() {
        for (text, expected) in [
            ("SELECT 'x", LexError::UnterminatedString(7)),
            ("SELECT $$x", LexError::UnterminatedString(7)),
            ("SELECT \"x", LexError::UnterminatedQuoted(7)),
            ("SELECT /* x", LexError::UnterminatedComment(7)),
            ("USE system -- c", LexError::UnterminatedLineComment(11)),
            ("SELECT // c", LexError::UnterminatedLineComment(7)),
            ("SELECT é", LexError::Unexpected(7)),
            ("SELECT $x", LexError::Unexpected(7)),
            ("SELECT\x0c*", LexError::Unexpected(6)),
            ("SELECT #", LexError::Unexpected(7)),
        ] {
            assert_eq!(error(text), Some(expected), "{text:?}");
        }
    }

    /// What [`Lexer::next_word`] must return, read from the tokens the iterator makes.
    fn next_word_by_tokens<'q>(lexer: &mut Lexer<'q>) -> Result<WordOrEnd<'q>, LexError> {
        loop {
            match lexer.next() {
                None | Some(Ok(Token::Punct(';'))) => return Ok(WordOrEnd::End),
                Some(Ok(Token::Word(word))) => return Ok(WordOrEnd::Word(word)),
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(error),
            }
        }
    }

    /// Reads `text` word by word with [`Lexer::next_word`] and with the tokens, asserting the
    /// same words, `;`s, errors and cursor after each.
    fn assert_words_as_tokens(text: &str) {
        let (mut fast, mut tokens) = (Lexer::new(text), Lexer::new(text));
        loop {
            let (read, expected) = (fast.next_word(), next_word_by_tokens(&mut tokens));
            assert_eq!(read, expected, "{text:?} at byte {}", tokens.at);
            assert_eq!(fast.at, tokens.at, "{text:?}");
            if expected.is_err() || (expected == Ok(WordOrEnd::End) && tokens.at == text.len()) {
                return;
            }
            if let Ok(WordOrEnd::Word(word)) = read {
                let mut back = fast.clone();
                back.back_to(word);
                assert_eq!(back.next().unwrap().unwrap(), Token::Word(word), "{text:?}");
            }
        }
    }

    #[test]
    fn words_are_read_as_the_tokens_hold_them() {
        for text in [
            "INSERT INTO attendance.daily_records (loc, creation, present) VALUES (?, now(), ?)",
            "SELECT * FROM t WHERE a = 'x;DROP' AND b = $$;DELETE$$; DELETE FROM u",
            "SELECT a FROM t -- DROP\nWHERE b = :name AND c = -InfinityDELETE",
            "SELECT 01234567-89ab-cdef-0123-456789abcdef, deadbeef-dead-beef-dead-beefdeadbeef",
            "SELECT P0001-02-03T04:05:06DELETE, P1YDELETE, -P1YDELETE, 3h30mx, 0x1fz",
            "SELECT \"a\"\"b\" /* c; d */ FROM e // f\r; g",
            "a-- x",
            "SELECT é",
            "UPDATE t SET a = 1 WHERE b = 'x",
            "SELECT a. b , c;;d",
        ] {
            assert_words_as_tokens(text);
        }
    }

    /// Pieces of CQL text that begin, end and hide tokens, glued in any order.
    fn cql_piece() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            " ",
            "\t",
            "\n",
            "\r",
            ";",
            ".",
            ",",
            "(",
            ")",
            "?",
            ":",
            ":name",
            "=",
            "*",
            "-",
            "--",
            "/",
            "//",
            "/*",
            "*/",
            "'",
            "''",
            "\"",
            "$",
            "$$",
            "é",
            "\x0c",
            "SELECT",
            "insert",
            "DELETE",
            "apply",
            "BATCH",
            "a",
            "abc",
            "deadbeef",
            "Fade",
            "P",
            "P1Y",
            "PT1H",
            "P0001-02-03T04:05:06",
            "01234567-89ab-cdef-0123-456789abcdef",
            "0",
            "12",
            "1.5e-3",
            "0x1f",
            "3h30m",
            "-1",
            "-Infinity",
            "-nan",
            "-P1D",
            "_x",
            "e",
            "E+1",
        ])
    }

    proptest! {
        #[test]
        fn any_text_lexes_without_panicking(text in ".{0,80}") {
            for token in Lexer::new(&text) {
                let _ = token;
            }
        }

        #[test]
        fn words_of_any_text_are_read_as_the_tokens_hold_them(text in ".{0,80}") {
            assert_words_as_tokens(&text);
        }

        #[test]
        fn words_of_cql_pieces_are_read_as_the_tokens_hold_them(
            pieces in prop::collection::vec(cql_piece(), 0..40),
        ) {
            assert_words_as_tokens(&pieces.concat());
        }
    }
}
