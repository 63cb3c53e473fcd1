//! Judges the soak's replies: compares each one with its [`Expect`]ation byte for byte (values
//! regenerated from their seeds) and adds the verdict to a [`Tally`]. It reads no socket.

use crate::memcache::binary;
use crate::memcache::protocol::{AnyReply, ValueBlock};

use super::plan::{fill_value, value_flags, Expect, Style};

/// The text denial of the memcached parser.
pub(super) const TEXT_DENIAL: &[u8] = b"CLIENT_ERROR access denied";
/// The binary denial's status and body.
const BINARY_DENIAL_STATUS: u16 = 0x0008;
const BINARY_DENIAL_BODY: &[u8] = b"access denied";

/// What the verifying traffic saw, added up over connections.
#[derive(Default, Debug)]
pub(super) struct Tally {
    /// Requests answered as they must be or not, `mn` and NOOP included.
    pub requests: u64,
    /// Of those, requests the policy allows, and denies.
    pub allowed: u64,
    pub denied: u64,
    /// Values read back and compared (found or rightly found absent), and their bytes.
    pub values_compared: u64,
    pub bytes_compared: u64,
    /// A value that should be there and was not, or a request without its reply.
    pub lost: u64,
    /// A value that came back with other bytes or flags, or that should have been absent.
    pub corrupted: u64,
    /// A denied request answered as if allowed (it may have reached the server).
    pub denied_passed: u64,
    /// An allowed request answered with the denial.
    pub allowed_denied: u64,
    /// Any other wrong reply, and connections lost.
    pub wrong: u64,
    /// The first things that went wrong, to show.
    pub first_errors: Vec<String>,
}

impl Tally {
    const ERRORS_KEPT: usize = 5;

    /// Whether anything went wrong.
    pub(super) fn failed(&self) -> bool {
        self.lost + self.corrupted + self.denied_passed + self.allowed_denied + self.wrong > 0
    }

    pub(super) fn add(&mut self, other: Tally) {
        self.requests += other.requests;
        self.allowed += other.allowed;
        self.denied += other.denied;
        self.values_compared += other.values_compared;
        self.bytes_compared += other.bytes_compared;
        self.lost += other.lost;
        self.corrupted += other.corrupted;
        self.denied_passed += other.denied_passed;
        self.allowed_denied += other.allowed_denied;
        self.wrong += other.wrong;
        for error in other.first_errors {
            self.note(error);
        }
    }

    /// Keeps `error` if it is one of the first.
    pub(super) fn note(&mut self, error: String) {
        if self.first_errors.len() < Self::ERRORS_KEPT {
            self.first_errors.push(error);
        }
    }

    /// Counts a request without its reply (its connection was lost).
    pub(super) fn unanswered(&mut self, expect: &Expect) {
        self.count(expect);
        self.lost += 1;
    }

    /// Counts requests that get no reply when all is well (quiet sets, `noreply`).
    pub(super) fn silent(&mut self, allowed: u32, denied: u32) {
        self.requests += u64::from(allowed + denied);
        self.allowed += u64::from(allowed);
        self.denied += u64::from(denied);
    }

    fn count(&mut self, expect: &Expect) {
        self.requests += 1;
        if expect.is_denied() {
            self.denied += 1;
        } else {
            self.allowed += 1;
        }
    }

