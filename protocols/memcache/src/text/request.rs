//! Text-protocol requests, classic and meta: one command line (without its line ending) into a
//! typed request that borrows the line.
//!
//! Parsing only. It decides the command as policy sees it, the keys, the length of a following
//! data block, and what the server will answer; framing, policy and replies belong to the
//! parser.

use axoneme_sdk::{ErrorCode, ParseError};

use crate::command::Command;
use crate::pending::Shape;

/// What the server answers to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Exactly one reply of this shape.
    One(Shape),
    /// A reply only on error (`noreply`) or only when interesting (meta `q`): unknown in advance.
    Maybe,
    /// The `MN` that ends a meta pipeline.
    Noop,
    /// Nothing: the server closes the connection once it has answered what came before (`quit`).
    Close,
}

/// One parsed request line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextRequest<'l> {
    /// The command as policy sees it.
    pub command: Command,
    /// The command word as sent.
    pub verb: &'l [u8],
    /// The key tokens, separated by spaces (empty for commands without keys).
    pub keys: &'l [u8],
    /// Whether the key is base64 (meta `b` flag).
    pub base64_key: bool,
    /// Length of the data block that follows the line, without its `\r\n`.
    pub data_len: Option<usize>,
    /// What the server will answer.
    pub answer: Answer,
    /// Whether a denial is answered (false for `noreply`, whose errors the client ignores).
    pub answer_denial: bool,
    /// Whether the request also creates the item when it is missing (the meta `N` flag of `mg`,
    /// and of `ms` in append or prepend mode): policy must allow `add` as well. Not for `ma`:
    /// binary INCR and DECR create a missing counter too, and Cilium's `incr`/`decr` cover it.
    pub creates: bool,
}

/// Longest command line memcached reads before giving up on a connection, except for the
/// retrieval commands, whose many keys may make longer lines.
pub const MAX_LINE: usize = 2048;

/// Longest retrieval command line (`get`, `gets`, `gat`, `gats`): memcached reads multi-gets of
/// thousands of keys; a line must still fit what the datapath may buffer (`limits.maxBuffered`,
/// 1 MiB by default), which closes the connection first when it is lower.
pub const MAX_RETRIEVAL_LINE: usize = 1024 * 1024;

/// Whether an unterminated line may grow to [`MAX_RETRIEVAL_LINE`].
pub fn is_retrieval(line_start: &[u8]) -> bool {
    [&b"get "[..], b"gets ", b"gat ", b"gats "]
        .iter()
        .any(|p| line_start.starts_with(p))
}

/// Splits a line into space-separated tokens, as memcached does (runs of spaces separate).
struct Tokens<'l> {
    rest: &'l [u8],
}

impl<'l> Tokens<'l> {
    fn next(&mut self) -> Option<&'l [u8]> {
        let start = self.rest.iter().position(|&b| b != b' ')?;
        let rest = &self.rest[start..];
        let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
        self.rest = &rest[end..];
        Some(&rest[..end])
    }

    fn required(&mut self, what: &'static str) -> Result<&'l [u8], ParseError> {
        self.next()
            .ok_or(ParseError::new(ErrorCode::MalformedFrame, what))
    }

    /// What is left, leading spaces removed.
    fn rest(&self) -> &'l [u8] {
        let start = self
            .rest
            .iter()
            .position(|&b| b != b' ')
            .unwrap_or(self.rest.len());
        &self.rest[start..]
    }

    /// True when the last remaining token is `noreply`.
    fn ends_with_noreply(&self) -> bool {
        self.rest().rsplit(|&b| b == b' ').find(|t| !t.is_empty()) == Some(b"noreply")
    }
}

/// Longest key memcached accepts; a longer one makes it refuse the command line.
pub const MAX_KEY: usize = 250;

/// Most flags a meta command may carry here (memcached refuses a few more than this).
pub const MAX_META_FLAGS: usize = 16;

/// Rejects a command line memcached would refuse without reading its data block, so that the
/// proxy and the server never disagree on where the next command starts.
fn refused(what: &'static str) -> ParseError {
    ParseError::new(ErrorCode::MalformedFrame, what)
}

