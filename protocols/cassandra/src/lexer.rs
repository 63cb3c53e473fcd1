//! A CQL lexer: text to tokens, as Cassandra's own grammar splits it.
//!
//! Keywords are case-insensitive (they come out as identifiers; the classifier compares them
//! without case), quoted identifiers keep their case, string literals (`'…'` with `''` escapes,
//! and `$$…$$`) and comments (`--`, `//`, `/* */`) are recognised so that nothing inside them
//! is mistaken for a keyword or a table name. It borrows the text and never allocates.

/// One token of CQL text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token<'q> {
    /// An unquoted identifier or keyword, as written.
    Word(&'q str),
    /// A `"quoted"` identifier, without its quotes (`""` inside stands for one `"`).
    Quoted(&'q str),
    /// A string literal, without its delimiters.
    Str(&'q str),
    /// A number, blob, UUID-like literal or other run of literal characters.
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
}

/// Byte classes, as bits of [`CLASSES`].
const BLANK: u8 = 1;
/// Starts a word: a letter or `_`.
const WORD_START: u8 = 2;
/// Continues a word: a letter, a digit or `_`.
const WORD: u8 = 4;
/// Continues a literal: a letter, a digit, `.`, `-` or `+`.
const LITERAL: u8 = 8;
/// May start a literal or a comment, or end a statement: `'`, `"`, `$`, `-`, `/` and `;`.
const STOP: u8 = 16;

/// The classes of every byte, looked up once per byte instead of tested one by one.
static CLASSES: [u8; 256] = {
    let mut classes = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let mut class = 0;
        if c.is_ascii_whitespace() {
            class |= BLANK;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            class |= WORD_START | WORD;
        }
        if c.is_ascii_digit() {
            class |= WORD;
        }
        if c.is_ascii_alphanumeric() || c == b'.' || c == b'-' || c == b'+' {
            class |= LITERAL;
        }
        if matches!(c, b'\'' | b'"' | b'$' | b'-' | b'/' | b';') {
            class |= STOP;
        }
        classes[b] = class;
        b += 1;
    }
    classes
};

/// Whether `b` is of `class`.
#[inline]
fn is(b: u8, class: u8) -> bool {
    CLASSES[usize::from(b)] & class != 0
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

    /// Moves past the comment at the cursor, if one starts there: a `--` or `//` comment up
    /// to its line's end, a `/* */` comment through its end.
    #[inline]
    fn skip_comment(&mut self) -> Result<bool, LexError> {
        let rest = self.rest();
        match rest {
            [b'-', b'-', ..] | [b'/', b'/', ..] => {
                self.at += rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            }
            [b'/', b'*', ..] => {
                let end = rest[2..]
                    .windows(2)
                    .position(|w| w == b"*/")
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
        let end = self.text[body..]
            .find("$$")
            .ok_or(LexError::UnterminatedString(start))?;
        self.at = body + end + 2;
        Ok(&self.text[body..body + end])
    }

    /// Reads a literal delimited by `quote`, where a doubled quote stands for one.
    fn delimited(&mut self, quote: u8) -> Option<&'q str> {
        let start = self.at + 1;
        let bytes = self.text.as_bytes();
        let mut i = start;
        while i < bytes.len() {
            if bytes[i] == quote {
                if bytes.get(i + 1) == Some(&quote) {
                    i += 2;
                    continue;
                }
                self.at = i + 1;
                return Some(&self.text[start..i]);
            }
            i += 1;
        }
        None
    }

    #[inline]
    fn next_token(&mut self) -> Result<Option<Token<'q>>, LexError> {
        self.skip_blank()?;
        let start = self.at;
        let Some(&first) = self.rest().first() else {
            return Ok(None);
        };
        let token = match first {
            b'\'' => Token::Str(self.string()?),
            b'"' => Token::Quoted(self.quoted()?),
            b'$' if self.rest().starts_with(b"$$") => Token::Str(self.dollar_string()?),
            b'?' => {
                self.at += 1;
                Token::Marker
            }
            b':' if self
                .rest()
                .get(1)
                .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_') =>
            {
                self.at += 1;
                self.take_while(WORD);
                Token::Marker
            }
            b if is(b, WORD_START) => Token::Word(self.take_while(WORD)),
            b if b.is_ascii_digit() => Token::Literal(self.take_while(LITERAL)),
            _ => {
                let c = self.text[start..].chars().next().unwrap_or('\u{fffd}');
                self.at += c.len_utf8();
                Token::Punct(c)
            }
        };
        Ok(Some(token))
    }

    /// Moves past everything up to and including the next `;` that is a token (not inside a
    /// literal or a comment); true if there was one, false at the end of the text. It reads
    /// exactly as the tokens would and fails where they would, but makes none: it runs over
    /// the bytes that cannot change what follows (words, numbers, white space, punctuation)
    /// with one table look-up each, so a statement's end is found at a fraction of the cost of
    /// tokenising it.
    pub fn skip_statement(&mut self) -> Result<bool, LexError> {
        let bytes = self.text.as_bytes();
        // A token starts here, and nothing between it and the cursor starts a literal or a
        // comment: the place to read from to learn whether a `--` starts a comment.
        let mut token_start = self.at;
        loop {
            let rest = &bytes[self.at..];
            self.at += rest.iter().position(|&b| is(b, STOP)).unwrap_or(rest.len());
            let Some(&stop) = bytes.get(self.at) else {
                return Ok(false);
            };
            match stop {
                b';' => {
                    self.at += 1;
                    return Ok(true);
                }
                b'\'' => {
                    self.string()?;
                }
                b'"' => {
                    self.quoted()?;
                }
                b'$' if self.rest().starts_with(b"$$") => {
                    self.dollar_string()?;
                }
                b'-' if self.rest().starts_with(b"--") => {
                    let end = token_end(bytes, token_start, self.at);
                    if end == self.at {
                        self.skip_comment()?;
                    } else {
                        // The dashes are inside a number-like literal (`1--2` is one).
                        self.at = end;
                    }
                }
                b'/' if self.skip_comment()? => {}
                // A lone `$`, `-` or `/`: punctuation, or a `-` inside a literal.
                _ => {
                    self.at += 1;
                    continue;
                }
            }
            token_start = self.at;
        }
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

/// Where the token that covers byte `at` ends, or `at` itself when a token starts there; a
/// token starts at `from`, and between `from` and `at` there is nothing but words, numbers,
/// white space and punctuation. Only the run of word and literal bytes just before `at` is
/// read: whatever comes before it ends a token.
fn token_end(bytes: &[u8], from: usize, at: usize) -> usize {
    let mut start = bytes[from..at]
        .iter()
        .rposition(|&b| !is(b, WORD | LITERAL))
        .map_or(from, |before| from + before + 1);
    let run = |start: usize, class: u8| {
        start
            + bytes[start..]
                .iter()
                .position(|&b| !is(b, class))
                .unwrap_or(bytes.len() - start)
    };
    while start < at {
        start = match bytes[start] {
            b if is(b, WORD_START) => run(start, WORD),
            b if b.is_ascii_digit() => run(start, LITERAL),
            _ => start + 1,
        };
    }
    start
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

    /// Where reading tokens up to and including the first `;` ends, as `skip_statement` must.
    fn skip_by_tokens(lexer: &mut Lexer<'_>) -> Result<bool, LexError> {
        loop {
            match lexer.next_token()? {
                None => return Ok(false),
                Some(Token::Punct(';')) => return Ok(true),
                Some(_) => {}
            }
        }
    }

    proptest! {
        #[test]
        fn skipping_a_statement_ends_where_its_tokens_end(
            text in r"([a-z0-9_ ;:?.$'\x22/*+\-\n(),]|--|//|/\*|\*/|\$\$|''|é){0,40}",
        ) {
            let mut by_tokens = Lexer::new(&text);
            let mut skipped = Lexer::new(&text);
            loop {
                let expected = skip_by_tokens(&mut by_tokens);
                let got = skipped.skip_statement();
                prop_assert_eq!(&got, &expected);
                if expected.is_err() {
                    break;
                }
                prop_assert_eq!(skipped.at, by_tokens.at);
                if expected == Ok(false) {
                    break;
                }
            }
        }
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
        let text = "-- lead\nSELECT /* FROM secret.t */ * // tail\nFROM ks.t; -- end";
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
    fn unterminated_things_are_errors() {
        for (text, error) in [
            ("SELECT 'x", LexError::UnterminatedString(7)),
            ("SELECT $$x", LexError::UnterminatedString(7)),
            ("SELECT \"x", LexError::UnterminatedQuoted(7)),
            ("SELECT /* x", LexError::UnterminatedComment(7)),
        ] {
            assert_eq!(
                Lexer::new(text).find_map(Result::err),
                Some(error),
                "{text}"
            );
        }
    }

    proptest! {
        #[test]
        fn any_text_lexes_without_panicking(text in ".{0,80}") {
            for token in Lexer::new(&text) {
                let _ = token;
            }
        }
    }
}
