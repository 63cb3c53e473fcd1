//! The part of the memcached binary protocol the soak speaks: it encodes requests (SET, SETQ,
//! GETK, DELETE, NOOP) and cuts the stream of responses into whole packets. It judges no
//! response; its callers do.

use super::protocol::FrameError;

/// Request opcodes.
pub(crate) const GETK: u8 = 0x0c;
pub(crate) const SET: u8 = 0x01;
pub(crate) const SETQ: u8 = 0x11;
pub(crate) const DELETE: u8 = 0x04;
pub(crate) const NOOP: u8 = 0x0a;

/// Response statuses.
pub(crate) const STATUS_OK: u16 = 0x0000;
pub(crate) const STATUS_NOT_FOUND: u16 = 0x0001;

const HEADER_LEN: usize = 24;
const REQUEST_MAGIC: u8 = 0x80;
const RESPONSE_MAGIC: u8 = 0x81;
/// A response body longer than this is not memcached talking (values are at most 1 MiB here).
const MAX_BODY: usize = 4 << 20;

/// Appends a request packet: `extras`, `key` and `value` after the 24-byte header.
pub(crate) fn encode(
    out: &mut Vec<u8>,
    opcode: u8,
    opaque: u32,
    extras: &[u8],
    key: &[u8],
    value: &[u8],
) {
    let key_len = u16::try_from(key.len()).expect("a key of at most 250 bytes");
    let extras_len = u8::try_from(extras.len()).expect("short extras");
    let body = extras.len() + key.len() + value.len();
    out.push(REQUEST_MAGIC);
    out.push(opcode);
    out.extend_from_slice(&key_len.to_be_bytes());
    out.push(extras_len);
    out.push(0); // data type
    out.extend_from_slice(&[0, 0]); // vbucket
    out.extend_from_slice(
        &u32::try_from(body)
            .expect("a body under 4 GiB")
            .to_be_bytes(),
    );
    out.extend_from_slice(&opaque.to_be_bytes());
    out.extend_from_slice(&[0; 8]); // cas
    out.extend_from_slice(extras);
    out.extend_from_slice(key);
    out.extend_from_slice(value);
}

/// Appends a SET (or SETQ, when `quiet`) of `value` with `flags` and no expiry.
pub(crate) fn encode_set(
    out: &mut Vec<u8>,
    quiet: bool,
    opaque: u32,
    key: &[u8],
    flags: u32,
    value: &[u8],
) {
    let mut extras = [0u8; 8];
    extras[..4].copy_from_slice(&flags.to_be_bytes());
    let opcode = if quiet { SETQ } else { SET };
    encode(out, opcode, opaque, &extras, key, value);
}

/// One whole response packet, borrowing from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Response<'a> {
    pub opcode: u8,
    pub status: u16,
    pub opaque: u32,
    pub extras: &'a [u8],
    pub key: &'a [u8],
    pub value: &'a [u8],
}

/// Cuts the first whole response off `buf`: the response and how many bytes it takes, or `None`
/// when more bytes are needed.
pub(crate) fn frame(buf: &[u8]) -> Result<Option<(Response<'_>, usize)>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    if buf[0] != RESPONSE_MAGIC {
        return Err(FrameError("not a binary response"));
    }
    let key_len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    let extras_len = usize::from(buf[4]);
    let body = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]) as usize;
    if body > MAX_BODY || extras_len + key_len > body {
        return Err(FrameError("malformed binary response header"));
    }
    let end = HEADER_LEN + body;
    if buf.len() < end {
        return Ok(None);
    }
    let key_start = HEADER_LEN + extras_len;
    let value_start = key_start + key_len;
    Ok(Some((
        Response {
            opcode: buf[1],
            status: u16::from_be_bytes([buf[6], buf[7]]),
            opaque: u32::from_be_bytes([buf[12], buf[13], buf[14], buf[15]]),
            extras: &buf[HEADER_LEN..key_start],
            key: &buf[key_start..value_start],
            value: &buf[value_start..end],
        },
        end,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_a_set() {
        let mut out = Vec::new();
        encode_set(&mut out, false, 7, b"k", 0x0102_0304, b"ab");
        assert_eq!(out.len(), 24 + 8 + 1 + 2);
        assert_eq!(&out[..2], &[0x80, SET]);
        assert_eq!(&out[2..4], &[0, 1]);
        assert_eq!(out[4], 8);
        assert_eq!(&out[8..12], &[0, 0, 0, 11]);
        assert_eq!(&out[12..16], &[0, 0, 0, 7]);
        assert_eq!(&out[24..28], &[1, 2, 3, 4]);
        assert_eq!(&out[32..], b"kab");
    }

    #[test]
    fn frames_a_response_only_when_whole() {
        let mut packet = vec![0x81, GETK, 0, 1, 4, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 9];
        packet.extend_from_slice(&[0; 8]);
        packet.extend_from_slice(&[0, 0, 0, 5, b'k', b'a', b'b']);
        for cut in 0..packet.len() {
            assert_eq!(frame(&packet[..cut]), Ok(None), "cut at {cut}");
        }
        let (response, len) = frame(&packet).unwrap().unwrap();
        assert_eq!(len, packet.len());
        assert_eq!(response.opaque, 9);
        assert_eq!(response.extras, &[0, 0, 0, 5]);
        assert_eq!(response.key, b"k");
        assert_eq!(response.value, b"ab");
    }

    #[test]
    fn rejects_what_is_no_response() {
        let mut packet = vec![0x80; 24];
        assert_eq!(frame(&packet), Err(FrameError("not a binary response")));
        packet[0] = 0x81;
        packet[4] = 9; // extras longer than the body
        packet[8..12].copy_from_slice(&[0, 0, 0, 2]);
        assert_eq!(
            frame(&packet),
            Err(FrameError("malformed binary response header"))
        );
    }
}