/// An unsigned decimal that fits in `max`.
fn unsigned(token: &[u8], max: u64, what: &'static str) -> Result<u64, ParseError> {
    if token.is_empty() || token.len() > 20 || !token.iter().all(u8::is_ascii_digit) {
        return Err(refused(what));
    }
    token
        .iter()
        .try_fold(0u64, |n, &d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .filter(|&n| n <= max)
        .ok_or(refused(what))
}

/// A signed 32-bit decimal (an expiration time).
fn signed(token: &[u8], what: &'static str) -> Result<i64, ParseError> {
    let (negative, digits) = match token.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, token),
    };
    let magnitude = unsigned(
        digits,
        u64::from(i32::MAX.unsigned_abs()) + u64::from(negative),
        what,
    )?;
    Ok(if negative {
        -(magnitude as i64)
    } else {
        magnitude as i64
    })
}

/// A data length memcached accepts (at most `i32::MAX - 2`).
fn data_length(token: &[u8]) -> Result<usize, ParseError> {
    unsigned(token, i32::MAX as u64 - 2, "bad data length")
        .map(|n| n as usize)
        .map_err(|e| ParseError::new(ErrorCode::InvalidFrameLength, e.reason))
}

fn key(token: &[u8]) -> Result<&[u8], ParseError> {
    match token.len() <= MAX_KEY {
        true => Ok(token),
        false => Err(refused("key longer than 250 bytes")),
    }
}

impl<'l> TextRequest<'l> {
    fn new(command: Command, verb: &'l [u8], keys: &'l [u8], answer: Answer) -> Self {
        TextRequest {
            command,
            verb,
            keys,
            base64_key: false,
            data_len: None,
            answer,
            answer_denial: true,
            creates: false,
        }
    }

    /// Marks a classic request that ends with `noreply`.
    fn noreply(mut self, noreply: bool) -> Self {
        if noreply {
            self.answer = Answer::Maybe;
            self.answer_denial = false;
        }
        self
    }