    /// Judges a text or meta reply to a request that expected `expect`.
    pub(super) fn text(&mut self, expect: &Expect, reply: &AnyReply<'_>, scratch: &mut Vec<u8>) {
        self.count(expect);
        let denial = matches!(reply, AnyReply::Line(line) if *line == TEXT_DENIAL);
        // Whether the reply is right, or wrong and already counted as such.
        let accounted = match (expect, reply) {
            (Expect::Denied(_), _) => self.denial(denial, || describe_text(reply)),
            (_, _) if denial => self.allowed_denied(expect),
            (Expect::Stored(Style::Classic), AnyReply::Line(b"STORED"))
            | (Expect::Stored(Style::Meta), AnyReply::Line(b"HD"))
            | (Expect::Noop(_), AnyReply::Line(b"MN")) => true,
            (Expect::Deleted { style, existed }, AnyReply::Line(line)) => {
                let expected: &[u8] = match (style, existed) {
                    (Style::Meta, true) => b"HD",
                    (Style::Meta, false) => b"NF",
                    (_, true) => b"DELETED",
                    (_, false) => b"NOT_FOUND",
                };
                self.lost_unless(*line == expected, *existed)
            }
            (Expect::Get { keys, .. }, AnyReply::Values(blocks)) => {
                self.classic_values(keys, blocks, scratch)
            }
            // A meta miss: `EN`, with the flags that still apply (memcached 1.6 returns `k`).
            (Expect::Get { keys, .. }, AnyReply::Line(line))
                if keys.len() == 1 && line.split(|&b| b == b' ').next() == Some(b"EN") =>
            {
                self.one_value(keys[0].1, None, scratch)
            }
            (Expect::Get { keys, .. }, AnyReply::MetaValue { flags, data }) if keys.len() == 1 => {
                let (name, seed) = &keys[0];
                let found = meta_flags(flags, name.as_bytes());
                self.one_value(*seed, found.map(|flags| (flags, *data)), scratch)
            }
            _ => false,
        };
        if !accounted {
            self.wrong += 1;
            self.note(format!("{expect:?} answered with {}", describe_text(reply)));
        }
    }

    /// Judges a binary response to a request that expected `expect`.
    pub(super) fn binary(
        &mut self,
        expect: &Expect,
        response: &binary::Response<'_>,
        scratch: &mut Vec<u8>,
    ) {
        self.count(expect);
        let style = match expect {
            Expect::Stored(style)
            | Expect::Get { style, .. }
            | Expect::Deleted { style, .. }
            | Expect::Denied(style)
            | Expect::Noop(style) => *style,
        };
        let Style::Binary { opcode, opaque } = style else {
            unreachable!("binary connections send binary requests only")
        };
        let denial =
            response.status == BINARY_DENIAL_STATUS && response.value == BINARY_DENIAL_BODY;
        let accounted = if response.opcode != opcode || response.opaque != opaque {
            false
        } else {
            match expect {
                Expect::Denied(_) => self.denial(denial, || describe_binary(response)),
                _ if denial => self.allowed_denied(expect),
                Expect::Stored(_) | Expect::Noop(_) => response.status == binary::STATUS_OK,
                Expect::Deleted { existed, .. } => {
                    let expected = if *existed {
                        binary::STATUS_OK
                    } else {
                        binary::STATUS_NOT_FOUND
                    };
                    self.lost_unless(response.status == expected, *existed)
                }
                Expect::Get { keys, .. } => {
                    let (name, seed) = &keys[0];
                    match response.status {
                        binary::STATUS_NOT_FOUND => self.one_value(*seed, None, scratch),
                        binary::STATUS_OK if response.key == name.as_bytes() => {
                            let flags = <[u8; 4]>::try_from(response.extras)
                                .map(u32::from_be_bytes)
                                .ok();
                            let found = flags.map(|flags| (flags, response.value));
                            self.one_value(*seed, found, scratch)
                        }
                        _ => false,
                    }
                }
            }
        };
        if !accounted {
            self.wrong += 1;
            self.note(format!(
                "{expect:?} answered with {}",
                describe_binary(response)
            ));
        }
    }

    /// Counts a denied request's reply that is not the denial. (Each of these helpers returns
    /// whether the reply is accounted for: right, or counted as what is wrong with it.)
    fn denial(&mut self, denial: bool, describe: impl FnOnce() -> String) -> bool {
        if !denial {
            self.denied_passed += 1;
            self.note(format!("a denied request was answered with {}", describe()));
        }
        true
    }

