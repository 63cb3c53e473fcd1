//! The part of the memcached text protocol the load generator and the soak speak: it encodes
//! classic (`set`, `get`, `delete`) and meta (`ms`, `mg`, `md`, `mn`) requests and cuts the
//! stream of replies into whole replies. It judges no reply; its callers do.

use std::fmt;
use std::io::Write;

/// Every key starts with this prefix, which the Rebels' policy lets fleet maintenance write and
/// read.
pub(crate) const KEY_PREFIX: &str = "alliance/fleet/key-";

/// A reply line longer than this without a line end is not memcached talking.
const MAX_LINE: usize = 1024;

/// Appends `set <key> 0 0 <length>` and the value's data block to `out`.
pub(crate) fn encode_set(out: &mut Vec<u8>, key: u32, value: &[u8]) {
    // Writing into a Vec cannot fail.
    let _ = write!(out, "set {KEY_PREFIX}{key} 0 0 {}\r\n", value.len());
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends `get <key>` to `out`.
pub(crate) fn encode_get(out: &mut Vec<u8>, key: u32) {
    let _ = write!(out, "get {KEY_PREFIX}{key}\r\n");
}

/// Appends `set <key> <flags> 0 <length>` (with `noreply` when asked) and the data block.
pub(crate) fn encode_set_key(
    out: &mut Vec<u8>,
    key: &str,
    flags: u32,
    value: &[u8],
    noreply: bool,
) {
    let noreply = if noreply { " noreply" } else { "" };
    let _ = write!(out, "set {key} {flags} 0 {}{noreply}\r\n", value.len());
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends `get <key> <key>...`.
pub(crate) fn encode_get_keys<'k>(out: &mut Vec<u8>, keys: impl IntoIterator<Item = &'k str>) {
    out.extend_from_slice(b"get");
    for key in keys {
        out.push(b' ');
        out.extend_from_slice(key.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends `delete <key>`.
pub(crate) fn encode_delete(out: &mut Vec<u8>, key: &str) {
    let _ = write!(out, "delete {key}\r\n");
}

/// Appends the meta set `ms <key> <length> F<flags> T0` (with `q`, quiet, when asked) and the
/// data block.
pub(crate) fn encode_meta_set(out: &mut Vec<u8>, key: &str, flags: u32, value: &[u8], quiet: bool) {
    let quiet = if quiet { " q" } else { "" };
    let _ = write!(out, "ms {key} {} F{flags} T0{quiet}\r\n", value.len());
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends the meta get `mg <key> v f k`: the value, its flags and its key.
pub(crate) fn encode_meta_get(out: &mut Vec<u8>, key: &str) {
    let _ = write!(out, "mg {key} v f k\r\n");
}

/// Appends the meta delete `md <key>`.
pub(crate) fn encode_meta_delete(out: &mut Vec<u8>, key: &str) {
    let _ = write!(out, "md {key}\r\n");
}

/// Appends the meta no-op `mn`, whose `MN` answer ends a run of quiet requests.
pub(crate) fn encode_meta_noop(out: &mut Vec<u8>) {
    out.extend_from_slice(b"mn\r\n");
}

/// The key number in a key this load generator made, if it is one.
pub(crate) fn key_number(key: &[u8]) -> Option<u32> {
    let digits = key.strip_prefix(KEY_PREFIX.as_bytes())?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// One whole reply, borrowing from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reply<'a> {
    /// `STORED`: the answer to a successful `set`.
    Stored,
    /// `VALUE <key> <flags> <bytes>`, the data block and `END`: a `get` that found its key.
    Value { key: &'a [u8], data: &'a [u8] },
    /// `END` alone: a `get` that found nothing.
    Miss,
    /// Any other line, such as `ERROR`, `NOT_STORED`, `SERVER_ERROR ...` or a proxy's
    /// `CLIENT_ERROR access denied`. It is a whole reply, so the stream stays in step.
    Other(&'a [u8]),
}

/// The replies cannot be cut into whole replies any more; the connection is lost.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct FrameError(pub(crate) &'static str);

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for FrameError {}

/// Cuts the first whole reply off `buf`: the reply and how many bytes it takes, or `None` when
/// more bytes are needed.
pub(crate) fn frame(buf: &[u8]) -> Result<Option<(Reply<'_>, usize)>, FrameError> {
    let Some((line, after_line)) = first_line(buf)? else {
        return Ok(None);
    };
    match line {
        b"STORED" => return Ok(Some((Reply::Stored, after_line))),
        b"END" => return Ok(Some((Reply::Miss, after_line))),
        _ if !is_value_line(line) => return Ok(Some((Reply::Other(line), after_line))),
        _ => {}
    }
    let Some(block) = value_block(buf)? else {
        return Ok(None);
    };
    let end = block.len + b"END\r\n".len();
    if buf.len() < end {
        return Ok(None);
    }
    if &buf[block.len..end] != b"END\r\n" {
        return Err(FrameError("VALUE not followed by END"));
    }
    Ok(Some((
        Reply::Value {
            key: block.key,
            data: block.data,
        },
        end,
    )))
}

/// One whole reply of any kind the soak asks for, borrowing from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AnyReply<'a> {
    /// The `VALUE` blocks of a classic retrieval, in order, up to its `END` (none: a miss).
    Values(Vec<ValueBlock<'a>>),
    /// A meta `VA <length> <flags>...` line's flags and its data block.
    MetaValue { flags: &'a [u8], data: &'a [u8] },
    /// Any other line, such as `STORED`, `HD`, `EN`, `MN`, `DELETED` or an error.
    Line(&'a [u8]),
}

/// A `VALUE <key> <flags> <bytes>` line and its data block.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ValueBlock<'a> {
    pub key: &'a [u8],
    pub flags: &'a [u8],
    pub data: &'a [u8],
    /// Bytes from the start of the `VALUE` line to the end of the data block's line end.
    len: usize,
}

/// Cuts the first whole reply of any kind off `buf`, like [`frame`].
pub(crate) fn frame_any(buf: &[u8]) -> Result<Option<(AnyReply<'_>, usize)>, FrameError> {
    let Some((line, after_line)) = first_line(buf)? else {
        return Ok(None);
    };
    if line == b"END" {
        return Ok(Some((AnyReply::Values(Vec::new()), after_line)));
    }
    if let Some(rest) = line.strip_prefix(b"VA ") {
        let (len, flags) = match rest.iter().position(|&b| b == b' ') {
            Some(space) => (&rest[..space], &rest[space + 1..]),
            None => (rest, &b""[..]),
        };
        let len = parse_len(len).ok_or(FrameError("malformed VA line"))?;
        let data_end = after_line + len;
        if buf.len() < data_end + 2 {
            return Ok(None);
        }
        if &buf[data_end..data_end + 2] != b"\r\n" {
            return Err(FrameError("data block not followed by a line end"));
        }
        let data = &buf[after_line..data_end];
        return Ok(Some((AnyReply::MetaValue { flags, data }, data_end + 2)));
    }
    if !is_value_line(line) {
        return Ok(Some((AnyReply::Line(line), after_line)));
    }
    let mut blocks = Vec::new();
    let mut at = 0;
    loop {
        let rest = &buf[at..];
        let Some((line, after_line)) = first_line(rest)? else {
            return Ok(None);
        };
        if line == b"END" {
            return Ok(Some((AnyReply::Values(blocks), at + after_line)));
        }
        if !is_value_line(line) {
            return Err(FrameError("VALUE not followed by VALUE or END"));
        }
        let Some(block) = value_block(rest)? else {
            return Ok(None);
        };
        at += block.len;
        blocks.push(block);
    }
}

/// The first line of `buf` without its line end, and the length with it; `None` when it is not
/// whole yet.
fn first_line(buf: &[u8]) -> Result<Option<(&[u8], usize)>, FrameError> {
    match buf.windows(2).position(|pair| pair == b"\r\n") {
        Some(line_len) => Ok(Some((&buf[..line_len], line_len + 2))),
        None if buf.len() > MAX_LINE => Err(FrameError("reply line too long")),
        None => Ok(None),
    }
}

/// Reads the `VALUE` line at the start of `buf` and its data block; `None` when they are not
/// whole yet.
fn value_block(buf: &[u8]) -> Result<Option<ValueBlock<'_>>, FrameError> {
    let Some((line, after_line)) = first_line(buf)? else {
        return Ok(None);
    };
    // VALUE <key> <flags> <bytes> [<cas unique>]
    let mut words = line.split(|&byte| byte == b' ').skip(1);
    let key = words.next().filter(|key| !key.is_empty());
    let flags = words.next();
    let bytes = words.next().and_then(parse_len);
    let (Some(key), Some(flags), Some(bytes)) = (key, flags, bytes) else {
        return Err(FrameError("malformed VALUE line"));
    };
    let data_end = after_line + bytes;
    if buf.len() < data_end + 2 {
        return Ok(None);
    }
    if &buf[data_end..data_end + 2] != b"\r\n" {
        return Err(FrameError("data block not followed by a line end"));
    }
    Ok(Some(ValueBlock {
        key,
        flags,
        data: &buf[after_line..data_end],
        len: data_end + 2,
    }))
}

/// Whether a reply line's first word is `VALUE`.
fn is_value_line(line: &[u8]) -> bool {
    line.split(|&byte| byte == b' ').next() == Some(b"VALUE")
}

fn parse_len(digits: &[u8]) -> Option<usize> {
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value_reply(key: u32, data: &[u8]) -> Vec<u8> {
        let mut reply = format!("VALUE {KEY_PREFIX}{key} 0 {}\r\n", data.len()).into_bytes();
        reply.extend_from_slice(data);
        reply.extend_from_slice(b"\r\nEND\r\n");
        reply
    }

    #[test]
    fn encodes_requests() {
        let mut out = Vec::new();
        encode_set(&mut out, 7, b"abc");
        encode_get(&mut out, 7);
        assert_eq!(
            out,
            b"set alliance/fleet/key-7 0 0 3\r\nabc\r\nget alliance/fleet/key-7\r\n"
        );
    }

    #[test]
    fn reads_key_numbers() {
        assert_eq!(key_number(b"alliance/fleet/key-42"), Some(42));
        assert_eq!(key_number(b"empire/key-42"), None);
        assert_eq!(key_number(b"alliance/fleet/key-x"), None);
    }

    #[test]
    fn frames_single_line_replies() {
        assert_eq!(frame(b"STORED\r\n"), Ok(Some((Reply::Stored, 8))));
        assert_eq!(frame(b"END\r\n"), Ok(Some((Reply::Miss, 5))));
        assert_eq!(
            frame(b"CLIENT_ERROR access denied\r\nSTORED\r\n"),
            Ok(Some((Reply::Other(b"CLIENT_ERROR access denied"), 28)))
        );
    }

    #[test]
    fn frames_a_value_whole() {
        let reply = value_reply(3, b"red\r\nfive");
        let key = format!("{KEY_PREFIX}3");
        assert_eq!(
            frame(&reply),
            Ok(Some((
                Reply::Value {
                    key: key.as_bytes(),
                    data: b"red\r\nfive"
                },
                reply.len()
            )))
        );
    }

    #[test]
    fn accepts_a_cas_unique() {
        let reply = b"VALUE alliance/fleet/key-1 0 2 99\r\nab\r\nEND\r\n";
        assert!(matches!(
            frame(reply),
            Ok(Some((Reply::Value { data: b"ab", .. }, 44)))
        ));
    }

    #[test]
    fn waits_for_every_byte_of_a_reply() {
        let reply = value_reply(12, &[b'x'; 300]);
        for cut in 0..reply.len() {
            assert_eq!(frame(&reply[..cut]), Ok(None), "cut at {cut}");
        }
        assert!(frame(&reply).unwrap().is_some());
    }

    #[test]
    fn frames_pipelined_replies_one_at_a_time() {
        let mut stream = b"STORED\r\n".to_vec();
        stream.extend(value_reply(1, b"abc"));
        stream.extend_from_slice(b"END\r\n");
        let mut replies = Vec::new();
        let mut at = 0;
        while let Some((reply, len)) = frame(&stream[at..]).unwrap() {
            replies.push(format!("{reply:?}"));
            at += len;
        }
        assert_eq!(at, stream.len());
        assert_eq!(replies.len(), 3);
        assert!(replies[1].starts_with("Value"));
        assert_eq!(replies[2], "Miss");
    }

    #[test]
    fn rejects_broken_values() {
        let no_line_end = b"VALUE alliance/fleet/key-1 0 2\r\nabcdEND\r\n";
        assert_eq!(
            frame(no_line_end),
            Err(FrameError("data block not followed by a line end"))
        );
        let no_end = b"VALUE alliance/fleet/key-1 0 2\r\nab\r\nEMD\r\n";
        assert_eq!(frame(no_end), Err(FrameError("VALUE not followed by END")));
        for line in [
            &b"VALUE\r\n"[..],
            b"VALUE k 0\r\n",
            b"VALUE k 0 x\r\n",
            b"VALUE  0 1\r\n",
        ] {
            assert_eq!(
                frame(line),
                Err(FrameError("malformed VALUE line")),
                "{line:?}"
            );
        }
    }

    #[test]
    fn rejects_endless_lines() {
        assert_eq!(frame(&[b'a'; MAX_LINE]), Ok(None));
        assert_eq!(
            frame(&[b'a'; MAX_LINE + 1]),
            Err(FrameError("reply line too long"))
        );
    }
}