    /// Parses a command line. A data block longer than `max_value` is an error.
    pub fn parse(line: &'l [u8], max_value: usize) -> Result<TextRequest<'l>, ParseError> {
        // memcached reads a line as a C string: a NUL or another control byte would make it see
        // a different command than the proxy.
        if line.iter().any(|&b| b < b' ' || b == 0x7f) {
            return Err(refused("control byte in a command line"));
        }
        let mut tokens = Tokens { rest: line };
        let verb = tokens.required("empty command line")?;
        let one = Answer::One(Shape::Single);
        let request = match verb {
            b"get" | b"gets" => TextRequest::new(
                Command::Get,
                verb,
                tokens.rest(),
                Answer::One(Shape::Retrieval),
            ),
            b"gat" | b"gats" => {
                tokens.required("gat needs an expiration time")?;
                TextRequest::new(
                    Command::Gat,
                    verb,
                    tokens.rest(),
                    Answer::One(Shape::Retrieval),
                )
            }
            b"set" | b"add" | b"replace" | b"append" | b"prepend" | b"cas" => {
                let command = match verb {
                    b"set" => Command::Set,
                    b"add" => Command::Add,
                    b"replace" => Command::Replace,
                    b"append" => Command::Append,
                    b"prepend" => Command::Prepend,
                    _ => Command::Cas,
                };
                // memcached refuses these lines without reading the data block: so must we.
                let key = key(tokens.required("storage command without key")?)?;
                unsigned(
                    tokens.required("storage command without flags")?,
                    u64::from(u32::MAX),
                    "bad flags",
                )?;
                signed(
                    tokens.required("storage command without expiration time")?,
                    "bad expiration time",
                )?;
                let bytes = data_length(tokens.required("storage command without length")?)?;
                if command == Command::Cas {
                    unsigned(
                        tokens.required("cas without unique value")?,
                        u64::MAX,
                        "bad cas value",
                    )?;
                }
                let noreply = tokens.ends_with_noreply();
                if tokens.next().is_some() && tokens.next().is_some() {
                    return Err(refused("too many tokens in a storage command"));
                }
                let mut request = TextRequest::new(command, verb, key, one).noreply(noreply);
                request.data_len = Some(bytes);
                request
            }
            b"incr" | b"decr" => {
                let command = if verb == b"incr" {
                    Command::Incr
                } else {
                    Command::Decr
                };
                let key = tokens.required("incr/decr without key")?;
                let noreply = tokens.ends_with_noreply();
                tokens.required("incr/decr without value")?;
                TextRequest::new(command, verb, key, one).noreply(noreply)
            }
            b"delete" => {
                let key = tokens.required("delete without key")?;
                let noreply = tokens.ends_with_noreply();
                TextRequest::new(Command::Delete, verb, key, one).noreply(noreply)
            }
            b"touch" => {
                let key = tokens.required("touch without key")?;
                let noreply = tokens.ends_with_noreply();
                tokens.required("touch without expiration time")?;
                TextRequest::new(Command::Touch, verb, key, one).noreply(noreply)
            }
            b"flush_all" | b"verbosity" | b"cache_memlimit" => {
                let command = match verb {
                    b"flush_all" => Command::FlushAll,
                    b"verbosity" => Command::Verbosity,
                    _ => Command::CacheMemlimit,
                };
                let noreply = tokens.ends_with_noreply();
                TextRequest::new(command, verb, b"", one).noreply(noreply)
            }
            b"stats" => TextRequest::new(Command::Stats, verb, b"", Answer::One(Shape::MultiLine)),
            b"lru_crawler" => TextRequest::new(
                Command::LruCrawler,
                verb,
                b"",
                Answer::One(Shape::MultiLine),
            ),
            b"watch" => TextRequest::new(Command::Watch, verb, b"", Answer::One(Shape::Watch)),
            b"version" => TextRequest::new(Command::Version, verb, b"", one),
            b"slabs" => TextRequest::new(Command::Slabs, verb, b"", one),
            b"lru" => TextRequest::new(Command::Lru, verb, b"", one),
            b"misbehave" => TextRequest::new(Command::Misbehave, verb, b"", one),
            b"quit" => TextRequest::new(Command::Quit, verb, b"", Answer::Close),
            b"mg" | b"ms" | b"md" | b"ma" | b"me" | b"mn" => meta(verb, tokens)?,
            _ => TextRequest::new(Command::Other, verb, b"", one),
        };
        match request.data_len {
            Some(len) if len > max_value => Err(ParseError::new(
                ErrorCode::FrameTooLarge,
                "data block larger than the configured maximum",
            )),
            _ => Ok(request),
        }
    }
}

/// Parses a meta command: `<cm> <key> [<datalen>] <flags>*`.
fn meta<'l>(verb: &'l [u8], mut tokens: Tokens<'l>) -> Result<TextRequest<'l>, ParseError> {
    if verb == b"mn" {
        return Ok(TextRequest::new(Command::Noop, verb, b"", Answer::Noop));
    }
    let key = key(tokens.required("meta command without key")?)?;
    let data_len = match verb {
        b"ms" => Some(data_length(tokens.required("ms without data length")?)?),
        _ => None,
    };
    let mut flags = Tokens {
        rest: tokens.rest(),
    };
    let (mut quiet, mut base64, mut touch, mut cas, mut mode) = (false, false, false, false, b'S');
    let mut creates = false;
    let mut count = 0;
    // `me` reads its key as base64 when the first token after it is exactly `b`, whatever
    // follows.
    if verb == b"me" {
        base64 = Tokens { rest: flags.rest }.next() == Some(&b"b"[..]);
    }
    while let Some(flag) = flags.next() {
        count += 1;
        if count > MAX_META_FLAGS {
            return Err(refused("too many meta flags"));
        }
        if verb == b"me" {
            continue;
        }
        match flag[0] {
            b'q' => quiet = true,
            b'b' => base64 = true,
            b'T' => touch = true,
            b'C' => cas = true,
            b'N' => creates = true,
            b'M' => mode = flag.get(1).copied().unwrap_or(b'S'),
            _ => {}
        }
    }
    let command = match verb {
        b"mg" if touch => Command::Gat,
        b"mg" | b"me" => Command::Get,
        b"ms" => match mode {
            b'E' | b'e' => Command::Add,
            b'A' | b'a' => Command::Append,
            b'P' | b'p' => Command::Prepend,
            b'R' | b'r' => Command::Replace,
            _ if cas => Command::Cas,
            _ => Command::Set,
        },
        b"md" => Command::Delete,
        _ => match mode {
            b'D' | b'd' | b'-' => Command::Decr,
            _ => Command::Incr,
        },
    };
    // `me` takes no flags but a bare `b` meaning the same as elsewhere.
    let answer = if quiet && verb != b"me" {
        Answer::Maybe
    } else {
        Answer::One(Shape::Single)
    };
    let mut request = TextRequest::new(command, verb, key, answer);
    request.base64_key = base64;
    request.data_len = data_len;
    request.creates = creates
        && matches!(
            command,
            Command::Get | Command::Gat | Command::Append | Command::Prepend
        )
        && verb != b"me";
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> TextRequest<'_> {
        TextRequest::parse(line.as_bytes(), 1024).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    fn error(line: &str) -> ErrorCode {
        TextRequest::parse(line.as_bytes(), 1024).unwrap_err().code
    }

    #[test]
    fn retrieval_commands_take_many_keys() {
        let get = parse("get a  b c");
        assert_eq!(
            (get.command, get.keys, get.answer),
            (Command::Get, &b"a  b c"[..], Answer::One(Shape::Retrieval))
        );
        assert_eq!(parse("gets a").command, Command::Get);
        let gat = parse("gat 100 a b");
        assert_eq!((gat.command, gat.keys), (Command::Gat, &b"a b"[..]));
        assert_eq!(parse("gats 0 k").command, Command::Gat);
        assert_eq!(parse("get").keys, b"");
    }

    #[test]
    fn storage_commands_carry_a_data_block() {
        let set = parse("set k 0 0 5");
        assert_eq!(
            (set.command, set.keys, set.data_len),
            (Command::Set, &b"k"[..], Some(5))
        );
        assert_eq!(set.answer, Answer::One(Shape::Single));
        let cas = parse("cas k 1 2 3 99 noreply");
        assert_eq!(
            (cas.command, cas.data_len, cas.answer, cas.answer_denial),
            (Command::Cas, Some(3), Answer::Maybe, false)
        );
        for (line, command) in [
            ("add k 0 0 1", Command::Add),
            ("replace k 0 0 1", Command::Replace),
            ("append k 0 0 1", Command::Append),
            ("prepend k 0 0 1", Command::Prepend),
        ] {
            assert_eq!(parse(line).command, command);
        }
        assert_eq!(error("set k 0 0 -1"), ErrorCode::InvalidFrameLength);
        assert_eq!(error("set k 0 0"), ErrorCode::MalformedFrame);
        assert_eq!(error("set k 0 0 1025"), ErrorCode::FrameTooLarge);
        assert_eq!(error("cas k 0 0 1"), ErrorCode::MalformedFrame);
    }

    #[test]
    fn lines_memcached_refuses_without_reading_their_data_are_refused() {
        let long_key = format!("set {} 0 0 1", "k".repeat(251));
        for line in [
            "set alliance/fleet/a x 0 16",
            "set alliance/fleet/a 0 0 19 extra junk",
            "set alliance/fleet/a 4294967296 0 1",
            "set alliance/fleet/a 0 99999999999 1",
            "set alliance/fleet/a 0 0 2147483646",
            "cas alliance/fleet/a 0 0 16 noreply",
            "cas alliance/fleet/a 0 0 16 x",
            &long_key,
            "set alliance/fleet/a\0 0 0 16",
            "ms alliance/fleet/a 2 a b c d e f g h i j k l m n o p q",
        ] {
            assert!(
                TextRequest::parse(line.as_bytes(), usize::MAX).is_err(),
                "{line:?}"
            );
        }
        let with_nul = b"set alliance/fleet/a\0 0 0 16";
        assert_eq!(
            TextRequest::parse(with_nul, 1024).unwrap_err().code,
            ErrorCode::MalformedFrame
        );
        assert_eq!(
            parse("set k 0 -5 3 junk").data_len,
            Some(3),
            "one extra token is ignored, as memcached does"
        );
        assert!(
            !parse("me Zm9v bx").base64_key,
            "me decodes only with exactly `b`"
        );
        for line in ["me Zm9v b x", "me Zm9v b ", "me Zm9v  b"] {
            assert!(
                parse(line).base64_key,
                "{line:?}: memcached decodes the key"
            );
        }
        assert!(!parse("me Zm9v x b").base64_key);
    }

    #[test]
    fn noreply_is_the_last_token_whatever_comes_before() {
        for line in [
            "incr k noreply",
            "touch k noreply",
            "decr k 1 noreply",
            "delete k noreply",
        ] {
            let request = parse(line);
            assert_eq!(
                (request.answer, request.answer_denial),
                (Answer::Maybe, false),
                "{line}"
            );
        }
    }

    #[test]
    fn single_key_commands_and_noreply() {
        assert_eq!(parse("incr k 1").command, Command::Incr);
        assert_eq!(parse("decr k 1 noreply").answer, Answer::Maybe);
        assert_eq!(parse("delete k").keys, b"k");
        assert_eq!(parse("delete k 0 noreply").answer, Answer::Maybe);
        assert_eq!(parse("touch k 10").command, Command::Touch);
        assert_eq!(error("touch k"), ErrorCode::MalformedFrame);
        assert_eq!(parse("flush_all 10 noreply").answer, Answer::Maybe);
        assert_eq!(parse("flush_all").answer, Answer::One(Shape::Single));
    }

    #[test]
    fn administrative_commands() {
        assert_eq!(parse("stats items").answer, Answer::One(Shape::MultiLine));
        assert_eq!(
            parse("lru_crawler metadump all").answer,
            Answer::One(Shape::MultiLine)
        );
        assert_eq!(parse("watch fetchers").answer, Answer::One(Shape::Watch));
        assert_eq!(parse("quit").answer, Answer::Close);
        assert_eq!(parse("version").command, Command::Version);
        assert_eq!(parse("verbosity 1").command, Command::Verbosity);
        assert_eq!(parse("shutdown").command, Command::Other);
        assert_eq!(parse("slabs reassign 1 2").command, Command::Slabs);
        assert_eq!(error(""), ErrorCode::MalformedFrame);
    }

    #[test]
    fn meta_commands_map_onto_classic_ones() {
        let mg = parse("mg foo v k O123 q");
        assert_eq!(
            (mg.command, mg.keys, mg.answer),
            (Command::Get, &b"foo"[..], Answer::Maybe)
        );
        assert_eq!(parse("mg foo v T30").command, Command::Gat);
        assert_eq!(parse("mg foo v").answer, Answer::One(Shape::Single));
        let ms = parse("ms foo 3 T0 F5");
        assert_eq!((ms.command, ms.data_len), (Command::Set, Some(3)));
        assert_eq!(parse("ms foo 3 ME").command, Command::Add);
        assert_eq!(parse("ms foo 3 MA").command, Command::Append);
        assert_eq!(parse("ms foo 3 MP").command, Command::Prepend);
        assert_eq!(parse("ms foo 3 MR").command, Command::Replace);
        assert_eq!(parse("ms foo 3 C12").command, Command::Cas);
        assert_eq!(parse("md foo q").answer, Answer::Maybe);
        assert_eq!(parse("md foo").command, Command::Delete);
        assert_eq!(parse("ma foo").command, Command::Incr);
        assert_eq!(parse("ma foo MD").command, Command::Decr);
        assert_eq!(parse("ma foo M-").command, Command::Decr);
        assert_eq!(parse("mn").answer, Answer::Noop);
        for line in [
            "mg foo N30 v",
            "mg foo T0 N30",
            "ms foo 3 MA N0",
            "ms foo 3 MP N0",
        ] {
            assert!(
                parse(line).creates,
                "{line}: memcached creates a missing item"
            );
        }
        for line in [
            "mg foo v",
            "ms foo 3 N0",
            "ms foo 3 ME N0",
            "md foo",
            "me foo",
            "ma foo N0 J5",
            "ma foo MD N0",
        ] {
            assert!(!parse(line).creates, "{line}");
        }
        let me = parse("me Zm9v b");
        assert_eq!(
            (me.command, me.base64_key, me.answer),
            (Command::Get, true, Answer::One(Shape::Single))
        );
        assert!(parse("mg Zm9v b v").base64_key);
        assert_eq!(error("mg"), ErrorCode::MalformedFrame);
        assert_eq!(error("ms foo"), ErrorCode::MalformedFrame);
        assert_eq!(error("ms foo 2000"), ErrorCode::FrameTooLarge);
    }
}