    fn allowed_denied(&mut self, expect: &Expect) -> bool {
        self.allowed_denied += 1;
        self.note(format!("an allowed request was denied: {expect:?}"));
        true
    }

    /// A delete's reply: `right`, or a value lost when the key should have been there.
    fn lost_unless(&mut self, right: bool, existed: bool) -> bool {
        if !right && existed {
            self.lost += 1;
            self.note("a delete did not find a value written".into());
        }
        right || existed
    }

    /// Compares a classic retrieval's blocks with the values its keys must hold: only the keys
    /// holding one are answered, in order.
    fn classic_values(
        &mut self,
        keys: &[(String, Option<u64>)],
        blocks: &[ValueBlock<'_>],
        scratch: &mut Vec<u8>,
    ) -> bool {
        let mut blocks = blocks.iter().peekable();
        for (name, seed) in keys {
            let block = blocks.next_if(|block| block.key == name.as_bytes());
            let found = block.map(|block| {
                let flags = std::str::from_utf8(block.flags)
                    .ok()
                    .and_then(|flags| flags.parse().ok());
                (flags, block.data)
            });
            let found = match found {
                Some((Some(flags), data)) => Some((flags, data)),
                Some((None, _)) => return false,
                None => None,
            };
            if !self.one_value(*seed, found, scratch) {
                return false;
            }
        }
        if let Some(block) = blocks.next() {
            self.corrupted += 1;
            self.note(format!(
                "a retrieval answered with {:?}, out of order or not asked for",
                String::from_utf8_lossy(block.key)
            ));
        }
        true
    }

    /// Compares one value found (its flags and bytes) or not with the one with `seed` (`None`:
    /// it must be absent). Counts a lost or corrupted value; a value compared is right.
    fn one_value(
        &mut self,
        seed: Option<u64>,
        found: Option<(u32, &[u8])>,
        scratch: &mut Vec<u8>,
    ) -> bool {
        self.values_compared += 1;
        match (seed, found) {
            (None, None) => {}
            (Some(_), None) => {
                self.lost += 1;
                self.note("a value written was not found".into());
            }
            (None, Some((_, data))) => {
                self.corrupted += 1;
                self.note(format!("a value of {} bytes where none may be", data.len()));
            }
            (Some(seed), Some((flags, data))) => {
                fill_value(seed, scratch);
                self.bytes_compared += data.len() as u64;
                if flags != value_flags(seed) || data != scratch.as_slice() {
                    self.corrupted += 1;
                    let at = data.iter().zip(scratch.iter()).position(|(a, b)| a != b);
                    self.note(format!(
                        "a value came back with flags {flags} and {} bytes, first difference at \
                         {at:?}; expected flags {} and {} bytes",
                        data.len(),
                        value_flags(seed),
                        scratch.len()
                    ));
                }
            }
        }
        true
    }
}

/// The flags of a meta `VA` line, when its `k` flag names `key`.
fn meta_flags(flags: &[u8], key: &[u8]) -> Option<u32> {
    let mut value_flags = None;
    let mut key_seen = false;
    for token in flags.split(|&b| b == b' ') {
        match token.split_first() {
            Some((b'f', digits)) => {
                value_flags = std::str::from_utf8(digits).ok()?.parse().ok();
            }
            Some((b'k', name)) => key_seen = name == key,
            _ => {}
        }
    }
    value_flags.filter(|_| key_seen)
}

fn describe_text(reply: &AnyReply<'_>) -> String {
    match reply {
        AnyReply::Line(line) => format!("{:?}", String::from_utf8_lossy(line)),
        AnyReply::Values(blocks) => format!("{} VALUE blocks", blocks.len()),
        AnyReply::MetaValue { data, .. } => format!("a VA of {} bytes", data.len()),
    }
}

fn describe_binary(response: &binary::Response<'_>) -> String {
    format!(
        "opcode {:#04x} status {:#06x} opaque {} and a value of {} bytes",
        response.opcode,
        response.status,
        response.opaque,
        response.value.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memcache::protocol;
    use crate::soak::plan::value_seed;

    fn value_of(seed: u64) -> Vec<u8> {
        let mut value = Vec::new();
        fill_value(seed, &mut value);
        value
    }

    /// A classic retrieval's reply holding one value of key `k`.
    fn classic_reply(flags: &str, data: &[u8]) -> Vec<u8> {
        let mut reply = format!("VALUE k {flags} {}\r\n", data.len()).into_bytes();
        reply.extend_from_slice(data);
        reply.extend_from_slice(b"\r\nEND\r\n");
        reply
    }

    fn framed(reply: &[u8]) -> AnyReply<'_> {
        protocol::frame_any(reply).unwrap().unwrap().0
    }

    fn get(style: Style, seed: Option<u64>) -> Expect {
        Expect::Get {
            style,
            keys: vec![("k".into(), seed)],
        }
    }

    #[test]
    fn counts_right_and_wrong_values() {
        let seed = value_seed(1, 2, 3);
        let value = value_of(seed);
        let flags = value_flags(seed).to_string();
        let mut tally = Tally::default();
        let mut scratch = Vec::new();
        let reply = classic_reply(&flags, &value);
        tally.text(
            &get(Style::Classic, Some(seed)),
            &framed(&reply),
            &mut scratch,
        );
        assert!(!tally.failed(), "{tally:?}");
        assert_eq!(tally.bytes_compared, value.len() as u64);

        let mut other = value.clone();
        other.push(b'x');
        let reply = classic_reply(&flags, &other);
        tally.text(
            &get(Style::Classic, Some(seed)),
            &framed(&reply),
            &mut scratch,
        );
        assert_eq!(tally.corrupted, 1);

        tally.text(
            &get(Style::Meta, Some(seed)),
            &AnyReply::Line(b"EN"),
            &mut scratch,
        );
        assert_eq!(tally.lost, 1);
        assert_eq!(tally.wrong, 0);
    }

    #[test]
    fn a_denied_request_must_get_the_denial() {
        let mut tally = Tally::default();
        let mut scratch = Vec::new();
        let denied = Expect::Denied(Style::Classic);
        tally.text(&denied, &AnyReply::Line(TEXT_DENIAL), &mut scratch);
        assert!(!tally.failed());
        tally.text(&denied, &AnyReply::Line(b"STORED"), &mut scratch);
        assert_eq!(tally.denied_passed, 1);
        tally.text(
            &Expect::Stored(Style::Meta),
            &AnyReply::Line(TEXT_DENIAL),
            &mut scratch,
        );
        assert_eq!(tally.allowed_denied, 1);
        assert_eq!((tally.requests, tally.denied, tally.allowed), (3, 2, 1));
    }

    #[test]
    fn reads_meta_flags_only_for_the_right_key() {
        assert_eq!(meta_flags(b"f12 kk", b"k"), Some(12));
        assert_eq!(meta_flags(b"kk f12", b"k"), Some(12));
        assert_eq!(meta_flags(b"f12 kother", b"k"), None);
        assert_eq!(meta_flags(b"f12", b"k"), None);
    }

    #[test]
    fn a_binary_response_must_carry_the_opcode_and_opaque() {
        let style = Style::Binary {
            opcode: binary::SET,
            opaque: 5,
        };
        let response = |opaque| binary::Response {
            opcode: binary::SET,
            status: 0,
            opaque,
            extras: &[],
            key: &[],
            value: &[],
        };
        let mut tally = Tally::default();
        let mut scratch = Vec::new();
        tally.binary(&Expect::Stored(style), &response(5), &mut scratch);
        assert!(!tally.failed());
        tally.binary(&Expect::Stored(style), &response(6), &mut scratch);
        assert_eq!(tally.wrong, 1);
    }
}
